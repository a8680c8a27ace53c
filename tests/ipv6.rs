//! End-to-end tests of IPv6 underlays.
//!
//! 1. Three hosts whose underlay is IPv6 only (fd00::X/64 on the switch, no IPv4
//!    address at all): the encrypted mesh comes up from `[fd00::1]:6783` peers, pods
//!    ping each other over their IPv4 overlay addresses (10.40.X.2) and over IPv6
//!    addresses added in the pods (fd40::X:2/64; the overlay is layer 2), and every
//!    connection's overlay MTU is what a 1500-byte IPv6 path carries (1391, less than
//!    the 1408 of an IPv4 one: the IPv6 header is 20 bytes longer and the sleeve's
//!    padding step is 16).
//! 2. A mixed mesh: h1 has only IPv4, h2 only IPv6, h3 both. h1 and h2 cannot
//!    address each other at all; they mesh through h3 and their pods' traffic is
//!    relayed by it, which status shows.
//!
//! ```text
//! h1 (198.18.0.1)           ─┐
//! h2 (fd00::2)              ─┼─ switch (one bridge)
//! h3 (198.18.0.3, fd00::3)  ─┘
//! ```
//!
//! Real `weft` routers in test namespaces; needs root. Run
//! `cargo test --test ipv6 -- --nocapture` to see the figures (lines starting `e2e:`).

mod common;

use common::traffic::{ping, ping_series, transfer};
use common::weft::{parse_connections, parse_peers, Auth, Router};
use common::{wait_until, Net};
use datapath::dataplane::path_mtu::{datagram_for_path, mtu_for_datagram};
use datapath::sleeve::IpVersion;
use std::time::Duration;

/// The overlay MTU a 1500-byte path of version `ip` allows, capped by the configured
/// (default) 1408.
fn path_mtu(ip: IpVersion) -> u32 {
    u32::from(mtu_for_datagram(datagram_for_path(1500, ip))).min(1408)
}

/// A pod attached by `weft attach` with 10.40.h.2/16, plus fd40::h:2/64 added by hand.
struct PodInfo {
    ns: String,
    v4: String,
    v6: String,
}

fn attach_pod(net: &mut Net, host: usize) -> PodInfo {
    let ns = net.add_bare_pod(host, 1);
    let v4 = format!("10.40.{host}.2");
    net.attach(host, &[&format!("{v4}/16")], &ns);
    let v6 = format!("fd40::{host}:2");
    // `weft attach` names the pod's interface ethwe0.
    net.add_addr6(&ns, "ethwe0", &format!("{v6}/64"));
    PodInfo { ns, v4, v6 }
}

fn status(net: &Net, host: usize, what: &str) -> String {
    String::from_utf8_lossy(&net.weft(host, &["status", what]).stdout).into_owned()
}

fn report(net: &Net, host: usize) -> serde_json::Value {
    let out = net.weft_ok(host, &["report"]);
    serde_json::from_str(&out).expect("weft report is JSON")
}

/// `mtu=N` of each established connection of `host`, by address.
fn connection_mtus(net: &Net, host: usize) -> Vec<(String, Option<u32>)> {
    let text = status(net, host, "connections");
    let conns = parse_connections(&text).unwrap_or_default();
    conns
        .iter()
        .filter(|c| c.state == "established")
        .map(|c| {
            let mtu = c
                .line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("mtu="))
                .and_then(|m| m.parse().ok());
            (c.address.clone(), mtu)
        })
        .collect()
}

/// Waits until `from` reaches `to` over IPv4 and IPv6, then checks a short series of
/// each loses nothing.
fn assert_pods_talk(net: &Net, from: &PodInfo, to: &PodInfo) {
    for addr in [&to.v4, &to.v6] {
        let took = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            ping(net, &from.ns, addr)
        })
        .unwrap_or_else(|| panic!("{} cannot ping {addr} within 20 s", from.ns));
        let series = ping_series(net, &from.ns, addr, 10, "0.1", &[]);
        println!(
            "e2e: ipv6: {} -> {addr}: first reply after {:.2} s, then {}/{}",
            from.ns,
            took.as_secs_f64(),
            series.received,
            series.transmitted
        );
        assert_eq!(series.lost(), 0, "{}", series.output);
    }
}

