//! The topology: every known peer's record of its links; merge, summaries and GC.
//!
//! Each peer owns its [`PeerRecord`] and is the only one to change it. A local link
//! change bumps our version and yields a one-entry [`RecordDelta`] that the mesh
//! broadcasts (batched briefly, so a burst of changes is one delta): a change costs
//! O(1) bytes per recipient, not O(degree) as in Weave, where
//! every change re-sent the changer's whole connection list. Remote deltas are merged
//! per entry ([`record`] explains why that is a CRDT). The topology is gossiped through
//! the same machinery as any channel: it implements [`GossipChannel`].
//!
//! **Provenance.** Every record is signed by its owner over its whole state
//! ([`record`]); a delta carries the owner's proof of the record it completes and the
//! version `base` above which it holds every entry. A receiver builds the record the
//! delta would give, and keeps it only if the owner's key binds to the owner's id and
//! the signature verifies; so a peer can only publish its own record, and no relay can
//! forge, rewrite or inflate anybody's. A verified state is kept with its proof and
//! never verified again (an identical delta changes nothing and costs no check). A
//! delta that does not complete what we hold (we missed an earlier one) is a *gap*: not
//! an offence; the mesh asks the neighbour that sent it for the record at once
//! ([`Topology::take_gaps`]). Refused records are counted by reason
//! ([`Topology::rejected`]) and never close a link: the neighbour may only be relaying.
//!
//! **Caps.** [`wire::MAX_PEERS`] peers, [`wire::MAX_LINKS_PER_PEER`] entries a record,
//! [`wire::MAX_TOTAL_ENTRIES`] entries in all; a record beyond them is refused
//! (`over_cap`).
//!
//! Peers unreachable from us along reported links are dropped by [`Topology::gc`], which
//! the mesh runs a short grace period after a change. A record claiming our id but a
//! different, higher incarnation is never stored; it is reported as a conflict so the
//! mesh can move to a higher epoch.
//!
//! [`GossipChannel`]: crate::channel::GossipChannel

mod channel;
pub use channel::fuzz_decode_topology;
pub mod record;
pub mod wire;

pub use record::{Incarnation, LinkEntry, LinkInfo, PeerRecord};
pub use wire::{RecordDelta, RecordProof, SummaryChunk, TopologyUpdate};

use crate::channel::{ChannelError, Fingerprint};
use crate::identity::{self, Identity, ProofError};
use crate::peer::{PeerId, PeerUid};
use record::EntryChange;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// The name of the topology's gossip channel.
pub const TOPOLOGY_CHANNEL: &str = "topology";

/// What merges and GC changed since [`Topology::take_change`] was last called.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyChange {
    /// Anything at all changed.
    pub changed: bool,
    /// A live link appeared (routes may be recalculated lazily).
    pub link_added: bool,
    /// A live link or a peer went away (routes must be recalculated now).
    pub link_removed: bool,
    /// The highest foreign incarnation of our own id that was seen.
    pub conflict: Option<Incarnation>,
}

/// Records refused, by reason (see the module doc). Never reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    /// No proof.
    pub unsigned: u64,
    /// The key is not a valid Ed25519 point.
    pub bad_key: u64,
    /// The key does not belong to the record's peer id.
    pub key_mismatch: u64,
    /// The signature does not verify over the record the delta would make.
    pub bad_signature: u64,
    /// The record would pass a topology cap.
    pub over_cap: u64,
    /// Deltas that did not complete what we hold (repaired by a pull; not an offence).
    pub gaps: u64,
}

impl Rejected {
    /// `(reason, count)` for each reason, for metrics.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            (ProofError::Unsigned.reason(), self.unsigned),
            (ProofError::BadKey.reason(), self.bad_key),
            (ProofError::KeyMismatch.reason(), self.key_mismatch),
            (ProofError::BadSignature.reason(), self.bad_signature),
            ("over_cap", self.over_cap),
            ("gap", self.gaps),
        ]
    }

    /// Counts one refusal.
    pub fn count(&mut self, e: ProofError) {
        let slot = match e {
            ProofError::Unsigned => &mut self.unsigned,
            ProofError::BadKey => &mut self.bad_key,
            ProofError::KeyMismatch => &mut self.key_mismatch,
            ProofError::BadSignature => &mut self.bad_signature,
        };
        *slot = slot.saturating_add(1);
    }
}

