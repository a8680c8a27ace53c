//! End-to-end tests of the kernel VXLAN fast path (issue 6): chosen per connection,
//! visible in `status connections`, falling back to sleeve with a reason and coming
//! back by itself, never used by an encrypted connection without mutual trust, and
//! guarded by a firewall rule that drops and counts VXLAN from anyone else.

mod common;

use common::traffic::{ping, wait_listening};
use common::weft::{Auth, Router};
use common::{run_ok, wait_until, Net};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const H1: &str = "198.18.0.1";
const H2: &str = "198.18.0.2";

/// The `status connections` line of `host`'s connection to the router nicknamed `nick`.
fn conn_line(net: &Net, host: usize, nick: &str) -> Option<String> {
    let out = net.weft(host, &["status", "connections"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&format!("({nick})")))
        .map(str::to_string)
}

/// Whether the line shows `mode` (`fastdp` or `sleeve`) as the overlay column.
fn shows(line: &str, mode: &str) -> bool {
    line.split_whitespace().any(|w| w == mode)
}

/// Waits until `host`'s connection to `nick` shows `mode` (and is established);
/// returns how long it took, or panics with the line.
fn wait_mode(net: &Net, host: usize, nick: &str, mode: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let ok = wait_until(limit, Duration::from_millis(200), || {
        conn_line(net, host, nick).is_some_and(|l| shows(&l, mode) && l.contains("established"))
    });
    assert!(
        ok.is_some(),
        "h{host} -> {nick}: not {mode} within {limit:?}: {:?}",
        conn_line(net, host, nick)
    );
    start.elapsed()
}

/// `weft report` of `host` as JSON.
fn report(net: &Net, host: usize) -> serde_json::Value {
    serde_json::from_str(&net.weft_ok(host, &["report"])).expect("weft report is JSON")
}

/// A process we started, killed by PID when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, program: &str, args: &[&str]) -> Proc {
    Proc(
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in {ns}: {e}")),
    )
}

/// Two hosts with one pod each (10.40.1.2 on h1, 10.40.2.2 on h2), routers launched
/// with `auth` and `options`, h2 dialling h1.
fn two_hosts(tag: &str, auth: &Auth, options: &[&str]) -> (Net, Vec<Router>, [String; 2]) {
    let mut net = Net::new(tag, 2);
    let r1 = Router::launch_with(&net, 1, auth, options, &[]);
    let r2 = Router::launch_with(&net, 2, auth, options, &[H1]);
    let p1 = net.add_bare_pod(1, 1);
    let p2 = net.add_bare_pod(2, 1);
    net.attach(1, &["10.40.1.2/16"], &p1);
    net.attach(2, &["10.40.2.2/16"], &p2);
    (net, vec![r1, r2], [p1, p2])
}

#[test]
fn no_encryption_uses_the_kernel_and_the_router_stays_idle() {
    let (net, routers, [p1, p2]) = two_hosts("fdpplain", &Auth::NoEncryption, &[]);
    let took = wait_mode(&net, 1, "h2", "fastdp", Duration::from_secs(30));
    wait_mode(&net, 2, "h1", "fastdp", Duration::from_secs(10));
    println!("e2e: fastdp confirmed in {:.1} s", took.as_secs_f64());
    let line = conn_line(&net, 1, "h2").unwrap();
    assert!(line.contains("mtu="), "{line}");
    let sleeve_frames = |host: usize| -> u64 {
        let r = report(&net, host);
        r["dataplane"]["peers"]
            .as_array()
            .map(|peers| peers.iter().filter_map(|p| p["tx_frames"].as_u64()).sum())
            .unwrap_or(0)
    };
    let before = [sleeve_frames(1), sleeve_frames(2)];
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            ping(&net, &p1, "10.40.2.2")
        })
        .is_some(),
        "pod h1 -> pod h2 over fastdp"
    );
    // iperf3 for 5 s: the kernel carries it, so the routers' CPU time barely moves.
    let _server = spawn_in(&p2, "iperf3", &["-s", "-p", "5301"]);
    wait_listening(&net, &p2, 5301);
    let cpu0: Vec<Duration> = routers.iter().map(Router::cpu_time).collect();
    let t0 = Instant::now();
    let out = net.exec_for(
        &p1,
        "iperf3",
        &["-c", "10.40.2.2", "-p", "5301", "-t", "5", "-J"],
        Duration::from_secs(30),
    );
    let wall = t0.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout)));
    for (r, c0) in routers.iter().zip(&cpu0) {
        let used = r.cpu_time().saturating_sub(*c0);
        let share = used.as_secs_f64() / wall.as_secs_f64();
        println!(
            "e2e: iperf3 {:.0} Mbit/s; router h{} used {:.3} s CPU in {:.1} s ({:.1} % of a core)",
            bps / 1e6,
            r.host,
            used.as_secs_f64(),
            wall.as_secs_f64(),
            share * 100.0
        );
        assert!(
            share < 0.10,
            "router h{} used {:.1} % of a core during the transfer",
            r.host,
            share * 100.0
        );
    }
    assert!(bps > 0.0);
    // Not one frame (ARP broadcasts included) went by sleeve: the kernel carried all.
    let after = [sleeve_frames(1), sleeve_frames(2)];
    assert_eq!(before, after, "frames sent by sleeve to a fastdp peer");
    // The report counts the connection under fastdp.
    let r = report(&net, 1);
    assert_eq!(r["fastdp"]["connections"]["fastdp"], 1, "{}", r["fastdp"]);
    assert_eq!(r["router"]["connections"][0]["overlay"], "fastdp");
}

