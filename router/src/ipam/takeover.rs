//! `rmpeer`: taking over a dead peer's space by a quorum decision on one heir.
//!
//! One single-decree Paxos instance per dead peer `D` decides who inherits `D`'s tokens.
//! The proposer is the peer where `rmpeer D` runs; it proposes itself as heir. The
//! acceptors ("voters") are the ring's seed peers other than `D`; a quorum is a majority
//! of them. Acceptor state is persisted before any reply leaves (the allocator's persist
//! barrier), so a restart never forgets a promise. Once a quorum accepted, the value is
//! chosen; the proposer tells the heir, and only the heir writes `D`'s tokens, with a
//! takeover version ([`super::ring::takeover_version`]).
//!
//! # The decision carries its proof
//!
//! Each acceptance is a [`Vote`]: the voter's Ed25519 signature (its identity key, see
//! `gossip::identity::signing`) over the ring, the dead peer, the ballot and the heir.
//! The proposer counts only votes that verify, and the decision it sends the heir
//! ([`TakeoverMsg::Chosen`]) carries a quorum of them. The heir takes over only after it
//! checked them itself: a quorum of distinct voters of this ring (the seeds but the dead
//! peer), each signature good for this very decision. So a peer that holds the network
//! secret cannot make another take a space no quorum gave it (refused, counted
//! `takeover_unproven`); it could only forge the votes with the voters' keys.
//!
//! # Why two `rmpeer`s on both sides of a partition cannot create two owners
//!
//! 1. *Same voters everywhere.* The voter set is a function of the ring's seed set, which
//!    is part of the ring's identity ([`super::ring::RingId`]): every peer of this ring
//!    derives the very same voters, whatever it has heard since. (The set of current owners
//!    would not do: it changes by donation and differs between the sides of a partition,
//!    so two "majorities" could be disjoint.) So any two quorums share a voter.
//! 2. *One value per instance.* Standard Paxos: a proposer with ballot `b` proposes only
//!    after a quorum promised `b`, and proposes the value accepted under the highest
//!    ballot among those promises, if any. An acceptor accepts `b` only if it promised
//!    nothing higher. If heir `h` was chosen under ballot `b0`, every higher ballot's
//!    promise quorum contains a voter that accepted `h` at some ballot ≥ `b0`, so it can
//!    only propose `h`. The side of a partition with no majority gets no quorum at all
//!    and its `rmpeer` times out with the reason.
//! 3. *One writer.* Only the chosen heir writes `D`'s tokens, so no two peers ever write
//!    the same token version; both `rmpeer`s end naming the same heir.

use super::allocator::{Ipam, Pending, PendingKind};
use super::ring::{next_version, takeover_version, Entries, Entry};
use super::space::free_count;
use super::wire::UnicastMsg;
use super::{IpamError, IpamEvent, IpamOutput, Reply, RequestId};
use gossip::identity::{self, Identity, ProofError, Signature, DOMAIN_TAKEOVER_VOTE, KEY_LEN};
use gossip::peer::PeerId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

pub use super::consensus::Ballot;

/// What a voter remembers for one dead peer (persisted).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct AcceptorState {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The last accepted ballot and heir.
    pub accepted: Option<(Ballot, PeerId)>,
}

/// A voter's signed acceptance of `heir` as the heir of `dead`, at a ballot, in a ring.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Vote {
    /// Who voted.
    pub voter: PeerId,
    /// The voter's Ed25519 key (it must bind to `voter`).
    pub key: [u8; KEY_LEN],
    /// Over the decision (ring, dead peer, ballot, heir), under `DOMAIN_TAKEOVER_VOTE`.
    pub signature: Signature,
}

/// What a voter signs: the decision it accepts, whole.
fn vote_statement(ring: u64, dead: PeerId, ballot: Ballot, heir: PeerId) -> Vec<u8> {
    gossip::codec::encode(&(ring, dead, ballot, heir))
}

impl Vote {
    /// `identity`'s vote for `heir` as the heir of `dead` at `ballot` in ring `ring`.
    pub fn new(identity: &Identity, ring: u64, dead: PeerId, ballot: Ballot, heir: PeerId) -> Vote {
        let statement = vote_statement(ring, dead, ballot, heir);
        Vote {
            voter: identity.id(),
            key: *identity.signing_key(),
            signature: identity.sign(DOMAIN_TAKEOVER_VOTE, &statement),
        }
    }

