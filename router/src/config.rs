//! Router configuration, validated into typed values before anything starts.
//!
//! The command line builds a [`Config`]; nothing here reads the environment or argv, so
//! tests can construct one directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Default control (TCP) and sleeve (UDP) port, as weave's.
pub const DEFAULT_PORT: u16 = 6783;
/// Default read-only status listener.
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:6782";
/// Default cap on connections the connection maker opens by itself.
pub const DEFAULT_CONN_LIMIT: usize = 200;

/// How links are secured.
pub enum Security {
    /// A network secret (raw bytes as given); stretched into the PSK at start.
    Secret(Zeroizing<Vec<u8>>),
    /// `--no-encryption`: identities are still authenticated, the data plane is not encrypted.
    NoEncryption,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Secret(_) => f.write_str("Secret(..)"),
            Security::NoEncryption => f.write_str("NoEncryption"),
        }
    }
}

/// Everything the router needs to start.
#[derive(Debug)]
pub struct Config {
    /// Network secret, or none.
    pub security: Security,
    /// Display name of this peer.
    pub nickname: String,
    /// TCP port for control links.
    pub port: u16,
    /// Read-only status listener, or none.
    pub status_addr: Option<SocketAddr>,
    /// Persistent state (identity key).
    pub data_dir: PathBuf,
    /// Socket, pid file and log.
    pub run_dir: PathBuf,
    /// Dial peers learnt by gossip.
    pub discovery: bool,
    /// Cap on connections opened by discovery (0: no cap).
    pub conn_limit: usize,
    /// Initial connection targets.
    pub peers: Vec<SocketAddr>,
    /// Overlay MTU; by default what a 1500-byte IPv4 underlay leaves after the sleeve.
    pub mtu: Option<u32>,
    /// Sleeve rekey interval (120 s unless a test makes it short).
    pub rekey_interval: Option<std::time::Duration>,
}

/// Name of the bridge on every host.
pub const BRIDGE: &str = "weft";

/// The overlay MTU when none is given: a 1500-byte IPv4 underlay minus the sleeve.
pub fn default_mtu() -> u32 {
    u32::from(datapath::sleeve::overlay_mtu(
        1500,
        datapath::sleeve::IpVersion::V4,
    ))
}

/// Smallest overlay MTU accepted (IPv6 needs 1280).
pub const MIN_MTU: u32 = 1280;
/// Largest overlay MTU accepted.
pub const MAX_MTU: u32 = 65_000;

impl Config {
    /// The API socket path, `<run-dir>/weft.sock`.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.run_dir)
    }
}

/// `<run-dir>/weft.sock`.
pub fn socket_path(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("weft.sock")
}

/// `<run-dir>/weft.pid`.
pub fn pid_path(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("weft.pid")
}

/// `<run-dir>/weft.log`.
pub fn log_path(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("weft.log")
}

/// `<data-dir>/identity.key`: the router's static key, so its peer name.
pub fn identity_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("identity.key")
}

/// `<data-dir>/attachments.json`: what was attached through the router (`weft ps`).
pub fn attachments_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("attachments.json")
}

/// Parses `HOST[:PORT]` into socket addresses, resolving names; the port defaults to 6783.
pub fn resolve_peer(spec: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::{IpAddr, ToSocketAddrs};
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty peer address".into());
    }
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, DEFAULT_PORT)]);
    }
    let with_port = if spec.contains(':') {
        spec.to_string()
    } else {
        format!("{spec}:{DEFAULT_PORT}")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve peer {spec:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("peer {spec:?} resolves to no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_default_to_port_6783() {
        assert_eq!(
            resolve_peer("198.18.0.1").unwrap(),
            vec!["198.18.0.1:6783".parse().unwrap()]
        );
        assert_eq!(
            resolve_peer("198.18.0.1:7000").unwrap(),
            vec!["198.18.0.1:7000".parse().unwrap()]
        );
        assert!(resolve_peer("").is_err());
        assert!(resolve_peer("no such host.invalid").is_err());
    }
}
