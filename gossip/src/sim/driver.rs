//! What the router's owner task does, done in virtual time: feed each [`Node`] what
//! happened on its links and move its outputs onto links and dials; plus the fault knobs.
//!
//! [`Node`]: crate::node::Node

use super::{Event, LinkId, Net, SimLink};
use crate::channel::Channels;
use crate::mesh::{ConnId, Mesh};
use crate::message::Message;
use crate::node::{Event as NodeEvent, Input, LinkUp, Output};
use crate::peer::PeerId;
use crate::topology::Topology;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

impl<A: Channels + Default> Net<A> {
    pub(super) fn process(&mut self, event: Event) {
        match event {
            Event::Deliver { link, to, bytes } => {
                let Some(l) = self.links.get(&link) else {
                    return;
                };
                let (node, conn) = l.ends[to];
                if l.up && self.nodes[node].alive {
                    self.trace(node, &bytes);
                    let message = Input::Message { conn, bytes };
                    self.handle(node, message);
                    self.drive(node);
                }
            }
            Event::Connect { from, addr } => self.complete_dial(from, addr),
            Event::DialFailed { node, addr, error } => {
                if self.nodes[node].alive {
                    let failed = Input::DialFailed {
                        target: addr,
                        error: error.into(),
                    };
                    self.handle(node, failed);
                    self.drive(node);
                }
            }
            Event::LinkDown { link, end } => {
                let Some(l) = self.links.get(&link) else {
                    return;
                };
                let (node, conn) = l.ends[end];
                self.link_down(node, conn);
                self.drive(node);
            }
        }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.group.as_ref().is_none_or(|g| g[a] == g[b])
    }

    fn complete_dial(&mut self, from: usize, addr: SocketAddr) {
        if !self.nodes[from].alive {
            return;
        }
        match self.by_addr.get(&addr).copied() {
            Some(to) if self.nodes[to].alive && self.reachable(from, to) => {
                self.open_link(from, to, Some(addr));
                self.drive(from);
                self.drive(to);
            }
            _ => {
                let at = self.now + self.config.connect_timeout;
                self.schedule(
                    at,
                    Event::DialFailed {
                        node: from,
                        addr,
                        error: "connection timed out",
                    },
                );
            }
        }
    }

    /// Creates a link from `a` (dialling `target`, if a target) to `b` and tells both
    /// nodes.
    fn open_link(&mut self, a: usize, b: usize, target: Option<SocketAddr>) {
        let (lo, hi) = self.config.latency;
        let latency = if hi > lo {
            self.rng.gen_range(lo..=hi)
        } else {
            lo
        };
        let id = LinkId(self.next_link);
        self.next_link += 1;
        let ca = self.nodes[a].alloc_conn(id);
        let cb = self.nodes[b].alloc_conn(id);
        self.links.insert(
            id,
            SimLink {
                ends: [(a, ca), (b, cb)],
                latency,
                up: true,
            },
        );
        let (ida, idb) = (
            self.nodes[a].mesh().local().id,
            self.nodes[b].mesh().local().id,
        );
        // The acceptor sees the dialler's address with an ephemeral port.
        let ephemeral = SocketAddr::new(Self::addr(a).ip(), 40_000 + (id.0 % 20_000) as u16);
        let up = |conn, remote_id, outbound, addr, target| {
            Input::LinkUp(LinkUp {
                conn,
                remote_id,
                outbound,
                addr,
                target,
                encrypted: true,
                hash: [0; 32],
            })
        };
        let link_a = up(ca, idb, true, Self::addr(b), target);
        self.handle(a, link_a);
        let link_b = up(cb, ida, false, ephemeral, None);
        self.handle(b, link_b);
    }

    /// Node `i`'s end of a link went down under it (the remote closed it, it broke).
    fn link_down(&mut self, i: usize, conn: ConnId) {
        if self.forget_conn(i, conn) {
            let down = Input::LinkDown { conn, error: None };
            self.handle(i, down);
        }
    }

    /// Feeds node `i` one input, lending it the node's channels.
    fn handle(&mut self, i: usize, input: Input) {
        let node = &mut self.nodes[i];
        node.node.handle(self.now, input, &mut node.channels);
    }

    /// Drops node `i`'s end of a link and marks the link down; whether it was there.
    fn forget_conn(&mut self, i: usize, conn: ConnId) -> bool {
        let Some(link) = self.nodes[i].conns.remove(&conn) else {
            return false;
        };
        if let Some(l) = self.links.get_mut(&link) {
            l.up = false;
        }
        true
    }

