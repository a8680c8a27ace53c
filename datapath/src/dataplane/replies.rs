//! Frames the data plane itself sends back to local containers: ICMP "too big" replies.
//!
//! A small fixed set of slots, allocated once. The data plane writes a reply into a free
//! slot; the driver takes them all with [`super::Dataplane::poll_local_frames`] after
//! each batch. When every slot is taken the reply is not built (the frame is still
//! dropped and counted): a container sending a burst of oversized frames gets a few
//! replies per batch, which is all its path MTU logic needs, and no more (RFC 1812
//! §4.3.2.8 asks routers to limit the rate of ICMP errors).

/// Replies held at once.
pub(super) const SLOTS: usize = 4;
/// Largest reply: Ethernet plus an ICMPv6 error padded to the IPv6 minimum MTU.
pub(super) const SLOT_LEN: usize = 14 + 1280;

/// Reply slots.
pub(super) struct Replies {
    buf: Box<[u8]>,
    lens: [usize; SLOTS],
    used: usize,
}

impl Default for Replies {
    fn default() -> Self {
        Replies {
            buf: vec![0; SLOTS * SLOT_LEN].into_boxed_slice(),
            lens: [0; SLOTS],
            used: 0,
        }
    }
}

impl Replies {
    /// Builds a reply with `build` in the next free slot; `build` returns its length,
    /// or `None` if there is to be no reply after all.
    pub(super) fn push(&mut self, build: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if self.used == SLOTS {
            return false;
        }
        let slot = &mut self.buf[self.used * SLOT_LEN..(self.used + 1) * SLOT_LEN];
        match build(slot) {
            Some(len) => {
                self.lens[self.used] = len.min(SLOT_LEN);
                self.used += 1;
                true
            }
            None => false,
        }
    }

    /// Hands every reply to `deliver`, in order, and empties the slots.
    pub(super) fn drain(&mut self, deliver: &mut dyn FnMut(&[u8])) {
        for i in 0..std::mem::take(&mut self.used) {
            deliver(&self.buf[i * SLOT_LEN..i * SLOT_LEN + self.lens[i]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_few_replies_then_refuses() {
        let mut r = Replies::default();
        for i in 0..SLOTS {
            assert!(r.push(|s| {
                s[0] = i as u8;
                Some(10)
            }));
        }
        assert!(!r.push(|_| Some(10)), "full");
        assert!(!Replies::default().push(|_| None), "no reply built");
        let mut got = Vec::new();
        r.drain(&mut |f| got.push((f[0], f.len())));
        assert_eq!(got, [(0, 10), (1, 10), (2, 10), (3, 10)]);
        r.drain(&mut |_| panic!("drained already"));
    }
}
