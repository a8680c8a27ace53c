//! End-to-end tests of the host commands: `weft ps` (also across a router restart),
//! `weft expose` / `weft hide` (a pod on another host reaches the host's overlay
//! address, then no longer), and `weft reset` (everything weft made is gone, with the
//! router running or killed, and a second reset has nothing to do).

mod common;

use common::traffic::ping;
use common::weft::{Auth, Router};
use common::{wait_until, Net};
use std::process::Output;
use std::time::Duration;

/// One line of `weft ps`: id, MAC, CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PsLine {
    id: String,
    mac: String,
    cidrs: Vec<String>,
}

fn ps(net: &Net, host: usize) -> Vec<PsLine> {
    net.weft_ok(host, &["ps"])
        .lines()
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_string);
            PsLine {
                id: words.next().unwrap_or_default(),
                mac: words
                    .next()
                    .unwrap_or_else(|| panic!("no MAC in ps line {l:?}")),
                cidrs: words.collect(),
            }
        })
        .collect()
}

/// MAC of `ifname` in namespace `ns`, from `ip -o link show`.
fn mac_in(net: &Net, ns: &str, ifname: &str) -> String {
    let out = net.exec(ns, "ip", &["-o", "link", "show", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {ifname} in {ns}: {text:?}"))
        .to_string()
}

fn has_link(net: &Net, ns: &str, ifname: &str) -> bool {
    net.exec(ns, "ip", &["link", "show", ifname])
        .status
        .success()
}

/// Names of the links in namespace `ns`.
fn links(net: &Net, ns: &str) -> Vec<String> {
    let out = net.exec(ns, "ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn expect_code(out: &Output, code: i32, stderr_has: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: stderr {err:?}");
    assert!(
        err.contains(stderr_has),
        "{what}: stderr {err:?} lacks {stderr_has:?}"
    );
}

#[test]
fn ps_lists_attached_pods_across_a_restart() {
    let mut net = Net::new("hcps", 1);
    let mut router = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    assert!(ps(&net, 1).is_empty(), "ps before any attach");
    let a = net.add_bare_pod(1, 1);
    let b = net.add_bare_pod(1, 2);
    net.attach(1, &["10.40.1.2/16"], &a);
    net.attach(1, &["10.40.1.3/16", "fd00:40::3/64"], &b);
    let expected = vec![
        PsLine {
            id: a.clone(),
            mac: mac_in(&net, &a, "ethwe0"),
            cidrs: vec!["10.40.1.2/16".into()],
        },
        PsLine {
            id: b.clone(),
            mac: mac_in(&net, &b, "ethwe0"),
            cidrs: vec!["10.40.1.3/16".into(), "fd00:40::3/64".into()],
        },
    ];
    assert_eq!(ps(&net, 1), expected, "ps after attaching two pods");
    // Anyone may list; only root may expose.
    let as_nobody = net.weft_as_nobody(1, &["ps"]);
    assert!(as_nobody.status.success(), "ps as nobody: {as_nobody:?}");
    assert_eq!(
        String::from_utf8_lossy(&as_nobody.stdout),
        net.weft_ok(1, &["ps"])
    );
    let out = net.weft_as_nobody(1, &["expose", "10.40.0.1/16"]);
    expect_code(&out, 1, "permission denied", "expose as nobody");

    // `weft stop` leaves the bridge and the attached pods in place.
    net.weft_ok(1, &["stop"]);
    assert!(
        router.wait_exit(Duration::from_secs(10)).is_some(),
        "router still running after weft stop"
    );
    let h1 = net.host(1).ns.clone();
    assert!(has_link(&net, &h1, "weft"), "stop removed the bridge");
    assert!(has_link(&net, &a, "ethwe0") && has_link(&net, &b, "ethwe0"));
    assert_eq!(net.weft(1, &["ps"]).status.code(), Some(3), "ps, no router");

    // A new router knows them again.
    let router = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    assert_eq!(ps(&net, 1), expected, "ps after a restart");

    // Detach removes the entry.
    net.weft_ok(1, &["detach", &b]);
    assert_eq!(ps(&net, 1), expected[..1], "ps after detaching {b}");

    // Also after kill -9: the list was on disk at each change.
    router.kill9();
    let _router = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    assert_eq!(ps(&net, 1), expected[..1], "ps after kill -9 and a restart");
}

#[test]
fn expose_gives_the_host_an_address_on_the_overlay() {
    let mut net = Net::new("hcexpose", 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let _r1 = Router::launch(&net, 1, &auth, &[]);
    let _r2 = Router::launch(&net, 2, &auth, &["198.18.0.1"]);
    net.wait_established(&[(1, 1), (2, 1)]);

    let usage: [(&[&str], &str); 2] = [
        (&["expose", "10.40.0.1/33"], "invalid CIDR"),
        (&["hide", "10.40.0.1"], "invalid CIDR"),
    ];
    for (args, msg) in usage {
        expect_code(&net.weft(1, args), 2, msg, &args.join(" "));
    }

    // Idempotent: the address is on the bridge once.
    for _ in 0..2 {
        let printed = net.weft_ok(1, &["expose", "10.40.0.1/16"]);
        assert_eq!(printed.trim(), "10.40.0.1");
    }
    let h1 = net.host(1).ns.clone();
    let addrs = net.exec(&h1, "ip", &["-o", "addr", "show", "dev", "weft"]);
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert_eq!(addrs.matches("10.40.0.1/16").count(), 1, "{addrs}");
    let host_line = PsLine {
        id: "weft:expose".into(),
        mac: mac_in(&net, &h1, "weft"),
        cidrs: vec!["10.40.0.1/16".into()],
    };
    assert_eq!(ps(&net, 1), vec![host_line]);

    // A pod on h2 reaches h1's address across the mesh.
    let pod = net.add_bare_pod(2, 1);
    net.attach(2, &["10.40.2.2/16"], &pod);
    let reached = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        ping(&net, &pod, "10.40.0.1")
    });
    assert!(
        reached.is_some(),
        "pod on h2 cannot ping exposed 10.40.0.1 on h1"
    );

    // Hidden, it is gone.
    assert_eq!(
        net.weft_ok(1, &["hide", "10.40.0.1/16"]).trim(),
        "10.40.0.1"
    );
    assert!(ps(&net, 1).is_empty(), "ps still shows the host after hide");
    assert!(
        !ping(&net, &pod, "10.40.0.1"),
        "10.40.0.1 answers after hide"
    );

    // Hiding the first address of a subnet keeps the others (the kernel drops
    // secondaries with their primary); `hide` without an address hides them all.
    net.weft_ok(1, &["expose", "10.40.0.7/16", "10.40.0.8/16"]);
    assert_eq!(
        net.weft_ok(1, &["hide", "10.40.0.7/16"]).trim(),
        "10.40.0.7"
    );
    assert_eq!(ps(&net, 1)[0].cidrs, ["10.40.0.8/16"]);
    net.weft_ok(1, &["hide"]);
    net.weft_ok(1, &["expose", "10.40.0.1/16", "10.40.0.9/16"]);
    assert_eq!(net.weft_ok(1, &["hide"]).trim(), "10.40.0.1 10.40.0.9");
    assert!(ps(&net, 1).is_empty());
    assert_eq!(net.weft_ok(1, &["hide"]).trim(), "", "second hide");

    // Without a CIDR, the host's address is allocated (id weft:expose), the same one
    // each time, and `hide` gives it back.
    let first = net.weft_ok(1, &["expose"]);
    assert!(first.trim().starts_with("10."), "expose printed {first:?}");
    assert_eq!(net.weft_ok(1, &["expose"]), first, "expose is idempotent");
    assert_eq!(ps(&net, 1)[0].id, "weft:expose");
    assert_eq!(net.weft_ok(1, &["hide"]), first);
    assert!(!net.weft_ok(1, &["status", "ipam"]).contains("(1 active)"));
}

/// Nothing weft made is left on host 1 or in `pod`.
fn assert_reset(net: &Net, pod: &str) {
    let h = net.host(1);
    let left: Vec<String> = links(net, &h.ns)
        .into_iter()
        .filter(|l| l == "weft" || l.starts_with("weft-") || l.starts_with("vethwe"))
        .collect();
    assert!(left.is_empty(), "links left after reset: {left:?}");
    let tables = net.exec(&h.ns, "nft", &["list", "tables"]);
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains("inet weft"),
        "fast path firewall left after reset: {tables}"
    );
    assert!(!has_link(net, pod, "ethwe0"), "ethwe0 left in {pod}");
    for f in [
        h.data_dir.join("identity.key"),
        h.data_dir.join("attachments.json"),
        h.data_dir.join("weft.redb"),
        h.run_dir.join("weft.sock"),
        h.run_dir.join("weft.pid"),
    ] {
        assert!(!f.exists(), "{} left after reset", f.display());
    }
}

