//! Unit tests of link handling, driven by a tiny in-memory wire.
//! Multi-peer scenarios live in [`crate::sim`].

use super::links::LINK_SLACK;
use super::*;
use crate::message::{Hello, Message, PROTOCOL_VERSION};
use crate::peer::PeerUid;
use std::collections::BTreeMap;
use std::time::Duration;

fn ident(n: usize) -> crate::identity::Identity {
    crate::identity::Identity::for_test(n as u64)
}

fn id(n: usize) -> PeerId {
    ident(n).id()
}

fn addr(n: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n as u8 + 1], 6783))
}

fn mesh(n: usize, uid: u64, now: Instant) -> Mesh {
    mesh_with(n, uid, now, MeshConfig::default())
}

fn mesh_with(n: usize, uid: u64, now: Instant, config: MeshConfig) -> Mesh {
    let local = LocalPeer {
        id: id(n),
        identity: ident(n),
        uid: PeerUid(uid),
        nickname: format!("p{n}"),
        listen_port: 6783,
    };
    Mesh::new(local, config, n as u64, now)
}

/// Meshes joined by instant, ordered links.
struct Wire {
    now: Instant,
    meshes: Vec<Mesh>,
    ends: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    closed: Vec<(usize, ConnId, CloseReason)>,
    events: Vec<(usize, MeshEvent)>,
    /// When each mesh received a message, in order.
    heard: Vec<(usize, Instant)>,
}

impl Wire {
    fn new(meshes: Vec<Mesh>, now: Instant) -> Wire {
        Wire {
            now,
            meshes,
            ends: BTreeMap::new(),
            closed: Vec::new(),
            events: Vec::new(),
            heard: Vec::new(),
        }
    }

    /// Two meshes, the first linked to the second (link 1), hellos exchanged.
    fn linked_pair(now: Instant) -> Wire {
        Wire::linked_pair_with(now, MeshConfig::default())
    }

    /// [`Wire::linked_pair`] with `config` at both ends.
    fn linked_pair_with(now: Instant, config: MeshConfig) -> Wire {
        let meshes = vec![
            mesh_with(0, 1, now, config.clone()),
            mesh_with(1, 2, now, config),
        ];
        let mut w = Wire::new(meshes, now);
        w.dial(0, 1, 1);
        w.pump();
        w
    }

    /// A pair with no anti-entropy rounds: nothing but heartbeats crosses the link
    /// unless the test sends it.
    fn quiet_pair(now: Instant) -> Wire {
        Wire::linked_pair_with(
            now,
            MeshConfig {
                gossip_interval: Duration::from_secs(24 * 3600),
                ..MeshConfig::default()
            },
        )
    }

    /// Control messages (heartbeats and their answers) mesh `i` sent so far.
    fn control_sent(&self, i: usize) -> u64 {
        self.meshes[i].stats().control_messages_sent
    }

    /// The longest time mesh `i` went without a control message since `since`.
    fn longest_silence(&self, i: usize, since: Instant) -> Duration {
        let mut times: Vec<Instant> = (self.heard.iter())
            .filter(|(m, t)| *m == i && *t >= since)
            .map(|(_, t)| *t)
            .collect();
        times.insert(0, since);
        times.push(self.now);
        times
            .windows(2)
            .map(|p| p[1] - p[0])
            .max()
            .unwrap_or_default()
    }

    /// Runs `secs` seconds one at a time; every `every` seconds the meshes in `alive`
    /// get a sleeve datagram report about their peer.
    fn run(&mut self, secs: u64, every: u64, alive: &[usize]) {
        for s in 1..=secs {
            self.advance(Duration::from_secs(1));
            if s % every == 0 {
                for &i in alive {
                    let peer = self.meshes[1 - i].local().id;
                    self.meshes[i].handle_alive(self.now, &peer);
                }
            }
        }
    }