/// Runs `nft args` in namespace `ns` (a host of this test); panics if it fails.
fn nft(net: &Net, ns: &str, args: &[&str]) {
    assert!(ns.starts_with(net.prefix()), "nft outside the test: {ns}");
    let out = net.exec(ns, "nft", args);
    assert!(
        out.status.success(),
        "nft {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn blocked_vxlan_falls_back_to_sleeve_and_recovers_by_itself() {
    let (net, _routers, [p1, _p2]) = two_hosts("fdpblock", &Auth::NoEncryption, &[]);
    wait_mode(&net, 1, "h2", "fastdp", Duration::from_secs(30));
    wait_mode(&net, 2, "h1", "fastdp", Duration::from_secs(10));
    let h1 = net.host(1).ns.clone();
    // Block UDP 6784 both ways on h1 (a table of the test's own in h1's namespace).
    nft(&net, &h1, &["add", "table", "inet", "blockvx"]);
    for (chain, hook) in [("out", "output"), ("in", "input")] {
        let spec = format!("{{ type filter hook {hook} priority 0 ; }}");
        nft(
            &net,
            &h1,
            &["add", "chain", "inet", "blockvx", chain, &spec],
        );
        nft(
            &net,
            &h1,
            &[
                "add", "rule", "inet", "blockvx", chain, "udp", "dport", "6784", "drop",
            ],
        );
    }
    let blocked = Instant::now();
    for (host, nick) in [(1, "h2"), (2, "h1")] {
        wait_mode(&net, host, nick, "sleeve", Duration::from_secs(10));
    }
    let took = blocked.elapsed();
    println!(
        "e2e: both ends on sleeve {:.1} s after the block",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(10));
    let line = conn_line(&net, 1, "h2").unwrap();
    // Both directions stopped at once: whichever was confirmed last names the reason.
    let reasons = [
        "fastdp: vxlan probes unacknowledged",
        "fastdp: no vxlan probes from peer",
    ];
    assert!(reasons.iter().any(|r| line.contains(r)), "{line}");
    let line2 = conn_line(&net, 2, "h1").unwrap();
    assert!(line2.contains("fastdp: "), "no reason on h2: {line2}");
    assert!(
        net.weft_ok(1, &["status", "connections"])
            .contains("sleeve"),
        "status connections"
    );
    let log = _routers[0].log();
    assert!(
        log.contains("fell back to sleeve: vxlan probes unacknowledged")
            || log.contains("fell back to sleeve: no vxlan probes from peer"),
        "no fallback reason in h1's log"
    );
    // Traffic continues over the sleeve.
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            ping(&net, &p1, "10.40.2.2")
        })
        .is_some(),
        "pod h1 -> pod h2 after the fallback"
    );
    let r = report(&net, 1);
    assert_eq!(r["fastdp"]["connections"]["sleeve"], 1, "{}", r["fastdp"]);
    let fallbacks = &r["fastdp"]["fallbacks"];
    let total = fallbacks["probe_unacknowledged"].as_u64().unwrap_or(0)
        + fallbacks["peer_probes_missing"].as_u64().unwrap_or(0);
    assert_eq!(total, 1, "{}", r["fastdp"]);
    // Unblock: back to fastdp by itself, and traffic still flows.
    nft(&net, &h1, &["delete", "table", "inet", "blockvx"]);
    let back = wait_mode(&net, 1, "h2", "fastdp", Duration::from_secs(15));
    wait_mode(&net, 2, "h1", "fastdp", Duration::from_secs(10));
    println!(
        "e2e: back on fastdp {:.1} s after unblocking",
        back.as_secs_f64()
    );
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            ping(&net, &p1, "10.40.2.2")
        })
        .is_some(),
        "pod h1 -> pod h2 after re-upgrading"
    );
}

