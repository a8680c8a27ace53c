//! Reclaim of departed peers (`--reclaim-after DURATION`), sans-IO.
//!
//! A peer that owns address space, has been unreachable for longer than `after`, and is
//! no longer named by any `--peers-from-dns` answer has its space taken over by the
//! existing quorum `rmpeer` ([`crate::ipam`]'s takeover), once. A peer whose address is
//! still in a DNS answer is never reclaimed, however long it is down (a node that
//! reboots, a pod being rescheduled); neither is one whose address this router never
//! saw (it cannot tell whether DNS still names it).
//!
//! Every router with the option runs this, but normally only one proposes: the
//! reachable owners (this one included) rank themselves by peer id, and the one at rank
//! `r` waits `r × STAGGER` more once the peer may be reclaimed (due and not named). The
//! first one's `rmpeer` normally completes in a second, after which the dead peer owns
//! nothing and the others have nothing left to do; if it cannot (its view of DNS
//! differs, it is partitioned), the next one tries. Two proposals at once are still
//! safe: the takeover's quorum picks one heir, and only the heir writes.
//!
//! The owner feeds it link addresses ([`Reclaim::link_up`]), the ring's owners with
//! the mesh's reachability ([`Reclaim::update`]) and the clock; it asks
//! [`Reclaim::poll_due`] whom to reclaim and reports back with [`Reclaim::finished`].

use gossip::peer::PeerId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The wait between the ranks of proposers.
pub const STAGGER: Duration = Duration::from_secs(15);
/// How often a due peer that may not be reclaimed yet (still named, address unknown)
/// is looked at again.
pub const RECHECK: Duration = Duration::from_secs(5);
/// Finished reclaims kept for `status ipam`.
pub const MAX_HISTORY: usize = 16;
/// Addresses remembered per peer (a peer has a few interfaces, not hundreds).
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers whose addresses are remembered (bounded like the topology).
pub const MAX_PEERS: usize = 4096;

/// How a reclaim ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The quorum chose this router as heir: it took `ips` addresses over.
    Took {
        /// Addresses the dead peer held.
        ips: u64,
    },
    /// Another peer is heir (or the space was already taken over).
    OtherHeir(Option<PeerId>),
    /// The `rmpeer` failed (no quorum, timed out); retried after `after`.
    Failed(String),
}

/// One finished reclaim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The departed peer.
    pub dead: PeerId,
    /// When it ended.
    pub at: Instant,
    /// How long it had been unreachable.
    pub down_for: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Reclaims in which this router became heir.
    pub took: u64,
    /// Reclaims that found another heir.
    pub other_heir: u64,
    /// Reclaims that failed.
    pub failed: u64,
}

/// A departed peer that waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The peer.
    pub peer: PeerId,
    /// Unreachable since.
    pub since: Instant,
    /// Why it is not reclaimed yet, once it is due.
    pub blocked: Option<&'static str>,
}

/// The reclaim state.
#[derive(Debug)]
pub struct Reclaim {
    after: Duration,
    me: PeerId,
    rank: u32,
    down_since: BTreeMap<PeerId, Instant>,
    next_check: BTreeMap<PeerId, Instant>,
    ready_at: BTreeMap<PeerId, Instant>,
    blocked: BTreeMap<PeerId, &'static str>,
    seen_at: BTreeMap<PeerId, BTreeSet<IpAddr>>,
    running: BTreeSet<PeerId>,
    history: VecDeque<Record>,
    stats: Stats,
}

