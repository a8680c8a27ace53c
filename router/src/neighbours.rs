//! What the data plane knows of each neighbour: a sans-IO state machine between the
//! control plane ([`gossip::node::Node`]) and the two data-plane tasks (sleeve and
//! kernel fast path).
//!
//! The owner task feeds it the neighbours the control plane has (every established
//! control link whose peer's listen port is known: [`Neighbours::handle_links`]), the
//! data plane's control messages that arrived over the mesh
//! ([`Neighbours::handle_message`]) and the two tasks' events; it drains
//! [`Neighbours::poll_output`]: commands for the tasks, and messages to send to a
//! neighbour. It keeps:
//! - the **neighbour diff**: which neighbours the sleeve task was told about, with the
//!   endpoint and handshake hash it was given; a change re-adds the neighbour;
//! - **fast-path hellos**: each new neighbour learns our fast-path flags, and its own
//!   hello (which may arrive before we know its endpoint) makes it a candidate or not;
//! - the **relay queue**: a message for a neighbour the mesh has no route to yet (the
//!   link is up, routes are computed a moment later) waits, bounded, and is retried
//!   when routes change;
//! - **hole punching** ([`punch`]): as coordinator, requests to both ends of an unlinked
//!   pair of neighbours; as an end, the punched peers the sleeve task is given, reached
//!   without a control link;
//! - what the status report shows: confirmed UDP paths, path MTUs, fast-path modes, the
//!   endpoints the sleeve task learnt from a neighbour's datagrams (roaming, NAT), and
//!   which path each neighbour's frames take ([`PathKind`]: direct, fastdp, tcp fallback).

use crate::dataplane_driver::Command as DpCommand;
use crate::fastdp_driver::{Command as FpCommand, Event as FpEvent};
use crate::mtu::OverlayMtu;
use datapath::dataplane::fallback::FallbackReason;
use datapath::dataplane::Event as DpEvent;
use datapath::fastdp::link::{Mode, Reason};
use datapath::fastdp::{Hello, Policy};
use datapath::sleeve_message::{PunchRequest, SleeveMessage};
use gossip::node::Node;
use gossip::peer::PeerId;
use gossip::topology::{PeerRecord, Topology};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

pub mod punch;
use punch::{Candidate, PunchStats, Punches, RequestContext};

/// Bound on messages waiting for a route.
const MAX_UNROUTED: usize = 256;

/// How often the coordinator looks for unlinked pairs.
const PUNCH_STEP: Duration = Duration::from_secs(1);

/// A neighbour as the sleeve task is told about it: its UDP endpoint (the control
/// link's IP, the announced listen port) and the control link's handshake hash.
pub type Endpoint = (SocketAddr, [u8; 32]);

/// What the owner must do.
#[derive(Debug)]
pub enum Output {
    /// A command for the sleeve data plane.
    Dataplane(DpCommand),
    /// A command for the fast path.
    Fastdp(FpCommand),
    /// Send this encoded [`SleeveMessage`] to a neighbour over the mesh; if the mesh has
    /// no route, hand it back with [`Neighbours::handle_unrouted`].
    Send {
        /// The neighbour.
        peer: PeerId,
        /// The encoded message.
        payload: Vec<u8>,
    },
}

/// Which path a neighbour's frames take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// The UDP sleeve, confirmed both ways.
    Direct,
    /// The kernel fast path (VXLAN).
    Fastdp,
    /// Inside the control link, for this reason.
    TcpFallback(FallbackReason),
    /// Neither yet: the UDP path is being tried.
    Pending,
    /// No control link, but a UDP path opened by hole punching.
    Punched,
}

impl PathKind {
    /// The name status, report and metrics use.
    pub fn as_str(&self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Fastdp => "fastdp",
            PathKind::TcpFallback(_) => "tcp fallback",
            PathKind::Pending => "pending",
            PathKind::Punched => "punched",
        }
    }

    /// Every kind's name, for metrics.
    pub const NAMES: [&'static str; 5] = ["direct", "fastdp", "tcp fallback", "pending", "punched"];

    /// Why, for `tcp fallback`.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            PathKind::TcpFallback(r) => Some(r.as_str()),
            _ => None,
        }
    }
}