    /// Whether this is `voter`'s good vote for exactly this decision.
    pub fn verify(
        &self,
        ring: u64,
        dead: PeerId,
        ballot: Ballot,
        heir: PeerId,
    ) -> Result<(), ProofError> {
        let statement = vote_statement(ring, dead, ballot, heir);
        identity::verify(
            &self.voter,
            &self.key,
            DOMAIN_TAKEOVER_VOTE,
            &statement,
            &self.signature,
        )
    }
}

/// One step of the protocol, unicast between proposer and voters.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TakeoverMsg {
    /// Phase 1a.
    Prepare {
        /// The ballot.
        ballot: Ballot,
    },
    /// Phase 1b: the voter promised `ballot` and reports its last acceptance.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// Its last acceptance.
        accepted: Option<(Ballot, PeerId)>,
    },
    /// Phase 2a.
    Accept {
        /// The ballot.
        ballot: Ballot,
        /// The proposed heir.
        heir: PeerId,
    },
    /// Phase 2b.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
        /// The voter's signature on what it accepted.
        vote: Vote,
    },
    /// The voter promised a higher ballot.
    Nack {
        /// What it promised.
        promised: Ballot,
    },
    /// The heir is chosen; sent to the heir (it writes the tokens once it checked the
    /// votes).
    Chosen {
        /// The heir.
        heir: PeerId,
        /// The ballot a quorum accepted.
        ballot: Ballot,
        /// That quorum's votes.
        votes: Vec<Vote>,
    },
    /// The voter refuses: it is the peer to remove, or that peer is alive to it.
    Alive,
}

impl TakeoverMsg {
    /// The highest ballot round this step names.
    pub fn round(&self) -> u64 {
        match self {
            TakeoverMsg::Prepare { ballot }
            | TakeoverMsg::Accept { ballot, .. }
            | TakeoverMsg::Accepted { ballot, .. }
            | TakeoverMsg::Chosen { ballot, .. } => ballot.round,
            TakeoverMsg::Promise { ballot, accepted } => {
                ballot.round.max(accepted.map_or(0, |a| a.0.round))
            }
            TakeoverMsg::Nack { promised } => promised.round,
            TakeoverMsg::Alive => 0,
        }
    }
}

impl AcceptorState {
    /// The reply to `msg` (a Prepare or Accept), updating the state; `vote` signs an
    /// acceptance (ballot, heir).
    pub fn handle(
        &mut self,
        msg: &TakeoverMsg,
        vote: impl FnOnce(Ballot, PeerId) -> Option<Vote>,
    ) -> Option<TakeoverMsg> {
        match *msg {
            TakeoverMsg::Prepare { ballot } if ballot > self.promised => {
                self.promised = ballot;
                Some(TakeoverMsg::Promise {
                    ballot,
                    accepted: self.accepted,
                })
            }
            TakeoverMsg::Accept { ballot, heir } if ballot >= self.promised => {
                // No key, no vote: nothing is accepted.
                let vote = vote(ballot, heir)?;
                self.promised = ballot;
                self.accepted = Some((ballot, heir));
                Some(TakeoverMsg::Accepted { ballot, vote })
            }
            TakeoverMsg::Prepare { .. } | TakeoverMsg::Accept { .. } => Some(TakeoverMsg::Nack {
                promised: self.promised,
            }),
            _ => None,
        }
    }
}

/// The voters of an instance about `dead`: the ring's seeds but `dead`.
fn voters_of(seeds: &[PeerId], dead: PeerId) -> BTreeSet<PeerId> {
    seeds.iter().copied().filter(|s| *s != dead).collect()
}

/// The votes that decide among `voters` voters: a majority.
fn quorum_of(voters: usize) -> usize {
    voters / 2 + 1
}

/// A decision told to its heir, told again until the heir's takeover shows.
#[derive(Clone, Debug)]
pub struct HeirNotice {
    /// The heir.
    pub heir: PeerId,
    /// The [`TakeoverMsg::Chosen`], with its votes.
    pub decision: TakeoverMsg,
    /// When to tell it again.
    pub retry: Instant,
    /// When to stop.
    pub give_up: Instant,
}

