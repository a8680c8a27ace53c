//! The IPAM state machine's core: [`Ipam`] and its timers, the ring it installs, the
//! reachable peers, and the persist barrier.
//!
//! [`Ipam`] owns the ring replica, this peer's allocations, the bootstrap state and the
//! rmpeer votes. Its protocols live beside it, one module each: requests from this host
//! (`requests`), donation of free space (`donation`), takeover of a dead peer's space
//! with `rmpeer` and leave ([`super::takeover`]), and the gossip channel (`channel`). Requests come in with `now` and get a [`RequestId`];
//! each completes exactly once through [`IpamOutput::Completed`]: at once, when a ring or
//! space arrives, or at its deadline with the reason it waited. Only the outbox
//! ([`super::persist`]) releases output.

use super::addr::{AddrRange, Cidr};
use super::consensus::Consensus;
use super::persist::{Next, Outbox, PersistSeq, Snapshot, SnapshotError, SNAPSHOT_FORMAT};
use super::ring::{Entries, Ring};
use super::takeover::{AcceptorState, HeirNotice, Proposal};
use super::wire::{GossipMsg, UnicastMsg};
use super::{
    ContainerId, InitMode, IpamConfig, IpamError, IpamEvent, IpamOutput, IpamStats, Reply,
    RequestId,
};
use gossip::channel::Fingerprint;
use gossip::identity::Identity;
use gossip::peer::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// A request waiting for a ring, space or a quorum.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) kind: PendingKind,
    pub(super) deadline: Instant,
}

#[derive(Clone, Debug)]
pub(super) enum PendingKind {
    Allocate {
        container: ContainerId,
        subnet: Cidr,
    },
    Claim {
        container: ContainerId,
        addr: u64,
        prefix: u8,
    },
    Remove {
        dead: PeerId,
        ips: u64,
    },
}

/// A donation request in flight.
#[derive(Clone, Debug)]
pub(super) struct Asking {
    /// The peer asked; `None` between rounds, once every candidate said no.
    pub(super) donor: Option<PeerId>,
    pub(super) within: AddrRange,
    pub(super) retry_at: Instant,
    pub(super) tried: BTreeSet<PeerId>,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The bytes are not a snapshot.
    #[error("the persisted IPAM state is unreadable ({0}); move it aside to start over")]
    Corrupt(String),
    /// It was made for another range.
    #[error(
        "the persisted IP allocations are for range {persisted}, but the configured range is \
         {configured}; launch with --ipalloc-range {persisted}, or remove the IPAM data to \
         start over (this discards every allocation of this router)"
    )]
    RangeMismatch {
        /// The persisted range.
        persisted: AddrRange,
        /// The configured one.
        configured: AddrRange,
    },
    /// It belongs to another peer identity.
    #[error("the persisted IPAM state belongs to peer {0}, not to this router's identity")]
    PeerMismatch(PeerId),
}

/// Most `rmpeer` instances this router keeps votes for (the map is keyed by the dead
/// peer, which the proposer names). A vote must never be forgotten (Paxos safety), so
/// past the cap a new instance gets no answer and is counted
/// ([`super::IpamStats::takeover_refused`]). A thousand removed peers is beyond any
/// cluster this targets, and at about 100 bytes a vote the map stays under a tenth of
/// the snapshot cap ([`super::persist::MAX_SNAPSHOT_BYTES`]).
pub const MAX_VOTES: usize = 1_024;

/// Most foreign rings (another seed set or range met on the mesh) remembered and
/// reported, once each. The key comes from the sender's message, so without a cap a peer
/// could grow the map with every message. One foreign ring is already a misconfiguration
/// to fix; 64 are plenty to tell the operator, and past the cap messages are still
/// refused and counted (`foreign_ring`), just not remembered.
pub const MAX_FOREIGN_RINGS: usize = 64;

/// The IPAM state machine of one router.
pub struct Ipam {
    pub(super) me: PeerId,
    pub(super) config: IpamConfig,
    pub(super) universe: AddrRange,
    pub(super) ring: Option<Ring>,
    pub(super) consensus: Consensus,
    pub(super) by_addr: BTreeMap<u64, ContainerId>,
    pub(super) by_container: BTreeMap<ContainerId, BTreeSet<u64>>,
    pub(super) pending: BTreeMap<RequestId, Pending>,
    next_request: u64,
    pub(super) asking: Option<Asking>,
    pub(super) votes: BTreeMap<PeerId, AcceptorState>,
    pub(super) proposals: BTreeMap<PeerId, (Proposal, RequestId, Instant)>,
    /// Chosen heirs not yet seen taking over, by dead peer.
    pub(super) heir_notices: BTreeMap<PeerId, HeirNotice>,
    /// Our key, to sign takeover votes with (a router always has one; without it, this
    /// IPAM does not vote).
    pub(super) identity: Option<Identity>,
    pub(super) reachable: Option<BTreeSet<PeerId>>,
    pub(super) foreign: BTreeMap<String, PeerId>,
    /// When each peer was last handed our whole ring (see `channel::HANDOUT_EVERY`).
    pub(super) handouts: BTreeMap<PeerId, Instant>,
    pub(super) rng: StdRng,
    pub(super) now: Instant,
    pub(super) outbox: Outbox<IpamOutput>,
    snapshot_gossip: Option<Vec<u8>>,
    pub(super) durable_gossip: Vec<u8>,
    pub(super) durable_digest: u64,
    pub(super) stats: IpamStats,
    pub(super) leaving: bool,
}

