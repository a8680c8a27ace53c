//! End-to-end test of the TCP fallback: two hosts whose UDP port 6783 is dropped both
//! ways by nftables inside their own namespaces (TCP allowed).
//!
//! ```text
//! h1 (198.18.0.1) ── switch ── h2 (198.18.0.2)      nft: udp dport/sport 6783 drop
//! ```
//!
//! The control link comes up over TCP; the sleeve's UDP path never confirms, so after the
//! bound each router carries the other's sleeve datagrams inside the encrypted control
//! link: pods ping, and status says `tcp fallback`. Then the drop is removed and the
//! connection must return to the UDP sleeve by itself within 30 s. Captures on h1's
//! underlay link during the fallback and after show no plaintext of the ping's pattern.
//!
//! Real `weft` routers in test namespaces; needs root, `nft` and `tcpdump`. Run
//! `cargo test --test tcp_fallback -- --nocapture` to see the figures (lines `e2e:`).

mod common;

use common::capture::{udp, Capture};
use common::traffic::{count, ping, ping_series};
use common::weft::{parse_connections, Auth, Router};
use common::{wait_until, Net};
use std::time::{Duration, Instant};

const H1: &str = "198.18.0.1";
/// The pattern the pings carry (`ping -p`): it must never appear on the underlay.
const PATTERN_HEX: &str = "57454654fa11bac4c0ffee0d15ea5e01";
/// What of it is looked for in captures (8 bytes: a match by chance is out of reach).
const NEEDLE: [u8; 8] = [0x57, 0x45, 0x46, 0x54, 0xfa, 0x11, 0xba, 0xc4];

/// A pod attached by `weft attach`: its namespace and overlay address.
struct PodInfo {
    ns: String,
    v4: String,
}

/// Attaches pod 1 on host `h`: 10.40.h.2/16.
fn attach_pod(net: &mut Net, host: usize) -> PodInfo {
    let ns = net.add_bare_pod(host, 1);
    let v4 = format!("10.40.{host}.2");
    net.attach(host, &[&format!("{v4}/16")], &ns);
    PodInfo { ns, v4 }
}

