//! Broadcasts along per-source trees, and unicasts along routes.
//!
//! - **Broadcast.** A delta from source `S` goes to our children in `S`'s tree
//!   ([`Routes::broadcast_next_hops`]), always, so every peer gets it exactly once on a
//!   stable topology. Fallbacks cover the moments when views differ: if `S` is not in
//!   our view of the graph (it just joined), a new delta is *re-rooted*: relayed along
//!   our own tree as if we were its source, so it still costs O(N), not a flood; a
//!   router not yet in the graph hands its own deltas to one neighbour to re-root; and
//!   new deltas also go to neighbours whose link to us is not in the graph yet, since no
//!   tree includes them. Every peer relays a given broadcast `id` once, whatever its
//!   root: a re-rooted copy keeps the id, so when several relays that lack `S` re-root
//!   one delta (all the peers a joining router links to at once), each peer still
//!   relays it once, and differing views cannot make a broadcast loop (a hop limit
//!   backs that up). An id is marked only once its delta merged without error, so a
//!   garbage copy under a known id cannot suppress the real one.
//! - **Batching.** Changes of our own links are collected for `topology_batch` and
//!   announced in one delta (a joining router links to many peers at once).
//! - **Unicast.** A payload for one peer follows the unicast next hops.
//!
//! Relayed broadcasts are remembered for [`SEEN_TTL`] (far longer than a broadcast takes
//! to cross the mesh), at most [`SEEN_CAP`] of them.
//!
//! [`Routes::broadcast_next_hops`]: crate::routes::Routes::broadcast_next_hops

use super::{ConnId, Mesh};
use crate::channel::{ChannelError, Channels};
use crate::identity::ProofError;
use crate::message::{Message, Unicast, MAX_HOPS};
use crate::peer::PeerId;
use crate::topology::TOPOLOGY_CHANNEL;
use rand::Rng;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// What identifies a broadcast in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct BroadcastHeader {
    pub(super) source: PeerId,
    pub(super) id: u64,
    pub(super) hops: u8,
}

impl Mesh {
    pub(super) fn on_broadcast(
        &mut self,
        now: Instant,
        conn: ConnId,
        header: BroadcastHeader,
        name: &str,
        update: Vec<u8>,
        channels: &mut dyn Channels,
    ) -> Result<(), ChannelError> {
        if header.source == self.local.id || self.seen.contains(now, header.id) {
            return Ok(());
        }
        let new = self
            .merge(now, conn, name, &update, channels)?
            .unwrap_or(false);
        self.seen.insert(now, header.id);
        let from = self.conns.get(&conn).map(|c| c.remote_id);
        let header = BroadcastHeader {
            hops: header.hops.saturating_add(1),
            ..header
        };
        self.relay_broadcast(header, name, update, from, new);
        Ok(())
    }

    /// Starts a broadcast of our own.
    pub(super) fn originate_broadcast(&mut self, now: Instant, name: &str, update: Vec<u8>) {
        let id = self.rng.gen();
        self.seen.insert(now, id);
        let header = BroadcastHeader {
            source: self.local.id,
            id,
            hops: 0,
        };
        self.relay_broadcast(header, name, update, None, true);
    }

