//! End-to-end test of hole punching: two hosts, each behind its own masquerading NAT
//! (real nftables), and one public host that both know.
//!
//! ```text
//!                      ┌─ nat  (198.18.0.253 | 198.18.2.254) ── h2 (198.18.2.2)
//! h1 (198.18.0.1) ── switch
//!                      └─ natb (198.18.0.252 | 198.18.3.254) ── h3 (198.18.3.3)
//! ```
//!
//! h2 and h3 are launched with only h1 as their peer. Each NAT drops what comes in
//! unsolicited, so their control link to each other never comes up, and the mesh
//! relays their frames through h1. h1, which has a confirmed UDP path to both, tells
//! both to probe each other's observed endpoint at once:
//!
//! 1. Both NATs keep a socket's port across destinations (`masquerade`): the probes
//!    cross, the pair's frames go directly between the NATs (a capture on h1's link
//!    sees none of their data), and status, report and metrics say `punched`.
//! 2. Both NATs choose a random port per destination (`masquerade random`): no hole can
//!    be punched; the attempt fails, the frames stay relayed through h1 (which the
//!    capture sees), and status says `relayed via` h1.
//!
//! Real `weft` routers in test namespaces; needs root, `nft`, `conntrack`, `tcpdump`
//! and `python3`. Run `cargo test --test punch -- --nocapture` to see the figures
//! (lines starting `e2e:`).

mod common;

use common::capture::{ipv4_addrs, Capture};
use common::netns::{Mapping, Nat, NatSpec, NAT_B_PUBLIC};
use common::traffic::{ping, ping_series, transfer};
use common::weft::{parse_connections, Auth, Conn, Router};
use common::{wait_until, Net};
use serde_json::Value;
use std::time::{Duration, Instant};

const H1: &str = "198.18.0.1";
/// The NAT keepalive the routers run with (`--nat-keepalive`; 25 s by default).
const KEEPALIVE: &str = "3";
/// How long h2 and h3 may take to punch through once their links to h1 are up: the
/// coordinator's first request comes about 3 s after the pair is found unconnected.
const PUNCH_LIMIT: Duration = Duration::from_secs(40);
/// How long the first attempt through random-port NATs may take to be counted failed:
/// the first request, then the 15 s an attempt has to confirm.
const FAIL_LIMIT: Duration = Duration::from_secs(45);

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

fn wait_reachable(net: &Net, from: &PodInfo, to: &PodInfo, limit: Duration) -> Duration {
    wait_until(limit, Duration::from_millis(100), || {
        ping(net, &from.ns, &to.v4)
    })
    .unwrap_or_else(|| panic!("{} cannot ping {} within {limit:?}", from.ns, to.v4))
}

/// h1 public, h2 behind NAT a, h3 behind NAT b, both NATs mapping as `mapping`.
fn two_nats(tag: &str, mapping: Mapping) -> (Net, usize, usize) {
    let mut net = Net::new(tag, 1);
    let h2 = net.add_host_behind(NatSpec {
        nat: Nat::A,
        mapping,
    });
    let h3 = net.add_host_behind(NatSpec {
        nat: Nat::B,
        mapping,
    });
    // The underlay: both reach h1 through their NAT; neither can address the other.
    let h1_addr = net.host(1).addr;
    for h in [h2, h3] {
        assert!(
            net.ping(&net.host(h).ns, h1_addr),
            "h{h} cannot reach h1 through its NAT"
        );
    }
    let (a2, a3) = (net.host(h2).addr, net.host(h3).addr);
    assert!(
        !net.ping(&net.host(h2).ns, a3),
        "h2 reaches h3's private address: the NATs are not in the way"
    );
    assert!(
        !net.ping(&net.host(h3).ns, a2),
        "h3 reaches h2's private address: the NATs are not in the way"
    );
    (net, h2, h3)
}

