//! Timers as data.
//!
//! The mesh keeps one deadline per [`Timer`] in a [`TimerTable`]; `poll_timeout` is the
//! earliest armed deadline and `handle_timeout` fires every expired one. Per-link deadlines
//! (heartbeats, Hello deadline) live with the link itself, in [`crate::mesh`].

use std::time::{Duration, Instant};

/// How long route recalculation after an *added* link is deferred, so that the deltas of
/// one change travel along the same (old) broadcast trees everywhere (mesh `routes.go`).
pub const ROUTES_DEBOUNCE: Duration = Duration::from_millis(100);

/// Grace between noticing a change and dropping unreachable peers (mesh `peers.go`).
pub const GC_GRACE: Duration = Duration::from_secs(1);

/// How long changes of our own links are collected before one delta announces them all
/// (a joining router links to many peers at once; mesh batches for a whole second).
pub const TOPOLOGY_BATCH: Duration = Duration::from_millis(50);

/// The mesh-wide timers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Timer {
    /// Periodic anti-entropy: send digests to a random subset of neighbours.
    Gossip,
    /// Deferred route recalculation after links were added.
    Routes,
    /// Garbage collection of peers unreachable from us.
    Gc,
    /// Rate-limited re-announcement of our own record under a newer incarnation epoch.
    Incarnation,
    /// Broadcast of the batched changes of our own links.
    TopologyBatch,
    /// The coalesced `TopologyChanged` event.
    Notify,
    /// The earliest per-link deadline (a heartbeat to send, a silence to check). Messages
    /// only push link deadlines later, so it may fire early, never late.
    Links,
}

impl Timer {
    const ALL: [Timer; 7] = [
        Timer::Gossip,
        Timer::Routes,
        Timer::Gc,
        Timer::Incarnation,
        Timer::TopologyBatch,
        Timer::Notify,
        Timer::Links,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One optional deadline per [`Timer`].
#[derive(Clone, Debug, Default)]
pub struct TimerTable([Option<Instant>; 7]);

impl TimerTable {
    /// Arms `timer` to fire at `at`, replacing any earlier setting.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    /// Arms `timer` at `at` unless it is already armed to fire earlier.
    pub fn set_earliest(&mut self, timer: Timer, at: Instant) {
        let slot = &mut self.0[timer.index()];
        if slot.is_none_or(|t| at < t) {
            *slot = Some(at);
        }
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.index()]
    }

    /// Whether `timer` is armed.
    pub fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// The earliest armed deadline.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Disarms and returns the timers whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut fired = Vec::new();
        for timer in Timer::ALL {
            if self.get(timer).is_some_and(|t| t <= now) {
                self.stop(timer);
                fired.push(timer);
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_order_and_take() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next_expiry(), None);
        table.set(Timer::Gossip, t0 + Duration::from_secs(30));
        table.set_earliest(Timer::Gc, t0 + Duration::from_secs(1));
        table.set_earliest(Timer::Gc, t0 + Duration::from_secs(5));
        assert_eq!(table.get(Timer::Gc), Some(t0 + Duration::from_secs(1)));
        assert_eq!(table.next_expiry(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            table.take_expired(t0 + Duration::from_secs(2)),
            vec![Timer::Gc]
        );
        assert!(!table.is_armed(Timer::Gc));
        assert!(table.is_armed(Timer::Gossip));
    }
}
