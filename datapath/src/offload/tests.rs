//! Split-then-coalesce round trips, checksums against an independent routine, flag
//! placement, what is never merged, and malformed headers.

use super::coalesce::Coalescer;
use super::segment::{prepare, Prepared, Superframe};
use super::tcp::{flags, ETHERNET_LEN};
use super::vnet::{self, Repr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VNET_HDR_LEN};
use super::{fuzz_offload, OffloadError};
use proptest::prelude::*;

/// RFC 1071 the slow way: 16-bit words into a 32-bit sum, carries folded each time.
pub(crate) fn naive_sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        let w = (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0));
        acc += w;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Whether the IP header checksum (IPv4) and the TCP checksum of a segment verify.
pub(crate) fn checksums_verify(seg: &[u8], v6: bool) -> bool {
    let ip = &seg[ETHERNET_LEN..];
    let (ihl, addrs, ip_ok) = if v6 {
        (40, &ip[8..40], true)
    } else {
        let ihl = usize::from(ip[0] & 15) * 4;
        (ihl, &ip[12..20], naive_sum(&ip[..ihl], 0) == 0xffff)
    };
    let tcp = &ip[ihl..];
    let mut acc = naive_sum(addrs, 0);
    acc = naive_sum(&[0, 6], acc);
    let len = tcp.len() as u32;
    acc = naive_sum(&[(len >> 8) as u8, len as u8], acc);
    ip_ok && naive_sum(tcp, acc) == 0xffff
}

#[derive(Debug, Clone)]
pub(crate) struct Spec {
    v6: bool,
    addrs: [u8; 32],
    ports: [u8; 4],
    seq: u32,
    ack: u32,
    window: u16,
    ip_id: u16,
    ttl: u8,
    options: Vec<u8>,
    flags: u8,
    payload: Vec<u8>,
}

