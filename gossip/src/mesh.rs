//! The per-router mesh state machine.
//!
//! [`Mesh`] owns the local links, the [`Topology`] and the [`Routes`] computed from it.
//! It is sans-IO: the driver feeds it authenticated links (`handle_link_up`/
//! `handle_link_down`), their decrypted messages (`handle_message`) and the clock
//! (`handle_timeout`), and drains what to do with `poll_output`; `poll_timeout` says when
//! to call back. Nothing here reads a clock, a socket or a global RNG. The application's
//! gossip channels stay with the driver, which lends them ([`Channels`]) to the two
//! calls that may reach them: `handle_message` and `handle_timeout`.
//!
//! ```text
//!   driver ──handle_link_up/down, handle_message, handle_timeout──▶ Mesh
//!   driver ◀──poll_output: Send{conn, bytes} | Close{conn, reason} | Event──
//! ```
//!
//! - `links`: Hello, duplicate-link resolution, heartbeats and timeouts.
//! - `gossip`: digests, summaries, updates; reactions to topology changes.
//! - `broadcast`: broadcasts along per-source trees, unicasts along routes.

mod broadcast;
mod fuzz;
mod gossip;
mod links;
mod types;

pub use fuzz::{fuzz_mesh_session, fuzz_session_input};
pub use types::*;

use crate::channel::Channels;
use crate::message::{Hello, Message, MAX_NICKNAME_LEN};
use crate::peer::PeerId;
use crate::routes::Routes;
use crate::timer::{Timer, TimerTable};
use crate::topology::{Incarnation, Topology};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// One local link.
#[derive(Debug)]
struct Conn {
    remote_id: PeerId,
    outbound: bool,
    remote_addr: SocketAddr,
    /// The peer's Hello; `Some` once established.
    hello: Option<Hello>,
    /// Our `link_seq` for this link, sent in our Hello.
    local_seq: u64,
    /// When the peer's last control message arrived on this link.
    last_received: Instant,
    /// When the peer last showed a sign of life: a control message, or an authentic
    /// sleeve datagram ([`Mesh::handle_alive`]).
    last_alive: Instant,
    /// When we last asked the peer for a heartbeat.
    asked: Option<Instant>,
}

/// The mesh state machine of one router.
pub struct Mesh {
    local: LocalPeer,
    config: MeshConfig,
    rng: StdRng,
    next_link_seq: u64,
    conns: BTreeMap<ConnId, Conn>,
    /// The established link of each linked peer (at most one per peer).
    active: BTreeMap<PeerId, ConnId>,
    topology: Topology,
    routes: Routes,
    timers: TimerTable,
    outputs: VecDeque<MeshOutput>,
    stats: MeshStats,
    last_overtake: Option<Instant>,
    pending_rival: Option<Incarnation>,
    seen: broadcast::SeenBroadcasts,
    /// Peers whose link entry changed since the last broadcast of our record.
    pending_links: BTreeSet<PeerId>,
    /// Peers found unreachable at the last GC check.
    gc_suspects: BTreeSet<PeerId>,
}

impl Mesh {
    /// A mesh that knows only itself. `rng_seed` drives every random choice it makes.
    pub fn new(mut local: LocalPeer, config: MeshConfig, rng_seed: u64, now: Instant) -> Mesh {
        truncate_nickname(&mut local.nickname);
        local.id = local.identity.id();
        let topology = Topology::new(
            &local.identity,
            local.uid,
            &local.nickname,
            local.listen_port,
        );
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let mut timers = TimerTable::default();
        // A random phase, so that routers started together do not gossip in lockstep.
        let phase = rng.gen_range(0..=config.gossip_interval.as_millis() as u64);
        timers.set(Timer::Gossip, now + std::time::Duration::from_millis(phase));
        Mesh {
            routes: Routes::empty(local.id),
            local,
            config,
            rng,
            next_link_seq: 1,
            conns: BTreeMap::new(),
            active: BTreeMap::new(),
            topology,
            timers,
            outputs: VecDeque::new(),
            stats: MeshStats::default(),
            last_overtake: None,
            pending_rival: None,
            seen: broadcast::SeenBroadcasts::default(),
            pending_links: BTreeSet::new(),
            gc_suspects: BTreeSet::new(),
        }
    }

