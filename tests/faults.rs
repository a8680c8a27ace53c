//! Faults end to end. The data dir runs out of space under a running router (a
//! size-limited tmpfs mounted on the test's own data dir, unmounted by a guard):
//! allocations are refused with the reason while the disk is full, nothing already
//! stored is lost or corrupted, and allocations work again once space returns, also
//! across a restart. A peer stopped 60 s (SIGSTOP) harms no one. 1,000 connect/forget
//! cycles and 500 flaps of an established link (`ss -K`) leave descriptors and memory
//! flat. A `weft.redb` corrupted on disk (the snapshot's bytes, then the whole file) is
//! moved aside with a clear message and IPAM is re-learnt from the peers.

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

/// `weft report` of host `h`, parsed.
fn report(net: &Net, h: usize) -> serde_json::Value {
    serde_json::from_str(&net.weft_ok(h, &["report"])).expect("report is JSON")
}

/// Waits (up to 60 s) until `h`'s IPAM holds the ring again with space of its own, and
/// `claimed` addresses of its containers (re-learnt after its state was lost).
fn wait_relearnt(net: &Net, h: usize, name: &str, claimed: &[String]) {
    let bare = common::weft::bare_name(name).to_string();
    let ok = common::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        let r = report(net, h);
        let owns = r["ipam"]["shares"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["peer"].as_str().unwrap_or("").starts_with(&bare) && s["ips"].as_u64() > Some(0)
            })
        });
        let held: Vec<String> = r["ipam"]["allocations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a["addr"].as_str())
                    .map(|a| a.split('/').next().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        owns && claimed.iter().all(|c| held.contains(c))
    });
    assert!(
        ok.is_some(),
        "h{h} did not get its ring and its containers' addresses back: {}",
        net.weft_ok(h, &["status", "ipam"])
    );
}

/// The offsets of every stored IPAM snapshot in a redb file (the checksum's magic;
/// redb copies on write, so older copies may be there too).
fn snapshot_offsets(file: &[u8]) -> Vec<usize> {
    file.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"WSS1")
        .map(|(i, _)| i)
        .collect()
}

/// After h3's state was lost (twice: its snapshot corrupted inside weft.redb, then the
/// whole file garbage), h3 starts, says what it did and where the data went, gets its
/// ring back from h1 and h2, claims its containers' addresses again, and a new
/// allocation on it repeats no address of the mesh. What survives: the attachments
/// (`weft ps`, in attachments.json) and the launch arguments; the ring comes back by
/// gossip; the `weft connect` targets stored in a file redb cannot open are lost (h3
/// is launched with its peer as an argument).
#[test]
fn a_corrupted_state_file_is_moved_aside_and_ipam_is_relearnt_from_the_peers() {
    use common::traffic::ping;
    let mut net = Net::new("redbbad", 3);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let mut routers = common::weft::three_routers(&net, &auth);
    let (p1, a1) = pod(&mut net, 1, 1);
    let (_, a2) = pod(&mut net, 2, 1);
    let (p3, a3) = pod(&mut net, 3, 1);
    let (_, a3b) = pod(&mut net, 3, 2);
    let mut all = vec![a1.clone(), a2, a3.clone(), a3b.clone()];
    let h3_name = routers[2].name.clone();
    let store = net.host(3).data_dir.join("weft.redb");
    let relaunch = |net: &Net| Router::launch(net, 3, &auth, &["198.18.0.1"]);
    let check_recovery = |net: &mut Net, all: &mut Vec<String>, k: usize| {
        net.wait_established(&[(1, 2), (2, 2), (3, 2)]);
        wait_relearnt(net, 3, &h3_name, &[a3.clone(), a3b.clone()]);
        let ps = net.weft_ok(3, &["ps"]);
        assert!(
            ps.contains(&a3) && ps.contains(&a3b),
            "attachments survive: {ps}"
        );
        let (pn, an) = pod(net, 3, k);
        assert!(
            !all.contains(&an),
            "the new allocation {an} on h3 repeats an address of the mesh {all:?}"
        );
        all.push(an.clone());
        println!("e2e: after recovery h3 allocated {an}; mesh addresses {all:?}");
        for (from, to) in [(&p1, &an), (&pn, &a1), (&p3, &a1)] {
            let reached =
                common::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
                    ping(net, from, to)
                });
            assert!(reached.is_some(), "{from} cannot reach {to}");
        }
    };

    // (a) Bytes of the stored snapshot corrupted: the checksum catches it. h3 is stopped
    // with SIGTERM (by PID), so the file was closed cleanly and redb has nothing to
    // repair (after a SIGKILL, redb's repair checks its page checksums and catches the
    // same damage itself: that is case (b)'s path).
    let mut h3 = routers.pop().unwrap();
    let out = run_with_timeout(
        Command::new("kill").args(["-TERM", &h3.pid().to_string()]),
        Duration::from_secs(5),
    );
    assert!(out.status.success(), "kill -TERM h3");
    assert!(
        h3.wait_exit(Duration::from_secs(20)).is_some(),
        "h3 did not stop on SIGTERM"
    );
    drop(h3);
    let mut file = std::fs::read(&store).expect("read weft.redb");
    // redb's "recovery required" bit (bit 1 of byte 9, redb =2.6.4's header): a router
    // stopped cleanly closes its database, so the next start has nothing to repair.
    assert_eq!(file[9] & 2, 0, "h3 did not close weft.redb on SIGTERM");
    let at = snapshot_offsets(&file);
    assert!(
        !at.is_empty(),
        "no stored snapshot found in {}",
        store.display()
    );
    for &i in &at {
        // One byte of the checksum and one of the snapshot after it.
        file[i + 4] ^= 0xFF;
        if let Some(b) = file.get_mut(i + 4 + 32 + 20) {
            *b ^= 0xFF;
        }
    }
    std::fs::write(&store, &file).unwrap();
    println!(
        "e2e: corrupted {} stored snapshot copies in {}",
        at.len(),
        store.display()
    );
    let h3 = relaunch(&net);
    let log = h3.log();
    let said = log
        .lines()
        .find(|l| l.contains("fails its checksum"))
        .unwrap_or_else(|| panic!("no message about the corrupted snapshot:\n{log}"));
    println!("e2e: h3 says: {said}");
    assert!(
        said.contains(&store.display().to_string()) && said.contains("snapshot.bad-"),
        "the message names the file and where the snapshot went: {said}"
    );
    check_recovery(&mut net, &mut all, 3);
    assert!(
        h3.log().contains("claimed again 2 addresses"),
        "{}",
        h3.log()
    );

    // (b) The whole file garbage: redb cannot open it; moved aside to a file next to it.
    h3.kill9();
    let len = std::fs::metadata(&store).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..len).map(|i| (i * 131 % 253) as u8).collect();
    std::fs::write(&store, &garbage).unwrap();
    let h3 = relaunch(&net);
    let log = h3.log();
    let said = log
        .lines()
        .find(|l| l.contains("cannot be read") && l.contains("moved aside to"))
        .unwrap_or_else(|| panic!("no message about the unreadable file:\n{log}"));
    println!("e2e: h3 says: {said}");
    let aside: Vec<PathBuf> = std::fs::read_dir(&net.host(3).data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("weft.redb.corrupt-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "one moved-aside file: {aside:?}");
    assert!(
        said.contains(&aside[0].display().to_string()),
        "the message names where the file went: {said}"
    );
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage, "kept as it was");
    check_recovery(&mut net, &mut all, 4);
    assert!(
        h3.log().contains("claimed again 3 addresses"),
        "{}",
        h3.log()
    );
    drop(h3);
    drop(routers);
}

