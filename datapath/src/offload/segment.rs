//! The sender's side: what a frame read from the TAP device needs before it is sealed.
//!
//! [`prepare`] checks the `virtio_net_hdr` against the frame. An ordinary frame with
//! [`F_NEEDS_CSUM`] gets its checksum completed in place; a TCP or UDP superframe
//! becomes a [`Superframe`], which writes its segments one at a time straight into the
//! buffer they are sealed in ([`Superframe::write_segment`]), as the kernel's
//! segmentation would cut them. TCP:
//!
//! - each segment carries the headers of the superframe and `mss` bytes of its payload
//!   (the last one the rest);
//! - TCP sequence numbers advance by the payload before; IPv4 identifications by one per
//!   segment; IPv4 total length and header checksum, IPv6 payload length are rewritten;
//! - FIN, PSH and RST stay only on the last segment, CWR only on the first;
//! - the TCP checksum is computed in full (the superframe's partial one is not trusted).
//!
//! UDP (`GSO_UDP_L4`, from a pod that sends with `UDP_SEGMENT`): every `gso_size`
//! payload bytes are one datagram of the application's, so they are never cut
//! smaller (a path too narrow for them drops and counts, as for a frame too large);
//! each gets the next IPv4 identification, its own IP and UDP lengths, and a UDP
//! checksum computed in full (a computed zero is sent as `0xffff`).

use super::tcp::{flags, Ip, Layout, ETHERNET_LEN, PROTO_UDP};
use super::vnet::{Repr, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use super::{checksum, OffloadError};

/// A TCP or UDP superframe with the segment size the kernel asked for.
#[derive(Debug, Clone, Copy)]
pub struct Superframe<'a> {
    frame: &'a [u8],
    layout: Layout,
    gso_size: usize,
}

/// What a frame from the TAP device is, once [`prepare`]d.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// An ordinary frame, checksums complete: send it as it is.
    Frame,
    /// A TCP or UDP superframe (`layout.proto` says which): make a [`Superframe`] of
    /// it with [`Superframe::new`].
    Superframe {
        /// Where its headers are.
        layout: Layout,
        /// The payload bytes per segment the sender chose.
        gso_size: u16,
    },
}

/// Checks `frame` against its header `vnet`, completes a pending checksum of an
/// ordinary frame in place, and says what the frame is. Never panics: values that do
/// not fit the frame are errors, to be dropped and counted.
pub fn prepare(vnet: &Repr, frame: &mut [u8]) -> Result<Prepared, OffloadError> {
    let needs_csum = vnet.flags & F_NEEDS_CSUM != 0;
    let csum_field = usize::from(vnet.csum_start) + usize::from(vnet.csum_offset);
    if needs_csum && csum_field + 2 > frame.len() {
        return Err(OffloadError::ChecksumPastEnd);
    }
    let ip = match vnet.gso_type {
        GSO_UDP_L4 => None,
        GSO_NONE => {
            if needs_csum {
                let start = usize::from(vnet.csum_start);
                let acc = checksum::sum(&frame[start..], 0);
                frame[csum_field..csum_field + 2]
                    .copy_from_slice(&(!checksum::fold(acc)).to_be_bytes());
            }
            return Ok(Prepared::Frame);
        }
        GSO_TCPV4 => Some(Ip::V4),
        GSO_TCPV6 => Some(Ip::V6),
        // UDP fragmentation (UFO) and TCP with ECN: never requested from the kernel.
        _ => return Err(OffloadError::Unsupported),
    };
    if vnet.gso_size == 0 {
        return Err(OffloadError::GsoSizeZero);
    }
    if usize::from(vnet.hdr_len) > frame.len() {
        return Err(OffloadError::HeaderPastEnd);
    }
    let layout = match ip {
        Some(ip) => Layout::parse(frame, false).filter(|l| l.ip == ip),
        None => Layout::parse_udp(frame, false),
    };
    let layout = layout.ok_or(OffloadError::Malformed)?;
    if layout.payload == layout.end {
        return Err(OffloadError::Malformed);
    }
    Ok(Prepared::Superframe {
        layout,
        gso_size: vnet.gso_size,
    })
}