    /// Who we are.
    pub fn local(&self) -> &LocalPeer {
        &self.local
    }

    /// A link finished its authenticated handshake; `remote_id` is proven. Sends Hello.
    pub fn handle_link_up(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote_id: PeerId,
        outbound: bool,
        remote_addr: SocketAddr,
    ) {
        self.link_up(now, conn, remote_id, outbound, remote_addr);
    }

    /// The driver saw `conn` end. Unknown (already closed) links are ignored.
    pub fn handle_link_down(&mut self, now: Instant, conn: ConnId) {
        self.drop_conn(now, conn, None);
    }

    /// A decrypted message arrived on `conn`; what it holds for the application's
    /// channels goes to `channels`. Invalid input is counted and closes `conn`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: &[u8],
        channels: &mut dyn Channels,
    ) {
        self.message(now, conn, message, channels);
    }

    /// An authentic sleeve datagram from `peer` arrived at about `now` (the data plane
    /// reports them in batches): the peer is alive, and its link needs no heartbeat for
    /// a while ([`HEARTBEAT_ASK_AFTER`]). Ignored without an established link to `peer`.
    pub fn handle_alive(&mut self, now: Instant, peer: &PeerId) {
        let Some(conn) = self.active.get(peer) else {
            return;
        };
        if let Some(link) = self.conns.get_mut(conn) {
            link.last_alive = link.last_alive.max(now);
        }
    }

    /// Fires every expired deadline (the anti-entropy round reads the digests of
    /// `channels`).
    pub fn handle_timeout(&mut self, now: Instant, channels: &dyn Channels) {
        for timer in self.timers.take_expired(now) {
            match timer {
                Timer::Gossip => {
                    self.timers
                        .set(Timer::Gossip, now + self.config.gossip_interval);
                    self.gossip_round(channels);
                }
                Timer::Routes => self.recompute_routes(),
                Timer::Gc => self.collect_garbage(now),
                Timer::TopologyBatch => self.flush_local_links(now),
                Timer::Notify => self.event(MeshEvent::TopologyChanged),
                Timer::Links => self.link_timeouts(now),
                Timer::Incarnation => {
                    if let Some(rival) = self.pending_rival.take() {
                        self.overtake(now, rival);
                    }
                }
            }
        }
    }

    /// When to call [`Mesh::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_expiry()
    }

    /// The next thing to do, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<MeshOutput> {
        self.outputs.pop_front()
    }

    /// Our local links.
    pub fn connections(&self) -> Vec<ConnectionStatus> {
        self.conns
            .iter()
            .map(|(id, c)| ConnectionStatus {
                conn: *id,
                peer: c.remote_id,
                nickname: c.hello.as_ref().map(|h| h.nickname.clone()),
                remote_addr: c.remote_addr,
                outbound: c.outbound,
                state: if c.hello.is_some() {
                    ConnectionState::Established
                } else {
                    ConnectionState::Handshaking
                },
            })
            .collect()
    }

    /// Every known peer and the links it reports.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let nickname = |id: &PeerId| {
            self.topology
                .peer(id)
                .map(|r| r.nickname().to_string())
                .unwrap_or_default()
        };
        self.topology
            .peers()
            .map(|(id, record)| PeerStatus {
                id: *id,
                nickname: record.nickname().to_string(),
                uid: record.incarnation().uid,
                version: record.version(),
                connections: record
                    .links()
                    .map(|(remote, link)| PeerConnectionStatus {
                        peer: *remote,
                        nickname: nickname(remote),
                        addr: link.remote_addr,
                        outbound: link.outbound,
                        established: self.topology.is_symmetric(id, remote),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The current routes (recalculated after changes; see [`MeshEvent::RoutesChanged`]).
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The topology as we know it.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Listen addresses of peers we know but have no link to (empty without discovery):
    /// each address another peer sees such a peer at, with the port it listens on.
    pub fn discovery_candidates(&self) -> Vec<(PeerId, SocketAddr)> {
        if !self.config.discovery {
            return Vec::new();
        }
        let linked: BTreeSet<PeerId> = self.conns.values().map(|c| c.remote_id).collect();
        // The peers we have no link to, with the port each listens on.
        let unlinked: BTreeMap<PeerId, u16> = self
            .topology
            .peers()
            .filter(|(id, _)| **id != self.local.id && !linked.contains(*id))
            .map(|(id, record)| (*id, record.listen_port()))
            .collect();
        let mut out: Vec<(PeerId, SocketAddr)> = Vec::new();
        if unlinked.is_empty() {
            return out;
        }
        // This runs at every topology change. In a full mesh few peers are unlinked and
        // every record has N links: look each unlinked peer up in every record. In a
        // sparse mesh most peers are unlinked and records are short: walk the links.
        // Either way the cost is the smaller of the two products, not N².
        let entries: usize = self.topology.peers().map(|(_, r)| r.entries().len()).sum();
        let lookups = unlinked.len().saturating_mul(self.topology.len());
        let records = self.topology.peers().map(|(_, r)| r);
        if lookups <= entries {
            for record in records {
                for (remote, port) in &unlinked {
                    if let Some(link) = record.link_to(remote) {
                        out.push((*remote, SocketAddr::new(link.remote_addr.ip(), *port)));
                    }
                }
            }
        } else {
            for record in records {
                for (remote, link) in record.links() {
                    if let Some(port) = unlinked.get(remote) {
                        out.push((*remote, SocketAddr::new(link.remote_addr.ip(), *port)));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Counters.
    pub fn stats(&self) -> MeshStats {
        MeshStats {
            rejected_records: self.topology.rejected(),
            ..self.stats
        }
    }

    /// `--peer-keys`: accepts topology only of these peers from now on (`None`: of
    /// every peer), dropping what is held of others; routes follow.
    pub fn set_admitted(&mut self, now: Instant, admitted: Option<BTreeSet<PeerId>>) {
        self.topology.set_admitted(admitted);
        self.after_topology_change(now);
        self.recompute_routes();
    }

    /// Merges a whole topology state from elsewhere, as if received by gossip (used to
    /// build large simulated meshes without gossiping their history).
    #[cfg(any(test, feature = "sim"))]
    pub fn merge_topology_state(&mut self, now: Instant, other: &Topology) {
        self.topology.merge_state(other);
        self.after_topology_change(now);
        self.recompute_routes();
    }

    fn send(&mut self, conn: ConnId, message: &Message) {
        self.send_to_all(&[conn], message);
    }

    /// Sends one message on several links, encoding it once.
    fn send_to_all(&mut self, conns: &[ConnId], message: &Message) {
        let Some((&last, rest)) = conns.split_last() else {
            return;
        };
        let bytes = message.encode();
        let len = bytes.len() as u64 * conns.len() as u64;
        let count = conns.len() as u64;
        if message.is_gossip() {
            self.stats.gossip_messages_sent += count;
            self.stats.gossip_bytes_sent += len;
        } else {
            self.stats.control_messages_sent += count;
            self.stats.control_bytes_sent += len;
        }
        for &conn in rest {
            let message = bytes.clone();
            self.outputs.push_back(MeshOutput::Send { conn, message });
        }
        self.outputs.push_back(MeshOutput::Send {
            conn: last,
            message: bytes,
        });
    }

    fn event(&mut self, event: MeshEvent) {
        self.outputs.push_back(MeshOutput::Event(event));
    }
}

fn truncate_nickname(nickname: &mut String) {
    if nickname.len() > MAX_NICKNAME_LEN {
        let mut end = MAX_NICKNAME_LEN;
        while !nickname.is_char_boundary(end) {
            end -= 1;
        }
        nickname.truncate(end);
    }
}

#[cfg(test)]
mod tests;