/// Launches h1, then h2 and h3 with only h1 as peer, and waits until each has its
/// control link to h1 established with a confirmed UDP path.
fn launch(net: &Net, h2: usize, h3: usize) -> (Router, Router, Router) {
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let options = ["--nat-keepalive", KEEPALIVE];
    let r1 = Router::launch_with(net, 1, &auth, &options, &[]);
    let r2 = Router::launch_with(net, h2, &auth, &options, &[H1]);
    let r3 = Router::launch_with(net, h3, &auth, &options, &[H1]);
    let took = net.wait_established(&[(1, 2), (h2, 1), (h3, 1)]);
    println!(
        "e2e: punch: h2 and h3 established with h1 in {:.2} s",
        took.as_secs_f64()
    );
    (r1, r2, r3)
}

/// `weft status connections` of host `host`.
fn status_connections(net: &Net, host: usize) -> String {
    String::from_utf8_lossy(&net.weft(host, &["status", "connections"]).stdout).into_owned()
}

/// Host `host`'s status line for the peer named `peer` (`name(nick)`) in state `state`.
fn line_for(net: &Net, host: usize, peer: &str, state: &str) -> Option<Conn> {
    let text = status_connections(net, host);
    parse_connections(&text)
        .ok()?
        .into_iter()
        .find(|c| c.state == state && c.peer.as_deref() == Some(peer))
}

/// Host `host`'s status shows `peer` punched: state `punched`, `path: punched`.
fn shows_punched(net: &Net, host: usize, peer: &str) -> Option<Conn> {
    line_for(net, host, peer, "punched").filter(|c| c.line.ends_with(" path: punched"))
}

/// Host `host`'s status shows `peer` relayed through `via` (`name(nick)`).
fn shows_relayed(net: &Net, host: usize, peer: &str, via: &str) -> Option<Conn> {
    line_for(net, host, peer, "relayed")
        .filter(|c| c.line.ends_with(&format!(" path: relayed via {via}")))
}

/// Asserts that `host`'s only established (or pending) control link is the one to
/// `only` (`name(nick)`): its link to the other NATed host never came up.
fn assert_no_direct_link(net: &Net, host: usize, only: &str) {
    let text = status_connections(net, host);
    let conns = parse_connections(&text)
        .unwrap_or_else(|e| panic!("h{host}'s status connections: {e}\n{text}"));
    let links: Vec<&Conn> = conns
        .iter()
        .filter(|c| c.state == "established" || c.state == "pending")
        .collect();
    assert!(
        links.len() == 1 && links[0].peer.as_deref() == Some(only),
        "h{host} has a control link other than the one to {only}:\n{text}"
    );
}

fn report(net: &Net, host: usize) -> Value {
    let out = net.weft_ok(host, &["report"]);
    serde_json::from_str(&out).expect("weft report is JSON")
}

/// Host `host`'s `router.relayed[]` entry for the peer named `peer` (bare name).
fn relayed_entry(net: &Net, host: usize, peer: &str) -> Value {
    let r = report(net, host);
    r["router"]["relayed"]
        .as_array()
        .and_then(|rs| rs.iter().find(|e| e["peer_name"] == peer).cloned())
        .unwrap_or_else(|| panic!("h{host} has no relayed entry for {peer}: {r}"))
}

/// Host `host`'s `router.punch` counter `field`.
fn punch_count(net: &Net, host: usize, field: &str) -> u64 {
    let r = report(net, host);
    r["router"]["punch"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("h{host}'s report has no router.punch.{field}: {r}"))
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

/// The value of the sample of family `name` whose labels include every one of `labels`
/// (`key="value"`), from a metrics text.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let have: Vec<&str> = set.split(',').collect();
        labels
            .iter()
            .all(|want| have.contains(want))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// NAT b's public port for h3's sleeve socket (port 6783) towards NAT a's address,
/// from its conntrack table: the reply direction's destination port.
fn nat_b_port(net: &Net, h3: usize) -> Option<u16> {
    let private = net.host(h3).addr.to_string();
    let towards = Nat::A.public().to_string();
    let text = net.nat_conntrack_of(
        Nat::B,
        &[
            "-L",
            "-p",
            "udp",
            "--orig-src",
            &private,
            "--orig-dst",
            &towards,
        ],
    );
    text.lines()
        .filter(|l| l.contains("sport=6783"))
        .find_map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.strip_prefix("dport="))
                .nth(1)
                .and_then(|p| p.parse().ok())
        })
}

