//! The real `weft` binary under test: one-shot commands run in a host namespace, the
//! [`Router`] guard (a `weft launch --foreground` child process we own and kill by PID),
//! parsers for the `weft status` text layouts, and /proc figures (RSS, CPU time).

use super::netns::{Host, Net};
use super::{run_with_timeout, tail, wait_until};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

/// Path of the `weft` binary built by cargo for these tests.
pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// How long a one-shot `weft` command may run before it is killed.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a launched router has to answer `weft status`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Net {
    /// Runs `weft args` in host `hX`'s namespace with that host's `WEFT_RUN_DIR` and
    /// `WEFT_DATA_DIR`.
    pub fn weft(&self, host: usize, args: &[&str]) -> Output {
        let h = self.host(host);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns, WEFT]).args(args);
        host_env(&mut cmd, h);
        run_with_timeout(&mut cmd, CMD_TIMEOUT)
    }

    /// `weft args` on host `hX`; panics with the output unless it exits 0. Returns stdout.
    /// `setpriv --reuid=65534 --regid=65534 --clear-groups weft args` in host `hX`: the
    /// CLI as user nobody.
    pub fn weft_as_nobody(&self, host: usize, args: &[&str]) -> Output {
        let h = self.host(host);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns, "setpriv"])
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", WEFT])
            .args(args);
        host_env(&mut cmd, h);
        run_with_timeout(&mut cmd, CMD_TIMEOUT)
    }

    pub fn weft_ok(&self, host: usize, args: &[&str]) -> String {
        let out = self.weft(host, args);
        assert!(
            out.status.success(),
            "h{host}: weft {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `weft secret generate`, checks it prints 64 hex characters, and writes the
    /// secret to `<test dir>/<file>` with mode 0600. Returns the path.
    pub fn new_secret(&self, file: &str) -> PathBuf {
        let out = run_with_timeout(Command::new(WEFT).args(["secret", "generate"]), CMD_TIMEOUT);
        let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "weft secret generate failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
            "weft secret generate printed {secret:?}, not 64 hex characters"
        );
        let path = self.dir().join(file);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("create secret file");
        writeln!(f, "{secret}").expect("write secret");
        let mode = std::fs::metadata(&path)
            .expect("stat secret")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "secret file mode");
        path
    }
}

impl Net {
    /// `weft attach CIDR... NETNS` on host `hX`; panics unless it succeeds and prints
    /// the first address.
    pub fn attach(&self, host: usize, cidrs: &[&str], ns: &str) {
        let mut args = vec!["attach"];
        args.extend_from_slice(cidrs);
        args.push(ns);
        let printed = self.weft_ok(host, &args);
        let first = cidrs[0].split('/').next().unwrap_or("");
        assert!(
            printed.contains(first),
            "h{host}: weft attach printed {printed:?}"
        );
    }

    /// Waits (up to 60 s) until each `(host, n)` has exactly `n` established encrypted
    /// connections (UDP path confirmed both ways). Returns how long it took; panics with
    /// every host's `status connections` otherwise.
    pub fn wait_established(&self, expect: &[(usize, usize)]) -> Duration {
        let established = |h: usize| {
            let out = self.weft(h, &["status", "connections"]);
            let text = String::from_utf8_lossy(&out.stdout);
            parse_connections(&text).map_or(0, |conns| {
                conns
                    .iter()
                    .filter(|c| c.state == "established" && c.encrypted == Some(true))
                    .count()
            })
        };
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            expect.iter().all(|&(h, n)| established(h) == n)
        })
        .unwrap_or_else(|| {
            let status: Vec<String> = expect
                .iter()
                .map(|&(h, _)| {
                    format!(
                        "h{h}:\n{}",
                        String::from_utf8_lossy(&self.weft(h, &["status", "connections"]).stdout)
                    )
                })
                .collect();
            panic!("connections not established as expected {expect:?}: {status:#?}")
        })
    }
}

/// Launches h1, then h2 and h3 with h1 as their peer (h3 finds h2 by discovery), and
/// waits until every router has two established (UDP path confirmed) encrypted
/// connections.
pub fn three_routers(net: &Net, auth: &Auth) -> Vec<Router> {
    const H1: &str = "198.18.0.1";
    let routers = vec![
        Router::launch(net, 1, auth, &[]),
        Router::launch(net, 2, auth, &[H1]),
        Router::launch(net, 3, auth, &[H1]),
    ];
    let took = net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    println!(
        "e2e: 3 routers meshed with confirmed UDP paths in {:.2} s",
        took.as_secs_f64()
    );
    routers
}

fn host_env(cmd: &mut Command, h: &Host) {
    cmd.env("WEFT_RUN_DIR", &h.run_dir)
        .env("WEFT_DATA_DIR", &h.data_dir);
}

/// How a router authenticates its control links.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `--password-file F`.
    PasswordFile(PathBuf),
    /// `--no-encryption`.
    NoEncryption,
}

