//! Self-test of the end-to-end harness; needs root but not the router. Builds hosts in
//! namespaces, pings across the underlay switch, and checks that everything is removed
//! on drop, also when the test body panics. Also checks the status-layout parsers.

mod common;

use common::netns::{netns_list, root_links, Mapping, Nat, NatSpec};
use common::weft::{bare_name, parse_connections, parse_peers, status_field};
use common::{wait_until, Net};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

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
-> 198.18.0.252:6783     punched     encrypted   sleeve 7e:21:4a:70:2f:45(h3) mtu=1376 path: punched
-> 198.18.0.1:6783       relayed     encrypted   sleeve 7e:21:4a:70:2f:45(h3) via 4a:0f:f6:ec:1c:93(h1) mtu=1376 path: relayed via 4a:0f:f6:ec:1c:93(h1)
";
    let c = parse_connections(conns).expect("valid layout");
    assert_eq!(c.len(), 5);
    for relay_or_punch in &c[3..] {
        assert_eq!(relay_or_punch.encrypted, Some(true));
        assert_eq!(
            relay_or_punch.peer.as_deref(),
            Some("7e:21:4a:70:2f:45(h3)")
        );
    }
    assert_eq!(
        (c[3].state.as_str(), c[3].address.as_str()),
        ("punched", "198.18.0.252:6783")
    );
    assert_eq!(c[4].state, "relayed");
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

/// In host `host`'s namespace: a UDP socket on port 6783 that, after `delay`, sends to
/// `to` every 100 ms for up to `limit`, and goes on for 1 s more once a datagram from
/// `to` has arrived. Returns whether one did.
fn probe(net: &Net, host: usize, to: SocketAddr, delay: Duration, limit: Duration) -> bool {
    let ns = net.host(host).ns.clone();
    let file = datapath::netns::NetnsRef::Name(ns.clone())
        .open()
        .expect("open the host's netns");
    datapath::netns::run_in(&file, Path::new(&ns), move || {
        let sock = UdpSocket::bind("0.0.0.0:6783").expect("bind UDP 6783");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        thread::sleep(delay);
        let start = Instant::now();
        let mut got: Option<Instant> = None;
        let mut buf = [0u8; 64];
        while start.elapsed() < limit && got.is_none_or(|t| t.elapsed() < Duration::from_secs(1)) {
            // Errors (an ICMP error reported on the socket) count as nothing received.
            let _ = sock.send_to(b"punch", to);
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                if from == to && got.is_none() {
                    got = Some(Instant::now());
                }
            }
        }
        got.is_some()
    })
    .expect("probe thread")
}

#[test]
fn two_nats_let_a_hole_be_punched_only_when_they_keep_the_port() {
    for mapping in [Mapping::PortPreserving, Mapping::Random] {
        let mut net = Net::new("nsnat", 1);
        let a = net.add_host_behind(NatSpec {
            nat: Nat::A,
            mapping,
        });
        let b = net.add_host_behind(NatSpec {
            nat: Nat::B,
            mapping,
        });
        let prefix = net.prefix().to_string();
        let mut expected: Vec<String> = ["sw", "h1", "h2", "h3", "nat", "natb"]
            .iter()
            .map(|s| format!("{prefix}{s}"))
            .collect();
        expected.sort();
        assert_eq!(ours(&prefix), expected);
        assert_eq!(net.host(a).addr, Ipv4Addr::new(198, 18, 2, 2));
        assert_eq!(net.host(b).addr, Ipv4Addr::new(198, 18, 3, 3));
        let h1 = net.host(1).addr;
        for h in [a, b] {
            assert!(net.ping(&net.host(h).ns, h1), "h{h} cannot reach h1");
            assert!(
                !net.ping(&net.host(1).ns, net.host(h).addr),
                "h1 reaches h{h}'s private address"
            );
        }
        assert!(!net.ping(&net.host(a).ns, net.host(b).addr));
        assert!(!net.ping(&net.host(b).ns, net.host(a).addr));
        if mapping == Mapping::PortPreserving {
            // Its firewall: nothing unsolicited reaches the NAT itself either.
            assert!(
                !net.ping(&net.host(1).ns, Nat::B.public()),
                "NAT b answers an unsolicited ping: no input filter"
            );
        }

        // Both send from port 6783 to the other NAT's address, port 6783 (b starts a
        // little later, so a's first probes reach NAT b unsolicited, as they would).
        let to_b = SocketAddr::from((Nat::B.public(), 6783));
        let to_a = SocketAddr::from((Nat::A.public(), 6783));
        let limit = Duration::from_secs(4);
        let (got_a, got_b) = thread::scope(|s| {
            let at_a = s.spawn(|| probe(&net, a, to_b, Duration::ZERO, limit));
            let at_b = s.spawn(|| probe(&net, b, to_a, Duration::from_millis(500), limit));
            (at_a.join().expect("a"), at_b.join().expect("b"))
        });
        let flows = net.nat_conntrack_of(Nat::B, &["-L", "-p", "udp", "--orig-src", "198.18.3.3"]);
        println!("e2e: harness: {mapping:?} NATs: a received {got_a}, b received {got_b}; NAT b:\n{flows}");
        match mapping {
            Mapping::PortPreserving => {
                assert!(
                    got_a && got_b,
                    "no hole punched through port-preserving NATs"
                );
                assert!(
                    flows.lines().any(|l| l.contains("sport=6783 dport=6783")
                        && l.matches("dport=6783").count() == 2),
                    "NAT b did not keep port 6783:\n{flows}"
                );
            }
            Mapping::Random => {
                assert!(!got_a && !got_b, "a hole punched through random-port NATs");
            }
        }
    }
}