    /// Sends a broadcast on to our next hops (see the module doc).
    fn relay_broadcast(
        &mut self,
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
        let source = header.source;
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
            let mut targets = self.routes.broadcast_next_hops(&local).to_vec();
            if from == Some(source) {
                // Straight from its source, which sends to each of its neighbours
                // itself: those are not ours to serve. (Without this, every peer a
                // joining router links to at once re-rooted its first delta to the
                // whole mesh.)
                if let Some(record) = self.topology.peer(&source) {
                    targets.retain(|p| record.links().all(|(l, _)| l != p));
                }
            }
            targets
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

    /// A unicast for us: its source's proof is checked before channel `name` sees it.
    pub(super) fn deliver_unicast(
        &mut self,
        now: Instant,
        conn: ConnId,
        unicast: &Unicast,
        channels: &mut dyn Channels,
    ) {
        let Some(link_peer) = self.conns.get(&conn).map(|c| c.remote_id) else {
            return;
        };
        if let Err(e) = unicast.verify(&link_peer) {
            self.stats.rejected_unicasts.count(e);
            return;
        }
        let Some(channel) = channels.get_mut(&unicast.channel) else {
            return;
        };
        // The payload comes from a distant peer, not from the neighbour that relayed it:
        // count the failure, keep the link.
        if channel
            .handle_unicast(now, unicast.source, &unicast.payload)
            .is_err()
        {
            self.stats.malformed += 1;
        }
    }

    pub(super) fn forward_unicast(&mut self, unicast: Unicast) -> bool {
        // An unsigned unicast is for its first hop only: its destination would refuse it
        // from us.
        if unicast.proof.is_none() && unicast.source != self.local.id {
            self.stats.rejected_unicasts.count(ProofError::Unsigned);
            return false;
        }
        let Some(&conn) = self
            .routes
            .unicast(&unicast.dest)
            .and_then(|hop| self.active.get(&hop))
        else {
            return false;
        };
        if unicast.hops > MAX_HOPS {
            return false;
        }
        self.send(conn, &Message::Unicast(unicast));
        true
    }

    /// Broadcasts a delta of channel `name` that was applied locally (for instance the
    /// result of [`crate::channel::CrdtChannel::apply_local`]) to every peer. The
    /// topology channel is the mesh's own: broadcasts on it are ignored here.
    pub fn broadcast(&mut self, now: Instant, name: &str, update: Vec<u8>) {
        if name != TOPOLOGY_CHANNEL {
            self.originate_broadcast(now, name, update);
        }
    }

    /// Sends `payload` to channel `name` on peer `dest`; `false` if there is no route.
    pub fn send_unicast(&mut self, dest: PeerId, name: &str, payload: Vec<u8>) -> bool {
        if self.routes.unicast(&dest).is_none() {
            return false;
        }
        let unicast = if self.routes.unicast(&dest) == Some(dest) {
            Unicast::direct(self.local.id, dest, name, payload)
        } else {
            Unicast::new(&self.local.identity, dest, name, payload)
        };
        self.forward_unicast(unicast)
    }
}

/// How long an id is remembered.
pub(super) const SEEN_TTL: Duration = Duration::from_secs(120);
/// Most ids remembered; the oldest go first.
pub(super) const SEEN_CAP: usize = 1 << 16;

/// Recently seen broadcast ids.
#[derive(Debug, Default)]
pub(super) struct SeenBroadcasts {
    ids: HashSet<u64>,
    order: VecDeque<(Instant, u64)>,
}

impl SeenBroadcasts {
    /// Forgets ids older than [`SEEN_TTL`], and the oldest past [`SEEN_CAP`].
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, old)) = self.order.front() {
            if now.saturating_duration_since(at) < SEEN_TTL && self.order.len() < SEEN_CAP {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
    }

    /// Whether `id` was seen (and not forgotten).
    pub(super) fn contains(&mut self, now: Instant, id: u64) -> bool {
        self.expire(now);
        self.ids.contains(&id)
    }

    /// Records `id`; `false` if it was already there.
    pub(super) fn insert(&mut self, now: Instant, id: u64) -> bool {
        self.expire(now);
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back((now, id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_seen_once_then_expire() {
        let now = Instant::now();
        let mut seen = SeenBroadcasts::default();
        assert!(!seen.contains(now, 1));
        assert!(seen.insert(now, 1));
        assert!(seen.contains(now, 1));
        assert!(!seen.insert(now, 1));
        assert!(seen.insert(now + SEEN_TTL, 2));
        assert!(!seen.contains(now + SEEN_TTL, 1), "expired");
        assert!(seen.insert(now + SEEN_TTL, 1), "expired");
        for id in 10..10 + SEEN_CAP as u64 {
            seen.insert(now + SEEN_TTL, id);
        }
        assert!(seen.ids.len() <= SEEN_CAP);
    }
}
