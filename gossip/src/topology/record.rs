//! One peer's record: its incarnation and the links it reports.
//!
//! Only the peer itself writes its record. Each link entry carries the version (from the
//! owner's counter) at which it last changed; removing a link leaves a tombstone so that
//! an older "link up" arriving late cannot resurrect it. Within one incarnation, entries
//! merge independently (higher `(version, link)` wins); a higher [`Incarnation`] replaces
//! the whole record. That is a lexicographic product of a total order and a lattice,
//! hence itself a join-semilattice: merges commute, associate and are idempotent.
//!
//! The owner signs the whole record (every field, tombstones included, in the
//! canonical encoding of [`PeerRecord::signed_bytes`]); the proof travels with it, so a
//! record relayed by anyone is believed only as its owner made it.
//!
//! The record keeps a fingerprint, the wrapping sum of its header's and entries'
//! fingerprints, updated incrementally so that digests stay O(1) per change.

use super::wire::RecordProof;
use crate::channel::Fingerprint;
use crate::peer::{PeerId, PeerUid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Which run of a peer a record describes. Ordered by `(epoch, uid)`; higher wins.
///
/// A restarted peer has a new random uid and starts at epoch 0. If gossip shows it an
/// older run of itself that still orders higher, it moves to a higher epoch, so its new
/// run replaces the old one everywhere.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Incarnation {
    /// Raised only to overtake another incarnation of the same id.
    pub epoch: u32,
    /// Random per process start.
    pub uid: PeerUid,
}

/// A live link as its owner reports it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Whether the owner dialled it.
    pub outbound: bool,
    /// The remote end's address as the owner sees it.
    pub remote_addr: SocketAddr,
}

/// A versioned link slot; `link: None` is a tombstone.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct LinkEntry {
    /// The owner's counter when this slot last changed (compared first).
    pub version: u64,
    /// The link, or `None` once it went down.
    pub link: Option<LinkInfo>,
}

impl LinkEntry {
    fn fingerprint(&self, remote: &PeerId) -> u64 {
        let mut f = Fingerprint::new().bytes(&remote.0).u64(self.version);
        if let Some(link) = &self.link {
            f = f.bytes(&[1, u8::from(link.outbound)]);
            f = match link.remote_addr {
                SocketAddr::V4(a) => f.bytes(&a.ip().octets()),
                SocketAddr::V6(a) => f.bytes(&a.ip().octets()),
            };
            f = f.u64(u64::from(link.remote_addr.port()));
        }
        f.finish()
    }
}

/// Everything known about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    incarnation: Incarnation,
    nickname: String,
    listen_port: u16,
    links: BTreeMap<PeerId, LinkEntry>,
    version: u64,
    header_fp: u64,
    fingerprint: u64,
    /// The owner's signature over this exact state (`None` only while being built).
    proof: Option<RecordProof>,
}

/// How setting one entry changed the link graph.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum EntryChange {
    /// The entry was not newer.
    Unchanged,
    /// Newer, but the link's liveness is the same.
    Updated,
    /// A live link appeared.
    LinkAdded,
    /// A live link went away.
    LinkRemoved,
}

impl PeerRecord {
    /// An empty record for this incarnation.
    pub(crate) fn new(incarnation: Incarnation, nickname: String, listen_port: u16) -> Self {
        let header_fp = header_fingerprint(&incarnation, &nickname, listen_port);
        PeerRecord {
            incarnation,
            nickname,
            listen_port,
            links: BTreeMap::new(),
            version: 0,
            header_fp,
            fingerprint: header_fp,
            proof: None,
        }
    }

    /// The owner's proof of this state.
    pub fn proof(&self) -> Option<&RecordProof> {
        self.proof.as_ref()
    }

    pub(crate) fn set_proof(&mut self, proof: Option<RecordProof>) {
        self.proof = proof;
    }