/// IPv4 UDP bytes (IP total length, fragments included) in a capture, and how many of
/// them were between the two NATs' public addresses.
fn udp_bytes(capture: Capture) -> (u64, u64) {
    let nats = [Nat::A.public(), Nat::B.public()];
    let mut total = 0u64;
    let mut between = 0u64;
    for p in capture.stop().packets {
        // Ethernet (14) + IPv4: protocol at byte 9, total length at bytes 2..4.
        if p.len() < 34 || p[12..14] != [0x08, 0x00] || p[14 + 9] != 17 {
            continue;
        }
        let len = u64::from(u16::from_be_bytes([p[16], p[17]]));
        total += len;
        if let Some((src, dst)) = ipv4_addrs(&p) {
            if nats.contains(&src) && nats.contains(&dst) {
                between += len;
            }
        }
    }
    (total, between)
}

/// Sends `size` bytes from `from` to `to` while captures run on h1's underlay link and
/// on NAT a's public link; returns (UDP bytes on h1's link, UDP bytes between the NATs
/// on NAT a's link).
fn transfer_captured(
    net: &Net,
    from: &PodInfo,
    to: &PodInfo,
    size: usize,
    name: &str,
) -> (u64, u64) {
    let h1_ns = net.host(1).ns.clone();
    let nat_ns = net.nat_ns_of(Nat::A);
    // Headers are enough: the IP total length gives each packet's size.
    let at_h1 = Capture::start(net, &h1_ns, "eth0", &["udp"], 96, &format!("{name}-h1"));
    let at_nat = Capture::start(net, &nat_ns, "eth0", &["udp"], 96, &format!("{name}-nat"));
    let start = Instant::now();
    let (sent, received) = transfer(&from.ns, &to.ns, &to.v4, size);
    let secs = start.elapsed().as_secs_f64();
    let (h1_bytes, _) = udp_bytes(at_h1);
    let (_, direct) = udp_bytes(at_nat);
    println!(
        "e2e: punch: {:.0} MB {} -> {} in {secs:.1} s, hashes {}; UDP on h1's link: {h1_bytes} \
         bytes; UDP between the NATs (NAT a's link): {direct} bytes",
        size as f64 / 1e6,
        from.ns,
        to.ns,
        if sent == received { "equal" } else { "DIFFER" }
    );
    assert_eq!(sent, received, "the transfer arrived corrupted");
    (h1_bytes, direct)
}

