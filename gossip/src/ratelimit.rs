//! Admission control for connections that have not authenticated yet, sans-IO.
//!
//! Before the responder spends a Diffie-Hellman on a new connection, the accept loop asks
//! [`PreAuthLimiter::try_admit`]. It applies, in order: at most 8 pending handshakes per
//! source, a token bucket per source (5/s, burst 10), at most 128 pending handshakes in
//! total, and a global token bucket (50/s, burst 100; WireGuard accepts 50 initiations/s).
//! An admitted connection holds an [`Admission`] until its handshake ends either way; the
//! caller hands it back with [`PreAuthLimiter::release`].
//!
//! A "source" is an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64, so
//! per-address buckets would let it multiply its budget). IPv4-mapped IPv6 addresses
//! count as IPv4.
//!
//! Memory is bounded: at most `max_tracked_sources` buckets are kept. When the table is
//! full, idle sources (nothing pending, bucket refilled, so indistinguishable from new)
//! are dropped first; failing that, the idle source with the fullest bucket. A new source
//! is only added after the global bucket has a token, so a flood of fresh addresses costs
//! at most one table insertion per global token.
//!
//! Tokens are kept as integer nanoseconds of budget, so there are no float rounding drifts,
//! and time only moves forward: an earlier `now` than before counts as no time passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Handshakes per second allowed from one source.
pub const PER_IP_RATE: u32 = 5;
/// Burst of handshakes allowed from one source.
pub const PER_IP_BURST: u32 = 10;
/// Handshakes per second allowed in total.
pub const GLOBAL_RATE: u32 = 50;
/// Burst of handshakes allowed in total.
pub const GLOBAL_BURST: u32 = 100;
/// Pending (unauthenticated) handshakes allowed in total.
pub const MAX_PENDING: usize = 128;
/// Pending handshakes allowed from one source.
pub const MAX_PENDING_PER_IP: usize = 8;
/// Sources whose buckets are remembered.
pub const MAX_TRACKED_SOURCES: usize = 4096;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Limits for [`PreAuthLimiter`]; [`Default`] gives the constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthConfig {
    /// Handshakes per second per source (at least 1 is used).
    pub per_ip_rate: u32,
    /// Burst per source.
    pub per_ip_burst: u32,
    /// Handshakes per second in total (at least 1 is used).
    pub global_rate: u32,
    /// Burst in total.
    pub global_burst: u32,
    /// Pending handshakes in total.
    pub max_pending: usize,
    /// Pending handshakes per source.
    pub max_pending_per_ip: usize,
    /// Sources remembered at most.
    pub max_tracked_sources: usize,
}

impl Default for PreAuthConfig {
    fn default() -> Self {
        PreAuthConfig {
            per_ip_rate: PER_IP_RATE,
            per_ip_burst: PER_IP_BURST,
            global_rate: GLOBAL_RATE,
            global_burst: GLOBAL_BURST,
            max_pending: MAX_PENDING,
            max_pending_per_ip: MAX_PENDING_PER_IP,
            max_tracked_sources: MAX_TRACKED_SOURCES,
        }
    }
}

/// Why a connection was not admitted. The caller closes it without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The source exceeded its handshake rate.
    #[error("refused a connection: too many handshakes from this address per second")]
    PerIpRate,
    /// All sources together exceeded the handshake rate.
    #[error("refused a connection: too many handshakes per second in total")]
    GlobalRate,
    /// Too many handshakes are pending in total.
    #[error("refused a connection: too many unauthenticated connections are pending")]
    TooManyPending,
    /// Too many handshakes from this source are pending.
    #[error("refused a connection: too many unauthenticated connections from this address")]
    TooManyPendingFromIp,
}

/// Proof that a connection was admitted; give it back with [`PreAuthLimiter::release`]
/// when its handshake succeeds, fails or times out.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "return the admission with PreAuthLimiter::release when the handshake ends"]
pub struct Admission {
    ip: IpAddr,
    source: Source,
}

impl Admission {
    /// The address that was admitted.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// What the buckets are keyed by: an IPv4 address or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// A token bucket holding its budget in nanoseconds: one token is `interval` of budget.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    interval: u64,
    capacity: u64,
    budget: u64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        let interval = NANOS_PER_SEC / u64::from(rate.max(1));
        let capacity = interval.saturating_mul(u64::from(burst.max(1)));
        Bucket {
            interval,
            capacity,
            budget: capacity,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_nanos();
            let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
            self.budget = self.budget.saturating_add(elapsed).min(self.capacity);
            if now > last {
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
    }

    fn has_token(&self) -> bool {
        self.budget >= self.interval
    }

    fn take(&mut self) {
        self.budget = self.budget.saturating_sub(self.interval);
    }

    fn is_full(&self) -> bool {
        self.budget >= self.capacity
    }
}

#[derive(Debug)]
struct SourceState {
    bucket: Bucket,
    pending: usize,
}

/// Rate limits and pending caps for unauthenticated connections.
#[derive(Debug)]
pub struct PreAuthLimiter {
    cfg: PreAuthConfig,
    global: Bucket,
    pending: usize,
    sources: HashMap<Source, SourceState>,
}

impl PreAuthLimiter {
    /// A limiter with full buckets and nothing pending.
    pub fn new(cfg: PreAuthConfig) -> PreAuthLimiter {
        PreAuthLimiter {
            cfg,
            global: Bucket::new(cfg.global_rate, cfg.global_burst),
            pending: 0,
            sources: HashMap::new(),
        }
    }

