//! A reusable batch of datagrams to send.
//!
//! One contiguous buffer, allocated once, into which datagrams are sealed back to back;
//! the driver sends the batch (with `sendmmsg` where it can) and clears it. Filling it
//! never allocates: when it is full, the data plane drops and counts.

use std::net::SocketAddr;
use std::ops::Range;

/// Datagrams waiting to be sent.
pub struct TxBuffer {
    buf: Vec<u8>,
    used: usize,
    items: Vec<(SocketAddr, Range<usize>)>,
    max_items: usize,
}

impl TxBuffer {
    /// A batch of up to `max_items` datagrams and `bytes` bytes in all.
    pub fn new(bytes: usize, max_items: usize) -> TxBuffer {
        TxBuffer {
            buf: vec![0; bytes],
            used: 0,
            items: Vec::with_capacity(max_items),
            max_items,
        }
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

    /// The datagrams in order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.items.iter().map(|(a, r)| (*a, &self.buf[r.clone()]))
    }

    /// How many datagrams are waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the batch is (nearly) full and should be flushed before more is added.
    pub fn is_nearly_full(&self) -> bool {
        self.items.len() + 4 > self.max_items || self.buf.len() - self.used < 4 * 65_536
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.items.clear();
        self.used = 0;
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
}
