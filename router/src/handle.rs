//! The owner's handle: what link tasks, the listener and the API tell or ask the owner
//! task ([`Input`]), and what the owner tells a link task ([`LinkCmd`]). Queries carry a
//! oneshot for the answer.
//!
//! Two queues lead to the owner. What a link carries (its `LinkUp`, its messages, its
//! `LinkDown`, in that order) goes through the **link queue**, which is bounded twice:
//! at most [`OWNER_LINK_QUEUE`] inputs, and at most [`OWNER_QUEUE_BYTES`] bytes of
//! messages. A link task waits for room ([`OwnerHandle::message`]), so it stops reading
//! its socket and TCP pushes back on the peer: a fast or hostile peer costs bounded
//! memory, not an ever-growing queue. Everything else (the API, the listener's refusals,
//! DNS answers, the store) is the **control queue**, unbounded but fed only by local
//! tasks at a rate they bound themselves; the owner reads it first.
//!
//! It sits apart from [`crate::owner`] so that the modules that talk to the owner
//! (`links`, `listener`, `api`) and the owner itself depend on it, not on each other.

use crate::ipam::PersistSeq;
use crate::ipam_driver::{Answer, IpamFailure, IpamOp, Removal};
use crate::status::Report;
use gossip::mesh::ConnId;
use gossip::node::{Input as NodeInput, LinkUp};
use gossip::peer::PeerId;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// A command for a link task.
#[derive(Debug)]
pub enum LinkCmd {
    /// Seal and write this message.
    Send(Vec<u8>),
    /// Close the link, for this reason.
    Close(String),
}

/// Sends `message` on a link. A full queue means the peer does not keep up: the link
/// is closed (its `LinkDown` follows); a closed one has ended (its `LinkDown` is on the way).
pub fn send_to_link(tx: &mpsc::Sender<LinkCmd>, conn: ConnId, message: Vec<u8>) {
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(LinkCmd::Send(message)) {
        warn!(conn = conn.0, "send queue full; closing link");
        let _ = tx.try_send(LinkCmd::Close("send queue full".into()));
    }
}

/// Everything the owner can be told or asked.
#[derive(Debug)]
pub enum Input {
    /// A link finished its handshake; `link.remote_id` is authenticated.
    LinkUp {
        /// The link, as the node takes it.
        link: LinkUp,
        /// Where to send link commands.
        tx: mpsc::Sender<LinkCmd>,
        /// The link's own bounded queue of sealed sleeve datagrams (TCP fallback),
        /// written after every control message waiting.
        data: mpsc::Sender<Vec<u8>>,
    },
    /// What the control plane takes as it is: a link down, a message on a link, a
    /// failed dial, targets from `weft connect`.
    Node(NodeInput),
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
    Ipam(IpamOp),
    /// The store committed this IPAM snapshot.
    IpamPersisted(PersistSeq),
    /// A good answer for a `--peers-from-dns` name (this host's addresses left out).
    DnsAnswer {
        /// The name.
        name: crate::dns_peers::DnsName,
        /// Its addresses.
        ips: Vec<std::net::IpAddr>,
    },
    /// `--peer-keys` (at start or reloaded): the listed peers' ids.
    PeerKeys(std::collections::BTreeSet<PeerId>),
    /// A reclaim ([`crate::reclaim`]) of `dead`'s space ended.
    Reclaimed {
        /// The departed peer.
        dead: PeerId,
        /// How it ended.
        result: Result<Removal, IpamFailure>,
    },
}

/// The most inputs waiting in the link queue (link ups, messages, link downs).
pub const OWNER_LINK_QUEUE: usize = 1024;
/// The most message bytes waiting in the link queue: 16 of the largest messages
/// (`gossip::record_layer::MAX_MESSAGE_LEN`), or thousands of usual ones.
pub const OWNER_QUEUE_BYTES: usize = 16 << 20;

