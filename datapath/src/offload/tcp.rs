//! Where the headers of an Ethernet frame carrying IPv4 or IPv6 TCP are, for
//! [`segment`](super::segment) and [`coalesce`](super::coalesce), and of one carrying
//! UDP, for the coalescer.
//!
//! Only the plain cases are recognised: Ethernet II (no VLAN tag), IPv4 without
//! fragmentation, IPv6 whose next header is TCP or UDP (no extension headers). Anything
//! else is "not TCP" (or UDP) to the offloads: a superframe of it is refused, and a
//! frame of it passes through untouched.

use super::checksum;

/// Length of the Ethernet header.
pub const ETHERNET_LEN: usize = 14;
/// The protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// The protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// TCP flag bits (byte 13 of the header).
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgement number is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// The IP version of a TCP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ip {
    /// IPv4: addresses at 12..20 of the IP header.
    V4,
    /// IPv6: addresses at 8..40 of the IP header.
    V6,
}

/// Offsets into a frame carrying TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// IPv4 or IPv6.
    pub ip: Ip,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// Start of the TCP or UDP header (the IP header starts at [`ETHERNET_LEN`]).
    pub l4: usize,
    /// Start of the payload (the end of all headers).
    pub payload: usize,
    /// End of the IP packet.
    pub end: usize,
}

impl Layout {
    /// The layout of `frame`, if it is Ethernet + IPv4/IPv6 + TCP as described above.
    /// With `exact`, the IP length must end the frame exactly (a segment); without,
    /// the frame's own length is the end (a superframe, whose IP length the kernel may
    /// leave at any value).
    pub fn parse(frame: &[u8], exact: bool) -> Option<Layout> {
        let (ip, l4, end) = ip_header(frame, exact, PROTO_TCP)?;
        let doff = usize::from(*frame.get(l4 + 12)? >> 4) * 4;
        let payload = l4 + doff;
        if doff < 20 || payload > end {
            return None;
        }
        Some(Layout {
            ip,
            proto: PROTO_TCP,
            l4,
            payload,
            end,
        })
    }

    /// The layout of `frame` if it carries UDP in Ethernet + IPv4/IPv6. With `exact`,
    /// one whole datagram: the IP length ends the frame exactly and the UDP length
    /// agrees with it. Without, a UDP superframe: the frame's own length is the end,
    /// and the lengths (which the kernel may leave at any value) are not read.
    pub fn parse_udp(frame: &[u8], exact: bool) -> Option<Layout> {
        let (ip, l4, end) = ip_header(frame, exact, PROTO_UDP)?;
        let header = frame.get(l4..l4 + UDP_HEADER_LEN)?;
        if exact && usize::from(u16::from_be_bytes([header[4], header[5]])) != end - l4 {
            return None;
        }
        if l4 + UDP_HEADER_LEN > end {
            return None;
        }
        Some(Layout {
            ip,
            proto: PROTO_UDP,
            l4,
            payload: l4 + UDP_HEADER_LEN,
            end,
        })
    }

    /// The source and destination addresses, back to back.
    pub fn addresses<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        match self.ip {
            Ip::V4 => &frame[ETHERNET_LEN + 12..ETHERNET_LEN + 20],
            Ip::V6 => &frame[ETHERNET_LEN + 8..ETHERNET_LEN + 40],
        }
    }

    /// The TCP flags byte.
    pub fn flags(&self, frame: &[u8]) -> u8 {
        frame[self.l4 + 13]
    }

    /// The TCP sequence number.
    pub fn seq(&self, frame: &[u8]) -> u32 {
        let t = self.l4;
        u32::from_be_bytes([frame[t + 4], frame[t + 5], frame[t + 6], frame[t + 7]])
    }

    /// The pseudo-header sum for a TCP segment (or UDP datagram) of `l4_len` bytes.
    pub fn pseudo_header(&self, frame: &[u8], l4_len: usize) -> u64 {
        let addrs = self.addresses(frame);
        let (src, dst) = addrs.split_at(addrs.len() / 2);
        checksum::pseudo_header(src, dst, self.proto, l4_len as u32)
    }

    /// Whether the TCP (or UDP) checksum of a segment (the whole frame up to `end`)
    /// verifies.
    pub fn checksum_ok(&self, frame: &[u8]) -> bool {
        let seg = &frame[self.l4..self.end];
        let acc = checksum::sum(seg, self.pseudo_header(frame, seg.len()));
        checksum::fold(acc) == 0xffff
    }

    /// Writes the IP length fields for a packet ending at `end` and, for IPv4, the
    /// header checksum.
    pub fn set_ip_len(&self, frame: &mut [u8], end: usize) {
        let ip = &mut frame[ETHERNET_LEN..self.l4];
        match self.ip {
            Ip::V4 => {
                let len = (end - ETHERNET_LEN) as u16;
                ip[2..4].copy_from_slice(&len.to_be_bytes());
                ip[10..12].fill(0);
                let c = !checksum::fold(checksum::sum(ip, 0));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
            }
            Ip::V6 => {
                let len = (end - ETHERNET_LEN - 40) as u16;
                ip[4..6].copy_from_slice(&len.to_be_bytes());
            }
        }
    }
}

/// The IP header of `frame` if it is Ethernet + IPv4/IPv6 carrying `proto` as
/// described above: the version, where the IP payload starts, and where the packet
/// ends (with `exact`, the IP length must end the frame exactly; without, the frame's
/// own length is the end, as for a superframe, whose IP length the kernel may leave
/// at any value).
fn ip_header(frame: &[u8], exact: bool, proto: u8) -> Option<(Ip, usize, usize)> {
    let ethertype = frame.get(12..14)?;
    let ip_start = ETHERNET_LEN;
    let (ip, l4, ip_len) = match ethertype {
        [0x08, 0x00] => {
            let h = frame.get(ip_start..ip_start + 20)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([h[6], h[7]]);
            // Version 4, a whole datagram (no MF, offset 0), carrying `proto`.
            if h[0] >> 4 != 4 || ihl < 20 || frag & 0x3fff != 0 || h[9] != proto {
                return None;
            }
            (
                Ip::V4,
                ip_start + ihl,
                usize::from(u16::from_be_bytes([h[2], h[3]])),
            )
        }
        [0x86, 0xdd] => {
            let h = frame.get(ip_start..ip_start + 40)?;
            if h[0] >> 4 != 6 || h[6] != proto {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            (Ip::V6, ip_start + 40, 40 + plen)
        }
        _ => return None,
    };
    let end = if exact {
        ip_start + ip_len
    } else {
        frame.len()
    };
    if end > frame.len() || (exact && end != frame.len()) || l4 > end {
        return None;
    }
    Some((ip, l4, end))
}
