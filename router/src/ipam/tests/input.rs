//! Refusal of bad input: corrupt, truncated, out-of-range and forged gossip.

use crate::ipam::ring::Entry;
use crate::ipam::wire::{GossipMsg, UnicastMsg};
use crate::ipam::{
    fuzz_ipam_gossip, AddrRange, ContainerId, InitMode, Ipam, IpamConfig, IpamOutput,
};
use gossip::channel::GossipChannel;
use gossip::peer::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn settled(me: PeerId) -> Ipam {
    let seeds = vec![me, PeerId([2; 16])];
    let cfg = IpamConfig::new("10.32.0.0/24".parse().expect("cidr"), InitMode::Seed(seeds));
    let now = Instant::now();
    let mut x = Ipam::new(me, cfg, now, 0);
    x.allocate(now, ContainerId("c".into()), None);
    while let Some(o) = x.poll_output() {
        if let IpamOutput::Persist { seq, .. } = o {
            x.handle_persisted(seq);
        }
    }
    x
}

fn ring_msg(x: &Ipam, entries: Vec<(u64, Entry)>, universe: Option<AddrRange>) -> Vec<u8> {
    let ring = x.ring().expect("ring");
    GossipMsg::Ring {
        sender: PeerId([2; 16]),
        universe: universe.unwrap_or(ring.universe()),
        seeds: ring.seeds().to_vec(),
        entries: entries.into_iter().collect(),
    }
    .encode()
}

#[test]
fn corrupt_truncated_out_of_range_and_forged_gossip_is_refused_and_counted() {
    let me = PeerId([1; 16]);
    let mut x = settled(me);
    let before = x.snapshot();
    let ring = x.ring().cloned().expect("ring");
    let (mine, theirs) = {
        let mut it = ring.entries().iter();
        let a = it.next().map(|(t, e)| (*t, *e)).expect("two entries");
        let b = it.next().map(|(t, e)| (*t, *e)).expect("two entries");
        if a.1.owner == me {
            (a, b)
        } else {
            (b, a)
        }
    };
    // Truncated and corrupt.
    let good = ring_msg(&x, vec![theirs], None);
    assert!(x.merge(Instant::now(), &good[..good.len() - 1]).is_err());
    assert!(x.merge(Instant::now(), &[0xff; 9]).is_err());
    assert_eq!(x.stats().malformed, 2);
    // A token outside the range.
    let outside = ring_msg(&x, vec![(10, theirs.1)], None);
    assert!(x.merge(Instant::now(), &outside).is_err());
    assert_eq!(x.stats().out_of_range, 1);
    // A donation message claiming space outside the range.
    let space = UnicastMsg::Space {
        ring: ring.id().0,
        entries: [(1 << 33, theirs.1)].into(),
    };
    assert!(x
        .handle_unicast(Instant::now(), PeerId([2; 16]), &space.encode())
        .is_err());
    assert_eq!(x.stats().out_of_range, 2);
    // Forged: a higher version of our token naming another owner; a token inside our range.
    let stolen = Entry {
        owner: PeerId([2; 16]),
        version: mine.1.version + 5,
        free: 1,
    };
    let split = Entry {
        owner: PeerId([2; 16]),
        version: 1,
        free: 1,
    };
    assert_eq!(
        x.merge(
            Instant::now(),
            &ring_msg(&x, vec![(mine.0, stolen), (mine.0 + 7, split)], None)
        ),
        Ok(None)
    );
    // Same version, other content.
    let twin = Entry {
        free: theirs.1.free + 1,
        ..theirs.1
    };
    assert_eq!(
        x.merge(Instant::now(), &ring_msg(&x, vec![(theirs.0, twin)], None)),
        Ok(None)
    );
    assert_eq!(x.stats().inconsistent, 3);
    assert_eq!(x.snapshot(), before, "state changed");
}

#[test]
fn fuzz_ipam_gossip_never_panics() {
    let x = settled(PeerId([1; 16]));
    let ring = x.ring().cloned().expect("ring");
    let entries: Vec<(u64, Entry)> = ring.entries().iter().map(|(t, e)| (*t, *e)).collect();
    let mut corpus = vec![
        ring_msg(&x, entries.clone(), None),
        ring_msg(
            &x,
            entries.clone(),
            Some(AddrRange {
                start: 0,
                end: 1 << 32,
            }),
        ),
        UnicastMsg::SpaceRequest {
            ring: ring.id().0,
            within: ring.universe(),
        }
        .encode(),
        UnicastMsg::Space {
            ring: ring.id().0,
            entries: entries.iter().copied().collect(),
        }
        .encode(),
    ];
    corpus.push(UnicastMsg::Gossip(corpus[0].clone()).encode());
    let mut rng = StdRng::seed_from_u64(0x1ba3);
    for round in 0..3000 {
        let input: Vec<u8> = if round % 4 == 0 {
            (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
        } else {
            let mut v = corpus[rng.gen_range(0..corpus.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                if v.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..v.len());
                match rng.gen_range(0..4) {
                    0 => v[i] ^= 1 << rng.gen_range(0..8),
                    1 => v[i] = rng.gen(),
                    2 => v.truncate(i),
                    _ => v.insert(i, rng.gen()),
                }
            }
            v
        };
        fuzz_ipam_gossip(&input);
    }
    for c in &corpus {
        fuzz_ipam_gossip(c);
    }
}
