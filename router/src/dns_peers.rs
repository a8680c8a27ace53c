//! Peers from DNS (`--peers-from-dns NAME[:PORT]`): connection targets taken from the
//! addresses a name resolves to.
//!
//! This is how a DaemonSet finds its peers without API access: a headless Service over
//! the Weft pods (host network, `publishNotReadyAddresses: true`) answers with every
//! node's address. Any DNS name with several A/AAAA records serves hosts outside
//! Kubernetes the same way. The names are resolved through the host's resolver when the
//! router starts and every [`RESOLVE_EVERY`] after ([`resolve_every`]); this host's own
//! addresses are left out. The first answer also sets the IPAM consensus quorum
//! ([`quorum`]) when no peer is given on the command line, so that routers started
//! together seed one ring.
//!
//! [`DnsTargets`] (sans-IO, held by the owner) keeps each name's last good answer and
//! turns the answers into the connection maker's *named* targets: an address that
//! appears is dialled, one that goes away is no longer dialled. A failed or empty lookup
//! keeps the last answer: a resolver outage must neither drop targets nor make every
//! peer look unnamed to reclaim ([`crate::reclaim`]).

use crate::handle::{Input, OwnerHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How often the names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
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

/// The targets the answer gives: every address but this host's own (and unspecified
/// or multicast ones), with the name's port, at most [`MAX_ADDRS_PER_NAME`].
pub fn targets(
    name: &DnsName,
    answer: &[IpAddr],
    is_local: impl Fn(&IpAddr) -> bool,
) -> Vec<SocketAddr> {
    let set: BTreeSet<SocketAddr> = answer
        .iter()
        .filter(|ip| !is_local(ip) && !ip.is_unspecified() && !ip.is_multicast())
        .take(MAX_ADDRS_PER_NAME)
        // An IPv4-mapped AAAA answer is the IPv4 peer (one spelling per peer).
        .map(|ip| SocketAddr::new(ip.to_canonical(), name.port))
        .collect();
    set.into_iter().collect()
}

/// Each name's last good answer (this host's addresses left out), and the targets
/// they make.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DnsTargets {
    answers: BTreeMap<DnsName, BTreeSet<IpAddr>>,
}

impl DnsTargets {
    /// The names with their first answers (already without this host's addresses).
    pub fn new(answers: Vec<(DnsName, Vec<IpAddr>)>) -> DnsTargets {
        let mut t = DnsTargets::default();
        for (name, ips) in answers {
            t.answer(name, ips);
        }
        t
    }

    /// Takes a new answer for `name`; true if the targets changed. An empty answer
    /// keeps the last one.
    pub fn answer(&mut self, name: DnsName, ips: Vec<IpAddr>) -> bool {
        let ips: BTreeSet<IpAddr> = ips
            .into_iter()
            .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
            .take(MAX_ADDRS_PER_NAME)
            .collect();
        if ips.is_empty() && self.answers.contains_key(&name) {
            return false;
        }
        self.answers.insert(name, ips.clone()) != Some(ips)
    }

    /// Every target the answers make, each once.
    pub fn targets(&self) -> Vec<SocketAddr> {
        let all: BTreeSet<SocketAddr> = self
            .answers
            .iter()
            .flat_map(|(name, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, name.port)))
            .collect();
        all.into_iter().collect()
    }

    /// The name whose answer gave `target`, if one did.
    pub fn source(&self, target: &SocketAddr) -> Option<&DnsName> {
        self.answers
            .iter()
            .find(|(name, ips)| name.port == target.port() && ips.contains(&target.ip()))
            .map(|(name, _)| name)
    }

    /// Whether any current answer names `ip`.
    pub fn names(&self, ip: &IpAddr) -> bool {
        self.answers.values().any(|ips| ips.contains(ip))
    }

    /// Whether there are names at all.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The names, for [`resolve_every`].
    pub fn name_list(&self) -> Vec<DnsName> {
        self.answers.keys().cloned().collect()
    }
}

