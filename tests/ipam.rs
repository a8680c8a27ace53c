//! End-to-end tests of IPAM: three hosts, pods attached without a CIDR, a router
//! restart that keeps its allocations, `rmpeer` run on two hosts at once, and the
//! allocation latency and time to consensus, measured through the local API.
//!
//! Network safety: only namespaces this test creates (the harness), underlay
//! 198.18.0.0/15, overlay 10.32.0.0/16 (inside 10.32.0.0/12); routers are killed by PID.

mod common;

use common::weft::{Auth, Router};
use common::{wait_until, Net};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const RANGE: &str = "10.32.0.0/16";
const H1: &str = "198.18.0.1";
/// Pods per host.
const PODS: usize = 30;

/// One request on the router's API socket; (status, body).
fn api(run_dir: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(run_dir.join("weft.sock")).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn allocate(run_dir: &Path, id: &str, subnet: Option<&str>) -> (u16, String) {
    let body = match subnet {
        Some(s) => serde_json::json!({ "id": id, "subnet": s }),
        None => serde_json::json!({ "id": id }),
    };
    api(run_dir, "POST", "/ipam/allocate", &body.to_string())
}

fn addr_of(body: &str) -> Ipv4Addr {
    let a = json(body)["addr"].as_str().unwrap().to_string();
    a.split('/').next().unwrap().parse().unwrap()
}

fn in_range(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 10 && o[1] == 32
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Seconds of the day of the first log line containing `what` (`2026-11-27T00:03:18.35Z`).
fn log_time(log: &str, what: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in the log"));
    let t = line
        .split('T')
        .nth(1)
        .unwrap_or("")
        .split('Z')
        .next()
        .unwrap();
    let mut parts = t.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

fn donations_received(run_dir: &Path) -> u64 {
    json(&api(run_dir, "GET", "/report", "").1)["ipam"]["stats"]["donations_received"]
        .as_u64()
        .expect("report.ipam.stats.donations_received")
}

fn ipam_status(net: &Net, host: usize) -> String {
    net.weft_ok(host, &["status", "ipam"])
}

/// The IPs line of `status ipam` for a peer nickname (0 if absent).
fn share(text: &str, nick: &str) -> u64 {
    text.lines()
        .find(|l| l.contains(&format!("({nick})")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn launch(net: &Net, host: usize, peers: &[&str]) -> Router {
    let opts = ["--ipalloc-range", RANGE, "--ipalloc-init", "consensus=3"];
    let auth = Auth::PasswordFile(net.dir().join("secret"));
    Router::launch_with(net, host, &auth, &opts, peers)
}

#[test]
fn ipam_end_to_end() {
    common::require_root();
    let mut net = Net::new("ipam", 3);
    net.new_secret("secret");
    let start = Instant::now();
    let mut routers = vec![
        Some(launch(&net, 1, &[])),
        Some(launch(&net, 2, &[H1])),
        Some(launch(&net, 3, &[H1])),
    ];
    let runs: Vec<_> = (1..=3).map(|h| net.host(h).run_dir.clone()).collect();
    // Ready in the API, and the ring's log line written (the event leaves IPAM once
    // the ring is persisted, a moment after the status shows it).
    let ready = wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
        runs.iter()
            .all(|r| json(&api(r, "GET", "/ipam", "").1)["status"] == "ready")
            && routers
                .iter()
                .flatten()
                .all(|r| r.log().contains("IP allocation ring"))
    });
    assert!(ready.is_some(), "IPAM not ready on all 3 hosts within 60 s");
    // From the logs: the first router's start to the last host's ring.
    let logs: Vec<String> = routers.iter().flatten().map(|r| r.log()).collect();
    let first_start = log_time(&logs[0], "router started");
    let last_ring = logs
        .iter()
        .map(|l| log_time(l, "IP allocation ring"))
        .fold(0.0, f64::max);
    let last_start = log_time(&logs[2], "router started");
    println!(
        "e2e: time to consensus with 3 hosts: {:.3} s from the first router's start to the \
         ring on all three ({:.3} s after the third started; launches are sequential, {:.2} s \
         for the test in all)",
        last_ring - first_start,
        last_ring - last_start,
        start.elapsed().as_secs_f64()
    );
    net.wait_established(&[(1, 2), (2, 2), (3, 2)]);

    // (a) 30 pods per host, attached without a CIDR.
    let t = Instant::now();
    let mut pods: Vec<Vec<(String, Ipv4Addr)>> = vec![Vec::new(); 4];
    for k in 1..=PODS {
        for (h, list) in pods.iter_mut().enumerate().skip(1) {
            let ns = net.add_bare_pod(h, k);
            let printed = net.weft_ok(h, &["attach", &ns]);
            let a: Ipv4Addr = printed.trim().parse().unwrap_or_else(|_| {
                panic!("h{h}: weft attach {ns} printed {printed:?}, not one address")
            });
            list.push((ns, a));
        }
    }
    println!(
        "e2e: attached {} pods without a CIDR in {:.1} s",
        3 * PODS,
        t.elapsed().as_secs_f64()
    );
    let all: Vec<Ipv4Addr> = pods.iter().flatten().map(|p| p.1).collect();
    let distinct: BTreeSet<Ipv4Addr> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 3 * PODS, "addresses not distinct: {all:?}");
    assert!(all.iter().all(|a| in_range(*a)), "outside {RANGE}: {all:?}");
    // Every pod pings one pod on each other host (the targets rotate, so every pod is
    // also pinged from both other hosts).
    let t = Instant::now();
    let mut pings = 0;
    for from in 1..=3 {
        for to in (1..=3).filter(|t| *t != from) {
            for (i, (ns, _)) in pods[from].iter().enumerate() {
                let (_, addr) = pods[to][(i + 7 * from) % PODS];
                assert!(
                    net.ping(ns, addr),
                    "{ns} (h{from}) cannot ping {addr} (h{to})"
                );
                pings += 1;
            }
        }
    }
    println!(
        "e2e: {pings} cross-host pings between allocated pods ok in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // (d) allocation latency with local space, through the API.
    let mut local = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let (code, body) = allocate(&runs[0], &format!("lat-{i}"), None);
        local.push(t.elapsed());
        assert_eq!(code, 200, "{body}");
    }
    // Free them again, so that the /28s below are not full of them.
    for i in 0..200 {
        let body = serde_json::json!({ "id": format!("lat-{i}") }).to_string();
        assert_eq!(api(&runs[0], "POST", "/ipam/release", &body).0, 200);
    }
    // ... and in /28 subnets all over the range: where h1 owns none of the subnet it
    // must get a donation; the donation counter in /report says which ones did.
    let (mut donated, mut own) = (Vec::new(), Vec::new());
    for i in 0..60u32 {
        let subnet = format!("10.32.{}.{}/28", (i * 37 + 2) % 256, (i % 16) * 16);
        let before = donations_received(&runs[0]);
        let t = Instant::now();
        let (code, body) = allocate(&runs[0], &format!("sub-{i}"), Some(&subnet));
        let took = t.elapsed();
        assert_eq!(code, 200, "allocate in {subnet}: {body}");
        if donations_received(&runs[0]) > before {
            donated.push(took);
        } else {
            own.push(took);
        }
    }
    println!(
        "e2e: allocation latency, local space: median {:?} p99 {:?} (n={})",
        percentile(&mut local, 0.5),
        percentile(&mut local, 0.99),
        local.len()
    );
    assert!(!donated.is_empty(), "no allocation needed a donation");
    println!(
        "e2e: allocation latency when a donation is needed: median {:?} p99 {:?} max {:?} (n={}; {} subnet allocations needed none)",
        percentile(&mut donated, 0.5),
        percentile(&mut donated, 0.99),
        donated.iter().max().unwrap(),
        donated.len(),
        own.len()
    );
    let (code, body) = api(&runs[0], "POST", "/ipam/release", r#"{"id":"nobody"}"#);
    assert_eq!(
        (code, json(&body)["released"].as_array().unwrap().len()),
        (200, 0)
    );

    // (b) kill -9 h2's router, relaunch: same addresses, no reuse of a live one.
    let ps_before = net.weft_ok(2, &["ps"]);
    routers[1].take().unwrap().kill9();
    routers[1] = Some(launch(&net, 2, &[H1]));
    assert_eq!(
        net.weft_ok(2, &["ps"]),
        ps_before,
        "h2 ps changed across a restart"
    );
    let held: BTreeSet<String> = json(&api(&runs[1], "GET", "/ipam", "").1)["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["addr"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for (_, a) in &pods[2] {
        assert!(
            held.contains(&a.to_string()),
            "h2 lost {a} across a restart"
        );
    }
    for i in 0..20 {
        let (code, body) = allocate(&runs[1], &format!("after-restart-{i}"), None);
        assert_eq!(code, 200, "{body}");
        let a = addr_of(&body);
        assert!(!distinct.contains(&a), "h2 reused the live address {a}");
    }
    // `weft detach NETNS` gives the namespace's address back.
    let (ns, a) = pods[2][0].clone();
    net.weft_ok(2, &["detach", &ns]);
    let list = api(&runs[1], "GET", "/ipam", "").1;
    assert!(
        !list.contains(&format!("\"{a}/")),
        "{a} still allocated: {list}"
    );
    assert!(
        !list.contains(&format!("\"{ns}\"")),
        "{ns} still listed: {list}"
    );

    // (c) h3 gone for good; rmpeer h3 on h1 and h2 at once.
    let h3_share = share(&ipam_status(&net, 1), "h3");
    routers[2].take().unwrap().kill9();
    wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        ipam_status(&net, 1).contains("unreachable!")
            && ipam_status(&net, 2).contains("unreachable!")
    })
    .expect("h1 and h2 see h3 unreachable");
    let before = [
        share(&ipam_status(&net, 1), "h1"),
        share(&ipam_status(&net, 2), "h2"),
    ];
    let outs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = [1, 2]
            .map(|h| {
                let net = &net;
                s.spawn(move || {
                    let o = net.weft(h, &["rmpeer", "h3"]);
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
            })
            .into_iter()
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!("e2e: rmpeer h3 on h1: {}", outs[0].trim());
    println!("e2e: rmpeer h3 on h2: {}", outs[1].trim());
    assert!(
        outs.iter().all(|o| o.contains("IPs taken over from h3")),
        "{outs:?}"
    );
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let (s1, s2) = (ipam_status(&net, 1), ipam_status(&net, 2));
        share(&s1, "h3") == 0 && share(&s2, "h3") == 0 && s1.lines().count() == 2
    });
    let (s1, s2) = (ipam_status(&net, 1), ipam_status(&net, 2));
    assert!(settled.is_some(), "h3's space not taken over:\n{s1}\n{s2}");
    let after = [share(&s1, "h1"), share(&s2, "h2")];
    let gained: Vec<u64> = (0..2).map(|i| after[i] - before[i]).collect();
    assert!(
        gained == [h3_share, 0] || gained == [0, h3_share],
        "exactly one heir must take h3's {h3_share} IPs; gained {gained:?}\n{s1}\n{s2}"
    );
    assert_eq!(
        share(&s1, "h1"),
        share(&s2, "h1"),
        "h1 and h2 disagree:\n{s1}\n{s2}"
    );
    let heir = if gained[0] > 0 { 0 } else { 1 };
    println!("e2e: h{} alone took over h3's {h3_share} IPs", heir + 1);
    for (_, a) in pods[3].iter().take(5) {
        let body = serde_json::json!({ "id": format!("reuse-{a}"), "addr": format!("{a}/16") });
        let (code, body) = api(&runs[heir], "POST", "/ipam/claim", &body.to_string());
        assert_eq!(
            code, 200,
            "h3's former {a} cannot be claimed on the heir: {body}"
        );
    }

    // `weft reset` on h1 hands its space to h2 before it stops.
    let t = Instant::now();
    let out = net.weft(1, &["reset"]);
    assert!(out.status.success(), "reset: {out:?}");
    let all_h2 = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let s = ipam_status(&net, 2);
        s.lines().count() == 1 && s.contains("(100.0% of total)")
    });
    assert!(
        all_h2.is_some(),
        "h1's space not handed over:\n{}",
        ipam_status(&net, 2)
    );
    println!(
        "e2e: weft reset on h1 handed its space to h2 (seen on h2 {:.2} s after reset began)",
        t.elapsed().as_secs_f64()
    );
    drop(routers);
}

