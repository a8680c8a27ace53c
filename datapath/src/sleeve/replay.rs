//! The sliding replay window of one receive key (RFC 6479).
//!
//! The window remembers which of the last [`WINDOW_SIZE`] counters below the highest one
//! seen have been received. It is a ring of 128 `u64` blocks (8192 bits). When the highest
//! counter moves forward, the blocks it passes are cleared one whole block at a time, so
//! an update costs at most 128 word writes and usually none. One block (64 bits) is kept
//! as slack so that the block being cleared never holds a counter that is still inside the
//! window: the usable window is 8192 − 64 = 8128 counters, as in Linux's WireGuard.
//!
//! The check is split in two, boringtun-style: [`ReplayWindow::will_accept`] reads only,
//! and runs *before* the AEAD, so that a forged or replayed datagram costs no crypto;
//! [`ReplayWindow::mark`] runs *after* the AEAD has authenticated the counter, so that a
//! forgery can never move the window.

/// Bits in the bitmap.
pub const BITMAP_BITS: u64 = 8192;
/// Bits per bitmap block.
const BLOCK_BITS: u64 = u64::BITS as u64;
/// Blocks in the ring.
const BLOCKS: usize = (BITMAP_BITS / BLOCK_BITS) as usize;
/// How far below the highest received counter a counter may be and still be accepted
/// (once). One block of the bitmap is slack.
pub const WINDOW_SIZE: u64 = BITMAP_BITS - BLOCK_BITS;
/// Counters at or above this are never sent nor accepted: 2^64 − 8192 − 1, so that
/// `counter + WINDOW_SIZE` cannot overflow and a key is retired long before the nonce
/// space ends.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - BITMAP_BITS;

