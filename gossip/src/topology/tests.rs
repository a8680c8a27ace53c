//! Unit tests of the topology: local changes, merges, incarnations, GC, anti-entropy.

use super::*;
use crate::channel::GossipChannel;
use crate::codec::{self, fuzz};
use crate::crdt::{laws, Crdt};
use crate::identity::Identity;
use proptest::prelude::*;
use std::time::Instant;

fn ident(n: u8) -> Identity {
    Identity::for_test(u64::from(n))
}

fn id(n: u8) -> PeerId {
    ident(n).id()
}

fn link(port: u16) -> LinkInfo {
    LinkInfo {
        outbound: true,
        remote_addr: SocketAddr::from(([198, 18, 0, port as u8], port)),
    }
}

fn topo(n: u8) -> Topology {
    Topology::new(&ident(n), PeerUid(u64::from(n)), &format!("p{n}"), 6783)
}

/// Changes a local link and returns the delta announcing it.
fn change(t: &mut Topology, remote: PeerId, link: Option<LinkInfo>) -> RecordDelta {
    assert!(t.set_local_link(remote, link), "no change");
    t.local_delta([&remote])
}

fn one(delta: RecordDelta) -> TopologyUpdate {
    TopologyUpdate {
        records: vec![delta],
    }
}

#[test]
fn a_link_change_is_a_one_entry_delta() {
    let mut a = topo(1);
    let d = change(&mut a, id(2), Some(link(2)));
    assert_eq!(d.links.len(), 1);
    assert!(
        !a.set_local_link(id(2), Some(link(2))),
        "no change, no delta"
    );
    let encoded = codec::encode(&one(d.clone()));
    // About 70 bytes of delta, and the owner's proof (32-byte key, 64-byte signature).
    assert!(
        encoded.len() < 180,
        "a one-link delta is {} bytes",
        encoded.len()
    );

    let mut b = topo(2);
    assert!(b.merge_update(one(d.clone())).unwrap().is_some());
    assert!(b.merge_update(one(d)).unwrap().is_none(), "idempotent");
    assert!(b.take_change().link_added);
    let removal = change(&mut a, id(2), None);
    b.merge_update(one(removal)).unwrap();
    assert!(b.take_change().link_removed);
    assert!(b.peer(&id(1)).unwrap().link_to(&id(2)).is_none());
}

#[test]
fn tombstones_beat_late_adds() {
    let mut a = topo(1);
    let add = change(&mut a, id(2), Some(link(2)));
    let del = change(&mut a, id(2), None);
    let mut b = topo(3);
    b.merge_update(one(del)).unwrap();
    assert!(b.merge_update(one(add)).unwrap().is_none());
    assert_eq!(b.peer(&id(1)).unwrap().links().count(), 0);
}

#[test]
fn a_new_incarnation_replaces_the_old_and_old_news_is_ignored() {
    let mut old = topo(1);
    let old_add = change(&mut old, id(2), Some(link(2)));
    let mut b = topo(2);
    b.merge_update(one(old_add.clone())).unwrap();

    // Restart: same id, higher uid here, so it already orders higher.
    let mut new = Topology::new(&ident(1), PeerUid(99), "p1", 6783);
    let add = change(&mut new, id(3), Some(link(3)));
    b.merge_update(one(add)).unwrap();
    let r = b.peer(&id(1)).unwrap();
    assert_eq!(r.incarnation().uid, PeerUid(99));
    assert!(r.link_to(&id(2)).is_none() && r.link_to(&id(3)).is_some());
    assert!(b.take_change().link_removed);
    assert!(b.merge_update(one(old_add)).unwrap().is_none());
}

#[test]
fn a_restart_that_orders_lower_overtakes_with_a_higher_epoch() {
    let mut old = Topology::new(&ident(1), PeerUid(99), "p1", 6783);
    let old_add = change(&mut old, id(2), Some(link(2)));
    let mut new = Topology::new(&ident(1), PeerUid(5), "p1", 6783);
    new.set_local_link(id(3), Some(link(3)));
    new.take_change();
    // The neighbour tells the new run about the old one.
    assert!(new.merge_update(one(old_add.clone())).unwrap().is_none());
    let rival = new.take_change().conflict.expect("conflict reported");
    let full = new.overtake(rival);
    assert_eq!(full.incarnation.epoch, 1);

    let mut b = topo(2);
    b.merge_update(one(old_add)).unwrap();
    b.merge_update(one(full)).unwrap();
    let r = b.peer(&id(1)).unwrap();
    assert_eq!(
        r.incarnation(),
        Incarnation {
            epoch: 1,
            uid: PeerUid(5)
        }
    );
    assert!(r.link_to(&id(3)).is_some() && r.link_to(&id(2)).is_none());
}

