//! Command-line definitions and the subcommands that talk to a running router.

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use router::api::PeersRequest;
use router::client;
use std::path::{Path, PathBuf};

/// Weft: an encrypted layer-2 mesh network for containers.
#[derive(Parser, Debug)]
#[command(name = "weft", version = router::VERSION, disable_version_flag = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the router (in the background unless --foreground) and connect to PEERs.
    ///
    /// Example: weft launch --password-file /etc/weft/secret 198.18.0.1
    Launch(crate::launch::LaunchArgs),
    /// Stop the router. Bridges and attached containers stay in place.
    Stop {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Show the router's status: weft status [peers|connections|targets].
    ///
    /// Example: weft status connections
    Status {
        /// One of peers, connections, targets; the summary if left out.
        #[arg(value_parser = ["peers", "connections", "targets"])]
        what: Option<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Print the router's full report as JSON.
    Report {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Add connection targets: weft connect [--replace] PEER[:PORT]...
    ///
    /// Example: weft connect 198.18.0.3
    Connect {
        /// Replace the existing targets instead of adding to them.
        #[arg(long)]
        replace: bool,
        /// Peers to connect to.
        #[arg(required = true)]
        peers: Vec<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Remove connection targets: weft forget PEER[:PORT]...
    Forget {
        /// Peers to forget.
        #[arg(required = true)]
        peers: Vec<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Attach a network namespace (a container) to the overlay: weft attach CIDR... NETNS.
    ///
    /// NETNS is a name under /run/netns, an absolute path, or a PID. Prints the addresses.
    /// Example: weft attach 10.32.1.2/12 pod1
    Attach {
        /// Addresses (CIDR) then the namespace, last.
        #[arg(required = true, value_name = "CIDR... NETNS")]
        args: Vec<String>,
        /// Interface name inside the namespace.
        #[arg(long, default_value = "ethwe0")]
        ifname: String,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Remove addresses, or the whole interface, from a namespace: weft detach [CIDR...] NETNS.
    ///
    /// Example: weft detach pod1
    Detach {
        /// Addresses (CIDR) to remove, then the namespace, last; no address removes the interface.
        #[arg(required = true, value_name = "[CIDR...] NETNS")]
        args: Vec<String>,
        /// Interface name inside the namespace.
        #[arg(long, default_value = "ethwe0")]
        ifname: String,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Print the version.
    Version,
    /// Network secrets: weft secret generate.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretAction {
    /// Print a new random 256-bit network secret (64 hex digits).
    ///
    /// Example: weft secret generate > /etc/weft/secret && chmod 600 /etc/weft/secret
    Generate,
}

/// Runs one subcommand.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Launch(args) => crate::launch::launch(args),
        Command::Stop { dirs } => stop(&dirs.run_dir),
        Command::Status { what, dirs } => {
            let path = match what {
                Some(w) => format!("/status/{w}"),
                None => "/status".to_string(),
            };
            print_get(&dirs.run_dir, &path)
        }
        Command::Report { dirs } => print_get(&dirs.run_dir, "/report"),
        Command::Connect {
            replace,
            peers,
            dirs,
        } => post_peers(&dirs.run_dir, "/connect", peers, replace).map(|_| ()),
        Command::Forget { peers, dirs } => {
            // The router answers with how many targets it forgot.
            let body = post_peers(&dirs.run_dir, "/forget", peers, false)?;
            print!("{}", String::from_utf8_lossy(&body));
            Ok(())
        }
        Command::Attach { args, ifname, dirs } => {
            let body = attach_body(args, ifname, true)?;
            let answer = client::request(&dirs.run_dir, "POST", "/attach", Some(&body))?;
            let answer: router::api::AttachAnswer = serde_json::from_slice(&answer)?;
            let ips: Vec<&str> = answer
                .cidrs
                .iter()
                .filter(|c| !c.starts_with("fe80:"))
                .map(|c| c.split('/').next().unwrap_or(c))
                .collect();
            println!("{}", ips.join(" "));
            Ok(())
        }
        Command::Detach { args, ifname, dirs } => {
            let body = attach_body(args, ifname, false)?;
            client::request(&dirs.run_dir, "POST", "/detach", Some(&body))?;
            Ok(())
        }
        Command::Version => {
            println!("weft {}", router::VERSION);
            Ok(())
        }
        Command::Secret {
            action: SecretAction::Generate,
        } => {
            println!("{}", gossip::psk::generate_secret());
            Ok(())
        }
    }
}

/// `CIDR... NETNS` into the API's body, checking the CIDRs here for a quick, clear error.
fn attach_body(mut args: Vec<String>, ifname: String, need_cidr: bool) -> Result<Vec<u8>> {
    let netns = args.pop().unwrap_or_default();
    if netns.contains('/') && netns.parse::<datapath::netlink::LinkAddr>().is_ok() {
        bail!("the last argument must be the namespace (NETNS), not the address {netns}");
    }
    for c in &args {
        c.parse::<datapath::netlink::LinkAddr>()?;
    }
    if need_cidr && args.is_empty() {
        bail!(
            "give at least one address: weft attach CIDR... NETNS \
             (allocation without a CIDR comes with IPAM)"
        );
    }
    let body = router::api::AttachBody {
        netns,
        ifname,
        cidrs: args,
    };
    Ok(serde_json::to_vec(&body)?)
}

fn print_get(run_dir: &Path, path: &str) -> Result<()> {
    let body = client::request(run_dir, "GET", path, None)?;
    print!("{}", String::from_utf8_lossy(&body));
    if path == "/report" {
        println!();
    }
    Ok(())
}

fn post_peers(run_dir: &Path, path: &str, peers: Vec<String>, replace: bool) -> Result<Vec<u8>> {
    for p in &peers {
        router::config::resolve_peer(p).map_err(anyhow::Error::msg)?;
    }
    let body = serde_json::to_vec(&PeersRequest { peers, replace })?;
    Ok(client::request(run_dir, "POST", path, Some(&body))?)
}

fn stop(run_dir: &Path) -> Result<()> {
    client::request(run_dir, "POST", "/stop", None)?;
    let socket = router::config::socket_path(run_dir);
    for _ in 0..100 {
        if !socket.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!(
        "the router did not stop within 10 s (socket {} still exists)",
        socket.display()
    )
}

/// Reads the default nickname: the host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weft".to_string())
}
