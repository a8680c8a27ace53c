//! The data-plane task: the one owner of the [`Dataplane`], the TAP device and the UDP
//! socket.
//!
//! It waits on the TAP device, the socket, its command channel, route snapshots and a
//! tick. Each wake-up drains what is queued (up to a batch) before sending: frames that
//! queued up share datagrams, and the datagrams for one peer leave in one GSO call
//! ([`SleeveSocket`]); received runs arrive in one GRO call. When the socket's buffer is
//! full, the rest of the batch waits for it and the TAP device is not read meanwhile,
//! so back-pressure reaches the senders instead of datagrams being dropped. It takes no
//! lock: routes arrive as `Arc` snapshots through a `watch` channel and are kept locally
//! between changes; counters are read by asking the task.
//!
//! Offloads: when the TAP device hands over a `virtio_net_hdr` ([`OffloadMode`]), each
//! read goes to the data plane whole (a TCP superframe is cut into segments there), and
//! received frames go through a [`Coalescer`], which writes runs of one TCP (or UDP) flow as one
//! superframe; it is flushed after each batch of received datagrams.
//!
//! Path MTU: the sleeve socket sends with DF (set where it is made, in the daemon).
//! A send refused with `EMSGSIZE` tells the data plane that path is narrower than it
//! thought; ICMP "too big" replies the data plane builds go back out of the TAP device.

use datapath::dataplane::fallback::FallbackReason;
use datapath::dataplane::{Counters, Dataplane, Event, TxBuffer};
use datapath::offload::coalesce::{Coalescer, MAX_SUPERFRAME};
use datapath::offload::vnet::VNET_HDR_LEN;
use datapath::sleeve::keys::RekeyOffer;
use datapath::tap::{OffloadMode, Tap};
use datapath::udp::{SleeveSocket, GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use gossip::peer::PeerId;
use gossip::routes::Routes;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

/// Frames or datagrams handled per wake-up before the batch is sent.
const BATCH: usize = 64;
/// Largest datagram read.
const MAX_PACKET: usize = 65_535;
/// Timer tick of the data plane (rekeys, keepalives, path state).
const TICK: Duration = Duration::from_millis(250);

/// A command for the data-plane task.
#[derive(Debug)]
pub enum Command {
    /// A neighbour with an established control link, or a punched peer.
    AddPeer {
        /// The neighbour.
        peer: PeerId,
        /// Its UDP endpoint (control-link IP and announced port; for a punched peer,
        /// where the coordinator sees it).
        endpoint: SocketAddr,
        /// The control link's handshake hash (for a punched peer, the attempt's salt).
        hash: [u8; 32],
        /// Reached by hole punching, without a control link.
        punched: bool,
    },
    /// The control link to this neighbour is gone.
    RemovePeer(PeerId),
    /// A rekey offer from a neighbour.
    Offer(PeerId, RekeyOffer),
    /// A neighbour hears our datagrams.
    Heard(PeerId),
    /// A neighbour received our path MTU probe of this many bytes.
    ProbeAck(PeerId, u16),
    /// Whether a neighbour's own frames now travel by the kernel fast path.
    SetFastdp(PeerId, bool),
    /// The queue of the neighbour's control link for sleeve datagrams in TCP fallback
    /// (`None`: it has none now).
    TcpLink(PeerId, Option<mpsc::Sender<Vec<u8>>>),
    /// Read the counters and path states.
    Stats(oneshot::Sender<Stats>),
}

/// Counters and path states.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Traffic and drops.
    pub counters: Counters,
    /// Neighbours whose UDP path is established.
    pub established: Vec<PeerId>,
    /// Frames the TAP device could not take.
    pub tap_drops: u64,
    /// Datagrams the socket could not take.
    pub udp_drops: u64,
    /// Datagrams refused as larger than the path (`EMSGSIZE`).
    pub udp_too_big: u64,
    /// What the TAP device hands over and takes.
    pub offload_mode: Option<OffloadMode>,
    /// Superframes written to the TAP device by the coalescer.
    pub coalesced: u64,
    /// Segments that went into them.
    pub coalesced_segments: u64,
    /// Neighbours whose frames travel inside the control link, and why.
    pub fallback: Vec<(PeerId, FallbackReason)>,
    /// Sleeve datagrams for the TCP fallback that a link's queue could not take.
    pub tcp_link_drops: u64,
}

