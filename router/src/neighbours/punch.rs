//! Hole punching through two NATs, sans-IO: both roles.
//!
//! Two hosts behind NATs cannot dial each other: each NAT drops what its host did not
//! ask for, so their control link never comes up and the mesh routes their frames
//! through a peer both reach (relayed). A NAT that keeps a host's source port for every
//! destination (endpoint-independent mapping, as Linux `masquerade` does by default)
//! lets the pair talk directly once each has sent to the other: the first datagram
//! opens the sender's NAT, the other side's then passes it.
//!
//! - **Coordinator.** A router with a confirmed UDP path to both ends of a pair that has
//!   no link, and the lowest id among the peers linked to both (so one coordinator per
//!   pair, computed alike everywhere), sends each end a [`PunchRequest`] over its
//!   control link: the other's endpoint as the coordinator sees it (the source of its
//!   authentic datagrams, that is its NAT's mapping) and one random attempt id. First
//!   [`FIRST_REQUEST_AFTER`] after the pair appears (the connection maker may still link
//!   them), then again after [`RESEND_AFTER`], doubling up to [`MAX_RESEND`], while the
//!   pair stays unlinked.
//! - **Ends.** A request from a neighbour about a reachable peer we have no link to
//!   starts an attempt: the sleeve task gets the peer as a punched peer (a session
//!   salted by [`salt`] of the attempt id, the same on both ends, with its rekey offers
//!   and "heard" notices travelling as mesh unicasts through the relay), and both
//!   ends send their sealed keepalives to each other's endpoint at once. The endpoint
//!   then follows the authentic datagrams (roaming), so a NAT that picked another port
//!   is followed too. Once the path is confirmed both ways the pair's unicast frames go
//!   directly. An attempt not confirmed within [`ATTEMPT_TIMEOUT`] is abandoned (the
//!   relay never stopped working), and so is a punched path lost for [`LOST_GRACE`].
//!
//! A request cannot hurt: its endpoint is used only for sealed keepalives, a path
//! confirms only on datagrams that open under the new session's keys (which only the
//! named peer holds), and the request's sender must be a neighbour. At most
//! [`MAX_ATTEMPTS`] attempts run at once, one per peer; at most [`MAX_PAIRS`] pairs are
//! coordinated.

use datapath::sleeve_message::PunchRequest;
use gossip::peer::PeerId;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long an attempt may take to confirm.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a punched path may stay lost before it is given up.
pub const LOST_GRACE: Duration = Duration::from_secs(15);
/// The first request for a new unlinked pair goes this long after it is seen.
pub const FIRST_REQUEST_AFTER: Duration = Duration::from_secs(3);
/// The second request goes this long after the first; each later wait doubles.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between two requests for one pair.
pub const MAX_RESEND: Duration = Duration::from_secs(600);
/// Attempts that may run at once.
pub const MAX_ATTEMPTS: usize = 64;
/// Pairs coordinated at once.
pub const MAX_PAIRS: usize = 4096;

/// The label of [`salt`].
const SALT_LABEL: &[u8] = b"weft/1 punched sleeve";

/// The key-derivation salt of a punched session (what a control link's handshake hash
/// is to a neighbour's): BLAKE2s-256 of a label, the attempt id and both peers' ids,
/// the lower first. Both ends compute it alike. The session's keys come from the
/// X25519 exchange of its rekey offers, which travel signed by their source; the salt
/// only keeps two attempts' sessions apart.
pub fn salt(attempt: u64, a: &PeerId, b: &PeerId) -> [u8; 32] {
    use blake2::{Blake2s256, Digest};
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut h = Blake2s256::new();
    h.update(SALT_LABEL);
    h.update(attempt.to_be_bytes());
    h.update(lo.0);
    h.update(hi.0);
    h.finalize().into()
}

/// What the owner knows about a request's parties.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// Our id.
    pub us: PeerId,
    /// Whether the sender is a neighbour (an established control link).
    pub from_neighbour: bool,
    /// Whether the named peer is a neighbour already.
    pub peer_neighbour: bool,
    /// Whether the named peer is reachable through the mesh.
    pub peer_reachable: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It did not come over a control link of ours.
    NotFromNeighbour,
    /// It names us, or its sender.
    BadPeer,
    /// We have a control link to the peer: nothing to punch.
    AlreadyLinked,
    /// The mesh does not reach the peer.
    Unreachable,
    /// The endpoint is no unicast address one could send to.
    BadEndpoint,
    /// [`MAX_ATTEMPTS`] attempts run already.
    TooMany,
}

