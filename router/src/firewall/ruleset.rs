//! What Weft's nftables table `inet weft` should hold, rendered as one `nft -f` script.
//!
//! Two parts share the table, each present only when wanted:
//! - the fast path's guard: only current fast-path peers' (and admitted hosts')
//!   underlay addresses may send to the VXLAN port; the rest is dropped and counted;
//! - masquerade: traffic from the overlay's subnets that leaves through an interface
//!   other than the `weft` bridge, to an address outside those subnets (and not
//!   multicast), takes the outgoing interface's address (as weave's, kubenet's and the
//!   CNI bridge plugin's `ipMasq` do). Traffic between pods never leaves through
//!   another interface, and the host's own exposed address is inside the subnets.
//!
//! [`Desired::script`] replaces the whole table in one atomic transaction, so an earlier
//! copy (a crash, an operator's edit, a deleted table) never lingers half-applied.
//! Pure: unit-tested without root.

use datapath::cidr::LinkAddr;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The table's family and name.
pub const TABLE: &str = "inet weft";
/// The counter of VXLAN packets dropped for coming from an address not allowed.
pub const COUNTER: &str = "vxlan_injected";
/// The bridge whose traffic is never masqueraded (it stays on the overlay).
const BRIDGE: &str = crate::config::BRIDGE;

/// What the table should contain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The fast path's guard: the VXLAN port and the underlay addresses allowed to send
    /// to it; `None` when the fast path is off.
    pub fastdp: Option<(u16, BTreeSet<IpAddr>)>,
    /// Overlay subnets whose traffic to elsewhere is masqueraded; empty: none.
    pub masquerade: Vec<LinkAddr>,
}

impl Desired {
    /// True when there is nothing to install (the table is deleted).
    pub fn is_empty(&self) -> bool {
        self.fastdp.is_none() && self.masquerade.is_empty()
    }

    /// The script that makes the table exactly this (or deletes it when empty).
    pub fn script(&self) -> String {
        let mut out = format!("table {TABLE}\ndelete table {TABLE}\n");
        if self.is_empty() {
            return out;
        }
        let _ = writeln!(out, "table {TABLE} {{");
        if let Some((port, _)) = &self.fastdp {
            let _ = write!(
                out,
                "\tcounter {COUNTER} {{ }}\n\
                 \tset fastdp4 {{ type ipv4_addr; }}\n\
                 \tset fastdp6 {{ type ipv6_addr; }}\n\
                 \tchain input {{\n\
                 \t\ttype filter hook input priority -10; policy accept;\n\
                 \t\tudp dport {port} ip saddr @fastdp4 accept\n\
                 \t\tudp dport {port} ip6 saddr @fastdp6 accept\n\
                 \t\tudp dport {port} counter name {COUNTER} drop\n\
                 \t}}\n"
            );
        }
        let rules = masquerade_rules(&self.masquerade);
        if !rules.is_empty() {
            out.push_str(
                "\tchain postrouting {\n\
                 \t\ttype nat hook postrouting priority srcnat; policy accept;\n",
            );
            for rule in &rules {
                let _ = writeln!(out, "\t\t{rule}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        if let Some((_, allowed)) = &self.fastdp {
            for (set, v4) in [("fastdp4", true), ("fastdp6", false)] {
                let addrs: Vec<String> = allowed
                    .iter()
                    .filter(|a| a.is_ipv4() == v4)
                    .map(IpAddr::to_string)
                    .collect();
                if !addrs.is_empty() {
                    let _ = writeln!(out, "add element {TABLE} {set} {{ {} }}", addrs.join(", "));
                }
            }
        }
        out
    }
}

/// The masquerade chain's rules for these subnets (empty when there are none): the
/// bridge's own traffic first returns, then one rule per address family.
pub fn masquerade_rules(subnets: &[LinkAddr]) -> Vec<String> {
    let subnets = outermost(subnets);
    let mut rules = Vec::new();
    for (family, multicast, v4) in [("ip", "224.0.0.0/4", true), ("ip6", "ff00::/8", false)] {
        let nets: Vec<String> = subnets
            .iter()
            .filter(|n| n.ip.is_ipv4() == v4)
            .map(LinkAddr::to_string)
            .collect();
        if nets.is_empty() {
            continue;
        }
        let nets = nets.join(", ");
        rules.push(format!(
            "{family} saddr {{ {nets} }} {family} daddr != {{ {nets}, {multicast} }} masquerade"
        ));
    }
    if !rules.is_empty() {
        rules.insert(0, format!("oifname \"{BRIDGE}\" return"));
    }
    rules
}

/// The network of `addr` (host bits cleared).
pub fn network(addr: LinkAddr) -> LinkAddr {
    let ip = match addr.ip {
        IpAddr::V4(ip) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(addr.prefix))
                .unwrap_or(0);
            IpAddr::from((u32::from(ip) & mask).to_be_bytes())
        }
        IpAddr::V6(ip) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(addr.prefix))
                .unwrap_or(0);
            IpAddr::from((u128::from(ip) & mask).to_be_bytes())
        }
    };
    LinkAddr {
        ip,
        prefix: addr.prefix,
    }
}

