//! End-to-end tests of control links with the real `weft` binary, each router in its own
//! network namespace on one underlay bridge (198.18.0.X):
//! - a silently cut link is detected by heartbeats; the rest of the mesh stays up;
//! - a connection to ourself, and a second router with our identity, are refused for good;
//! - simultaneous dials resolve to one link without flapping;
//! - `weft connect` / `weft forget`, and who may use them;
//! - the read-only status listener checks the `Host` header and leaks no secrets;
//! - junk on the control port before authentication is refused and harms nothing.
//!
//! Needs root. Run `cargo test --test control_links -- --nocapture` to see the figures
//! on lines starting with `e2e:`.

mod common;

use common::weft::{bare_name, parse_connections, parse_peers, status_field, Auth, Router};
use common::{run_with_timeout, tail, wait_until, Net};
use gossip::mesh::{HEARTBEAT_ASK_AFTER, HEARTBEAT_TIMEOUT};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);
const H1: &str = "198.18.0.1";
const H2: &str = "198.18.0.2";
const H1_TARGET: &str = "198.18.0.1:6783";

// ---- helpers -------------------------------------------------------------------------

fn connections(net: &Net, host: usize) -> Vec<common::weft::Conn> {
    let text = net.weft_ok(host, &["status", "connections"]);
    parse_connections(&text).unwrap_or_else(|e| panic!("h{host}: status connections: {e}"))
}

fn established(net: &Net, host: usize) -> Vec<common::weft::Conn> {
    connections(net, host)
        .into_iter()
        .filter(|c| c.state == "established")
        .collect()
}

/// Whether `host` shows an established connection to the router named `peer`.
fn established_to(net: &Net, host: usize, peer: &Router) -> bool {
    established(net, host)
        .iter()
        .any(|c| c.peer.as_deref() == Some(peer.name.as_str()))
}

fn status_peers(net: &Net, host: usize) -> String {
    net.weft_ok(host, &["status", "peers"])
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z")
}

/// Per router: `status connections`, `status peers` and its log tail.
fn diagnostics(net: &Net, routers: &[&Router]) -> String {
    let mut s = String::new();
    for r in routers {
        let conns = net.weft(r.host, &["status", "connections"]);
        let peers = net.weft(r.host, &["status", "peers"]);
        s += &format!(
            "==== h{} {} pid {} (alive: {})\n-- status connections:\n{}-- status peers:\n{}-- log tail:\n{}\n",
            r.host,
            r.name,
            r.pid(),
            alive(r.pid()),
            String::from_utf8_lossy(&conns.stdout),
            String::from_utf8_lossy(&peers.stdout),
            tail(&r.log(), 25)
        );
    }
    s
}

/// Waits until every pair of `routers` has an established connection; returns the time.
fn wait_mesh(net: &Net, routers: &[&Router], timeout: Duration, what: &str) -> Duration {
    wait_until(timeout, POLL, || {
        routers.iter().all(|r| {
            routers
                .iter()
                .filter(|o| o.host != r.host)
                .all(|o| established_to(net, r.host, o))
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: no full mesh within {timeout:?}\n{}",
            diagnostics(net, routers)
        )
    })
}

/// Runs `bash -c script` inside namespace `ns` (killed after `limit`); returns its output
/// and how long it ran.
fn bash_in(ns: &str, script: &str, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "exec", ns, "bash", "-c", script]),
        limit,
    );
    (out, start.elapsed())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- 1. heartbeats ---------------------------------------------------------------------

