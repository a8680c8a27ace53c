//! Link lifecycle: Hello, duplicate links, restarts, heartbeats and dead links.
//!
//! Heartbeats are asked for, not sent on a timer: a link that brought no sign of life
//! for [`HEARTBEAT_ASK_AFTER`] (no control message and no sleeve datagram), or no control
//! message for [`CONTROL_ASK_AFTER`], sends [`Message::Heartbeat`] every
//! [`HEARTBEAT_INTERVAL`] until one comes; the peer answers each at once with
//! [`Message::HeartbeatAnswer`]. A link silent for [`HEARTBEAT_TIMEOUT`] after its
//! last sign of life (or its control stream for both spans) is dead. So the end that
//! needs proof asks for it, and the other never has to guess: an idle link whose sleeve
//! path works carries no heartbeat, and two ends that see the path fail a minute
//! apart still hear from each other in time.
//!
//! [`HEARTBEAT_ASK_AFTER`]: super::HEARTBEAT_ASK_AFTER
//! [`CONTROL_ASK_AFTER`]: super::CONTROL_ASK_AFTER
//! [`HEARTBEAT_INTERVAL`]: super::HEARTBEAT_INTERVAL
//! [`HEARTBEAT_TIMEOUT`]: super::HEARTBEAT_TIMEOUT
//!
//! Both ends send [`Hello`] first. On the peer's Hello the link is established, unless:
//! - the peer has our id: the same uid means we dialled ourselves
//!   ([`CloseReason::ConnectedToSelf`]), another uid means a second router runs with our
//!   identity ([`CloseReason::SameIdentity`]); neither target is ever retried;
//! - we already have a link to that peer. If the Hello shows a new uid, the peer
//!   restarted and the new link replaces the old ([`CloseReason::Replaced`]). Otherwise
//!   the two links are duplicates and both ends keep the same one, computed from facts
//!   both know: the link whose initiator has the lower [`PeerId`]; if one peer initiated
//!   both, the one with its higher `link_seq` (its newer dial, which also replaces a
//!   half-open old link). Weave broke such ties by link ids and saw churn (#3619).

use super::{CloseReason, Conn, ConnId, Mesh, MeshEvent, MeshOutput};
use crate::channel::Channels;
use crate::message::{Hello, Message, PROTOCOL_VERSION};
use crate::peer::PeerId;
use crate::timer::Timer;
use crate::topology::{LinkInfo, RecordDelta, Topology, TopologyUpdate, TOPOLOGY_CHANNEL};
use std::net::SocketAddr;
use std::time::Instant;

/// How late a heartbeat or a silence check may run, so that they run in batches.
pub(super) const LINK_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