fn nft(net: &Net, host: usize, args: &[&str]) {
    let out = net.exec(&net.host(host).ns, "nft", args);
    assert!(
        out.status.success(),
        "nft {args:?} in h{host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Drops UDP to and from port 6783 in host `host`'s namespace (table `inet wefttest`).
fn block_udp(net: &Net, host: usize) {
    nft(net, host, &["add", "table", "inet", "wefttest"]);
    for (chain, hook) in [("in", "input"), ("out", "output")] {
        let spec = format!("{{ type filter hook {hook} priority 0 ; policy accept ; }}");
        nft(
            net,
            host,
            &["add", "chain", "inet", "wefttest", chain, &spec],
        );
        for port in ["dport", "sport"] {
            nft(
                net,
                host,
                &[
                    "add", "rule", "inet", "wefttest", chain, "udp", port, "6783", "drop",
                ],
            );
        }
    }
}

fn unblock_udp(net: &Net, host: usize) {
    nft(net, host, &["delete", "table", "inet", "wefttest"]);
}

fn report(net: &Net, host: usize) -> serde_json::Value {
    let out = net.weft_ok(host, &["report"]);
    serde_json::from_str(&out).expect("weft report is JSON")
}

/// Host `host`'s connection to the peer named `peer` in `weft report`.
fn connection(net: &Net, host: usize, peer: &str) -> serde_json::Value {
    let r = report(net, host);
    r["router"]["connections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["peer_name"] == peer).cloned())
        .unwrap_or_else(|| panic!("h{host} has no connection to {peer}: {r}"))
}

/// Host `host`'s data-plane counter `field` for the peer named `peer`.
fn counter(net: &Net, host: usize, peer: &str, field: &str) -> u64 {
    let r = report(net, host);
    r["dataplane"]["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == peer))
        .and_then(|p| p[field].as_u64())
        .unwrap_or_else(|| panic!("h{host} has no {field} for {peer}: {r}"))
}

/// `weft status connections` of host `host`.
fn status_connections(net: &Net, host: usize) -> String {
    String::from_utf8_lossy(&net.weft(host, &["status", "connections"]).stdout).into_owned()
}

/// Whether host `host`'s status shows its one connection established with `path: KIND`.
fn shows_path(net: &Net, host: usize, kind: &str) -> bool {
    let text = status_connections(net, host);
    parse_connections(&text).is_ok_and(|cs| {
        cs.iter()
            .any(|c| c.state == "established" && c.line.contains(&format!(" path: {kind}")))
    })
}

/// What a capture on the underlay saw: packets carrying the pattern, UDP 6783 packets,
/// TCP packets (anything else on 6783 is the control link).
struct Seen {
    plaintext: usize,
    udp_sleeve: usize,
    total: usize,
}

fn seen(capture: Capture) -> Seen {
    let raw = capture.raw();
    let pcap = capture.stop();
    let udp_sleeve = pcap
        .packets
        .iter()
        .filter_map(|p| udp(p))
        .filter(|u| u.sport == 6783 && u.dport == 6783)
        .count();
    Seen {
        plaintext: count(&raw, &NEEDLE),
        udp_sleeve,
        total: pcap.packets.len(),
    }
}

#[test]
fn udp_blocked_falls_back_to_tcp_and_returns_when_unblocked() {
    let mut net = Net::new("tcpfb", 2);
    block_udp(&net, 1);
    block_udp(&net, 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let r1 = Router::launch(&net, 1, &auth, &[]);
    let r2 = Router::launch(&net, 2, &auth, &[H1]);
    // The connection is established only by the fallback (UDP never confirms).
    let start = Instant::now();
    let took = net.wait_established(&[(1, 1), (2, 1)]);
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            shows_path(&net, 1, "tcp fallback") && shows_path(&net, 2, "tcp fallback")
        })
        .is_some(),
        "no tcp fallback in status:\nh1:\n{}\nh2:\n{}",
        status_connections(&net, 1),
        status_connections(&net, 2)
    );
    let c = connection(&net, 1, r2.bare_name());
    println!(
        "e2e: tcp_fallback: established by the fallback in {:.1} s; h1 shows: path {} ({})",
        took.as_secs_f64(),
        c["path"],
        c["path_reason"]
    );
    assert_eq!(c["path"], "tcp fallback", "{c}");
    assert_eq!(c["path_reason"], "no UDP path confirmed", "{c}");
    assert!(
        start.elapsed() >= Duration::from_secs(9),
        "fell back before the bound"
    );

    let pod1 = attach_pod(&mut net, 1);
    let pod2 = attach_pod(&mut net, 2);
    let reachable = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        ping(&net, &pod1.ns, &pod2.v4) && ping(&net, &pod2.ns, &pod1.v4)
    });
    assert!(reachable.is_some(), "pods cannot ping over the fallback");

    // During the fallback: the pattern crosses as pings, never in clear, never by UDP.
    let tcp_before = counter(&net, 1, r2.bare_name(), "tcp_tx_datagrams");
    let h1_ns = net.host(1).ns.clone();
    let cap = Capture::start(&net, &h1_ns, "eth0", &[], 0, "fallback");
    // A positive control: the pattern is visible where it is plaintext (the pod's link).
    let pod_cap = Capture::start(&net, &pod1.ns, "ethwe0", &["icmp"], 0, "pod-fallback");
    let pattern = ["-p", PATTERN_HEX, "-s", "200"];
    let there = ping_series(&net, &pod1.ns, &pod2.v4, 20, "0.1", &pattern);
    let back = ping_series(&net, &pod2.ns, &pod1.v4, 20, "0.1", &pattern);
    let during = seen(cap);
    let control = seen(pod_cap);
    let tcp_after = counter(&net, 1, r2.bare_name(), "tcp_tx_datagrams");
    let rx_tcp = counter(&net, 1, r2.bare_name(), "tcp_rx_datagrams");
    println!(
        "e2e: tcp_fallback: during the fallback ping {}/{} and {}/{}; h1 sent {} datagrams \
         by TCP, received {}; capture: {} packets, {} UDP 6783, {} with the pattern \
         (pod link: {})",
        there.received,
        there.transmitted,
        back.received,
        back.transmitted,
        tcp_after - tcp_before,
        rx_tcp,
        during.total,
        during.udp_sleeve,
        during.plaintext,
        control.plaintext
    );
    assert_eq!(there.lost(), 0, "{}", there.output);
    assert_eq!(back.lost(), 0, "{}", back.output);
    assert!(
        control.plaintext >= 40,
        "the positive control saw no pattern"
    );
    assert_eq!(
        during.plaintext, 0,
        "plaintext on the underlay during the fallback"
    );
    assert_eq!(
        during.udp_sleeve, 0,
        "UDP 6783 on the wire while it is dropped"
    );
    assert!(during.total > 40, "the capture saw no traffic");
    assert!(tcp_after >= tcp_before + 40, "the frames did not go by TCP");
    assert!(rx_tcp >= 40, "nothing received by TCP");

    // Unblock UDP: back on the sleeve by itself within 30 s, in status and counters.
    unblock_udp(&net, 1);
    unblock_udp(&net, 2);
    let back_in = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        shows_path(&net, 1, "direct") && shows_path(&net, 2, "direct")
    })
    .unwrap_or_else(|| {
        panic!(
            "not back on the UDP sleeve within 30 s:\nh1:\n{}\nh2:\n{}",
            status_connections(&net, 1),
            status_connections(&net, 2)
        )
    });
    let c = connection(&net, 1, r2.bare_name());
    assert_eq!(c["path"], "direct", "{c}");
    assert_eq!(c["path_reason"], serde_json::Value::Null, "{c}");
    let tcp_before = counter(&net, 1, r2.bare_name(), "tcp_tx_datagrams");
    let udp_before = counter(&net, 1, r2.bare_name(), "tx_frames");
    let cap = Capture::start(&net, &h1_ns, "eth0", &[], 0, "after");
    let there = ping_series(&net, &pod1.ns, &pod2.v4, 20, "0.1", &pattern);
    let back = ping_series(&net, &pod2.ns, &pod1.v4, 20, "0.1", &pattern);
    let after = seen(cap);
    let tcp_after = counter(&net, 1, r2.bare_name(), "tcp_tx_datagrams");
    let frames_after = counter(&net, 1, r2.bare_name(), "tx_frames");
    let fallbacks = counter(&net, 1, r2.bare_name(), "fallbacks");
    println!(
        "e2e: tcp_fallback: back on the UDP sleeve {:.1} s after the unblock; ping {}/{} \
         and {}/{}; by TCP since: {}; capture: {} packets, {} UDP 6783, {} with the pattern; \
         fallbacks counted: {fallbacks}",
        back_in.as_secs_f64(),
        there.received,
        there.transmitted,
        back.received,
        back.transmitted,
        tcp_after - tcp_before,
        after.total,
        after.udp_sleeve,
        after.plaintext
    );
    assert_eq!(there.lost(), 0, "{}", there.output);
    assert_eq!(back.lost(), 0, "{}", back.output);
    assert_eq!(
        after.plaintext, 0,
        "plaintext on the underlay after the return"
    );
    assert!(after.udp_sleeve >= 40, "the frames did not go by UDP");
    assert_eq!(tcp_after, tcp_before, "frames still go by TCP");
    assert!(frames_after >= udp_before + 20);
    assert_eq!(fallbacks, 1, "h1 fell back more than once");
    for (r, name) in [(&r1, "h1"), (&r2, "h2")] {
        let log = r.log();
        assert!(
            log.contains("tcp fallback") && log.contains("back on the UDP sleeve"),
            "{name} did not log both switches:\n{}",
            common::tail(&log, 40)
        );
    }
}
