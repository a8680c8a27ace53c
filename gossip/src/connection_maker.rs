//! Whom to dial, and when: the connection maker.
//!
//! Targets are addresses, *explicit* (from the command line or `weft connect`), *named*
//! (the current answer of a name lookup such as `--peers-from-dns`, replaced as a whole
//! by [`ConnectionMaker::set_named`]) or *discovered* (listen addresses of peers the
//! topology knows but we have no link to, from
//! [`crate::mesh::Mesh::discovery_candidates`]); one address may be several at once. The driver asks [`poll_dial`] for
//! the next address to dial and reports the outcome; a failure schedules a retry with
//! jittered exponential [`Backoff`], and a permanent failure (dialling ourselves, or a
//! twin with our identity) marks the target failed for good.
//!
//! A target is never dialled while its peer is already linked, nor while another address
//! of the same peer is being dialled. Discovered targets respect `conn_limit` (0 means
//! unlimited); explicit and named targets are always dialled. It is sans-IO: time and the seed
//! are passed in, and nothing here opens a socket.
//!
//! [`poll_dial`]: ConnectionMaker::poll_dial

use crate::backoff::{Backoff, INITIAL_RETRY, MAX_RETRY};
use crate::peer::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A link that lasted this long resets its target's backoff when it ends.
pub const STABLE_LINK: Duration = Duration::from_secs(60);

/// Connection maker settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MakerConfig {
    /// Whether to dial discovered addresses (`--no-discovery` turns it off).
    pub discovery: bool,
    /// Most linked peers before discovered targets wait (0 = unlimited).
    pub conn_limit: usize,
    /// First retry delay, before jitter.
    pub initial_retry: Duration,
    /// Largest retry delay, before jitter.
    pub max_retry: Duration,
}

impl Default for MakerConfig {
    fn default() -> Self {
        MakerConfig {
            discovery: true,
            conn_limit: 200,
            initial_retry: INITIAL_RETRY,
            max_retry: MAX_RETRY,
        }
    }
}

/// Whether a failed target may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Transient: retry after backoff.
    Later,
    /// Permanent (we dialled ourselves, or a twin): never dial it again.
    Never,
}

/// Where a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// A dial is in progress.
    Connecting,
    /// Its peer is linked.
    Established,
    /// Waiting for the next attempt.
    Retrying,
    /// Failed permanently.
    Failed,
}

/// A target, for `weft status targets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    /// The address.
    pub addr: SocketAddr,
    /// Where it is.
    pub state: TargetState,
    /// Given by the user.
    pub explicit: bool,
    /// In the current answer of a name lookup.
    pub named: bool,
    /// The peer found there, once known.
    pub peer: Option<PeerId>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it will be tried next; `None` while connecting or established, or never.
    pub next_retry: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Target {
    explicit: bool,
    named: bool,
    /// The peer that discovery said listens here.
    discovered: Option<PeerId>,
    /// The peer last found here.
    peer: Option<PeerId>,
    state: TargetState,
    backoff: Backoff,
    next_try: Option<Instant>,
    last_error: Option<String>,
    connected_at: Option<Instant>,
}

#[derive(Default)]
struct InProgress {
    dials: usize,
    peers: BTreeSet<PeerId>,
}

/// The connection maker.
pub struct ConnectionMaker {
    config: MakerConfig,
    rng: StdRng,
    targets: BTreeMap<SocketAddr, Target>,
    connected: BTreeSet<PeerId>,
    /// When the next target is due ([`Self::poll_timeout`]), recomputed by every change
    /// of the targets or the linked peers: the node asks after every message it handles,
    /// and a walk over 1,000 discovered targets each time was a fifth of a 1,000-peer
    /// simulation's time.
    next_due: Option<Instant>,
}

impl ConnectionMaker {
    /// A maker with no targets. `rng_seed` drives the backoff jitter.
    pub fn new(config: MakerConfig, rng_seed: u64) -> ConnectionMaker {
        ConnectionMaker {
            config,
            rng: StdRng::seed_from_u64(rng_seed),
            targets: BTreeMap::new(),
            connected: BTreeSet::new(),
            next_due: None,
        }
    }

