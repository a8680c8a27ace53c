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
//!
//! Each participant's claims travel signed by that participant ([`SignedClaims`]: its
//! Ed25519 identity key, which its peer id binds, over the universe, its id and the
//! claims). Relays pass the signature on unchanged, and every peer checks it before it
//! takes a claims version, so no peer can promise or accept in another participant's
//! name: two forged acceptances can no longer make a value look decided. Claims without
//! a good signature are dropped and counted ([`Merged::unproven`]). A signature does not
//! stop a peer from inventing participants (a fresh key each); with `--peer-keys`
//! ([`Consensus::set_admitted`]) only listed peers take part, and the claims of any
//! other are dropped and counted ([`Merged::unlisted`]).

use super::addr::AddrRange;
use gossip::identity::{self, Identity, ProofError, Signature, DOMAIN_BOOTSTRAP_CLAIMS, KEY_LEN};
use gossip::peer::PeerId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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

/// Every participant's claims, as held.
pub type ClaimsMap = BTreeMap<PeerId, Claims>;

/// One participant's claims as gossiped, with the participant's signature.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedClaims {
    /// The claims.
    pub claims: Claims,
    /// The participant's Ed25519 key (it must bind to the participant's id).
    pub key: [u8; KEY_LEN],
    /// Over the universe, the participant's id and the claims, under
    /// `DOMAIN_BOOTSTRAP_CLAIMS`.
    pub signature: Signature,
}

/// Every participant's signed claims, as gossiped.
pub type SignedClaimsMap = BTreeMap<PeerId, SignedClaims>;

/// What a participant signs: its claims in a bootstrap over `universe`.
fn claims_statement(universe: AddrRange, participant: PeerId, claims: &Claims) -> Vec<u8> {
    gossip::codec::encode(&(universe, participant, claims))
}

impl SignedClaims {
    /// `identity`'s own `claims` in a bootstrap over `universe`.
    pub fn new(identity: &Identity, universe: AddrRange, claims: Claims) -> SignedClaims {
        let statement = claims_statement(universe, identity.id(), &claims);
        SignedClaims {
            key: *identity.signing_key(),
            signature: identity.sign(DOMAIN_BOOTSTRAP_CLAIMS, &statement),
            claims,
        }
    }

    /// Whether `participant` signed these claims for a bootstrap over `universe`.
    pub fn verify(&self, universe: AddrRange, participant: &PeerId) -> Result<(), ProofError> {
        let statement = claims_statement(universe, *participant, &self.claims);
        identity::verify(
            participant,
            &self.key,
            DOMAIN_BOOTSTRAP_CLAIMS,
            &statement,
            &self.signature,
        )
    }
}

/// What [`Consensus::merge`] took and refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The claims that were new to us (to relay, signatures as they came).
    pub news: SignedClaimsMap,
    /// Newer claims refused because their signature did not prove them.
    pub unproven: u64,
    /// Claims refused because their participant is not on the `--peer-keys` list.
    pub unlisted: u64,
}

/// The bootstrap state of one peer.
#[derive(Clone, Debug)]
pub struct Consensus {
    me: PeerId,
    universe: AddrRange,
    quorum: usize,
    participant: bool,
    claims: ClaimsMap,
    /// The signature of every other participant's claims we hold, to relay them.
    proofs: BTreeMap<PeerId, ([u8; KEY_LEN], Signature)>,
    /// `--peer-keys`: the only peers that may take part (`None`: any).
    admitted: Option<BTreeSet<PeerId>>,
    propose_at: Option<Instant>,
    retry: Duration,
}

