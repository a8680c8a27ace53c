//! End-to-end tests of `--peers-from-dns` and `--reclaim-after` with a real DNS server:
//! dnsmasq in its own host namespace answers `weft-peers.test` with the hosts'
//! underlay addresses, and every weft host's resolver points at it. The tests change
//! the answer while the routers run (dnsmasq rereads its hosts file on SIGHUP).

mod common;

use common::dns::Dnsmasq;
use common::traffic::ping;
use common::weft::{Auth, Router};
use common::{wait_until, Net};
use serde_json::Value;
use std::time::Duration;

const NAME: &str = "weft-peers.test";
/// The DNS server's host: h4 (198.18.0.4), which runs no router.
const DNS_HOST: usize = 4;

/// Three weft hosts (h1..h3), the DNS host h4 answering `NAME` with h1..h3, and every
/// weft host's resolver pointed at h4.
fn net_with_dns(tag: &str) -> (Net, Dnsmasq) {
    let mut net = Net::new(tag, 4);
    let dns = Dnsmasq::start(
        &net,
        DNS_HOST,
        NAME,
        &["198.18.0.1", "198.18.0.2", "198.18.0.3"],
    );
    for h in 1..=3 {
        net.set_resolver(h, dns.addr);
    }
    (net, dns)
}

fn report(net: &Net, h: usize) -> Value {
    serde_json::from_str(&net.weft_ok(h, &["report"])).expect("report is JSON")
}

/// Attaches a new bare pod on `h` (no CIDR: IPAM picks) and returns (namespace, address).
fn attach(net: &mut Net, h: usize, k: usize) -> (String, String) {
    let ns = net.add_bare_pod(h, k);
    let out = net.weft_ok(h, &["attach", &ns]);
    let addr = out
        .split_whitespace()
        .next()
        .expect("attach prints the address");
    (ns, addr.split('/').next().unwrap().to_string())
}

/// `GET /metrics` on host `h`'s status listener.
fn metrics(net: &Net, h: usize) -> String {
    let out = net.exec(
        &net.host(h).ns,
        "python3",
        &[
            "-c",
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:6782/metrics', timeout=5).read().decode())",
        ],
    );
    assert!(out.status.success(), "h{h}: GET /metrics failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of one sample line `name{labels} value` in a metrics text.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {line_start} in:\n{text}"))
}