/// A cheap handle to the task.
#[derive(Clone, Debug)]
pub struct DataplaneHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl DataplaneHandle {
    /// Sends a command; dropped if the task is gone (the router is stopping).
    pub fn send(&self, command: Command) {
        let _ = self.tx.send(command);
    }

    /// Asks for the counters.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx));
        rx.await.ok()
    }
}

/// The task's parts, before it runs.
pub struct DataplaneTask {
    dp: Dataplane,
    tap: Tap,
    udp: SleeveSocket,
    routes: watch::Receiver<Arc<Routes>>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    tap_drops: u64,
    udp_drops: u64,
    /// Datagrams larger than this go out alone (the kernel fragments them; GSO may not).
    max_segment: usize,
    udp_too_big: u64,
    coalescer: Coalescer,
    /// Sleeve datagrams that came inside control links, with the link's peer.
    tcp_in: mpsc::Receiver<(PeerId, Vec<u8>)>,
    /// Each neighbour's control-link queue, for its TCP fallback.
    tcp_links: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    tcp_link_drops: u64,
}

/// Builds the task and its handle. `events` carries what the control link must send;
/// `tcp_in` the sleeve datagrams that arrive inside control links (TCP fallback).
pub fn new(
    dp: Dataplane,
    (tap, udp): (Tap, UdpSocket),
    routes: watch::Receiver<Arc<Routes>>,
    events: mpsc::UnboundedSender<Event>,
    tcp_in: mpsc::Receiver<(PeerId, Vec<u8>)>,
    max_segment: usize,
) -> (DataplaneTask, DataplaneHandle) {
    let (tx, commands) = mpsc::unbounded_channel();
    let coalescer = if tap.takes_udp_superframes() {
        Coalescer::new()
    } else {
        Coalescer::new().without_udp()
    };
    let task = DataplaneTask {
        dp,
        tap,
        udp: SleeveSocket::new(udp),
        routes,
        commands,
        events,
        tap_drops: 0,
        udp_drops: 0,
        max_segment,
        udp_too_big: 0,
        coalescer,
        tcp_in,
        tcp_links: HashMap::new(),
        tcp_link_drops: 0,
    };
    (task, DataplaneHandle { tx })
}

impl DataplaneTask {
    /// The task with its TAP device and socket registered with the reactor of the
    /// runtime this is called in: the daemon builds the task, then moves it to a
    /// thread of its own ([`Essential::spawn_thread`]) and calls this there.
    ///
    /// [`Essential::spawn_thread`]: crate::supervise::Essential::spawn_thread
    pub fn reregister(mut self) -> io::Result<DataplaneTask> {
        self.tap = self.tap.reregister()?;
        self.udp = self.udp.reregister()?;
        Ok(self)
    }

