//! End-to-end tests of the CNI plugin: the real `weft` binary, installed by
//! `weft setup-cni` into a temp dir and invoked as `weft-net` exactly as libcni does
//! (CNI_* environment, config on stdin, result on stdout, chaining with prevResult),
//! inside a host namespace that the test makes, against pod namespaces it makes.
//!
//! The ADD/CHECK/DEL paths run through IPAM delegation to a fake IPAM plugin (a shell
//! script the test writes into CNI_PATH), and through the real router's `/ipam` API
//! (module `router_ipam`), besides a fake `/ipam` server for the error paths.
//! See docs/cni-conformance.md for the spec rule each test covers.

mod common;

use common::cni::{
    assert_root_untouched, delegated_conf, ip_out, ok, router_conf, Fixture, Out, WEFT,
};
use common::fake_ipam;
use common::{run_ok, wait_until};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn delegated_add_check_del() {
    let mut f = Fixture::new("cnidel");
    let (ns, path) = f.pod();
    let mut conf = delegated_conf("1.0.0");
    conf["runtimeConfig"] = json!({"mac": "c2:11:22:33:44:55"});
    let add = f.net_call("ADD", "ctr1", &path, "eth0", &conf);
    ok(&add);
    let r = &add.stdout;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "weft");
    let host_veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(host_veth.starts_with("vethwn"), "{r}");
    assert!(r["interfaces"][1].get("sandbox").is_none());
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    assert_eq!(r["interfaces"][2]["sandbox"], path.as_str());
    assert_eq!(r["interfaces"][2]["mac"], "c2:11:22:33:44:55");
    assert_eq!(r["ips"][0]["address"], "10.40.5.7/16");
    assert_eq!(r["ips"][0]["gateway"], "10.40.0.1");
    assert_eq!(r["ips"][0]["interface"], 2);
    assert!(r["ips"][0].get("version").is_none());
    let routes: Vec<&str> = r["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dst"].as_str().unwrap())
        .collect();
    assert!(
        routes.contains(&"0.0.0.0/0") && routes.contains(&"10.32.0.0/12"),
        "{routes:?}"
    );

    // The kernel agrees: address, MTU, MAC, routes, bridge port with hairpin.
    let link = ip_out(&["-n", &ns, "addr", "show", "eth0"]);
    assert!(link.contains("inet 10.40.5.7/16"), "{link}");
    assert!(
        link.contains("mtu 1400") && link.contains("c2:11:22:33:44:55"),
        "{link}"
    );
    let route = ip_out(&["-n", &ns, "route", "show"]);
    assert!(route.contains("default via 10.40.0.1 dev eth0"), "{route}");
    assert!(route.contains("10.32.0.0/12 dev eth0"), "{route}");
    let port = ip_out(&["-n", &f.h1(), "-d", "link", "show", &host_veth]);
    assert!(
        port.contains("master weft") && port.contains("hairpin on"),
        "{port}"
    );
    assert!(
        f.net.ping(&ns, "10.40.0.1".parse().unwrap()),
        "pod cannot reach the bridge"
    );

    // Chained: a second interface with prevResult = the first result.
    let mut chained = delegated_conf("1.0.0");
    chained["prevResult"] = r.clone();
    let add2 = f.net_call("ADD", "ctr1", &path, "net1", &chained);
    ok(&add2);
    let r2 = &add2.stdout;
    assert_eq!(r2["interfaces"].as_array().unwrap().len(), 6);
    assert_eq!(r2["ips"][0]["interface"], 2);
    assert_eq!(r2["ips"][1]["interface"], 5);
    assert_eq!(r2["interfaces"][5]["name"], "net1");

    // CHECK with the final result.
    let mut check = delegated_conf("1.0.0");
    check["prevResult"] = r2.clone();
    let c = f.net_call("CHECK", "ctr1", &path, "eth0", &check);
    ok(&c);
    assert!(c.raw.trim().is_empty(), "CHECK prints nothing: {}", c.raw);
    // CHECK reports a host veth that left the bridge.
    let h1 = f.h1();
    run_ok(Command::new("ip").args(["-n", &h1, "link", "set", &host_veth, "nomaster"]));
    let c = f.net_call("CHECK", "ctr1", &path, "eth0", &check);
    assert_ne!(c.code, 0);
    assert!(c.raw.contains(&host_veth), "{}", c.raw);
    run_ok(Command::new("ip").args(["-n", &h1, "link", "set", &host_veth, "master", "weft"]));
    ok(&f.net_call("CHECK", "ctr1", &path, "eth0", &check));
    // CHECK reports a missing route, by its destination.
    run_ok(Command::new("ip").args(["-n", &ns, "route", "del", "10.32.0.0/12"]));
    let c = f.net_call("CHECK", "ctr1", &path, "eth0", &check);
    assert_ne!(c.code, 0);
    assert!(c.raw.contains("route 10.32.0.0/12"), "{}", c.raw);
    run_ok(Command::new("ip").args(["-n", &ns, "route", "add", "10.32.0.0/12", "dev", "eth0"]));
    ok(&f.net_call("CHECK", "ctr1", &path, "eth0", &check));
    // CHECK reports a missing address.
    run_ok(Command::new("ip").args(["-n", &ns, "addr", "del", "10.40.5.7/16", "dev", "eth0"]));
    let c = f.net_call("CHECK", "ctr1", &path, "eth0", &check);
    assert_ne!(c.code, 0);
    assert!(
        c.stdout["msg"].as_str().unwrap().contains("10.40.5.7/16"),
        "{}",
        c.raw
    );

    // DEL twice (reverse order of the chain), then the veths are gone.
    for ifname in ["net1", "eth0", "eth0"] {
        ok(&f.net_call("DEL", "ctr1", &path, ifname, &check));
    }
    assert!(f.host_veths().is_empty(), "{:?}", f.host_veths());
    assert!(!ip_out(&["-n", &ns, "link", "show"]).contains("eth0"));
    assert_root_untouched();
    let log = f.ipam_log();
    assert_eq!(log.matches("ADD ctr1").count(), 2, "{log}");
    assert_eq!(log.matches("CHECK ctr1 eth0").count(), 3, "{log}");
    assert_eq!(log.matches("DEL ctr1 eth0").count(), 2, "{log}");
}

