//! Weft's data plane: Ethernet frames between the host bridge and the sleeve.
//!
//! This crate is laid down with the workspace; the TAP device, MAC learning, the sleeve
//! codec and the kernel fast path arrive with the data-plane issue. It depends only on
//! `gossip`'s identity and route types, never on `router`.
#![warn(missing_docs, unreachable_pub)]
