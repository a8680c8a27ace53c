//! End-to-end tests of what operators see (issue 7):
//!
//! 1. three hosts with pods and traffic: every `weft status` subcommand and `weft ps`
//!    match their golden files in `tests/golden/operator/` (variable parts masked), and
//!    `weft report` validates against `docs/report.schema.json` (Debian's
//!    python3-jsonschema);
//! 2. `/metrics` parses with Prometheus' own text-format parser (Debian's
//!    python3-prometheus-client), and its counters move under traffic and faults;
//! 3. the status page, opened in headless Chromium in a host's namespace, draws three
//!    nodes and three edges, and changes when a router is killed (screenshots kept in
//!    `target/test-artifacts/`);
//! 4. a foreign `Host` header gets 403, and no body holds the secret or key material;
//!    handshakes refused for a wrong secret and by the rate limit are counted;
//! 5. `weft launch` shows its progress, and CLI errors say what failed and what to do.
//!
//! The HTTP requests, the parsers and the garbage senders are in
//! `tests/support/weft_operator.py`, run with `/usr/bin/python3` inside the host's
//! namespace where they need the network. `WEFT_UPDATE_GOLDEN=1` rewrites the golden files.

mod common;

use common::traffic::{ping, ping_series};
use common::weft::{status_field, Auth, Router};
use common::{run_with_timeout, tail, wait_until, Net};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";
const CHROMIUM: &str = "/usr/bin/chromium";
const STATUS_URL: &str = "http://127.0.0.1:6782";
const H1: &str = "198.18.0.1";
const H2: &str = "198.18.0.2";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn support() -> String {
    repo()
        .join("tests/support/weft_operator.py")
        .display()
        .to_string()
}

/// Panics with the way to install `what` unless `path` exists.
fn require(path: &str, what: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install {what} (scripts/test.sh does: apt-get install {what})"
    );
}

/// Runs the support script with `args`, feeding `stdin`; in namespace `ns` if given.
fn py(net: &Net, ns: Option<&str>, args: &[&str], stdin: &[u8]) -> Output {
    require(PYTHON, "python3");
    let script = support();
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, PYTHON]);
            c
        }
        None => Command::new(PYTHON),
    };
    cmd.arg(&script).args(args);
    let input = net.dir().join(format!("stdin-{}", std::process::id()));
    std::fs::write(&input, stdin).expect("write stdin file");
    cmd.stdin(Stdio::from(
        std::fs::File::open(&input).expect("open stdin"),
    ));
    let out = run_py(cmd);
    let _ = std::fs::remove_file(&input);
    out
}

fn run_py(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let start = std::time::Instant::now();
    while !waiter.is_finished() {
        if start.elapsed() > Duration::from_secs(60) {
            eprintln!("python3 (pid {pid}) ran over 60 s; killing it");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter
        .join()
        .expect("python3 waiter")
        .expect("python3 output")
}

/// An HTTP answer from the status listener.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// `GET path` on host `hX`'s status listener, with this `Host` header ("-": none).
fn get(net: &Net, host: usize, path: &str, host_header: &str) -> Answer {
    let url = format!("{STATUS_URL}{path}");
    let out = py(
        net,
        Some(&net.host(host).ns),
        &["get", &url, host_header],
        b"",
    );
    assert!(
        out.status.success(),
        "h{host}: GET {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("get prints JSON");
    Answer {
        status: v["status"].as_u64().expect("status") as u16,
        body: v["body"].as_str().expect("body").to_string(),
    }
}

fn get_ok(net: &Net, host: usize, path: &str) -> String {
    let a = get(net, host, path, "localhost:6782");
    assert_eq!(a.status, 200, "h{host}: GET {path}: {}", a.body);
    a.body
}

/// Parsed `/metrics`: sample name and sorted labels to value, and family types.
struct Metrics {
    families: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    /// Sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.0 == name)
    }
}

/// `/metrics` of host `hX`, parsed by prometheus_client's text-format parser.
fn metrics(net: &Net, host: usize) -> Metrics {
    let text = get_ok(net, host, "/metrics");
    parse_metrics(net, &text, &format!("/metrics of h{host}"))
}

/// An exposition parsed by prometheus_client's text-format parser.
fn parse_metrics(net: &Net, text: &str, what: &str) -> Metrics {
    let out = py(net, None, &["metrics"], text.as_bytes());
    assert!(
        out.status.success(),
        "prometheus_client could not parse {what}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("metrics JSON");
    let families = v["families"]
        .as_object()
        .expect("families")
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap_or("").to_string()))
        .collect();
    let samples = v["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            let labels = s[1]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            (
                s[0].as_str().expect("name").to_string(),
                labels,
                s[2].as_f64().expect("value"),
            )
        })
        .collect();
    Metrics { families, samples }
}