/// `ping -c count` from `ns` to `addr`: (replies, whether any was a duplicate).
fn ping_count(net: &Net, ns: &str, addr: &str, count: u32) -> (u32, bool, String) {
    let c = count.to_string();
    let out = net.exec_for(
        ns,
        "ping",
        &["-4", "-c", &c, "-i", "0.2", "-W", "2", addr],
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received = common::traffic::parse_ping_summary(&text).map_or(0, |(_, r)| r);
    let dup = text.contains("DUP!") || text.contains("duplicates");
    (received, dup, text)
}

#[test]
fn trusted_pair_uses_fastdp_others_encrypted_sleeve_no_duplicates() {
    let mut net = Net::new("fdptrust", 3);
    let secret = net.new_secret("secret");
    let auth = Auth::PasswordFile(secret);
    // h1 and h2 trust the whole underlay /24; h3 trusts nobody.
    let trust = ["--trusted-subnets", "198.18.0.0/24"];
    let _r1 = Router::launch_with(&net, 1, &auth, &trust, &[]);
    let _r2 = Router::launch_with(&net, 2, &auth, &trust, &[H1]);
    let _r3 = Router::launch_with(&net, 3, &auth, &[], &[H1]);
    let pods = pod_per_host(&mut net);
    wait_mode(&net, 1, "h2", "fastdp", Duration::from_secs(30));
    wait_mode(&net, 2, "h1", "fastdp", Duration::from_secs(10));
    for (host, nick) in [(1, "h3"), (3, "h1"), (2, "h3"), (3, "h2")] {
        wait_mode(&net, host, nick, "sleeve", Duration::from_secs(30));
        let line = conn_line(&net, host, nick).unwrap();
        assert!(line.contains(" encrypted "), "h{host} -> {nick}: {line}");
        assert!(
            !line.contains("fastdp"),
            "h{host} -> {nick} was never eligible: {line}"
        );
    }
    let status = net.weft_ok(1, &["status"]);
    assert!(
        status.contains("198.18.0.0/24"),
        "TrustedSubnets in status:\n{status}"
    );
    // Every pod pair: exactly N replies, none duplicated.
    let mut failures = Vec::new();
    for (from, _) in &pods {
        for (to, addr) in &pods {
            if from == to {
                continue;
            }
            wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
                ping(&net, from, addr)
            });
            let (received, dup, text) = ping_count(&net, from, addr, 10);
            if received != 10 || dup {
                failures.push(format!(
                    "{from} -> {addr}: {received}/10, dup={dup}\n{text}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Broadcasts too: an arping-free check, a broadcast ping answered once per pod.
    let r = report(&net, 1);
    assert_eq!(r["fastdp"]["connections"]["fastdp"], 1, "{}", r["fastdp"]);
    assert_eq!(r["fastdp"]["connections"]["sleeve"], 1, "{}", r["fastdp"]);
}

#[test]
fn secret_without_trust_sends_no_vxlan_at_all() {
    let mut net = Net::new("fdpnovx", 2);
    let secret = net.new_secret("secret");
    let auth = Auth::PasswordFile(secret);
    let h1 = net.host(1).ns.clone();
    let capture = common::capture::Capture::start(&net, &h1, "eth0", &["udp"], 96, "underlay");
    let _r1 = Router::launch(&net, 1, &auth, &[]);
    let _r2 = Router::launch(&net, 2, &auth, &[H1]);
    let p1 = net.add_bare_pod(1, 1);
    let p2 = net.add_bare_pod(2, 1);
    net.attach(1, &["10.40.1.2/16"], &p1);
    net.attach(2, &["10.40.2.2/16"], &p2);
    net.wait_established(&[(1, 1), (2, 1)]);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            ping(&net, &p1, "10.40.2.2")
        })
        .is_some(),
        "pods ping over the sleeve"
    );
    let (received, _, text) = ping_count(&net, &p2, "10.40.1.2", 5);
    assert_eq!(received, 5, "{text}");
    // Give probes (if any were sent) time to show up.
    std::thread::sleep(Duration::from_secs(3));
    let line = conn_line(&net, 1, "h2").unwrap();
    assert!(
        shows(&line, "sleeve") && line.contains(" encrypted "),
        "{line}"
    );
    let pcap = capture.stop();
    let udp: Vec<_> = pcap
        .packets
        .iter()
        .filter_map(|p| common::capture::udp(p))
        .collect();
    let vxlan = udp
        .iter()
        .filter(|u| u.dport == 6784 || u.sport == 6784)
        .count();
    let sleeve = udp
        .iter()
        .filter(|u| u.dport == 6783 || u.sport == 6783)
        .count();
    println!("e2e: underlay capture: {sleeve} sleeve datagrams, {vxlan} VXLAN packets");
    assert_eq!(
        vxlan, 0,
        "VXLAN on the underlay of an encrypted, untrusted network"
    );
    assert!(
        sleeve > 10,
        "the capture saw the sleeve ({sleeve} datagrams)"
    );
}

/// One pod on each of h1..h3 at 10.40.X.2/16: (namespace, address).
fn pod_per_host(net: &mut Net) -> Vec<(String, String)> {
    (1..=3)
        .map(|host| {
            let ns = net.add_bare_pod(host, 1);
            let addr = format!("10.40.{host}.2");
            net.attach(host, &[&format!("{addr}/16")], &ns);
            (ns, addr)
        })
        .collect()
}

/// Makes host `hX` (which runs no Weft) a legacy VXLAN host by hand: `vx0` with the
/// same port and VNI, an FDB entry to h1, and `addr/16` on it. Test tooling, so `ip`.
fn legacy_vxlan(net: &Net, host: usize, addr: &str) {
    let ns = net.host(host).ns.clone();
    let ip = |args: &[&str]| run_ok(Command::new("ip").args(["-n", &ns]).args(args));
    ip(&[
        "link", "add", "vx0", "type", "vxlan", "id", "6784", "dstport", "6784", "dev", "eth0",
    ]);
    ip(&["link", "set", "vx0", "mtu", "1408", "up"]);
    ip(&["addr", "add", &format!("{addr}/16"), "dev", "vx0"]);
    run_ok(
        Command::new("bridge")
            .args(["-n", &ns, "fdb", "append", "00:00:00:00:00:00"])
            .args(["dev", "vx0", "dst", H1]),
    );
}

#[test]
fn admitted_legacy_host_exchanges_frames_with_a_pod() {
    let mut net = Net::new("fdplegacy", 3);
    let _r1 = Router::launch_with(
        &net,
        1,
        &Auth::NoEncryption,
        &["--fastdp-admit", "198.18.0.3"],
        &[],
    );
    let p1 = net.add_bare_pod(1, 1);
    net.attach(1, &["10.40.1.2/16"], &p1);
    legacy_vxlan(&net, 3, "10.40.3.9");
    let h3 = net.host(3).ns.clone();
    let reached = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        ping(&net, &h3, "10.40.1.2")
    });
    assert!(reached.is_some(), "legacy host -> pod on h1 over VXLAN");
    let (received, dup, text) = ping_count(&net, &p1, "10.40.3.9", 5);
    assert!(received == 5 && !dup, "pod on h1 -> legacy host: {text}");
    let r = report(&net, 1);
    assert_eq!(r["fastdp"]["admitted"][0], "198.18.0.3", "{}", r["fastdp"]);
    assert_eq!(r["fastdp"]["injected_drops"], 0, "{}", r["fastdp"]);
}

