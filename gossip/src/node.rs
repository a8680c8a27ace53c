//! One router's control plane as one sans-IO state machine: the [`Mesh`], the
//! [`ConnectionMaker`] and the table of authenticated control links between them.
//!
//! The daemon's owner task and the simulation (`crate::sim`) both drive a [`Node`]:
//! they feed it what happened on the wire with [`Node::handle`] (links up and down,
//! decrypted messages, failed dials, targets from the user) and the clock with
//! [`Node::handle_timeout`], then drain [`Node::poll_output`] (send, close, dial, events)
//! until it is empty, and sleep until [`Node::poll_timeout`]. Nothing here reads a clock,
//! a socket or a global RNG. The application's gossip channels stay with the driver,
//! which lends them ([`Channels`]) to `handle` and `handle_timeout`.
//!
//! ```text
//!   driver ──handle(now, Input, channels), handle_timeout(now, channels)──▶ Node ──▶ Mesh, ConnectionMaker
//!   driver ◀──poll_output: Send | Close | Dial | Event──
//! ```
//!
//! The wiring that used to live in each driver lives here, once:
//! - a dialled link that authenticates tells the maker who is at its target, before the
//!   Hello exchange (a link that then loses a duplicate race must still count);
//! - a link that ends tells the maker (backoff), and a permanent close (we dialled
//!   ourselves, a twin) fails its target for good;
//! - topology changes refresh the maker's discovered targets; link changes refresh its
//!   set of connected peers; an inbound link from a peer we also target *claims* that
//!   target, so that it is not dialled a second time;
//! - every due dial becomes an [`Output::Dial`].

use crate::channel::Channels;
use crate::connection_maker::{ConnectionMaker, Retry};
use crate::mesh::{CloseReason, ConnId, Mesh, MeshEvent, MeshOutput};
use crate::peer::PeerId;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// What the driver tells the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A control link finished its handshake.
    LinkUp(LinkUp),
    /// A link ended (its task stopped, the peer closed it, the stream broke).
    LinkDown {
        /// Which link.
        conn: ConnId,
        /// Why, if known.
        error: Option<String>,
    },
    /// A decrypted message arrived on a link.
    Message {
        /// Which link.
        conn: ConnId,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A dial, or its handshake, failed.
    DialFailed {
        /// The target dialled.
        target: SocketAddr,
        /// What went wrong.
        error: String,
    },
    /// Explicit targets from the user (`weft connect`, `--peers`).
    Connect {
        /// Addresses to add.
        targets: Vec<SocketAddr>,
        /// Drop the explicit targets not in `targets` first.
        replace: bool,
    },
    /// Authentic sleeve datagrams arrived from these peers lately (the data plane's
    /// batched report): each is alive, and its link needs no heartbeat for a while
    /// ([`crate::mesh::Mesh::handle_alive`]).
    Alive {
        /// The peers heard from.
        peers: Vec<PeerId>,
    },
    /// The whole current answer of the name lookups (`--peers-from-dns`): replaces the
    /// named targets.
    Named {
        /// Every address named now.
        targets: Vec<SocketAddr>,
    },
}

/// A control link that finished its handshake; `remote_id` is authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkUp {
    /// The driver's id for the link, unique for the node's lifetime.
    pub conn: ConnId,
    /// The authenticated remote peer.
    pub remote_id: PeerId,
    /// True when we dialled.
    pub outbound: bool,
    /// Remote TCP address.
    pub addr: SocketAddr,
    /// The target we dialled, if we dialled one.
    pub target: Option<SocketAddr>,
    /// Whether the link uses the network secret.
    pub encrypted: bool,
    /// The link's handshake hash (salts the sleeve keys).
    pub hash: [u8; 32],
}

/// What the driver must do, or may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Seal `message` and send it on `conn`.
    Send {
        /// The link.
        conn: ConnId,
        /// An encoded [`crate::message::Message`].
        message: Vec<u8>,
    },
    /// Close `conn`; the node has forgotten it (a later `LinkDown` for it is ignored).
    Close {
        /// The link.
        conn: ConnId,
        /// Its authenticated peer.
        peer: PeerId,
        /// Its remote address.
        addr: SocketAddr,
        /// Why; its `Display` is the user-facing text.
        reason: CloseReason,
    },
    /// Open a control link to this address and report `LinkUp` or `DialFailed`.
    Dial(SocketAddr),
    /// Something happened.
    Event(Event),
}