// ---- golden files ---------------------------------------------------------------------

/// Replaces the variable parts of status output: peer names become `hN:xx:xx:xx:xx:xx`
/// (same width, so columns still line up), ephemeral ports `PPPPP`, the version
/// `VERSION`, IPAM counts and percentages `N` digits.
fn mask(text: &str, names: &[(String, usize)]) -> String {
    let mut out = text.to_string();
    for (name, host) in names {
        out = out.replace(name.as_str(), &format!("h{host}:xx:xx:xx:xx:xx"));
    }
    // 198.18.0.X:PORT with a port other than 6783 (an ephemeral one).
    let mut masked = String::new();
    let mut rest = out.as_str();
    while let Some(i) = rest.find("198.18.0.") {
        let (before, after) = rest.split_at(i);
        masked.push_str(before);
        let host_len = after[9..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(after.len() - 9, |n| n);
        let head = &after[..9 + host_len];
        masked.push_str(head);
        let tail = &after[9 + host_len..];
        if let Some(port_part) = tail.strip_prefix(':') {
            let digits = port_part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(port_part.len());
            let port = &port_part[..digits];
            masked.push(':');
            if port == "6783" {
                masked.push_str(port);
            } else {
                masked.push_str(&"P".repeat(port.len()));
            }
            rest = &port_part[digits..];
        } else {
            rest = tail;
        }
    }
    masked.push_str(rest);
    masked
        .lines()
        .map(|l| {
            if let Some((label, _)) = l.split_once("Version: ") {
                format!("{label}Version: VERSION")
            } else if let Some(end) = l.find("% of total)") {
                // `name(nick)<pad> 349525 IPs (33.3% of total) (1 active)`: the counts
                // depend on how the ring was split; the active count does not.
                l.char_indices()
                    .map(|(i, c)| {
                        if i > 37 && i < end && c.is_ascii_digit() {
                            'N'
                        } else {
                            c
                        }
                    })
                    .collect()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if masked.ends_with('\n') { "\n" } else { "" }
}

/// Sorts blocks (a non-indented line and its indented lines), and the indented lines
/// within each, so that the order of peer ids (random) does not matter.
fn sort_blocks(text: &str) -> String {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        if line.starts_with(' ') && !blocks.is_empty() {
            blocks.last_mut().unwrap().push(line.to_string());
        } else {
            blocks.push(vec![line.to_string()]);
        }
    }
    for b in &mut blocks {
        b[1..].sort();
    }
    blocks.sort();
    let mut out: String = blocks.concat().join("\n");
    out.push('\n');
    out
}

/// Compares `actual` with `tests/golden/operator/<file>`, or writes it with
/// `WEFT_UPDATE_GOLDEN=1`.
fn golden(file: &str, actual: &str) {
    let path: PathBuf = repo().join("tests/golden/operator").join(file);
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with WEFT_UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "`{file}` differs from {} (WEFT_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// Three routers without discovery, so that who dials whom is fixed: h2 dials h1, h3
/// dials h1 and h2. The ring is seeded by consensus of all three. Sleeve keys are
/// renewed every 2 s, so that rekeys show in the metrics.
fn three_fixed(net: &Net, auth: &Auth) -> Vec<Router> {
    let opts = [
        "--no-discovery",
        "--ipalloc-init",
        "consensus=3",
        "--rekey-interval",
        "2",
    ];
    let routers = vec![
        Router::launch_with(net, 1, auth, &opts, &[]),
        Router::launch_with(net, 2, auth, &opts, &[H1]),
        Router::launch_with(net, 3, auth, &opts, &[H1, H2]),
    ];
    net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    routers
}

/// Attaches one pod per host through IPAM; returns (namespace, address) per host.
fn pods(net: &mut Net) -> Vec<(String, String)> {
    (1..=3)
        .map(|h| {
            let ns = net.add_bare_pod(h, 1);
            let out = net.weft_ok(h, &["attach", &ns]);
            let ip = out.trim().to_string();
            assert!(ip.starts_with("10."), "h{h}: weft attach printed {out:?}");
            (ns, ip)
        })
        .collect()
}

fn status_field_is(net: &Net, host: usize, key: &str, want: &str) -> bool {
    status_field(&net.weft_ok(host, &["status"]), key).as_deref() == Some(want)
}

#[test]
fn status_layouts_report_schema_and_metrics_under_traffic_and_faults() {
    let mut net = Net::new("opstat", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let routers = three_fixed(&net, &auth);
    let pods = pods(&mut net);
    for (i, (ns, _)) in pods.iter().enumerate() {
        for (j, (_, ip)) in pods.iter().enumerate() {
            if i != j {
                assert!(
                    ping(&net, ns, ip),
                    "pod on h{} -> {ip} on h{}",
                    i + 1,
                    j + 1
                );
            }
        }
    }
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        status_field_is(&net, 3, "Peers", "3 (with 6 established connections)")
            && status_field_is(&net, 3, "Status", "ready")
    });
    assert!(
        settled.is_some(),
        "h3 never saw the full mesh:\n{}",
        net.weft_ok(3, &["status"])
    );

    // 1. Every status subcommand against its golden file (h3's view: it dialled both).
    let names: Vec<(String, usize)> = routers
        .iter()
        .map(|r| (r.bare_name().to_string(), r.host))
        .collect();
    let m = |t: &str| mask(t, &names);
    golden("status.txt", &m(&net.weft_ok(3, &["status"])));
    golden(
        "status-connections.txt",
        &sort_blocks(&m(&net.weft_ok(3, &["status", "connections"]))),
    );
    golden(
        "status-targets.txt",
        &sort_blocks(&m(&net.weft_ok(3, &["status", "targets"]))),
    );
    golden(
        "status-peers.txt",
        &sort_blocks(&m(&net.weft_ok(3, &["status", "peers"]))),
    );
    let ipam = m(&net.weft_ok(3, &["status", "ipam"]));
    let mut lines: Vec<&str> = ipam.lines().collect();
    lines[1..].sort();
    golden("status-ipam.txt", &(lines.join("\n") + "\n"));
    let ps: String = net
        .weft_ok(3, &["ps"])
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 3, "ps line {l:?}: ID MAC CIDR");
            assert_eq!(w[0], pods[2].0, "ps id is the namespace");
            assert!(w[1].len() == 17 && w[1].matches(':').count() == 5, "{l}");
            assert_eq!(w[2], format!("{}/12", pods[2].1), "ps address");
            "POD xx:xx:xx:xx:xx:xx 10.N.N.N/12\n".to_string()
        })
        .collect();
    golden("ps.txt", &ps);

    let report = net.weft_ok(3, &["report"]);
    let schema = repo().join("docs/report.schema.json").display().to_string();
    let out = py(&net, None, &["validate", &schema], report.as_bytes());
    assert!(
        out.status.success(),
        "weft report does not validate against the schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The same through the status listener.
    let out = py(
        &net,
        None,
        &["validate", &schema],
        get_ok(&net, 1, "/report").as_bytes(),
    );
    assert!(out.status.success(), "h1 /report: {out:?}");
    println!("e2e: 5 status layouts + ps match their golden files; report validates");

    // 2. Metrics: the parser accepts the exposition, and the figures are right.
    let before = metrics(&net, 3);
    for (family, kind) in [
        ("weft_connections", "gauge"),
        ("weft_peers", "gauge"),
        ("weft_ipam_range_ips", "gauge"),
        ("weft_ipam_used_ips", "gauge"),
        ("weft_ipam_unreachable_peers", "gauge"),
        ("weft_ipam_unreachable_percent", "gauge"),
        ("weft_ipam_pending_requests", "gauge"),
        ("weft_peer_transmit_bytes", "counter"),
        ("weft_peer_receive_bytes", "counter"),
        ("weft_peer_transmit_frames", "counter"),
        ("weft_peer_receive_frames", "counter"),
        ("weft_dataplane_drops", "counter"),
        ("weft_handshakes_accepted", "counter"),
        ("weft_handshakes_refused", "counter"),
        ("weft_sleeve_rekeys", "counter"),
        ("weft_mac_table_entries", "gauge"),
        ("weft_tap_offload_mode", "gauge"),
        ("weft_superframes", "counter"),
    ] {
        assert_eq!(
            before.families.get(family).map(String::as_str),
            Some(kind),
            "family {family}"
        );
    }
    let established = [
        ("state", "established"),
        ("mode", "sleeve"),
        ("encryption", "yes"),
    ];
    assert_eq!(before.sum("weft_connections", &established), 2.0);
    assert_eq!(before.sum("weft_peers", &[]), 3.0);
    assert_eq!(before.sum("weft_ipam_range_ips", &[]), 1_048_576.0);
    assert_eq!(before.sum("weft_ipam_used_ips", &[]), 1.0);
    assert_eq!(before.sum("weft_ipam_unreachable_peers", &[]), 0.0);
    assert_eq!(
        before.sum(
            "weft_handshakes_accepted_total",
            &[("direction", "outbound")]
        ),
        2.0
    );
    assert!(before.sum("weft_mac_table_entries", &[]) >= 2.0);
    assert_eq!(
        before.sum("weft_tap_offload_mode", &[]),
        1.0,
        "exactly one TAP offload mode is in use"
    );
    for reason in ["replay", "auth", "malformed", "no_route", "mtu"] {
        assert!(
            before
                .samples
                .iter()
                .any(|s| s.0 == "weft_dataplane_drops_total"
                    && s.1.get("reason").map(String::as_str) == Some(reason)),
            "drop reason {reason} present"
        );
    }
    assert!(before.has("weft_handshakes_refused_total"));

    // Traffic: 40 pings of 1000 bytes from h3's pod to h1's.
    let h1 = routers[0].bare_name();
    let peer = [("peer", h1)];
    let series = ping_series(&net, &pods[2].0, &pods[0].1, 40, "0.05", &["-s", "1000"]);
    assert_eq!(series.lost(), 0, "{}", series.output);
    let after = metrics(&net, 3);
    for name in [
        "weft_peer_transmit_bytes_total",
        "weft_peer_receive_bytes_total",
    ] {
        let grew = after.sum(name, &peer) - before.sum(name, &peer);
        assert!(grew >= 40.0 * 1000.0, "{name} towards h1 grew by {grew}");
    }
    for name in [
        "weft_peer_transmit_frames_total",
        "weft_peer_receive_frames_total",
    ] {
        let grew = after.sum(name, &peer) - before.sum(name, &peer);
        assert!(grew >= 40.0, "{name} towards h1 grew by {grew}");
    }

    // Rekeys: keys are renewed every 2 s.
    let rekeyed = wait_until(Duration::from_secs(15), Duration::from_millis(500), || {
        metrics(&net, 3).sum("weft_sleeve_rekeys_total", &peer) >= 1.0
    });
    assert!(rekeyed.is_some(), "no rekey with h1 counted in 15 s");

    // Faults: garbage datagrams at h3's sleeve port, and a garbage control connection.
    let drops = |m: &Metrics| m.sum("weft_dataplane_drops_total", &[]);
    let refused = |m: &Metrics| {
        m.sum(
            "weft_handshakes_refused_total",
            &[("direction", "inbound"), ("reason", "protocol")],
        )
    };
    let ns1 = net.host(1).ns.clone();
    let out = py(
        &net,
        Some(&ns1),
        &["udp-garbage", "198.18.0.3", "6783", "50"],
        b"",
    );
    assert!(out.status.success(), "udp-garbage: {out:?}");
    let out = py(
        &net,
        Some(&ns1),
        &["tcp-garbage", "198.18.0.3", "6783"],
        b"",
    );
    assert!(out.status.success(), "tcp-garbage: {out:?}");
    let mut last = None;
    let moved = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let m = metrics(&net, 3);
        let ok = drops(&m) - drops(&after) >= 50.0 && refused(&m) - refused(&after) >= 1.0;
        last = Some(m);
        ok
    });
    let last = last.expect("metrics read");
    assert!(
        moved.is_some(),
        "drops grew by {} (want >= 50), protocol refusals by {} (want >= 1)",
        drops(&last) - drops(&after),
        refused(&last) - refused(&after)
    );
    println!(
        "e2e: /metrics parsed by prometheus_client ({} families); 40 pings moved the \
         per-peer counters; 50 garbage datagrams raised drops by {}, a garbage TCP \
         connection raised protocol refusals by {}",
        last.families.len(),
        drops(&last) - drops(&after),
        refused(&last) - refused(&after)
    );
}