    /// Runs node `i`'s pump, carries out its outputs, then re-arms its wakeup.
    pub(super) fn drive(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.alive {
            if let Some(pump) = node.pump.as_mut() {
                node.pump_deadline = pump(self.now, node.node.mesh_mut(), &mut node.channels);
            }
        }
        while let Some(output) = self.nodes[i].node.poll_output() {
            match output {
                Output::Send { conn, message } => self.transmit(i, conn, message),
                Output::Close { conn, reason, .. } => {
                    self.nodes[i].closes.push(reason);
                    let link = self.nodes[i].conns.get(&conn).copied();
                    self.forget_conn(i, conn);
                    // The remote end sees the close (FIN) after the latency.
                    if let Some(l) = link.and_then(|l| self.links.get(&l).map(|s| (l, s))) {
                        let end = usize::from(l.1.ends[0] == (i, conn));
                        let at = self.now + l.1.latency;
                        let link = l.0;
                        self.schedule(at, Event::LinkDown { link, end });
                    }
                }
                Output::Dial(addr) => {
                    self.nodes[i].dials += 1;
                    let at = self.now + self.config.latency.1 * 2;
                    self.schedule(at, Event::Connect { from: i, addr });
                }
                Output::Event(NodeEvent::Mesh(event)) => self.nodes[i].events.push(event),
                Output::Event(NodeEvent::LinkDown { .. }) => {}
            }
        }
        self.rearm(i);
    }

    fn rearm(&mut self, i: usize) {
        if let Some(old) = self.wakeup_of[i].take() {
            self.wakeups.remove(&(old, i));
        }
        let node = &self.nodes[i];
        let next = [node.node.poll_timeout(), node.pump_deadline]
            .into_iter()
            .flatten()
            .min();
        if let (Some(at), true) = (next, node.alive) {
            self.wakeups.insert((at, i));
            self.wakeup_of[i] = Some(at);
        }
    }

