//! End-to-end tests of the CNI plugin: the real `weft` binary, installed by
//! `weft setup-cni` into a temp dir and invoked as `weft-net` exactly as libcni does
//! (CNI_* environment, config on stdin, result on stdout, chaining with prevResult),
//! inside a host namespace that the test makes, against pod namespaces it makes.
//!
//! The ADD/CHECK/DEL paths run through IPAM delegation to a fake IPAM plugin (a shell
//! script the test writes into CNI_PATH). The router-IPAM paths that need the router's
//! `/ipam` API are marked `#[ignore]` until that API is merged (ipam-wire branch).
//! See docs/cni-conformance.md for the spec rule each test covers.

mod common;

use common::{run_ok, wait_until, Net};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

const FAKE_IPAM: &str = r#"#!/bin/sh
# A fake IPAM plugin: logs each call, answers ADD with a fixed address.
cat >/dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >>"$FAKE_IPAM_LOG"
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{"cniVersion":"1.0.0","ips":[{"address":"%s","gateway":"10.40.0.1"}],"routes":[{"dst":"10.32.0.0/12"}]}\n' "${FAKE_IPAM_ADDR:-10.40.5.7/16}"
fi
exit 0
"#;

/// One host namespace with a `weft` bridge (10.40.0.1/16, MTU 1376) and the plugin
/// installed by `weft setup-cni` in the test dir.
struct Fixture {
    net: Net,
    bin: PathBuf,
    ipam_bin: PathBuf,
    log: PathBuf,
    pods: usize,
}

struct Out {
    code: i32,
    stdout: Value,
    raw: String,
    stderr: String,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let net = Net::new(tag, 1);
        let h1 = net.host(1).ns.clone();
        for args in [
            vec!["-n", &h1, "link", "add", "weft", "type", "bridge"],
            vec!["-n", &h1, "link", "set", "weft", "mtu", "1376", "up"],
            vec!["-n", &h1, "addr", "add", "10.40.0.1/16", "dev", "weft"],
        ] {
            run_ok(Command::new("ip").args(args));
        }
        let bin = net.dir().join("bin");
        let conf = net.dir().join("net.d");
        let out = run_ok(Command::new(WEFT).args([
            "setup-cni",
            "--bin-dir",
            bin.to_str().unwrap(),
            "--conf-dir",
            conf.to_str().unwrap(),
        ]));
        assert!(String::from_utf8_lossy(&out.stdout).contains("weft-net"));
        let ipam_bin = net.dir().join("ipam-bin");
        std::fs::create_dir_all(&ipam_bin).unwrap();
        let script = ipam_bin.join("fake-ipam");
        std::fs::write(&script, FAKE_IPAM).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = net.dir().join("fake-ipam.log");
        std::fs::write(&log, "").unwrap();
        Fixture {
            net,
            bin,
            ipam_bin,
            log,
            pods: 0,
        }
    }

    fn h1(&self) -> String {
        self.net.host(1).ns.clone()
    }

    fn pod(&mut self) -> (String, String) {
        self.pods += 1;
        let ns = self.net.add_bare_pod(1, self.pods);
        let path = format!("/run/netns/{ns}");
        (ns, path)
    }

    /// Calls `plugin` (weft-net or weft-ipam) in h1 as libcni does.
    fn call(&self, plugin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Out {
        let dir = self.bin.display().to_string();
        self.call_with_path(plugin, &dir, env, stdin)
    }

    /// Calls plugin `plugin` found in `dir` in h1 as libcni does; `dir` leads CNI_PATH.
    fn call_with_path(&self, plugin: &str, dir: &str, env: &[(&str, &str)], stdin: &[u8]) -> Out {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.h1()])
            .arg(PathBuf::from(dir).join(plugin))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "CNI_PATH",
                format!("{dir}:{}:{}", self.bin.display(), self.ipam_bin.display()),
            )
            .env("WEFT_RUN_DIR", &self.net.host(1).run_dir)
            .env("FAKE_IPAM_LOG", &self.log)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn plugin");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let pid = child.id();
        let start = Instant::now();
        let done = wait_until(Duration::from_secs(60), Duration::from_millis(5), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if done.is_none() {
            let _ = child.kill();
            panic!("plugin pid {pid} ran over 60 s");
        }
        let _ = writer.join();
        let out = child.wait_with_output().unwrap();
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "{plugin} {:?} took {:?}: exit {:?} {raw} {stderr}",
            env.first(),
            start.elapsed(),
            out.status.code()
        );
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
            stderr,
        }
    }

    fn net_call(&self, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Out {
        self.call(
            "weft-net",
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=x"),
            ],
            conf.to_string().as_bytes(),
        )
    }

    fn ipam_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Host veths weft-net made in h1.
    fn host_veths(&self) -> Vec<String> {
        ip_out(&["-n", &self.h1(), "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("vethwn") || n.starts_with("vethwq"))
            .collect()
    }
}

fn ip_out(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(Command::new("ip").args(args)).stdout).into_owned()
}

