//! End-to-end tests of the way out of the overlay: pods reach an "outside world" through
//! their exposed host, masqueraded (issue 12), and nothing else is.
//!
//! Two hosts meshed with a secret. h2 is exposed at launch (`--expose`, an address from
//! IPAM) and has a second link, `wan0` (198.19.0.1/24), to an outside namespace
//! (198.19.0.2/24) that knows no route to any overlay range: replies reach a pod only
//! if its packets left with h2's own address. Pods are attached by the CNI plugin with
//! a default route, whose gateway is the exposed address. The same run shows that the
//! table deleted behind the router's back comes back, and that the router never runs
//! an `nft` that `PATH` names first (issue 14).

mod common;

use common::capture::{ipv4_addrs, Capture};
use common::cni::{ok, Fixture};
use common::wait_until;
use common::weft::{status_field, Auth, Router};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const WAN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const RANGE: &str = "10.40.128.0/17";

/// The CNI config: addresses from the router's IPAM, and a default route.
fn conf() -> Value {
    json!({"cniVersion": "1.0.0", "name": "weft", "type": "weft-net",
           "ipam": {"routes": [{"dst": "0.0.0.0/0"}]}})
}

/// Accepts one TCP connection on `bind` inside namespace `ns`, reads until EOF, and
/// answers with the peer address it saw; `connect_from` connects from namespace `from`
/// and sends `payload`. Returns the address the server saw.
fn seen_source(ns: &str, bind: SocketAddr, from: &str) -> SocketAddr {
    let server_ns = datapath::netns::NetnsRef::Name(ns.to_string())
        .open()
        .expect("open server netns");
    let client_ns = datapath::netns::NetnsRef::Name(from.to_string())
        .open()
        .expect("open client netns");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            datapath::netns::run_in(&server_ns, Path::new(ns), move || {
                let listener = TcpListener::bind(bind).expect("bind");
                ready_tx.send(()).expect("ready");
                let (mut conn, peer) = listener.accept().expect("accept");
                conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
                let mut got = Vec::new();
                conn.read_to_end(&mut got).expect("read");
                assert_eq!(got, b"hello from a pod", "payload");
                peer
            })
            .expect("server thread")
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server ready");
        datapath::netns::run_in(&client_ns, Path::new(from), move || {
            let mut conn = TcpStream::connect_timeout(&bind, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connect from {from} to {bind}: {e}"));
            conn.write_all(b"hello from a pod").expect("write");
        })
        .expect("client thread");
        server.join().expect("server thread panicked")
    })
}

/// h2's `weft status` line `label`.
fn status_line(f: &Fixture, host: usize, label: &str) -> String {
    let status = f.net.weft_ok(host, &["status"]);
    status_field(&status, label).unwrap_or_default()
}

/// Waits until h`host` says `Masquerade: <want>…`.
fn wait_masquerade(f: &Fixture, host: usize, want: &str) {
    let seen = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        status_line(f, host, "Masquerade").starts_with(want)
    });
    assert!(
        seen.is_some(),
        "h{host} never said `Masquerade: {want}`: {}",
        f.net.weft_ok(host, &["status"])
    );
}

/// The host's exposed address (without its length), from `weft ps`.
fn exposed(f: &Fixture, host: usize) -> Option<String> {
    let ps = f.net.weft_ok(host, &["ps"]);
    let line = ps.lines().find(|l| l.starts_with("weft:expose "))?;
    let cidr = line.split_whitespace().nth(2)?;
    Some(cidr.split('/').next()?.to_string())
}