#[test]
fn vxlan_from_a_non_peer_is_dropped_and_counted() {
    let mut net = Net::new("fdpinject", 3);
    let _r1 = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let _r2 = Router::launch(&net, 2, &Auth::NoEncryption, &[H1]);
    let p1 = net.add_bare_pod(1, 1);
    net.attach(1, &["10.40.1.2/16"], &p1);
    wait_mode(&net, 1, "h2", "fastdp", Duration::from_secs(30));
    // h3 is no peer and was not admitted: its hand-made VXLAN reaches nobody.
    legacy_vxlan(&net, 3, "10.40.3.9");
    let h3 = net.host(3).ns.clone();
    let (received, _, text) = ping_count(&net, &h3, "10.40.1.2", 3);
    assert_eq!(received, 0, "a non-peer reached a pod over VXLAN: {text}");
    let r = report(&net, 1);
    let dropped = r["fastdp"]["injected_drops"].as_u64().unwrap_or(0);
    println!("e2e: h1 dropped and counted {dropped} VXLAN packets from a non-peer");
    assert!(dropped >= 1, "no injected drop counted: {}", r["fastdp"]);
    // The peer's own VXLAN still passes: h2's connection stays on fastdp.
    let line = conn_line(&net, 1, "h2").unwrap();
    assert!(shows(&line, "fastdp"), "{line}");
}