#[test]
fn two_hosts_behind_two_nats_punch_through_and_talk_directly() {
    const SIZE: usize = 20 * 1000 * 1000;
    let (mut net, h2, h3) = two_nats("punch", Mapping::PortPreserving);
    let (r1, r2, r3) = launch(&net, h2, h3);
    let pod2 = attach_pod(&mut net, h2);
    let pod3 = attach_pod(&mut net, h3);
    let _pod1 = attach_pod(&mut net, 1);

    let took = wait_until(PUNCH_LIMIT, Duration::from_millis(200), || {
        shows_punched(&net, h2, &r3.name).is_some() && shows_punched(&net, h3, &r2.name).is_some()
    })
    .unwrap_or_else(|| {
        panic!(
            "h2 and h3 did not punch through within {PUNCH_LIMIT:?}:\nh1:\n{}\nh2:\n{}\nh3:\n{}",
            status_connections(&net, 1),
            status_connections(&net, h2),
            status_connections(&net, h3)
        )
    });
    let line = shows_punched(&net, h2, &r3.name).expect("h2's punched line");
    println!(
        "e2e: punch: h2 and h3 punched through in {:.1} s; h2 shows: {}",
        took.as_secs_f64(),
        line.line
    );
    // The control links between h2 and h3 never came up: each has only h1.
    assert_no_direct_link(&net, h2, &r1.name);
    assert_no_direct_link(&net, h3, &r1.name);

    // h2 sends to NAT b's address and the port NAT b maps h3's sleeve socket to.
    let port = nat_b_port(&net, h3).expect("no NAT b mapping for h3's sleeve towards NAT a");
    let endpoint = format!("{NAT_B_PUBLIC}:{port}");
    assert_eq!(line.address, endpoint, "h2's punched line: {}", line.line);
    let entry = relayed_entry(&net, h2, r3.bare_name());
    println!("e2e: punch: h2's report for h3: {entry}");
    assert_eq!(entry["path"], "punched", "{entry}");
    assert_eq!(entry["endpoint"], endpoint.as_str(), "{entry}");
    let (succeeded, coordinated) = (
        punch_count(&net, h2, "succeeded"),
        punch_count(&net, 1, "coordinated"),
    );
    println!("e2e: punch: h2 punch.succeeded {succeeded}, h1 punch.coordinated {coordinated}");
    assert!(succeeded >= 1, "h2 counted no successful punch");
    assert!(coordinated >= 1, "h1 counted no punch request sent");
    let m = metrics(&net, h2);
    let peer = format!("peer=\"{}\"", r3.bare_name());
    let path = sample(&m, "weft_peer_path", &[&peer, "kind=\"punched\""]);
    let ok = sample(&m, "weft_punch_total", &["outcome=\"succeeded\""]);
    println!("e2e: punch: h2 metrics: weft_peer_path{{kind=\"punched\"}} {path:?}, weft_punch_total{{outcome=\"succeeded\"}} {ok:?}");
    assert_eq!(
        path,
        Some(1.0),
        "h2's /metrics: no punched path for h3:\n{m}"
    );
    assert!(
        ok.is_some_and(|v| v >= 1.0),
        "h2's /metrics: no successful punch:\n{m}"
    );

    // The pods talk, directly.
    wait_reachable(&net, &pod2, &pod3, Duration::from_secs(15));
    wait_reachable(&net, &pod3, &pod2, Duration::from_secs(15));
    let there = ping_series(&net, &pod2.ns, &pod3.v4, 10, "0.2", &[]);
    let back = ping_series(&net, &pod3.ns, &pod2.v4, 10, "0.2", &[]);
    println!(
        "e2e: punch: ping h2 pod -> h3 pod {}/{}, h3 pod -> h2 pod {}/{}",
        there.received, there.transmitted, back.received, back.transmitted
    );
    assert_eq!(there.lost(), 0, "{}", there.output);
    assert_eq!(back.lost(), 0, "{}", back.output);
    let (at_h1, direct) = transfer_captured(&net, &pod2, &pod3, SIZE, "punched");
    // Their data did not pass h1 (what h1's link carries is keepalives and the pair's
    // heartbeats with h1), and it did cross between the NATs.
    assert!(
        at_h1 < 1_000_000,
        "{at_h1} UDP bytes on h1's link during a {SIZE}-byte transfer: the data went through h1"
    );
    assert!(
        direct >= SIZE as u64,
        "only {direct} UDP bytes between the NATs during a {SIZE}-byte transfer"
    );
    // Still punched afterwards.
    assert!(
        shows_punched(&net, h2, &r3.name).is_some(),
        "{}",
        status_connections(&net, h2)
    );
    drop((r1, r2, r3));
}