fn delegated_conf(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "weft",
        "type": "weft-net",
        "mtu": 1400,
        "ipam": {"type": "fake-ipam"},
    })
}

fn ok(out: &Out) {
    assert_eq!(out.code, 0, "plugin failed: {} / {}", out.raw, out.stderr);
}

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
    let log = f.ipam_log();
    assert_eq!(log.matches("ADD ctr1").count(), 2, "{log}");
    assert_eq!(log.matches("CHECK ctr1 eth0").count(), 1, "{log}");
    assert_eq!(log.matches("DEL ctr1 eth0").count(), 2, "{log}");
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

/// A stand-in for the router's IPAM API on `<run dir>/weft.sock`, following the
/// contract weft-net codes against, so that the router-IPAM paths run before the real
/// API is merged. Addresses come from 10.40.1.0 upwards.
mod fake_router {
    use serde_json::{json, Value};
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    #[derive(Default)]
    pub struct State {
        pub ready: bool,
        pub next: u32,
        pub allocs: Vec<(String, String)>,
    }

    pub struct FakeRouter {
        path: PathBuf,
        pub state: Arc<Mutex<State>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl FakeRouter {
        pub fn start(run_dir: &Path) -> FakeRouter {
            std::fs::create_dir_all(run_dir).unwrap();
            let path = run_dir.join("weft.sock");
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).unwrap();
            let state = Arc::new(Mutex::new(State {
                ready: true,
                next: 256,
                allocs: Vec::new(),
            }));
            let stop = Arc::new(AtomicBool::new(false));
            let (st, sp) = (state.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if sp.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let st = st.clone();
                        std::thread::spawn(move || serve(conn, &st));
                    }
                }
            });
            FakeRouter {
                path,
                state,
                stop,
                thread: Some(thread),
            }
        }

        pub fn held(&self) -> Vec<(String, String)> {
            self.state.lock().unwrap().allocs.clone()
        }
    }

    impl Drop for FakeRouter {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = UnixStream::connect(&self.path);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn serve(mut conn: UnixStream, state: &Mutex<State>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, len) = loop {
            let Ok(n) = conn.read(&mut chunk) else { return };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, len);
            }
        };
        while buf.len() < head_end + len {
            let Ok(n) = conn.read(&mut chunk) else { return };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let line = head.lines().next().unwrap_or_default().to_string();
        let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
        let (status, answer) = handle(&line, &body, state);
        let text = answer.to_string();
        let _ = write!(
            conn,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
    }

    fn handle(line: &str, body: &Value, state: &Mutex<State>) -> (u16, Value) {
        let mut st = state.lock().unwrap();
        let id = body["id"].as_str().unwrap_or_default().to_string();
        match line.split(' ').take(2).collect::<Vec<_>>()[..] {
            ["GET", "/ipam"] => {
                let allocs: Vec<Value> = st
                    .allocs
                    .iter()
                    .map(|(i, a)| json!({"id": i, "addr": a}))
                    .collect();
                let status = if st.ready {
                    "ready"
                } else {
                    "waiting for consensus"
                };
                (
                    200,
                    json!({"status": status, "range": "10.40.0.0/16", "allocations": allocs}),
                )
            }
            _ if !st.ready => (503, json!({"error": "IPAM not ready"})),
            ["POST", "/ipam/allocate"] => {
                if let Some((_, a)) = st.allocs.iter().find(|(i, _)| *i == id) {
                    return (200, json!({"addr": a}));
                }
                st.next += 1;
                let n = st.next;
                let addr = format!("10.40.{}.{}/16", n / 256, n % 256);
                st.allocs.push((id, addr.clone()));
                (200, json!({"addr": addr}))
            }
            ["POST", "/ipam/claim"] => {
                let addr = body["addr"].as_str().unwrap_or_default().to_string();
                match st.allocs.iter().find(|(_, a)| *a == addr) {
                    Some((i, _)) if *i != id => {
                        (409, json!({"error": format!("{addr} is held by {i}")}))
                    }
                    Some(_) => (200, json!({"addr": addr})),
                    None => {
                        st.allocs.push((id, addr.clone()));
                        (200, json!({"addr": addr}))
                    }
                }
            }
            ["POST", "/ipam/release"] => {
                let only = body["addr"].as_str().map(str::to_string);
                let mut released = Vec::new();
                st.allocs.retain(|(i, a)| {
                    let hit = *i == id && only.as_ref().is_none_or(|o| o == a);
                    if hit {
                        released.push(a.clone());
                    }
                    !hit
                });
                (200, json!({"released": released}))
            }
            _ => (404, json!({"error": "not found"})),
        }
    }
}

