//! Command-line definitions and the subcommands that talk to a running router.

pub use crate::shared::{hostname, Dirs, UsageError};
use anyhow::{bail, Context, Result};
use api::{AttachBody, Client, ClientError, PeersRequest};
use clap::{Parser, Subcommand};
use datapath::cidr::LinkAddr;
use std::path::{Path, PathBuf};

/// Weft: an encrypted layer-2 mesh network for containers.
#[derive(Parser, Debug)]
#[command(
    after_help = "Examples:\n  weft launch --password-file /etc/weft/secret 198.18.0.1\n  weft status\n  weft attach pod1\n\nExit codes: 0 ok, 1 error, 2 usage, 3 router not running."
)]
#[command(name = "weft", version = router::VERSION, disable_version_flag = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the router (in the background unless --foreground) and connect to PEERs.
    #[command(after_help = EX_LAUNCH)]
    Launch(Box<crate::launch::LaunchArgs>),
    /// Stop the router. Bridges and attached containers stay in place.
    #[command(after_help = "Example:\n  weft stop")]
    Stop {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Show the router's status: weft status [peers|connections|targets|ipam].
    #[command(
        after_help = "Examples:\n  weft status\n  weft status connections\n  weft status ipam\n\nThe layouts are weave's (`weave status`). Exit code 3 when no router runs."
    )]
    Status {
        /// One of peers, connections, targets, ipam; the summary if left out.
        #[arg(value_parser = ["peers", "connections", "targets", "ipam"])]
        what: Option<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Print the router's full report as JSON.
    #[command(
        after_help = "Examples:\n  weft report\n  weft report | jq '.router.connections[] | {address, state}'\n\nThe fields are described in docs/report.md, the schema is docs/report.schema.json."
    )]
    Report {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Add connection targets: weft connect [--replace] PEER[:PORT]...
    #[command(
        after_help = "Examples:\n  weft connect 198.18.0.3\n  weft connect --replace 198.18.0.3:6783 198.18.0.4"
    )]
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
    #[command(after_help = "Example:\n  weft forget 198.18.0.3")]
    Forget {
        /// Peers to forget.
        #[arg(required = true)]
        peers: Vec<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Attach a network namespace (a container) to the overlay: weft attach [CIDR...] NETNS.
    ///
    /// NETNS is a name under /run/netns, an absolute path, or a PID. Without a CIDR, an
    /// address is allocated from the range (IPAM), with NETNS as the container id.
    /// Prints the addresses.
    #[command(
        after_help = "Examples:\n  weft attach pod1                    (an address from the range, by IPAM)\n  weft attach 10.40.1.2/16 pod1\n  weft attach --ifname eth1 10.40.1.2/16 /proc/1234/ns/net"
    )]
    Attach {
        /// Addresses (CIDR) then the namespace, last.
        #[arg(required = true, value_name = "[CIDR...] NETNS")]
        args: Vec<String>,
        /// Interface name inside the namespace.
        #[arg(long, default_value = "ethwe0")]
        ifname: String,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Remove addresses, or the whole interface, from a namespace: weft detach [CIDR...] NETNS.
    ///
    /// The addresses allocated to NETNS (as the container id) are released.
    ///
    #[command(after_help = "Examples:\n  weft detach pod1\n  weft detach 10.40.1.2/16 pod1")]
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
    /// List attached interfaces, one per line: ID MAC CIDR... (weave's `weave ps`).
    ///
    /// The host's own line, `weft:expose BRIDGE-MAC CIDR...`, comes first when
    /// something is exposed. ID is the namespace as given to attach.
    #[command(
        after_help = "Example:\n  weft ps\n\nOutput: `weft:expose 7a:c4:8b:a1:e6:ad 10.32.0.1/12`, then `pod1 2e:0d:61:8f:3a:11 10.32.0.2/12`."
    )]
    Ps {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Give the host addresses on the overlay (on the `weft` bridge): weft expose [CIDR...]
    ///
    /// Without a CIDR, one is allocated (container id `weft:expose`). Idempotent.
    /// Prints the addresses.
    #[command(
        after_help = "Examples:\n  weft expose                         (an address from the range, by IPAM)\n  weft expose 10.40.0.1/16"
    )]
    Expose {
        /// Addresses with their prefix; allocated if left out.
        #[arg(value_name = "CIDR", value_parser = parse_cidr)]
        cidrs: Vec<LinkAddr>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Remove exposed addresses from the host: weft hide [CIDR...]; all if none given.
    ///
    /// Prints the addresses removed.
    #[command(after_help = "Examples:\n  weft hide\n  weft hide 10.40.0.1/16")]
    Hide {
        /// Addresses to hide; all exposed ones if left out.
        #[arg(value_name = "CIDR", value_parser = parse_cidr)]
        cidrs: Vec<LinkAddr>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Reclaim the IP space of dead peers: weft rmpeer PEER... (name or nickname).
    ///
    /// Only for peers that are gone for good; a quorum of reachable peers agrees on one
    /// heir. Prints weave's `N IPs taken over from PEER`.
    #[command(after_help = "Examples:\n  weft rmpeer h3\n  weft rmpeer 4a:0f:f6:ec:1c:93")]
    Rmpeer {
        /// Peers to remove.
        #[arg(required = true)]
        peers: Vec<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Print this host's public key, as a line for other hosts' --peer-keys lists.
    ///
    /// The key is created in the data dir if there is none yet, so lists can be made
    /// before the first launch.
    #[command(
        after_help = "Example:\n  weft identity >> /etc/weft/peers   (then copy the file to every host)"
    )]
    Identity {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// The --peer-keys list: `weft peers reload` reads it again.
    #[command(after_help = "Example:\n  weft peers reload")]
    Peers {
        /// `reload`: read the --peer-keys list again (as SIGHUP does); links of listed
        /// peers stay up, those of peers no longer listed close.
        #[arg(value_parser = ["reload"])]
        action: String,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Stop the router and remove everything weft made on this host.
    ///
    /// Deletes attached containers' interfaces, the TAP device and the `weft` bridge
    /// (exposed addresses go with it), the socket and pid file, and the identity key
    /// and attachments file and IPAM state: the host comes back as a new peer. Its IP
    /// space is first handed to a live peer (best effort). Safe to repeat.
    #[command(after_help = "Example:\n  weft reset")]
    Reset {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Install the CNI plugin: weft setup-cni [--copy] [--bin-dir DIR] [--conf-dir DIR].
    ///
    /// Links `weft-net` and `weft-ipam` to this binary in the bin dir and writes
    /// `10-weft.conflist` (weft-net, then portmap) in the conf dir. Idempotent.
    #[command(
        after_help = "Examples:\n  weft setup-cni --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d\n  weft setup-cni --copy --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d   (in a container)"
    )]
    SetupCni {
        /// Copy this binary as `weft-net` (and link `weft-ipam` to it) instead of
        /// linking both to this binary: for a container installing onto its host,
        /// where a link into the container would not resolve.
        #[arg(long)]
        copy: bool,
        /// Where CNI plugins live.
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// Where CNI network configurations live.
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
    },
    /// Print the version.
    #[command(after_help = "Example:\n  weft version")]
    Version,
    /// Network secrets: weft secret generate.
    #[command(
        after_help = "Example:\n  weft secret generate > /etc/weft/secret && chmod 600 /etc/weft/secret"
    )]
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretAction {
    /// Print a new random 256-bit network secret (64 hex digits).
    #[command(
        after_help = "Example:\n  weft secret generate > /etc/weft/secret && chmod 600 /etc/weft/secret"
    )]
    Generate,
}

