//! Bootstrap consensus: which peers seed the ring (`--ipalloc-init consensus[=N]`).
//!
//! Single-decree Paxos over gossip, as weave's: each participant gossips its own
//! [`Claims`] (the highest ballot it promised and what it accepted), and everyone reads
//! everyone's claims, so a promise or an acceptance is just a change of one's own entry.
//! Quorum is `N/2 + 1` of the `N` peers expected at launch.
//!
//! - A participant that knows a quorum of participants proposes a ballot above every
//!   ballot it has seen (after a random delay, so that a ring already out there can reach
//!   it first and proposers rarely duel). The proposed value is the set of participants
//!   it knows.
//! - Every participant promises the highest ballot proposed; the proposer, once a quorum
//!   promised its ballot, accepts the value of the highest-ballot acceptance among them,
//!   or else its own; acceptors that promised that ballot accept the proposer's value.
//! - A value accepted under one ballot by a quorum is decided; every peer (observers too)
//!   sees that from the gossiped claims and seeds the same ring from it.
//!
//! This is eager: it starts as soon as a quorum is known, not at the first allocation.
//! Like weave it is safe only if no more than `N` peers take part; if more do, two rings
//! may be seeded, and the ring identity check reports it when they meet.

use gossip::peer::PeerId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most participants a bootstrap may involve (bounds decoded claims).
pub const MAX_PARTICIPANTS: usize = 4_096;

/// The highest ballot round a peer may send (bootstrap claims, `rmpeer` steps); more is
/// refused at decode.
///
/// Honest rounds grow by one per proposal (one every few seconds), so 2^62 is never
/// reached; the bound leaves room above every accepted round, so `round + 1` never
/// overflows.
pub const MAX_ROUND: u64 = (1 << 62) - 1;
/// The highest claims version a peer may send; like [`MAX_ROUND`], far above anything
/// honest, and with room above.
pub const MAX_CLAIMS_VERSION: u64 = (1 << 62) - 1;

/// A Paxos ballot; ordered by round, then proposer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Ballot {
    /// The round; 0 means "none".
    pub round: u64,
    /// Who proposes it.
    pub proposer: PeerId,
}

impl Default for Ballot {
    fn default() -> Ballot {
        Ballot {
            round: 0,
            proposer: PeerId([0; 16]),
        }
    }
}

/// One participant's gossiped Paxos state; only that participant changes it.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Bumped on every change.
    pub version: u64,
    /// The highest ballot promised (or proposed, for its own ballot).
    pub promised: Ballot,
    /// The last acceptance: ballot and the seed set.
    pub accepted: Option<(Ballot, Vec<PeerId>)>,
}

/// Every participant's claims, as gossiped.
pub type ClaimsMap = BTreeMap<PeerId, Claims>;

/// The bootstrap state of one peer.
#[derive(Clone, Debug)]
pub struct Consensus {
    me: PeerId,
    quorum: usize,
    participant: bool,
    claims: ClaimsMap,
    propose_at: Option<Instant>,
    retry: Duration,
}

impl Consensus {
    /// The state of `me` expecting `n` peers; observers (`participant == false`) only
    /// watch for the decision.
    pub fn new(me: PeerId, n: usize, participant: bool, retry: Duration) -> Consensus {
        let mut claims = ClaimsMap::new();
        if participant {
            let own = Claims {
                version: 1,
                ..Claims::default()
            };
            claims.insert(me, own);
        }
        Consensus {
            me,
            quorum: n / 2 + 1,
            participant,
            claims,
            propose_at: None,
            retry,
        }
    }

    /// Restores our own persisted claims (an acceptor must never forget a promise).
    pub fn restore_own(&mut self, own: Claims) {
        if self.participant {
            self.claims.insert(self.me, own);
        }
    }

    /// Our own claims, to persist.
    pub fn own(&self) -> Option<&Claims> {
        self.claims.get(&self.me)
    }

    /// All claims known, to gossip.
    pub fn claims(&self) -> &ClaimsMap {
        &self.claims
    }

    /// Participants needed.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Participants known (including us).
    pub fn known(&self) -> usize {
        self.claims.len()
    }

