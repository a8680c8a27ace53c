//! Space: the free addresses a peer owns, and how it gives some away.
//!
//! A peer's space is the ranges it owns in its ring replica minus the addresses allocated
//! to its containers. Everything here is a pure function of those two, so it cannot drift
//! from the ring. Allocation takes the lowest free address ([`first_free`], as weave); a
//! donation is cut from the donor's largest free chunk and is at most half its free space
//! ([`donation`]); a peer short of space asks a donor chosen at random, weighted by the
//! free space donors advertise ([`choose_donor`]).

use super::addr::AddrRange;
use super::ring::Ring;
use gossip::peer::PeerId;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Allocated addresses of this peer (address → anything).
pub type Allocated<V> = BTreeMap<u64, V>;

/// The free sub-ranges of `ranges` ∩ `within`, in address order.
pub fn free_chunks<V>(
    ranges: &[AddrRange],
    allocated: &Allocated<V>,
    within: AddrRange,
) -> Vec<AddrRange> {
    let mut out = Vec::new();
    for r in ranges.iter().filter_map(|r| r.intersect(&within)) {
        let mut at = r.start;
        for (&a, _) in allocated.range(r.start..r.end) {
            if a > at {
                out.push(AddrRange { start: at, end: a });
            }
            at = a + 1;
        }
        if at < r.end {
            out.push(AddrRange {
                start: at,
                end: r.end,
            });
        }
    }
    out
}

/// Free addresses in `range`.
pub fn free_count<V>(range: AddrRange, allocated: &Allocated<V>) -> u64 {
    range.len() - allocated.range(range.start..range.end).count() as u64
}

/// The lowest free address of `ranges` inside `within`.
pub fn first_free<V>(
    ranges: &[AddrRange],
    allocated: &Allocated<V>,
    within: AddrRange,
) -> Option<u64> {
    for r in ranges.iter().filter_map(|r| r.intersect(&within)) {
        let mut at = r.start;
        for (&a, _) in allocated.range(r.start..r.end) {
            if a > at {
                return Some(at);
            }
            at = a + 1;
        }
        if at < r.end {
            return Some(at);
        }
    }
    None
}

/// What to donate: the top part of the largest free chunk inside `within`, at most half of
/// all our free space there (so a donor is never emptied). `None` if we have under 2 free.
pub fn donation<V>(
    ranges: &[AddrRange],
    allocated: &Allocated<V>,
    within: AddrRange,
) -> Option<AddrRange> {
    let chunks = free_chunks(ranges, allocated, within);
    let total: u64 = chunks.iter().map(AddrRange::len).sum();
    let largest = chunks
        .iter()
        .max_by_key(|c| (c.len(), std::cmp::Reverse(c.start)))?;
    let n = largest.len().min(total / 2);
    (n > 0).then(|| AddrRange {
        start: largest.end - n,
        end: largest.end,
    })
}

/// A donor to ask for space inside `within`: a reachable peer other than us and not in
/// `exclude`, drawn with probability proportional to the free space it advertises there.
pub fn choose_donor(
    ring: &Ring,
    me: &PeerId,
    reachable: Option<&BTreeSet<PeerId>>,
    exclude: &BTreeSet<PeerId>,
    within: AddrRange,
    rng: &mut impl Rng,
) -> Option<PeerId> {
    let mut weights: BTreeMap<PeerId, u64> = BTreeMap::new();
    for (r, e) in ring.ranges() {
        if e.owner == *me || exclude.contains(&e.owner) || e.free == 0 {
            continue;
        }
        if reachable.is_some_and(|set| !set.contains(&e.owner)) {
            continue;
        }
        if let Some(part) = r.intersect(&within) {
            // Scale the advertised free count to the part inside `within`.
            let w = (u128::from(e.free) * u128::from(part.len()) / u128::from(r.len())) as u64;
            *weights.entry(e.owner).or_insert(0) += w.max(1);
        }
    }
    let total: u64 = weights.values().sum();
    if total == 0 {
        return None;
    }
    let mut pick = rng.gen_range(0..total);
    for (peer, w) in weights {
        if pick < w {
            return Some(peer);
        }
        pick -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn r(start: u64, end: u64) -> AddrRange {
        AddrRange { start, end }
    }

    #[test]
    fn lowest_free_and_chunks() {
        let ranges = [r(10, 20), r(30, 35)];
        let alloc: Allocated<()> = [(10, ()), (11, ()), (13, ())].into();
        assert_eq!(first_free(&ranges, &alloc, r(0, 100)), Some(12));
        assert_eq!(first_free(&ranges, &alloc, r(14, 100)), Some(14));
        assert_eq!(first_free(&ranges, &alloc, r(20, 30)), None);
        assert_eq!(
            free_chunks(&ranges, &alloc, r(0, 100)),
            vec![r(12, 13), r(14, 20), r(30, 35)]
        );
        assert_eq!(free_count(r(10, 20), &alloc), 7);
    }

    #[test]
    fn donation_is_at_most_half_of_the_largest_chunk() {
        let ranges = [r(0, 100)];
        let alloc: Allocated<()> = [(50, ())].into();
        // free 99: largest chunk [0,50); half of 99 is 49 → its top 49.
        assert_eq!(donation(&ranges, &alloc, r(0, 100)), Some(r(1, 50)));
        let alloc: Allocated<()> = (0..90).map(|a| (a, ())).collect();
        assert_eq!(donation(&ranges, &alloc, r(0, 100)), Some(r(95, 100)));
        let alloc: Allocated<()> = (0..99).map(|a| (a, ())).collect();
        assert_eq!(
            donation(&ranges, &alloc, r(0, 100)),
            None,
            "one free: keep it"
        );
    }

    #[test]
    fn donors_are_weighted_by_advertised_free_space() {
        let (me, a, b) = (PeerId([1; 16]), PeerId([2; 16]), PeerId([3; 16]));
        let mut ring = Ring::seeded(r(0, 300), vec![me, a, b]);
        let mut e = *ring.entry(200).unwrap();
        e.free = 10; // b advertises 10, a 100
        e.version += 1;
        ring.set(200, e);
        let mut rng = StdRng::seed_from_u64(7);
        let none = BTreeSet::new();
        let picks: Vec<PeerId> = (0..1000)
            .filter_map(|_| choose_donor(&ring, &me, None, &none, r(0, 300), &mut rng))
            .collect();
        let to_a = picks.iter().filter(|p| **p == a).count();
        assert!((850..=960).contains(&to_a), "{to_a}");
        let only_b = BTreeSet::from([b]);
        assert_eq!(
            choose_donor(&ring, &me, Some(&only_b), &none, r(0, 300), &mut rng),
            Some(b)
        );
        assert_eq!(
            choose_donor(&ring, &me, Some(&only_b), &only_b, r(0, 300), &mut rng),
            None
        );
    }
}
