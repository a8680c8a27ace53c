//! End-to-end tests of the kernel VXLAN fast path (issue 6): chosen per connection,
//! visible in `status connections`, falling back to sleeve with a reason and coming
//! back by itself, never used by an encrypted connection without mutual trust, and
//! guarded by a firewall rule that drops and counts VXLAN from anyone else.

mod common;

use common::traffic::ping;
use common::weft::{Auth, Router};
use common::{wait_until, Net};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const H1: &str = "198.18.0.1";
const H2: &str = "198.18.0.2";

/// The `status connections` line of `host`'s connection to the router nicknamed `nick`.
fn conn_line(net: &Net, host: usize, nick: &str) -> Option<String> {
    let out = net.weft(host, &["status", "connections"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&format!("({nick})")))
        .map(str::to_string)
}

/// Whether the line shows `mode` (`fastdp` or `sleeve`) as the overlay column.
fn shows(line: &str, mode: &str) -> bool {
    line.split_whitespace().any(|w| w == mode)
}

/// Waits until `host`'s connection to `nick` shows `mode` (and is established);
/// returns how long it took, or panics with the line.
fn wait_mode(net: &Net, host: usize, nick: &str, mode: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let ok = wait_until(limit, Duration::from_millis(200), || {
        conn_line(net, host, nick).is_some_and(|l| shows(&l, mode) && l.contains("established"))
    });
    assert!(
        ok.is_some(),
        "h{host} -> {nick}: not {mode} within {limit:?}: {:?}",
        conn_line(net, host, nick)
    );
    start.elapsed()
}

/// `weft report` of `host` as JSON.
fn report(net: &Net, host: usize) -> serde_json::Value {
    serde_json::from_str(&net.weft_ok(host, &["report"])).expect("weft report is JSON")
}

/// A process we started, killed by PID when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, program: &str, args: &[&str]) -> Proc {
    Proc(
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in {ns}: {e}")),
    )
}

/// Two hosts with one pod each (10.40.1.2 on h1, 10.40.2.2 on h2), routers launched
/// with `auth` and `options`, h2 dialling h1.
fn two_hosts(tag: &str, auth: &Auth, options: &[&str]) -> (Net, Vec<Router>, [String; 2]) {
    let mut net = Net::new(tag, 2);
    let r1 = Router::launch_with(&net, 1, auth, options, &[]);
    let r2 = Router::launch_with(&net, 2, auth, options, &[H1]);
    let p1 = net.add_bare_pod(1, 1);
    let p2 = net.add_bare_pod(2, 1);
    net.attach(1, &["10.40.1.2/16"], &p1);
    net.attach(2, &["10.40.2.2/16"], &p2);
    (net, vec![r1, r2], [p1, p2])
}

#[test]
fn no_encryption_uses_the_kernel_and_the_router_stays_idle() {
    let (net, routers, [p1, p2]) = two_hosts("fdpplain", &Auth::NoEncryption, &[]);
    let took = wait_mode(&net, 1, "h2", "fastdp", Duration::from_secs(30));
    wait_mode(&net, 2, "h1", "fastdp", Duration::from_secs(10));
    println!("e2e: fastdp confirmed in {:.1} s", took.as_secs_f64());
    let line = conn_line(&net, 1, "h2").unwrap();
    assert!(line.contains("mtu="), "{line}");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            ping(&net, &p1, "10.40.2.2")
        })
        .is_some(),
        "pod h1 -> pod h2 over fastdp"
    );
    // iperf3 for 5 s: the kernel carries it, so the routers' CPU time barely moves.
    let _server = spawn_in(&p2, "iperf3", &["-s", "-p", "5301"]);
    std::thread::sleep(Duration::from_millis(500));
    let cpu0: Vec<Duration> = routers.iter().map(Router::cpu_time).collect();
    let t0 = Instant::now();
    let out = net.exec_for(
        &p1,
        "iperf3",
        &["-c", "10.40.2.2", "-p", "5301", "-t", "5", "-J"],
        Duration::from_secs(30),
    );
    let wall = t0.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout)));
    for (r, c0) in routers.iter().zip(&cpu0) {
        let used = r.cpu_time().saturating_sub(*c0);
        let share = used.as_secs_f64() / wall.as_secs_f64();
        println!(
            "e2e: iperf3 {:.0} Mbit/s; router h{} used {:.3} s CPU in {:.1} s ({:.1} % of a core)",
            bps / 1e6,
            r.host,
            used.as_secs_f64(),
            wall.as_secs_f64(),
            share * 100.0
        );
        assert!(
            share < 0.10,
            "router h{} used {:.1} % of a core during the transfer",
            r.host,
            share * 100.0
        );
    }
    assert!(bps > 0.0);
    // The report counts the connection under fastdp.
    let r = report(&net, 1);
    assert_eq!(r["fastdp"]["connections"]["fastdp"], 1, "{}", r["fastdp"]);
    assert_eq!(r["router"]["connections"][0]["overlay"], "fastdp");
}