// ---- 3. the page in headless Chromium ---------------------------------------------------

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Runs headless Chromium in host `hX`'s namespace against its status page.
fn chromium(net: &Net, host: usize, args: &[&str]) -> Output {
    require(CHROMIUM, "chromium");
    let profile = net.dir().join(format!("chromium-{host}"));
    let profile_arg = format!("--user-data-dir={}", profile.display());
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.host(host).ns, CHROMIUM])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-extensions",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1100,900",
            "--virtual-time-budget=8000",
            &profile_arg,
        ])
        .args(args)
        .arg(format!("{STATUS_URL}/"))
        .env("HOME", net.dir());
    run_with_timeout(&mut cmd, Duration::from_secs(90))
}

/// (nodes, edges) drawn in the DOM Chromium dumped.
fn drawn(net: &Net, host: usize) -> (usize, usize, String) {
    let out = chromium(net, host, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("id=\"mesh\""),
        "chromium dumped no page ({}): {}\n{}",
        out.status,
        tail(&dom, 5),
        tail(&String::from_utf8_lossy(&out.stderr), 20)
    );
    let nodes = dom.matches("<g class=\"node").count();
    let edges = dom.matches("<line class=\"edge ").count();
    (nodes, edges, dom)
}

fn screenshot(net: &Net, host: usize, name: &str) -> PathBuf {
    let path = artifacts().join(name);
    let _ = std::fs::remove_file(&path);
    let arg = format!("--screenshot={}", path.display());
    let out = chromium(net, host, &[&arg]);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "no screenshot at {} ({}): {}",
        path.display(),
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr), 20)
    );
    path
}