#[test]
fn reset_removes_everything_weft_made() {
    let mut net = Net::new("hcreset", 1);
    let mut router = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let first = router.bare_name().to_string();
    let pod = net.add_bare_pod(1, 1);
    net.attach(1, &["10.40.1.2/16"], &pod);
    net.weft_ok(1, &["expose", "10.40.0.1/16"]);
    assert!(net.host(1).data_dir.join("identity.key").exists());

    // With the router running: it is stopped, then everything goes.
    net.weft_ok(1, &["reset"]);
    assert!(
        router.wait_exit(Duration::from_secs(10)).is_some(),
        "router still running after weft reset"
    );
    assert_reset(&net, &pod);
    net.weft_ok(1, &["reset"]);

    // The host comes back as a new peer. With the router killed (a stale socket
    // left), reset still cleans up.
    let router = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    assert_ne!(router.bare_name(), first, "same peer name after reset");
    net.attach(1, &["10.40.1.2/16"], &pod);
    router.kill9();
    assert!(net.host(1).run_dir.join("weft.sock").exists());
    let out = net.weft(1, &["expose", "10.40.0.1/16"]);
    expect_code(&out, 3, "not running", "expose with no router");
    net.weft_ok(1, &["reset"]);
    assert_reset(&net, &pod);
    let again = net.weft(1, &["reset"]);
    assert!(again.status.success(), "second reset: {again:?}");
}

