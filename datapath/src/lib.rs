//! Weft's data plane: Ethernet frames between the host bridge and the sleeve.
//!
//! It depends only on `gossip`'s identity and route types, never on `router`.
//!
//! # Layout
//! - [`attach`]: a namespace's veth on the bridge, with addresses, MTU and routes.
//! - [`netlink`]: links, bridge ports, addresses and routes through rtnetlink.
//! - [`netns`]: running code inside another network namespace, on its own thread.
//! - [`tap`]: the TAP device between the bridge and the router.
#![warn(missing_docs, unreachable_pub)]

pub mod attach;
pub mod netlink;
pub mod netns;
pub mod tap;
