//! Builds the [`Report`] snapshot from the mesh and the connection maker.
//!
//! Called only by the owner task, which holds both machines; the result is plain data
//! that the API formats and serializes without touching protocol state.

use crate::neighbours::{Neighbours, PathKind};
use crate::status::{
    self, ConnectionReport, PeerConnectionReport, PeerReport, PunchReport, RelayedReport, Report,
    RouterReport,
};
use gossip::connection_maker::{ConnectionMaker, TargetState};
use gossip::mesh::{ConnId, Mesh};
use gossip::node::Node;
use gossip::peer::PeerId;
use std::collections::HashSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Static facts about this router that reports show.
#[derive(Debug, Clone)]
pub struct RouterInfo {
    /// Our PeerId.
    pub id: PeerId,
    /// Our nickname.
    pub nickname: String,
    /// Whether a secret is in use.
    pub encryption: bool,
    /// Whether discovery is on.
    pub discovery: bool,
    /// Our port.
    pub port: u16,
}

/// Lowest and highest control-protocol versions this build speaks.
pub const PROTOCOL_VERSIONS: (u8, u8) = (
    gossip::handshake::MIN_VERSION,
    gossip::handshake::MAX_VERSION,
);

/// What the owner knows about links beyond the mesh.
pub struct LinkView<'a> {
    /// Whether a live link uses the network secret.
    pub encrypted: &'a dyn Fn(ConnId) -> Option<bool>,
    /// Whether the UDP path to a peer is confirmed both ways.
    pub path_established: &'a dyn Fn(&PeerId) -> bool,
    /// The overlay MTU towards a neighbour: measured, or the configured one until then.
    pub mtu: &'a dyn Fn(&PeerId) -> u32,
    /// The data-plane mode of a neighbour's connection, and why it is on sleeve when it
    /// is eligible for the fast path.
    pub overlay: &'a dyn Fn(&PeerId) -> (&'static str, Option<String>),
    /// A neighbour's sleeve endpoint, and whether it was learnt from its datagrams.
    pub endpoint: &'a dyn Fn(&PeerId) -> Option<(std::net::SocketAddr, bool)>,
    /// The path a neighbour's frames take.
    pub path: &'a dyn Fn(&PeerId) -> PathKind,
    /// A peer's endpoint, if a punched path reaches it.
    pub punched: &'a dyn Fn(&PeerId) -> Option<std::net::SocketAddr>,
    /// `--trusted-subnets`.
    pub trusted_subnets: Vec<String>,
}