/// `weft launch` with neither a secret nor `--no-encryption` refuses to start and says
/// what to do, as it does for a secret file others may read and a weak secret;
/// `--log-level` decides what the router logs, and a bad level is a usage
/// error.
#[test]
fn launch_needs_a_secret_and_log_level_sets_what_is_logged() {
    let net = Net::new("clilog", 1);
    let out = net.weft(1, &["launch", "--nickname", "h1"]);
    expect_code(
        &out,
        1,
        "no network secret given",
        "launch without a secret",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for hint in ["weft secret generate", "--password-file", "--no-encryption"] {
        assert!(
            err.contains(hint),
            "the refusal does not mention {hint}: {err}"
        );
    }
    expect_code(
        &net.weft(1, &["status"]),
        3,
        "",
        "no router runs after the refusal",
    );
    // A secret file others may read, and a short secret, are refused too.
    let open = net.dir().join("open-secret");
    std::fs::write(&open, "a-long-enough-secret-of-40-characters-xx\n").unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let open = open.display().to_string();
    let out = net.weft(1, &["launch", "--password-file", &open]);
    expect_code(&out, 1, "chmod 600", "launch with a world-readable secret");
    let weak = net.dir().join("weak-secret");
    std::fs::write(&weak, "hunter2\n").unwrap();
    std::fs::set_permissions(&weak, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let weak = weak.display().to_string();
    let out = net.weft(1, &["launch", "--password-file", &weak]);
    expect_code(&out, 1, "at least 20", "launch with a weak secret");
    let bad = net.weft(1, &["launch", "--no-encryption", "--log-level", "loud"]);
    expect_code(&bad, 2, "possible values", "a bad --log-level");

    let log_path = net.host(1).run_dir.join("weft.log");
    let log_since = |from: usize| {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        text.get(from..).unwrap_or_default().to_string()
    };
    let debug = Router::launch_with(&net, 1, &Auth::NoEncryption, &["--log-level", "debug"], &[]);
    // A status request with a foreign Host is refused, and logged at debug.
    let ns = net.host(1).ns.clone();
    let request = "exec 3<>/dev/tcp/127.0.0.1/6782; \
                   printf 'GET /status HTTP/1.0\\r\\nHost: evil.example\\r\\n\\r\\n' >&3; cat <&3";
    let answer = net.exec(&ns, "bash", &["-c", request]);
    assert!(
        String::from_utf8_lossy(&answer.stdout).contains("403"),
        "{answer:?}"
    );
    let logged = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        log_since(0).contains(" DEBUG ")
    });
    assert!(
        logged.is_some(),
        "no DEBUG line at --log-level debug:\n{}",
        log_since(0)
    );
    drop(debug);
    let start = std::fs::metadata(&log_path)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    // At warn, a status listener off loopback is warned about, and nothing is logged
    // at info (not even "router started").
    let options = ["--log-level", "warn", "--status-addr", "198.18.0.1:6782"];
    let warn = Router::launch_with(&net, 1, &Auth::NoEncryption, &options, &[]);
    let warned = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        log_since(start).contains("not on a loopback address")
    });
    let text = log_since(start);
    assert!(warned.is_some(), "no warning at --log-level warn:\n{text}");
    assert!(
        !text.contains(" INFO ") && !text.contains("router started"),
        "INFO lines at --log-level warn:\n{text}"
    );
    drop(warn);
}

