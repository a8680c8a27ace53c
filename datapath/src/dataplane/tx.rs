//! A reusable batch of datagrams to send.
//!
//! One contiguous buffer, allocated once, into which datagrams are sealed back to back;
//! the driver sends the batch and marks what went out with [`TxBuffer::advance`] (so a
//! full socket buffer leaves the rest queued, not dropped). Datagrams sit back to back,
//! so a run of them for one address is one contiguous slice, which the driver can hand
//! to the kernel in one call (UDP GSO). Filling it never allocates: when it is full, the
//! data plane drops and counts.
//!
//! Encryption may be deferred ([`TxBuffer::deferring_encryption`]): the data plane then
//! only frames each datagram and records its [`SealJob`]. The jobs run at
//! [`TxBuffer::encrypt`], or at the first [`TxBuffer::next_run`], which the driver calls
//! after it has let go of the data plane, so that several drivers sharing one data plane
//! encrypt at the same time. Nothing leaves unencrypted.

use crate::sleeve::SealJob;
use std::net::SocketAddr;
use std::ops::Range;

/// Datagrams kept free by [`TxBuffer::is_nearly_full`]: a superframe's segments.
const ROOM_ITEMS: usize = 64;

/// Datagrams waiting to be sent.
pub struct TxBuffer {
    buf: Vec<u8>,
    used: usize,
    items: Vec<(SocketAddr, Range<usize>)>,
    max_items: usize,
    /// Items before this one have been sent.
    sent: usize,
    /// Whether [`TxBuffer::commit_prepared`] leaves the encryption to [`TxBuffer::encrypt`].
    defer: bool,
    /// Datagrams framed but not encrypted yet.
    jobs: Vec<(Range<usize>, SealJob)>,
}

impl TxBuffer {
    /// A batch of up to `max_items` datagrams and `bytes` bytes in all.
    pub fn new(bytes: usize, max_items: usize) -> TxBuffer {
        TxBuffer {
            buf: vec![0; bytes],
            used: 0,
            items: Vec::with_capacity(max_items),
            max_items,
            sent: 0,
            defer: false,
            jobs: Vec::new(),
        }
    }

    /// The same batch, with encryption deferred to [`TxBuffer::encrypt`].
    pub fn deferring_encryption(mut self) -> TxBuffer {
        self.defer = true;
        self.jobs = Vec::with_capacity(self.max_items);
        self
    }

    /// Space for a datagram of `len` bytes, if the batch has room.
    pub fn slot(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.items.len() == self.max_items || self.buf.len() - self.used < len {
            return None;
        }
        Some(&mut self.buf[self.used..self.used + len])
    }

