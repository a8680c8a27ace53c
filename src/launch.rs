//! `weft launch`: validate the options, then run the router in the foreground or as a
//! background daemon.
//!
//! Without `--foreground`, launch re-executes itself with `--foreground` in a new
//! process group, stdout/stdin detached, and waits until the router answers on its
//! socket or exits (then prints the reason it gave, and where its log is, on stderr and
//! exits 1). Once it answers, launch waits up to `--wait` seconds more for the peers
//! given on the command line to connect and for IPAM consensus, showing what it waits
//! for ([`crate::progress`]), then prints the peer name and exits 0. Everything that
//! can fail is checked by the router before it reports ready, so a launch that returns
//! 0 has a working router.

use crate::progress::{waiting_for, Progress};
use crate::shared::{hostname, Dirs, UsageError};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use router::config::{self, Config, Security};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long `launch` waits for the daemon to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Read the network secret from this file (create one with `weft secret generate`).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The network secret itself. Visible to every local user in the process list:
    /// prefer --password-file or WEFT_PASSWORD.
    #[arg(long, value_name = "SECRET")]
    pub password: Option<String>,
    /// Run without a network secret. Peers are still authenticated by key, but anyone
    /// who can reach the port may join, and the data plane is not encrypted. Given with
    /// a secret (--password-file, --password), the secret still guards the control
    /// links, and only the data plane goes unencrypted: peers that do the same may use
    /// the kernel fast path.
    #[arg(long)]
    pub no_encryption: bool,
    /// Display name of this peer (default: the host name).
    #[arg(long)]
    pub nickname: Option<String>,
    /// TCP port for control links (UDP too, for the data plane).
    #[arg(long, default_value_t = config::DEFAULT_PORT)]
    pub port: u16,
    /// Read-only status listener (`/status`, `/report`); "none" turns it off.
    #[arg(long, default_value = config::DEFAULT_STATUS_ADDR)]
    pub status_addr: String,
    /// Do not connect to peers learnt from other peers.
    #[arg(long)]
    pub no_discovery: bool,
    /// Cap on connections opened by discovery (0 = no cap).
    #[arg(long, default_value_t = config::DEFAULT_CONN_LIMIT)]
    pub conn_limit: usize,
    /// Overlay MTU of the bridge and attached interfaces (default: what a 1500-byte
    /// underlay leaves after the sleeve's overhead, 1408).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1280..=65000))]
    pub mtu: Option<u32>,
    /// Sleeve rekey interval in seconds (default 120; tests make it short).
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub rekey_interval: Option<u64>,
    /// Keepalive interval of a confirmed sleeve path in seconds, which holds UDP NAT
    /// mappings open (default 25; tests make it short).
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub nat_keepalive: Option<u64>,
    /// Address range for automatic allocation (IPAM), as a CIDR.
    #[arg(long, value_name = "CIDR", default_value = "10.32.0.0/12", value_parser = parse_range)]
    pub ipalloc_range: router::ipam::Cidr,
    /// How the IP allocation ring starts: consensus[=N] (default N: the peers given here
    /// plus one; with only --peers-from-dns, the hosts the DNS answer names, this one
    /// included), seed=NAME,.. (the initial peers' names as `weft status` shows them, or
    /// their full peer_id from `weft report`; the same list everywhere) or observer.
    #[arg(long, value_name = "MODE")]
    pub ipalloc_init: Option<String>,
    /// Connect to every address NAME resolves to through the host's resolver, at start
    /// and every 30 s, this host's own left out (repeatable). A headless Kubernetes
    /// Service over the Weft pods, or any name with several A/AAAA records. With no
    /// PEER, the answer also sets the IPAM consensus quorum.
    #[arg(long, value_name = "NAME[:PORT]")]
    pub peers_from_dns: Vec<router::dns_peers::DnsName>,
    /// Admit only peers whose static key is listed in FILE (or in the files of a
    /// directory): one key per line as 64 hex digits (`weft identity` on each host
    /// prints its line), then an optional name; `#` starts a comment. Reloaded by
    /// SIGHUP or `weft peers reload`, without dropping the links of listed peers.
    #[arg(long, value_name = "FILE|DIR")]
    pub peer_keys: Option<PathBuf>,
    /// Reclaim the address space of a peer that has been unreachable for this long
    /// (e.g. 30s, 10m, 1h) and that no --peers-from-dns answer names any more: the
    /// ring's quorum picks one heir (as `weft rmpeer`). A peer still named by DNS is
    /// never reclaimed. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub reclaim_after: Option<Duration>,
    /// Underlay subnets whose peers may use the unencrypted kernel VXLAN fast path with
    /// this host, as CIDRs separated by commas; both ends must trust each other.
    #[arg(long, value_name = "CIDR,..", value_delimiter = ',')]
    pub trusted_subnets: Vec<datapath::cidr::LinkAddr>,
    /// Never use the kernel VXLAN fast path: every connection uses the sleeve.
    #[arg(long)]
    pub no_fastpath: bool,
    /// Open the TAP device without offloads: plain frames, one at a time, instead of
    /// TCP superframes that the sleeve segments and coalesces.
    #[arg(long)]
    pub no_offloads: bool,
    /// Data-plane threads, each with a queue of the TAP device and a sleeve socket: one
    /// flow is handled on one thread, different flows on several (default: one per
    /// core, at most 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub dataplane_threads: Option<u8>,
    /// Admit hosts that run no Weft onto the overlay through a hand-made kernel VXLAN
    /// device (UDP 6784, VNI 6784): their addresses may send VXLAN here, and this
    /// host's VXLAN device floods to them. Comma-separated addresses.
    #[arg(long, value_name = "IP,..", value_delimiter = ',')]
    pub fastdp_admit: Vec<std::net::IpAddr>,
    /// Do not masquerade: by default, while the host is exposed, traffic from the
    /// overlay that leaves through another interface for an address outside the
    /// overlay takes the host's address (so pods reach the outside world).
    #[arg(long)]
    pub no_masquerade: bool,
    /// Expose the host on the overlay once the router runs, as `weft expose` does:
    /// `--expose` alone takes an address from IPAM, `--expose=CIDR,..` these
    /// addresses. Idempotent.
    #[arg(
        long,
        value_name = "CIDR,..",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = ""
    )]
    pub expose: Option<String>,
    /// Serve Prometheus metrics (`/metrics`, nothing else) on this address, to any
    /// client, e.g. 0.0.0.0:6781 for scrapes from other machines (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// How much the router logs: error, warn, info, debug or trace. Without it,
    /// WEFT_LOG (a tracing filter such as `info,gossip=debug`) or info.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Stay attached: log to stderr and do not return until the router stops.
    #[arg(long)]
    pub foreground: bool,
    /// In the background mode, how long to wait (showing progress) for the peers given
    /// here to connect and for IPAM consensus, after the router answers; 0: do not wait.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub wait: u64,
    #[command(flatten)]
    pub dirs: Dirs,
    /// Peers to connect to, as HOST[:PORT].
    pub peers: Vec<String>,
}

