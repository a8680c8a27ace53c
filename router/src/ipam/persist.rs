//! Durability: the snapshot the driver stores, and the barrier that makes acknowledging
//! an unpersisted change impossible.
//!
//! Every change of IPAM's durable state (ring, own allocations, bootstrap claims, rmpeer
//! votes) bumps an epoch. Every output (completions, gossip, unicasts) is queued with the
//! epoch current when it was produced. `Outbox::next` releases an output only once a
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

/// The largest snapshot that is written: the cap [`Snapshot::decode`] enforces
/// (`gossip::codec::MAX_DECODE_LEN`, 1 MiB), so that every snapshot written can be read
/// back. A bigger one is not written ([`SnapshotError::TooBig`]).
pub const MAX_SNAPSHOT_BYTES: usize = codec::MAX_DECODE_LEN;

/// Why a snapshot was not encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Over [`MAX_SNAPSHOT_BYTES`]: it could never be decoded.
    #[error("the IPAM snapshot is {0} bytes, over the {MAX_SNAPSHOT_BYTES}-byte limit")]
    TooBig(usize),
}

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
    /// Encodes (through `gossip::codec`); refuses what [`Snapshot::decode`] would refuse
    /// for its size.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let bytes = codec::encode(self);
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(SnapshotError::TooBig(bytes.len()));
        }
        Ok(bytes)
    }

    /// Decodes.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        codec::decode(bytes)
    }
}

/// Fuzz entry: arbitrary bytes as the stored IPAM snapshot, through [`super::Ipam::restore`]
/// exactly as the router loads it at start. Never panics; a restored IPAM serves
/// requests, and every snapshot it then writes decodes back. The same bytes are tried
/// again with their peer, range and format made this router's, so that the fuzzer gets
/// past those checks to the ring, claims, votes and allocations.
pub fn fuzz_restore(data: &[u8]) {
    use super::{InitMode, Ipam, IpamConfig};
    let me = PeerId([1; 16]);
    let Ok(range) = "10.32.0.0/24".parse::<super::Cidr>() else {
        return;
    };
    let config = IpamConfig::new(range, InitMode::Seed(vec![me, PeerId([2; 16])]));
    let now = std::time::Instant::now();
    if let Ok(ipam) = Ipam::restore(me, config.clone(), data, now, 1) {
        exercise_restored(ipam, now);
    }
    if let Ok(mut snap) = Snapshot::decode(data) {
        snap.format = SNAPSHOT_FORMAT;
        snap.peer = me;
        snap.universe = range.range();
        if let Ok(bytes) = snap.encode() {
            if let Ok(ipam) = Ipam::restore(me, config, &bytes, now, 1) {
                exercise_restored(ipam, now);
            }
        }
    }
}