#[test]
fn dead_link_is_detected_by_heartbeats() {
    let net = Net::new("lkdead", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch(&net, 1, &auth, &[]);
    let h2 = Router::launch(&net, 2, &auth, &[H1]);
    let h3 = Router::launch(&net, 3, &auth, &[H1]);
    let all = [&h1, &h2, &h3];
    wait_mesh(&net, &all, Duration::from_secs(60), "three routers");
    let h3_bare = h3.bare_name().to_string();
    for r in [&h1, &h2] {
        assert!(status_peers(&net, r.host).contains(&h3_bare));
    }

    // Unplug h3's cable at the switch: its bridge port goes down, so h1 and h2 receive
    // nothing more from h3, not even a RST or FIN.
    let cut = net.exec(net.switch(), "ip", &["link", "set", "h3", "down"]);
    assert!(cut.status.success(), "cut h3: {}", lossy(&cut.stderr));
    let start = Instant::now();

    let limit = HEARTBEAT_TIMEOUT + Duration::from_secs(15);
    let (mut dropped, mut h3_alone) = ([None::<Duration>; 2], None::<Duration>);
    let mut polls = 0;
    while start.elapsed() < limit && (dropped.iter().any(Option::is_none) || h3_alone.is_none()) {
        // h1 <-> h2 stay established throughout.
        for (a, b) in [(&h1, &h2), (&h2, &h1)] {
            if !established_to(&net, a.host, b) {
                panic!(
                    "h{} lost its link to h{} {:.1} s after h3 was cut\n{}",
                    a.host,
                    b.host,
                    start.elapsed().as_secs_f64(),
                    diagnostics(&net, &all)
                );
            }
        }
        for (i, r) in [&h1, &h2].into_iter().enumerate() {
            if dropped[i].is_none() && !status_peers(&net, r.host).contains(&h3_bare) {
                dropped[i] = Some(start.elapsed());
            }
        }
        if h3_alone.is_none() && established(&net, 3).is_empty() {
            h3_alone = Some(start.elapsed());
        }
        polls += 1;
        thread::sleep(Duration::from_millis(500));
    }
    let fmt = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| format!("not within {} s", limit.as_secs()))
    };
    println!(
        "e2e: h3 cut silently: h1 dropped it from `status peers` after {}, h2 after {}; \
         h3 lost all its links after {} ({polls} polls; h1<->h2 established throughout)",
        fmt(dropped[0]),
        fmt(dropped[1]),
        fmt(h3_alone)
    );
    for (i, d) in dropped.iter().enumerate() {
        let d = d.unwrap_or_else(|| {
            panic!(
                "h{} still lists h3 {limit:?} after the cut\n{}",
                i + 1,
                diagnostics(&net, &all)
            )
        });
        // A link is closed after HEARTBEAT_TIMEOUT without a sign of life (a control
        // message or a sleeve datagram), and a link that went HEARTBEAT_ASK_AFTER
        // without one asks for a heartbeat (within a second of timer batching) and is
        // answered: the last sign of life from h3 came at most that long before the cut.
        let earliest = HEARTBEAT_TIMEOUT - HEARTBEAT_ASK_AFTER - Duration::from_secs(2);
        assert!(
            d >= earliest,
            "h{} dropped h3 after only {d:?}: earlier than a {HEARTBEAT_TIMEOUT:?} heartbeat \
             timeout allows",
            i + 1
        );
    }
    assert!(
        h3_alone.is_some(),
        "h3 still has established links {limit:?} after the cut\n{}",
        diagnostics(&net, &all)
    );
    for r in [&h1, &h2] {
        let log = r.log();
        assert!(
            log.contains("no heartbeat"),
            "h{}'s log does not say the link to h3 died of missing heartbeats:\n{}",
            r.host,
            tail(&log, 20)
        );
    }
    for (a, b) in [(&h1, &h2), (&h2, &h1)] {
        let lost = format!("connection to {} lost", b.bare_name());
        assert!(
            !a.log().contains(&lost),
            "h{}'s log shows its link to h{} was lost:\n{}",
            a.host,
            b.host,
            tail(&a.log(), 20)
        );
    }
}

// ---- 2. connection to self --------------------------------------------------------------

