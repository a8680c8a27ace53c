//! The cleartext version header that opens every control connection.
//!
//! ```text
//! 0        4             5             6      7          8
//! | "WEFT" | min_version | max_version | mode | reserved |
//! ```
//!
//! Both sides send theirs as soon as the connection is up and read the other's before any
//! Noise message. The header is the only cleartext a router ever interprets, so it is
//! checked exactly: magic, a known mode, `min <= max`, reserved 0. Both headers, as sent
//! and as received, go into the Noise prologue, so a middlebox that rewrites a version or
//! mode byte makes the handshake fail instead of downgrading it.
//!
//! `mode` selects the protocol id: 1 is `Noise_XXpsk3` with the network secret, 0 is plain
//! `Noise_XX` for `--no-encryption`. The two never talk to each other, and there is no
//! "encryption flag" negotiation: a mismatch is an error on both sides.

use super::HandshakeError;
use std::fmt;
use std::ops::Range;

/// Length of the version header.
pub const HEADER_LEN: usize = 8;
/// The magic that starts every header.
pub const MAGIC: [u8; 4] = *b"WEFT";

mod field {
    use super::Range;
    pub(super) const MAGIC: Range<usize> = 0..4;
    pub(super) const MIN_VERSION: usize = 4;
    pub(super) const MAX_VERSION: usize = 5;
    pub(super) const MODE: usize = 6;
    pub(super) const RESERVED: usize = 7;
}

/// Which Noise protocol a router runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--no-encryption`: `Noise_XX`, identities authenticated, no network secret.
    NoEncryption = 0,
    /// A network secret: `Noise_XXpsk3` with the Argon2id-stretched PSK.
    Secret = 1,
}

/// A zero-copy view of a version header.
///
/// After [`Header::new_checked`] succeeds, no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checking its length (for emitting).
    pub fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Header<T>, crate::record_layer::Truncated> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(crate::record_layer::Truncated);
        }
        Ok(Header { buffer })
    }

    /// The four magic bytes.
    pub fn magic(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MAGIC]
    }

    /// Lowest protocol version the sender speaks.
    pub fn min_version(&self) -> u8 {
        self.buffer.as_ref()[field::MIN_VERSION]
    }

    /// Highest protocol version the sender speaks.
    pub fn max_version(&self) -> u8 {
        self.buffer.as_ref()[field::MAX_VERSION]
    }

    /// The raw mode byte.
    pub fn mode(&self) -> u8 {
        self.buffer.as_ref()[field::MODE]
    }

    /// The reserved byte (must be 0).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn set(&mut self, at: usize, value: u8) {
        self.buffer.as_mut()[at] = value;
    }
}

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// Lowest version.
    pub min: u8,
    /// Highest version.
    pub max: u8,
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{} to {}", self.min, self.max)
        }
    }
}

/// A parsed, valid version header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// The versions the sender speaks.
    pub versions: VersionRange,
    /// The protocol the sender runs.
    pub mode: Mode,
}

impl HeaderRepr {
    /// Parses and validates a header.
    pub fn parse<T: AsRef<[u8]>>(header: &Header<T>) -> Result<HeaderRepr, HandshakeError> {
        if header.magic() != MAGIC {
            return Err(HandshakeError::NotWeft);
        }
        let mode = match header.mode() {
            0 => Mode::NoEncryption,
            1 => Mode::Secret,
            _ => return Err(HandshakeError::BadHeader("unknown mode")),
        };
        if header.reserved() != 0 {
            return Err(HandshakeError::BadHeader("reserved byte is not zero"));
        }
        let versions = VersionRange {
            min: header.min_version(),
            max: header.max_version(),
        };
        if versions.min > versions.max || versions.min == 0 {
            return Err(HandshakeError::BadHeader("invalid version range"));
        }
        Ok(HeaderRepr { versions, mode })
    }

