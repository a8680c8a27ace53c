//! Router configuration, validated into typed values before anything starts.
//!
//! The command line builds a [`Config`]; nothing here reads the environment or argv, so
//! tests can construct one directly.

use crate::ipam::{Cidr, InitMode};
use gossip::peer::PeerId;
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
    /// Keepalive interval of a confirmed sleeve path, which holds NAT mappings open
    /// (25 s unless a test makes it short).
    pub nat_keepalive: Option<std::time::Duration>,
    /// `--ipalloc-range`.
    pub ipalloc_range: Cidr,
    /// `--ipalloc-init`.
    pub ipalloc_init: InitMode,
    /// `--trusted-subnets`: underlay subnets whose peers may share the unencrypted
    /// kernel fast path with us, if they trust us too.
    pub trusted_subnets: Vec<datapath::cidr::LinkAddr>,
    /// `--no-fastpath`: never use the kernel VXLAN fast path.
    pub no_fastpath: bool,
    /// `--no-offloads`: open the TAP device for plain frames (no `virtio_net_hdr`, no
    /// checksum or segmentation offloads).
    pub no_offloads: bool,
    /// `--dataplane-threads`: data-plane threads, each with a queue of the TAP device and
    /// a sleeve socket (1 to [`datapath::tap::MAX_QUEUES`]).
    pub dataplane_threads: usize,
    /// `--no-encryption` (also with a secret, which then guards the control links
    /// only): the data plane may be unencrypted, so the fast path may be used with
    /// peers that say the same.
    pub plaintext_dataplane: bool,
    /// `--fastdp-admit`: legacy hosts (no Weft) allowed to send VXLAN to us and
    /// flooded to by our VXLAN device.
    pub fastdp_admit: Vec<std::net::IpAddr>,
    /// Masquerade traffic from the overlay that leaves the host while it is exposed
    /// (`--no-masquerade` turns it off).
    pub masquerade: bool,
    /// `--expose`: expose the host at start, with these addresses (none: one from
    /// IPAM), as `weft expose` would.
    pub expose: Option<Vec<datapath::cidr::LinkAddr>>,
    /// `--metrics-addr`: a listener that serves `/metrics` only, to any Host.
    pub metrics_addr: Option<SocketAddr>,
    /// `--peers-from-dns`: each name with its answer at launch, this host's own
    /// addresses left out (resolved again every 30 s while the router runs).
    pub peers_from_dns: Vec<(crate::dns_peers::DnsName, Vec<std::net::IpAddr>)>,
    /// `--peer-keys`: the allow-list file or directory.
    pub peer_keys: Option<std::path::PathBuf>,
    /// `--reclaim-after`: reclaim the space of peers unreachable for this long and
    /// named by no DNS answer (off when none).
    pub reclaim_after: Option<std::time::Duration>,
}

/// Parses `--ipalloc-init`: `consensus[=N]`, `seed=PEERID,..` or `observer`.
/// `consensus` without N expects the peers given at launch plus this one, as weave.
pub fn parse_ipalloc_init(spec: &str, launch_peers: usize) -> Result<InitMode, String> {
    let spec = spec.trim();
    if spec == "observer" {
        return Ok(InitMode::Observer);
    }
    if spec == "consensus" {
        return Ok(InitMode::Consensus {
            peers: launch_peers + 1,
        });
    }
    if let Some(n) = spec.strip_prefix("consensus=") {
        return match n.parse::<usize>() {
            Ok(peers) if (1..=1024).contains(&peers) => Ok(InitMode::Consensus { peers }),
            _ => Err(format!(
                "--ipalloc-init consensus={n}: N must be a number of peers from 1 to 1024"
            )),
        };
    }
    if let Some(list) = spec.strip_prefix("seed=") {
        // Full ids seed at once; peer names (what `weft status` shows) once resolved.
        let (mut seeds, mut names) = (Vec::new(), Vec::new());
        for item in list.split(',').map(str::trim) {
            if let Some(id) = parse_peer_id(item) {
                seeds.push(id);
            } else if let Ok(name) = item.parse::<gossip::peer::ShortName>() {
                names.push(name);
            } else {
                return Err(format!(
                    "--ipalloc-init seed=: {item:?} is neither a peer name (like \
                     4a:0f:f6:ec:1c:93, as `weft status` shows it) nor a peer id (32 hex \
                     digits, the peer_id of `weft report`)"
                ));
            }
        }
        if names.is_empty() {
            seeds.sort();
            seeds.dedup();
            return Ok(InitMode::Seed(seeds));
        }
        names.extend(seeds.iter().map(PeerId::short));
        names.sort();
        names.dedup();
        return Ok(InitMode::SeedNames(names));
    }
    Err(format!(
        "--ipalloc-init {spec:?}: expected consensus, consensus=N, seed=NAME,.. or observer"
    ))
}

