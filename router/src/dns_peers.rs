//! Peers from DNS (`--peers-from-dns NAME[:PORT]`): the connection targets are the
//! addresses NAME resolves to, kept current as the answer changes.
//!
//! This is how a DaemonSet finds its peers without API access: a headless Service over
//! the Weft pods (host network, `publishNotReadyAddresses: true`) answers with every
//! node's address. Any DNS name with several A/AAAA records serves hosts outside
//! Kubernetes the same way.
//!
//! [`DnsPeers`] is the sans-IO core: it is given each name's answer and says which
//! targets appeared and which left, never counting this host's own addresses. The task
//! ([`run`]) resolves every name through the host's resolver at start and every
//! [`INTERVAL`], off the async workers, and hands the changes to the owner. A failed
//! lookup changes nothing: a resolver that is down for a moment must not make the
//! router forget its peers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How often the names are resolved again.
pub const INTERVAL: Duration = Duration::from_secs(30);
/// Most addresses taken from one answer (a bound on what a resolver can make us dial).
pub const MAX_ADDRS_PER_NAME: usize = 1024;

/// `NAME[:PORT]` as given to `--peers-from-dns`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnsName {
    /// The host name.
    pub host: String,
    /// The control port of the peers it names.
    pub port: u16,
}

impl std::str::FromStr for DnsName {
    type Err = String;
    fn from_str(s: &str) -> Result<DnsName, String> {
        let s = s.trim();
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("--peers-from-dns {s:?}: {p:?} is not a port"))?,
            ),
            None => (s, crate::config::DEFAULT_PORT),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid || host.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "--peers-from-dns {s:?}: expected a DNS name such as weft-peers.example[:6783] \
                 (addresses go on the command line as peers)"
            ));
        }
        Ok(DnsName {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for DnsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Targets that appeared and left with an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// New targets, to dial.
    pub added: Vec<SocketAddr>,
    /// Targets no name gives any more, to forget.
    pub removed: Vec<SocketAddr>,
}

impl Change {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The current answer of every name.
#[derive(Debug, Clone, Default)]
pub struct DnsPeers {
    answers: BTreeMap<DnsName, BTreeSet<SocketAddr>>,
}

impl DnsPeers {
    /// Tracking `names`, none resolved yet.
    pub fn new(names: &[DnsName]) -> DnsPeers {
        DnsPeers {
            answers: names.iter().map(|n| (n.clone(), BTreeSet::new())).collect(),
        }
    }

    /// The names tracked.
    pub fn names(&self) -> impl Iterator<Item = &DnsName> {
        self.answers.keys()
    }

    /// Every target some name gives now.
    pub fn targets(&self) -> BTreeSet<SocketAddr> {
        self.answers.values().flatten().copied().collect()
    }

    /// The name(s) that give `addr`, for `weft status targets`.
    pub fn source_of(&self, addr: &SocketAddr) -> Vec<&DnsName> {
        self.answers
            .iter()
            .filter(|(_, a)| a.contains(addr))
            .map(|(n, _)| n)
            .collect()
    }

    /// Takes `name`'s new answer (its addresses, any port); `is_local` says which
    /// addresses are this host's own, never targets. Returns what changed across all
    /// names (an address still given by another name is not removed).
    pub fn update(
        &mut self,
        name: &DnsName,
        answer: &[IpAddr],
        is_local: impl Fn(&IpAddr) -> bool,
    ) -> Change {
        let before = self.targets();
        let fresh: BTreeSet<SocketAddr> = answer
            .iter()
            .filter(|ip| !is_local(ip) && !ip.is_unspecified() && !ip.is_multicast())
            .take(MAX_ADDRS_PER_NAME)
            .map(|ip| SocketAddr::new(*ip, name.port))
            .collect();
        if let Some(current) = self.answers.get_mut(name) {
            *current = fresh;
        }
        let after = self.targets();
        Change {
            added: after.difference(&before).copied().collect(),
            removed: before.difference(&after).copied().collect(),
        }
    }
}

/// Whether `ip` is one of this host's addresses (in the router's network namespace):
/// only a local address can be bound.
pub fn is_local(ip: &IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(*ip, 0)).is_ok()
}

/// Resolves `name` through the host's resolver (getaddrinfo: /etc/hosts, then DNS as
/// /etc/resolv.conf says). Blocking.
pub fn resolve(name: &DnsName) -> std::io::Result<Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<IpAddr> = (name.host.as_str(), name.port)
        .to_socket_addrs()?
        .map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// The consensus quorum that the DNS answer implies when no peer is given on the
/// command line: every address it names, and this host if it is not among them (as
/// weave-kube counts the nodes of the cluster).
pub fn quorum(answers: &[IpAddr], is_local: impl Fn(&IpAddr) -> bool) -> usize {
    let distinct: BTreeSet<&IpAddr> = answers.iter().collect();
    let includes_us = distinct.iter().any(|ip| is_local(ip));
    distinct.len() + usize::from(!includes_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_parse_with_the_default_port() {
        let n: DnsName = "Weft-Peers.test".parse().unwrap();
        assert_eq!(n.host, "weft-peers.test");
        assert_eq!(n.port, 6783);
        assert_eq!(n.to_string(), "weft-peers.test:6783");
        let n: DnsName = "weft.weft.svc.cluster.local:7000".parse().unwrap();
        assert_eq!(n.port, 7000);
        for bad in [
            "",
            "198.18.0.1",
            "a..b",
            "x:0",
            "x:port",
            "bad name",
            "a/b",
            ":6783",
        ] {
            assert!(bad.parse::<DnsName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_become_targets_without_our_own_addresses() {
        let a: DnsName = "a.test".parse().unwrap();
        let b: DnsName = "b.test:7000".parse().unwrap();
        let mut peers = DnsPeers::new(&[a.clone(), b.clone()]);
        let local = |i: &IpAddr| *i == ip("198.18.0.1");
        let c = peers.update(
            &a,
            &[ip("198.18.0.1"), ip("198.18.0.2"), ip("198.18.0.3")],
            local,
        );
        let t = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(c.added, vec![t("198.18.0.2:6783"), t("198.18.0.3:6783")]);
        assert!(c.removed.is_empty());
        // The same answer again changes nothing.
        assert!(peers
            .update(&a, &[ip("198.18.0.3"), ip("198.18.0.2")], local)
            .is_empty());
        // A fourth address joins; one leaves.
        let c = peers.update(&a, &[ip("198.18.0.2"), ip("198.18.0.4")], local);
        assert_eq!(c.added, vec![t("198.18.0.4:6783")]);
        assert_eq!(c.removed, vec![t("198.18.0.3:6783")]);
        // Another name: its own port; sources are known per name.
        let c = peers.update(&b, &[ip("fd00::2")], local);
        assert_eq!(c.added, vec![t("[fd00::2]:7000")]);
        assert_eq!(peers.source_of(&t("[fd00::2]:7000")), vec![&b]);
        assert_eq!(peers.targets().len(), 3);
        // An empty answer forgets that name's targets only.
        let c = peers.update(&a, &[], local);
        assert_eq!(c.removed.len(), 2);
        assert_eq!(peers.targets().len(), 1);
    }

    #[test]
    fn an_answer_is_bounded_and_odd_addresses_are_skipped() {
        let a: DnsName = "a.test".parse().unwrap();
        let mut peers = DnsPeers::new(std::slice::from_ref(&a));
        let many: Vec<IpAddr> = (0..5000u32)
            .map(|i| IpAddr::from((0xc612_0000u32 + i).to_be_bytes()))
            .chain([ip("0.0.0.0"), ip("224.0.0.1")])
            .collect();
        let c = peers.update(&a, &many, |_| false);
        assert_eq!(c.added.len(), MAX_ADDRS_PER_NAME);
        assert!(!peers.targets().iter().any(|t| t.ip().is_multicast()));
    }

    #[test]
    fn the_quorum_counts_every_named_host_and_us() {
        let local = |i: &IpAddr| *i == ip("198.18.0.1");
        let three = [ip("198.18.0.1"), ip("198.18.0.2"), ip("198.18.0.3")];
        assert_eq!(quorum(&three, local), 3);
        assert_eq!(quorum(&three[1..], local), 3);
        assert_eq!(quorum(&[], local), 1);
        assert!(is_local(&ip("127.0.0.1")));
    }
}
