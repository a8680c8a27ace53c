//! Gives the heap's free pages back to the kernel after a burst.
//!
//! A router that joins a big mesh takes the whole mesh's state at once: every peer's
//! record, a state exchange on each of its links. glibc's malloc keeps the freed
//! chunks in its arenas afterwards, and only memory at the very top of an arena is
//! returned by itself: in a 100-router mesh the last routers to join held 12 MB for
//! 8 MB in use, minutes later. `malloc_trim(0)` releases the free pages anywhere in
//! every arena (it keeps the chunks, with their pages given back to the kernel).
//!
//! Every [`PERIOD`], [`Trim`] looks at the process's resident anonymous memory (a
//! read of `/proc/self/status`) and trims when it grew by [`GROWTH`] since the last
//! trim, or [`SETTLE`] after the last trim: chunks that were in use at one trim and
//! freed since are resident without any growth, and only a later trim gives their
//! pages back. Asking malloc how much it holds free (`mallinfo2`) walks every free
//! chunk of every arena, as a trim does: looking that way every 5 s cost 100 idle
//! routers half a percent of a core (perf, `int_mallinfo`). A no-op where the C library is not
//! glibc.

use std::time::{Duration, Instant};

/// How often the memory is looked at.
pub const PERIOD: Duration = Duration::from_secs(5);
/// Growth of the resident memory, since the last trim, that calls for a trim now.
pub const GROWTH: u64 = 1 << 20;
/// Time after a trim when the next one runs, grown or not.
pub const SETTLE: Duration = Duration::from_secs(30);

/// When to trim (sans-IO: the caller measures and passes the time).
#[derive(Debug, Default)]
pub struct Trim {
    /// Resident memory right after the last trim, or the lowest seen since.
    baseline: Option<u64>,
    last: Option<Instant>,
}

impl Trim {
    /// Whether to trim at `now`, with `resident` bytes resident.
    pub fn due(&self, now: Instant, resident: u64) -> bool {
        let grown = self
            .baseline
            .is_none_or(|b| resident >= b.saturating_add(GROWTH));
        let settled = self.last.is_none_or(|t| now >= t + SETTLE);
        grown || settled
    }

    /// A trim ran at `now`; `resident` bytes are resident after it.
    pub fn trimmed(&mut self, now: Instant, resident: u64) {
        self.baseline = Some(resident);
        self.last = Some(now);
    }

    /// A look without a trim: memory that shrank by itself lowers the baseline.
    pub fn observe(&mut self, resident: u64) {
        self.baseline = Some(self.baseline.map_or(resident, |b| b.min(resident)));
    }
}

/// Runs forever on the current runtime: looks every [`PERIOD`], trims when [`Trim`]
/// says so.
pub async fn release_free_pages() {
    let mut trim = Trim::default();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(resident) = resident_anon() else {
            return;
        };
        let now = Instant::now();
        if !trim.due(now, resident) {
            trim.observe(resident);
            continue;
        }
        if !malloc_trim() {
            return;
        }
        let after = resident_anon().unwrap_or(resident);
        tracing::debug!("heap: {resident} bytes resident, {after} after a trim");
        trim.trimmed(now, after);
    }
}

/// The process's resident anonymous memory (`RssAnon` in `/proc/self/status`).
fn resident_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Gives the free pages of every arena back to the kernel; `false` where there is no
/// such call (not glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_trim() -> bool {
    // SAFETY: malloc_trim(0) takes a size, locks each arena in turn and only advises
    // the kernel about pages inside free chunks; no pointer we hold is touched.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::malloc_trim(0);
    }
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn trims_on_growth_and_once_settled_not_on_every_look() {
        let t0 = Instant::now();
        let mut t = Trim::default();
        assert!(t.due(t0, 3 * MIB), "the first look trims");
        t.trimmed(t0, 3 * MIB);
        let at = |s: u64| t0 + PERIOD * s as u32;
        assert!(!t.due(at(1), 3 * MIB + GROWTH - 1), "less than GROWTH");
        assert!(t.due(at(1), 3 * MIB + GROWTH), "a burst grows the heap");
        t.trimmed(at(1), 12 * MIB);
        // The burst ends: its chunks are freed with no growth; the next trim, once
        // settled, gives their pages back.
        for s in 2..7 {
            assert!(!t.due(at(s), 12 * MIB), "look {s}");
            t.observe(12 * MIB);
        }
        assert!(t.due(at(1) + SETTLE, 12 * MIB));
        // Memory that shrinks by itself lowers the baseline.
        t.trimmed(at(8), 9 * MIB);
        t.observe(7 * MIB);
        assert!(t.due(at(9), 8 * MIB));
    }

    fn rss_anon_kib() -> u64 {
        resident_anon().expect("RssAnon in /proc/self/status") / 1024
    }

    #[test]
    fn a_trim_gives_the_pages_of_freed_chunks_back() {
        // Many small blocks, so that their chunks stay in the arena when freed (the
        // blocks kept above them stop the arena's top from shrinking by itself).
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 1000]).collect();
        let keep: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 1000]).collect();
        drop(blocks);
        let resident = rss_anon_kib();
        assert!(malloc_trim(), "this test needs glibc (malloc_trim)");
        let trimmed = rss_anon_kib();
        assert!(
            trimmed + 2048 <= resident,
            "a trim gives the freed pages back: RssAnon {resident} -> {trimmed} KiB"
        );
        assert!(keep
            .iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|x| *x == i as u8)));
        let again: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1000]).collect();
        assert!(again
            .iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|x| *x == i as u8)));
    }
}
