//! The `weft` command: one binary for the router daemon and its CLI.
//!
//! `main` acts as the CNI plugin when invoked as `weft-net` or `weft-ipam` (`argv[0]`);
//! otherwise it parses the command line and dispatches; the daemon lives in the `router`
//! crate, and every other subcommand talks to a running router through its local API.
//! Exit codes: 0 ok, 1 error, 2 usage, 3 router not running.

mod cli;
mod heap;
mod launch;
mod progress;
mod shared;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Invoked as a CNI plugin (a symlink made by `weft setup-cni`).
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let base = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match base.as_str() {
        "weft-net" => return ExitCode::from(cni::main(cni::Mode::Net) as u8),
        "weft-ipam" => return ExitCode::from(cni::main(cni::Mode::Ipam) as u8),
        _ => {}
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<api::ClientError>() {
                Some(api::ClientError::NotRunning { .. }) => 3,
                _ if e.downcast_ref::<cli::UsageError>().is_some() => 2,
                _ => 1,
            };
            eprintln!("weft: {e:#}");
            ExitCode::from(code)
        }
    }
}
