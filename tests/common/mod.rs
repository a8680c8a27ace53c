//! Test support for the end-to-end tests: network namespaces ([`netns`]), `weft`
//! routers run as child processes ([`weft`]), and small helpers shared by both.
//!
//! Every namespace and every process made here is owned by a guard whose `Drop`
//! removes or ends it, also when a test panics. Nothing is ever added to the root
//! network namespace. The tests need root and panic (never skip) without it.
#![allow(dead_code)] // each test crate uses a different part of the harness

pub mod capture;
pub mod cni;
pub mod dns;
pub mod fake_ipam;
pub mod netns;
pub mod traffic;
pub mod weft;

pub use netns::Net;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Panics with a clear message unless the effective uid is 0. Tests call this through
/// [`Net::new`]; they never skip silently.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        panic!(
            "end-to-end tests need root (network namespaces); run as root: \
             `sudo scripts/test.sh`, or `cargo test` in a root shell (effective uid is {euid})"
        );
    }
}

/// Calls `cond` every `poll` until it returns true or `timeout` has passed. Returns how
/// long it took, or `None` on timeout (the condition is checked once more at the end).
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(poll.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// Runs `cmd` to completion, capturing stdout and stderr, but kills it (by its PID, as
/// our own child) and reaps it if it runs longer than `timeout`. A killed run returns
/// the output so far and a status that is not success.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if start.elapsed() >= timeout => {
                eprintln!(
                    "harness: {cmd:?} ran over {timeout:?}; killing pid {}",
                    child.id()
                );
                let _ = child.kill();
                break child.wait().expect("wait for killed child");
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs `cmd` (with a 60 s limit) and panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    if !out.status.success() {
        panic!(
            "command failed ({}): {cmd:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
