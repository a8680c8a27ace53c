//! Jittered exponential backoff for reconnection attempts.
//!
//! The n-th consecutive failure schedules the next attempt after a random delay in
//! `[i/2, 3i/2)`, where `i = initial * 2^(n-1)` capped at `max` (mesh
//! `connection_maker.go` uses the same jitter with a factor of 1.5). The jitter keeps
//! many routers that lost the same peer from redialling in lockstep. Time and randomness
//! are passed in, so the schedule is reproducible from a seed.

use rand::Rng;
use std::time::{Duration, Instant};

/// Delay before the first retry, before jitter.
pub const INITIAL_RETRY: Duration = Duration::from_secs(1);
/// Largest delay between retries, before jitter.
pub const MAX_RETRY: Duration = Duration::from_secs(120);

/// Backoff state for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    interval: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL_RETRY, MAX_RETRY)
    }
}

impl Backoff {
    /// Backoff starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            interval: initial,
        }
    }

    /// Records a failure at `now` and returns when to try again.
    pub fn on_failure(&mut self, now: Instant, rng: &mut impl Rng) -> Instant {
        let i = self.interval;
        let half = i / 2;
        let jitter = Duration::from_nanos(rng.gen_range(0..=duration_nanos(i)));
        self.interval = (i * 2).min(self.max);
        now + half + jitter
    }

    /// Starts again from the initial delay (after a connection that lasted).
    pub fn reset(&mut self) {
        self.interval = self.initial;
    }

    /// The un-jittered delay the next failure will use.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut b = Backoff::default();
        let mut expected = INITIAL_RETRY;
        for _ in 0..12 {
            let at = b.on_failure(now, &mut rng) - now;
            assert!(
                at >= expected / 2 && at <= expected * 3 / 2,
                "{at:?} vs {expected:?}"
            );
            expected = (expected * 2).min(MAX_RETRY);
            assert_eq!(b.interval(), expected);
        }
        assert_eq!(b.interval(), MAX_RETRY);
        b.reset();
        assert_eq!(b.interval(), INITIAL_RETRY);
    }

    #[test]
    fn same_seed_same_schedule() {
        let now = Instant::now();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::default();
            (0..5)
                .map(|_| b.on_failure(now, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