/// An IPv6 address from IPAM gets its default route too, in the result and the kernel.
#[test]
fn ipv6_addresses_get_a_default_route_too() {
    let mut f = Fixture::new("cniv6");
    let (ns, path) = f.pod();
    let conf = delegated_conf("1.0.0");
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "v6"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("FAKE_IPAM_ADDR6", "fd00:40::7/64"),
    ];
    let add = f.call("weft-net", &env, conf.to_string().as_bytes());
    ok(&add);
    let routes: Vec<(String, String)> = add.stdout["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let gw = r["gw"].as_str().unwrap_or("").to_string();
            (r["dst"].as_str().unwrap().to_string(), gw)
        })
        .collect();
    assert!(
        routes.contains(&("0.0.0.0/0".into(), "10.40.0.1".into()))
            && routes.contains(&("::/0".into(), "fd00:40::1".into())),
        "{routes:?}"
    );
    let v6 = ip_out(&["-n", &ns, "-6", "route", "show"]);
    assert!(v6.contains("default via fd00:40::1 dev eth0"), "{v6}");
    let mut del = env;
    del[0].1 = "DEL";
    let out = f.call("weft-net", &del, conf.to_string().as_bytes());
    ok(&out);
    assert!(f.host_veths().is_empty(), "{:?}", f.host_veths());
}