    fn new_target(&self, now: Instant, explicit: bool, discovered: Option<PeerId>) -> Target {
        Target {
            explicit,
            named: false,
            discovered,
            peer: discovered,
            state: TargetState::Retrying,
            backoff: Backoff::new(self.config.initial_retry, self.config.max_retry),
            next_try: Some(now),
            last_error: None,
            connected_at: None,
        }
    }

    /// Adds explicit targets, dialled as soon as possible. With `replace`, explicit
    /// targets not in `addrs` are dropped first.
    pub fn add_targets(&mut self, now: Instant, addrs: &[SocketAddr], replace: bool) {
        if replace {
            self.targets.retain(|addr, t| {
                if !t.explicit || addrs.contains(addr) {
                    return true;
                }
                t.explicit = false;
                t.named || t.discovered.is_some()
            });
        }
        for addr in addrs {
            let target = self.new_target(now, true, None);
            self.targets.entry(*addr).or_insert(target).explicit = true;
        }
        self.refresh_due();
    }

    /// Replaces the named targets with `addrs`: new ones are dialled as soon as possible,
    /// and an address no longer named is no longer dialled (unless it is also explicit or
    /// discovered; a link already up stays up).
    pub fn set_named(&mut self, now: Instant, addrs: &[SocketAddr]) {
        self.targets.retain(|addr, t| {
            if !t.named || addrs.contains(addr) {
                return true;
            }
            t.named = false;
            t.explicit || t.discovered.is_some()
        });
        for addr in addrs {
            let target = self.new_target(now, false, None);
            self.targets.entry(*addr).or_insert(target).named = true;
        }
        self.refresh_due();
    }

    /// Forgets targets (explicit, named or discovered); returns how many were known.
    pub fn forget(&mut self, addrs: &[SocketAddr]) -> usize {
        let known = addrs
            .iter()
            .filter(|a| self.targets.remove(a).is_some())
            .count();
        self.refresh_due();
        known
    }

    /// Replaces the discovered targets with `candidates` (ignored without discovery).
    /// Targets being dialled, linked or failed for good are kept.
    pub fn set_discovered(&mut self, now: Instant, candidates: &[(PeerId, SocketAddr)]) {
        if !self.config.discovery {
            return;
        }
        let wanted: BTreeMap<SocketAddr, PeerId> =
            candidates.iter().map(|(p, a)| (*a, *p)).collect();
        self.targets.retain(|addr, t| {
            t.explicit || t.named || wanted.contains_key(addr) || t.state != TargetState::Retrying
        });
        for (addr, peer) in wanted {
            let target = self.new_target(now, false, Some(peer));
            let t = self.targets.entry(addr).or_insert(target);
            t.discovered = Some(peer);
            t.peer = t.peer.or(Some(peer));
        }
        self.refresh_due();
    }

    /// The link dialled to `addr` authenticated `peer` (call it at link up, before the
    /// Hello exchange: a link that then loses a duplicate race must still tell us who is
    /// there, or we would redial a peer we are already linked to).
    pub fn handle_connected(&mut self, now: Instant, addr: SocketAddr, peer: PeerId) {
        if let Some(t) = self.targets.get_mut(&addr) {
            t.state = TargetState::Established;
            t.peer = Some(peer);
            t.next_try = None;
            t.last_error = None;
            t.connected_at = Some(now);
        }
        self.refresh_due();
    }

    /// Dialling `addr` failed before a link authenticated (or the link was closed for
    /// a permanent reason: [`Retry::Never`]).
    pub fn handle_failed(&mut self, now: Instant, addr: SocketAddr, error: String, retry: Retry) {
        let Some(t) = self.targets.get_mut(&addr) else {
            return;
        };
        t.last_error = Some(error);
        t.connected_at = None;
        match retry {
            Retry::Never => {
                t.state = TargetState::Failed;
                t.next_try = None;
            }
            Retry::Later => {
                t.state = TargetState::Retrying;
                t.next_try = Some(t.backoff.on_failure(now, &mut self.rng));
            }
        }
        self.refresh_due();
    }