/// The neighbours the control plane has: every established control link whose peer's
/// listen port is known, with the UDP endpoint and hash the sleeve task gets.
pub fn endpoints(node: &Node) -> HashMap<PeerId, Endpoint> {
    let topology = node.mesh().topology();
    node.links()
        .values()
        .filter(|l| l.established)
        .filter_map(|l| {
            let port = topology.peer(&l.peer)?.listen_port();
            Some((l.peer, (SocketAddr::new(l.addr.ip(), port), l.hash)))
        })
        .collect()
}

/// The pairs this router coordinates now: neighbours with confirmed UDP paths of one
/// address family that have no link to each other (in either's record), where no peer
/// with a lower id than ours is linked to both. Pairs in id order, at most [`punch::MAX_PAIRS`].
///
/// Asked every second; the search is quadratic in neighbours, so its answer is kept
/// until the topology (its digest) or the confirmed paths change.
pub fn candidates(node: &Node, n: &mut Neighbours) -> Vec<Candidate> {
    let topology = node.mesh().topology();
    let mut direct: Vec<(PeerId, SocketAddr)> = n
        .paths
        .iter()
        .filter_map(|p| Some((*p, n.endpoint(p)?.0)))
        .collect();
    direct.sort();
    let digest = topology.digest();
    if let Some(cached) = &n.pairs {
        if cached.digest == digest && cached.direct == direct {
            return cached.pairs.clone();
        }
    }
    let pairs = search_pairs(topology, &direct);
    n.pairs = Some(PairSearch {
        digest,
        direct,
        pairs: pairs.clone(),
    });
    pairs
}

/// The last answer of [`candidates`] and what it was computed from.
#[derive(Debug)]
struct PairSearch {
    digest: u64,
    direct: Vec<(PeerId, SocketAddr)>,
    pairs: Vec<Candidate>,
}

/// [`candidates`] among `direct` (sorted by id), computed.
fn search_pairs(topology: &Topology, direct: &[(PeerId, SocketAddr)]) -> Vec<Candidate> {
    let us = topology.local();
    // In a full mesh every pair is linked: walk each neighbour's record (its links are
    // in id order, as `direct` is) beside the list rather than look every pair up.
    let records: Vec<Option<&PeerRecord>> = direct.iter().map(|(p, _)| topology.peer(p)).collect();
    let mut out = Vec::new();
    for (i, a) in direct.iter().enumerate() {
        let mut listed = records[i]
            .into_iter()
            .flat_map(|r| r.links().map(|(id, _)| *id))
            .peekable();
        for (j, b) in direct.iter().enumerate().skip(i + 1) {
            if out.len() >= punch::MAX_PAIRS {
                return out;
            }
            while listed.next_if(|id| *id < b.0).is_some() {}
            let linked = listed.peek() == Some(&b.0)
                || records[j].is_some_and(|r| r.link_to(&a.0).is_some());
            // Linked already, or of two families: nothing to punch.
            if linked || a.1.is_ipv4() != b.1.is_ipv4() {
                continue;
            }
            let lower = topology.peers().map(|(p, _)| p).take_while(|p| **p < us);
            if lower
                .into_iter()
                .any(|p| topology.is_symmetric(p, &a.0) && topology.is_symmetric(p, &b.0))
            {
                continue;
            }
            out.push(Candidate { a: *a, b: *b });
        }
    }
    out
}

/// The data plane's view of the neighbours.
pub struct Neighbours {
    /// Our fast-path policy; `enabled` is false when the fast path is off.
    policy: Policy,
    /// Whether a fast-path task runs (it may be off, or unavailable).
    fastdp_running: bool,
    /// Overlay MTU: configured, and measured per path.
    mtu: OverlayMtu,
    /// Neighbours the sleeve task knows, with what it was given.
    known: HashMap<PeerId, Endpoint>,
    /// Neighbours whose UDP path is established.
    paths: HashSet<PeerId>,
    /// Endpoints the sleeve task moved to (roaming), where they differ from `known`.
    learnt: HashMap<PeerId, SocketAddr>,
    /// Neighbours whose frames travel inside the control link, and why.
    fallback: HashMap<PeerId, FallbackReason>,
    /// Each fast-path candidate's mode.
    modes: HashMap<PeerId, (Mode, Option<Reason>)>,
    /// The last hello from each neighbour.
    hellos: HashMap<PeerId, Hello>,
    /// Messages waiting for a route to their neighbour.
    unrouted: VecDeque<(PeerId, Vec<u8>)>,
    /// Hole punching, both roles.
    punches: Punches,
    /// When the coordinator looks for pairs next.
    punch_step: Option<Instant>,
    /// The coordinator's last search for pairs.
    pairs: Option<PairSearch>,
    outputs: VecDeque<Output>,
}

