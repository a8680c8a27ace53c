//! Gossip on established links: anti-entropy, broadcasts along trees, unicasts.
//!
//! - **Broadcast.** A delta from source `S` goes to our children in `S`'s tree
//!   ([`Routes::broadcast_next_hops`]), always, so every peer gets it exactly once on a
//!   stable topology. Two fallbacks cover the moments when views differ: if `S` has no
//!   tree in our view, new deltas are flooded to all neighbours (and stop where they are
//!   not new); and new deltas also go to neighbours whose link to us is not yet in the
//!   graph, since no tree includes them. A hop limit stops loops between differing views.
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
use std::time::Instant;

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
                hops,
                channel,
                update,
            } => self.on_broadcast(now, conn, source, hops, &channel, update),
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
        source: PeerId,
        hops: u8,
        name: &str,
        update: Vec<u8>,
    ) -> Result<(), ChannelError> {
        if source == self.local.id {
            return Ok(());
        }
        let new = self.merge(now, name, &update)?.unwrap_or(false);
        let from = self.conns.get(&conn).map(|c| c.remote_id);
        self.relay_broadcast(source, hops.saturating_add(1), name, update, from, new);
        Ok(())
    }

    /// Sends a broadcast from `source` on to our next hops (see the module doc).
    pub(super) fn relay_broadcast(
        &mut self,
        source: PeerId,
        hops: u8,
        name: &str,
        update: Vec<u8>,
        from: Option<PeerId>,
        new: bool,
    ) {
        if hops > MAX_HOPS {
            return;
        }
        let mut targets: Vec<PeerId> = if self.routes.has_tree(&source) {
            self.routes.broadcast_next_hops(&source).to_vec()
        } else if new {
            self.active.keys().copied().collect()
        } else {
            Vec::new()
        };
        if new {
            let fresh = self.active.keys().filter(|p| !self.routes.is_neighbour(p));
            targets.extend(fresh);
        }
        targets.sort_unstable();
        targets.dedup();
        for peer in targets {
            if Some(peer) == from || peer == source {
                continue;
            }
            if let Some(&conn) = self.active.get(&peer) {
                let message = Message::Broadcast {
                    source,
                    hops,
                    channel: name.into(),
                    update: update.clone(),
                };
                self.send(conn, &message);
            }
        }
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
    pub fn broadcast(&mut self, name: &str, update: Vec<u8>) {
        self.relay_broadcast(self.local.id, 0, name, update, None, true);
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
        for i in chosen.iter() {
            self.send_digests(conns[i]);
        }
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
        self.topology_changed = true;
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
        self.local_change(now, delta);
    }
}
