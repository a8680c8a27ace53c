//! What `weft status` and `weft report` show, and weave's text layouts for it.
//!
//! The owner of the mesh builds a [`Report`] snapshot on request; this module only
//! formats it. Field names of the JSON form are a stable interface (`weft report`), so
//! they are renamed only with a schema change. The text layouts follow `weave status`
//! (labels right-aligned to 15 columns, connection lines padded as weave pads them).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The whole router report (`GET /report`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The weft version.
    pub version: String,
    /// True once the router listens and its API answers.
    pub ready: bool,
    /// The router block.
    pub router: RouterReport,
    /// Data-plane counters (absent if the data plane did not answer).
    #[serde(default)]
    pub dataplane: Option<DataplaneReport>,
    /// The IPAM block.
    #[serde(default)]
    pub ipam: Option<IpamReport>,
    /// Control-link handshakes accepted and refused.
    #[serde(default)]
    pub handshakes: Option<crate::handshakes::HandshakeReport>,
    /// The kernel fast path (absent when it is off).
    #[serde(default)]
    pub fastdp: Option<FastdpReport>,
    /// Whether the kernel fast path runs on this host, and why not.
    #[serde(default)]
    pub fast_path: Option<StateReport>,
    /// Masquerade of traffic leaving the overlay through this host.
    #[serde(default)]
    pub masquerade: Option<MasqueradeReport>,
}

/// A host feature's state and, when it does not run, why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateReport {
    /// `enabled`, `disabled` (turned off by a flag) or `unavailable`.
    pub state: String,
    /// Why it is disabled or unavailable (`--no-fastpath`, `nft not found`).
    pub reason: Option<String>,
}

/// Masquerade: its state, the subnets it covers and its nftables rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MasqueradeReport {
    /// `active`, `idle` (nothing exposed), `disabled` (`--no-masquerade`) or
    /// `unavailable` (the rules could not be installed).
    pub state: String,
    /// Why it is not active.
    pub reason: Option<String>,
    /// The overlay subnets whose traffic is masqueraded when it leaves the host.
    pub subnets: Vec<String>,
    /// The rules of the `postrouting` chain of the nftables table `inet weft`.
    pub rules: Vec<String>,
}

/// IPAM: status, range, ring shares and local allocations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IpamReport {
    /// weave's status line (`ready`, `awaiting consensus (quorum: 2, known: 1)`, ...).
    pub status: String,
    /// The allocation range.
    pub range: String,
    /// The default subnet (the whole range).
    pub default_subnet: String,
    /// Addresses in the range.
    #[serde(default)]
    pub range_size: u64,
    /// Each owner's share of the ring, largest first.
    pub shares: Vec<IpamShare>,
    /// Addresses allocated on this peer.
    pub allocations: Vec<IpamAllocation>,
    /// Requests waiting, with why.
    #[serde(default)]
    pub pending: Vec<String>,
    /// Counters: malformed or out-of-range gossip, donations, timeouts.
    #[serde(default)]
    pub stats: crate::ipam::IpamStats,
    /// `--reclaim-after`: departed peers waiting and reclaims done (absent when off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim: Option<ReclaimReport>,
    /// `weft status ipam`, formatted by the owner.
    #[serde(skip)]
    pub text: String,
}

/// `--peer-keys` in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PeerKeysReport {
    /// The file or directory.
    pub path: String,
    /// Keys listed.
    pub keys: usize,
    /// Successful reloads since the start.
    pub reloads: u64,
}

/// A target taken from a DNS answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct DnsTarget {
    /// `ip:port`.
    pub address: String,
    /// The `--peers-from-dns` name (`NAME:PORT`) whose answer gave it.
    pub name: String,
}

/// `--reclaim-after` in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ReclaimReport {
    /// The configured wait, in seconds.
    pub after_secs: u64,
    /// Peers owning space that the mesh does not reach.
    pub waiting: Vec<ReclaimWaiting>,
    /// The last reclaims, oldest first.
    pub done: Vec<ReclaimDone>,
    /// Reclaims in which this router became heir.
    pub took: u64,
    /// Reclaims that found another heir.
    pub other_heir: u64,
    /// Reclaims that failed (retried).
    pub failed: u64,
}

/// A departed peer that waits for reclaim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ReclaimWaiting {
    /// Peer name and nickname.
    pub peer: String,
    /// Seconds since the mesh last reached it.
    pub down_secs: u64,
    /// Why it is not reclaimed although due (e.g. `still named by DNS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// A finished reclaim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ReclaimDone {
    /// Peer name and nickname.
    pub peer: String,
    /// When it ended (UTC).
    pub at: String,
    /// How long the peer had been unreachable, in seconds.
    pub down_secs: u64,
    /// `took N IPs`, `heir NAME` or `failed: WHY`.
    pub outcome: String,
}

