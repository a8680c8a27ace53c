//! `GET /metrics`: the [`Report`] in Prometheus text format (version 0.0.4).
//!
//! Rendered from the same snapshot as `/report`, so the two never disagree. Names use
//! the `weft_` prefix, carry their unit (`_bytes`, `_frames`, `_ips`, `_percent`) and
//! end in `_total` for counters; every family has its `# HELP` and `# TYPE` lines.
//! Label sets with a fixed vocabulary (drop and refusal reasons, connection states) are
//! always written in full, zeros included, so that `rate()` works from the first scrape.
//! Counters kept per neighbour start again from zero when its link is re-established;
//! Prometheus treats that as a counter reset.

use crate::status::Report;
use std::fmt::{Display, Write as _};

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Data-plane drop reasons, always present as `reason` label values.
pub const DROP_REASONS: [&str; 13] = [
    "replay",
    "auth",
    "malformed",
    "unknown_index",
    "source_mismatch",
    "no_route",
    "mtu",
    "spoofed_source",
    "loop",
    "wrong_relay",
    "unsendable",
    "queue_full",
    "offload_malformed",
];

/// Modes of the TAP device, always all written.
const OFFLOAD_MODES: [&str; 4] = ["tso_uso", "tso", "checksum", "plain"];

/// Connection states of `weft status connections`.
const STATES: [&str; 5] = ["established", "pending", "retrying", "failed", "connecting"];

/// Writes families: HELP and TYPE once, then samples with escaped label values.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape `\`, `"` and newlines (the text format's rules).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Renders every family. `report.dataplane`, `.ipam` and `.handshakes` are optional:
/// their families are left out when the snapshot lacks them.
pub fn render(report: &Report) -> String {
    let mut e = Exposition { out: String::new() };
    e.family("weft_build_info", "gauge", "The weft version (always 1).");
    e.sample("weft_build_info", &[("version", &report.version)], 1);
    e.single(
        "weft_ready",
        "gauge",
        "1 once the router listens and its API answers.",
        u8::from(report.ready),
    );
    router_families(&mut e, report);
    ipam_families(&mut e, report);
    dataplane_families(&mut e, report);
    handshake_families(&mut e, report);
    fastdp_families(&mut e, report);
    host_families(&mut e, report);
    e.out
}

/// Fast path states, as `weft status` shows them.
const FAST_PATH_STATES: [&str; 3] = ["enabled", "disabled", "unavailable"];
/// Masquerade states, as `weft status` shows them.
const MASQUERADE_STATES: [&str; 4] = ["active", "idle", "disabled", "unavailable"];

/// Whether the fast path runs and whether traffic leaving the host is masqueraded:
/// one sample per state, 1 for the current one.
fn host_families(e: &mut Exposition, report: &Report) {
    let states = [
        (
            "weft_fast_path_state",
            "The kernel VXLAN fast path on this host: 1 for its state (unavailable: see `weft status`).",
            &FAST_PATH_STATES[..],
            report.fast_path.as_ref().map(|f| f.state.as_str()),
        ),
        (
            "weft_masquerade_state",
            "Masquerade of overlay traffic leaving this host: 1 for its state.",
            &MASQUERADE_STATES[..],
            report.masquerade.as_ref().map(|m| m.state.as_str()),
        ),
    ];
    for (name, help, vocabulary, current) in states {
        let Some(current) = current else { continue };
        e.family(name, "gauge", help);
        for state in vocabulary {
            e.sample(name, &[("state", state)], u8::from(*state == current));
        }
    }
}

/// The kernel fast path: connections per mode, fallbacks to the sleeve by reason, and
/// VXLAN packets the firewall dropped for coming from a non-peer.
fn fastdp_families(e: &mut Exposition, report: &Report) {
    let Some(f) = &report.fastdp else { return };
    e.family(
        "weft_fastdp_connections",
        "gauge",
        "Connections to named peers by data-plane mode (fastdp: the kernel's VXLAN).",
    );
    for (mode, n) in &f.connections {
        e.sample("weft_fastdp_connections", &[("mode", mode)], n);
    }
    e.family(
        "weft_fastdp_fallbacks_total",
        "counter",
        "Connections that fell back from the fast path to the sleeve, by reason.",
    );
    for (reason, n) in &f.fallbacks {
        e.sample("weft_fastdp_fallbacks_total", &[("reason", reason)], n);
    }
    if let Some(n) = f.injected_drops {
        e.single(
            "weft_fastdp_injected_vxlan_drops_total",
            "counter",
            "VXLAN packets dropped by the router's firewall rule: not from a fast-path peer.",
            n,
        );
    }
    e.single(
        "weft_fastdp_malformed_probes_total",
        "counter",
        "Fast-path probes received that did not decode.",
        f.malformed_probes,
    );
}