#[test]
fn gc_drops_peers_no_link_reaches() {
    let mut a = topo(1);
    a.set_local_link(id(2), Some(link(2)));
    let mut b = topo(2);
    let b1 = change(&mut b, id(1), Some(link(1)));
    let b3 = change(&mut b, id(3), Some(link(3)));
    let mut c = topo(3);
    let c2 = change(&mut c, id(2), Some(link(2)));
    for d in [b1, b3, c2] {
        a.merge_update(one(d)).unwrap();
    }
    assert!(a.gc().is_empty());
    assert_eq!(a.len(), 3);
    // b loses its link to c: c is unreachable from a.
    a.merge_update(one(change(&mut b, id(3), None))).unwrap();
    assert_eq!(a.gc(), vec![id(3)]);
    assert_eq!(
        a.listen_addresses(&id(2)),
        vec![SocketAddr::from(([198, 18, 0, 2], 6783))]
    );
}

/// Runs the anti-entropy exchange between `a` and `b` as the mesh would.
fn exchange(a: &mut Topology, b: &mut Topology) {
    for sb in GossipChannel::summary(b) {
        for u in a.updates_for(&sb).unwrap() {
            GossipChannel::merge(b, Instant::now(), &u).unwrap();
        }
        for sa in a.missing_here(&sb).unwrap() {
            for u in b.updates_for(&sa).unwrap() {
                GossipChannel::merge(a, Instant::now(), &u).unwrap();
            }
        }
    }
}

#[test]
fn anti_entropy_sends_only_what_differs() {
    let mut a = topo(1);
    let mut b = topo(2);
    for n in 10..40 {
        let mut p = topo(n);
        let d = change(&mut p, id(n + 1), Some(link(u16::from(n))));
        a.merge_update(one(d.clone())).unwrap();
        if n % 3 != 0 {
            b.merge_update(one(d)).unwrap();
        }
    }
    // b also missed an entry in the middle of a record it otherwise has.
    let mut p = topo(50);
    let d1 = change(&mut p, id(51), Some(link(1)));
    let d2 = change(&mut p, id(52), Some(link(2)));
    a.merge_update(one(d1)).unwrap();
    a.merge_update(one(d2.clone())).unwrap();
    b.merge_update(one(d2)).unwrap();
    b.set_local_link(id(1), Some(link(1)));
    assert_ne!(a.digest(), b.digest());

    let sb = GossipChannel::summary(&b);
    let updates = a.updates_for(&sb[0]).unwrap();
    let sent: TopologyUpdate = codec::decode(&updates[0]).unwrap();
    // 10 records b lacks, a's own record, and peer 50's record.
    assert_eq!(sent.records.len(), 12);
    exchange(&mut a, &mut b);
    assert_eq!(a.digest(), b.digest());
    assert!(a
        .missing_here(&GossipChannel::summary(&b)[0])
        .unwrap()
        .is_empty());
}

#[test]
fn summaries_chunk_into_contiguous_ranges() {
    let mut a = topo(0);
    for n in 0..2500u32 {
        let owner = Identity::for_test(10_000 + u64::from(n));
        let mut p = Topology::new(&owner, PeerUid(1), "x", 1);
        let d = change(&mut p, id(0), Some(link(1)));
        a.merge_update(one(d)).unwrap();
    }
    let chunks = a.summary_range(None, None);
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[0].from, None);
    assert_eq!(chunks[2].until, None);
    assert_eq!(chunks[0].until, chunks[1].from);
    for c in &chunks {
        assert!(codec::encode(c).len() < 60_000);
        wire::validate_summary(c).unwrap();
    }
    let total: usize = chunks.iter().map(|c| c.entries.len()).sum();
    assert_eq!(total, a.len());
}

