//! Layout tests: the text forms must match weave's column widths exactly.

use super::*;

fn conn(addr: &str, outbound: bool, state: &str, peer: Option<(&str, &str)>) -> ConnectionReport {
    ConnectionReport {
        address: addr.into(),
        outbound,
        state: state.into(),
        encrypted: true,
        overlay: "sleeve".into(),
        overlay_reason: None,
        peer_name: peer.map(|p| p.0.to_string()),
        peer_nickname: peer.map(|p| p.1.to_string()),
        error: None,
        retry: None,
        mtu: peer.map(|_| 1376),
        endpoint: None,
        endpoint_learnt: false,
        path: None,
        path_reason: None,
    }
}

fn sample() -> Report {
    let mut failed = conn("198.18.0.9:6783", true, "failed", None);
    failed.error = Some("dial tcp 198.18.0.9:6783: connection refused".into());
    failed.retry = Some("2026-11-26 20:55:38 UTC".into());
    Report {
        version: "0.1.0".into(),
        ready: true,
        router: RouterReport {
            protocol: "weft".into(),
            protocol_min_version: 1,
            protocol_max_version: 1,
            name: "4a:0f:f6:ec:1c:93".into(),
            peer_id: "00".repeat(16),
            nickname: "h1".into(),
            encryption: true,
            peer_discovery: true,
            port: 6783,
            targets: vec!["198.18.0.2:6783".into(), "198.18.0.9:6783".into()],
            dns_targets: vec![],
            peer_keys: None,
            connections: vec![
                conn(
                    "198.18.0.2:6783",
                    true,
                    "established",
                    Some(("7e:21:4a:70:2f:45", "h2")),
                ),
                failed,
            ],
            peers: vec![
                PeerReport {
                    name: "4a:0f:f6:ec:1c:93".into(),
                    nickname: "h1".into(),
                    uid: "1".into(),
                    version: 3,
                    connections: vec![PeerConnectionReport {
                        name: "7e:21:4a:70:2f:45".into(),
                        nickname: "h2".into(),
                        address: "198.18.0.2:6783".into(),
                        outbound: true,
                        established: true,
                    }],
                },
                PeerReport {
                    name: "7e:21:4a:70:2f:45".into(),
                    nickname: "h2".into(),
                    uid: "2".into(),
                    version: 2,
                    connections: vec![PeerConnectionReport {
                        name: "4a:0f:f6:ec:1c:93".into(),
                        nickname: "h1".into(),
                        address: "198.18.0.1:6783".into(),
                        outbound: false,
                        established: true,
                    }],
                },
            ],
            trusted_subnets: vec![],
            relayed: vec![],
            gossip_rejected: vec![crate::status::GossipRejected {
                kind: "record".into(),
                reason: "bad_signature".into(),
                count: 2,
            }],
            punch: crate::status::PunchReport {
                coordinated: 2,
                started: 1,
                succeeded: 1,
                ..Default::default()
            },
        },
        dataplane: None,
        fastdp: None,
        fast_path: None,
        masquerade: None,
        ipam: Some(IpamReport {
            status: "ready".into(),
            range: "10.32.0.0/12".into(),
            default_subnet: "10.32.0.0/12".into(),
            shares: vec![IpamShare {
                peer: "4a:0f:f6:ec:1c:93(h1)".into(),
                ips: 1_048_576,
                percent: 100.0,
                reachable: true,
            }],
            allocations: vec![IpamAllocation {
                id: "pod1".into(),
                addr: "10.32.0.1/12".into(),
            }],
            pending: vec![],
            stats: Default::default(),
            reclaim: None,
            text: String::new(),
            range_size: 1_048_576,
        }),
        handshakes: None,
    }
}

#[test]
fn status_block_matches_weave_layout() {
    let expected = "
        Version: 0.1.0

        Service: router
       Protocol: weft 1
           Name: 4a:0f:f6:ec:1c:93(h1)
     Encryption: enabled
  PeerDiscovery: enabled
        Targets: 2
    Connections: 2 (1 established, 1 failed)
          Peers: 2 (with 2 established connections)
 TrustedSubnets: none

        Service: ipam
         Status: ready
          Range: 10.32.0.0/12
  DefaultSubnet: 10.32.0.0/12

";
    assert_eq!(format_status(&sample()), expected);
}

#[test]
fn connection_lines_match_weave_layout() {
    let expected = "\
-> 198.18.0.2:6783       established encrypted   sleeve 7e:21:4a:70:2f:45(h2) mtu=1376
-> 198.18.0.9:6783       failed      dial tcp 198.18.0.9:6783: connection refused, retry: 2026-11-26 20:55:38 UTC
";
    assert_eq!(format_connections(&sample()), expected);
}

