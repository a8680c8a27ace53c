//! IPAM as a gossip channel: ring merge with self-protection, foreign-ring detection,
//! the bootstrap ring handouts, and the unicasts it dispatches to the other protocols.
//!
//! What anti-entropy serves ([`GossipChannel::updates_for`]) is the state of the last
//! *persisted* snapshot, so nothing this peer wrote is ever seen by others before it is on
//! disk. Merged gossip is filtered first: entries outside the range are refused (the whole
//! message, counted), and entries that would take space this peer owns (a higher version
//! of our token naming someone else, or a token inserted inside our range) are rejected
//! and counted as inconsistent, like equal-version conflicts. A ring with another identity
//! (seeded separately, or over another range) is refused whole and reported once per
//! foreign ring; the merge still succeeds, so the mesh keeps the link.

use super::allocator::{Ipam, MAX_FOREIGN_RINGS};
use super::ring::{Entries, Ring, MAX_RING_ENTRIES, MAX_VERSION_STEP};
use super::wire::{GossipMsg, UnicastMsg, WireError};
use super::{IpamConfig, IpamEvent, IpamOutput};
use gossip::channel::{ChannelError, GossipChannel};
use gossip::codec;
use gossip::peer::PeerId;
use std::time::Instant;

/// How often one peer is handed our whole ring in answer to its bootstrap claims.
pub(super) const HANDOUT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Peers remembered for [`HANDOUT_EVERY`]: past that, no ring is handed out until some
/// expire.
pub(super) const MAX_HANDOUTS: usize = 1_024;

impl Ipam {
    pub(super) fn refuse(&mut self, e: WireError) -> ChannelError {
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
                let merged = self.consensus.merge(&claims);
                self.stats.claims_unproven =
                    (self.stats.claims_unproven).saturating_add(merged.unproven);
                self.stats.claims_unlisted =
                    (self.stats.claims_unlisted).saturating_add(merged.unlisted);
                self.step_consensus();
                Ok((!merged.news.is_empty()).then(|| {
                    GossipMsg::Bootstrap {
                        sender,
                        universe,
                        claims: merged.news,
                    }
                    .encode()
                }))
            }
        }
    }

    /// Whether to hand our whole ring to `peer` now (see [`HANDOUT_EVERY`]).
    pub(super) fn may_hand_ring_to(&mut self, peer: PeerId) -> bool {
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

    pub(super) fn ring_msg(&self, entries: Entries) -> Vec<u8> {
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

    pub(super) fn report_foreign(&mut self, peer: PeerId, theirs: String, ring: &Ring) {
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
