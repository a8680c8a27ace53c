//! Network namespaces: naming one, and running code inside it.
//!
//! `setns` changes the namespace of the calling *thread*, so it never runs on a tokio
//! worker: [`run_in`] starts a dedicated OS thread, enters the namespace there, runs the
//! closure (with a current-thread runtime for netlink when it needs one) and lets the
//! thread end, so no thread is ever left in a foreign namespace.

use nix::sched::{setns, CloneFlags};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where namespaces created with `ip netns add` live.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace as users name it: a name under /run/netns, a path, or a PID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetnsRef {
    /// `/run/netns/NAME`.
    Name(String),
    /// An absolute path to a namespace file (a bind mount, or `/proc/PID/ns/net`).
    Path(PathBuf),
    /// The namespace of process PID.
    Pid(u32),
}

/// Errors about namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The reference is not a valid name, absolute path or PID.
    #[error(
        "invalid network namespace {0:?}: give a name under /run/netns, an absolute path, or a PID"
    )]
    Invalid(String),
    /// Opening the namespace file failed.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Entering the namespace failed.
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: nix::Error,
    },
    /// The thread running in the namespace panicked.
    #[error("the thread working in network namespace {0} panicked")]
    Panicked(PathBuf),
}

impl FromStr for NetnsRef {
    type Err = NetnsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || NetnsError::Invalid(s.to_string());
        if s.is_empty() {
            return Err(invalid());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(NetnsRef::Pid).map_err(|_| invalid());
        }
        if s.starts_with('/') {
            let p = Path::new(s);
            if p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(invalid());
            }
            return Ok(NetnsRef::Path(p.to_path_buf()));
        }
        let ok = s.len() <= 255
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(NetnsRef::Name(s.to_string()))
        } else {
            Err(invalid())
        }
    }
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsRef::Name(n) => f.write_str(n),
            NetnsRef::Path(p) => write!(f, "{}", p.display()),
            NetnsRef::Pid(pid) => write!(f, "{pid}"),
        }
    }
}

impl NetnsRef {
    /// The namespace file.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            NetnsRef::Path(p) => p.clone(),
            NetnsRef::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    /// Opens the namespace file; the handle keeps the namespace alive while it is open.
    pub fn open(&self) -> Result<File, NetnsError> {
        let path = self.path();
        File::open(&path).map_err(|source| NetnsError::Open { path, source })
    }
}

/// Runs `f` on a new thread inside the namespace `ns` (opened with [`NetnsRef::open`]).
pub fn run_in<F, R>(ns: &File, label: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: label.to_path_buf(),
                source,
            })?;
            Ok(f())
        });
        handle
            .join()
            .unwrap_or_else(|_| Err(NetnsError::Panicked(label.to_path_buf())))
    })
}

/// Like [`run_in`], with a current-thread tokio runtime for async work (netlink).
pub fn run_async_in<F, Fut, R>(ns: &File, label: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = R>,
    R: Send,
{
    run_in(ns, label, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(f())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_paths_and_pids() {
        assert_eq!(
            "pod1".parse::<NetnsRef>().unwrap(),
            NetnsRef::Name("pod1".into())
        );
        assert_eq!("1234".parse::<NetnsRef>().unwrap(), NetnsRef::Pid(1234));
        assert_eq!(
            "/var/run/netns/x".parse::<NetnsRef>().unwrap(),
            NetnsRef::Path("/var/run/netns/x".into())
        );
        assert_eq!(NetnsRef::Pid(7).path(), PathBuf::from("/proc/7/ns/net"));
        assert_eq!(
            NetnsRef::Name("a".into()).path(),
            PathBuf::from("/run/netns/a")
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "..",
            "a/b",
            "/run/netns/../x",
            "a b",
            "x;rm",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<NetnsRef>().is_err(), "{bad}");
        }
    }
}