    /// Decides whether a new connection from `ip` may start a handshake now.
    pub fn try_admit(&mut self, now: Instant, ip: IpAddr) -> Result<Admission, Refusal> {
        let source = Source::from(ip);
        self.global.refill(now);
        if let Some(state) = self.sources.get_mut(&source) {
            if state.pending >= self.cfg.max_pending_per_ip {
                return Err(Refusal::TooManyPendingFromIp);
            }
            state.bucket.refill(now);
            if !state.bucket.has_token() {
                return Err(Refusal::PerIpRate);
            }
        }
        if self.pending >= self.cfg.max_pending {
            return Err(Refusal::TooManyPending);
        }
        if !self.global.has_token() {
            return Err(Refusal::GlobalRate);
        }
        if !self.sources.contains_key(&source) {
            if self.cfg.max_pending_per_ip == 0 {
                return Err(Refusal::TooManyPendingFromIp);
            }
            self.make_room(now)?;
            let mut bucket = Bucket::new(self.cfg.per_ip_rate, self.cfg.per_ip_burst);
            bucket.refill(now);
            self.sources
                .insert(source, SourceState { bucket, pending: 0 });
        }
        let state = self
            .sources
            .get_mut(&source)
            .ok_or(Refusal::TooManyPending)?;
        state.bucket.take();
        state.pending += 1;
        self.global.take();
        self.pending += 1;
        Ok(Admission { ip, source })
    }

    /// Ends an admitted connection's pending handshake.
    pub fn release(&mut self, admission: Admission) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(state) = self.sources.get_mut(&admission.source) {
            state.pending = state.pending.saturating_sub(1);
        }
    }