impl Neighbours {
    /// No neighbours yet.
    pub fn new(policy: Policy, fastdp_running: bool, mtu: OverlayMtu) -> Neighbours {
        Neighbours {
            policy,
            fastdp_running,
            mtu,
            known: HashMap::new(),
            paths: HashSet::new(),
            learnt: HashMap::new(),
            fallback: HashMap::new(),
            modes: HashMap::new(),
            hellos: HashMap::new(),
            unrouted: VecDeque::new(),
            punches: Punches::default(),
            punch_step: None,
            pairs: None,
            outputs: VecDeque::new(),
        }
    }

    /// The neighbours the control plane has now: those gone are removed from both
    /// tasks, new or changed ones are (re-)added and get our hello.
    pub fn handle_links(&mut self, desired: HashMap<PeerId, Endpoint>) {
        let gone: Vec<PeerId> = self
            .known
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        for peer in gone {
            self.known.remove(&peer);
            self.paths.remove(&peer);
            self.learnt.remove(&peer);
            self.fallback.remove(&peer);
            self.mtu.remove(&peer);
            self.modes.remove(&peer);
            self.hellos.remove(&peer);
            self.push(Output::Dataplane(DpCommand::RemovePeer(peer)));
            self.push(Output::Fastdp(FpCommand::Remove(peer)));
        }
        let mut added = Vec::new();
        for (peer, (endpoint, hash)) in desired {
            if self.known.get(&peer) != Some(&(endpoint, hash)) {
                self.known.insert(peer, (endpoint, hash));
                self.paths.remove(&peer);
                self.learnt.remove(&peer);
                self.fallback.remove(&peer);
                if self.punches.forget(&peer) {
                    info!(%peer, "a control link to {peer} is up: its session replaces the punched one");
                }
                let add = DpCommand::AddPeer {
                    peer,
                    endpoint,
                    hash,
                    punched: false,
                };
                self.push(Output::Dataplane(add));
                added.push((peer, endpoint.ip()));
            }
        }
        // Each new connection learns our fast-path flags, inside the control link.
        for (peer, ip) in added {
            let hello = self.policy.hello(ip);
            self.send(peer, SleeveMessage::FastdpHello(hello));
            if let Some(theirs) = self.hellos.get(&peer).copied() {
                self.hello(peer, theirs);
            }
        }
    }

    /// A control message from a neighbour, decoded by the channel it came on.
    pub fn handle_message(&mut self, peer: PeerId, message: SleeveMessage) {
        let command = match message {
            SleeveMessage::Offer(offer) => DpCommand::Offer(peer, offer),
            SleeveMessage::Heard => DpCommand::Heard(peer),
            SleeveMessage::ProbeAck(size) => DpCommand::ProbeAck(peer, size),
            SleeveMessage::FastdpHello(hello) => return self.hello(peer, hello),
            SleeveMessage::FastdpAck(nonce) => {
                return self.push(Output::Fastdp(FpCommand::Ack(peer, nonce)));
            }
            SleeveMessage::Punch(_) => {
                debug!(%peer, "punch request from {peer} ignored: it needs the mesh's view (handle_punch)");
                return;
            }
        };
        self.push(Output::Dataplane(command));
    }

    /// A punch request from `from` (see [`punch`]): the sleeve task gets the punched
    /// peer, or the request is refused and counted.
    pub fn handle_punch(
        &mut self,
        now: Instant,
        from: PeerId,
        req: PunchRequest,
        ctx: RequestContext,
    ) {
        let peer = req.peer;
        match self.punches.handle_request(now, from, req, ctx) {
            Ok(Some(start)) => {
                info!(%peer, via = %from, endpoint = %start.endpoint, "punching a hole to {peer} at {} (asked by {from})", start.endpoint);
                self.push(Output::Dataplane(DpCommand::AddPeer {
                    peer,
                    endpoint: start.endpoint,
                    hash: start.salt,
                    punched: true,
                }));
            }
            Ok(None) => {}
            Err(why) => {
                debug!(%peer, %from, "punch request from {from} about {peer} refused: {}", why.as_str())
            }
        }
    }

