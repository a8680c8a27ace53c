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

use gossip::peer::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use super::consensus::Ballot;

/// What a voter remembers for one dead peer (persisted).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct AcceptorState {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The last accepted ballot and heir.
    pub accepted: Option<(Ballot, PeerId)>,
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
    },
    /// The voter promised a higher ballot.
    Nack {
        /// What it promised.
        promised: Ballot,
    },
    /// The heir is chosen; sent to the heir (it writes the tokens).
    Chosen {
        /// The heir.
        heir: PeerId,
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
            | TakeoverMsg::Accepted { ballot } => ballot.round,
            TakeoverMsg::Promise { ballot, accepted } => {
                ballot.round.max(accepted.map_or(0, |a| a.0.round))
            }
            TakeoverMsg::Nack { promised } => promised.round,
            TakeoverMsg::Chosen { .. } | TakeoverMsg::Alive => 0,
        }
    }
}

impl AcceptorState {
    /// The reply to `msg` (a Prepare or Accept), updating the state.
    pub fn handle(&mut self, msg: &TakeoverMsg) -> Option<TakeoverMsg> {
        match *msg {
            TakeoverMsg::Prepare { ballot } if ballot > self.promised => {
                self.promised = ballot;
                Some(TakeoverMsg::Promise {
                    ballot,
                    accepted: self.accepted,
                })
            }
            TakeoverMsg::Accept { ballot, heir } if ballot >= self.promised => {
                self.promised = ballot;
                self.accepted = Some((ballot, heir));
                Some(TakeoverMsg::Accepted { ballot })
            }
            TakeoverMsg::Prepare { .. } | TakeoverMsg::Accept { .. } => Some(TakeoverMsg::Nack {
                promised: self.promised,
            }),
            _ => None,
        }
    }
}

/// The proposer side of one `rmpeer`.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The peer being removed.
    pub dead: PeerId,
    /// The current ballot.
    pub ballot: Ballot,
    /// The voters.
    pub voters: BTreeSet<PeerId>,
    promises: BTreeMap<PeerId, Option<(Ballot, PeerId)>>,
    accepted: BTreeSet<PeerId>,
    /// The heir proposed in phase 2, once there.
    pub heir: Option<PeerId>,
}

/// What the proposer does next.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ProposerAction {
    /// Send this to every voter.
    ToVoters(TakeoverMsg),
    /// The heir is chosen.
    Chosen(PeerId),
}

impl Proposal {
    /// A proposal by `me` to remove `dead`, with ballot round `round`.
    pub fn new(me: PeerId, dead: PeerId, seeds: &[PeerId], round: u64) -> Proposal {
        Proposal {
            dead,
            ballot: Ballot {
                round,
                proposer: me,
            },
            voters: seeds.iter().copied().filter(|s| *s != dead).collect(),
            promises: BTreeMap::new(),
            accepted: BTreeSet::new(),
            heir: None,
        }
    }

    /// Voters needed.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
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
            TakeoverMsg::Accepted { ballot } if ballot == self.ballot => {
                self.accepted.insert(from);
                let heir = self.heir?;
                (self.accepted.len() == self.quorum()).then_some(ProposerAction::Chosen(heir))
            }
            TakeoverMsg::Nack { promised } if promised > self.ballot => {
                Some(ProposerAction::ToVoters(self.retry_above(promised)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: u8) -> PeerId {
        PeerId([i; 16])
    }

    /// Runs a proposal against the given voters' states, delivering to `reach` only.
    fn run(
        prop: &mut Proposal,
        voters: &mut BTreeMap<PeerId, AcceptorState>,
        reach: &[PeerId],
    ) -> Option<PeerId> {
        let mut msgs = vec![prop.prepare()];
        for _ in 0..10 {
            let mut next = Vec::new();
            for m in msgs.drain(..) {
                for v in reach {
                    let Some(state) = voters.get_mut(v) else {
                        continue;
                    };
                    if let Some(reply) = state.handle(&m) {
                        match prop.handle(*v, &reply) {
                            Some(ProposerAction::ToVoters(m)) => next.push(m),
                            Some(ProposerAction::Chosen(h)) => return Some(h),
                            None => {}
                        }
                    }
                }
            }
            msgs = next;
        }
        None
    }

    /// A Nack naming round `u64::MAX` used to overflow `round + 1` in the proposer.
    #[test]
    fn takeover_nack_with_max_round_does_not_panic() {
        let seeds: Vec<PeerId> = (1..=3).map(p).collect();
        let mut prop = Proposal::new(p(1), p(3), &seeds, 1);
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
        let mut voters: BTreeMap<PeerId, AcceptorState> =
            (1..=5).map(|i| (p(i), AcceptorState::default())).collect();
        // Side A = {1,2}, side B = {3,4,5}: only B has a majority of the 5 voters.
        let mut a = Proposal::new(p(1), dead, &seeds, 1);
        let mut b = Proposal::new(p(3), dead, &seeds, 1);
        assert_eq!(run(&mut a, &mut voters, &[p(1), p(2)]), None);
        assert_eq!(run(&mut b, &mut voters, &[p(3), p(4), p(5)]), Some(p(3)));
        // After healing, A retries and must choose B's heir.
        let mut a2 = Proposal::new(p(1), dead, &seeds, 1);
        let all: Vec<PeerId> = (1..=5).map(p).collect();
        assert_eq!(run(&mut a2, &mut voters, &all), Some(p(3)));
    }
}