/// Whether network `outer` contains network `inner`.
fn contains(outer: LinkAddr, inner: LinkAddr) -> bool {
    outer.ip.is_ipv4() == inner.ip.is_ipv4()
        && outer.prefix <= inner.prefix
        && network(LinkAddr {
            ip: inner.ip,
            prefix: outer.prefix,
        }) == network(outer)
}

/// The networks of `subnets`, sorted, without any that another one contains (nft
/// refuses overlapping intervals in one set).
pub fn outermost(subnets: &[LinkAddr]) -> Vec<LinkAddr> {
    let mut nets: Vec<LinkAddr> = subnets.iter().copied().map(network).collect();
    nets.sort_by_key(|n| (n.ip.is_ipv6(), n.prefix, n.ip));
    nets.dedup();
    let mut kept: Vec<LinkAddr> = Vec::new();
    for n in nets {
        if !kept.iter().any(|k| contains(*k, n)) {
            kept.push(n);
        }
    }
    kept.sort_by_key(|n| (n.ip.is_ipv6(), n.ip, n.prefix));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> LinkAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nested_and_repeated_subnets_collapse_to_the_outermost() {
        let got = outermost(&[
            cidr("10.40.0.1/16"),
            cidr("10.32.0.0/12"),
            cidr("10.40.3.7/24"),
            cidr("fd00:40::1/64"),
            cidr("fd00:40::2/64"),
            cidr("192.0.2.9/24"),
        ]);
        let want = ["10.32.0.0/12", "192.0.2.0/24", "fd00:40::/64"].map(cidr);
        assert_eq!(got, want);
        assert_eq!(network(cidr("10.40.1.1/0")), cidr("0.0.0.0/0"));
        assert_eq!(network(cidr("10.40.1.1/32")), cidr("10.40.1.1/32"));
    }

    #[test]
    fn masquerade_leaves_the_bridge_pods_and_multicast_alone() {
        let rules = masquerade_rules(&[cidr("10.32.0.0/12"), cidr("fd00:40::1/64")]);
        assert_eq!(
            rules,
            [
                "oifname \"weft\" return",
                "ip saddr { 10.32.0.0/12 } ip daddr != { 10.32.0.0/12, 224.0.0.0/4 } masquerade",
                "ip6 saddr { fd00:40::/64 } ip6 daddr != { fd00:40::/64, ff00::/8 } masquerade",
            ]
        );
        assert!(masquerade_rules(&[]).is_empty());
    }

    #[test]
    fn the_script_replaces_the_table_with_what_is_wanted() {
        let allowed: BTreeSet<IpAddr> =
            ["198.18.0.2".parse().unwrap(), "fd00::1".parse().unwrap()].into();
        let both = Desired {
            fastdp: Some((6784, allowed)),
            masquerade: vec![cidr("10.40.0.1/16")],
        }
        .script();
        assert!(both.starts_with("table inet weft\ndelete table inet weft\ntable inet weft {\n"));
        assert!(both.contains("udp dport 6784 counter name vxlan_injected drop"));
        assert!(both.contains("add element inet weft fastdp4 { 198.18.0.2 }"));
        assert!(both.contains("add element inet weft fastdp6 { fd00::1 }"));
        assert!(both.contains("type nat hook postrouting priority srcnat"));
        let guard_only = Desired {
            fastdp: Some((6784, BTreeSet::new())),
            masquerade: vec![],
        }
        .script();
        assert!(!guard_only.contains("add element"));
        assert!(!guard_only.contains("postrouting"));
        let masq_only = Desired {
            fastdp: None,
            masquerade: vec![cidr("10.40.0.1/16")],
        }
        .script();
        assert!(!masq_only.contains("6784"));
        assert!(masq_only.contains("masquerade"));
        assert_eq!(
            Desired::default().script(),
            "table inet weft\ndelete table inet weft\n"
        );
    }
}
