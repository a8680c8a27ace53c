//! Weft's CNI plugin: `weft-net` (an interface plugin that attaches a container to the
//! `weft` bridge) and `weft-ipam` (an IPAM-only plugin for other main plugins), both
//! speaking CNI spec 0.3.0 to 1.1.0. It reaches the router only through its local API
//! (the `api` crate's client, see [`ipam`]), never by linking it. [`run`] is the whole plugin: environment and
//! stdin in, exit code and stdout out, logs on stderr.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod install;
pub mod ipam;
pub mod types;
pub mod version;
pub mod veth;

use config::NetConf;
use env::{Env, Verb};
use error::CniError;

/// Which plugin the binary acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `weft-net`.
    Net,
    /// `weft-ipam`.
    Ipam,
}

/// Runs one invocation: returns the exit code and what to print on stdout.
pub fn run(
    mode: Mode,
    get: impl Fn(&str) -> Option<String>,
    stdin: impl std::io::Read,
) -> (i32, String) {
    match run_inner(mode, get, stdin) {
        Ok(out) => (0, out),
        Err((version, e)) => {
            eprintln!("{}: {e}", name(mode));
            (1, e.to_json(&version))
        }
    }
}

fn name(mode: Mode) -> &'static str {
    match mode {
        Mode::Net => "weft-net",
        Mode::Ipam => "weft-ipam",
    }
}

/// One invocation, its environment and configuration read and checked, before anything
/// is done.
enum Invocation {
    /// VERSION: the answer to print.
    Version(String),
    /// Any other verb.
    Run {
        env: Env,
        conf: Box<NetConf>,
        raw: Vec<u8>,
        /// The configuration's `cniVersion`.
        version: String,
        /// The version errors are reported in.
        in_use: String,
    },
}

/// Reads and checks the environment and stdin (errors come with the version to report
/// them in).
fn decode(
    mode: Mode,
    get: impl Fn(&str) -> Option<String>,
    stdin: impl std::io::Read,
) -> Result<Invocation, (String, CniError)> {
    let current = || version::CURRENT.to_string();
    let env = Env::from_lookup(get).map_err(|e| (current(), e))?;
    let raw = config::read_bounded(stdin).map_err(|e| (current(), e))?;
    if env.verb == Verb::Version {
        let asked: Option<String> = serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string));
        return Ok(Invocation::Version(version::answer(asked.as_deref())));
    }
    let mut conf = NetConf::parse(&raw).map_err(|e| (current(), e))?;
    if matches!(env.verb, Verb::Add | Verb::Check) {
        conf.apply_cni_args(&env.args).map_err(|e| (current(), e))?;
    }
    if mode == Mode::Ipam {
        // weft-ipam is the IPAM: it never delegates (not even to itself under another name).
        if let Some(ipam) = conf.ipam.as_mut() {
            ipam.kind.clear();
        }
    }
    let v = conf.cni_version.clone();
    let in_use = if version::SUPPORTED.contains(&v.as_str()) {
        v.clone()
    } else {
        current()
    };
    version::check(&v, env.verb).map_err(|e| (in_use.clone(), e))?;
    Ok(Invocation::Run {
        env,
        conf: Box::new(conf),
        raw,
        version: v,
        in_use,
    })
}

