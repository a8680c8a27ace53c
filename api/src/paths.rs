//! Where the API listens and the path of each endpoint.
//!
//! `GET` endpoints answer text (the status pages, `ps`) or JSON (`/report`, `/ipam`);
//! `POST` endpoints take and answer the JSON bodies of [`crate::types`].

use std::path::{Path, PathBuf};

/// The socket's file name in the run dir.
pub const SOCKET_NAME: &str = "weft.sock";

/// `<run-dir>/weft.sock`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// `GET`: the status summary (text, weave's layout).
pub const STATUS: &str = "/status";
/// `GET`: the full report (JSON, docs/report.md).
pub const REPORT: &str = "/report";
/// `GET`: Prometheus metrics (text exposition format).
pub const METRICS: &str = "/metrics";
/// `GET`: attached interfaces, one per line (`weft ps`).
pub const PS: &str = "/ps";
/// `POST` [`crate::PeersRequest`]: add connection targets.
pub const CONNECT: &str = "/connect";
/// `POST` [`crate::PeersRequest`]: remove connection targets; answers how many it knew.
pub const FORGET: &str = "/forget";
/// `POST` [`crate::AttachBody`]: attach a namespace; answers [`crate::AttachAnswer`].
pub const ATTACH: &str = "/attach";
/// `POST` [`crate::AttachBody`]: remove addresses or the interface; answers the
/// addresses left, on one line.
pub const DETACH: &str = "/detach";
/// `POST` [`crate::CidrsBody`]: give the host addresses on the overlay.
pub const EXPOSE: &str = "/expose";
/// `POST` [`crate::CidrsBody`]: remove exposed addresses (all if none given).
pub const HIDE: &str = "/hide";
/// `POST`: stop the router.
pub const STOP: &str = "/stop";
/// `GET`: IPAM's status and this peer's allocations ([`crate::IpamList`]).
pub const IPAM: &str = "/ipam";
/// `POST` [`crate::IpamBody`]: allocate an address; answers [`crate::AddrAnswer`].
pub const IPAM_ALLOCATE: &str = "/ipam/allocate";
/// `POST` [`crate::IpamBody`] with `addr`: claim that address; answers [`crate::AddrAnswer`].
pub const IPAM_CLAIM: &str = "/ipam/claim";
/// `POST` [`crate::IpamBody`]: release one or all addresses of a container; answers
/// [`crate::ReleasedAnswer`].
pub const IPAM_RELEASE: &str = "/ipam/release";
/// `POST` [`crate::RmpeerBody`]: reclaim dead peers' space; answers weave's lines.
pub const IPAM_RMPEER: &str = "/ipam/rmpeer";
/// `POST`: hand this router's space to a live peer (`weft reset`); answers the heir.
pub const IPAM_LEAVE: &str = "/ipam/leave";
/// `POST`: read the `--peer-keys` list again (`weft peers reload`); answers
/// `N peer keys in force`, or 409 with why the list was refused.
pub const PEERS_RELOAD: &str = "/peers/reload";
