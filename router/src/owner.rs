//! The mesh owner: the one task that owns the [`Mesh`] and the [`ConnectionMaker`].
//!
//! Link tasks, the listener and the API talk to it only through [`OwnerHandle`]
//! (an unbounded mpsc of [`Input`]); it answers queries with oneshot replies. It drives
//! both sans-IO machines with the wall clock, turns their outputs into link commands and
//! dials, and builds the [`Report`] snapshots that status shows.

use crate::dataplane::{Command as DpCommand, DataplaneHandle};
use crate::fastdp::{Command as FpCommand, Event as FpEvent, FastdpHandle};
use crate::ipam::{Ipam, PersistSeq};
use crate::ipam_driver::{IpamDriver, IpamOp, IpamResult};
use crate::links::{self, LinkContext};
use crate::mtu::OverlayMtu;
use crate::report;
use crate::sleeve_channel::{SleeveChannel, SleeveMessage, SLEEVE_CHANNEL};
use crate::status::Report;
use datapath::dataplane::Event as DpEvent;
use datapath::fastdp::link::{Mode, Reason};
use datapath::fastdp::Policy;
use gossip::connection_maker::{ConnectionMaker, Retry};
use gossip::mesh::{CloseReason, ConnId, Mesh, MeshEvent, MeshOutput};
use gossip::peer::PeerId;
use gossip::routes::Routes;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// A command for a link task.
#[derive(Debug)]
pub enum LinkCmd {
    /// Seal and write this message.
    Send(Vec<u8>),
    /// Close the link, for this reason.
    Close(String),
}

/// Everything the owner can be told or asked.
#[derive(Debug)]
pub enum Input {
    /// A link finished its handshake; `remote_id` is authenticated.
    LinkUp {
        /// Local id of the link.
        conn: ConnId,
        /// The authenticated remote peer.
        remote_id: PeerId,
        /// True when we dialled.
        outbound: bool,
        /// Remote TCP address.
        addr: SocketAddr,
        /// The target we dialled, if outbound.
        target: Option<SocketAddr>,
        /// Whether the link uses the network secret.
        encrypted: bool,
        /// The Noise handshake hash of the link (salts the sleeve keys).
        hash: [u8; 32],
        /// Where to send link commands.
        tx: mpsc::Sender<LinkCmd>,
    },
    /// A link ended.
    LinkDown {
        /// Which link.
        conn: ConnId,
        /// Why, if known.
        error: Option<String>,
    },
    /// An authenticated message arrived on a link.
    Message {
        /// Which link.
        conn: ConnId,
        /// The decrypted message.
        message: Vec<u8>,
    },
    /// A dial or its handshake failed.
    DialFailed {
        /// The target dialled.
        target: SocketAddr,
        /// What went wrong.
        error: String,
    },
    /// `weft connect`.
    Connect {
        /// Addresses to add.
        targets: Vec<SocketAddr>,
        /// Replace the existing targets.
        replace: bool,
    },
    /// `weft forget`; replies with how many targets were removed.
    Forget {
        /// Addresses to drop.
        targets: Vec<SocketAddr>,
        /// Reply channel.
        reply: oneshot::Sender<usize>,
    },
    /// A control-link handshake was refused or failed (counted, for metrics).
    HandshakeRefused {
        /// True when we dialled.
        outbound: bool,
        /// Why.
        reason: crate::handshakes::RefusedReason,
    },
    /// A status snapshot.
    Report(oneshot::Sender<Report>),
    /// An IPAM request; answered when it completes.
    Ipam {
        /// What to do.
        op: IpamOp,
        /// Reply channel.
        reply: oneshot::Sender<IpamResult>,
    },
    /// The store committed this IPAM snapshot.
    IpamPersisted(PersistSeq),
}

/// A cheap, cloneable way to reach the owner.
#[derive(Clone, Debug)]
pub struct OwnerHandle {
    tx: mpsc::UnboundedSender<Input>,
}

impl OwnerHandle {
    /// Sends an input; if the owner is gone the router is stopping and it is dropped.
    pub fn send(&self, input: Input) {
        let _ = self.tx.send(input);
    }

    /// Asks for a status snapshot.
    pub async fn report(&self) -> Option<Report> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Report(tx));
        rx.await.ok()
    }

    /// Runs an IPAM request to completion; `None` if the router is stopping.
    pub async fn ipam(&self, op: IpamOp) -> Option<IpamResult> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Ipam { op, reply: tx });
        rx.await.ok()
    }
}

