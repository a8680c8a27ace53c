//! Self-test of the end-to-end harness; needs root but not the router. Builds hosts in
//! namespaces, pings across the underlay switch, and checks that everything is removed
//! on drop, also when the test body panics. Also checks the status-layout parsers.

mod common;

use common::netns::{netns_list, root_links};
use common::weft::{bare_name, parse_connections, parse_peers, status_field};
use common::{wait_until, Net};
use std::net::Ipv4Addr;
use std::time::Duration;

fn ours(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn three_hosts_ping_over_the_switch_and_vanish_on_drop() {
    let links_before = root_links();
    let mut net = Net::new("nsself", 3);
    let prefix = net.prefix().to_string();
    let dir = net.dir().to_path_buf();

    let mut expected: Vec<String> = ["sw", "h1", "h2", "h3"]
        .iter()
        .map(|s| format!("{prefix}{s}"))
        .collect();
    expected.sort();
    assert_eq!(ours(&prefix), expected);
    assert_eq!(net.host(2).addr, Ipv4Addr::new(198, 18, 0, 2));
    assert!(net.host(3).run_dir.is_dir() && net.host(3).data_dir.is_dir());

    assert!(
        net.ping(&net.host(1).ns, Ipv4Addr::new(198, 18, 0, 2)),
        "h1 cannot ping h2"
    );
    assert!(
        net.ping(&net.host(3).ns, Ipv4Addr::new(198, 18, 0, 1)),
        "h3 cannot ping h1"
    );
    assert!(
        !net.ping(&net.host(1).ns, Ipv4Addr::new(198, 18, 0, 9)),
        "h1 pinged a host that does not exist"
    );

    // The host's eth0 carries exactly its underlay address.
    let addrs = net.exec(
        &net.host(2).ns,
        "ip",
        &["-4", "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(String::from_utf8_lossy(&addrs.stdout).contains("198.18.0.2/24"));

    // A fourth host and a pod join the same way.
    assert_eq!(net.add_host(), 4);
    assert!(
        net.ping(&net.host(4).ns, Ipv4Addr::new(198, 18, 0, 3)),
        "h4 cannot ping h3"
    );
    let pod = net.add_pod(1);
    net.pod_addr(&pod, "10.40.1.2/16");
    let link = net.exec(
        &net.host(1).ns,
        "ip",
        &["-o", "link", "show", "dev", &pod.host_if],
    );
    assert!(link.status.success(), "pod's host-side veth missing in h1");
    assert_eq!(ours(&prefix).len(), 6);

    assert_eq!(
        root_links(),
        links_before,
        "the test changed the links of the root namespace"
    );
    drop(net);
    assert_eq!(
        ours(&prefix),
        Vec::<String>::new(),
        "namespaces left after drop"
    );
    assert!(!dir.exists(), "test dir {} left after drop", dir.display());
    assert_eq!(root_links(), links_before);
}

#[test]
fn namespaces_are_removed_when_the_test_panics() {
    let prefix = std::thread::spawn(|| {
        let net = Net::new("nspanic", 2);
        let prefix = net.prefix().to_string();
        assert_eq!(ours(&prefix).len(), 3);
        std::panic::panic_any(prefix);
    })
    .join()
    .expect_err("the thread should have panicked");
    let prefix = prefix
        .downcast::<String>()
        .expect("prefix as panic payload");
    assert_eq!(
        ours(&prefix),
        Vec::<String>::new(),
        "namespaces left after a panic"
    );
    // A failed test keeps its directory for the logs; this one failed on purpose.
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{prefix}"));
    assert!(kept.is_dir(), "a failed test's dir should be kept");
    std::fs::remove_dir_all(kept).expect("remove kept dir");
}

#[test]
#[should_panic(expected = "outside the ranges")]
fn addresses_outside_the_test_ranges_are_refused() {
    common::netns::assert_allowed(Ipv4Addr::new(192, 168, 1, 1));
}

#[test]
fn wait_until_reports_elapsed_time_or_timeout() {
    let mut n = 0;
    let took = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        n += 1;
        n == 3
    });
    assert!(took.is_some_and(|d| d >= Duration::from_millis(20) && d < Duration::from_secs(5)));
    let never = wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
        false
    });
    assert_eq!(never, None);
}

#[test]
fn status_layout_parsers() {
    let status = "\n        Version: 0.1.0\n\n        Service: router\n           Name: 4a:0f:f6:ec:1c:93(h1)\n     Encryption: enabled\n";
    assert_eq!(
        status_field(status, "Name").as_deref(),
        Some("4a:0f:f6:ec:1c:93(h1)")
    );
    assert_eq!(
        status_field(status, "Encryption").as_deref(),
        Some("enabled")
    );
    assert_eq!(bare_name("4a:0f:f6:ec:1c:93(h1)"), "4a:0f:f6:ec:1c:93");

    let conns = "\
-> 198.18.0.2:6783       established encrypted   sleeve 4a:0f:f6:ec:1c:93(h2)
<- 198.18.0.3:40112      established unencrypted sleeve 7e:21:4a:70:2f:45(h3) mtu=1410
-> 198.18.0.9:6783       failed      dial tcp 198.18.0.9:6783: no route to host, retry: never
";
    let c = parse_connections(conns).expect("valid layout");
    assert_eq!(c.len(), 3);
    assert!(c[0].outbound && c[0].state == "established" && c[0].encrypted == Some(true));
    assert_eq!(c[0].peer.as_deref(), Some("4a:0f:f6:ec:1c:93(h2)"));
    assert!(!c[1].outbound && c[1].encrypted == Some(false));
    assert_eq!(c[1].peer.as_deref(), Some("7e:21:4a:70:2f:45(h3)"));
    assert_eq!(
        (c[2].state.as_str(), c[2].encrypted, c[2].peer.as_ref()),
        ("failed", None, None)
    );
    // Misaligned columns are rejected.
    assert!(parse_connections("-> 198.18.0.2:6783 established encrypted sleeve x(h2)").is_err());
    assert!(
        parse_connections("-> 198.18.0.2:6783       established encrypted sleeve x(h2)").is_err()
    );
    assert!(parse_connections("=> 198.18.0.2:6783       established").is_err());

    let peers = "\
ce:31:e0:06:45:1a(h1)
   <- 198.18.0.2:39634      ea:2d:b2:e6:e4:f5(h2)                established
ea:2d:b2:e6:e4:f5(h2)
   -> 198.18.0.1:6783       ce:31:e0:06:45:1a(h1)                established
";
    let p = parse_peers(peers).expect("valid layout");
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].name, "ea:2d:b2:e6:e4:f5(h2)");
    assert!(p[0].connections[0].ends_with("established"));
    assert!(parse_peers("   -> 198.18.0.1:6783  x(h1)  established").is_err());
}