/// A superframe as the kernel hands one over (and as the coalescer builds it): IP
/// lengths of the whole, a valid IPv4 header checksum, the TCP checksum field holding
/// the pseudo-header sum.
pub(crate) fn superframe(s: &Spec, gso_size: u16) -> (Repr, Vec<u8>) {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let tcp_len = 20 + s.options.len() + s.payload.len();
    if s.v6 {
        f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend((tcp_len as u16).to_be_bytes());
        f.extend([6, s.ttl]);
        f.extend(s.addrs);
    } else {
        f.extend([0x08, 0x00, 0x45, 0]);
        f.extend(((20 + tcp_len) as u16).to_be_bytes());
        f.extend(s.ip_id.to_be_bytes());
        f.extend([0x40, 0, s.ttl, 6, 0, 0]);
        f.extend(&s.addrs[..8]);
        let c = !(naive_sum(&f[14..34], 0) as u16);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    let tcp = f.len();
    f.extend(s.ports);
    f.extend(s.seq.to_be_bytes());
    f.extend(s.ack.to_be_bytes());
    f.extend([((20 + s.options.len()) / 4 * 16) as u8, s.flags]);
    f.extend(s.window.to_be_bytes());
    f.extend([0, 0, 0, 0]);
    f.extend(&s.options);
    let hdr_len = f.len();
    f.extend(&s.payload);
    let addrs = if s.v6 { &s.addrs[..] } else { &s.addrs[..8] };
    let mut acc = naive_sum(addrs, 0);
    acc = naive_sum(&[0, 6], acc);
    acc = naive_sum(&(tcp_len as u16).to_be_bytes(), acc);
    f[tcp + 16..tcp + 18].copy_from_slice(&(acc as u16).to_be_bytes());
    let repr = Repr {
        flags: F_NEEDS_CSUM,
        gso_type: if s.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: hdr_len as u16,
        gso_size,
        csum_start: tcp as u16,
        csum_offset: 16,
    };
    (repr, f)
}

/// Splits with the superframe's own size (or `mss`); returns the segments.
fn split(repr: &Repr, frame: &[u8], mss: Option<usize>) -> Vec<Vec<u8>> {
    let mut frame = frame.to_vec();
    let Ok(Prepared::Superframe { layout, gso_size }) = prepare(repr, &mut frame) else {
        panic!("not a TCP superframe");
    };
    let sf = Superframe::new(&frame, layout, gso_size);
    let mss = mss.unwrap_or(usize::from(gso_size));
    (0..sf.count(mss))
        .map(|i| {
            let mut out = vec![0; sf.segment_len(i, mss)];
            assert_eq!(sf.write_segment(i, mss, &mut out), out.len());
            out
        })
        .collect()
}

/// Everything the coalescer writes for `frames`, as (header, frame).
pub(crate) fn coalesce(frames: &[Vec<u8>]) -> Vec<(Repr, Vec<u8>)> {
    let mut c = Coalescer::new();
    let mut got = Vec::new();
    let mut out = |h: &[u8; VNET_HDR_LEN], f: &[u8]| {
        got.push((
            Repr::parse(&vnet::Packet::new_unchecked(&h[..])),
            f.to_vec(),
        ));
    };
    for f in frames {
        c.push(f, &mut out);
    }
    c.flush(&mut out);
    got
}

fn tcp_flags(seg: &[u8], v6: bool) -> u8 {
    let ip = ETHERNET_LEN;
    let tcp = if v6 {
        ip + 40
    } else {
        ip + usize::from(seg[ip] & 15) * 4
    };
    seg[tcp + 13]
}

fn spec() -> impl Strategy<Value = (Spec, u16)> {
    (
        any::<bool>(),
        any::<[u8; 32]>(),
        any::<[u8; 4]>(),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            1u8..,
        ),
        (0usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4)),
        prop_oneof![
            Just(flags::ACK),
            Just(flags::ACK | flags::PSH),
            Just(flags::ACK | flags::ECE)
        ],
        (1usize..60_000, any::<u8>()),
        1u16..=9000,
    )
        .prop_map(
            |(v6, addrs, ports, (seq, ack, window, ip_id, ttl), options, flags, (len, b), mss)| {
                let payload = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ b).collect();
                let s = Spec {
                    v6,
                    addrs,
                    ports,
                    seq,
                    ack,
                    window,
                    ip_id,
                    ttl,
                    options,
                    flags,
                    payload,
                };
                (s, mss)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Split then coalesce gives the superframe back, byte for byte, with the same
    /// header; every segment's checksums verify independently; sequence numbers, IPv4
    /// identifications and PSH land as the kernel's segmentation puts them.
    #[test]
    fn split_then_coalesce_is_identity((s, mss) in spec()) {
        let (repr, frame) = superframe(&s, mss);
        let segs = split(&repr, &frame, None);
        let n = s.payload.len().div_ceil(usize::from(mss));
        prop_assert_eq!(segs.len(), n);
        let hdr = usize::from(repr.hdr_len);
        let mut seq = s.seq;
        for (i, seg) in segs.iter().enumerate() {
            prop_assert!(checksums_verify(seg, s.v6), "segment {} checksums", i);
            prop_assert!(seg.len() - hdr <= usize::from(mss));
            let tcp = usize::from(repr.csum_start);
            prop_assert_eq!(&seg[tcp + 4..tcp + 8], &seq.to_be_bytes()[..]);
            seq = seq.wrapping_add((seg.len() - hdr) as u32);
            if !s.v6 {
                prop_assert_eq!(&seg[18..20], &s.ip_id.wrapping_add(i as u16).to_be_bytes()[..]);
            }
            let psh = tcp_flags(seg, s.v6) & flags::PSH != 0;
            prop_assert_eq!(psh, i + 1 == n && s.flags & flags::PSH != 0);
        }
        let got = coalesce(&segs);
        prop_assert_eq!(got.len(), 1);
        if n == 1 {
            prop_assert_eq!(got[0].0, Repr::PLAIN);
            prop_assert_eq!(&got[0].1, &segs[0]);
        } else {
            prop_assert_eq!(got[0].0, repr);
            prop_assert!(got[0].1 == frame, "coalesced superframe differs");
        }
    }

    /// Cut smaller than the sender asked (a narrower path): still valid segments, and
    /// they coalesce into one superframe of that smaller size with the same payload.
    #[test]
    fn a_smaller_mss_still_round_trips((s, mss) in spec(), cut in 1usize..1400) {
        let (repr, frame) = superframe(&s, mss);
        let small = cut.min(usize::from(mss));
        let segs = split(&repr, &frame, Some(small));
        prop_assert!(segs.iter().all(|seg| checksums_verify(seg, s.v6)));
        let got = coalesce(&segs);
        prop_assert_eq!(got.len(), 1);
        let hdr = usize::from(repr.hdr_len);
        prop_assert_eq!(&got[0].1[hdr..], &frame[hdr..]);
    }

    /// A gap, a retransmission, or a segment with other options is never merged across.
    #[test]
    fn gaps_retransmissions_and_other_options_split_the_run(
        (s, _) in spec(), which in 0usize..3, at in 1usize..4,
    ) {
        let mut s = s;
        s.flags = flags::ACK;
        s.payload.resize(1000 * 5, 7);
        let (repr, frame) = superframe(&s, 1000);
        let mut segs = split(&repr, &frame, None);
        match which {
            0 => { segs.remove(at); }
            1 => { let again = segs[at - 1].clone(); segs.insert(at, again); }
            _ => {
                // Other options (a different first option byte), checksum fixed up.
                let tcp = usize::from(repr.csum_start);
                let seg = &mut segs[at];
                if seg[tcp + 12] >> 4 == 5 {
                    seg[tcp + 12] = 6 << 4;
                    seg.splice(tcp + 20..tcp + 20, [1, 1, 1, 1]);
                    if s.v6 {
                        let pl = u16::from_be_bytes([seg[18], seg[19]]) + 4;
                        seg[18..20].copy_from_slice(&pl.to_be_bytes());
                    } else {
                        let tl = u16::from_be_bytes([seg[16], seg[17]]) + 4;
                        seg[16..18].copy_from_slice(&tl.to_be_bytes());
                        seg[24..26].fill(0);
                        let c = !(naive_sum(&seg[14..34], 0) as u16);
                        seg[24..26].copy_from_slice(&c.to_be_bytes());
                    }
                } else {
                    seg[tcp + 20] ^= 0x55;
                }
                seg[tcp + 16..tcp + 18].fill(0);
                let len = seg.len();
                let addrs = if s.v6 { seg[22..54].to_vec() } else { seg[26..34].to_vec() };
                let mut acc = naive_sum(&addrs, 0);
                acc = naive_sum(&[0, 6], acc);
                acc = naive_sum(&((len - tcp) as u16).to_be_bytes(), acc);
                let c = !(naive_sum(&seg[tcp..], acc) as u16);
                seg[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
                prop_assert!(checksums_verify(seg, s.v6));
            }
        }
        let got = coalesce(&segs);
        prop_assert!(got.len() >= 2, "merged across the break");
        // Every output is a run of input segments that really continued each other.
        let payload: usize = got.iter().map(|(_, f)| f.len() - usize::from(repr.hdr_len)).sum();
        let input: usize = segs.iter().map(|f| f.len() - usize::from(repr.hdr_len)).sum();
        if which != 2 {
            prop_assert_eq!(payload, input);
        }
    }
}

pub(crate) fn base_spec(v6: bool, flags: u8, len: usize) -> Spec {
    Spec {
        v6,
        addrs: [9; 32],
        ports: [0x1f, 0x90, 0xc0, 0x00],
        seq: u32::MAX - 1000,
        ack: 77,
        window: 500,
        ip_id: 65_534,
        ttl: 64,
        options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        flags,
        payload: (0..len).map(|i| i as u8).collect(),
    }
}

/// FIN, PSH and RST only on the last segment, CWR only on the first, URG on each (the
/// kernel copies the header, urgent pointer included); sequence numbers wrap.
#[test]
fn flags_land_where_the_kernel_puts_them() {
    for v6 in [false, true] {
        for extra in [flags::FIN | flags::PSH, flags::RST, flags::CWR | flags::URG] {
            let s = base_spec(v6, flags::ACK | extra, 3000);
            let (repr, frame) = superframe(&s, 1000);
            let segs = split(&repr, &frame, None);
            assert_eq!(segs.len(), 3);
            for (i, seg) in segs.iter().enumerate() {
                assert!(checksums_verify(seg, v6));
                let f = tcp_flags(seg, v6);
                let last = i == 2;
                assert_eq!(f & flags::FIN != 0, last && extra & flags::FIN != 0);
                assert_eq!(f & flags::PSH != 0, last && extra & flags::PSH != 0);
                assert_eq!(f & flags::RST != 0, last && extra & flags::RST != 0);
                assert_eq!(f & flags::CWR != 0, i == 0 && extra & flags::CWR != 0);
                assert_eq!(f & flags::URG != 0, extra & flags::URG != 0);
                assert!(f & flags::ACK != 0);
            }
            // None of these runs may be merged whole: FIN/RST/CWR/URG never join.
            assert!(coalesce(&segs).len() >= 2, "{extra:#x}");
        }
    }
}

/// ARP, UDP, ICMP and a TCP SYN pass through untouched, with a plain header, in order
/// with the TCP run around them.
#[test]
fn other_frames_pass_untouched() {
    let arp: Vec<u8> = [[0xff; 6], [2; 6]]
        .concat()
        .into_iter()
        .chain([0x08, 0x06])
        .chain([1; 28])
        .collect();
    let mut udp = base_spec(false, flags::ACK, 0);
    udp.options.clear();
    let (_, mut udp) = superframe(&udp, 1);
    udp[23] = 17;
    let mut icmp6 = udp.clone();
    icmp6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let (_, syn) = superframe(&base_spec(true, flags::SYN, 0), 1);
    for f in [&arp, &udp, &icmp6, &syn] {
        let got = coalesce(std::slice::from_ref(f));
        assert_eq!(got, vec![(Repr::PLAIN, f.clone())]);
    }
    // A flow's segments, then a non-mergeable frame of the same flow: run first.
    let s = base_spec(false, flags::ACK, 2000);
    let (repr, frame) = superframe(&s, 1000);
    let mut segs = split(&repr, &frame, None);
    let (_, fin) = superframe(
        &Spec {
            seq: s.seq.wrapping_add(2000),
            flags: flags::ACK | flags::FIN,
            payload: vec![],
            ..s.clone()
        },
        1,
    );
    segs.push(fin.clone());
    segs.push(arp.clone());
    let got = coalesce(&segs);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].1, frame);
    assert_eq!(got[1].1, fin);
    assert_eq!(got[2].1, arp);
}