    /// Handshakes admitted and not yet released.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Sources whose buckets are currently remembered.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Frees a table slot for a new source, or refuses when every slot has a handshake
    /// pending (possible only if `max_pending >= max_tracked_sources`).
    fn make_room(&mut self, now: Instant) -> Result<(), Refusal> {
        if self.sources.len() < self.cfg.max_tracked_sources.max(1) {
            return Ok(());
        }
        // Idle sources with full buckets behave exactly like unknown ones: drop them all.
        self.sources.retain(|_, state| {
            state.bucket.refill(now);
            state.pending > 0 || !state.bucket.is_full()
        });
        if self.sources.len() < self.cfg.max_tracked_sources.max(1) {
            return Ok(());
        }
        let victim = self
            .sources
            .iter()
            .filter(|(_, state)| state.pending == 0)
            .max_by_key(|(_, state)| state.bucket.budget)
            .map(|(source, _)| *source)
            .ok_or(Refusal::TooManyPending)?;
        self.sources.remove(&victim);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    /// Admits and releases at once: a handshake that ended immediately.
    fn cycle(limiter: &mut PreAuthLimiter, now: Instant, ip: IpAddr) -> Result<(), Refusal> {
        let admission = limiter.try_admit(now, ip)?;
        limiter.release(admission);
        Ok(())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn per_ip_burst_then_rate() {
        let t0 = Instant::now();
        let mut limiter = PreAuthLimiter::new(PreAuthConfig::default());
        for _ in 0..PER_IP_BURST {
            let admission = limiter.try_admit(t0, v4(1)).expect("burst");
            limiter.release(admission);
        }
        assert_eq!(limiter.try_admit(t0, v4(1)), Err(Refusal::PerIpRate));
        // Another source is unaffected.
        cycle(&mut limiter, t0, v4(2)).expect("other source");
        // 5/s: one token every 200 ms.
        assert_eq!(
            limiter.try_admit(t0 + ms(199), v4(1)),
            Err(Refusal::PerIpRate)
        );
        cycle(&mut limiter, t0 + ms(200), v4(1)).expect("refilled");
        assert_eq!(
            limiter.try_admit(t0 + ms(200), v4(1)),
            Err(Refusal::PerIpRate)
        );
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..PER_IP_BURST {
            cycle(&mut limiter, later, v4(1)).expect("burst again");
        }
        assert_eq!(limiter.try_admit(later, v4(1)), Err(Refusal::PerIpRate));
    }

    #[test]
    fn global_rate_caps_many_sources() {
        let t0 = Instant::now();
        let mut limiter = PreAuthLimiter::new(PreAuthConfig::default());
        for i in 0..GLOBAL_BURST {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            cycle(&mut limiter, t0, ip).expect("global burst");
        }
        assert_eq!(limiter.try_admit(t0, v4(250)), Err(Refusal::GlobalRate));
        // 50/s: one token every 20 ms.
        cycle(&mut limiter, t0 + ms(20), v4(250)).expect("refilled");
        assert_eq!(
            limiter.try_admit(t0 + ms(20), v4(251)),
            Err(Refusal::GlobalRate)
        );
    }

    #[test]
    fn pending_caps_and_release() {
        let t0 = Instant::now();
        let cfg = PreAuthConfig {
            per_ip_rate: 1000,
            per_ip_burst: 1000,
            global_rate: 1000,
            global_burst: 1000,
            ..PreAuthConfig::default()
        };
        let mut limiter = PreAuthLimiter::new(cfg);
        let mut held: Vec<Admission> = (0..MAX_PENDING_PER_IP)
            .map(|_| limiter.try_admit(t0, v4(1)).expect("per-ip pending"))
            .collect();
        assert_eq!(
            limiter.try_admit(t0, v4(1)),
            Err(Refusal::TooManyPendingFromIp)
        );
        limiter.release(held.pop().expect("one"));
        held.push(limiter.try_admit(t0, v4(1)).expect("slot freed"));
        for i in 0..(MAX_PENDING - MAX_PENDING_PER_IP) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
            held.push(limiter.try_admit(t0, ip).expect("global pending"));
        }
        assert_eq!(limiter.pending(), MAX_PENDING);
        assert_eq!(limiter.try_admit(t0, v4(9)), Err(Refusal::TooManyPending));
        let first = held.remove(0);
        assert_eq!(first.ip(), v4(1));
        limiter.release(first);
        assert_eq!(limiter.pending(), MAX_PENDING - 1);
        held.push(limiter.try_admit(t0, v4(9)).expect("freed"));
        for admission in held {
            limiter.release(admission);
        }
        assert_eq!(limiter.pending(), 0);
    }

    #[test]
    fn source_table_is_bounded() {
        let t0 = Instant::now();
        let cfg = PreAuthConfig {
            global_rate: 1_000_000,
            global_burst: 1_000_000,
            max_tracked_sources: 4,
            ..PreAuthConfig::default()
        };
        let mut limiter = PreAuthLimiter::new(cfg);
        // Source 1 has handshakes pending, so it must survive every eviction.
        let held: Vec<Admission> = (0..MAX_PENDING_PER_IP)
            .map(|_| limiter.try_admit(t0, v4(1)).expect("pending"))
            .collect();
        for i in 2..=200u8 {
            cycle(&mut limiter, t0, v4(i)).expect("new source");
            assert!(limiter.tracked_sources() <= 4);
        }
        assert_eq!(
            limiter.try_admit(t0, v4(1)),
            Err(Refusal::TooManyPendingFromIp)
        );
        // Once buckets refill, idle sources are swept in one go.
        let later = t0 + Duration::from_secs(10);
        for admission in held {
            limiter.release(admission);
        }
        cycle(&mut limiter, later, v4(201)).expect("after sweep");
        assert_eq!(limiter.tracked_sources(), 1);
    }

    #[test]
    fn ipv6_counts_per_prefix_and_mapped_v4_as_v4() {
        let t0 = Instant::now();
        let mut limiter = PreAuthLimiter::new(PreAuthConfig::default());
        for host in 0..u16::try_from(PER_IP_BURST).expect("small") {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host));
            cycle(&mut limiter, t0, ip).expect("same /64");
        }
        let same_prefix = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 9));
        assert_eq!(limiter.try_admit(t0, same_prefix), Err(Refusal::PerIpRate));
        let other_prefix = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        cycle(&mut limiter, t0, other_prefix).expect("other /64");
        for _ in 0..PER_IP_BURST {
            cycle(&mut limiter, t0, v4(7)).expect("v4");
        }
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 18, 0, 7).to_ipv6_mapped());
        assert_eq!(limiter.try_admit(t0, mapped), Err(Refusal::PerIpRate));
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut limiter = PreAuthLimiter::new(PreAuthConfig::default());
        cycle(&mut limiter, t0, v4(1)).expect("first");
        for back in 1..20 {
            let _ = cycle(&mut limiter, t0 - ms(back * 100), v4(1));
        }
        assert_eq!(limiter.try_admit(t0, v4(1)), Err(Refusal::PerIpRate));
        let msg = Refusal::TooManyPendingFromIp.to_string();
        assert!(msg.contains("from this address"), "{msg}");
    }
}