/// One owner's share of the range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IpamShare {
    /// Peer name and nickname.
    pub peer: String,
    /// Addresses it owns.
    pub ips: u64,
    /// Percent of the range.
    pub percent: f64,
    /// Whether the mesh reaches it.
    pub reachable: bool,
}

pub use ::api::IpamAllocation;

/// Data-plane counters: traffic per neighbour, and drops by reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DataplaneReport {
    /// Per neighbour.
    pub peers: Vec<PeerTraffic>,
    /// Datagrams dropped before a neighbour was known: malformed header.
    pub drops_malformed: u64,
    /// ... or an unknown receiver index.
    pub drops_unknown_index: u64,
    /// Frames with no route to their peer.
    pub drops_no_route: u64,
    /// Frames captured locally with the source MAC of another peer's host.
    pub drops_spoofed_source: u64,
    /// Frames that would have looped.
    pub drops_loop: u64,
    /// Relayed frames from a neighbour not on a path from their source peer (forged or
    /// stale `src_peer`).
    #[serde(default)]
    pub drops_wrong_relay: u64,
    /// Frames that could not be sealed (no key yet, too large).
    pub drops_unsendable: u64,
    /// Frames dropped because a transmit batch, the TAP queue or the socket was full.
    pub drops_queue_full: u64,
    /// Frames larger than the path MTU to their next hop (answered with ICMP "too big"
    /// where the sender is local and the packet asks for it).
    #[serde(default)]
    pub drops_mtu: u64,
    /// Rekey offers refused.
    pub rekeys_refused: u64,
    /// MAC addresses learnt.
    pub mac_entries: u64,
    /// What the TAP device hands over and takes: `tso_uso` (TCP and UDP superframes),
    /// `tso` (TCP superframes and checksum
    /// offload), `checksum`, or `plain` (`--no-offloads`, or refused by the kernel).
    #[serde(default)]
    pub offload_mode: String,
    /// Data-plane threads, each with a queue of the TAP device and a sleeve socket.
    #[serde(default)]
    pub dataplane_threads: u64,
    /// Frames from the TAP device dropped for a malformed `virtio_net_hdr`.
    #[serde(default)]
    pub drops_offload_malformed: u64,
    /// TCP superframes read from the TAP device and cut into segments.
    #[serde(default)]
    pub superframes_tx: u64,
    /// Superframes the coalescer wrote to the TAP device, and the segments in them.
    #[serde(default)]
    pub superframes_rx: u64,
    /// Segments merged into those superframes.
    #[serde(default)]
    pub superframes_rx_segments: u64,
}

/// Traffic with one neighbour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PeerTraffic {
    /// The neighbour's name.
    pub name: String,
    /// Whether its UDP path works both ways.
    pub established: bool,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes of frames sent.
    pub tx_bytes: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes of frames received.
    pub rx_bytes: u64,
    /// Datagrams dropped as replays.
    pub drops_replay: u64,
    /// Datagrams that failed authentication.
    pub drops_auth: u64,
    /// Malformed datagrams.
    pub drops_malformed: u64,
    /// Datagrams for an expired key.
    pub drops_unknown_index: u64,
    /// Authentic datagrams from an address other than the endpoint that did not move it
    /// (they arrived after a newer datagram).
    pub src_mismatch: u64,
    /// Sleeve key exchanges that replaced a working epoch.
    #[serde(default)]
    pub rekeys: u64,
    /// Times the sleeve endpoint moved to the source of an authentic, fresh datagram
    /// (roaming, a NAT's mapping).
    #[serde(default)]
    pub endpoint_changes: u64,
    /// Times its frames went to the TCP fallback (inside the control link).
    #[serde(default)]
    pub fallbacks: u64,
    /// Sealed datagrams sent to it inside the control link (TCP fallback).
    #[serde(default)]
    pub tcp_tx_datagrams: u64,
    /// Authentic datagrams received from it inside the control link.
    #[serde(default)]
    pub tcp_rx_datagrams: u64,
}