#[test]
fn connection_to_self_is_refused_and_never_retried() {
    let net = Net::new("lkself", 1);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch(&net, 1, &auth, &[H1]);

    let failed_line = || {
        connections(&net, 1)
            .into_iter()
            .find(|c| c.outbound && c.address == H1_TARGET && c.state == "failed")
            .map(|c| c.line)
    };
    let mut line = String::new();
    let took = wait_until(Duration::from_secs(15), POLL, || match failed_line() {
        Some(l) => {
            line = l;
            true
        }
        None => false,
    })
    .unwrap_or_else(|| {
        panic!(
            "h1 does not show its target {H1_TARGET} as failed within 15 s\n{}",
            diagnostics(&net, &[&h1])
        )
    });
    println!(
        "e2e: h1 given its own address marked it failed after {:.2} s: {line}",
        took.as_secs_f64()
    );
    assert!(
        line.to_lowercase().contains("self"),
        "the reason should mention ourself: {line:?}"
    );
    assert!(
        line.ends_with("retry: never"),
        "a connection to ourself must never be retried: {line:?}"
    );

    // It stays failed, with no new attempts: the line and the log stay the same.
    let log_count = |r: &Router| {
        r.log()
            .lines()
            .filter(|l| l.contains("ourself") || l.contains(H1_TARGET))
            .count()
    };
    let before = log_count(&h1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let now = failed_line();
        assert_eq!(
            now.as_deref(),
            Some(line.as_str()),
            "the failed target changed (a new attempt?)\n{}",
            diagnostics(&net, &[&h1])
        );
        thread::sleep(Duration::from_millis(500));
    }
    let after = log_count(&h1);
    assert_eq!(
        before,
        after,
        "h1 logged new attempts to reach itself over 5 s:\n{}",
        tail(&h1.log(), 20)
    );
    assert!(
        established(&net, 1).is_empty(),
        "h1 has an established connection"
    );
    let peers = parse_peers(&status_peers(&net, 1)).expect("status peers layout");
    assert_eq!(peers.len(), 1, "h1 should know only itself: {peers:?}");
    assert_eq!(peers[0].name, h1.name);
    assert!(alive(h1.pid()));
}

// ---- 3. cloned identity ----------------------------------------------------------------