#[test]
fn two_hosts_behind_random_port_nats_stay_relayed_and_say_so() {
    const SIZE: usize = 5 * 1000 * 1000;
    let (mut net, h2, h3) = two_nats("punchrand", Mapping::Random);
    let (r1, r2, r3) = launch(&net, h2, h3);
    let pod2 = attach_pod(&mut net, h2);
    let pod3 = attach_pod(&mut net, h3);

    // The pods talk through the relay from the start.
    wait_reachable(&net, &pod2, &pod3, Duration::from_secs(20));
    wait_reachable(&net, &pod3, &pod2, Duration::from_secs(20));
    let there = ping_series(&net, &pod2.ns, &pod3.v4, 10, "0.2", &[]);
    let back = ping_series(&net, &pod3.ns, &pod2.v4, 10, "0.2", &[]);
    println!(
        "e2e: punch: relayed: ping h2 pod -> h3 pod {}/{}, h3 pod -> h2 pod {}/{}",
        there.received, there.transmitted, back.received, back.transmitted
    );
    assert_eq!(there.lost(), 0, "{}", there.output);
    assert_eq!(back.lost(), 0, "{}", back.output);

    // An attempt is made and fails; meanwhile neither ever shows the other punched.
    let mut punched = None;
    let failed_in = wait_until(FAIL_LIMIT, Duration::from_millis(500), || {
        for (h, peer) in [(h2, &r3.name), (h3, &r2.name)] {
            if let Some(c) = shows_punched(&net, h, peer) {
                punched.get_or_insert(format!("h{h}: {}", c.line));
            }
        }
        punch_count(&net, h2, "failed") >= 1
    })
    .unwrap_or_else(|| {
        panic!(
            "h2 counted no failed punch within {FAIL_LIMIT:?}: {}\nh2:\n{}",
            report(&net, h2)["router"]["punch"],
            status_connections(&net, h2)
        )
    });
    assert_eq!(punched, None, "punched through random-port NATs");
    let (started, failed, coordinated) = (
        punch_count(&net, h2, "started"),
        punch_count(&net, h2, "failed"),
        punch_count(&net, 1, "coordinated"),
    );
    println!(
        "e2e: punch: relayed: first failed attempt counted after {:.1} s; h2 punch.started \
         {started}, punch.failed {failed}, h1 punch.coordinated {coordinated}",
        failed_in.as_secs_f64()
    );
    assert!(started >= 1, "h2 took part in no attempt");
    assert!(coordinated >= 1, "h1 sent no punch request");

    // Status, report and metrics say relayed via h1.
    for (h, peer) in [(h2, &r3.name), (h3, &r2.name)] {
        let line = shows_relayed(&net, h, peer, &r1.name).unwrap_or_else(|| {
            panic!(
                "h{h} does not show {peer} relayed via {}:\n{}",
                r1.name,
                status_connections(&net, h)
            )
        });
        println!("e2e: punch: relayed: h{h} shows: {}", line.line);
    }
    assert_no_direct_link(&net, h2, &r1.name);
    assert_no_direct_link(&net, h3, &r1.name);
    let entry = relayed_entry(&net, h2, r3.bare_name());
    println!("e2e: punch: relayed: h2's report for h3: {entry}");
    assert_eq!(
        entry["path"],
        format!("relayed via {}", r1.name).as_str(),
        "{entry}"
    );
    assert!(entry["endpoint"].is_null(), "{entry}");
    let m = metrics(&net, h2);
    let peer = format!("peer=\"{}\"", r3.bare_name());
    assert_eq!(
        sample(&m, "weft_peer_path", &[&peer, "kind=\"relayed\""]),
        Some(1.0),
        "h2's /metrics: h3 not relayed:\n{m}"
    );
    assert_eq!(
        sample(&m, "weft_peer_path", &[&peer, "kind=\"punched\""]),
        Some(0.0),
        "h2's /metrics: h3 punched, or the kind missing:\n{m}"
    );
    assert!(
        sample(&m, "weft_punch_total", &["outcome=\"failed\""]).is_some_and(|v| v >= 1.0),
        "h2's /metrics: no failed punch:\n{m}"
    );

    // The relay carries the data: h1's link sees at least all of it, the NATs exchange
    // nothing directly.
    let (at_h1, direct) = transfer_captured(&net, &pod2, &pod3, SIZE, "relayed");
    assert!(
        at_h1 >= SIZE as u64,
        "only {at_h1} UDP bytes on h1's link during a {SIZE}-byte relayed transfer"
    );
    assert!(
        direct < 100_000,
        "{direct} UDP bytes between the NATs, which cannot reach each other"
    );
    drop((r1, r2, r3));
}