    fn transmit(&mut self, i: usize, conn: ConnId, bytes: Vec<u8>) {
        let Some(&link) = self.nodes[i].conns.get(&conn) else {
            return;
        };
        if self.mute_gossip && Message::decode(&bytes).is_ok_and(|m| m.is_gossip()) {
            return;
        }
        let Some(l) = self.links.get(&link) else {
            return;
        };
        if !l.up {
            return;
        }
        self.bytes_sent += bytes.len() as u64;
        if let Some(kinds) = self.kinds.as_mut() {
            *kinds.entry(kind_of(&bytes)).or_default() += bytes.len() as u64;
        }
        // By (node, conn), not node alone: a node may be linked to itself.
        let to = usize::from(l.ends[0] == (i, conn));
        let (latency, other) = (l.latency, l.ends[to].0);
        if !self.reachable(i, other) {
            return; // stalls silently: heartbeats will tell
        }
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            // An ordered stream cannot skip a message: the link breaks on both ends.
            if let Some(l) = self.links.get_mut(&link) {
                l.up = false;
            }
            self.schedule(self.now + latency, Event::LinkDown { link, end: 0 });
            self.schedule(self.now + latency, Event::LinkDown { link, end: 1 });
            return;
        }
        self.schedule(self.now + latency, Event::Deliver { link, to, bytes });
    }

    fn trace(&mut self, node: usize, bytes: &[u8]) {
        let Some(trace) = self.broadcast_trace.as_mut() else {
            return;
        };
        if let Ok(Message::Broadcast { source, .. }) = Message::decode(bytes) {
            *trace.entry((source, node)).or_default() += 1;
        }
    }

    /// Starts tallying the bytes put on links by message kind, from zero.
    pub fn tally_kinds(&mut self) {
        self.kinds = Some(BTreeMap::new());
    }

    /// The bytes tallied by kind since [`Net::tally_kinds`].
    pub fn bytes_by_kind(&self) -> BTreeMap<String, u64> {
        self.kinds.clone().unwrap_or_default()
    }

    /// Starts counting broadcast deliveries by (source, receiving node), from zero.
    pub fn trace_broadcasts(&mut self) {
        self.broadcast_trace = Some(BTreeMap::new());
    }

    /// The broadcast deliveries counted since [`Net::trace_broadcasts`].
    pub fn broadcast_deliveries(&self) -> BTreeMap<(PeerId, usize), usize> {
        self.broadcast_trace.clone().unwrap_or_default()
    }

    /// Links `a` (dialling) to `b` at once, bypassing both connection makers.
    pub fn connect(&mut self, a: usize, b: usize) {
        self.open_link(a, b, None);
        self.drive(a);
        self.drive(b);
    }

    /// Closes every link between `a` and `b` cleanly (both ends see it go down).
    pub fn disconnect(&mut self, a: usize, b: usize) {
        let between: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.up && ((l.ends[0].0, l.ends[1].0) == (a, b)
                    || (l.ends[0].0, l.ends[1].0) == (b, a))
            })
            .map(|(id, _)| *id)
            .collect();
        for link in between {
            for end in 0..2 {
                let (node, conn) = self.links[&link].ends[end];
                self.link_down(node, conn);
                self.drive(node);
            }
        }
    }

    /// Splits the network: `groups[i]` is node `i`'s side. Links across stall silently.
    pub fn partition(&mut self, groups: Vec<usize>) {
        self.group = Some(groups);
    }

    /// Lifts the partition.
    pub fn heal(&mut self) {
        self.group = None;
    }

    /// Makes every message break its link with probability `p`.
    pub fn set_loss(&mut self, p: f64) {
        self.loss = p;
    }

    /// Node `i`'s host vanishes: no close reaches its peers.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive = false;
        for link in std::mem::take(&mut node.conns).into_values() {
            if let Some(l) = self.links.get_mut(&link) {
                l.up = false;
            }
        }
        self.rearm(i);
    }

    /// Restarts node `i` (crashing it first if needed): same id, a new random uid, same
    /// explicit targets.
    pub fn restart(&mut self, i: usize) {
        self.restart_with_uid(i, None);
    }

    /// Sets node `i`'s [`Pump`] (kept across crashes and restarts; it runs only while the
    /// node is alive) and runs it once.
    pub fn set_pump(&mut self, i: usize, pump: super::Pump<A>) {
        self.nodes[i].pump = Some(pump);
        self.drive(i);
    }

    /// Runs `f` on node `i`'s mesh and channels at the current instant (say, a local
    /// request to one of its channels), then drives the node as its driver would after
    /// any input.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Mesh, &mut A, Instant) -> R) -> R {
        let node = &mut self.nodes[i];
        let out = f(node.node.mesh_mut(), &mut node.channels, self.now);
        self.drive(i);
        out
    }

    /// Restarts node `i` like [`Net::restart`], calling `setup` on its fresh channels
    /// before it runs (to restore them from persisted state).
    pub fn restart_with(&mut self, i: usize, setup: impl FnOnce(&mut A, Instant)) {
        self.restart_inner(i, None, setup);
    }

    /// Restarts node `i` with the given uid (random if `None`).
    pub fn restart_with_uid(&mut self, i: usize, uid: Option<crate::peer::PeerUid>) {
        self.restart_inner(i, uid, |_, _| {});
    }

    fn restart_inner(
        &mut self,
        i: usize,
        uid: Option<crate::peer::PeerUid>,
        setup: impl FnOnce(&mut A, Instant),
    ) {
        if self.nodes[i].alive {
            self.crash(i);
        }
        let explicit = self.nodes[i].explicit.clone();
        let fresh = self.fresh_node(i, uid, &explicit);
        let node = &mut self.nodes[i];
        node.node = fresh;
        node.channels = A::default();
        node.alive = true;
        node.pump_deadline = None;
        setup(&mut node.channels, self.now);
        self.drive(i);
    }

    /// Builds a converged mesh over `edges` directly: links come up with their Hellos,
    /// but instead of gossiping the history every node merges the final topology.
    pub fn build_converged(&mut self, edges: &[(usize, usize)]) {
        self.mute_gossip = true;
        for &(a, b) in edges {
            self.connect(a, b);
        }
        // Muted until the Hellos are in and every batched local delta has gone (nowhere).
        let batch = self.config.mesh.topology_batch;
        self.run_for(batch * 2 + self.config.latency.1 * 4);
        self.mute_gossip = false;
        let mut template = Topology::new(
            &crate::identity::Identity::for_test(u64::MAX),
            crate::peer::PeerUid(0),
            "template",
            0,
        );
        for node in &self.nodes {
            template.merge_state(node.mesh().topology());
        }
        for i in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[i]
                .node
                .mesh_mut()
                .merge_topology_state(now, &template);
            self.drive(i);
        }
    }
}

impl<A> super::SimNode<A> {
    fn alloc_conn(&mut self, link: LinkId) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(conn, link);
        conn
    }

    /// Number of established links.
    pub fn link_count(&self) -> usize {
        self.node.links().values().filter(|l| l.established).count()
    }
}

/// A message's kind for [`Net::bytes_by_kind`]: its variant, and the channel for
/// gossip (`summary/topology`).
fn kind_of(bytes: &[u8]) -> String {
    match Message::decode(bytes) {
        Ok(Message::Hello(_)) => "hello".into(),
        Ok(Message::Heartbeat) => "heartbeat".into(),
        Ok(Message::HeartbeatAnswer) => "heartbeat answer".into(),
        Ok(Message::Digest(_)) => "digest".into(),
        Ok(Message::Summary { channel, .. }) => format!("summary/{channel}"),
        Ok(Message::Update { channel, .. }) => format!("update/{channel}"),
        Ok(Message::Broadcast { channel, .. }) => format!("broadcast/{channel}"),
        Ok(Message::Unicast(_)) => "unicast".into(),
        Err(_) => "undecodable".into(),
    }
}
