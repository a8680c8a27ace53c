//! `weft reset`: remove everything weft made on this host, with the router stopped.
//!
//! In this order: the veths that `attach` plugged into the `weft` bridge (deleting the
//! host end removes the end inside the container too), the fast path's firewall table,
//! VXLAN device and probe TAP device, the TAP device, the bridge
//! (which takes the exposed addresses with it), then the files: the socket and pid file
//! in the run dir, and the identity key and attachments file in the data dir, so that
//! the host comes back as a new peer, as after `weave reset`. The log and the
//! directories themselves stay. Everything is looked up before it is removed, so a
//! second reset finds nothing to do and succeeds. It runs in the CLI process, by
//! netlink, whether or not a router ever ran.

use crate::attachments::temp_path;
use crate::config;
use crate::host_net::with_netlink;
use datapath::attach;
use datapath::fastdp::{PROBE_TAP_NAME, VXLAN_NAME};
use datapath::tap::TAP_NAME;
use std::io;
use std::path::{Path, PathBuf};

/// Why a reset stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// Removing an interface failed.
    #[error("cannot remove weft's interfaces: {0} (weft reset needs root)")]
    Netlink(String),
    /// Removing a file failed.
    #[error("cannot remove {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// What a reset removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Interfaces deleted (veths, the TAP device, the bridge).
    pub links: Vec<String>,
    /// Files deleted.
    pub files: Vec<PathBuf>,
}

impl Removed {
    /// True if there was nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.files.is_empty()
    }
}

/// Removes weft's interfaces from the current network namespace and its files from
/// `run_dir` and `data_dir`. The router must not be running.
pub fn reset(run_dir: &Path, data_dir: &Path) -> Result<Removed, ResetError> {
    let links = with_netlink(|nl| async move {
        let mut links = attach::remove_host_veths(&nl, config::BRIDGE)
            .await
            .map_err(|e| e.to_string())?;
        // Weft's firewall table (the fast path's guard, masquerade) goes too; nothing to
        // do if it is not there.
        let _ = crate::firewall::nft::remove().await;
        for name in [VXLAN_NAME, PROBE_TAP_NAME, TAP_NAME, config::BRIDGE] {
            if nl.delete_link(name).await.map_err(|e| e.to_string())? {
                links.push(name.to_string());
            }
        }
        Ok(links)
    })
    .map_err(ResetError::Netlink)?;
    let mut files = Vec::new();
    for path in files_to_remove(run_dir, data_dir) {
        match std::fs::remove_file(&path) {
            Ok(()) => files.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(ResetError::File { path, source }),
        }
    }
    Ok(Removed { links, files })
}

/// The files weft creates: run dir socket and pid file; data dir identity key and
/// attachments file (with its temp file), and the IPAM state database.
pub fn files_to_remove(run_dir: &Path, data_dir: &Path) -> Vec<PathBuf> {
    let attachments = config::attachments_path(data_dir);
    vec![
        config::socket_path(run_dir),
        config::pid_path(run_dir),
        config::identity_path(data_dir),
        temp_path(&attachments),
        attachments,
        config::store_path(data_dir),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_state_files_but_not_the_log() {
        let files = files_to_remove(Path::new("/run/weft"), Path::new("/var/lib/weft"));
        for f in [
            "/run/weft/weft.sock",
            "/run/weft/weft.pid",
            "/var/lib/weft/identity.key",
            "/var/lib/weft/attachments.json",
            "/var/lib/weft/attachments.json.tmp",
        ] {
            assert!(files.contains(&PathBuf::from(f)), "{f}");
        }
        assert!(!files.contains(&PathBuf::from("/run/weft/weft.log")));
    }
}