/// Runs one subcommand.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Launch(args) => crate::launch::launch(*args),
        Command::SetupCni {
            copy,
            bin_dir,
            conf_dir,
        } => {
            let exe = std::env::current_exe()?;
            let how = match copy {
                true => cni::install::Install::Copy,
                false => cni::install::Install::Link,
            };
            let installed =
                cni::install::setup_with(how, &exe, &bin_dir, &conf_dir).with_context(|| {
                    format!(
                        "cannot install the CNI plugin into {} and {}",
                        bin_dir.display(),
                        conf_dir.display()
                    )
                })?;
            for path in installed {
                println!("installed {}", path.display());
            }
            Ok(())
        }
        Command::Stop { dirs } => stop(&dirs.run_dir),
        Command::Status { what, dirs } => {
            let path = match what {
                Some(w) => format!("{}/{w}", api::paths::STATUS),
                None => api::paths::STATUS.to_string(),
            };
            print_get(&dirs.run_dir, &path)
        }
        Command::Report { dirs } => print_get(&dirs.run_dir, api::paths::REPORT),
        Command::Connect {
            replace,
            peers,
            dirs,
        } => {
            let body = peers_body(peers, replace)?;
            Ok(client(&dirs).connect(&body)?)
        }
        Command::Forget { peers, dirs } => {
            // The router answers with how many targets it forgot.
            let body = peers_body(peers, false)?;
            print!("{}", client(&dirs).forget(&body)?);
            Ok(())
        }
        Command::Attach {
            mut args,
            ifname,
            dirs,
        } => {
            let client = client(&dirs);
            let netns = args.last().cloned().unwrap_or_default();
            let allocated = if args.len() == 1 && netns.parse::<LinkAddr>().is_err() {
                let addr = client.ipam_allocate(&netns, None)?;
                args.insert(0, addr.clone());
                Some(addr)
            } else {
                None
            };
            let body = attach_body(args, ifname, true)?;
            let answer = match client.attach(&body) {
                Ok(a) => a,
                Err(e) => {
                    if let Some(addr) = allocated {
                        let _ = client.ipam_release(&netns, Some(&addr));
                    }
                    return Err(e.into());
                }
            };
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
            let netns = args.last().cloned().unwrap_or_default();
            let cidrs: Vec<String> = args[..args.len().saturating_sub(1)].to_vec();
            let body = attach_body(args, ifname, false)?;
            let client = client(&dirs);
            client.detach(&body)?;
            if cidrs.is_empty() {
                client.ipam_release(&netns, None)?;
            } else {
                for c in &cidrs {
                    client.ipam_release(&netns, Some(c))?;
                }
            }
            Ok(())
        }
        Command::Ps { dirs } => {
            print!("{}", client(&dirs).ps()?);
            Ok(())
        }
        Command::Expose { cidrs, dirs } => {
            let client = client(&dirs);
            let cidrs = if cidrs.is_empty() {
                vec![client.ipam_allocate(EXPOSE_ID, None)?]
            } else {
                strings(&cidrs)
            };
            print_ips(&client.expose(&cidrs)?);
            Ok(())
        }
        Command::Hide { cidrs, dirs } => {
            let client = client(&dirs);
            let hidden = client.hide(&strings(&cidrs))?;
            for c in &hidden {
                let _ = client.ipam_release(EXPOSE_ID, Some(c));
            }
            print_ips(&hidden);
            Ok(())
        }
        Command::Rmpeer { peers, dirs } => {
            print!("{}", client(&dirs).ipam_rmpeer(&peers)?);
            Ok(())
        }
        Command::Identity { dirs } => {
            let path = router::config::identity_path(&dirs.data_dir);
            let identity = gossip::identity::Identity::load_or_create(&path)
                .with_context(|| format!("the identity key in {}", dirs.data_dir.display()))?;
            println!(
                "{} {}",
                gossip::peer_keys::to_hex(identity.public_key()),
                hostname()
            );
            Ok(())
        }
        Command::Peers { dirs, .. } => {
            print!("{}", client(&dirs).peers_reload()?);
            Ok(())
        }
        Command::Reset { dirs } => reset(&dirs),
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

