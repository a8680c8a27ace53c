//! A per-link budget of gossip bytes per second, sans-IO.
//!
//! Every authenticated peer may send gossip, and each message costs the receiver work
//! (decoding, merging, often relaying). [`GossipBudget`] is a token bucket of bytes:
//! [`DEFAULT_RATE`] bytes per second, up to [`DEFAULT_BURST`] saved up (enough for a
//! full topology and a full IPAM ring when a link comes up). The link's driver charges
//! every message it reads; past the budget, [`GossipBudget::charge`] says how long to
//! wait before reading more. The driver waits, so the peer's TCP window closes: a peer
//! that sends more than the budget is slowed to it, whatever it sends, and the
//! others are not. The debt of one message is at most its cost (at most 1 MiB + 1, one
//! second at the default rate).
//!
//! The budget is kept in integer nanoseconds of sending time, like the buckets of
//! [`crate::ratelimit`]; time only moves forward, and a wait is paid for by moving the
//! refill point into the future, so the time waited is not credited twice.

use std::time::{Duration, Instant};

/// Sustained gossip bytes per second a peer may send on one link.
pub const DEFAULT_RATE: u64 = 1 << 20;
/// Bytes a quiet link may send at once: four of the largest messages.
pub const DEFAULT_BURST: u64 = 4 << 20;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The budget of one link.
#[derive(Debug, Clone)]
pub struct GossipBudget {
    rate: u64,
    /// Nanoseconds of sending time saved up.
    budget: u64,
    capacity: u64,
    /// Refilled up to here; in the future while the link pays a debt.
    last: Option<Instant>,
    throttled: u64,
}

impl Default for GossipBudget {
    fn default() -> Self {
        GossipBudget::new(DEFAULT_RATE, DEFAULT_BURST)
    }
}

impl GossipBudget {
    /// A full budget of `rate` bytes per second, `burst` bytes at once.
    pub fn new(rate: u64, burst: u64) -> GossipBudget {
        let rate = rate.max(1);
        let capacity = nanos(burst, rate);
        GossipBudget {
            rate,
            budget: capacity,
            capacity,
            last: None,
            throttled: 0,
        }
    }

    /// Charges a message of `len` bytes read at `now`: `None` if the budget covers it,
    /// or how long to wait before reading the next one.
    pub fn charge(&mut self, now: Instant, len: usize) -> Option<Duration> {
        self.refill(now);
        let cost = nanos(len as u64, self.rate);
        if let Some(left) = self.budget.checked_sub(cost) {
            self.budget = left;
            return None;
        }
        let debt = cost - self.budget;
        self.budget = 0;
        let from = self.last.map_or(now, |l| l.max(now));
        let wait = Duration::from_nanos(debt);
        self.throttled = self.throttled.saturating_add(1);
        match from.checked_add(wait) {
            Some(until) => {
                self.last = Some(until);
                Some(until.saturating_duration_since(now))
            }
            // Past what an Instant holds (no real message costs that much).
            None => {
                self.last = Some(from);
                Some(wait)
            }
        }
    }

    /// Messages that had to wait.
    pub fn throttled(&self) -> u64 {
        self.throttled
    }

    fn refill(&mut self, now: Instant) {
        match self.last {
            Some(last) if now > last => {
                let elapsed =
                    u64::try_from(now.duration_since(last).as_nanos()).unwrap_or(u64::MAX);
                self.budget = self.budget.saturating_add(elapsed).min(self.capacity);
                self.last = Some(now);
            }
            Some(_) => {}
            None => self.last = Some(now),
        }
    }
}

/// The sending time of `bytes` at `rate` bytes per second, in nanoseconds (saturating).
fn nanos(bytes: u64, rate: u64) -> u64 {
    let n = (u128::from(bytes) * NANOS_PER_SEC).div_ceil(u128::from(rate));
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = GossipBudget::new(1000, 4000);
        for _ in 0..4 {
            assert_eq!(b.charge(t0, 1000), None);
        }
        // Over budget: wait for the message's cost.
        assert_eq!(b.charge(t0, 500), Some(Duration::from_millis(500)));
        // Another one at once queues behind the first debt.
        assert_eq!(b.charge(t0, 500), Some(Duration::from_secs(1)));
        assert_eq!(b.throttled(), 2);
        // After the debts are paid and one more second: 1000 bytes pass.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(b.charge(t2, 1000), None);
        assert!(b.charge(t2, 1).is_some());
    }

    /// A sender that waits as told never gets more than rate × time + burst through.
    #[test]
    fn a_flood_is_held_to_the_rate() {
        let t0 = Instant::now();
        let (rate, burst) = (10_000u64, 20_000u64);
        let mut b = GossipBudget::new(rate, burst);
        let (mut now, mut sent) = (t0, 0u64);
        while now < t0 + Duration::from_secs(10) {
            sent += 700;
            if let Some(wait) = b.charge(now, 700) {
                now += wait;
            }
        }
        let secs = (now - t0).as_secs_f64();
        assert!(
            sent as f64 <= rate as f64 * secs + burst as f64 + 700.0,
            "{sent} in {secs}"
        );
        assert!(
            sent as f64 >= rate as f64 * secs,
            "the rate is reached: {sent} in {secs}"
        );
    }

    #[test]
    fn time_going_back_and_huge_messages_do_not_panic() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = GossipBudget::new(1, 1);
        assert!(b.charge(t0, usize::MAX).is_some());
        assert!(b.charge(t0 - Duration::from_secs(5), 1).is_some());
        let mut z = GossipBudget::new(0, 0);
        assert!(z.charge(t0, 1).is_some());
    }
}