fn router_conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "weft", "type": "weft-net",
           "ipam": {"routes": [{"dst": "10.32.0.0/12"}]}})
}

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
    // No ipam.gateway: the bridge's address in the subnet is the gateway.
    assert_eq!(add_a.stdout["ips"][0]["gateway"], "10.40.0.1");
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
    let router = fake_router::FakeRouter::start(&f.net.host(1).run_dir);
    router_ipam_flow(&mut f, &|| Some(router.held()));
}

#[test]
fn router_ipam_claims_conflicts_and_not_ready() {
    let mut f = Fixture::new("cniclaim");
    let router = fake_router::FakeRouter::start(&f.net.host(1).run_dir);
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

#[test]
fn router_ipam_concurrent_adds_and_latency() {
    let mut f = Fixture::new("cnilat");
    let router = fake_router::FakeRouter::start(&f.net.host(1).run_dir);
    let c = router_conf("1.0.0");
    let pods: Vec<String> = (0..20).map(|_| f.pod().1).collect();
    let results: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (f, c) = (&f, &c);
                s.spawn(move || f.net_call("ADD", &format!("conc{i}"), p, "eth0", c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<String> = results
        .iter()
        .map(|r| {
            ok(r);
            r.stdout["ips"][0]["address"].as_str().unwrap().to_string()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20);
    assert_eq!(f.host_veths().len(), 20);
    for (i, p) in pods.iter().enumerate() {
        ok(&f.net_call("DEL", &format!("conc{i}"), p, "eth0", &c));
    }
    assert!(router.held().is_empty());
    // Sequential ADD and DEL latency on one host (debug build, fake IPAM server).
    let (mut add_t, mut del_t) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let t = Instant::now();
        ok(&f.net_call("ADD", "lat", &pods[0], "eth0", &c));
        add_t.push(t.elapsed());
        let t = Instant::now();
        ok(&f.net_call("DEL", "lat", &pods[0], "eth0", &c));
        del_t.push(t.elapsed());
    }
    for (name, mut t) in [("ADD", add_t), ("DEL", del_t)] {
        t.sort();
        println!(
            "e2e: weft-net {name} latency over 20 runs: median {:.1} ms, p99 {:.1} ms",
            t[t.len() / 2].as_secs_f64() * 1e3,
            t[t.len() - 1].as_secs_f64() * 1e3
        );
    }
}

mod router_ipam {
    use super::*;
    use common::weft::{Auth, Router};

    #[test]
    #[ignore = "needs the router IPAM API (ipam-wire branch)"]
    fn add_check_gc_del_with_the_real_router() {
        let mut f = Fixture::new("cniripam");
        let _router = Router::launch_with(
            &f.net,
            1,
            &Auth::NoEncryption,
            &["--ipalloc-range", "10.40.0.0/16"],
            &[],
        );
        router_ipam_flow(&mut f, &|| None);
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
    let router = fake_router::FakeRouter::start(&f.net.host(1).run_dir);
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
