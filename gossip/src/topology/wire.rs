//! What the topology channel puts on the wire, and the checks on what it takes off.
//!
//! An update is a list of [`RecordDelta`]s: a record header plus some of its entries. A
//! change of one link is one delta with one entry (about 70 bytes), whatever the size of
//! the mesh. A summary lists, per peer, the incarnation, version and fingerprint of our
//! record (about 40 bytes a peer), split into chunks by ranges of peer ids so that every
//! chunk fits comfortably in one link record.

use super::record::{Incarnation, LinkEntry};
use crate::channel::ChannelError;
use crate::identity::Signature;
use crate::message::MAX_NICKNAME_LEN;
use crate::peer::PeerId;
use serde::{Deserialize, Serialize};

/// Most peers a topology may hold, and most records or summary entries in one message.
/// Above the largest mesh measured (1,000 peers, `sim::scale`) with room to spare, and
/// equal to the IPAM reclaim's peer cap.
pub const MAX_PEERS: usize = 4096;
/// Most link entries (live links and tombstones) one record may hold and one delta may
/// carry. Above the default connection limit (200) and a full mesh of the largest mesh
/// measured (999 links); a router whose own record would pass it drops its tombstones
/// by moving to a new epoch ([`super::Topology::set_local_link`]).
pub const MAX_LINKS_PER_PEER: usize = 2048;
/// Most link entries in all records together: a full mesh of 1,024 peers. Beyond it a
/// record that would grow the total is refused (counted `over_cap`).
pub const MAX_TOTAL_ENTRIES: usize = 1 << 20;
/// Link entries per update chunk (about 40 bytes each). A record is never split (its
/// signature covers it whole), so a chunk may hold one record of up to
/// [`MAX_LINKS_PER_PEER`] entries, about 90 KiB.
pub const UPDATE_CHUNK_LINKS: usize = 1024;
/// Peers per summary chunk (about 40 bytes each).
pub const SUMMARY_CHUNK_PEERS: usize = 1024;

/// Part of one peer's record: its header and some of its entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDelta {
    /// The record's owner.
    pub peer: PeerId,
    /// The incarnation the entries belong to.
    pub incarnation: Incarnation,
    /// The owner's nickname.
    pub nickname: String,
    /// The owner's listen port.
    pub listen_port: u16,
    /// The delta holds every entry whose version is above `base` (0: the whole record),
    /// so that it completes a record held at version `base` or later.
    pub base: u64,
    /// Entries, by remote peer.
    pub links: Vec<(PeerId, LinkEntry)>,
    /// The owner's signature over the whole record that this delta completes.
    pub proof: Option<RecordProof>,
}

/// An owner's proof of its record: its Ed25519 key (which must bind to its peer id, see
/// [`crate::identity`]) and a signature over [`super::PeerRecord::signed_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordProof {
    /// The owner's Ed25519 public key.
    pub key: [u8; 32],
    /// The signature.
    pub signature: Signature,
}

/// A topology delta: the unit that is broadcast, exchanged and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyUpdate {
    /// Record deltas.
    pub records: Vec<RecordDelta>,
}

/// One peer's line in a summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryEntry {
    /// The record's owner.
    pub peer: PeerId,
    /// The record's incarnation.
    pub incarnation: Incarnation,
    /// The record's highest entry version.
    pub version: u64,
    /// The record's fingerprint.
    pub fingerprint: u64,
}

/// The summary of the records whose ids fall in `[from, until)` (`None` = unbounded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryChunk {
    /// Inclusive lower bound.
    pub from: Option<PeerId>,
    /// Exclusive upper bound.
    pub until: Option<PeerId>,
    /// One entry per record in the range, sorted by peer id.
    pub entries: Vec<SummaryEntry>,
}

impl SummaryChunk {
    /// Whether `id` falls in this chunk's range.
    pub fn covers(&self, id: &PeerId) -> bool {
        self.from.is_none_or(|f| *id >= f) && self.until.is_none_or(|u| *id < u)
    }
}

