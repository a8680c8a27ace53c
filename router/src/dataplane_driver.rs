//! The data-plane threads: the owners of the TAP device's queues and the sleeve
//! sockets, sharing one [`Dataplane`].
//!
//! Each thread ([`DataplaneThread`]; the first also takes the commands, the timer tick
//! and the datagrams that arrive inside control links) owns one queue of
//! the TAP device and one UDP socket on the sleeve port (`SO_REUSEPORT`), and waits on
//! them itself, in `poll(2)`, with its [`Woken`] end: what the rest of the router sends
//! it (commands, routes, control-link datagrams) goes through channels, and a [`Wake`]
//! makes it look (see [`crate::wake`]). Not through tokio: on pings, the runtime's
//! machinery (the reactor's turn and park, waking the task, a `select!` that polls every
//! input's future on each turn) was some 9 % of the routers' CPU; without it the two
//! routers spend about 35 µs less per ping and the median round trip is about a tenth
//! shorter (docs/performance.md). The kernel
//! hands each flow's frames to one TAP queue, and each sender's datagrams to one
//! socket, so a flow is handled on one thread, in order. The [`Dataplane`] (sessions,
//! counters, replay windows, the switch) is shared behind one lock, held for the
//! bookkeeping only: a thread frames the datagrams of a batch under the lock, then
//! lets go of it and encrypts them ([`TxBuffer::deferring_encryption`]) and sends them
//! while the others go on; it checks a received run's headers under the lock, decrypts
//! the run without it ([`Decryption`]), and takes it again for the replay marks and the
//! switching. Counters (nonces) are taken under the lock, so they stay unique; the
//! receiver's replay window tolerates the reordering between threads, and a counter
//! marked by another thread while a datagram was decrypted is refused as a replay.
//!
//! Each wake-up drains what is queued (up to a batch) before sending: frames that
//! queued up share datagrams, and the datagrams for one peer leave in one GSO call
//! ([`SleeveSocket`]); received runs arrive in one GRO call. When the socket's buffer is
//! full, the rest of the batch waits for it and that queue of the TAP device is not
//! read meanwhile, so back-pressure reaches the senders instead of datagrams being
//! dropped. Routes arrive as `Arc` snapshots through a `watch` channel and are kept
//! locally between changes; counters are read by asking the first thread.
//!
//! Offloads: when the TAP device hands over a `virtio_net_hdr` ([`OffloadMode`]), each
//! read goes to the data plane whole (a TCP superframe is cut into segments there), and
//! received frames go through each queue's [`Coalescer`], which writes runs of one TCP
//! (or UDP) flow as one superframe; it is flushed after each batch of received
//! datagrams.
//!
//! Path MTU: the sleeve sockets send with DF (set where they are made, in the daemon).
//! A send refused with `EMSGSIZE` tells the data plane that path is narrower than it
//! thought; ICMP "too big" replies the data plane builds go back out of the TAP device.

use crate::wake::{self, Wake, Woken};
use datapath::dataplane::fallback::FallbackReason;
use datapath::dataplane::{Counters, Dataplane, Decryption, Event, TxBuffer, TICK};
use datapath::flow::queue_for;
use datapath::offload::coalesce::{Coalescer, MAX_SUPERFRAME};
use datapath::offload::vnet::VNET_HDR_LEN;
use datapath::sleeve::keys::RekeyOffer;
use datapath::tap::{OffloadMode, Tap, TapQueue, TapWriter};
use datapath::udp::{SleeveSocket, GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use gossip::peer::PeerId;
use gossip::routes::Routes;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

/// Frames or datagrams handled per wake-up before the batch is sent.
const BATCH: usize = 64;
/// Largest datagram read.
const MAX_PACKET: usize = 65_535;

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
    /// Data-plane threads, each with its queue of the TAP device and its socket.
    pub queues: usize,
}

/// A cheap handle to the data plane, for commands.
#[derive(Clone, Debug)]
pub struct DataplaneHandle {
    tx: mpsc::UnboundedSender<Command>,
    wake: Wake,
}