/// The router block of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouterReport {
    /// Protocol name (`weft`).
    pub protocol: String,
    /// Lowest control-protocol version spoken.
    pub protocol_min_version: u8,
    /// Highest control-protocol version spoken.
    pub protocol_max_version: u8,
    /// Peer name (first 6 bytes of the PeerId, MAC form).
    pub name: String,
    /// Full PeerId in hex.
    pub peer_id: String,
    /// Nickname (default: the hostname).
    pub nickname: String,
    /// Whether a network secret is in use.
    pub encryption: bool,
    /// Whether peers learnt by gossip are dialled.
    pub peer_discovery: bool,
    /// TCP (and later UDP) port.
    pub port: u16,
    /// Connection targets given on the command line or by `weft connect`.
    pub targets: Vec<String>,
    /// `--peer-keys`: the allow-list in force (absent without the option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_keys: Option<PeerKeysReport>,
    /// Connection targets from `--peers-from-dns` answers, with their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_targets: Vec<DnsTarget>,
    /// Local connections and connection attempts.
    pub connections: Vec<ConnectionReport>,
    /// Every peer in the topology, this one first.
    pub peers: Vec<PeerReport>,
    /// Trusted subnets (`--trusted-subnets`).
    pub trusted_subnets: Vec<String>,
    /// Peers with no direct data path, reached through another peer.
    #[serde(default)]
    pub relayed: Vec<RelayedReport>,
    /// Gossip refused for want of a proof of origin or over a topology cap (issue 14):
    /// one entry per `kind` (`record`, `unicast`) and reason with a non-zero count.
    #[serde(default)]
    pub gossip_rejected: Vec<GossipRejected>,
    /// Hole punching's counts.
    #[serde(default)]
    pub punch: PunchReport,
}

/// Hole punching: requests sent as the common neighbour of an unlinked pair, and the
/// attempts this router took part in as one end.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PunchReport {
    /// Requests sent as coordinator (two per pair and round).
    pub coordinated: u64,
    /// Attempts started.
    pub started: u64,
    /// Attempts whose path confirmed.
    pub succeeded: u64,
    /// Attempts abandoned unconfirmed (the relay kept carrying the frames).
    pub failed: u64,
    /// Punched paths given up after they stopped working.
    pub lost: u64,
    /// Requests refused (not from a neighbour, about a linked or unreachable peer, an
    /// unusable endpoint, too many attempts).
    pub refused: u64,
}

/// A count of refused gossip.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GossipRejected {
    /// `record` (a topology record) or `unicast`.
    pub kind: String,
    /// `unsigned`, `bad_key`, `key_mismatch`, `bad_signature`, `over_cap` or `gap`.
    pub reason: String,
    /// How many since the router started.
    pub count: u64,
}

/// The kernel VXLAN fast path's numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FastdpReport {
    /// Connections per mode (`fastdp`, `sleeve`), all connections counted.
    pub connections: BTreeMap<String, u64>,
    /// Fallbacks from fastdp to sleeve so far, by reason.
    pub fallbacks: BTreeMap<String, u64>,
    /// VXLAN packets dropped for coming from an underlay address that is not a
    /// fast-path peer (the firewall rule's counter; absent if unreadable).
    pub injected_drops: Option<u64>,
    /// Malformed probes received.
    pub malformed_probes: u64,
    /// Legacy hosts admitted with `--fastdp-admit`.
    pub admitted: Vec<String>,
}

/// A peer reached through a neighbour (the unicast route's first hop is not the peer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayedReport {
    /// The peer's name.
    pub peer_name: String,
    /// The peer's nickname.
    pub peer_nickname: String,
    /// The neighbour traffic to it goes through.
    pub via_name: String,
    /// The neighbour's nickname.
    pub via_nickname: String,
    /// Our connection to the neighbour: its address.
    pub address: String,
    /// ... and whether we dialled it.
    pub outbound: bool,
    /// Whether the sleeve is encrypted.
    pub encrypted: bool,
    /// The overlay MTU of the first hop.
    pub mtu: Option<u32>,
    /// The path its frames take: `relayed via NAME(NICKNAME)`, or `punched` (then
    /// `address` is the peer's endpoint, and `mtu` that path's).
    #[serde(default)]
    pub path: String,
    /// The endpoint a punched path sends to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// One local connection, or one attempt at a target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionReport {
    /// Remote address (`ip:port`).
    pub address: String,
    /// True when we dialled.
    pub outbound: bool,
    /// `connecting`, `failed`, `retrying`, `pending` or `established`.
    pub state: String,
    /// Whether the link is encrypted with the network secret.
    pub encrypted: bool,
    /// Data-plane mode: `sleeve` or `fastdp`.
    pub overlay: String,
    /// Why an eligible connection is on sleeve (probing, or the fallback's reason).
    #[serde(default)]
    pub overlay_reason: Option<String>,
    /// The remote peer's name, once authenticated.
    pub peer_name: Option<String>,
    /// The remote peer's nickname, once known.
    pub peer_nickname: Option<String>,
    /// The last error, for failed or retrying targets.
    pub error: Option<String>,
    /// When the next attempt is due (UTC), or `never`.
    pub retry: Option<String>,
    /// The overlay MTU on this connection, once it carries traffic.
    pub mtu: Option<u32>,
    /// Where the sleeve sends this neighbour's datagrams (`ip:port`): the control link's
    /// address with the peer's announced port, or where its datagrams come from.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Whether `endpoint` was learnt from the neighbour's authentic datagrams (roaming,
    /// a NAT's address and port) rather than taken from the control link.
    #[serde(default)]
    pub endpoint_learnt: bool,
    /// The path this neighbour's frames take: `direct` (UDP sleeve confirmed), `fastdp`,
    /// `tcp fallback` (inside the control link) or `pending`; none for a target.
    #[serde(default)]
    pub path: Option<String>,
    /// Why, for `tcp fallback`.
    #[serde(default)]
    pub path_reason: Option<String>,
}