    /// The canonical encoding that the owner `peer` signs: every field of the record,
    /// fixed-width big-endian, entries in id order, tombstones included.
    pub fn signed_bytes(&self, peer: &PeerId) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.nickname.len() + self.links.len() * 44);
        out.extend_from_slice(&peer.0);
        out.extend_from_slice(&self.incarnation.epoch.to_be_bytes());
        out.extend_from_slice(&self.incarnation.uid.0.to_be_bytes());
        out.extend_from_slice(&(self.nickname.len() as u32).to_be_bytes());
        out.extend_from_slice(self.nickname.as_bytes());
        out.extend_from_slice(&self.listen_port.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&(self.links.len() as u32).to_be_bytes());
        for (remote, entry) in &self.links {
            out.extend_from_slice(&remote.0);
            out.extend_from_slice(&entry.version.to_be_bytes());
            match &entry.link {
                None => out.push(0),
                Some(link) => {
                    out.push(1);
                    out.push(u8::from(link.outbound));
                    match link.remote_addr {
                        SocketAddr::V4(a) => {
                            out.push(4);
                            out.extend_from_slice(&a.ip().octets());
                        }
                        SocketAddr::V6(a) => {
                            out.push(6);
                            out.extend_from_slice(&a.ip().octets());
                        }
                    }
                    out.extend_from_slice(&link.remote_addr.port().to_be_bytes());
                }
            }
        }
        out
    }

    /// Same state, proof aside.
    pub(crate) fn same_state(&self, other: &PeerRecord) -> bool {
        self.incarnation == other.incarnation
            && self.nickname == other.nickname
            && self.listen_port == other.listen_port
            && self.links == other.links
    }

    /// Sets the header (a candidate built from a delta; its signature decides).
    pub(crate) fn set_header(&mut self, nickname: &str, listen_port: u16) {
        if (nickname, listen_port) == (self.nickname.as_str(), self.listen_port) {
            return;
        }
        self.nickname = nickname.to_string();
        self.listen_port = listen_port;
        let old = self.header_fp;
        self.header_fp = header_fingerprint(&self.incarnation, &self.nickname, listen_port);
        self.fingerprint = self
            .fingerprint
            .wrapping_sub(old)
            .wrapping_add(self.header_fp);
    }

    /// The incarnation this record describes.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The peer's nickname.
    pub fn nickname(&self) -> &str {
        &self.nickname
    }

    /// The port the peer accepts links on.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// The highest entry version: the peer's version, as shown in status.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A fingerprint of the whole record.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Live links, by remote id.
    pub fn links(&self) -> impl Iterator<Item = (&PeerId, &LinkInfo)> {
        self.links
            .iter()
            .filter_map(|(id, e)| e.link.as_ref().map(|l| (id, l)))
    }

    /// Every entry, tombstones included.
    pub fn entries(&self) -> &BTreeMap<PeerId, LinkEntry> {
        &self.links
    }

    /// The live link to `remote`, if any.
    pub fn link_to(&self, remote: &PeerId) -> Option<&LinkInfo> {
        self.links.get(remote).and_then(|e| e.link.as_ref())
    }

    /// Whether any entry is a live link.
    pub fn has_live_links(&self) -> bool {
        self.links.values().any(|e| e.link.is_some())
    }

    /// Stores `entry` for `remote` if it is newer than what is there.
    pub(crate) fn merge_entry(&mut self, remote: PeerId, entry: LinkEntry) -> EntryChange {
        let old = self.links.get(&remote).copied();
        if old.is_some_and(|o| entry <= o) {
            return EntryChange::Unchanged;
        }
        if let Some(o) = &old {
            self.fingerprint = self.fingerprint.wrapping_sub(o.fingerprint(&remote));
        }
        self.fingerprint = self.fingerprint.wrapping_add(entry.fingerprint(&remote));
        self.version = self.version.max(entry.version);
        self.links.insert(remote, entry);
        let was_live = old.is_some_and(|o| o.link.is_some());
        match (was_live, entry.link.is_some()) {
            (false, true) => EntryChange::LinkAdded,
            (true, false) => EntryChange::LinkRemoved,
            _ => EntryChange::Updated,
        }
    }

    /// Drops tombstones (only when the owner starts a new incarnation of its record).
    pub(crate) fn drop_tombstones(&mut self) {
        let dead: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, e)| e.link.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(e) = self.links.remove(&id) {
                self.fingerprint = self.fingerprint.wrapping_sub(e.fingerprint(&id));
            }
        }
    }

    /// Moves the record to a new incarnation, keeping its entries.
    pub(crate) fn set_incarnation(&mut self, incarnation: Incarnation) {
        self.incarnation = incarnation;
        let old = self.header_fp;
        self.header_fp = header_fingerprint(&incarnation, &self.nickname, self.listen_port);
        self.fingerprint = self
            .fingerprint
            .wrapping_sub(old)
            .wrapping_add(self.header_fp);
    }
}

fn header_fingerprint(incarnation: &Incarnation, nickname: &str, listen_port: u16) -> u64 {
    Fingerprint::new()
        .u64(u64::from(incarnation.epoch))
        .u64(incarnation.uid.0)
        .u64(nickname.len() as u64)
        .bytes(nickname.as_bytes())
        .u64(u64::from(listen_port))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], port))
    }

    #[test]
    fn fingerprint_tracks_content_not_history() {
        let inc = Incarnation {
            epoch: 0,
            uid: PeerUid(1),
        };
        let (p, q) = (PeerId([1; 16]), PeerId([2; 16]));
        let live = |v, port| LinkEntry {
            version: v,
            link: Some(LinkInfo {
                outbound: true,
                remote_addr: addr(port),
            }),
        };
        let mut a = PeerRecord::new(inc, "a".into(), 6783);
        assert_eq!(a.merge_entry(p, live(1, 1)), EntryChange::LinkAdded);
        assert_eq!(a.merge_entry(q, live(2, 2)), EntryChange::LinkAdded);
        assert_eq!(a.merge_entry(p, live(1, 1)), EntryChange::Unchanged);
        let dead = LinkEntry {
            version: 3,
            link: None,
        };
        assert_eq!(a.merge_entry(p, dead), EntryChange::LinkRemoved);

        let mut b = PeerRecord::new(inc, "a".into(), 6783);
        b.merge_entry(p, dead);
        b.merge_entry(q, live(2, 2));
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.version(), 3);
        assert_eq!(a.links().count(), 1);
    }
}
