//! End-to-end test of `--peers-from-dns`: three hosts whose resolver answers
//! `weft-peers.test` with the three underlay addresses (a per-namespace hosts file,
//! which getaddrinfo reads before DNS), each router launched with that name alone.

mod common;

use common::traffic::ping;
use common::weft::{Auth, Router};
use common::{wait_until, Net};
use std::time::Duration;

#[test]
fn routers_launched_with_only_a_dns_name_form_one_mesh_and_one_ring() {
    let mut net = Net::new("dnspeers", 3);
    for h in 1..=3 {
        net.set_hosts_file(
            h,
            "127.0.0.1 localhost\n198.18.0.1 weft-peers.test\n198.18.0.2 weft-peers.test\n\
             198.18.0.3 weft-peers.test\n",
        );
    }
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let options = ["--peers-from-dns", "weft-peers.test"];
    let routers: Vec<Router> = (1..=3)
        .map(|h| Router::launch_with(&net, h, &auth, &options, &[]))
        .collect();
    let took = net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    println!(
        "e2e: 3 routers from one DNS name meshed in {:.2} s",
        took.as_secs_f64()
    );
    // Its own address is never a target: each router has the two others.
    for h in 1..=3 {
        let targets = net.weft_ok(h, &["status", "targets"]);
        let own = format!("198.18.0.{h}:6783");
        assert!(!targets.contains(&own), "h{h} targets itself: {targets}");
        assert_eq!(targets.lines().count(), 2, "h{h}: {targets}");
    }
    // One IPAM ring: consensus among the three named hosts; pods attached without a
    // CIDR get distinct addresses and ping each other.
    let mut pods = Vec::new();
    for h in 1..=3 {
        let ns = net.add_bare_pod(h, 1);
        let out = net.weft_ok(h, &["attach", &ns]);
        let addr = out.split_whitespace().next().unwrap().to_string();
        pods.push((ns, addr));
    }
    let mut addrs: Vec<&String> = pods.iter().map(|p| &p.1).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(
        addrs.len(),
        3,
        "one ring gives distinct addresses: {pods:?}"
    );
    for (ns, _) in &pods {
        for (_, addr) in &pods {
            let ip = addr.split('/').next().unwrap();
            let ok = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
                ping(&net, ns, ip)
            });
            assert!(ok.is_some(), "{ns} cannot ping {ip}");
        }
    }
    drop(routers);
}
