//! IPAM as a gossip channel, and its peer-to-peer protocols: ring merge with
//! self-protection, donation, foreign-ring detection, `rmpeer` and leave.
//!
//! What anti-entropy serves ([`GossipChannel::updates_for`]) is the state of the last
//! *persisted* snapshot, so nothing this peer wrote is ever seen by others before it is on
//! disk. Merged gossip is filtered first: entries outside the range are refused (the whole
//! message, counted), and entries that would take space this peer owns (a higher version
//! of our token naming someone else, or a token inserted inside our range) are rejected
//! and counted as inconsistent, like equal-version conflicts. A ring with another identity
//! (seeded separately, or over another range) is refused whole and reported once per
//! foreign ring; the merge still succeeds, so the mesh keeps the link.

use super::allocator::{Ipam, Pending, PendingKind, MAX_FOREIGN_RINGS};
use super::ring::{
    next_version, takeover_version, Entries, Entry, Ring, MAX_RING_ENTRIES, MAX_VERSION_STEP,
};
use super::space::{self, free_count};
use super::takeover::{Proposal, ProposerAction, TakeoverMsg};
use super::wire::{GossipMsg, UnicastMsg, WireError};
use super::{IpamConfig, IpamError, IpamEvent, IpamOutput, Reply, RequestId};
use gossip::channel::{ChannelError, GossipChannel};
use gossip::codec;
use gossip::peer::PeerId;
use rand::Rng;
use std::time::Instant;

/// How often one peer is handed our whole ring in answer to its bootstrap claims.
pub(super) const HANDOUT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Peers remembered for [`HANDOUT_EVERY`]: past that, no ring is handed out until some
/// expire.
pub(super) const MAX_HANDOUTS: usize = 1_024;

impl Ipam {
    fn refuse(&mut self, e: WireError) -> ChannelError {
        match e {
            WireError::Decode(d) => {
                self.stats.malformed += 1;
                ChannelError::Decode(d)
            }
            WireError::Invalid(why) => {
                self.stats.malformed += 1;
                ChannelError::Invalid(why)
            }
            WireError::OutOfRange(why) => {
                self.stats.out_of_range += 1;
                ChannelError::Invalid(why)
            }
        }
    }

    /// Merges one gossip message; `Some(news)` if it changed anything.
    pub(super) fn merge_gossip(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        let msg = GossipMsg::decode(bytes).map_err(|e| self.refuse(e))?;
        match msg {
            GossipMsg::Ring {
                sender,
                universe,
                seeds,
                entries,
            } => {
                let theirs = Ring::empty(universe, seeds);
                if universe != self.universe {
                    let why = format!("a ring over {universe}");
                    self.report_foreign(sender, why, &theirs);
                    return Ok(None);
                }
                match &self.ring {
                    Some(ours) if ours.id() != theirs.id() => {
                        let why = format!(
                            "ring {} seeded by {} peers",
                            theirs.id(),
                            theirs.seeds().len()
                        );
                        self.report_foreign(sender, why, &theirs);
                        Ok(None)
                    }
                    Some(_) => Ok(self.merge_entries(&entries).map(|news| self.ring_msg(news))),
                    None => {
                        // Adopt only a whole ring; parts come again with the whole.
                        let mut ring = theirs;
                        ring.merge_entries(&entries);
                        if !ring.is_complete() {
                            return Ok(None);
                        }
                        self.install_ring(ring);
                        Ok(Some(self.full_gossip()))
                    }
                }
            }
            GossipMsg::Bootstrap {
                sender,
                universe,
                claims,
            } => {
                if universe != self.universe {
                    let why = format!("a bootstrap over {universe}");
                    self.report_foreign(sender, why, &Ring::empty(universe, vec![]));
                    return Ok(None);
                }
                if self.ring.is_some() {
                    // It lacks our ring: hand it over now rather than at the next round
                    // (at most once per HANDOUT_EVERY per peer: `sender` is whatever the
                    // message says, and every router would answer it).
                    if self.may_hand_ring_to(sender) {
                        let full = self.full_gossip();
                        self.unicast(sender, &UnicastMsg::Gossip(full));
                    }
                    return Ok(None);
                }
                let news = self.consensus.merge(&claims);
                self.step_consensus();
                Ok((!news.is_empty()).then(|| {
                    GossipMsg::Bootstrap {
                        sender,
                        universe,
                        claims: news,
                    }
                    .encode()
                }))
            }
        }
    }

