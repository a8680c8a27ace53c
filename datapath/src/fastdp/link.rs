//! One candidate connection's fast-path state machine, sans-IO.
//!
//! It sends a probe every [`ProbeConfig::interval`] and remembers the nonces still
//! awaiting acknowledgement. The connection is `fastdp` while both directions work:
//! an acknowledgement of one of our probes *and* a probe from the peer arrived within
//! [`ProbeConfig::timeout`]. Requiring both makes the two ends agree: when either
//! direction stops, both see it within the timeout and fall back together. Falling
//! back records the reason; when probes succeed again the connection re-upgrades by
//! itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Probe timings.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Between probes.
    pub interval: Duration,
    /// A direction not confirmed for this long is down (fallback within 10 s).
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(4500),
        }
    }
}

/// Which path carries the connection's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The router's (encrypted or not) UDP sleeve.
    Sleeve,
    /// The kernel VXLAN device.
    Fastdp,
}

impl Mode {
    /// `sleeve` or `fastdp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sleeve => "sleeve",
            Mode::Fastdp => "fastdp",
        }
    }
}

/// Why an eligible connection is on sleeve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Not confirmed yet.
    Probing,
    /// Our probes are no longer acknowledged: VXLAN from us to the peer is lost.
    NoAck,
    /// The peer's probes no longer arrive: VXLAN from the peer to us is lost.
    NoPeerProbe,
    /// The control link runs over IPv6, and the VXLAN device is IPv4 only (Linux
    /// gives one VXLAN device one address family): the connection is never a
    /// candidate, and this says why. Not a fallback.
    Ipv6Underlay,
}

impl Reason {
    /// A short, stable name (logs, status, report keys).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Probing => "probing",
            Reason::NoAck => "vxlan probes unacknowledged",
            Reason::NoPeerProbe => "no vxlan probes from peer",
            Reason::Ipv6Underlay => "IPv6 underlay, the fast path is IPv4 only",
        }
    }

    /// The key under which the report counts it.
    pub fn key(self) -> &'static str {
        match self {
            Reason::Probing => "probing",
            Reason::NoAck => "probe_unacknowledged",
            Reason::NoPeerProbe => "peer_probes_missing",
            Reason::Ipv6Underlay => "ipv6_underlay",
        }
    }
}

/// Nonces remembered per connection.
const MAX_OUTSTANDING: usize = 16;

/// The state machine of one candidate connection.
#[derive(Debug, Clone)]
pub struct ProbeLink {
    config: ProbeConfig,
    outstanding: VecDeque<u64>,
    next_probe: Instant,
    last_ack: Option<Instant>,
    last_probe_rx: Option<Instant>,
    mode: Mode,
    reason: Reason,
}