impl DataplaneHandle {
    /// Sends a command; dropped if the data plane is gone (the router is stopping).
    pub fn send(&self, command: Command) {
        if self.tx.send(command).is_ok() {
            self.wake.wake();
        }
    }

    /// Asks for the counters.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx));
        rx.await.ok()
    }
}

/// Where the routes go: every data-plane thread, each woken to take them. Dropping it
/// stops the threads (the router is stopping).
#[derive(Debug)]
pub struct RoutesSender {
    tx: Option<watch::Sender<Arc<Routes>>>,
    wakes: Vec<Wake>,
}

impl RoutesSender {
    /// Hands every thread `routes`.
    pub fn send(&self, routes: Arc<Routes>) {
        if let Some(tx) = &self.tx {
            tx.send_replace(routes);
        }
        self.wakes.iter().for_each(Wake::wake);
    }
}

impl Drop for RoutesSender {
    fn drop(&mut self) {
        // Closed first, so that the threads woken see it closed.
        drop(self.tx.take());
        self.wakes.iter().for_each(Wake::wake);
    }
}

/// Where control links hand the sleeve datagrams they carry (TCP fallback): a bounded
/// queue to the first data-plane thread, which each datagram wakes.
#[derive(Clone, Debug)]
pub struct TcpDatagrams {
    tx: mpsc::Sender<(PeerId, Vec<u8>)>,
    wake: Wake,
}

impl TcpDatagrams {
    /// Queues `peer`'s datagram; refused when the queue is full (or gone).
    pub fn try_send(&self, item: (PeerId, Vec<u8>)) -> Result<(), TrySendError<(PeerId, Vec<u8>)>> {
        self.tx.try_send(item)?;
        self.wake.wake();
        Ok(())
    }
}

/// What the data-plane threads share, behind one lock.
struct Shared {
    dp: Dataplane,
    /// Each neighbour's control-link queue, for its TCP fallback.
    tcp_links: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    tcp_link_drops: u64,
}

/// Takes the lock. A thread that panicked while holding it ends the router (the
/// threads are essential tasks), so a poisoned lock is only ever seen on the way out.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one queue counts, read by the first thread for [`Stats`].
#[derive(Debug, Default)]
struct QueueCounts {
    tap_drops: AtomicU64,
    udp_drops: AtomicU64,
    udp_too_big: AtomicU64,
    coalesced: AtomicU64,
    coalesced_segments: AtomicU64,
}

/// Every queue of the TAP device, for writing: a received frame goes out on its flow's
/// queue ([`datapath::flow`]), so that the frames the pod sends back in that flow are
/// read by the same thread.
struct Writers {
    all: Vec<TapWriter>,
}

impl Writers {
    /// The writer for `frame`'s flow; a frame with no flow goes on queue `own`.
    fn for_frame(&self, frame: &[u8], own: usize) -> &TapWriter {
        let q = queue_for(frame, self.all.len()).unwrap_or(own);
        &self.all[q.min(self.all.len() - 1)]
    }
}

/// One queue of the TAP device, its sleeve socket, and its batch.
struct Queue {
    tap: TapQueue,
    /// This queue's number, among `writers`.
    index: usize,
    writers: Arc<Writers>,
    udp: SleeveSocket,
    coalescer: Coalescer,
    /// Datagrams larger than this go out alone (the kernel fragments them; GSO may not).
    max_segment: usize,
    counts: Arc<QueueCounts>,
    tx: TxBuffer,
    /// The decryptions of one received run (kept, not reallocated per run).
    decryptions: Vec<Option<Decryption>>,
}

impl Queue {
    fn new(
        (index, tap): (usize, TapQueue),
        udp: SleeveSocket,
        writers: Arc<Writers>,
        max_segment: usize,
    ) -> Queue {
        let coalescer = if tap.takes_udp_superframes() {
            Coalescer::new()
        } else {
            Coalescer::new().without_udp()
        };
        Queue {
            tap,
            index,
            writers,
            udp,
            coalescer,
            max_segment,
            counts: Arc::default(),
            tx: TxBuffer::new(8 * 1024 * 1024, 16 * BATCH).deferring_encryption(),
            decryptions: Vec::with_capacity(GSO_MAX_SEGMENTS),
        }
    }

