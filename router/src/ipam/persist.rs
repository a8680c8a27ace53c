//! Durability: the snapshot the driver stores, and the barrier that makes acknowledging
//! an unpersisted change impossible.
//!
//! Every change of IPAM's durable state (ring, own allocations, bootstrap claims, rmpeer
//! votes) bumps an epoch. Every output (completions, gossip, unicasts) is queued with the
//! epoch current when it was produced. [`Outbox::poll`] releases an output only once a
//! snapshot at least that new has been confirmed written; before that it hands out the
//! snapshot itself, as [`super::IpamOutput::Persist`], and waits for
//! [`super::Ipam::handle_persisted`]. So a completion, a donation or a vote can never
//! leave before the state it reports is on disk; a driver that fails to write simply stops
//! IPAM's output (requests then time out), it never loses an acknowledged allocation.

use super::addr::AddrRange;
use super::consensus::Claims;
use super::ring::Entries;
use super::takeover::AcceptorState;
use super::ContainerId;
use gossip::codec::{self, DecodeError};
use gossip::peer::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Snapshot format version.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Everything IPAM needs after a restart.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// Whose state this is.
    pub peer: PeerId,
    /// The allocation range it was made for.
    pub universe: AddrRange,
    /// The ring (seeds and entries), once there is one.
    pub ring: Option<(Vec<PeerId>, Entries)>,
    /// Our bootstrap claims.
    pub claims: Option<Claims>,
    /// Our rmpeer votes, per dead peer.
    pub votes: BTreeMap<PeerId, AcceptorState>,
    /// Our containers' addresses.
    pub allocations: BTreeMap<ContainerId, Vec<u64>>,
}

impl Snapshot {
    /// Encodes (through `gossip::codec`).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        codec::decode(bytes)
    }
}

/// Identifies one snapshot handed to the driver.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PersistSeq(pub u64);

/// The output queue with its persist barrier.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    queue: VecDeque<(u64, T)>,
    epoch: u64,
    durable: u64,
    in_flight: Option<u64>,
}

/// What the outbox wants next.
pub(crate) enum Next<T> {
    /// Release this output.
    Output(T),
    /// Take a snapshot of the current state for this seq and hand it out.
    Snapshot(PersistSeq),
    /// Nothing (or waiting for the driver to confirm a write).
    Idle,
}

impl<T> Outbox<T> {
    pub(crate) fn new() -> Outbox<T> {
        Outbox {
            queue: VecDeque::new(),
            epoch: 0,
            durable: 0,
            in_flight: None,
        }
    }

    /// Durable state changed.
    pub(crate) fn dirty(&mut self) {
        self.epoch += 1;
    }

    /// Queues an output behind every change made so far.
    pub(crate) fn push(&mut self, out: T) {
        self.queue.push_back((self.epoch, out));
    }

    pub(crate) fn next(&mut self) -> Next<T> {
        if let Some(&(epoch, _)) = self.queue.front() {
            if epoch <= self.durable {
                if let Some((_, out)) = self.queue.pop_front() {
                    return Next::Output(out);
                }
            }
        }
        if self.epoch > self.durable && self.in_flight.is_none() {
            self.in_flight = Some(self.epoch);
            return Next::Snapshot(PersistSeq(self.epoch));
        }
        Next::Idle
    }

    /// The driver wrote snapshot `seq`; `true` if it was the one awaited.
    pub(crate) fn persisted(&mut self, seq: PersistSeq) -> bool {
        if self.in_flight != Some(seq.0) {
            return false;
        }
        self.in_flight = None;
        self.durable = seq.0;
        true
    }

    /// Whether a snapshot is out and unconfirmed.
    pub(crate) fn is_waiting(&self) -> bool {
        self.in_flight.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_passes_an_unconfirmed_change() {
        let mut o: Outbox<&str> = Outbox::new();
        o.push("before any change");
        assert!(matches!(o.next(), Next::Output("before any change")));
        o.dirty();
        o.push("ack");
        let Next::Snapshot(seq) = o.next() else {
            panic!("snapshot first")
        };
        assert!(matches!(o.next(), Next::Idle), "waits for the write");
        o.dirty();
        o.push("later");
        assert!(
            !o.persisted(PersistSeq(seq.0 + 7)),
            "a wrong seq is ignored"
        );
        assert!(o.persisted(seq));
        assert!(matches!(o.next(), Next::Output("ack")));
        assert!(
            matches!(o.next(), Next::Snapshot(_)),
            "'later' needs a newer snapshot"
        );
    }
}
