//! Forwarding decisions over a fake route table, and over gossip's `Routes`.

use super::*;
use std::collections::HashMap;
use std::time::Duration;

const US: PeerId = PeerId([1; 16]);
const N1: PeerId = PeerId([2; 16]);
const N2: PeerId = PeerId([3; 16]);
const X: PeerId = PeerId([4; 16]);
const Y: PeerId = PeerId([5; 16]);
const M_LOCAL: Mac = [0x02, 0, 0, 0, 0, 1];
const M_X: Mac = [0x02, 0, 0, 0, 0, 4];
const BCAST: Mac = [0xff; 6];

/// X is behind N1; Y behind N2. Our tree reaches N1 and N2; X's tree, at us, lists N1
/// (where it came from) and N2.
struct FakeRoutes {
    unicast: HashMap<PeerId, PeerId>,
    trees: HashMap<PeerId, Vec<PeerId>>,
}

fn routes() -> FakeRoutes {
    FakeRoutes {
        unicast: [(N1, N1), (N2, N2), (X, N1), (Y, N2)].into_iter().collect(),
        trees: [(US, vec![N1, N2]), (X, vec![N1, N2])]
            .into_iter()
            .collect(),
    }
}

impl RouteView for FakeRoutes {
    fn unicast_next_hop(&self, dest: &PeerId) -> Option<PeerId> {
        self.unicast.get(dest).copied()
    }
    fn broadcast_next_hops(&self, source: &PeerId) -> &[PeerId] {
        self.trees.get(source).map_or(&[], |v| v.as_slice())
    }
    fn may_relay(&self, source: &PeerId, from: &PeerId) -> bool {
        self.unicast.get(source) == Some(from)
    }
}

fn eth(dst: Mac, src: Mac) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0u8; 46]);
    f
}

fn from(from: PeerId, src_peer: PeerId, dst_peer: PeerId) -> Ingress {
    Ingress::Peer {
        from,
        src_peer,
        dst_peer,
    }
}

fn hops(f: Forward<'_>) -> (Vec<PeerId>, bool) {
    match f {
        Forward::Flood {
            next_hops,
            deliver_locally,
        } => (next_hops.iter().collect(), deliver_locally),
        other => panic!("expected a flood, got {other:?}"),
    }
}

#[test]
fn runts_and_group_sources_are_malformed() {
    let (now, r) = (Instant::now(), routes());
    let mut sw = Switch::new(US, MacTableConfig::default());
    let runt = &eth(BCAST, M_LOCAL)[..13];
    assert_eq!(
        sw.forward(now, runt, Ingress::Local, &r),
        Forward::Drop(DropReason::Malformed)
    );
    let ingress = from(N1, X, US);
    assert_eq!(
        sw.forward(now, runt, ingress, &r),
        Forward::Drop(DropReason::Malformed)
    );
    let group_src = eth(M_LOCAL, [0x01, 0, 0x5e, 0, 0, 1]);
    let got = sw.forward(now, &group_src, Ingress::Local, &r);
    assert_eq!(got, Forward::Drop(DropReason::Malformed));
    assert!(sw.macs().is_empty());
}

#[test]
fn local_capture() {
    let (now, r) = (Instant::now(), routes());
    let mut sw = Switch::new(US, MacTableConfig::default());
    // Broadcast and unknown unicast flood along our tree; the source is learned.
    assert_eq!(
        hops(sw.forward(now, &eth(BCAST, M_LOCAL), Ingress::Local, &r)),
        (vec![N1, N2], false)
    );
    assert_eq!(sw.macs().lookup(now, &M_LOCAL), Some(Owner::Local));
    assert_eq!(
        hops(sw.forward(now, &eth(M_X, M_LOCAL), Ingress::Local, &r)).0,
        vec![N1, N2]
    );
    // Once M_X is learned behind X, it is unicast towards X via N1.
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N1, X, US), &r),
        Forward::Deliver
    );
    assert_eq!(
        sw.forward(now, &eth(M_X, M_LOCAL), Ingress::Local, &r),
        Forward::Unicast {
            next_hop: N1,
            dst_peer: X
        }
    );
    // Local to local is the bridge's business.
    let local2 = [0x02, 0, 0, 0, 0, 2];
    sw.forward(now, &eth(BCAST, local2), Ingress::Local, &r);
    assert_eq!(
        sw.forward(now, &eth(local2, M_LOCAL), Ingress::Local, &r),
        Forward::Drop(DropReason::LocalDestination)
    );
    // A local frame claiming X's MAC is dropped, and the table is unchanged.
    assert_eq!(
        sw.forward(now, &eth(BCAST, M_X), Ingress::Local, &r),
        Forward::Drop(DropReason::SpoofedLocalSource)
    );
    assert_eq!(sw.macs().lookup(now, &M_X), Some(Owner::Peer(X)));
}

