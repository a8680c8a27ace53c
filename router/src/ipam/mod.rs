//! IPAM: gossip-based address allocation that never hands out an address twice.
//!
//! A sans-IO state machine, [`Ipam`], and the gossip channel [`IPAM_CHANNEL`]: the driver
//! (the owner task, or `gossip::sim` in tests) holds it and lends it to the mesh with
//! each message. The driver does this:
//!
//! ```text
//!  local API ──allocate/claim/release/release_all/rmpeer/leave(now, ..) -> RequestId──▶ Ipam
//!  mesh      ──merge(now, ..) / handle_unicast(now, ..) (as a GossipChannel)─────────▶ Ipam
//!  driver    ──handle_timeout(now), handle_reachable(now, peers), handle_persisted(seq)▶ Ipam
//!  driver ◀──poll_output(): Persist{seq, snapshot} | Broadcast | Unicast | Completed | Event
//! ```
//!
//! - **Persist first.** [`IpamOutput::Persist`] carries a whole [`persist::Snapshot`]
//!   (encoded); the driver writes it durably and calls [`Ipam::handle_persisted`]. No
//!   other output that depends on a change leaves before the snapshot holding that change
//!   is confirmed (see [`persist`]), so an allocation cannot be acknowledged unpersisted.
//!   [`Ipam::restore`] rebuilds from the last snapshot and refuses another range.
//! - **Gossip out.** `Broadcast(bytes)` → `mesh.broadcast(now, IPAM_CHANNEL, bytes)`;
//!   `Unicast{to, payload}` → `mesh.send_unicast(to, IPAM_CHANNEL, payload)`.
//! - **Never hangs.** Every request completes: with a result, or with
//!   [`IpamError::TimedOut`] naming what it waited for.
//!
//! # Layout
//! By protocol, each an `impl Ipam` block beside the state it needs:
//! - [`allocator`]: the state machine's core (timers, ring install, reachability, the
//!   persist barrier's output).
//! - `requests`: allocate, claim and release for this host, and why a request waits.
//! - `donation`: asking for free space and giving it.
//! - [`takeover`]: `rmpeer` by a quorum vote on one heir (the Paxos instance, and the
//!   proposer, heir and voter sides), and leave.
//! - `channel`: the gossip channel (ring merge with self-protection, foreign rings,
//!   handouts) and the dispatch of unicasts.
//! - [`consensus`]: bootstrap by gossiped Paxos.
//!
//! And what they share: [`addr`] (CIDR and range math), [`ring`] (the token ring CRDT
//! and ring identity), [`space`] (free space and donor choice), [`wire`] (gossip and
//! unicast messages), [`persist`] (the snapshot and the persist barrier), [`status`]
//! (`weft status ipam` and the status line).

pub mod addr;
pub mod allocator;
mod channel;
pub mod consensus;
mod donation;
pub mod persist;
mod requests;
pub mod ring;
pub mod space;
pub mod status;
pub mod takeover;
pub mod wire;

#[cfg(test)]
mod tests;

pub use addr::{AddrRange, Cidr};
pub use allocator::Ipam;
pub use channel::fuzz_ipam_gossip;
pub use persist::{fuzz_restore, PersistSeq, Snapshot};
pub use wire::IPAM_CHANNEL;

use gossip::peer::PeerId;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Longest container id accepted.
pub const MAX_CONTAINER_ID_LEN: usize = 256;

/// A container's identity (the CNI container id, or a netns name).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ContainerId(pub String);

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one request; its completion carries the same id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

/// How the ring comes to be (`--ipalloc-init`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum InitMode {
    /// `consensus[=N]`: agree on the seeds with the `peers` expected (weave's default N is
    /// the number of peers given at launch plus one).
    Consensus {
        /// N.
        peers: usize,
    },
    /// `seed=PEER,..`: the ring is seeded from this list at once (same list everywhere).
    Seed(Vec<PeerId>),
    /// `seed=NAME,..` with peer names (`4a:0f:f6:ec:1c:93`, as `weft status` shows them):
    /// seeded, as with [`InitMode::Seed`], once every name is this peer or a reachable
    /// one, since the ring needs their full ids.
    SeedNames(Vec<gossip::peer::ShortName>),
    /// `observer`: never votes, never seeds; waits for a ring.
    Observer,
}