/// A running router: `weft launch --foreground` in a host namespace, our child process.
/// `Drop` kills it by PID (SIGKILL) and reaps it.
pub struct Router {
    /// Host index.
    pub host: usize,
    /// Peer name with nickname, from `weft status` (e.g. `4a:0f:f6:ec:1c:93(h1)`).
    pub name: String,
    /// The router's run dir (`weft.log`, `weft.pid`, `weft.sock`).
    pub run_dir: PathBuf,
    /// File that collects the child's stdout and stderr (appended across relaunches).
    pub output: PathBuf,
    child: Child,
}

impl Router {
    /// Launches a router on host `hX` with nickname `hX` and the given peers, waits until
    /// `weft status` answers, and reads its peer name. Panics (after killing it) if it
    /// exits or is not ready within 30 s.
    pub fn launch(net: &Net, host: usize, auth: &Auth, peers: &[&str]) -> Router {
        Router::launch_with(net, host, auth, &[], peers)
    }

    /// Like [`Router::launch`], with extra launch options (e.g. `--rekey-interval 2`).
    pub fn launch_with(
        net: &Net,
        host: usize,
        auth: &Auth,
        options: &[&str],
        peers: &[&str],
    ) -> Router {
        let mut args = vec!["launch".to_string(), "--foreground".into()];
        args.extend(options.iter().map(|o| o.to_string()));
        match auth {
            Auth::PasswordFile(p) => {
                args.extend(["--password-file".into(), p.display().to_string()])
            }
            Auth::NoEncryption => args.push("--no-encryption".into()),
        }
        args.extend(["--nickname".into(), format!("h{host}")]);
        args.extend(peers.iter().map(|p| p.to_string()));
        Router::launch_args(net, host, &args)
    }

    /// Launches `weft <args>` (which must include `launch --foreground`) on host `hX`.
    pub fn launch_args(net: &Net, host: usize, args: &[String]) -> Router {
        Router::launch_args_env(net, host, args, &[])
    }

    /// [`Router::launch_args`] with extra environment variables for the router.
    pub fn launch_args_env(
        net: &Net,
        host: usize,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Router {
        let h = net.host(host);
        let output = net.dir().join(format!("h{host}.out"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&output)
            .expect("open output file");
        let err = out.try_clone().expect("clone output file");
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs weft in place, so the child's PID is weft's PID.
        cmd.args(["netns", "exec", &h.ns, WEFT]).args(args);
        host_env(&mut cmd, h);
        cmd.envs(env.iter().copied());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn weft on h{host}: {e}"));
        let mut router = Router {
            host,
            name: String::new(),
            run_dir: h.run_dir.clone(),
            output,
            child,
        };
        let mut exited = None;
        let ready = wait_until(READY_TIMEOUT, Duration::from_millis(100), || {
            if let Some(status) = router.child.try_wait().expect("try_wait") {
                exited = Some(status);
                return true;
            }
            net.weft(host, &["status"]).status.success()
        });
        if let Some(status) = exited {
            panic!(
                "h{host}: weft {} exited before it was ready ({status}); log:\n{}",
                args.join(" "),
                tail(&router.log(), 40)
            );
        }
        if ready.is_none() {
            panic!(
                "h{host}: weft status did not succeed within {READY_TIMEOUT:?}; log:\n{}",
                tail(&router.log(), 40)
            );
        }
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", router.pid())).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "weft",
            "h{host}: child pid {} is not the weft process",
            router.pid()
        );
        let status = net.weft_ok(host, &["status"]);
        router.name = status_field(&status, "Name")
            .unwrap_or_else(|| panic!("h{host}: no `Name:` line in weft status:\n{status}"));
        router
    }

    /// PID of the router process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peer name without the nickname (`4a:0f:f6:ec:1c:93`).
    pub fn bare_name(&self) -> &str {
        bare_name(&self.name)
    }

    /// Waits up to `timeout` for the router to exit by itself (after `weft stop` or
    /// `weft reset`) and reaps it; its status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, Duration::from_millis(50), || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status
    }

    /// Kills the router with SIGKILL (`kill -9` by PID), reaps it and returns its status.
    pub fn kill9(mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for killed router")
    }

    /// Everything the router logged: `<run-dir>/weft.log` (if any) and the captured
    /// stdout/stderr of the child.
    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(self.run_dir.join("weft.log")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(&self.output).unwrap_or_default());
        text
    }

    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The router's own resident memory in KiB (`RssAnon`: heap, stacks). The rest of
    /// `VmRSS` is mostly the binary's pages, shared by every router started from one file.
    pub fn rss_anon_kib(&self) -> u64 {
        self.status_kib("RssAnon:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// CPU time used so far by the router and the processes it ran and waited for
    /// (`nft`): utime + stime + cutime + cstime of /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15, cutime 16,
        // cstime 17.
        let rest = &stat[stat.rfind(')').expect("comm in stat") + 1..];
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|v| v.parse::<u64>().expect("tick count"))
            .sum();
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
    }
}

