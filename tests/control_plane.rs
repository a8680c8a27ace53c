//! End-to-end tests of the control plane with the real `weft` binary, each router in
//! its own network namespace on one underlay bridge (198.18.0.X):
//! - five routers given only h1 as a peer form an encrypted full mesh;
//! - a router killed with `kill -9` is dropped by the others and rejoins under the
//!   same peer name when relaunched with the same data dir;
//! - routers with a wrong secret, or without encryption, are refused.
//!
//! Needs root. Run `cargo test --test control_plane -- --nocapture` to see the figures
//! (convergence time, RSS, idle CPU) printed on lines starting with `e2e:`.

mod common;

use common::weft::{bare_name, parse_connections, parse_peers, status_field, Auth, Router};
use common::{tail, wait_until, Net};
use std::thread;
use std::time::{Duration, Instant};

const MESH_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
const H1: &str = "198.18.0.1";

/// Launches h1 with no peers, then h2..=hn with only h1 as their peer.
fn launch_star(net: &Net, auth: &Auth, n: usize) -> Vec<Router> {
    let mut routers = vec![Router::launch(net, 1, auth, &[])];
    for host in 2..=n {
        routers.push(Router::launch(net, host, auth, &[H1]));
    }
    for r in &routers {
        assert_peer_name(&r.name, r.host);
    }
    let mut names: Vec<&str> = routers.iter().map(|r| r.bare_name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "two routers share a peer name");
    routers
}

/// `xx:xx:xx:xx:xx:xx(hX)`: six lowercase hex bytes and the nickname.
fn assert_peer_name(name: &str, host: usize) {
    let bare = bare_name(name);
    let mac_like = bare.len() == 17
        && bare
            .split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    assert!(mac_like, "h{host}: peer name {name:?} is not in MAC form");
    assert_eq!(
        &name[bare.len()..],
        format!("(h{host})"),
        "h{host}: nickname missing from {name:?}"
    );
}