/// Examples for `weft launch --help`.
const EX_LAUNCH: &str = "Examples:
  weft secret generate > /etc/weft/secret && chmod 600 /etc/weft/secret
  weft launch --password-file /etc/weft/secret 198.18.0.1 198.18.0.2
  weft launch --no-encryption --ipalloc-init consensus=3 198.18.0.1

Launch returns once the router answers; on a terminal it shows what it waits for
(connecting to peers, IPAM consensus) on one redrawn line, otherwise as plain lines.";

fn parse_cidr(s: &str) -> Result<LinkAddr, datapath::cidr::BadCidr> {
    s.parse()
}

fn strings(cidrs: &[LinkAddr]) -> Vec<String> {
    cidrs.iter().map(|c| c.to_string()).collect()
}

/// `10.40.0.1/16 fd00::1/64` -> `10.40.0.1 fd00::1`, on one line (nothing if empty).
fn print_ips(cidrs: &[String]) {
    if !cidrs.is_empty() {
        let ips: Vec<&str> = cidrs
            .iter()
            .map(|c| c.split('/').next().unwrap_or(c))
            .collect();
        println!("{}", ips.join(" "));
    }
}

/// Container id of the host's own allocation (`weft expose` without a CIDR).
const EXPOSE_ID: &str = "weft:expose";

