//! Route tests over hand-built and random topologies.

use super::*;
use crate::peer::PeerUid;
use crate::topology::{LinkInfo, TopologyUpdate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;

fn ident(n: usize) -> crate::identity::Identity {
    crate::identity::Identity::for_test(n as u64)
}

fn id(n: usize) -> PeerId {
    ident(n).id()
}

/// A topology (seen by peer 0) where each `(a, b)` is reported by `a` only when `one_way`.
fn build(n: usize, edges: &[(usize, usize)], one_way: &[(usize, usize)]) -> Topology {
    let mut locals: Vec<Topology> = (0..n)
        .map(|i| Topology::new(&ident(i), PeerUid(1), "p", 6783))
        .collect();
    let addr = SocketAddr::from(([198, 18, 0, 1], 6783));
    let info = Some(LinkInfo {
        outbound: true,
        remote_addr: addr,
    });
    for &(a, b) in edges {
        locals[a].set_local_link(id(b), info);
        locals[b].set_local_link(id(a), info);
    }
    for &(a, b) in one_way {
        locals[a].set_local_link(id(b), info);
    }
    let mut t = Topology::new(&ident(0), PeerUid(1), "p", 6783);
    for l in &locals[1..] {
        let records = vec![crate::topology::full_delta(&l.local(), l.local_record())];
        t.merge_update(TopologyUpdate { records }).unwrap();
    }
    // Peer 0's own links come from its local topology.
    for (remote, link) in locals[0].local_record().links() {
        t.set_local_link(*remote, Some(*link));
    }
    t
}

#[test]
fn unicast_takes_shortest_paths_over_symmetric_links() {
    // 0-1-2-3 line, plus a one-way claim 0->3 that must be ignored.
    let t = build(4, &[(0, 1), (1, 2), (2, 3)], &[(0, 3)]);
    let r = Routes::new(id(0), &t);
    assert_eq!(r.unicast(&id(1)), Some(id(1)));
    assert_eq!(r.unicast(&id(3)), Some(id(1)));
    assert_eq!(r.unicast(&id(0)), None);
    assert!(!r.is_neighbour(&id(3)));
    assert_eq!(r.reachable().count(), 3);
    assert_eq!(r.broadcast_next_hops(&id(0)), &[id(1)]);
    // From 3's tree, 0 is a leaf.
    assert!(r.broadcast_next_hops(&id(3)).is_empty());
}

#[test]
fn ties_break_by_lower_id() {
    // Square 0-a-3, 0-b-3 with a < b (ids are key hashes): both paths to 3 are two
    // hops; a wins.
    let (a, b) = if id(1) < id(2) { (1, 2) } else { (2, 1) };
    let t = build(4, &[(0, a), (a, 3), (0, b), (b, 3)], &[]);
    let r = Routes::new(id(0), &t);
    assert_eq!(r.unicast(&id(3)), Some(id(a)));
    assert_eq!(r.broadcast_next_hops(&id(0)), &[id(a), id(b)]);
    // In 3's tree, 0 is reached through a, so 0 relays nothing.
    assert!(r.broadcast_next_hops(&id(3)).is_empty());
}

#[test]
fn unknown_or_unreachable_sources_have_no_tree() {
    let t = build(4, &[(0, 1), (2, 3)], &[]);
    let r = Routes::new(id(0), &t);
    assert!(!r.has_tree(&id(2)));
    assert!(r.broadcast_next_hops(&id(2)).is_empty());
    assert!(r.broadcast_next_hops(&id(99)).is_empty());
    assert!(Routes::empty(id(0)).broadcast_next_hops(&id(0)).is_empty());
}

#[test]
fn every_broadcast_reaches_every_peer_exactly_once() {
    let mut rng = StdRng::seed_from_u64(11);
    let n = 40;
    // A random connected graph: a random spanning tree plus extra edges.
    let mut edges: Vec<(usize, usize)> = (1..n).map(|i| (rng.gen_range(0..i), i)).collect();
    for _ in 0..60 {
        let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
        if a != b && !edges.contains(&(a, b)) && !edges.contains(&(b, a)) {
            edges.push((a, b));
        }
    }
    let t = build(n, &edges, &[]);
    // Every peer's view of the same topology, as every peer would compute it.
    let views: BTreeMap<PeerId, Routes> = (0..n).map(|i| (id(i), Routes::new(id(i), &t))).collect();
    for s in 0..n {
        let mut deliveries: BTreeMap<PeerId, usize> = BTreeMap::new();
        let mut queue = vec![id(s)];
        while let Some(at) = queue.pop() {
            for next in views[&at].broadcast_next_hops(&id(s)) {
                *deliveries.entry(*next).or_default() += 1;
                queue.push(*next);
            }
        }
        assert_eq!(deliveries.len(), n - 1, "source {s} missed peers");
        assert!(
            deliveries.values().all(|&c| c == 1),
            "source {s} delivered twice"
        );
        assert!(!deliveries.contains_key(&id(s)));
    }
}

#[test]
fn only_a_neighbour_closer_to_the_source_may_relay() {
    // 0-1-2-3 line, and 0-4 a leaf: frames from 3 reach 0 through 1 only.
    let t = build(5, &[(0, 1), (1, 2), (2, 3), (0, 4)], &[]);
    let r = Routes::new(id(0), &t);
    assert!(r.may_relay(&id(3), &id(1)));
    assert!(
        !r.may_relay(&id(3), &id(4)),
        "4 is farther from 3 than we are"
    );
    assert!(r.may_relay(&id(4), &id(4)), "a neighbour's own frames");
    assert!(
        !r.may_relay(&id(0), &id(1)),
        "our own frames never come back"
    );
    assert!(!r.may_relay(&id(99), &id(1)), "an unknown source");
    // Square 0-1-3, 0-2-3: both 1 and 2 lie on a shortest path from 3.
    let t = build(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], &[]);
    let r = Routes::new(id(0), &t);
    assert!(r.may_relay(&id(3), &id(1)) && r.may_relay(&id(3), &id(2)));
    // Unreachable sources have no relays.
    let t = build(4, &[(0, 1), (2, 3)], &[]);
    assert!(!Routes::new(id(0), &t).may_relay(&id(2), &id(1)));
}

#[test]
fn every_honest_relay_is_allowed() {
    let mut rng = StdRng::seed_from_u64(12);
    let n = 30;
    let mut edges: Vec<(usize, usize)> = (1..n).map(|i| (rng.gen_range(0..i), i)).collect();
    for _ in 0..40 {
        let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
        if a != b && !edges.contains(&(a, b)) && !edges.contains(&(b, a)) {
            edges.push((a, b));
        }
    }
    let t = build(n, &edges, &[]);
    let views: BTreeMap<PeerId, Routes> = (0..n).map(|i| (id(i), Routes::new(id(i), &t))).collect();
    for s in 0..n {
        // Every hop of every unicast path from s is allowed at its receiver.
        for d in (0..n).filter(|&d| d != s) {
            let mut at = id(s);
            while at != id(d) {
                let next = views[&at].unicast(&id(d)).expect("connected");
                if at != id(s) {
                    assert!(views[&next].may_relay(&id(s), &at), "unicast {s}->{d}");
                }
                at = next;
            }
        }
        // Every edge of s's broadcast tree is allowed at its child.
        let mut queue = vec![id(s)];
        while let Some(at) = queue.pop() {
            for next in views[&at].broadcast_next_hops(&id(s)) {
                assert!(views[next].may_relay(&id(s), &at), "broadcast from {s}");
                queue.push(*next);
            }
        }
    }
}
