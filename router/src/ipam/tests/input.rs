//! Refusal of bad input: corrupt, truncated, out-of-range and forged gossip.

use crate::ipam::allocator::{MAX_FOREIGN_RINGS, MAX_VOTES};
use crate::ipam::ring::{Entry, MAX_RING_ENTRIES, MAX_VERSION, MAX_VERSION_STEP};
use crate::ipam::takeover::{Ballot, TakeoverMsg, Vote};
use crate::ipam::wire::{GossipMsg, UnicastMsg};
use crate::ipam::{
    fuzz_ipam_gossip, AddrRange, ContainerId, InitMode, Ipam, IpamConfig, IpamOutput,
};
use gossip::channel::GossipChannel;
use gossip::peer::PeerId;
use gossip::sim::{node_id, node_identity};
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

/// Our token and a token of peer 2, from a settled two-peer ring.
fn mine_and_theirs(x: &Ipam, me: PeerId) -> ((u64, Entry), (u64, Entry)) {
    let ring = x.ring().expect("ring");
    let mine = ring.entries().iter().find(|(_, e)| e.owner == me);
    let theirs = ring.entries().iter().find(|(_, e)| e.owner != me);
    let (Some(m), Some(t)) = (mine, theirs) else {
        panic!("two owners")
    };
    ((*m.0, *m.1), (*t.0, *t.1))
}

fn drain(x: &mut Ipam) -> Vec<IpamOutput> {
    let mut out = Vec::new();
    while let Some(o) = x.poll_output() {
        if let IpamOutput::Persist { seq, .. } = &o {
            x.handle_persisted(*seq);
        }
        out.push(o);
    }
    out
}

/// The attack of issue 14: a `Space` entry with version `u64::MAX` for a token the victim
/// does not own (naming the victim), then a `SpaceRequest` inside it: the donation's
/// `version + 1` overflowed and the owner task panicked. Now the entry is refused at
/// decode and the request is served from the real ring.
#[test]
fn space_entry_with_max_version_does_not_panic() {
    let me = PeerId([1; 16]);
    let evil = PeerId([2; 16]);
    let mut x = settled(me);
    let ring = x.ring().cloned().expect("ring");
    let (_, theirs) = mine_and_theirs(&x, me);
    let poisoned = Entry {
        owner: me,
        version: u64::MAX,
        free: 1,
    };
    let space = UnicastMsg::Space {
        ring: ring.id().0,
        entries: [(theirs.0, poisoned)].into(),
    };
    assert!(x
        .handle_unicast(Instant::now(), evil, &space.encode())
        .is_err());
    assert_eq!(x.ring().and_then(|r| r.entry(theirs.0)), Some(&theirs.1));
    let within = AddrRange {
        start: theirs.0,
        end: theirs.0 + 4,
    };
    let ask = UnicastMsg::SpaceRequest {
        ring: ring.id().0,
        within,
    };
    assert_eq!(
        x.handle_unicast(Instant::now(), evil, &ask.encode()),
        Ok(())
    );
    drain(&mut x);
    // The same through gossip.
    assert!(x
        .merge(
            Instant::now(),
            &ring_msg(&x, vec![(theirs.0, poisoned)], None)
        )
        .is_err());
    assert_eq!(x.stats().out_of_range, 2);
}

/// A token we own already at the version limit (an old snapshot, or a forger who climbed
/// there): a donation from it is denied and counted, never an overflow.
#[test]
fn donation_from_a_token_at_the_version_limit_is_denied_not_panicking() {
    let me = PeerId([1; 16]);
    let mut x = settled(me);
    let (mine, _) = mine_and_theirs(&x, me);
    let ring_id = x.ring().expect("ring").id().0;
    if let Some(r) = x.ring.as_mut() {
        r.set(
            mine.0,
            Entry {
                version: MAX_VERSION,
                ..mine.1
            },
        );
    }
    let ask = UnicastMsg::SpaceRequest {
        ring: ring_id,
        within: AddrRange {
            start: mine.0,
            end: mine.0 + 64,
        },
    };
    assert_eq!(
        x.handle_unicast(Instant::now(), PeerId([2; 16]), &ask.encode()),
        Ok(())
    );
    assert_eq!(x.stats().version_exhausted, 1);
    assert_eq!(x.stats().donations_given, 0);
    // Freeing an address re-advertises the token's free count: skipped, not a panic.
    x.release_all(Instant::now(), ContainerId("c".into()));
    drain(&mut x);
    assert!(x.stats().version_exhausted >= 2);
    assert_eq!(
        x.ring().and_then(|r| r.entry(mine.0)).map(|e| e.version),
        Some(MAX_VERSION)
    );
}

