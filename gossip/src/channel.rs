//! Gossip channels: named, CRDT-backed state that the mesh keeps in sync.
//!
//! The mesh multiplexes every channel over the same links through the object-safe
//! [`GossipChannel`] trait, which works on encoded bytes. Three mechanisms use it:
//!
//! - **Broadcast** of a delta along the source's spanning tree: `merge` on every peer.
//! - **Anti-entropy**: a peer sends its [`GossipChannel::digest`] (8 bytes) to a few
//!   neighbours. On a mismatch the neighbour sends its `summary`; the peer answers with
//!   `updates_for(summary)` and, when `missing_here(summary)` is non-empty, with its own
//!   summary so that the neighbour sends back what the peer lacks. When nothing changed
//!   a round costs one digest per neighbour.
//! - **State exchange** on a new link: the same digest-first protocol.
//!
//! [`CrdtChannel`] adapts any [`Crdt`]: its summary is just the digest, so a mismatch
//! exchanges full states. The topology channel ([`crate::topology`]) implements the
//! trait itself with per-peer summaries so that a mismatch costs what differs.
//!
//! The mesh owns only the topology channel. The application's channels (IPAM, the
//! sleeve's messages) belong to the driver, which lends them to the mesh as a
//! [`Channels`] for each call that may reach them, so that it can use their concrete
//! types between calls without the mesh knowing them.

use crate::codec::{self, DecodeError};
use crate::crdt::Crdt;
use crate::peer::PeerId;
use std::time::Instant;

