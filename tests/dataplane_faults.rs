//! End-to-end tests of the data plane under faults and attacks: partial underlay
//! connectivity (relay), captures of the underlay (no plaintext), replayed and garbage
//! datagrams at the sleeve port, short rekey intervals, and routers that die or restart.
//!
//! Real `weft` routers in test namespaces; captures are `tcpdump` children of the test,
//! ended by PID. Needs root. Run `cargo test --test dataplane_faults -- --nocapture` to
//! see the figures (lines starting with `e2e:`).
//!
//! Drops are checked from the outside (what reaches the pods, and what leaves the
//! router) and from the router's own counters in `weft report`.

mod common;

use common::capture::{icmp_echo_request, udp, Capture, Pcap};
use common::traffic::{count, fill, ping, ping_series, tcp_send, transfer};
use common::weft::{parse_connections, parse_peers, three_routers, Auth, Router};
use common::{wait_until, Net};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const H1: &str = "198.18.0.1";
const SLEEVE_PORT: u16 = 6783;
/// The marker sent through the overlay: 16 bytes, so that it is also a `ping -p` pattern.
const MARKER: &[u8; 16] = b"WEFT-MARKER-7f3a";

/// Held for the whole of the two heaviest tests (60 s of flood; 20 MiB of transfers
/// through three debug-build routers), so that they never run side by side: the flood
/// test measures ping loss, which CPU starvation on a small machine would skew.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pod attached by `weft attach`: its namespace and overlay addresses.
#[derive(Debug, Clone)]
struct PodInfo {
    ns: String,
    v4: String,
    v6: String,
}

/// Attaches pod `k` on host `h`: 10.40.h.(k+1)/16 and fd00:40::h:k/64.
fn attach_pod(net: &mut Net, host: usize, k: usize) -> PodInfo {
    let ns = net.add_bare_pod(host, k);
    let v4 = format!("10.40.{host}.{}", k + 1);
    let v6 = format!("fd00:40::{host}:{k}");
    net.attach(host, &[&format!("{v4}/16"), &format!("{v6}/64")], &ns);
    PodInfo { ns, v4, v6 }
}

/// Waits up to `limit` for `from` to ping `to` (IPv4); panics otherwise.
fn wait_reachable(net: &Net, from: &PodInfo, to: &PodInfo, limit: Duration) -> Duration {
    wait_until(limit, Duration::from_millis(100), || {
        ping(net, &from.ns, &to.v4)
    })
    .unwrap_or_else(|| {
        panic!(
            "{} cannot ping {} ({}) within {limit:?}",
            from.ns, to.ns, to.v4
        )
    })
}

/// h1 and h2 (h2 given h1 as its peer), both with `options`, their UDP path confirmed,
/// and one pod on each that reaches the other.
fn two_hosts_with_pods(net: &mut Net, options: &[&str]) -> (Vec<Router>, PodInfo, PodInfo) {
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let routers = vec![
        Router::launch_with(net, 1, &auth, options, &[]),
        Router::launch_with(net, 2, &auth, options, &[H1]),
    ];
    net.wait_established(&[(1, 1), (2, 1)]);
    let pod1 = attach_pod(net, 1, 1);
    let pod2 = attach_pod(net, 2, 1);
    wait_reachable(net, &pod1, &pod2, Duration::from_secs(15));
    wait_reachable(net, &pod2, &pod1, Duration::from_secs(15));
    (routers, pod1, pod2)
}

fn status(net: &Net, host: usize, what: &str) -> String {
    String::from_utf8_lossy(&net.weft(host, &["status", what]).stdout).into_owned()
}

/// The 4-byte encoding of an IPv4 address and the 16-byte one of an IPv6 address.
/// Datagrams `host`'s router dropped as garbage: malformed, unknown index, failed
/// authentication or replayed, over all peers (from `weft report`).
fn garbage_drops(net: &Net, host: usize) -> u64 {
    let out = net.weft(host, &["report"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("weft report is JSON");
    let dp = &report["dataplane"];
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let peers: u64 = dp["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    n(p, "drops_malformed")
                        + n(p, "drops_auth")
                        + n(p, "drops_replay")
                        + n(p, "drops_unknown_index")
                })
                .sum()
        })
        .unwrap_or(0);
    peers + n(dp, "drops_malformed") + n(dp, "drops_unknown_index")
}