/// The proposer side of one `rmpeer`.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The ring.
    pub ring: u64,
    /// The peer being removed.
    pub dead: PeerId,
    /// The current ballot.
    pub ballot: Ballot,
    /// The voters.
    pub voters: BTreeSet<PeerId>,
    promises: BTreeMap<PeerId, Option<(Ballot, PeerId)>>,
    /// The good votes for the current ballot.
    accepted: BTreeMap<PeerId, Vote>,
    /// The heir proposed in phase 2, once there.
    pub heir: Option<PeerId>,
}

/// What the proposer does next.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ProposerAction {
    /// Send this to every voter.
    ToVoters(TakeoverMsg),
    /// The heir is chosen: tell it (a [`TakeoverMsg::Chosen`] with the votes).
    Chosen(PeerId, TakeoverMsg),
}

impl Proposal {
    /// A proposal by `me` to remove `dead` from ring `ring`, with ballot round `round`.
    pub fn new(me: PeerId, ring: u64, dead: PeerId, seeds: &[PeerId], round: u64) -> Proposal {
        Proposal {
            ring,
            dead,
            ballot: Ballot {
                round,
                proposer: me,
            },
            voters: voters_of(seeds, dead),
            promises: BTreeMap::new(),
            accepted: BTreeMap::new(),
            heir: None,
        }
    }

    /// Voters needed.
    pub fn quorum(&self) -> usize {
        quorum_of(self.voters.len())
    }

    /// Voters that answered the current phase.
    pub fn answered(&self) -> usize {
        if self.heir.is_some() {
            self.accepted.len()
        } else {
            self.promises.len()
        }
    }

    /// The first message.
    pub fn prepare(&self) -> TakeoverMsg {
        TakeoverMsg::Prepare {
            ballot: self.ballot,
        }
    }

    /// Restarts with a ballot above `seen`.
    pub fn retry_above(&mut self, seen: Ballot) -> TakeoverMsg {
        self.ballot.round = self.ballot.round.max(seen.round).saturating_add(1);
        self.promises.clear();
        self.accepted.clear();
        self.heir = None;
        self.prepare()
    }

    /// Feeds a voter's reply.
    pub fn handle(&mut self, from: PeerId, msg: &TakeoverMsg) -> Option<ProposerAction> {
        if !self.voters.contains(&from) {
            return None;
        }
        match *msg {
            TakeoverMsg::Promise { ballot, accepted } if ballot == self.ballot => {
                self.promises.insert(from, accepted);
                if self.heir.is_some() || self.promises.len() < self.quorum() {
                    return None;
                }
                let prior = self.promises.values().flatten().max_by_key(|a| a.0);
                let heir = prior.map_or(self.ballot.proposer, |a| a.1);
                self.heir = Some(heir);
                Some(ProposerAction::ToVoters(TakeoverMsg::Accept {
                    ballot: self.ballot,
                    heir,
                }))
            }
            TakeoverMsg::Accepted { ballot, ref vote } if ballot == self.ballot => {
                let heir = self.heir?;
                // A vote that does not prove this decision is not counted.
                if vote.voter != from || vote.verify(self.ring, self.dead, ballot, heir).is_err() {
                    return None;
                }
                self.accepted.insert(from, vote.clone());
                (self.accepted.len() == self.quorum()).then(|| {
                    let votes = self.accepted.values().cloned().collect();
                    ProposerAction::Chosen(
                        heir,
                        TakeoverMsg::Chosen {
                            heir,
                            ballot,
                            votes,
                        },
                    )
                })
            }
            TakeoverMsg::Nack { promised } if promised > self.ballot => {
                Some(ProposerAction::ToVoters(self.retry_above(promised)))
            }
            _ => None,
        }
    }
}

impl Ipam {
    // ---- rmpeer ----

