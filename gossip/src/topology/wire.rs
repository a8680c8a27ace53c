//! What the topology channel puts on the wire, and the checks on what it takes off.
//!
//! An update is a list of [`RecordDelta`]s: a record header plus some of its entries. A
//! change of one link is one delta with one entry (about 70 bytes), whatever the size of
//! the mesh. A summary lists, per peer, the incarnation, version and fingerprint of our
//! record (about 40 bytes a peer), split into chunks by ranges of peer ids so that every
//! chunk fits comfortably in one link record.

use super::record::{Incarnation, LinkEntry};
use crate::channel::ChannelError;
use crate::message::MAX_NICKNAME_LEN;
use crate::peer::PeerId;
use serde::{Deserialize, Serialize};

/// Most peers a topology may hold, and most records or summary entries in one message.
pub const MAX_PEERS: usize = 16_384;
/// Most link entries one record delta may carry, and one record may hold.
pub const MAX_LINKS_PER_DELTA: usize = 16_384;
/// Link entries per update chunk (about 35 bytes each, so chunks stay near 40 KiB).
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
    /// Entries, by remote peer.
    pub links: Vec<(PeerId, LinkEntry)>,
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
        if r.links.len() > MAX_LINKS_PER_DELTA {
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

/// Splits record deltas into updates of at most [`UPDATE_CHUNK_LINKS`] entries, cutting
/// large records into several deltas with the same header.
pub fn chunk_updates(records: Vec<RecordDelta>) -> Vec<TopologyUpdate> {
    let mut chunks = Vec::new();
    let mut current = TopologyUpdate::default();
    let mut links_in_current = 0;
    for mut record in records {
        loop {
            let room = UPDATE_CHUNK_LINKS - links_in_current;
            let rest = if record.links.len() > room {
                let tail = record.links.split_off(room);
                Some(RecordDelta {
                    links: tail,
                    nickname: record.nickname.clone(),
                    ..record
                })
            } else {
                None
            };
            links_in_current += record.links.len() + 1;
            current.records.push(record);
            if links_in_current >= UPDATE_CHUNK_LINKS || current.records.len() >= MAX_PEERS {
                chunks.push(std::mem::take(&mut current));
                links_in_current = 0;
            }
            match rest {
                Some(r) => record = r,
                None => break,
            }
        }
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
        let records = vec![delta(1, 10), delta(2, 3000), delta(3, 0), delta(4, 700)];
        let chunks = chunk_updates(records.clone());
        assert!(chunks.len() >= 4);
        for c in &chunks {
            let n: usize = c.records.iter().map(|r| r.links.len()).sum();
            assert!(n <= UPDATE_CHUNK_LINKS);
        }
        let total: usize = chunks
            .iter()
            .flat_map(|c| &c.records)
            .map(|r| r.links.len())
            .sum();
        assert_eq!(total, 3710);
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