/// Static facts about this router that reports show.
#[derive(Debug, Clone)]
pub struct RouterInfo {
    /// Our PeerId.
    pub id: PeerId,
    /// Our nickname.
    pub nickname: String,
    /// Whether a secret is in use.
    pub encryption: bool,
    /// Whether discovery is on.
    pub discovery: bool,
    /// Our port.
    pub port: u16,
}

struct LinkEntry {
    tx: mpsc::Sender<LinkCmd>,
    remote_id: PeerId,
    addr: SocketAddr,
    target: Option<SocketAddr>,
    encrypted: bool,
    hash: [u8; 32],
    established: bool,
}

/// The owner's state. Built by [`spawn`].
pub struct Owner {
    info: RouterInfo,
    mesh: Mesh,
    maker: ConnectionMaker,
    links: HashMap<ConnId, LinkEntry>,
    ctx: Weak<LinkContext>,
    rx: mpsc::UnboundedReceiver<Input>,
    links_changed: bool,
    dataplane: DataplaneLink,
    ipam: IpamDriver,
    /// The store thread (for the user's connection targets).
    store: std::sync::mpsc::Sender<crate::store::Write>,
    handshakes: crate::handshakes::HandshakeStats,
    fastdp: FastdpLink,
}

/// The owner's side of the fast path: the task's handle and events, our policy, and
/// the modes it reported.
pub struct FastdpLink {
    /// The fast-path task (a disabled handle when the fast path is off).
    pub handle: FastdpHandle,
    /// Its events.
    pub events: mpsc::UnboundedReceiver<FpEvent>,
    /// Our policy; `enabled` is false when the fast path is off.
    pub policy: Policy,
    /// Each candidate's mode.
    modes: HashMap<PeerId, (Mode, Option<Reason>)>,
    /// The last hello from each neighbour (it may come before we know its endpoint).
    hellos: HashMap<PeerId, datapath::fastdp::Hello>,
}

impl FastdpLink {
    /// Wraps the task's handle and events.
    pub fn new(
        handle: FastdpHandle,
        events: mpsc::UnboundedReceiver<FpEvent>,
        policy: Policy,
    ) -> FastdpLink {
        FastdpLink {
            handle,
            events,
            policy,
            modes: HashMap::new(),
            hellos: HashMap::new(),
        }
    }
}

/// The owner's side of the data plane: the task's handle, its events, the route
/// snapshots it reads, and what it has been told.
pub struct DataplaneLink {
    /// The data-plane task.
    pub handle: DataplaneHandle,
    /// Its events (rekey offers and notices to send, path changes).
    pub events: mpsc::UnboundedReceiver<DpEvent>,
    /// Route snapshots for it.
    pub routes: watch::Sender<Arc<Routes>>,
    /// Overlay MTU: configured, and measured per path.
    pub mtu: OverlayMtu,
    /// Neighbours the task knows, with the endpoint and hash it was given.
    known: HashMap<PeerId, (SocketAddr, [u8; 32])>,
    /// Neighbours whose UDP path is established.
    paths: HashSet<PeerId>,
    /// Sleeve messages waiting for a route to their neighbour.
    unrouted: Vec<(PeerId, Vec<u8>)>,
}

/// Bound on sleeve messages waiting for a route.
const MAX_UNROUTED: usize = 256;

impl DataplaneLink {
    /// Wraps the task's handle and channels.
    pub fn new(
        handle: DataplaneHandle,
        events: mpsc::UnboundedReceiver<DpEvent>,
        routes: watch::Sender<Arc<Routes>>,
        mtu: OverlayMtu,
    ) -> DataplaneLink {
        DataplaneLink {
            handle,
            events,
            routes,
            mtu,
            known: HashMap::new(),
            paths: HashSet::new(),
            unrouted: Vec::new(),
        }
    }
}

/// Creates the owner's channel; the owner itself starts with [`Owner::run`] once the
/// link context (which needs the handle) exists.
pub fn channel() -> (OwnerHandle, mpsc::UnboundedReceiver<Input>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (OwnerHandle { tx }, rx)
}