/// A record as its owner signed it at some point of a random history: peers 2..5, two
/// runs each, a few link changes (deltas from outside an owner's history are refused
/// unless signed, so the merge laws are about what owners can actually send).
fn arb_delta() -> impl Strategy<Value = RecordDelta> {
    (2u8..5, 1u64..3, 0usize..5, any::<bool>()).prop_map(|(peer, uid, cut, partial)| {
        // One history per (peer, uid), as a real owner has; deltas are its prefixes.
        let history = [
            (2u8, Some(0u16)),
            (3, Some(1)),
            (4, Some(0)),
            (2, None),
            (5, Some(1)),
        ];
        let changes = history
            .iter()
            .map(|&(r, l)| (r.wrapping_add(peer).wrapping_add(uid as u8) % 4 + 2, l))
            .take(cut);
        let mut t = Topology::new(&ident(peer), PeerUid(uid), &format!("p{peer}"), 6783);
        let mut last = None;
        for (remote, l) in changes.filter(|(r, _)| *r != peer) {
            if t.set_local_link(id(remote), l.map(link)) {
                last = Some(id(remote));
            }
        }
        match last {
            Some(r) if partial => t.local_delta([&r]),
            _ => full_delta(&t.local(), t.local_record()),
        }
    })
}

fn arb_topology() -> impl Strategy<Value = Topology> {
    proptest::collection::vec(arb_delta(), 0..6).prop_map(|deltas| {
        let mut t = topo(1);
        for d in deltas {
            t.merge_update(one(d)).unwrap();
        }
        t.take_change();
        t
    })
}

proptest! {
    #[test]
    fn topology_merge_laws(a in arb_topology(), b in arb_topology(), c in arb_topology()) {
        laws::check(&a, &b, &c);
    }

    #[test]
    fn anti_entropy_converges_in_two_rounds(a in arb_topology(), b in arb_topology()) {
        // Round one equalizes versions; a record with a hole (an entry missed below its
        // version) then differs only by fingerprint, which round two repairs.
        let (mut a, mut b) = (a, b);
        exchange(&mut a, &mut b);
        exchange(&mut a, &mut b);
        prop_assert_eq!(a.full(), b.full());
        prop_assert_eq!(a.digest(), b.digest());
    }
}

#[test]
fn fuzz_decode_topology_never_panics() {
    let mut a = topo(1);
    let d = change(&mut a, id(2), Some(link(2)));
    let corpus = vec![
        codec::encode(&one(d)),
        codec::encode(&a.summary_range(None, None)[0]),
        codec::encode(&a.full()),
    ];
    for input in fuzz::inputs(0x5eed_0003, &corpus, 3000) {
        fuzz_decode_topology(&input);
    }
}

#[test]
fn with_a_key_list_only_listed_peers_records_and_links_are_kept() {
    // 1 links to 2 (listed) and to 9 (not listed); 9 has its own record.
    let mut a = topo(1);
    change(&mut a, id(2), Some(link(2)));
    let from_a = change(&mut a, id(9), Some(link(9)));
    let mut nine = topo(9);
    let from_nine = change(&mut nine, id(1), Some(link(1)));
    let mut b = topo(2);
    b.merge_update(one(a.local_delta([&id(2), &id(9)])))
        .unwrap();
    b.merge_update(one(from_nine.clone())).unwrap();
    assert!(b.peer(&id(9)).is_some());
    // The list drops what is held of 9, and 9 cannot come back by gossip.
    b.set_admitted(Some([id(1), id(2)].into()));
    assert!(b.peer(&id(9)).is_none());
    assert!(b.take_change().link_removed);
    assert_eq!(b.merge_update(one(from_nine)).unwrap(), None);
    assert!(b.peer(&id(9)).is_none());
    // A listed peer's link to 9 is kept as reported, but with no record 9 is never
    // reachable: the link is not symmetric.
    b.merge_update(one(from_a)).unwrap();
    assert!(!b.is_symmetric(&id(1), &id(9)));
    assert!(!b.unreachable().contains(&id(9)) && b.peer(&id(9)).is_none());
    // Without the list, 9 is accepted again.
    b.set_admitted(None);
    change(&mut nine, id(2), Some(link(2)));
    // b holds nothing of 9 now: the one-entry delta is a gap, the whole record is news.
    assert_eq!(
        b.merge_update(one(nine.local_delta([&id(2)]))).unwrap(),
        None
    );
    assert!(b.take_gaps().contains(&id(9)));
    b.merge_update(one(full_delta(&nine.local(), nine.local_record())))
        .unwrap();
    assert!(b.peer(&id(9)).is_some());
}

/// Issue 14, point 2: V linked to W, as W's topology sees it; M is the forger.
fn victim_seen_by_w() -> (Topology, Topology) {
    let mut v = topo(1);
    let mut w = topo(2);
    let dv = change(&mut v, id(2), Some(link(2)));
    let dw = change(&mut w, id(1), Some(link(1)));
    w.merge_update(one(dv)).unwrap();
    let _ = dw;
    w.take_change();
    assert!(w.is_symmetric(&id(1), &id(2)));
    (v, w)
}