/// IPAM settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IpamConfig {
    /// `--ipalloc-range`.
    pub range: Cidr,
    /// `--ipalloc-init`.
    pub init: InitMode,
    /// How long a request may wait for a ring, space or a quorum.
    pub request_timeout: Duration,
    /// How long to wait for a donor's answer before asking another.
    pub donation_retry: Duration,
    /// Retry period of bootstrap proposals.
    pub consensus_retry: Duration,
}

impl IpamConfig {
    /// Defaults for `range` and `init`.
    pub fn new(range: Cidr, init: InitMode) -> IpamConfig {
        IpamConfig {
            range,
            init,
            request_timeout: Duration::from_secs(30),
            donation_retry: Duration::from_secs(2),
            consensus_retry: Duration::from_secs(2),
        }
    }
}

/// What a request achieved: everything its caller reports, so no caller keeps a side
/// table of what it asked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Reply {
    /// The container's address (new, or the one it already had) in its subnet.
    Allocated(Ipv4Addr, Cidr),
    /// The claimed address is the container's; the prefix length the claim gave.
    Claimed(Ipv4Addr, u8),
    /// The addresses released (none when the container held none of them).
    Released(Vec<Ipv4Addr>),
    /// The dead peer's space went to `heir` (`None`: it owned nothing any more).
    Removed {
        /// The heir.
        heir: Option<PeerId>,
        /// The addresses the dead peer owned when `rmpeer` started.
        ips: u64,
    },
    /// All our space was handed to `heir`; the router may exit.
    Left {
        /// The heir.
        heir: PeerId,
    },
}

/// Why a request failed. Each says what failed, on what, and what to do.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IpamError {
    /// Waited too long.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The subnet or address is outside the allocation range.
    #[error("{0} is outside the allocation range {1}")]
    OutOfRange(String, Cidr),
    /// Another container holds the address.
    #[error("address {0} is already allocated to container {1}")]
    InUse(Ipv4Addr, ContainerId),
    /// Another peer owns the address.
    #[error("address {0} is owned by peer {1}; claim it on that peer, or allocate a new one")]
    OwnedElsewhere(Ipv4Addr, PeerId),
    /// The request is malformed (container id too long, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// `rmpeer` on a peer that is reachable, or on ourselves.
    #[error("peer {0} is alive (reachable); rmpeer is only for peers that are gone for good")]
    PeerAlive(PeerId),
    /// There is no ring to act on.
    #[error("no IP allocation ring yet: {0}")]
    NoRing(String),
    /// This router is leaving and takes no more requests.
    #[error("this router is handing its space over and leaving")]
    Leaving,
}

/// The driver's to-do list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum IpamOutput {
    /// Write `snapshot` durably (replacing the previous one), then call
    /// [`Ipam::handle_persisted`] with `seq`.
    Persist {
        /// Confirm with this.
        seq: PersistSeq,
        /// An encoded [`Snapshot`].
        snapshot: Vec<u8>,
    },
    /// `mesh.broadcast(now, IPAM_CHANNEL, bytes)`.
    Broadcast(Vec<u8>),
    /// `mesh.send_unicast(to, IPAM_CHANNEL, payload)`.
    Unicast {
        /// The peer.
        to: PeerId,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A request finished.
    Completed {
        /// The request.
        request: RequestId,
        /// Its result.
        result: Result<Reply, IpamError>,
    },
    /// Something to log.
    Event(IpamEvent),
}

/// Notable happenings, for the log; each is also counted in [`IpamStats`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum IpamEvent {
    /// We now have a ring (seeded, decided, adopted or restored).
    RingReady {
        /// Its id.
        ring: ring::RingId,
        /// Its seeds.
        seeds: Vec<PeerId>,
    },
    /// A peer gossips a different ring (seeded separately) or range. Neither ring changes
    /// and no IPAM state flows between them; the links stay up.
    ForeignRing {
        /// Who sent it.
        peer: PeerId,
        /// Our ring.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// Entries rejected: same version, other content, or a claim on space we own.
    Inconsistent {
        /// How many entries.
        entries: usize,
    },
    /// We took over a dead peer's space.
    TookOver {
        /// The dead peer.
        dead: PeerId,
        /// Addresses taken over.
        addresses: u64,
    },
    /// The state is too big to persist: IPAM holds its replies until it shrinks.
    SnapshotTooBig {
        /// The snapshot's size.
        bytes: usize,
    },
}