/// `ss -K` of weft's TCP connections in host `h` (the kernel resets them): how many
/// sockets were killed.
fn kill_links(net: &Net, h: usize) -> usize {
    let out = net.exec(
        &net.host(h).ns,
        "ss",
        &[
            "-K",
            "-Htn",
            "state",
            "established",
            "( sport = :6783 or dport = :6783 )",
        ],
    );
    assert!(
        out.status.success(),
        "ss -K failed (CONFIG_INET_DIAG_DESTROY?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// An established link between h1 and h2 is cut 500 times (its TCP connection
/// destroyed with `ss -K`, which resets it on both ends) and redialled at once (a
/// flapping link backs off up to 2 min by design, so h2 forgets and connects its target
/// again after each cut). File descriptors and RSS of both routers after 500 flaps are
/// those after the first 50, the link is established again and pods ping.
#[test]
fn five_hundred_link_flaps_leave_descriptors_and_memory_flat() {
    let mut net = Net::new("flaps", 2);
    let auth = Auth::PasswordFile(net.new_secret("secret"));
    let h1 = Router::launch_with(&net, 1, &auth, &[], &[]);
    let h2 = Router::launch_with(&net, 2, &auth, &[], &["198.18.0.1"]);
    net.wait_established(&[(1, 1), (2, 1)]);
    let (p1, _) = pod(&mut net, 1, 1);
    let (_, a2) = pod(&mut net, 2, 1);
    let measure = || [&h1, &h2].map(|r| (fds(r.pid()), r.rss_kib()));
    let mut at_50 = None;
    let mut killed = 0;
    for i in 1..=500 {
        killed += kill_links(&net, 1);
        net.weft_ok(2, &["forget", "198.18.0.1"]);
        net.weft_ok(2, &["connect", "198.18.0.1"]);
        net.wait_established(&[(1, 1), (2, 1)]);
        if i == 50 {
            std::thread::sleep(Duration::from_secs(2));
            at_50 = Some(measure());
        }
    }
    assert!(
        killed >= 500,
        "each flap cut an established connection: {killed} killed"
    );
    std::thread::sleep(Duration::from_secs(2));
    let at_500 = measure();
    let at_50 = at_50.unwrap();
    for (h, (a, b)) in at_50.iter().zip(&at_500).enumerate() {
        println!(
            "e2e: h{}: after 50 flaps fds {} RSS {} KiB; after 500 fds {} RSS {} KiB",
            h + 1,
            a.0,
            a.1,
            b.0,
            b.1
        );
        assert!(
            b.0 <= a.0 + 2,
            "h{}: descriptors leaked: {} -> {}",
            h + 1,
            a.0,
            b.0
        );
        assert!(
            b.1 <= a.1 + 4 * 1024,
            "h{}: memory grew: {} -> {} KiB",
            h + 1,
            a.1,
            b.1
        );
    }
    println!("e2e: 500 flaps: {killed} TCP connections reset with ss -K");
    let reached = common::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        common::traffic::ping(&net, &p1, &a2)
    });
    assert!(reached.is_some(), "pods do not ping after the flaps");
}