impl Mesh {
    pub(super) fn link_up(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote_id: PeerId,
        outbound: bool,
        remote_addr: SocketAddr,
    ) {
        if self.conns.contains_key(&conn) {
            return;
        }
        let local_seq = self.next_link_seq;
        self.next_link_seq += 1;
        let link = Conn {
            remote_id,
            outbound,
            remote_addr,
            hello: None,
            local_seq,
            last_received: now,
            last_alive: now,
            asked: None,
        };
        let first = (self.config.heartbeat_ask_after).min(self.config.heartbeat_timeout);
        self.timers.set_earliest(Timer::Links, now + first);
        self.conns.insert(conn, link);
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            uid: self.local.uid,
            nickname: self.local.nickname.clone(),
            listen_port: self.local.listen_port,
            link_seq: local_seq,
        };
        self.send(conn, &Message::Hello(hello));
    }

    pub(super) fn message(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: &[u8],
        channels: &mut dyn Channels,
    ) {
        let Some(link) = self.conns.get_mut(&conn) else {
            return;
        };
        link.last_received = now;
        link.last_alive = now;
        let established = link.hello.is_some();
        let message = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.malformed(now, conn, e.to_string()),
        };
        if message.is_gossip() {
            self.stats.gossip_messages_received += 1;
            self.stats.gossip_bytes_received += bytes.len() as u64;
        }
        match (message, established) {
            (Message::Hello(hello), false) => self.hello(now, conn, hello, channels),
            (Message::Hello(_), true) => self.malformed(now, conn, "a second Hello".into()),
            (_, false) => self.malformed(now, conn, "a message before Hello".into()),
            (Message::Heartbeat, true) => self.send(conn, &Message::HeartbeatAnswer),
            (Message::HeartbeatAnswer, true) => {}
            (gossip, true) => self.gossip_message(now, conn, gossip, channels),
        }
    }

    pub(super) fn malformed(&mut self, now: Instant, conn: ConnId, why: String) {
        self.stats.malformed += 1;
        self.drop_conn(now, conn, Some(CloseReason::Malformed(why)));
    }

    /// Forgets `conn`; with a reason, tells the driver to close it.
    pub(super) fn drop_conn(&mut self, now: Instant, conn: ConnId, reason: Option<CloseReason>) {
        let Some(link) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(reason) = &reason {
            self.outputs.push_back(MeshOutput::Close {
                conn,
                reason: reason.clone(),
            });
        }
        let peer = link.remote_id;
        self.event(MeshEvent::ConnectionLost {
            conn,
            peer: Some(peer),
            reason,
        });
        if self.active.get(&peer) == Some(&conn) {
            self.active.remove(&peer);
            if self.topology.set_local_link(peer, None) {
                self.local_link_changed(now, peer);
            }
        }
    }

    fn hello(&mut self, now: Instant, conn: ConnId, hello: Hello, channels: &dyn Channels) {
        let Some(link) = self.conns.get_mut(&conn) else {
            return;
        };
        let remote = link.remote_id;
        if remote == self.local.id {
            if hello.uid != self.local.uid {
                return self.drop_conn(now, conn, Some(CloseReason::SameIdentity));
            }
            // Both ends of a link to ourselves are ours: close them all, so that the
            // dialling end learns never to retry, whichever end read a Hello first.
            let own: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.remote_id == self.local.id)
                .map(|(id, _)| *id)
                .collect();
            for id in own {
                self.drop_conn(now, id, Some(CloseReason::ConnectedToSelf));
            }
            return;
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            let reason = CloseReason::ProtocolVersion {
                theirs: hello.protocol_version,
            };
            return self.drop_conn(now, conn, Some(reason));
        }
        let uid = hello.uid;
        link.hello = Some(hello);
        if let Some(&existing) = self.active.get(&remote) {
            let restarted = self
                .conns
                .get(&existing)
                .and_then(|c| c.hello.as_ref())
                .is_some_and(|h| h.uid != uid);
            if !restarted && !self.prefer(conn, existing) {
                return self.drop_conn(now, conn, Some(CloseReason::Duplicate));
            }
            // Unlist the old link first, so its close does not announce the peer gone.
            self.active.remove(&remote);
            let reason = if restarted {
                CloseReason::Replaced
            } else {
                CloseReason::Duplicate
            };
            self.drop_conn(now, existing, Some(reason));
        }
        self.establish(now, conn, channels);
    }

    /// Whether link `new` should be kept over link `old` to the same peer.
    fn prefer(&self, new: ConnId, old: ConnId) -> bool {
        let initiator = |id: ConnId| -> Option<(PeerId, u64)> {
            let c = self.conns.get(&id)?;
            if c.outbound {
                Some((self.local.id, c.local_seq))
            } else {
                Some((c.remote_id, c.hello.as_ref()?.link_seq))
            }
        };
        match (initiator(new), initiator(old)) {
            (Some((ni, nseq)), Some((oi, oseq))) if ni == oi => nseq > oseq,
            (Some((ni, _)), Some((oi, _))) => ni < oi,
            (new, _) => new.is_some(),
        }
    }

    fn establish(&mut self, now: Instant, conn: ConnId, channels: &dyn Channels) {
        let Some(link) = self.conns.get(&conn) else {
            return;
        };
        let (remote, outbound) = (link.remote_id, link.outbound);
        let info = LinkInfo {
            outbound,
            remote_addr: link.remote_addr,
        };
        self.active.insert(remote, conn);
        self.event(MeshEvent::ConnectionEstablished { conn, peer: remote });
        if self.topology.set_local_link(remote, Some(info)) {
            self.local_link_changed(now, remote);
        }
        // The dialler starts the state exchange; the summaries flow both ways from there.
        if outbound {
            self.send_digests(conn, channels);
        }
    }

    /// Reacts to a change of our link to `remote`; the change is announced with the
    /// others of the same batch.
    fn local_link_changed(&mut self, now: Instant, remote: PeerId) {
        self.after_topology_change(now);
        self.pending_links.insert(remote);
        self.timers
            .set_earliest(Timer::TopologyBatch, now + self.config.topology_batch);
    }

    /// Broadcasts the batched changes of our own links.
    pub(super) fn flush_local_links(&mut self, now: Instant) {
        self.timers.stop(Timer::TopologyBatch);
        if self.pending_links.is_empty() {
            return;
        }
        let delta = self
            .topology
            .local_delta(&std::mem::take(&mut self.pending_links));
        self.broadcast_record(now, delta);
    }

    /// Broadcasts a delta of our own record.
    pub(super) fn broadcast_record(&mut self, now: Instant, delta: RecordDelta) {
        let update = Topology::encode_update(&TopologyUpdate {
            records: vec![delta],
        });
        self.originate_broadcast(now, TOPOLOGY_CHANNEL, update);
    }

    /// Closes dead links and asks silent ones for a heartbeat (see the module doc).
    pub(super) fn link_timeouts(&mut self, now: Instant) {
        let c = &self.config;
        let (timeout, ask_after, interval) = (
            c.heartbeat_timeout,
            c.heartbeat_ask_after,
            c.heartbeat_interval,
        );
        let control_timeout = c.control_ask_after + timeout;
        let mut dead = Vec::new();
        let mut asks = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, link) in &mut self.conns {
            if link.hello.is_none() {
                if now >= link.last_received + timeout {
                    dead.push((*id, CloseReason::HelloTimeout));
                } else {
                    let at = link.last_received + timeout;
                    next = next.min(Some(at)).or(Some(at));
                }
                continue;
            }
            if now >= link.last_alive + timeout || now >= link.last_received + control_timeout {
                dead.push((*id, CloseReason::HeartbeatTimeout));
                continue;
            }
            let ask_at =
                (link.last_alive + ask_after).min(link.last_received + c.control_ask_after);
            let mut deadline = ask_at;
            if now >= ask_at {
                let again = link.asked.map(|t| t + interval);
                if again.is_none_or(|t| now >= t) {
                    link.asked = Some(now);
                    asks.push(*id);
                }
                deadline = link.asked.map_or(now, |t| t + interval);
            }
            let deadline = deadline
                .min(link.last_alive + timeout)
                .min(link.last_received + control_timeout);
            next = next.min(Some(deadline)).or(Some(deadline));
        }
        // Each link's deadlines fall at their own phase: batched, the walk over every
        // link runs at most once a second rather than once per link and interval.
        if let Some(at) = next {
            self.timers
                .set_earliest(Timer::Links, at.max(now + LINK_SLACK));
        }
        for (id, reason) in dead {
            self.drop_conn(now, id, Some(reason));
        }
        for id in asks {
            self.send(id, &Message::Heartbeat);
        }
    }
}