/// A full peer id: 32 hex digits.
pub fn parse_peer_id(s: &str) -> Option<PeerId> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(PeerId(id))
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
    ::api::paths::socket_path(run_dir)
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

/// `<data-dir>/weft.redb`: IPAM's ring, allocations and range.
pub fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("weft.redb")
}

/// Parses `HOST[:PORT]` into socket addresses, resolving names; the port defaults to 6783.
/// An IPv6 address is written `[ADDR]:PORT` or `[ADDR]` (or bare, `ADDR`, without a
/// port), as it is printed everywhere; an IPv4-mapped one is taken as the IPv4 address.
pub fn resolve_peer(spec: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::{IpAddr, ToSocketAddrs};
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty peer address".into());
    }
    let canonical = crate::underlay::canonical;
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(vec![canonical(addr)]);
    }
    let unbracketed = spec
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(spec);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(vec![canonical(SocketAddr::new(ip, DEFAULT_PORT))]);
    }
    if spec.starts_with('[') {
        return Err(format!(
            "peer {spec:?}: expected an IPv6 address as [ADDR] or [ADDR]:PORT"
        ));
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

/// The default `--dataplane-threads`: one per core, at most [`datapath::tap::MAX_QUEUES`].
pub fn default_dataplane_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, datapath::tap::MAX_QUEUES)
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

    #[test]
    fn ipv6_peers_are_bracketed_with_or_without_a_port() {
        let want: SocketAddr = "[fd00::1]:6783".parse().unwrap();
        for spec in ["[fd00::1]:6783", "[fd00::1]", "fd00::1", " [fd00::1] "] {
            assert_eq!(resolve_peer(spec).unwrap(), vec![want], "{spec}");
        }
        let port: SocketAddr = "[fd00::2]:7000".parse().unwrap();
        assert_eq!(resolve_peer("[fd00::2]:7000").unwrap(), vec![port]);
        // Printed as it is parsed.
        assert_eq!(port.to_string(), "[fd00::2]:7000");
        // IPv4-mapped is the IPv4 peer.
        assert_eq!(
            resolve_peer("[::ffff:198.18.0.1]:6783").unwrap(),
            vec!["198.18.0.1:6783".parse().unwrap()]
        );
        for bad in [
            "[fd00::1",
            "[fd00::1]:",
            "[fd00::1]:x",
            "[198.18.0.1]x",
            "[]",
        ] {
            assert!(resolve_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipalloc_init_forms() {
        assert_eq!(
            parse_ipalloc_init("consensus", 2),
            Ok(InitMode::Consensus { peers: 3 })
        );
        assert_eq!(
            parse_ipalloc_init("consensus=5", 2),
            Ok(InitMode::Consensus { peers: 5 })
        );
        assert_eq!(parse_ipalloc_init("observer", 0), Ok(InitMode::Observer));
        let id = "0102030405060708090a0b0c0d0e0f10";
        assert_eq!(
            parse_ipalloc_init(&format!("seed={id}"), 0),
            Ok(InitMode::Seed(vec![parse_peer_id(id).unwrap()]))
        );
        // Names (and ids mixed in, by their names), sorted and deduplicated.
        let names =
            parse_ipalloc_init(&format!("seed=4a:0f:f6:ec:1c:93,{id},01:02:03:04:05:06"), 0);
        let want = ["01:02:03:04:05:06", "4a:0f:f6:ec:1c:93"].map(|n| n.parse().unwrap());
        assert_eq!(names, Ok(InitMode::SeedNames(want.to_vec())));
        for bad in [
            "",
            "consensus=0",
            "consensus=x",
            "seed=",
            "seed=h1",
            "seed=4a:0f:f6:ec:1c",
            "seed=4a:0f:f6:ec:1c:93,",
            "magic",
        ] {
            assert!(parse_ipalloc_init(bad, 0).is_err(), "{bad}");
        }
    }
}