/// Malformed headers: dropped with a reason, never a panic.
#[test]
fn malformed_vnet_headers_are_refused() {
    let (repr, frame) = superframe(&base_spec(false, flags::ACK, 3000), 1000);
    let len = frame.len() as u16;
    let cases = [
        (
            Repr {
                gso_size: 0,
                ..repr
            },
            OffloadError::GsoSizeZero,
        ),
        (
            Repr {
                hdr_len: len + 1,
                ..repr
            },
            OffloadError::HeaderPastEnd,
        ),
        (
            Repr {
                csum_start: len,
                ..repr
            },
            OffloadError::ChecksumPastEnd,
        ),
        (
            Repr {
                csum_start: len - 1,
                csum_offset: 0,
                ..repr
            },
            OffloadError::ChecksumPastEnd,
        ),
        (
            Repr {
                csum_offset: u16::MAX,
                ..repr
            },
            OffloadError::ChecksumPastEnd,
        ),
        (
            Repr {
                gso_type: 3,
                ..repr
            },
            OffloadError::Unsupported,
        ),
        (
            Repr {
                gso_type: GSO_TCPV4 | 0x80,
                ..repr
            },
            OffloadError::Unsupported,
        ),
        (
            Repr {
                gso_type: GSO_TCPV6,
                ..repr
            },
            OffloadError::Malformed,
        ),
        (
            Repr {
                gso_type: vnet::GSO_UDP_L4,
                ..repr
            },
            OffloadError::Malformed,
        ),
        (
            Repr {
                csum_start: len,
                gso_type: 0,
                ..repr
            },
            OffloadError::ChecksumPastEnd,
        ),
    ];
    for (bad, want) in cases {
        let mut f = frame.clone();
        assert_eq!(prepare(&bad, &mut f), Err(want), "{bad:?}");
    }
    // Headers cut short: the checksum field is past the end, and without it the TCP
    // header is.
    let mut short = frame[..40].to_vec();
    assert_eq!(
        prepare(&repr, &mut short),
        Err(OffloadError::ChecksumPastEnd)
    );
    let bare = Repr {
        flags: 0,
        hdr_len: 0,
        ..repr
    };
    assert_eq!(prepare(&bare, &mut short), Err(OffloadError::Malformed));
}