impl LaunchArgs {
    fn into_config(self) -> Result<Config> {
        let explicit_secret = self.password_file.is_some() || self.password.is_some();
        let security = if self.no_encryption && !explicit_secret {
            Security::NoEncryption
        } else if let Some(path) = &self.password_file {
            let secret = gossip::psk::read_secret_file(path)?;
            Security::Secret(secret)
        } else if let Ok(env) = std::env::var("WEFT_PASSWORD") {
            Security::Secret(Zeroizing::new(env.trim().as_bytes().to_vec()))
        } else if let Some(p) = &self.password {
            Security::Secret(Zeroizing::new(p.as_bytes().to_vec()))
        } else {
            bail!(
                "no network secret given. Create one with `weft secret generate > FILE` \
                 (chmod 600) and pass --password-file FILE (or set WEFT_PASSWORD), \
                 or run with --no-encryption on every host"
            );
        };
        if let Security::Secret(secret) = &security {
            gossip::psk::check_strength(secret)?;
        }
        let mut peers = Vec::new();
        for p in &self.peers {
            peers.extend(config::resolve_peer(p).map_err(|e| anyhow!(e))?);
        }
        let status_addr = match self.status_addr.as_str() {
            "none" | "" => None,
            s => Some(s.parse::<SocketAddr>().with_context(|| {
                format!("--status-addr {s:?} is not an address like 127.0.0.1:6782")
            })?),
        };
        let nickname = self.nickname.unwrap_or_else(hostname);
        if nickname.is_empty() || nickname.len() > 64 || nickname.chars().any(char::is_control) {
            bail!("--nickname must be 1 to 64 printable characters");
        }
        // Weave's default quorum is the peers given plus this one; with only DNS names,
        // it is the hosts their answer names (so that routers started together agree).
        let dns = resolve_dns(&self.peers_from_dns)?;
        let others = if self.peers.is_empty() && !self.peers_from_dns.is_empty() {
            let ips: Vec<std::net::IpAddr> = dns.iter().flat_map(|(_, ips)| ips.clone()).collect();
            router::dns_peers::quorum(&ips, router::dns_peers::is_local) - 1
        } else {
            self.peers.len()
        };
        // The answers, this host's own addresses left out, become named targets: they
        // follow the answer while the router runs, and are not stored as the user's.
        let peers_from_dns = dns
            .into_iter()
            .map(|(name, ips)| {
                let ips = ips
                    .into_iter()
                    .filter(|ip| !router::dns_peers::is_local(ip))
                    .collect();
                (name, ips)
            })
            .collect();
        let spec = self.ipalloc_init.as_deref().unwrap_or("consensus");
        let ipalloc_init = config::parse_ipalloc_init(spec, others)
            .map_err(|e| anyhow::Error::new(UsageError(e)))?;
        let expose = self.expose.as_deref().map(parse_expose).transpose()?;
        Ok(Config {
            ipalloc_range: self.ipalloc_range,
            ipalloc_init,
            security,
            nickname,
            port: self.port,
            status_addr,
            data_dir: self.dirs.data_dir,
            run_dir: self.dirs.run_dir,
            discovery: !self.no_discovery,
            conn_limit: self.conn_limit,
            peers,
            mtu: self.mtu,
            rekey_interval: self
                .rekey_interval
                .map(|s| std::time::Duration::from_secs(s.max(1))),
            nat_keepalive: self
                .nat_keepalive
                .map(|s| std::time::Duration::from_secs(s.max(1))),
            trusted_subnets: self.trusted_subnets,
            no_fastpath: self.no_fastpath,
            no_offloads: self.no_offloads,
            dataplane_threads: self
                .dataplane_threads
                .map_or_else(router::config::default_dataplane_threads, usize::from),
            plaintext_dataplane: self.no_encryption,
            fastdp_admit: self.fastdp_admit,
            masquerade: !self.no_masquerade,
            expose,
            metrics_addr: self.metrics_addr,
            peers_from_dns,
            peer_keys: self.peer_keys,
            reclaim_after: self.reclaim_after,
        })
    }
}