#[test]
fn second_router_with_same_identity_is_refused() {
    let net = Net::new("lkclone", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch(&net, 1, &auth, &[]);

    // h2 gets a copy of h1's identity key.
    let key = net.host(1).data_dir.join("identity.key");
    let clone = net.host(2).data_dir.join("identity.key");
    std::fs::copy(&key, &clone).expect("copy identity.key");
    std::fs::set_permissions(&clone, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let h2 = Router::launch(&net, 2, &auth, &[H1]);
    assert_eq!(
        h2.bare_name(),
        h1.bare_name(),
        "h2 should run with h1's identity (same peer name)"
    );

    let h1_peers_ok = |text: &str| -> Result<(), String> {
        let peers = parse_peers(text)?;
        let same: Vec<&str> = peers
            .iter()
            .filter(|p| bare_name(&p.name) == h1.bare_name())
            .map(|p| p.name.as_str())
            .collect();
        if same != [h1.name.as_str()] || text.contains("(h2)") {
            return Err(format!("h1 shows the clone: {text}"));
        }
        Ok(())
    };
    let failed = || {
        connections(&net, 2)
            .into_iter()
            .find(|c| c.address == H1_TARGET && c.state == "failed")
            .map(|c| c.line)
    };
    let mut line = String::new();
    let start = Instant::now();
    let mut took = None;
    // For 15 s: h1 never shows the clone; h2's target turns failed for good.
    while start.elapsed() < Duration::from_secs(15) {
        let text = status_peers(&net, 1);
        if let Err(e) = h1_peers_ok(&text) {
            panic!("{e}\n{}", diagnostics(&net, &[&h1, &h2]));
        }
        let est = established(&net, 2);
        assert!(
            est.is_empty(),
            "the clone h2 has established connections: {est:?}"
        );
        if took.is_none() {
            if let Some(l) = failed() {
                line = l;
                took = Some(start.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(300));
    }
    let took = took.unwrap_or_else(|| {
        panic!(
            "h2 (the clone) does not show {H1_TARGET} as failed within 15 s\n{}",
            diagnostics(&net, &[&h1, &h2])
        )
    });
    println!(
        "e2e: clone h2 marked {H1_TARGET} failed after {:.2} s: {line}",
        took.as_secs_f64()
    );
    assert!(
        line.to_lowercase().contains("identity"),
        "reason should mention the identity: {line:?}"
    );
    assert!(line.ends_with("retry: never"), "must not retry: {line:?}");
    assert_eq!(
        failed().as_deref(),
        Some(line.as_str()),
        "the failed line changed"
    );

    // A normal h3 joins h1, and the clone stays out of the mesh.
    let h3 = Router::launch(&net, 3, &auth, &[H1]);
    let took = wait_mesh(&net, &[&h1, &h3], Duration::from_secs(30), "h1 and h3");
    println!(
        "e2e: normal h3 meshed with h1 {:.2} s after launch despite the clone",
        took.as_secs_f64()
    );
    thread::sleep(Duration::from_secs(2));
    h1_peers_ok(&status_peers(&net, 1)).unwrap_or_else(|e| panic!("after h3 joined: {e}"));
    let h3_peers = status_peers(&net, 3);
    assert!(
        !h3_peers.contains("(h2)"),
        "h3 learned of the clone:\n{h3_peers}"
    );
    assert!(alive(h1.pid()) && alive(h2.pid()), "a router died");
    assert_eq!(
        status_field(&net.weft_ok(1, &["status"]), "Name").as_deref(),
        Some(h1.name.as_str())
    );
    let names: Vec<String> = parse_peers(&status_peers(&net, 1))
        .expect("layout")
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut want = vec![h1.name.clone(), h3.name.clone()];
    let mut got = names.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "h1's peers");
}

// ---- 4. simultaneous dials -------------------------------------------------------------

/// Lines of `r`'s own log file (`<run-dir>/weft.log`) that contain `needle`.
fn log_lines(r: &Router, needle: &str) -> usize {
    std::fs::read_to_string(r.run_dir.join("weft.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn simultaneous_dials_resolve_to_one_link() {
    let net = Net::new("lksimul", 4);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    // Pair A: h1 and h2 launched at the same time, each with the other as its peer.
    // Pair B: h3 and h4 launched without peers, then told at the same instant (`weft
    // connect` on both) to dial each other: both listen already, so the dials cross.
    let start = Instant::now();
    let [h1, h2, h3, h4] = thread::scope(|s| {
        let launches = [
            s.spawn(|| Router::launch(&net, 1, &auth, &[H2])),
            s.spawn(|| Router::launch(&net, 2, &auth, &[H1])),
            s.spawn(|| Router::launch(&net, 3, &auth, &[])),
            s.spawn(|| Router::launch(&net, 4, &auth, &[])),
        ];
        launches.map(|l| l.join().expect("launch"))
    });
    let launched = start.elapsed();
    let barrier = std::sync::Barrier::new(2);
    let connect_start = Instant::now();
    thread::scope(|s| {
        for (host, peer) in [(3, "198.18.0.4"), (4, "198.18.0.3")] {
            let barrier = &barrier;
            let net = &net;
            s.spawn(move || {
                barrier.wait();
                net.weft_ok(host, &["connect", peer]);
            });
        }
    });
    let pairs = [(&h1, &h2), (&h3, &h4)];
    let all = [&h1, &h2, &h3, &h4];
    let one_link = |a: &Router, b: &Router| {
        established(&net, a.host).len() == 1
            && established(&net, b.host).len() == 1
            && established_to(&net, a.host, b)
            && established_to(&net, b.host, a)
    };
    for (a, b) in pairs {
        let took =
            wait_until(Duration::from_secs(15), POLL, || one_link(a, b)).unwrap_or_else(|| {
                panic!(
                    "h{} and h{} do not each show one established link within 15 s\n{}",
                    a.host,
                    b.host,
                    diagnostics(&net, &all)
                )
            });
        println!(
            "e2e: h{} and h{} dialling each other at once: one link each {:.2} s after {}",
            a.host,
            b.host,
            took.as_secs_f64(),
            if a.host == 1 {
                format!(
                    "both launches returned ({:.2} s after launch)",
                    launched.as_secs_f64()
                )
            } else {
                format!(
                    "the simultaneous `weft connect`s ({:.2} s after they were issued)",
                    connect_start.elapsed().as_secs_f64()
                )
            }
        );
    }

    // For 10 s: still exactly one link on each router, and `status peers` unchanged.
    let peers0: Vec<String> = all.iter().map(|r| status_peers(&net, r.host)).collect();
    let watch = Instant::now();
    let mut polls = 0;
    while watch.elapsed() < Duration::from_secs(10) {
        for (r, before) in all.iter().zip(&peers0) {
            let est = established(&net, r.host);
            assert_eq!(
                est.len(),
                1,
                "h{}: {} established links after {:.1} s (flapping?)\n{}",
                r.host,
                est.len(),
                watch.elapsed().as_secs_f64(),
                diagnostics(&net, &all)
            );
            let peers = status_peers(&net, r.host);
            assert_eq!(
                &peers,
                before,
                "h{}: `status peers` changed after {:.1} s",
                r.host,
                watch.elapsed().as_secs_f64()
            );
        }
        polls += 1;
        thread::sleep(Duration::from_millis(500));
    }
    for r in all {
        // The router logs "connection to PEER lost: REASON" when an established link ends.
        let lost = log_lines(r, " lost");
        assert_eq!(
            lost,
            0,
            "h{}'s log shows lost connections:\n{}",
            r.host,
            tail(&r.log(), 25)
        );
    }
    for (a, b) in pairs {
        let ca = &established(&net, a.host)[0];
        let cb = &established(&net, b.host)[0];
        assert_ne!(
            ca.outbound, cb.outbound,
            "the surviving link must be outbound on exactly one side: {ca:?} / {cb:?}"
        );
        // Not asserted (the race is not deterministic): did both dials get through, so
        // that the duplicate-link resolution ran? Each side logs "closing link: duplicate
        // connection..." for the link it drops.
        let dup = |r: &Router| log_lines(r, "duplicate connection");
        println!(
            "e2e: h{}/h{} stable for 10 s ({polls} polls); surviving link dialled by h{}; \
             log lines about a dropped duplicate link: h{} {}, h{} {}",
            a.host,
            b.host,
            if ca.outbound { a.host } else { b.host },
            a.host,
            dup(a),
            b.host,
            dup(b)
        );
    }
}

// ---- 5. connect and forget -------------------------------------------------------------

#[test]
fn connect_and_forget() {
    let net = Net::new("lkconn", 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch(&net, 1, &auth, &[]);
    let h2 = Router::launch(&net, 2, &auth, &[]);
    assert!(net.weft_ok(2, &["status", "targets"]).trim().is_empty());

    let out = net.weft_ok(2, &["connect", H1]);
    let took = wait_mesh(
        &net,
        &[&h1, &h2],
        Duration::from_secs(10),
        "after weft connect",
    );
    println!(
        "e2e: `weft connect {H1}` on h2 -> mesh in {:.2} s (connect printed {:?})",
        took.as_secs_f64(),
        out.trim()
    );
    let targets = net.weft_ok(2, &["status", "targets"]);
    assert!(
        targets.lines().any(|l| l.trim() == H1_TARGET),
        "h2's targets should list {H1_TARGET}:\n{targets}"
    );

    // The target is in h2's store: killed and relaunched without peers, it dials again.
    h2.kill9();
    let h2 = Router::launch(&net, 2, &auth, &[]);
    let took = wait_mesh(
        &net,
        &[&h1, &h2],
        Duration::from_secs(15),
        "after h2 was killed and relaunched with no peers",
    );
    let targets = net.weft_ok(2, &["status", "targets"]);
    assert!(
        targets.lines().any(|l| l.trim() == H1_TARGET),
        "the relaunched h2 should still list {H1_TARGET}:\n{targets}"
    );
    println!(
        "e2e: h2 relaunched with no peers redialled its stored target in {:.2} s",
        took.as_secs_f64()
    );

    // Gather the problems, so that one wrong answer does not hide the others.
    let mut problems = Vec::new();
    // `weft forget` prints how many targets the router forgot.
    let forget = net.weft(2, &["forget", H1]);
    if !forget.status.success() || lossy(&forget.stdout).trim() != "1" {
        problems.push(format!(
            "`weft forget {H1}` should exit 0 and print 1; it exited {} and printed {:?} (stderr {:?})",
            forget.status,
            lossy(&forget.stdout),
            lossy(&forget.stderr)
        ));
    }
    let targets = net.weft_ok(2, &["status", "targets"]);
    if !targets.trim().is_empty() {
        problems.push(format!(
            "`status targets` should be empty after forget:\n{targets}"
        ));
    }
    let again = net.weft(2, &["forget", H1]);
    if !again.status.success() || lossy(&again.stdout).trim() != "0" {
        problems.push(format!(
            "a second `weft forget {H1}` should print 0; it exited {} and printed {:?}",
            again.status,
            lossy(&again.stdout)
        ));
    }

    let bad = net.weft(2, &["connect", "not an address!"]);
    let stderr = lossy(&bad.stderr);
    println!(
        "e2e: `weft connect 'not an address!'` exited {} with: {}",
        bad.status,
        stderr.trim()
    );
    if bad.status.success()
        || !stderr.contains("not an address!")
        || stderr.contains("panicked")
        || stderr.trim().is_empty()
    {
        problems.push(format!(
            "`weft connect 'not an address!'` should fail with a message naming the address; exit {}, stderr {stderr:?}",
            bad.status
        ));
    }
    let targets = net.weft_ok(2, &["status", "targets"]);
    if !targets.trim().is_empty() {
        problems.push(format!("a bad address changed the targets:\n{targets}"));
    }
    assert!(alive(h1.pid()) && alive(h2.pid()));
    // Forgotten is forgotten for good: a relaunch does not bring it back.
    h2.kill9();
    let _h2 = Router::launch(&net, 2, &auth, &[]);
    let targets = net.weft_ok(2, &["status", "targets"]);
    if !targets.trim().is_empty() {
        problems.push(format!(
            "a forgotten target came back after a relaunch:\n{targets}"
        ));
    }
    assert!(
        problems.is_empty(),
        "connect/forget problems:\n- {}",
        problems.join("\n- ")
    );
}

// ---- 6. privileges ---------------------------------------------------------------------

#[test]
fn unprivileged_users_can_read_but_not_change() {
    let net = Net::new("lkpriv", 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch(&net, 1, &auth, &[]);

    let run_dir = &net.host(1).run_dir;
    for dir in run_dir.ancestors() {
        let mode = std::fs::metadata(dir).expect("stat").permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} (mode {:o}) is not traversable by other users; the test cannot run as nobody",
            dir.display(),
            mode & 0o777
        );
    }
    let sock = run_dir.join("weft.sock");
    let mode = std::fs::metadata(&sock)
        .expect("stat weft.sock")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666, "{} mode", sock.display());

    let out = net.weft_as_nobody(1, &["status"]);
    let stdout = lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`weft status` as nobody failed ({}): {}",
        out.status,
        lossy(&out.stderr)
    );
    assert_eq!(status_field(&stdout, "Service").as_deref(), Some("router"));
    assert_eq!(
        status_field(&stdout, "Name").as_deref(),
        Some(h1.name.as_str())
    );
    let report = net.weft_as_nobody(1, &["report"]);
    assert!(report.status.success(), "`weft report` as nobody failed");
    serde_json::from_slice::<serde_json::Value>(&report.stdout).expect("report as nobody is JSON");

    for args in [
        &["connect", "198.18.0.9"][..],
        &["forget", H1][..],
        &["stop"][..],
    ] {
        let out = net.weft_as_nobody(1, args);
        let stderr = lossy(&out.stderr);
        println!(
            "e2e: `weft {}` as nobody exited {} with: {}",
            args.join(" "),
            out.status,
            stderr.trim()
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "`weft {}` as nobody must exit 1; stderr {stderr:?}",
            args.join(" ")
        );
        let low = stderr.to_lowercase();
        assert!(
            low.contains("permission") || low.contains("root"),
            "`weft {}` as nobody: the message should mention permission/root: {stderr:?}",
            args.join(" ")
        );
    }
    assert!(alive(h1.pid()), "`weft stop` as nobody stopped the router");
    let targets = net.weft_ok(1, &["status", "targets"]);
    assert!(
        !targets.contains("198.18.0.9"),
        "nobody added a target:\n{targets}"
    );

    // No router on h2: exit 3, as root and as nobody.
    for (who, out) in [
        ("root", net.weft(2, &["status"])),
        ("nobody", net.weft_as_nobody(2, &["status"])),
    ] {
        assert_eq!(
            out.status.code(),
            Some(3),
            "`weft status` as {who} without a router must exit 3; stderr {:?}",
            lossy(&out.stderr)
        );
    }
}

// ---- 7. status listener ----------------------------------------------------------------

/// Sends one raw HTTP request to 127.0.0.1:6782 inside `ns`; returns (status, body).
fn raw_http(ns: &str, request: &str) -> (u16, String) {
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/6782 && printf '{request}' >&3 && cat <&3");
    let (out, _) = bash_in(ns, &script, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "request {request:?} failed ({}): {}",
        out.status,
        lossy(&out.stderr)
    );
    let text = lossy(&out.stdout);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn get(ns: &str, path: &str, host: Option<&str>) -> (u16, String) {
    let host = host.map(|h| format!("Host: {h}\\r\\n")).unwrap_or_default();
    raw_http(ns, &format!("GET {path} HTTP/1.1\\r\\n{host}\\r\\n"))
}

#[test]
fn status_listener_checks_host_header() {
    let net = Net::new("lkhttp", 2);
    let secret_file = net.new_secret("secret");
    let auth = Auth::PasswordFile(secret_file.clone());
    let h1 = Router::launch(&net, 1, &auth, &[]);
    let _h2 = Router::launch(&net, 2, &auth, &[H1]);
    let ns = net.host(1).ns.clone();

    let mut bodies = Vec::new();
    for host in [
        Some("evil.example"),
        Some("evil.example:6782"),
        Some("localhost.evil.example"),
        Some("127.0.0.1.evil.example"),
        None,
    ] {
        let (code, body) = get(&ns, "/status", host);
        assert_eq!(code, 403, "GET /status with Host {host:?}: {body}");
        assert!(!body.contains("Service"), "403 leaked status: {body}");
        bodies.push(body);
    }
    for host in [
        "localhost:6782",
        "localhost",
        "127.0.0.1",
        "127.0.0.1:6782",
        "[::1]:6782",
    ] {
        let (code, body) = get(&ns, "/status", Some(host));
        assert_eq!(code, 200, "GET /status with Host {host}: {body}");
        assert_eq!(
            status_field(&body, "Service").as_deref(),
            Some("router"),
            "Host {host}: {body}"
        );
        bodies.push(body);
    }
    for path in ["/status/peers", "/status/connections", "/status/targets"] {
        let (code, body) = get(&ns, path, Some("localhost:6782"));
        assert_eq!(code, 200, "GET {path}: {body}");
        bodies.push(body);
    }
    let (code, report) = get(&ns, "/report", Some("localhost:6782"));
    assert_eq!(code, 200, "GET /report: {report}");
    let json: serde_json::Value = serde_json::from_str(&report)
        .unwrap_or_else(|e| panic!("/report is not JSON ({e}): {report}"));
    assert!(json.get("router").is_some_and(|v| v.is_object()));
    assert!(report.contains(h1.bare_name()));
    bodies.push(report);
    let (code, body) = get(&ns, "/report", Some("evil.example"));
    assert_eq!(code, 403, "GET /report with a foreign Host: {body}");

    // The listener is read-only, even for a loopback Host.
    let json_body = r#"{"peers":["198.18.0.9"],"replace":false}"#;
    let (code, body) = raw_http(
        &ns,
        &format!(
            "POST /connect HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Type: application/json\\r\\nContent-Length: {}\\r\\n\\r\\n{json_body}",
            json_body.len()
        ),
    );
    assert!(
        (400..500).contains(&code),
        "POST /connect on the status listener: {code} {body}"
    );
    assert!(!net
        .weft_ok(1, &["status", "targets"])
        .contains("198.18.0.9"));

    // It listens on loopback only: h2 cannot reach h1's 6782.
    let (out, _) = bash_in(
        &net.host(2).ns,
        "timeout 5 bash -c 'exec 3<>/dev/tcp/198.18.0.1/6782' 2>/dev/null",
        Duration::from_secs(15),
    );
    assert!(
        !out.status.success(),
        "h1's status listener is reachable from h2"
    );

    // No response carries the network secret or the identity key.
    let secret = std::fs::read_to_string(&secret_file).expect("read secret");
    let secret = secret.trim().to_lowercase();
    let key = std::fs::read(net.host(1).data_dir.join("identity.key")).expect("read identity.key");
    assert_eq!(key.len(), 32, "identity.key length");
    let key_hex = hex(&key);
    bodies.push(net.weft_ok(1, &["report"]));
    for body in &bodies {
        let low = body.to_lowercase();
        assert!(
            !low.contains(&secret),
            "a response contains the network secret"
        );
        assert!(
            !low.contains(&key_hex),
            "a response contains the identity key"
        );
        assert!(
            !low.contains(&key_hex[..16]),
            "a response contains part of the identity key"
        );
    }
    println!(
        "e2e: status listener: 5 foreign/missing Hosts -> 403, 5 loopback Hosts -> 200, {} bodies free of secret and key",
        bodies.len()
    );
}

// ---- 8. pre-authentication junk --------------------------------------------------------

#[test]
fn preauth_junk_is_refused_and_router_survives() {
    let net = Net::new("lkjunk", 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch(&net, 1, &auth, &[]);
    let h2ns = net.host(2).ns.clone();
    thread::sleep(Duration::from_secs(1));
    let rss0 = h1.rss_kib();

    // Each probe prints how many bytes h1 sent back before it closed the connection.
    let probe = |what: &str, send: &str| -> (usize, Duration) {
        let script = format!(
            "timeout 20 bash -c 'exec 3<>/dev/tcp/{H1}/6783 || exit 9; {send} >&3 2>/dev/null; cat <&3 2>/dev/null | wc -c'"
        );
        let (out, took) = bash_in(&h2ns, &script, Duration::from_secs(30));
        let code = out.status.code();
        assert!(
            code != Some(124) && code != Some(9) && code.is_some(),
            "{what}: probe failed or h1 kept the connection open ({}): {}",
            out.status,
            lossy(&out.stderr)
        );
        let n = lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{what}: no byte count: {:?}", lossy(&out.stdout)));
        (n, took)
    };

    // (a) 100 KB of random bytes.
    let (n, took) = probe("random", "head -c 102400 /dev/urandom");
    println!(
        "e2e: 100 KB of random bytes: closed after {:.2} s, h1 sent {n} bytes",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(5),
        "junk was not refused promptly: {took:?}"
    );
    assert!(
        n <= 8,
        "h1 sent {n} bytes to junk (at most its 8-byte header)"
    );

    // (b) a valid header, then a msg1 length prefix of 0xFFFF.
    let (n, took) = probe("huge msg1", "printf \"WEFT\\001\\001\\001\\000\\377\\377\"");
    println!(
        "e2e: header + msg1 length 0xFFFF: closed after {:.2} s, h1 sent {n} bytes",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(5),
        "a bad msg1 length must fail at once, not at the deadline: {took:?}"
    );
    assert!(n <= 8, "h1 sent {n} bytes after a bad msg1 length");

    // (c) a connection that sends nothing: closed at the 10 s handshake deadline.
    let (n, took) = probe("silent", "true");
    println!(
        "e2e: silent connection: closed by h1 after {:.2} s (h1 sent {n} bytes)",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(15),
        "a silent connection was kept {took:?} (deadline 10 s)"
    );

    // (d) 20 junk connections at once, and 20 with a bad msg1 length.
    let script = format!(
        "for i in $(seq 20); do \
           (exec 3<>/dev/tcp/{H1}/6783 && head -c 102400 /dev/urandom >&3 2>/dev/null; cat <&3 >/dev/null 2>&1) & \
           (exec 3<>/dev/tcp/{H1}/6783 && printf \"WEFT\\001\\001\\001\\000\\377\\377\" >&3 && cat <&3 >/dev/null 2>&1) & \
         done; wait"
    );
    let (out, took) = bash_in(
        &h2ns,
        &format!("timeout 25 bash -c '{script}'"),
        Duration::from_secs(40),
    );
    assert_ne!(
        out.status.code(),
        Some(124),
        "40 junk connections were not all closed within 25 s"
    );
    println!(
        "e2e: 40 concurrent junk connections all closed within {:.2} s",
        took.as_secs_f64()
    );

    assert!(alive(h1.pid()), "h1 died:\n{}", tail(&h1.log(), 30));
    net.weft_ok(1, &["status"]);
    let rss1 = h1.rss_kib();
    println!("e2e: h1 RSS {rss0} KiB before the junk, {rss1} KiB after");
    assert!(
        rss1 <= rss0 + 10 * 1024,
        "h1's RSS grew from {rss0} to {rss1} KiB"
    );

    // h2 can still join normally.
    let h2 = Router::launch(&net, 2, &auth, &[H1]);
    let took = wait_mesh(
        &net,
        &[&h1, &h2],
        Duration::from_secs(30),
        "h2 after the junk",
    );
    println!(
        "e2e: after the junk, h2 joined h1 in {:.2} s",
        took.as_secs_f64()
    );
}
