//! One tokio task per control link: the handshake, then the encrypted record loop.
//!
//! The task owns its TCP stream and its half of the Noise session; it forwards every
//! authenticated message to the mesh owner and writes what the owner sends it. It holds
//! no mesh state. Pre-authentication work is bounded: one small read buffer, the
//! handshake's own exact-size checks, and a hard deadline.
//!
//! TCP fallback: a link also carries sealed sleeve datagrams for a neighbour whose UDP
//! path does not work, as messages that start with [`DATA_TAG`] (a byte no control
//! message starts with: those start with the wire version). They have their own
//! bounded queue, written only when no control message waits, so control is never
//! starved; a full queue drops the datagram (the data plane counts it). Received ones
//! go straight to the data plane task, bounded likewise, never to the mesh.

use crate::handle::{Input, LinkCmd, OwnerHandle};
use crate::handshakes::RefusedReason;
use gossip::budget::GossipBudget;
use gossip::handshake::{Handshake, HandshakeConfig, HandshakeError};
use gossip::identity::Identity;
use gossip::mesh::CloseReason;
use gossip::mesh::ConnId;
use gossip::node::{Event, Input as NodeInput, LinkUp};
use gossip::peer::PeerId;
use gossip::psk::Psk;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How long a dial may take before it counts as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Queue of messages waiting to be written to one link.
const LINK_QUEUE: usize = 4096;
/// Queue of sleeve datagrams (TCP fallback) waiting to be written to one link.
pub const LINK_DATA_QUEUE: usize = 256;
/// First byte of a link message that carries a sealed sleeve datagram.
pub const DATA_TAG: u8 = 0xd7;
const _: () = assert!(DATA_TAG != gossip::message::WIRE_VERSION);

/// Sealed sleeve datagrams that arrived inside a control link, with the link's
/// authenticated peer, for the data plane.
pub use crate::dataplane_driver::TcpDatagrams;

/// What every link task needs to run a handshake.
pub struct LinkContext {
    /// Our static identity.
    pub identity: Identity,
    /// The PSK, or `None` with `--no-encryption`.
    pub psk: Option<Psk>,
    /// The mesh owner.
    pub owner: OwnerHandle,
    /// `--peer-keys`: only listed keys complete a handshake.
    pub peer_keys: Option<Arc<crate::peer_keys::KeyList>>,
    /// Where received sleeve datagrams go (the data plane task).
    pub tcp_datagrams: TcpDatagrams,
    /// Received sleeve datagrams dropped because the data plane task was behind.
    /// (Shared with the API, which adds it to the report's `drops_queue_full`.)
    pub tcp_rx_dropped: Arc<AtomicU64>,
    next_conn: AtomicU64,
    /// Messages a link had to wait for, past its peer's gossip budget.
    throttled: AtomicU64,
}

impl LinkContext {
    /// A context for the links of one router.
    pub fn new(
        identity: Identity,
        psk: Option<Psk>,
        owner: OwnerHandle,
        peer_keys: Option<Arc<crate::peer_keys::KeyList>>,
        tcp_datagrams: TcpDatagrams,
    ) -> Arc<LinkContext> {
        Arc::new(LinkContext {
            identity,
            psk,
            owner,
            peer_keys,
            tcp_datagrams,
            tcp_rx_dropped: Arc::new(AtomicU64::new(0)),
            next_conn: AtomicU64::new(1),
            throttled: AtomicU64::new(0),
        })
    }

    /// Messages read late because their peer had spent its gossip budget
    /// ([`gossip::budget`]), over all links.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// The allow-list in force, if any.
    fn admitted(&self) -> Option<Arc<gossip::peer_keys::PeerKeys>> {
        self.peer_keys.as_ref().map(|l| l.current())
    }

    fn handshake_config(&self) -> HandshakeConfig<'_> {
        HandshakeConfig {
            identity: &self.identity,
            psk: self.psk.as_ref(),
            now: Instant::now(),
        }
    }
}

/// Logs a link the node closed, at a level that fits the reason.
pub fn log_close(conn: ConnId, peer: PeerId, addr: SocketAddr, reason: &CloseReason) {
    if reason.is_permanent() {
        warn!(conn = conn.0, %peer, "closing link to {addr}: {reason}");
    } else if matches!(reason, CloseReason::Duplicate | CloseReason::Replaced) {
        debug!(conn = conn.0, %peer, "closing link: {reason}");
    } else {
        info!(conn = conn.0, %peer, "closing link to {peer}: {reason}");
    }
}

/// Logs a link whose task reported it down (other node events are not logged here).
pub fn log_down(event: &Event) {
    let Event::LinkDown {
        conn,
        peer,
        established,
        duplicate,
        error,
    } = event
    else {
        return;
    };
    let error = error.as_deref().unwrap_or("closed");
    // If another link to the peer exists, the remote closed this one as the loser of a
    // duplicate race (it decided before we did): no loss.
    if *duplicate {
        debug!(%peer, conn = conn.0, "duplicate link closed by the remote: {error}");
    } else if *established {
        info!(%peer, "connection to {peer} lost: {error}");
    }
}