impl Router {
    /// CPU time used so far by each of the process's threads whose name starts with
    /// `prefix` (as the kernel keeps it: the first 15 bytes), busiest first.
    pub fn thread_cpu_times(&self, prefix: &str) -> Vec<Duration> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut times: Vec<Duration> = std::fs::read_dir(&dir)
            .expect("read /proc/PID/task")
            .filter_map(|t| {
                let path = t.ok()?.path();
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                if !comm.starts_with(prefix) {
                    return None;
                }
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                let rest = &stat[stat.rfind(')')? + 1..];
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                let ticks = f.first()? + f.get(1)?;
                Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
            })
            .collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> u64 {
    let out = run_with_timeout(Command::new("getconf").arg("CLK_TCK"), CMD_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100)
}

/// Value of a `Key: value` line of `weft status` (weave layout: keys right-aligned).
pub fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// `4a:0f:f6:ec:1c:93(h1)` -> `4a:0f:f6:ec:1c:93`.
pub fn bare_name(name: &str) -> &str {
    name.split('(').next().unwrap_or(name)
}

/// One line of `weft status connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// `->` (we dialled) or `<-`.
    pub outbound: bool,
    /// Remote address and port.
    pub address: String,
    /// connecting, failed, retrying, pending, established, relayed (through a
    /// neighbour) or punched (directly, through a hole punched in both NATs).
    pub state: String,
    /// `Some(true)` for `encrypted`, `Some(false)` for `unencrypted`, `None` if absent.
    pub encrypted: Option<bool>,
    /// Peer `name(nick)` of an established, pending, punched or relayed line (for a
    /// relayed one, the peer reached, not the relay).
    pub peer: Option<String>,
    /// The whole line.
    pub line: String,
}

/// Parses `weft status connections` (weave layout): `{->|<-} %-21v(address)
/// %-11v(state) [encrypted|unencrypted padded to 11] <info>`.
pub fn parse_connections(text: &str) -> Result<Vec<Conn>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_connection)
        .collect()
}

fn parse_connection(line: &str) -> Result<Conn, String> {
    let bad = |why: &str| format!("bad connection line ({why}): {line:?}");
    let outbound = match line.get(..3) {
        Some("-> ") => true,
        Some("<- ") => false,
        _ => return Err(bad("must start with `-> ` or `<- `")),
    };
    let mut words = line[3..].split_whitespace();
    let address = words.next().ok_or_else(|| bad("no address"))?.to_string();
    let state = words.next().ok_or_else(|| bad("no state"))?.to_string();
    // Column layout (weave's template): `-> ` + address padded to 21 + ` ` + state
    // padded to 11 + ` ` + `encrypted`/`unencrypted` padded to 11 + ` ` + info.
    if line.get(3..24).map(str::trim_end) != Some(address.as_str()) || !line[24..].starts_with(' ')
    {
        return Err(bad("address must be padded to 21 columns"));
    }
    if !line
        .get(25..)
        .is_some_and(|r| r.starts_with(state.as_str()))
    {
        return Err(bad("state must start at column 25"));
    }
    let rest: Vec<&str> = words.collect();
    let encrypted = match rest.first() {
        Some(&"encrypted") => Some(true),
        Some(&"unencrypted") => Some(false),
        _ => None,
    };
    if encrypted.is_some() {
        if !line.get(37..).is_some_and(|r| r.starts_with(rest[0])) {
            return Err(bad("state must be padded to 11 columns"));
        }
        if rest.len() > 1
            && !line
                .get(48..)
                .is_some_and(|r| r.starts_with(' ') && r[1..].starts_with(rest[1]))
        {
            return Err(bad(
                "`encrypted`/`unencrypted` must be padded to 11 columns",
            ));
        }
    }
    let peer = match state.as_str() {
        "established" | "pending" | "punched" => rest
            .iter()
            .rev()
            .find(|w| w.contains('('))
            .map(|w| w.to_string()),
        // `sleeve PEER(nick) via RELAY(nick) ... path: relayed via RELAY(nick)`.
        "relayed" => rest.iter().find(|w| w.contains('(')).map(|w| w.to_string()),
        _ => None,
    };
    Ok(Conn {
        outbound,
        address,
        state,
        encrypted,
        peer,
        line: line.to_string(),
    })
}

/// One peer block of `weft status peers`: its `name(nick)` line and its connection
/// lines (`   -> addr  name(nick)  established`), trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerBlock {
    /// `name(nick)`.
    pub name: String,
    /// The indented connection lines, trimmed.
    pub connections: Vec<String>,
}

/// Parses `weft status peers`.
pub fn parse_peers(text: &str) -> Result<Vec<PeerBlock>, String> {
    let mut peers: Vec<PeerBlock> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with(' ') {
            let peer = peers
                .last_mut()
                .ok_or_else(|| format!("connection line before any peer: {line:?}"))?;
            peer.connections.push(line.trim().to_string());
        } else {
            peers.push(PeerBlock {
                name: line.trim().to_string(),
                connections: Vec::new(),
            });
        }
    }
    Ok(peers)
}