/// The report of a running router, from its node and what the data plane knows of the
/// neighbours (the owner adds IPAM and the handshake counters).
pub fn of_node(info: &RouterInfo, node: &Node, neighbours: &Neighbours) -> Report {
    let links = node.links();
    let view = LinkView {
        encrypted: &|conn| links.get(&conn).map(|l| l.encrypted),
        path_established: &|peer| neighbours.is_path_established(peer),
        mtu: &|peer| neighbours.mtu(peer),
        overlay: &|peer| neighbours.overlay(peer),
        endpoint: &|peer| neighbours.endpoint(peer),
        path: &|peer| neighbours.path(peer),
        punched: &|peer| neighbours.punched(peer),
        trusted_subnets: neighbours
            .policy()
            .trusted
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let mut r = build(info, node.mesh(), node.maker(), &view);
    let s = neighbours.punch_stats();
    r.router.punch = PunchReport {
        coordinated: s.coordinated,
        started: s.started,
        succeeded: s.succeeded,
        failed: s.failed,
        lost: s.lost,
        refused: s.refused,
    };
    r
}

/// Builds the report. A connection is `established` once its control link is up and
/// its frames have a path: UDP confirmed both ways, or the TCP fallback; `pending` before.
pub fn build(
    info: &RouterInfo,
    mesh: &Mesh,
    maker: &ConnectionMaker,
    view: &LinkView<'_>,
) -> Report {
    let now = Instant::now();
    let mut connections = Vec::new();
    let mut linked_addrs = HashSet::new();
    for c in mesh.connections() {
        linked_addrs.insert(c.remote_addr);
        let (overlay, overlay_reason) = (view.overlay)(&c.peer);
        let endpoint = (view.endpoint)(&c.peer);
        let path = (view.path)(&c.peer);
        let carried = (view.path_established)(&c.peer) || path.reason().is_some();
        connections.push(ConnectionReport {
            address: c.remote_addr.to_string(),
            outbound: c.outbound,
            state: if c.is_established() && carried {
                "established"
            } else {
                "pending"
            }
            .into(),
            encrypted: (view.encrypted)(c.conn).unwrap_or(info.encryption),
            overlay: overlay.into(),
            overlay_reason,
            peer_name: Some(c.peer.short().to_string()),
            peer_nickname: c.nickname.clone(),
            error: None,
            retry: None,
            mtu: Some((view.mtu)(&c.peer)),
            endpoint: endpoint.map(|(e, _)| e.to_string()),
            endpoint_learnt: endpoint.is_some_and(|(_, learnt)| learnt),
            path: Some(path.as_str().to_string()),
            path_reason: path.reason().map(str::to_string),
        });
    }
    let mut targets = Vec::new();
    for t in maker.targets() {
        if t.explicit {
            targets.push(t.addr.to_string());
        }
        if linked_addrs.contains(&t.addr) || t.state == TargetState::Established {
            continue;
        }
        let state = match t.state {
            TargetState::Connecting => "connecting",
            TargetState::Retrying => "retrying",
            TargetState::Failed => "failed",
            TargetState::Established => continue,
        };
        let retry = match (t.state, t.next_retry) {
            (TargetState::Connecting, _) => None,
            (_, Some(at)) => Some(wall_clock(now, at)),
            (_, None) => Some("never".to_string()),
        };
        connections.push(ConnectionReport {
            address: t.addr.to_string(),
            outbound: true,
            state: state.into(),
            encrypted: info.encryption,
            overlay: "sleeve".into(),
            overlay_reason: None,
            peer_name: None,
            peer_nickname: None,
            error: t.last_error.clone(),
            retry,
            mtu: None,
            endpoint: None,
            endpoint_learnt: false,
            path: None,
            path_reason: None,
        });
    }
    let relayed = relayed(info, mesh, view);
    let peers = mesh
        .peers()
        .into_iter()
        .map(|p| PeerReport {
            name: p.id.short().to_string(),
            nickname: p.nickname.clone(),
            uid: p.uid.to_string(),
            version: p.version,
            connections: p
                .connections
                .iter()
                .map(|c| PeerConnectionReport {
                    name: c.peer.short().to_string(),
                    nickname: c.nickname.clone(),
                    address: c.addr.to_string(),
                    outbound: c.outbound,
                    established: c.established,
                })
                .collect(),
        })
        .collect();
    Report {
        version: crate::VERSION.to_string(),
        ready: true,
        router: RouterReport {
            protocol: "weft".into(),
            protocol_min_version: PROTOCOL_VERSIONS.0,
            protocol_max_version: PROTOCOL_VERSIONS.1,
            name: info.id.short().to_string(),
            peer_id: info.id.to_hex(),
            nickname: info.nickname.clone(),
            encryption: info.encryption,
            peer_discovery: info.discovery,
            port: info.port,
            targets,
            dns_targets: Vec::new(),
            peer_keys: None,
            connections,
            peers,
            trusted_subnets: view.trusted_subnets.clone(),
            relayed,
            gossip_rejected: gossip_rejected(&mesh.stats()),
            punch: PunchReport::default(),
        },
        dataplane: None,
        ipam: None,
        handshakes: None,
        fastdp: None,
        fast_path: None,
        masquerade: None,
    }
}

/// Peers whose unicast route starts at another peer, with our link to that peer.
fn relayed(info: &RouterInfo, mesh: &Mesh, view: &LinkView<'_>) -> Vec<RelayedReport> {
    let routes = mesh.routes();
    let peers = mesh.peers();
    let nickname = |id: &PeerId| {
        peers
            .iter()
            .find(|p| p.id == *id)
            .map(|p| p.nickname.clone())
            .unwrap_or_default()
    };
    let conns = mesh.connections();
    let mut out = Vec::new();
    for peer in routes.reachable() {
        let Some(via) = routes.unicast(&peer).filter(|hop| *hop != peer) else {
            continue;
        };
        let Some(link) = conns.iter().find(|c| c.peer == via && c.is_established()) else {
            continue;
        };
        if let Some(endpoint) = (view.punched)(&peer) {
            out.push(RelayedReport {
                peer_name: peer.short().to_string(),
                peer_nickname: nickname(&peer),
                via_name: via.short().to_string(),
                via_nickname: nickname(&via),
                address: endpoint.to_string(),
                outbound: link.outbound,
                encrypted: (view.encrypted)(link.conn).unwrap_or(info.encryption),
                mtu: Some((view.mtu)(&peer)),
                path: PathKind::Punched.as_str().to_string(),
                endpoint: Some(endpoint.to_string()),
            });
            continue;
        }
        out.push(RelayedReport {
            peer_name: peer.short().to_string(),
            peer_nickname: nickname(&peer),
            via_name: via.short().to_string(),
            via_nickname: nickname(&via),
            address: link.remote_addr.to_string(),
            outbound: link.outbound,
            encrypted: (view.encrypted)(link.conn).unwrap_or(info.encryption),
            mtu: Some((view.mtu)(&via)),
            path: format!("relayed via {}({})", via.short(), nickname(&via)),
            endpoint: None,
        });
    }
    out
}

fn wall_clock(now: Instant, at: Instant) -> String {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    status::format_utc(unix_now + at.saturating_duration_since(now).as_secs())
}

/// The data plane's counters in report form.
pub fn dataplane(stats: &crate::dataplane_driver::Stats) -> crate::status::DataplaneReport {
    let c = &stats.counters;
    let d = &c.drops;
    crate::status::DataplaneReport {
        peers: c
            .peers
            .iter()
            .map(|(peer, p)| crate::status::PeerTraffic {
                name: peer.short().to_string(),
                established: stats.established.contains(peer),
                tx_frames: p.tx_frames,
                tx_bytes: p.tx_bytes,
                rx_frames: p.rx_frames,
                rx_bytes: p.rx_bytes,
                drops_replay: p.replay,
                drops_auth: p.auth_failed,
                drops_malformed: p.malformed,
                drops_unknown_index: p.unknown_index,
                src_mismatch: p.src_mismatch,
                rekeys: p.rekeys,
                endpoint_changes: p.endpoint_changes,
                fallbacks: p.fallbacks,
                tcp_tx_datagrams: p.tcp_tx_datagrams,
                tcp_rx_datagrams: p.tcp_rx_datagrams,
            })
            .collect(),
        drops_malformed: d.malformed,
        drops_unknown_index: d.unknown_index + d.tcp_wrong_peer,
        drops_no_route: d.no_route,
        drops_spoofed_source: d.spoofed_source,
        drops_loop: d.looped,
        drops_wrong_relay: d.wrong_relay,
        drops_unsendable: d.unsendable,
        drops_queue_full: d.tx_full
            + stats.tap_drops
            + stats.udp_drops
            + c.tcp_queue_full
            + stats.tcp_link_drops,
        drops_mtu: d.mtu + stats.udp_too_big,
        rekeys_refused: d.rekey_refused,
        mac_entries: c.mac_entries as u64,
        offload_mode: stats
            .offload_mode
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
        dataplane_threads: stats.queues as u64,
        drops_offload_malformed: d.offload_malformed,
        superframes_tx: c.superframes,
        superframes_rx: stats.coalesced,
        superframes_rx_segments: stats.coalesced_segments,
    }
}

/// Whether the fast path runs, for the report.
pub fn fast_path(a: &crate::fastdp_driver::Availability) -> status::StateReport {
    use crate::fastdp_driver::Availability;
    let (state, reason) = match a {
        Availability::Enabled => ("enabled", None),
        Availability::Disabled => ("disabled", Some("--no-fastpath".to_string())),
        Availability::Unavailable(why) => ("unavailable", Some(why.clone())),
    };
    status::StateReport {
        state: state.into(),
        reason,
    }
}

/// Masquerade, for the report.
pub fn masquerade(m: &crate::firewall::Masquerade) -> status::MasqueradeReport {
    use crate::firewall::Masquerade;
    let (state, reason, subnets, rules) = match m {
        Masquerade::Off => ("disabled", Some("--no-masquerade".into()), vec![], vec![]),
        Masquerade::Idle => ("idle", Some("host not exposed".into()), vec![], vec![]),
        Masquerade::Active { subnets, rules } => (
            "active",
            None,
            subnets.iter().map(|s| s.to_string()).collect(),
            rules.clone(),
        ),
        Masquerade::Unavailable(e) => ("unavailable", Some(e.short().to_string()), vec![], vec![]),
    };
    status::MasqueradeReport {
        state: state.into(),
        reason,
        subnets,
        rules,
    }
}

/// The fast path's numbers, with the connections of `report` counted per mode.
pub fn fastdp(stats: &crate::fastdp_driver::Stats, report: &Report) -> status::FastdpReport {
    let mut connections = std::collections::BTreeMap::new();
    for mode in ["fastdp", "sleeve"] {
        connections.insert(mode.to_string(), 0);
    }
    for c in report
        .router
        .connections
        .iter()
        .filter(|c| c.peer_name.is_some())
    {
        *connections.entry(c.overlay.clone()).or_insert(0) += 1;
    }
    let mut fallbacks = std::collections::BTreeMap::new();
    for reason in [
        datapath::fastdp::link::Reason::NoAck,
        datapath::fastdp::link::Reason::NoPeerProbe,
    ] {
        fallbacks.insert(
            reason.key().to_string(),
            stats.fallbacks.get(&reason).copied().unwrap_or(0),
        );
    }
    status::FastdpReport {
        connections,
        fallbacks,
        injected_drops: stats.injected_drops,
        malformed_probes: stats.malformed_probes,
        admitted: stats.admitted.iter().map(|a| a.to_string()).collect(),
    }
}

/// The non-zero refusal counts of the mesh, by kind and reason.
fn gossip_rejected(stats: &gossip::mesh::MeshStats) -> Vec<crate::status::GossipRejected> {
    [
        ("record", &stats.rejected_records),
        ("unicast", &stats.rejected_unicasts),
    ]
    .into_iter()
    .flat_map(|(kind, r)| {
        r.by_reason()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(move |(reason, count)| crate::status::GossipRejected {
                kind: kind.into(),
                reason: reason.into(),
                count,
            })
    })
    .collect()
}
