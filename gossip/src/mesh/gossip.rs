//! Gossip on established links: anti-entropy, broadcasts along trees, unicasts.
//!
//! - **Broadcast.** A delta from source `S` goes to our children in `S`'s tree
//!   ([`Routes::broadcast_next_hops`]), always, so every peer gets it exactly once on a
//!   stable topology. Fallbacks cover the moments when views differ: if `S` is not in
//!   our view of the graph (it just joined), a new delta is *re-rooted*: relayed along
//!   our own tree as if we were its source, so it still costs O(N), not a flood; a
//!   router not yet in the graph hands its own deltas to one neighbour to re-root; and
//!   new deltas also go to neighbours whose link to us is not in the graph yet, since no
//!   tree includes them. Every peer relays a given `(source, id)` once, so differing
//!   views cannot make a broadcast loop (a hop limit backs that up).
//! - **Batching.** Changes of our own links are collected for `topology_batch` and
//!   announced in one delta (a joining router links to many peers at once).
//! - **Anti-entropy.** Every gossip interval, digests go to `max(1, ⌈2·log2 N⌉)` random
//!   neighbours; see [`crate::channel`] for the digest → summary → update exchange.
//! - **Routes.** A removed link is applied to routes at once (so that the deltas of a
//!   removal are relayed over trees that no longer use it); added links wait for the
//!   debounce, so the deltas of an addition travel over the old, still valid trees.
//!
//! [`Routes::broadcast_next_hops`]: crate::routes::Routes::broadcast_next_hops

use super::{ConnId, Mesh, MeshEvent};
use crate::channel::{ChannelError, GossipChannel};
use crate::message::{ChannelDigest, Message, MAX_HOPS};
use crate::peer::PeerId;
use crate::routes::Routes;
use crate::timer::Timer;
use crate::topology::{Incarnation, TOPOLOGY_CHANNEL};
use rand::Rng;
use std::time::Instant;

/// What identifies a broadcast in flight.
#[derive(Clone, Copy, Debug)]
struct BroadcastHeader {
    source: PeerId,
    id: u64,
    hops: u8,
}

impl Mesh {
    pub(super) fn gossip_message(&mut self, now: Instant, conn: ConnId, message: Message) {
        let result = match message {
            Message::Digest(digests) => {
                self.on_digest(conn, &digests);
                Ok(())
            }
            Message::Summary {
                channel,
                reply_wanted,
                summary,
            } => self.on_summary(conn, &channel, reply_wanted, &summary),
            Message::Update { channel, update } => self.merge(now, &channel, &update).map(|_| ()),
            Message::Broadcast {
                source,
                id,
                hops,
                channel,
                update,
            } => {
                let header = BroadcastHeader { source, id, hops };
                self.on_broadcast(now, conn, header, &channel, update)
            }
            Message::Unicast {
                source,
                dest,
                hops,
                channel,
                payload,
            } => {
                self.on_unicast(source, dest, hops, &channel, payload);
                Ok(())
            }
            Message::Hello(_) | Message::Heartbeat => Ok(()),
        };
        if let Err(e) = result {
            self.malformed(now, conn, e.to_string());
        }
    }

    fn channel_ref(&self, name: &str) -> Option<&dyn GossipChannel> {
        if name == TOPOLOGY_CHANNEL {
            Some(&self.topology)
        } else {
            self.channels.get(name).map(|c| &**c)
        }
    }

    fn digests(&self) -> Vec<ChannelDigest> {
        let topology = ChannelDigest {
            channel: TOPOLOGY_CHANNEL.into(),
            digest: self.topology.digest(),
        };
        let channels = self.channels.iter().map(|(name, c)| ChannelDigest {
            channel: (*name).into(),
            digest: c.digest(),
        });
        std::iter::once(topology).chain(channels).collect()
    }

    pub(super) fn send_digests(&mut self, conn: ConnId) {
        let digests = self.digests();
        self.send(conn, &Message::Digest(digests));
    }

    fn on_digest(&mut self, conn: ConnId, digests: &[ChannelDigest]) {
        for d in digests {
            let Some(channel) = self.channel_ref(&d.channel) else {
                continue;
            };
            if channel.digest() == d.digest {
                continue;
            }
            for summary in channel.summary() {
                let channel = d.channel.clone();
                self.send(
                    conn,
                    &Message::Summary {
                        channel,
                        reply_wanted: true,
                        summary,
                    },
                );
            }
        }
    }