    /// Handles `first` (the result of a TAP read into `frame`) and up to a batch more.
    fn read_tap(
        &mut self,
        shared: &Mutex<Shared>,
        routes: &Routes,
        frame: &mut [u8],
        first: io::Result<usize>,
    ) {
        let now = Instant::now();
        let vnet_hdr = self.tap.mode().vnet_hdr();
        let mut s = lock(shared);
        let (tap, tx) = (&self.tap, &mut self.tx);
        read_batch(
            frame,
            first,
            |b| tap.try_recv(b),
            |f| {
                s.dp.handle_tap_read(now, f, vnet_hdr, routes, tx);
                if tx.is_nearly_full() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        // ICMP "too big" replies, back to the containers.
        let tap = &self.tap;
        let drops = &self.counts.tap_drops;
        s.dp.poll_local_frames(&mut |f| {
            if tap.try_send(f).is_err() {
                drops.fetch_add(1, Relaxed);
            }
        });
    }

    /// Receives up to a batch of datagrams (each GRO run counts once) and handles them.
    fn receive(&mut self, shared: &Mutex<Shared>, routes: &Routes, buf: &mut [u8]) {
        let now = Instant::now();
        let vnet_hdr = self.tap.mode().vnet_hdr();
        for _ in 0..BATCH {
            let r = match self.udp.try_recv(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("reading the UDP socket: {e}");
                    break;
                }
            };
            {
                let (writers, own) = (&*self.writers, self.index);
                let drops = &self.counts.tap_drops;
                let coalescer = &mut self.coalescer;
                let mut deliver = |f: &[u8]| {
                    if vnet_hdr {
                        coalescer.push(f, &mut |h, f| {
                            if writers.for_frame(f, own).try_send_vnet(h, f).is_err() {
                                drops.fetch_add(1, Relaxed);
                            }
                        });
                    } else if writers.for_frame(f, own).try_send(f).is_err() {
                        drops.fetch_add(1, Relaxed);
                    }
                };
                let segment = r.segment.max(1);
                let datagrams = &mut buf[..r.len];
                // The checks before decryption, under the lock (an empty datagram is
                // counted as malformed like any other short one)...
                let jobs = &mut self.decryptions;
                {
                    let mut s = lock(shared);
                    if r.len == 0 {
                        s.dp.prepare_datagram(now, &[]);
                    }
                    for d in datagrams.chunks(segment) {
                        jobs.push(s.dp.prepare_datagram(now, d));
                    }
                }
                // ...the decryption without it, while the other threads go on...
                for (d, job) in datagrams.chunks_mut(segment).zip(jobs.iter_mut()) {
                    if let Some(job) = job {
                        job.run(d);
                    }
                }
                // ...and the rest (replay mark, switching, delivery) under it again.
                let mut s = lock(shared);
                let tx = &mut self.tx;
                for (d, job) in datagrams.chunks_mut(segment).zip(jobs.drain(..)) {
                    if let Some(job) = job {
                        s.dp.handle_decrypted(now, r.from, job, d, routes, tx, &mut deliver);
                    }
                }
                if self.tx.is_nearly_full() {
                    s.dp.flush(&mut self.tx);
                } else {
                    continue;
                }
            }
            self.send(shared);
            if !self.tx.is_empty() {
                break;
            }
        }
        let (writers, own) = (&*self.writers, self.index);
        let drops = &self.counts.tap_drops;
        self.coalescer.flush(&mut |h, f| {
            if writers.for_frame(f, own).try_send_vnet(h, f).is_err() {
                drops.fetch_add(1, Relaxed);
            }
        });
        let c = &self.counts;
        c.coalesced.store(self.coalescer.merged, Relaxed);
        c.coalesced_segments
            .store(self.coalescer.merged_segments, Relaxed);
    }

    /// The end of a wake-up: seals what is staged, hands events and TCP-fallback
    /// datagrams on (under the lock), then encrypts and sends the batch (without it).
    fn finish(&mut self, shared: &Mutex<Shared>, events: &mpsc::UnboundedSender<Event>) {
        {
            let mut s = lock(shared);
            s.dp.flush(&mut self.tx);
            while let Some(event) = s.dp.poll_event() {
                let _ = events.send(event);
            }
            s.send_tcp();
        }
        self.send(shared);
    }

    /// Encrypts what is framed and sends what is queued, one run per call. Stops at a
    /// full socket buffer, leaving the rest queued for when it drains; a datagram the
    /// kernel refuses is dropped and counted.
    fn send(&mut self, shared: &Mutex<Shared>) {
        // `next_run` encrypts what is still framed first; this runs without the lock.
        while let Some((to, bytes, segment, count)) =
            self.tx
                .next_run(GSO_MAX_SEGMENTS, GSO_MAX_BYTES, self.max_segment)
        {
            match self.udp.try_send_run(to, bytes, segment, count) {
                Ok(0) => return,
                Ok(sent) => self.tx.advance(sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.send_failed(shared, to, segment, &e);
                    self.tx.advance(1);
                }
            }
        }
    }

    /// Counts a failed send; `EMSGSIZE` (the datagram is larger than the local link or
    /// the path allows) goes to path MTU discovery.
    fn send_failed(&self, shared: &Mutex<Shared>, to: SocketAddr, len: usize, e: &io::Error) {
        if e.raw_os_error() == Some(nix::libc::EMSGSIZE) {
            self.counts.udp_too_big.fetch_add(1, Relaxed);
            lock(shared).dp.handle_send_too_big(Instant::now(), to, len);
        } else {
            self.counts.udp_drops.fetch_add(1, Relaxed);
        }
    }
}

impl Shared {
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
}

/// One data-plane thread: a queue of the TAP device with its socket, and for the first
/// thread (its `Lead`) also the commands, the timer tick and the datagrams from control
/// links.
pub struct DataplaneThread {
    shared: Arc<Mutex<Shared>>,
    queue: Queue,
    routes: watch::Receiver<Arc<Routes>>,
    events: mpsc::UnboundedSender<Event>,
    /// Readable while news waits in the channels (or the routes).
    woken: Woken,
    /// Its other end, for news left after a batch.
    wake: Wake,
    lead: Option<Lead>,
}

/// What only the first thread does.
struct Lead {
    commands: mpsc::UnboundedReceiver<Command>,
    /// Sleeve datagrams that came inside control links, with the link's peer.
    tcp_in: mpsc::Receiver<(PeerId, Vec<u8>)>,
    /// Every queue's counts, this one's first.
    counts: Vec<Arc<QueueCounts>>,
    /// The other threads, until the daemon starts them.
    others: Vec<DataplaneThread>,
    /// When the timers are due next.
    tick_at: Instant,
}

/// The data plane, built: its first thread (holding the others until
/// [`DataplaneThread::take_others`]), and the ways in for the rest of the router.
pub struct Built {
    /// The first thread.
    pub first: DataplaneThread,
    /// Commands.
    pub handle: DataplaneHandle,
    /// The routes, to every thread.
    pub routes: RoutesSender,
    /// Sleeve datagrams that control links carry (TCP fallback).
    pub tcp_datagrams: TcpDatagrams,
}

/// Builds the data-plane threads: one per TAP queue, each with its socket (`queues`
/// pairs them up; there must be at least one). Each queue and socket leaves tokio's
/// reactor here, for the thread that will wait on it. `events` carries what the
/// control link must send; `routes` starts as `initial`.
pub fn new(
    dp: Dataplane,
    queues: Vec<(Tap, UdpSocket)>,
    initial: Arc<Routes>,
    events: mpsc::UnboundedSender<Event>,
    max_segment: usize,
) -> io::Result<Built> {
    if queues.is_empty() {
        return Err(io::Error::other(
            "the data plane needs at least one TAP queue",
        ));
    }
    let shared = Arc::new(Mutex::new(Shared {
        dp,
        tcp_links: HashMap::new(),
        tcp_link_drops: 0,
    }));
    let queues = queues
        .into_iter()
        .map(|(tap, udp)| Ok((tap.into_queue(), SleeveSocket::new(udp.into_std()?)?)))
        .collect::<io::Result<Vec<_>>>()?;
    let writers = Arc::new(Writers {
        all: queues
            .iter()
            .map(|(tap, _)| tap.writer())
            .collect::<io::Result<_>>()?,
    });
    let (routes_tx, routes_rx) = watch::channel(initial);
    let mut wakes = Vec::new();
    let mut threads = Vec::new();
    for (i, (tap, udp)) in queues.into_iter().enumerate() {
        let (wake, woken) = wake::pair()?;
        wakes.push(wake.clone());
        threads.push(DataplaneThread {
            shared: Arc::clone(&shared),
            queue: Queue::new((i, tap), udp, Arc::clone(&writers), max_segment),
            routes: routes_rx.clone(),
            events: events.clone(),
            woken,
            wake,
            lead: None,
        });
    }
    let counts = threads
        .iter()
        .map(|t| Arc::clone(&t.queue.counts))
        .collect();
    let mut first = threads.remove(0);
    let (tx, commands) = mpsc::unbounded_channel();
    // Bounded like a socket.
    let (tcp_tx, tcp_in) = mpsc::channel(4096);
    first.lead = Some(Lead {
        commands,
        tcp_in,
        counts,
        others: threads,
        tick_at: Instant::now() + TICK,
    });
    let lead_wake = wakes[0].clone();
    Ok(Built {
        first,
        handle: DataplaneHandle {
            tx,
            wake: lead_wake.clone(),
        },
        routes: RoutesSender {
            tx: Some(routes_tx),
            wakes,
        },
        tcp_datagrams: TcpDatagrams {
            tx: tcp_tx,
            wake: lead_wake,
        },
    })
}

/// Hands `handle` the frame `first` read into `frame`, then each frame `recv` reads,
/// until the queue is empty (`WouldBlock`), a batch is done or `handle` says stop. Every
/// frame read is handled: the next is read only when it will be. Returns how many.
fn read_batch(
    frame: &mut [u8],
    first: io::Result<usize>,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<usize>,
    mut handle: impl FnMut(&mut [u8]) -> ControlFlow<()>,
) -> usize {
    let mut n = first;
    let mut handled = 0;
    loop {
        match n {
            Ok(len) => {
                handled += 1;
                if handle(&mut frame[..len]).is_break() || handled == BATCH {
                    return handled;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return handled,
            Err(e) => {
                warn!("reading the TAP device: {e}");
                return handled;
            }
        }
        n = recv(frame);
    }
}

/// Whether a `poll` result says the descriptor has something to read (an error or a
/// hang-up too: the read then says what).
fn readable(fd: &PollFd<'_>) -> bool {
    fd.revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP))
}

impl DataplaneThread {
    /// The other threads, for the daemon to start each on a thread of its own (none
    /// but on the first thread).
    pub fn take_others(&mut self) -> Vec<DataplaneThread> {
        self.lead
            .as_mut()
            .map(|lead| std::mem::take(&mut lead.others))
            .unwrap_or_default()
    }

