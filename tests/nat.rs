//! End-to-end test of a host behind a NAT: h2 lives on a private network that a NAT
//! namespace masquerades (real nftables) to one underlay address; h1 is public.
//!
//! ```text
//! h1 (198.18.0.1) ── switch ── nat (198.18.0.253 | 198.18.2.254, masquerade) ── h2 (198.18.2.2)
//! ```
//!
//! h1 has no route to 198.18.2.0/24: it reaches h2 only through the mapping that h2's
//! own datagrams open in the NAT, so the sleeve must answer h2 where its authentic
//! datagrams come from (roaming), and keepalives must hold the mapping. Then the NAT
//! forgets its mappings (`conntrack -F`) during traffic, and the path must come back.
//!
//! Real `weft` routers in test namespaces; needs root, `nft` and `conntrack`. Run
//! `cargo test --test nat -- --nocapture` to see the figures (lines starting `e2e:`).

mod common;

use common::netns::NAT_PUBLIC;
use common::traffic::{ping, ping_series, transfer};
use common::weft::{parse_connections, Auth, Router};
use common::{wait_until, Net};
use gossip::mesh::HEARTBEAT_ASK_AFTER;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const H1: &str = "198.18.0.1";
/// The NAT keepalive the routers run with (`--nat-keepalive`; 25 s by default).
const KEEPALIVE: Duration = Duration::from_secs(3);
/// The 100 MB transfer.
const TRANSFER: usize = 100 * 1000 * 1000;

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

/// Host `host`'s data-plane counters for the peer named `peer`.
fn traffic(net: &Net, host: usize, peer: &str) -> serde_json::Value {
    let r = report(net, host);
    r["dataplane"]["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == peer).cloned())
        .unwrap_or_else(|| panic!("h{host} has no counters for {peer}: {r}"))
}

/// The NAT's public port for the UDP flow from `private` port 6783 to h1's port 6783,
/// from its conntrack table (`conntrack -L`): the reply direction's destination port.
fn nat_port(net: &Net, private: &str) -> Option<u16> {
    let out = net.exec(
        &net.nat_ns(),
        "conntrack",
        &["-L", "-p", "udp", "--orig-src", private, "--orig-dst", H1],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.contains("sport=6783 dport=6783"))
        .find_map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.strip_prefix("dport="))
                .nth(1)
                .and_then(|p| p.parse().ok())
        })
}

/// Replies of a `ping -D` run: (icmp_seq, unix time received).
fn replies(output: &str) -> Vec<(u32, f64)> {
    output
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            let ts = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))?
                .parse()
                .ok()?;
            Some((seq, ts))
        })
        .collect()
}

