//! Replies parsed back with smoltcp: types, codes, MTUs, checksums, quotes; and the
//! cases that get no reply.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smoltcp::wire::{EthernetAddress, Icmpv4DstUnreachable, Ipv4Address, Ipv6Address};

const HOST: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
const PEER: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
const SRC4: Ipv4Address = Ipv4Address::new(10, 32, 0, 1);
const DST4: Ipv4Address = Ipv4Address::new(10, 32, 0, 2);
const SRC6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const DST6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const MTU: u16 = 1377;

fn ethernet(dst: EthernetAddress, ethertype: EthernetProtocol, ip: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; ETHERNET_HEADER_LEN + ip.len()];
    let repr = EthernetRepr {
        src_addr: HOST,
        dst_addr: dst,
        ethertype,
    };
    let mut view = EthernetFrame::new_unchecked(&mut frame[..]);
    repr.emit(&mut view);
    view.payload_mut().copy_from_slice(ip);
    frame
}

/// An IPv4 packet (DF set by smoltcp) of `total` bytes carrying `protocol`.
fn ipv4(dst: Ipv4Address, protocol: IpProtocol, total: usize) -> Vec<u8> {
    let mut ip = vec![0u8; total];
    let repr = Ipv4Repr {
        src_addr: SRC4,
        dst_addr: dst,
        next_header: protocol,
        payload_len: total - IPV4_HEADER_LEN,
        hop_limit: 63,
    };
    let mut packet = Ipv4Packet::new_unchecked(&mut ip[..]);
    repr.emit(&mut packet, &ChecksumCapabilities::default());
    for (i, b) in packet.payload_mut().iter_mut().enumerate() {
        *b = i as u8;
    }
    ip
}

fn ipv6(dst: Ipv6Address, total: usize) -> Vec<u8> {
    let mut ip = vec![0u8; total];
    let repr = Ipv6Repr {
        src_addr: SRC6,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: total - IPV6_HEADER_LEN,
        hop_limit: 63,
    };
    let mut packet = Ipv6Packet::new_unchecked(&mut ip[..]);
    repr.emit(&mut packet);
    packet.set_flow_label(0x12345);
    packet.payload_mut().fill(0xab);
    ip
}