    fn on_summary(
        &mut self,
        conn: ConnId,
        name: &str,
        reply_wanted: bool,
        summary: &[u8],
    ) -> Result<(), ChannelError> {
        let Some(channel) = self.channel_ref(name) else {
            return Ok(());
        };
        let updates = channel.updates_for(summary)?;
        let replies = if reply_wanted {
            channel.missing_here(summary)?
        } else {
            Vec::new()
        };
        for update in updates {
            self.send(
                conn,
                &Message::Update {
                    channel: name.into(),
                    update,
                },
            );
        }
        for summary in replies {
            self.send(
                conn,
                &Message::Summary {
                    channel: name.into(),
                    reply_wanted: false,
                    summary,
                },
            );
        }
        Ok(())
    }

    /// Merges into channel `name`. `Ok(None)`: unknown channel; `Ok(Some(new))`: whether
    /// anything was new.
    fn merge(
        &mut self,
        now: Instant,
        name: &str,
        update: &[u8],
    ) -> Result<Option<bool>, ChannelError> {
        if name == TOPOLOGY_CHANNEL {
            let new = GossipChannel::merge(&mut self.topology, update)?.is_some();
            self.after_topology_change(now);
            return Ok(Some(new));
        }
        let Some((&static_name, channel)) = self.channels.iter_mut().find(|(n, _)| **n == name)
        else {
            return Ok(None);
        };
        let new = channel.merge(update)?.is_some();
        if new {
            self.event(MeshEvent::ChannelUpdated {
                channel: static_name,
            });
        }
        Ok(Some(new))
    }

    fn on_broadcast(
        &mut self,
        now: Instant,
        conn: ConnId,
        header: BroadcastHeader,
        name: &str,
        update: Vec<u8>,
    ) -> Result<(), ChannelError> {
        if header.source == self.local.id || !self.seen.insert(now, (header.source, header.id)) {
            return Ok(());
        }
        let new = self.merge(now, name, &update)?.unwrap_or(false);
        let from = self.conns.get(&conn).map(|c| c.remote_id);
        let header = BroadcastHeader {
            hops: header.hops.saturating_add(1),
            ..header
        };
        self.relay_broadcast(now, header, name, update, from, new);
        Ok(())
    }

    /// Starts a broadcast of our own.
    pub(super) fn originate_broadcast(&mut self, now: Instant, name: &str, update: Vec<u8>) {
        let id = self.rng.gen();
        self.seen.insert(now, (self.local.id, id));
        let header = BroadcastHeader {
            source: self.local.id,
            id,
            hops: 0,
        };
        self.relay_broadcast(now, header, name, update, None, true);
    }

    /// Sends a broadcast on to our next hops (see the module doc).
    fn relay_broadcast(
        &mut self,
        now: Instant,
        header: BroadcastHeader,
        name: &str,
        update: Vec<u8>,
        from: Option<PeerId>,
        new: bool,
    ) {
        if header.hops > MAX_HOPS {
            return;
        }
        let local = self.local.id;
        let in_graph = self.routes.neighbours().next().is_some();
        let mut header = header;
        let mut targets: Vec<PeerId> = if in_graph && self.routes.has_tree(&header.source) {
            self.routes.broadcast_next_hops(&header.source).to_vec()
        } else if !new {
            Vec::new()
        } else if in_graph {
            // The source is not in our view of the graph: re-root the broadcast at us,
            // so that it still crosses the graph once instead of flooding it.
            header.source = local;
            self.seen.insert(now, (local, header.id));
            self.routes.broadcast_next_hops(&local).to_vec()
        } else if from.is_none() {
            // We are not in anybody's graph yet: one neighbour re-roots it for us.
            self.active.keys().next().copied().into_iter().collect()
        } else {
            Vec::new()
        };
        if new && in_graph {
            // Neighbours whose link to us is not in the graph yet are in no tree.
            let fresh = self.active.keys().filter(|p| !self.routes.is_neighbour(p));
            targets.extend(fresh);
        }
        targets.sort_unstable();
        targets.dedup();
        let BroadcastHeader { source, id, hops } = header;
        let conns: Vec<ConnId> = targets
            .iter()
            .filter(|p| Some(**p) != from && **p != source)
            .filter_map(|p| self.active.get(p).copied())
            .collect();
        let channel = name.into();
        let message = Message::Broadcast {
            source,
            id,
            hops,
            channel,
            update,
        };
        self.send_to_all(&conns, &message);
    }