/// One forged entry may not lift a token by more than `MAX_VERSION_STEP`: else a single
/// message at the version limit would wedge the token for good.
#[test]
fn ring_entry_jumping_past_the_version_step_is_refused() {
    let me = PeerId([1; 16]);
    let mut x = settled(me);
    let (_, theirs) = mine_and_theirs(&x, me);
    let jump = Entry {
        owner: PeerId([3; 16]),
        version: theirs.1.version + MAX_VERSION_STEP + 1,
        free: 0,
    };
    assert_eq!(
        x.merge(Instant::now(), &ring_msg(&x, vec![(theirs.0, jump)], None)),
        Ok(None)
    );
    assert_eq!(x.stats().version_jumps, 1);
    assert_eq!(x.ring().and_then(|r| r.entry(theirs.0)), Some(&theirs.1));
    let step = Entry {
        version: theirs.1.version + MAX_VERSION_STEP,
        ..jump
    };
    assert!(x
        .merge(Instant::now(), &ring_msg(&x, vec![(theirs.0, step)], None))
        .expect("merges")
        .is_some());
}

/// A `Prepare` naming round `u64::MAX` would make every later ballot for that peer
/// overflow (`round + 1`) or lose: refused at decode.
#[test]
fn takeover_with_max_round_is_refused() {
    let me = PeerId([1; 16]);
    let mut x = settled(me);
    let ring = x.ring().expect("ring").id().0;
    let prepare = UnicastMsg::Takeover {
        ring,
        dead: PeerId([9; 16]),
        msg: TakeoverMsg::Prepare {
            ballot: Ballot {
                round: u64::MAX,
                proposer: PeerId([2; 16]),
            },
        },
    };
    assert!(x
        .handle_unicast(Instant::now(), PeerId([2; 16]), &prepare.encode())
        .is_err());
    assert!(x.votes.is_empty());
    assert_eq!(x.stats().malformed, 1);
}

/// The votes map is keyed by the dead peer the proposer names: a forger naming new ones
/// used to grow it (and the snapshot) without bound.
#[test]
fn takeover_votes_past_the_cap_are_refused() {
    let me = PeerId([1; 16]);
    let mut x = settled(me);
    let ring = x.ring().expect("ring").id().0;
    for i in 0..MAX_VOTES as u32 + 5 {
        let mut dead = [0xee; 16];
        dead[..4].copy_from_slice(&i.to_le_bytes());
        let prepare = UnicastMsg::Takeover {
            ring,
            dead: PeerId(dead),
            msg: TakeoverMsg::Prepare {
                ballot: Ballot {
                    round: 1,
                    proposer: PeerId([2; 16]),
                },
            },
        };
        assert_eq!(
            x.handle_unicast(Instant::now(), PeerId([2; 16]), &prepare.encode()),
            Ok(())
        );
    }
    drain(&mut x);
    assert_eq!(x.votes.len(), MAX_VOTES);
    assert_eq!(x.stats().takeover_refused, 5);
    assert!(x.snapshot().encode().is_ok());
}

/// Every foreign ring id a sender makes up used to add an entry to the `foreign` map.
#[test]
fn foreign_rings_past_the_cap_are_counted_not_remembered() {
    let me = PeerId([1; 16]);
    let mut x = settled(me);
    let universe = x.ring().expect("ring").universe();
    for i in 0..MAX_FOREIGN_RINGS as u32 + 10 {
        let mut seed = [0xab; 16];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let msg = GossipMsg::Ring {
            sender: PeerId([2; 16]),
            universe,
            seeds: vec![PeerId(seed)],
            entries: Default::default(),
        };
        assert_eq!(x.merge(Instant::now(), &msg.encode()), Ok(None));
    }
    assert_eq!(x.foreign.len(), MAX_FOREIGN_RINGS);
    assert_eq!(x.stats().foreign_ring, MAX_FOREIGN_RINGS as u64 + 10);
}