/// A peer in the topology.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerReport {
    /// Peer name (MAC form).
    pub name: String,
    /// Nickname.
    pub nickname: String,
    /// Incarnation uid (hex).
    pub uid: String,
    /// Topology version of this peer.
    pub version: u64,
    /// The connections this peer reports.
    pub connections: Vec<PeerConnectionReport>,
}

/// A connection as reported by a peer in the topology.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerConnectionReport {
    /// Remote peer name.
    pub name: String,
    /// Remote peer nickname.
    pub nickname: String,
    /// The remote's address as seen by the reporting peer.
    pub address: String,
    /// True if the reporting peer dialled.
    pub outbound: bool,
    /// True when established (both ends report it).
    pub established: bool,
}

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:>15}: {value}");
}

/// `weft status`: the Router block in weave's layout.
pub fn format_status(r: &Report) -> String {
    let rt = &r.router;
    let mut out = String::from("\n");
    line(&mut out, "Version", &r.version);
    out.push('\n');
    line(&mut out, "Service", "router");
    let protocol = if rt.protocol_min_version == rt.protocol_max_version {
        format!("{} {}", rt.protocol, rt.protocol_min_version)
    } else {
        format!(
            "{} {}..{}",
            rt.protocol, rt.protocol_min_version, rt.protocol_max_version
        )
    };
    line(&mut out, "Protocol", protocol);
    line(&mut out, "Name", format!("{}({})", rt.name, rt.nickname));
    line(&mut out, "Encryption", enabled(rt.encryption));
    line(&mut out, "PeerDiscovery", enabled(rt.peer_discovery));
    line(&mut out, "Targets", rt.targets.len());
    line(&mut out, "Connections", connection_summary(&rt.connections));
    let established: usize = rt
        .peers
        .iter()
        .map(|p| p.connections.iter().filter(|c| c.established).count())
        .sum();
    let pending: usize = rt
        .peers
        .iter()
        .map(|p| p.connections.iter().filter(|c| !c.established).count())
        .sum();
    let mut peers = format!("{} (with {established} established", rt.peers.len());
    if pending > 0 {
        let _ = write!(peers, ", {pending} pending");
    }
    peers.push_str(" connections)");
    line(&mut out, "Peers", peers);
    let trusted = if rt.trusted_subnets.is_empty() {
        "none".to_string()
    } else {
        rt.trusted_subnets.join(",")
    };
    line(&mut out, "TrustedSubnets", trusted);
    if let Some(f) = &r.fast_path {
        line(
            &mut out,
            "Fast path",
            state_line(&f.state, f.reason.as_deref()),
        );
    }
    if let Some(m) = &r.masquerade {
        let mut text = state_line(&m.state, m.reason.as_deref());
        if m.state == "active" {
            let _ = write!(text, " ({})", m.subnets.join(", "));
        }
        line(&mut out, "Masquerade", text);
    }
    out.push('\n');
    if let Some(ipam) = &r.ipam {
        line(&mut out, "Service", "ipam");
        line(&mut out, "Status", &ipam.status);
        line(&mut out, "Range", &ipam.range);
        line(&mut out, "DefaultSubnet", &ipam.default_subnet);
        out.push('\n');
    }
    out
}

/// `enabled`, `unavailable (nft not found)`.
fn state_line(state: &str, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{state} ({r})"),
        None => state.to_string(),
    }
}

fn enabled(on: bool) -> &'static str {
    if on {
        "enabled"
    } else {
        "disabled"
    }
}