    /// Runs until the command channel closes.
    pub async fn run(mut self) {
        // A superframe is at most an IP packet's 64 KiB plus Ethernet; a read that does
        // not fit would fail, not shorten.
        let mut frame = vec![0u8; VNET_HDR_LEN + MAX_SUPERFRAME];
        let mut datagram = vec![0u8; MAX_PACKET];
        let vnet_hdr = self.tap.mode().vnet_hdr();
        let mut tx = TxBuffer::new(8 * 1024 * 1024, 16 * BATCH);
        let mut routes = self.routes.borrow().clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let blocked = !tx.is_empty();
            tokio::select! {
                read = self.tap.recv(&mut frame), if !blocked => {
                    let now = Instant::now();
                    let mut n = read;
                    for _ in 0..BATCH {
                        match n {
                            Ok(len) => self.dp.handle_tap_read(now, &mut frame[..len], vnet_hdr, &*routes, &mut tx),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => { warn!("reading the TAP device: {e}"); break; }
                        }
                        if tx.is_nearly_full() { break; }
                        n = self.tap.try_recv(&mut frame);
                    }
                    self.deliver_replies();
                }
                ready = self.udp.socket().readable() => {
                    if let Err(e) = ready { warn!("waiting on the UDP socket: {e}"); }
                    self.receive(&mut datagram, &routes, &mut tx);
                }
                _ = self.udp.socket().writable(), if blocked => {}
                Some((peer, mut d)) = self.tcp_in.recv() => {
                    self.receive_tcp(peer, &mut d, &routes, &mut tx);
                }
                command = self.commands.recv() => match command {
                    Some(c) => self.command(Instant::now(), c),
                    None => return,
                },
                changed = self.routes.changed() => {
                    if changed.is_err() { return; }
                    routes = self.routes.borrow_and_update().clone();
                    let full_mesh = routes.reachable().all(|p| routes.is_neighbour(&p));
                    self.dp.set_flood_relay(!full_mesh);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.dp.handle_timeout(now);
                    self.dp.poll_keepalives(now, &mut tx);
                    self.dp.poll_probes(now, &mut tx);
                }
            }
            self.dp.flush(&mut tx);
            self.send(&mut tx);
            self.send_tcp();
            while let Some(event) = self.dp.poll_event() {
                let _ = self.events.send(event);
            }
        }
    }

    /// Receives up to a batch of datagrams (each GRO run counts once) and handles them.
    fn receive(&mut self, buf: &mut [u8], routes: &Routes, tx: &mut TxBuffer) {
        let now = Instant::now();
        for _ in 0..BATCH {
            let r = match self.udp.try_recv(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("reading the UDP socket: {e}");
                    break;
                }
            };
            let tap = &self.tap;
            let drops = &mut self.tap_drops;
            let coalescer = &mut self.coalescer;
            let vnet_hdr = tap.mode().vnet_hdr();
            let mut deliver = |f: &[u8]| {
                if vnet_hdr {
                    coalescer.push(f, &mut |h, f| {
                        if tap.try_send_vnet(h, f).is_err() {
                            *drops += 1;
                        }
                    });
                } else if tap.try_send(f).is_err() {
                    *drops += 1;
                }
            };
            if r.len == 0 {
                // An empty datagram: counted as malformed like any other short one.
                self.dp
                    .handle_datagram(now, r.from, &mut [], routes, tx, &mut deliver);
            }
            for d in buf[..r.len].chunks_mut(r.segment.max(1)) {
                self.dp
                    .handle_datagram(now, r.from, d, routes, tx, &mut deliver);
            }
            if tx.is_nearly_full() {
                self.dp.flush(tx);
                self.send(tx);
                if !tx.is_empty() {
                    break;
                }
            }
        }
        let tap = &self.tap;
        let drops = &mut self.tap_drops;
        self.coalescer.flush(&mut |h, f| {
            if tap.try_send_vnet(h, f).is_err() {
                *drops += 1;
            }
        });
    }
    /// A sleeve datagram from inside `peer`'s control link, and up to a batch more.
    fn receive_tcp(&mut self, peer: PeerId, d: &mut [u8], routes: &Routes, tx: &mut TxBuffer) {
        let now = Instant::now();
        let tap = &self.tap;
        let drops = &mut self.tap_drops;
        let mut deliver = |f: &[u8]| {
            if tap.try_send(f).is_err() {
                *drops += 1;
            }
        };
        self.dp
            .handle_tcp_datagram(now, peer, d, routes, tx, &mut deliver);
        for _ in 1..BATCH {
            let Ok((peer, mut d)) = self.tcp_in.try_recv() else {
                break;
            };
            self.dp
                .handle_tcp_datagram(now, peer, &mut d, routes, tx, &mut deliver);
        }
    }

    /// Hands the datagrams of neighbours in TCP fallback to their control links; a
    /// full (or gone) link queue drops and counts.
    fn send_tcp(&mut self) {
        while let Some((peer, datagram)) = self.dp.poll_tcp() {
            let sent = self
                .tcp_links
                .get(&peer)
                .is_some_and(|link| link.try_send(datagram).is_ok());
            if !sent {
                self.tcp_link_drops += 1;
            }
        }
    }

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::AddPeer {
                peer,
                endpoint,
                hash,
                punched: false,
            } => self.dp.add_peer(now, peer, endpoint, hash),
            Command::AddPeer {
                peer,
                endpoint,
                hash,
                punched: true,
            } => self.dp.add_punched_peer(now, peer, endpoint, hash),
            Command::RemovePeer(peer) => self.dp.remove_peer(peer),
            Command::Offer(peer, offer) => self.dp.handle_offer(now, peer, offer),
            Command::Heard(peer) => self.dp.handle_heard(now, peer),
            Command::ProbeAck(peer, size) => self.dp.handle_probe_ack(now, peer, size),
            Command::SetFastdp(peer, on) => self.dp.set_fastdp(peer, on),
            Command::TcpLink(peer, Some(link)) => {
                self.tcp_links.insert(peer, link);
            }
            Command::TcpLink(peer, None) => {
                self.tcp_links.remove(&peer);
            }
            Command::Stats(reply) => {
                let counters = self.dp.counters();
                let established = counters
                    .peers
                    .iter()
                    .map(|(p, _)| *p)
                    .filter(|p| self.dp.is_established(p))
                    .collect();
                let _ = reply.send(Stats {
                    counters,
                    established,
                    tap_drops: self.tap_drops,
                    udp_drops: self.udp_drops,
                    udp_too_big: self.udp_too_big,
                    offload_mode: Some(self.tap.mode()),
                    coalesced: self.coalescer.merged,
                    coalesced_segments: self.coalescer.merged_segments,
                    fallback: fallbacks(&self.dp),
                    tcp_link_drops: self.tcp_link_drops,
                });
            }
        }
    }

    /// Sends what is queued, one run per call. Stops at a full socket buffer, leaving the
    /// rest queued for when it drains; a datagram the kernel refuses is dropped and counted.
    fn send(&mut self, tx: &mut TxBuffer) {
        while let Some((to, bytes, segment, count)) =
            tx.next_run(GSO_MAX_SEGMENTS, GSO_MAX_BYTES, self.max_segment)
        {
            match self.udp.try_send_run(to, bytes, segment, count) {
                Ok(0) => return,
                Ok(sent) => tx.advance(sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.send_failed(Instant::now(), to, segment, &e);
                    tx.advance(1);
                }
            }
        }
    }

    /// Counts a failed send; `EMSGSIZE` (the datagram is larger than the local link or
    /// the path allows) goes to path MTU discovery.
    fn send_failed(&mut self, now: Instant, to: SocketAddr, len: usize, e: &io::Error) {
        if e.raw_os_error() == Some(nix::libc::EMSGSIZE) {
            self.udp_too_big += 1;
            self.dp.handle_send_too_big(now, to, len);
        } else {
            self.udp_drops += 1;
        }
    }

    /// ICMP "too big" replies from the data plane, back to the containers.
    fn deliver_replies(&mut self) {
        let tap = &self.tap;
        let drops = &mut self.tap_drops;
        self.dp.poll_local_frames(&mut |f| {
            if tap.try_send(f).is_err() {
                *drops += 1;
            }
        });
    }
}

/// The neighbours in TCP fallback, with the reason.
fn fallbacks(dp: &Dataplane) -> Vec<(PeerId, FallbackReason)> {
    dp.counters()
        .peers
        .iter()
        .filter_map(|(p, _)| dp.fallback(p).map(|r| (*p, r)))
        .collect()
}