/// Which counters have been received under one key.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the highest counter marked so far; 0 while nothing has been marked.
    next: u64,
    /// Bit `c % 64` of block `(c / 64) % 128` is set once counter `c` has been marked.
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window: every counter below [`REJECT_AFTER_MESSAGES`] is acceptable.
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            next: 0,
            bitmap: [0; BLOCKS],
        }
    }

    /// One more than the highest counter marked so far (0 if none).
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// Whether `counter` would be accepted: below [`REJECT_AFTER_MESSAGES`], not older than
    /// the window, and not yet marked. Changes nothing; call it before decrypting.
    pub fn will_accept(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        // `counter < REJECT_AFTER_MESSAGES`, so this cannot overflow.
        if counter + WINDOW_SIZE + 1 < self.next {
            return false;
        }
        let (block, bit) = Self::position(counter);
        self.bitmap[block] & bit == 0
    }

    /// Records `counter` as received. Returns `false`, and changes nothing, if
    /// [`ReplayWindow::will_accept`] would have refused it. Call it only after the
    /// datagram has been authenticated.
    pub fn mark(&mut self, counter: u64) -> bool {
        if !self.will_accept(counter) {
            return false;
        }
        if counter >= self.next {
            self.advance_to(counter);
        }
        let (block, bit) = Self::position(counter);
        self.bitmap[block] |= bit;
        true
    }

    /// Moves the top of the window to `counter`, clearing the blocks it passes over.
    fn advance_to(&mut self, counter: u64) {
        let new_block = counter / BLOCK_BITS;
        // With nothing marked yet the bitmap is all zero, so block 0 is as good a start
        // as any.
        let old_block = self.next.saturating_sub(1) / BLOCK_BITS;
        let to_clear = (new_block - old_block).min(BLOCKS as u64);
        for i in 1..=to_clear {
            let block = ((old_block + i) % BLOCKS as u64) as usize;
            self.bitmap[block] = 0;
        }
        self.next = counter + 1;
    }

    /// The block index and bit mask of `counter`.
    fn position(counter: u64) -> (usize, u64) {
        let block = ((counter / BLOCK_BITS) % BLOCKS as u64) as usize;
        (block, 1u64 << (counter % BLOCK_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// One step of a self-test: `will_accept` must predict `mark`, and must not mutate.
    fn step(window: &mut ReplayWindow, counter: u64) -> bool {
        let predicted = window.will_accept(counter);
        assert_eq!(
            predicted,
            window.will_accept(counter),
            "will_accept mutated"
        );
        let marked = window.mark(counter);
        assert_eq!(
            predicted, marked,
            "will_accept and mark disagree on {counter}"
        );
        marked
    }

    /// The behaviour of WireGuard's counter self-test (Linux
    /// drivers/net/wireguard/selftest/counter.c), restated as our own table: with
    /// `L = WINDOW_SIZE + 1` and `R = REJECT_AFTER_MESSAGES`, feeding these counters in
    /// order to one fresh window gives these verdicts.
    #[test]
    fn wireguard_counter_vectors() {
        const L: u64 = WINDOW_SIZE + 1;
        const R: u64 = REJECT_AFTER_MESSAGES;
        let table: [(u64, bool); 34] = [
            (0, true),
            (1, true),
            (1, false),
            (9, true),
            (8, true),
            (7, true),
            (7, false),
            (L, true),
            (L - 1, true),
            (L - 1, false),
            (L - 2, true),
            (2, true),
            (2, false),
            (L + 16, true),
            (3, false),
            (L + 16, false),
            (L * 4, true),
            (L * 4 - (L - 1), true),
            (10, false),
            (L * 4 - L, false),
            (L * 4 - (L + 1), false),
            (L * 4 - (L - 2), true),
            (L * 4 + 1 - L, false),
            (0, false),
            (R, false),
            (R - 1, true),
            (R, false),
            (R - 1, false),
            (R - 2, true),
            (R + 1, false),
            (R + 2, false),
            (R - 2, false),
            (R - 3, true),
            (0, false),
        ];
        let mut window = ReplayWindow::new();
        for (i, &(counter, expected)) in table.iter().enumerate() {
            assert_eq!(step(&mut window, counter), expected, "vector {}", i + 1);
        }
    }

    /// The six bulk loops of the same self-test.
    #[test]
    fn wireguard_bulk_loops() {
        let w = WINDOW_SIZE;
        // Ascending 1..=W, then 0 is still inside the window, once.
        let mut window = ReplayWindow::new();
        (1..=w).for_each(|i| assert!(step(&mut window, i)));
        assert!(step(&mut window, 0));
        assert!(!step(&mut window, 0));
        // Ascending 2..=W+1: 1 is the oldest acceptable, 0 has fallen out.
        let mut window = ReplayWindow::new();
        (2..=w + 1).for_each(|i| assert!(step(&mut window, i)));
        assert!(step(&mut window, 1));
        assert!(!step(&mut window, 0));
        // Descending W..=0: all accepted.
        let mut window = ReplayWindow::new();
        (0..=w).rev().for_each(|i| assert!(step(&mut window, i)));
        // Descending W+1..=1: 0 is then too old.
        let mut window = ReplayWindow::new();
        (1..=w + 1)
            .rev()
            .for_each(|i| assert!(step(&mut window, i)));
        assert!(!step(&mut window, 0));
        // Descending W..=1, then W+1 moves the window past 0.
        let mut window = ReplayWindow::new();
        (1..=w).rev().for_each(|i| assert!(step(&mut window, i)));
        assert!(step(&mut window, w + 1));
        assert!(!step(&mut window, 0));
        // Descending W..=1, then 0 (still in), then W+1.
        let mut window = ReplayWindow::new();
        (1..=w).rev().for_each(|i| assert!(step(&mut window, i)));
        assert!(step(&mut window, 0));
        assert!(step(&mut window, w + 1));
    }

    #[test]
    fn window_is_at_least_2048() {
        const _: () = assert!(WINDOW_SIZE >= 2048);
        let mut window = ReplayWindow::new();
        assert!(window.mark(5000));
        assert!(window.will_accept(5000 - 2048));
        // A far jump clears the whole ring.
        assert!(window.mark(1 << 40));
        assert!(window.will_accept((1 << 40) - 1));
        assert!(!window.will_accept(5000));
    }

    proptest! {
        /// Against a naive model that remembers every counter it has seen.
        #[test]
        fn matches_naive_model(ops in proptest::collection::vec((0u64..20_000, any::<bool>()), 1..400)) {
            let mut window = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut highest: Option<u64> = None;
            for (counter, do_mark) in ops {
                let expected = match highest {
                    None => true,
                    Some(h) if counter > h => true,
                    Some(h) => counter + WINDOW_SIZE >= h && !seen.contains(&counter),
                };
                prop_assert_eq!(window.will_accept(counter), expected);
                if do_mark {
                    prop_assert_eq!(window.mark(counter), expected);
                    if expected {
                        seen.insert(counter);
                        highest = Some(highest.map_or(counter, |h| h.max(counter)));
                    }
                }
            }
        }
    }
}
