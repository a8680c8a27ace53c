//! Weft's data plane: Ethernet frames between the host bridge and the sleeve.
//!
//! Everything in this crate is pure and sans-IO: frames, datagrams and the time come in
//! as arguments, and decisions and bytes go out. The router drives it from the TAP
//! device, the UDP socket and the control links.
//!
//! # Layout
//!
//! - [`sleeve`]: the encrypted UDP encapsulation: header, replay window, epoch keys,
//!   per-neighbour sessions, and the zero-allocation seal/open codec.
//! - [`mac_table`]: MAC learning with aging and a hard size bound.
//! - [`switch`]: the forwarding decision for a frame captured locally or received from a
//!   peer: deliver, unicast towards a peer, flood along a broadcast tree, or drop.
//! - [`icmp`]: ICMP "fragmentation needed" / "packet too big" replies to frames larger
//!   than the overlay MTU.
//!
//! It depends only on `gossip`'s identity ([`gossip::peer::PeerId`]) and routes, never on
//! `router`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod icmp;
pub mod mac_table;
pub mod sleeve;
pub mod switch;
