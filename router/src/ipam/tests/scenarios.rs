//! Scenario tests on the real mesh: consensus, donation, two rings, timeouts, rmpeer,
//! leave, persistence.

use super::harness::*;
use crate::ipam::allocator::RestoreError;
use crate::ipam::{ContainerId, InitMode, Ipam, IpamError, IpamEvent, IpamOutput, Reply};
use gossip::sim::{node_id, node_identity};
use std::time::{Duration, Instant};

fn consensus_time(n: usize) -> Duration {
    let (mut net, _log) = network(11, n, "10.32.0.0/12", |_| InitMode::Consensus { peers: n });
    let start = net.elapsed();
    let all_ready =
        |net: &Net| (0..n).all(|i| ipam(net.node(i)).is_some_and(|x| x.ring().is_some()));
    assert!(net.run_until(Duration::from_secs(60), Duration::from_millis(5), all_ready));
    let took = net.elapsed() - start;
    let rings: Vec<_> = (0..n)
        .map(|i| ipam(net.node(i)).and_then(|x| x.ring().map(|r| r.id())))
        .collect();
    assert!(rings.windows(2).all(|w| w[0] == w[1]), "one ring");
    let seeds = ipam(net.node(0))
        .and_then(|x| x.ring())
        .map(|r| r.seeds().len());
    assert!(seeds.is_some_and(|s| s > n / 2), "seeded by a quorum");
    took
}

#[test]
fn consensus_with_3_and_10_peers() {
    let t3 = consensus_time(3);
    let t10 = consensus_time(10);
    eprintln!("simulated time to consensus: 3 peers {t3:?}, 10 peers {t10:?}");
    assert!(t3 < Duration::from_secs(10) && t10 < Duration::from_secs(10));
}

#[test]
fn allocation_waits_for_consensus_then_times_out_with_the_reason() {
    let (mut net, log) = network(3, 1, "10.32.0.0/12", |_| InitMode::Consensus { peers: 3 });
    let status = ipam(net.node(0)).map(|x| x.status_line());
    assert_eq!(
        status.as_deref(),
        Some("awaiting consensus (quorum: 2, known: 1)")
    );
    let r = allocate(&mut net, &log, 0, "c1");
    assert_eq!(
        r,
        Some(Err(IpamError::TimedOut(
            "awaiting consensus: 1 of 3 peers known".into()
        )))
    );
}

#[test]
fn seed_by_peer_names_waits_for_the_peers_then_seeds_one_ring() {
    let names: Vec<_> = (0..3).map(|i| node_id(i).short()).collect();
    let (mut net, log) = network(9, 4, "10.32.0.0/24", |i| {
        if i < 3 {
            InitMode::SeedNames(names.clone())
        } else {
            InitMode::Observer
        }
    });
    // Until the mesh forms, a peer knows only itself: no ring, and it says why.
    let x = ipam(net.node(0)).expect("ipam");
    assert!(x.ring().is_none());
    assert_eq!(
        x.status_line(),
        "awaiting seed peers (seeds: 3, known: 1)",
        "before the mesh"
    );
    net.run_for(Duration::from_secs(5));
    let rings: Vec<_> = (0..4)
        .map(|i| ipam(net.node(i)).and_then(|x| x.ring().map(|r| r.id())))
        .collect();
    assert!(
        rings.iter().all(|r| r.is_some() && *r == rings[0]),
        "{rings:?}"
    );
    let seeds = ipam(net.node(3)).unwrap().ring().unwrap().seeds().to_vec();
    let mut want: Vec<_> = (0..3).map(node_id).collect();
    want.sort();
    assert_eq!(
        seeds, want,
        "the ring's seeds are the named peers' full ids"
    );
    assert!(matches!(
        allocate(&mut net, &log, 3, "c"),
        Some(Ok(Reply::Allocated(..)))
    ));
}

#[test]
fn donation_moves_space_to_the_peer_that_ran_out() {
    // /27: 32 addresses, 30 usable; two seeds own 16 each.
    let seeds = vec![node_id(0), node_id(1)];
    let (mut net, log) = network(5, 2, "10.32.0.0/27", |_| InitMode::Seed(seeds.clone()));
    net.run_for(Duration::from_secs(2));
    let mut got = Vec::new();
    for k in 0..22 {
        match allocate(&mut net, &log, 0, &format!("c{k}")) {
            Some(Ok(Reply::Allocated(a, _))) => got.push(a),
            other => panic!("allocation {k}: {other:?}"),
        }
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 22, "distinct");
    let donor = ipam(net.node(1)).map(|x| x.stats()).unwrap_or_default();
    assert!(donor.donations_given >= 1, "{donor:?}");
    // Idempotent: the same container gets the same address.
    let again = allocate(&mut net, &log, 0, "c0");
    assert!(
        matches!(again, Some(Ok(Reply::Allocated(a, _))) if a == got.iter().copied().min().unwrap_or(a) || got.contains(&a))
    );
    assert_eq!(ipam(net.node(0)).map(|x| x.active_allocations()), Some(22));
}