#[test]
fn a_forged_record_with_the_highest_incarnation_is_refused_and_the_victim_stays_routable() {
    let (v, mut w) = victim_seen_by_w();
    let m = ident(7);
    let top = Incarnation {
        epoch: u32::MAX,
        uid: PeerUid(u64::MAX),
    };
    let mut forged = RecordDelta {
        peer: id(1),
        incarnation: top,
        nickname: "p1".into(),
        listen_port: 6783,
        base: 0,
        links: vec![],
        proof: None,
    };
    // Unsigned.
    assert_eq!(w.merge_update(one(forged.clone())).unwrap(), None);
    // Signed by M, over exactly this record: M's key is not V's.
    let mut record = PeerRecord::new(top, "p1".into(), 6783);
    record.set_proof(None);
    forged.proof = Some(RecordProof {
        key: *m.signing_key(),
        signature: m.sign(crate::identity::DOMAIN_RECORD, &record.signed_bytes(&id(1))),
    });
    assert_eq!(w.merge_update(one(forged.clone())).unwrap(), None);
    // V's own (genuine) proof of another state does not cover it either.
    forged.proof = v.local_record().proof().copied();
    assert_eq!(w.merge_update(one(forged)).unwrap(), None);
    let r = w.peer(&id(1)).unwrap();
    assert_eq!(r.incarnation(), v.local_record().incarnation());
    assert!(w.is_symmetric(&id(1), &id(2)), "V is still routable");
    assert!(!w.take_change().changed);
    let rej = w.rejected();
    assert_eq!(
        (rej.unsigned, rej.key_mismatch, rej.bad_signature),
        (1, 1, 1)
    );
}

#[test]
fn a_forged_nickname_and_port_at_an_equal_incarnation_are_refused() {
    let (v, mut w) = victim_seen_by_w();
    let mut forged = full_delta(&v.local(), v.local_record());
    forged.nickname = "zzzz-larger".into();
    forged.listen_port = 1;
    assert_eq!(w.merge_update(one(forged)).unwrap(), None);
    let r = w.peer(&id(1)).unwrap();
    assert_eq!((r.nickname(), r.listen_port()), ("p1", 6783));
    assert_eq!(w.rejected().bad_signature, 1);
    // A forged link entry in a genuine header is refused the same way.
    let mut forged = full_delta(&v.local(), v.local_record());
    forged.links.push((
        id(9),
        LinkEntry {
            version: 99,
            link: Some(link(9)),
        },
    ));
    assert_eq!(w.merge_update(one(forged)).unwrap(), None);
    assert!(w.peer(&id(1)).unwrap().link_to(&id(9)).is_none());
    assert_eq!(w.rejected().bad_signature, 2);
}

#[test]
fn a_record_signed_by_a_key_that_does_not_bind_to_its_id_is_refused() {
    let (_, mut w) = victim_seen_by_w();
    // M publishes a record under the id of X (unknown to W), signed with M's key.
    let m = ident(7);
    let x = id(8);
    let inc = Incarnation {
        epoch: 0,
        uid: PeerUid(1),
    };
    let record = PeerRecord::new(inc, "x".into(), 6783);
    let delta = RecordDelta {
        peer: x,
        incarnation: inc,
        nickname: "x".into(),
        listen_port: 6783,
        base: 0,
        links: vec![],
        proof: Some(RecordProof {
            key: *m.signing_key(),
            signature: m.sign(crate::identity::DOMAIN_RECORD, &record.signed_bytes(&x)),
        }),
    };
    assert_eq!(w.merge_update(one(delta)).unwrap(), None);
    assert!(w.peer(&x).is_none());
    assert_eq!(w.rejected().key_mismatch, 1);
}

#[test]
fn records_over_the_link_cap_are_refused_and_ours_compacts() {
    let mut a = topo(1);
    // Churn: every link up then down leaves a tombstone; past the cap a new epoch
    // drops them.
    for n in 0..(wire::MAX_LINKS_PER_PEER as u64 + 10) {
        let remote = PeerId((u128::from(n) + 1000).to_be_bytes());
        a.set_local_link(remote, Some(link(1)));
        a.set_local_link(remote, None);
    }
    assert!(a.local_record().entries().len() <= wire::MAX_LINKS_PER_PEER);
    assert!(a.local_record().incarnation().epoch >= 1);
    assert_eq!(a.total_entries(), a.local_record().entries().len());
}
