//! The sleeve datagram header: 16 cleartext bytes, authenticated as AEAD associated data.
//!
//! ```text
//! 0        1          4                 8                   16
//! | type=4 | rsv=0(3) | receiver_index   | counter            | ciphertext ... | tag(16) |
//!                       u32 little-endian  u64 little-endian
//! ```
//!
//! The header carries no peer id and no name: only the type, the index that the
//! *receiver* chose for the key (so that it can find the key in O(1)), and the counter
//! that is both the nonce and the replay-window position. Everything else about the
//! sender is inside the ciphertext.
//!
//! The view follows smoltcp's wire pattern. [`Packet::new_checked`] makes sure the buffer
//! can hold a header and a tag; once it has succeeded no accessor can panic, as long as
//! the buffer is not shortened. For emission use [`Packet::new_unchecked`] on a buffer of
//! at least [`HEADER_LEN`] bytes, then [`Repr::emit`].

use thiserror::Error;

/// Byte ranges of the header fields.
mod field {
    use core::ops::{Range, RangeFrom};

    pub(super) const TYPE: usize = 0;
    pub(super) const RESERVED: Range<usize> = 1..4;
    pub(super) const RECEIVER_INDEX: Range<usize> = 4..8;
    pub(super) const COUNTER: Range<usize> = 8..16;
    pub(super) const PAYLOAD: RangeFrom<usize> = 16..;
}

/// Length of the cleartext header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Length of the Poly1305 tag that ends every datagram.
pub const TAG_LEN: usize = super::aead::TAG_LEN;
/// The shortest datagram that can be valid: a header and a tag (a keepalive with no
/// inner bytes at all would be this long; ours always pad to at least 16 inner bytes).
pub const MIN_DATAGRAM_LEN: usize = HEADER_LEN + TAG_LEN;
/// The type byte of a data datagram, the only type the sleeve sends.
pub const TYPE_DATA: u8 = 4;

/// Why a datagram's header was rejected. Each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// Shorter than a header plus a tag.
    #[error("datagram shorter than {MIN_DATAGRAM_LEN} bytes")]
    TooShort,
    /// The type byte is not [`TYPE_DATA`], or a reserved byte is not zero.
    #[error("unknown datagram type or non-zero reserved bytes")]
    BadHeader,
}

/// A read/write view of a sleeve datagram (header, ciphertext and tag).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, HeaderError> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Fails with [`HeaderError::TooShort`] unless the buffer holds a header and a tag.
    pub fn check_len(&self) -> Result<(), HeaderError> {
        if self.buffer.as_ref().len() < MIN_DATAGRAM_LEN {
            Err(HeaderError::TooShort)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The type byte.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The three reserved bytes, which must be zero.
    pub fn reserved(&self) -> [u8; 3] {
        let mut out = [0u8; 3];
        out.copy_from_slice(&self.buffer.as_ref()[field::RESERVED]);
        out
    }

    /// The receiver's index for the key that sealed this datagram.
    pub fn receiver_index(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[field::RECEIVER_INDEX]);
        u32::from_le_bytes(b)
    }

    /// The sender's counter: the nonce, and the position in the replay window.
    pub fn counter(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::COUNTER]);
        u64::from_le_bytes(b)
    }

    /// The 16 header bytes, which are the AEAD associated data.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The ciphertext followed by the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type byte.
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }

    /// Sets the receiver index.
    pub fn set_receiver_index(&mut self, value: u32) {
        self.buffer.as_mut()[field::RECEIVER_INDEX].copy_from_slice(&value.to_le_bytes());
    }

    /// Sets the counter.
    pub fn set_counter(&mut self, value: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&value.to_le_bytes());
    }

    /// The header (associated data) and the payload (ciphertext and tag), split so that
    /// the payload can be decrypted in place while the header is read.
    pub fn header_and_payload_mut(&mut self) -> (&[u8], &mut [u8]) {
        let (header, payload) = self.buffer.as_mut().split_at_mut(HEADER_LEN);
        (header, payload)
    }
}

/// The parsed, checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The index the receiver chose for the key that sealed the datagram.
    pub receiver_index: u32,
    /// The sender's message counter under that key.
    pub counter: u64,
}

impl Repr {
    /// Parses a checked packet: the type must be [`TYPE_DATA`] and the reserved bytes zero.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, HeaderError> {
        packet.check_len()?;
        if packet.msg_type() != TYPE_DATA || packet.reserved() != [0; 3] {
            return Err(HeaderError::BadHeader);
        }
        Ok(Repr {
            receiver_index: packet.receiver_index(),
            counter: packet.counter(),
        })
    }

    /// The number of header bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_msg_type(TYPE_DATA);
        packet.clear_reserved();
        packet.set_receiver_index(self.receiver_index);
        packet.set_counter(self.counter);
    }
}

/// Reads the receiver index of a datagram without any other check, so that a router with
/// many sessions can pick the one that owns the index. `None` if it is too short.
pub fn peek_receiver_index(datagram: &[u8]) -> Option<u32> {
    let packet = Packet::new_checked(datagram).ok()?;
    Some(packet.receiver_index())
}

#[cfg(test)]
mod tests {
    use super::*;

    static BYTES: [u8; 32] = [
        0x04, 0x00, 0x00, 0x00, // type, reserved
        0x78, 0x56, 0x34, 0x12, // receiver index 0x12345678
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // counter
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, // tag
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&BYTES[..]).expect("long enough");
        assert_eq!(packet.msg_type(), TYPE_DATA);
        assert_eq!(packet.receiver_index(), 0x1234_5678);
        assert_eq!(packet.counter(), 0x0102_0304_0506_0708);
        assert_eq!(packet.payload().len(), TAG_LEN);
        let repr = Repr::parse(&packet).expect("valid");
        assert_eq!(
            repr,
            Repr {
                receiver_index: 0x1234_5678,
                counter: 0x0102_0304_0506_0708
            }
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 32];
        buf[16..].fill(0xaa);
        let repr = Repr {
            receiver_index: 0x1234_5678,
            counter: 0x0102_0304_0506_0708,
        };
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn rejects_short_bad_type_and_reserved() {
        for len in 0..MIN_DATAGRAM_LEN {
            assert_eq!(
                Packet::new_checked(&BYTES[..len]).err(),
                Some(HeaderError::TooShort)
            );
            assert_eq!(peek_receiver_index(&BYTES[..len]), None);
        }
        for (at, value) in [(0, 1u8), (0, 5), (1, 1), (2, 0x80), (3, 1)] {
            let mut bytes = BYTES;
            bytes[at] = value;
            let packet = Packet::new_checked(&bytes[..]).expect("long enough");
            assert_eq!(Repr::parse(&packet), Err(HeaderError::BadHeader));
        }
    }
}