/// Ok if `r`'s `status connections` shows exactly one established, encrypted
/// connection to each router in `mesh` other than itself, and no other established one.
fn mesh_state(net: &Net, r: &Router, mesh: &[Router]) -> Result<(), String> {
    let out = net.weft(r.host, &["status", "connections"]);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("weft status connections failed ({})", out.status));
    }
    let conns = parse_connections(&text)?;
    let est: Vec<_> = conns.iter().filter(|c| c.state == "established").collect();
    if let Some(c) = est.iter().find(|c| c.encrypted != Some(true)) {
        return Err(format!("not an encrypted connection: {:?}", c.line));
    }
    let mut got: Vec<&str> = est.iter().filter_map(|c| c.peer.as_deref()).collect();
    let mut want: Vec<&str> = mesh
        .iter()
        .filter(|o| o.host != r.host)
        .map(|o| o.name.as_str())
        .collect();
    got.sort();
    want.sort();
    if est.len() != want.len() || got != want {
        return Err(format!(
            "{} established, want {}: {got:?}",
            est.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Waits (60 s at most) until every router shows an established, encrypted connection
/// to every other one. Returns the time it took; panics with diagnostics on timeout.
fn wait_full_mesh(net: &Net, routers: &[Router], what: &str) -> Duration {
    wait_until(MESH_TIMEOUT, POLL, || {
        routers.iter().all(|r| mesh_state(net, r, routers).is_ok())
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: no full encrypted mesh within {MESH_TIMEOUT:?}\n{}",
            diagnostics(net, routers)
        )
    })
}

/// Per router: its mesh state, `status connections`, `status peers` and log tail.
fn diagnostics(net: &Net, routers: &[Router]) -> String {
    let mut s = String::new();
    for r in routers {
        let state = mesh_state(net, r, routers)
            .err()
            .unwrap_or_else(|| "ok".into());
        let conns = net.weft(r.host, &["status", "connections"]);
        let peers = net.weft(r.host, &["status", "peers"]);
        s += &format!(
            "==== h{} {} pid {}: {state}\n-- status connections:\n{}-- status peers:\n{}-- log tail:\n{}\n",
            r.host,
            r.name,
            r.pid(),
            String::from_utf8_lossy(&conns.stdout),
            String::from_utf8_lossy(&peers.stdout),
            tail(&r.log(), 20)
        );
    }
    s
}

fn status_peers(net: &Net, host: usize) -> String {
    net.weft_ok(host, &["status", "peers"])
}

#[test]
fn five_routers_form_an_encrypted_full_mesh() {
    let net = Net::new("cpmesh", 5);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    assert!(
        net.weft(1, &["version"]).status.success(),
        "weft version failed"
    );
    assert_eq!(
        net.weft(1, &["status"]).status.code(),
        Some(3),
        "status without a router must exit 3"
    );

    let routers = launch_star(&net, &auth, 5);
    let took = wait_full_mesh(&net, &routers, "five routers");
    println!("e2e: 5 routers (h2..h5 given only h1) formed an encrypted full mesh {:.2} s after the last launch", took.as_secs_f64());

    // The summary follows weave's layout; peer counts may lag the links by a gossip round.
    let want_peers = format!(
        "{} (with {} established connections)",
        routers.len(),
        routers.len() * (routers.len() - 1)
    );
    let summary_ok = |r: &Router| {
        let s = net.weft_ok(r.host, &["status"]);
        status_field(&s, "Peers").as_deref() == Some(want_peers.as_str())
            && status_field(&s, "Encryption").as_deref() == Some("enabled")
            && status_field(&s, "Connections").is_some_and(|c| c.contains("4 established"))
            && status_field(&s, "Name").as_deref() == Some(r.name.as_str())
    };
    if wait_until(Duration::from_secs(10), POLL, || {
        routers.iter().all(summary_ok)
    })
    .is_none()
    {
        let r = routers
            .iter()
            .find(|r| !summary_ok(r))
            .expect("a router with a bad summary");
        panic!("h{}: `weft status` should show Peers: {want_peers}, Encryption: enabled, 4 established:\n{}", r.host, net.weft_ok(r.host, &["status"]));
    }

    for r in &routers {
        // `status peers`: every router lists all five peers, each with four connections.
        let peers = parse_peers(&status_peers(&net, r.host)).expect("status peers layout");
        let mut listed: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        let mut all: Vec<&str> = routers.iter().map(|o| o.name.as_str()).collect();
        listed.sort();
        all.sort();
        assert_eq!(listed, all, "h{}: peers in `weft status peers`", r.host);
        for p in &peers {
            let est = p
                .connections
                .iter()
                .filter(|c| c.ends_with("established"))
                .count();
            assert_eq!(
                est, 4,
                "h{}: peer {} should list 4 established connections: {:?}",
                r.host, p.name, p.connections
            );
        }
        // `report` is JSON that names every peer (its schema is still settling).
        let report = net.weft_ok(r.host, &["report"]);
        let json: serde_json::Value = serde_json::from_str(&report)
            .unwrap_or_else(|e| panic!("h{}: weft report is not JSON ({e}):\n{report}", r.host));
        assert!(
            json.get("router").is_some_and(|v| v.is_object()),
            "h{}: report has no router object",
            r.host
        );
        for o in &routers {
            assert!(
                report.contains(o.bare_name()),
                "h{}: report does not mention {}",
                r.host,
                o.name
            );
        }
    }
    let targets = net.weft_ok(2, &["status", "targets"]);
    assert!(
        targets.contains(H1),
        "h2's targets should include {H1}:\n{targets}"
    );

    // Resources over a 5 s idle window (a measurement window, so a plain sleep).
    let window = Duration::from_secs(5);
    let before: Vec<Duration> = routers.iter().map(Router::cpu_time).collect();
    thread::sleep(window);
    for (r, cpu0) in routers.iter().zip(&before) {
        let cpu = r.cpu_time().saturating_sub(*cpu0);
        let share = cpu.as_secs_f64() / window.as_secs_f64() * 100.0;
        println!(
            "e2e: h{} pid {}: RSS {} KiB, CPU {} ms in {} s idle ({share:.1}% of a core)",
            r.host,
            r.pid(),
            r.rss_kib(),
            cpu.as_millis(),
            window.as_secs()
        );
        assert!(
            share < 25.0,
            "h{}: {share:.1}% of a core while idle",
            r.host
        );
    }
    // And the mesh held steady through the idle window.
    for r in &routers {
        mesh_state(&net, r, &routers).unwrap_or_else(|e| {
            panic!(
                "h{}: after idling: {e}\n{}",
                r.host,
                diagnostics(&net, &routers)
            )
        });
    }
}

#[test]
fn killed_router_is_dropped_and_rejoins_with_the_same_name() {
    let net = Net::new("cpkill", 5);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let mut routers = launch_star(&net, &auth, 5);
    wait_full_mesh(&net, &routers, "initial mesh");

    let h5 = routers.pop().expect("h5");
    let (name, bare) = (h5.name.clone(), h5.bare_name().to_string());
    let status = h5.kill9();
    assert!(
        !status.success(),
        "h5 should have died from SIGKILL, got {status}"
    );

    let took = wait_until(MESH_TIMEOUT, POLL, || {
        routers
            .iter()
            .all(|r| !status_peers(&net, r.host).contains(&bare))
    })
    .unwrap_or_else(|| {
        panic!(
            "h1..h4 still list {name} {MESH_TIMEOUT:?} after kill -9\n{}",
            diagnostics(&net, &routers)
        )
    });
    println!(
        "e2e: after kill -9 of h5, h1..h4 dropped it from `status peers` within {:.2} s",
        took.as_secs_f64()
    );
    wait_full_mesh(&net, &routers, "the four survivors");

    let h5 = Router::launch(&net, 5, &auth, &[H1]);
    assert_eq!(
        h5.name, name,
        "h5 relaunched with the same data dir must keep its peer name"
    );
    routers.push(h5);
    let took = wait_full_mesh(&net, &routers, "after h5 rejoined");
    println!(
        "e2e: relaunched h5 ({name}) rejoined the full mesh {:.2} s after launch",
        took.as_secs_f64()
    );
}

#[test]
fn wrong_secret_and_no_encryption_are_refused() {
    let net = Net::new("cprefuse", 7);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let routers = launch_star(&net, &auth, 5);
    wait_full_mesh(&net, &routers, "five routers");

    let wrong = Router::launch(
        &net,
        6,
        &Auth::PasswordFile(net.new_secret("wrong-secret")),
        &[H1],
    );
    let plain = Router::launch(&net, 7, &Auth::NoEncryption, &[H1]);
    assert_peer_name(&wrong.name, 6);
    assert_peer_name(&plain.name, 7);
    assert_eq!(
        status_field(&net.weft_ok(6, &["status"]), "Encryption").as_deref(),
        Some("enabled")
    );
    assert_eq!(
        status_field(&net.weft_ok(7, &["status"]), "Encryption").as_deref(),
        Some("disabled")
    );

    // For 15 s: neither outsider ever shows up in the mesh, nor the mesh in them.
    let outsiders = [&wrong, &plain];
    let (start, mut polls) = (Instant::now(), 0);
    while start.elapsed() < Duration::from_secs(15) {
        for r in &routers {
            let peers = status_peers(&net, r.host);
            for o in outsiders {
                assert!(
                    !peers.contains(o.bare_name()),
                    "h{} lists refused h{} {}:\n{peers}",
                    r.host,
                    o.host,
                    o.name
                );
            }
            mesh_state(&net, r, &routers)
                .unwrap_or_else(|e| panic!("h{}: mesh disturbed by the outsiders: {e}", r.host));
        }
        for o in outsiders {
            let peers = status_peers(&net, o.host);
            for r in &routers {
                assert!(
                    !peers.contains(r.bare_name()),
                    "refused h{} lists {}:\n{peers}",
                    o.host,
                    r.name
                );
            }
            let conns = parse_connections(&net.weft_ok(o.host, &["status", "connections"]))
                .expect("layout");
            assert!(
                conns.iter().all(|c| c.state != "established"),
                "refused h{} has an established connection: {conns:?}",
                o.host
            );
        }
        polls += 1;
        thread::sleep(Duration::from_millis(500));
    }
    assert!(polls >= 5, "only {polls} polls in 15 s");

    for (o, word) in [(&wrong, "secret"), (&plain, "encryption")] {
        let log = o.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains(word))
            .collect();
        assert!(
            !lines.is_empty(),
            "h{}'s log never mentions `{word}`:\n{}\n-- h1's log:\n{}",
            o.host,
            tail(&log, 30),
            tail(&routers[0].log(), 30)
        );
        println!(
            "e2e: refused h{} logged: {}",
            o.host,
            lines.last().expect("a line")
        );
    }
}