/// Dials `target`, runs the handshake as initiator and then the link loop.
pub async fn dial(ctx: Arc<LinkContext>, target: SocketAddr) {
    let connect = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await;
    let stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return dial_failed(&ctx, target, format!("dial tcp {target}: {e}")),
        Err(_) => return dial_failed(&ctx, target, format!("dial tcp {target}: timed out")),
    };
    let hs = Handshake::new_initiator(&ctx.handshake_config()).with_admitted(ctx.admitted());
    run(ctx, stream, target, Some(target), hs, None::<()>).await;
}

fn dial_failed(ctx: &LinkContext, target: SocketAddr, error: String) {
    debug!(%target, %error, "dial failed");
    ctx.owner
        .send(Input::Node(NodeInput::DialFailed { target, error }));
}

/// Runs the handshake as responder on an accepted stream, then the link loop. `slot`
/// is the pending-handshake slot; it is dropped (given back) as soon as the handshake ends.
pub async fn accept<S: Send + 'static>(
    ctx: Arc<LinkContext>,
    stream: TcpStream,
    remote: SocketAddr,
    slot: S,
) {
    let hs = Handshake::new_responder(&ctx.handshake_config()).with_admitted(ctx.admitted());
    run(ctx, stream, remote, None, hs, Some(slot)).await;
}

async fn run<S>(
    ctx: Arc<LinkContext>,
    mut stream: TcpStream,
    remote: SocketAddr,
    target: Option<SocketAddr>,
    hs: Handshake,
    slot: Option<S>,
) {
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::from_std(hs.deadline());
    let result = tokio::time::timeout_at(deadline, handshake(&mut stream, hs)).await;
    drop(slot);
    let (established, leftover) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return handshake_failed(&ctx, remote, target, e.reason(), e.to_string()),
        Err(_) => {
            let e = "handshake did not complete within 10 s".to_string();
            return handshake_failed(&ctx, remote, target, RefusedReason::Timeout, e);
        }
    };
    let conn = ConnId(ctx.next_conn.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let (data, data_rx) = mpsc::channel(LINK_DATA_QUEUE);
    debug!(%remote, peer = %established.remote_id, conn = conn.0, "handshake complete");
    let link = LinkUp {
        conn,
        remote_id: established.remote_id,
        outbound: target.is_some(),
        addr: remote,
        target,
        encrypted: established.encrypted,
        hash: established.handshake_hash,
    };
    let peer = link.remote_id;
    ctx.owner.send_link(Input::LinkUp { link, tx, data }).await;
    let error = records(
        &mut stream,
        established.records,
        leftover,
        (conn, peer),
        &ctx,
        (rx, data_rx),
    )
    .await;
    ctx.owner
        .send_link(Input::Node(NodeInput::LinkDown { conn, error }))
        .await;
}