/// Notable changes, for logs, the data plane and the app channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An event of the mesh (connections, topology, routes, channels).
    Mesh(MeshEvent),
    /// The driver reported a link down.
    LinkDown {
        /// The link.
        conn: ConnId,
        /// Its authenticated peer.
        peer: PeerId,
        /// Whether it had completed its Hello exchange.
        established: bool,
        /// Whether another link to the same peer remains (the remote closed this one
        /// as the loser of a duplicate race: no loss).
        duplicate: bool,
        /// Why, if known.
        error: Option<String>,
    },
}

/// One authenticated control link, as the node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The authenticated remote peer.
    pub peer: PeerId,
    /// Remote TCP address.
    pub addr: SocketAddr,
    /// The target this link serves: the one we dialled, or the one an inbound link
    /// from that peer claimed.
    pub target: Option<SocketAddr>,
    /// Whether the link uses the network secret.
    pub encrypted: bool,
    /// The link's handshake hash.
    pub hash: [u8; 32],
    /// Whether its Hello exchange is done.
    pub established: bool,
}

/// One router's control plane.
pub struct Node {
    mesh: Mesh,
    maker: ConnectionMaker,
    links: BTreeMap<ConnId, Link>,
    outputs: VecDeque<Output>,
    /// The instant of the latest input, for work done while draining.
    now: Instant,
}

impl Node {
    /// A node over these machines.
    pub fn new(mesh: Mesh, maker: ConnectionMaker, now: Instant) -> Node {
        Node {
            mesh,
            maker,
            links: BTreeMap::new(),
            outputs: VecDeque::new(),
            now,
        }
    }

    /// Feeds one input; what a message holds for the application's channels goes to
    /// `channels`.
    pub fn handle(&mut self, now: Instant, input: Input, channels: &mut dyn Channels) {
        self.now = now;
        match input {
            Input::LinkUp(LinkUp {
                conn,
                remote_id,
                outbound,
                addr,
                target,
                encrypted,
                hash,
            }) => {
                if let Some(target) = target {
                    self.maker.handle_connected(now, target, remote_id);
                }
                let link = Link {
                    peer: remote_id,
                    addr,
                    target,
                    encrypted,
                    hash,
                    established: false,
                };
                self.links.insert(conn, link);
                self.mesh
                    .handle_link_up(now, conn, remote_id, outbound, addr);
            }
            Input::LinkDown { conn, error } => {
                if let Some(link) = self.links.remove(&conn) {
                    let duplicate = self.links.values().any(|l| l.peer == link.peer);
                    self.push_event(Event::LinkDown {
                        conn,
                        peer: link.peer,
                        established: link.established,
                        duplicate,
                        error,
                    });
                    self.link_gone(now, link);
                }
                self.mesh.handle_link_down(now, conn);
            }
            Input::Message { conn, bytes } => {
                if self.links.contains_key(&conn) {
                    self.mesh.handle_message(now, conn, &bytes, channels);
                }
            }
            Input::DialFailed { target, error } => {
                self.maker.handle_failed(now, target, error, Retry::Later);
            }
            Input::Connect { targets, replace } => {
                self.maker.add_targets(now, &targets, replace);
            }
            Input::Named { targets } => self.maker.set_named(now, &targets),
            Input::Alive { peers } => {
                for peer in &peers {
                    self.mesh.handle_alive(now, peer);
                }
            }
        }
        self.drain();
    }

    /// Fires every expired deadline (gossip rounds read the digests of `channels`).
    pub fn handle_timeout(&mut self, now: Instant, channels: &dyn Channels) {
        self.now = now;
        self.mesh.handle_timeout(now, channels);
        self.drain();
    }