impl<'a> Superframe<'a> {
    /// The superframe `frame`, as [`prepare`] found it.
    pub fn new(frame: &'a [u8], layout: Layout, gso_size: u16) -> Superframe<'a> {
        Superframe {
            frame,
            layout,
            gso_size: usize::from(gso_size).max(1),
        }
    }

    /// The whole superframe.
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// The headers (Ethernet, IP, TCP or UDP) every segment starts with.
    pub fn header_len(&self) -> usize {
        self.layout.payload
    }

    /// The TCP or UDP payload bytes in all.
    pub fn payload_len(&self) -> usize {
        self.layout.end - self.layout.payload
    }

    /// The segment payload size for frames of at most `max_frame` bytes: the sender's
    /// own size or, for TCP, less. `None` if not even one payload byte fits, or (UDP)
    /// if one datagram of the sender's size does not.
    pub fn mss_for(&self, max_frame: usize) -> Option<usize> {
        let max_frame = max_frame.min(super::coalesce::MAX_SUPERFRAME);
        let room = max_frame.checked_sub(self.header_len())?;
        if self.layout.proto == PROTO_UDP {
            return (room >= self.gso_size).then_some(self.gso_size);
        }
        (room > 0).then_some(room.min(self.gso_size))
    }

    /// How many segments of `mss` payload bytes.
    pub fn count(&self, mss: usize) -> usize {
        self.payload_len().div_ceil(mss.max(1))
    }

    /// The frame length of segment `i`.
    pub fn segment_len(&self, i: usize, mss: usize) -> usize {
        let mss = mss.max(1);
        let start = (i * mss).min(self.payload_len());
        self.header_len() + (self.payload_len() - start).min(mss)
    }

    /// Writes segment `i` of `mss` payload bytes into `out`, which must be at least
    /// [`Superframe::segment_len`] long; returns its length.
    pub fn write_segment(&self, i: usize, mss: usize, out: &mut [u8]) -> usize {
        let mss = mss.max(1);
        let l = self.layout;
        let count = self.count(mss);
        let from = l.payload + (i * mss).min(self.payload_len());
        let chunk = (l.end - from).min(mss);
        let len = l.payload + chunk;
        let seg = &mut out[..len];
        seg[..l.payload].copy_from_slice(&self.frame[..l.payload]);
        seg[l.payload..].copy_from_slice(&self.frame[from..from + chunk]);

        if l.ip == Ip::V4 {
            let id_at = ETHERNET_LEN + 4;
            let id = u16::from_be_bytes([seg[id_at], seg[id_at + 1]]).wrapping_add(i as u16);
            seg[id_at..id_at + 2].copy_from_slice(&id.to_be_bytes());
        }
        l.set_ip_len(seg, len);

        let t = l.l4;
        if l.proto == PROTO_UDP {
            let udp_len = (len - t) as u16;
            seg[t + 4..t + 6].copy_from_slice(&udp_len.to_be_bytes());
            seg[t + 6..t + 8].fill(0);
            let acc = checksum::sum(&seg[t..], l.pseudo_header(seg, len - t));
            let c = match !checksum::fold(acc) {
                0 => 0xffff,
                c => c,
            };
            seg[t + 6..t + 8].copy_from_slice(&c.to_be_bytes());
            return len;
        }
        // Sequence numbers are modulo 2^32 by definition.
        let seq = l.seq(self.frame).wrapping_add((from - l.payload) as u32);
        seg[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        let mut f = seg[t + 13];
        if i + 1 < count {
            f &= !(flags::FIN | flags::PSH | flags::RST);
        }
        if i > 0 {
            f &= !flags::CWR;
        }
        seg[t + 13] = f;
        seg[t + 16..t + 18].fill(0);
        let acc = checksum::sum(&seg[t..], l.pseudo_header(seg, len - t));
        seg[t + 16..t + 18].copy_from_slice(&(!checksum::fold(acc)).to_be_bytes());
        len
    }
}