fn run_inner(
    mode: Mode,
    get: impl Fn(&str) -> Option<String>,
    stdin: impl std::io::Read,
) -> Result<String, (String, CniError)> {
    let (env, conf, raw, v, in_use) = match decode(mode, get, stdin)? {
        Invocation::Version(answer) => return Ok(answer),
        Invocation::Run {
            env,
            conf,
            raw,
            version,
            in_use,
        } => (env, conf, raw, version, in_use),
    };
    let fail = |e| (in_use.clone(), e);
    let quiet = |r: error::CniResult<()>| r.map(|()| String::new());
    match (mode, env.verb) {
        (Mode::Net, Verb::Add) => cmd::add(&conf, &env, &raw).map(|o| o.to_json(&v).to_string()),
        (Mode::Ipam, Verb::Add) => {
            cmd::ipam_add(&conf, &env, &raw).map(|o| o.to_json(&v).to_string())
        }
        (Mode::Net, Verb::Del) => quiet(cmd::del(&conf, &env, &raw)),
        (Mode::Ipam, Verb::Del) => quiet(
            ipam::Ipam {
                conf: &conf,
                env: &env,
                raw: &raw,
            }
            .del(),
        ),
        (Mode::Net, Verb::Check) => quiet(cmd::check(&conf, &env, &raw)),
        (Mode::Ipam, Verb::Check) => quiet(cmd::ipam_check(&conf, &env, &raw)),
        (_, Verb::Gc) => quiet(
            ipam::Ipam {
                conf: &conf,
                env: &env,
                raw: &raw,
            }
            .gc(),
        ),
        (_, Verb::Status) => quiet(
            ipam::Ipam {
                conf: &conf,
                env: &env,
                raw: &raw,
            }
            .status(),
        ),
        (_, Verb::Version) => unreachable!("answered above"),
    }
    .map_err(fail)
}

/// `main` for the binary invoked as `weft-net` or `weft-ipam`: reads the process
/// environment and stdin, prints the result or error, returns the exit code.
pub fn main(mode: Mode) -> i32 {
    let (code, out) = run(mode, |k| std::env::var(k).ok(), std::io::stdin().lock());
    if !out.is_empty() {
        println!("{out}");
    }
    code
}

/// Fuzz entry: one invocation from arbitrary bytes, `ENV` then a NUL byte then stdin,
/// where `ENV` is `KEY=VALUE` lines (the CNI_* variables) and the first byte's low bit
/// picks the plugin. Runs everything the plugin does before it touches the system: the
/// environment, the bounded stdin read, the network configuration, `CNI_ARGS`, the
/// version checks, and the `prevResult` that ADD extends and CHECK compares; then the
/// answer or error JSON. Never panics.
pub fn fuzz_invocation(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mode = if first & 1 == 0 {
        Mode::Net
    } else {
        Mode::Ipam
    };
    let (env_part, stdin) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let env_text = String::from_utf8_lossy(env_part);
    let vars: Vec<(&str, &str)> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    };
    match decode(mode, get, stdin) {
        Ok(Invocation::Version(answer)) => {
            assert!(serde_json::from_str::<serde_json::Value>(&answer).is_ok());
        }
        Ok(Invocation::Run {
            conf,
            version,
            in_use,
            ..
        }) => match cmd::prev_result(&conf) {
            Ok(Some(prev)) => {
                let _ = prev.to_json(&version);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = e.to_json(&in_use);
            }
        },
        Err((version, e)) => {
            let _ = e.to_json(&version);
        }
    }
}