#[test]
fn routers_launched_with_only_a_dns_name_mesh_and_follow_the_answer() {
    let (mut net, dns) = net_with_dns("dnspeers");
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let options = ["--peers-from-dns", NAME];
    let mut routers: Vec<Router> = (1..=3)
        .map(|h| Router::launch_with(&net, h, &auth, &options, &[]))
        .collect();
    let took = net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    println!(
        "e2e: 3 routers from one DNS name (dnsmasq) meshed in {:.2} s",
        took.as_secs_f64()
    );
    // Its own address is never a target; each router has the two others, from DNS.
    for h in 1..=3 {
        let targets = net.weft_ok(h, &["status", "targets"]);
        assert!(
            !targets.contains(&format!("198.18.0.{h}:6783")),
            "h{h} targets itself: {targets}"
        );
        assert_eq!(targets.lines().count(), 2, "h{h}: {targets}");
        assert!(
            targets
                .lines()
                .all(|l| l.ends_with(&format!("(dns {NAME}:6783)"))),
            "h{h}: every target says where it came from: {targets}"
        );
    }
    // One IPAM ring: pods attached without a CIDR get distinct addresses and ping.
    let pods: Vec<(String, String)> = (1..=3).map(|h| attach(&mut net, h, 1)).collect();
    let mut addrs: Vec<&String> = pods.iter().map(|p| &p.1).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(
        addrs.len(),
        3,
        "one ring gives distinct addresses: {pods:?}"
    );
    for (ns, _) in &pods {
        for (_, ip) in &pods {
            let ok = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
                ping(&net, ns, ip)
            });
            assert!(ok.is_some(), "{ns} cannot ping {ip}");
        }
    }

    // A fourth host (h5) appears in the answer: it joins, and the others dial it
    // after their next lookup, with no link among them dropped.
    let h5 = net.add_host();
    net.set_resolver(h5, dns.addr);
    let four = ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.5"];
    dns.set(NAME, &four);
    // How often each of h1..h3 logged a link established to the two others.
    let names: Vec<String> = (1..=3)
        .map(|h| {
            report(&net, h)["router"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let old_links = |routers: &[Router]| -> Vec<usize> {
        (0..3)
            .map(|i| {
                let log = routers[i].log();
                log.lines()
                    .filter(|l| {
                        l.contains("connection established with")
                            && (0..3).any(|j| j != i && l.contains(&names[j]))
                    })
                    .count()
            })
            .collect()
    };
    let links_before = old_links(&routers);
    assert!(links_before.iter().all(|n| *n >= 2), "{links_before:?}");
    routers.push(Router::launch_with(&net, h5, &auth, &options, &[]));
    let took = net.wait_established(&[(1, 3), (2, 3), (3, 3), (h5, 3)]);
    println!(
        "e2e: a 4th address in the answer meshed in {:.2} s",
        took.as_secs_f64()
    );
    let named = wait_until(Duration::from_secs(45), Duration::from_millis(500), || {
        (1..=3).all(|h| {
            net.weft_ok(h, &["status", "targets"])
                .contains(&format!("198.18.0.5:6783 (dns {NAME}:6783)"))
        })
    });
    assert!(
        named.is_some(),
        "h1..h3 did not take 198.18.0.5 from the new answer"
    );
    // Each has one link to each of the three others (a duplicate from a dial race
    // may live for a moment).
    net.wait_established(&[(1, 3), (2, 3), (3, 3), (h5, 3)]);
    assert_eq!(
        old_links(&routers),
        links_before,
        "links among h1..h3 were redone when the answer grew"
    );

    // The address leaves the answer: no longer a target anywhere.
    dns.set(NAME, &four[..3]);
    let gone = wait_until(Duration::from_secs(45), Duration::from_millis(500), || {
        (1..=3).all(|h| {
            !net.weft_ok(h, &["status", "targets"])
                .contains("198.18.0.5")
        })
    });
    assert!(
        gone.is_some(),
        "198.18.0.5 is still a target after leaving the answer"
    );
    drop(routers);
}

#[test]
fn a_departed_peer_is_reclaimed_once_it_leaves_dns_and_never_while_named() {
    let (mut net, dns) = net_with_dns("reclaim");
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let options = ["--peers-from-dns", NAME, "--reclaim-after", "20s"];
    let mut routers: Vec<Router> = (1..=3)
        .map(|h| Router::launch_with(&net, h, &auth, &options, &[]))
        .collect();
    net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    for h in 1..=3 {
        attach(&mut net, h, 1);
    }
    let h3 = report(&net, 3)["router"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let owns = |net: &Net, h: usize| {
        report(net, h)["ipam"]["shares"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["peer"].as_str().unwrap_or("").starts_with(&h3))
    };
    assert!(owns(&net, 1) && owns(&net, 2), "h3 owns space in the ring");

    // h3 crashes but stays in DNS (a node rebooting): nothing is reclaimed, however long.
    routers.pop().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(120));
    for h in 1..=2 {
        let r = report(&net, h);
        let reclaim = &r["ipam"]["reclaim"];
        assert_eq!(reclaim["took"].as_u64(), Some(0), "h{h}: {reclaim:#}");
        assert_eq!(reclaim["other_heir"].as_u64(), Some(0), "h{h}: {reclaim:#}");
        assert_eq!(
            reclaim["waiting"][0]["blocked"].as_str(),
            Some("still named by DNS"),
            "h{h}: {reclaim:#}"
        );
        assert!(
            owns(&net, h),
            "h{h}: h3's space was taken while DNS named it"
        );
        let m = metrics(&net, h);
        assert_eq!(sample(&m, "weft_ipam_reclaims_total{result=\"took\"}"), 0.0);
        assert_eq!(sample(&m, "weft_ipam_reclaim_waiting_peers"), 1.0);
    }
    println!("e2e: h3 down for 120 s but named by DNS: nothing reclaimed");

    // h3 leaves the answer: within a minute exactly one peer takes its space over.
    dns.set(NAME, &["198.18.0.1", "198.18.0.2"]);
    let took = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        !owns(&net, 1) && !owns(&net, 2)
    });
    let took = took.unwrap_or_else(|| {
        panic!(
            "h3's space not reclaimed within 60 s:\n{}\n{}",
            net.weft_ok(1, &["status", "ipam"]),
            routers[0].log()
        )
    });
    println!(
        "e2e: h3 reclaimed {:.1} s after it left the DNS answer",
        took.as_secs_f64()
    );
    let heirs: f64 = (1..=2)
        .map(|h| {
            sample(
                &metrics(&net, h),
                "weft_ipam_reclaims_total{result=\"took\"}",
            )
        })
        .sum();
    assert_eq!(heirs, 1.0, "exactly one heir");
    let texts: Vec<String> = (1..=2)
        .map(|h| net.weft_ok(h, &["status", "ipam"]))
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains(&format!("Reclaimed: {h3}")) && t.contains("took"))
            .count(),
        1,
        "status ipam names the one heir: {texts:?}"
    );
    // Allocations continue on both survivors.
    let a = attach(&mut net, 1, 2);
    let b = attach(&mut net, 2, 2);
    assert_ne!(a.1, b.1);
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        ping(&net, &a.0, &b.1)
    });
    assert!(
        ok.is_some(),
        "new pods on h1 and h2 cannot reach each other"
    );
    drop(routers);
}
