//! The mesh library of Weft.
//!
//! Everything here is sans-IO: state machines take input with the current time
//! (`handle_*`), report what to do (`poll_*`), and never touch a socket, a clock or a
//! global RNG. The `router` crate drives them with thin tokio tasks; `sim` (a test feature) drives the
//! very same machines deterministically, N peers in one process.
//!
//! # Layout
//! - [`peer`]: `PeerId`, `PeerUid`, and how a peer name is shown.
//! - [`identity`]: the static X25519 key in the data dir.
//! - [`psk`]: the network secret stretched with Argon2id.
//! - [`handshake`]: version header + `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s`, sans-IO.
//! - [`record_layer`]: the length-framed, encrypted record layer after the handshake.
//! - [`ratelimit`]: pre-authentication token buckets and pending caps; [`budget`]: the
//!   per-link budget of gossip bytes per second.
//! - [`codec`]: the one place that serializes (bincode).
//! - [`message`]: control messages carried in link records.
//! - [`topology`]: peers, their incarnations and their connections; merge and GC.
//! - [`routes`]: unicast next hops and per-source broadcast trees.
//! - [`crdt`] and [`channel`]: the gossip-channel contract that IPAM rides on.
//! - [`mesh`]: the per-router state machine that ties the above together.
//! - [`node`]: the mesh, the connection maker and the link table as one machine: what
//!   the router's owner task and the simulation both drive.
//! - [`timer`]: the mesh's timers, kept as data.
//! - [`connection_maker`] and [`backoff`]: whom to dial, and when.
//! - `sim` (feature `sim`): a deterministic, seeded network of N nodes in one process.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod backoff;
pub mod budget;
pub mod channel;
pub mod codec;
pub mod connection_maker;
pub mod crdt;
pub mod handshake;
pub mod identity;
pub mod mesh;
pub mod message;
pub mod node;
pub mod peer;
pub mod peer_keys;
pub mod psk;
pub mod ratelimit;
pub mod record_layer;
pub mod routes;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod timer;
pub mod topology;
