//! The ring: the allocation range cut into tokens, each owned by one peer. A CRDT.
//!
//! A token is an address; it starts a range that runs to the next token (or the end of
//! the universe). Every ring has a token at the universe's start, and tokens are never
//! removed, so the ranges always tile the universe: **each address has exactly one owner**
//! in any one replica.
//!
//! Each token's [`Entry`] is versioned and only its owner changes it (a donation is the
//! owner writing the recipient's name; a split is the owner inserting a token inside its
//! own range). Replicas merge per token: the higher version wins. Two entries with the
//! same version and different content mean that two writers used the same version: that
//! is an inconsistency, never silently resolved: the incoming entry is rejected and
//! reported ([`MergeOutcome::conflicts`]).
//!
//! Versions have two halves. The low 32 bits count the owner's own edits; the high bits
//! count takeovers ([`takeover_version`]): the heir of a dead peer writes a version above
//! anything the dead peer could have written, even edits the heir never heard of.
//!
//! A ring's identity ([`RingId`]) is a fingerprint of its universe and its seed peers:
//! rings seeded separately have different ids and never merge.

use super::addr::AddrRange;
use gossip::channel::Fingerprint;
use gossip::crdt::Crdt;
use gossip::peer::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most tokens a ring may hold: in one message, and in total (new tokens past it are
/// dropped and counted). About 40 bytes a token, so a full ring is some 650 KiB: the
/// whole ring must fit one gossip message and the snapshot, both capped at 1 MiB.
pub const MAX_RING_ENTRIES: usize = 16_384;
/// Most seed peers a ring may name.
pub const MAX_SEEDS: usize = 4_096;
/// The highest entry version a peer may send (decoded entries above it are refused).
///
/// Honest versions start at 1, grow by one per owner edit and by one takeover epoch
/// (2^32) per `rmpeer`, so 2^62 is 2^30 takeovers away: never reached honestly. It keeps
/// a quarter of the `u64` space above every accepted version, so the owner's `+ 1` and
/// [`takeover_version`] never overflow (they refuse to go above this bound instead).
pub const MAX_VERSION: u64 = (1 << 62) - 1;
/// How far above the version a replica holds an incoming entry's version may be
/// (256 takeover epochs); a bigger jump is refused and counted as inconsistent.
///
/// Without it, one forged entry at [`MAX_VERSION`] would wedge a token for good: no one
/// could ever write above it. With it, a forger must get 2^22 successive entries accepted
/// to get there. An honest replica never sees a token jump by 256 takeovers at once.
pub const MAX_VERSION_STEP: u64 = 1 << 40;

/// One token's state.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Who owns the range starting at this token.
    pub owner: PeerId,
    /// Bumped by every change; see the module doc for its two halves.
    pub version: u64,
    /// Free addresses in the range, as last advertised by the owner.
    pub free: u64,
}

/// The version a takeover writes over `version`: the next takeover epoch; `None` above
/// [`MAX_VERSION`] (the token then stays as it is, and the caller reports it).
pub fn takeover_version(version: u64) -> Option<u64> {
    let epoch = (version >> 32).checked_add(1)?;
    let v = epoch.checked_mul(1 << 32)?;
    (v <= MAX_VERSION).then_some(v)
}

/// The version an owner's edit writes over `version`; `None` above [`MAX_VERSION`].
pub fn next_version(version: u64) -> Option<u64> {
    version.checked_add(1).filter(|v| *v <= MAX_VERSION)
}

/// A ring's identity: a fingerprint of its universe and sorted seed set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct RingId(pub u64);

impl std::fmt::Display for RingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The id of the ring over `universe` seeded by `seeds` (sorted, deduplicated).
pub fn ring_id(universe: AddrRange, seeds: &[PeerId]) -> RingId {
    let mut f = Fingerprint::new().u64(universe.start).u64(universe.end);
    for s in seeds {
        f = f.bytes(&s.0);
    }
    RingId(f.finish())
}

/// A fragment of a ring's entries, keyed by token.
pub type Entries = BTreeMap<u64, Entry>;

/// The result of [`Ring::merge_entries`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The entries that changed this replica.
    pub news: Entries,
    /// Tokens whose incoming entry had our version but other content (rejected).
    pub conflicts: Vec<u64>,
}

/// A replica of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    universe: AddrRange,
    seeds: Vec<PeerId>,
    id: RingId,
    entries: Entries,
}

impl Ring {
    /// An empty replica of the ring with this identity (merge entries into it).
    pub fn empty(universe: AddrRange, mut seeds: Vec<PeerId>) -> Ring {
        seeds.sort_unstable();
        seeds.dedup();
        let id = ring_id(universe, &seeds);
        Ring {
            universe,
            seeds,
            id,
            entries: BTreeMap::new(),
        }
    }