/// How long launch waits for the DNS names to answer with at least one address.
const DNS_WAIT: Duration = Duration::from_secs(30);

/// Each `--peers-from-dns` name with its answer; waits up to [`DNS_WAIT`] for the names
/// to give at least one address: a quorum taken from an empty answer would let routers
/// that start together seed separate rings.
fn resolve_dns(
    names: &[router::dns_peers::DnsName],
) -> Result<Vec<(router::dns_peers::DnsName, Vec<std::net::IpAddr>)>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let start = std::time::Instant::now();
    loop {
        let mut answers = Vec::new();
        let mut errors = Vec::new();
        for name in names {
            match router::dns_peers::resolve(name) {
                Ok(ips) => answers.push((name.clone(), ips)),
                Err(e) => errors.push(format!("{}: {e}", name.host)),
            }
        }
        if answers.iter().any(|(_, ips)| !ips.is_empty()) {
            return Ok(answers);
        }
        if start.elapsed() >= DNS_WAIT {
            bail!(
                "--peers-from-dns: no address from {} after {} s ({}); check the name and \
                 the resolver",
                names
                    .iter()
                    .map(|n| n.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                DNS_WAIT.as_secs(),
                if errors.is_empty() {
                    "empty answer".to_string()
                } else {
                    errors.join("; ")
                }
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// What happens: connections, fallbacks, IPAM (the default).
    Info,
    /// Details for debugging.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The tracing filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `--expose=CIDR,..`: empty for an address from IPAM.
fn parse_expose(spec: &str) -> Result<Vec<datapath::cidr::LinkAddr>, UsageError> {
    spec.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.parse().map_err(|e| UsageError(format!("--expose: {e}"))))
        .collect()
}

fn parse_range(s: &str) -> Result<router::ipam::Cidr, String> {
    let cidr: router::ipam::Cidr = s.parse().map_err(|e| format!("{e}"))?;
    if cidr.prefix > 30 || cidr.prefix < 8 {
        return Err(format!(
            "{cidr} is too {}: give a range from /8 to /30",
            if cidr.prefix > 30 { "small" } else { "large" }
        ));
    }
    Ok(cidr)
}

/// `weft launch`.
pub fn launch(args: LaunchArgs) -> Result<()> {
    if args.password.is_some() {
        eprintln!(
            "weft: warning: --password is visible to other users in the process list; \
             prefer --password-file"
        );
    }
    if args.foreground {
        let daemon = std::env::var_os("WEFT_DAEMON").is_some();
        let run_dir = args.dirs.run_dir.clone();
        let log_level = args.log_level.map(LogLevel::directive);
        let config = args.into_config()?;
        router::daemon::init_logging(&run_dir, !daemon, log_level);
        return run_foreground(config, daemon);
    }
    // Validate here too, so that option errors come back at once and plainly.
    let run_dir = args.dirs.run_dir.clone();
    let wait = Duration::from_secs(args.wait);
    args.into_config()?;
    daemonize(&run_dir, wait)
}

/// First word of the line a daemon child writes on its stdout when it is ready.
const READY: &str = "READY ";
/// First word of the line a daemon child writes when it cannot start.
const FAILED: &str = "ERROR ";

fn run_foreground(config: Config, daemon: bool) -> Result<()> {
    // The control plane runs on this one thread: its work per message is small, and a
    // pool of workers (one per core) would add a thread, a malloc arena and a cross-thread
    // wakeup per message. The data plane has threads of its own, and blocking work
    // (the store, Argon2, host networking) goes to the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    if daemon {
        std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    }
    runtime.spawn(crate::heap::release_free_pages());
    let result = runtime.block_on(router::daemon::run(config, |name| {
        // The daemon's stdout is the pipe its launcher waits on; attached, it is the user's.
        if daemon {
            println!("{READY}{name}");
        } else {
            println!("{name}");
        }
    }));
    match &result {
        // After start: the launcher no longer reads our stdout; the log says it all.
        Err(e @ router::daemon::RouterError::TaskEnded(_)) => tracing::error!("{e}"),
        Err(e) => {
            tracing::error!("cannot start: {e}");
            if daemon {
                println!("{FAILED}{e}");
            }
        }
        Ok(()) => {}
    }
    Ok(result?)
}

/// Starts `weft launch --foreground` detached, waits for its `READY`/`ERROR` line, then
/// (up to `wait`) for its peers and IPAM consensus, showing progress on stderr.
fn daemonize(run_dir: &std::path::Path, wait: Duration) -> Result<()> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the weft executable")?;
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    argv.push("--foreground".into());
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create the run dir {}", run_dir.display()))?;
    let log = config::log_path(run_dir);
    let log_file = router::daemon::create_nofollow(&log, true).with_context(|| {
        format!(
            "cannot open the log {} (if it is a symbolic link, remove it)",
            log.display()
        )
    })?;
    let mut child = Command::new(exe)
        .args(&argv)
        .env("WEFT_DAEMON", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .context("cannot start the router process")?;
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    show(
        &mut progress,
        &format!("starting the router (log: {})", log.display()),
    );
    let stdout = child
        .stdout
        .take()
        .context("no pipe to the router process")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = std::io::BufReader::new(stdout).lines().next();
        let _ = tx.send(line.and_then(|l| l.ok()).unwrap_or_default());
    });
    let line = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            eprint!("{}", progress.finish());
            bail!(
                "the router did not become ready within {} s; see its log, {}",
                READY_TIMEOUT.as_secs(),
                log.display()
            );
        }
    };
    if let Some(name) = line.strip_prefix(READY) {
        settle(run_dir, wait, &mut progress);
        eprint!("{}", progress.finish());
        println!("{name}");
        return Ok(());
    }
    let status = child.wait()?;
    eprint!("{}", progress.finish());
    match line.strip_prefix(FAILED) {
        Some(reason) => Err(anyhow!(
            "the router could not start: {reason}\n(details in its log, {})",
            log.display()
        )),
        None => bail!(
            "the router exited during startup ({status}); see its log, {}",
            log.display()
        ),
    }
}