    /// Hole punching's timers at `now`: attempts that failed or were lost go (frames to
    /// those peers take the relay again), and as coordinator, requests for `pairs` (see
    /// [`candidates`]) that are due go out, each with an id from `attempt_id`.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        reachable: impl Fn(&PeerId) -> bool,
        pairs: &[Candidate],
        attempt_id: &mut dyn FnMut() -> u64,
    ) {
        self.punch_step = Some(now + PUNCH_STEP);
        for peer in self.punches.poll_expired(now, reachable) {
            info!(%peer, "punched path to {peer} given up; its frames take the relay");
            self.mtu.remove(&peer);
            self.push(Output::Dataplane(DpCommand::RemovePeer(peer)));
        }
        for (to, req) in self.punches.coordinate(now, pairs, attempt_id) {
            debug!(%to, peer = %req.peer, "asking {to} to punch a hole to {}", req.peer);
            self.send(to, SleeveMessage::Punch(req));
        }
    }

    /// When [`Neighbours::handle_timeout`] is due (`None`: now, it never ran).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let step = self.punch_step?;
        Some(self.punches.poll_timeout().map_or(step, |t| t.min(step)))
    }

    /// Whether `peer` is a neighbour (an established control link with a known port).
    pub fn is_neighbour(&self, peer: &PeerId) -> bool {
        self.known.contains_key(peer)
    }

    /// `peer`'s endpoint, if a punched path reaches it.
    pub fn punched(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.punches.up(peer)
    }

    /// Hole punching's counts.
    pub fn punch_stats(&self) -> PunchStats {
        self.punches.stats()
    }

    /// An event of the sleeve task: a message to carry, or a path change. (Its reports
    /// of the peers heard from go to the node, not here.)
    pub fn handle_dataplane(&mut self, now: Instant, event: DpEvent) {
        let (peer, message) = match event {
            DpEvent::Alive(_) => return,
            DpEvent::SendOffer { peer, offer } => (peer, SleeveMessage::Offer(offer)),
            DpEvent::SendHeard { peer } => (peer, SleeveMessage::Heard),
            DpEvent::SendProbeAck { peer, size } => (peer, SleeveMessage::ProbeAck(size)),
            DpEvent::MtuChanged { peer, mtu } => {
                info!(%peer, mtu, "path MTU to {peer}: overlay MTU {mtu}");
                self.mtu.set_path(peer, mtu);
                return;
            }
            DpEvent::EndpointChanged { peer, from, to } => {
                if self.punches.handle_endpoint(&peer, to) {
                    info!(%peer, %from, %to, "punched endpoint of {peer} moved from {from} to {to}");
                    return;
                }
                info!(%peer, %from, %to, "sleeve endpoint of {peer} moved from {from} to {to}: its authentic datagrams now come from there");
                if self.known.get(&peer).is_some_and(|(first, _)| *first == to) {
                    self.learnt.remove(&peer);
                } else if self.known.contains_key(&peer) {
                    self.learnt.insert(peer, to);
                }
                return;
            }
            DpEvent::Fallback { peer, reason } => {
                match reason {
                    Some(why) => {
                        warn!(%peer, "frames to {peer} now travel inside the encrypted control link (tcp fallback): {}", why.as_str());
                        if self.known.contains_key(&peer) {
                            self.fallback.insert(peer, why);
                        }
                    }
                    None => {
                        info!(%peer, "frames to {peer} are back on the UDP sleeve: its path confirmed");
                        self.fallback.remove(&peer);
                    }
                }
                return;
            }
            DpEvent::PathChanged { peer, established } => {
                if self.punches.handle_path(now, &peer, established) {
                    if established {
                        info!(%peer, "punched path to {peer} established: its frames go directly");
                    } else {
                        warn!(%peer, "punched path to {peer} stopped working; its frames take the relay");
                    }
                    return;
                }
                if established {
                    info!(%peer, "UDP path to {peer} established");
                    self.paths.insert(peer);
                } else {
                    warn!(%peer, "UDP path to {peer} stopped working; the connection is pending");
                    self.paths.remove(&peer);
                }
                return;
            }
        };
        self.send(peer, message);
    }

    /// An event of the fast-path task: an acknowledgement to carry, or a mode.
    pub fn handle_fastdp(&mut self, event: FpEvent) {
        match event {
            FpEvent::SendAck { peer, nonce } => self.send(peer, SleeveMessage::FastdpAck(nonce)),
            FpEvent::Mode { peer, mode, reason } => {
                if self.known.contains_key(&peer) {
                    self.modes.insert(peer, (mode, reason));
                }
            }
        }
    }

    /// The mesh had no route for this [`Output::Send`]: it waits for the next route
    /// change (the oldest waiting message goes when the queue is full).
    pub fn handle_unrouted(&mut self, peer: PeerId, payload: Vec<u8>) {
        if self.unrouted.len() == MAX_UNROUTED {
            self.unrouted.pop_front();
        }
        self.unrouted.push_back((peer, payload));
    }

    /// Routes changed: the waiting messages to current neighbours go out again.
    pub fn handle_routes_changed(&mut self) {
        for (peer, payload) in std::mem::take(&mut self.unrouted) {
            if self.known.contains_key(&peer) || self.punches.contains(&peer) {
                self.push(Output::Send { peer, payload });
            }
        }
    }

    /// The next thing to do, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether the UDP path to `peer` is confirmed both ways.
    pub fn is_path_established(&self, peer: &PeerId) -> bool {
        self.paths.contains(peer)
    }

    /// Which path `peer`'s frames take.
    pub fn path(&self, peer: &PeerId) -> PathKind {
        if matches!(self.modes.get(peer), Some((Mode::Fastdp, _))) {
            PathKind::Fastdp
        } else if self.paths.contains(peer) {
            PathKind::Direct
        } else if let Some(why) = self.fallback.get(peer) {
            PathKind::TcpFallback(*why)
        } else {
            PathKind::Pending
        }
    }

    /// Where the sleeve sends to `peer` now, and whether that was learnt from its
    /// datagrams (roaming, NAT) rather than taken from the control link.
    pub fn endpoint(&self, peer: &PeerId) -> Option<(SocketAddr, bool)> {
        if let Some(learnt) = self.learnt.get(peer) {
            return Some((*learnt, true));
        }
        self.known.get(peer).map(|(first, _)| (*first, false))
    }

    /// The overlay MTU towards `peer`.
    pub fn mtu(&self, peer: &PeerId) -> u32 {
        self.mtu.path(peer)
    }

    /// The data-plane mode of `peer`'s connection, and why it is on sleeve when it is
    /// eligible for the fast path.
    pub fn overlay(&self, peer: &PeerId) -> (&'static str, Option<String>) {
        match self.modes.get(peer) {
            Some((mode, reason)) => (mode.as_str(), reason.map(|r| r.as_str().to_string())),
            None => ("sleeve", None),
        }
    }

    /// Our fast-path policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A neighbour's hello: the connection becomes a candidate, or stops being one.
    fn hello(&mut self, peer: PeerId, hello: Hello) {
        self.hellos.insert(peer, hello);
        let Some((endpoint, _)) = self.known.get(&peer) else {
            return;
        };
        let ip = endpoint.ip();
        match self.policy.eligible(ip, hello) {
            Ok(()) if ip.is_ipv6() => {
                debug!(%peer, "connection to {peer} stays on sleeve: IPv6 underlay");
                self.modes
                    .insert(peer, (Mode::Sleeve, Some(Reason::Ipv6Underlay)));
                self.push(Output::Fastdp(FpCommand::Remove(peer)));
            }
            Ok(()) => {
                if self.fastdp_running {
                    self.modes
                        .entry(peer)
                        .or_insert((Mode::Sleeve, Some(Reason::Probing)));
                }
                self.push(Output::Fastdp(FpCommand::Candidate { peer, ip }));
            }
            Err(why) => {
                debug!(%peer, "connection to {peer} stays on sleeve: {why}");
                self.modes.remove(&peer);
                self.push(Output::Fastdp(FpCommand::Remove(peer)));
            }
        }
    }

    fn send(&mut self, peer: PeerId, message: SleeveMessage) {
        let payload = message.encode();
        self.push(Output::Send { peer, payload });
    }

    fn push(&mut self, output: Output) {
        self.outputs.push_back(output);
    }
}

#[cfg(test)]
mod tests;