impl IpamEvent {
    /// Whether this is an error (logged at error level), not news.
    pub fn is_error(&self) -> bool {
        matches!(self, IpamEvent::SnapshotTooBig { .. })
    }

    /// The log line: what happened and what to do.
    pub fn message(&self) -> String {
        match self {
            IpamEvent::RingReady { ring, seeds } => {
                format!(
                    "IP allocation ring {ring} ready, seeded by {} peers",
                    seeds.len()
                )
            }
            IpamEvent::ForeignRing { peer, ours, theirs } => format!(
                "IP allocation was seeded by different peers: peer {peer} has {theirs}, we have \
                 {ours}; the two rings will not merge and no addresses flow between them. Pick \
                 the side to keep, then on every peer of the other side stop weft, remove its \
                 IPAM data (this discards its allocations) and launch it again"
            ),
            IpamEvent::Inconsistent { entries } => format!(
                "rejected {entries} inconsistent IP ring entries (a peer claims a range this \
                 router owns, or reuses a version); check for two routers with one identity"
            ),
            IpamEvent::TookOver { dead, addresses } => {
                format!("took over {addresses} addresses of removed peer {dead}")
            }
            IpamEvent::SnapshotTooBig { bytes } => format!(
                "cannot persist the IPAM state: {bytes} bytes, over the {}-byte limit; \
                 allocations wait until it shrinks (look for a peer flooding the ring or \
                 rmpeer votes)",
                persist::MAX_SNAPSHOT_BYTES
            ),
        }
    }
}

/// Counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct IpamStats {
    /// Gossip or unicasts that did not decode or broke a limit.
    pub malformed: u64,
    /// Messages claiming addresses outside the range.
    pub out_of_range: u64,
    /// Entries rejected: equal version with other content, or claims on our space.
    pub inconsistent: u64,
    /// Messages from a foreign ring or range.
    pub foreign_ring: u64,
    /// Donations given.
    pub donations_given: u64,
    /// Donations received.
    pub donations_received: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// `rmpeer` decisions told to their heir again (the first notice was lost).
    pub heir_renotified: u64,
    /// Entries refused because their version jumped too far above ours
    /// ([`ring::MAX_VERSION_STEP`]); also counted in `inconsistent`.
    #[serde(default)]
    pub version_jumps: u64,
    /// Edits not made because the token's version is at [`ring::MAX_VERSION`].
    #[serde(default)]
    pub version_exhausted: u64,
    /// Takeover messages refused: a ballot round above [`consensus::MAX_ROUND`], or a new
    /// instance past [`allocator::MAX_VOTES`].
    #[serde(default)]
    pub takeover_refused: u64,
    /// Takeover decisions naming us heir refused for want of proof: not a quorum of
    /// distinct voters of this ring, each with a good signature on this decision.
    #[serde(default)]
    pub takeover_unproven: u64,
    /// Bootstrap claims refused because their participant's signature did not prove
    /// them (a peer speaking in another's name, or tampered claims).
    #[serde(default)]
    pub claims_unproven: u64,
    /// Bootstrap claims refused because their participant is not on the `--peer-keys`
    /// list.
    #[serde(default)]
    pub claims_unlisted: u64,
    /// Snapshots not written because they were over [`persist::MAX_SNAPSHOT_BYTES`].
    #[serde(default)]
    pub snapshot_too_big: u64,
    /// New ring tokens dropped, or donations denied, because the ring holds
    /// [`ring::MAX_RING_ENTRIES`] tokens.
    #[serde(default)]
    pub ring_full: u64,
    /// Bootstrap claims not answered with our whole ring: the peer they name was handed
    /// it less than `channel::HANDOUT_EVERY` ago.
    #[serde(default)]
    pub handouts_limited: u64,
}