/// Ring tokens were capped per message only: message after message of new tokens inside
/// another peer's range grew the ring (and the snapshot) without bound.
#[test]
fn ring_tokens_past_the_total_cap_are_dropped() {
    let me = PeerId([1; 16]);
    let other = PeerId([2; 16]);
    let cfg = IpamConfig::new(
        "10.32.0.0/16".parse().expect("cidr"),
        InitMode::Seed(vec![me, other]),
    );
    let mut x = Ipam::new(me, cfg, Instant::now(), 0);
    drain(&mut x);
    let (_, theirs) = mine_and_theirs(&x, me);
    let forged = |from: u64, n: u64| -> Vec<(u64, Entry)> {
        (from..from + n)
            .map(|i| {
                let e = Entry {
                    owner: other,
                    version: 1,
                    free: 0,
                };
                (theirs.0 + 1 + i, e)
            })
            .collect()
    };
    let before = x.ring().expect("ring").entries().len();
    for part in 0..2 {
        let msg = ring_msg(&x, forged(part * 10_000, 10_000), None);
        assert!(x.merge(Instant::now(), &msg).is_ok());
    }
    let ring = x.ring().expect("ring");
    assert_eq!(ring.entries().len(), MAX_RING_ENTRIES);
    assert_eq!(
        x.stats().ring_full as usize,
        before + 20_000 - MAX_RING_ENTRIES
    );
    assert!(x.snapshot().encode().is_ok(), "a full ring still persists");
}

fn drain_unicasts(x: &mut Ipam) -> Vec<PeerId> {
    let mut to = Vec::new();
    while let Some(o) = x.poll_output() {
        match o {
            IpamOutput::Persist { seq, .. } => x.handle_persisted(seq),
            IpamOutput::Unicast { to: p, .. } => to.push(p),
            _ => {}
        }
    }
    to
}

/// Bootstrap claims "from" a victim make every router with a ring unicast its whole
/// ring to the victim: at most once per `HANDOUT_EVERY` per peer now.
#[test]
fn bootstrap_claims_get_the_ring_handed_out_once_per_interval() {
    use crate::ipam::channel::HANDOUT_EVERY;
    let me = PeerId([1; 16]);
    let victim = PeerId([3; 16]);
    let mut x = settled(me);
    drain_unicasts(&mut x);
    let claims = GossipMsg::Bootstrap {
        sender: victim,
        universe: x.universe(),
        claims: Default::default(),
    }
    .encode();
    let t0 = Instant::now();
    for k in 0..100 {
        let at = t0 + std::time::Duration::from_millis(k * 10);
        x.merge(at, &claims).expect("valid claims");
    }
    assert_eq!(
        drain_unicasts(&mut x),
        vec![victim],
        "one handout in a second"
    );
    assert_eq!(x.stats().handouts_limited, 99);
    x.merge(t0 + HANDOUT_EVERY + HANDOUT_EVERY, &claims)
        .expect("valid claims");
    assert_eq!(
        drain_unicasts(&mut x),
        vec![victim],
        "again after the interval"
    );
}

/// A `Space` unicast is a donation: only the owner of that space may send it. A peer
/// that "donates" someone else's range to us is refused, and nothing changes.
#[test]
fn a_donation_of_space_the_sender_does_not_own_is_refused() {
    let me = PeerId([1; 16]);
    let owner = PeerId([2; 16]);
    let thief = PeerId([9; 16]);
    let mut x = settled(me);
    let ring = x.ring().cloned().expect("ring");
    let (t, e) = ring
        .entries()
        .iter()
        .find(|(_, e)| e.owner == owner)
        .map(|(t, e)| (*t, *e))
        .expect("the other seed owns a token");
    let gift = UnicastMsg::Space {
        ring: x.ring_id(),
        entries: [(
            t,
            Entry {
                owner: me,
                version: e.version + 1,
                free: 1,
            },
        )]
        .into_iter()
        .collect(),
    }
    .encode();
    let before = x.own_ranges();
    x.handle_unicast(Instant::now(), thief, &gift)
        .expect("decodes");
    assert_eq!(x.own_ranges(), before, "nothing taken from a non-owner");
    assert!(x.stats().inconsistent > 0);
    // The same entries from the owner are a real donation.
    x.handle_unicast(Instant::now(), owner, &gift)
        .expect("decodes");
    assert_ne!(x.own_ranges(), before, "the owner's donation is taken");
}

/// Peer 1 (us, with our key) settled on a ring seeded by peers 1, 2 and 3 of the
/// simulation's keys.
fn settled_with_keys() -> Ipam {
    let seeds = (1..=3).map(node_id).collect();
    let cfg = IpamConfig::new("10.32.0.0/24".parse().expect("cidr"), InitMode::Seed(seeds));
    let now = Instant::now();
    let mut x = Ipam::new(node_id(1), cfg, now, 0).with_identity(node_identity(1));
    x.allocate(now, ContainerId("c".into()), None);
    while let Some(o) = x.poll_output() {
        if let IpamOutput::Persist { seq, .. } = o {
            x.handle_persisted(seq);
        }
    }
    x
}

