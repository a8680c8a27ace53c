//! The CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, ...), validated as libcni's
//! skel does: container ID and interface name rules, an absolute netns path.

use crate::error::{CniError, CniResult, INVALID_ENV, UNKNOWN_CONTAINER};

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Attach.
    Add,
    /// Detach.
    Del,
    /// Verify.
    Check,
    /// Report supported versions.
    Version,
    /// Release what is not in the valid-attachments list.
    Gc,
    /// Readiness.
    Status,
}

impl Verb {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "ADD" => Verb::Add,
            "DEL" => Verb::Del,
            "CHECK" => Verb::Check,
            "VERSION" => Verb::Version,
            "GC" => Verb::Gc,
            "STATUS" => Verb::Status,
            _ => return None,
        })
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// The verb.
    pub verb: Verb,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS`; empty when not given (allowed for DEL).
    pub netns: String,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS`, raw.
    pub args: String,
    /// `CNI_PATH` split on ':'.
    pub path: Vec<String>,
}

fn bad(var: &str, why: impl Into<String>) -> CniError {
    CniError::new(INVALID_ENV, format!("invalid {var}"), why.into())
}

/// Container ID rule of libcni: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_container_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Interface name rule of libcni and the kernel.
pub fn valid_ifname(name: &str) -> bool {
    datapath::attach::valid_ifname(name)
}

impl Env {
    /// Reads and validates the environment through `get` (`std::env::var` in `main`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> CniResult<Env> {
        let command = get("CNI_COMMAND").unwrap_or_default();
        let verb = Verb::parse(&command).ok_or_else(|| {
            bad(
                "CNI_COMMAND",
                format!("unknown CNI_COMMAND {command:?}: expected ADD, DEL, CHECK, VERSION, GC or STATUS"),
            )
        })?;
        let var = |k: &str| get(k).unwrap_or_default();
        let mut env = Env {
            verb,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH")
                .split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        };
        if matches!(verb, Verb::Version | Verb::Gc | Verb::Status) {
            if verb == Verb::Version {
                env.netns.clear();
            }
            return Ok(env);
        }
        if env.container_id.is_empty() {
            return Err(CniError::new(
                UNKNOWN_CONTAINER,
                "missing CNI_CONTAINERID",
                "the runtime must set CNI_CONTAINERID for ADD, DEL and CHECK",
            ));
        }
        if !valid_container_id(&env.container_id) {
            return Err(bad(
                "CNI_CONTAINERID",
                format!(
                    "{:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
                    env.container_id
                ),
            ));
        }
        if !valid_ifname(&env.ifname) {
            return Err(bad(
                "CNI_IFNAME",
                format!(
                    "{:?}: 1 to 15 characters, not '.' or '..', no '/', ':' or whitespace",
                    env.ifname
                ),
            ));
        }
        if env.netns.is_empty() && verb != Verb::Del {
            return Err(bad("CNI_NETNS", "CNI_NETNS is required for ADD and CHECK"));
        }
        if !env.netns.is_empty() && !valid_netns_path(&env.netns) {
            return Err(bad(
                "CNI_NETNS",
                format!("{:?} must be an absolute path without '..'", env.netns),
            ));
        }
        Ok(env)
    }

    /// The IPAM key of this attachment: `<container id>:<ifname>`.
    pub fn ipam_key(&self) -> String {
        format!("{}:{}", self.container_id, self.ifname)
    }
}

/// An absolute path, no `..` component, no NUL.
pub fn valid_netns_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains('\0') && !p.split('/').any(|c| c == "..") && p.len() < 4096
}

/// Whether `key` has the `<container id>:<ifname>` form that weft-net allocates under
/// (the router's own pseudo-containers, `weft:*` and `weave:*`, excepted).
pub fn is_attachment_key(key: &str) -> bool {
    key.split_once(':').is_some_and(|(id, ifname)| {
        valid_container_id(id) && valid_ifname(ifname) && id != "weft" && id != "weave"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> CniResult<Env> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const OK: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1.2_3"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/x"),
    ];

    fn with(k: &str, v: &str) -> CniResult<Env> {
        let mut p: Vec<(&str, &str)> = OK.iter().copied().filter(|(key, _)| *key != k).collect();
        p.push((k, v));
        env(&p)
    }

    #[test]
    fn valid_add_env_parses() {
        let e = env(&OK).unwrap();
        assert_eq!(e.verb, Verb::Add);
        assert_eq!(e.path, vec!["/opt/cni/bin", "/x"]);
        assert_eq!(e.ipam_key(), "abc-1.2_3:eth0");
    }

    #[test]
    fn bad_env_gets_spec_codes() {
        assert_eq!(with("CNI_COMMAND", "FOO").unwrap_err().code, INVALID_ENV);
        assert_eq!(with("CNI_COMMAND", "").unwrap_err().code, INVALID_ENV);
        assert_eq!(
            with("CNI_CONTAINERID", "").unwrap_err().code,
            UNKNOWN_CONTAINER
        );
        for id in ["-a", "a b", "a/b", "a:b", "ä"] {
            assert_eq!(
                with("CNI_CONTAINERID", id).unwrap_err().code,
                INVALID_ENV,
                "{id}"
            );
        }
        for ifname in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-16"] {
            assert_eq!(
                with("CNI_IFNAME", ifname).unwrap_err().code,
                INVALID_ENV,
                "{ifname}"
            );
        }
        for ns in ["", "relative", "/run/../x"] {
            assert_eq!(with("CNI_NETNS", ns).unwrap_err().code, INVALID_ENV, "{ns}");
        }
    }

    #[test]
    fn del_allows_empty_netns_and_version_needs_nothing() {
        let mut p: Vec<(&str, &str)> = OK.to_vec();
        p[0] = ("CNI_COMMAND", "DEL");
        p[2] = ("CNI_NETNS", "");
        assert!(env(&p).is_ok());
        let v = env(&[("CNI_COMMAND", "VERSION"), ("CNI_NETNS", "dummy")]).unwrap();
        assert_eq!(v.verb, Verb::Version);
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
    }

    #[test]
    fn attachment_keys() {
        assert!(is_attachment_key("abc:eth0"));
        assert!(!is_attachment_key("weft:expose"));
        assert!(!is_attachment_key("_x:eth0"));
        assert!(!is_attachment_key("plain"));
    }
}