fn addr_bytes(addr: &str) -> Vec<u8> {
    match addr.parse::<std::net::IpAddr>().expect("an address") {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The MAC address of `ethwe0` in a pod, as 6 bytes.
fn pod_mac(net: &Net, pod: &PodInfo) -> Vec<u8> {
    let out = net.exec(&pod.ns, "cat", &["/sys/class/net/ethwe0/address"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mac: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex MAC byte"))
        .collect();
    assert_eq!(mac.len(), 6, "MAC of ethwe0 in {}: {text:?}", pod.ns);
    mac
}

/// The sleeve datagrams (whole UDP payloads) from `src` to `dst`:6783 in a capture.
fn sleeve_datagrams(pcap: &Pcap, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    pcap.packets
        .iter()
        .filter_map(|p| udp(p))
        .filter(|u| u.src == src && u.dst == dst && u.dport == SLEEVE_PORT)
        .filter(|u| u.payload.len() == u.len)
        .map(|u| u.payload.to_vec())
        .collect()
}

/// ICMP echo requests `(id, seq)` in a capture, in order.
fn echo_requests(pcap: &Pcap) -> Vec<(u16, u16)> {
    pcap.packets
        .iter()
        .filter_map(|p| icmp_echo_request(p))
        .collect()
}

/// UDP counters of namespace `ns` (`/proc/net/snmp`): (InDatagrams, RcvbufErrors).
fn udp_snmp(net: &Net, ns: &str) -> (u64, u64) {
    let out = net.exec(ns, "cat", &["/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    let get = |key: &str| {
        names
            .split_whitespace()
            .position(|n| n == key)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Udp {key} in /proc/net/snmp of {ns}:\n{text}"))
    };
    (get("InDatagrams"), get("RcvbufErrors"))
}

/// Runs `f` with a UDP socket bound to `bind` inside namespace `ns`.
fn with_udp_in<R: Send>(ns: &str, bind: SocketAddr, f: impl FnOnce(&UdpSocket) -> R + Send) -> R {
    let file = datapath::netns::NetnsRef::Name(ns.to_string())
        .open()
        .expect("open netns");
    datapath::netns::run_in(&file, Path::new(ns), move || {
        let socket = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind} in {ns}: {e}"));
        f(&socket)
    })
    .expect("thread in netns")
}

#[test]
fn traffic_is_relayed_when_two_hosts_cannot_reach_each_other() {
    let _heavy = heavy();
    let mut net = Net::new("dfrelay", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let (a1, a2, a3) = (net.host(1).addr, net.host(2).addr, net.host(3).addr);
    // Cut h1 and h3 apart on the underlay, inside their namespaces only.
    net.blackhole(1, a3);
    net.blackhole(3, a1);
    let (ns1, ns3) = (net.host(1).ns.clone(), net.host(3).ns.clone());
    assert!(!net.ping(&ns1, a3), "h1 still reaches h3 on the underlay");
    assert!(!net.ping(&ns3, a1), "h3 still reaches h1 on the underlay");
    assert!(
        net.ping(&ns1, a2) && net.ping(&ns3, a2),
        "h2 must reach both"
    );

    let r1 = Router::launch(&net, 1, &auth, &[]);
    let r2 = Router::launch(&net, 2, &auth, &[H1]);
    let r3 = Router::launch(&net, 3, &auth, &["198.18.0.2"]);
    let took = net.wait_established(&[(1, 1), (2, 2), (3, 1)]);
    println!(
        "e2e: relay: h1-h2 and h2-h3 established in {:.2} s",
        took.as_secs_f64()
    );
    // h1 and h3 must learn each other's record (a block of its own in `status peers`,
    // not only as a remote of h2) to have a unicast route through h2.
    let has_record = |host: usize, r: &Router| {
        status(&net, host, "peers")
            .lines()
            .any(|l| l.starts_with(r.bare_name()))
    };
    let learnt = wait_until(Duration::from_secs(40), Duration::from_millis(100), || {
        has_record(1, &r3) && has_record(3, &r1)
    });
    println!(
        "e2e: relay: h1 and h3 hold each other's peer record {} after all links were established",
        learnt.map_or("never (40 s)".into(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        ))
    );
    assert!(
        learnt.is_some(),
        "h1 and h3 never learnt each other's record:\nh1:\n{}\nh3:\n{}",
        status(&net, 1, "peers"),
        status(&net, 3, "peers")
    );

    let pod1 = attach_pod(&mut net, 1, 1);
    let pod2 = attach_pod(&mut net, 2, 1);
    let pod3 = attach_pod(&mut net, 3, 1);
    let t = wait_reachable(&net, &pod1, &pod3, Duration::from_secs(10));
    println!(
        "e2e: relay: pod h1 -> pod h3 answered {:.2} s after attach",
        t.as_secs_f64()
    );
    wait_reachable(&net, &pod3, &pod1, Duration::from_secs(10));
    wait_reachable(&net, &pod1, &pod2, Duration::from_secs(10));
    let series = ping_series(&net, &pod1.ns, &pod3.v4, 20, "0.1", &[]);
    assert!(series.lost() == 0, "relayed pings lost: {}", series.output);
    let series = ping_series(&net, &pod3.ns, &pod1.v4, 20, "0.1", &[]);
    assert!(series.lost() == 0, "relayed pings lost: {}", series.output);

    let total = 10 * 1024 * 1024;
    let mut secs = [0.0; 2];
    for (i, to) in [&pod2, &pod3].into_iter().enumerate() {
        let t = Instant::now();
        let (sent, received) = transfer(&pod1.ns, &to.ns, &to.v4, total);
        assert_eq!(sent, received, "10 MiB to {} arrived altered", to.ns);
        secs[i] = t.elapsed().as_secs_f64();
    }
    let mbits = |s: f64| total as f64 * 8.0 / s / 1e6;
    println!(
        "e2e: relay: 10 MiB pod h1 -> pod h3 via h2 intact in {:.1} s ({:.0} Mbit/s); direct pod h1 -> pod h2 {:.1} s ({:.0} Mbit/s) (debug build)",
        secs[1],
        mbits(secs[1]),
        secs[0],
        mbits(secs[0])
    );

    // Neither end has a working connection to the other: the traffic went through h2.
    for (host, other) in [(1, &a3), (3, &a1)] {
        let text = status(&net, host, "connections");
        let conns = parse_connections(&text).expect("parse status connections");
        let direct: Vec<_> = conns
            .iter()
            .filter(|c| c.address.starts_with(&format!("{other}:")))
            .collect();
        assert!(
            direct.iter().all(|c| c.state != "established"),
            "h{host} claims an established connection to {other}: {text}"
        );
        println!(
            "e2e: relay: h{host} `status connections` for {other}: {:?}",
            direct.iter().map(|c| c.line.as_str()).collect::<Vec<_>>()
        );
    }
    let peers = status(&net, 1, "peers");
    let blocks = parse_peers(&peers).expect("parse status peers");
    let h3_block = blocks
        .iter()
        .find(|b| b.name == r3.name)
        .unwrap_or_else(|| panic!("h1's status peers lacks h3:\n{peers}"));
    assert!(
        h3_block
            .connections
            .iter()
            .all(|c| !c.contains(r1.bare_name())),
        "h1's status peers shows a link h3-h1:\n{peers}"
    );
    println!("e2e: relay: h1 `status peers`:\n{peers}");
    // `status connections` names the relay: h3 is reached `relayed` via h2 (and h1 via
    // h2 from h3's side), on the line of the link to h2.
    let r2_name = r2.name.clone();
    for (host, far) in [(1, &r3), (3, &r1)] {
        let text = status(&net, host, "connections");
        let conns = parse_connections(&text).expect("parse status connections");
        let relayed: Vec<_> = conns.iter().filter(|c| c.state == "relayed").collect();
        assert!(
            relayed.len() == 1
                && relayed[0]
                    .line
                    .contains(&format!("sleeve {} via {r2_name}", far.name))
                && relayed[0].address.starts_with("198.18.0.2:")
                && relayed[0].encrypted == Some(true),
            "h{host}'s status connections does not show {} relayed via {r2_name}:\n{text}",
            far.name
        );
        println!("e2e: relay: h{host}: {}", relayed[0].line);
    }
    let h2_text = status(&net, 2, "connections");
    assert!(
        !h2_text.contains("relayed"),
        "h2 reaches both directly:\n{h2_text}"
    );

    // A peer that joins behind a relay must be known across it at once: state learnt in
    // a new link's exchange (never relayed) triggers an early anti-entropy round. Before
    // that fix h1 learnt h3's record only at the periodic round (up to 30 s), and every
    // unicast frame from h1 to h3's pods was dropped for lack of a route meanwhile.
    let learnt = learnt.expect("checked above");
    assert!(
        learnt <= Duration::from_secs(1),
        "h1 learnt h3's record (needed for a route to h3) only {:.1} s after all links showed established",
        learnt.as_secs_f64()
    );
}

#[test]
fn underlay_capture_shows_no_plaintext() {
    let mut net = Net::new("dfplain", 2);
    let (_routers, pod1, pod2) = two_hosts_with_pods(&mut net, &[]);
    let (a1, a2) = (net.host(1).addr, net.host(2).addr);
    let under = Capture::start(&net, net.switch(), "br0", &[], 0, "underlay");
    let inner = Capture::start(&net, &pod2.ns, "ethwe0", &[], 0, "pod2");

    // 2000 markers over TCP pod1 -> pod2, checked at the receiver.
    let mut copies = 2000;
    let produce = move |buf: &mut [u8]| {
        let n = copies.min(buf.len() / MARKER.len());
        for chunk in buf[..n * MARKER.len()].chunks_mut(MARKER.len()) {
            chunk.copy_from_slice(MARKER);
        }
        copies -= n;
        n * MARKER.len()
    };
    let mut received = Vec::new();
    let (sent, got_hash, got) = tcp_send(&pod1.ns, &pod2.ns, &pod2.v4, 5202, produce, |b| {
        received.extend_from_slice(b)
    });
    assert_eq!(sent, got_hash, "the markers arrived altered");
    assert_eq!(got, 2000 * MARKER.len());
    assert_eq!(count(&received, MARKER), 2000, "markers received");
    // Pings whose payload is the marker repeated, both ways (the reply echoes it), on
    // IPv4 and IPv6.
    let pattern: String = MARKER.iter().map(|b| format!("{b:02x}")).collect();
    let v4 = ping_series(
        &net,
        &pod1.ns,
        &pod2.v4,
        20,
        "0.1",
        &["-p", &pattern, "-s", "1200"],
    );
    assert_eq!(v4.lost(), 0, "{}", v4.output);
    let out = net.exec(
        &pod1.ns,
        "ping",
        &[
            "-6", "-c", "5", "-i", "0.2", "-W", "2", "-p", &pattern, &pod2.v6,
        ],
    );
    assert!(
        out.status.success(),
        "IPv6 ping: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    thread::sleep(Duration::from_millis(500));
    let under_raw = {
        let file = under.file.clone();
        let pcap = under.stop();
        let sleeve = sleeve_datagrams(&pcap, a1, a2).len() + sleeve_datagrams(&pcap, a2, a1).len();
        let bytes: usize = pcap.packets.iter().map(Vec::len).sum();
        println!(
            "e2e: plaintext: underlay capture holds {} packets ({bytes} bytes), {sleeve} of them sleeve datagrams h1<->h2",
            pcap.packets.len()
        );
        assert!(
            sleeve >= 2000 * MARKER.len() / 1400 + 50,
            "the underlay capture holds only {sleeve} sleeve datagrams: did it capture?"
        );
        // Every sleeve datagram starts with type 4 and zero reserved bytes.
        for u in pcap.packets.iter().filter_map(|p| udp(p)) {
            if u.dport == SLEEVE_PORT && u.src != u.dst {
                assert_eq!(
                    &u.payload[..4],
                    &[4, 0, 0, 0],
                    "sleeve header {:?}",
                    &u.payload[..16]
                );
            }
        }
        std::fs::read(&file).expect("read the underlay capture")
    };
    let inner_raw = inner.stop();
    let inner_bytes: Vec<u8> = inner_raw.packets.concat();

    // What must not be in the clear on the underlay: the marker, the pods' IPv4 and
    // IPv6 addresses, and the pods' MAC addresses. The capture in pod2 shows that the
    // same search finds them where they are in the clear.
    let mut needles: Vec<(String, Vec<u8>)> = vec![("marker".into(), MARKER.to_vec())];
    for pod in [&pod1, &pod2] {
        needles.push((pod.v4.clone(), addr_bytes(&pod.v4)));
        needles.push((pod.v6.clone(), addr_bytes(&pod.v6)));
        needles.push((format!("MAC of {}", pod.ns), pod_mac(&net, pod)));
    }
    for (what, bytes) in &needles {
        let outside = count(&under_raw, bytes);
        let inside = count(&inner_bytes, bytes);
        println!("e2e: plaintext: {what}: {outside} on the underlay, {inside} inside pod2");
        assert_eq!(outside, 0, "{what} appears in clear on the underlay");
        assert!(
            inside > 0,
            "{what} not even seen inside pod2: the search is broken"
        );
    }
}

#[test]
fn replayed_datagrams_are_not_delivered() {
    let mut net = Net::new("dfreplay", 2);
    let (routers, pod1, pod2) = two_hosts_with_pods(&mut net, &[]);
    let (a1, a2) = (net.host(1).addr, net.host(2).addr);
    let injector = SocketAddr::from((a1, 40123));
    let sw = net.switch().to_string();
    let h2ns = net.host(2).ns.clone();
    let filter = format!("udp and src host {a1} and dst host {a2} and dst port {SLEEVE_PORT}");
    let under = Capture::start(&net, &sw, "br0", &[&filter], 0, "underlay");
    let arrived = Capture::start(
        &net,
        &h2ns,
        "eth0",
        &[&format!(
            "udp and src port {} and dst port {SLEEVE_PORT}",
            injector.port()
        )],
        0,
        "h2-injected",
    );
    let pod_cap = Capture::start(&net, &pod2.ns, "ethwe0", &["-Q", "in", "icmp"], 0, "pod2");

    let series = ping_series(&net, &pod1.ns, &pod2.v4, 5, "0.2", &[]);
    assert_eq!(series.lost(), 0, "{}", series.output);
    thread::sleep(Duration::from_millis(500));
    let datagrams = sleeve_datagrams(&under.stop(), a1, a2);
    assert!(
        datagrams.len() >= 5,
        "captured only {} sleeve datagrams h1 -> h2",
        datagrams.len()
    );
    let before = echo_requests(&pod_cap.packets());
    assert_eq!(
        before.len(),
        5,
        "echo requests delivered to pod2: {before:?}"
    );

    // Re-inject every captured datagram three times, from h1's address (another port:
    // the router's socket holds 6783; the endpoint is pinned, so the source only counts
    // as a mismatch and the datagram still goes through the replay check).
    let snmp_before = udp_snmp(&net, &h2ns);
    const ROUNDS: usize = 3;
    let to = SocketAddr::from((a2, SLEEVE_PORT));
    let sent = with_udp_in(&net.host(1).ns.clone(), injector, |s| {
        let mut sent = 0;
        for _ in 0..ROUNDS {
            for d in &datagrams {
                sent += usize::from(s.send_to(d, to).is_ok());
            }
            thread::sleep(Duration::from_millis(100));
        }
        sent
    });
    thread::sleep(Duration::from_secs(2));
    let reached = arrived.stop().packets.len();
    let taken = udp_snmp(&net, &h2ns).0 - snmp_before.0;
    let after = echo_requests(&pod_cap.packets());
    println!(
        "e2e: replay: re-injected {} captured datagrams x{ROUNDS} ({sent} sent, {reached} reached h2's eth0); echo requests in pod2: {} before, {} after",
        datagrams.len(),
        before.len(),
        after.len()
    );
    assert_eq!(reached, sent, "not all re-injected datagrams reached h2");
    assert!(
        taken >= sent as u64,
        "h2's sockets took in only {taken} datagrams, fewer than the {sent} re-injected"
    );
    assert_eq!(
        after.len(),
        before.len(),
        "replayed datagrams were delivered to pod2: {after:?}"
    );
    let unique: BTreeSet<_> = after.iter().collect();
    assert_eq!(
        unique.len(),
        after.len(),
        "duplicate echo requests: {after:?}"
    );
    // Every re-injected datagram is counted as a replay against h1, and none counts as
    // authentic from the wrong address (a replay is dropped before decryption).
    let report = net.weft(2, &["report"]);
    let report: serde_json::Value =
        serde_json::from_slice(&report.stdout).expect("weft report is JSON");
    let from_h1 = report["dataplane"]["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == routers[0].bare_name()))
        .unwrap_or_else(|| panic!("no data-plane counters for h1 in {report}"))
        .clone();
    let replays = from_h1["drops_replay"].as_u64().unwrap_or(0);
    println!("e2e: replay: h2 counted {replays} replays from h1 ({from_h1})");
    assert!(
        replays >= sent as u64,
        "{replays} replays counted, {sent} re-injected"
    );
    assert_eq!(from_h1["src_mismatch"], 0, "{from_h1}");
    // Nor did they move h1's endpoint (issue 16: only fresh authentic datagrams roam).
    assert_eq!(from_h1["endpoint_changes"], 0, "{from_h1}");
    assert_eq!(
        sleeve_endpoint(&report, routers[0].bare_name()),
        format!("{a1}:{SLEEVE_PORT}"),
        "h2 moved h1's endpoint after the replays"
    );

    // The router on h2 still works, and the pod capture still sees new requests.
    assert!(net.weft(2, &["status"]).status.success(), "h2 router gone");
    assert!(ping(&net, &pod1.ns, &pod2.v4), "no ping after the replay");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(echo_requests(&pod_cap.stop()).len(), before.len() + 1);
    drop(routers);
}

/// The sleeve endpoint `report` holds for the peer named `peer` (its connection's
/// `endpoint`).
fn sleeve_endpoint(report: &serde_json::Value, peer: &str) -> String {
    report["router"]["connections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["peer_name"] == peer))
        .and_then(|c| c["endpoint"].as_str())
        .unwrap_or_else(|| panic!("no endpoint for {peer} in {report}"))
        .to_string()
}

/// Kinds of garbage sent at the sleeve port.
const GARBAGE_KINDS: u64 = 5;

#[test]
fn garbage_flood_leaves_the_router_working() {
    let _heavy = heavy();
    let mut net = Net::new("dfflood", 2);
    let (routers, pod1, pod2) = two_hosts_with_pods(&mut net, &[]);
    let flooder_host = net.add_host();
    let (a1, a2, af) = (
        net.host(1).addr,
        net.host(2).addr,
        net.host(flooder_host).addr,
    );
    let flooder_ns = net.host(flooder_host).ns.clone();
    let sw = net.switch().to_string();

    // Real sleeve headers h1 -> h2, to forge datagrams the router must look at closely.
    let filter = format!("udp and src host {a1} and dst host {a2} and dst port {SLEEVE_PORT}");
    let under = Capture::start(&net, &sw, "br0", &[&filter], 0, "headers");
    let warm = ping_series(&net, &pod1.ns, &pod2.v4, 3, "0.2", &[]);
    assert_eq!(warm.lost(), 0, "{}", warm.output);
    thread::sleep(Duration::from_millis(300));
    let headers: Vec<[u8; 16]> = sleeve_datagrams(&under.stop(), a1, a2)
        .iter()
        .map(|d| d[..16].try_into().expect("16 bytes"))
        .collect();
    assert!(!headers.is_empty(), "no sleeve datagram captured");

    // Anything h2 sends to the flooder is a reply to garbage.
    let replies = Capture::start(
        &net,
        &flooder_ns,
        "eth0",
        &[&format!("ip and src host {a2} and dst host {af}")],
        0,
        "replies",
    );
    let h2 = &routers[1];
    let (rss_before, cpu_before) = (h2.rss_kib(), h2.cpu_time());
    let h2ns = net.host(2).ns.clone();
    let snmp_before = udp_snmp(&net, &h2ns);
    let drops_before = garbage_drops(&net, 2);
    const FLOOD: Duration = Duration::from_secs(60);
    const PER_MS: usize = 20; // 20k datagrams/s at most
    let from = SocketAddr::from((af, 40124));
    let to = SocketAddr::from((a2, SLEEVE_PORT));
    let (flood, series) = thread::scope(|scope| {
        let flooder = scope.spawn(|| {
            with_udp_in(&flooder_ns, from, |s| {
                let mut state = 0x2545_f491_4f6c_dd1du64;
                let mut pool = vec![0u8; 1 << 16];
                fill(&mut pool, &mut state);
                let mut buf = [0u8; 1500];
                let next = |state: &mut u64| {
                    let mut b = [0u8; 8];
                    fill(&mut b, state);
                    u64::from_le_bytes(b)
                };
                let (mut sent, mut errors) = ([0u64; GARBAGE_KINDS as usize], 0u64);
                let start = Instant::now();
                let mut tick = 0u64;
                while start.elapsed() < FLOOD {
                    for _ in 0..PER_MS {
                        let r = next(&mut state);
                        let kind = (r % GARBAGE_KINDS) as usize;
                        let off = ((r >> 8) % (pool.len() as u64 - 1500)) as usize;
                        let len = match kind {
                            // Random bytes, any length up to 1500 (0 included).
                            0 => ((r >> 32) % 1501) as usize,
                            // Truncated: shorter than a header plus a tag.
                            1 => ((r >> 32) % 33) as usize,
                            _ => 32 + ((r >> 32) % 1469) as usize,
                        };
                        buf[..len].copy_from_slice(&pool[off..off + len]);
                        let hdr = headers[(r >> 48) as usize % headers.len()];
                        match kind {
                            // A real header (index, counter) with a random body.
                            2 => buf[..16].copy_from_slice(&hdr),
                            // A real receiver index, a fresh counter, a random body.
                            3 => {
                                buf[..8].copy_from_slice(&hdr[..8]);
                                buf[8..16].copy_from_slice(&next(&mut state).to_le_bytes());
                            }
                            // A well-formed header with a random receiver index.
                            4 => buf[..4].copy_from_slice(&[4, 0, 0, 0]),
                            _ => {}
                        }
                        if s.send_to(&buf[..len], to).is_ok() {
                            sent[kind] += 1;
                        } else {
                            errors += 1;
                        }
                    }
                    tick += 1;
                    let due = Duration::from_millis(tick);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        thread::sleep(wait);
                    }
                }
                (sent, errors, start.elapsed())
            })
        });
        let series = ping_series(&net, &pod1.ns, &pod2.v4, 600, "0.1", &[]);
        (flooder.join().expect("flooder"), series)
    });
    let (sent, errors, took) = flood;
    let total: u64 = sent.iter().sum();
    let (rss_after, cpu_after) = (h2.rss_kib(), h2.cpu_time());
    let snmp_after = udp_snmp(&net, &h2ns);
    let reply_packets = replies.stop().packets.len();
    let counted = garbage_drops(&net, 2) - drops_before;
    println!(
        "e2e: flood: {total} garbage datagrams in {:.1} s ({:.0}/s; random {}, truncated {}, real header {}, real index {}, random index {}; {errors} send errors)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        sent[0], sent[1], sent[2], sent[3], sent[4]
    );
    println!(
        "e2e: flood: h2 counted {counted} garbage datagrams as dropped by reason; its socket had {} receive-buffer overflows",
        snmp_after.1 - snmp_before.1
    );
    println!(
        "e2e: flood: ping pod1 -> pod2 every 0.1 s: {}/{} answered ({:.1} % loss); h2 RSS {rss_before} -> {rss_after} KiB; h2 CPU {:.2} s during the flood; {reply_packets} packets from h2 to the flooder",
        series.received,
        series.transmitted,
        series.lost() as f64 * 100.0 / series.transmitted.max(1) as f64,
        (cpu_after - cpu_before).as_secs_f64()
    );
    assert!(total >= 100_000, "the flood sent only {total} datagrams");
    // The router looked at (and counted) most of them; the rest overflowed the socket.
    assert!(
        counted + (snmp_after.1 - snmp_before.1) >= total / 2,
        "h2 counted only {counted} of the {total} garbage datagrams"
    );
    assert!(series.transmitted >= 590, "{}", series.output);
    assert!(
        series.lost() * 100 < series.transmitted,
        "ping loss during the flood is 1 % or more: {}",
        series.output
    );
    assert!(
        rss_after < rss_before + 10 * 1024,
        "h2 RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(reply_packets, 0, "h2 sent packets to the flooder");
    // Forged datagrams from the flooder's address, with real headers or none, never
    // moved h1's endpoint there (issue 16).
    let report: serde_json::Value =
        serde_json::from_slice(&net.weft(2, &["report"]).stdout).expect("weft report is JSON");
    assert_eq!(
        sleeve_endpoint(&report, routers[0].bare_name()),
        format!("{a1}:{SLEEVE_PORT}"),
        "the flood moved h1's endpoint"
    );
    net.wait_established(&[(1, 1), (2, 1)]);
    assert!(ping(&net, &pod1.ns, &pod2.v4), "no ping after the flood");
}

#[test]
fn short_rekey_interval_loses_at_most_one_ping_per_epoch() {
    let mut net = Net::new("dfrekey", 2);
    let (_routers, pod1, pod2) = two_hosts_with_pods(&mut net, &["--rekey-interval", "2"]);
    let (a1, a2) = (net.host(1).addr, net.host(2).addr);
    let sw = net.switch().to_string();
    let filter = format!("udp and port {SLEEVE_PORT}");
    // Headers only: the receiver index changes with every epoch.
    let under = Capture::start(&net, &sw, "br0", &[&filter], 64, "headers");
    let series = ping_series(&net, &pod1.ns, &pod2.v4, 150, "0.2", &[]);
    let pcap = under.stop();
    let mut indices: BTreeMap<(Ipv4Addr, Ipv4Addr), BTreeSet<u32>> = BTreeMap::new();
    for u in pcap.packets.iter().filter_map(|p| udp(p)) {
        if u.dport == SLEEVE_PORT && u.payload.len() >= 16 {
            let idx = u32::from_le_bytes(u.payload[4..8].try_into().expect("4 bytes"));
            indices.entry((u.src, u.dst)).or_default().insert(idx);
        }
    }
    let epochs = |s, d| indices.get(&(s, d)).map_or(0, BTreeSet::len);
    let (e12, e21) = (epochs(a1, a2), epochs(a2, a1));
    println!(
        "e2e: rekey 2 s: {}/{} pings answered over {:.0} s (lost {}); receiver indices seen: {e12} h1->h2, {e21} h2->h1",
        series.received,
        series.transmitted,
        f64::from(series.transmitted) * 0.2,
        series.lost()
    );
    // 30 s at one rekey per 2 s is about 15 epochs; fewer means the flag did nothing.
    assert!(
        e12 >= 10 && e21 >= 10,
        "only {e12}/{e21} receiver indices in 30 s: the sessions did not rekey every 2 s"
    );
    assert_eq!(series.transmitted, 150, "{}", series.output);
    assert!(
        series.received >= 150 - 15,
        "more than one lost ping per 2 s epoch: {}",
        series.output
    );
}

#[test]
fn router_restart_and_bystander_death() {
    let mut net = Net::new("dfrestart", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let mut routers = three_routers(&net, &auth);
    let pod1 = attach_pod(&mut net, 1, 1);
    let pod3 = attach_pod(&mut net, 3, 1);
    wait_reachable(&net, &pod1, &pod3, Duration::from_secs(15));
    wait_reachable(&net, &pod3, &pod1, Duration::from_secs(10));

    // Kill -9 the bystander h2 while pod1 pings pod3 (direct path h1-h3).
    let r3 = routers.pop().expect("h3");
    let r2 = routers.pop().expect("h2");
    let series = thread::scope(|scope| {
        let pinger = scope.spawn(|| ping_series(&net, &pod1.ns, &pod3.v4, 75, "0.2", &[]));
        thread::sleep(Duration::from_secs(4));
        let status = r2.kill9();
        assert!(
            !status.success(),
            "h2 should have died from SIGKILL: {status}"
        );
        pinger.join().expect("pinger")
    });
    println!(
        "e2e: restart: kill -9 of h2 during 15 s of pings pod h1 -> pod h3: {}/{} answered",
        series.received, series.transmitted
    );
    assert!(
        series.lost() <= 1,
        "killing the bystander h2 cost pings between h1 and h3: {}",
        series.output
    );

    // Kill -9 h3 and relaunch it with the same dirs: its pod is reachable again, with
    // no re-attach (the bridge and the pod's veth stayed).
    let name = r3.name.clone();
    let ifindex = |pod: &PodInfo| {
        let out = net.exec(&pod.ns, "cat", &["/sys/class/net/ethwe0/ifindex"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let pod3_if = ifindex(&pod3);
    assert!(!pod3_if.is_empty(), "no ethwe0 in pod3");
    r3.kill9();
    let t0 = Instant::now();
    let r3 = Router::launch(&net, 3, &auth, &[H1]);
    let ready = t0.elapsed();
    assert_eq!(r3.name, name, "h3 relaunched with another peer name");
    let back = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        net.exec(
            &pod1.ns,
            "ping",
            &["-4", "-c", "1", "-W", "1", "-q", &pod3.v4],
        )
        .status
        .success()
    })
    .map(|_| t0.elapsed());
    println!(
        "e2e: restart: relaunched h3 answered `weft status` after {:.2} s; pod h1 -> pod h3 again after {}",
        ready.as_secs_f64(),
        back.map_or("never (10 s)".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
    );
    let back = back.unwrap_or_else(|| {
        panic!(
            "pod3 unreachable 10 s after h3's relaunch\nh1 connections:\n{}\nh3 connections:\n{}\nh3 log:\n{}",
            status(&net, 1, "connections"),
            status(&net, 3, "connections"),
            common::tail(&r3.log(), 30)
        )
    });
    assert!(back <= Duration::from_secs(10));
    assert_eq!(ifindex(&pod3), pod3_if, "pod3's ethwe0 was replaced");
    assert!(ping(&net, &pod3.ns, &pod1.v4), "pod3 cannot ping pod1");
    drop(routers);
}
