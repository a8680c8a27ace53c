//! End-to-end tests of the data plane: pods on different hosts share one encrypted
//! L2 segment (sleeve). Real routers, real TAP devices and bridges, real namespaces.

mod common;

use common::traffic::{ping, transfer};
use common::weft::{three_routers, Auth, Router};
use common::{wait_until, Net};
use std::time::{Duration, Instant};

#[test]
fn pods_on_three_hosts_share_one_encrypted_segment() {
    let mut net = Net::new("dpmesh", 3);
    let secret = net.new_secret("secret");
    let auth = Auth::PasswordFile(secret);
    let _routers = three_routers(&net, &auth);

    // Two pods per host, attached by weft with an IPv4 and an IPv6 (ULA) address.
    let mut pods = Vec::new();
    for host in 1..=3 {
        for k in 1..=2 {
            let ns = net.add_bare_pod(host, k);
            let v4 = format!("10.40.{host}.{}", k + 1);
            let v6 = format!("fd00:40::{host}:{k}");
            let out = net.weft(
                host,
                &["attach", &format!("{v4}/16"), &format!("{v6}/64"), &ns],
            );
            assert!(
                out.status.success(),
                "weft attach on h{host}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let printed = String::from_utf8_lossy(&out.stdout);
            assert!(printed.contains(&v4), "attach printed {printed:?}");
            pods.push((ns, v4, v6));
        }
    }
    // The interface inside the pod has the overlay MTU.
    let link = net.exec(&pods[0].0, "ip", &["link", "show", "ethwe0"]);
    assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 1408"));

    // Every pod reaches every other pod, over IPv4 and IPv6 (IPv6 waits out DAD).
    let start = Instant::now();
    let mut failures = Vec::new();
    for (from, _, _) in &pods {
        for (to, v4, v6) in &pods {
            if from == to {
                continue;
            }
            for addr in [v4, v6] {
                let ok = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
                    ping(&net, from, addr)
                });
                if ok.is_none() {
                    failures.push(format!("{from} -> {to} ({addr})"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "unreachable: {failures:#?}");
    println!(
        "e2e: all 60 pod-to-pod pings (30 IPv4, 30 IPv6) answered within {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // 100 MB from a pod on h1 to a pod on h3 arrives intact.
    let total = 100 * 1024 * 1024;
    let t = Instant::now();
    let (sent, received) = transfer(&pods[0].0, &pods[4].0, &pods[4].1, total);
    assert_eq!(sent, received, "the 100 MB arrived altered");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "e2e: 100 MiB pod h1 -> pod h3 intact in {secs:.1} s ({:.0} Mbit/s, debug build)",
        total as f64 * 8.0 / secs / 1e6
    );

    // The data plane's counters saw it: h1 sent at least 100 MiB of frames to h3.
    let report = net.weft(1, &["report"]);
    let report: serde_json::Value =
        serde_json::from_slice(&report.stdout).expect("weft report is JSON");
    let h3 = _routers[2].bare_name().to_string();
    let to_h3 = report["dataplane"]["peers"]
        .as_array()
        .expect("dataplane.peers in the report")
        .iter()
        .find(|p| p["name"] == h3.as_str())
        .unwrap_or_else(|| panic!("no counters for h3 ({h3}) in {report}"));
    let tx = to_h3["tx_bytes"].as_u64().unwrap_or(0);
    assert!(
        tx >= total as u64,
        "h1 counted {tx} bytes to h3, sent {total}"
    );
    assert_eq!(to_h3["drops_auth"], 0, "{to_h3}");
    assert_eq!(to_h3["established"], true, "{to_h3}");

    // Detach removes the interface from the pod.
    let out = net.weft(1, &["detach", &pods[1].0]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = net.exec(&pods[1].0, "ip", &["link", "show", "ethwe0"]);
    assert!(
        !link.status.success(),
        "ethwe0 still in the pod after detach"
    );
}

#[test]
fn attach_refuses_bad_input_clearly() {
    let mut net = Net::new("dpbad", 1);
    let _r = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let pod = net.add_bare_pod(1, 1);
    let cases: [(&[&str], &str); 4] = [
        // Without a CIDR an address is allocated, and given back when attach fails.
        (&["attach", "no-such-netns-y"], "no-such-netns-y"),
        (&["attach", "10.40.0.1/33", &pod], "invalid CIDR"),
        (
            &["attach", "10.40.0.1/16", "no-such-netns-x"],
            "no-such-netns-x",
        ),
        (
            &["attach", "--ifname", "a/b", "10.40.0.1/16", &pod],
            "invalid interface name",
        ),
    ];
    for (args, expect) in cases {
        let out = net.weft(1, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(expect),
            "{args:?}: stderr {err:?} lacks {expect:?}"
        );
    }
    // Nothing was left behind: the bridge has only the router's own ports (the TAP
    // device, and the fast path's VXLAN and probe devices), no veth.
    let ports = net.exec(
        &net.host(1).ns,
        "ip",
        &["-o", "link", "show", "master", "weft"],
    );
    let ports = String::from_utf8_lossy(&ports.stdout);
    let own = ["weft-tap:", "weft-vxlan:", "weft-probe:"];
    let others: Vec<&str> = ports
        .lines()
        .filter(|l| !own.iter().any(|o| l.contains(o)))
        .collect();
    assert!(others.is_empty(), "bridge ports: {ports}");
    assert!(ports.contains("weft-tap:"), "bridge ports: {ports}");
    let ipam = net.weft_ok(1, &["status", "ipam"]);
    assert!(ipam.contains("(0 active)"), "allocation kept: {ipam}");
}