fn nft_table(f: &Fixture, host: usize) -> String {
    let ns = f.net.host(host).ns.clone();
    let out = f.net.exec(&ns, "nft", &["list", "table", "inet", "weft"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What to look at when the way out fails: h2's forwarding, routes and rules, the pod's
/// routes.
fn diagnose(f: &Fixture, pod: &str) -> String {
    let h2 = f.net.host(2).ns.clone();
    let mut out = String::new();
    for (ns, program, args) in [
        (&h2, "sysctl", &["net.ipv4.ip_forward"][..]),
        (&h2, "ip", &["addr"][..]),
        (&h2, "ip", &["route"][..]),
        (&h2, "nft", &["list", "ruleset"][..]),
        (&pod.to_string(), "ip", &["route"][..]),
        (&pod.to_string(), "ip", &["addr"][..]),
    ] {
        let o = f.net.exec(ns, program, args);
        out.push_str(&format!(
            "$ {program} {}\n{}{}\n",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    out
}

fn launch_h2(f: &Fixture, auth: &Auth, extra: &[&str]) -> Router {
    let mut options = vec!["--ipalloc-range", RANGE, "--expose"];
    options.extend_from_slice(extra);
    Router::launch_with(&f.net, 2, auth, &options, &["198.18.0.1"])
}

#[test]
fn pods_reach_the_outside_masqueraded_and_pods_see_each_other_unchanged() {
    let mut f = Fixture::hosts("egress", 2);
    let auth = Auth::PasswordFile(f.net.new_secret("secret"));
    // h1's PATH leads to a fake `nft` that only leaves a mark: the router must run the
    // system's nft, never whatever PATH names first.
    let fake_dir = f.net.dir().join("fake-bin");
    std::fs::create_dir_all(&fake_dir).unwrap();
    let mark = f.net.dir().join("fake-nft-ran");
    let fake = fake_dir.join("nft");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", mark.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let Auth::PasswordFile(secret) = &auth else {
        unreachable!()
    };
    let args: Vec<String> = [
        "launch",
        "--foreground",
        "--password-file",
        &secret.display().to_string(),
        "--nickname",
        "h1",
        "--ipalloc-range",
        RANGE,
    ]
    .map(String::from)
    .to_vec();
    let _r1 = Router::launch_args_env(&f.net, 1, &args, &[("PATH", &path)]);
    let mut r2 = launch_h2(&f, &auth, &[]);
    f.net.wait_established(&[(1, 1), (2, 1)]);
    let outside = f.net.add_outside(2);

    // `--expose` alone: an address from IPAM, on h2's bridge; masquerade turns on.
    let gw = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        exposed(&f, 2).is_some()
    });
    assert!(gw.is_some(), "h2 was not exposed: {}", r2.log());
    let gw = exposed(&f, 2).unwrap();
    wait_masquerade(&f, 2, "active");
    let report: Value = serde_json::from_str(&f.net.weft_ok(2, &["report"])).unwrap();
    let masq = &report["masquerade"];
    assert_eq!(masq["state"], "active", "{masq}");
    assert_eq!(masq["subnets"], json!([RANGE]), "{masq}");
    let rules: Vec<&str> = masq["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(rules.iter().any(|r| r.ends_with("masquerade")), "{rules:?}");
    let table = nft_table(&f, 2);
    assert!(table.contains("masquerade"), "{table}");
    assert!(
        nft_table(&f, 1).contains("vxlan_injected"),
        "h1 has no guard"
    );
    assert!(
        !mark.exists(),
        "the router ran the nft that PATH named first"
    );

    // A pod on each host, attached by CNI: the default route's gateway is h2's
    // exposed address (on h2) and h1 has none (its pod's default route is on-link).
    f.host = 2;
    let (pod2, path2) = f.pod();
    let add2 = f.net_call("ADD", "out2", &path2, "eth0", &conf());
    ok(&add2);
    assert_eq!(
        add2.stdout["ips"][0]["gateway"],
        gw.as_str(),
        "{}",
        add2.raw
    );
    f.host = 1;
    let (pod1, path1) = f.pod();
    let add1 = f.net_call(
        "ADD",
        "out1",
        &path1,
        "eth0",
        &json!({
        "cniVersion": "1.0.0", "name": "weft", "type": "weft-net", "ipam": {}}),
    );
    ok(&add1);
    let ip = |out: &common::cni::Out| -> Ipv4Addr {
        let a = out.stdout["ips"][0]["address"].as_str().unwrap();
        a.split('/').next().unwrap().parse().unwrap()
    };
    let (ip1, ip2) = (ip(&add1), ip(&add2));

    // Ping and TCP to the outside: the replies come back, and the outside sees only
    // h2's own address.
    let capture = Capture::start(&f.net, &outside, "eth0", &["ip"], 128, "outside");
    let reached = wait_until(Duration::from_secs(20), Duration::from_millis(300), || {
        f.net.ping(&pod2, OUTSIDE)
    });
    assert!(
        reached.is_some(),
        "the pod on h2 cannot ping the outside\n{}",
        diagnose(&f, &pod2)
    );
    let seen = seen_source(&outside, SocketAddr::from((OUTSIDE, 8080)), &pod2);
    assert_eq!(seen.ip(), WAN, "the outside saw {seen}, not h2's address");
    let pcap = capture.stop();
    let sources: Vec<Ipv4Addr> = pcap
        .packets
        .iter()
        .filter_map(|p| ipv4_addrs(p))
        .map(|(src, _)| src)
        .collect();
    assert!(sources.contains(&WAN), "no packet from h2 captured");
    assert!(
        sources.iter().all(|s| *s == WAN || *s == OUTSIDE),
        "the outside saw other sources: {sources:?}"
    );
    assert!(!sources.contains(&ip2), "a pod address leaked: {sources:?}");

    // Between pods across hosts nothing is masqueraded: the far pod sees the near pod.
    let seen = seen_source(&pod2, SocketAddr::from((ip2, 8081)), &pod1);
    assert_eq!(seen.ip(), ip1, "pod to pod was rewritten");
    let seen = seen_source(&pod1, SocketAddr::from((ip1, 8082)), &pod2);
    assert_eq!(seen.ip(), ip2, "pod to pod was rewritten");
    // Nor traffic to the host's own exposed address.
    let host_ns = f.net.host(2).ns.clone();
    let gw_ip: Ipv4Addr = gw.parse().unwrap();
    let seen = seen_source(&host_ns, SocketAddr::from((gw_ip, 8083)), &pod1);
    assert_eq!(
        seen.ip(),
        ip1,
        "traffic to the exposed address was rewritten"
    );

    // The table deleted behind the router's back comes back, guard and rules.
    let ns2 = f.net.host(2).ns.clone();
    let deleted = f
        .net
        .exec(&ns2, "nft", &["delete", "table", "inet", "weft"]);
    assert!(deleted.status.success(), "{deleted:?}");
    let back = wait_until(Duration::from_secs(45), Duration::from_millis(500), || {
        let t = nft_table(&f, 2);
        t.contains("masquerade") && t.contains("vxlan_injected")
    });
    assert!(back.is_some(), "the deleted table was not put back");
    println!(
        "e2e: the deleted nftables table was back after {:.1} s",
        back.unwrap().as_secs_f64()
    );

    // --no-masquerade (and --expose again, idempotent): the same address is still
    // exposed, no rule masquerades, and the outside is out of reach.
    drop(r2);
    r2 = launch_h2(&f, &auth, &["--no-masquerade"]);
    wait_masquerade(&f, 2, "disabled");
    f.net.wait_established(&[(1, 1), (2, 1)]);
    assert_eq!(exposed(&f, 2).as_deref(), Some(gw.as_str()));
    let table = nft_table(&f, 2);
    assert!(!table.contains("masquerade"), "{table}");
    assert!(
        !f.net.ping(&pod2, OUTSIDE),
        "the outside answered a pod without masquerade"
    );
    ok(&f.net_call("DEL", "out1", &path1, "eth0", &conf()));
    f.host = 2;
    ok(&f.net_call("DEL", "out2", &path2, "eth0", &conf()));

    // Back on; a router killed leaves its rules, and a reset removes them.
    drop(r2);
    let r2 = launch_h2(&f, &auth, &[]);
    wait_masquerade(&f, 2, "active");
    drop(r2);
    assert!(nft_table(&f, 2).contains("masquerade"));
    f.net.weft_ok(2, &["reset"]);
    let ns = f.net.host(2).ns.clone();
    let tables = f.net.exec(&ns, "nft", &["list", "tables"]);
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains("weft"), "reset left {tables}");
}