    /// When to call [`Node::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.mesh.poll_timeout(), self.maker.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next thing to do, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() {
            self.drain();
        }
        self.outputs.pop_front()
    }

    /// Broadcasts a locally applied delta of channel `name` (see [`Mesh::broadcast`]).
    pub fn broadcast(&mut self, now: Instant, name: &str, update: Vec<u8>) {
        self.now = now;
        self.mesh.broadcast(now, name, update);
    }

    /// Sends `payload` to channel `name` on peer `dest`; `false` if there is no route.
    pub fn send_unicast(&mut self, dest: PeerId, name: &str, payload: Vec<u8>) -> bool {
        self.mesh.send_unicast(dest, name, payload)
    }

    /// Forgets targets; returns how many were known.
    pub fn forget(&mut self, targets: &[SocketAddr]) -> usize {
        self.maker.forget(targets)
    }

    /// The mesh (topology, routes, connections, channels).
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The mesh, mutably.
    pub fn mesh_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    /// The connection maker (targets).
    pub fn maker(&self) -> &ConnectionMaker {
        &self.maker
    }

    /// Every authenticated link, by id.
    pub fn links(&self) -> &BTreeMap<ConnId, Link> {
        &self.links
    }

    /// Applies the mesh's outputs, keeps the maker informed and collects due dials.
    fn drain(&mut self) {
        let now = self.now;
        let mut topology_changed = false;
        let mut links_changed = false;
        while let Some(out) = self.mesh.poll_output() {
            match out {
                MeshOutput::Send { conn, message } => {
                    self.outputs.push_back(Output::Send { conn, message })
                }
                MeshOutput::Close { conn, reason } => {
                    links_changed = true;
                    self.close(now, conn, reason);
                }
                MeshOutput::Event(event) => {
                    match &event {
                        MeshEvent::ConnectionEstablished { conn, .. } => {
                            if let Some(link) = self.links.get_mut(conn) {
                                link.established = true;
                            }
                            links_changed = true;
                        }
                        MeshEvent::ConnectionLost { .. } => links_changed = true,
                        MeshEvent::TopologyChanged => topology_changed = true,
                        _ => {}
                    }
                    self.push_event(Event::Mesh(event));
                }
            }
        }
        if topology_changed {
            let candidates = self.mesh.discovery_candidates();
            self.maker.set_discovered(now, &candidates);
        }
        if topology_changed || links_changed {
            self.claim_targets(now);
        }
        if links_changed {
            let connected: Vec<PeerId> = self
                .links
                .values()
                .filter(|l| l.established)
                .map(|l| l.peer)
                .collect();
            self.maker.set_connected_peers(&connected);
        }
        while let Some(target) = self.maker.poll_dial(now) {
            self.outputs.push_back(Output::Dial(target));
        }
    }

    /// The mesh closed a link (and has forgotten it): so does the node, now rather than
    /// when the driver reports it down.
    fn close(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(mut link) = self.links.remove(&conn) else {
            return;
        };
        if reason.is_permanent() {
            if let Some(target) = link.target.take() {
                self.maker
                    .handle_failed(now, target, reason.to_string(), Retry::Never);
            }
        }
        self.outputs.push_back(Output::Close {
            conn,
            peer: link.peer,
            addr: link.addr,
            reason,
        });
        self.link_gone(now, link);
    }

    /// What the end of an authenticated link means for the connection maker.
    fn link_gone(&mut self, now: Instant, link: Link) {
        if let Some(target) = link.target {
            self.maker.handle_disconnected(now, target, link.peer);
        }
    }

    /// An inbound link satisfies our target at that peer's listen address. Without this,
    /// a target whose first dial failed (the peer was not up yet) is dialled again even
    /// though the peer has connected to us, and the duplicate displaces the working link.
    /// The peer's listen port comes with its topology record, which may arrive after the
    /// link is established: so this runs whenever links or the topology change.
    fn claim_targets(&mut self, now: Instant) {
        for link in self.links.values_mut() {
            if link.target.is_some() || !link.established {
                continue;
            }
            let Some(port) = self
                .mesh
                .topology()
                .peer(&link.peer)
                .map(|r| r.listen_port())
            else {
                continue;
            };
            let addr = SocketAddr::new(link.addr.ip(), port);
            if self.maker.has_target(&addr) {
                self.maker.handle_connected(now, addr, link.peer);
                link.target = Some(addr);
            }
        }
    }

    fn push_event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }
}

#[cfg(test)]
mod tests;