/// Requests on a restored IPAM, with every persist confirmed; each snapshot written must
/// decode (what is written can be loaded at the next start).
fn exercise_restored(mut ipam: super::Ipam, now: std::time::Instant) {
    use super::IpamOutput;
    let c = |s: &str| ContainerId(s.into());
    ipam.allocate(now, c("fuzz-a"), None);
    ipam.claim(now, c("fuzz-b"), std::net::Ipv4Addr::new(10, 32, 0, 7), 12);
    ipam.release(now, c("fuzz-b"), std::net::Ipv4Addr::new(10, 32, 0, 7));
    ipam.release_all(now, c("fuzz-a"));
    ipam.handle_timeout(now + std::time::Duration::from_secs(120));
    for _ in 0..256 {
        match ipam.poll_output() {
            Some(IpamOutput::Persist { seq, snapshot }) => {
                assert!(
                    Snapshot::decode(&snapshot).is_ok(),
                    "a written snapshot does not decode"
                );
                ipam.handle_persisted(seq);
            }
            Some(_) => {}
            None => break,
        }
    }
    let snap = ipam.snapshot();
    if let Ok(bytes) = snap.encode() {
        assert_eq!(Snapshot::decode(&bytes).ok(), Some(snap), "round trip");
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
    /// The epoch whose snapshot could not be made; retried only after a newer change.
    failed: Option<u64>,
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
            failed: None,
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
        if self.epoch > self.durable && self.in_flight.is_none() && self.failed != Some(self.epoch)
        {
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

    /// The snapshot for `seq` could not be made: nothing waiting on it is released, and a
    /// new snapshot is tried after the next change.
    pub(crate) fn snapshot_failed(&mut self, seq: PersistSeq) {
        if self.in_flight == Some(seq.0) {
            self.in_flight = None;
            self.failed = Some(seq.0);
        }
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

    #[test]
    fn a_failed_snapshot_holds_outputs_and_is_retried_after_a_change() {
        let mut o: Outbox<&str> = Outbox::new();
        o.dirty();
        o.push("ack");
        let Next::Snapshot(seq) = o.next() else {
            panic!("snapshot first")
        };
        o.snapshot_failed(seq);
        assert!(matches!(o.next(), Next::Idle), "no retry loop, no release");
        o.dirty();
        let Next::Snapshot(seq) = o.next() else {
            panic!("retried after a change")
        };
        assert!(o.persisted(seq));
        assert!(matches!(o.next(), Next::Output("ack")));
    }

    #[test]
    fn fuzz_restore_replay_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(41);
        let me = PeerId([1; 16]);
        let config = super::super::IpamConfig::new(
            "10.32.0.0/24".parse().unwrap(),
            super::super::InitMode::Seed(vec![me, PeerId([2; 16])]),
        );
        let now = std::time::Instant::now();
        let mut ipam = super::super::Ipam::new(me, config, now, 3);
        ipam.allocate(now, ContainerId("c".into()), None);
        while let Some(out) = ipam.poll_output() {
            if let super::super::IpamOutput::Persist { seq, .. } = out {
                ipam.handle_persisted(seq);
            }
        }
        let seed = ipam.snapshot().encode().unwrap();
        assert!(
            super::super::Ipam::restore(me, ipam.config.clone(), &seed, now, 1).is_ok(),
            "the seed restores"
        );
        for i in 0..3000 {
            let mut d = seed.clone();
            for _ in 0..rng.gen_range(0..(1 + i % 6)) {
                let j = rng.gen_range(0..d.len());
                d[j] = rng.gen();
            }
            if i % 3 == 0 {
                d.truncate(rng.gen_range(0..=d.len()));
            }
            fuzz_restore(&d);
        }
    }

    /// ~24k forged votes used to make a snapshot over the decode cap: written, then
    /// unreadable at the next start. Encode now refuses what decode would.
    #[test]
    fn snapshot_over_the_decode_cap_is_not_encoded() {
        let peer = PeerId([1; 16]);
        let mut snap = Snapshot {
            format: SNAPSHOT_FORMAT,
            peer,
            universe: AddrRange { start: 0, end: 256 },
            ring: None,
            claims: None,
            votes: BTreeMap::new(),
            allocations: BTreeMap::new(),
        };
        let small = snap.encode().expect("small snapshot encodes");
        assert_eq!(Snapshot::decode(&small).unwrap(), snap);
        for i in 0..30_000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let b = super::super::consensus::Ballot {
                round: u64::MAX,
                proposer: PeerId([7; 16]),
            };
            let state = AcceptorState {
                promised: b,
                accepted: Some((b, PeerId([8; 16]))),
            };
            snap.votes.insert(PeerId(id), state);
        }
        let raw = codec::encode(&snap);
        assert!(raw.len() > MAX_SNAPSHOT_BYTES, "{}", raw.len());
        assert!(Snapshot::decode(&raw).is_err(), "decode refuses it");
        assert_eq!(snap.encode(), Err(SnapshotError::TooBig(raw.len())));
    }
}
