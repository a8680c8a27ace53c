//! Gossip on established links: dispatch, anti-entropy, and what topology changes do.
//!
//! - **Anti-entropy.** Every gossip interval, digests go to `max(1, ⌈2·log2 N⌉)` random
//!   neighbours; see [`crate::channel`] for the digest → summary → update exchange. A
//!   new link starts with the same exchange, begun by the dialler.
//! - **Routes.** A removed link is applied to routes at once (so that the deltas of a
//!   removal are relayed over trees that no longer use it); added links wait for the
//!   debounce, so the deltas of an addition travel over the old, still valid trees.
//! - **GC.** A peer found unreachable at two checks a grace period apart is dropped.
//! - **Incarnations.** When gossip shows another incarnation of our id that orders
//!   higher, we move our record past it (rate-limited).

use super::broadcast::BroadcastHeader;
use super::{ConnId, Mesh, MeshEvent};
use crate::channel::{ChannelError, Channels, GossipChannel};
use crate::message::{ChannelDigest, Message};
use crate::peer::PeerId;
use crate::routes::Routes;
use crate::timer::Timer;
use crate::topology::{Incarnation, TOPOLOGY_CHANNEL};
use std::time::Instant;

/// How soon the anti-entropy round runs after a state exchange brought news.
pub(super) const EARLY_ROUND: std::time::Duration = std::time::Duration::from_millis(500);
/// The least time between two moves of our incarnation past a rival's.
const OVERTAKE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);