/// Checks the bounds of an update from the network.
pub fn validate_update(update: &TopologyUpdate) -> Result<(), ChannelError> {
    if update.records.len() > MAX_PEERS {
        return Err(ChannelError::Invalid(
            "too many records in a topology update",
        ));
    }
    for r in &update.records {
        if r.nickname.len() > MAX_NICKNAME_LEN {
            return Err(ChannelError::Invalid("nickname longer than 64 bytes"));
        }
        if r.links.len() > MAX_LINKS_PER_PEER {
            return Err(ChannelError::Invalid("too many links in a topology record"));
        }
        if r.links.iter().any(|(remote, _)| *remote == r.peer) {
            return Err(ChannelError::Invalid("a peer reports a link to itself"));
        }
    }
    Ok(())
}

/// Checks the bounds and ordering of a summary chunk from the network.
pub fn validate_summary(chunk: &SummaryChunk) -> Result<(), ChannelError> {
    if chunk.entries.len() > MAX_PEERS {
        return Err(ChannelError::Invalid(
            "too many entries in a topology summary",
        ));
    }
    if let (Some(f), Some(u)) = (chunk.from, chunk.until) {
        if f >= u {
            return Err(ChannelError::Invalid("empty summary range"));
        }
    }
    let sorted = chunk.entries.windows(2).all(|w| w[0].peer < w[1].peer);
    if !sorted || !chunk.entries.iter().all(|e| chunk.covers(&e.peer)) {
        return Err(ChannelError::Invalid(
            "summary entries unsorted or out of range",
        ));
    }
    Ok(())
}

/// Groups record deltas into updates of about [`UPDATE_CHUNK_LINKS`] entries. A record
/// is never cut: its owner's signature covers it whole.
pub fn chunk_updates(records: Vec<RecordDelta>) -> Vec<TopologyUpdate> {
    let mut chunks = Vec::new();
    let mut current = TopologyUpdate::default();
    let mut links_in_current = 0;
    for record in records {
        let size = record.links.len() + 1;
        if !current.records.is_empty() && links_in_current + size > UPDATE_CHUNK_LINKS {
            chunks.push(std::mem::take(&mut current));
            links_in_current = 0;
        }
        links_in_current += size;
        current.records.push(record);
    }
    if !current.records.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::PeerUid;
    use crate::topology::record::LinkInfo;

    fn delta(peer: u8, links: usize) -> RecordDelta {
        RecordDelta {
            peer: PeerId([peer; 16]),
            incarnation: Incarnation {
                epoch: 0,
                uid: PeerUid(1),
            },
            nickname: "n".into(),
            listen_port: 6783,
            base: 0,
            proof: None,
            links: (0..links)
                .map(|i| {
                    let mut id = [0xee; 16];
                    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    let link = LinkInfo {
                        outbound: false,
                        remote_addr: ([10, 0, 0, 1], 1).into(),
                    };
                    (
                        PeerId(id),
                        LinkEntry {
                            version: 1,
                            link: Some(link),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn chunking_keeps_every_entry_and_bounds_chunks() {
        let records = vec![delta(1, 10), delta(2, 2000), delta(3, 0), delta(4, 700)];
        let chunks = chunk_updates(records.clone());
        assert!(chunks.len() >= 3);
        for c in &chunks {
            let n: usize = c.records.iter().map(|r| r.links.len() + 1).sum();
            assert!(n <= UPDATE_CHUNK_LINKS || c.records.len() == 1, "{n}");
        }
        let total: usize = chunks
            .iter()
            .flat_map(|c| &c.records)
            .map(|r| r.links.len())
            .sum();
        assert_eq!(total, 2710);
        assert!(chunks
            .iter()
            .flat_map(|c| &c.records)
            .any(|r| r.peer == PeerId([3; 16])));
    }

    #[test]
    fn self_links_and_bad_ranges_are_refused() {
        let mut d = delta(1, 1);
        d.links[0].0 = d.peer;
        let update = TopologyUpdate { records: vec![d] };
        assert!(validate_update(&update).is_err());
        let chunk = SummaryChunk {
            from: Some(PeerId([5; 16])),
            until: Some(PeerId([5; 16])),
            entries: vec![],
        };
        assert!(validate_summary(&chunk).is_err());
    }
}