    /// Records that the last slot now holds `len` bytes for `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        self.items.push((to, self.used..self.used + len));
        self.used += len;
    }

    /// Records that the last slot now holds a framed datagram of `len` bytes for `to`,
    /// which `job` encrypts: at once, or with encryption deferred, at
    /// [`TxBuffer::encrypt`].
    pub fn commit_prepared(&mut self, to: SocketAddr, len: usize, job: SealJob) {
        let range = self.used..self.used + len;
        if self.defer {
            self.jobs.push((range.clone(), job));
        } else {
            job.run(&mut self.buf[range.clone()]);
        }
        self.items.push((to, range));
        self.used += len;
    }

    /// Encrypts the datagrams whose encryption was deferred.
    pub fn encrypt(&mut self) {
        for (range, job) in self.jobs.drain(..) {
            job.run(&mut self.buf[range]);
        }
    }

    /// The datagrams not sent yet, in order (encrypted: with encryption deferred, after
    /// [`TxBuffer::encrypt`]).
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        debug_assert!(self.jobs.is_empty(), "datagrams not encrypted yet");
        self.items[self.sent..]
            .iter()
            .map(|(a, r)| (*a, &self.buf[r.clone()]))
    }

    /// The next run of unsent datagrams that can go out in one GSO call: up to
    /// `max_segments` datagrams for the same address, all of the first one's length except
    /// possibly the last (which may be shorter), at most `max_bytes` in all. A datagram
    /// longer than `max_segment` is a run of its own. Returns the address, the
    /// datagrams' bytes back to back, the segment length and the count.
    pub fn next_run(
        &mut self,
        max_segments: usize,
        max_bytes: usize,
        max_segment: usize,
    ) -> Option<(SocketAddr, &[u8], usize, usize)> {
        self.encrypt();
        let (to, first) = self.items.get(self.sent)?;
        let seg = first.len();
        if seg > max_segment {
            return Some((*to, &self.buf[first.clone()], seg, 1));
        }
        let mut end = first.end;
        let mut count = 1;
        for (addr, r) in &self.items[self.sent + 1..] {
            if count == max_segments
                || addr != to
                || r.len() > max_segment
                || r.len() > seg
                || r.end - first.start > max_bytes
            {
                break;
            }
            end = r.end;
            count += 1;
            if r.len() < seg {
                break;
            }
        }
        Some((*to, &self.buf[first.start..end], seg, count))
    }

    /// Marks the next `n` datagrams as sent; empties the batch once all are.
    pub fn advance(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.items.len());
        if self.sent == self.items.len() {
            self.clear();
        }
    }

    /// How many datagrams are waiting.
    pub fn len(&self) -> usize {
        self.items.len() - self.sent
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the batch is (nearly) full and should be flushed before more is added:
    /// it keeps room for a 64 KiB superframe cut into segments.
    pub fn is_nearly_full(&self) -> bool {
        self.items.len() + ROOM_ITEMS > self.max_items || self.buf.len() - self.used < 4 * 65_536
    }

    /// The bytes of the first unsent datagram as they stand (encrypted or not).
    #[cfg(test)]
    pub(crate) fn framed_for_test(&self) -> &[u8] {
        self.items
            .get(self.sent)
            .map_or(&[][..], |(_, r)| &self.buf[r.clone()])
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.jobs.clear();
        self.items.clear();
        self.used = 0;
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_clears_without_growing() {
        let mut tx = TxBuffer::new(100, 3);
        let to: SocketAddr = "198.18.0.1:6783".parse().unwrap();
        for i in 0..3u8 {
            tx.slot(30).unwrap()[0] = i;
            tx.commit(to, 30);
        }
        assert!(tx.slot(1).is_none(), "item limit");
        let firsts: Vec<u8> = tx.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(firsts, [0, 1, 2]);
        let cap = tx.buf.capacity();
        tx.clear();
        assert!(tx.is_empty());
        assert!(tx.slot(101).is_none(), "byte limit");
        assert_eq!(tx.buf.capacity(), cap);
    }

    #[test]
    fn runs_group_equal_datagrams_for_one_address() {
        let mut tx = TxBuffer::new(10_000, 16);
        let a: SocketAddr = "198.18.0.1:6783".parse().unwrap();
        let b: SocketAddr = "198.18.0.2:6783".parse().unwrap();
        for (to, len) in [(a, 100), (a, 100), (a, 60), (a, 100), (b, 100), (b, 120)] {
            tx.slot(len).unwrap();
            tx.commit(to, len);
        }
        let (to, bytes, seg, n) = tx.next_run(64, 65_000, 1500).unwrap();
        assert_eq!(
            (to, bytes.len(), seg, n),
            (a, 260, 100, 3),
            "a shorter last one ends it"
        );
        tx.advance(n);
        let (to, _, _, n) = tx.next_run(64, 65_000, 1500).unwrap();
        assert_eq!((to, n), (a, 1), "another address ends it");
        tx.advance(n);
        let (to, _, seg, n) = tx.next_run(64, 65_000, 1500).unwrap();
        assert_eq!((to, seg, n), (b, 100, 1), "a longer one ends it");
        tx.advance(1);
        assert_eq!(tx.len(), 1);
        let (_, _, _, n) = tx.next_run(1, 10, 1500).unwrap();
        assert_eq!(n, 1, "limits never leave a datagram behind");
        tx.advance(1);
        assert!(tx.is_empty() && tx.next_run(64, 65_000, 1500).is_none());
        for _ in 0..10 {
            tx.slot(100).unwrap();
            tx.commit(a, 100);
        }
        assert_eq!(tx.next_run(4, 65_000, 1500).unwrap().3, 4, "segment limit");
        assert_eq!(tx.next_run(64, 550, 1500).unwrap().3, 5, "byte limit");
        assert_eq!(
            tx.next_run(64, 65_000, 99).unwrap().3,
            1,
            "oversized: alone"
        );
    }
}