    /// Runs, on the calling thread, until the routes' sender is dropped (the router is
    /// stopping) or, on the first thread, the command channel closes. Blocks: call it
    /// on a thread of its own.
    pub fn run(mut self) {
        // A superframe is at most an IP packet's 64 KiB plus Ethernet; a read that does
        // not fit would fail, not shorten.
        let mut frame = vec![0u8; VNET_HDR_LEN + MAX_SUPERFRAME];
        let mut datagram = vec![0u8; MAX_PACKET];
        let mut routes = self.routes.borrow_and_update().clone();
        // Whether the last wait saw a wake (at the start, look anyway).
        let mut woken = true;
        loop {
            // News first (only a wake brings any: whoever sends one wakes), then the
            // timers, then what they (and the last wait) staged goes out.
            if woken && self.news(&mut routes).is_break() {
                return;
            }
            self.tick();
            // Until a wait says otherwise (one that was interrupted: look anyway).
            woken = true;
            self.queue.finish(&self.shared, &self.events);
            // With datagrams still queued (a full socket buffer), wait for room and read
            // no more frames meanwhile: back-pressure onto the senders.
            let blocked = !self.queue.tx.is_empty();
            let (tap_wants, udp_wants) = if blocked {
                (PollFlags::empty(), PollFlags::POLLIN | PollFlags::POLLOUT)
            } else {
                (PollFlags::POLLIN, PollFlags::POLLIN)
            };
            let timeout = match &self.lead {
                Some(lead) => {
                    let wait = lead.tick_at.saturating_duration_since(Instant::now());
                    // Rounded up, so that the tick is never early.
                    let ms = wait.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let q = &mut self.queue;
            let mut fds = [
                PollFd::new(q.tap.as_fd(), tap_wants),
                PollFd::new(q.udp.as_fd(), udp_wants),
                PollFd::new(self.woken.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Only EINVAL or ENOMEM: nothing to retry differently.
                    warn!("waiting on the TAP device and the socket: {e}");
                    continue;
                }
            }
            let (tap_ready, udp_ready) = (readable(&fds[0]), readable(&fds[1]));
            woken = readable(&fds[2]);
            if tap_ready {
                let first = q.tap.try_recv(&mut frame);
                if !matches!(&first, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                    q.read_tap(&self.shared, &routes, &mut frame, first);
                }
            }
            if udp_ready {
                q.receive(&self.shared, &routes, &mut datagram);
            }
        }
    }

    /// Takes what a wake announced: new routes (`Break` when the router stops), and on
    /// the first thread the commands and the control links' datagrams.
    fn news(&mut self, routes: &mut Arc<Routes>) -> ControlFlow<()> {
        self.woken.drain();
        match self.routes.has_changed() {
            Err(_) => return ControlFlow::Break(()),
            Ok(false) => {}
            Ok(true) => {
                *routes = self.routes.borrow_and_update().clone();
                if self.lead.is_some() {
                    let full_mesh = routes.reachable().all(|p| routes.is_neighbour(&p));
                    lock(&self.shared).dp.set_flood_relay(!full_mesh);
                }
            }
        }
        let Some(lead) = self.lead.as_mut() else {
            return ControlFlow::Continue(());
        };
        let queue = &mut self.queue;
        for _ in 0..BATCH {
            match lead.commands.try_recv() {
                Ok(c) => {
                    let now = Instant::now();
                    lead.command(&self.shared, queue, now, c);
                    // A command (a new peer, an offer) may unsettle a peer, so the next
                    // tick comes within TICK of it.
                    lead.tick_at = lead.tick_at.min(now + TICK);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return ControlFlow::Break(()),
            }
        }
        if let Ok((peer, mut d)) = lead.tcp_in.try_recv() {
            lead.receive_tcp(&self.shared, queue, peer, &mut d, routes);
        }
        // More news than a batch: the next wait returns at once, after this turn's
        // sends and a look at the TAP queue and the socket.
        if !lead.commands.is_empty() || !lead.tcp_in.is_empty() {
            self.wake.wake();
        }
        ControlFlow::Continue(())
    }

    /// On the first thread, the timers when due.
    fn tick(&mut self) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now >= lead.tick_at {
            let mut s = lock(&self.shared);
            s.dp.handle_timeout(now);
            s.dp.poll_keepalives(now, &mut self.queue.tx);
            s.dp.poll_probes(now, &mut self.queue.tx);
            // The data plane says when the next is due.
            lead.tick_at = now + s.dp.tick_interval();
        }
    }
}

impl Lead {
    /// A sleeve datagram from inside `peer`'s control link, and up to a batch more.
    fn receive_tcp(
        &mut self,
        shared: &Mutex<Shared>,
        queue: &mut Queue,
        peer: PeerId,
        d: &mut [u8],
        routes: &Routes,
    ) {
        let now = Instant::now();
        let (writers, own) = (&*queue.writers, queue.index);
        let drops = &queue.counts.tap_drops;
        let mut deliver = |f: &[u8]| {
            if writers.for_frame(f, own).try_send(f).is_err() {
                drops.fetch_add(1, Relaxed);
            }
        };
        let tx = &mut queue.tx;
        let mut s = lock(shared);
        s.dp.handle_tcp_datagram(now, peer, d, routes, tx, &mut deliver);
        for _ in 1..BATCH {
            let Ok((peer, mut d)) = self.tcp_in.try_recv() else {
                break;
            };
            s.dp.handle_tcp_datagram(now, peer, &mut d, routes, tx, &mut deliver);
        }
    }

    fn command(&self, shared: &Mutex<Shared>, queue: &Queue, now: Instant, command: Command) {
        let mut s = lock(shared);
        match command {
            Command::AddPeer {
                peer,
                endpoint,
                hash,
                punched: false,
            } => s.dp.add_peer(now, peer, endpoint, hash),
            Command::AddPeer {
                peer,
                endpoint,
                hash,
                punched: true,
            } => s.dp.add_punched_peer(now, peer, endpoint, hash),
            Command::RemovePeer(peer) => s.dp.remove_peer(peer),
            Command::Offer(peer, offer) => s.dp.handle_offer(now, peer, offer),
            Command::Heard(peer) => s.dp.handle_heard(now, peer),
            Command::ProbeAck(peer, size) => s.dp.handle_probe_ack(now, peer, size),
            Command::SetFastdp(peer, on) => s.dp.set_fastdp(peer, on),
            Command::TcpLink(peer, Some(link)) => {
                s.tcp_links.insert(peer, link);
            }
            Command::TcpLink(peer, None) => {
                s.tcp_links.remove(&peer);
            }
            Command::Stats(reply) => {
                let counters = s.dp.counters();
                let established = counters
                    .peers
                    .iter()
                    .map(|(p, _)| *p)
                    .filter(|p| s.dp.is_established(p))
                    .collect();
                let sum = |f: fn(&QueueCounts) -> &AtomicU64| -> u64 {
                    self.counts.iter().map(|c| f(c).load(Relaxed)).sum()
                };
                let _ = reply.send(Stats {
                    counters,
                    established,
                    tap_drops: sum(|c| &c.tap_drops),
                    udp_drops: sum(|c| &c.udp_drops),
                    udp_too_big: sum(|c| &c.udp_too_big),
                    offload_mode: Some(queue.tap.mode()),
                    coalesced: sum(|c| &c.coalesced),
                    coalesced_segments: sum(|c| &c.coalesced_segments),
                    fallback: fallbacks(&s.dp),
                    tcp_link_drops: s.tcp_link_drops,
                    queues: self.counts.len(),
                });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of `n` frames, each one byte: its number.
    fn queue(n: u8) -> impl FnMut(&mut [u8]) -> io::Result<usize> {
        let mut next = 0u8;
        move |buf: &mut [u8]| {
            if next == n {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            buf[0] = next;
            next += 1;
            Ok(1)
        }
    }

    /// Drains `n` frames in batches, `stop_after` frames at most per batch by `handle`'s
    /// say; returns the frames in the order handled and the batch sizes.
    fn drain(n: u8, stop_after: usize) -> (Vec<u8>, Vec<usize>) {
        let mut recv = queue(n);
        let mut frame = [0u8; 4];
        let (mut seen, mut batches) = (Vec::new(), Vec::new());
        loop {
            let first = recv(&mut frame);
            if first.is_err() {
                return (seen, batches);
            }
            let mut in_batch = 0;
            let got = read_batch(&mut frame, first, &mut recv, |f| {
                seen.push(f[0]);
                in_batch += 1;
                if in_batch == stop_after {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            batches.push(got);
        }
    }

    #[test]
    fn every_frame_read_is_handled_across_full_batches() {
        // 200 frames: three full batches and a short one, none lost at a batch's end.
        let (seen, batches) = drain(200, usize::MAX);
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert_eq!(batches, vec![BATCH, BATCH, BATCH, 200 - 3 * BATCH]);
    }

    #[test]
    fn a_batch_stopped_by_its_handler_loses_nothing() {
        // The handler stops each batch after 5 (a nearly full send buffer).
        let (seen, batches) = drain(23, 5);
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        assert_eq!(batches, vec![5, 5, 5, 5, 3]);
    }
}
