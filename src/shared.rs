//! What the subcommands share: the directories every one takes ([`Dirs`]), the error
//! that means "wrong usage" (exit code 2) and the default nickname. It sits apart from
//! `cli` (the dispatcher) so that `launch` does not depend on `cli`, which calls it.

use clap::Args;
use std::path::PathBuf;

/// Where the router keeps its socket, pid file and log, and its persistent state.
#[derive(Args, Debug, Clone)]
pub struct Dirs {
    /// Run directory: socket, pid file, log.
    #[arg(long, env = "WEFT_RUN_DIR", default_value = "/run/weft", global = true)]
    pub run_dir: PathBuf,
    /// Data directory: identity key and persistent state.
    #[arg(
        long,
        env = "WEFT_DATA_DIR",
        default_value = "/var/lib/weft",
        global = true
    )]
    pub data_dir: PathBuf,
}

/// A mistake on the command line: exit code 2, as clap's own errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Reads the default nickname: the host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weft".to_string())
}
