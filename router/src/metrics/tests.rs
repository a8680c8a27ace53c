//! The exposition's shape: HELP/TYPE before samples, names and units, escaping, and
//! figures taken from the report.

use super::*;
use crate::handshakes::RefusedReason;

fn report() -> Report {
    let json = serde_json::json!({
        "version": "0.1.0",
        "ready": true,
        "router": {
            "protocol": "weft", "protocol_min_version": 1, "protocol_max_version": 1,
            "name": "aa:aa:aa:aa:aa:01", "peer_id": "00", "nickname": "h1",
            "encryption": true, "peer_discovery": true, "port": 6783,
            "targets": ["198.18.0.2:6783"],
            "connections": [
                {"address": "198.18.0.2:6783", "outbound": true, "state": "established",
                 "encrypted": true, "overlay": "sleeve", "peer_name": "aa:aa:aa:aa:aa:02",
                 "peer_nickname": "h\"2", "error": null, "retry": null, "mtu": 1408,
                 "path": "tcp fallback", "path_reason": "no UDP path confirmed"},
                {"address": "198.18.0.9:6783", "outbound": true, "state": "failed",
                 "encrypted": true, "overlay": "sleeve", "peer_name": null,
                 "peer_nickname": null, "error": "refused", "retry": "never", "mtu": null}
            ],
            "peers": [
                {"name": "aa:aa:aa:aa:aa:01", "nickname": "h1", "uid": "1", "version": 1, "connections": []},
                {"name": "aa:aa:aa:aa:aa:02", "nickname": "h\"2", "uid": "2", "version": 1, "connections": []}
            ],
            "trusted_subnets": []
        },
        "dataplane": {
            "peers": [{"name": "aa:aa:aa:aa:aa:02", "established": true, "tx_frames": 10,
                       "tx_bytes": 1000, "rx_frames": 20, "rx_bytes": 2000, "drops_replay": 3,
                       "drops_auth": 4, "drops_malformed": 5, "drops_unknown_index": 6,
                       "src_mismatch": 0, "rekeys": 2, "endpoint_changes": 1,
                       "fallbacks": 1, "tcp_tx_datagrams": 30, "tcp_rx_datagrams": 40}],
            "drops_malformed": 7, "drops_unknown_index": 1, "drops_no_route": 8,
            "drops_spoofed_source": 0, "drops_loop": 0, "drops_wrong_relay": 0, "drops_unsendable": 0,
            "drops_queue_full": 0, "drops_mtu": 9, "rekeys_refused": 0, "mac_entries": 4,
            "offload_mode": "tso", "dataplane_threads": 2, "drops_offload_malformed": 11, "superframes_tx": 12,
            "superframes_rx": 13, "superframes_rx_segments": 14
        },
        "ipam": {
            "status": "ready", "range": "10.32.0.0/12", "default_subnet": "10.32.0.0/12",
            "range_size": 1048576,
            "shares": [
                {"peer": "aa:aa:aa:aa:aa:01(h1)", "ips": 786432, "percent": 75.0, "reachable": true},
                {"peer": "aa:aa:aa:aa:aa:03(h3)", "ips": 262144, "percent": 25.0, "reachable": false}
            ],
            "allocations": [{"id": "pod1", "addr": "10.32.0.1/12"}],
            "pending": ["allocate c2 in 10.32.0.0/12: waiting for space"]
        },
        "handshakes": {"accepted_inbound": 2, "accepted_outbound": 1,
                       "refused": [{"direction": "inbound", "reason": "rate_limit", "count": 5}]},
        "fastdp": {"connections": {"fastdp": 1, "sleeve": 0},
                   "fallbacks": {"peer_probes_missing": 2, "probe_unacknowledged": 0},
                   "injected_drops": 7, "malformed_probes": 1, "admitted": []}
    });
    serde_json::from_value(json).expect("sample report")
}

/// `name{labels} value` lines as (name, labels, value).
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').expect("a value");
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n.to_string(), rest.trim_end_matches('}').to_string()),
                None => (head.to_string(), String::new()),
            };
            (name, labels, value.parse().expect("a number"))
        })
        .collect()
}

fn value(text: &str, name: &str, labels: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|s| s.0 == name && s.1 == labels)
        .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in\n{text}"))
        .2
}

#[test]
fn every_sample_follows_its_help_and_type() {
    let text = render(&report());
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut helped = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(
                helped.last().map(String::as_str),
                Some(name),
                "HELP before TYPE"
            );
            typed.push((name.to_string(), kind.to_string()));
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = typed.last().expect("a TYPE before any sample");
            assert_eq!(name, family, "samples sit under their own family");
            assert!(name.starts_with("weft_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
        }
    }
    let mut names: Vec<&String> = typed.iter().map(|t| &t.0).collect();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "each family once");
}