impl Ipam {
    /// `--peer-keys`: only these peers take part in the bootstrap from now on (`None`:
    /// any peer). See [`super::consensus`].
    pub fn set_admitted(&mut self, admitted: Option<std::collections::BTreeSet<PeerId>>) {
        self.consensus.set_admitted(admitted);
    }

    /// This IPAM with the key it signs its takeover votes and bootstrap claims with;
    /// `identity` must be `me`'s (another key's signatures would not verify, so it
    /// would vote for nothing and take no part in the bootstrap).
    pub fn with_identity(mut self, identity: Identity) -> Ipam {
        debug_assert_eq!(
            identity.id(),
            self.me,
            "the IPAM's identity must be its own"
        );
        self.identity = (identity.id() == self.me).then_some(identity);
        self
    }

    /// A fresh IPAM for peer `me`. With `seed=`, the ring exists at once.
    pub fn new(me: PeerId, config: IpamConfig, now: Instant, rng_seed: u64) -> Ipam {
        let universe = config.range.range();
        let (n, participant) = match &config.init {
            InitMode::Consensus { peers } => (*peers, true),
            InitMode::Seed(seeds) => (seeds.len(), false),
            InitMode::SeedNames(names) => (names.len(), false),
            InitMode::Observer => (1, false),
        };
        let consensus = Consensus::new(me, universe, n, participant, config.consensus_retry);
        let mut ipam = Ipam {
            me,
            universe,
            ring: None,
            consensus,
            by_addr: BTreeMap::new(),
            by_container: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_request: 1,
            asking: None,
            votes: BTreeMap::new(),
            proposals: BTreeMap::new(),
            heir_notices: BTreeMap::new(),
            identity: None,
            reachable: None,
            foreign: BTreeMap::new(),
            handouts: BTreeMap::new(),
            rng: StdRng::seed_from_u64(rng_seed),
            now,
            outbox: Outbox::new(),
            snapshot_gossip: None,
            durable_gossip: Vec::new(),
            durable_digest: 0,
            stats: IpamStats::default(),
            leaving: false,
            config,
        };
        if let InitMode::Seed(seeds) = &ipam.config.init {
            let ring = Ring::seeded(universe, seeds.clone());
            ipam.install_ring(ring);
        } else if let InitMode::SeedNames(_) = &ipam.config.init {
            ipam.outbox.dirty();
        } else {
            ipam.outbox.dirty();
            ipam.step_consensus();
        }
        ipam
    }

    /// IPAM restored from the last persisted snapshot. Refuses a snapshot made for another
    /// range or another peer.
    pub fn restore(
        me: PeerId,
        config: IpamConfig,
        snapshot: &[u8],
        now: Instant,
        rng_seed: u64,
    ) -> Result<Ipam, RestoreError> {
        let snap = Snapshot::decode(snapshot).map_err(|e| RestoreError::Corrupt(e.to_string()))?;
        if snap.format != SNAPSHOT_FORMAT {
            return Err(RestoreError::Corrupt(format!("format {}", snap.format)));
        }
        if snap.peer != me {
            return Err(RestoreError::PeerMismatch(snap.peer));
        }
        let configured = config.range.range();
        if snap.universe != configured {
            return Err(RestoreError::RangeMismatch {
                persisted: snap.universe,
                configured,
            });
        }
        let mut ipam = Ipam::new(
            me,
            IpamConfig {
                init: match config.init {
                    InitMode::Seed(_) | InitMode::SeedNames(_) if snap.ring.is_some() => {
                        InitMode::Observer
                    }
                    ref other => other.clone(),
                },
                ..config.clone()
            },
            now,
            rng_seed,
        );
        ipam.config = config;
        if let Some(own) = snap.claims {
            ipam.consensus.restore_own(own);
        }
        ipam.votes = snap.votes;
        for (c, addrs) in snap.allocations {
            for a in addrs.into_iter().filter(|a| configured.contains(*a)) {
                ipam.by_addr.insert(a, c.clone());
                ipam.by_container.entry(c.clone()).or_default().insert(a);
            }
        }
        if let Some((seeds, entries)) = snap.ring {
            let mut ring = Ring::empty(configured, seeds);
            ring.merge_entries(&entries);
            ipam.ring = None;
            ipam.install_ring(ring);
        }
        Ok(ipam)
    }

