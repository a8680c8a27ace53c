//! Gives the heap's free pages back to the kernel after a burst.
//!
//! A router that joins a big mesh takes the whole mesh's state at once: every peer's
//! record, a state exchange on each of its links. glibc's malloc keeps the freed
//! chunks in its arenas afterwards, and only memory at the very top of an arena is
//! returned by itself: in a 100-router mesh the last routers to join held 12 MB for
//! 8 MB in use, minutes later. `malloc_trim(0)` releases the free pages anywhere in
//! every arena (it keeps the chunks, with their pages given back to the kernel).
//!
//! Every [`PERIOD`], [`Trim`] looks at the process's resident anonymous memory and at
//! the bytes the arenas hold free (`mallinfo2`), and trims when the resident memory
//! grew by [`GROWTH`] since the last trim while at least that much is free: after a
//! burst, and again when reused free chunks were freed once more (their pages are
//! resident again), but not on every look. A no-op where the C library is not glibc.

use std::time::Duration;

/// How often the memory is looked at.
pub const PERIOD: Duration = Duration::from_secs(5);
/// Growth of the resident memory, since the last trim, that is worth a trim (when the
/// arenas hold at least as much free).
pub const GROWTH: u64 = 1 << 20;

/// What one look measured, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident anonymous memory (`RssAnon`).
    pub resident: u64,
    /// Held free by the malloc arenas (some of it maybe given back already).
    pub free: u64,
}

/// When to trim (sans-IO: the caller measures).
#[derive(Debug, Default)]
pub struct Trim {
    /// Resident memory right after the last trim, or the lowest seen since (0 before
    /// the first look).
    baseline: Option<u64>,
}

impl Trim {
    /// Whether a trim is worth it now.
    pub fn due(&self, s: Sample) -> bool {
        let grown = self
            .baseline
            .is_none_or(|b| s.resident >= b.saturating_add(GROWTH));
        grown && s.free >= GROWTH
    }

    /// A trim ran (or was not due): `resident` bytes after it. Memory that shrinks
    /// (freed and given back by malloc itself) lowers the baseline.
    pub fn observe(&mut self, resident: u64, trimmed: bool) {
        self.baseline = Some(match self.baseline {
            Some(b) if !trimmed => b.min(resident),
            _ => resident,
        });
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
        let (Some(free), Some(resident)) = (free_bytes(), resident_anon()) else {
            return;
        };
        let sample = Sample { resident, free };
        if trim.due(sample) {
            malloc_trim();
            let after = resident_anon().unwrap_or(resident);
            tracing::debug!(
                "heap: {resident} bytes resident, {free} held free; trimmed to {after}"
            );
            trim.observe(after, true);
        } else {
            trim.observe(resident, false);
        }
    }
}

/// The process's resident anonymous memory (`RssAnon` in `/proc/self/status`).
fn resident_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_bytes() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments, only reads malloc's state under its arena
    // locks, and returns a plain struct by value; glibc has it since 2.33 (Debian 12
    // ships 2.36).
    #[allow(unsafe_code)]
    let info = unsafe { nix::libc::mallinfo2() };
    let free = info.fordblks.saturating_sub(info.keepcost);
    Some(u64::try_from(free).unwrap_or(u64::MAX))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_bytes() -> Option<u64> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_trim() {
    // SAFETY: malloc_trim(0) takes a size, locks each arena in turn and only advises
    // the kernel about pages inside free chunks; no pointer we hold is touched.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(resident_mib: u64, free_mib: u64) -> Sample {
        Sample {
            resident: resident_mib * MIB,
            free: free_mib * MIB,
        }
    }

    #[test]
    fn a_burst_is_trimmed_once_and_pages_dirtied_again_are_trimmed_again() {
        let mut t = Trim::default();
        assert!(!t.due(sample(3, 0)), "nothing free: nothing to give back");
        assert!(t.due(sample(12, 4)), "the first look after a burst");
        t.observe(9 * MIB, true);
        // The pages given back still count as free: no trim on every look.
        assert!(!t.due(sample(9, 4)));
        let almost = Sample {
            resident: 10 * MIB - 1,
            free: 4 * MIB,
        };
        assert!(!t.due(almost), "less than GROWTH since the trim");
        // The free chunks were reused and freed again: resident once more.
        assert!(t.due(sample(10, 4)));
        // Memory that shrinks by itself lowers the baseline.
        let mut t = Trim::default();
        t.observe(9 * MIB, false);
        t.observe(7 * MIB, false);
        assert!(t.due(sample(8, 2)));
    }

    fn rss_anon_kib() -> u64 {
        resident_anon().expect("RssAnon in /proc/self/status") / 1024
    }

    #[test]
    fn freed_memory_shows_and_a_trim_gives_its_pages_back() {
        let Some(before) = free_bytes() else {
            panic!("this test needs glibc (mallinfo2, malloc_trim)");
        };
        // Many small blocks, so that their chunks stay in the arena when freed.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 1000]).collect();
        let keep: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 1000]).collect();
        drop(blocks);
        let freed = free_bytes().expect("glibc");
        assert!(
            freed >= before + 2 * GROWTH,
            "4 MB freed in small blocks shows as free: {before} -> {freed}"
        );
        let resident = rss_anon_kib();
        malloc_trim();
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