    /// The ring seeded by `seeds`: the universe cut into equal shares, one per seed, in
    /// order of peer id. Every peer computes the very same ring from the same seeds.
    pub fn seeded(universe: AddrRange, seeds: Vec<PeerId>) -> Ring {
        let mut ring = Ring::empty(universe, seeds);
        let n = ring.seeds.len().max(1) as u64;
        let (share, extra) = (universe.len() / n, universe.len() % n);
        let mut at = universe.start;
        for (i, seed) in ring.seeds.iter().enumerate() {
            let size = share + u64::from((i as u64) < extra);
            if size == 0 {
                continue;
            }
            let entry = Entry {
                owner: *seed,
                version: 1,
                free: size,
            };
            ring.entries.insert(at, entry);
            at += size;
        }
        ring
    }

    /// The identity.
    pub fn id(&self) -> RingId {
        self.id
    }

    /// The universe.
    pub fn universe(&self) -> AddrRange {
        self.universe
    }

    /// The seed peers (sorted).
    pub fn seeds(&self) -> &[PeerId] {
        &self.seeds
    }

    /// All entries.
    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// Whether the replica covers the universe (has a token at its start).
    pub fn is_complete(&self) -> bool {
        self.entries.contains_key(&self.universe.start)
    }

    /// The entry at `token`.
    pub fn entry(&self, token: u64) -> Option<&Entry> {
        self.entries.get(&token)
    }

    /// Every token's range and entry, in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (AddrRange, &Entry)> + '_ {
        let mut it = self.entries.iter().peekable();
        std::iter::from_fn(move || {
            let (&start, e) = it.next()?;
            let end = it.peek().map_or(self.universe.end, |(t, _)| **t);
            Some((AddrRange { start, end }, e))
        })
    }

    /// The token whose range holds `addr`, with its range and entry.
    pub fn owner_of(&self, addr: u64) -> Option<(AddrRange, &Entry)> {
        if !self.universe.contains(addr) {
            return None;
        }
        let (&start, e) = self.entries.range(..=addr).next_back()?;
        let end = self
            .entries
            .range(start + 1..)
            .next()
            .map_or(self.universe.end, |(t, _)| *t);
        Some((AddrRange { start, end }, e))
    }

    /// The ranges owned by `peer`, in address order.
    pub fn owned_by(&self, peer: &PeerId) -> Vec<AddrRange> {
        self.ranges()
            .filter(|(_, e)| e.owner == *peer)
            .map(|(r, _)| r)
            .collect()
    }

    /// Addresses owned by each peer.
    pub fn shares(&self) -> BTreeMap<PeerId, u64> {
        let mut out = BTreeMap::new();
        for (r, e) in self.ranges() {
            *out.entry(e.owner).or_insert(0) += r.len();
        }
        out
    }

    /// Free addresses each peer advertises.
    pub fn advertised_free(&self) -> BTreeMap<PeerId, u64> {
        let mut out = BTreeMap::new();
        for e in self.entries.values() {
            *out.entry(e.owner).or_insert(0) += e.free;
        }
        out
    }

    /// Writes `entry` at `token`: a local edit by the owner, which must bump the version.
    pub(crate) fn set(&mut self, token: u64, entry: Entry) {
        self.entries.insert(token, entry);
    }

    /// Merges `delta` per token (higher version wins); returns what changed and what was
    /// rejected as inconsistent. Tokens outside the universe are the caller's to refuse
    /// ([`Ring::check_entries`]); here they are skipped.
    pub fn merge_entries(&mut self, delta: &Entries) -> MergeOutcome {
        let mut out = MergeOutcome::default();
        for (&token, incoming) in delta {
            if !self.universe.contains(token) {
                continue;
            }
            match self.entries.get(&token) {
                Some(cur) if cur.version > incoming.version => {}
                Some(cur) if cur.version == incoming.version => {
                    if cur != incoming {
                        out.conflicts.push(token);
                    }
                }
                _ => {
                    self.entries.insert(token, *incoming);
                    out.news.insert(token, *incoming);
                }
            }
        }
        out
    }

    /// Checks decoded entries against this ring's universe and the size limits.
    pub fn check_entries(universe: AddrRange, entries: &Entries) -> Result<(), &'static str> {
        if entries.len() > MAX_RING_ENTRIES {
            return Err("too many ring entries");
        }
        for (&token, e) in entries {
            if !universe.contains(token) {
                return Err("ring token outside the allocation range");
            }
            if e.free > universe.len() {
                return Err("free count larger than the allocation range");
            }
            if e.version > MAX_VERSION {
                return Err("ring entry version above the limit");
            }
        }
        Ok(())
    }
}

impl Crdt for Ring {
    type Delta = Entries;

    fn merge(&mut self, delta: Entries) -> Option<Entries> {
        let news = self.merge_entries(&delta).news;
        (!news.is_empty()).then_some(news)
    }

    fn full(&self) -> Entries {
        self.entries.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u8) -> PeerId {
        PeerId([i; 16])
    }