#[test]
fn peer_lines_match_weave_layout() {
    let expected = "\
4a:0f:f6:ec:1c:93(h1)
   -> 198.18.0.2:6783       7e:21:4a:70:2f:45(h2)                 established
7e:21:4a:70:2f:45(h2)
   <- 198.18.0.1:6783       4a:0f:f6:ec:1c:93(h1)                 established
";
    assert_eq!(format_peers(&sample()), expected);
    assert_eq!(
        format_targets(&sample()),
        "198.18.0.2:6783\n198.18.0.9:6783\n"
    );
}

#[test]
fn report_json_round_trips() {
    let r = sample();
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
}

#[test]
fn utc_formatting_is_correct() {
    assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(format_utc(1_795_724_307), "2026-11-26 20:18:27 UTC");
}

fn with_relay() -> Report {
    let mut r = sample();
    r.router.relayed.push(RelayedReport {
        peer_name: "9a:3c:00:11:22:33".into(),
        peer_nickname: "h3".into(),
        via_name: "7e:21:4a:70:2f:45".into(),
        via_nickname: "h2".into(),
        address: "198.18.0.2:6783".into(),
        outbound: true,
        encrypted: true,
        mtu: Some(1168),
        path: String::new(),
        endpoint: None,
    });
    r
}

#[test]
fn relayed_peers_follow_the_connections() {
    let expected = "\
-> 198.18.0.2:6783       established encrypted   sleeve 7e:21:4a:70:2f:45(h2) mtu=1376
-> 198.18.0.9:6783       failed      dial tcp 198.18.0.9:6783: connection refused, retry: 2026-11-26 20:55:38 UTC
-> 198.18.0.2:6783       relayed     encrypted   sleeve 9a:3c:00:11:22:33(h3) via 7e:21:4a:70:2f:45(h2) mtu=1168
";
    assert_eq!(format_connections(&with_relay()), expected);
    // The summary counts connections only: a relayed peer is not one.
    assert!(format_status(&with_relay()).contains("Connections: 2 (1 established, 1 failed)"));
    let r = with_relay();
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
}

#[test]
fn dns_targets_follow_the_users_with_their_name() {
    let mut r = sample();
    r.router.dns_targets = vec![DnsTarget {
        address: "198.18.0.4:6783".into(),
        name: "weft-peers.test:6783".into(),
    }];
    assert_eq!(
        format_targets(&r),
        "198.18.0.2:6783\n198.18.0.9:6783\n198.18.0.4:6783 (dns weft-peers.test:6783)\n"
    );
}

#[test]
fn reports_without_the_new_fields_still_parse() {
    let mut json = serde_json::to_value(sample()).unwrap();
    json["router"].as_object_mut().unwrap().remove("relayed");
    let r: Report = serde_json::from_value(json).unwrap();
    assert!(r.router.relayed.is_empty());
}

/// A structural check of a value against docs/report.schema.json: every key is
/// declared, every required key is present, `$ref` and `oneOf` followed. (The full
/// validation, with a real JSON Schema validator, runs in tests/operator.rs.)
fn conforms(root: &serde_json::Value, schema: &serde_json::Value, v: &serde_json::Value) -> bool {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/definitions/");
        return conforms(root, &root["definitions"][name], v);
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        return options.iter().any(|s| conforms(root, s, v));
    }
    if schema.get("type").and_then(Value::as_str) == Some("null") {
        return v.is_null();
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            required
                .into_iter()
                .flatten()
                .all(|k| map.contains_key(k.as_str().unwrap_or("")))
                && map.iter().all(|(k, item)| match props {
                    Some(p) => p.get(k).is_some_and(|s| conforms(root, s, item)),
                    None => true,
                })
        }
        Value::Array(items) => match schema.get("items") {
            Some(s) => items.iter().all(|item| conforms(root, s, item)),
            None => true,
        },
        _ => true,
    }
}

