//! The broadcasts a peer has already relayed.
//!
//! Each broadcast carries its tree's source and a random 64-bit id. A peer relays a
//! given `(source, id)` once: on a stable
//! topology the trees deliver every broadcast exactly once anyway, and while peers'
//! views differ this stops a broadcast from circling. Ids are kept for [`SEEN_TTL`]
//! (far longer than a broadcast takes to cross the mesh) and at most [`SEEN_CAP`] of them.

use crate::peer::PeerId;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long an id is remembered.
pub(crate) const SEEN_TTL: Duration = Duration::from_secs(120);
/// Most ids remembered; the oldest go first.
pub(crate) const SEEN_CAP: usize = 1 << 16;

/// Recently seen broadcasts.
#[derive(Debug, Default)]
pub(crate) struct SeenBroadcasts {
    ids: HashSet<(PeerId, u64)>,
    order: VecDeque<(Instant, (PeerId, u64))>,
}

impl SeenBroadcasts {
    /// Records `id`; `false` if it was already there.
    pub(crate) fn insert(&mut self, now: Instant, id: (PeerId, u64)) -> bool {
        while let Some(&(at, old)) = self.order.front() {
            if now.saturating_duration_since(at) < SEEN_TTL && self.order.len() < SEEN_CAP {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
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
        let (p, q) = (PeerId([1; 16]), PeerId([2; 16]));
        let mut seen = SeenBroadcasts::default();
        assert!(seen.insert(now, (p, 1)));
        assert!(!seen.insert(now, (p, 1)));
        assert!(seen.insert(now, (q, 1)), "another source");
        assert!(seen.insert(now + SEEN_TTL, (p, 2)));
        assert!(seen.insert(now + SEEN_TTL, (p, 1)), "expired");
        for id in 10..10 + SEEN_CAP as u64 {
            seen.insert(now + SEEN_TTL, (p, id));
        }
        assert!(seen.ids.len() <= SEEN_CAP);
    }
}
