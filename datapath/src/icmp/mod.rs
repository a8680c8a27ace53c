//! ICMP "too big" replies for frames that do not fit the overlay MTU.
//!
//! A container may send an IP packet larger than the overlay can carry whole (see
//! [`crate::sleeve::overlay_mtu`]). Rather than fragmenting or silently dropping it, the
//! router answers on the container's own L2 segment, as a router on its path would, so
//! that path-MTU discovery (and TCP's MSS) adapts:
//!
//! - IPv4 with DF set: Destination Unreachable, code 4 "fragmentation needed", with the
//!   next-hop MTU (RFC 1191), quoting the original IP header and the first 8 bytes of its
//!   payload (RFC 792).
//! - IPv6: Packet Too Big with the MTU (RFC 4443 §3.2), quoting as much of the original
//!   packet as fits in a 1280-byte reply (RFC 4443 §2.4(c)).
//!
//! The reply goes from the original destination (MAC and IP) back to the source, with
//! correct checksums. There is never a reply to a group (multicast/broadcast) destination,
//! to a packet from an unspecified or group source, to a non-first IPv4 fragment, or to an
//! ICMP error (RFC 1122 §3.2.2, RFC 4443 §2.4(e)). The reply is built in the caller's
//! buffer: no allocation.
//!
//! Ethernet and IP headers are written with smoltcp's `EthernetRepr`, `Ipv4Repr` and
//! `Ipv6Repr`, the ICMPv6 message with `Icmpv6Repr`; the ICMPv4 message is written with
//! smoltcp's packet view, because `Icmpv4Repr` has no next-hop MTU field and would rebuild
//! (and so alter) the quoted header.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Message, Icmpv4Packet, Icmpv6Packet,
    Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
};
use thiserror::Error;

/// Ethernet header length.
const ETHERNET_HEADER_LEN: usize = 14;
/// ICMP header length (type, code, checksum, 4 bytes of MTU or unused).
const ICMP_HEADER_LEN: usize = 8;
/// IPv4 header length without options, as we emit it.
const IPV4_HEADER_LEN: usize = 20;
/// IPv6 header length.
const IPV6_HEADER_LEN: usize = 40;
/// An ICMPv6 error must fit in the IPv6 minimum MTU.
const IPV6_MIN_MTU: usize = 1280;
/// Hop limit of our replies.
const HOP_LIMIT: u8 = 64;
/// ICMPv4 code "fragmentation needed and DF set".
const FRAG_NEEDED: u8 = 4;

/// Why no reply was built. Only [`NoReply::BufferTooSmall`] is a caller error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NoReply {
    /// Not a parseable Ethernet frame carrying IPv4 or IPv6.
    #[error("not a well-formed IPv4 or IPv6 frame")]
    NotIp,
    /// The packet fits the MTU.
    #[error("packet fits the overlay MTU")]
    FitsMtu,
    /// IPv4 without DF: it may be fragmented instead.
    #[error("IPv4 packet without DF")]
    MayFragment,
    /// A later IPv4 fragment (only the first one gets an error).
    #[error("non-first IPv4 fragment")]
    NotFirstFragment,
    /// Group (multicast or broadcast) destination MAC or IP.
    #[error("group destination")]
    GroupDestination,
    /// Unspecified, group or otherwise non-unicast source address.
    #[error("source is not a unicast host")]
    InvalidSource,
    /// The packet is itself an ICMP error.
    #[error("packet is an ICMP error")]
    IcmpError,
    /// `out` cannot hold the reply.
    #[error("reply buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the reply needs.
        needed: usize,
    },
}

/// Builds, in `out`, the ICMP "too big" reply to `frame` if its IP packet is larger than
/// `overlay_mtu`, and returns the reply's length. See the module doc for when no reply
/// is due.
pub fn too_big_reply(frame: &[u8], overlay_mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let ethernet = EthernetFrame::new_checked(frame).map_err(|_| NoReply::NotIp)?;
    let ip_len = frame.len() - ETHERNET_HEADER_LEN;
    match ethernet.ethertype() {
        EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 if ip_len <= usize::from(overlay_mtu) => {
            Err(NoReply::FitsMtu)
        }
        _ if ethernet.dst_addr().is_multicast() || ethernet.dst_addr().is_broadcast() => {
            Err(NoReply::GroupDestination)
        }
        EthernetProtocol::Ipv4 => ipv4_reply(&ethernet, overlay_mtu, out),
        EthernetProtocol::Ipv6 => ipv6_reply(&ethernet, overlay_mtu, out),
        _ => Err(NoReply::NotIp),
    }
}

/// The Ethernet header of a reply to `ethernet`, emitted into `out`.
fn emit_ethernet(ethernet: &EthernetFrame<&[u8]>, out: &mut [u8], ethertype: EthernetProtocol) {
    let repr = EthernetRepr {
        src_addr: ethernet.dst_addr(),
        dst_addr: ethernet.src_addr(),
        ethertype,
    };
    repr.emit(&mut EthernetFrame::new_unchecked(out));
}