    /// Whether to hand our whole ring to `peer` now (see [`HANDOUT_EVERY`]).
    fn may_hand_ring_to(&mut self, peer: PeerId) -> bool {
        let now = self.now;
        let recent = |at: &Instant| now.saturating_duration_since(*at) < HANDOUT_EVERY;
        if self.handouts.get(&peer).is_some_and(recent) {
            self.stats.handouts_limited += 1;
            return false;
        }
        if self.handouts.len() >= MAX_HANDOUTS {
            self.handouts.retain(|_, at| recent(at));
            if self.handouts.len() >= MAX_HANDOUTS {
                self.stats.handouts_limited += 1;
                return false;
            }
        }
        self.handouts.insert(peer, now);
        true
    }

    fn ring_msg(&self, entries: Entries) -> Vec<u8> {
        GossipMsg::Ring {
            sender: self.me,
            universe: self.universe,
            seeds: self
                .ring
                .as_ref()
                .map(|r| r.seeds().to_vec())
                .unwrap_or_default(),
            entries,
        }
        .encode()
    }

    fn report_foreign(&mut self, peer: PeerId, theirs: String, ring: &Ring) {
        self.stats.foreign_ring += 1;
        let key = format!("{} {}", ring.id(), ring.universe());
        if self.foreign.contains_key(&key) || self.foreign.len() >= MAX_FOREIGN_RINGS {
            return;
        }
        if self.foreign.insert(key, peer).is_none() {
            let ours = match &self.ring {
                Some(r) => format!("ring {} seeded by {} peers", r.id(), r.seeds().len()),
                None => "no ring yet".to_string(),
            };
            self.outbox.push(IpamOutput::Event(IpamEvent::ForeignRing {
                peer,
                ours,
                theirs,
            }));
        }
    }

    /// Merges ring entries after self-protection; returns what changed.
    pub(super) fn merge_entries(&mut self, entries: &Entries) -> Option<Entries> {
        let ring = self.ring.as_mut()?;
        let mut accepted = Entries::new();
        let mut rejected = 0;
        // Each message is capped, the ring in total too: new tokens past the cap are
        // dropped and counted (an honest ring never splits this far).
        let mut room = MAX_RING_ENTRIES.saturating_sub(ring.entries().len());
        for (&t, e) in entries {
            let takes_ours = match ring.entry(t) {
                Some(cur) => cur.owner == self.me && e.version > cur.version,
                None => ring.owner_of(t).is_some_and(|(_, o)| o.owner == self.me),
            };
            // A version far above ours is forged (or a replica 256 takeovers behind):
            // taking it could push the token to the version limit in one message.
            let held = ring.entry(t).map_or(0, |cur| cur.version);
            let jump = e.version.saturating_sub(held) > MAX_VERSION_STEP;
            if jump {
                self.stats.version_jumps += 1;
            }
            if takes_ours || jump {
                rejected += 1;
            } else if ring.entry(t).is_none() && room == 0 {
                self.stats.ring_full += 1;
            } else {
                if ring.entry(t).is_none() {
                    room -= 1;
                }
                accepted.insert(t, *e);
            }
        }
        let out = ring.merge_entries(&accepted);
        rejected += out.conflicts.len();
        if rejected > 0 {
            self.stats.inconsistent += rejected as u64;
            let event = IpamEvent::Inconsistent { entries: rejected };
            self.outbox.push(IpamOutput::Event(event));
        }
        if out.news.is_empty() {
            return None;
        }
        self.outbox.dirty();
        if out.news.values().any(|e| e.owner == self.me) {
            self.stats.donations_received += 1;
            self.asking = None;
        }
        self.serve_pending();
        Some(out.news)
    }