/// `weft reset`: hand the IP space to a live peer (best effort), `weft stop` if a router
/// answers, then the clean-up by netlink here.
fn reset(dirs: &Dirs) -> Result<()> {
    match client(dirs).ipam_leave() {
        Ok(_) | Err(ClientError::NotRunning { .. }) => {}
        Err(e) => eprintln!("weft: warning: IP space not handed over: {e}"),
    }
    match stop(&dirs.run_dir) {
        Ok(()) => {}
        Err(e) if is_not_running(&e) => {}
        Err(e) => return Err(e.context("cannot stop the router, so nothing was reset")),
    }
    router::reset::reset(&dirs.run_dir, &dirs.data_dir)?;
    Ok(())
}

fn is_not_running(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ClientError>(),
        Some(ClientError::NotRunning { .. })
    )
}

/// `CIDR... NETNS` into the API's body, checking the CIDRs here for a quick, clear error.
fn attach_body(mut args: Vec<String>, ifname: String, need_cidr: bool) -> Result<AttachBody> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    let netns = args.pop().unwrap_or_default();
    if netns.contains('/') && netns.parse::<LinkAddr>().is_ok() {
        return Err(usage(format!(
            "the last argument must be the namespace (NETNS), not the address {netns}"
        )));
    }
    for c in &args {
        c.parse::<LinkAddr>().map_err(|e| usage(e.to_string()))?;
    }
    if need_cidr && args.is_empty() {
        return Err(usage(
            "give the namespace: weft attach [CIDR...] NETNS".into(),
        ));
    }
    Ok(AttachBody {
        netns,
        ifname,
        cidrs: args,
    })
}

/// The API client for the router of `dirs`.
fn client(dirs: &Dirs) -> Client {
    Client::new(&dirs.run_dir)
}

fn print_get(run_dir: &Path, path: &str) -> Result<()> {
    print!("{}", Client::new(run_dir).get_text(path)?);
    if path == "/report" {
        println!();
    }
    Ok(())
}

/// The body of `connect`/`forget`, checking each peer here for a quick, clear error.
fn peers_body(peers: Vec<String>, replace: bool) -> Result<PeersRequest> {
    for p in &peers {
        router::config::resolve_peer(p).map_err(anyhow::Error::msg)?;
    }
    Ok(PeersRequest { peers, replace })
}

fn stop(run_dir: &Path) -> Result<()> {
    Client::new(run_dir).stop()?;
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

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every subcommand's `--help` ends with an example that runs that subcommand.
    #[test]
    fn every_subcommand_has_an_example() {
        fn check(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(
                    help.starts_with("Example") && help.contains(&format!("\n  {path}")),
                    "`{path} --help` has no example running it: {help:?}"
                );
                check(sub, &path);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        check(&cmd, "weft");
    }
}