    /// Removes dead peer `dead`: a quorum of the ring's voters picks one heir, who takes
    /// over its space. Refused for ourselves and for peers the mesh can reach.
    pub fn rmpeer(&mut self, now: Instant, dead: PeerId) -> RequestId {
        let id = self.new_request(now);
        let refuse = if dead == self.me || (self.reachable.is_some() && self.is_reachable(&dead)) {
            Some(IpamError::PeerAlive(dead))
        } else if self.leaving {
            Some(IpamError::Leaving)
        } else if self.ring.is_none() {
            Some(IpamError::NoRing("nothing to remove".into()))
        } else {
            None
        };
        if let Some(e) = refuse {
            self.complete(id, Err(e));
            return id;
        }
        // Ranges are never empty, so a peer that owns no address owns no token.
        let ring = self.ring.as_ref().map(|r| {
            let ips = r.shares().get(&dead).copied().unwrap_or(0);
            (ips, r.seeds().to_vec())
        });
        let Some((ips, seeds)) = ring else {
            return id;
        };
        if ips == 0 {
            self.complete(id, Ok(Reply::Removed { heir: None, ips }));
            return id;
        }
        let round = self
            .votes
            .get(&dead)
            .map_or(0, |v| v.promised.round)
            .saturating_add(1);
        let proposal = Proposal::new(self.me, self.ring_id(), dead, &seeds, round);
        let first = proposal.prepare();
        let resend = now + self.config.donation_retry;
        self.proposals.insert(dead, (proposal, id, resend));
        let deadline = now + self.config.request_timeout;
        let kind = PendingKind::Remove { dead, ips };
        self.pending.insert(id, Pending { kind, deadline });
        self.send_to_voters(dead, first);
        id
    }

    pub(super) fn send_to_voters(&mut self, dead: PeerId, msg: TakeoverMsg) {
        let voters: Vec<PeerId> = match self.proposals.get(&dead) {
            Some(p) => p.0.voters.iter().copied().collect(),
            None => return,
        };
        for v in voters {
            self.send_takeover(v, dead, msg.clone());
        }
    }

    pub(super) fn send_takeover(&mut self, to: PeerId, dead: PeerId, msg: TakeoverMsg) {
        if to == self.me {
            self.on_takeover(self.me, dead, msg);
        } else {
            let ring = self.ring_id();
            self.unicast(to, &UnicastMsg::Takeover { ring, dead, msg });
        }
    }

    pub(super) fn on_takeover(&mut self, from: PeerId, dead: PeerId, msg: TakeoverMsg) {
        match msg {
            TakeoverMsg::Prepare { .. } | TakeoverMsg::Accept { .. } => {
                let alive =
                    dead == self.me || (self.reachable.is_some() && self.is_reachable(&dead));
                let full = !self.votes.contains_key(&dead)
                    && self.votes.len() >= super::allocator::MAX_VOTES;
                let reply = if alive {
                    Some(TakeoverMsg::Alive)
                } else if full {
                    self.stats.takeover_refused += 1;
                    None
                } else {
                    let ring = self.ring_id();
                    let identity = self.identity.as_ref();
                    let state = self.votes.entry(dead).or_default();
                    let before = *state;
                    let reply = state.handle(&msg, |ballot, heir| {
                        identity.map(|id| Vote::new(id, ring, dead, ballot, heir))
                    });
                    if *state != before {
                        self.outbox.dirty();
                    }
                    reply
                };
                if let Some(reply) = reply {
                    self.send_takeover(from, dead, reply);
                }
            }
            // A decision about a peer we can reach is forged (or stale): the space of a
            // live peer is never taken.
            TakeoverMsg::Chosen {
                heir,
                ballot,
                ref votes,
            } if heir == self.me && dead != self.me && !self.is_reachable(&dead) => {
                if self.decision_proven(dead, ballot, heir, votes) {
                    self.take_over(dead)
                } else {
                    self.stats.takeover_unproven += 1;
                }
            }
            TakeoverMsg::Chosen { .. } if dead != self.me && self.is_reachable(&dead) => {
                self.stats.takeover_refused += 1;
            }
            TakeoverMsg::Chosen { .. } => {}
            TakeoverMsg::Alive => self.end_proposal(dead, Err(IpamError::PeerAlive(dead))),
            reply => {
                let Some((p, _, at)) = self.proposals.get_mut(&dead) else {
                    return;
                };
                let nack = matches!(reply, TakeoverMsg::Nack { .. });
                match p.handle(from, &reply) {
                    // Another proposer holds a higher ballot. Restarting at once would
                    // duel with it forever when every voter is needed (two of three
                    // seeds left): back off a random while, and let it finish.
                    Some(ProposerAction::ToVoters(_)) if nack => {
                        let most = self.config.donation_retry.as_millis() as u64 / 2;
                        let jitter = self.rng.gen_range(most / 4..=most.max(1));
                        *at = self.now + std::time::Duration::from_millis(jitter);
                    }
                    Some(ProposerAction::ToVoters(m)) => self.send_to_voters(dead, m),
                    Some(ProposerAction::Chosen(heir, decision)) => {
                        self.send_takeover(heir, dead, decision.clone());
                        if heir != self.me {
                            // Resent until the heir's takeover reaches our ring: a lost
                            // notice must not leave the space stranded.
                            let notice = HeirNotice {
                                heir,
                                decision,
                                retry: self.now + self.config.donation_retry,
                                give_up: self.now + self.config.request_timeout * 6,
                            };
                            self.heir_notices.insert(dead, notice);
                        }
                        self.end_proposal(dead, Ok(heir));
                    }
                    None => {}
                }
            }
        }
    }

