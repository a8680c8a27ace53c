//! Peer identity types.
//!
//! A router is identified by its long-term X25519 static key. Its [`PeerId`] is
//! BLAKE2s-256 of that public key, truncated to 16 bytes, so a peer can never claim
//! another's identity without its private key. Users see the first 6 bytes in MAC form
//! (`4a:0f:f6:ec:1c:93`), followed by the nickname in parentheses. A [`PeerUid`] is
//! random per process start, so that a restarted router (same id, new uid) replaces its
//! old incarnation in everybody's topology.

use blake2::{Blake2s256, Digest};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Length of a [`PeerId`] in bytes.
pub const PEER_ID_LEN: usize = 16;

/// A peer's identity: BLAKE2s-256 of its static public key, truncated to 16 bytes.
///
/// Serialized as one byte string (not 16 separate integers): peer ids fill most gossip,
/// and decoding them element by element dominated the cost of merging it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub [u8; PEER_ID_LEN]);

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        d.deserialize_bytes(PeerIdVisitor)
    }
}

/// Accepts exactly [`PEER_ID_LEN`] bytes, as a byte string or a sequence.
struct PeerIdVisitor;

impl<'de> serde::de::Visitor<'de> for PeerIdVisitor {
    type Value = PeerId;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{PEER_ID_LEN} bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PeerId, E> {
        <[u8; PEER_ID_LEN]>::try_from(v)
            .map(PeerId)
            .map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<PeerId, A::Error> {
        let mut id = [0u8; PEER_ID_LEN];
        for (i, b) in id.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(serde::de::Error::invalid_length(PEER_ID_LEN + 1, &self));
        }
        Ok(PeerId(id))
    }
}

impl PeerId {
    /// Derives the id of the peer whose static X25519 public key is `public_key`.
    pub fn from_public_key(public_key: &[u8; 32]) -> PeerId {
        let digest = Blake2s256::digest(public_key);
        let mut id = [0u8; PEER_ID_LEN];
        id.copy_from_slice(&digest[..PEER_ID_LEN]);
        PeerId(id)
    }

    /// The short name shown to users: the first 6 bytes in MAC form.
    pub fn short(&self) -> ShortName {
        let mut b = [0u8; 6];
        b.copy_from_slice(&self.0[..6]);
        ShortName(b)
    }

    /// The full id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.short().fmt(f)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

/// The first 6 bytes of a [`PeerId`], shown in MAC form; what users type and read.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShortName(pub [u8; 6]);

impl ShortName {
    /// Whether `id` has this short name.
    pub fn matches(&self, id: &PeerId) -> bool {
        id.0[..6] == self.0
    }
}

impl fmt::Display for ShortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for ShortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error from parsing a peer name such as `4a:0f:f6:ec:1c:93`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer name {0:?}: expected six hex bytes separated by ':', like 4a:0f:f6:ec:1c:93")]
pub struct ParseNameError(pub String);

impl FromStr for ShortName {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNameError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in out.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(ShortName(out))
    }
}

/// Random per process start; a new uid under the same [`PeerId`] is a restart.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct PeerUid(pub u64);

impl fmt::Display for PeerUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A peer as shown to users: `4a:0f:f6:ec:1c:93(nickname)`.
pub fn display_name(id: &PeerId, nickname: &str) -> String {
    format!("{}({})", id.short(), nickname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_blake2s_of_key_truncated() {
        // BLAKE2s-256 of 32 zero bytes, from the reference implementation.
        let id = PeerId::from_public_key(&[0u8; 32]);
        let full = Blake2s256::digest([0u8; 32]);
        assert_eq!(&id.0[..], &full[..16]);
        assert_ne!(id, PeerId::from_public_key(&[1u8; 32]));
    }

    #[test]
    fn short_name_round_trips() {
        let id = PeerId([
            0x4a, 0x0f, 0xf6, 0xec, 0x1c, 0x93, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
        ]);
        let s = id.short().to_string();
        assert_eq!(s, "4a:0f:f6:ec:1c:93");
        let parsed: ShortName = s.parse().unwrap();
        assert!(parsed.matches(&id));
        assert_eq!(display_name(&id, "h1"), "4a:0f:f6:ec:1c:93(h1)");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "4a:0f",
            "4a:0f:f6:ec:1c:93:00",
            "zz:0f:f6:ec:1c:93",
            "4a0:f:f6:ec:1c:93",
        ] {
            assert!(bad.parse::<ShortName>().is_err(), "{bad}");
        }
    }
}