#[test]
fn two_rings_seeded_apart_detect_each_other_and_stay_apart() {
    let a = vec![node_id(0), node_id(1)];
    let b = vec![node_id(2), node_id(3)];
    let mut net = Net::new(9, sim_config());
    let log = Shared::default();
    for i in 0..4 {
        let targets: Vec<usize> = if i % 2 == 1 { vec![i - 1] } else { vec![] };
        net.add_node(&targets);
        let seeds = if i < 2 { a.clone() } else { b.clone() };
        let cfg = ipam_config("10.32.0.0/12", InitMode::Seed(seeds));
        net.with_node(i, |_, channels, now| {
            channels.ipam =
                Some(Ipam::new(node_id(i), cfg, now, 1).with_identity(node_identity(i)));
        });
        install_pump(&mut net, i, &log);
    }
    net.run_for(Duration::from_secs(3));
    allocate(&mut net, &log, 0, "x");
    allocate(&mut net, &log, 2, "y");
    net.run_for(Duration::from_secs(2));
    let before: Vec<_> = (0..4)
        .map(|i| ipam(net.node(i)).and_then(|x| x.ring().cloned()))
        .collect();
    net.connect(1, 2);
    net.run_for(Duration::from_secs(10));
    for (i, before) in before.iter().enumerate() {
        let x = ipam(net.node(i)).expect("ipam");
        assert_eq!(x.ring(), before.as_ref(), "node {i}'s ring changed");
        assert!(x.stats().foreign_ring > 0, "node {i} did not notice");
        assert!(x
            .status_line()
            .starts_with("IP allocation was seeded by different peers"));
    }
    let events = log.borrow().events.clone();
    let foreign: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, IpamEvent::ForeignRing { .. }))
        .collect();
    assert_eq!(foreign.len(), 4, "each node reports it once: {foreign:?}");
    eprintln!("{}", foreign[0].1.message());
    assert!(
        net.node(1).link_count() >= 2 && net.node(2).link_count() >= 2,
        "links carry on"
    );
}

#[test]
fn rmpeer_hands_a_dead_peers_space_to_one_heir() {
    let seeds: Vec<_> = (0..5).map(node_id).collect();
    let (mut net, log) = network(21, 5, "10.32.0.0/16", |_| InitMode::Seed(seeds.clone()));
    net.run_for(Duration::from_secs(5));
    let dead = node_id(4);
    let share = ipam(net.node(0))
        .and_then(|x| x.ring().map(|r| r.shares()[&dead]))
        .expect("a ring");
    net.crash(4);
    net.run_for(Duration::from_secs(10));
    let r1 = request(&mut net, 0, |x, now| x.rmpeer(now, dead));
    let r2 = request(&mut net, 2, |x, now| x.rmpeer(now, dead));
    let a = await_result(&mut net, &log, 0, r1, Duration::from_secs(20));
    let b = await_result(&mut net, &log, 2, r2, Duration::from_secs(20));
    let heir = |r: &Option<Result<Reply, IpamError>>| match r {
        Some(Ok(Reply::Removed { heir, .. })) => *heir,
        _ => None,
    };
    let (ha, hb) = (heir(&a), heir(&b));
    assert!(ha.is_some() || hb.is_some(), "{a:?} {b:?}");
    for r in [&a, &b] {
        if let Some(Ok(Reply::Removed { ips, .. })) = r {
            assert_eq!(*ips, share, "the reply names the addresses taken over");
        }
    }
    if let (Some(x), Some(y)) = (ha, hb) {
        assert_eq!(x, y, "two heirs");
    }
    net.run_for(Duration::from_secs(3));
    for i in 0..4 {
        let x = ipam(net.node(i)).expect("ipam");
        assert!(
            x.ring().is_some_and(|r| r.owned_by(&dead).is_empty()),
            "node {i}"
        );
    }
    // Refused for a live peer.
    let r = request(&mut net, 0, |x, now| x.rmpeer(now, node_id(1)));
    let refused = await_result(&mut net, &log, 0, r, Duration::from_secs(1));
    assert_eq!(refused, Some(Err(IpamError::PeerAlive(node_id(1)))));
}

/// Three seeds, one dead: both survivors must agree (quorum 2 of 2), and running
/// rmpeer on both at once used to duel forever, each Nack restarting at once.
#[test]
fn concurrent_rmpeer_with_two_voters_completes() {
    let seeds: Vec<_> = (0..3).map(node_id).collect();
    let (mut net, log) = network(22, 3, "10.32.0.0/16", |_| InitMode::Seed(seeds.clone()));
    net.run_for(Duration::from_secs(5));
    net.crash(2);
    net.run_for(Duration::from_secs(10));
    let dead = node_id(2);
    let r1 = request(&mut net, 0, |x, now| x.rmpeer(now, dead));
    let r2 = request(&mut net, 1, |x, now| x.rmpeer(now, dead));
    let a = await_result(&mut net, &log, 0, r1, Duration::from_secs(20));
    let b = await_result(&mut net, &log, 1, r2, Duration::from_secs(20));
    let heir = |r: &Option<Result<Reply, IpamError>>| match r {
        Some(Ok(Reply::Removed { heir, .. })) => *heir,
        _ => None,
    };
    assert!(heir(&a).is_some() && heir(&a) == heir(&b), "{a:?} {b:?}");
    net.run_for(Duration::from_secs(3));
    for i in 0..2 {
        let x = ipam(net.node(i)).expect("ipam");
        assert!(x.ring().is_some_and(|r| r.owned_by(&dead).is_empty()));
    }
}

