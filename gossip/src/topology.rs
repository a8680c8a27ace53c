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
pub use wire::{RecordDelta, SummaryChunk, TopologyUpdate};

use crate::channel::{ChannelError, Fingerprint};
use crate::peer::{PeerId, PeerUid};
use record::EntryChange;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

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

/// Every known peer's record, including our own.
#[derive(Clone, Debug)]
pub struct Topology {
    local: PeerId,
    peers: BTreeMap<PeerId, Arc<PeerRecord>>,
    change: TopologyChange,
    /// `--peer-keys`: only these peers' records, and links to them, are accepted.
    admitted: Option<Arc<BTreeSet<PeerId>>>,
}

impl PartialEq for Topology {
    fn eq(&self, other: &Self) -> bool {
        self.local == other.local && self.peers == other.peers
    }
}

impl Topology {
    /// A topology that knows only us.
    pub fn new(local: PeerId, uid: PeerUid, nickname: &str, listen_port: u16) -> Topology {
        let incarnation = Incarnation { epoch: 0, uid };
        let record = PeerRecord::new(incarnation, nickname.to_string(), listen_port);
        Topology {
            local,
            peers: BTreeMap::from([(local, Arc::new(record))]),
            change: TopologyChange::default(),
            admitted: None,
        }
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

    /// Fingerprint of the whole topology: equal topologies have equal digests.
    pub fn digest(&self) -> u64 {
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
            version: local.version() + 1,
            link,
        };
        let effect = local.merge_entry(remote, entry);
        self.note(effect);
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
            record.drop_tombstones();
            let live: Vec<(PeerId, LinkInfo)> = record.links().map(|(id, l)| (*id, *l)).collect();
            for (remote, link) in live {
                let version = record.version() + 1;
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
        let entries = self
            .local_record()
            .entries()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        self.local_delta_with(entries)
    }

    fn local_delta_with(&self, links: Vec<(PeerId, LinkEntry)>) -> RecordDelta {
        let r = self.local_record();
        RecordDelta {
            peer: self.local,
            incarnation: r.incarnation(),
            nickname: r.nickname().to_string(),
            listen_port: r.listen_port(),
            links,
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
        self.peers.retain(|id, _| *id == local || set.contains(id));
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
            if delta.incarnation > self.local_record().incarnation() {
                self.change.conflict = self.change.conflict.max(Some(delta.incarnation));
            }
            return Ok(None);
        }
        let Some(arc) = self.peers.get_mut(&delta.peer) else {
            if self.peers.len() >= wire::MAX_PEERS {
                return Err(ChannelError::Invalid("topology over the peer limit"));
            }
            let record =
                PeerRecord::new(delta.incarnation, delta.nickname.clone(), delta.listen_port);
            self.peers.insert(delta.peer, Arc::new(record));
            self.change.changed = true;
            return Ok(Some(self.merge_entries(delta, true)));
        };
        match delta.incarnation.cmp(&arc.incarnation()) {
            std::cmp::Ordering::Less => Ok(None),
            std::cmp::Ordering::Greater => {
                let had_links = arc.has_live_links();
                *arc = Arc::new(PeerRecord::new(
                    delta.incarnation,
                    delta.nickname.clone(),
                    delta.listen_port,
                ));
                self.change.changed = true;
                self.change.link_removed |= had_links;
                Ok(Some(self.merge_entries(delta, true)))
            }
            std::cmp::Ordering::Equal => {
                let fresh = delta
                    .links
                    .iter()
                    .filter(|(r, _)| !arc.entries().contains_key(r))
                    .count();
                if arc.entries().len() + fresh > wire::MAX_LINKS_PER_DELTA {
                    return Err(ChannelError::Invalid("topology record over the link limit"));
                }
                let header_changed =
                    Arc::make_mut(arc).merge_header(&delta.nickname, delta.listen_port);
                self.change.changed |= header_changed;
                let news = self.merge_entries(delta, header_changed);
                Ok((header_changed || !news.links.is_empty()).then_some(news))
            }
        }
    }

    /// Merges `delta`'s entries into the (existing) record; returns the delta cut down to
    /// the entries that were new (all of them when `whole` is set).
    fn merge_entries(&mut self, mut delta: RecordDelta, whole: bool) -> RecordDelta {
        let Some(arc) = self.peers.get_mut(&delta.peer) else {
            return delta;
        };
        let record = Arc::make_mut(arc);
        let mut effects = Vec::new();
        delta.links.retain(|(remote, entry)| {
            let effect = record.merge_entry(*remote, *entry);
            effects.push(effect);
            whole || effect != EntryChange::Unchanged
        });
        effects.into_iter().for_each(|e| self.note(e));
        delta
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
                    self.peers.insert(*id, Arc::clone(record));
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
        links: record.entries().iter().map(|(k, v)| (*k, *v)).collect(),
    }
}

#[cfg(test)]
mod tests;
