//! End-to-end test of path MTU discovery: two hosts with 1500-byte links whose path
//! crosses a 1280-byte hop (a router namespace between them).
//!
//! ```text
//! h1 (198.18.0.1, mtu 1500) ── switch ── r (198.18.0.254 | 198.18.1.254, eth1 mtu 1280) ── h2 (198.18.1.2, mtu 1500)
//! ```
//!
//! Real `weft` routers in test namespaces; needs root. Run
//! `cargo test --test pmtu -- --nocapture` to see the figures (lines starting `e2e:`).

mod common;

use common::traffic::transfer;
use common::weft::{parse_connections, Auth, Router};
use common::{wait_until, Net};
use std::time::{Duration, Instant};

const H1: &str = "198.18.0.1";
/// The narrow hop.
const HOP_MTU: u32 = 1280;
/// The configured (default) overlay MTU: a 1500-byte IPv4 underlay less the sleeve.
const CONFIGURED: u32 = 1408;

fn status(net: &Net, host: usize, what: &str) -> String {
    String::from_utf8_lossy(&net.weft(host, &["status", what]).stdout).into_owned()
}

/// The `mtu=N` of host `host`'s established connection, if shown.
fn connection_mtu(net: &Net, host: usize) -> Option<u32> {
    let text = status(net, host, "connections");
    let conns = parse_connections(&text).ok()?;
    let c = conns.iter().find(|c| c.state == "established")?;
    c.line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mtu="))
        .and_then(|m| m.parse().ok())
}

/// `drops_mtu` of `weft report` on `host`.
fn mtu_drops(net: &Net, host: usize) -> u64 {
    let report = net.weft_ok(host, &["report"]);
    let json: serde_json::Value = serde_json::from_str(&report).expect("report is JSON");
    json["dataplane"]["drops_mtu"]
        .as_u64()
        .unwrap_or_else(|| panic!("no dataplane.drops_mtu in weft report:\n{report}"))
}

/// MTU of interface `ifname` in namespace `ns`.
fn link_mtu(net: &Net, ns: &str, ifname: &str) -> u32 {
    let out = net.exec(ns, "cat", &[&format!("/sys/class/net/{ifname}/mtu")]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("mtu of {ifname} in {ns}: {out:?}"))
}

#[test]
fn path_mtu_is_discovered_and_too_big_packets_get_icmp() {
    let mut net = Net::new("pmtu", 1);
    let h2 = net.add_routed_host(HOP_MTU);
    let a2 = net.host(h2).addr;
    assert!(
        net.ping(&net.host(1).ns, a2),
        "h1 cannot reach h2 through r"
    );
    // The underlay itself: a 1400-byte DF ping from h1 meets the 1280 hop.
    let df = net.exec(
        &net.host(1).ns,
        "ping",
        &[
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1400",
            &a2.to_string(),
        ],
    );
    assert!(
        !df.status.success(),
        "a 1428-byte DF packet crossed the 1280-byte hop"
    );

    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let _r1 = Router::launch(&net, 1, &auth, &[]);
    let _r2 = Router::launch(&net, h2, &auth, &[H1]);
    let took = net.wait_established(&[(1, 1), (h2, 1)]);
    let start = Instant::now();
    let discovered = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        [1, h2]
            .iter()
            .all(|&h| connection_mtu(&net, h).is_some_and(|m| m < CONFIGURED))
    });
    let (m1, m2) = (connection_mtu(&net, 1), connection_mtu(&net, h2));
    println!(
        "e2e: pmtu: established in {:.2} s; path MTU discovered {} later: h1 mtu={m1:?}, h2 mtu={m2:?}",
        took.as_secs_f64(),
        discovered.map_or("never (20 s)".into(), |_| format!(
            "{:.2} s",
            start.elapsed().as_secs_f64()
        ))
    );
    assert!(
        discovered.is_some(),
        "status connections never showed an mtu below {CONFIGURED}:\nh1:\n{}\nh2:\n{}",
        status(&net, 1, "connections"),
        status(&net, h2, "connections")
    );
    // 1280 − IP 20 − UDP 8 − sleeve header 16, tag 16, entry header 3 − Ethernet 14,
    // less up to 15 bytes of padding: between 1188 and 1203.
    let worst = datapath::sleeve::overlay_mtu(1280, datapath::sleeve::IpVersion::V4) as u32;
    for m in [m1, m2].into_iter().flatten() {
        assert!(
            (worst..=HOP_MTU - 77).contains(&m),
            "mtu={m} is not 1280 less the overhead"
        );
    }
    let mtu = m1.expect("h1 shows an mtu");

    // The bridge follows the narrowest path, but not below 1280 (IPv6 needs 1280).
    for h in [1, h2] {
        let ns = net.host(h).ns.clone();
        assert_eq!(link_mtu(&net, &ns, "weft"), 1280, "bridge weft on h{h}");
    }

    let pod1 = net.add_bare_pod(1, 1);
    let pod2 = net.add_bare_pod(h2, 1);
    net.attach(1, &["10.40.1.2/16"], &pod1);
    net.attach(h2, &["10.40.2.2/16"], &pod2);
    assert_eq!(link_mtu(&net, &pod1, "ethwe0"), 1280, "a new pod's MTU");
    let reached = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        common::traffic::ping(&net, &pod1, "10.40.2.2")
    });
    assert!(reached.is_some(), "pod h1 cannot ping pod h2");

    // A DF packet between the path MTU and the pod's 1280: the router answers.
    let drops_before = mtu_drops(&net, 1);
    let size = (mtu + 40 - 28).to_string(); // 40 bytes over the path MTU
    let out = net.exec(
        &pod1,
        "ping",
        &[
            "-4",
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            &size,
            "10.40.2.2",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "e2e: pmtu: ping -M do -s {size} from pod h1:\n{}",
        text.trim()
    );
    let told = [
        format!("Frag needed and DF set (mtu = {mtu})"),
        format!("message too long, mtu={mtu}"),
    ];
    assert!(
        told.iter().any(|t| text.contains(t.as_str())),
        "ping -M do -s {size} did not learn mtu {mtu}:\n{text}"
    );
    let drops_after = mtu_drops(&net, 1);
    println!("e2e: pmtu: h1 drops_mtu {drops_before} -> {drops_after}");
    assert!(
        drops_after > drops_before,
        "the mtu drop counter did not rise"
    );

    // TCP adapts: several MB pod to pod, both ways, intact.
    let total = 8 * 1024 * 1024;
    for (from, to, addr) in [(&pod1, &pod2, "10.40.2.2"), (&pod2, &pod1, "10.40.1.2")] {
        let t = Instant::now();
        let (sent, received) = transfer(from, to, addr, total);
        assert_eq!(sent, received, "8 MiB {from} -> {to} arrived altered");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "e2e: pmtu: 8 MiB {from} -> {to} intact in {secs:.1} s ({:.0} Mbit/s, debug build)",
            total as f64 * 8.0 / secs / 1e6
        );
    }
}