#[test]
fn a_host_behind_a_nat_meshes_and_survives_a_mapping_flush() {
    let mut net = Net::new("nat", 1);
    let h2 = net.add_nated_host();
    let a2 = net.host(h2).addr;
    let h1_addr = net.host(1).addr;
    // The underlay: h2 reaches h1 through the NAT; h1 cannot address h2 at all.
    assert!(
        net.ping(&net.host(h2).ns, h1_addr),
        "h2 cannot reach h1 through the NAT"
    );
    assert!(
        !net.ping(&net.host(1).ns, a2),
        "h1 reaches h2's private address: the NAT is not in the way"
    );

    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let keepalive = KEEPALIVE.as_secs().to_string();
    let options = ["--nat-keepalive", keepalive.as_str()];
    let r1 = Router::launch_with(&net, 1, &auth, &options, &[]);
    let r2 = Router::launch_with(&net, h2, &auth, &options, &[H1]);
    let took = net.wait_established(&[(1, 1), (h2, 1)]);
    let pod1 = attach_pod(&mut net, 1);
    let pod2 = attach_pod(&mut net, h2);
    wait_reachable(&net, &pod1, &pod2, Duration::from_secs(15));
    wait_reachable(&net, &pod2, &pod1, Duration::from_secs(15));
    let there = ping_series(&net, &pod1.ns, &pod2.v4, 10, "0.2", &[]);
    let back = ping_series(&net, &pod2.ns, &pod1.v4, 10, "0.2", &[]);
    println!(
        "e2e: nat: established in {:.2} s; ping h1 pod -> h2 pod {}/{}, h2 pod -> h1 pod {}/{}",
        took.as_secs_f64(),
        there.received,
        there.transmitted,
        back.received,
        back.transmitted
    );
    assert_eq!(there.lost(), 0, "{}", there.output);
    assert_eq!(back.lost(), 0, "{}", back.output);

    // h1 sends to the NAT's address and the port of h2's mapping.
    let port = nat_port(&net, &a2.to_string()).expect("no NAT mapping for h2's sleeve");
    let expected = format!("{NAT_PUBLIC}:{port}");
    let c = connection(&net, 1, r2.bare_name());
    println!(
        "e2e: nat: h1's endpoint for h2: {} (learnt: {}); the NAT maps h2's 6783 to {expected}",
        c["endpoint"], c["endpoint_learnt"]
    );
    assert_eq!(c["endpoint"], expected.as_str(), "{c}");
    // Learnt from h2's datagrams, unless the NAT's random port happens to be the one
    // h2 announced.
    assert_eq!(c["endpoint_learnt"], port != 6783, "{c}");
    let text =
        String::from_utf8_lossy(&net.weft(1, &["status", "connections"]).stdout).into_owned();
    let conns = parse_connections(&text).expect("status connections parses");
    let moved = traffic(&net, 1, r2.bare_name())["endpoint_changes"]
        .as_u64()
        .unwrap_or(0);
    if port != 6783 {
        assert!(
            conns
                .iter()
                .any(|c| c.state == "established"
                    && c.line.contains(&format!("endpoint={expected}"))),
            "status connections does not show the endpoint {expected}:\n{text}"
        );
        assert!(moved >= 1, "h1 counted no endpoint change");
    }
    // h2 keeps h1's own address: nothing to learn.
    let c2 = connection(&net, h2, r1.bare_name());
    assert_eq!(c2["endpoint"], format!("{H1}:6783").as_str(), "{c2}");
    assert_eq!(c2["endpoint_learnt"], false, "{c2}");

    // 100 MB from the public pod to the pod behind the NAT, intact.
    let start = Instant::now();
    let (sent, received) = transfer(&pod1.ns, &pod2.ns, &pod2.v4, TRANSFER);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "e2e: nat: 100 MB h1 pod -> h2 pod in {secs:.1} s ({:.1} MB/s), hashes {}",
        TRANSFER as f64 / 1e6 / secs,
        if sent == received { "equal" } else { "DIFFER" }
    );
    assert_eq!(sent, received, "the transfer arrived corrupted");

    // The NAT forgets h2's UDP mapping while h1's pod pings h2's: h2 sends nothing but
    // keepalives (its pod gets no requests to answer), so the new mapping is opened by
    // h2's next keepalive, and h1 must follow it there. The control link (TCP) keeps
    // its mapping and stays up.
    let links_before = lost_links(&r1);
    let old_port = nat_port(&net, &a2.to_string());
    let moved_before = endpoint_changes(&net, &r2);
    let (lost, recovered) = flush_during_ping(&net, &pod1, &pod2, &["-D", "-p", "udp"]);
    let new_port = nat_port(&net, &a2.to_string());
    let moved_after = endpoint_changes(&net, &r2);
    println!(
        "e2e: nat: UDP mappings deleted (conntrack -D -p udp) during a ping h1 pod -> h2 pod \
         (0.1 s interval, keepalive {} s): {lost} lost, replies again {} after; NAT port \
         {old_port:?} -> {new_port:?}; endpoint changes at h1 {moved_before} -> {moved_after}",
        KEEPALIVE.as_secs(),
        recovered.map_or("never".to_string(), |r| format!("{r:.2} s")),
    );
    // One keepalive interval, and the pinger's 1 s reply deadline.
    let bound = KEEPALIVE.as_secs_f64() + 1.5;
    assert!(
        recovered.is_some_and(|r| r <= bound),
        "the path did not recover within {bound} s of the flush ({recovered:?})"
    );
    assert_eq!(lost_links(&r1), links_before, "the control link was lost");
    assert_eq!(moved_after, moved_before + 1, "one endpoint change");
    assert_endpoint(&net, &r2, new_port);

    // The NAT forgets every mapping (`conntrack -F`, as a NAT that restarts). The control
    // link's mapping is gone too: if h1 writes on it first, the NAT resets it, and h2
    // finds out when it next writes on it (a heartbeat it asks for); it dials again,
    // the sleeve starts over with new keys and follows h2's new mapping.
    let (lost, recovered) = flush_during_ping(&net, &pod1, &pod2, &["-F"]);
    let newest_port = nat_port(&net, &a2.to_string());
    println!(
        "e2e: nat: every mapping flushed (conntrack -F) during a ping h1 pod -> h2 pod: \
         {lost} lost, replies again {} after; NAT port {new_port:?} -> {newest_port:?}; \
         control links lost at h1: {}",
        recovered.map_or("never".to_string(), |r| format!("{r:.2} s")),
        lost_links(&r1) - links_before
    );
    // One keepalive interval; or, when h1 wrote on the control link first and the NAT
    // reset it (h1 then drops h2's session and falls silent), the time until h2 next
    // writes on it and finds out: h2 asks for a heartbeat once it heard nothing from h1
    // for HEARTBEAT_ASK_AFTER (and a second of timer batching); then a new dial (up to
    // 1.5 s) and the new link's first key exchange.
    let bound = KEEPALIVE.max(HEARTBEAT_ASK_AFTER).as_secs_f64() + 1.0 + 5.0;
    assert!(
        recovered.is_some_and(|r| r <= bound),
        "the path did not recover within {bound} s of the flush ({recovered:?})"
    );
    assert_endpoint(&net, &r2, newest_port);
    net.wait_established(&[(1, 1), (h2, 1)]);
    assert!(
        ping(&net, &pod2.ns, &pod1.v4),
        "no ping back after the flush"
    );
    for line in router_log(&r1).lines().filter(|l| {
        l.contains("sleeve endpoint") || l.contains("UDP path") || l.contains(" lost: ")
    }) {
        println!("e2e: nat: h1 log: {line}");
    }
    drop((r1, r2));
}