/// `5 (1 established, 1 pending, 1 retrying, 1 failed, 1 connecting)`, zero counts left out.
fn connection_summary(conns: &[ConnectionReport]) -> String {
    let mut parts = Vec::new();
    for state in ["established", "pending", "retrying", "failed", "connecting"] {
        let n = conns.iter().filter(|c| c.state == state).count();
        if n > 0 {
            parts.push(format!("{n} {state}"));
        }
    }
    if parts.is_empty() {
        return "0".to_string();
    }
    format!("{} ({})", conns.len(), parts.join(", "))
}

fn arrow(outbound: bool) -> &'static str {
    if outbound {
        "->"
    } else {
        "<-"
    }
}

/// `weft status connections`: one line per connection or attempt.
pub fn format_connections(r: &Report) -> String {
    let mut out = String::new();
    for c in &r.router.connections {
        let mut info = match (&c.peer_name, &c.peer_nickname) {
            (Some(name), nick) => {
                let enc = if c.encrypted {
                    "encrypted"
                } else {
                    "unencrypted"
                };
                let mut info = format!(
                    "{enc:<11} {:<6} {name}({})",
                    c.overlay,
                    nick.as_deref().unwrap_or("")
                );
                if let Some(mtu) = c.mtu {
                    let _ = write!(info, " mtu={mtu}");
                }
                if let (Some(endpoint), true) = (&c.endpoint, c.endpoint_learnt) {
                    let _ = write!(info, " endpoint={endpoint}");
                }
                if let Some(reason) = &c.overlay_reason {
                    let _ = write!(info, " fastdp: {reason}");
                }
                if let Some(path) = &c.path {
                    let _ = write!(info, " path: {path}");
                    if let Some(why) = &c.path_reason {
                        let _ = write!(info, " ({why})");
                    }
                }
                info
            }
            (None, _) => String::new(),
        };
        if let Some(err) = &c.error {
            if !info.is_empty() {
                info.push(' ');
            }
            info.push_str(err);
            if let Some(retry) = &c.retry {
                let _ = write!(info, ", retry: {retry}");
            }
        }
        let l = format!(
            "{} {:<21} {:<11} {info}",
            arrow(c.outbound),
            c.address,
            c.state
        );
        let _ = writeln!(out, "{}", l.trim_end());
    }
    for r in &r.router.relayed {
        let _ = writeln!(out, "{}", relayed_line(r));
    }
    out
}

/// A relayed peer as a connection line: the address is our link to the relay, the
/// state `relayed`, and the info names the peer, then `via` the relay. A punched peer's
/// line has its endpoint, the state `punched` and no relay.
fn relayed_line(r: &RelayedReport) -> String {
    let enc = if r.encrypted {
        "encrypted"
    } else {
        "unencrypted"
    };
    let punched = r.endpoint.is_some();
    let state = if punched { "punched" } else { "relayed" };
    let mut l = format!(
        "{} {:<21} {state:<11} {enc:<11} {:<6} {}({})",
        arrow(r.outbound),
        r.address,
        "sleeve",
        r.peer_name,
        r.peer_nickname,
    );
    if !punched {
        let _ = write!(l, " via {}({})", r.via_name, r.via_nickname);
    }
    if let Some(mtu) = r.mtu {
        let _ = write!(l, " mtu={mtu}");
    }
    if !r.path.is_empty() {
        let _ = write!(l, " path: {}", r.path);
    }
    l
}

/// `weft status peers`: each peer, then the connections it reports.
pub fn format_peers(r: &Report) -> String {
    let mut out = String::new();
    for p in &r.router.peers {
        let _ = writeln!(out, "{}({})", p.name, p.nickname);
        for c in &p.connections {
            let remote = format!("{}({})", c.name, c.nickname);
            let state = if c.established {
                "established"
            } else {
                "pending"
            };
            let _ = writeln!(
                out,
                "   {} {:<21} {remote:<37} {state}",
                arrow(c.outbound),
                c.address
            );
        }
    }
    out
}

/// `weft status targets`: one target per line.
pub fn format_targets(r: &Report) -> String {
    let mut out = String::new();
    for t in &r.router.targets {
        let _ = writeln!(out, "{t}");
    }
    for t in &r.router.dns_targets {
        let _ = writeln!(out, "{} (dns {})", t.address, printable(&t.name));
    }
    out
}

/// `text` safe for a terminal: control characters other than newlines, and Unicode's
/// bidirectional overrides and isolates, become `?`. Peers choose their nicknames (and
/// so part of every layout): they must not move a user's cursor, clear the screen or
/// reorder what `weft status` shows.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if (c.is_control() && c != '\n') || bidi {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Formats a Unix time as `2026-11-26 20:18:27 UTC` (civil-from-days, proleptic Gregorian).
pub fn format_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