    fn on_unicast(&mut self, source: PeerId, dest: PeerId, hops: u8, name: &str, payload: Vec<u8>) {
        if dest != self.local.id {
            self.forward_unicast(source, dest, hops.saturating_add(1), name, payload);
            return;
        }
        let Some(channel) = self.channels.get_mut(name) else {
            return;
        };
        // The payload comes from a distant peer, not from the neighbour that relayed it:
        // count the failure, keep the link.
        if channel.handle_unicast(source, &payload).is_err() {
            self.stats.malformed += 1;
        }
    }

    fn forward_unicast(
        &mut self,
        source: PeerId,
        dest: PeerId,
        hops: u8,
        name: &str,
        payload: Vec<u8>,
    ) -> bool {
        let Some(&conn) = self
            .routes
            .unicast(&dest)
            .and_then(|hop| self.active.get(&hop))
        else {
            return false;
        };
        if hops > MAX_HOPS {
            return false;
        }
        self.send(
            conn,
            &Message::Unicast {
                source,
                dest,
                hops,
                channel: name.into(),
                payload,
            },
        );
        true
    }

    /// Broadcasts a delta of channel `name` that was applied locally (for instance the
    /// result of [`crate::channel::CrdtChannel::apply_local`]) to every peer.
    pub fn broadcast(&mut self, now: Instant, name: &str, update: Vec<u8>) {
        self.originate_broadcast(now, name, update);
    }

    /// Sends `payload` to channel `name` on peer `dest`; `false` if there is no route.
    pub fn send_unicast(&mut self, dest: PeerId, name: &str, payload: Vec<u8>) -> bool {
        self.forward_unicast(self.local.id, dest, 0, name, payload)
    }

    /// One anti-entropy round: digests to a random subset of neighbours.
    pub(super) fn gossip_round(&mut self) {
        let conns: Vec<ConnId> = self.active.values().copied().collect();
        if conns.is_empty() {
            return;
        }
        let n = self.topology.len().max(2) as f64;
        let wanted = ((2.0 * n.log2()).ceil() as usize).max(1).min(conns.len());
        let chosen = rand::seq::index::sample(&mut self.rng, conns.len(), wanted);
        let chosen: Vec<ConnId> = chosen.iter().map(|i| conns[i]).collect();
        let digests = self.digests();
        self.send_to_all(&chosen, &Message::Digest(digests));
    }

    /// Reacts to whatever merges, local changes or GC did to the topology.
    pub(super) fn after_topology_change(&mut self, now: Instant) {
        let change = self.topology.take_change();
        if let Some(rival) = change.conflict {
            self.schedule_overtake(now, rival);
        }
        if !change.changed {
            return;
        }
        self.timers
            .set_earliest(Timer::Notify, now + self.config.routes_debounce);
        self.timers
            .set_earliest(Timer::Gc, now + self.config.gc_grace);
        if change.link_removed {
            self.recompute_routes();
        } else if change.link_added {
            self.timers
                .set_earliest(Timer::Routes, now + self.config.routes_debounce);
        }
    }

    pub(super) fn recompute_routes(&mut self) {
        self.routes = Routes::new(self.local.id, &self.topology);
        self.timers.stop(Timer::Routes);
        self.event(MeshEvent::RoutesChanged);
    }

    pub(super) fn collect_garbage(&mut self, now: Instant) {
        for peer in self.topology.gc() {
            self.event(MeshEvent::PeerRemoved(peer));
        }
        self.after_topology_change(now);
    }

    /// Another incarnation of our id orders above ours: move past it, at most once per
    /// heartbeat interval (two live routers sharing an identity would otherwise outbid
    /// each other as fast as the network allows).
    fn schedule_overtake(&mut self, now: Instant, rival: Incarnation) {
        let rival = self.pending_rival.take().map_or(rival, |p| p.max(rival));
        match self.last_overtake {
            Some(last) if now < last + self.config.heartbeat_interval => {
                self.pending_rival = Some(rival);
                self.timers
                    .set_earliest(Timer::Incarnation, last + self.config.heartbeat_interval);
            }
            _ => self.overtake(now, rival),
        }
    }

    pub(super) fn overtake(&mut self, now: Instant, rival: Incarnation) {
        if rival < self.topology.local_record().incarnation() {
            return;
        }
        let delta = self.topology.overtake(rival);
        self.stats.incarnation_bumps += 1;
        self.last_overtake = Some(now);
        // The whole record goes out now; pending link changes are part of it.
        self.pending_links.clear();
        self.timers.stop(Timer::TopologyBatch);
        self.after_topology_change(now);
        self.broadcast_record(now, delta);
    }
}