impl ProbeLink {
    /// A new candidate: on sleeve, probing, first probe due now.
    pub fn new(now: Instant, config: ProbeConfig) -> ProbeLink {
        ProbeLink {
            config,
            outstanding: VecDeque::new(),
            next_probe: now,
            last_ack: None,
            last_probe_rx: None,
            mode: Mode::Sleeve,
            reason: Reason::Probing,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why it is on sleeve, when it is.
    pub fn reason(&self) -> Option<Reason> {
        (self.mode == Mode::Sleeve).then_some(self.reason)
    }

    /// A probe to send now, with `nonce`, if one is due.
    pub fn poll_probe(&mut self, now: Instant, nonce: u64) -> Option<u64> {
        if now < self.next_probe {
            return None;
        }
        self.next_probe = now + self.config.interval;
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(nonce);
        Some(nonce)
    }

    /// An acknowledgement arrived; only a nonce we sent counts.
    pub fn handle_ack(&mut self, now: Instant, nonce: u64) -> bool {
        let Some(i) = self.outstanding.iter().position(|n| *n == nonce) else {
            return false;
        };
        // Older probes are lost or overtaken: forget them with it.
        self.outstanding.drain(..=i);
        self.last_ack = Some(now);
        true
    }

    /// When [`Self::poll_probe`] or [`Self::update`] has something to do next: the next
    /// probe, or, on the fast path, the moment either direction turns stale.
    pub fn poll_timeout(&self) -> Instant {
        let stale = match (self.mode, self.last_ack, self.last_probe_rx) {
            (Mode::Fastdp, Some(ack), Some(probe)) => Some(ack.min(probe) + self.config.timeout),
            _ => None,
        };
        stale.map_or(self.next_probe, |t| t.min(self.next_probe))
    }

    /// A probe from the peer arrived.
    pub fn handle_probe(&mut self, now: Instant) {
        self.last_probe_rx = Some(now);
    }

    /// Re-evaluates the mode; returns the new mode (and reason) when it changed.
    pub fn update(&mut self, now: Instant) -> Option<(Mode, Option<Reason>)> {
        let fresh = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < self.config.timeout)
        };
        let (acked, heard) = (fresh(self.last_ack), fresh(self.last_probe_rx));
        let mode = if acked && heard {
            Mode::Fastdp
        } else {
            Mode::Sleeve
        };
        if mode == self.mode {
            return None;
        }
        self.mode = mode;
        if mode == Mode::Sleeve {
            self.reason = if acked {
                Reason::NoPeerProbe
            } else {
                Reason::NoAck
            };
        }
        Some((mode, self.reason()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProbeConfig {
        ProbeConfig::default()
    }

    #[test]
    fn confirms_only_with_both_directions_and_falls_back_with_reason() {
        let t0 = Instant::now();
        let mut l = ProbeLink::new(t0, cfg());
        assert_eq!(l.reason(), Some(Reason::Probing));
        let n = l.poll_probe(t0, 11).unwrap();
        assert_eq!(l.poll_probe(t0, 12), None, "one probe per interval");
        assert!(!l.handle_ack(t0, 999), "unknown nonces do not count");
        assert_eq!(l.update(t0), None);
        assert!(l.handle_ack(t0, n));
        assert_eq!(l.update(t0), None, "acks alone do not confirm");
        l.handle_probe(t0);
        assert_eq!(l.update(t0), Some((Mode::Fastdp, None)));
        assert!(!l.handle_ack(t0, n), "a nonce is acknowledged once");
        // Acks stop: fallback within the timeout, reason NoAck.
        let mut t = t0;
        let mut changed = None;
        while changed.is_none() {
            t += Duration::from_millis(250);
            l.poll_probe(t, 1000);
            l.handle_probe(t);
            changed = l.update(t);
        }
        assert!(t - t0 <= Duration::from_secs(10));
        assert_eq!(changed, Some((Mode::Sleeve, Some(Reason::NoAck))));
        // Acks return: back to fastdp by itself.
        let n = l.poll_probe(t + cfg().interval, 5).unwrap();
        assert!(l.handle_ack(t + cfg().interval, n));
        assert_eq!(l.update(t + cfg().interval), Some((Mode::Fastdp, None)));
    }

    #[test]
    fn missing_peer_probes_fall_back_with_their_own_reason() {
        let t0 = Instant::now();
        let mut l = ProbeLink::new(t0, cfg());
        let n = l.poll_probe(t0, 1).unwrap();
        l.handle_ack(t0, n);
        l.handle_probe(t0);
        assert_eq!(l.update(t0), Some((Mode::Fastdp, None)));
        let mut t = t0;
        for i in 0..40u64 {
            t += Duration::from_millis(250);
            if let Some(n) = l.poll_probe(t, 100 + i) {
                l.handle_ack(t, n);
            }
            if let Some(c) = l.update(t) {
                assert_eq!(c, (Mode::Sleeve, Some(Reason::NoPeerProbe)));
                assert!(t - t0 < Duration::from_secs(10));
                return;
            }
        }
        panic!("never fell back");
    }

    #[test]
    fn outstanding_nonces_are_bounded() {
        let t0 = Instant::now();
        let mut l = ProbeLink::new(t0, cfg());
        for i in 0..100u64 {
            l.poll_probe(t0 + cfg().interval * i as u32, i);
        }
        assert!(l.outstanding.len() <= MAX_OUTSTANDING);
        assert!(!l.handle_ack(t0, 0), "old nonces are forgotten");
        assert!(l.handle_ack(t0, 99));
    }
}