/// An input from a link, with the share of [`OWNER_QUEUE_BYTES`] it holds until the
/// owner has handled it.
#[derive(Debug)]
pub struct Queued {
    /// The input.
    pub input: Input,
    /// Its bytes of the budget, given back when dropped.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// The owner's ends of its two queues.
#[derive(Debug)]
pub struct OwnerQueues {
    /// The control queue.
    pub control: mpsc::UnboundedReceiver<Input>,
    /// The link queue.
    pub links: mpsc::Receiver<Queued>,
}

/// A cheap, cloneable way to reach the owner.
#[derive(Clone, Debug)]
pub struct OwnerHandle {
    tx: mpsc::UnboundedSender<Input>,
    links: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
}

impl OwnerHandle {
    /// Sends an input on the control queue; if the owner is gone the router is stopping
    /// and it is dropped.
    pub fn send(&self, input: Input) {
        let _ = self.tx.send(input);
    }

    /// Sends a link's input (its `LinkUp` or `LinkDown`) on the link queue, after the
    /// messages queued before it; waits while the queue is full.
    pub async fn send_link(&self, input: Input) {
        let _ = self
            .links
            .send(Queued {
                input,
                permit: None,
            })
            .await;
    }

    /// Queues a message from link `conn`, waiting while the queue holds
    /// [`OWNER_LINK_QUEUE`] inputs or [`OWNER_QUEUE_BYTES`] bytes (back-pressure: the
    /// link reads no more meanwhile).
    pub async fn message(&self, conn: ConnId, bytes: Vec<u8>) {
        let want = bytes.len().clamp(1, OWNER_QUEUE_BYTES);
        let Ok(permit) = self.bytes.clone().acquire_many_owned(want as u32).await else {
            return;
        };
        let input = Input::Node(NodeInput::Message { conn, bytes });
        let permit = Some(permit);
        let _ = self.links.send(Queued { input, permit }).await;
    }

    /// Message bytes waiting for the owner now (for status and tests).
    pub fn queued_bytes(&self) -> usize {
        OWNER_QUEUE_BYTES - self.bytes.available_permits()
    }

    /// Whether the owner is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Asks for a status snapshot.
    pub async fn report(&self) -> Option<Report> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Report(tx));
        rx.await.ok()
    }

    /// Runs the IPAM request `op` makes with its answer channel to completion; `None` if
    /// the router is stopping.
    pub async fn ipam<T>(
        &self,
        op: impl FnOnce(Answer<T>) -> IpamOp,
    ) -> Option<Result<T, IpamFailure>> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Ipam(op(tx)));
        rx.await.ok()
    }
}

/// Creates the owner's queues; the owner itself starts with [`crate::owner::Owner::run`]
/// once the link context (which needs the handle) exists.
pub fn channel() -> (OwnerHandle, OwnerQueues) {
    let (tx, control) = mpsc::unbounded_channel();
    let (links_tx, links) = mpsc::channel(OWNER_LINK_QUEUE);
    let handle = OwnerHandle {
        tx,
        links: links_tx,
        bytes: Arc::new(Semaphore::new(OWNER_QUEUE_BYTES)),
    };
    (handle, OwnerQueues { control, links })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A link that sends faster than the owner reads waits once the byte budget is
    /// spent, instead of growing the queue; it goes on as the owner takes messages.
    #[tokio::test]
    async fn a_full_queue_makes_the_link_wait() {
        let (handle, mut queues) = channel();
        let big = OWNER_QUEUE_BYTES / 4;
        let sender = handle.clone();
        let link = tokio::spawn(async move {
            for _ in 0..8 {
                sender.message(ConnId(1), vec![0; big]).await;
            }
        });
        // Four fit; the fifth waits.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!link.is_finished(), "the link did not wait");
        assert_eq!(handle.queued_bytes(), OWNER_QUEUE_BYTES);
        assert_eq!(queues.links.len(), 4);
        // The owner handles them (dropping each permit): the link finishes.
        for _ in 0..8 {
            let q = queues.links.recv().await.expect("a message");
            assert!(matches!(q.input, Input::Node(NodeInput::Message { .. })));
        }
        link.await.unwrap();
        assert_eq!(handle.queued_bytes(), 0);
        // The count bound holds for small messages too.
        let sender = handle.clone();
        let small = tokio::spawn(async move {
            for _ in 0..OWNER_LINK_QUEUE + 1 {
                sender.message(ConnId(2), vec![1]).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!small.is_finished());
        assert_eq!(queues.links.len(), OWNER_LINK_QUEUE);
        queues.links.recv().await.unwrap();
        small.await.unwrap();
    }
}