    /// A link to `addr` that authenticated `peer` ended. Whether `peer` is still linked
    /// another way is for [`Self::set_connected_peers`] to say.
    pub fn handle_disconnected(&mut self, now: Instant, addr: SocketAddr, peer: PeerId) {
        let Some(t) = self.targets.get_mut(&addr) else {
            return;
        };
        if t.state == TargetState::Failed {
            return;
        }
        if t.connected_at
            .is_some_and(|at| now.saturating_duration_since(at) >= STABLE_LINK)
        {
            t.backoff.reset();
        }
        t.state = TargetState::Retrying;
        t.peer = Some(peer);
        t.connected_at = None;
        t.last_error = Some("connection lost".into());
        t.next_try = Some(t.backoff.on_failure(now, &mut self.rng));
        self.refresh_due();
    }

    /// The peers we have established links to (inbound or outbound); the driver calls it
    /// after every link change.
    pub fn set_connected_peers(&mut self, peers: &[PeerId]) {
        self.connected = peers.iter().copied().collect();
        self.refresh_due();
    }

    /// What every dial decision needs: the number of dials in progress and their peers.
    fn in_progress(&self) -> InProgress {
        let mut progress = InProgress::default();
        for t in self
            .targets
            .values()
            .filter(|t| t.state == TargetState::Connecting)
        {
            progress.dials += 1;
            progress.peers.extend(t.peer);
        }
        progress
    }

    /// Whether `t` may be dialled now, time aside.
    fn may_dial(&self, t: &Target, progress: &InProgress) -> bool {
        if t.state != TargetState::Retrying || t.peer.is_some_and(|p| self.connected.contains(&p)) {
            return false;
        }
        if !t.explicit && !t.named {
            let limit = self.config.conn_limit;
            if !self.config.discovery
                || (limit != 0 && self.connected.len() + progress.dials >= limit)
            {
                return false;
            }
        }
        // One dial per peer at a time, whatever its number of addresses.
        t.peer.is_none_or(|p| !progress.peers.contains(&p))
    }

    /// The next address to dial, if one is due; it is then `Connecting` until the driver
    /// reports `handle_connected` or `handle_failed`.
    pub fn poll_dial(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.poll_timeout().is_none_or(|at| at > now) {
            return None;
        }
        let progress = self.in_progress();
        let addr = self
            .targets
            .iter()
            .filter(|(_, t)| t.next_try.is_some_and(|at| at <= now) && self.may_dial(t, &progress))
            .min_by_key(|(a, t)| (t.next_try, **a))
            .map(|(a, _)| *a)?;
        if let Some(t) = self.targets.get_mut(&addr) {
            t.state = TargetState::Connecting;
            t.next_try = None;
        }
        self.refresh_due();
        Some(addr)
    }

    /// When a target becomes due (targets held back by links or the limit don't count:
    /// they are reconsidered when [`Self::set_connected_peers`] changes things).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        debug_assert_eq!(self.next_due, self.compute_due(), "a stale next_due");
        self.next_due
    }

    fn refresh_due(&mut self) {
        self.next_due = self.compute_due();
    }

    fn compute_due(&self) -> Option<Instant> {
        if !self
            .targets
            .values()
            .any(|t| t.state == TargetState::Retrying)
        {
            return None;
        }
        let progress = self.in_progress();
        self.targets
            .values()
            .filter(|t| self.may_dial(t, &progress))
            .filter_map(|t| t.next_try)
            .min()
    }

    /// Whether `addr` is a target (of any kind).
    pub fn has_target(&self, addr: &SocketAddr) -> bool {
        self.targets.contains_key(addr)
    }

    /// Every target.
    pub fn targets(&self) -> Vec<TargetStatus> {
        self.targets
            .iter()
            .map(|(addr, t)| {
                let linked = t.peer.is_some_and(|p| self.connected.contains(&p));
                let state = if linked && t.state == TargetState::Retrying {
                    TargetState::Established
                } else {
                    t.state
                };
                TargetStatus {
                    addr: *addr,
                    state,
                    explicit: t.explicit,
                    named: t.named,
                    peer: t.peer,
                    last_error: t.last_error.clone(),
                    next_retry: if state == TargetState::Retrying {
                        t.next_try
                    } else {
                        None
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
