//! Network namespaces for one test: a switch namespace holding bridge `br0`, hosts
//! `h1..hN` whose `eth0` (198.18.0.X/24) is a port of that bridge, and optional pods
//! behind a host. This is the only module of the harness that runs `ip`.
//!
//! Every link is created inside a namespace (`ip -n NS link add ... peer ... netns
//! OTHER`), so nothing ever appears in the root namespace. Addresses are checked
//! against the allowed ranges before they are added or pinged. `Drop` ends any process
//! still inside our namespaces (by PID) and deletes the namespaces and the test dir.

use super::{require_root, run_ok, run_with_timeout};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

static NEXT_NET: AtomicUsize = AtomicUsize::new(0);

/// The public (switch-side) address of the NAT namespace of [`Net::add_nated_host`]
/// ([`Nat::A`]).
pub const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 253);

/// The public address of the second NAT namespace ([`Nat::B`]).
pub const NAT_B_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 252);

/// One of the (at most two) NAT namespaces of a test, each with its own public address
/// on the switch and its own private /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Namespace `{prefix}nat`: [`NAT_PUBLIC`], private 198.18.2.0/24.
    A,
    /// Namespace `{prefix}natb`: [`NAT_B_PUBLIC`], private 198.18.3.0/24.
    B,
}

impl Nat {
    /// The namespace name's suffix after the test's prefix.
    fn suffix(self) -> &'static str {
        match self {
            Nat::A => "nat",
            Nat::B => "natb",
        }
    }

    /// Its address on the switch.
    pub fn public(self) -> Ipv4Addr {
        match self {
            Nat::A => NAT_PUBLIC,
            Nat::B => NAT_B_PUBLIC,
        }
    }

    /// The third octet of its private 198.18.X.0/24.
    fn lan(self) -> u8 {
        match self {
            Nat::A => 2,
            Nat::B => 3,
        }
    }

    /// Its address on the private network (the NATed hosts' default gateway).
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.lan(), 254)
    }
}

/// How a NAT maps a private host's flows to public ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// `masquerade random`: each flow (each destination) gets a random public port, as
    /// carrier-grade and cloud NATs choose it; a "symmetric" NAT, through which no hole
    /// can be punched.
    Random,
    /// `masquerade`: the source port is kept where it is free, so one socket has the
    /// same public port towards every destination (endpoint-independent mapping, as
    /// most home routers do), and inbound is still filtered by destination. The NAT
    /// also drops new inbound flows to its own address (a gateway's firewall): without
    /// that, an unsolicited probe arriving before the host's own first datagram to its
    /// sender would leave a conntrack entry holding the tuple, and the host's flow
    /// would be mapped to another port.
    PortPreserving,
}

/// Where [`Net::add_host_behind`] puts a host: behind which NAT, mapping how (all hosts
/// behind one NAT share its mapping kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatSpec {
    /// Which NAT namespace.
    pub nat: Nat,
    /// Its mapping kind.
    pub mapping: Mapping,
}

/// The NAT namespace's nftables ruleset: masquerade from the private network out of
/// `eth0`, and inwards only what conntrack knows as a reply (or related to one). With
/// [`Mapping::Random`] the mapped port is random (`random`), as carrier-grade and cloud
/// NATs choose it, rather than the source port kept where it is free: so the public
/// port of a host's socket is (all but always) not the one it announced, and differs
/// per destination. With [`Mapping::PortPreserving`] the port is kept, and new inbound
/// flows to the NAT itself are dropped as well.
fn nat_ruleset(nat: Nat, mapping: Mapping) -> String {
    let lan = nat.lan();
    let (random, input) = match mapping {
        Mapping::Random => (" random", ""),
        Mapping::PortPreserving => (
            "",
            "    chain input {
        type filter hook input priority filter; policy accept;
        iifname \"eth0\" ct state != { established, related } drop
    }
",
        ),
    };
    format!(
        "flush ruleset
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"eth0\" ip saddr 198.18.{lan}.0/24 masquerade{random}
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname \"eth0\" ct state != {{ established, related }} drop
    }}
{input}}}
"
    )
}

