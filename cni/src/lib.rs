//! Weft's CNI plugin (`weft-net`, `weft-ipam`).
//!
//! Laid down with the workspace; the plugin arrives with the CNI issue. It reaches the
//! router only through the local API, never by linking the router.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]