    /// A unicast from `from`.
    pub(super) fn on_unicast(&mut self, from: PeerId, payload: &[u8]) -> Result<(), ChannelError> {
        let msg = UnicastMsg::decode(payload, self.universe).map_err(|e| self.refuse(e))?;
        let ring = self.ring_id();
        match msg {
            UnicastMsg::Gossip(bytes) => {
                if let Some(news) = self.merge_gossip(&bytes)? {
                    self.outbox.push(IpamOutput::Broadcast(news));
                }
            }
            UnicastMsg::SpaceRequest { ring: r, within } if r == ring && !self.leaving => {
                self.donate(from, within);
            }
            UnicastMsg::SpaceRequest { .. } => self.unicast(from, &UnicastMsg::Denied { ring }),
            UnicastMsg::Space { ring: r, entries } if r == ring => {
                if !self.owned_by_sender(from, &entries) {
                    // Space the sender does not own (as far as we know) is not its to
                    // give. An honest donor whose own gain we have not heard of yet
                    // loses nothing: its broadcast of the same entries reaches us.
                    self.stats.inconsistent += entries.len() as u64;
                    let event = IpamEvent::Inconsistent {
                        entries: entries.len(),
                    };
                    self.outbox.push(IpamOutput::Event(event));
                } else if let Some(news) = self.merge_entries(&entries) {
                    self.broadcast_entries(news);
                }
            }
            UnicastMsg::Denied { ring: r } if r == ring => {
                if let Some(a) = self.asking.clone().filter(|a| a.donor == Some(from)) {
                    self.asking = None;
                    self.ask_next(a.within, a.tried);
                }
            }
            UnicastMsg::Takeover { ring: r, dead, msg } if r == ring => {
                self.on_takeover(from, dead, msg);
            }
            _ => {
                self.stats.foreign_ring += 1;
            }
        }
        Ok(())
    }

    /// Whether every token in a donation from `from` lies in space `from` owns in our
    /// replica (a token it rewrites, or a new one inside its range).
    fn owned_by_sender(&self, from: PeerId, entries: &Entries) -> bool {
        let Some(ring) = self.ring.as_ref() else {
            return false;
        };
        entries.keys().all(|t| match ring.entry(*t) {
            Some(cur) => cur.owner == from,
            None => ring.owner_of(*t).is_some_and(|(_, o)| o.owner == from),
        })
    }