/// Address ranges the tests may use: the underlay and the two overlay ranges.
const ALLOWED: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(10, 32, 0, 0), 12),
    (Ipv4Addr::new(10, 40, 0, 0), 16),
];

/// Panics unless `addr` lies in 198.18.0.0/15, 10.32.0.0/12 or 10.40.0.0/16.
pub fn assert_allowed(addr: Ipv4Addr) {
    let ok = ALLOWED.iter().any(|&(net, len)| {
        let mask = u32::MAX << (32 - len);
        u32::from(addr) & mask == u32::from(net)
    });
    assert!(ok, "address {addr} is outside the ranges tests may use (198.18.0.0/15, 10.32.0.0/12, 10.40.0.0/16)");
}

/// The IPv6 range tests may use, inside namespaces only: ULA fd00::/8.
const ALLOWED6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8);

/// Panics unless `addr` lies in fd00::/8 (ULA).
pub fn assert_allowed6(addr: Ipv6Addr) {
    let (net, len) = ALLOWED6;
    let mask = u128::MAX << (128 - len);
    assert!(
        u128::from(addr) & mask == u128::from(net),
        "address {addr} is outside the IPv6 range tests may use (fd00::/8)"
    );
}

/// One host: a namespace with `eth0` on the underlay, and its router's directories.
#[derive(Debug, Clone)]
pub struct Host {
    /// 1-based index: host `hX` has underlay address 198.18.0.X.
    pub index: usize,
    /// Namespace name.
    pub ns: String,
    /// Underlay address of `eth0` (removed by [`Net::set_underlay`] for an IPv6-only
    /// host: see `has_v4`).
    pub addr: Ipv4Addr,
    /// Whether `addr` is on `eth0` (false for an IPv6-only host).
    pub has_v4: bool,
    /// IPv6 underlay address of `eth0` (fd00::X/64), if [`Net::set_underlay`] gave one.
    pub addr6: Option<Ipv6Addr>,
    /// `WEFT_RUN_DIR` for this host's router.
    pub run_dir: PathBuf,
    /// `WEFT_DATA_DIR` for this host's router (kept across relaunches).
    pub data_dir: PathBuf,
}

/// A pod: a namespace whose `eth0` is a veth to interface `host_if` in its host.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Namespace name.
    pub ns: String,
    /// Index of the host it hangs off.
    pub host: usize,
    /// Name of the host-side veth end, inside the host namespace.
    pub host_if: String,
}

/// The namespaces of one test. Dropping it removes them all.
pub struct Net {
    prefix: String,
    dir: PathBuf,
    switch: String,
    hosts: Vec<Host>,
    pods: Vec<Pod>,
    /// The NAT namespaces made so far, with their mapping kind.
    nats: Vec<NatSpec>,
    created: Vec<String>,
    /// `/etc/netns/NS` directories made for per-namespace files (`ip netns exec`
    /// bind-mounts them over `/etc`), removed on drop.
    etc: Vec<PathBuf>,
}

impl Net {
    /// Builds a switch and `hosts` hosts. `tag` names the test (lowercase letters and
    /// digits, at most 10); with the PID and a counter it makes the namespace prefix
    /// unique, so tests run in parallel. Panics without root.
    pub fn new(tag: &str, hosts: usize) -> Net {
        require_root();
        assert!(
            !tag.is_empty()
                && tag.len() <= 10
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "bad test tag {tag:?}: use 1-10 lowercase letters or digits"
        );
        let seq = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        if seq == 0 {
            remove_stale();
        }
        let prefix = format!("{tag}-{}-{seq}-", std::process::id());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        traversable(&dir);
        let mut net = Net {
            switch: format!("{prefix}sw"),
            prefix,
            dir,
            hosts: Vec::new(),
            pods: Vec::new(),
            nats: Vec::new(),
            created: Vec::new(),
            etc: Vec::new(),
        };
        let sw = net.switch.clone();
        net.add_ns(&sw);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for _ in 0..hosts {
            net.add_host();
        }
        net
    }