impl Owner {
    /// An owner for these machines; the data plane comes as its two tasks' links
    /// (sleeve and kernel fast path).
    pub fn new(
        info: RouterInfo,
        mut mesh: Mesh,
        maker: ConnectionMaker,
        ctx: &Arc<LinkContext>,
        rx: mpsc::UnboundedReceiver<Input>,
        (mut dataplane, fastdp): (DataplaneLink, FastdpLink),
        ipam: (Box<Ipam>, std::sync::mpsc::Sender<crate::store::Write>),
    ) -> Owner {
        mesh.register_channel(SLEEVE_CHANNEL, Box::<SleeveChannel>::default());
        let store = ipam.1.clone();
        let ipam = IpamDriver::new(&mut mesh, ipam.0, ipam.1);
        let _ = dataplane.routes.send(Arc::new(mesh.routes().clone()));
        dataplane.known.clear();
        Owner {
            info,
            mesh,
            maker,
            links: HashMap::new(),
            ctx: Arc::downgrade(ctx),
            rx,
            links_changed: false,
            dataplane,
            ipam,
            store,
            handshakes: Default::default(),
            fastdp,
        }
    }

    /// Runs until every handle is dropped.
    pub async fn run(mut self) {
        self.store_targets();
        loop {
            self.drain(Instant::now());
            let ipam_next = self.ipam.poll_timeout(&mut self.mesh);
            let next = [
                self.mesh.poll_timeout(),
                self.maker.poll_timeout(),
                ipam_next,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            tokio::select! {
                input = self.rx.recv() => match input {
                    Some(input) => self.handle(Instant::now(), input),
                    None => return,
                },
                Some(event) = self.dataplane.events.recv() => self.dataplane_event(event),
                Some(event) = self.fastdp.events.recv() => self.fastdp_event(event),
                _ = sleep => {
                    let now = Instant::now();
                    self.mesh.handle_timeout(now);
                    self.ipam.timeout(&mut self.mesh, now);
                }
            }
        }
    }

    fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::LinkUp {
                conn,
                remote_id,
                outbound,
                addr,
                target,
                encrypted,
                hash,
                tx,
            } => {
                self.handshakes.accepted(outbound);
                self.links.insert(
                    conn,
                    LinkEntry {
                        tx,
                        remote_id,
                        addr,
                        target,
                        encrypted,
                        hash,
                        established: false,
                    },
                );
                // The link authenticated `remote_id`: the maker learns who is there now,
                // so that a duplicate-race loser is not redialled.
                if let Some(target) = target {
                    self.maker.handle_connected(now, target, remote_id);
                }
                self.mesh
                    .handle_link_up(now, conn, remote_id, outbound, addr);
            }
            Input::LinkDown { conn, error } => {
                if let Some(entry) = self.links.remove(&conn) {
                    let peer = entry.remote_id;
                    let error = error.as_deref().unwrap_or("closed");
                    // If another link to the peer exists, the remote closed this one as
                    // the loser of a duplicate race (it decided before we did): no loss.
                    if self.links.values().any(|l| l.remote_id == peer) {
                        debug!(%peer, conn = conn.0, "duplicate link closed by the remote: {error}");
                    } else if entry.established {
                        info!(%peer, "connection to {peer} lost: {error}");
                    }
                    self.link_gone(now, entry);
                }
                self.mesh.handle_link_down(now, conn);
            }
            Input::Message { conn, message } => {
                if self.links.contains_key(&conn) {
                    // IPAM learns the time only through its inputs: bring it up to date
                    // before gossip reaches it (it times rmpeer back-offs from it).
                    self.ipam.timeout(&mut self.mesh, now);
                    self.mesh.handle_message(now, conn, &message);
                }
            }
            Input::DialFailed { target, error } => {
                self.maker.handle_failed(now, target, error, Retry::Later);
            }
            Input::Connect { targets, replace } => {
                self.maker.add_targets(now, &targets, replace);
                self.store_targets();
            }
            Input::Forget { targets, reply } => {
                let _ = reply.send(self.maker.forget(&targets));
                self.store_targets();
            }
            Input::HandshakeRefused { outbound, reason } => {
                self.handshakes.refused(outbound, reason);
            }
            Input::Report(reply) => {
                let paths = &self.dataplane.paths;
                let modes = &self.fastdp.modes;
                let view = report::LinkView {
                    encrypted: &|conn| self.links.get(&conn).map(|l| l.encrypted),
                    path_established: &|peer| paths.contains(peer),
                    mtu: &|peer| self.dataplane.mtu.path(peer),
                    overlay: &|peer| match modes.get(peer) {
                        Some((mode, reason)) => {
                            (mode.as_str(), reason.map(|r| r.as_str().to_string()))
                        }
                        None => ("sleeve", None),
                    },
                    trusted_subnets: self
                        .fastdp
                        .policy
                        .trusted
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                };
                let mut r = report::build(&self.info, &self.mesh, &self.maker, &view);
                r.ipam = Some(self.ipam.report(&mut self.mesh, &self.info.nickname));
                r.handshakes = Some(self.handshakes.report());
                let _ = reply.send(r);
            }
            Input::Ipam { op, reply } => self.ipam.request(&mut self.mesh, now, op, reply),
            Input::IpamPersisted(seq) => self.ipam.persisted(&mut self.mesh, seq),
        }
    }

    /// Applies every pending output of both machines, then starts due dials.
    fn drain(&mut self, now: Instant) {
        let mut topology_changed = false;
        loop {
            let mut reachability = false;
            while let Some(out) = self.mesh.poll_output() {
                match out {
                    MeshOutput::Send { conn, message } => self.send(conn, message),
                    MeshOutput::Close { conn, reason } => self.close(now, conn, reason),
                    MeshOutput::Event(event) => {
                        reachability |=
                            matches!(event, MeshEvent::TopologyChanged | MeshEvent::RoutesChanged);
                        topology_changed |= matches!(event, MeshEvent::TopologyChanged);
                        self.links_changed |= matches!(
                            event,
                            MeshEvent::ConnectionEstablished { .. }
                                | MeshEvent::ConnectionLost { .. }
                        );
                        self.event(event);
                    }
                }
            }
            if reachability {
                self.ipam.topology_changed(&mut self.mesh, now);
            }
            // IPAM's gossip gives the mesh output to carry out: go round again.
            if !self.ipam.pump(&mut self.mesh, now) {
                break;
            }
        }
        if topology_changed {
            let candidates = self.mesh.discovery_candidates();
            self.maker.set_discovered(now, &candidates);
        }
        if topology_changed || self.links_changed {
            self.claim_targets(now);
            self.sync_dataplane();
        }
        self.take_sleeve_messages();
        if std::mem::take(&mut self.links_changed) {
            let connected: Vec<PeerId> = self
                .links
                .values()
                .filter(|l| l.established)
                .map(|l| l.remote_id)
                .collect();
            self.maker.set_connected_peers(&connected);
        }
        while let Some(target) = self.maker.poll_dial(now) {
            if let Some(ctx) = self.ctx.upgrade() {
                tokio::spawn(links::dial(ctx, target));
            }
        }
    }

    /// What the end of an authenticated link means for the connection maker.
    fn link_gone(&mut self, now: Instant, entry: LinkEntry) {
        if let Some(target) = entry.target {
            self.maker.handle_disconnected(now, target, entry.remote_id);
        }
        self.links_changed = true;
    }

    /// An inbound link satisfies our target at that peer's listen address. Without this,
    /// a target whose first dial failed (the peer was not up yet) is dialled again even
    /// though the peer has connected to us, and the duplicate displaces the working link.
    /// The peer's listen port comes with its topology record, which may arrive after the
    /// link is established: so this runs whenever links or the topology change.
    fn claim_targets(&mut self, now: Instant) {
        let targets: Vec<SocketAddr> = self.maker.targets().iter().map(|t| t.addr).collect();
        for entry in self.links.values_mut() {
            if entry.target.is_some() || !entry.established {
                continue;
            }
            let Some(port) = self
                .mesh
                .topology()
                .peer(&entry.remote_id)
                .map(|r| r.listen_port())
            else {
                continue;
            };
            let addr = SocketAddr::new(entry.addr.ip(), port);
            if targets.contains(&addr) {
                self.maker.handle_connected(now, addr, entry.remote_id);
                entry.target = Some(addr);
            }
        }
    }

    /// Tells the data plane about neighbours gained and lost: the desired set is every
    /// established link whose peer's listen port is known; the difference from what the
    /// task was told is applied.
    fn sync_dataplane(&mut self) {
        let mut desired: HashMap<PeerId, (SocketAddr, [u8; 32])> = HashMap::new();
        for l in self.links.values().filter(|l| l.established) {
            if let Some(record) = self.mesh.topology().peer(&l.remote_id) {
                let endpoint = SocketAddr::new(l.addr.ip(), record.listen_port());
                desired.insert(l.remote_id, (endpoint, l.hash));
            }
        }
        let dp = &mut self.dataplane;
        let gone: Vec<PeerId> = dp
            .known
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        for peer in gone {
            dp.known.remove(&peer);
            dp.paths.remove(&peer);
            dp.mtu.remove(&peer);
            dp.handle.send(DpCommand::RemovePeer(peer));
            self.fastdp.handle.send(FpCommand::Remove(peer));
            self.fastdp.modes.remove(&peer);
            self.fastdp.hellos.remove(&peer);
        }
        let mut hellos = Vec::new();
        for (peer, (endpoint, hash)) in desired {
            if dp.known.get(&peer) != Some(&(endpoint, hash)) {
                dp.known.insert(peer, (endpoint, hash));
                dp.paths.remove(&peer);
                dp.handle.send(DpCommand::AddPeer {
                    peer,
                    endpoint,
                    hash,
                });
                hellos.push((peer, endpoint.ip()));
            }
        }
        // Each new connection learns our fast-path flags, inside the control link.
        for (peer, ip) in hellos {
            let hello = self.fastdp.policy.hello(ip);
            self.send_sleeve(peer, SleeveMessage::FastdpHello(hello).encode());
            if let Some(theirs) = self.fastdp.hellos.get(&peer).copied() {
                self.fastdp_hello(peer, theirs);
            }
        }
    }

    /// A peer's hello: the connection becomes a candidate, or stops being one.
    fn fastdp_hello(&mut self, peer: PeerId, hello: datapath::fastdp::Hello) {
        self.fastdp.hellos.insert(peer, hello);
        let Some((endpoint, _)) = self.dataplane.known.get(&peer) else {
            return;
        };
        let ip = endpoint.ip();
        match self.fastdp.policy.eligible(ip, hello) {
            Ok(()) => {
                if self.fastdp.handle.enabled() {
                    self.fastdp
                        .modes
                        .entry(peer)
                        .or_insert((Mode::Sleeve, Some(Reason::Probing)));
                }
                self.fastdp.handle.send(FpCommand::Candidate { peer, ip });
            }
            Err(why) => {
                debug!(%peer, "connection to {peer} stays on sleeve: {why}");
                self.fastdp.modes.remove(&peer);
                self.fastdp.handle.send(FpCommand::Remove(peer));
            }
        }
    }

    /// Carries a fast-path event to the control link, or records a mode.
    fn fastdp_event(&mut self, event: FpEvent) {
        match event {
            FpEvent::SendAck { peer, nonce } => {
                self.send_sleeve(peer, SleeveMessage::FastdpAck(nonce).encode())
            }
            FpEvent::Mode { peer, mode, reason } => {
                if self.dataplane.known.contains_key(&peer) {
                    self.fastdp.modes.insert(peer, (mode, reason));
                }
            }
        }
    }

    /// Hands the data plane the control messages that arrived for it.
    fn take_sleeve_messages(&mut self) {
        let Some(channel) = self
            .mesh
            .channel_mut(SLEEVE_CHANNEL)
            .and_then(|c| c.as_any_mut().downcast_mut::<SleeveChannel>())
        else {
            return;
        };
        let mut hellos = Vec::new();
        while let Some((peer, message)) = channel.pop() {
            let command = match message {
                SleeveMessage::Offer(offer) => DpCommand::Offer(peer, offer),
                SleeveMessage::Heard => DpCommand::Heard(peer),
                SleeveMessage::ProbeAck(size) => DpCommand::ProbeAck(peer, size),
                SleeveMessage::FastdpHello(hello) => {
                    hellos.push((peer, hello));
                    continue;
                }
                SleeveMessage::FastdpAck(nonce) => {
                    self.fastdp.handle.send(FpCommand::Ack(peer, nonce));
                    continue;
                }
            };
            self.dataplane.handle.send(command);
        }
        for (peer, hello) in hellos {
            self.fastdp_hello(peer, hello);
        }
    }

    /// Carries a data-plane event to the control link, or records a path change.
    fn dataplane_event(&mut self, event: DpEvent) {
        let (peer, message) = match event {
            DpEvent::SendOffer { peer, offer } => (peer, SleeveMessage::Offer(offer)),
            DpEvent::SendHeard { peer } => (peer, SleeveMessage::Heard),
            DpEvent::SendProbeAck { peer, size } => (peer, SleeveMessage::ProbeAck(size)),
            DpEvent::MtuChanged { peer, mtu } => {
                info!(%peer, mtu, "path MTU to {peer}: overlay MTU {mtu}");
                self.dataplane.mtu.set_path(peer, mtu);
                return;
            }
            DpEvent::PathChanged { peer, established } => {
                if established {
                    info!(%peer, "UDP path to {peer} established");
                    self.dataplane.paths.insert(peer);
                } else {
                    warn!(%peer, "UDP path to {peer} stopped working; the connection is pending");
                    self.dataplane.paths.remove(&peer);
                }
                return;
            }
        };
        self.send_sleeve(peer, message.encode());
    }

    /// Sends a sleeve control message; without a route yet (the link is up but routes
    /// are computed a moment later) it waits in a small queue, retried on route changes.
    fn send_sleeve(&mut self, peer: PeerId, payload: Vec<u8>) {
        if !self
            .mesh
            .send_unicast(peer, SLEEVE_CHANNEL, payload.clone())
        {
            if self.dataplane.unrouted.len() == MAX_UNROUTED {
                self.dataplane.unrouted.remove(0);
            }
            self.dataplane.unrouted.push((peer, payload));
        }
    }

    fn retry_unrouted(&mut self) {
        for (peer, payload) in std::mem::take(&mut self.dataplane.unrouted) {
            if self.dataplane.known.contains_key(&peer) {
                self.send_sleeve(peer, payload);
            }
        }
    }

    fn send(&mut self, conn: ConnId, message: Vec<u8>) {
        let Some(entry) = self.links.get(&conn) else {
            return;
        };
        match entry.tx.try_send(LinkCmd::Send(message)) {
            Ok(()) => {}
            // The link task has ended; its LinkDown is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(conn = conn.0, peer = %entry.remote_id, "send queue full; closing link");
                let _ = entry.tx.try_send(LinkCmd::Close("send queue full".into()));
            }
        }
    }

    /// The mesh closed a link (and has forgotten it): tell the link task, and treat the
    /// link as gone now rather than when its task reports back.
    fn close(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(mut entry) = self.links.remove(&conn) else {
            return;
        };
        let peer = entry.remote_id;
        if reason.is_permanent() {
            warn!(conn = conn.0, %peer, "closing link to {}: {reason}", entry.addr);
            if let Some(target) = entry.target.take() {
                self.maker
                    .handle_failed(now, target, reason.to_string(), Retry::Never);
            }
        } else if matches!(reason, CloseReason::Duplicate | CloseReason::Replaced) {
            debug!(conn = conn.0, %peer, "closing link: {reason}");
        } else {
            info!(conn = conn.0, %peer, "closing link to {peer}: {reason}");
        }
        let _ = entry.tx.try_send(LinkCmd::Close(reason.to_string()));
        self.link_gone(now, entry);
    }

    fn event(&mut self, event: MeshEvent) {
        match event {
            MeshEvent::RoutesChanged => {
                let _ = self
                    .dataplane
                    .routes
                    .send(Arc::new(self.mesh.routes().clone()));
                self.retry_unrouted();
            }
            MeshEvent::ConnectionEstablished { conn, peer } => {
                if let Some(entry) = self.links.get_mut(&conn) {
                    entry.established = true;
                    info!(%peer, conn = conn.0, "connection established with {peer}");
                }
            }
            MeshEvent::PeerRemoved(peer) => info!(%peer, "peer {peer} removed from topology"),
            _ => {}
        }
    }
}

impl Owner {
    /// Persists the targets the user gave, so a restart dials them again.
    fn store_targets(&self) {
        let explicit = self
            .maker
            .targets()
            .into_iter()
            .filter(|t| t.explicit)
            .map(|t| t.addr)
            .collect();
        if self
            .store
            .send(crate::store::Write::Targets(explicit))
            .is_err()
        {
            warn!("the store thread is gone; connection targets are not persisted");
        }
    }
}