    // ---- requests ----

    pub(super) fn new_request(&mut self, now: Instant) -> RequestId {
        self.now = now;
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    pub(super) fn complete(&mut self, request: RequestId, result: Result<Reply, IpamError>) {
        self.outbox.push(IpamOutput::Completed { request, result });
    }

    pub(super) fn wait(&mut self, request: RequestId, kind: PendingKind) {
        let deadline = self.now + self.config.request_timeout;
        self.pending.insert(request, Pending { kind, deadline });
        self.serve_pending();
    }

    pub(super) fn broadcast_entries(&mut self, entries: Entries) {
        if let Some(ring) = &self.ring {
            let msg = GossipMsg::Ring {
                sender: self.me,
                universe: self.universe,
                seeds: ring.seeds().to_vec(),
                entries,
            };
            self.outbox.push(IpamOutput::Broadcast(msg.encode()));
        }
    }

    pub(super) fn unicast(&mut self, to: PeerId, msg: &UnicastMsg) {
        let payload = msg.encode();
        self.outbox.push(IpamOutput::Unicast { to, payload });
    }

    pub(super) fn ring_id(&self) -> u64 {
        self.ring.as_ref().map_or(0, |r| r.id().0)
    }

    // ---- ring and consensus ----

    /// Makes `ring` ours (seeded, decided, adopted or restored).
    pub(super) fn install_ring(&mut self, ring: Ring) {
        let event = IpamEvent::RingReady {
            ring: ring.id(),
            seeds: ring.seeds().to_vec(),
        };
        self.ring = Some(ring);
        self.outbox.dirty();
        self.outbox.push(IpamOutput::Event(event));
        // Advertise true free counts of our ranges (restored allocations included).
        let mine: Vec<u64> = self
            .ring
            .as_ref()
            .map(|r| r.owned_by(&self.me).iter().map(|r| r.start).collect())
            .unwrap_or_default();
        self.refresh_free(&mine);
        self.serve_pending();
    }

    /// Runs the bootstrap roles; seeds the ring once decided.
    pub(super) fn step_consensus(&mut self) {
        if self.ring.is_some() {
            return;
        }
        if self.consensus.step(self.now, &mut self.rng) {
            self.outbox.dirty();
            let own = (self.identity.as_ref()).and_then(|id| self.consensus.signed_own(id));
            if let Some(own) = own {
                let msg = GossipMsg::Bootstrap {
                    sender: self.me,
                    universe: self.universe,
                    claims: [(self.me, own)].into(),
                };
                self.outbox.push(IpamOutput::Broadcast(msg.encode()));
            }
        }
        if let Some(seeds) = self.consensus.decision() {
            self.install_ring(Ring::seeded(self.universe, seeds));
        }
    }

    // ---- driver inputs ----

    /// Fires expired deadlines: request timeouts, donation retries, bootstrap proposals,
    /// rmpeer retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let expired: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                let reason = self.waiting_reason(&p.kind);
                if let PendingKind::Remove { dead, .. } = p.kind {
                    self.proposals.remove(&dead);
                }
                self.stats.timeouts += 1;
                self.complete(id, Err(IpamError::TimedOut(reason)));
            }
        }
        if let Some(a) = self.asking.clone().filter(|a| a.retry_at <= now) {
            self.asking = None;
            if self
                .pending
                .values()
                .any(|p| matches!(p.kind, PendingKind::Allocate { .. }))
            {
                self.ask_next(a.within, a.tried);
            }
        }
        if self.consensus.deadline().is_some_and(|d| d <= now) {
            self.step_consensus();
        }
        self.retry_proposals(now);
        self.renotify_heirs(now);
    }

    /// When [`Ipam::handle_timeout`] wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline);
        let asking = self.asking.as_ref().map(|a| a.retry_at);
        let consensus = if self.ring.is_none() {
            self.consensus.deadline()
        } else {
            None
        };
        let proposals = self.proposals.values().map(|p| p.2);
        let notices = self.heir_notices.values().map(|n| n.retry);
        pending
            .chain(asking)
            .chain(consensus)
            .chain(proposals)
            .chain(notices)
            .min()
    }

    /// The peers the mesh can reach now (from its routes); unreachable peers are never
    /// asked for space and block `rmpeer` no more.
    pub fn handle_reachable(&mut self, now: Instant, peers: impl IntoIterator<Item = PeerId>) {
        self.now = now;
        let set: BTreeSet<PeerId> = peers.into_iter().collect();
        if self.reachable.as_ref() != Some(&set) {
            self.reachable = Some(set);
            self.resolve_seed_names();
            if let Some(a) = self.asking.as_ref() {
                if a.donor.is_some_and(|d| !self.is_reachable(&d)) {
                    let (within, tried) = (a.within, a.tried.clone());
                    self.asking = None;
                    self.ask_next(within, tried);
                }
            }
            self.serve_pending();
        }
    }

    /// With `seed=NAME,..`: seeds the ring once each name is this peer or exactly one
    /// reachable peer (a ring gossiped by others first is adopted instead).
    pub(super) fn resolve_seed_names(&mut self) {
        let InitMode::SeedNames(names) = &self.config.init else {
            return;
        };
        if self.ring.is_some() {
            return;
        }
        let Some(ids) = self.resolved_seeds(names) else {
            return;
        };
        // Every named peer derives this same ring, as with `seed=` ids.
        self.install_ring(Ring::seeded(self.universe, ids));
    }

    /// The full ids of `names` among us and the reachable peers, once all are known.
    pub(super) fn resolved_seeds(&self, names: &[gossip::peer::ShortName]) -> Option<Vec<PeerId>> {
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            let mut matches = self.known_peers().filter(|p| name.matches(p));
            let (Some(id), None) = (matches.next(), matches.next()) else {
                return None;
            };
            ids.push(id);
        }
        ids.sort();
        ids.dedup();
        Some(ids)
    }

    /// This peer and the peers the mesh can reach.
    pub(super) fn known_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        std::iter::once(self.me).chain(self.reachable.iter().flatten().copied())
    }

    pub(super) fn is_reachable(&self, p: &PeerId) -> bool {
        self.reachable.as_ref().is_none_or(|r| r.contains(p))
    }

    /// How many of the seed names are this peer or a reachable peer.
    pub(super) fn seed_names_known(&self, names: &[gossip::peer::ShortName]) -> usize {
        names
            .iter()
            .filter(|n| self.known_peers().any(|p| n.matches(&p)))
            .count()
    }

    pub(super) fn expected_peers(&self) -> usize {
        match &self.config.init {
            super::InitMode::Consensus { peers } => *peers,
            super::InitMode::Seed(s) => s.len(),
            super::InitMode::SeedNames(s) => s.len(),
            super::InitMode::Observer => 0,
        }
    }

    /// The driver durably wrote snapshot `seq`.
    pub fn handle_persisted(&mut self, seq: PersistSeq) {
        if self.outbox.persisted(seq) {
            if let Some(g) = self.snapshot_gossip.take() {
                self.durable_digest = Fingerprint::new().bytes(&g).finish();
                self.durable_gossip = g;
            }
        }
    }

    /// The next thing for the driver to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<IpamOutput> {
        match self.outbox.next() {
            Next::Output(o) => Some(o),
            Next::Snapshot(seq) => match self.snapshot().encode() {
                Ok(snapshot) => {
                    self.snapshot_gossip = Some(self.full_gossip());
                    Some(IpamOutput::Persist { seq, snapshot })
                }
                Err(SnapshotError::TooBig(bytes)) => {
                    // Written, it could not be read back at the next start. Not written,
                    // nothing that depends on it is released: requests time out with the
                    // reason logged, as when the disk fails.
                    self.outbox.snapshot_failed(seq);
                    self.stats.snapshot_too_big += 1;
                    Some(IpamOutput::Event(IpamEvent::SnapshotTooBig { bytes }))
                }
            },
            Next::Idle => None,
        }
    }

    /// Whether a snapshot is out and its write not yet confirmed.
    pub fn is_awaiting_persist(&self) -> bool {
        self.outbox.is_waiting()
    }

    /// The durable state now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            peer: self.me,
            universe: self.universe,
            ring: self
                .ring
                .as_ref()
                .map(|r| (r.seeds().to_vec(), r.entries().clone())),
            claims: self.consensus.own().cloned(),
            votes: self.votes.clone(),
            allocations: self
                .by_container
                .iter()
                .map(|(c, s)| (c.clone(), s.iter().copied().collect()))
                .collect(),
        }
    }

    /// The whole gossip state: the ring, or the bootstrap claims.
    pub(super) fn full_gossip(&self) -> Vec<u8> {
        match &self.ring {
            Some(ring) => GossipMsg::Ring {
                sender: self.me,
                universe: self.universe,
                seeds: ring.seeds().to_vec(),
                entries: ring.entries().clone(),
            },
            None => GossipMsg::Bootstrap {
                sender: self.me,
                universe: self.universe,
                claims: self.consensus.signed_claims(self.identity.as_ref()),
            },
        }
        .encode()
    }
}