    /// `a` dials `b`; each end names the link `conn`.
    fn dial(&mut self, a: usize, b: usize, conn: u64) {
        let (ia, ib) = (self.meshes[a].local().id, self.meshes[b].local().id);
        self.ends.insert((a, ConnId(conn)), (b, ConnId(conn)));
        self.ends.insert((b, ConnId(conn)), (a, ConnId(conn)));
        self.meshes[a].handle_link_up(self.now, ConnId(conn), ib, true, addr(b));
        self.meshes[b].handle_link_up(self.now, ConnId(conn), ia, false, addr(a));
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.meshes.len() {
                while let Some(out) = self.meshes[i].poll_output() {
                    moved = true;
                    match out {
                        MeshOutput::Send { conn, message } => {
                            if let Some(&(j, c)) = self.ends.get(&(i, conn)) {
                                self.heard.push((j, self.now));
                                self.meshes[j].handle_message(self.now, c, &message, &mut ());
                            }
                        }
                        MeshOutput::Close { conn, reason } => {
                            self.closed.push((i, conn, reason));
                            if let Some((j, c)) = self.ends.remove(&(i, conn)) {
                                self.ends.remove(&(j, c));
                                self.meshes[j].handle_link_down(self.now, c);
                            }
                        }
                        MeshOutput::Event(e) => self.events.push((i, e)),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for m in &mut self.meshes {
            m.handle_timeout(self.now, &());
        }
        self.pump();
    }
}

#[test]
fn the_mesh_can_move_to_its_own_task() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Mesh>();
    assert_send::<crate::routes::Routes>();
    fn assert_sync<T: Sync>() {}
    assert_sync::<crate::routes::Routes>();
}

#[test]
fn hello_establishes_both_ends_and_topology_agrees() {
    let now = Instant::now();
    let mut w = Wire::new(vec![mesh(0, 1, now), mesh(1, 2, now)], now);
    w.dial(0, 1, 7);
    assert_eq!(
        w.meshes[0].connections()[0].state,
        ConnectionState::Handshaking
    );
    w.pump();
    for m in &w.meshes {
        let c = &m.connections()[0];
        assert!(c.is_established());
        assert!(c.nickname.is_some());
    }
    assert_eq!(
        w.meshes[0].topology().digest(),
        w.meshes[1].topology().digest()
    );
    assert!(w.events.contains(&(
        0,
        MeshEvent::ConnectionEstablished {
            conn: ConnId(7),
            peer: id(1)
        }
    )));
    let peers = w.meshes[1].peers();
    assert_eq!(peers.len(), 2);
    assert!(peers
        .iter()
        .all(|p| p.connections.len() == 1 && p.connections[0].established));
    w.advance(Duration::from_millis(200));
    assert_eq!(w.meshes[0].routes().unicast(&id(1)), Some(id(1)));
}

#[test]
fn dialling_ourselves_or_our_twin_is_closed_for_good() {
    let now = Instant::now();
    // Peer 1 is a second router with peer 0's identity.
    let twin = {
        let local = LocalPeer {
            id: id(0),
            identity: ident(0),
            uid: PeerUid(99),
            nickname: "twin".into(),
            listen_port: 1,
        };
        Mesh::new(local, MeshConfig::default(), 5, now)
    };
    let mut w = Wire::new(vec![mesh(0, 1, now), twin], now);
    w.dial(0, 1, 1);
    w.pump();
    assert!(w
        .closed
        .iter()
        .any(|(_, _, r)| *r == CloseReason::SameIdentity && r.is_permanent()));

    let mut m = mesh(0, 1, now);
    m.handle_link_up(now, ConnId(3), id(0), true, addr(0));
    let hello = match m.poll_output() {
        Some(MeshOutput::Send { message, .. }) => message,
        other => panic!("expected Hello, got {other:?}"),
    };
    m.handle_message(now, ConnId(3), &hello, &mut ());
    let close =
        std::iter::from_fn(|| m.poll_output()).find(|o| matches!(o, MeshOutput::Close { .. }));
    assert_eq!(
        close,
        Some(MeshOutput::Close {
            conn: ConnId(3),
            reason: CloseReason::ConnectedToSelf
        })
    );
    assert_eq!(
        CloseReason::ConnectedToSelf.to_string(),
        "cannot connect to ourself"
    );
}

#[test]
fn malformed_or_out_of_order_input_closes_and_counts() {
    let now = Instant::now();
    let mut m = mesh(0, 1, now);
    for (conn, bytes) in [
        (1, vec![1u8, 0xff, 0xff]),
        (2, Message::Heartbeat.encode()),
        (3, vec![]),
    ] {
        m.handle_link_up(now, ConnId(conn), id(1), false, addr(1));
        m.handle_message(now, ConnId(conn), &bytes, &mut ());
    }
    assert_eq!(m.stats().malformed, 3);
    let closes = std::iter::from_fn(|| m.poll_output())
        .filter(|o| matches!(o, MeshOutput::Close { .. }))
        .count();
    assert_eq!(closes, 3);
    assert!(m.connections().is_empty());
}

#[test]
fn wrong_protocol_version_is_refused() {
    let now = Instant::now();
    let mut m = mesh(0, 1, now);
    m.handle_link_up(now, ConnId(1), id(1), false, addr(1));
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        uid: PeerUid(2),
        nickname: "x".into(),
        listen_port: 1,
        link_seq: 1,
    };
    m.handle_message(now, ConnId(1), &Message::Hello(hello).encode(), &mut ());
    let reason = std::iter::from_fn(|| m.poll_output()).find_map(|o| match o {
        MeshOutput::Close { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(matches!(reason, Some(CloseReason::ProtocolVersion { .. })));
}

/// With nothing else on the link and no sleeve datagrams, each end asks after
/// `HEARTBEAT_ASK_AFTER` of silence and the other answers at once: the link lives, at
/// about one exchange per ask period.
#[test]
fn an_idle_link_asks_for_heartbeats_and_is_answered() {
    let mut w = Wire::quiet_pair(Instant::now());
    let start = w.now;
    w.run(600, 1, &[]);
    let sent = w.control_sent(0) + w.control_sent(1);
    let periods = 600 / HEARTBEAT_ASK_AFTER.as_secs() + 1;
    assert!(
        sent >= 2 * (periods - 2),
        "only {sent} heartbeats in 10 min"
    );
    // At worst both ends ask at once, and both answer.
    assert!(sent <= 4 * periods, "{sent} heartbeats in 10 min");
    for i in 0..2 {
        let silent = w.longest_silence(i, start);
        assert!(
            silent <= HEARTBEAT_ASK_AFTER + LINK_SLACK,
            "mesh {i} silent for {silent:?}"
        );
    }
    assert!(w.closed.is_empty(), "closed: {:?}", w.closed);
}

/// Sleeve datagrams from the peer (a keepalive each way every 25 s) spare the link its
/// heartbeats; only the control stream's own check (`CONTROL_ASK_AFTER`) asks, rarely.
#[test]
fn sleeve_datagrams_spare_a_link_its_heartbeats() {
    let mut w = Wire::quiet_pair(Instant::now());
    let before = w.control_sent(0) + w.control_sent(1);
    w.run(CONTROL_ASK_AFTER.as_secs() - 5, 25, &[0, 1]);
    assert_eq!(
        w.control_sent(0) + w.control_sent(1) - before,
        0,
        "no heartbeat while datagrams arrive"
    );
    w.run(600, 25, &[0, 1]);
    let sent = w.control_sent(0) + w.control_sent(1) - before;
    let periods = (600 + CONTROL_ASK_AFTER.as_secs()) / CONTROL_ASK_AFTER.as_secs() + 1;
    assert!(sent >= 2, "the control stream was never checked");
    assert!(sent <= 4 * periods, "{sent} heartbeats");
    assert!(w.closed.is_empty(), "closed: {:?}", w.closed);
}

/// The path works one way only: mesh 0 hears the peer's datagrams, mesh 1 hears none.
/// Mesh 1 asks, mesh 0 answers although it needs nothing itself, and neither end
/// drops the link.
#[test]
fn the_end_that_hears_no_datagrams_asks_and_is_answered() {
    let mut w = Wire::quiet_pair(Instant::now());
    let start = w.now;
    let before = (w.control_sent(0), w.control_sent(1));
    w.run(600, 25, &[0]);
    let asks = w.control_sent(1) - before.1;
    let answers = w.control_sent(0) - before.0;
    assert!(
        asks >= 600 / (HEARTBEAT_ASK_AFTER.as_secs() + 1) - 1,
        "{asks} asks"
    );
    assert!(answers >= asks, "{answers} answers to {asks} asks");
    let silent = w.longest_silence(1, start);
    assert!(
        silent <= HEARTBEAT_ASK_AFTER + LINK_SLACK,
        "silent for {silent:?}"
    );
    assert!(w.closed.is_empty(), "closed: {:?}", w.closed);
}

/// The control stream breaks silently while the peer's datagrams still arrive (a
/// middlebox dropped the TCP connection, or the peer's control plane hangs): the asks
/// go unanswered and both ends drop the link, `CONTROL_ASK_AFTER` and
/// `HEARTBEAT_TIMEOUT` after the last control message.
#[test]
fn a_dead_control_stream_is_found_behind_live_datagrams() {
    let mut w = Wire::quiet_pair(Instant::now());
    let cut = w.now;
    w.ends.clear();
    let dead = CONTROL_ASK_AFTER + HEARTBEAT_TIMEOUT;
    w.run(dead.as_secs() - 1, 25, &[0, 1]);
    assert!(
        w.closed.is_empty(),
        "closed before {dead:?}: {:?}",
        w.closed
    );
    w.run(LINK_SLACK.as_secs() + 1, 25, &[0, 1]);
    let timeouts = (w.closed.iter())
        .filter(|(_, _, r)| *r == CloseReason::HeartbeatTimeout)
        .count();
    assert_eq!(timeouts, 2, "{:?} after {:?}", w.closed, w.now - cut);
}

#[test]
fn heartbeats_flow_and_silence_kills_the_link() {
    let now = Instant::now();
    let mut w = Wire::linked_pair(now);
    let deadline = w.meshes[0].poll_timeout().expect("timers armed");
    assert!(deadline <= now + HEARTBEAT_INTERVAL);
    // Heartbeats keep the link alive well past the timeout.
    for _ in 0..12 {
        w.advance(Duration::from_secs(10));
    }
    assert_eq!(w.meshes[0].connections().len(), 1);
    // Cut the wire silently: both ends time out within the timeout plus one heartbeat
    // period (and the second of timer batching).
    w.ends.clear();
    let mut waited = Duration::ZERO;
    while waited < HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL + Duration::from_secs(1) {
        w.advance(Duration::from_secs(1));
        waited += Duration::from_secs(1);
    }
    let timeouts = w
        .closed
        .iter()
        .filter(|(_, _, r)| *r == CloseReason::HeartbeatTimeout)
        .count();
    assert_eq!(timeouts, 2);
    assert!(w.meshes[0]
        .topology()
        .local_record()
        .links()
        .next()
        .is_none());
}

#[test]
fn simultaneous_dials_keep_the_lower_initiators_link_on_both_ends() {
    let now = Instant::now();
    let mut w = Wire::new(vec![mesh(0, 1, now), mesh(1, 2, now)], now);
    // Both dial before either Hello is processed.
    w.dial(0, 1, 1);
    w.dial(1, 0, 2);
    w.pump();
    // id(0) < id(1): the link peer 0 initiated (conn 1) survives on both ends.
    for m in &w.meshes {
        let conns = m.connections();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].conn, ConnId(1));
    }
    assert!(w
        .closed
        .iter()
        .all(|(_, c, r)| *c == ConnId(2) && *r == CloseReason::Duplicate));
}

#[test]
fn a_restarted_peers_new_link_replaces_the_old() {
    let now = Instant::now();
    let mut w = Wire::new(vec![mesh(0, 1, now), mesh(1, 2, now)], now);
    w.dial(1, 0, 1);
    w.pump();
    // Peer 1 restarts (new uid); its old link is half-open at peer 0.
    w.meshes[1] = mesh(1, 3, now);
    w.ends.clear();
    w.dial(1, 0, 2);
    w.pump();
    assert!(w.closed.contains(&(0, ConnId(1), CloseReason::Replaced)));
    let conns = w.meshes[0].connections();
    assert_eq!((conns.len(), conns[0].conn), (1, ConnId(2)));
    let record = w.meshes[0].topology().peer(&id(1)).expect("peer 1 known");
    assert_eq!(record.incarnation().uid, PeerUid(3));
}

/// Valid encodings of every gossip message, with real topology payloads.
fn gossip_corpus() -> Vec<Vec<u8>> {
    use crate::channel::GossipChannel;
    use crate::message::ChannelDigest;
    use crate::topology::{LinkInfo, Topology, TOPOLOGY_CHANNEL};
    let mut t = Topology::new(&ident(1), PeerUid(2), "p1", 6783);
    t.set_local_link(
        id(0),
        Some(LinkInfo {
            outbound: true,
            remote_addr: addr(0),
        }),
    );
    let update = Topology::encode_update(&crate::topology::TopologyUpdate {
        records: vec![t.local_delta([&id(0)])],
    });
    let summary = GossipChannel::summary(&t).remove(0);
    let channel = TOPOLOGY_CHANNEL.to_string();
    [
        Message::Digest(vec![ChannelDigest {
            channel: channel.clone(),
            digest: 1,
        }]),
        Message::Summary {
            channel: channel.clone(),
            reply_wanted: true,
            summary: summary.clone(),
        },
        Message::Summary {
            channel: channel.clone(),
            reply_wanted: false,
            summary,
        },
        Message::Update {
            channel: channel.clone(),
            update: update.clone(),
        },
        Message::Broadcast {
            source: id(1),
            id: 9,
            hops: 0,
            channel: channel.clone(),
            update,
        },
        Message::Unicast(crate::message::Unicast::new(
            &ident(1),
            id(0),
            &channel,
            vec![1],
        )),
        Message::Heartbeat,
    ]
    .iter()
    .map(Message::encode)
    .collect()
}

#[test]
fn fuzz_handle_message_never_panics() {
    let corpus = gossip_corpus();
    let now = Instant::now();
    for input in crate::codec::fuzz::inputs(0x5eed_0004, &corpus, 3000) {
        fuzz_handle_message(now, &input);
    }
}

/// Feeds `data` to an established link of a fresh mesh; the mesh must not panic, and
/// anything it refuses must close that link and be counted.
fn fuzz_handle_message(now: Instant, data: &[u8]) {
    let mut m = mesh(0, 1, now);
    m.handle_link_up(now, ConnId(1), id(1), false, addr(1));
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        uid: PeerUid(2),
        nickname: "p1".into(),
        listen_port: 1,
        link_seq: 1,
    };
    m.handle_message(now, ConnId(1), &Message::Hello(hello).encode(), &mut ());
    m.handle_message(now, ConnId(1), data, &mut ());
    let closed =
        std::iter::from_fn(|| m.poll_output()).any(|o| matches!(o, MeshOutput::Close { .. }));
    assert_eq!(
        closed,
        m.stats().malformed == 1,
        "a refusal closes the link and is counted"
    );
    m.handle_timeout(now + Duration::from_secs(60), &());
}

#[test]
fn a_unicast_forged_as_from_another_peer_is_dropped_and_counted() {
    // 0 and 1 linked; 1 (the forger) sends unicasts to 0 claiming to come from 2, and
    // unsigned ones that only a link to their source could carry.
    let now = Instant::now();
    let mut m = mesh(0, 1, now);
    m.handle_link_up(now, ConnId(1), id(1), false, addr(1));
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        uid: PeerUid(2),
        nickname: "p1".into(),
        listen_port: 1,
        link_seq: 1,
    };
    m.handle_message(now, ConnId(1), &Message::Hello(hello).encode(), &mut ());
    let forger = ident(1);
    // Signed by the forger under its own key, with 2 as the source.
    let mut forged = crate::message::Unicast::new(&forger, id(0), "ipam", vec![1]);
    forged.source = id(2);
    forged.proof.as_mut().expect("signed").signature =
        forger.sign(crate::identity::DOMAIN_UNICAST, &forged.signed_bytes());
    m.handle_message(now, ConnId(1), &Message::Unicast(forged).encode(), &mut ());
    // 2's genuine message, its payload rewritten on the way.
    let mut rewritten = crate::message::Unicast::new(&ident(2), id(0), "ipam", vec![1]);
    rewritten.payload = vec![2];
    m.handle_message(
        now,
        ConnId(1),
        &Message::Unicast(rewritten).encode(),
        &mut (),
    );
    // 2's genuine message.
    let genuine = crate::message::Unicast::new(&ident(2), id(0), "ipam", vec![1]);
    m.handle_message(now, ConnId(1), &Message::Unicast(genuine).encode(), &mut ());
    // Unsigned, as a message straight from 2 would be, but on the link to 1.
    let unsigned = crate::message::Unicast::direct(id(2), id(0), "ipam", vec![1]);
    m.handle_message(
        now,
        ConnId(1),
        &Message::Unicast(unsigned).encode(),
        &mut (),
    );
    // Unsigned from 1 on its own link: its handshake proves it.
    let direct = crate::message::Unicast::direct(id(1), id(0), "ipam", vec![1]);
    m.handle_message(now, ConnId(1), &Message::Unicast(direct).encode(), &mut ());
    // Unsigned from 1 for 3, to be relayed: no relay forwards it.
    let onward = crate::message::Unicast::direct(id(1), id(3), "ipam", vec![1]);
    m.handle_message(now, ConnId(1), &Message::Unicast(onward).encode(), &mut ());
    let rejected = m.stats().rejected_unicasts;
    assert_eq!((rejected.key_mismatch, rejected.bad_signature), (1, 1));
    assert_eq!(
        rejected.unsigned, 2,
        "unsigned but not from the link's peer"
    );
    assert_eq!(m.stats().malformed, 0, "the relaying link is not blamed");
    assert!(!std::iter::from_fn(|| m.poll_output()).any(|o| matches!(o, MeshOutput::Close { .. })));
}