/// An ordinary frame with NEEDS_CSUM gets exactly its checksum completed.
#[test]
fn needs_csum_only_completes_the_checksum() {
    let (_, full) = superframe(&base_spec(true, flags::ACK | flags::PSH, 500), 1);
    let mut partial = full.clone();
    let mut want = full.clone();
    let tcp = 14 + 40;
    want[tcp + 16..tcp + 18].fill(0);
    let addrs = want[22..54].to_vec();
    let mut acc = naive_sum(&addrs, 0);
    acc = naive_sum(&[0, 6], acc);
    acc = naive_sum(&((want.len() - tcp) as u16).to_be_bytes(), acc);
    let c = !(naive_sum(&want[tcp..], acc) as u16);
    want[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
    let repr = Repr {
        flags: F_NEEDS_CSUM,
        csum_start: tcp as u16,
        csum_offset: 16,
        ..Repr::PLAIN
    };
    assert_eq!(prepare(&repr, &mut partial), Ok(Prepared::Frame));
    assert_eq!(partial, want);
    assert!(checksums_verify(&partial, true));
}

/// The fuzz entry point, replayed on seeded random and mutated valid inputs.
#[test]
fn fuzz_offload_never_panics() {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..3000 {
        let v6 = i % 2 == 0;
        let (repr, frame) = superframe(
            &base_spec(v6, flags::ACK, (next() % 5000) as usize),
            (next() % 2000) as u16,
        );
        let mut data = repr.to_bytes().to_vec();
        data.extend(frame);
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % data.len();
            data[at] = next() as u8;
        }
        data.truncate((next() as usize) % (data.len() + 1) + usize::from(i % 3 == 0) * data.len());
        fuzz_offload(&data);
        let random: Vec<u8> = (0..next() % 200).map(|_| next() as u8).collect();
        fuzz_offload(&random);
    }
}
