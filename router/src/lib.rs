//! The weft router daemon.
//!
//! It composes the sans-IO machines of `gossip` with thin tokio tasks, each owning one
//! piece of state:
//!
//! ```text
//!  listener ──accept──▶ link task (handshake, records) ──Input──▶ owner (gossip::node::Node)
//!  owner ──dial──▶ link task            owner ──LinkCmd──▶ link task
//!  api (unix socket, status TCP) ──Input / Report query──▶ owner
//! ```
//!
//! # Layout
//! - [`config`]: the validated configuration.
//! - [`daemon`]: startup checks, task wiring, shutdown, logging.
//! - [`owner`]: the task that owns the control plane (a [`gossip::node::Node`]); a select
//!   loop that moves data between it, IPAM, the neighbours and the other tasks.
//! - [`handle`]: what the owner is told and asked ([`handle::Input`]), and its handle.
//! - [`neighbours`]: sans-IO: what the data plane knows of each neighbour (the diff it is
//!   told, fast-path hellos, messages waiting for a route).
//! - [`control_links`]: one task per control link.
//! - [`dataplane_driver`]: the data-plane threads that drive [`datapath::dataplane`]:
//!   the TAP device's queues, the sleeve sockets, sealing and opening.
//! - [`dns_peers`]: connection targets from DNS names (`--peers-from-dns`).
//! - [`fastdp_driver`]: the task that drives [`datapath::fastdp`]: the kernel VXLAN
//!   fast path's probes, VXLAN device and FDB.
//! - [`firewall`]: the task that owns the nftables table: the fast path's guard, masquerade.
//! - [`sleeve_channel`]: the gossip channel that carries the data plane's messages
//!   ([`datapath::sleeve_message`]) to a neighbour.
//! - [`listener`]: accept loop with pre-authentication limits; [`inbound`]: the cap on
//!   authenticated inbound links.
//! - [`underlay`]: the peer-facing TCP and UDP sockets, on both IP families.
//! - [`api`], [`http`]: the local API (its contract is the `api` crate's) and the status
//!   listener.
//! - [`attachments`], [`host_net`]: what is attached and exposed (`ps`, `expose`, `hide`).
//! - [`reset`]: `weft reset`, removing everything weft made on the host.
//! - [`status`], [`report`]: the status model and weave's text layouts.
//! - [`metrics`]: `/metrics`, the report in Prometheus text format.
//! - [`web`]: the status web page (`/`), embedded.
//! - [`handshakes`]: handshakes accepted and refused by reason (counted by the owner).
//! - [`channels`]: IPAM and the sleeve channel, held by the owner, lent to the node.
//! - [`ipam_driver`]: the owner's side of IPAM; [`store`]: the redb state file.
//! - [`ipam`]: the sans-IO IP allocator (the ring CRDT on its gossip channel).
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod api;
pub mod attachments;
pub mod channels;
pub mod config;
pub mod control_links;
pub mod daemon;
pub mod dataplane_driver;
pub mod dns_peers;
pub mod fastdp_driver;
pub mod firewall;
pub mod handle;
pub mod handshakes;
pub mod host_net;
pub mod http;
pub mod inbound;
pub mod ipam;
pub mod ipam_driver;
pub mod listener;
pub mod metrics;
pub mod mtu;
pub mod neighbours;
pub mod owner;
pub mod peer_keys;
pub mod reclaim;
pub mod report;
pub mod reset;
pub mod sleeve_channel;
pub mod status;
pub mod store;
pub mod supervise;
pub mod underlay;
pub mod wake;
pub mod web;

/// The weft version, as `weft version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