impl Refusal {
    /// A short reason for the log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::NotFromNeighbour => "not from a neighbour",
            Refusal::BadPeer => "names us or its sender",
            Refusal::AlreadyLinked => "already linked",
            Refusal::Unreachable => "peer unreachable",
            Refusal::BadEndpoint => "endpoint unusable",
            Refusal::TooMany => "too many attempts",
        }
    }
}

/// An attempt to start: give the sleeve task this punched peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The other end.
    pub peer: PeerId,
    /// Where to send first.
    pub endpoint: SocketAddr,
    /// The session's salt.
    pub salt: [u8; 32],
}

/// A pair we coordinate: two neighbours with confirmed UDP paths to us and no link to
/// each other, with the endpoints we send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The pair's lower id and its endpoint.
    pub a: (PeerId, SocketAddr),
    /// The higher id and its endpoint.
    pub b: (PeerId, SocketAddr),
}

/// Counts of what happened, for the report and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PunchStats {
    /// Requests sent as coordinator (two per pair and round).
    pub coordinated: u64,
    /// Attempts started as an end.
    pub started: u64,
    /// Attempts whose path confirmed.
    pub succeeded: u64,
    /// Attempts abandoned unconfirmed.
    pub failed: u64,
    /// Punched paths given up after they were lost.
    pub lost: u64,
    /// Requests refused.
    pub refused: u64,
}

struct Attempt {
    endpoint: SocketAddr,
    started: Instant,
    up: bool,
    ever_up: bool,
    down_since: Option<Instant>,
}

struct Pair {
    next: Instant,
    wait: Duration,
}

/// Both roles' state.
#[derive(Default)]
pub struct Punches {
    attempts: BTreeMap<PeerId, Attempt>,
    pairs: BTreeMap<(PeerId, PeerId), Pair>,
    stats: PunchStats,
}

impl Punches {
    /// A request from `from`: starts an attempt (`Ok(Some)`), or is ignored because one
    /// runs for that peer already (`Ok(None)`), or is refused.
    pub fn handle_request(
        &mut self,
        now: Instant,
        from: PeerId,
        req: PunchRequest,
        ctx: RequestContext,
    ) -> Result<Option<Start>, Refusal> {
        let refused = match () {
            _ if !ctx.from_neighbour => Some(Refusal::NotFromNeighbour),
            _ if req.peer == ctx.us || req.peer == from => Some(Refusal::BadPeer),
            _ if ctx.peer_neighbour => Some(Refusal::AlreadyLinked),
            _ if !ctx.peer_reachable => Some(Refusal::Unreachable),
            _ if !usable(req.endpoint) => Some(Refusal::BadEndpoint),
            _ if self.attempts.contains_key(&req.peer) => return Ok(None),
            _ if self.attempts.len() >= MAX_ATTEMPTS => Some(Refusal::TooMany),
            _ => None,
        };
        if let Some(why) = refused {
            self.stats.refused = self.stats.refused.saturating_add(1);
            return Err(why);
        }
        self.attempts.insert(
            req.peer,
            Attempt {
                endpoint: req.endpoint,
                started: now,
                up: false,
                ever_up: false,
                down_since: None,
            },
        );
        self.stats.started = self.stats.started.saturating_add(1);
        Ok(Some(Start {
            peer: req.peer,
            endpoint: req.endpoint,
            salt: salt(req.attempt, &ctx.us, &req.peer),
        }))
    }

    /// The sleeve task says the UDP path to `peer` is (not) established; true if that
    /// is a punched peer's.
    pub fn handle_path(&mut self, now: Instant, peer: &PeerId, established: bool) -> bool {
        let Some(a) = self.attempts.get_mut(peer) else {
            return false;
        };
        if established && !a.ever_up {
            self.stats.succeeded = self.stats.succeeded.saturating_add(1);
        }
        a.up = established;
        a.ever_up |= established;
        a.down_since = (!established).then_some(now);
        true
    }