    /// Ends the `rmpeer` of `dead`: `heir` chosen, or why not.
    pub(super) fn end_proposal(&mut self, dead: PeerId, heir: Result<PeerId, IpamError>) {
        if let Some((_, id, _)) = self.proposals.remove(&dead) {
            let ips = match self.pending.remove(&id).map(|p| p.kind) {
                Some(PendingKind::Remove { ips, .. }) => ips,
                _ => 0,
            };
            let result = heir.map(|heir| Reply::Removed {
                heir: Some(heir),
                ips,
            });
            self.complete(id, result);
        }
    }

    /// Tells chosen heirs again until their takeover of the dead peer's space shows in
    /// our ring (or a minute passes: then the heir is likely gone too, and a new `rmpeer`
    /// finds the same decision and delivers it).
    pub(super) fn renotify_heirs(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .heir_notices
            .iter()
            .filter(|(_, n)| n.retry <= now)
            .map(|(dead, _)| *dead)
            .collect();
        for dead in due {
            let taken = self
                .ring
                .as_ref()
                .is_none_or(|r| r.owned_by(&dead).is_empty());
            let Some(mut notice) = self.heir_notices.remove(&dead) else {
                continue;
            };
            if taken || notice.give_up <= now {
                continue;
            }
            self.stats.heir_renotified += 1;
            self.send_takeover(notice.heir, dead, notice.decision.clone());
            notice.retry = now + self.config.donation_retry;
            self.heir_notices.insert(dead, notice);
        }
    }

    /// Restarts stalled rmpeer proposals with a higher ballot (messages may have been
    /// lost while routes were missing).
    pub(super) fn retry_proposals(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .proposals
            .iter()
            .filter(|(_, p)| p.2 <= now)
            .map(|(d, _)| *d)
            .collect();
        for dead in due {
            let retry = self.config.donation_retry;
            let Some((p, _, at)) = self.proposals.get_mut(&dead) else {
                continue;
            };
            *at = now + retry;
            let seen = p.ballot;
            let msg = p.retry_above(seen);
            self.send_to_voters(dead, msg);
        }
    }