impl Consensus {
    /// The state of `me` in a bootstrap over `universe`, expecting `n` peers; observers
    /// (`participant == false`) only watch for the decision.
    pub fn new(
        me: PeerId,
        universe: AddrRange,
        n: usize,
        participant: bool,
        retry: Duration,
    ) -> Consensus {
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
            universe,
            quorum: n / 2 + 1,
            participant,
            claims,
            proofs: BTreeMap::new(),
            admitted: None,
            propose_at: None,
            retry,
        }
    }

    /// `--peer-keys`: only these peers take part from now on (`None`: any peer); the
    /// claims held of others are dropped.
    pub fn set_admitted(&mut self, admitted: Option<BTreeSet<PeerId>>) {
        if let Some(ids) = &admitted {
            let me = self.me;
            self.claims.retain(|p, _| *p == me || ids.contains(p));
            self.proofs.retain(|p, _| ids.contains(p));
        }
        self.admitted = admitted;
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

    /// All claims known.
    pub fn claims(&self) -> &ClaimsMap {
        &self.claims
    }

    /// All claims known, signed, to gossip: ours signed by `identity` (left out without
    /// one: nobody would take them), the others' with the signatures they came with.
    pub fn signed_claims(&self, identity: Option<&Identity>) -> SignedClaimsMap {
        let mut out = SignedClaimsMap::new();
        for (peer, claims) in &self.claims {
            let signed = if *peer == self.me {
                identity.map(|id| SignedClaims::new(id, self.universe, claims.clone()))
            } else {
                self.proofs.get(peer).map(|(key, signature)| SignedClaims {
                    claims: claims.clone(),
                    key: *key,
                    signature: *signature,
                })
            };
            if let Some(signed) = signed {
                out.insert(*peer, signed);
            }
        }
        out
    }

    /// Our own claims, signed by `identity`, to broadcast after a change.
    pub fn signed_own(&self, identity: &Identity) -> Option<SignedClaims> {
        let own = self.claims.get(&self.me)?;
        Some(SignedClaims::new(identity, self.universe, own.clone()))
    }

    /// Participants needed.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Participants known (including us).
    pub fn known(&self) -> usize {
        self.claims.len()
    }

    /// Merges gossiped claims: a participant's claims are taken if their version is
    /// higher than what we hold and the participant's signature proves them (our own
    /// entry is ours alone). Returns what was new, and how many newer claims were refused.
    pub fn merge(&mut self, delta: &SignedClaimsMap) -> Merged {
        let mut merged = Merged::default();
        for (peer, signed) in delta {
            if *peer == self.me {
                continue;
            }
            let newer = self
                .claims
                .get(peer)
                .is_none_or(|cur| signed.claims.version > cur.version);
            if !newer {
                continue;
            }
            if self
                .admitted
                .as_ref()
                .is_some_and(|ids| !ids.contains(peer))
            {
                merged.unlisted = merged.unlisted.saturating_add(1);
                continue;
            }
            if signed.verify(self.universe, peer).is_err() {
                merged.unproven = merged.unproven.saturating_add(1);
                continue;
            }
            self.claims.insert(*peer, signed.claims.clone());
            self.proofs.insert(*peer, (signed.key, signed.signature));
            merged.news.insert(*peer, signed.clone());
        }
        merged
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
    pub fn check(claims: &SignedClaimsMap) -> Result<(), &'static str> {
        if claims.len() > MAX_PARTICIPANTS {
            return Err("too many bootstrap participants");
        }
        let mut claims = claims.values().map(|s| &s.claims);
        let too_long = claims.clone().any(|c| {
            c.accepted
                .as_ref()
                .is_some_and(|a| a.1.len() > MAX_PARTICIPANTS)
        });
        if too_long {
            return Err("bootstrap value too long");
        }
        let too_high = claims.any(|c| {
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
    use gossip::sim::node_identity;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const U: AddrRange = AddrRange {
        start: 0x0a20_0000,
        end: 0x0a30_0000,
    };

    fn id(i: usize) -> PeerId {
        node_identity(i).id()
    }

    /// Participant `i`'s claims, signed by it.
    fn signed(i: usize, claims: Claims) -> (PeerId, SignedClaims) {
        (id(i), SignedClaims::new(&node_identity(i), U, claims))
    }

    fn top_round(version: u64, round: u64, proposer: PeerId) -> Claims {
        Claims {
            version,
            promised: Ballot { round, proposer },
            accepted: None,
        }
    }

    /// A forged participant promising round `u64::MAX` used to make our next proposal's
    /// `round + 1` overflow (a panic): now its claims are refused at decode, and the
    /// arithmetic saturates anyway.
    #[test]
    fn bootstrap_claims_with_max_round_do_not_panic() {
        let evil = id(9);
        let claims = SignedClaimsMap::from([signed(9, top_round(u64::MAX, u64::MAX, evil))]);
        assert!(Consensus::check(&claims).is_err());
        // Even if such claims got in (an old snapshot), stepping must not panic.
        let mut c = Consensus::new(id(7), U, 3, true, Duration::from_secs(2));
        assert_eq!(c.merge(&claims).unproven, 0);
        c.merge(&SignedClaimsMap::from([signed(8, Claims::default())]));
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
        let evil = id(9);
        let forged = top_round(MAX_CLAIMS_VERSION, MAX_ROUND, evil);
        let claims = SignedClaimsMap::from([signed(9, forged)]);
        assert!(Consensus::check(&claims).is_ok(), "valid on the wire");
        let mut c = Consensus::new(id(7), U, 2, true, Duration::from_secs(2));
        c.merge(&claims);
        let mut rng = StdRng::seed_from_u64(1);
        let mut t = Instant::now();
        let me = node_identity(7);
        for _ in 0..10 {
            c.step(t, &mut rng);
            let gossiped = c.signed_claims(Some(&me));
            assert_eq!(Consensus::check(&gossiped), Ok(()), "{:?}", c.own());
            t = c.deadline().unwrap_or(t) + Duration::from_secs(1);
        }
    }

    /// `consensus=1` (a router launched with no peers): it decides alone, at its first
    /// deadline, without any gossip coming back.
    #[test]
    fn a_quorum_of_one_decides_alone() {
        let me = id(7);
        let mut c = Consensus::new(me, U, 1, true, Duration::from_secs(2));
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        c.step(t0, &mut rng);
        let at = c.deadline().expect("a proposal is scheduled");
        assert!(c.decision().is_none());
        assert!(c.step(at, &mut rng), "the proposal changes our claims");
        assert_eq!(c.decision(), Some(vec![me]));
    }

    /// Claims in a participant's name are taken only with that participant's signature
    /// over exactly these claims in this universe; everything else is counted and
    /// changes nothing. Before the claims were signed, one peer could promise and accept
    /// in the names of others, and so make a value look decided.
    #[test]
    fn claims_not_signed_by_their_participant_are_refused_and_counted() {
        let mut c = Consensus::new(id(7), U, 3, true, Duration::from_secs(2));
        let victim = id(2);
        let claims = |v| Claims {
            version: v,
            promised: Ballot {
                round: 5,
                proposer: id(9),
            },
            accepted: Some((
                Ballot {
                    round: 5,
                    proposer: id(9),
                },
                vec![id(9)],
            )),
        };
        let honest = SignedClaims::new(&node_identity(2), U, claims(3));
        let forgeries = [
            // Signed by the forger's own key, in the victim's name.
            SignedClaims::new(&node_identity(9), U, claims(3)),
            // The victim's signature over other claims.
            SignedClaims {
                claims: claims(4),
                ..honest.clone()
            },
            // The victim's signature, made for a bootstrap over another universe.
            SignedClaims::new(
                &node_identity(2),
                AddrRange {
                    start: U.start,
                    end: U.end - 1,
                },
                claims(3),
            ),
            // A random signature with the victim's key.
            SignedClaims {
                signature: Signature([7; gossip::identity::SIGNATURE_LEN]),
                ..honest.clone()
            },
        ];
        for (k, forged) in forgeries.into_iter().enumerate() {
            let merged = c.merge(&SignedClaimsMap::from([(victim, forged)]));
            assert_eq!(merged.unproven, 1, "forgery {k}");
            assert!(merged.news.is_empty(), "forgery {k}");
            assert!(!c.claims().contains_key(&victim), "forgery {k}");
        }
        let merged = c.merge(&SignedClaimsMap::from([(victim, honest.clone())]));
        assert_eq!((merged.unproven, merged.news.len()), (0, 1));
        assert_eq!(c.claims().get(&victim), Some(&honest.claims));
        // Relayed as it came, and checked by the next peer in turn.
        let relayed = c.signed_claims(None);
        assert_eq!(relayed.get(&victim), Some(&honest));
        assert!(!relayed.contains_key(&id(7)), "ours goes only signed");
        let mut next = Consensus::new(id(8), U, 3, true, Duration::from_secs(2));
        assert_eq!(next.merge(&relayed).news.len(), 1);
        let ours = c.signed_claims(Some(&node_identity(7)));
        assert_eq!(next.merge(&ours).news.len(), 1, "our own, signed");
    }

    /// With `--peer-keys`, claims of unlisted participants are refused even when well
    /// signed (a peer cannot invent participants), and those held are dropped.
    #[test]
    fn with_a_key_list_only_listed_participants_take_part() {
        let at = |v| Claims {
            version: v,
            ..Claims::default()
        };
        let mut c = Consensus::new(id(7), U, 3, true, Duration::from_secs(2));
        let gossip = SignedClaimsMap::from([signed(1, at(1)), signed(2, at(1))]);
        assert_eq!(c.merge(&gossip).news.len(), 2);
        c.set_admitted(Some(BTreeSet::from([id(7), id(1)])));
        assert_eq!(
            c.known(),
            2,
            "the unlisted participant's claims are dropped"
        );
        let newer = SignedClaimsMap::from([signed(1, at(2)), signed(2, at(2))]);
        let merged = c.merge(&newer);
        assert_eq!((merged.news.len(), merged.unlisted), (1, 1));
        assert!(merged.news.contains_key(&id(1)));
        c.set_admitted(None);
        assert_eq!(c.merge(&newer).news.len(), 1, "any peer again");
        assert_eq!(c.known(), 3);
    }

    /// Three participants exchanging only signed gossip decide one seed set.
    #[test]
    fn three_participants_decide_over_signed_claims() {
        let ids = [1, 2, 3];
        let mut nodes: Vec<Consensus> = ids
            .iter()
            .map(|&i| Consensus::new(id(i), U, 3, true, Duration::from_secs(2)))
            .collect();
        let mut rng = StdRng::seed_from_u64(3);
        let mut t = Instant::now();
        for _ in 0..50 {
            for n in &mut nodes {
                n.step(t, &mut rng);
            }
            let gossip: Vec<SignedClaimsMap> = (nodes.iter().zip(ids))
                .map(|(n, i)| n.signed_claims(Some(&node_identity(i))))
                .collect();
            for n in &mut nodes {
                for g in &gossip {
                    assert_eq!(n.merge(g).unproven, 0);
                }
            }
            t += Duration::from_millis(500);
        }
        let decided: Vec<Option<Vec<PeerId>>> = nodes.iter().map(|n| n.decision()).collect();
        assert!(decided[0].is_some(), "{decided:?}");
        assert!(decided.iter().all(|d| *d == decided[0]), "{decided:?}");
    }
}
