//! The topology as a gossip channel: summaries by peer, updates of what differs.
//!
//! Anti-entropy compares per-peer `(incarnation, version, fingerprint)`. For a record the
//! neighbour has at a lower version, only the entries above that version are sent; a
//! record it lacks, has in an older incarnation, or has at the same version with a
//! different fingerprint (it missed an entry below its version) is sent whole. So a round
//! first equalizes versions, and a record with such a hole is repaired by the next one.

use super::wire::{self, RecordDelta, SummaryChunk, SummaryEntry, TopologyUpdate};
use super::{full_delta, PeerRecord, Topology};
use crate::channel::{ChannelError, GossipChannel};
use crate::codec;
use crate::peer::PeerId;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;

impl Topology {
    /// Encodes an update for the wire.
    pub fn encode_update(update: &TopologyUpdate) -> Vec<u8> {
        codec::encode(update)
    }

    /// Summary chunks for the records in `[from, until)`.
    pub fn summary_range(&self, from: Option<PeerId>, until: Option<PeerId>) -> Vec<SummaryChunk> {
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let upper = until.map_or(Bound::Unbounded, Bound::Excluded);
        let entries: Vec<SummaryEntry> = self
            .peers
            .range((lower, upper))
            .map(|(id, r)| SummaryEntry {
                peer: *id,
                incarnation: r.incarnation(),
                version: r.version(),
                fingerprint: r.fingerprint(),
            })
            .collect();
        let mut chunks: Vec<SummaryChunk> = entries
            .chunks(wire::SUMMARY_CHUNK_PEERS)
            .map(|c| SummaryChunk {
                from: None,
                until: None,
                entries: c.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(SummaryChunk {
                from: None,
                until: None,
                entries: Vec::new(),
            });
        }
        // Contiguous ranges: each chunk ends where the next one's first entry starts.
        let starts: Vec<Option<PeerId>> = chunks
            .iter()
            .skip(1)
            .map(|c| Some(c.entries[0].peer))
            .collect();
        let n = chunks.len();
        for (i, chunk) in chunks.iter_mut().enumerate() {
            chunk.from = if i == 0 { from } else { starts[i - 1] };
            chunk.until = if i + 1 == n { until } else { starts[i] };
        }
        chunks
    }

    /// The record deltas that a peer whose summary is `chunk` lacks.
    pub fn deltas_for(&self, chunk: &SummaryChunk) -> Vec<RecordDelta> {
        let theirs: BTreeMap<PeerId, &SummaryEntry> =
            chunk.entries.iter().map(|e| (e.peer, e)).collect();
        let lower = chunk.from.map_or(Bound::Unbounded, Bound::Included);
        let upper = chunk.until.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        for (id, record) in self.peers.range((lower, upper)) {
            match theirs.get(id) {
                Some(t) if t.incarnation > record.incarnation() => {}
                Some(t) if t.incarnation == record.incarnation() => {
                    if t.version < record.version() {
                        out.push(newer_than(id, record, t.version));
                    } else if t.version == record.version() && t.fingerprint != record.fingerprint()
                    {
                        out.push(full_delta(id, record));
                    }
                }
                _ => out.push(full_delta(id, record)),
            }
        }
        out
    }

    /// Whether `chunk` shows a record we lack or hold in an older state.
    pub fn lacks_any(&self, chunk: &SummaryChunk) -> bool {
        chunk.entries.iter().any(|t| match self.peer(&t.peer) {
            None => true,
            Some(r) if t.incarnation != r.incarnation() => t.incarnation > r.incarnation(),
            Some(r) => {
                t.version > r.version()
                    || (t.version == r.version() && t.fingerprint != r.fingerprint())
            }
        })
    }
}

fn newer_than(id: &PeerId, record: &PeerRecord, version: u64) -> RecordDelta {
    let mut delta = full_delta(id, record);
    delta.links.retain(|(_, e)| e.version > version);
    delta.base = version;
    delta
}

fn decode_summary(bytes: &[u8]) -> Result<SummaryChunk, ChannelError> {
    let chunk: SummaryChunk = codec::decode(bytes)?;
    wire::validate_summary(&chunk)?;
    Ok(chunk)
}

impl GossipChannel for Topology {
    fn digest(&self) -> u64 {
        Topology::digest(self)
    }

    fn summary(&self) -> Vec<Vec<u8>> {
        self.summary_range(None, None)
            .iter()
            .map(codec::encode)
            .collect()
    }

    fn updates_for(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let chunk = decode_summary(summary)?;
        let deltas = self.deltas_for(&chunk);
        Ok(wire::chunk_updates(deltas)
            .iter()
            .map(codec::encode)
            .collect())
    }

    fn missing_here(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let chunk = decode_summary(summary)?;
        if !self.lacks_any(&chunk) {
            return Ok(Vec::new());
        }
        Ok(self
            .summary_range(chunk.from, chunk.until)
            .iter()
            .map(codec::encode)
            .collect())
    }

    fn merge(&mut self, _now: Instant, update: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        let update: TopologyUpdate = codec::decode(update)?;
        Ok(self.merge_update(update)?.map(|news| codec::encode(&news)))
    }
}

/// Fuzz entry point for the topology channel's decoders: feeds arbitrary bytes to every
/// method that takes network input, on a small topology; never panics.
pub fn fuzz_decode_topology(data: &[u8]) {
    let identity = crate::identity::Identity::from_secret_bytes([1; 32]);
    let mut topology = Topology::new(&identity, crate::peer::PeerUid(1), "fuzz", 6783);
    let _ = topology.updates_for(data);
    let _ = topology.missing_here(data);
    let _ = GossipChannel::merge(&mut topology, Instant::now(), data);
    let _ = topology.gc();
}