#[test]
fn ipv4_fragmentation_needed() {
    let frame = ethernet(
        PEER,
        EthernetProtocol::Ipv4,
        &ipv4(DST4, IpProtocol::Udp, 1400),
    );
    let mut out = [0u8; 1600];
    let len = too_big_reply(&frame, MTU, &mut out).expect("a reply");
    assert_eq!(len, 14 + 20 + 8 + 28);
    let reply = EthernetFrame::new_checked(&out[..len]).expect("ethernet");
    assert_eq!((reply.src_addr(), reply.dst_addr()), (PEER, HOST));
    assert_eq!(reply.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(reply.payload()).expect("ipv4");
    assert!(ip.verify_checksum());
    let caps = ChecksumCapabilities::default();
    let ip_repr = Ipv4Repr::parse(&ip, &caps).expect("valid ipv4");
    assert_eq!((ip_repr.src_addr, ip_repr.dst_addr), (DST4, SRC4));
    assert_eq!(ip_repr.next_header, IpProtocol::Icmp);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("icmp");
    assert!(icmp.verify_checksum());
    assert_eq!(&ip.payload()[6..8], &MTU.to_be_bytes());
    // smoltcp's Icmpv4Repr::parse refuses a quote shorter than the quoted packet's
    // total length (as every real "fragmentation needed" is), so read the fields.
    assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
    assert_eq!(
        icmp.msg_code(),
        u8::from(Icmpv4DstUnreachable::FragRequired)
    );
    let quoted = Ipv4Packet::new_unchecked(icmp.data());
    assert_eq!((quoted.src_addr(), quoted.dst_addr()), (SRC4, DST4));
    assert_eq!(icmp.data().len(), 20 + 8);
    assert_eq!(
        &icmp.data()[..28],
        &frame[14..14 + 28],
        "header + 8 bytes, verbatim"
    );
}

#[test]
fn ipv6_packet_too_big() {
    let frame = ethernet(PEER, EthernetProtocol::Ipv6, &ipv6(DST6, 1400));
    let mut out = [0u8; 1600];
    let len = too_big_reply(&frame, 1357, &mut out).expect("a reply");
    assert_eq!(len, 14 + 1280, "as much as fits in 1280 bytes");
    let reply = EthernetFrame::new_checked(&out[..len]).expect("ethernet");
    assert_eq!((reply.src_addr(), reply.dst_addr()), (PEER, HOST));
    let ip = Ipv6Packet::new_checked(reply.payload()).expect("ipv6");
    let ip_repr = Ipv6Repr::parse(&ip).expect("valid ipv6");
    assert_eq!((ip_repr.src_addr, ip_repr.dst_addr), (DST6, SRC6));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("icmpv6");
    assert!(icmp.verify_checksum(&DST6, &SRC6));
    let caps = ChecksumCapabilities::default();
    let repr = Icmpv6Repr::parse(&DST6, &SRC6, &icmp, &caps).expect("valid icmpv6");
    let Icmpv6Repr::PktTooBig { mtu, header, .. } = repr else {
        panic!("not a packet too big");
    };
    assert_eq!(mtu, 1357);
    assert_eq!((header.src_addr, header.dst_addr), (SRC6, DST6));
    assert_eq!(
        icmp.payload(),
        &frame[14..14 + 1232],
        "verbatim, flow label included"
    );
}

#[test]
fn no_reply_when_none_is_due() {
    let mut out = [0u8; 1600];
    let mut check = |frame: Vec<u8>, expected: NoReply| {
        assert_eq!(too_big_reply(&frame, MTU, &mut out), Err(expected));
    };
    let big4 = ipv4(DST4, IpProtocol::Udp, 1400);
    check(
        ethernet(
            PEER,
            EthernetProtocol::Ipv4,
            &ipv4(DST4, IpProtocol::Udp, 1377),
        ),
        NoReply::FitsMtu,
    );
    check(
        ethernet(EthernetAddress::BROADCAST, EthernetProtocol::Ipv4, &big4),
        NoReply::GroupDestination,
    );
    let multicast = Ipv4Address::new(224, 0, 0, 1);
    check(
        ethernet(
            PEER,
            EthernetProtocol::Ipv4,
            &ipv4(multicast, IpProtocol::Udp, 1400),
        ),
        NoReply::GroupDestination,
    );
    let mut may_fragment = big4.clone();
    let mut packet = Ipv4Packet::new_unchecked(&mut may_fragment[..]);
    packet.set_dont_frag(false);
    packet.fill_checksum();
    check(
        ethernet(PEER, EthernetProtocol::Ipv4, &may_fragment),
        NoReply::MayFragment,
    );
    let mut icmp_error = ipv4(DST4, IpProtocol::Icmp, 1400);
    icmp_error[IPV4_HEADER_LEN] = 3;
    check(
        ethernet(PEER, EthernetProtocol::Ipv4, &icmp_error),
        NoReply::IcmpError,
    );
    check(
        ethernet(PEER, EthernetProtocol::Arp, &[0u8; 1400]),
        NoReply::NotIp,
    );
    check(
        ethernet(PEER, EthernetProtocol::Ipv4, &[0u8; 1400]),
        NoReply::NotIp,
    );
    let all_nodes = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    check(
        ethernet(PEER, EthernetProtocol::Ipv6, &ipv6(all_nodes, 1400)),
        NoReply::GroupDestination,
    );
    let frame = ethernet(PEER, EthernetProtocol::Ipv4, &big4);
    assert_eq!(
        too_big_reply(&frame, MTU, &mut out[..60]),
        Err(NoReply::BufferTooSmall { needed: 70 })
    );
}

#[test]
fn arbitrary_frames_never_panic() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut out = [0u8; 1600];
    let valid = [
        ethernet(
            PEER,
            EthernetProtocol::Ipv4,
            &ipv4(DST4, IpProtocol::Udp, 1400),
        ),
        ethernet(PEER, EthernetProtocol::Ipv6, &ipv6(DST6, 1400)),
    ];
    for i in 0..3000 {
        let mut frame = if i % 3 == 0 {
            (0..rng.gen_range(0..1600)).map(|_| rng.gen()).collect()
        } else {
            valid[i % 2].clone()
        };
        for _ in 0..rng.gen_range(0..4) {
            let at = rng.gen_range(0..frame.len().max(1));
            if let Some(b) = frame.get_mut(at) {
                *b = rng.gen();
            }
        }
        frame.truncate(rng.gen_range(0..=frame.len()));
        let _ = too_big_reply(&frame, rng.gen_range(0..2000), &mut out);
    }
}