/// A decision that `heir` inherits `dead`, signed by the keys of `voters`.
fn decision(x: &Ipam, dead: PeerId, heir: PeerId, voters: &[usize]) -> Vec<u8> {
    let ballot = Ballot {
        round: 3,
        proposer: node_id(3),
    };
    let ring = x.ring_id();
    let votes = voters
        .iter()
        .map(|v| Vote::new(&node_identity(*v), ring, dead, ballot, heir))
        .collect();
    let msg = TakeoverMsg::Chosen {
        heir,
        ballot,
        votes,
    };
    UnicastMsg::Takeover { ring, dead, msg }.encode()
}

/// A takeover decision naming us heir of a peer we can reach is refused, even with a
/// quorum's votes: a live peer's space is never taken.
#[test]
fn a_takeover_decision_about_a_reachable_peer_is_refused() {
    let (me, live) = (node_id(1), node_id(2));
    let mut x = settled_with_keys();
    let now = Instant::now();
    x.handle_reachable(now, [live]);
    let before = x.own_ranges();
    let chosen = decision(&x, live, me, &[1, 3]);
    x.handle_unicast(now, node_id(3), &chosen).expect("decodes");
    assert_eq!(
        x.own_ranges(),
        before,
        "the live peer's space stays its own"
    );
    assert_eq!(x.stats().takeover_refused, 1);
    // Once it is unreachable, the decision is carried out.
    x.handle_reachable(now, []);
    x.handle_unicast(now, node_id(3), &chosen).expect("decodes");
    assert_ne!(
        x.own_ranges(),
        before,
        "an unreachable peer's space is taken"
    );
}

/// A decision naming us heir is carried out only with a quorum of good votes from
/// distinct voters of this ring: a peer that holds the secret cannot make us take a
/// space no quorum gave us (catalogue: forged takeover decisions).
#[test]
fn a_takeover_decision_without_a_quorum_of_good_votes_is_refused() {
    let (me, dead) = (node_id(1), node_id(2));
    let mut x = settled_with_keys();
    let now = Instant::now();
    x.handle_reachable(now, []);
    let before = x.own_ranges();
    let ring = x.ring_id();
    let ballot = Ballot {
        round: 3,
        proposer: node_id(3),
    };
    let good = |v: usize| Vote::new(&node_identity(v), ring, dead, ballot, me);
    let forged: Vec<(&str, Vec<Vote>)> = vec![
        ("no votes", vec![]),
        ("one vote of the two needed", vec![good(1)]),
        ("one voter twice", vec![good(1), good(1)]),
        ("a peer that is not a seed", vec![good(1), good(4)]),
        ("the dead peer itself", vec![good(1), good(2)]),
        (
            "a vote for another heir",
            vec![
                good(1),
                Vote::new(&node_identity(3), ring, dead, ballot, node_id(3)),
            ],
        ),
        (
            "a vote at another ballot",
            vec![
                good(1),
                Vote::new(
                    &node_identity(3),
                    ring,
                    dead,
                    Ballot { round: 4, ..ballot },
                    me,
                ),
            ],
        ),
        (
            "voter 3's vote made with voter 1's key",
            vec![
                good(1),
                Vote {
                    voter: node_id(3),
                    ..good(1)
                },
            ],
        ),
        (
            "voter 3's vote with a bad signature",
            vec![good(1), {
                let mut v = good(3);
                v.signature.0[0] ^= 1;
                v
            }],
        ),
    ];
    for (n, (why, votes)) in forged.into_iter().enumerate() {
        let msg = TakeoverMsg::Chosen {
            heir: me,
            ballot,
            votes,
        };
        let bytes = UnicastMsg::Takeover { ring, dead, msg }.encode();
        x.handle_unicast(now, node_id(3), &bytes).expect("decodes");
        assert_eq!(x.own_ranges(), before, "{why}: nothing taken");
        assert_eq!(x.stats().takeover_unproven, n as u64 + 1, "{why}: counted");
    }
    // The true decision, with voters 1 and 3.
    x.handle_unicast(now, node_id(3), &decision(&x, dead, me, &[3, 1]))
        .expect("decodes");
    assert_ne!(x.own_ranges(), before, "a proven decision is carried out");
}
