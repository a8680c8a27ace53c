//! The CRDT contract that gossip channels rely on.
//!
//! A [`Crdt`] is a state that only ever grows in a join-semilattice: [`Crdt::merge`] takes
//! a delta (any part of some replica's state), folds it in, and returns *only what was
//! new* (or `None` when nothing was). Because merge is commutative, associative and
//! idempotent, gossip may deliver deltas late, twice or in any order and every replica
//! still converges to the same state. The law checks in this module's tests run under
//! proptest against the reference [`GCounter`], a grow-only counter (the CRDT of mesh's
//! `increment-only-counter` example).
//!
//! [`crate::channel::CrdtChannel`] puts any `Crdt` on the wire as a gossip channel.

use crate::peer::PeerId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;

/// A state-based CRDT whose merge returns what was new.
pub trait Crdt {
    /// A fragment of state; [`Crdt::full`] returns the whole state as one.
    type Delta: Serialize + DeserializeOwned + Clone;

    /// Folds `delta` in. Returns the part of `delta` that changed this replica, or `None`
    /// if nothing did (so `merge(full())` on itself is always `None`).
    fn merge(&mut self, delta: Self::Delta) -> Option<Self::Delta>;

    /// The whole state as a delta.
    fn full(&self) -> Self::Delta;

    /// Checks a delta decoded from the network before it is merged (sizes, counts).
    fn validate(_delta: &Self::Delta) -> Result<(), &'static str> {
        Ok(())
    }
}

/// Most entries a [`GCounter`] delta may carry.
pub const MAX_GCOUNTER_ENTRIES: usize = 65_536;

/// A grow-only counter: one monotonic count per peer, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GCounter {
    counts: BTreeMap<PeerId, u64>,
}

impl GCounter {
    /// An empty counter.
    pub fn new() -> GCounter {
        GCounter::default()
    }

    /// Adds `n` to `peer`'s count (only `peer` itself should do this) and returns the
    /// delta to gossip.
    pub fn increment(&mut self, peer: PeerId, n: u64) -> BTreeMap<PeerId, u64> {
        let count = self.counts.entry(peer).or_insert(0);
        *count = count.saturating_add(n);
        BTreeMap::from([(peer, *count)])
    }

    /// The counter's value: the sum over all peers (saturating).
    pub fn value(&self) -> u64 {
        self.counts.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

impl Crdt for GCounter {
    type Delta = BTreeMap<PeerId, u64>;

    fn merge(&mut self, delta: Self::Delta) -> Option<Self::Delta> {
        let mut new = BTreeMap::new();
        for (peer, count) in delta {
            // Zero is the implicit count of every peer, so it is never stored.
            if count > self.counts.get(&peer).copied().unwrap_or(0) {
                self.counts.insert(peer, count);
                new.insert(peer, count);
            }
        }
        (!new.is_empty()).then_some(new)
    }

    fn full(&self) -> Self::Delta {
        self.counts.clone()
    }

    fn validate(delta: &Self::Delta) -> Result<(), &'static str> {
        if delta.len() > MAX_GCOUNTER_ENTRIES {
            return Err("too many counter entries");
        }
        Ok(())
    }
}

/// Law checks shared by the proptests of every `Crdt` in this crate.
#[cfg(test)]
pub(crate) mod laws {
    use super::Crdt;
    use std::fmt::Debug;

    fn join<C: Crdt + Clone>(a: &C, b: &C) -> C {
        let mut out = a.clone();
        out.merge(b.full());
        out
    }

    /// Asserts commutativity, associativity, idempotence, and that `merge` returns `None`
    /// exactly when nothing changed and otherwise a delta that alone produces the result.
    pub(crate) fn check<C: Crdt + Clone + PartialEq + Debug>(a: &C, b: &C, c: &C) {
        assert_eq!(join(a, b), join(b, a), "merge is not commutative");
        assert_eq!(
            join(&join(a, b), c),
            join(a, &join(b, c)),
            "merge is not associative"
        );
        let mut again = a.clone();
        assert!(
            again.merge(a.full()).is_none(),
            "merging itself reported news"
        );
        assert_eq!(&again, a, "merge is not idempotent");

        let mut merged = a.clone();
        match merged.merge(b.full()) {
            None => assert_eq!(&merged, a, "merge changed state but returned None"),
            Some(news) => {
                assert_ne!(&merged, a, "merge returned news but changed nothing");
                let mut via_news = a.clone();
                via_news.merge(news);
                assert_eq!(
                    via_news, merged,
                    "the returned delta does not reproduce the merge"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counter() -> impl Strategy<Value = GCounter> {
        proptest::collection::btree_map(0u8..6, 0u64..5, 0..5).prop_map(|m| {
            let mut c = GCounter::new();
            c.merge(m.into_iter().map(|(k, v)| (PeerId([k; 16]), v)).collect());
            c
        })
    }

    proptest! {
        #[test]
        fn gcounter_merge_laws(a in counter(), b in counter(), c in counter()) {
            laws::check(&a, &b, &c);
        }
    }

    #[test]
    fn increments_converge() {
        let (p, q) = (PeerId([1; 16]), PeerId([2; 16]));
        let (mut a, mut b) = (GCounter::new(), GCounter::new());
        let da = a.increment(p, 3);
        let db = b.increment(q, 4);
        assert_eq!(a.merge(db.clone()), Some(db));
        assert_eq!(b.merge(da.clone()), Some(da.clone()));
        assert_eq!(b.merge(da), None);
        assert_eq!((a.value(), b.value()), (7, 7));
        assert_eq!(a, b);
    }
}