fn show(progress: &mut Progress, line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr();
    let _ = err.write_all(progress.update(line).as_bytes());
    let _ = err.flush();
}

/// Waits up to `wait` for the router's explicit peers to connect and for IPAM
/// consensus, showing what is still missing. Not a failure when time runs out: the
/// router keeps trying in the background, and the last state is printed with a hint.
fn settle(run_dir: &std::path::Path, wait: Duration, progress: &mut Progress) {
    let start = std::time::Instant::now();
    let mut last = None;
    while start.elapsed() < wait {
        let report = api::Client::new(run_dir)
            .get::<router::status::Report>(api::paths::REPORT)
            .ok();
        let Some(report) = report else { break };
        match waiting_for(&report) {
            Some(line) => {
                show(progress, &line);
                last = Some(line);
            }
            None => return,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if let Some(line) = last {
        eprint!("{}", progress.finish());
        eprintln!(
            "weft: still {line} after {} s; the router keeps trying in the background \
             (check with `weft status` and `weft status connections`)",
            wait.as_secs()
        );
    }
}

/// `--reclaim-after`: `N` seconds, or `Ns`, `Nm`, `Nh`; between 1 s and 30 days.
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m or 1h"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a duration like 30s, 10m or 1h"))?;
    if !(1..=30 * 86_400).contains(&secs) {
        return Err(format!("{s:?}: give between 1s and 720h"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in [
            "",
            "0s",
            "s",
            "10d",
            "-1s",
            "1.5h",
            "99999999999999999999h",
            "721h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