/// One host: the API's answers while no ring exists (503 with the reason, after the
/// request timeout), bad input (400), and a relaunch with another range (refused, exit 1).
#[test]
fn api_contract_and_range_change_on_one_host() {
    common::require_root();
    let net = Net::new("ipam1", 1);
    net.new_secret("secret");
    let run = net.host(1).run_dir.clone();
    let mut router = launch(&net, 1, &[]);
    let list = json(&api(&run, "GET", "/ipam", "").1);
    assert_eq!(list["status"], "awaiting consensus (quorum: 2, known: 1)");
    assert_eq!(list["range"], RANGE);
    for (body, why) in [
        ("{", "bad JSON"),
        (r#"{"id":""}"#, "empty id"),
        (
            r#"{"id":"c","subnet":"10.99.0.0/24"}"#,
            "subnet outside the range",
        ),
        (r#"{"id":"c","subnet":"10.32.0.1/24"}"#, "host bits"),
    ] {
        let (code, text) = api(&run, "POST", "/ipam/allocate", body);
        assert_eq!(code, 400, "{why}: {text}");
        assert!(json(&text)["error"].is_string(), "{why}: {text}");
    }
    let t = Instant::now();
    let (code, text) = allocate(&run, "c1", None);
    assert_eq!(code, 503, "{text}");
    assert_eq!(
        json(&text)["error"],
        "awaiting consensus: 1 of 3 peers known"
    );
    println!(
        "e2e: without a ring, allocate answered 503 after {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        text.trim()
    );
    let (code, text) = api(&run, "POST", "/ipam/release", r#"{"id":"c1"}"#);
    assert_eq!(
        (code, json(&text)["released"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    net.weft_ok(1, &["stop"]);
    assert!(router.wait_exit(Duration::from_secs(10)).is_some());
    let secret = net.dir().join("secret").display().to_string();
    let out = net.weft(
        1,
        &[
            "launch",
            "--foreground",
            "--password-file",
            &secret,
            "--ipalloc-range",
            "10.33.0.0/16",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("10.32.0.0/16") && err.contains("10.33.0.0/16"),
        "the refusal must name both ranges: {err}"
    );
    println!("e2e: relaunch with another range refused: {}", err.trim());
    let out = net.weft(1, &["launch", "--no-encryption", "--ipalloc-init", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Ten hosts bootstrap one ring by consensus (`consensus=10`): every host ends ready
/// with the same ring, and the whole range is owned. Prints the time to consensus.
#[test]
fn consensus_with_ten_hosts() {
    common::require_root();
    const N: usize = 10;
    let net = Net::new("ipam10", N);
    net.new_secret("secret");
    let auth = Auth::PasswordFile(net.dir().join("secret"));
    let opts = ["--ipalloc-range", RANGE, "--ipalloc-init", "consensus=10"];
    let routers: Vec<Router> = (1..=N)
        .map(|h| {
            let peers: &[&str] = if h == 1 { &[] } else { &[H1] };
            Router::launch_with(&net, h, &auth, &opts, peers)
        })
        .collect();
    let runs: Vec<_> = (1..=N).map(|h| net.host(h).run_dir.clone()).collect();
    // Ready in the API, and the ring's log line written (see `ipam_end_to_end`).
    let ready = wait_until(Duration::from_secs(90), Duration::from_millis(50), || {
        runs.iter()
            .all(|r| json(&api(r, "GET", "/ipam", "").1)["status"] == "ready")
            && routers
                .iter()
                .all(|r| r.log().contains("IP allocation ring"))
    });
    assert!(
        ready.is_some(),
        "IPAM not ready on all {N} hosts within 90 s"
    );
    let logs: Vec<String> = routers.iter().map(|r| r.log()).collect();
    let first_start = log_time(&logs[0], "router started");
    let last_start = log_time(&logs[N - 1], "router started");
    let last_ring = logs
        .iter()
        .map(|l| log_time(l, "IP allocation ring"))
        .fold(0.0, f64::max);
    println!(
        "e2e: time to consensus with {N} hosts: {:.3} s from the first router's start to the \
         ring on all ({:.3} s after the last started)",
        last_ring - first_start,
        last_ring - last_start
    );
    // One ring everywhere: the same line naming it in every log, and each host's
    // `status ipam` shares add up to the whole range.
    let ring_line = |l: &str| -> String {
        let line = l
            .lines()
            .find(|x| x.contains("IP allocation ring"))
            .unwrap();
        line.split("IP allocation ring")
            .nth(1)
            .unwrap()
            .trim()
            .to_string()
    };
    let rings: BTreeSet<String> = logs.iter().map(|l| ring_line(l)).collect();
    assert_eq!(rings.len(), 1, "more than one ring: {rings:?}");
    for h in 1..=N {
        let text = ipam_status(&net, h);
        let total: u64 = (1..=N).map(|k| share(&text, &format!("h{k}"))).sum();
        assert_eq!(total, 65_536, "h{h}: shares do not cover {RANGE}:\n{text}");
    }
}