/// Why a channel refused gossip input. The mesh closes the link it came on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The bytes do not decode as this channel's type.
    #[error("undecodable channel data: {0}")]
    Decode(#[from] DecodeError),
    /// Decoded, but out of bounds or inconsistent.
    #[error("invalid channel data: {0}")]
    Invalid(&'static str),
}

/// A gossip channel as the mesh sees it: state behind encoded bytes.
///
/// Every method taking bytes gets them from an authenticated but untrusted peer and must
/// validate them, never panic.
pub trait GossipChannel: Send {
    /// A fingerprint of the whole state; equal states give equal digests.
    fn digest(&self) -> u64;

    /// The state's summary, in chunks each small enough for one message.
    fn summary(&self) -> Vec<Vec<u8>>;

    /// Encoded deltas holding what a peer with `summary` lacks (possibly none).
    fn updates_for(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError>;

    /// Our summary chunks covering what `summary` shows we lack; empty if nothing.
    fn missing_here(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError>;

    /// Merges an encoded delta that arrived at `now`; returns the encoded part that was
    /// new, if any.
    fn merge(&mut self, now: Instant, update: &[u8]) -> Result<Option<Vec<u8>>, ChannelError>;

    /// Receives a unicast payload addressed to us, at `now`. Default: ignored.
    fn handle_unicast(
        &mut self,
        _now: Instant,
        _source: PeerId,
        _payload: &[u8],
    ) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// The application's gossip channels, held by the driver and lent to the mesh for each
/// call that may reach them ([`crate::mesh::Mesh::handle_message`] and
/// [`crate::mesh::Mesh::handle_timeout`]).
///
/// Names are 1 to 32 bytes and never the topology's ([`crate::topology::TOPOLOGY_CHANNEL`]);
/// a channel listed in [`Channels::names`] but not held (`get` gives `None`) is skipped.
pub trait Channels {
    /// Every channel's name, in the order their digests are sent.
    fn names(&self) -> &'static [&'static str];

    /// Channel `name`, if held.
    fn get(&self, name: &str) -> Option<&dyn GossipChannel>;

    /// Channel `name`, mutably, if held.
    fn get_mut(&mut self, name: &str) -> Option<&mut dyn GossipChannel>;
}

/// No application channels: the mesh gossips its topology alone.
impl Channels for () {
    fn names(&self) -> &'static [&'static str] {
        &[]
    }

    fn get(&self, _name: &str) -> Option<&dyn GossipChannel> {
        None
    }

    fn get_mut(&mut self, _name: &str) -> Option<&mut dyn GossipChannel> {
        None
    }
}

/// A stable 64-bit fingerprint (FNV-1a, then a SplitMix64 finalizer).
///
/// Stable across builds and platforms, unlike `std`'s hasher, so peers running different
/// builds still agree on digests. Not cryptographic: it detects divergence between
/// authenticated peers, it does not resist forgery.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// A fresh fingerprint.
    pub fn new() -> Fingerprint {
        Fingerprint::default()
    }

    /// Feeds bytes.
    pub fn bytes(mut self, data: &[u8]) -> Fingerprint {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// Feeds an integer (little-endian bytes).
    pub fn u64(self, v: u64) -> Fingerprint {
        self.bytes(&v.to_le_bytes())
    }

    /// The fingerprint, with its bits well mixed so that wrapping sums of fingerprints
    /// behave like random values.
    pub fn finish(self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Any [`Crdt`] as a gossip channel: a digest mismatch exchanges full states.
#[derive(Clone, Debug, Default)]
pub struct CrdtChannel<C> {
    crdt: C,
}

impl<C: Crdt> CrdtChannel<C> {
    /// Wraps `crdt`.
    pub fn new(crdt: C) -> CrdtChannel<C> {
        CrdtChannel { crdt }
    }

    /// The state.
    pub fn crdt(&self) -> &C {
        &self.crdt
    }

    /// Merges a delta produced locally and returns it encoded, ready for
    /// [`crate::mesh::Mesh::broadcast`], if it changed anything.
    pub fn apply_local(&mut self, delta: C::Delta) -> Option<Vec<u8>> {
        self.crdt.merge(delta).map(|news| codec::encode(&news))
    }

    fn own_digest(&self) -> u64 {
        Fingerprint::new()
            .bytes(&codec::encode(&self.crdt.full()))
            .finish()
    }
}

impl<C: Crdt + Send + 'static> GossipChannel for CrdtChannel<C> {
    fn digest(&self) -> u64 {
        self.own_digest()
    }

    fn summary(&self) -> Vec<Vec<u8>> {
        vec![codec::encode(&self.own_digest())]
    }

    fn updates_for(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let theirs: u64 = codec::decode(summary)?;
        if theirs == self.own_digest() {
            return Ok(Vec::new());
        }
        Ok(vec![codec::encode(&self.crdt.full())])
    }

    fn missing_here(&self, summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let theirs: u64 = codec::decode(summary)?;
        if theirs == self.own_digest() {
            return Ok(Vec::new());
        }
        Ok(self.summary())
    }

    fn merge(&mut self, _now: Instant, update: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        let delta: C::Delta = codec::decode(update)?;
        C::validate(&delta).map_err(ChannelError::Invalid)?;
        Ok(self.crdt.merge(delta).map(|news| codec::encode(&news)))
    }
}

/// Fuzz entry point for a [`CrdtChannel`] of the reference counter: feeds arbitrary bytes
/// to every decoding method; never panics.
pub fn fuzz_crdt_channel(data: &[u8]) {
    let mut channel = CrdtChannel::new(crate::crdt::GCounter::new());
    let _ = channel.updates_for(data);
    let _ = channel.missing_here(data);
    let _ = channel.merge(Instant::now(), data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::fuzz;
    use crate::crdt::GCounter;

    #[test]
    fn full_exchange_on_mismatch_converges() {
        let (p, q) = (PeerId([1; 16]), PeerId([2; 16]));
        let now = Instant::now();
        let mut a = CrdtChannel::new(GCounter::new());
        let mut b = CrdtChannel::new(GCounter::new());
        let delta = a.crdt.increment(p, 5);
        assert!(
            a.apply_local(delta).is_none(),
            "already applied by increment"
        );
        b.crdt.increment(q, 2);
        assert_ne!(a.digest(), b.digest());

        // b asks with its summary; a answers with updates and its own summary.
        let sb = b.summary();
        for u in a.updates_for(&sb[0]).unwrap() {
            assert!(b.merge(now, &u).unwrap().is_some());
        }
        for sa in a.missing_here(&sb[0]).unwrap() {
            for u in b.updates_for(&sa).unwrap() {
                a.merge(now, &u).unwrap();
            }
        }
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.crdt().value(), 7);
        assert!(a.missing_here(&b.summary()[0]).unwrap().is_empty());
    }

    #[test]
    fn fingerprint_is_stable() {
        // Pinned so that a change of the function (which would split mixed-build
        // meshes into endless anti-entropy) is noticed.
        assert_eq!(
            Fingerprint::new().bytes(b"weft").finish(),
            0x48db_2e6a_6dd1_b888
        );
        assert_ne!(
            Fingerprint::new().u64(1).finish(),
            Fingerprint::new().u64(2).finish()
        );
    }

    #[test]
    fn fuzz_crdt_channel_never_panics() {
        let mut c = GCounter::new();
        c.increment(PeerId([3; 16]), 9);
        let corpus = vec![codec::encode(&c.full()), codec::encode(&7u64)];
        for input in fuzz::inputs(0x5eed_0002, &corpus, 3000) {
            fuzz_crdt_channel(&input);
        }
    }
}