#[test]
fn results_follow_the_config_version() {
    let mut f = Fixture::new("cniver");
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let (_, path) = f.pod();
        let id = format!("v{i}");
        let add = f.net_call("ADD", &id, &path, "eth0", &delegated_conf(v));
        ok(&add);
        assert_eq!(add.stdout["cniVersion"], *v);
        let has_version = add.stdout["ips"][0].get("version").is_some();
        assert_eq!(has_version, v.starts_with("0."), "{v}: {}", add.raw);
        if *v != "0.3.0" && *v != "0.3.1" {
            let mut check = delegated_conf(v);
            check["prevResult"] = add.stdout.clone();
            ok(&f.net_call("CHECK", &id, &path, "eth0", &check));
        }
        ok(&f.net_call("DEL", &id, &path, "eth0", &delegated_conf(v)));
    }
    let version = f.call(
        "weft-net",
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ],
        br#"{"cniVersion":"1.1.0"}"#,
    );
    ok(&version);
    assert_eq!(
        version.stdout["supportedVersions"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn failed_add_leaves_nothing_behind() {
    let mut f = Fixture::new("cnirb");
    let (ns, path) = f.pod();
    // A multicast MAC is refused by the kernel after IPAM ADD and veth creation.
    let mut conf = delegated_conf("1.0.0");
    conf["runtimeConfig"] = json!({"mac": "01:00:5e:00:00:01"});
    let add = f.net_call("ADD", "rb1", &path, "eth0", &conf);
    assert_ne!(add.code, 0);
    assert!(add.stdout["code"].as_u64().is_some(), "{}", add.raw);
    assert!(f.host_veths().is_empty(), "{:?}", f.host_veths());
    assert!(!ip_out(&["-n", &ns, "link", "show"]).contains("eth0"));
    let log = f.ipam_log();
    assert!(
        log.contains("ADD rb1 eth0") && log.contains("DEL rb1 eth0"),
        "{log}"
    );

    // An interface that already exists: refused before IPAM, left untouched.
    run_ok(Command::new("ip").args([
        "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]));
    let add = f.net_call("ADD", "rb2", &path, "eth0", &delegated_conf("1.0.0"));
    assert_ne!(add.code, 0);
    assert!(ip_out(&["-n", &ns, "link", "show", "eth0"]).contains("eth0"));
    // A namespace that does not exist, and the plugin's own namespace (code 8).
    let add = f.net_call(
        "ADD",
        "rb3",
        "/run/netns/does-not-exist",
        "eth0",
        &delegated_conf("1.0.0"),
    );
    assert_eq!(add.stdout["code"], 4, "{}", add.raw);
    let own = format!("/run/netns/{}", f.h1());
    let add = f.net_call("ADD", "rb4", &own, "eth0", &delegated_conf("1.0.0"));
    assert_eq!(add.stdout["code"], 8, "{}", add.raw);
    assert!(
        !f.ipam_log().contains("rb2")
            && !f.ipam_log().contains("rb3")
            && !f.ipam_log().contains("rb4")
    );
    assert!(f.host_veths().is_empty(), "{:?}", f.host_veths());
}

#[test]
fn del_succeeds_when_there_is_nothing_to_do() {
    let mut f = Fixture::new("cnidelx");
    let (ns, path) = f.pod();
    let conf = delegated_conf("1.0.0");
    // Never added; empty CNI_NETNS; a namespace that is gone.
    ok(&f.net_call("DEL", "never", &path, "eth0", &conf));
    ok(&f.net_call("DEL", "never", "", "eth0", &conf));
    ok(&f.net_call("DEL", "never", "/run/netns/gone-away", "eth0", &conf));
    // Added, then the namespace is deleted before DEL.
    ok(&f.net_call("ADD", "gone", &path, "eth0", &conf));
    run_ok(Command::new("ip").args(["netns", "del", &ns]));
    ok(&f.net_call("DEL", "gone", &path, "eth0", &conf));
    assert!(f.host_veths().is_empty(), "{:?}", f.host_veths());
    assert!(f.ipam_log().contains("DEL gone eth0"));
}

#[test]
fn malformed_input_gets_the_right_code_and_creates_nothing() {
    let mut f = Fixture::new("cnibad");
    let (_, path) = f.pod();
    let conf = delegated_conf("1.0.0").to_string();
    let env = |cmd: &'static str, ifname: &'static str, netns: String| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "bad1"),
            ("CNI_IFNAME", ifname),
            ("CNI_NETNS", Box::leak(netns.into_boxed_str()) as &str),
        ]
    };
    let big = vec![b' '; (1 << 20) + 1];
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u64);
    let cases: Vec<Case> = vec![
        (env("ADD", "eth0", path.clone()), b"{not json".to_vec(), 6),
        (env("ADD", "eth0", path.clone()), big, 6),
        (
            env("ADD", "sixteen-chars-16", path.clone()),
            conf.clone().into_bytes(),
            4,
        ),
        (
            env("ADD", "a/b", path.clone()),
            conf.clone().into_bytes(),
            4,
        ),
        (
            env("ADD", "a b", path.clone()),
            conf.clone().into_bytes(),
            4,
        ),
        (
            env("ADD", "eth0", "relative/ns".into()),
            conf.clone().into_bytes(),
            4,
        ),
        (
            env("ADD", "eth0", "/run/netns/../x".into()),
            conf.clone().into_bytes(),
            4,
        ),
        (
            env("FOO", "eth0", path.clone()),
            conf.clone().into_bytes(),
            4,
        ),
        (
            env("ADD", "eth0", path.clone()),
            delegated_conf("9.9.9").to_string().into_bytes(),
            1,
        ),
        (
            env("CHECK", "eth0", path.clone()),
            delegated_conf("0.3.1").to_string().into_bytes(),
            1,
        ),
        (
            env("GC", "eth0", path.clone()),
            delegated_conf("1.0.0").to_string().into_bytes(),
            1,
        ),
        (
            env("STATUS", "eth0", path.clone()),
            delegated_conf("0.4.0").to_string().into_bytes(),
            1,
        ),
        (
            env("ADD", "eth0", path.clone()),
            br#"{"cniVersion":"1.0.0","name":"bad/name","type":"weft-net"}"#.to_vec(),
            7,
        ),
    ];
    for (env, stdin, code) in cases {
        let out = f.call("weft-net", &env, &stdin);
        assert_ne!(out.code, 0, "{env:?}");
        assert_eq!(
            out.stdout["code"].as_u64(),
            Some(code),
            "{env:?}: {}",
            out.raw
        );
        assert!(out.stdout["msg"].is_string());
    }
    let mut env = env("ADD", "eth0", path.clone());
    env[1] = ("CNI_CONTAINERID", "-bad");
    assert_eq!(f.call("weft-net", &env, conf.as_bytes()).stdout["code"], 4);
    assert!(f.ipam_log().is_empty(), "{}", f.ipam_log());
    assert!(f.host_veths().is_empty());
}

#[test]
fn router_down_add_fails_and_del_does_not_hang() {
    let mut f = Fixture::new("cnidown");
    let (ns, path) = f.pod();
    let conf = json!({"cniVersion": "1.1.0", "name": "weft", "type": "weft-net"});
    let add = f.net_call("ADD", "down1", &path, "eth0", &conf);
    assert_eq!(add.stdout["code"], 11, "{}", add.raw);
    assert!(f.host_veths().is_empty());
    assert!(!ip_out(&["-n", &ns, "link", "show"]).contains("eth0"));
    let start = Instant::now();
    let del = f.net_call("DEL", "down1", &path, "eth0", &conf);
    ok(&del);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(del.stderr.contains("warning"), "{}", del.stderr);
    let status = f.call(
        "weft-net",
        &[("CNI_COMMAND", "STATUS")],
        conf.to_string().as_bytes(),
    );
    assert_eq!(status.stdout["code"], 50, "{}", status.raw);
    let status = f.call(
        "weft-ipam",
        &[("CNI_COMMAND", "STATUS")],
        conf.to_string().as_bytes(),
    );
    assert_eq!(status.stdout["code"], 50, "{}", status.raw);
}

#[test]
fn setup_cni_is_idempotent() {
    let f = Fixture::new("cniset");
    let conf = f.net.dir().join("net.d");
    let again = run_ok(Command::new(WEFT).args([
        "setup-cni",
        "--bin-dir",
        f.bin.to_str().unwrap(),
        "--conf-dir",
        conf.to_str().unwrap(),
    ]));
    assert!(
        again.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(conf.join("10-weft.conflist")).unwrap())
            .unwrap();
    assert_eq!(list["plugins"][0]["type"], "weft-net");
    assert_eq!(list["plugins"][1]["type"], "portmap");
    assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
    for name in ["weft-net", "weft-ipam"] {
        assert_eq!(
            std::fs::read_link(f.bin.join(name)).unwrap(),
            PathBuf::from(WEFT)
        );
    }
}

// --- Router IPAM (POST /ipam/* and GET /ipam on the router's socket) ---

/// ADD two containers, CHECK, GC with both attachment keys, DEL of one never touching
/// the other, ADD -> DEL -> ADD. `held` lists the reservations when the test can see them.
fn router_ipam_flow(f: &mut Fixture, held: &dyn Fn() -> Option<Vec<(String, String)>>) {
    let c = router_conf("1.1.0");
    ok(&f.call(
        "weft-net",
        &[("CNI_COMMAND", "STATUS")],
        c.to_string().as_bytes(),
    ));
    let (ns_a, a) = f.pod();
    let (_, b) = f.pod();
    let add_a = f.net_call("ADD", "ctra", &a, "eth0", &c);
    ok(&add_a);
    let add_b = f.net_call("ADD", "ctrb", &b, "eth0", &c);
    ok(&add_b);
    let addr_a = add_a.stdout["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let addr_b = add_b.stdout["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(addr_a, addr_b);
    assert!(ip_out(&["-n", &ns_a, "addr", "show", "eth0"]).contains(&addr_a));
    if held().is_some() {
        // No ipam.gateway: the bridge's address in the subnet (the fixture's 10.40.0.1)
        // is the gateway. A real router's bridge has an address only when exposed.
        assert_eq!(add_a.stdout["ips"][0]["gateway"], "10.40.0.1");
    }
    let mut check = c.clone();
    check["prevResult"] = add_a.stdout.clone();
    ok(&f.net_call("CHECK", "ctra", &a, "eth0", &check));
    let mut check_b = c.clone();
    check_b["prevResult"] = add_b.stdout.clone();
    // GC keeps A (new key) and B (old key), then releases B when only A is valid.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctra", "ifname": "eth0"}]);
    gc["cni.dev/attachments"] = json!([{"containerID": "ctrb", "ifname": "eth0"}]);
    ok(&f.call(
        "weft-net",
        &[("CNI_COMMAND", "GC")],
        gc.to_string().as_bytes(),
    ));
    ok(&f.net_call("CHECK", "ctrb", &b, "eth0", &check_b));
    gc.as_object_mut().unwrap().remove("cni.dev/attachments");
    ok(&f.call(
        "weft-net",
        &[("CNI_COMMAND", "GC")],
        gc.to_string().as_bytes(),
    ));
    let lost = f.net_call("CHECK", "ctrb", &b, "eth0", &check_b);
    assert_ne!(lost.code, 0, "CHECK must report the lost reservation");
    ok(&f.net_call("CHECK", "ctra", &a, "eth0", &check));
    if let Some(h) = held() {
        assert_eq!(h, vec![("ctra:eth0".to_string(), addr_a.clone())]);
    }
    // DEL of B never releases A's address; DEL twice; ADD -> DEL -> ADD.
    ok(&f.net_call("DEL", "ctrb", &b, "eth0", &check_b));
    ok(&f.net_call("CHECK", "ctra", &a, "eth0", &check));
    ok(&f.net_call("DEL", "ctra", &a, "eth0", &check));
    ok(&f.net_call("DEL", "ctra", &a, "eth0", &check));
    if let Some(h) = held() {
        assert!(h.is_empty(), "{h:?}");
    }
    ok(&f.net_call("ADD", "ctra", &a, "eth0", &c));
    ok(&f.net_call("DEL", "ctra", &a, "eth0", &c));
    assert!(f.host_veths().is_empty(), "{:?}", f.host_veths());
}

#[test]
fn router_ipam_add_check_gc_del_against_the_api_contract() {
    let mut f = Fixture::new("cnifake");
    let router = fake_ipam::FakeRouter::start(&f.net.host(1).run_dir);
    router_ipam_flow(&mut f, &|| Some(router.held()));
}

#[test]
fn router_ipam_claims_conflicts_and_not_ready() {
    let mut f = Fixture::new("cniclaim");
    let router = fake_ipam::FakeRouter::start(&f.net.host(1).run_dir);
    let (_, a) = f.pod();
    let mut c = router_conf("0.4.0");
    c["runtimeConfig"] = json!({"ips": ["10.40.9.9/16"]});
    let add = f.net_call("ADD", "claim", &a, "eth0", &c);
    ok(&add);
    assert_eq!(add.stdout["ips"][0]["address"], "10.40.9.9/16");
    assert_eq!(add.stdout["ips"][0]["version"], "4");
    // The same address for another container: refused, nothing left behind.
    let (_, b) = f.pod();
    let again = f.net_call("ADD", "other", &b, "eth0", &c);
    assert_ne!(again.code, 0, "{}", again.raw);
    assert_eq!(again.stdout["code"], 100, "address in use: {}", again.raw);
    assert_eq!(f.host_veths().len(), 1, "{:?}", f.host_veths());
    assert_eq!(
        router.held(),
        vec![("claim:eth0".into(), "10.40.9.9/16".into())]
    );
    // weft-ipam alone answers with an abbreviated result.
    let ipam = f.call(
        "weft-ipam",
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ipamonly"),
            ("CNI_NETNS", &b),
            ("CNI_IFNAME", "eth0"),
        ],
        json!({"cniVersion": "1.0.0", "name": "x", "type": "bridge",
               "ipam": {"type": "weft-ipam", "subnet": "10.40.0.0/16", "gateway": "10.40.0.1"}})
        .to_string()
        .as_bytes(),
    );
    ok(&ipam);
    assert!(ipam.stdout.get("interfaces").is_none());
    assert!(ipam.stdout["ips"][0].get("interface").is_none());
    assert_eq!(ipam.stdout["routes"][0]["dst"], "0.0.0.0/0");
    // Not ready: STATUS is 50, ADD is 11 (try again later) and leaves nothing.
    router.state.lock().unwrap().ready = false;
    let s = f.call(
        "weft-net",
        &[("CNI_COMMAND", "STATUS")],
        router_conf("1.1.0").to_string().as_bytes(),
    );
    assert_eq!(s.stdout["code"], 50, "{}", s.raw);
    let (_, d) = f.pod();
    let add = f.net_call("ADD", "late", &d, "eth0", &router_conf("1.0.0"));
    assert_eq!(add.stdout["code"], 11, "{}", add.raw);
    assert_eq!(f.host_veths().len(), 1);
}

/// ADDs 20 pods at once (ids `{prefix}{i}`): checks every ADD succeeded and the 20
/// addresses are distinct; DELs them all; returns the addresses and one pod's path.
fn twenty_concurrent_adds(f: &mut Fixture, c: &Value, prefix: &str) -> (Vec<String>, String) {
    let pods: Vec<String> = (0..20).map(|_| f.pod().1).collect();
    let f = &*f;
    let results: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| s.spawn(move || f.net_call("ADD", &format!("{prefix}{i}"), p, "eth0", c)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<String> = results
        .iter()
        .map(|r| {
            ok(r);
            let a = r.stdout["ips"][0]["address"].as_str().expect("an address");
            a.split('/').next().unwrap_or(a).to_string()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "distinct addresses");
    assert_eq!(f.host_veths().len(), 20);
    for (i, p) in pods.iter().enumerate() {
        ok(&f.net_call("DEL", &format!("{prefix}{i}"), p, "eth0", c));
    }
    assert!(f.host_veths().is_empty());
    (addrs, pods[0].clone())
}

/// ADD -> DEL of one container 20 times in a row; prints the ADD and DEL latency.
fn add_del_latency(f: &Fixture, c: &Value, pod: &str, what: &str) {
    let (mut add_t, mut del_t) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let t = Instant::now();
        ok(&f.net_call("ADD", "again", pod, "eth0", c));
        add_t.push(t.elapsed());
        let t = Instant::now();
        ok(&f.net_call("DEL", "again", pod, "eth0", c));
        del_t.push(t.elapsed());
    }
    assert!(f.host_veths().is_empty());
    for (name, mut t) in [("ADD", add_t), ("DEL", del_t)] {
        t.sort();
        println!(
            "e2e: weft-net {name} latency ({what}) over 20 runs: median {:.1} ms, max {:.1} ms",
            t[t.len() / 2].as_secs_f64() * 1e3,
            t[t.len() - 1].as_secs_f64() * 1e3
        );
    }
}

#[test]
fn router_ipam_concurrent_adds_and_latency() {
    let mut f = Fixture::new("cnilat");
    let router = fake_ipam::FakeRouter::start(&f.net.host(1).run_dir);
    let c = router_conf("1.0.0");
    let (_, pod) = twenty_concurrent_adds(&mut f, &c, "conc");
    assert!(router.held().is_empty());
    add_del_latency(&f, &c, &pod, "fake IPAM server");
}

mod router_ipam {
    use super::*;
    use common::weft::{Auth, Router};

    /// Waits until host `h`'s router says `Status: ready` in `weft status`.
    fn wait_ready(f: &Fixture, h: usize) {
        let ready = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let out = f.net.weft(h, &["status"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "Status: ready")
        });
        assert!(ready.is_some(), "h{h}'s IPAM never became ready");
    }

    /// A router alone on h1, allocating from 10.40.128.0/17 (which leaves out 10.40.0.1,
    /// the address the fixture puts on the bridge by hand), once its IPAM is ready: a
    /// lone router seeds its ring a moment after it starts, and STATUS says so until then.
    fn lone_router(f: &Fixture) -> Router {
        let router = Router::launch_with(
            &f.net,
            1,
            &Auth::NoEncryption,
            &["--ipalloc-range", "10.40.128.0/17"],
            &[],
        );
        wait_ready(f, 1);
        router
    }

    /// The address (without its length) of the first IP in an ADD result.
    fn first_ip(out: &Out) -> String {
        let a = out.stdout["ips"][0]["address"]
            .as_str()
            .expect("an address");
        a.split('/').next().unwrap_or(a).to_string()
    }

    /// Against the real router: 20 concurrent ADDs give 20 distinct addresses from its
    /// range; ADD -> DEL -> ADD of one container works; ADD and DEL latency on one host.
    #[test]
    fn twenty_concurrent_adds_and_add_del_add_with_the_real_router() {
        let mut f = Fixture::new("cnirconc");
        let _router = lone_router(&f);
        let c = router_conf("1.0.0");
        let (addrs, pod) = twenty_concurrent_adds(&mut f, &c, "rconc");
        let in_range = |a: &String| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.octets()[..2] == [10, 40] && ip.octets()[2] >= 128)
        };
        assert!(addrs.iter().all(in_range), "{addrs:?}");
        add_del_latency(&f, &c, &pod, "real router");
    }

    /// A conflist whose `ipam.subnet` is a /24 inside the router's /17 range: ADD gives
    /// an address of that /24 with its prefix, and CHECK with that ADD's own result
    /// passes (the router holds the address with the range's prefix length; CHECK
    /// compares addresses). A reservation lost meanwhile still fails CHECK.
    #[test]
    fn check_passes_with_a_subnet_narrower_than_the_range() {
        let mut f = Fixture::new("cnirsub");
        let _router = lone_router(&f);
        let conf = json!({"cniVersion": "1.1.0", "name": "weft", "type": "weft-net",
                          "ipam": {"subnet": "10.40.200.0/24"}});
        let (_, pod) = f.pod();
        let add = f.net_call("ADD", "sub24", &pod, "eth0", &conf);
        ok(&add);
        let addr = add.stdout["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            addr.starts_with("10.40.200.") && addr.ends_with("/24"),
            "{addr}"
        );
        let mut check = conf.clone();
        check["prevResult"] = add.stdout.clone();
        ok(&f.net_call("CHECK", "sub24", &pod, "eth0", &check));
        // GC with no valid attachment releases the reservation: CHECK must see it.
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        ok(&f.call(
            "weft-net",
            &[("CNI_COMMAND", "GC")],
            gc.to_string().as_bytes(),
        ));
        let lost = f.net_call("CHECK", "sub24", &pod, "eth0", &check);
        assert_ne!(lost.code, 0, "CHECK must report the lost reservation");
        assert!(lost.raw.contains("not reserved"), "{}", lost.raw);
        ok(&f.net_call("DEL", "sub24", &pod, "eth0", &conf));
    }

    /// Pods attached by CNI with addresses from the mesh-wide IPAM on three hosts ping
    /// each other across the encrypted mesh.
    #[test]
    fn pods_on_three_hosts_get_mesh_addresses_and_ping() {
        let mut f = Fixture::hosts("cnir3", 3);
        let auth = Auth::PasswordFile(f.net.new_secret("secret"));
        let _routers = common::weft::three_routers(&f.net, &auth);
        for h in 1..=3 {
            wait_ready(&f, h);
        }
        let conf = router_conf("1.0.0");
        let mut pods = Vec::new();
        for h in 1..=3 {
            f.host = h;
            let (ns, path) = f.pod();
            let id = format!("r3pod{h}");
            let out = f.net_call("ADD", &id, &path, "eth0", &conf);
            ok(&out);
            pods.push((h, ns, path, id, first_ip(&out)));
        }
        let mut addrs: Vec<&String> = pods.iter().map(|p| &p.4).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 3, "distinct mesh-wide addresses: {addrs:?}");
        for (h, ns, _, _, _) in &pods {
            for (t, _, _, _, addr) in &pods {
                if t == h {
                    continue;
                }
                let to = addr.parse().expect("an IPv4 address");
                let reached =
                    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
                        f.net.ping(ns, to)
                    });
                assert!(reached.is_some(), "pod on h{h} cannot ping {addr} on h{t}");
            }
        }
        for (h, _, path, id, _) in &pods {
            f.host = *h;
            ok(&f.net_call("DEL", id, path, "eth0", &conf));
        }
    }

    #[test]
    fn add_check_gc_del_with_the_real_router() {
        let mut f = Fixture::new("cniripam");
        let _router = lone_router(&f);
        router_ipam_flow(&mut f, &|| None);
    }

    #[test]
    fn reference_bridge_with_weft_ipam_on_two_meshed_hosts() {
        require_reference_plugins();
        let mut f = Fixture::hosts("cnirefmesh", 2);
        let auth = Auth::PasswordFile(f.net.new_secret("secret"));
        let _r1 = Router::launch_with(&f.net, 1, &auth, &["--ipalloc-range", "10.40.0.0/16"], &[]);
        let _r2 = Router::launch_with(
            &f.net,
            2,
            &auth,
            &["--ipalloc-range", "10.40.0.0/16"],
            &["198.18.0.1"],
        );
        f.net.wait_established(&[(1, 1), (2, 1)]);
        let conf = json!({"cniVersion": "1.0.0", "name": "refbr", "type": "bridge",
                          "bridge": "wbr0", "ipam": {"type": "weft-ipam"}});
        let mut addrs = Vec::new();
        for h in 1..=2 {
            f.host = h;
            let (_, path) = f.pod();
            let out = f.call_with_path(
                "bridge",
                REF_PLUGINS,
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", &format!("two-h{h}")),
                    ("CNI_NETNS", &path),
                    ("CNI_IFNAME", "eth0"),
                ],
                conf.to_string().as_bytes(),
            );
            ok(&out);
            addrs.push(
                out.stdout["ips"][0]["address"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_ne!(
            addrs[0], addrs[1],
            "the mesh-wide IPAM gave one address twice"
        );
    }
}

// --- Reference plugins from Debian's containernetworking-plugins (/usr/lib/cni) ---

const REF_PLUGINS: &str = "/usr/lib/cni";

fn require_reference_plugins() {
    assert!(
        PathBuf::from(REF_PLUGINS).join("bridge").exists(),
        "the reference CNI plugins are missing: apt-get install containernetworking-plugins \
         (scripts/test.sh does)"
    );
}

#[test]
fn reference_bridge_with_weft_ipam() {
    require_reference_plugins();
    let mut f = Fixture::new("cniref");
    let router = fake_ipam::FakeRouter::start(&f.net.host(1).run_dir);
    let conf = json!({"cniVersion": "1.0.0", "name": "refbr", "type": "bridge",
                      "bridge": "wbr0", "ipam": {"type": "weft-ipam", "subnet": "10.40.0.0/16"}});
    let mut pods = Vec::new();
    for id in ["refa", "refb"] {
        let (ns, path) = f.pod();
        let out = f.call_with_path(
            "bridge",
            REF_PLUGINS,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &path),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.to_string().as_bytes(),
        );
        ok(&out);
        let addr = out.stdout["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_string();
        pods.push((id, ns, path, addr));
    }
    assert_ne!(pods[0].3, pods[1].3, "distinct addresses from weft-ipam");
    let b_ip = pods[1].3.split('/').next().unwrap().parse().unwrap();
    assert!(f.net.ping(&pods[0].1, b_ip), "pod a cannot reach pod b");
    assert_eq!(router.held().len(), 2);
    for (id, _, path, _) in &pods {
        let out = f.call_with_path(
            "bridge",
            REF_PLUGINS,
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", path),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.to_string().as_bytes(),
        );
        ok(&out);
    }
    assert!(router.held().is_empty(), "{:?}", router.held());
    assert_root_untouched();
}

#[test]
fn chain_weft_net_then_portmap() {
    require_reference_plugins();
    let mut f = Fixture::new("cnipm");
    f.net.add_host();
    let h1 = f.h1();
    run_ok(Command::new("ip").args([
        "netns",
        "exec",
        &h1,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
    ]));
    let (ns, path) = f.pod();
    let net_conf = delegated_conf("1.0.0");
    let add = f.net_call("ADD", "pm1", &path, "eth0", &net_conf);
    ok(&add);
    let pm_conf = |prev: &Value| {
        json!({"cniVersion": "1.0.0", "name": "weft", "type": "portmap", "snat": true,
               "runtimeConfig": {"portMappings": [
                   {"hostPort": 8201, "containerPort": 5201, "protocol": "tcp"}]},
               "prevResult": prev})
    };
    let env = |cmd| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "pm1"),
            ("CNI_NETNS", path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let pm = f.call_with_path(
        "portmap",
        REF_PLUGINS,
        &env("ADD"),
        pm_conf(&add.stdout).to_string().as_bytes(),
    );
    ok(&pm);
    // The final result goes to CHECK for every plugin in the chain.
    let mut check = net_conf.clone();
    check["prevResult"] = pm.stdout.clone();
    ok(&f.net_call("CHECK", "pm1", &path, "eth0", &check));
    // h2 reaches the pod's iperf3 server through h1's hostPort.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns, "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let h2 = f.net.host(2).ns.clone();
    let reached = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        f.net
            .exec_for(
                &h2,
                "iperf3",
                &["-c", "198.18.0.1", "-p", "8201", "-n", "64K", "-J"],
                Duration::from_secs(10),
            )
            .status
            .success()
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        reached.is_some(),
        "hostPort 8201 on h1 did not reach the pod"
    );
    // DEL in reverse order.
    ok(&f.call_with_path(
        "portmap",
        REF_PLUGINS,
        &env("DEL"),
        pm_conf(&pm.stdout).to_string().as_bytes(),
    ));
    ok(&f.net_call("DEL", "pm1", &path, "eth0", &check));
    assert!(f.host_veths().is_empty());
}

