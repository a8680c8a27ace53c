//! Gives the heap's free pages back to the kernel after a burst.
//!
//! A router that joins a big mesh takes the whole mesh's state at once: every peer's
//! record, a state exchange on each of its links. glibc's malloc keeps the freed
//! chunks in its arenas afterwards, and only memory at the very top of an arena is
//! returned by itself: in a 100-router mesh the last routers to join held 12 MB for
//! 8 MB in use, minutes later. `malloc_trim(0)` releases the free pages anywhere in
//! every arena (it keeps the chunks, with their pages given back to the kernel).
//!
//! Every [`PERIOD`], [`Trim`] looks at how many bytes the arenas hold free
//! (`mallinfo2`) and trims when that grew by [`GROWTH`] since the last trim: after a
//! burst, not on every look (pages already given back still count as free). A no-op
//! where the C library is not glibc.

use std::time::Duration;

/// How often the free bytes are looked at.
pub const PERIOD: Duration = Duration::from_secs(10);
/// Growth of the free bytes, since the last trim, that is worth a trim.
pub const GROWTH: usize = 1 << 20;

/// When to trim, from the free bytes the arenas hold (sans-IO: the caller measures).
#[derive(Debug, Default)]
pub struct Trim {
    /// Free bytes right after the last trim (0 before the first).
    after_last: usize,
}

impl Trim {
    /// Whether `free` bytes held free call for a trim now.
    pub fn due(&self, free: usize) -> bool {
        free >= self.after_last.saturating_add(GROWTH)
    }

    /// A trim ran; `free` bytes are held free after it.
    pub fn done(&mut self, free: usize) {
        self.after_last = free;
    }

    /// Free bytes shrink as they are reused: a later burst is measured from there.
    pub fn observe(&mut self, free: usize) {
        self.after_last = self.after_last.min(free);
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
        let Some(free) = free_bytes() else {
            return;
        };
        if trim.due(free) {
            malloc_trim();
            let after = free_bytes().unwrap_or(free);
            tracing::debug!("heap: {free} bytes held free; trimmed ({after} after)");
            trim.done(after);
        } else {
            trim.observe(free);
        }
    }
}

/// Bytes the malloc arenas hold free, not counting the top chunk that malloc trims by
/// itself (`None`: not glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_bytes() -> Option<usize> {
    // SAFETY: mallinfo2 takes no arguments, only reads malloc's state under its arena
    // locks, and returns a plain struct by value; glibc has it since 2.33 (Debian 12
    // ships 2.36).
    #[allow(unsafe_code)]
    let info = unsafe { nix::libc::mallinfo2() };
    Some(info.fordblks.saturating_sub(info.keepcost))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_bytes() -> Option<usize> {
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

    #[test]
    fn a_burst_is_trimmed_once_and_the_next_burst_again() {
        let mut t = Trim::default();
        assert!(!t.due(GROWTH - 1), "a small heap is left alone");
        assert!(t.due(3 * GROWTH), "a burst left 3 MiB free");
        t.done(3 * GROWTH);
        // The released pages still count as free: no trim on every look.
        assert!(!t.due(3 * GROWTH));
        assert!(!t.due(4 * GROWTH - 1));
        // The free chunks are reused, then a new burst frees them again.
        t.observe(GROWTH / 2);
        assert!(!t.due(GROWTH));
        assert!(t.due(GROWTH / 2 + GROWTH));
    }

    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        let line = status
            .lines()
            .find(|l| l.starts_with("RssAnon:"))
            .expect("RssAnon");
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("a number")
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