    /// Merges gossiped claims (higher version per participant wins; our own entry is
    /// ours alone). Returns what was new.
    pub fn merge(&mut self, delta: &ClaimsMap) -> ClaimsMap {
        let mut news = ClaimsMap::new();
        for (peer, c) in delta {
            if *peer == self.me {
                continue;
            }
            let newer = self
                .claims
                .get(peer)
                .is_none_or(|cur| c.version > cur.version);
            if newer {
                self.claims.insert(*peer, c.clone());
                news.insert(*peer, c.clone());
            }
        }
        news
    }

    /// The decided seed set, if a quorum accepted one value under one ballot.
    pub fn decision(&self) -> Option<Vec<PeerId>> {
        let mut votes: BTreeMap<(&Ballot, &Vec<PeerId>), usize> = BTreeMap::new();
        for c in self.claims.values() {
            if let Some((b, v)) = &c.accepted {
                *votes.entry((b, v)).or_insert(0) += 1;
            }
        }
        votes
            .into_iter()
            .find(|(_, n)| *n >= self.quorum)
            .map(|((_, v), _)| v.clone())
    }

    /// When [`Consensus::step`] wants to run again on its own.
    pub fn deadline(&self) -> Option<Instant> {
        self.propose_at
    }

    /// Plays our roles after any change or at the deadline; `true` if our own claims
    /// changed (persist them, then gossip them). Our own roles answer each other at once
    /// (our proposal, our promise, our acceptance), so a quorum of one decides alone.
    pub fn step(&mut self, now: Instant, rng: &mut impl Rng) -> bool {
        let mut changed = false;
        // Each pass moves at most one phase on; four passes settle every local exchange.
        for _ in 0..4 {
            if !self.step_once(now, rng) {
                break;
            }
            changed = true;
        }
        changed
    }

    fn step_once(&mut self, now: Instant, rng: &mut impl Rng) -> bool {
        if !self.participant || self.decision().is_some() {
            self.propose_at = None;
            return false;
        }
        let mut changed = false;
        let mut own = self.claims.get(&self.me).cloned().unwrap_or_default();
        // Acceptor: promise the highest ballot any proposer stands for.
        let top = self
            .claims
            .iter()
            .filter(|(p, c)| c.promised.proposer == **p && c.promised.round > 0)
            .map(|(_, c)| c.promised)
            .max();
        if let Some(top) = top.filter(|t| *t > own.promised) {
            own.promised = top;
            changed = true;
        }
        // Acceptor: accept the value of the proposer we promised.
        let b = own.promised;
        if b.proposer != self.me && b.round > 0 {
            let theirs = self
                .claims
                .get(&b.proposer)
                .and_then(|c| c.accepted.clone());
            if let Some((ab, v)) = theirs.filter(|(ab, _)| *ab == b) {
                if own.accepted.as_ref().map(|a| a.0) != Some(ab) {
                    own.accepted = Some((ab, v));
                    changed = true;
                }
            }
        }
        // Proposer: start (after a delay) once a quorum is known; retry if stuck.
        if self.claims.len() >= self.quorum {
            match self.propose_at {
                None => {
                    let jitter = rng.gen_range(0..=self.retry.as_millis() as u64 / 2);
                    self.propose_at = Some(now + Duration::from_millis(jitter));
                }
                Some(at) if now >= at => {
                    let round = self.claims.values().map(|c| c.promised.round).max();
                    // A round above [`MAX_ROUND`] would make our own claims undecodable
                    // to every peer (and cost us our links): past it, propose no more.
                    let next = round.unwrap_or(0).saturating_add(1);
                    if next <= MAX_ROUND {
                        own.promised = Ballot {
                            round: next,
                            proposer: self.me,
                        };
                        changed = true;
                    }
                    let jitter = rng.gen_range(0..=self.retry.as_millis() as u64);
                    self.propose_at = Some(now + self.retry + Duration::from_millis(jitter));
                }
                Some(_) => {}
            }
        }
        // Proposer: phase 2 once a quorum promised our ballot.
        if own.promised.proposer == self.me && own.promised.round > 0 {
            changed |= self.phase2(&mut own);
        }
        // Our version only grows by one per change; past the limit we stop changing.
        if changed && own.version < MAX_CLAIMS_VERSION {
            own.version += 1;
            self.claims.insert(self.me, own);
            return true;
        }
        false
    }