#[test]
fn pods_attached_by_cni_on_three_hosts_ping_across_the_mesh() {
    let mut f = Fixture::hosts("cnimesh", 3);
    let auth = common::weft::Auth::PasswordFile(f.net.new_secret("secret"));
    let _routers = common::weft::three_routers(&f.net, &auth);
    // No mtu in the config: the veth takes the router's bridge MTU.
    let conf = json!({"cniVersion": "1.0.0", "name": "weft", "type": "weft-net",
                      "ipam": {"type": "fake-ipam"}});
    let mut pods = Vec::new();
    for h in 1..=3 {
        f.host = h;
        let (ns, path) = f.pod();
        let (id, addr) = (format!("mesh{h}"), format!("10.40.7.{h}/16"));
        let out = f.call(
            "weft-net",
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", &id),
                ("CNI_NETNS", &path),
                ("CNI_IFNAME", "eth0"),
                ("FAKE_IPAM_ADDR", &addr),
            ],
            conf.to_string().as_bytes(),
        );
        ok(&out);
        let bridge_mtu = ip_out(&["-n", &f.h1(), "link", "show", "weft"]);
        let pod_link = ip_out(&["-n", &ns, "link", "show", "eth0"]);
        let mtu = |s: &str| {
            s.split("mtu ")
                .nth(1)
                .and_then(|m| m.split(' ').next())
                .map(str::to_string)
        };
        assert_eq!(mtu(&bridge_mtu), mtu(&pod_link), "{bridge_mtu}\n{pod_link}");
        pods.push((h, ns, path, id));
    }
    for (h, ns, _, _) in &pods {
        for t in 1..=3u8 {
            if t as usize == *h {
                continue;
            }
            let to = format!("10.40.7.{t}").parse().unwrap();
            let reached = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
                f.net.ping(ns, to)
            });
            assert!(reached.is_some(), "pod on h{h} cannot ping 10.40.7.{t}");
        }
    }
    for (h, _, path, id) in &pods {
        f.host = *h;
        ok(&f.net_call("DEL", id, path, "eth0", &conf));
        assert!(f.host_veths().is_empty());
    }
}