/// Seeded mutations of a valid input, for the fuzz entry points' tests.
#[cfg(test)]
pub(crate) fn for_each_mutation(
    seed: &[u8],
    count: usize,
    mut state: u64,
    mut f: impl FnMut(&[u8]),
) {
    for i in 0..count {
        let mut data = seed.to_vec();
        for _ in 0..(1 + i % 6) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pos = (state as usize) % data.len().max(1);
            if let Some(b) = data.get_mut(pos) {
                *b = (state >> 40) as u8;
            }
        }
        data.truncate((state as usize >> 8) % (data.len() + 1));
        f(&data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn call(pairs: &[(&str, &str)], stdin: &str) -> (i32, serde_json::Value) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (code, out) = run(Mode::Net, |k| m.get(k).cloned(), stdin.as_bytes());
        (code, serde_json::from_str(&out).unwrap_or_default())
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/nonexistent/netns"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/nonexistent"),
    ];

    #[test]
    fn fuzz_invocation_replay_never_panics() {
        let env = "CNI_COMMAND=ADD\nCNI_CONTAINERID=c1\nCNI_NETNS=/run/netns/x\nCNI_IFNAME=eth0\nCNI_PATH=/opt/cni/bin\nCNI_ARGS=IgnoreUnknown=1;IP=10.40.0.9";
        let conf = r#"{"cniVersion":"1.0.0","name":"weft","type":"weft-net","mtu":1376,
            "ipam":{"subnet":"10.40.0.0/16","routes":[{"dst":"10.32.0.0/12"}]},
            "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"c2:11:22:33:44:55","sandbox":"/run/netns/x"}],
            "ips":[{"address":"10.40.0.2/16","gateway":"10.40.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],
            "dns":{"nameservers":["10.40.0.1"]}}}"#;
        let mut seeds = Vec::new();
        for (mode, verb) in [
            (0u8, "ADD"),
            (1, "CHECK"),
            (0, "DEL"),
            (1, "VERSION"),
            (0, "GC"),
        ] {
            let mut s = vec![mode];
            s.extend_from_slice(env.replace("ADD", verb).as_bytes());
            s.push(0);
            s.extend_from_slice(conf.as_bytes());
            seeds.push(s);
        }
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        assert!(
            matches!(
                decode(Mode::Net, get, conf.as_bytes()),
                Ok(Invocation::Run { ref conf, .. }) if cmd::prev_result(conf).is_ok_and(|p| p.is_some())
            ),
            "the seed is accepted, so the replay reaches prevResult"
        );
        for (n, seed) in seeds.iter().enumerate() {
            for_each_mutation(seed, 800, 0x5eed_0000 + n as u64, fuzz_invocation);
        }
    }

    #[test]
    fn version_verb_answers_without_env() {
        let (code, v) = call(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&"1.1.0".into()));
    }

    #[test]
    fn errors_are_json_with_spec_codes() {
        assert_eq!(call(&[("CNI_COMMAND", "FOO")], "{}").1["code"], 4);
        assert_eq!(call(&ADD, "{bad").1["code"], 6);
        assert_eq!(
            call(&ADD, r#"{"cniVersion":"1.0.0","name":"a b"}"#).1["code"],
            7
        );
        let (code, v) = call(&ADD, r#"{"cniVersion":"9.9.9","name":"n"}"#);
        assert_eq!((code, v["code"].as_u64()), (1, Some(1)));
        let mut check = ADD;
        check[0] = ("CNI_COMMAND", "CHECK");
        assert_eq!(
            call(&check, r#"{"cniVersion":"0.3.1","name":"n"}"#).1["code"],
            1
        );
        assert_eq!(
            call(
                &[("CNI_COMMAND", "GC")],
                r#"{"cniVersion":"1.0.0","name":"n"}"#
            )
            .1["code"],
            1
        );
        assert_eq!(
            call(
                &[("CNI_COMMAND", "STATUS")],
                r#"{"cniVersion":"0.4.0","name":"n"}"#
            )
            .1["code"],
            1
        );
        let (_, v) = call(&ADD, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(v["cniVersion"], "0.3.1", "errors use the config's version");
        let big = " ".repeat(config::MAX_STDIN as usize + 10);
        assert_eq!(call(&ADD, &big).1["code"], 6);
    }

    #[test]
    fn status_without_router_is_code_50() {
        // WEFT_RUN_DIR is not set in unit tests unless the caller set it; either way
        // no router listens under /nonexistent.
        let m: HashMap<&str, &str> = [("CNI_COMMAND", "STATUS")].into();
        let dir = std::env::var("WEFT_RUN_DIR").ok();
        if dir.is_none() && std::path::Path::new("/run/weft/weft.sock").exists() {
            return; // a real router runs on this machine; do not talk to it
        }
        let (code, out) = run(
            Mode::Ipam,
            |k| m.get(k).map(|v| v.to_string()),
            &br#"{"cniVersion":"1.1.0","name":"n"}"#[..],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!((code, v["code"].as_u64()), (1, Some(50)));
    }
}