#[test]
fn report_fields_match_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/report.schema.json")).unwrap();
    let mut r = sample();
    r.dataplane = Some(DataplaneReport {
        peers: vec![PeerTraffic::default()],
        ..Default::default()
    });
    r.handshakes = Some(crate::handshakes::HandshakeReport::default());
    r.fastdp = Some(FastdpReport {
        connections: [("fastdp".to_string(), 1)].into(),
        fallbacks: [("probe_unacknowledged".to_string(), 0)].into(),
        injected_drops: Some(3),
        malformed_probes: 0,
        admitted: vec!["198.18.0.9".into()],
    });
    r.router.relayed = vec![RelayedReport {
        peer_name: "7e:21:4a:70:2f:45".into(),
        peer_nickname: "h2".into(),
        via_name: "7e:21:4a:70:2f:46".into(),
        via_nickname: "h3".into(),
        address: "198.18.0.3:6783".into(),
        outbound: true,
        encrypted: true,
        mtu: Some(1400),
        path: "relayed via 7e:21:4a:70:2f:46(h3)".into(),
        endpoint: None,
    }];
    r.router.dns_targets = vec![DnsTarget {
        address: "198.18.0.4:6783".into(),
        name: "weft-peers.test:6783".into(),
    }];
    r.router.peer_keys = Some(PeerKeysReport {
        path: "/etc/weft/peers".into(),
        keys: 3,
        reloads: 1,
    });
    if let Some(ipam) = r.ipam.as_mut() {
        ipam.reclaim = Some(ReclaimReport {
            after_secs: 20,
            waiting: vec![ReclaimWaiting {
                peer: "7e:21:4a:70:2f:47(h5)".into(),
                down_secs: 30,
                blocked: Some("still named by DNS".into()),
            }],
            done: vec![ReclaimDone {
                peer: "7e:21:4a:70:2f:48(h6)".into(),
                at: "2026-12-04 21:00:00 UTC".into(),
                down_secs: 21,
                outcome: "took 1024 IPs".into(),
            }],
            took: 1,
            other_heir: 0,
            failed: 0,
        });
    }
    let v = serde_json::to_value(&r).unwrap();
    assert!(conforms(&schema, &schema, &v), "{v:#}");
    // The checker does reject an undeclared field.
    let mut extra = v.clone();
    extra["router"]["surprise"] = serde_json::json!(1);
    assert!(!conforms(&schema, &schema, &extra));
}

#[test]
fn connection_lines_show_the_fast_path_and_the_fallback_reason() {
    let mut r = sample();
    let mut fast = conn(
        "198.18.0.2:6783",
        true,
        "established",
        Some(("aa:bb", "h2")),
    );
    fast.overlay = "fastdp".into();
    let mut back = conn(
        "198.18.0.3:6783",
        true,
        "established",
        Some(("cc:dd", "h3")),
    );
    back.overlay_reason = Some("vxlan probes unacknowledged".into());
    r.router.connections = vec![fast, back];
    let text = format_connections(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains(" fastdp aa:bb(h2) mtu=1376"), "{text}");
    assert!(
        lines[1].contains(" sleeve cc:dd(h3) mtu=1376 fastdp: vxlan probes unacknowledged"),
        "{text}"
    );
}

#[test]
fn peer_chosen_text_cannot_drive_the_terminal() {
    let evil = "h2\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{202e}txet\tok\nnext";
    assert_eq!(printable(evil), "h2?[2J?]0;pwned???txet?ok\nnext");
    assert_eq!(printable("plain h1 (é)"), "plain h1 (é)");
}

#[test]
fn a_learnt_endpoint_follows_the_mtu() {
    let mut r = sample();
    let mut nated = conn(
        "198.18.0.253:41234",
        false,
        "established",
        Some(("aa:bb", "h2")),
    );
    nated.endpoint = Some("198.18.0.253:1024".into());
    nated.endpoint_learnt = true;
    let mut plain = conn(
        "198.18.0.3:6783",
        true,
        "established",
        Some(("cc:dd", "h3")),
    );
    plain.endpoint = Some("198.18.0.3:6783".into());
    r.router.connections = vec![nated, plain];
    let text = format_connections(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with(" sleeve aa:bb(h2) mtu=1376 endpoint=198.18.0.253:1024"),
        "{text}"
    );
    assert!(lines[1].ends_with(" sleeve cc:dd(h3) mtu=1376"), "{text}");
}

#[test]
fn the_path_kind_ends_a_connection_line() {
    let mut r = sample();
    let c = &mut r.router.connections[0];
    c.path = Some("tcp fallback".into());
    c.path_reason = Some("no UDP path confirmed".into());
    let text = format_connections(&r);
    let first = text.lines().next().unwrap();
    assert!(
        first.ends_with("mtu=1376 path: tcp fallback (no UDP path confirmed)"),
        "{first}"
    );
    r.router.connections[0].path = Some("direct".into());
    r.router.connections[0].path_reason = None;
    assert!(format_connections(&r)
        .lines()
        .next()
        .unwrap()
        .ends_with(" path: direct"));
    let mut relayed = with_relay();
    relayed.router.relayed[0].path = "relayed via 7e:21:4a:70:2f:45(h2)".into();
    let text = format_connections(&relayed);
    assert!(
        text.contains("mtu=1168 path: relayed via 7e:21:4a:70:2f:45(h2)"),
        "{text}"
    );
    // Punched: the endpoint in the address column, the state `punched`, no relay.
    let mut punched = with_relay();
    punched.router.relayed[0].path = "punched".into();
    punched.router.relayed[0].address = "198.18.0.252:6783".into();
    punched.router.relayed[0].endpoint = Some("198.18.0.252:6783".into());
    let text = format_connections(&punched);
    let line = text.lines().last().unwrap();
    assert_eq!(
        line,
        "-> 198.18.0.252:6783     punched     encrypted   sleeve 9a:3c:00:11:22:33(h3) mtu=1168 path: punched"
    );
}