#[test]
fn status_page_in_headless_chromium_draws_the_mesh_and_follows_a_kill() {
    let net = Net::new("opweb", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let mut routers = common::weft::three_routers(&net, &auth);
    let (nodes, edges, dom) = drawn(&net, 1);
    assert_eq!((nodes, edges), (3, 3), "three nodes, three edges:\n{dom}");
    for r in &routers {
        assert!(dom.contains(r.bare_name()), "{} named on the page", r.name);
        assert!(
            dom.contains(&format!("data-nickname=\"h{}\"", r.host)),
            "nickname h{} on the page",
            r.host
        );
    }
    assert!(
        dom.matches("data-mode=\"sleeve\"").count() >= 2,
        "h1's own links are drawn as sleeve"
    );
    assert!(dom.contains("data-encrypted=\"yes\""));
    assert!(dom.contains("data-state=\"established\""));
    let shot = screenshot(&net, 1, "operator-mesh-3-hosts.png");

    // Kill h3 by PID; h1's picture must lose it.
    let h3 = routers.pop().expect("h3");
    let pid = h3.pid();
    h3.kill9();
    let gone = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        let status = net.weft_ok(1, &["status"]);
        common::weft::status_field(&status, "Peers").is_some_and(|p| p.starts_with("2 "))
    });
    assert!(
        gone.is_some(),
        "h1 still knows h3:\n{}",
        net.weft_ok(1, &["status"])
    );
    let (nodes_after, edges_after, dom) = drawn(&net, 1);
    assert_eq!(
        (nodes_after, edges_after),
        (2, 1),
        "after killing h3 (pid {pid}) the page must show h1 and h2 and their link:\n{dom}"
    );
    assert!(
        !dom.contains("data-nickname=\"h3\""),
        "h3 is gone from the page"
    );
    let shot_after = screenshot(&net, 1, "operator-mesh-h3-killed.png");
    println!(
        "e2e: headless Chromium drew {nodes} nodes/{edges} edges, then {nodes_after}/{edges_after} \
         after h3 was killed; screenshots {} and {}",
        shot.display(),
        shot_after.display()
    );
}