/// Most gaps remembered between two [`Topology::take_gaps`].
const MAX_GAPS: usize = 64;

/// Every known peer's record, including our own.
#[derive(Clone, Debug)]
pub struct Topology {
    local: PeerId,
    peers: BTreeMap<PeerId, Arc<PeerRecord>>,
    change: TopologyChange,
    /// `--peer-keys`: only these peers' records, and links to them, are accepted.
    admitted: Option<Arc<BTreeSet<PeerId>>>,
    /// Our key: signs our record.
    signer: Identity,
    /// Link entries in all records.
    total_entries: usize,
    rejected: Rejected,
    /// Peers whose delta did not complete our copy, to pull from `gap_from`.
    gaps: BTreeSet<PeerId>,
    /// [`Topology::digest`], computed at most once per change of `peers`: cleared where
    /// records are inserted or removed, and for our own record in `sign_local`.
    digest: OnceLock<u64>,
}

impl PartialEq for Topology {
    fn eq(&self, other: &Self) -> bool {
        self.local == other.local && self.peers == other.peers
    }
}

impl Topology {
    /// A topology that knows only us; `identity` signs our record.
    pub fn new(identity: &Identity, uid: PeerUid, nickname: &str, listen_port: u16) -> Topology {
        let local = identity.id();
        let incarnation = Incarnation { epoch: 0, uid };
        let record = PeerRecord::new(incarnation, nickname.to_string(), listen_port);
        let mut topology = Topology {
            local,
            peers: BTreeMap::from([(local, Arc::new(record))]),
            change: TopologyChange::default(),
            admitted: None,
            signer: identity.clone(),
            total_entries: 0,
            rejected: Rejected::default(),
            gaps: BTreeSet::new(),
            digest: OnceLock::new(),
        };
        topology.sign_local();
        topology
    }

    /// Re-signs our record after a change. Every change of our record ends here, so
    /// this is where the kept digest of such a change is cleared.
    fn sign_local(&mut self) {
        let local = self.local;
        let signer = &self.signer;
        self.digest.take();
        if let Some(arc) = self.peers.get_mut(&local) {
            let record = Arc::make_mut(arc);
            let signature = signer.sign(identity::DOMAIN_RECORD, &record.signed_bytes(&local));
            record.set_proof(Some(RecordProof {
                key: *signer.signing_key(),
                signature,
            }));
        }
    }

    /// Records refused so far, by reason.
    pub fn rejected(&self) -> Rejected {
        self.rejected
    }

    /// Peers of which a delta could not be applied because we missed an earlier one;
    /// the mesh asks the sender for their records.
    pub fn take_gaps(&mut self) -> BTreeSet<PeerId> {
        std::mem::take(&mut self.gaps)
    }

    /// Link entries in all records.
    pub fn total_entries(&self) -> usize {
        self.total_entries
    }

    /// Our id.
    pub fn local(&self) -> PeerId {
        self.local
    }

    /// Our own record.
    pub fn local_record(&self) -> &PeerRecord {
        // The local record is inserted at construction and never removed.
        &self.peers[&self.local]
    }

    /// The record of `id`, if known.
    pub fn peer(&self, id: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(id).map(|r| &**r)
    }