    /// Adds host `h{N+1}` with eth0 = 198.18.0.{N+1}/24 on the switch; returns its index.
    pub fn add_host(&mut self) -> usize {
        let index = self.hosts.len() + 1;
        assert!(index <= 254, "at most 254 hosts");
        let ns = format!("{}h{index}", self.prefix);
        let addr = Ipv4Addr::new(198, 18, 0, index as u8);
        assert_allowed(addr);
        self.add_ns(&ns);
        let port = format!("h{index}");
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        self.register_host(index, ns, addr)
    }

    /// Makes host `index`'s run and data directories and records the host.
    fn register_host(&mut self, index: usize, ns: String, addr: Ipv4Addr) -> usize {
        let hdir = self.dir.join(format!("h{index}"));
        let (run_dir, data_dir) = (hdir.join("run"), hdir.join("data"));
        for d in [&run_dir, &data_dir] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        // Unprivileged users must reach the router's socket (tests run `weft status` as
        // nobody), whatever the umask; the data dir stays private (the router makes it 0700).
        traversable(&hdir);
        traversable(&run_dir);
        self.hosts.push(Host {
            index,
            ns,
            addr,
            has_v4: true,
            addr6: None,
            run_dir,
            data_dir,
        });
        index
    }

    /// Sets which families host `hX` (one of [`Net::add_host`]'s, on the switch) has on
    /// its underlay: `v6` adds fd00::X/64 to `eth0` (no duplicate detection, so it is
    /// usable at once), `!v4` removes 198.18.0.X/24. The switch is a plain bridge, so
    /// the IPv6 hosts reach each other on fd00::/64 and nothing routes between the
    /// families. Returns the IPv6 address, if any.
    pub fn set_underlay(&mut self, host: usize, v4: bool, v6: bool) -> Option<Ipv6Addr> {
        let h = self.host(host).clone();
        assert!(v4 || v6, "h{host} needs an underlay address");
        assert_eq!(
            h.addr.octets()[..3],
            [198, 18, 0],
            "h{host} is not on the switch"
        );
        let addr6 = v6.then(|| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host as u16));
        if let Some(a6) = addr6 {
            assert_allowed6(a6);
            ip(&[
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        if !v4 && h.has_v4 {
            ip(&[
                "-n",
                &h.ns,
                "addr",
                "del",
                &format!("{}/24", h.addr),
                "dev",
                "eth0",
            ]);
        }
        let entry = &mut self.hosts[host - 1];
        entry.has_v4 = v4 && h.has_v4;
        entry.addr6 = addr6.or(h.addr6);
        addr6
    }

    /// Gives interface `ifname` of namespace `ns` an IPv6 address, e.g. "fd40::1:2/64"
    /// (checked to be in fd00::/8), without duplicate detection.
    pub fn add_addr6(&self, ns: &str, ifname: &str, cidr: &str) {
        let addr: Ipv6Addr = cidr
            .split('/')
            .next()
            .unwrap_or("")
            .parse()
            .expect("cidr address");
        assert_allowed6(addr);
        ip(&["-n", ns, "addr", "add", cidr, "dev", ifname, "nodad"]);
    }

    /// One ping (2 s deadline) from namespace `ns` to an allowed IPv6 address.
    pub fn ping6(&self, ns: &str, addr: Ipv6Addr) -> bool {
        assert_allowed6(addr);
        self.exec(
            ns,
            "ping",
            &["-6", "-c", "1", "-W", "2", "-q", &addr.to_string()],
        )
        .status
        .success()
    }

    /// Adds host `h{N+1}` behind an IP router namespace `r` (made on first use): `r` is
    /// 198.18.0.254/24 on the switch and 198.18.1.254/24 on `eth1`, a veth to the new
    /// host's `eth0` (198.18.1.{N+1}/24). `r`'s end of that veth has MTU `hop_mtu` and
    /// the host's end 1500, so the path between this host and the switch's hosts is
    /// `hop_mtu` wide: `r` answers larger packets from the switch side with ICMP
    /// "fragmentation needed" and drops larger ones from the host side silently
    /// (the veth checks its receiving end's MTU). `r` forwards IPv4; the switch's hosts
    /// get a route to 198.18.1.0/24 through it, the new host a default route.
    pub fn add_routed_host(&mut self, hop_mtu: u32) -> usize {
        let r = format!("{}r", self.prefix);
        let gw_switch = Ipv4Addr::new(198, 18, 0, 254);
        let gw_far = Ipv4Addr::new(198, 18, 1, 254);
        if !self.created.contains(&r) {
            self.add_ns(&r);
            let sw = self.switch.clone();
            ip(&[
                "-n", &sw, "link", "add", "r", "type", "veth", "peer", "name", "eth0", "netns", &r,
            ]);
            ip(&["-n", &sw, "link", "set", "r", "master", "br0", "up"]);
            ip(&[
                "-n",
                &r,
                "addr",
                "add",
                &format!("{gw_switch}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &r, "link", "set", "eth0", "up"]);
            let forward = self.exec(&r, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            assert!(forward.status.success(), "ip_forward in {r}: {forward:?}");
        }
        let index = self.hosts.len() + 1;
        let ns = format!("{}h{index}", self.prefix);
        let addr = Ipv4Addr::new(198, 18, 1, index as u8);
        assert_allowed(addr);
        self.add_ns(&ns);
        let mtu = hop_mtu.to_string();
        ip(&[
            "-n", &r, "link", "add", "eth1", "mtu", &mtu, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        ip(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("{gw_far}/24"),
            "dev",
            "eth1",
        ]);
        ip(&["-n", &r, "link", "set", "eth1", "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "mtu", "1500", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &gw_far.to_string(),
        ]);
        for h in &self.hosts {
            ip(&[
                "-n",
                &h.ns,
                "route",
                "replace",
                "198.18.1.0/24",
                "via",
                &gw_switch.to_string(),
            ]);
        }
        self.register_host(index, ns, addr)
    }

    /// Adds host `h{N+1}` behind a masquerading NAT namespace `nat` (made on first use),
    /// as a home router or a cloud NAT gateway would put it: `nat` is [`NAT_PUBLIC`]/24
    /// on the switch and 198.18.2.254/24 on bridge `lan`, whose port `hN` is a veth to
    /// the new host's `eth0` (198.18.2.{N+1}/24, default route via 198.18.2.254). `nat`
    /// forwards IPv4 and its nftables ruleset ([`Net::reload_nat`]) masquerades what
    /// leaves by `eth0` from 198.18.2.0/24 to a random port ([`Mapping::Random`]), and
    /// forwards nothing inwards that is not a reply. The switch's hosts get no route to
    /// 198.18.2.0/24: they reach the new host only through mappings that it opened.
    pub fn add_nated_host(&mut self) -> usize {
        self.add_host_behind(NatSpec {
            nat: Nat::A,
            mapping: Mapping::Random,
        })
    }

    /// Adds host `h{N+1}` behind NAT `spec.nat` (made on first use with `spec.mapping`;
    /// a later host must ask for the same mapping): as [`Net::add_nated_host`] describes,
    /// with that NAT's public address ([`Nat::public`]) and private 198.18.X.0/24 (X = 2
    /// for [`Nat::A`], 3 for [`Nat::B`]); the host is 198.18.X.{N+1}. The two NATs are
    /// both on the switch and know no route to each other's private network.
    pub fn add_host_behind(&mut self, spec: NatSpec) -> usize {
        let nat = self.nat_ns_of(spec.nat);
        let gw_far = spec.nat.gateway();
        let public = spec.nat.public();
        if let Some(made) = self.nats.iter().find(|n| n.nat == spec.nat) {
            assert_eq!(
                made.mapping, spec.mapping,
                "NAT {:?} was made with another mapping",
                spec.nat
            );
        } else {
            assert_allowed(public);
            assert_allowed(gw_far);
            self.add_ns(&nat);
            let sw = self.switch.clone();
            let port = spec.nat.suffix();
            ip(&[
                "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                &nat,
            ]);
            ip(&["-n", &sw, "link", "set", port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &nat,
                "addr",
                "add",
                &format!("{public}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &nat, "link", "set", "eth0", "up"]);
            // The private network: a bridge whose ports are the NATed hosts' links.
            ip(&["-n", &nat, "link", "add", "lan", "type", "bridge"]);
            ip(&[
                "-n",
                &nat,
                "addr",
                "add",
                &format!("{gw_far}/24"),
                "dev",
                "lan",
            ]);
            ip(&["-n", &nat, "link", "set", "lan", "up"]);
            let forward = self.exec(&nat, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            assert!(forward.status.success(), "ip_forward in {nat}: {forward:?}");
            let rules = self.nat_rules(spec.nat);
            std::fs::write(&rules, nat_ruleset(spec.nat, spec.mapping))
                .expect("write the NAT's ruleset");
            self.nats.push(spec);
            self.reload_nat_of(spec.nat);
        }
        let index = self.hosts.len() + 1;
        assert!(index <= 253, "at most 253 hosts");
        let ns = format!("{}h{index}", self.prefix);
        let addr = Ipv4Addr::new(198, 18, spec.nat.lan(), index as u8);
        assert_allowed(addr);
        self.add_ns(&ns);
        let port = format!("h{index}");
        ip(&[
            "-n", &nat, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &nat, "link", "set", &port, "master", "lan", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &gw_far.to_string(),
        ]);
        self.register_host(index, ns, addr)
    }

    /// Name of the NAT namespace of [`Net::add_nated_host`] ([`Nat::A`]).
    pub fn nat_ns(&self) -> String {
        self.nat_ns_of(Nat::A)
    }

    /// Name of NAT `nat`'s namespace.
    pub fn nat_ns_of(&self, nat: Nat) -> String {
        format!("{}{}", self.prefix, nat.suffix())
    }

    /// The file holding NAT `nat`'s ruleset.
    fn nat_rules(&self, nat: Nat) -> PathBuf {
        self.dir.join(format!("{}.nft", nat.suffix()))
    }

    /// Loads the NAT namespace's nftables ruleset again (`nft -f`, inside that namespace
    /// only; the ruleset starts with `flush ruleset`). Conntrack's mappings survive it.
    pub fn reload_nat(&self) {
        self.reload_nat_of(Nat::A);
    }

    /// [`Net::reload_nat`] for NAT `nat`.
    pub fn reload_nat_of(&self, nat: Nat) {
        let rules = self.nat_rules(nat);
        let ns = self.nat_ns_of(nat);
        let out = self.exec(&ns, "nft", &["-f", &rules.display().to_string()]);
        assert!(
            out.status.success(),
            "nft -f in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `conntrack ARGS` in the NAT namespace of [`Net::add_nated_host`] (the Debian
    /// package `conntrack`): `-F` forgets every mapping, as a NAT that restarts; `-D -p
    /// udp` the UDP ones, as a NAT that expired them. The next packet out gets a new
    /// mapping.
    pub fn nat_conntrack(&self, args: &[&str]) {
        self.nat_conntrack_of(Nat::A, args);
    }

    /// [`Net::nat_conntrack`] in NAT `nat`; returns what it printed (`-L` lists).
    pub fn nat_conntrack_of(&self, nat: Nat, args: &[&str]) -> String {
        let ns = self.nat_ns_of(nat);
        let out = self.exec(&ns, "conntrack", args);
        assert!(
            out.status.success(),
            "conntrack {args:?} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds a pod namespace behind `host`: pod `eth0` <-> host `vpK`, both up, no
    /// address (see [`Net::pod_addr`]).
    pub fn add_pod(&mut self, host: usize) -> Pod {
        let host_ns = self.host(host).ns.clone();
        let k = self.pods.iter().filter(|p| p.host == host).count() + 1;
        let ns = format!("{}p{host}-{k}", self.prefix);
        let host_if = format!("vp{k}");
        self.add_ns(&ns);
        ip(&[
            "-n", &host_ns, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        ip(&["-n", &host_ns, "link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        let pod = Pod { ns, host, host_if };
        self.pods.push(pod.clone());
        pod
    }

    /// Adds an empty pod namespace (only `lo`, up) for `weft attach` to plumb; returns
    /// its name. It is removed with the others.
    pub fn add_bare_pod(&mut self, host: usize, k: usize) -> String {
        let ns = format!("{}q{host}-{k}", self.prefix);
        self.add_ns(&ns);
        ns
    }

    /// Gives a pod's eth0 an overlay address, e.g. "10.40.1.2/16" (checked).
    pub fn pod_addr(&self, pod: &Pod, cidr: &str) {
        let addr: Ipv4Addr = cidr
            .split('/')
            .next()
            .unwrap_or("")
            .parse()
            .expect("cidr address");
        assert_allowed(addr);
        ip(&["-n", &pod.ns, "addr", "add", cidr, "dev", "eth0"]);
    }

    /// Adds an "outside world" behind host `hX`: namespace `…out` whose `eth0` is
    /// 198.19.0.2/24, linked to `wan0` (198.19.0.1/24) in the host. It knows no route
    /// but its own subnet, so it can answer only the host's own address. Returns the
    /// namespace's name.
    pub fn add_outside(&mut self, host: usize) -> String {
        let host_ns = self.host(host).ns.clone();
        let ns = format!("{}out", self.prefix);
        for a in [Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2)] {
            assert_allowed(a);
        }
        self.add_ns(&ns);
        ip(&[
            "-n", &host_ns, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &host_ns,
            "addr",
            "add",
            "198.19.0.1/24",
            "dev",
            "wan0",
        ]);
        ip(&["-n", &host_ns, "link", "set", "wan0", "up"]);
        ip(&["-n", &ns, "addr", "add", "198.19.0.2/24", "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    /// Gives host `hX` its own `/etc/hosts` (what its resolver answers first): `ip netns
    /// exec` bind-mounts `/etc/netns/NS/hosts` over `/etc/hosts` for programs run in NS.
    pub fn set_hosts_file(&mut self, host: usize, text: &str) {
        self.set_etc_file(host, "hosts", text);
    }

    /// Gives host `hX` its own `/etc/FILE` (`/etc/netns/NS/FILE`, bind-mounted over
    /// `/etc/FILE` by `ip netns exec`); removed when the net is dropped.
    pub fn set_etc_file(&mut self, host: usize, file: &str, text: &str) {
        let ns = self.host(host).ns.clone();
        let dir = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        if !self.etc.contains(&dir) {
            self.etc.push(dir.clone());
        }
        std::fs::write(dir.join(file), text)
            .unwrap_or_else(|e| panic!("write the namespace's {file}: {e}"));
    }

    /// Makes host `hX` unable to send to underlay address `to` (a blackhole route in
    /// `hX`'s namespace). Call it for both ends to cut a pair of hosts apart.
    pub fn blackhole(&self, host: usize, to: Ipv4Addr) {
        assert_allowed(to);
        let ns = self.host(host).ns.clone();
        ip(&["-n", &ns, "route", "add", "blackhole", &format!("{to}/32")]);
    }

    /// Host `hX` (1-based).
    pub fn host(&self, index: usize) -> &Host {
        self.hosts
            .get(index.wrapping_sub(1))
            .unwrap_or_else(|| panic!("no host h{index}"))
    }

    /// All hosts, h1 first.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The per-test directory (secrets, logs, run and data dirs). Kept if the test fails.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Name of the switch namespace (holding `br0`; host `hX`'s port is interface `hX`).
    pub fn switch(&self) -> &str {
        &self.switch
    }

    /// Namespace name prefix of this test.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `program args` inside namespace `ns` (60 s limit), capturing its output.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        self.exec_for(ns, program, args, Duration::from_secs(60))
    }

    /// [`Net::exec`] with another time limit.
    pub fn exec_for(&self, ns: &str, program: &str, args: &[&str], limit: Duration) -> Output {
        run_with_timeout(
            Command::new("ip")
                .args(["netns", "exec", ns, program])
                .args(args),
            limit,
        )
    }

    /// One ping (2 s deadline) from namespace `ns` to an allowed address.
    pub fn ping(&self, ns: &str, addr: Ipv4Addr) -> bool {
        assert_allowed(addr);
        self.exec(ns, "ping", &["-c", "1", "-W", "2", "-q", &addr.to_string()])
            .status
            .success()
    }

    fn add_ns(&mut self, ns: &str) {
        assert!(
            !netns_list().iter().any(|n| n == ns),
            "namespace {ns} already exists"
        );
        ip(&["netns", "add", ns]);
        self.created.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            kill_leftovers(ns);
            let out = run_with_timeout(
                Command::new("ip").args(["netns", "del", ns]),
                Duration::from_secs(30),
            );
            if !out.status.success() {
                eprintln!(
                    "harness: ip netns del {ns} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        for dir in &self.etc {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                eprintln!("harness: remove {}: {e}", dir.display());
            }
        }
        if thread::panicking() {
            eprintln!("harness: test failed; logs kept in {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("harness: remove {}: {e}", self.dir.display());
        }
    }
}

/// Makes `dir` mode 0755, so that users other than root can reach what lies below it.
fn traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", dir.display()));
}

/// Safety net: a process still inside one of our namespaces was started by this test
/// (e.g. a daemonized `weft launch`); end it by PID before deleting the namespace.
fn kill_leftovers(ns: &str) {
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "pids", ns]),
        Duration::from_secs(10),
    );
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        eprintln!("harness: killing leftover pid {pid} in namespace {ns}");
        let _ = run_with_timeout(
            Command::new("kill").args(["-KILL", pid]),
            Duration::from_secs(5),
        );
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        super::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            !proc_dir.exists()
        });
    }
}

/// Removes namespaces that this harness made in a test process that no longer exists
/// (killed before its `Drop` ran): names `TAG-PID-SEQ-{sw,r,hN,pN-K}` whose PID is gone.
fn remove_stale() {
    for ns in netns_list() {
        let parts: Vec<&str> = ns.splitn(4, '-').collect();
        let ours = parts.len() == 4
            && parts[0]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && parts[2].bytes().all(|b| b.is_ascii_digit())
            && (parts[3] == "sw"
                || parts[3] == "r"
                || parts[3] == "nat"
                || parts[3] == "natb"
                || parts[3].starts_with(['h', 'p', 'q']));
        let pid_gone = parts.get(1).is_some_and(|pid| {
            pid.bytes().all(|b| b.is_ascii_digit()) && !Path::new("/proc").join(pid).exists()
        });
        if ours && pid_gone {
            eprintln!("harness: removing stale namespace {ns} (its test process is gone)");
            kill_leftovers(&ns);
            let _ = run_with_timeout(
                Command::new("ip").args(["netns", "del", &ns]),
                Duration::from_secs(30),
            );
        }
    }
}

/// Names of all network namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Interface names in the root namespace (to check that a test adds none there).
pub fn root_links() -> Vec<String> {
    let out = run_ok(Command::new("ip").args(["-o", "link", "show"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
        })
        .collect()
}

/// Runs `ip args`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}
