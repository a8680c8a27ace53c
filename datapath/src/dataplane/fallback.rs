//! TCP fallback, sans-IO: when a neighbour's sleeve frames leave the UDP path and travel
//! inside the control link instead, and when they come back.
//!
//! [`Fallback`] decides per neighbour: a neighbour whose UDP path has not confirmed within
//! [`DataplaneConfig::fallback_after`](super::DataplaneConfig::fallback_after) of its
//! control link coming up, or whose confirmed path was lost (the path timeout has already
//! waited), goes to TCP at once; it comes back as soon as the UDP path confirms again.
//! UDP keepalives keep going meanwhile, so a path that starts working is noticed within
//! a probe interval or two. The datagrams themselves are the same either way: sealed with
//! the sleeve's AEAD under the neighbour's session keys, so encryption is never weaker
//! on the TCP path (it is wrapped once more by the control link's Noise transport).
//!
//! [`TcpQueue`] holds the sealed datagrams for the driver to hand to the control links,
//! bounded: when it is full a datagram is dropped and counted, never queued without end.

use gossip::peer::PeerId;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a new neighbour's UDP path may take to confirm before its frames go by TCP.
pub const DEFAULT_FALLBACK_AFTER: Duration = Duration::from_secs(10);

/// Sealed datagrams waiting for the control links, at most.
pub const TCP_QUEUE: usize = 512;

/// Why a neighbour's frames travel by TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// Its UDP path did not confirm within the bound after the control link came up.
    NotConfirmed,
    /// Its confirmed UDP path stopped working.
    PathLost,
}

impl FallbackReason {
    /// A short phrase for status and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            FallbackReason::NotConfirmed => "no UDP path confirmed",
            FallbackReason::PathLost => "UDP path lost",
        }
    }
}

/// A change of a neighbour's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Frames go inside the control link from now on.
    ToTcp(FallbackReason),
    /// The UDP path confirmed: frames go by UDP again.
    ToUdp,
}

/// The fallback state of one neighbour.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// When the neighbour was added (its control link came up).
    since: Instant,
    /// Whether its UDP path was ever confirmed.
    confirmed_once: bool,
    /// Why frames go by TCP now, if they do.
    active: Option<FallbackReason>,
    /// Times it switched to TCP.
    switches: u64,
}

impl Fallback {
    /// A neighbour added at `now`, on UDP.
    pub fn new(now: Instant) -> Fallback {
        Fallback {
            since: now,
            confirmed_once: false,
            active: None,
            switches: 0,
        }
    }

    /// Why frames go by TCP, if they do.
    pub fn reason(&self) -> Option<FallbackReason> {
        self.active
    }

    /// Whether frames go by TCP.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Times the neighbour went to TCP.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The UDP path's state at `now`; `after` is the bound (`None`: never fall back).
    /// Returns the switch to make, if any.
    pub fn update(
        &mut self,
        now: Instant,
        established: bool,
        after: Option<Duration>,
    ) -> Option<Change> {
        if established {
            self.confirmed_once = true;
            return self.active.take().map(|_| Change::ToUdp);
        }
        if self.active.is_some() {
            return None;
        }
        let after = after?;
        let reason = if self.confirmed_once {
            FallbackReason::PathLost
        } else if now.saturating_duration_since(self.since) >= after {
            FallbackReason::NotConfirmed
        } else {
            return None;
        };
        self.active = Some(reason);
        self.switches = self.switches.saturating_add(1);
        Some(Change::ToTcp(reason))
    }
}

/// Sealed datagrams for neighbours in fallback, oldest first, bounded by a count.
#[derive(Debug)]
pub struct TcpQueue {
    queue: VecDeque<(PeerId, Vec<u8>)>,
    cap: usize,
    dropped: u64,
}

impl TcpQueue {
    /// An empty queue that holds at most `cap` datagrams.
    pub fn new(cap: usize) -> TcpQueue {
        TcpQueue {
            queue: VecDeque::new(),
            cap,
            dropped: 0,
        }
    }

    /// Queues a datagram; false (and counted) when the queue is full.
    pub fn push(&mut self, peer: PeerId, datagram: Vec<u8>) -> bool {
        if self.queue.len() >= self.cap {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.queue.push_back((peer, datagram));
        true
    }

    /// The oldest datagram.
    pub fn pop(&mut self) -> Option<(PeerId, Vec<u8>)> {
        self.queue.pop_front()
    }

    /// Datagrams dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forgets what waits for `peer` (its link is gone).
    pub fn forget(&mut self, peer: &PeerId) {
        self.queue.retain(|(p, _)| p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Option<Duration> = Some(Duration::from_secs(10));

    #[test]
    fn falls_back_only_after_the_bound_and_returns_on_confirmation() {
        let t0 = Instant::now();
        let mut f = Fallback::new(t0);
        assert_eq!(f.update(t0, false, AFTER), None);
        assert_eq!(f.update(t0 + Duration::from_secs(9), false, AFTER), None);
        assert!(!f.is_active());
        assert_eq!(
            f.update(t0 + Duration::from_secs(10), false, AFTER),
            Some(Change::ToTcp(FallbackReason::NotConfirmed))
        );
        assert!(f.is_active());
        // Stays, and says so only once.
        assert_eq!(f.update(t0 + Duration::from_secs(20), false, AFTER), None);
        assert_eq!(f.reason(), Some(FallbackReason::NotConfirmed));
        assert_eq!(
            f.update(t0 + Duration::from_secs(21), true, AFTER),
            Some(Change::ToUdp)
        );
        assert!(!f.is_active());
        assert_eq!(f.update(t0 + Duration::from_secs(22), true, AFTER), None);
        assert_eq!(f.switches(), 1);
    }

    #[test]
    fn a_path_confirmed_in_time_never_falls_back_until_it_is_lost() {
        let t0 = Instant::now();
        let mut f = Fallback::new(t0);
        assert_eq!(f.update(t0 + Duration::from_secs(2), true, AFTER), None);
        assert_eq!(f.update(t0 + Duration::from_secs(100), true, AFTER), None);
        // Lost (the path timeout has waited already): TCP at once.
        assert_eq!(
            f.update(t0 + Duration::from_secs(101), false, AFTER),
            Some(Change::ToTcp(FallbackReason::PathLost))
        );
        assert_eq!(
            f.update(t0 + Duration::from_secs(130), true, AFTER),
            Some(Change::ToUdp)
        );
    }

    #[test]
    fn no_bound_means_no_fallback() {
        let t0 = Instant::now();
        let mut f = Fallback::new(t0);
        assert_eq!(f.update(t0 + Duration::from_secs(3600), false, None), None);
        f.update(t0, true, None);
        assert_eq!(f.update(t0 + Duration::from_secs(3600), false, None), None);
        assert!(!f.is_active());
    }

    #[test]
    fn the_queue_is_bounded_drops_and_counts_and_keeps_order() {
        let a = PeerId([1; 16]);
        let b = PeerId([2; 16]);
        let mut q = TcpQueue::new(3);
        assert!(q.push(a, vec![1]));
        assert!(q.push(b, vec![2]));
        assert!(q.push(a, vec![3]));
        assert!(!q.push(a, vec![4]));
        assert!(!q.push(b, vec![5]));
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.len(), 3);
        q.forget(&b);
        assert_eq!(q.pop(), Some((a, vec![1])));
        assert_eq!(q.pop(), Some((a, vec![3])));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
        assert!(q.push(b, vec![6]));
    }
}