// ---- 4. Host header and secrets -----------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn status_listener_refuses_foreign_hosts_and_never_shows_secrets() {
    let net = Net::new("opsec", 3);
    let secret_path = net.dir().join("known-secret");
    let secret = "correct horse battery staple operator test secret";
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_path)
            .expect("create secret file");
        std::io::Write::write_all(&mut f, secret.as_bytes()).expect("write secret");
    }
    let auth = Auth::PasswordFile(secret_path);
    let _routers = [
        Router::launch(&net, 1, &auth, &[]),
        Router::launch(&net, 2, &auth, &[H1]),
    ];
    net.wait_established(&[(1, 1), (2, 1)]);

    // What must never appear: the secret, the PSK stretched from it, the identity keys.
    let mut psk = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        gossip::psk::argon2_params().expect("params"),
    )
    .hash_password_into(secret.as_bytes(), gossip::psk::PSK_SALT, &mut psk)
    .expect("argon2");
    let mut forbidden = vec![secret.to_string(), hex(&psk), hex(&psk).to_uppercase()];
    for h in 1..=2 {
        let key = std::fs::read(router::config::identity_path(&net.host(h).data_dir))
            .expect("read identity key");
        assert_eq!(key.len(), 32, "identity key file");
        forbidden.push(hex(&key));
        forbidden.push(hex(&key).to_uppercase());
        forbidden.push(hex(&key[..8]));
    }

    let paths = [
        "/",
        "/status",
        "/status/peers",
        "/status/connections",
        "/status/targets",
        "/status/ipam",
        "/report",
        "/metrics",
    ];
    for path in paths {
        for host in [
            "localhost",
            "localhost:6782",
            "127.0.0.1:6782",
            "[::1]:6782",
        ] {
            let a = get(&net, 1, path, host);
            assert_eq!(a.status, 200, "GET {path} with Host {host}: {}", a.body);
            for f in &forbidden {
                assert!(
                    !a.body.contains(f.as_str()),
                    "GET {path} shows secret material ({} chars)",
                    f.len()
                );
            }
        }
        for host in [
            "evil.example",
            "evil.example:6782",
            "127.0.0.1.evil.example",
            "localhost.evil.example:6782",
            "198.18.0.1:6782",
            "-",
        ] {
            let a = get(&net, 1, path, host);
            assert_eq!(a.status, 403, "GET {path} with Host {host}: {}", a.body);
            assert!(
                !a.body.contains("weft"),
                "403 body says nothing about the router"
            );
        }
    }
    // Loopback only: h2 cannot reach h1's status listener on the underlay.
    let out = py(
        &net,
        Some(&net.host(2).ns),
        &["get", "http://198.18.0.1:6782/status", "localhost"],
        b"",
    );
    assert!(
        !out.status.success(),
        "h1's status listener answered from h2: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "e2e: {} paths x 4 loopback Host forms answered 200 with no secret material; \
         6 foreign Host forms got 403; the listener is not reachable from h2",
        paths.len()
    );

    // Refused handshakes are counted by reason: h3 has another secret (auth), then
    // opens 30 connections at once from its address: the pre-authentication limiter
    // refuses most (too many pending from one source, or its rate limit).
    let refused = |m: &Metrics, reason: &str| {
        m.sum(
            "weft_handshakes_refused_total",
            &[("direction", "inbound"), ("reason", reason)],
        )
    };
    let limited = |m: &Metrics| refused(m, "rate_limit") + refused(m, "too_many_pending");
    let before = metrics(&net, 1);
    let other = Auth::PasswordFile(net.new_secret("other-secret"));
    let _h3 = Router::launch(&net, 3, &other, &[H1]);
    let ns3 = net.host(3).ns.clone();
    let out = py(&net, Some(&ns3), &["tcp-flood", H1, "6783", "30"], b"");
    assert!(out.status.success(), "tcp-flood: {out:?}");
    let mut last = None;
    let counted = wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
        let m = metrics(&net, 1);
        let ok = refused(&m, "auth") > refused(&before, "auth")
            && limited(&m) - limited(&before) >= 10.0;
        last = Some(m);
        ok
    });
    let last = last.expect("metrics read");
    assert!(
        counted.is_some(),
        "h1 counted {} auth and {} limiter refusals; all refusals: {:?}",
        refused(&last, "auth") - refused(&before, "auth"),
        limited(&last) - limited(&before),
        last.samples
            .iter()
            .filter(|s| s.0 == "weft_handshakes_refused_total" && s.2 > 0.0)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        last.sum("weft_connections", &[("state", "established")]),
        1.0,
        "h3 never joined"
    );
    println!(
        "e2e: h1 counted {} handshakes refused for a wrong secret and {} refused by the \
         pre-authentication limiter (30 connections at once: {} rate_limit, {} too_many_pending)",
        refused(&last, "auth") - refused(&before, "auth"),
        limited(&last) - limited(&before),
        refused(&last, "rate_limit") - refused(&before, "rate_limit"),
        refused(&last, "too_many_pending") - refused(&before, "too_many_pending")
    );
}