#[test]
fn three_hosts_on_an_ipv6_only_underlay_mesh_and_carry_v4_and_v6_pods() {
    let mut net = Net::new("v6only", 3);
    let a: Vec<_> = (1..=3)
        .map(|h| net.set_underlay(h, false, true).expect("an IPv6 address"))
        .collect();
    let (ns1, ns2) = (net.host(1).ns.clone(), net.host(2).ns.clone());
    assert!(net.ping6(&ns2, a[0]), "h2 cannot reach h1 over IPv6");
    assert!(
        !net.ping(&ns2, net.host(1).addr),
        "h2 reaches h1 over IPv4: the underlay is not IPv6 only"
    );
    assert!(
        !net.ping(&ns1, net.host(2).addr),
        "h1 reaches h2 over IPv4: the underlay is not IPv6 only"
    );

    let auth = Auth::PasswordFile(net.new_secret("secret"));
    // Trusted, so that the fast path would be eligible: over IPv6 it must say why not.
    let trust = ["--trusted-subnets", "fd00::/8"];
    let r1 = Router::launch_with(&net, 1, &auth, &trust, &[]);
    let _r2 = Router::launch_with(&net, 2, &auth, &trust, &["[fd00::1]:6783"]);
    // The bracketed form without a port, and h3 finds h2 by discovery.
    let _r3 = Router::launch_with(&net, 3, &auth, &trust, &["[fd00::1]"]);
    let took = net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    println!(
        "e2e: ipv6: 3 routers on an IPv6-only underlay meshed in {:.2} s",
        took.as_secs_f64()
    );

    // Every address is printed [fd00::X]:port, in status and report.
    for h in 1..=3 {
        let text = status(&net, h, "connections");
        let conns = parse_connections(&text).expect("parse status connections");
        assert!(
            conns
                .iter()
                .filter(|c| c.state == "established")
                .all(|c| c.address.starts_with("[fd00::") && c.address.contains("]:")),
            "h{h}: an established connection is not at [fd00::X]:port:\n{text}"
        );
        let r = report(&net, h);
        let conns = r["router"]["connections"].as_array().expect("connections");
        for c in conns.iter().filter(|c| c["state"] == "established") {
            let endpoint = c["endpoint"].as_str().unwrap_or("");
            assert!(
                endpoint.starts_with("[fd00::") && endpoint.ends_with("]:6783"),
                "h{h}: sleeve endpoint {endpoint:?} is not [fd00::X]:6783: {c}"
            );
            assert_eq!(c["overlay"], "sleeve", "h{h}: {c}");
            assert_eq!(
                c["overlay_reason"], "IPv6 underlay, the fast path is IPv4 only",
                "h{h}: a trusted IPv6 connection does not say why it is on sleeve: {c}"
            );
        }
        let targets = net.weft_ok(h, &["status", "targets"]);
        if h != 1 {
            assert!(
                targets.contains("[fd00::1]:6783"),
                "h{h}: status targets lacks [fd00::1]:6783:\n{targets}"
            );
        }
    }
    // `weft forget` and `weft connect` take the bare, bracketed and port forms.
    let forgot = net.weft_ok(3, &["forget", "fd00::1"]);
    assert_eq!(
        forgot.trim(),
        "1",
        "h3: weft forget fd00::1 printed {forgot:?}"
    );
    let targets = net.weft_ok(3, &["status", "targets"]);
    assert!(
        targets.trim().is_empty(),
        "h3 targets after forget:\n{targets}"
    );
    net.weft_ok(3, &["connect", "[fd00::1]:6783"]);
    let targets = net.weft_ok(3, &["status", "targets"]);
    assert_eq!(targets.trim(), "[fd00::1]:6783", "h3 targets after connect");

    // The topology gossiped to h1: each peer reports its two links, at IPv6 addresses.
    let gossiped = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let peers = status(&net, 1, "peers");
        parse_peers(&peers).is_ok_and(|blocks| {
            blocks.len() == 3 && blocks.iter().all(|b| b.connections.len() == 2)
        })
    });
    let peers = status(&net, 1, "peers");
    assert!(gossiped.is_some(), "h1 status peers:\n{peers}");
    let blocks = parse_peers(&peers).expect("parse status peers");
    assert!(
        blocks
            .iter()
            .flat_map(|b| &b.connections)
            .all(|c| c.contains("[fd00::")),
        "h1 status peers shows a non-IPv6 address:\n{peers}"
    );
    println!("e2e: ipv6: h1 `status peers`:\n{peers}");

    // The overlay MTU of each (IPv6) path.
    let want = path_mtu(IpVersion::V6);
    assert_eq!(want, 1391);
    let measured = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        (1..=3).all(|h| {
            let m = connection_mtus(&net, h);
            m.len() == 2 && m.iter().all(|(_, mtu)| *mtu == Some(want))
        })
    });
    let shown: Vec<_> = (1..=3).map(|h| connection_mtus(&net, h)).collect();
    println!("e2e: ipv6: connection MTUs: {shown:?}");
    assert!(
        measured.is_some(),
        "the IPv6 paths' overlay MTU is not {want} everywhere: {shown:?}"
    );

    let pods: Vec<PodInfo> = (1..=3).map(|h| attach_pod(&mut net, h)).collect();
    for (i, from) in pods.iter().enumerate() {
        for (j, to) in pods.iter().enumerate() {
            if i != j {
                assert_pods_talk(&net, from, to);
            }
        }
    }
    drop(r1);
}

