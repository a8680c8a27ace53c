//! Peers from DNS (`--peers-from-dns NAME[:PORT]`): connection targets taken from the
//! addresses a name resolves to.
//!
//! This is how a DaemonSet finds its peers without API access: a headless Service over
//! the Weft pods (host network, `publishNotReadyAddresses: true`) answers with every
//! node's address. Any DNS name with several A/AAAA records serves hosts outside
//! Kubernetes the same way. The names are resolved through the host's resolver when the
//! router starts; this host's own addresses are left out, and the answer also sets the
//! IPAM consensus quorum ([`quorum`]) when no peer is given on the command line, so that
//! routers started together seed one ring. Routers that start later find the earlier
//! ones in the answer; the mesh finds the rest by gossip.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
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
        .map(|ip| SocketAddr::new(*ip, name.port))
        .collect();
    set.into_iter().collect()
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
    fn the_quorum_counts_every_named_host_and_us() {
        let local = |i: &IpAddr| *i == ip("198.18.0.1");
        let three = [ip("198.18.0.1"), ip("198.18.0.2"), ip("198.18.0.3")];
        assert_eq!(quorum(&three, local), 3);
        assert_eq!(quorum(&three[1..], local), 3);
        assert_eq!(quorum(&[], local), 1);
        assert!(is_local(&ip("127.0.0.1")));
    }
}