fn router_families(e: &mut Exposition, report: &Report) {
    let rt = &report.router;
    e.family(
        "weft_gossip_rejected_total",
        "counter",
        "Gossip refused: topology records and unicasts without a valid proof of origin, or over a topology cap; by kind and reason.",
    );
    for g in &rt.gossip_rejected {
        e.sample(
            "weft_gossip_rejected_total",
            &[("kind", &g.kind), ("reason", &g.reason)],
            g.count,
        );
    }
    e.family(
        "weft_connections",
        "gauge",
        "Local connections and connection attempts, by state, data-plane mode and encryption.",
    );
    let mut keys: Vec<(&str, &str, &str)> = rt
        .connections
        .iter()
        .map(|c| {
            (
                c.state.as_str(),
                c.overlay.as_str(),
                if c.encrypted { "yes" } else { "no" },
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    for state in STATES {
        if !keys.iter().any(|k| k.0 == state) {
            let enc = if rt.encryption { "yes" } else { "no" };
            keys.push((state, "sleeve", enc));
        }
    }
    keys.sort();
    for (state, mode, enc) in keys {
        let n = rt
            .connections
            .iter()
            .filter(|c| {
                c.state == state
                    && c.overlay == mode
                    && (if c.encrypted { "yes" } else { "no" }) == enc
            })
            .count();
        e.sample(
            "weft_connections",
            &[("state", state), ("mode", mode), ("encryption", enc)],
            n,
        );
    }
    path_family(e, report);
    e.single(
        "weft_relayed_peers",
        "gauge",
        "Peers with no control link of ours, reached through another peer or by a punched path.",
        rt.relayed.len(),
    );
    e.family(
        "weft_punch_total",
        "counter",
        "Hole punching: requests sent as coordinator, and attempts started, succeeded, \
         failed (unconfirmed), lost (after working) and refused, by outcome.",
    );
    let p = &rt.punch;
    for (outcome, n) in [
        ("coordinated", p.coordinated),
        ("started", p.started),
        ("succeeded", p.succeeded),
        ("failed", p.failed),
        ("lost", p.lost),
        ("refused", p.refused),
    ] {
        e.sample("weft_punch_total", &[("outcome", outcome)], n);
    }
    e.single(
        "weft_targets",
        "gauge",
        "Connection targets given at launch or with `weft connect`.",
        rt.targets.len(),
    );
    e.single(
        "weft_peers",
        "gauge",
        "Peers in the topology, this one included.",
        rt.peers.len(),
    );
}

fn ipam_families(e: &mut Exposition, report: &Report) {
    let Some(ipam) = &report.ipam else { return };
    e.single(
        "weft_ipam_range_ips",
        "gauge",
        "Addresses in the allocation range.",
        ipam.range_size,
    );
    e.single(
        "weft_ipam_used_ips",
        "gauge",
        "Addresses allocated to containers on this peer.",
        ipam.allocations.len(),
    );
    e.family(
        "weft_ipam_owned_ips",
        "gauge",
        "Addresses of the range each peer owns.",
    );
    for s in &ipam.shares {
        e.sample("weft_ipam_owned_ips", &[("peer", &s.peer)], s.ips);
    }
    let unreachable: Vec<_> = ipam.shares.iter().filter(|s| !s.reachable).collect();
    e.single(
        "weft_ipam_unreachable_peers",
        "gauge",
        "Peers owning address space that the mesh cannot reach.",
        unreachable.len(),
    );
    let ips: u64 = unreachable.iter().map(|s| s.ips).sum();
    e.single(
        "weft_ipam_unreachable_ips",
        "gauge",
        "Addresses owned by unreachable peers.",
        ips,
    );
    let percent = if ipam.range_size == 0 {
        0.0
    } else {
        ips as f64 * 100.0 / ipam.range_size as f64
    };
    e.single(
        "weft_ipam_unreachable_percent",
        "gauge",
        "Percentage of the range owned by unreachable peers.",
        percent,
    );
    e.family(
        "weft_ipam_pending_requests",
        "gauge",
        "IPAM requests waiting (for consensus, space or a quorum), by kind.",
    );
    for kind in ["allocate", "claim", "rmpeer"] {
        let n = ipam
            .pending
            .iter()
            .filter(|p| p.split_whitespace().next() == Some(kind))
            .count();
        e.sample("weft_ipam_pending_requests", &[("kind", kind)], n);
    }
    if let Some(r) = &ipam.reclaim {
        e.family(
            "weft_ipam_reclaims_total",
            "counter",
            "Reclaims of departed peers' space started here (--reclaim-after), by result: \
             took (this router is heir), other_heir, failed.",
        );
        for (result, n) in [
            ("took", r.took),
            ("other_heir", r.other_heir),
            ("failed", r.failed),
        ] {
            e.sample("weft_ipam_reclaims_total", &[("result", result)], n);
        }
        e.single(
            "weft_ipam_reclaim_waiting_peers",
            "gauge",
            "Unreachable peers owning space that are not reclaimed yet.",
            r.waiting.len(),
        );
    }
}

/// Path kinds of `weft_peer_path`, always all written for each peer.
const PATH_KINDS: [&str; 6] = [
    "direct",
    "fastdp",
    "tcp fallback",
    "pending",
    "relayed",
    "punched",
];

/// `weft_peer_path`: 1 for the path each peer's frames take, 0 for the other kinds.
fn path_family(e: &mut Exposition, report: &Report) {
    let rt = &report.router;
    e.family(
        "weft_peer_path",
        "gauge",
        "The path each peer's frames take (1), by kind: direct (UDP sleeve confirmed), fastdp, \
         tcp fallback (inside the control link), pending, relayed (through a neighbour), \
         punched (UDP through two NATs, no control link).",
    );
    let neighbours = rt.connections.iter().filter_map(|c| {
        let name = c.peer_name.as_deref()?;
        let kind = c.path.as_deref()?;
        Some((name, c.peer_nickname.as_deref().unwrap_or(""), kind))
    });
    let relayed = rt.relayed.iter().map(|r| {
        let kind = if r.endpoint.is_some() {
            "punched"
        } else {
            "relayed"
        };
        (r.peer_name.as_str(), r.peer_nickname.as_str(), kind)
    });
    for (peer, nickname, current) in neighbours.chain(relayed) {
        for kind in PATH_KINDS {
            let labels = [("peer", peer), ("nickname", nickname), ("kind", kind)];
            e.sample("weft_peer_path", &labels, u8::from(kind == current));
        }
    }
}

fn dataplane_families(e: &mut Exposition, report: &Report) {
    let Some(dp) = &report.dataplane else { return };
    let nickname = |name: &str| {
        report
            .router
            .peers
            .iter()
            .find(|p| p.name == name)
            .map_or("", |p| p.nickname.as_str())
    };
    type Field = fn(&crate::status::PeerTraffic) -> u64;
    let per_peer: [(&str, &str, Field); 9] = [
        (
            "weft_peer_transmit_bytes_total",
            "Bytes of frames sent to each neighbour.",
            |p| p.tx_bytes,
        ),
        (
            "weft_peer_receive_bytes_total",
            "Bytes of frames received from each neighbour.",
            |p| p.rx_bytes,
        ),
        (
            "weft_peer_transmit_frames_total",
            "Frames sent to each neighbour.",
            |p| p.tx_frames,
        ),
        (
            "weft_peer_receive_frames_total",
            "Frames received from each neighbour.",
            |p| p.rx_frames,
        ),
        (
            "weft_sleeve_rekeys_total",
            "Sleeve key exchanges that replaced a working epoch, per neighbour.",
            |p| p.rekeys,
        ),
        (
            "weft_sleeve_endpoint_changes_total",
            "Times a neighbour's sleeve endpoint moved to the source of its authentic, fresh \
             datagrams (roaming, NAT).",
            |p| p.endpoint_changes,
        ),
        (
            "weft_sleeve_fallbacks_total",
            "Times a neighbour's frames went to the TCP fallback (inside the control link).",
            |p| p.fallbacks,
        ),
        (
            "weft_sleeve_tcp_transmit_datagrams_total",
            "Sealed sleeve datagrams sent to each neighbour inside the control link.",
            |p| p.tcp_tx_datagrams,
        ),
        (
            "weft_sleeve_tcp_receive_datagrams_total",
            "Authentic sleeve datagrams received from each neighbour inside the control link.",
            |p| p.tcp_rx_datagrams,
        ),
    ];
    for (name, help, field) in per_peer {
        e.family(name, "counter", help);
        for p in &dp.peers {
            let labels = [("peer", p.name.as_str()), ("nickname", nickname(&p.name))];
            e.sample(name, &labels, field(p));
        }
    }
    e.family(
        "weft_peer_path_established",
        "gauge",
        "1 when the UDP path to a neighbour works both ways.",
    );
    for p in &dp.peers {
        let labels = [("peer", p.name.as_str()), ("nickname", nickname(&p.name))];
        e.sample(
            "weft_peer_path_established",
            &labels,
            u8::from(p.established),
        );
    }
    let sum = |f: fn(&crate::status::PeerTraffic) -> u64| dp.peers.iter().map(f).sum::<u64>();
    let drops: [u64; 13] = [
        sum(|p| p.drops_replay),
        sum(|p| p.drops_auth),
        dp.drops_malformed + sum(|p| p.drops_malformed),
        dp.drops_unknown_index + sum(|p| p.drops_unknown_index),
        sum(|p| p.src_mismatch),
        dp.drops_no_route,
        dp.drops_mtu,
        dp.drops_spoofed_source,
        dp.drops_loop,
        dp.drops_wrong_relay,
        dp.drops_unsendable,
        dp.drops_queue_full,
        dp.drops_offload_malformed,
    ];
    e.family(
        "weft_dataplane_drops_total",
        "counter",
        "Datagrams and frames the data plane dropped, by reason (rate-limit refusals are \
         counted by weft_handshakes_refused_total).",
    );
    for (reason, n) in DROP_REASONS.iter().zip(drops) {
        e.sample("weft_dataplane_drops_total", &[("reason", reason)], n);
    }
    e.single(
        "weft_sleeve_rekeys_refused_total",
        "counter",
        "Sleeve rekey offers refused (unsolicited, or for an unexpected epoch).",
        dp.rekeys_refused,
    );
    e.single(
        "weft_mac_table_entries",
        "gauge",
        "MAC addresses learnt by the switch.",
        dp.mac_entries,
    );
    e.family(
        "weft_tap_offload_mode",
        "gauge",
        "1 for the mode the TAP device is in: tso_uso, tso, checksum or plain.",
    );
    for mode in OFFLOAD_MODES {
        e.sample(
            "weft_tap_offload_mode",
            &[("mode", mode)],
            u8::from(dp.offload_mode == mode),
        );
    }
    e.single(
        "weft_dataplane_threads",
        "gauge",
        "Data-plane threads, each with a queue of the TAP device and a sleeve socket.",
        dp.dataplane_threads,
    );
    e.family(
        "weft_superframes_total",
        "counter",
        "TCP superframes cut into segments (tx) and built from segments (rx).",
    );
    e.sample(
        "weft_superframes_total",
        &[("direction", "tx")],
        dp.superframes_tx,
    );
    e.sample(
        "weft_superframes_total",
        &[("direction", "rx")],
        dp.superframes_rx,
    );
    e.single(
        "weft_coalesced_segments_total",
        "counter",
        "Received TCP segments merged into superframes.",
        dp.superframes_rx_segments,
    );
}

fn handshake_families(e: &mut Exposition, report: &Report) {
    let Some(h) = &report.handshakes else { return };
    e.family(
        "weft_handshakes_accepted_total",
        "counter",
        "Control-link handshakes completed, by direction.",
    );
    e.sample(
        "weft_handshakes_accepted_total",
        &[("direction", "inbound")],
        h.accepted_inbound,
    );
    e.sample(
        "weft_handshakes_accepted_total",
        &[("direction", "outbound")],
        h.accepted_outbound,
    );
    e.family(
        "weft_gossip_throttled_total",
        "counter",
        "Gossip messages read late because their peer had spent its budget of bytes per \
         second on that link.",
    );
    e.sample("weft_gossip_throttled_total", &[], h.gossip_throttled);
    e.family(
        "weft_handshakes_refused_total",
        "counter",
        "Control-link handshakes refused or failed, by direction and reason.",
    );
    for direction in ["inbound", "outbound"] {
        for reason in crate::handshakes::RefusedReason::ALL.map(|r| r.as_str()) {
            let n: u64 = h
                .refused
                .iter()
                .filter(|r| r.direction == direction && r.reason == reason)
                .map(|r| r.count)
                .sum();
            e.sample(
                "weft_handshakes_refused_total",
                &[("direction", direction), ("reason", reason)],
                n,
            );
        }
    }
}

#[cfg(test)]
mod tests;