/// iperf3 from `ns` to `server` (3 s); the rate the receiver saw, in bit/s.
fn iperf_rate(f: &Fixture, ns: &str, server: &str) -> f64 {
    let out = f.net.exec_for(
        ns,
        "iperf3",
        &["-c", server, "-p", "5202", "-t", "3", "-J"],
        Duration::from_secs(20),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn chain_weft_net_portmap_bandwidth_limits_egress() {
    require_reference_plugins();
    let mut f = Fixture::new("cnibw");
    let (ns, path) = f.pod();
    let net_conf = delegated_conf("1.0.0");
    let add = f.net_call("ADD", "bw1", &path, "eth0", &net_conf);
    ok(&add);
    let env = |cmd| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "bw1"),
            ("CNI_NETNS", path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let pm_conf = |prev: &Value| {
        json!({"cniVersion": "1.0.0", "name": "weft", "type": "portmap",
               "runtimeConfig": {"portMappings": [
                   {"hostPort": 8202, "containerPort": 5202, "protocol": "tcp"}]},
               "prevResult": prev})
    };
    const RATE: u64 = 8_000_000;
    let bw_conf = |prev: &Value| {
        json!({"cniVersion": "1.0.0", "name": "weft", "type": "bandwidth",
               "runtimeConfig": {"bandwidth": {"egressRate": RATE, "egressBurst": 200_000,
                                               "ingressRate": 0, "ingressBurst": 0}},
               "prevResult": prev})
    };
    let pm = f.call_with_path(
        "portmap",
        REF_PLUGINS,
        &env("ADD"),
        pm_conf(&add.stdout).to_string().as_bytes(),
    );
    ok(&pm);
    let h1 = f.h1();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &h1, "iperf3", "-s", "-p", "5202"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::traffic::wait_listening(&f.net, &h1, 5202);
    let unshaped = iperf_rate(&f, &ns, "10.40.0.1");
    let bw = f.call_with_path(
        "bandwidth",
        REF_PLUGINS,
        &env("ADD"),
        bw_conf(&pm.stdout).to_string().as_bytes(),
    );
    ok(&bw);
    let shaped = iperf_rate(&f, &ns, "10.40.0.1");
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "e2e: pod egress {:.1} Mbit/s unshaped, {:.1} Mbit/s with egressRate {} Mbit/s",
        unshaped / 1e6,
        shaped / 1e6,
        RATE / 1_000_000
    );
    assert!(shaped < RATE as f64 * 1.3, "egress not limited: {shaped}");
    assert!(
        unshaped > RATE as f64 * 2.0,
        "baseline too slow to tell: {unshaped}"
    );
    // CHECK with the final result, then DEL in reverse order.
    let mut check = net_conf.clone();
    check["prevResult"] = bw.stdout.clone();
    ok(&f.net_call("CHECK", "bw1", &path, "eth0", &check));
    ok(&f.call_with_path(
        "bandwidth",
        REF_PLUGINS,
        &env("DEL"),
        bw_conf(&bw.stdout).to_string().as_bytes(),
    ));
    ok(&f.call_with_path(
        "portmap",
        REF_PLUGINS,
        &env("DEL"),
        pm_conf(&bw.stdout).to_string().as_bytes(),
    ));
    ok(&f.net_call("DEL", "bw1", &path, "eth0", &check));
    assert!(f.host_veths().is_empty());
    assert_root_untouched();
}