// ---- the command line: launch progress, errors ------------------------------------------

/// A router started in the background by `weft launch` (not our child): killed by the
/// PID it wrote to its pid file.
struct Daemon(u32);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[test]
fn launch_shows_progress_and_cli_errors_say_what_to_do() {
    let net = Net::new("opcli", 3);
    let secret = net.new_secret("secret");
    let auth = Auth::PasswordFile(secret.clone());

    // No router: exit code 3, and the message names the socket and the fix.
    let out = net.weft(3, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("router not running (no socket at")
            && err.contains(&net.host(3).run_dir.display().to_string())
            && err.contains("weft launch"),
        "{err}"
    );

    let opts = ["--no-discovery", "--ipalloc-init", "consensus=3"];
    let _h1 = Router::launch_with(&net, 1, &auth, &opts, &[]);
    let _h2 = Router::launch_with(&net, 2, &auth, &opts, &[H1]);
    // h3 in the background, its output not a terminal: plain progress lines on stderr,
    // and only the peer name on stdout.
    let secret_arg = secret.display().to_string();
    let out = net.weft(
        3,
        &[
            "launch",
            "--password-file",
            &secret_arg,
            "--nickname",
            "h3",
            "--no-discovery",
            "--ipalloc-init",
            "consensus=3",
            H1,
            H2,
        ],
    );
    let pid: u32 = std::fs::read_to_string(net.host(3).run_dir.join("weft.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid file after launch: {out:?}"));
    let _daemon = Daemon(pid);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "launch failed: {stderr}");
    assert!(
        !stderr.contains('\r'),
        "no redrawing when not a terminal: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("weft: starting the router (log: "),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("weft: connecting to 2 peers (")),
        "launch shows that it connects to its 2 peers: {stderr}"
    );
    assert!(
        !stderr.contains("still "),
        "the mesh settled within the wait: {stderr}"
    );
    let status = net.weft_ok(3, &["status"]);
    let name = common::weft::status_field(&status, "Name").expect("Name");
    assert_eq!(stdout.trim(), name, "stdout is the peer name alone");
    assert_eq!(
        common::weft::status_field(&status, "Connections").as_deref(),
        Some("2 (2 established)"),
        "launch returned once its peers were connected"
    );

    // A second launch fails with the reason and what to do.
    let out = net.weft(
        3,
        &["launch", "--password-file", &secret_arg, "--wait", "0"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already running") && err.contains("weft stop") && err.contains("weft.log"),
        "{err}"
    );
    // Usage errors: exit code 2, with what was wrong.
    let out = net.weft(3, &["status", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    net.weft_ok(3, &["stop"]);
    println!("e2e: launch progress:\n{stderr}");
}

/// `GET url` from namespace `ns` with this `Host` header: status, body, content type.
fn get_from(net: &Net, ns: &str, url: &str, host_header: &str) -> (u16, String, String) {
    let out = py(net, Some(ns), &["get", url, host_header], b"");
    assert!(
        out.status.success(),
        "GET {url} from {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("get prints JSON");
    (
        v["status"].as_u64().expect("status") as u16,
        v["body"].as_str().expect("body").to_string(),
        v["content_type"].as_str().unwrap_or("").to_string(),
    )
}

/// `--metrics-addr`: Prometheus scrapes `/metrics` from another machine (namespace),
/// with that machine's own Host header, and parses it; every other path there is 404;
/// the status listener still refuses foreign Hosts.
#[test]
fn metrics_listener_serves_prometheus_to_other_machines_and_nothing_else() {
    let net = Net::new("opmetrics", 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let _r1 = Router::launch_with(&net, 1, &auth, &["--metrics-addr", "198.18.0.1:6781"], &[]);
    let _r2 = Router::launch(&net, 2, &auth, &[H1]);
    net.wait_established(&[(1, 1), (2, 1)]);
    let h2 = net.host(2).ns.clone();
    let url = |path: &str| format!("http://198.18.0.1:6781{path}");
    let (status, body, content_type) = get_from(&net, &h2, &url("/metrics"), "198.18.0.1:6781");
    assert_eq!(status, 200, "{body}");
    assert!(content_type.contains("version=0.0.4"), "{content_type}");
    let m = parse_metrics(&net, &body, "the metrics listener's /metrics");
    assert_eq!(
        m.families.get("weft_peers").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(m.sum("weft_peers", &[]), 2.0, "h1 sees both routers");
    assert_eq!(m.sum("weft_fast_path_state", &[("state", "enabled")]), 1.0);
    assert_eq!(m.sum("weft_masquerade_state", &[("state", "idle")]), 1.0);
    for path in [
        "/",
        "/report",
        "/status",
        "/status/peers",
        "/metrics/x",
        "/ps",
    ] {
        let (status, body, _) = get_from(&net, &h2, &url(path), "198.18.0.1:6781");
        assert_eq!(status, 404, "GET {path} on the metrics listener: {body}");
    }
    let foreign = get(&net, 1, "/metrics", "198.18.0.1:6782");
    assert_eq!(foreign.status, 403, "{}", foreign.body);
}

/// Without `nft` (WEFT_NFT names a program that does not exist) the fast path is
/// unavailable, and `status`, `report` and `/metrics` say so and why; masquerade too,
/// once the host is exposed.
#[test]
fn a_missing_nft_shows_in_status_report_and_metrics() {
    let net = Net::new("opnonft", 1);
    let args: Vec<String> = [
        "launch",
        "--foreground",
        "--no-encryption",
        "--nickname",
        "h1",
    ]
    .map(String::from)
    .to_vec();
    let _r1 = Router::launch_args_env(&net, 1, &args, &[("WEFT_NFT", "/nonexistent/nft")]);
    let status = net.weft_ok(1, &["status"]);
    assert_eq!(
        status_field(&status, "Fast path").as_deref(),
        Some("unavailable (nft not found)"),
        "{status}"
    );
    let report: Value = serde_json::from_str(&net.weft_ok(1, &["report"])).unwrap();
    assert_eq!(report["fast_path"]["state"], "unavailable");
    assert_eq!(report["fast_path"]["reason"], "nft not found");
    let m = metrics(&net, 1);
    assert_eq!(
        m.sum("weft_fast_path_state", &[("state", "unavailable")]),
        1.0
    );
    assert_eq!(m.sum("weft_fast_path_state", &[("state", "enabled")]), 0.0);
    net.weft_ok(1, &["expose", "10.40.0.1/16"]);
    let said = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        status_field(&net.weft_ok(1, &["status"]), "Masquerade").as_deref()
            == Some("unavailable (nft not found)")
    });
    assert!(said.is_some(), "{}", net.weft_ok(1, &["status"]));
    let m = metrics(&net, 1);
    assert_eq!(
        m.sum("weft_masquerade_state", &[("state", "unavailable")]),
        1.0
    );
}