#[test]
fn relay_through_a_fastdp_peer_still_works_without_duplicates() {
    let mut net = Net::new("fdprelay", 3);
    let (a1, a3) = (net.host(1).addr, net.host(3).addr);
    // h1 and h3 cannot reach each other on the underlay; h2 reaches both.
    net.blackhole(1, a3);
    net.blackhole(3, a1);
    let _r1 = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let _r2 = Router::launch(&net, 2, &Auth::NoEncryption, &[H1]);
    let _r3 = Router::launch(&net, 3, &Auth::NoEncryption, &[H2]);
    let pods = pod_per_host(&mut net);
    // Both links of h2 are on the fast path; h1 <-> h3 is relayed by h2's router.
    wait_mode(&net, 2, "h1", "fastdp", Duration::from_secs(30));
    wait_mode(&net, 2, "h3", "fastdp", Duration::from_secs(30));
    let mut failures = Vec::new();
    for (from, to) in [(0, 2), (2, 0), (0, 1), (1, 2)] {
        let (ns, _) = &pods[from];
        let (_, addr) = &pods[to];
        let reached = wait_until(Duration::from_secs(40), Duration::from_millis(300), || {
            ping(&net, ns, addr)
        });
        if reached.is_none() {
            failures.push(format!("{ns} -> {addr}: unreachable"));
            continue;
        }
        let (received, dup, text) = ping_count(&net, ns, addr, 10);
        if received != 10 || dup {
            failures.push(format!("{ns} -> {addr}: {received}/10, dup={dup}\n{text}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn no_fastpath_keeps_the_connection_on_sleeve() {
    let (net, _routers, [p1, _p2]) = two_hosts("fdpoff", &Auth::NoEncryption, &[]);
    // h2 relaunched with --no-fastpath: the connection is never eligible.
    drop(_routers);
    let _r1 = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let _r2 = Router::launch_with(&net, 2, &Auth::NoEncryption, &["--no-fastpath"], &[H1]);
    wait_mode(&net, 1, "h2", "sleeve", Duration::from_secs(30));
    wait_mode(&net, 2, "h1", "sleeve", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            ping(&net, &p1, "10.40.2.2")
        })
        .is_some(),
        "pods ping over the sleeve"
    );
    std::thread::sleep(Duration::from_secs(2));
    for (host, nick) in [(1, "h2"), (2, "h1")] {
        let line = conn_line(&net, host, nick).unwrap();
        assert!(
            shows(&line, "sleeve") && !line.contains("fastdp"),
            "h{host}: {line}"
        );
    }
    let links = net.exec(&net.host(2).ns, "ip", &["-o", "link", "show"]);
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("weft-vxlan"),
        "h2 has a VXLAN device: {links}"
    );
}

/// Someone deletes the router's nftables table behind its back: the router notices
/// (it asks the kernel over netlink every 30 s) and installs it again.
#[test]
fn a_table_deleted_behind_the_routers_back_is_put_back() {
    let net = Net::new("fdptable", 1);
    let r1 = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let ns = net.host(1).ns.clone();
    let listed = || {
        net.exec(&ns, "nft", &["list", "table", "inet", "weft"])
            .status
            .success()
    };
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(200), listed).is_some(),
        "the router did not install table inet weft"
    );
    nft(&net, &ns, &["delete", "table", "inet", "weft"]);
    assert!(!listed(), "the table is still there after delete");
    let start = Instant::now();
    let back = wait_until(Duration::from_secs(45), Duration::from_millis(500), listed);
    println!(
        "e2e: table inet weft deleted by hand; back after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(back.is_some(), "the table did not come back within 45 s");
    assert!(
        r1.log().contains("deleted by someone else"),
        "the log does not say why the table was installed again"
    );
}
