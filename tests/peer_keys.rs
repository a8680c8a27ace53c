//! End-to-end test of `--peer-keys` (catalogue T13): with an allow-list, a host that
//! holds the network secret but whose key is not listed never joins, never appears in
//! `status peers`, also when it dials both listed hosts; once its key is added and the
//! list reloaded (`weft peers reload` on one host, SIGHUP on the other), it joins, and
//! no link between the listed hosts drops.

mod common;

use common::weft::{parse_peers, Auth, Router};
use common::{run_with_timeout, wait_until, Net};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn report(net: &Net, h: usize) -> Value {
    serde_json::from_str(&net.weft_ok(h, &["report"])).expect("report is JSON")
}

/// The `name(nick)` lines of `status peers` on `h`.
fn peers(net: &Net, h: usize) -> Vec<String> {
    parse_peers(&net.weft_ok(h, &["status", "peers"]))
        .expect("status peers parses")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// How often `router` logged a link established to `name`.
fn links_to(router: &Router, name: &str) -> usize {
    router
        .log()
        .lines()
        .filter(|l| l.contains("connection established with") && l.contains(name))
        .count()
}

#[test]
fn only_listed_keys_join_and_a_reload_admits_a_new_one_without_dropping_links() {
    let net = Net::new("peerkeys", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    // Each host's line, as `weft identity` prints it (the key is made on first use).
    let lines: Vec<String> = (1..=3)
        .map(|h| net.weft_ok(h, &["identity"]).trim().to_string())
        .collect();
    for line in &lines {
        let key = line.split_whitespace().next().unwrap();
        assert_eq!(key.len(), 64, "{line}");
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    }
    assert_eq!(net.weft_ok(1, &["identity"]).trim(), lines[0], "stable");
    let list = net.dir().join("peers");
    std::fs::write(&list, format!("# h1 and h2\n{}\n{}\n", lines[0], lines[1])).unwrap();
    let list_arg = list.display().to_string();
    let options = ["--peer-keys", list_arg.as_str()];
    let h1 = Router::launch_with(&net, 1, &auth, &options, &[]);
    let h2 = Router::launch_with(&net, 2, &auth, &options, &["198.18.0.1"]);
    net.wait_established(&[(1, 1), (2, 1)]);
    // h3 has the secret, no list, and dials both.
    let h3 = Router::launch_with(&net, 3, &auth, &[], &["198.18.0.1", "198.18.0.2"]);
    let refused = wait_until(Duration::from_secs(20), Duration::from_millis(300), || {
        (1..=2).all(|h| {
            report(&net, h)["handshakes"]["refused"]
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|r| r["reason"] == "not_listed" && r["count"].as_u64() > Some(0))
                })
        })
    });
    assert!(
        refused.is_some(),
        "h1 and h2 refuse h3 as not listed: {}",
        report(&net, 1)
    );
    std::thread::sleep(Duration::from_secs(3));
    for h in 1..=2 {
        let seen = peers(&net, h);
        assert_eq!(seen.len(), 2, "h{h} sees only h1 and h2: {seen:?}");
        assert!(!seen.iter().any(|p| p.contains("(h3)")), "h{h}: {seen:?}");
        assert_eq!(report(&net, h)["router"]["peer_keys"]["keys"], 2);
    }
    assert!(
        !peers(&net, 3)
            .iter()
            .any(|p| p.contains("(h1)") || p.contains("(h2)")),
        "h3 learnt nothing of the listed hosts"
    );

    // h3's key is added; h1 reloads by command, h2 by SIGHUP.
    let h1_name = report(&net, 1)["router"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let h2_name = report(&net, 2)["router"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let before = (links_to(&h1, &h2_name), links_to(&h2, &h1_name));
    std::fs::write(
        &list,
        format!("{}\n{}\n{} newly added\n", lines[0], lines[1], lines[2]),
    )
    .unwrap();
    let out = net.weft_ok(1, &["peers", "reload"]);
    assert_eq!(out.trim(), "3 peer keys in force");
    let hup = run_with_timeout(
        Command::new("kill").args(["-HUP", &h2.pid().to_string()]),
        Duration::from_secs(5),
    );
    assert!(hup.status.success());
    let joined = wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        (1..=2).all(|h| peers(&net, h).iter().any(|p| p.contains("(h3)")))
    });
    let took = joined.unwrap_or_else(|| panic!("h3 did not join after the reload:\n{}", h3.log()));
    println!(
        "e2e: h3 joined {:.1} s after its key was listed",
        took.as_secs_f64()
    );
    net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    assert_eq!(report(&net, 2)["router"]["peer_keys"]["reloads"], 1);
    assert_eq!(
        (links_to(&h1, &h2_name), links_to(&h2, &h1_name)),
        before,
        "the h1-h2 link was redone by the reload"
    );

    // A list that cannot be read keeps the one in force.
    std::fs::write(&list, "not a key\n").unwrap();
    let out = net.weft(1, &["peers", "reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("stays"), "{err}");
    assert_eq!(report(&net, 1)["router"]["peer_keys"]["keys"], 3);
    drop((h1, h2, h3));
}
