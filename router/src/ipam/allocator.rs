//! The IPAM state machine: requests, space, and the persist barrier.
//!
//! [`Ipam`] owns the ring replica, this peer's allocations, the bootstrap state and the
//! rmpeer votes. Requests come in with `now` and get a [`RequestId`]; each completes
//! exactly once through [`IpamOutput::Completed`]: at once, when a ring or space
//! arrives, or at its deadline with the reason it waited. Gossip and unicast input comes
//! through the mesh (see the `channel` module). Only the outbox ([`super::persist`])
//! releases output.

use super::addr::{from_ip, to_ip, AddrRange, Cidr};
use super::consensus::Consensus;
use super::persist::{Next, Outbox, PersistSeq, Snapshot, SnapshotError, SNAPSHOT_FORMAT};
use super::ring::{Entries, Entry, Ring};
use super::space::{self, first_free, free_count};
use super::takeover::{AcceptorState, Proposal};
use super::wire::{GossipMsg, UnicastMsg};
use super::{
    ContainerId, InitMode, IpamConfig, IpamError, IpamEvent, IpamOutput, IpamStats, Reply,
    RequestId, MAX_CONTAINER_ID_LEN,
};
use gossip::channel::Fingerprint;
use gossip::peer::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
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
    },
    Remove {
        dead: PeerId,
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
    /// Chosen heirs not yet seen taking over: dead peer → (heir, resend at, give up at).
    pub(super) heir_notices: BTreeMap<PeerId, (PeerId, Instant, Instant)>,
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
    /// A fresh IPAM for peer `me`. With `seed=`, the ring exists at once.
    pub fn new(me: PeerId, config: IpamConfig, now: Instant, rng_seed: u64) -> Ipam {
        let universe = config.range.range();
        let (n, participant) = match &config.init {
            InitMode::Consensus { peers } => (*peers, true),
            InitMode::Seed(seeds) => (seeds.len(), false),
            InitMode::SeedNames(names) => (names.len(), false),
            InitMode::Observer => (1, false),
        };
        let consensus = Consensus::new(me, n, participant, config.consensus_retry);
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

    fn wait(&mut self, request: RequestId, kind: PendingKind) {
        let deadline = self.now + self.config.request_timeout;
        self.pending.insert(request, Pending { kind, deadline });
        self.serve_pending();
    }

    /// Allocates an address for `container` inside `subnet` (default: the whole range).
    /// Idempotent: a container that has an address there gets it again.
    pub fn allocate(
        &mut self,
        now: Instant,
        container: ContainerId,
        subnet: Option<Cidr>,
    ) -> RequestId {
        let id = self.new_request(now);
        let subnet = subnet.unwrap_or(self.config.range);
        if let Err(e) = self.check_request(&container, subnet.range()) {
            self.complete(id, Err(e));
            return id;
        }
        self.wait(id, PendingKind::Allocate { container, subnet });
        id
    }

    /// Claims `addr` for `container` (fails if another container or peer holds it).
    pub fn claim(&mut self, now: Instant, container: ContainerId, addr: Ipv4Addr) -> RequestId {
        let id = self.new_request(now);
        let a = from_ip(addr);
        let single = AddrRange {
            start: a,
            end: a + 1,
        };
        if let Err(e) = self.check_request(&container, single) {
            self.complete(id, Err(e));
            return id;
        }
        self.wait(id, PendingKind::Claim { container, addr: a });
        id
    }

    /// Releases `addr` of `container` (releasing what it does not hold is not an error).
    pub fn release(&mut self, now: Instant, container: ContainerId, addr: Ipv4Addr) -> RequestId {
        let id = self.new_request(now);
        let n = usize::from(self.free_addr(&container, from_ip(addr)));
        self.complete(id, Ok(Reply::Released(n)));
        id
    }

    /// Releases every address of `container`.
    pub fn release_all(&mut self, now: Instant, container: ContainerId) -> RequestId {
        let id = self.new_request(now);
        let addrs: Vec<u64> = self
            .by_container
            .get(&container)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let n = addrs
            .iter()
            .filter(|a| self.free_addr(&container, **a))
            .count();
        self.complete(id, Ok(Reply::Released(n)));
        id
    }

    fn check_request(&self, container: &ContainerId, r: AddrRange) -> Result<(), IpamError> {
        if self.leaving {
            return Err(IpamError::Leaving);
        }
        if container.0.is_empty() || container.0.len() > MAX_CONTAINER_ID_LEN {
            return Err(IpamError::Invalid(format!(
                "container id must be 1..={MAX_CONTAINER_ID_LEN} bytes"
            )));
        }
        if !self.universe.covers(&r) {
            let what = if r.len() == 1 {
                to_ip(r.start).to_string()
            } else {
                format!("subnet {r}")
            };
            return Err(IpamError::OutOfRange(what, self.config.range));
        }
        Ok(())
    }

    /// Tries every waiting request again (after a ring, space or reachability change).
    pub(super) fn serve_pending(&mut self) {
        let ids: Vec<RequestId> = self.pending.keys().copied().collect();
        for id in ids {
            let Some(p) = self.pending.get(&id).cloned() else {
                continue;
            };
            let result = match p.kind {
                PendingKind::Allocate { container, subnet } => {
                    self.try_allocate(&container, subnet)
                }
                PendingKind::Claim { container, addr } => self.try_claim(&container, addr),
                PendingKind::Remove { .. } => None,
            };
            if let Some(result) = result {
                self.pending.remove(&id);
                self.complete(id, result);
            }
        }
    }

    fn try_allocate(&mut self, c: &ContainerId, subnet: Cidr) -> Option<Result<Reply, IpamError>> {
        let within = subnet.usable();
        if let Some(a) = self
            .by_container
            .get(c)
            .and_then(|s| s.range(within.start..within.end).next())
        {
            return Some(Ok(Reply::Allocated(to_ip(*a), subnet)));
        }
        let ring = self.ring.as_ref()?;
        let mine = ring.owned_by(&self.me);
        match first_free(&mine, &self.by_addr, within) {
            Some(a) => {
                self.record(c, a);
                Some(Ok(Reply::Allocated(to_ip(a), subnet)))
            }
            None => {
                self.ask_for_space(within);
                None
            }
        }
    }

    fn try_claim(&mut self, c: &ContainerId, a: u64) -> Option<Result<Reply, IpamError>> {
        if let Some(holder) = self.by_addr.get(&a) {
            return Some(if holder == c {
                Ok(Reply::Claimed(to_ip(a)))
            } else {
                Err(IpamError::InUse(to_ip(a), holder.clone()))
            });
        }
        let owner = self.ring.as_ref()?.owner_of(a).map(|(_, e)| e.owner)?;
        if owner != self.me {
            return Some(Err(IpamError::OwnedElsewhere(to_ip(a), owner)));
        }
        self.record(c, a);
        Some(Ok(Reply::Claimed(to_ip(a))))
    }

    fn record(&mut self, c: &ContainerId, a: u64) {
        self.by_addr.insert(a, c.clone());
        self.by_container.entry(c.clone()).or_default().insert(a);
        self.outbox.dirty();
        self.refresh_free(&[a]);
    }

    fn free_addr(&mut self, c: &ContainerId, a: u64) -> bool {
        if self.by_addr.get(&a) != Some(c) {
            return false;
        }
        self.by_addr.remove(&a);
        if let Some(set) = self.by_container.get_mut(c) {
            set.remove(&a);
            if set.is_empty() {
                self.by_container.remove(c);
            }
        }
        self.outbox.dirty();
        self.refresh_free(&[a]);
        self.serve_pending();
        true
    }

    /// Re-advertises the free counts of our tokens holding `addrs`; gossips the change.
    fn refresh_free(&mut self, addrs: &[u64]) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let mut delta = Entries::new();
        for &a in addrs {
            let Some((r, e)) = ring.owner_of(a) else {
                continue;
            };
            let free = free_count(r, &self.by_addr);
            if e.owner == self.me && e.free != free {
                let Some(version) = super::ring::next_version(e.version) else {
                    self.stats.version_exhausted += 1;
                    continue;
                };
                let entry = Entry {
                    free,
                    version,
                    ..*e
                };
                ring.set(r.start, entry);
                delta.insert(r.start, entry);
            }
        }
        if !delta.is_empty() {
            self.outbox.dirty();
            self.broadcast_entries(delta);
        }
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

    /// Asks a donor for space inside `within`, unless a request is already out.
    pub(super) fn ask_for_space(&mut self, within: AddrRange) {
        if self.asking.is_some() {
            return;
        }
        self.ask_next(within, BTreeSet::new());
    }

    pub(super) fn ask_next(&mut self, within: AddrRange, mut tried: BTreeSet<PeerId>) {
        let Some(ring) = self.ring.as_ref() else {
            return;
        };
        let reach = self.reachable.as_ref();
        let retry_at = self.now + self.config.donation_retry;
        let Some(donor) = space::choose_donor(ring, &self.me, reach, &tried, within, &mut self.rng)
        else {
            // Every candidate was asked this round (or there is none). Starting over at
            // once would make peers that keep their last address answer "no" in a tight
            // loop; wait a retry interval (or a donation) before the next round.
            self.asking = (!tried.is_empty()).then_some(Asking {
                donor: None,
                within,
                retry_at,
                tried: BTreeSet::new(),
            });
            return;
        };
        tried.insert(donor);
        let msg = UnicastMsg::SpaceRequest {
            ring: ring.id().0,
            within,
        };
        self.unicast(donor, &msg);
        self.asking = Some(Asking {
            donor: Some(donor),
            within,
            retry_at,
            tried,
        });
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
            if let Some(own) = self.consensus.own().cloned() {
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
                if let PendingKind::Remove { dead } = p.kind {
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
        let notices = self.heir_notices.values().map(|n| n.1);
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
    fn resolve_seed_names(&mut self) {
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
                claims: self.consensus.claims().clone(),
            },
        }
        .encode()
    }
}