impl Reclaim {
    /// Reclaims peers unreachable for longer than `after`; `me` is this router.
    pub fn new(after: Duration, me: PeerId) -> Reclaim {
        Reclaim {
            after,
            me,
            rank: 0,
            down_since: BTreeMap::new(),
            next_check: BTreeMap::new(),
            ready_at: BTreeMap::new(),
            blocked: BTreeMap::new(),
            seen_at: BTreeMap::new(),
            running: BTreeSet::new(),
            history: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configured wait.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// A control link to `peer` came up from `ip`.
    pub fn link_up(&mut self, peer: PeerId, ip: IpAddr) {
        if peer == self.me || (self.seen_at.len() >= MAX_PEERS && !self.seen_at.contains_key(&peer))
        {
            return;
        }
        let ips = self.seen_at.entry(peer).or_default();
        if ips.len() < MAX_ADDRS_PER_PEER {
            ips.insert(ip);
        }
    }

    /// The ring's owners now, and whom the mesh reaches.
    pub fn update(&mut self, now: Instant, owners: &[PeerId], reachable: &BTreeSet<PeerId>) {
        let owners: BTreeSet<PeerId> = owners.iter().copied().collect();
        self.down_since
            .retain(|p, _| owners.contains(p) && !reachable.contains(p));
        for p in owners
            .iter()
            .filter(|p| **p != self.me && !reachable.contains(p))
        {
            self.down_since.entry(*p).or_insert(now);
        }
        self.next_check
            .retain(|p, _| self.down_since.contains_key(p));
        self.ready_at.retain(|p, _| self.down_since.contains_key(p));
        self.blocked.retain(|p, _| self.down_since.contains_key(p));
        let live = owners
            .iter()
            .filter(|p| reachable.contains(p) && **p != self.me);
        self.rank = u32::try_from(live.filter(|p| **p < self.me).count()).unwrap_or(u32::MAX);
    }

    fn due_at(&self, since: Instant) -> Instant {
        since + self.after
    }

    /// The next peer to reclaim now, if any; `named` says whether a DNS answer names
    /// an address. The caller runs `rmpeer` for it and reports with [`Self::finished`].
    pub fn poll_due(&mut self, now: Instant, named: impl Fn(&IpAddr) -> bool) -> Option<PeerId> {
        let due: Vec<PeerId> = self
            .down_since
            .iter()
            .filter(|(p, since)| {
                !self.running.contains(p)
                    && self.due_at(**since) <= now
                    && self.next_check.get(p).is_none_or(|at| *at <= now)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let reason = match self.seen_at.get(&peer) {
                None => Some("its address was never seen here"),
                Some(ips) if ips.iter().any(&named) => Some("still named by DNS"),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                self.blocked.insert(peer, reason);
                self.ready_at.remove(&peer);
                self.next_check.insert(peer, now + RECHECK);
                continue;
            }
            self.blocked.remove(&peer);
            let ready = *self
                .ready_at
                .entry(peer)
                .or_insert(now + STAGGER.saturating_mul(self.rank));
            if ready > now {
                // Check the name again when our turn comes.
                self.next_check.insert(peer, ready);
                continue;
            }
            self.ready_at.remove(&peer);
            self.running.insert(peer);
            return Some(peer);
        }
        None
    }

    /// When [`Self::poll_due`] may have something next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.down_since
            .iter()
            .filter(|(p, _)| !self.running.contains(p))
            .map(|(p, since)| {
                let due = self.due_at(*since);
                self.next_check.get(p).map_or(due, |at| due.max(*at))
            })
            .min()
    }

    /// The reclaim of `dead` ended: `Ok(heir, ips)` when the quorum decided.
    pub fn finished(
        &mut self,
        now: Instant,
        dead: PeerId,
        result: Result<(Option<PeerId>, u64), String>,
    ) {
        self.running.remove(&dead);
        let down_for = self
            .down_since
            .get(&dead)
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(*s));
        let outcome = match result {
            Ok((Some(heir), ips)) if heir == self.me => {
                self.stats.took += 1;
                Outcome::Took { ips }
            }
            Ok((heir, _)) => {
                self.stats.other_heir += 1;
                Outcome::OtherHeir(heir)
            }
            Err(why) => {
                self.stats.failed += 1;
                self.next_check.insert(dead, now + self.after);
                Outcome::Failed(why)
            }
        };
        if !matches!(outcome, Outcome::Failed(_)) {
            // Done: it owns nothing now; forget it until it owns space again.
            self.down_since.remove(&dead);
            self.next_check.remove(&dead);
            self.seen_at.remove(&dead);
        }
        if self.history.len() == MAX_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Record {
            dead,
            at: now,
            down_for,
            outcome,
        });
    }

    /// Departed peers not reclaimed yet.
    pub fn waiting(&self) -> Vec<Waiting> {
        self.down_since
            .iter()
            .map(|(p, since)| Waiting {
                peer: *p,
                since: *since,
                blocked: self.blocked.get(p).copied(),
            })
            .collect()
    }

    /// Finished reclaims, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Record> {
        self.history.iter()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
