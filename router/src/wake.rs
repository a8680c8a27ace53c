//! Waking a thread that sleeps in `poll(2)`: a socket pair, one end written by whoever
//! has news, the other end among the descriptors the sleeper waits on.
//!
//! The data-plane threads wait on their TAP queue and socket themselves, not through
//! tokio (see [`crate::dataplane_driver`]); what the rest of the router sends them
//! (commands, new routes, datagrams from control links) goes through ordinary channels,
//! and a [`Wake`] tells the thread to look. Wakes coalesce: a thread woken ten times
//! before it looks wakes once and drains the channels.

use nix::sys::socket::{send, MsgFlags};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The sending end: cheap to clone, usable from any thread or task, never blocks.
#[derive(Clone, Debug)]
pub struct Wake(Arc<UnixStream>);

/// The sleeper's end: readable while a wake is pending.
#[derive(Debug)]
pub struct Woken(UnixStream);

/// A new pair.
pub fn pair() -> io::Result<(Wake, Woken)> {
    let (tx, rx) = UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Wake(Arc::new(tx)), Woken(rx)))
}

impl Wake {
    /// Wakes the sleeper. A full buffer means wakes are pending already, and a closed
    /// pair means the sleeper is gone: either way there is nothing more to do.
    pub fn wake(&self) {
        // MSG_NOSIGNAL: a closed pair is an error, never a SIGPIPE.
        let _ = send(self.0.as_raw_fd(), &[1], MsgFlags::MSG_NOSIGNAL);
    }
}

impl Woken {
    /// Takes every pending wake (call before looking at the channels, so that news sent
    /// meanwhile wakes the next wait).
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.0).read(&mut buf), Ok(n) if n > 0) {}
    }
}

impl AsFd for Woken {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn pending(w: &Woken) -> bool {
        let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).expect("poll");
        fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
    }

    #[test]
    fn a_wake_is_pending_until_drained_and_wakes_coalesce() {
        let (wake, woken) = pair().expect("socket pair");
        assert!(!pending(&woken), "nothing sent yet");
        let other = wake.clone();
        for _ in 0..100_000 {
            wake.wake(); // far past the socket's buffer: never blocks
        }
        other.wake();
        assert!(pending(&woken));
        woken.drain();
        assert!(!pending(&woken), "drained");
        wake.wake();
        assert!(pending(&woken), "a wake after the drain is seen");
    }

    #[test]
    fn waking_a_gone_sleeper_does_nothing() {
        let (wake, woken) = pair().expect("socket pair");
        drop(woken);
        wake.wake();
    }
}