/// A pod that sends IPv6 router advertisements onto the bridge does not configure the
/// host (CVE-2020-11091, weave's): the bridge and the host ends of the pods' veths have
/// `accept_ra = 0`. The RA is real: another pod on the same bridge takes its prefix and
/// route.
#[test]
fn router_advertisements_from_a_pod_do_not_configure_the_host() {
    let mut net = Net::new("clira", 1);
    let _r1 = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let rogue = net.add_bare_pod(1, 1);
    let victim = net.add_bare_pod(1, 2);
    net.attach(1, &["10.40.0.5/16"], &rogue);
    net.attach(1, &["10.40.0.6/16"], &victim);
    let h1 = net.host(1).ns.clone();
    let sysctl = |ns: &str, key: &str| {
        let out = net.exec(ns, "sysctl", &["-n", key]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(sysctl(&h1, "net.ipv6.conf.weft.accept_ra"), "0");
    assert_eq!(sysctl(&h1, "net.ipv6.conf.weft-tap.accept_ra"), "0");
    let ra = r#"
import socket, struct, time
ifindex = socket.if_nametoindex("ethwe0")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
prefix = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
prefix += socket.inet_pton(socket.AF_INET6, "fd00:99::")
for _ in range(20):
    try:
        s.sendto(ra + prefix, ("ff02::1", 0, 0, ifindex))
    except OSError:
        pass  # no link-local address yet (DAD)
    time.sleep(0.3)
"#;
    let sent = net.exec(&rogue, "python3", &["-c", ra]);
    assert!(sent.status.success(), "{sent:?}");
    let addrs = |ns: &str| {
        let out = net.exec(ns, "ip", &["-6", "addr", "show"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let routes = |ns: &str| {
        let out = net.exec(ns, "ip", &["-6", "route", "show"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        addrs(&victim).contains("fd00:99:"),
        "the RA did not reach the other pod, so the test proves nothing:\n{}",
        addrs(&victim)
    );
    assert!(!addrs(&h1).contains("fd00:99:"), "{}", addrs(&h1));
    let host_routes = routes(&h1);
    assert!(
        !host_routes.contains("default") && !host_routes.contains("fd00:99:"),
        "the host took a pod's router advertisement:\n{host_routes}"
    );
}

/// The router refuses a run dir other users may write to, and a pid file or log that
/// is a symbolic link planted elsewhere (the link's target is left alone); its state
/// file is readable by root only, whatever the umask.
#[test]
fn unsafe_dirs_and_planted_links_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let net = Net::new("clidirs", 1);
    let run_dir = net.host(1).run_dir.clone();
    let chmod = |mode: u32| {
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(0o777);
    let out = net.weft(1, &["launch", "--no-encryption", "--wait", "0"]);
    expect_code(&out, 1, "other users may write", "a world-writable run dir");
    chmod(0o755);

    let victim = net.dir().join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    for name in ["weft.pid", "weft.log"] {
        let link = run_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let out = net.weft(1, &["launch", "--no-encryption", "--wait", "0"]);
        expect_code(
            &out,
            1,
            "symbolic link",
            &format!("{name} planted as a link"),
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
        std::fs::remove_file(&link).unwrap();
        let _ = std::fs::remove_file(run_dir.join("weft.sock"));
    }

    let _r1 = Router::launch(&net, 1, &Auth::NoEncryption, &[]);
    let redb = net.host(1).data_dir.join("weft.redb");
    let mode = std::fs::metadata(&redb).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", redb.display());
}
