//! Weft's data plane: Ethernet frames between the host bridge and the sleeve.
//!
//! The protocol parts are pure and sans-IO: frames, datagrams and the time come in as
//! arguments, and decisions and bytes go out. The router drives them from the TAP
//! device, the UDP socket and the control links. The kernel-facing parts (netlink, the
//! TAP device, namespaces) are thin wrappers, each naming the `ip` command it mirrors.
//!
//! # Layout
//!
//! - [`sleeve`]: the encrypted UDP encapsulation: header, replay window, epoch keys,
//!   per-neighbour sessions, and the zero-allocation seal/open codec.
//! - [`sleeve_message`]: the data plane's control messages to a neighbour (rekey offers,
//!   path notices, fast-path hellos), carried over the control link.
//! - [`mac_table`]: MAC learning with aging and a hard size bound.
//! - [`switch`]: the forwarding decision for a frame captured locally or received from a
//!   peer: deliver, unicast towards a peer, flood along a broadcast tree, or drop.
//! - [`icmp`]: ICMP "fragmentation needed" / "packet too big" replies to frames larger
//!   than the overlay MTU.
//! - [`dataplane`]: one router's data plane, sans-IO: sessions, switch, path state.
//! - [`fastdp`]: the kernel VXLAN fast path, sans-IO: eligibility, probes, desired state.
//! - [`attach`]: a namespace's veth on the bridge, with addresses, MTU and routes.
//! - [`netlink`]: links, bridge ports, addresses and routes through rtnetlink.
//! - [`netns`]: running code inside another network namespace, on its own thread.
//! - [`tap`]: the TAP device between the bridge and the router (the one module allowed a
//!   documented `unsafe`).
//! - [`flow`]: which queue of a multi-queue TAP device carries a frame's flow.
//! - [`udp`]: the sleeve socket, sending and receiving runs of datagrams with UDP GSO/GRO.
//!
//! It depends only on `gossip`'s identity ([`gossip::peer::PeerId`]) and routes, never on
//! `router`.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod attach;
pub mod cidr;
pub mod dataplane;
pub mod fastdp;
pub mod flow;
pub mod icmp;
pub mod mac_table;
pub mod netlink;
pub mod netns;
pub mod offload;
pub mod sleeve;
pub mod sleeve_message;
pub mod switch;
pub mod sysctl;
pub mod tap;
pub mod udp;