#[test]
fn a_v4_only_and_a_v6_only_host_mesh_through_a_dual_stack_one() {
    let mut net = Net::new("v6mixed", 3);
    // h1: IPv4 only (as made); h2: IPv6 only; h3: both.
    let a2 = net.set_underlay(2, false, true).expect("h2's IPv6 address");
    let a3 = net.set_underlay(3, true, true).expect("h3's IPv6 address");
    let (a1, a3v4) = (net.host(1).addr, net.host(3).addr);
    let (ns1, ns2) = (net.host(1).ns.clone(), net.host(2).ns.clone());
    assert!(net.ping(&ns1, a3v4), "h1 cannot reach h3 over IPv4");
    assert!(net.ping6(&ns2, a3), "h2 cannot reach h3 over IPv6");
    assert!(!net.ping6(&ns1, a2), "h1 reaches h2 over IPv6");
    assert!(!net.ping(&ns2, a1), "h2 reaches h1 over IPv4");

    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let r3 = Router::launch(&net, 3, &auth, &[]);
    let r1 = Router::launch(&net, 1, &auth, &["198.18.0.3"]);
    let r2 = Router::launch(&net, 2, &auth, &["[fd00::3]:6783"]);
    let took = net.wait_established(&[(1, 1), (2, 1), (3, 2)]);
    println!(
        "e2e: ipv6 mixed: h1 (v4) - h3 - h2 (v6) established in {:.2} s",
        took.as_secs_f64()
    );
    // h3 holds one link of each family.
    let text = status(&net, 3, "connections");
    let conns = parse_connections(&text).expect("parse status connections");
    let established: Vec<_> = conns.iter().filter(|c| c.state == "established").collect();
    assert!(
        established
            .iter()
            .any(|c| c.address.starts_with("198.18.0.1:"))
            && established
                .iter()
                .any(|c| c.address.starts_with("[fd00::2]:")),
        "h3 does not hold an IPv4 link to h1 and an IPv6 link to h2:\n{text}"
    );
    // Overlay MTU per path: h3's IPv4 link 1408, its IPv6 link 1391.
    let measured = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let m = connection_mtus(&net, 3);
        m.iter()
            .any(|(a, mtu)| a.starts_with("198.18.0.1:") && *mtu == Some(path_mtu(IpVersion::V4)))
            && m.iter().any(|(a, mtu)| {
                a.starts_with("[fd00::2]:") && *mtu == Some(path_mtu(IpVersion::V6))
            })
    });
    let shown = connection_mtus(&net, 3);
    println!("e2e: ipv6 mixed: h3 connection MTUs: {shown:?}");
    assert!(
        measured.is_some(),
        "h3's MTUs are not 1408 (v4 path) and 1391 (v6 path): {shown:?}"
    );

    // h1 and h2 learn each other's record, so a route through h3.
    let has_record = |host: usize, r: &Router| {
        status(&net, host, "peers")
            .lines()
            .any(|l| l.starts_with(r.bare_name()))
    };
    wait_until(Duration::from_secs(40), Duration::from_millis(100), || {
        has_record(1, &r2) && has_record(2, &r1)
    })
    .unwrap_or_else(|| {
        panic!(
            "h1 and h2 never learnt each other's record:\nh1:\n{}\nh2:\n{}",
            status(&net, 1, "peers"),
            status(&net, 2, "peers")
        )
    });

    let pods: Vec<PodInfo> = (1..=3).map(|h| attach_pod(&mut net, h)).collect();
    assert_pods_talk(&net, &pods[0], &pods[1]);
    assert_pods_talk(&net, &pods[1], &pods[0]);
    assert_pods_talk(&net, &pods[0], &pods[2]);
    assert_pods_talk(&net, &pods[1], &pods[2]);

    // The relayed path h1 -> h3 -> h2 is narrower than its first hop (IPv4 then IPv6):
    // a packet that fits h1's limit for a relayed frame (1408 - 32 = 1376) but not
    // h3's onward one (1391 - 32 = 1359) is answered by h3 with an ICMP "too big"
    // through the sleeve, so pod1 learns 1359 rather than losing such packets silently.
    let hop_v6 = path_mtu(IpVersion::V6) - 32;
    let df_ping = |size: u32| {
        let s = (size - 28).to_string();
        let args = [
            "-4",
            "-c",
            "1",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            &s,
            &pods[1].v4,
        ];
        let out = net.exec(&pods[0].ns, "ping", &args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let mut told = String::new();
    for _ in 0..3 {
        let (ok, text) = df_ping(1376);
        assert!(
            !ok,
            "a 1376-byte DF packet crossed the {hop_v6}-byte relayed hop:\n{text}"
        );
        told.push_str(&text);
    }
    assert!(
        told.contains(&format!("mtu = {hop_v6}")) || told.contains(&format!("mtu={hop_v6}")),
        "pod1 was never told the relayed path's MTU {hop_v6}:\n{told}"
    );
    let (ok, text) = df_ping(hop_v6);
    assert!(
        ok,
        "a {hop_v6}-byte DF packet did not cross the relay:\n{text}"
    );
    // And TCP, whose segments pod1 sizes from its 1408-byte interface, gets through.
    let (sent, received) = transfer(&pods[0].ns, &pods[1].ns, &pods[1].v4, 4 << 20);
    assert_eq!(sent, received, "4 MiB pod1 -> pod2 via h3 arrived altered");
    println!("e2e: ipv6 mixed: relayed path MTU {hop_v6} learnt by pod1 from h3's reply; 4 MiB pod1 -> pod2 intact");

    // h1 and h2 have no working direct link; status says the other is relayed via h3.
    for (host, far) in [(1, &r2), (2, &r1)] {
        let text = status(&net, host, "connections");
        let conns = parse_connections(&text).expect("parse status connections");
        assert_eq!(
            conns.iter().filter(|c| c.state == "established").count(),
            1,
            "h{host} has a direct link besides h3:\n{text}"
        );
        let relayed: Vec<_> = conns.iter().filter(|c| c.state == "relayed").collect();
        assert!(
            relayed.iter().any(|c| c.line.contains(far.bare_name())
                && c.line.contains(&format!("via {}", r3.name))),
            "h{host} does not show {} relayed via h3:\n{text}",
            far.name
        );
        println!("e2e: ipv6 mixed: h{host} `status connections`:\n{text}");
    }
}