fn ipv4_reply(ethernet: &EthernetFrame<&[u8]>, mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let packet = Ipv4Packet::new_checked(ethernet.payload()).map_err(|_| NoReply::NotIp)?;
    if packet.version() != 4 || usize::from(packet.header_len()) < IPV4_HEADER_LEN {
        return Err(NoReply::NotIp);
    }
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    if !packet.dont_frag() {
        return Err(NoReply::MayFragment);
    }
    if packet.frag_offset() != 0 {
        return Err(NoReply::NotFirstFragment);
    }
    if dst.is_multicast() || dst.is_broadcast() {
        return Err(NoReply::GroupDestination);
    }
    if src.is_unspecified()
        || src.is_multicast()
        || src.is_broadcast()
        || !ethernet.src_addr().is_unicast()
    {
        return Err(NoReply::InvalidSource);
    }
    let header_len = usize::from(packet.header_len());
    let original = ethernet.payload();
    if packet.next_header() == IpProtocol::Icmp && is_icmpv4_error(original.get(header_len)) {
        return Err(NoReply::IcmpError);
    }
    let quote = &original[..(header_len + 8).min(original.len())];
    let icmp_len = ICMP_HEADER_LEN + quote.len();
    let needed = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + icmp_len;
    let out = out
        .get_mut(..needed)
        .ok_or(NoReply::BufferTooSmall { needed })?;

    emit_ethernet(ethernet, out, EthernetProtocol::Ipv4);
    let ip = Ipv4Repr {
        src_addr: dst,
        dst_addr: src,
        next_header: IpProtocol::Icmp,
        payload_len: icmp_len,
        hop_limit: HOP_LIMIT,
    };
    let mut ip_packet = Ipv4Packet::new_unchecked(&mut out[ETHERNET_HEADER_LEN..]);
    ip.emit(&mut ip_packet, &ChecksumCapabilities::default());
    let icmp = ip_packet.payload_mut();
    // Unused (2 bytes, zero) then the next-hop MTU (RFC 1191).
    icmp[4..6].fill(0);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    let mut icmp = Icmpv4Packet::new_unchecked(icmp);
    icmp.set_msg_type(Icmpv4Message::DstUnreachable);
    icmp.set_msg_code(FRAG_NEEDED);
    icmp.data_mut().copy_from_slice(quote);
    icmp.fill_checksum();
    Ok(needed)
}

/// Whether an ICMPv4 message type (if present) is an error message.
fn is_icmpv4_error(msg_type: Option<&u8>) -> bool {
    // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
    matches!(msg_type, Some(3 | 4 | 5 | 11 | 12))
}

fn ipv6_reply(ethernet: &EthernetFrame<&[u8]>, mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let packet = Ipv6Packet::new_checked(ethernet.payload()).map_err(|_| NoReply::NotIp)?;
    let header = Ipv6Repr::parse(&packet).map_err(|_| NoReply::NotIp)?;
    let (src, dst) = (header.src_addr, header.dst_addr);
    if dst.is_multicast() {
        return Err(NoReply::GroupDestination);
    }
    if src.is_unspecified() || src.is_multicast() || !ethernet.src_addr().is_unicast() {
        return Err(NoReply::InvalidSource);
    }
    // ICMPv6 error messages have types below 128. (Extension headers before an ICMPv6
    // error are not followed: such a packet simply gets its reply.)
    if header.next_header == IpProtocol::Icmpv6
        && packet.payload().first().is_some_and(|t| *t < 128)
    {
        return Err(NoReply::IcmpError);
    }
    let original = ethernet.payload();
    let room = IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMP_HEADER_LEN;
    let quote = &original[..original.len().min(room)];
    let icmp_len = ICMP_HEADER_LEN + quote.len();
    let needed = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + icmp_len;
    let out = out
        .get_mut(..needed)
        .ok_or(NoReply::BufferTooSmall { needed })?;

    emit_ethernet(ethernet, out, EthernetProtocol::Ipv6);
    let ip = Ipv6Repr {
        src_addr: dst,
        dst_addr: src,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp_len,
        hop_limit: HOP_LIMIT,
    };
    let mut ip_packet = Ipv6Packet::new_unchecked(&mut out[ETHERNET_HEADER_LEN..]);
    ip.emit(&mut ip_packet);
    let message = Icmpv6Repr::PktTooBig {
        mtu: u32::from(mtu),
        header,
        data: &quote[IPV6_HEADER_LEN..],
    };
    let mut icmp = Icmpv6Packet::new_unchecked(ip_packet.payload_mut());
    let caps = ChecksumCapabilities::default();
    message.emit(&dst, &src, &mut icmp, &caps);
    // Quote the original header verbatim (the Repr drops traffic class and flow label),
    // then checksum again.
    icmp.payload_mut()[..IPV6_HEADER_LEN].copy_from_slice(&quote[..IPV6_HEADER_LEN]);
    icmp.fill_checksum(&dst, &src);
    Ok(needed)
}

#[cfg(test)]
mod tests;