#[test]
fn figures_come_from_the_report() {
    let text = render(&report());
    let v = |n, l| value(&text, n, l);
    assert_eq!(
        v(
            "weft_connections",
            r#"state="established",mode="sleeve",encryption="yes""#
        ),
        1.0
    );
    assert_eq!(
        v(
            "weft_connections",
            r#"state="failed",mode="sleeve",encryption="yes""#
        ),
        1.0
    );
    assert_eq!(
        v(
            "weft_connections",
            r#"state="pending",mode="sleeve",encryption="yes""#
        ),
        0.0
    );
    assert_eq!(v("weft_peers", ""), 2.0);
    assert_eq!(v("weft_ipam_range_ips", ""), 1_048_576.0);
    assert_eq!(v("weft_ipam_used_ips", ""), 1.0);
    assert_eq!(v("weft_ipam_unreachable_peers", ""), 1.0);
    assert_eq!(v("weft_ipam_unreachable_percent", ""), 25.0);
    assert_eq!(v("weft_ipam_pending_requests", r#"kind="allocate""#), 1.0);
    let peer = r#"peer="aa:aa:aa:aa:aa:02",nickname="h\"2""#;
    assert_eq!(v("weft_peer_transmit_bytes_total", peer), 1000.0);
    assert_eq!(v("weft_peer_receive_frames_total", peer), 20.0);
    assert_eq!(v("weft_sleeve_rekeys_total", peer), 2.0);
    assert_eq!(v("weft_sleeve_endpoint_changes_total", peer), 1.0);
    assert_eq!(v("weft_sleeve_fallbacks_total", peer), 1.0);
    assert_eq!(v("weft_sleeve_tcp_transmit_datagrams_total", peer), 30.0);
    assert_eq!(v("weft_sleeve_tcp_receive_datagrams_total", peer), 40.0);
    let path = |kind: &str| {
        let labels = format!(r#"{peer},kind="{kind}""#);
        value(&text, "weft_peer_path", &labels)
    };
    assert_eq!(path("tcp fallback"), 1.0);
    assert_eq!(path("direct"), 0.0);
    assert_eq!(path("relayed"), 0.0);
    assert_eq!(
        v("weft_dataplane_drops_total", r#"reason="malformed""#),
        12.0
    );
    assert_eq!(v("weft_dataplane_drops_total", r#"reason="replay""#), 3.0);
    assert_eq!(v("weft_dataplane_drops_total", r#"reason="mtu""#), 9.0);
    assert_eq!(
        v("weft_dataplane_drops_total", r#"reason="queue_full""#),
        0.0
    );
    assert_eq!(v("weft_mac_table_entries", ""), 4.0);
    assert_eq!(
        v(
            "weft_dataplane_drops_total",
            r#"reason="offload_malformed""#
        ),
        11.0
    );
    assert_eq!(v("weft_tap_offload_mode", r#"mode="tso""#), 1.0);
    assert_eq!(v("weft_tap_offload_mode", r#"mode="plain""#), 0.0);
    assert_eq!(v("weft_dataplane_threads", ""), 2.0);
    assert_eq!(v("weft_superframes_total", r#"direction="tx""#), 12.0);
    assert_eq!(v("weft_superframes_total", r#"direction="rx""#), 13.0);
    assert_eq!(v("weft_coalesced_segments_total", ""), 14.0);
    assert_eq!(
        v("weft_handshakes_accepted_total", r#"direction="inbound""#),
        2.0
    );
    assert_eq!(
        v(
            "weft_handshakes_refused_total",
            r#"direction="inbound",reason="rate_limit""#
        ),
        5.0
    );
    assert_eq!(
        v(
            "weft_handshakes_refused_total",
            r#"direction="outbound",reason="auth""#
        ),
        0.0
    );
    assert_eq!(v("weft_fastdp_connections", r#"mode="fastdp""#), 1.0);
    assert_eq!(
        v(
            "weft_fastdp_fallbacks_total",
            r#"reason="peer_probes_missing""#
        ),
        2.0
    );
    assert_eq!(v("weft_fastdp_injected_vxlan_drops_total", ""), 7.0);
    assert_eq!(v("weft_fastdp_malformed_probes_total", ""), 1.0);
}

#[test]
fn missing_sections_leave_their_families_out() {
    let mut r = report();
    r.dataplane = None;
    r.ipam = None;
    r.handshakes = None;
    r.fastdp = None;
    let text = render(&r);
    assert!(text.contains("weft_peers 2\n"));
    for absent in [
        "weft_ipam_",
        "weft_dataplane_",
        "weft_handshakes_",
        "weft_fastdp_",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

#[test]
fn refusal_reasons_have_distinct_labels() {
    let names: std::collections::BTreeSet<&str> =
        RefusedReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), RefusedReason::ALL.len());
}