    /// Gives `to` part of our free space inside `within`, or says no.
    fn donate(&mut self, to: PeerId, within: super::AddrRange) {
        let ring_id = self.ring_id();
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let mine = ring.owned_by(&self.me);
        let Some(chunk) = space::donation(&mine, &self.by_addr, within) else {
            self.unicast(to, &UnicastMsg::Denied { ring: ring_id });
            return;
        };
        let Some((r, cur)) = ring.owner_of(chunk.start).map(|(r, e)| (r, *e)) else {
            return;
        };
        let mut delta = Entries::new();
        let tail = super::AddrRange {
            start: chunk.end,
            end: r.end,
        };
        if !tail.is_empty() {
            let free = free_count(tail, &self.by_addr);
            delta.insert(
                tail.start,
                Entry {
                    owner: self.me,
                    version: 1,
                    free,
                },
            );
        }
        let given = Entry {
            owner: to,
            version: 1,
            free: chunk.len(),
        };
        // A donation may add two tokens; a full ring takes none.
        let new_tokens = usize::from(chunk.start != r.start) + usize::from(chunk.end != r.end);
        if ring.entries().len() + new_tokens > MAX_RING_ENTRIES {
            self.stats.ring_full += 1;
            self.unicast(to, &UnicastMsg::Denied { ring: ring_id });
            return;
        }
        // The head token is rewritten: at the version limit it cannot be, so say no.
        let Some(bumped) = next_version(cur.version) else {
            self.stats.version_exhausted += 1;
            self.unicast(to, &UnicastMsg::Denied { ring: ring_id });
            return;
        };
        if chunk.start == r.start {
            delta.insert(
                r.start,
                Entry {
                    version: bumped,
                    ..given
                },
            );
        } else {
            delta.insert(chunk.start, given);
            let head = super::AddrRange {
                start: r.start,
                end: chunk.start,
            };
            let free = free_count(head, &self.by_addr);
            delta.insert(
                r.start,
                Entry {
                    version: bumped,
                    free,
                    ..cur
                },
            );
        }
        for (t, e) in &delta {
            ring.set(*t, *e);
        }
        self.outbox.dirty();
        self.stats.donations_given += 1;
        self.unicast(
            to,
            &UnicastMsg::Space {
                ring: ring_id,
                entries: delta.clone(),
            },
        );
        self.broadcast_entries(delta);
    }

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
        let ring = self
            .ring
            .as_ref()
            .map(|r| (r.owned_by(&dead).is_empty(), r.seeds().to_vec()));
        let Some((owns_nothing, seeds)) = ring else {
            return id;
        };
        if owns_nothing {
            self.complete(id, Ok(Reply::Removed { heir: None }));
            return id;
        }
        let round = self
            .votes
            .get(&dead)
            .map_or(0, |v| v.promised.round)
            .saturating_add(1);
        let proposal = Proposal::new(self.me, dead, &seeds, round);
        let first = proposal.prepare();
        let resend = now + self.config.donation_retry;
        self.proposals.insert(dead, (proposal, id, resend));
        let deadline = now + self.config.request_timeout;
        let kind = PendingKind::Remove { dead };
        self.pending.insert(id, Pending { kind, deadline });
        self.send_to_voters(dead, first);
        id
    }

    fn send_to_voters(&mut self, dead: PeerId, msg: TakeoverMsg) {
        let voters: Vec<PeerId> = match self.proposals.get(&dead) {
            Some(p) => p.0.voters.iter().copied().collect(),
            None => return,
        };
        for v in voters {
            self.send_takeover(v, dead, msg.clone());
        }
    }

    fn send_takeover(&mut self, to: PeerId, dead: PeerId, msg: TakeoverMsg) {
        if to == self.me {
            self.on_takeover(self.me, dead, msg);
        } else {
            let ring = self.ring_id();
            self.unicast(to, &UnicastMsg::Takeover { ring, dead, msg });
        }
    }

    fn on_takeover(&mut self, from: PeerId, dead: PeerId, msg: TakeoverMsg) {
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
                    let state = self.votes.entry(dead).or_default();
                    let before = *state;
                    let reply = state.handle(&msg);
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
            TakeoverMsg::Chosen { heir }
                if heir == self.me && dead != self.me && !self.is_reachable(&dead) =>
            {
                self.take_over(dead)
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
                    Some(ProposerAction::Chosen(heir)) => {
                        self.send_takeover(heir, dead, TakeoverMsg::Chosen { heir });
                        if heir != self.me {
                            // Resent until the heir's takeover reaches our ring: a lost
                            // notice must not leave the space stranded.
                            let retry = self.now + self.config.donation_retry;
                            let give_up = self.now + self.config.request_timeout * 6;
                            self.heir_notices.insert(dead, (heir, retry, give_up));
                        }
                        self.end_proposal(dead, Ok(Reply::Removed { heir: Some(heir) }));
                    }
                    None => {}
                }
            }
        }
    }

    fn end_proposal(&mut self, dead: PeerId, result: Result<Reply, IpamError>) {
        if let Some((_, id, _)) = self.proposals.remove(&dead) {
            self.pending.remove(&id);
            self.complete(id, result);
        }
    }

    /// Tells chosen heirs again until their takeover of the dead peer's space shows in
    /// our ring (or a minute passes: then the heir is likely gone too, and a new `rmpeer`
    /// finds the same decision and delivers it).
    pub(super) fn renotify_heirs(&mut self, now: Instant) {
        let due: Vec<(PeerId, PeerId, Instant)> = self
            .heir_notices
            .iter()
            .filter(|(_, n)| n.1 <= now)
            .map(|(dead, n)| (*dead, n.0, n.2))
            .collect();
        for (dead, heir, give_up) in due {
            let taken = self
                .ring
                .as_ref()
                .is_none_or(|r| r.owned_by(&dead).is_empty());
            if taken || give_up <= now {
                self.heir_notices.remove(&dead);
                continue;
            }
            self.stats.heir_renotified += 1;
            self.send_takeover(heir, dead, TakeoverMsg::Chosen { heir });
            let next = now + self.config.donation_retry;
            self.heir_notices.insert(dead, (heir, next, give_up));
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
    fn take_over(&mut self, dead: PeerId) {
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

    /// Why a request waits, for its timeout error and the status.
    pub(super) fn waiting_reason(&self, kind: &PendingKind) -> String {
        let Some(ring) = &self.ring else {
            return match self.config.init {
                super::InitMode::Observer => {
                    "awaiting the IP allocation ring from another peer (this peer is an observer)"
                        .to_string()
                }
                super::InitMode::SeedNames(ref names) => format!(
                    "awaiting the seed peers: {} of {} known",
                    self.seed_names_known(names),
                    names.len()
                ),
                _ => format!(
                    "awaiting consensus: {} of {} peers known",
                    self.consensus.known(),
                    self.expected_peers()
                ),
            };
        };
        match kind {
            PendingKind::Remove { dead } => match self.proposals.get(dead) {
                Some((p, _, _)) => format!(
                    "rmpeer {dead}: {} of the {} votes needed (a majority of the ring's {} seed \
                     peers other than {dead}); bring more of them back",
                    p.answered(),
                    p.quorum(),
                    p.voters.len()
                ),
                None => format!("rmpeer {dead}: no vote"),
            },
            _ => {
                let unreachable = ring
                    .advertised_free()
                    .into_iter()
                    .filter(|(p, free)| *p != self.me && *free > 0)
                    .all(|(p, _)| !self.is_reachable(&p));
                if unreachable {
                    "no free address here and every peer with free space is unreachable".into()
                } else {
                    "no free address here; waiting for a donation from another peer".into()
                }
            }
        }
    }

    /// How many of the seed names are this peer or a reachable peer.
    pub(super) fn seed_names_known(&self, names: &[gossip::peer::ShortName]) -> usize {
        names
            .iter()
            .filter(|n| self.known_peers().any(|p| n.matches(&p)))
            .count()
    }

    pub(super) fn expected_peers(&self) -> usize {
        match &self.config.init {
            super::InitMode::Consensus { peers } => *peers,
            super::InitMode::Seed(s) => s.len(),
            super::InitMode::SeedNames(s) => s.len(),
            super::InitMode::Observer => 0,
        }
    }
}

impl GossipChannel for Ipam {
    fn digest(&self) -> u64 {
        self.durable_digest
    }

    fn summary(&self) -> Vec<Vec<u8>> {
        vec![codec::encode(&self.durable_digest)]
    }

    fn updates_for(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let theirs: u64 = codec::decode(summary)?;
        if theirs == self.durable_digest || self.durable_gossip.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![self.durable_gossip.clone()])
    }

    fn missing_here(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let theirs: u64 = codec::decode(summary)?;
        if theirs == self.durable_digest {
            return Ok(Vec::new());
        }
        Ok(self.summary())
    }

    fn merge(&mut self, now: Instant, update: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        self.now = now;
        self.merge_gossip(update)
    }

    fn handle_unicast(
        &mut self,
        now: Instant,
        source: PeerId,
        payload: &[u8],
    ) -> Result<(), ChannelError> {
        self.now = now;
        self.on_unicast(source, payload)
    }
}

/// Fuzz entry point: arbitrary bytes as IPAM gossip and as a unicast, against a peer with
/// a ring and allocations; never panics, and refused input changes nothing.
pub fn fuzz_ipam_gossip(data: &[u8]) {
    let now = Instant::now();
    let me = PeerId([1; 16]);
    let seeds = vec![me, PeerId([2; 16])];
    let range = "10.32.0.0/24"
        .parse()
        .unwrap_or_else(|_| super::Cidr::default_range());
    let config = IpamConfig::new(range, super::InitMode::Seed(seeds));
    let mut ipam = Ipam::new(me, config, now, 1);
    ipam.allocate(now, super::ContainerId("c".into()), None);
    while let Some(out) = ipam.poll_output() {
        if let IpamOutput::Persist { seq, .. } = out {
            ipam.handle_persisted(seq);
        }
    }
    let before = ipam.snapshot();
    if ipam.merge(now, data).is_err() {
        assert_eq!(ipam.snapshot(), before, "refused gossip changed state");
    }
    let before = ipam.snapshot();
    if ipam.handle_unicast(now, PeerId([2; 16]), data).is_err() {
        assert_eq!(ipam.snapshot(), before, "refused unicast changed state");
    }
    let _ = ipam.updates_for(data);
    let _ = ipam.missing_here(data);
}
