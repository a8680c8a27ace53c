//! The CNI plugin under test: a host namespace with a `weft` bridge, the plugin
//! installed there by `weft setup-cni` into the test dir, a fake IPAM plugin script in
//! CNI_PATH, and [`Fixture::call`], which runs a plugin exactly as libcni does
//! (CNI_* environment, config on stdin, result or error JSON on stdout).

use super::Net;
use super::{run_ok, wait_until};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

pub const FAKE_IPAM: &str = r#"#!/bin/sh
# A fake IPAM plugin: logs each call, answers ADD with a fixed address (and an IPv6
# one with FAKE_IPAM_ADDR6).
cat >/dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >>"$FAKE_IPAM_LOG"
if [ "$CNI_COMMAND" = ADD ]; then
  v6=""
  if [ -n "$FAKE_IPAM_ADDR6" ]; then
    v6=$(printf ',{"address":"%s","gateway":"fd00:40::1"}' "$FAKE_IPAM_ADDR6")
  fi
  printf '{"cniVersion":"1.0.0","ips":[{"address":"%s","gateway":"10.40.0.1"}%s],"routes":[{"dst":"10.32.0.0/12"}]}\n' "${FAKE_IPAM_ADDR:-10.40.5.7/16}" "$v6"
fi
exit 0
"#;

/// Host namespaces with the plugin installed by `weft setup-cni` in the test dir.
/// Plugins run in host `host` (h1 unless a test changes it).
pub struct Fixture {
    pub net: Net,
    pub host: usize,
    pub bin: PathBuf,
    pub ipam_bin: PathBuf,
    pub log: PathBuf,
    pub pods: usize,
}

pub struct Out {
    pub code: i32,
    pub stdout: Value,
    pub raw: String,
    pub stderr: String,
}

impl Fixture {
    /// One host, h1, with its own `weft` bridge (10.40.0.1/16, MTU 1376), no router.
    pub fn new(tag: &str) -> Fixture {
        let net = Net::new(tag, 1);
        let h1 = net.host(1).ns.clone();
        for args in [
            vec!["-n", &h1, "link", "add", "weft", "type", "bridge"],
            vec!["-n", &h1, "link", "set", "weft", "mtu", "1376", "up"],
            vec!["-n", &h1, "addr", "add", "10.40.0.1/16", "dev", "weft"],
        ] {
            run_ok(Command::new("ip").args(args));
        }
        Fixture::install(net)
    }

    /// `hosts` hosts and no bridge: the routers a test launches make theirs.
    pub fn hosts(tag: &str, hosts: usize) -> Fixture {
        Fixture::install(Net::new(tag, hosts))
    }

    fn install(net: Net) -> Fixture {
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
            host: 1,
            bin,
            ipam_bin,
            log,
            pods: 0,
        }
    }

    /// The namespace of the host the plugin runs in.
    pub fn h1(&self) -> String {
        self.net.host(self.host).ns.clone()
    }

    pub fn pod(&mut self) -> (String, String) {
        self.pods += 1;
        let ns = self.net.add_bare_pod(self.host, self.pods);
        let path = format!("/run/netns/{ns}");
        (ns, path)
    }

    /// Calls `plugin` (weft-net or weft-ipam) in h1 as libcni does.
    pub fn call(&self, plugin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Out {
        let dir = self.bin.display().to_string();
        self.call_with_path(plugin, &dir, env, stdin)
    }

    /// Calls plugin `plugin` found in `dir` in h1 as libcni does; `dir` leads CNI_PATH.
    pub fn call_with_path(
        &self,
        plugin: &str,
        dir: &str,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Out {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.h1()])
            .arg(PathBuf::from(dir).join(plugin))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "CNI_PATH",
                format!("{dir}:{}:{}", self.bin.display(), self.ipam_bin.display()),
            )
            .env("WEFT_RUN_DIR", &self.net.host(self.host).run_dir)
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

    pub fn net_call(
        &self,
        command: &str,
        id: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> Out {
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

    pub fn ipam_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Host veths weft-net made in h1.
    pub fn host_veths(&self) -> Vec<String> {
        ip_out(&["-n", &self.h1(), "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("vethwn") || n.starts_with("vethwq"))
            .collect()
    }
}

/// Panics if the root namespace has a link that a CNI test could have made (a weft-net
/// veth, the reference bridge's `wbr0`, a bandwidth ifb): all of them belong in the
/// test's namespaces.
pub fn assert_root_untouched() {
    let leaked: Vec<String> = super::netns::root_links()
        .into_iter()
        .filter(|l| {
            l.starts_with("vethwn")
                || l.starts_with("vethwq")
                || l == "wbr0"
                || l.starts_with("bwp")
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "links leaked into the root namespace: {leaked:?}"
    );
}

pub fn ip_out(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(Command::new("ip").args(args)).stdout).into_owned()
}

pub fn delegated_conf(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "weft",
        "type": "weft-net",
        "mtu": 1400,
        "ipam": {"type": "fake-ipam"},
    })
}

pub fn ok(out: &Out) {
    assert_eq!(out.code, 0, "plugin failed: {} / {}", out.raw, out.stderr);
}

pub fn router_conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "weft", "type": "weft-net",
           "ipam": {"routes": [{"dst": "10.32.0.0/12"}]}})
}