#[test]
fn leave_hands_everything_to_a_live_peer() {
    let seeds = vec![node_id(0), node_id(1), node_id(2)];
    let (mut net, log) = network(4, 3, "10.32.0.0/16", |_| InitMode::Seed(seeds.clone()));
    net.run_for(Duration::from_secs(3));
    allocate(&mut net, &log, 2, "c");
    let id = request(&mut net, 2, |x, now| x.leave(now));
    let r = await_result(&mut net, &log, 2, id, Duration::from_secs(5));
    assert!(matches!(r, Some(Ok(Reply::Left { .. }))), "{r:?}");
    net.run_for(Duration::from_secs(2));
    for i in 0..2 {
        let x = ipam(net.node(i)).expect("ipam");
        assert!(x.ring().is_some_and(|r| r.owned_by(&node_id(2)).is_empty()));
    }
}

#[test]
fn completions_wait_for_the_persist_confirmation() {
    let me = node_id(0);
    let cfg = ipam_config("10.32.0.0/24", InitMode::Seed(vec![me]));
    let now = Instant::now();
    let mut x = Ipam::new(me, cfg.clone(), now, 0);
    x.allocate(now, ContainerId("c".into()), None);
    let mut seqs = Vec::new();
    while let Some(out) = x.poll_output() {
        match out {
            IpamOutput::Persist { seq, snapshot } => seqs.push((seq, snapshot)),
            IpamOutput::Completed { .. } => panic!("acknowledged before persisted"),
            _ => {}
        }
    }
    assert_eq!(seqs.len(), 1);
    assert!(x.is_awaiting_persist());
    let (seq, snapshot) = seqs.remove(0);
    x.handle_persisted(seq);
    let mut outs = Vec::new();
    while let Some(out) = x.poll_output() {
        outs.push(out);
    }
    assert!(outs
        .iter()
        .any(|o| matches!(o, IpamOutput::Completed { result: Ok(_), .. })));
    // The snapshot restores the allocation; another range is refused.
    let back = Ipam::restore(me, cfg.clone(), &snapshot, now, 0).expect("restore");
    assert_eq!(back.allocations(), x.allocations());
    let other = ipam_config("10.40.0.0/16", InitMode::Seed(vec![me]));
    let err = Ipam::restore(me, other, &snapshot, now, 0).err();
    assert!(matches!(err, Some(RestoreError::RangeMismatch { .. })));
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("--ipalloc-range 10.32.0.0-10.32.0.255"),
        "{text}"
    );
    assert!(Ipam::restore(node_id(1), cfg, &snapshot, now, 0).is_err());
}

/// Each reply carries what its caller reports (the claim's prefix, the released
/// addresses), so the driver needs no table of what it asked.
#[test]
fn replies_carry_the_claimed_prefix_and_the_released_addresses() {
    let me = node_id(0);
    let cfg = ipam_config("10.32.0.0/24", InitMode::Seed(vec![me]));
    let now = Instant::now();
    let mut x = Ipam::new(me, cfg, now, 0);
    let run = |x: &mut Ipam, id| {
        let mut got = None;
        while let Some(out) = x.poll_output() {
            match out {
                IpamOutput::Persist { seq, .. } => x.handle_persisted(seq),
                IpamOutput::Completed { request, result } if request == id => got = Some(result),
                _ => {}
            }
        }
        got
    };
    let c = || ContainerId("c".into());
    let a: std::net::Ipv4Addr = "10.32.0.9".parse().expect("ip");
    let b: std::net::Ipv4Addr = "10.32.0.10".parse().expect("ip");
    let id = x.claim(now, c(), a, 24);
    assert_eq!(run(&mut x, id), Some(Ok(Reply::Claimed(a, 24))));
    let id = x.claim(now, c(), b, 32);
    assert_eq!(run(&mut x, id), Some(Ok(Reply::Claimed(b, 32))));
    let id = x.release(now, c(), "10.32.0.77".parse().expect("ip"));
    assert_eq!(run(&mut x, id), Some(Ok(Reply::Released(vec![]))));
    let id = x.release(now, c(), a);
    assert_eq!(run(&mut x, id), Some(Ok(Reply::Released(vec![a]))));
    let id = x.claim(now, c(), a, 24);
    assert_eq!(run(&mut x, id), Some(Ok(Reply::Claimed(a, 24))));
    let id = x.release_all(now, c());
    assert_eq!(run(&mut x, id), Some(Ok(Reply::Released(vec![a, b]))));
    assert!(x.allocations().is_empty());
}