    /// All records, ordered by id.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerId, &PeerRecord)> {
        self.peers.iter().map(|(id, r)| (id, &**r))
    }

    /// Number of known peers, including us.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether we know only ourselves.
    pub fn is_empty(&self) -> bool {
        self.peers.len() <= 1
    }

    /// Whether both `a` and `b` report a live link to each other.
    pub fn is_symmetric(&self, a: &PeerId, b: &PeerId) -> bool {
        let reports = |x: &PeerId, y: &PeerId| self.peer(x).is_some_and(|r| r.link_to(y).is_some());
        reports(a, b) && reports(b, a)
    }

    /// Fingerprint of the whole topology: equal topologies have equal digests. Kept
    /// until the records change (the punch coordinator asks every second).
    pub fn digest(&self) -> u64 {
        let digest = *self.digest.get_or_init(|| self.compute_digest());
        debug_assert_eq!(digest, self.compute_digest(), "a stale topology digest");
        digest
    }

    fn compute_digest(&self) -> u64 {
        self.peers.iter().fold(0u64, |acc, (id, r)| {
            acc.wrapping_add(
                Fingerprint::new()
                    .bytes(&id.0)
                    .u64(r.fingerprint())
                    .finish(),
            )
        })
    }

    /// Takes the accumulated change report.
    pub fn take_change(&mut self) -> TopologyChange {
        std::mem::take(&mut self.change)
    }

    /// Records a local link change; returns whether anything changed.
    pub fn set_local_link(&mut self, remote: PeerId, link: Option<LinkInfo>) -> bool {
        if remote == self.local {
            return false;
        }
        let Some(arc) = self.peers.get_mut(&self.local) else {
            return false;
        };
        let current = arc.entries().get(&remote).map(|e| e.link);
        if current == Some(link) || (current.is_none() && link.is_none()) {
            return false;
        }
        let local = Arc::make_mut(arc);
        let entry = LinkEntry {
            version: local.version().saturating_add(1),
            link,
        };
        let before = local.entries().len();
        let effect = local.merge_entry(remote, entry);
        let after = local.entries().len();
        self.total_entries = (self.total_entries + after).saturating_sub(before);
        self.note(effect);
        if after > wire::MAX_LINKS_PER_PEER {
            // Too many tombstones: a new epoch of our record drops them (and re-signs).
            let inc = self.local_record().incarnation();
            self.overtake(inc);
        } else {
            self.sign_local();
        }
        true
    }

    /// Our record's current entries for `remotes`, as one delta to broadcast.
    pub fn local_delta<'a>(&self, remotes: impl IntoIterator<Item = &'a PeerId>) -> RecordDelta {
        let entries = self.local_record().entries();
        let links = remotes
            .into_iter()
            .filter_map(|r| entries.get(r).map(|e| (*r, *e)))
            .collect();
        self.local_delta_with(links)
    }

    /// Moves our record to an epoch above `rival` and returns the whole record to
    /// broadcast. Every live link is re-stamped; tombstones are dropped.
    pub fn overtake(&mut self, rival: Incarnation) -> RecordDelta {
        let local_id = self.local;
        if let Some(arc) = self.peers.get_mut(&local_id) {
            let record = Arc::make_mut(arc);
            let mut inc = record.incarnation();
            inc.epoch = inc.epoch.max(rival.epoch.saturating_add(1));
            record.set_incarnation(inc);
            let before = record.entries().len();
            record.drop_tombstones();
            self.total_entries = self
                .total_entries
                .saturating_sub(before - record.entries().len());
            let live: Vec<(PeerId, LinkInfo)> = record.links().map(|(id, l)| (*id, *l)).collect();
            for (remote, link) in live {
                let version = record.version().saturating_add(1);
                record.merge_entry(
                    remote,
                    LinkEntry {
                        version,
                        link: Some(link),
                    },
                );
            }
        }
        self.change.changed = true;
        self.sign_local();
        let entries = self
            .local_record()
            .entries()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        self.local_delta_with(entries)
    }

    /// Our record's header with `links`; `base` is the highest version among the
    /// entries left out, so that the delta completes any copy at that version or later.
    fn local_delta_with(&self, links: Vec<(PeerId, LinkEntry)>) -> RecordDelta {
        let r = self.local_record();
        let included: BTreeSet<PeerId> = links.iter().map(|(id, _)| *id).collect();
        let base = r
            .entries()
            .iter()
            .filter(|(id, _)| !included.contains(id))
            .map(|(_, e)| e.version)
            .max()
            .unwrap_or(0);
        RecordDelta {
            peer: self.local,
            incarnation: r.incarnation(),
            nickname: r.nickname().to_string(),
            listen_port: r.listen_port(),
            base,
            links,
            proof: r.proof().copied(),
        }
    }

    fn note(&mut self, effect: EntryChange) {
        match effect {
            EntryChange::Unchanged => return,
            EntryChange::Updated => {}
            EntryChange::LinkAdded => self.change.link_added = true,
            EntryChange::LinkRemoved => self.change.link_removed = true,
        }
        self.change.changed = true;
    }

    /// Merges a (validated) update; returns what was new.
    pub fn merge_update(
        &mut self,
        update: TopologyUpdate,
    ) -> Result<Option<TopologyUpdate>, ChannelError> {
        wire::validate_update(&update)?;
        let mut news = Vec::new();
        for delta in update.records {
            if let Some(n) = self.merge_record(delta)? {
                news.push(n);
            }
        }
        Ok((!news.is_empty()).then_some(TopologyUpdate { records: news }))
    }

    /// Accepts only the records of `admitted` peers from now on
    /// (`None`: every peer's); records already held of other peers are dropped.
    pub fn set_admitted(&mut self, admitted: Option<BTreeSet<PeerId>>) {
        self.admitted = admitted.map(Arc::new);
        let Some(set) = self.admitted.clone() else {
            return;
        };
        let local = self.local;
        let before = self.peers.len();
        self.digest.take();
        self.peers.retain(|id, _| *id == local || set.contains(id));
        self.total_entries = self.peers.values().map(|r| r.entries().len()).sum();
        if self.peers.len() != before {
            self.change.changed = true;
            self.change.link_removed = true;
        }
    }

    fn is_admitted(&self, peer: &PeerId) -> bool {
        *peer == self.local || self.admitted.as_ref().is_none_or(|s| s.contains(peer))
    }

    fn merge_record(&mut self, delta: RecordDelta) -> Result<Option<RecordDelta>, ChannelError> {
        // A listed peer's links to others stay as it reports them (the records stay
        // identical everywhere, for anti-entropy); with no record of its own, an
        // unlisted peer has no symmetric link, so no route, and no discovery address.
        if !self.is_admitted(&delta.peer) {
            return Ok(None);
        }
        if delta.peer == self.local {
            // Another run of our own id (it holds our key): only a whole, proven record
            // may make us move to a higher epoch.
            if delta.incarnation > self.local_record().incarnation()
                && delta.base == 0
                && self.candidate(None, &delta).is_some()
            {
                self.change.conflict = self.change.conflict.max(Some(delta.incarnation));
            }
            return Ok(None);
        }
        let existing = self.peers.get(&delta.peer).cloned();
        let base_record = match &existing {
            None => {
                if self.peers.len() >= wire::MAX_PEERS {
                    self.rejected.over_cap = self.rejected.over_cap.saturating_add(1);
                    return Ok(None);
                }
                None
            }
            Some(r) => match delta.incarnation.cmp(&r.incarnation()) {
                std::cmp::Ordering::Less => return Ok(None),
                std::cmp::Ordering::Greater => None,
                std::cmp::Ordering::Equal => Some(&**r),
            },
        };
        let held = base_record.map_or(0, PeerRecord::version);
        if delta.base > held {
            // We lack entries at or below `base`: nothing here can be checked yet.
            self.rejected.gaps = self.rejected.gaps.saturating_add(1);
            if self.gaps.len() < MAX_GAPS {
                self.gaps.insert(delta.peer);
            }
            return Ok(None);
        }
        let Some(candidate) = self.candidate(base_record, &delta) else {
            return Ok(None);
        };
        let old_len = existing.as_ref().map_or(0, |r| r.entries().len());
        let total = (self.total_entries + candidate.entries().len()).saturating_sub(old_len);
        if total > wire::MAX_TOTAL_ENTRIES && candidate.entries().len() > old_len {
            self.rejected.over_cap = self.rejected.over_cap.saturating_add(1);
            return Ok(None);
        }
        self.total_entries = total;
        self.change.changed = true;
        match &existing {
            None => self.change.link_added |= candidate.has_live_links(),
            Some(old) => {
                let removed = old.links().any(|(id, l)| candidate.link_to(id) != Some(l));
                let added = candidate.links().any(|(id, l)| old.link_to(id) != Some(l));
                self.change.link_removed |= removed;
                self.change.link_added |= added;
            }
        }
        self.digest.take();
        self.peers.insert(delta.peer, Arc::new(candidate));
        Ok(Some(delta))
    }

    /// The record `delta` makes of `base` (`None`: a whole new record), if it is new
    /// and proven by its owner; refusals are counted.
    fn candidate(&mut self, base: Option<&PeerRecord>, delta: &RecordDelta) -> Option<PeerRecord> {
        let mut candidate = match base {
            Some(r) => r.clone(),
            None => PeerRecord::new(delta.incarnation, delta.nickname.clone(), delta.listen_port),
        };
        candidate.set_header(&delta.nickname, delta.listen_port);
        for (remote, entry) in &delta.links {
            candidate.merge_entry(*remote, *entry);
            if candidate.entries().len() > wire::MAX_LINKS_PER_PEER {
                self.rejected.over_cap = self.rejected.over_cap.saturating_add(1);
                return None;
            }
        }
        if base.is_some_and(|b| b.same_state(&candidate)) {
            // Nothing new: already verified, nothing to check.
            return None;
        }
        let Some(proof) = delta.proof else {
            self.rejected.count(ProofError::Unsigned);
            return None;
        };
        let signed = candidate.signed_bytes(&delta.peer);
        let verdict = identity::verify(
            &delta.peer,
            &proof.key,
            identity::DOMAIN_RECORD,
            &signed,
            &proof.signature,
        );
        if let Err(e) = verdict {
            self.rejected.count(e);
            return None;
        }
        candidate.set_proof(Some(proof));
        Some(candidate)
    }

    /// Peers not reachable from us along live reported links.
    pub fn unreachable(&self) -> Vec<PeerId> {
        let mut reached = BTreeSet::from([self.local]);
        let mut queue = VecDeque::from([self.local]);
        while let Some(id) = queue.pop_front() {
            let Some(record) = self.peers.get(&id) else {
                continue;
            };
            for (remote, _) in record.links() {
                if reached.insert(*remote) {
                    queue.push_back(*remote);
                }
            }
        }
        self.peers
            .keys()
            .filter(|id| !reached.contains(id))
            .copied()
            .collect()
    }

    /// Drops the records of `ids` (never our own).
    pub fn remove_peers(&mut self, ids: &[PeerId]) {
        for id in ids.iter().filter(|id| **id != self.local) {
            if let Some(r) = self.peers.remove(id) {
                self.digest.take();
                self.total_entries = self.total_entries.saturating_sub(r.entries().len());
                self.change.link_removed |= r.has_live_links();
                self.change.changed = true;
            }
        }
    }

    /// Drops every unreachable peer at once; returns them.
    pub fn gc(&mut self) -> Vec<PeerId> {
        let gone = self.unreachable();
        self.remove_peers(&gone);
        gone
    }

    /// Where `peer` may accept links: each address other peers see it at, with the port
    /// it listens on. Sorted and without duplicates.
    pub fn listen_addresses(&self, peer: &PeerId) -> Vec<SocketAddr> {
        let Some(port) = self.peer(peer).map(|r| r.listen_port()) else {
            return Vec::new();
        };
        let mut addrs: Vec<SocketAddr> = self
            .peers()
            .filter_map(|(_, r)| r.link_to(peer))
            .map(|l| SocketAddr::new(l.remote_addr.ip(), port))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Merges another replica's whole state (for building simulated meshes quickly).
    /// Records we lack are shared with `other`, not copied.
    pub fn merge_state(&mut self, other: &Topology) {
        for (id, record) in &other.peers {
            if *id == self.local || self.admitted.is_some() {
                continue;
            }
            match self.peers.get(id) {
                None => {
                    self.digest.take();
                    self.peers.insert(*id, Arc::clone(record));
                    self.total_entries += record.entries().len();
                    self.change.changed = true;
                    self.change.link_added |= record.has_live_links();
                }
                Some(_) => {
                    let update = TopologyUpdate {
                        records: vec![full_delta(id, record)],
                    };
                    let _ = self.merge_update(update);
                }
            }
        }
    }
}

impl crate::crdt::Crdt for Topology {
    type Delta = TopologyUpdate;

    fn merge(&mut self, delta: TopologyUpdate) -> Option<TopologyUpdate> {
        self.merge_update(delta).ok().flatten()
    }

    fn full(&self) -> TopologyUpdate {
        TopologyUpdate {
            records: self.peers().map(|(id, r)| full_delta(id, r)).collect(),
        }
    }

    fn validate(delta: &TopologyUpdate) -> Result<(), &'static str> {
        wire::validate_update(delta).map_err(|e| match e {
            ChannelError::Invalid(why) => why,
            ChannelError::Decode(_) => "undecodable",
        })
    }
}

/// A record as one delta with every entry.
pub(crate) fn full_delta(id: &PeerId, record: &PeerRecord) -> RecordDelta {
    RecordDelta {
        peer: *id,
        incarnation: record.incarnation(),
        nickname: record.nickname().to_string(),
        listen_port: record.listen_port(),
        base: 0,
        links: record.entries().iter().map(|(k, v)| (*k, *v)).collect(),
        proof: record.proof().copied(),
    }
}

#[cfg(test)]
mod tests;