    /// Writes this header into the first [`HEADER_LEN`] bytes of `header`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut Header<T>) {
        header.buffer.as_mut()[field::MAGIC].copy_from_slice(&MAGIC);
        header.set(field::MIN_VERSION, self.versions.min);
        header.set(field::MAX_VERSION, self.versions.max);
        header.set(field::MODE, self.mode as u8);
        header.set(field::RESERVED, 0);
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        self.emit(&mut Header::new_unchecked(&mut bytes[..]));
        bytes
    }

    /// Agrees on a version with the remote's header and checks that both run the same
    /// mode. Returns the highest version both speak.
    pub fn negotiate(&self, theirs: &HeaderRepr) -> Result<u8, HandshakeError> {
        let (ours_v, theirs_v) = (self.versions, theirs.versions);
        if ours_v.max < theirs_v.min || theirs_v.max < ours_v.min {
            return Err(HandshakeError::VersionMismatch {
                ours: ours_v,
                theirs: theirs_v,
            });
        }
        match (self.mode, theirs.mode) {
            (Mode::Secret, Mode::NoEncryption) => Err(HandshakeError::RemoteUnencrypted),
            (Mode::NoEncryption, Mode::Secret) => Err(HandshakeError::RemoteEncrypted),
            _ => Ok(ours_v.max.min(theirs_v.max)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(min: u8, max: u8, mode: Mode) -> HeaderRepr {
        HeaderRepr {
            versions: VersionRange { min, max },
            mode,
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let r = repr(1, 3, Mode::Secret);
        let bytes = r.to_bytes();
        assert_eq!(bytes, *b"WEFT\x01\x03\x01\x00");
        let parsed = HeaderRepr::parse(&Header::new_checked(&bytes[..]).expect("len"));
        assert_eq!(parsed.expect("valid"), r);
        assert!(Header::new_checked(&bytes[..7]).is_err());
    }

    #[test]
    fn rejects_malformed_headers() {
        let cases: [(&[u8; 8], &str); 5] = [
            (b"WEFX\x01\x01\x01\x00", "magic"),
            (b"WEFT\x01\x01\x02\x00", "mode"),
            (b"WEFT\x01\x01\x01\x01", "reserved"),
            (b"WEFT\x02\x01\x01\x00", "min > max"),
            (b"WEFT\x00\x01\x01\x00", "version 0"),
        ];
        for (bytes, what) in cases {
            let header = Header::new_checked(&bytes[..]).expect("len");
            let err = HeaderRepr::parse(&header).expect_err(what);
            let expect_not_weft = what == "magic";
            assert_eq!(
                matches!(err, HandshakeError::NotWeft),
                expect_not_weft,
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn negotiates_the_highest_common_version() {
        let ours = repr(1, 1, Mode::Secret);
        assert_eq!(
            ours.negotiate(&repr(1, 4, Mode::Secret)).expect("overlap"),
            1
        );
        assert_eq!(
            repr(1, 3, Mode::Secret)
                .negotiate(&repr(2, 5, Mode::Secret))
                .ok(),
            Some(3)
        );
        let err = ours
            .negotiate(&repr(2, 3, Mode::Secret))
            .expect_err("no overlap");
        assert!(matches!(
            err,
            HandshakeError::VersionMismatch {
                ours: VersionRange { min: 1, max: 1 },
                theirs: VersionRange { min: 2, max: 3 }
            }
        ));
        assert!(err.to_string().contains("2 to 3"), "{err}");
    }

    #[test]
    fn mode_mismatch_is_an_error_both_ways() {
        let secret = repr(1, 1, Mode::Secret);
        let plain = repr(1, 1, Mode::NoEncryption);
        assert!(matches!(
            secret.negotiate(&plain),
            Err(HandshakeError::RemoteUnencrypted)
        ));
        assert!(matches!(
            plain.negotiate(&secret),
            Err(HandshakeError::RemoteEncrypted)
        ));
        assert_eq!(plain.negotiate(&plain).ok(), Some(1));
    }
}