/// The router's own log file (`Router::log` adds the console's copy of it).
fn router_log(r: &Router) -> String {
    std::fs::read_to_string(r.run_dir.join("weft.log")).unwrap_or_default()
}

/// Control links h1's router lost so far (from its log).
fn lost_links(r1: &Router) -> usize {
    router_log(r1)
        .lines()
        .filter(|l| l.contains("router::links") && l.contains(" lost: "))
        .count()
}

fn endpoint_changes(net: &Net, r2: &Router) -> u64 {
    traffic(net, 1, r2.bare_name())["endpoint_changes"]
        .as_u64()
        .unwrap_or(0)
}

/// h1's endpoint for h2 is the NAT's address and `port`.
fn assert_endpoint(net: &Net, r2: &Router, port: Option<u16>) {
    let port = port.expect("no NAT mapping for h2's sleeve");
    let c = connection(net, 1, r2.bare_name());
    assert_eq!(
        c["endpoint"],
        format!("{NAT_PUBLIC}:{port}").as_str(),
        "{c}"
    );
}

/// Runs `conntrack FLUSH` in the NAT 3 s into a 30 s ping (0.1 s interval) from `from`
/// to `to`; returns the requests lost after it and how long after it replies came
/// back for good (`None`: never).
fn flush_during_ping(
    net: &Net,
    from: &PodInfo,
    to: &PodInfo,
    flush: &[&str],
) -> (usize, Option<f64>) {
    const COUNT: u32 = 300;
    let (output, flushed_at) = thread::scope(|s| {
        let pinger = s.spawn(|| {
            let count = COUNT.to_string();
            let out = net.exec_for(
                &from.ns,
                "ping",
                &["-4", "-D", "-c", &count, "-i", "0.1", "-W", "1", &to.v4],
                Duration::from_secs(90),
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        thread::sleep(Duration::from_secs(3));
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        net.nat_conntrack(flush);
        (pinger.join().expect("ping thread"), at)
    });
    let got = replies(&output);
    let answered = |seq: u32| got.iter().any(|(q, _)| *q == seq);
    let before = got
        .iter()
        .filter(|(_, t)| *t <= flushed_at)
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(0);
    let lost = (before + 1..=COUNT).filter(|s| !answered(*s)).count();
    let recovered = match (before + 1..=COUNT).rev().find(|s| !answered(*s)) {
        None => Some(0.0),
        Some(last_lost) => got
            .iter()
            .filter(|(s, _)| *s > last_lost)
            .map(|(_, t)| t - flushed_at)
            .reduce(f64::min),
    };
    (lost, recovered)
}
