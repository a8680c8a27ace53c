//! Seeded scenarios on 50-router meshes. Each replays exactly from its seed.

use super::*;
use crate::channel::{ChannelError, CrdtChannel, GossipChannel};
use crate::connection_maker::TargetState;
use crate::crdt::Crdt;
use crate::crdt::GCounter;
use crate::mesh::CloseReason;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 50;
const COUNTER: &str = "counter";
const INBOX: &str = "inbox";

/// Every net here holds these channels on each node (none until a test adds them).
type Net = super::Net<Apps>;

/// The application channels of a test node.
#[derive(Default)]
struct Apps {
    counter: Option<CrdtChannel<GCounter>>,
    inbox: Option<Inbox>,
}

impl Channels for Apps {
    fn names(&self) -> &'static [&'static str] {
        &[COUNTER, INBOX]
    }

    fn get(&self, name: &str) -> Option<&dyn GossipChannel> {
        match name {
            COUNTER => self.counter.as_ref().map(|c| c as &dyn GossipChannel),
            INBOX => self.inbox.as_ref().map(|c| c as &dyn GossipChannel),
            _ => None,
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut dyn GossipChannel> {
        match name {
            COUNTER => self.counter.as_mut().map(|c| c as &mut dyn GossipChannel),
            INBOX => self.inbox.as_mut().map(|c| c as &mut dyn GossipChannel),
            _ => None,
        }
    }
}

/// Launches `n` routers, 100 ms apart, each knowing only node 0's address.
fn launch(seed: u64, n: usize) -> Net {
    let mut net = Net::new(seed, SimConfig::default());
    net.add_node(&[]);
    for _ in 1..n {
        net.run_for(Duration::from_millis(100));
        net.add_node(&[0]);
    }
    net
}

/// 50 routers without discovery, each dialling its ring successor and one random other
/// node: a sparse, connected mesh whose links are `edges`.
fn sparse(seed: u64) -> (Net, Vec<BTreeSet<usize>>) {
    let mut config = SimConfig::default();
    config.mesh.discovery = false;
    config.maker.discovery = false;
    let mut net = Net::new(seed, config);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut neighbours = vec![BTreeSet::new(); N];
    for i in 0..N {
        let chord = (i + rng.gen_range(2..N - 1)) % N;
        for j in [(i + 1) % N, chord] {
            neighbours[i].insert(j);
            neighbours[j].insert(i);
        }
        let i2 = net.add_node(&[(i + 1) % N, chord]);
        register_counter(&mut net, i2);
    }
    (net, neighbours)
}

fn register_counter(net: &mut Net, i: usize) {
    net.node_mut(i).channels.counter = Some(CrdtChannel::new(GCounter::new()));
}

fn counter_value(net: &Net, i: usize) -> u64 {
    let counter = net.node(i).channels.counter.as_ref();
    counter.expect("registered").crdt().value()
}

fn increment(net: &mut Net, i: usize) {
    let id = node_id(i);
    net.with_node(i, |mesh, channels, now| {
        let counter = channels.counter.as_mut().expect("registered");
        let value = counter.crdt().full().get(&id).copied().unwrap_or(0);
        let delta = counter
            .apply_local(BTreeMap::from([(id, value + 1)]))
            .expect("new");
        mesh.broadcast(now, COUNTER, delta);
    });
}

/// The running nodes `among` know exactly each other, and agree on the topology.
fn agree_among(net: &Net, among: &[usize]) -> bool {
    let digest = net.node(among[0]).mesh().topology().digest();
    among.iter().all(|&i| {
        let t = net.node(i).mesh().topology();
        t.len() == among.len() && t.digest() == digest
    })
}

fn agree(net: &Net) -> bool {
    agree_among(net, &net.alive())
}

fn full_mesh(net: &Net) -> bool {
    let alive = net.alive();
    alive
        .iter()
        .all(|&i| net.node(i).link_count() == alive.len() - 1)
}

fn linked_as(net: &Net, neighbours: &[BTreeSet<usize>]) -> bool {
    net.alive()
        .iter()
        .all(|&i| net.node(i).link_count() == neighbours[i].len())
}

fn settle(net: &mut Net, limit: Duration, mut done: impl FnMut(&Net) -> bool) {
    let ok = net.run_until(limit, Duration::from_secs(1), &mut done);
    assert!(ok, "not settled after {:?}", net.elapsed());
}

#[test]
fn joins_converge_to_a_full_mesh_by_discovery() {
    let mut net = launch(1, N);
    settle(&mut net, Duration::from_secs(300), |n| {
        full_mesh(n) && agree(n)
    });
    for i in 0..N {
        let routes = net.node(i).mesh().routes();
        assert_eq!(routes.reachable().count(), N - 1);
        assert!(
            routes.reachable().all(|p| routes.unicast(&p) == Some(p)),
            "all direct"
        );
    }
    // Stable: no link churn and no dials once converged.
    let closes: usize = (0..N).map(|i| net.node(i).closes.len()).sum();
    let dials: u64 = (0..N).map(|i| net.node(i).dials).sum();
    net.run_for(Duration::from_secs(300));
    assert_eq!(
        (0..N).map(|i| net.node(i).closes.len()).sum::<usize>(),
        closes
    );
    assert_eq!((0..N).map(|i| net.node(i).dials).sum::<u64>(), dials);
    assert!(full_mesh(&net) && agree(&net));
}

#[test]
fn routes_are_symmetric_shortest_paths() {
    let (mut net, neighbours) = sparse(2);
    settle(&mut net, Duration::from_secs(300), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    net.run_for(Duration::from_secs(1)); // past the routes debounce
    let hops = |a: usize, b: usize| -> usize {
        let (mut at, target, mut count) = (a, node_id(b), 0);
        while node_id(at) != target {
            let routes = net.node(at).mesh().routes();
            let next = routes.unicast(&target).expect("a route");
            assert!(routes.is_neighbour(&next), "next hop over a symmetric link");
            at = (0..N).find(|&k| node_id(k) == next).expect("a node");
            count += 1;
            assert!(count < N, "routing loop from {a} to {b}");
        }
        count
    };
    for a in 0..N {
        for b in 0..N {
            assert_eq!(hops(a, b), hops(b, a), "{a} <-> {b}");
        }
    }
}

#[test]
fn broadcasts_reach_every_peer_exactly_once() {
    let (mut net, neighbours) = sparse(3);
    settle(&mut net, Duration::from_secs(300), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    net.run_for(Duration::from_secs(1));
    // Along the computed trees, from every source.
    for s in 0..N {
        let mut deliveries = vec![0usize; N];
        let mut stack = vec![s];
        while let Some(at) = stack.pop() {
            for next in net
                .node(at)
                .mesh()
                .routes()
                .broadcast_next_hops(&node_id(s))
            {
                let k = (0..N).find(|&k| node_id(k) == *next).expect("a node");
                deliveries[k] += 1;
                stack.push(k);
            }
        }
        deliveries[s] += 1;
        assert!(
            deliveries.iter().all(|&d| d == 1),
            "source {s}: {deliveries:?}"
        );
    }
    // And through the real machinery, counting deliveries on the wire.
    net.trace_broadcasts();
    let sources = [0, 7, 23, 49];
    for &s in &sources {
        increment(&mut net, s);
    }
    assert!(net.run_until_quiet(Duration::from_secs(5)));
    let seen = net.broadcast_deliveries();
    for &s in &sources {
        for k in (0..N).filter(|&k| k != s) {
            assert_eq!(seen.get(&(node_id(s), k)), Some(&1), "from {s} to {k}");
        }
    }
    assert!((0..N).all(|i| counter_value(&net, i) == sources.len() as u64));
}

#[test]
fn a_partition_splits_the_topology_and_healing_rejoins_it() {
    let (mut net, neighbours) = sparse(4);
    settle(&mut net, Duration::from_secs(300), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    let (left, right): (Vec<usize>, Vec<usize>) = (0..N).partition(|&i| i < N / 2);
    net.partition((0..N).map(|i| usize::from(i >= N / 2)).collect());
    // Each side drops the links across, then the peers beyond them.
    settle(&mut net, Duration::from_secs(120), |n| {
        agree_among(n, &left) && agree_among(n, &right)
    });
    assert!(left.iter().all(|&i| net
        .node(i)
        .mesh()
        .topology()
        .peer(&node_id(N - 1))
        .is_none()));
    // Both sides keep counting meanwhile.
    increment(&mut net, 0);
    increment(&mut net, N - 1);
    net.heal();
    settle(&mut net, Duration::from_secs(400), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    // Anti-entropy brought each side the other's count.
    settle(&mut net, Duration::from_secs(120), |n| {
        (0..N).all(|i| counter_value(n, i) == 2)
    });
}

#[test]
fn a_restarted_peer_replaces_its_old_incarnation_everywhere() {
    let (mut net, neighbours) = sparse(5);
    settle(&mut net, Duration::from_secs(300), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    // Uid 0 orders below any old incarnation, so the new run must overtake with an epoch.
    for uid in [Some(PeerUid(0)), None] {
        net.restart_with_uid(7, uid);
        register_counter(&mut net, 7);
        settle(&mut net, Duration::from_secs(400), |n| {
            linked_as(n, &neighbours) && agree(n)
        });
        let current = net.node(7).mesh().topology().local_record().incarnation();
        for i in 0..N {
            let record = net
                .node(i)
                .mesh()
                .topology()
                .peer(&node_id(7))
                .expect("known");
            assert_eq!(record.incarnation(), current, "node {i}");
        }
    }
    assert!(net.node(7).mesh().stats().incarnation_bumps >= 1);
}

#[test]
fn departed_peers_are_garbage_collected() {
    let (mut net, neighbours) = sparse(6);
    settle(&mut net, Duration::from_secs(300), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    net.crash(7);
    // The crashed peer's links die within the heartbeat timeout of its last message
    // (+ a heartbeat period of margin); GC follows after 1 s.
    net.run_for(
        crate::mesh::HEARTBEAT_TIMEOUT + crate::mesh::HEARTBEAT_INTERVAL + Duration::from_secs(5),
    );
    for i in net.alive() {
        assert!(
            net.node(i).mesh().topology().peer(&node_id(7)).is_none(),
            "node {i}"
        );
        assert!(net
            .node(i)
            .events
            .contains(&MeshEvent::PeerRemoved(node_id(7))));
    }
    assert!(agree(&net));
}

#[test]
fn simultaneous_dials_leave_one_link_without_flapping() {
    let mut net = Net::new(7, SimConfig::default());
    net.add_node(&[1]);
    net.add_node(&[0]);
    net.run_for(Duration::from_secs(600));
    for i in 0..2 {
        let node = net.node(i);
        assert_eq!(node.link_count(), 1);
        assert_eq!(node.mesh().connections().len(), 1);
        assert!(node.closes.iter().all(|r| *r == CloseReason::Duplicate));
        assert!(node.closes.len() <= 1);
        let established = node
            .events
            .iter()
            .filter(|e| matches!(e, MeshEvent::ConnectionEstablished { .. }))
            .count();
        assert!(established <= 2, "flapping: {established} establishments");
        assert_eq!(node.dials, 1);
    }
    let c0 = &net.node(0).mesh().connections()[0];
    let c1 = &net.node(1).mesh().connections()[0];
    assert_ne!(c0.outbound, c1.outbound, "both ends kept the same link");
}

#[test]
fn connecting_to_ourselves_is_never_retried() {
    let mut net = Net::new(8, SimConfig::default());
    net.add_node_with_targets(&[Net::addr(0), Net::addr(1)]);
    net.add_node(&[]);
    net.run_for(Duration::from_secs(600));
    let node = net.node(0);
    assert_eq!(node.dials, 2, "once to ourselves, once to node 1");
    // Both ends of the one link to ourselves are closed.
    assert_eq!(
        node.closes
            .iter()
            .filter(|r| **r == CloseReason::ConnectedToSelf)
            .count(),
        2
    );
    let own = node
        .maker()
        .targets()
        .into_iter()
        .find(|t| t.addr == Net::addr(0))
        .expect("kept");
    assert_eq!((own.state, own.next_retry), (TargetState::Failed, None));
    assert_eq!(node.link_count(), 1);
}

#[test]
fn lossy_links_break_and_the_mesh_recovers() {
    let (mut net, neighbours) = sparse(9);
    settle(&mut net, Duration::from_secs(300), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    net.set_loss(0.01);
    net.run_for(Duration::from_secs(120));
    let lost: usize = (0..N)
        .map(|i| {
            net.node(i)
                .events
                .iter()
                .filter(|e| matches!(e, MeshEvent::ConnectionLost { reason: None, .. }))
                .count()
        })
        .sum();
    assert!(lost > 0, "loss broke no link");
    net.set_loss(0.0);
    settle(&mut net, Duration::from_secs(400), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = || {
        let mut net = launch(10, 12);
        net.run_for(Duration::from_secs(30));
        let digests: Vec<u64> = (0..12)
            .map(|i| net.node(i).mesh().topology().digest())
            .collect();
        (net.bytes_sent, digests)
    };
    assert_eq!(run(), run());
}

/// A channel that only records the unicasts it receives.
#[derive(Default)]
struct Inbox(Vec<(PeerId, Vec<u8>)>);

impl GossipChannel for Inbox {
    fn digest(&self) -> u64 {
        0
    }
    fn summary(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn updates_for(&self, _: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        Ok(Vec::new())
    }
    fn missing_here(&self, _: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        Ok(Vec::new())
    }
    fn merge(&mut self, _: Instant, _: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        Ok(None)
    }
    fn handle_unicast(
        &mut self,
        _: Instant,
        source: PeerId,
        payload: &[u8],
    ) -> Result<(), ChannelError> {
        self.0.push((source, payload.to_vec()));
        Ok(())
    }
}

/// Node 0 sends `payload` to node `to` over the INBOX channel; it arrives, alone.
fn send_from_0(net: &mut Net, to: usize, payload: &[u8]) {
    assert!(net
        .node_mut(0)
        .mesh_mut()
        .send_unicast(node_id(to), INBOX, payload.to_vec()));
    net.drive(0);
    assert!(net.run_until_quiet(Duration::from_secs(5)));
    let inbox = net.node(to).channels.inbox.as_ref().expect("inbox");
    assert_eq!(inbox.0, vec![(node_id(0), payload.to_vec())]);
}

#[test]
fn unicasts_follow_routes_over_several_hops() {
    let (mut net, neighbours) = sparse(11);
    for i in 0..N {
        net.node_mut(i).channels.inbox = Some(Inbox::default());
    }
    settle(&mut net, Duration::from_secs(300), |n| {
        linked_as(n, &neighbours) && agree(n)
    });
    net.run_for(Duration::from_secs(1));
    let hops_from_0 = |k: usize| {
        let (mut at, mut hops) = (0, 0);
        while at != k && hops < N {
            let next = net
                .node(at)
                .mesh()
                .routes()
                .unicast(&node_id(k))
                .expect("route");
            at = (0..N).find(|&j| node_id(j) == next).expect("node");
            hops += 1;
        }
        hops
    };
    let far = (0..N).max_by_key(|&k| hops_from_0(k)).expect("nodes");
    let near = (1..N).find(|&k| hops_from_0(k) == 1).expect("a neighbour");
    assert!(
        hops_from_0(far) >= 3,
        "the farthest peer is {} hops away",
        hops_from_0(far)
    );
    send_from_0(&mut net, far, b"hello");
    let others: usize = (0..N)
        .filter(|&k| k != far)
        .map(|k| {
            let inbox = net.node(k).channels.inbox.as_ref();
            inbox.map_or(0, |i| i.0.len())
        })
        .sum();
    assert_eq!(others, 0);
    // To a neighbour the unicast goes unsigned (the link proves its source) and arrives.
    send_from_0(&mut net, near, b"next door");
    let rejected = net.node(near).mesh().stats().rejected_unicasts;
    assert_eq!(rejected.unsigned, 0);
}

/// Issue 14, point 2, in a running mesh: node 1 turns hostile. It broadcasts a forged
/// record of node 3 (the highest incarnation, no links) and a unicast forged as from
/// node 3 to node 2. Every node refuses the record (node 3 stays routable everywhere)
/// and node 2's inbox never sees the forgery.
#[test]
fn forged_records_and_unicasts_from_a_hostile_peer_change_nothing() {
    use crate::identity::DOMAIN_RECORD;
    use crate::message::{Message, Unicast};
    use crate::topology::{Incarnation, PeerRecord, RecordDelta, RecordProof, TopologyUpdate};
    let n = 6;
    let mut net = launch(0x1414, n);
    settle(&mut net, Duration::from_secs(120), |n| {
        full_mesh(n) && agree(n)
    });
    for i in 0..n {
        net.node_mut(i).channels.inbox = Some(Inbox::default());
    }
    let (hostile, victim, target) = (1, 3, 2);
    let forger = node_identity(hostile);
    let top = Incarnation {
        epoch: u32::MAX,
        uid: crate::peer::PeerUid(u64::MAX),
    };
    let record = PeerRecord::new(top, "node3".into(), SIM_PORT);
    let delta = RecordDelta {
        peer: node_id(victim),
        incarnation: top,
        nickname: "node3".into(),
        listen_port: SIM_PORT,
        base: 0,
        links: vec![],
        proof: Some(RecordProof {
            key: *forger.signing_key(),
            signature: forger.sign(DOMAIN_RECORD, &record.signed_bytes(&node_id(victim))),
        }),
    };
    let update = crate::codec::encode(&TopologyUpdate {
        records: vec![delta],
    });
    let mut unicast = Unicast::new(&forger, node_id(target), INBOX, b"forged".to_vec());
    unicast.source = node_id(victim);
    // Every neighbour of the hostile node receives the forgeries on its link from it.
    for i in (0..n).filter(|&i| i != hostile) {
        let conn = net
            .node(i)
            .mesh()
            .connections()
            .into_iter()
            .find(|c| c.peer == node_id(hostile))
            .expect("linked to the hostile node")
            .conn;
        let broadcast = Message::Broadcast {
            source: node_id(hostile),
            id: 0x1414 + i as u64,
            hops: 0,
            channel: crate::topology::TOPOLOGY_CHANNEL.into(),
            update: update.clone(),
        };
        let mut messages = vec![broadcast.encode()];
        if i == target {
            messages.push(Message::Unicast(unicast.clone()).encode());
        }
        net.with_node(i, |mesh, apps, now| {
            for m in &messages {
                mesh.handle_message(now, conn, m, apps);
            }
        });
    }
    net.run_for(Duration::from_secs(90));
    for i in (0..n).filter(|&i| i != victim) {
        let mesh = net.node(i).mesh();
        let r = mesh
            .topology()
            .peer(&node_id(victim))
            .expect("victim known");
        assert_ne!(r.incarnation(), top, "node {i} took the forged record");
        assert!(
            mesh.routes().unicast(&node_id(victim)).is_some(),
            "node {i} lost its route to the victim"
        );
        if i != hostile {
            assert!(mesh.stats().rejected_records.key_mismatch >= 1, "node {i}");
        }
    }
    let inbox = net.node(target).channels.inbox.as_ref().expect("inbox");
    assert!(inbox.0.is_empty(), "{:?}", inbox.0);
    assert_eq!(
        net.node(target)
            .mesh()
            .stats()
            .rejected_unicasts
            .key_mismatch,
        1
    );
    assert!(full_mesh(&net), "no link was closed over the forgeries");
}

/// Discovery candidates by brute force: every peer without a link to `i`, at each
/// address some record links to it from, with the port it listens on.
fn candidates_by_brute_force(net: &Net, i: usize) -> Vec<(PeerId, SocketAddr)> {
    let node = net.node(i);
    let topology = node.mesh().topology();
    let local = node.mesh().local().id;
    let linked: BTreeSet<PeerId> = node.node.links().values().map(|l| l.peer).collect();
    let mut out = Vec::new();
    for (peer, record) in topology.peers() {
        if *peer == local || linked.contains(peer) {
            continue;
        }
        for (_, other) in topology.peers() {
            if let Some(link) = other.link_to(peer) {
                let addr = SocketAddr::new(link.remote_addr.ip(), record.listen_port());
                out.push((*peer, addr));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Discovery looks unlinked peers up in every record when they are few (a nearly full
/// mesh) and walks every record's links when they are many (a ring): both give what
/// the definition gives.
#[test]
fn discovery_candidates_are_the_same_in_sparse_and_dense_meshes() {
    for dense in [false, true] {
        let mut config = SimConfig::default();
        config.maker.discovery = false;
        let mut net = Net::new(7, config);
        let n = 30;
        let mut edges = Vec::new();
        for i in 0..n {
            net.add_node(&[]);
            if dense {
                // Everything but the links of node 0 to nodes 2..5.
                let skip = |i: usize, j: usize| i == 0 && (2..5).contains(&j);
                edges.extend((i + 1..n).filter(|&j| !skip(i, j)).map(|j| (i, j)));
            } else {
                edges.push((i, (i + 1) % n));
            }
        }
        net.build_converged(&edges);
        net.run_for(Duration::from_secs(2));
        for i in 0..n {
            let want = candidates_by_brute_force(&net, i);
            let unlinked = if dense {
                [0, 2, 3, 4]
                    .contains(&i)
                    .then_some(if i == 0 { 3 } else { 1 })
            } else {
                Some(n - 3)
            };
            let peers: BTreeSet<PeerId> = want.iter().map(|(p, _)| *p).collect();
            assert_eq!(peers.len(), unlinked.unwrap_or(0), "node {i} dense {dense}");
            assert_eq!(
                net.node(i).mesh().discovery_candidates(),
                want,
                "node {i} dense {dense}"
            );
        }
    }
}
