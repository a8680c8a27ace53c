//! A real DNS server for the tests: dnsmasq (Debian's `dnsmasq-base`) in a namespace of
//! the test, answering from a hosts file that the test rewrites ([`Dnsmasq::set`]: the
//! file, then SIGHUP to dnsmasq's PID, which rereads it). It forwards nothing (no
//! upstream), so no query ever leaves the test's namespaces. Dropping it ends dnsmasq
//! by its PID.

use super::{run_with_timeout, wait_until, Net};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A dnsmasq process; ended (by PID) on drop.
pub struct Dnsmasq {
    child: Child,
    hosts: PathBuf,
    /// Its listening address.
    pub addr: std::net::Ipv4Addr,
}

impl Dnsmasq {
    /// Starts dnsmasq in host `hX`'s namespace, listening on that host's underlay
    /// address, answering `name` with `addrs`. Panics, naming the package, if dnsmasq
    /// is not installed.
    pub fn start(net: &Net, host: usize, name: &str, addrs: &[&str]) -> Dnsmasq {
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "dnsmasq is not installed: apt-get install dnsmasq-base (scripts/test.sh does)",
            );
        let h = net.host(host);
        let hosts = net.dir().join(format!("dns-h{host}.hosts"));
        let dns = Dnsmasq {
            child: Command::new("ip")
                .args(["netns", "exec", &h.ns, bin])
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--bind-interfaces",
                    "--user=root",
                    "--pid-file=",
                    "--local-ttl=0",
                    "--log-queries",
                    "--log-facility=-",
                ])
                .arg(format!("--listen-address={}", h.addr))
                .arg(format!("--addn-hosts={}", hosts.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(net.dir().join(format!("dnsmasq-h{host}.log")))
                        .expect("dnsmasq log"),
                )
                .spawn()
                .expect("spawn dnsmasq"),
            hosts,
            addr: h.addr,
        };
        dns.write(name, addrs);
        // Up once it answers on port 53.
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let out = run_with_timeout(
                Command::new("ip").args(["netns", "exec", &h.ns, "ss", "-Hlun", "sport", "= :53"]),
                Duration::from_secs(5),
            );
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        });
        assert!(
            up.is_some(),
            "dnsmasq did not start listening on {}",
            h.addr
        );
        dns
    }

    fn write(&self, name: &str, addrs: &[&str]) {
        let text: String = addrs.iter().map(|a| format!("{a} {name}\n")).collect();
        std::fs::write(&self.hosts, text).expect("write dnsmasq's hosts file");
    }

    /// Answers `name` with `addrs` from now on.
    pub fn set(&self, name: &str, addrs: &[&str]) {
        self.write(name, addrs);
        let out = run_with_timeout(
            Command::new("kill").args(["-HUP", &self.child.id().to_string()]),
            Duration::from_secs(5),
        );
        assert!(out.status.success(), "SIGHUP dnsmasq");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Net {
    /// Points host `hX`'s resolver at `server` (`/etc/netns/NS/resolv.conf`, which `ip
    /// netns exec` bind-mounts over `/etc/resolv.conf`).
    pub fn set_resolver(&mut self, host: usize, server: std::net::Ipv4Addr) {
        super::netns::assert_allowed(server);
        self.set_etc_file(
            host,
            "resolv.conf",
            &format!("nameserver {server}\noptions timeout:1 attempts:2\n"),
        );
    }
}