/// A peer claiming a local container's MAC is refused while the container is heard on
/// our bridge, so it keeps its traffic; once silent for LOCAL_HOLD the MAC may move.
#[test]
fn a_peer_cannot_steal_a_local_mac() {
    let (now, r) = (Instant::now(), routes());
    let mut sw = Switch::new(US, MacTableConfig::default());
    sw.forward(now, &eth(BCAST, M_LOCAL), Ingress::Local, &r);
    let later = now + LOCAL_HOLD - Duration::from_secs(1);
    assert_eq!(
        sw.forward(later, &eth(BCAST, M_LOCAL), from(N1, X, BROADCAST), &r),
        Forward::Drop(DropReason::SpoofedRemoteSource)
    );
    assert_eq!(sw.macs().lookup(later, &M_LOCAL), Some(Owner::Local));
    // The local container still reaches X's MACs: its frames are not taken as spoofed.
    sw.forward(later, &eth(BCAST, M_X), from(N1, X, BROADCAST), &r);
    assert_eq!(
        sw.forward(later, &eth(M_X, M_LOCAL), Ingress::Local, &r),
        Forward::Unicast {
            next_hop: N1,
            dst_peer: X
        }
    );
    // Silent here for LOCAL_HOLD: the MAC moves to the peer that now speaks for it.
    let moved = later + LOCAL_HOLD;
    let got = sw.forward(moved, &eth(BCAST, M_LOCAL), from(N1, X, BROADCAST), &r);
    assert!(!matches!(got, Forward::Drop(_)), "{got:?}");
    assert_eq!(sw.macs().lookup(moved, &M_LOCAL), Some(Owner::Peer(X)));
}

#[test]
fn received_from_peers() {
    let (now, r) = (Instant::now(), routes());
    let mut sw = Switch::new(US, MacTableConfig::default());
    // A broadcast from X, arriving via N1: delivered, and relayed along X's tree,
    // never back to N1.
    let got = sw.forward(now, &eth(BCAST, M_X), from(N1, X, BROADCAST), &r);
    assert_eq!(hops(got), (vec![N2], true));
    assert_eq!(sw.macs().lookup(now, &M_X), Some(Owner::Peer(X)));
    // Relayed unicast towards Y via N2.
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N1, X, Y), &r),
        Forward::Unicast {
            next_hop: N2,
            dst_peer: Y
        }
    );
    // Relaying back where it came from, or a frame back at its source, is a loop.
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N1, X, X), &r),
        Forward::Drop(DropReason::Loop)
    );
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_LOCAL), from(N1, US, BROADCAST), &r),
        Forward::Drop(DropReason::Loop)
    );
    // No route to an unknown peer.
    let z = PeerId([9; 16]);
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N1, X, z), &r),
        Forward::Drop(DropReason::NoRoute)
    );
}

/// A neighbour cannot speak for another peer: a relayed frame whose `src_peer` the
/// sender is not on a path from is dropped before its MAC is learnt.
#[test]
fn a_neighbour_cannot_forge_the_source_peer() {
    let (now, r) = (Instant::now(), routes());
    let mut sw = Switch::new(US, MacTableConfig::default());
    // X lives behind N1; N2 claims to relay X's broadcast and unicast.
    assert_eq!(
        sw.forward(now, &eth(BCAST, M_X), from(N2, X, BROADCAST), &r),
        Forward::Drop(DropReason::WrongRelay)
    );
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N2, X, US), &r),
        Forward::Drop(DropReason::WrongRelay)
    );
    // A source peer nobody knows.
    let z = PeerId([9; 16]);
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N1, z, US), &r),
        Forward::Drop(DropReason::WrongRelay)
    );
    assert_eq!(sw.macs().lookup(now, &M_X), None, "nothing learnt");
    // A neighbour's own frames, and X's through N1, pass.
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N2, N2, US), &r),
        Forward::Deliver
    );
    assert_eq!(
        sw.forward(now, &eth(M_LOCAL, M_X), from(N1, X, US), &r),
        Forward::Deliver
    );
}

#[test]
fn gossip_routes_implement_route_view() {
    let now = Instant::now();
    let routes = Routes::empty(US);
    let mut sw = Switch::new(US, MacTableConfig::default());
    let got = sw.forward(now, &eth(BCAST, M_LOCAL), Ingress::Local, &routes);
    let (next, local) = hops(got);
    assert!(next.is_empty() && !local);
    assert_eq!(routes.unicast_next_hop(&X), None);
}