impl Mesh {
    pub(super) fn gossip_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: Message,
        channels: &mut dyn Channels,
    ) {
        let result = match message {
            Message::Digest(digests) => {
                self.on_digest(conn, &digests, channels);
                Ok(())
            }
            Message::Summary {
                channel,
                reply_wanted,
                summary,
            } => self.on_summary(conn, &channel, reply_wanted, &summary, channels),
            Message::Update { channel, update } => {
                self.merge(now, conn, &channel, &update, channels)
                    .map(|news| {
                        // A state exchange (a new link) taught us something: others may lack
                        // it too, and an Update is never relayed. Run the next anti-entropy
                        // round soon instead of up to a gossip interval later, so the news
                        // spreads epidemically in about a second per round.
                        if news == Some(true) {
                            self.timers.set_earliest(Timer::Gossip, now + EARLY_ROUND);
                        }
                    })
            }
            Message::Broadcast {
                source,
                id,
                hops,
                channel,
                update,
            } => {
                let header = BroadcastHeader { source, id, hops };
                self.on_broadcast(now, conn, header, &channel, update, channels)
            }
            Message::Unicast(mut unicast) => {
                if unicast.dest == self.local.id {
                    self.deliver_unicast(now, conn, &unicast, channels);
                } else {
                    unicast.hops = unicast.hops.saturating_add(1);
                    self.forward_unicast(unicast);
                }
                Ok(())
            }
            Message::Hello(_) | Message::Heartbeat | Message::HeartbeatAnswer => Ok(()),
        };
        if let Err(e) = result {
            self.malformed(now, conn, e.to_string());
        }
    }

    /// Channel `name`: the topology, or one of the application's.
    fn channel_ref<'a>(
        &'a self,
        name: &str,
        channels: &'a dyn Channels,
    ) -> Option<&'a dyn GossipChannel> {
        if name == TOPOLOGY_CHANNEL {
            Some(&self.topology)
        } else {
            channels.get(name)
        }
    }

    fn digests(&self, channels: &dyn Channels) -> Vec<ChannelDigest> {
        let topology = ChannelDigest {
            channel: TOPOLOGY_CHANNEL.into(),
            digest: self.topology.digest(),
        };
        let apps = channels.names().iter().filter_map(|name| {
            channels.get(name).map(|c| ChannelDigest {
                channel: (*name).into(),
                digest: c.digest(),
            })
        });
        std::iter::once(topology).chain(apps).collect()
    }

    pub(super) fn send_digests(&mut self, conn: ConnId, channels: &dyn Channels) {
        let digests = self.digests(channels);
        self.send(conn, &Message::Digest(digests));
    }

    fn on_digest(&mut self, conn: ConnId, digests: &[ChannelDigest], channels: &dyn Channels) {
        for d in digests {
            let Some(channel) = self.channel_ref(&d.channel, channels) else {
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
        channels: &dyn Channels,
    ) -> Result<(), ChannelError> {
        let Some(channel) = self.channel_ref(name, channels) else {
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
    pub(super) fn merge(
        &mut self,
        now: Instant,
        conn: ConnId,
        name: &str,
        update: &[u8],
        channels: &mut dyn Channels,
    ) -> Result<Option<bool>, ChannelError> {
        if name == TOPOLOGY_CHANNEL {
            // A refused update may have been merged in part: react to that part too.
            let merged = GossipChannel::merge(&mut self.topology, now, update);
            self.after_topology_change(now);
            for peer in self.topology.take_gaps() {
                self.pull_record(conn, peer);
            }
            return merged.map(|news| Some(news.is_some()));
        }
        let Some(&static_name) = channels.names().iter().find(|n| **n == name) else {
            return Ok(None);
        };
        let Some(channel) = channels.get_mut(name) else {
            return Ok(None);
        };
        let new = channel.merge(now, update)?.is_some();
        if new {
            self.event(MeshEvent::ChannelUpdated {
                channel: static_name,
            });
        }
        Ok(Some(new))
    }

    /// Asks `conn` for `peer`'s record: a one-peer summary of what we hold of it, which
    /// the neighbour answers with the entries we lack (see [`crate::topology`]).
    fn pull_record(&mut self, conn: ConnId, peer: PeerId) {
        let mut next = peer.0;
        let until = next
            .iter_mut()
            .rev()
            .find_map(|b| {
                let (v, carry) = b.overflowing_add(1);
                *b = v;
                (!carry).then_some(())
            })
            .map(|()| PeerId(next));
        for chunk in self.topology.summary_range(Some(peer), until) {
            let summary = crate::codec::encode(&chunk);
            self.send(
                conn,
                &Message::Summary {
                    channel: TOPOLOGY_CHANNEL.into(),
                    reply_wanted: false,
                    summary,
                },
            );
        }
    }

    /// One anti-entropy round: digests to a random subset of neighbours.
    pub(super) fn gossip_round(&mut self, channels: &dyn Channels) {
        let conns: Vec<ConnId> = self.active.values().copied().collect();
        if conns.is_empty() {
            return;
        }
        let n = self.topology.len().max(2) as f64;
        let wanted = ((2.0 * n.log2()).ceil() as usize).max(1).min(conns.len());
        let chosen = rand::seq::index::sample(&mut self.rng, conns.len(), wanted);
        let chosen: Vec<ConnId> = chosen.iter().map(|i| conns[i]).collect();
        let digests = self.digests(channels);
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

    /// Drops peers that were unreachable at the previous check too (a grace period
    /// ago), so that one that is only missing a link entry still in flight survives.
    pub(super) fn collect_garbage(&mut self, now: Instant) {
        let unreachable = self.topology.unreachable();
        let (gone, suspects): (Vec<PeerId>, Vec<PeerId>) = unreachable
            .into_iter()
            .partition(|p| self.gc_suspects.contains(p));
        self.topology.remove_peers(&gone);
        for peer in gone {
            self.event(MeshEvent::PeerRemoved(peer));
        }
        if !suspects.is_empty() {
            self.timers
                .set_earliest(Timer::Gc, now + self.config.gc_grace);
        }
        self.gc_suspects = suspects.into_iter().collect();
        self.after_topology_change(now);
    }

    /// Another incarnation of our id orders above ours: move past it, at most once per
    /// [`OVERTAKE_INTERVAL`] (two live routers sharing an identity would otherwise
    /// outbid each other as fast as the network allows).
    fn schedule_overtake(&mut self, now: Instant, rival: Incarnation) {
        let rival = self.pending_rival.take().map_or(rival, |p| p.max(rival));
        match self.last_overtake {
            Some(last) if now < last + OVERTAKE_INTERVAL => {
                self.pending_rival = Some(rival);
                self.timers
                    .set_earliest(Timer::Incarnation, last + OVERTAKE_INTERVAL);
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