    /// Writes the dead peer's tokens as ours (we are the chosen heir).
    pub(super) fn take_over(&mut self, dead: PeerId) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let mut delta = Entries::new();
        let mut total = 0;
        for (r, e) in ring.ranges().filter(|(_, e)| e.owner == dead) {
            let Some(version) = takeover_version(e.version) else {
                self.stats.version_exhausted += 1;
                continue;
            };
            let free = free_count(r, &self.by_addr);
            total += r.len();
            delta.insert(
                r.start,
                Entry {
                    owner: self.me,
                    version,
                    free,
                },
            );
        }
        if delta.is_empty() {
            return;
        }
        for (t, e) in &delta {
            ring.set(*t, *e);
        }
        self.outbox.dirty();
        let event = IpamEvent::TookOver {
            dead,
            addresses: total,
        };
        self.outbox.push(IpamOutput::Event(event));
        self.broadcast_entries(delta);
        self.serve_pending();
    }

    /// Whether `votes` prove that a quorum of this ring's voters accepted `heir` as the
    /// heir of `dead` at `ballot`: distinct voters, each vote good for exactly that.
    /// Stops at the first vote that is not (an honest proposer sends only good ones).
    fn decision_proven(&self, dead: PeerId, ballot: Ballot, heir: PeerId, votes: &[Vote]) -> bool {
        let Some(ring) = self.ring.as_ref() else {
            return false;
        };
        let voters = voters_of(ring.seeds(), dead);
        if votes.len() < quorum_of(voters.len()) || votes.len() > voters.len() {
            return false;
        }
        let ring = self.ring_id();
        let mut counted = BTreeSet::new();
        votes.iter().all(|v| {
            voters.contains(&v.voter)
                && counted.insert(v.voter)
                && v.verify(ring, dead, ballot, heir).is_ok()
        })
    }

    // ---- leave ----

    /// `weft reset`: hands all our space to a reachable peer, forgets our allocations,
    /// and takes no more requests. Exit once the completion is out.
    pub fn leave(&mut self, now: Instant) -> RequestId {
        let id = self.new_request(now);
        let heir = self.ring.as_ref().and_then(|ring| {
            let owners = ring.shares().into_keys();
            let mut others: Vec<PeerId> = owners
                .filter(|p| *p != self.me && self.is_reachable(p))
                .collect();
            if others.is_empty() {
                others = self.reachable.iter().flatten().copied().collect();
            }
            others.first().copied()
        });
        let Some(heir) = heir else {
            let why = "no reachable peer to hand this router's space to".to_string();
            self.complete(id, Err(IpamError::NoRing(why)));
            return id;
        };
        self.leaving = true;
        self.by_addr.clear();
        self.by_container.clear();
        let mut delta = Entries::new();
        if let Some(ring) = self.ring.as_mut() {
            for (r, e) in ring.ranges().filter(|(_, e)| e.owner == self.me) {
                let Some(version) = next_version(e.version) else {
                    self.stats.version_exhausted += 1;
                    continue;
                };
                delta.insert(
                    r.start,
                    Entry {
                        owner: heir,
                        version,
                        free: r.len(),
                    },
                );
            }
            for (t, e) in &delta {
                ring.set(*t, *e);
            }
        }
        self.outbox.dirty();
        let waiting: Vec<RequestId> = self.pending.keys().copied().collect();
        for w in waiting {
            self.pending.remove(&w);
            self.complete(w, Err(IpamError::Leaving));
        }
        let ring = self.ring_id();
        self.unicast(
            heir,
            &UnicastMsg::Space {
                ring,
                entries: delta.clone(),
            },
        );
        self.broadcast_entries(delta);
        self.complete(id, Ok(Reply::Left { heir }));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip::sim::node_identity;

    const RING: u64 = 7;

    fn p(i: u8) -> PeerId {
        node_identity(i as usize).id()
    }

    /// Runs a proposal against the given voters' states, delivering to `reach` only;
    /// each voter signs with its own key. The decision, if one is reached.
    fn run(
        prop: &mut Proposal,
        voters: &mut BTreeMap<u8, AcceptorState>,
        reach: &[u8],
    ) -> Option<TakeoverMsg> {
        let mut msgs = vec![prop.prepare()];
        for _ in 0..10 {
            let mut next = Vec::new();
            for m in msgs.drain(..) {
                for v in reach {
                    let Some(state) = voters.get_mut(v) else {
                        continue;
                    };
                    let identity = node_identity(*v as usize);
                    let reply = state.handle(&m, |ballot, heir| {
                        Some(Vote::new(&identity, RING, prop.dead, ballot, heir))
                    });
                    if let Some(reply) = reply {
                        match prop.handle(p(*v), &reply) {
                            Some(ProposerAction::ToVoters(m)) => next.push(m),
                            Some(ProposerAction::Chosen(_, decision)) => return Some(decision),
                            None => {}
                        }
                    }
                }
            }
            msgs = next;
        }
        None
    }

    fn heir(decision: Option<TakeoverMsg>) -> Option<PeerId> {
        match decision? {
            TakeoverMsg::Chosen { heir, .. } => Some(heir),
            _ => None,
        }
    }

    /// A Nack naming round `u64::MAX` used to overflow `round + 1` in the proposer.
    #[test]
    fn takeover_nack_with_max_round_does_not_panic() {
        let seeds: Vec<PeerId> = (1..=3).map(p).collect();
        let mut prop = Proposal::new(p(1), RING, p(3), &seeds, 1);
        let promised = Ballot {
            round: u64::MAX,
            proposer: p(2),
        };
        let _ = prop.handle(p(2), &TakeoverMsg::Nack { promised });
        assert_eq!(TakeoverMsg::Nack { promised }.round(), u64::MAX);
    }

    #[test]
    fn partition_sides_cannot_choose_two_heirs() {
        let seeds: Vec<PeerId> = (1..=6).map(p).collect();
        let dead = p(6);
        let mut voters: BTreeMap<u8, AcceptorState> =
            (1..=5).map(|i| (i, AcceptorState::default())).collect();
        // Side A = {1,2}, side B = {3,4,5}: only B has a majority of the 5 voters.
        let mut a = Proposal::new(p(1), RING, dead, &seeds, 1);
        let mut b = Proposal::new(p(3), RING, dead, &seeds, 1);
        assert_eq!(heir(run(&mut a, &mut voters, &[1, 2])), None);
        assert_eq!(heir(run(&mut b, &mut voters, &[3, 4, 5])), Some(p(3)));
        // After healing, A retries and must choose B's heir.
        let mut a2 = Proposal::new(p(1), RING, dead, &seeds, 1);
        assert_eq!(
            heir(run(&mut a2, &mut voters, &[1, 2, 3, 4, 5])),
            Some(p(3))
        );
    }

    /// The decision carries a quorum of votes, each good for exactly that decision and
    /// no other (another heir, ballot, dead peer or ring).
    #[test]
    fn a_decision_carries_a_quorum_of_votes_for_itself_only() {
        let seeds: Vec<PeerId> = (1..=5).map(p).collect();
        let dead = p(5);
        let mut voters: BTreeMap<u8, AcceptorState> =
            (1..=4).map(|i| (i, AcceptorState::default())).collect();
        let mut prop = Proposal::new(p(2), RING, dead, &seeds, 1);
        let decision = run(&mut prop, &mut voters, &[1, 2, 3, 4]).expect("a decision");
        let TakeoverMsg::Chosen {
            heir,
            ballot,
            votes,
        } = decision
        else {
            panic!("not a decision: {decision:?}");
        };
        assert_eq!(heir, p(2));
        assert_eq!(votes.len(), 3, "a quorum of 4 voters");
        for v in &votes {
            assert_eq!(v.verify(RING, dead, ballot, heir), Ok(()));
            assert!(v.verify(RING, dead, ballot, p(1)).is_err(), "another heir");
            assert!(
                v.verify(RING + 1, dead, ballot, heir).is_err(),
                "another ring"
            );
            assert!(
                v.verify(RING, p(4), ballot, heir).is_err(),
                "another dead peer"
            );
            let later = Ballot {
                round: ballot.round + 1,
                ..ballot
            };
            assert!(v.verify(RING, dead, later, heir).is_err(), "another ballot");
        }
    }

    /// A voter whose vote does not verify (another key, or a vote for another heir) is
    /// not counted: the proposer never builds a decision it could not prove.
    #[test]
    fn the_proposer_counts_only_votes_that_prove_the_decision() {
        let seeds: Vec<PeerId> = (1..=3).map(p).collect();
        let dead = p(3);
        let mut prop = Proposal::new(p(1), RING, dead, &seeds, 1);
        let ballot = prop.ballot;
        for v in [1, 2] {
            let promise = TakeoverMsg::Promise {
                ballot,
                accepted: None,
            };
            let _ = prop.handle(p(v), &promise);
        }
        assert_eq!(prop.heir, Some(p(1)));
        // Voter 2's acceptance signed by voter 1's key, then one for another heir.
        let forged = Vote {
            voter: p(2),
            ..Vote::new(&node_identity(1), RING, dead, ballot, p(1))
        };
        let wrong_heir = Vote::new(&node_identity(2), RING, dead, ballot, p(2));
        for vote in [forged, wrong_heir] {
            let accepted = TakeoverMsg::Accepted { ballot, vote };
            assert_eq!(prop.handle(p(2), &accepted), None);
        }
        let own = Vote::new(&node_identity(1), RING, dead, ballot, p(1));
        assert_eq!(
            prop.handle(p(1), &TakeoverMsg::Accepted { ballot, vote: own }),
            None,
            "one good vote of the two needed"
        );
        let good = Vote::new(&node_identity(2), RING, dead, ballot, p(1));
        let action = prop.handle(p(2), &TakeoverMsg::Accepted { ballot, vote: good });
        assert!(matches!(action, Some(ProposerAction::Chosen(h, _)) if h == p(1)));
    }
}
