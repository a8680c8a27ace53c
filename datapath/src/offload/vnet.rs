//! The `virtio_net_hdr` that a TAP device opened with `IFF_VNET_HDR` puts before every
//! frame it hands us, and expects before every frame we write.
//!
//! ```text
//! 0       1          2          4          6             8              10
//! | flags | gso_type | hdr_len  | gso_size | csum_start  | csum_offset  | frame ...
//!                      u16 little-endian (the host's order on every platform we run on)
//! ```
//!
//! `flags` has [`F_NEEDS_CSUM`]: the checksum at `csum_start + csum_offset` holds only
//! the pseudo-header sum and the sum over `csum_start..` is still to be added.
//! `gso_type` says whether the frame is a superframe to be cut into `gso_size`-byte
//! segments ([`GSO_TCPV4`], [`GSO_TCPV6`]). The view follows smoltcp's wire pattern:
//! [`Packet::new_checked`] makes every accessor safe; [`Repr`] is the parsed form.

use thiserror::Error;

/// Length of the header (`struct virtio_net_hdr`, without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: complete the checksum from `csum_start`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`: an ordinary frame.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: an IPv4 TCP superframe.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`: an IPv6 TCP superframe.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: a UDP superframe, cut into datagrams of `gso_size`
/// payload bytes (written by the coalescer, never asked of the kernel).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the superframe carries ECN (CWR) — never requested by us.
pub const GSO_ECN: u8 = 0x80;

mod field {
    use core::ops::Range;
    pub(super) const FLAGS: usize = 0;
    pub(super) const GSO_TYPE: usize = 1;
    pub(super) const HDR_LEN: Range<usize> = 2..4;
    pub(super) const GSO_SIZE: Range<usize> = 4..6;
    pub(super) const CSUM_START: Range<usize> = 6..8;
    pub(super) const CSUM_OFFSET: Range<usize> = 8..10;
}

/// The buffer is shorter than a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("shorter than a virtio_net_hdr")]
pub struct TooShort;

/// A read/write view of a `virtio_net_hdr` and the frame after it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that holds at least a header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, TooShort> {
        if buffer.as_ref().len() < VNET_HDR_LEN {
            return Err(TooShort);
        }
        Ok(Packet { buffer })
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[r.start], b[r.start + 1]])
    }

    /// The `flags` byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The `gso_type` byte.
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    /// Bytes of headers before the payload of a superframe (a hint).
    pub fn hdr_len(&self) -> u16 {
        self.u16_at(field::HDR_LEN)
    }

    /// The payload bytes of each segment but the last.
    pub fn gso_size(&self) -> u16 {
        self.u16_at(field::GSO_SIZE)
    }

    /// Where the checksummed range starts, from the start of the frame.
    pub fn csum_start(&self) -> u16 {
        self.u16_at(field::CSUM_START)
    }

    /// Where the checksum field is, from `csum_start`.
    pub fn csum_offset(&self) -> u16 {
        self.u16_at(field::CSUM_OFFSET)
    }

    /// The frame after the header.
    pub fn frame(&self) -> &[u8] {
        &self.buffer.as_ref()[VNET_HDR_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16_at(&mut self, r: core::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_le_bytes());
    }

    /// The frame after the header, writable.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[VNET_HDR_LEN..]
    }
}

/// A parsed `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repr {
    /// [`F_NEEDS_CSUM`], [`F_DATA_VALID`].
    pub flags: u8,
    /// [`GSO_NONE`], [`GSO_TCPV4`], [`GSO_TCPV6`] (others are refused).
    pub gso_type: u8,
    /// Header bytes before the payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Start of the checksummed range.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl Repr {
    /// The header of an ordinary, fully checksummed frame: all zeros.
    pub const PLAIN: Repr = Repr {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            flags: packet.flags(),
            gso_type: packet.gso_type(),
            hdr_len: packet.hdr_len(),
            gso_size: packet.gso_size(),
            csum_start: packet.csum_start(),
            csum_offset: packet.csum_offset(),
        }
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let b = packet.buffer.as_mut();
        b[field::FLAGS] = self.flags;
        b[field::GSO_TYPE] = self.gso_type;
        packet.set_u16_at(field::HDR_LEN, self.hdr_len);
        packet.set_u16_at(field::GSO_SIZE, self.gso_size);
        packet.set_u16_at(field::CSUM_START, self.csum_start);
        packet.set_u16_at(field::CSUM_OFFSET, self.csum_offset);
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        self.emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_emit_round_trip_little_endian() {
        let repr = Repr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 0x0102,
            gso_size: 1368,
            csum_start: 54,
            csum_offset: 16,
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes[..4], [1, 4, 0x02, 0x01]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), repr);
        assert_eq!(Packet::new_checked(&bytes[..9]).unwrap_err(), TooShort);
        assert_eq!(Repr::PLAIN.to_bytes(), [0; VNET_HDR_LEN]);
    }
}
