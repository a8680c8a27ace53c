//! UDP superframes both ways. Receiving: runs of one flow's datagrams become
//! `GSO_UDP_L4` superframes that the kernel's segmentation (modelled independently
//! here, with its own checksum routine) turns back into the same datagrams, byte for
//! byte; what must not be merged is not. Sending: a superframe as a pod's
//! `UDP_SEGMENT` send hands it over is cut into exactly the datagrams the kernel would
//! have sent, never smaller, and coalescing them gives the superframe back.

use super::coalesce::{MAX_SUPERFRAME, MAX_UDP_SEGMENTS};
use super::segment::{prepare, Prepared, Superframe};
use super::tcp::ETHERNET_LEN;
use super::tests::{coalesce, naive_sum};
use super::vnet::{Repr, F_NEEDS_CSUM, GSO_UDP_L4};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Flow {
    v6: bool,
    addrs: [u8; 32],
    ports: [u8; 4],
    ip_id: u16,
    ttl: u8,
}

impl Flow {
    fn l4(&self) -> usize {
        ETHERNET_LEN + if self.v6 { 40 } else { 20 }
    }

    /// One datagram as a sender's kernel makes it: lengths, IPv4 header checksum and
    /// UDP checksum all complete (a computed zero is sent as 0xffff).
    fn datagram(&self, i: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        let udp_len = 8 + payload.len();
        if self.v6 {
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend((udp_len as u16).to_be_bytes());
            f.extend([17, self.ttl]);
            f.extend(self.addrs);
        } else {
            f.extend([0x08, 0x00, 0x45, 0]);
            f.extend(((20 + udp_len) as u16).to_be_bytes());
            f.extend(self.ip_id.wrapping_add(i).to_be_bytes());
            f.extend([0x40, 0, self.ttl, 17, 0, 0]);
            f.extend(&self.addrs[..8]);
            let c = !(naive_sum(&f[14..34], 0) as u16);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = f.len();
        f.extend(self.ports);
        f.extend((udp_len as u16).to_be_bytes());
        f.extend([0, 0]);
        f.extend(payload);
        let c = self.udp_checksum(&f[l4..]);
        f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn udp_checksum(&self, udp: &[u8]) -> u16 {
        let addrs = if self.v6 {
            &self.addrs[..]
        } else {
            &self.addrs[..8]
        };
        let mut acc = naive_sum(addrs, 0);
        acc = naive_sum(&[0, 17], acc);
        acc = naive_sum(&(udp.len() as u16).to_be_bytes(), acc);
        match !(naive_sum(udp, acc) as u16) {
            0 => 0xffff,
            c => c,
        }
    }

    /// What the receiving kernel does with a `GSO_UDP_L4` superframe: cut the payload
    /// every `gso_size` bytes, each piece with the headers, its own lengths, the next
    /// IPv4 identification, and complete checksums.
    fn kernel_segments(&self, repr: &Repr, frame: &[u8]) -> Vec<Vec<u8>> {
        assert_eq!(repr.gso_type, GSO_UDP_L4);
        assert_eq!(repr.flags, F_NEEDS_CSUM);
        let l4 = self.l4();
        assert_eq!(usize::from(repr.csum_start), l4);
        assert_eq!(repr.csum_offset, 6);
        assert_eq!(usize::from(repr.hdr_len), l4 + 8);
        let first_id = u16::from_be_bytes([frame[18], frame[19]]);
        frame[l4 + 8..]
            .chunks(usize::from(repr.gso_size))
            .enumerate()
            .map(|(i, payload)| {
                // The superframe's headers, then this piece's lengths and checksums.
                let mut seg = frame[..l4 + 8].to_vec();
                seg.extend(payload);
                let udp_len = (8 + payload.len()) as u16;
                if self.v6 {
                    seg[18..20].copy_from_slice(&udp_len.to_be_bytes());
                } else {
                    seg[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
                    seg[18..20].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
                    seg[24..26].fill(0);
                    let c = !(naive_sum(&seg[14..34], 0) as u16);
                    seg[24..26].copy_from_slice(&c.to_be_bytes());
                }
                seg[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
                seg[l4 + 6..l4 + 8].fill(0);
                let c = self.udp_checksum(&seg[l4..]);
                seg[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
                seg
            })
            .collect()
    }
}

impl Flow {
    /// A superframe as the TAP device hands one over from a pod that sent `payload`
    /// with `UDP_SEGMENT` = `gso_size`: the first datagram's headers with the lengths
    /// of the whole, and the UDP checksum field holding the pseudo-header sum.
    fn superframe(&self, gso_size: u16, payload: &[u8]) -> (Repr, Vec<u8>) {
        let mut f = self.datagram(0, payload);
        let l4 = self.l4();
        let mut acc = naive_sum(
            if self.v6 {
                &self.addrs[..]
            } else {
                &self.addrs[..8]
            },
            0,
        );
        acc = naive_sum(&[0, 17], acc);
        acc = naive_sum(&((8 + payload.len()) as u16).to_be_bytes(), acc);
        f[l4 + 6..l4 + 8].copy_from_slice(&(acc as u16).to_be_bytes());
        let repr = Repr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (l4 + 8) as u16,
            gso_size,
            csum_start: l4 as u16,
            csum_offset: 6,
        };
        (repr, f)
    }
}

/// Prepares and cuts a superframe for frames of at most `max_frame` bytes.
fn split(repr: &Repr, frame: &[u8], max_frame: usize) -> Option<Vec<Vec<u8>>> {
    let mut frame = frame.to_vec();
    let Ok(Prepared::Superframe { layout, gso_size }) = prepare(repr, &mut frame) else {
        panic!("not a superframe");
    };
    let sf = Superframe::new(&frame, layout, gso_size);
    let mss = sf.mss_for(max_frame)?;
    Some(
        (0..sf.count(mss))
            .map(|i| {
                let mut out = vec![0; sf.segment_len(i, mss)];
                assert_eq!(sf.write_segment(i, mss, &mut out), out.len());
                out
            })
            .collect(),
    )
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        any::<bool>(),
        any::<[u8; 32]>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        1u8..=255,
    )
        .prop_map(|(v6, addrs, ports, ip_id, ttl)| Flow {
            v6,
            addrs,
            ports,
            ip_id,
            ttl,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A run of datagrams of one size (the last may be shorter) comes out as
    /// superframes of at most `MAX_UDP_SEGMENTS` datagrams that the kernel cuts back
    /// into exactly the datagrams that went in; a run of one is written as it came.
    #[test]
    fn runs_round_trip_through_the_kernels_segmentation(
        f in flow(),
        size in 1usize..1400,
        count in 1usize..150,
        last in 1usize..1400,
        seed in any::<u8>(),
    ) {
        let last = last.min(size);
        let datagrams: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let len = if i + 1 == count { last } else { size };
                let payload: Vec<u8> = (0..len).map(|j| (j as u8) ^ seed ^ (i as u8)).collect();
                f.datagram(i as u16, &payload)
            })
            .collect();
        let got = coalesce(&datagrams);
        let mut back = Vec::new();
        for (repr, frame) in &got {
            if *repr == Repr::PLAIN {
                back.push(frame.clone());
            } else {
                prop_assert_eq!(usize::from(repr.gso_size), size);
                prop_assert!(frame.len() <= MAX_SUPERFRAME);
                let segs = f.kernel_segments(repr, frame);
                prop_assert!(segs.len() >= 2 && segs.len() <= MAX_UDP_SEGMENTS as usize);
                back.extend(segs);
            }
        }
        // Merged whenever two fit: the first output holds as many as can.
        let fit = (MAX_SUPERFRAME - f.l4() - 8) / size;
        let first = count.min(fit).min(MAX_UDP_SEGMENTS as usize);
        if first >= 2 {
            prop_assert_ne!(got[0].0, Repr::PLAIN);
        }
        prop_assert!(back == datagrams, "segments differ from the datagrams sent");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A pod's UDP superframe is cut into the datagrams its kernel would have sent
    /// (the model's, byte for byte, checksums computed independently), and they
    /// coalesce back into the superframe; a path too narrow for one datagram of the
    /// pod's size refuses the superframe rather than cut its datagrams smaller.
    #[test]
    fn a_pods_superframe_splits_into_its_datagrams_and_back(
        f in flow(),
        size in 1usize..1400,
        count in 2usize..60,
        last in 1usize..1400,
    ) {
        let last = last.min(size);
        let payload: Vec<u8> = (0..size * (count - 1) + last).map(|j| (j * 7) as u8).collect();
        prop_assume!(f.l4() + 8 + payload.len() <= MAX_SUPERFRAME);
        let (repr, frame) = f.superframe(size as u16, &payload);
        let segs = split(&repr, &frame, usize::MAX).expect("fits");
        let want: Vec<Vec<u8>> = payload
            .chunks(size)
            .enumerate()
            .map(|(i, p)| f.datagram(i as u16, p))
            .collect();
        prop_assert!(segs == want, "segments differ from the pod's datagrams");
        let got = coalesce(&segs);
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].0, repr);
        prop_assert!(got[0].1 == frame, "coalesced superframe differs");
        prop_assert!(split(&repr, &frame, f.l4() + 8 + size - 1).is_none());
    }
}

/// What would not come back byte for byte is never merged: no checksum, a bad
/// checksum, a gap in the IPv4 identification, a longer datagram after a shorter one,
/// another TTL; and UDP of another flow starts a superframe of its own.
#[test]
fn what_would_change_is_never_merged() {
    let f = Flow {
        v6: false,
        addrs: [7; 32],
        ports: [1, 2, 3, 4],
        ip_id: 100,
        ttl: 64,
    };
    let l4 = f.l4();
    let d = |i: u16, len: usize| f.datagram(i, &vec![i as u8; len]);
    let plain_each = |frames: &[Vec<u8>]| {
        let got = coalesce(frames);
        assert_eq!(got.len(), frames.len(), "nothing merged");
        for (g, frame) in got.iter().zip(frames) {
            assert_eq!(g, &(Repr::PLAIN, frame.clone()));
        }
    };
    let mut zero = vec![d(0, 50), d(1, 50)];
    for z in &mut zero {
        z[l4 + 6..l4 + 8].fill(0);
    }
    plain_each(&zero);
    let mut bad = vec![d(0, 50), d(1, 50)];
    bad[1][l4 + 9] ^= 1;
    plain_each(&bad);
    plain_each(&[d(0, 50), d(2, 50)]);
    plain_each(&[d(0, 40), d(1, 50)]);
    let mut ttl = d(1, 50);
    ttl[22] = 63;
    let c = {
        ttl[24..26].fill(0);
        !(naive_sum(&ttl[14..34], 0) as u16)
    };
    ttl[24..26].copy_from_slice(&c.to_be_bytes());
    plain_each(&[d(0, 50), ttl]);
    // Two flows interleaved: each is merged on its own, in order within each.
    let g = Flow {
        ports: [9, 9, 9, 9],
        ..f.clone()
    };
    let frames = vec![
        d(0, 30),
        g.datagram(0, &[1; 30]),
        d(1, 30),
        g.datagram(1, &[1; 30]),
    ];
    let got = coalesce(&frames);
    assert_eq!(got.len(), 2);
    assert_eq!(
        f.kernel_segments(&got[0].0, &got[0].1).len()
            + f.kernel_segments(&got[1].0, &got[1].1).len(),
        4
    );
}