    const U: AddrRange = AddrRange {
        start: 1000,
        end: 1100,
    };

    #[test]
    fn seeded_rings_tile_the_universe_identically() {
        let a = Ring::seeded(U, vec![peer(3), peer(1), peer(2)]);
        let b = Ring::seeded(U, vec![peer(2), peer(3), peer(1), peer(1)]);
        assert_eq!(a, b);
        let shares = a.shares();
        assert_eq!(shares.values().sum::<u64>(), 100);
        assert_eq!(shares[&peer(1)], 34);
        assert_eq!(a.owner_of(1099).unwrap().1.owner, peer(3));
        assert!(a.owner_of(1100).is_none());
        assert_ne!(a.id(), Ring::seeded(U, vec![peer(1), peer(2)]).id());
    }

    #[test]
    fn equal_version_other_content_is_rejected_and_reported() {
        let mut a = Ring::seeded(U, vec![peer(1), peer(2)]);
        let before = a.clone();
        let mut forged = a.full();
        forged.get_mut(&1000).unwrap().owner = peer(9);
        let out = a.merge_entries(&forged);
        assert_eq!(out.conflicts, vec![1000]);
        assert!(out.news.is_empty());
        assert_eq!(a, before);
    }

    #[test]
    fn takeover_versions_beat_owner_edits() {
        let tv = |v| takeover_version(v).unwrap();
        assert!(tv(5) > 5 + 1_000_000);
        assert!(tv(tv(7)) > tv(7) + 1000);
    }

    /// Versions from 0xFFFFFFFF << 32 up used to wrap to 0 (a takeover that loses).
    #[test]
    fn takeover_version_near_the_top_does_not_wrap() {
        for v in [
            0xFFFF_FFFF << 32,
            u64::MAX,
            MAX_VERSION,
            MAX_VERSION - (1 << 32),
        ] {
            if let Some(t) = takeover_version(v) {
                assert!(t > v && t <= MAX_VERSION, "{v:#x} -> {t:#x}");
            }
        }
        assert_eq!(takeover_version(u64::MAX), None);
        assert_eq!(takeover_version(MAX_VERSION), None);
        assert_eq!(next_version(MAX_VERSION), None);
        assert_eq!(next_version(u64::MAX), None);
        assert_eq!(next_version(1), Some(2));
    }

    #[test]
    fn ring_entry_with_version_above_the_limit_is_refused() {
        let mut e = Entries::new();
        e.insert(
            1000,
            Entry {
                owner: peer(1),
                version: u64::MAX,
                free: 0,
            },
        );
        assert!(Ring::check_entries(U, &e).is_err());
        e.get_mut(&1000).unwrap().version = MAX_VERSION;
        assert!(Ring::check_entries(U, &e).is_ok());
    }

    /// Replicas of one consistent history: each token's entry is a function of
    /// (token, version), and each replica knows some version of some tokens.
    fn replica() -> impl Strategy<Value = Ring> {
        proptest::collection::btree_map(0u64..8, 1u64..5, 0..8).prop_map(|m| {
            let mut r = Ring::empty(U, vec![peer(1)]);
            let entries: Entries = m
                .into_iter()
                .map(|(t, v)| {
                    let e = Entry {
                        owner: peer(((t * 7 + v * 3) % 5) as u8),
                        version: v,
                        free: t + v,
                    };
                    (U.start + t * 10, e)
                })
                .collect();
            r.merge_entries(&entries);
            r
        })
    }

    fn join(a: &Ring, b: &Ring) -> Ring {
        let mut out = a.clone();
        out.merge(b.full());
        out
    }

    proptest! {
        #[test]
        fn merge_laws(a in replica(), b in replica(), c in replica()) {
            prop_assert_eq!(join(&a, &b), join(&b, &a), "commutative");
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)), "associative");
            let mut again = a.clone();
            prop_assert!(again.merge(a.full()).is_none(), "merging itself is news");
            prop_assert_eq!(&again, &a, "idempotent");
            let mut merged = a.clone();
            match merged.merge(b.full()) {
                None => prop_assert_eq!(&merged, &a, "None but changed"),
                Some(news) => {
                    prop_assert_ne!(&merged, &a, "news but unchanged");
                    let mut via = a.clone();
                    via.merge(news);
                    prop_assert_eq!(via, merged, "news does not reproduce the merge");
                }
            }
        }

        #[test]
        fn conflicting_deltas_change_nothing(a in replica(), token in 0u64..8) {
            let mut r = a.clone();
            let t = U.start + token * 10;
            if let Some(e) = r.entry(t).copied() {
                let forged = Entries::from([(t, Entry { free: e.free + 1, ..e })]);
                let out = r.merge_entries(&forged);
                prop_assert_eq!(out.conflicts, vec![t]);
                prop_assert_eq!(&r, &a);
            }
        }
    }
}
