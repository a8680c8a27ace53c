//! The `weft` command: one binary for the router daemon and its CLI.
//!
//! `main` parses the command line and dispatches; the daemon lives in the `router`
//! crate, and every other subcommand talks to a running router through its local API.
//! Exit codes: 0 ok, 1 error, 2 usage, 3 router not running.

mod cli;
mod launch;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<router::client::ClientError>() {
                Some(router::client::ClientError::NotRunning(_)) => 3,
                _ if e.downcast_ref::<cli::UsageError>().is_some() => 2,
                _ => 1,
            };
            eprintln!("weft: {e:#}");
            ExitCode::from(code)
        }
    }
}