    fn phase2(&self, own: &mut Claims) -> bool {
        let b = own.promised;
        if own.accepted.as_ref().is_some_and(|a| a.0 == b) {
            return false;
        }
        let promisers: Vec<&Claims> = self
            .claims
            .iter()
            .filter(|(p, c)| **p != self.me && c.promised == b)
            .map(|(_, c)| c)
            .chain(std::iter::once(&*own))
            .collect();
        if promisers.len() < self.quorum {
            return false;
        }
        let prior = promisers
            .iter()
            .filter_map(|c| c.accepted.as_ref())
            .max_by_key(|a| a.0)
            .map(|a| a.1.clone());
        let value = prior.unwrap_or_else(|| self.claims.keys().copied().collect());
        own.accepted = Some((b, value));
        true
    }

    /// Checks decoded claims against the size limits.
    pub fn check(claims: &ClaimsMap) -> Result<(), &'static str> {
        if claims.len() > MAX_PARTICIPANTS {
            return Err("too many bootstrap participants");
        }
        let too_long = claims.values().any(|c| {
            c.accepted
                .as_ref()
                .is_some_and(|a| a.1.len() > MAX_PARTICIPANTS)
        });
        if too_long {
            return Err("bootstrap value too long");
        }
        let too_high = claims.values().any(|c| {
            c.version > MAX_CLAIMS_VERSION
                || c.promised.round > MAX_ROUND
                || c.accepted.as_ref().is_some_and(|a| a.0.round > MAX_ROUND)
        });
        if too_high {
            return Err("bootstrap claims version or round above the limit");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A forged participant promising round `u64::MAX` used to make our next proposal's
    /// `round + 1` overflow (a panic): now its claims are refused at decode, and the
    /// arithmetic saturates anyway.
    #[test]
    fn bootstrap_claims_with_max_round_do_not_panic() {
        let me = PeerId([7; 16]);
        let evil = PeerId([9; 16]);
        let forged = Claims {
            version: u64::MAX,
            promised: Ballot {
                round: u64::MAX,
                proposer: evil,
            },
            accepted: None,
        };
        let claims = ClaimsMap::from([(evil, forged)]);
        assert!(Consensus::check(&claims).is_err());
        // Even if such claims got in (an old snapshot), stepping must not panic.
        let mut c = Consensus::new(me, 3, true, Duration::from_secs(2));
        c.merge(&claims);
        c.merge(&ClaimsMap::from([(PeerId([8; 16]), Claims::default())]));
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        c.step(t0, &mut rng);
        if let Some(at) = c.deadline() {
            c.step(at, &mut rng);
        }
    }

    /// A forged participant at the highest *valid* round: our next proposal used to be
    /// `MAX_ROUND + 1`, claims that every peer refuses as malformed, so each of our
    /// gossip rounds cost us a link (found by the hostile simulation). Our own claims
    /// now always pass the check the receivers apply.
    #[test]
    fn a_forged_top_round_never_makes_our_claims_invalid() {
        let me = PeerId([7; 16]);
        let evil = PeerId([9; 16]);
        let forged = Claims {
            version: MAX_CLAIMS_VERSION,
            promised: Ballot {
                round: MAX_ROUND,
                proposer: evil,
            },
            accepted: None,
        };
        let claims = ClaimsMap::from([(evil, forged)]);
        assert!(Consensus::check(&claims).is_ok(), "valid on the wire");
        let mut c = Consensus::new(me, 2, true, Duration::from_secs(2));
        c.merge(&claims);
        let mut rng = StdRng::seed_from_u64(1);
        let mut t = Instant::now();
        for _ in 0..10 {
            c.step(t, &mut rng);
            assert_eq!(Consensus::check(c.claims()), Ok(()), "{:?}", c.own());
            t = c.deadline().unwrap_or(t) + Duration::from_secs(1);
        }
    }

    /// `consensus=1` (a router launched with no peers): it decides alone, at its first
    /// deadline, without any gossip coming back.
    #[test]
    fn a_quorum_of_one_decides_alone() {
        let me = PeerId([7; 16]);
        let mut c = Consensus::new(me, 1, true, Duration::from_secs(2));
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        c.step(t0, &mut rng);
        let at = c.deadline().expect("a proposal is scheduled");
        assert!(c.decision().is_none());
        assert!(c.step(at, &mut rng), "the proposal changes our claims");
        assert_eq!(c.decision(), Some(vec![me]));
    }
}
