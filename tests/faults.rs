//! Faults end to end: the data dir runs out of space under a running router (a
//! size-limited tmpfs mounted on the test's own data dir, unmounted by a guard).
//! Allocations are refused with the reason while the disk is full, nothing already
//! stored is lost or corrupted, and allocations work again once space returns, also
//! across a restart.

mod common;

use common::weft::{Auth, Router};
use common::{run_with_timeout, Net};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted on a directory of the test; unmounted (lazily, if busy) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = run_with_timeout(
            Command::new("mount").args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "weft-test",
                &dir.display().to_string(),
            ]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            Command::new("umount").args(["-l", &self.0.display().to_string()]),
            Duration::from_secs(10),
        );
    }
}

/// Fills the file system of `dir` with `dir/filler` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    let _ = f.sync_all();
    path
}

/// `weft attach NS` on `h`: Ok(address) or Err(stderr).
fn attach(net: &Net, h: usize, ns: &str) -> Result<String, String> {
    let out = net.weft(h, &["attach", ns]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_full_data_dir_refuses_allocations_with_the_reason_and_recovers() {
    let mut net = Net::new("diskfull", 1);
    let data_dir = net.host(1).data_dir.clone();
    let tmpfs = Tmpfs::mount(&data_dir, "2m");
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let mut router = Router::launch_with(&net, 1, &auth, &[], &[]);
    let pods: Vec<String> = (1..=3).map(|k| net.add_bare_pod(1, k)).collect();
    let first = attach(&net, 1, &pods[0]).expect("attach with space");

    let filler = fill(&data_dir);
    let refused = attach(&net, 1, &pods[1]);
    let err = refused.expect_err("an allocation that cannot be persisted must fail");
    println!("e2e: with the data dir full, attach says: {}", err.trim());
    assert!(
        err.contains("No space left") || err.contains("space"),
        "the reason names the full disk: {err}"
    );
    // The router is healthy and still serves what it has.
    let ps = net.weft_ok(1, &["ps"]);
    assert!(ps.contains(first.split('/').next().unwrap()), "{ps}");

    // Space returns: allocations work again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let second = attach(&net, 1, &pods[2]).expect("attach once space returned");
    assert_ne!(first, second);

    // Nothing lost: after a restart both allocations are still there.
    let _ = net.weft(1, &["stop"]);
    router.wait_exit(Duration::from_secs(20));
    drop(router);
    let router = Router::launch_with(&net, 1, &auth, &[], &[]);
    let ipam = net.weft_ok(1, &["status", "ipam"]);
    let ps = net.weft_ok(1, &["ps"]);
    for addr in [&first, &second] {
        let ip = addr.split('/').next().unwrap();
        assert!(
            ps.contains(ip),
            "{ip} lost across the restart: {ps}\n{ipam}"
        );
    }
    drop(router);
    drop(tmpfs);
}

/// `weft attach` of a fresh bare pod on `h`; returns (namespace, address without prefix).
fn pod(net: &mut Net, h: usize, k: usize) -> (String, String) {
    let ns = net.add_bare_pod(h, k);
    let addr = attach(net, h, &ns).expect("attach");
    (ns, addr.split('/').next().unwrap().to_string())
}

#[test]
fn a_peer_stopped_for_60_s_harms_no_one_and_recovers() {
    use common::traffic::ping_series;
    let mut net = Net::new("sigstop", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let routers = common::weft::three_routers(&net, &auth);
    let (p1, a1) = pod(&mut net, 1, 1);
    let (_, a2) = pod(&mut net, 2, 1);
    let (p3, a3) = pod(&mut net, 3, 1);
    assert!(ping_series(&net, &p1, &a2, 3, "0.2", &[]).received == 3);
    let rss_before: Vec<u64> = routers[..2].iter().map(|r| r.rss_kib()).collect();

    let h3 = routers[2].pid().to_string();
    let signal = |sig: &str| {
        let out = run_with_timeout(
            Command::new("kill").args([sig, &h3]),
            Duration::from_secs(5),
        );
        assert!(out.status.success(), "kill {sig} {h3}");
    };
    signal("-STOP");
    // For 60 s: h1's pod floods h3's (whose router cannot read), while h1 and h2's
    // pods keep talking.
    let (steady, _) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            net.exec_for(
                &p1,
                "ping",
                &["-4", "-f", "-q", "-w", "55", &a3],
                Duration::from_secs(90),
            )
        });
        let steady = ping_series(&net, &p1, &a2, 120, "0.5", &[]);
        (steady, flood.join())
    });
    let rss_during: Vec<u64> = routers[..2].iter().map(|r| r.rss_kib()).collect();
    signal("-CONT");
    println!(
        "e2e: h3 stopped 60 s: h1->h2 {}/{} pings; RSS h1 {}->{} KiB, h2 {}->{} KiB",
        steady.received,
        steady.transmitted,
        rss_before[0],
        rss_during[0],
        rss_before[1],
        rss_during[1]
    );
    assert!(
        steady.received + 1 >= steady.transmitted,
        "h1 and h2 were disturbed by a stopped h3: {}",
        steady.output
    );
    for (before, during) in rss_before.iter().zip(&rss_during) {
        assert!(
            *during <= before + 16 * 1024,
            "memory grew while a peer was stopped: {before} -> {during} KiB"
        );
    }
    // h3 recovers by itself.
    let took = net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
    println!(
        "e2e: h3 back in the mesh {:.1} s after SIGCONT",
        took.as_secs_f64()
    );
    let back = common::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        common::traffic::ping(&net, &p3, &a1)
    });
    assert!(back.is_some(), "h3's pod cannot reach h1's after SIGCONT");
    drop(routers);
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_thousand_connect_forget_cycles_leave_descriptors_and_memory_flat() {
    let net = Net::new("cycles", 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch_with(&net, 1, &auth, &[], &[]);
    let _h2 = Router::launch_with(&net, 2, &auth, &[], &["198.18.0.1"]);
    net.wait_established(&[(1, 1), (2, 1)]);
    let (fd_before, rss_before) = (fds(h1.pid()), h1.rss_kib());
    // Half the cycles name h2's router (linked already), half a closed port on h2
    // (each dial is refused at once).
    for i in 0..1000 {
        let target = if i % 2 == 0 {
            "198.18.0.2"
        } else {
            "198.18.0.2:7000"
        };
        net.weft_ok(1, &["connect", target]);
        net.weft_ok(1, &["forget", target]);
    }
    // Dials in flight end within their timeout; then everything is back.
    std::thread::sleep(Duration::from_secs(12));
    let (fd_after, rss_after) = (fds(h1.pid()), h1.rss_kib());
    println!(
        "e2e: 1000 connect/forget cycles: fds {fd_before} -> {fd_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        fd_after <= fd_before + 2,
        "descriptors leaked: {fd_before} -> {fd_after}"
    );
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "memory grew: {rss_before} -> {rss_after} KiB"
    );
    let targets = net.weft_ok(1, &["status", "targets"]);
    assert!(
        targets.trim().is_empty(),
        "every target forgotten: {targets}"
    );
    net.wait_established(&[(1, 1), (2, 1)]);
}
