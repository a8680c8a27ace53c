//! The owner's handle: what link tasks, the listener and the API tell or ask the owner
//! task ([`Input`], over an unbounded mpsc), and what the owner tells a link task
//! ([`LinkCmd`]). Queries carry a oneshot for the answer.
//!
//! It sits apart from [`crate::owner`] so that the modules that talk to the owner
//! (`links`, `listener`, `api`) and the owner itself depend on it, not on each other.

use crate::ipam::PersistSeq;
use crate::ipam_driver::{IpamOp, IpamResult};
use crate::status::Report;
use gossip::mesh::ConnId;
use gossip::node::{Input as NodeInput, LinkUp};
use gossip::peer::PeerId;
use std::net::SocketAddr;
use tokio::sync::{mpsc, oneshot};
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
    Ipam {
        /// What to do.
        op: IpamOp,
        /// Reply channel.
        reply: oneshot::Sender<IpamResult>,
    },
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
        result: IpamResult,
    },
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

    /// Runs an IPAM request to completion; `None` if the router is stopping.
    pub async fn ipam(&self, op: IpamOp) -> Option<IpamResult> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Ipam { op, reply: tx });
        rx.await.ok()
    }
}

/// Creates the owner's channel; the owner itself starts with [`crate::owner::Owner::run`]
/// once the link context (which needs the handle) exists.
pub fn channel() -> (OwnerHandle, mpsc::UnboundedReceiver<Input>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (OwnerHandle { tx }, rx)
}