/// Resolves `names` every [`RESOLVE_EVERY`] and hands each good answer (this host's
/// addresses left out) to the owner. Ends when the owner is gone.
pub async fn resolve_every(names: Vec<DnsName>, owner: OwnerHandle) {
    let mut failing: BTreeSet<DnsName> = BTreeSet::new();
    loop {
        tokio::time::sleep(RESOLVE_EVERY).await;
        for name in &names {
            let lookup = name.clone();
            let answer = tokio::task::spawn_blocking(move || {
                resolve(&lookup).map(|ips| {
                    ips.into_iter()
                        .filter(|ip| !is_local(ip))
                        .collect::<Vec<_>>()
                })
            })
            .await;
            match answer {
                Ok(Ok(ips)) => {
                    if failing.remove(name) {
                        tracing::info!(%name, "--peers-from-dns {name} answers again");
                    }
                    owner.send(Input::DnsAnswer {
                        name: name.clone(),
                        ips,
                    });
                    if owner.is_closed() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    if failing.insert(name.clone()) {
                        tracing::warn!(
                            %name,
                            "--peers-from-dns {name}: {e}; keeping its last answer"
                        );
                    }
                }
                Err(_) => return,
            }
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
        let b: DnsName = "b.test:7000".parse().unwrap();
        let local = |i: &IpAddr| *i == ip("198.18.0.1");
        let answer = [
            ip("198.18.0.3"),
            ip("198.18.0.1"),
            ip("fd00::2"),
            ip("198.18.0.3"),
        ];
        let t = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            targets(&b, &answer, local),
            vec![t("198.18.0.3:7000"), t("[fd00::2]:7000")]
        );
        assert_eq!(
            targets(&b, &[ip("::ffff:198.18.0.5")], |_| false),
            vec![t("198.18.0.5:7000")],
            "an IPv4-mapped answer is the IPv4 peer"
        );
        let many: Vec<IpAddr> = (0..5000u32)
            .map(|i| IpAddr::from((0xc612_0000u32 + i).to_be_bytes()))
            .chain([ip("0.0.0.0"), ip("224.0.0.1")])
            .collect();
        let got = targets(&b, &many, |_| false);
        assert_eq!(got.len(), MAX_ADDRS_PER_NAME);
        assert!(!got
            .iter()
            .any(|t| t.ip().is_multicast() || t.ip().is_unspecified()));
    }

    #[test]
    fn answers_replace_targets_and_failures_keep_the_last() {
        let a: DnsName = "a.test".parse().unwrap();
        let b: DnsName = "b.test:7000".parse().unwrap();
        let mut t = DnsTargets::new(vec![(a.clone(), vec![ip("198.18.0.2"), ip("198.18.0.3")])]);
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            t.targets(),
            vec![sa("198.18.0.2:6783"), sa("198.18.0.3:6783")]
        );
        assert!(!t.answer(a.clone(), vec![ip("198.18.0.3"), ip("198.18.0.2")]));
        assert!(t.answer(a.clone(), vec![ip("198.18.0.3"), ip("198.18.0.4")]));
        assert!(
            !t.answer(a.clone(), vec![]),
            "an empty answer keeps the last"
        );
        assert!(t.answer(b.clone(), vec![ip("198.18.0.3")]));
        assert_eq!(
            t.targets(),
            vec![
                sa("198.18.0.3:6783"),
                sa("198.18.0.3:7000"),
                sa("198.18.0.4:6783")
            ]
        );
        assert_eq!(t.source(&sa("198.18.0.3:7000")), Some(&b));
        assert_eq!(t.source(&sa("198.18.0.4:6783")), Some(&a));
        assert_eq!(t.source(&sa("198.18.0.2:6783")), None);
        assert!(t.names(&ip("198.18.0.4")) && !t.names(&ip("198.18.0.2")));
        assert_eq!(t.name_list(), vec![a, b]);
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