fn handshake_failed(
    ctx: &LinkContext,
    remote: SocketAddr,
    target: Option<SocketAddr>,
    reason: RefusedReason,
    e: String,
) {
    ctx.owner.send(Input::HandshakeRefused {
        outbound: target.is_some(),
        reason,
    });
    match target {
        Some(target) => {
            warn!(%target, "connection to {target} failed: {e}");
            ctx.owner
                .send(Input::Node(NodeInput::DialFailed { target, error: e }));
        }
        None => warn!(%remote, "refused connection from {remote}: {e}"),
    }
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
enum HandshakeFailure {
    #[error(transparent)]
    Protocol(#[from] HandshakeError),
    #[error("socket error during the handshake: {0}")]
    Io(#[from] std::io::Error),
}

impl HandshakeFailure {
    fn reason(&self) -> RefusedReason {
        match self {
            HandshakeFailure::Protocol(e) => RefusedReason::of_error(e),
            HandshakeFailure::Io(_) => RefusedReason::Closed,
        }
    }
}

/// Drives the handshake to completion; returns the session and bytes read past its end.
async fn handshake(
    stream: &mut TcpStream,
    mut hs: Handshake,
) -> Result<(gossip::handshake::Established, Vec<u8>), HandshakeFailure> {
    let mut buf = [0u8; 1024];
    loop {
        while let Some(out) = hs.poll_transmit() {
            stream.write_all(&out).await?;
        }
        if hs.is_finished() {
            return Ok((hs.finish()?, Vec::new()));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(hs.closed_error().into());
        }
        let mut data = &buf[..n];
        while !data.is_empty() && !hs.is_finished() {
            let used = hs.handle_input(data)?;
            if used == 0 {
                break;
            }
            data = &data[used..];
        }
        if hs.is_finished() {
            while let Some(out) = hs.poll_transmit() {
                stream.write_all(&out).await?;
            }
            return Ok((hs.finish()?, data.to_vec()));
        }
    }
}

/// The record loop: decrypt what arrives, encrypt what the owner sends (control messages
/// before sleeve datagrams). Returns why it ended.
async fn records(
    stream: &mut TcpStream,
    mut link: gossip::record_layer::RecordLayer,
    leftover: Vec<u8>,
    (conn, peer): (ConnId, PeerId),
    ctx: &LinkContext,
    (mut rx, mut data_rx): (mpsc::Receiver<LinkCmd>, mpsc::Receiver<Vec<u8>>),
) -> Option<String> {
    let mut pending = leftover;
    let mut read_size = SMALL_READ;
    let mut framed = Vec::new();
    let mut budget = GossipBudget::default();
    loop {
        if !pending.is_empty() {
            // Each read gives one waiting datagram its turn, so a peer that keeps our
            // reads busy cannot starve our datagrams (control messages still go first).
            if let Ok(datagram) = data_rx.try_recv() {
                if let Err(e) = write_datagram(stream, &mut link, &mut framed, &datagram).await {
                    return Some(e);
                }
            }
            if let Err(e) = link.open(&pending) {
                warn!(conn = conn.0, "closing link: {e}");
                return Some(e.to_string());
            }
            pending.clear();
            // An idle link keeps a small buffer: a hundred links would otherwise hold
            // megabytes that a state exchange once needed.
            if pending.capacity() > read_size {
                pending.shrink_to(read_size);
            }
            // Waits while the owner's queue is full: no more is read meanwhile, so
            // TCP pushes back on the peer.
            while let Some(message) = link.poll_message() {
                if message.first() == Some(&DATA_TAG) {
                    let mut datagram = message;
                    datagram.remove(0);
                    if ctx.tcp_datagrams.try_send((peer, datagram)).is_err() {
                        ctx.tcp_rx_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                // Past the peer's gossip budget: read on only after the debt is paid.
                if let Some(wait) = budget.charge(Instant::now(), message.len()) {
                    ctx.throttled.fetch_add(1, Ordering::Relaxed);
                    if budget.throttled() == 1 {
                        warn!(
                            conn = conn.0,
                            "peer sends more than {} KiB/s of gossip; slowing this link \
                             (counted in weft_gossip_throttled_total; logged once per link)",
                            gossip::budget::DEFAULT_RATE / 1024
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
                ctx.owner.message(conn, message).await;
            }
        }
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(LinkCmd::Send(message)) => {
                    let sealed = match link.seal(&message) {
                        Ok(s) => s,
                        Err(e) => return Some(e.to_string()),
                    };
                    if let Err(e) = stream.write_all(&sealed).await {
                        return Some(format!("write: {e}"));
                    }
                }
                Some(LinkCmd::Close(reason)) => {
                    info!(conn = conn.0, "closing link: {reason}");
                    let _ = stream.shutdown().await;
                    return Some(reason);
                }
                None => return None,
            },
            read = read_some(stream, &mut pending, read_size) => match read {
                Ok(0) => return Some("connection closed by remote".into()),
                Ok(n) => read_size = next_read_size(read_size, n),
                Err(e) => return Some(format!("read: {e}")),
            },
            Some(datagram) = data_rx.recv() => {
                if let Err(e) = write_datagram(stream, &mut link, &mut framed, &datagram).await {
                    return Some(e);
                }
            }
        }
    }
}

/// Bytes a control link reads at once while it carries control messages only.
const SMALL_READ: usize = 4096;
/// Bytes a busy control link reads at once (a state exchange, sleeve datagrams in TCP
/// fallback).
const LARGE_READ: usize = 64 * 1024;

/// Reads what has arrived, up to `size` bytes (or what `pending` has room for), onto
/// the end of `pending`. Cancel-safe, as `select!` needs.
async fn read_some(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    size: usize,
) -> io::Result<usize> {
    pending.reserve(size);
    stream.read_buf(pending).await
}

/// The read size after a read of `n` bytes with `size`: a full read doubles it (up to
/// [`LARGE_READ`]), a short one brings it back to [`SMALL_READ`].
fn next_read_size(size: usize, n: usize) -> usize {
    if n >= size {
        (size * 2).min(LARGE_READ)
    } else if n < SMALL_READ {
        SMALL_READ
    } else {
        size
    }
}

/// Seals and writes one sleeve datagram as a [`DATA_TAG`] message.
async fn write_datagram(
    stream: &mut TcpStream,
    link: &mut gossip::record_layer::RecordLayer,
    framed: &mut Vec<u8>,
    datagram: &[u8],
) -> Result<(), String> {
    framed.clear();
    framed.push(DATA_TAG);
    framed.extend_from_slice(datagram);
    let sealed = link.seal(framed).map_err(|e| e.to_string())?;
    stream
        .write_all(&sealed)
        .await
        .map_err(|e| format!("write: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_reads_little_while_idle_and_more_while_busy() {
        assert_eq!(next_read_size(SMALL_READ, 120), SMALL_READ);
        // Full reads double the size, up to the large one.
        let mut size = SMALL_READ;
        for _ in 0..10 {
            size = next_read_size(size, size);
        }
        assert_eq!(size, LARGE_READ);
        // A read that is short but not small keeps it; a small one gives it back.
        assert_eq!(next_read_size(LARGE_READ, 20_000), LARGE_READ);
        assert_eq!(next_read_size(LARGE_READ, 100), SMALL_READ);
    }
}