    /// The sleeve task moved `peer`'s endpoint (roaming); true if it is punched.
    pub fn handle_endpoint(&mut self, peer: &PeerId, to: SocketAddr) -> bool {
        match self.attempts.get_mut(peer) {
            Some(a) => {
                a.endpoint = to;
                true
            }
            None => false,
        }
    }

    /// A control link to `peer` came up: its session replaces the punched one.
    pub fn forget(&mut self, peer: &PeerId) -> bool {
        self.attempts.remove(peer).is_some()
    }

    /// Attempts to give up at `now`: unconfirmed too long, lost too long, or their peer
    /// no longer reachable. The sleeve task must drop them.
    pub fn poll_expired(
        &mut self,
        now: Instant,
        reachable: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let mut out = Vec::new();
        for (peer, a) in &self.attempts {
            let since = |t: Instant| now.saturating_duration_since(t);
            if !reachable(peer) {
                out.push(*peer);
            } else if !a.ever_up && since(a.started) >= ATTEMPT_TIMEOUT {
                self.stats.failed = self.stats.failed.saturating_add(1);
                out.push(*peer);
            } else if a
                .down_since
                .is_some_and(|t| a.ever_up && since(t) >= LOST_GRACE)
            {
                self.stats.lost = self.stats.lost.saturating_add(1);
                out.push(*peer);
            }
        }
        for peer in &out {
            self.attempts.remove(peer);
        }
        out
    }

    /// The pairs we coordinate now: requests that are due, each `(to, request)`, with
    /// a fresh attempt id from `attempt_id` per pair and round.
    pub fn coordinate(
        &mut self,
        now: Instant,
        candidates: &[Candidate],
        attempt_id: &mut dyn FnMut() -> u64,
    ) -> Vec<(PeerId, PunchRequest)> {
        self.pairs
            .retain(|(a, b), _| candidates.iter().any(|c| c.a.0 == *a && c.b.0 == *b));
        let mut out = Vec::new();
        for c in candidates {
            let key = (c.a.0, c.b.0);
            if !self.pairs.contains_key(&key) {
                if self.pairs.len() >= MAX_PAIRS {
                    continue;
                }
                let first = Pair {
                    next: now + FIRST_REQUEST_AFTER,
                    wait: RESEND_AFTER,
                };
                self.pairs.insert(key, first);
            }
            let Some(pair) = self.pairs.get_mut(&key) else {
                continue;
            };
            if now < pair.next {
                continue;
            }
            pair.next = now + pair.wait;
            pair.wait = (pair.wait * 2).min(MAX_RESEND);
            let attempt = attempt_id();
            out.push((c.a.0, request(c.b, attempt)));
            out.push((c.b.0, request(c.a, attempt)));
            self.stats.coordinated = self.stats.coordinated.saturating_add(2);
        }
        out
    }

    /// When to be asked again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let attempts = self.attempts.values().filter_map(|a| match a.down_since {
            Some(t) => Some(t + LOST_GRACE),
            None if !a.ever_up => Some(a.started + ATTEMPT_TIMEOUT),
            None => None,
        });
        attempts.chain(self.pairs.values().map(|p| p.next)).min()
    }

    /// Whether `peer` is a punched peer (trying or up).
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.attempts.contains_key(peer)
    }

    /// `peer`'s endpoint, if its punched path is up.
    pub fn up(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.attempts.get(peer).filter(|a| a.up).map(|a| a.endpoint)
    }

    /// The peers with attempts, trying or up.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.attempts.keys().copied()
    }

    /// What happened so far.
    pub fn stats(&self) -> PunchStats {
        self.stats
    }
}

fn request((peer, endpoint): (PeerId, SocketAddr), attempt: u64) -> PunchRequest {
    PunchRequest {
        peer,
        endpoint,
        attempt,
    }
}

/// Whether one could send to `endpoint`: a unicast address, not a loopback one, and a
/// port.
fn usable(endpoint: SocketAddr) -> bool {
    let ip = endpoint.ip();
    let unicast = match ip {
        IpAddr::V4(v4) => !v4.is_broadcast() && !v4.is_multicast(),
        IpAddr::V6(v6) => !v6.is_multicast(),
    };
    unicast && !ip.is_unspecified() && !ip.is_loopback() && endpoint.port() != 0
}

#[cfg(test)]
mod tests;
