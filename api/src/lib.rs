//! Weft's local API contract, shared by the router (which serves it), the `weft`
//! command and the CNI plugin (which call it): HTTP/1.1 on `<run-dir>/weft.sock`, one
//! request per connection.
//!
//! - [`paths`]: the socket's place and every endpoint's path;
//! - [`types`]: the JSON request and answer bodies, and the error body;
//! - [`client`]: the one blocking client, with timeouts and a bound on the answer.
//!
//! Arrows run one way: the router and the CNI plugin depend on this crate, never the
//! reverse, so it holds nothing of the router's.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod client;
pub mod paths;
pub mod types;

pub use client::{Client, ClientError};
pub use types::*;
