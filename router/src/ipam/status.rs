//! Status and metrics: weave's `status ipam` layout and status-line vocabulary.
//!
//! `weft status ipam` prints one line per peer owning space,
//! `%-37v %8d IPs (%04.1f%% of total) %s` (weave's `fmt.Sprintf`), the local peer first
//! with `(N active)`, and `- unreachable!` after owners the mesh cannot reach. The status
//! line uses weave's words: `idle`, `ready`, `awaiting consensus (quorum: Q, known: K)`,
//! `waiting for IP(s) to become available`, `all IP ranges owned by unreachable peers -
//! use 'rmpeer' if they are dead`, plus `priming` for an observer without a ring and our
//! own report of a foreign ring.

use super::allocator::{Ipam, PendingKind};
use super::ring::Ring;
use super::{AddrRange, Cidr, IpamStats, RequestId};
use gossip::peer::{display_name, PeerId};
use std::collections::BTreeSet;
use std::time::Instant;

/// One waiting request, for the status.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PendingStatus {
    /// The request.
    pub request: RequestId,
    /// What it is, e.g. `allocate c1 in 10.32.0.0/12`.
    pub what: String,
    /// Why it waits.
    pub waiting_for: String,
    /// When it gives up.
    pub deadline: Instant,
}

/// One peer's share of the range.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Share {
    /// The peer.
    pub peer: PeerId,
    /// Addresses it owns.
    pub ips: u64,
    /// Percent of the range.
    pub percent: f64,
}

impl Ipam {
    /// Who we are.
    pub fn peer(&self) -> PeerId {
        self.me
    }

    /// The allocation range.
    pub fn universe(&self) -> AddrRange {
        self.universe
    }

    /// `DefaultSubnet:` (the whole range).
    pub fn default_subnet(&self) -> Cidr {
        self.config.range
    }

    /// The ring replica, once there is one.
    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// Our containers and their addresses.
    pub fn allocations(&self) -> Vec<(super::ContainerId, Vec<std::net::Ipv4Addr>)> {
        self.by_container
            .iter()
            .map(|(c, s)| {
                (
                    c.clone(),
                    s.iter().map(|a| super::addr::to_ip(*a)).collect(),
                )
            })
            .collect()
    }

    /// Addresses allocated here.
    pub fn active_allocations(&self) -> usize {
        self.by_addr.len()
    }

    /// The ranges we own.
    pub fn own_ranges(&self) -> Vec<AddrRange> {
        self.ring
            .as_ref()
            .map(|r| r.owned_by(&self.me))
            .unwrap_or_default()
    }

    /// Each owner's share of the range, largest first.
    pub fn shares(&self) -> Vec<Share> {
        let Some(ring) = &self.ring else {
            return Vec::new();
        };
        let total = self.universe.len().max(1) as f64;
        let mut v: Vec<Share> = ring
            .shares()
            .into_iter()
            .map(|(peer, ips)| Share {
                peer,
                ips,
                percent: ips as f64 * 100.0 / total,
            })
            .collect();
        v.sort_by(|a, b| b.ips.cmp(&a.ips).then(a.peer.cmp(&b.peer)));
        v
    }

    /// Owners of space that are not in `reachable` (and are not us).
    pub fn unreachable_owners(&self, reachable: &BTreeSet<PeerId>) -> Vec<PeerId> {
        self.shares()
            .into_iter()
            .map(|s| s.peer)
            .filter(|p| *p != self.me && !reachable.contains(p))
            .collect()
    }

    /// Counters.
    pub fn stats(&self) -> IpamStats {
        self.stats
    }

    /// Requests waiting, with why.
    pub fn pending_requests(&self) -> Vec<PendingStatus> {
        self.pending
            .iter()
            .map(|(id, p)| PendingStatus {
                request: *id,
                what: match &p.kind {
                    PendingKind::Allocate { container, subnet } => {
                        format!("allocate {container} in {subnet}")
                    }
                    PendingKind::Claim {
                        container, addr, ..
                    } => {
                        format!("claim {} for {container}", super::addr::to_ip(*addr))
                    }
                    PendingKind::Remove { dead, .. } => format!("rmpeer {dead}"),
                },
                waiting_for: self.waiting_reason(&p.kind),
                deadline: p.deadline,
            })
            .collect()
    }

    /// The `Status:` line.
    pub fn status_line(&self) -> String {
        if let Some((_, peer)) = self.foreign.iter().next() {
            return format!(
                "IP allocation was seeded by different peers (peer {peer}) - see the log"
            );
        }
        let Some(ring) = &self.ring else {
            return match self.config.init {
                super::InitMode::Observer => "priming".to_string(),
                super::InitMode::SeedNames(ref names) => format!(
                    "awaiting seed peers (seeds: {}, known: {})",
                    names.len(),
                    self.seed_names_known(names)
                ),
                _ => format!(
                    "awaiting consensus (quorum: {}, known: {})",
                    self.consensus.quorum(),
                    self.consensus.known()
                ),
            };
        };
        let reachable_space = ring
            .shares()
            .into_keys()
            .any(|p| p == self.me || self.is_reachable(&p));
        if !reachable_space {
            return "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead"
                .to_string();
        }
        let waiting = self
            .pending
            .values()
            .any(|p| !matches!(p.kind, PendingKind::Remove { .. }));
        if waiting {
            "waiting for IP(s) to become available".to_string()
        } else {
            "ready".to_string()
        }
    }

    /// `weft status ipam`; `nickname` names peers, `reachable` is the mesh's view.
    pub fn format_status(
        &self,
        nickname: &dyn Fn(&PeerId) -> String,
        reachable: &BTreeSet<PeerId>,
    ) -> String {
        let mut shares = self.shares();
        shares.sort_by_key(|s| s.peer != self.me);
        let mut out = String::new();
        for s in shares {
            let info = if s.peer == self.me {
                format!("({} active)", self.active_allocations())
            } else if !reachable.contains(&s.peer) {
                "- unreachable!".to_string()
            } else {
                String::new()
            };
            let name = display_name(&s.peer, &nickname(&s.peer));
            out.push_str(&format!(
                "{name:<37} {:>8} IPs ({:04.1}% of total) {info}\n",
                s.ips, s.percent
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ContainerId, InitMode, IpamConfig};
    use super::*;

    #[test]
    fn weave_layout() {
        let ids: Vec<PeerId> = (1..=3).map(|i| PeerId([i; 16])).collect();
        let cfg = IpamConfig::new("10.32.0.0/12".parse().unwrap(), InitMode::Seed(ids.clone()));
        let now = Instant::now();
        let mut ipam = Ipam::new(ids[0], cfg, now, 0);
        ipam.allocate(now, ContainerId("a".into()), None);
        ipam.allocate(now, ContainerId("b".into()), None);
        let names = |p: &PeerId| ["one", "two", "three"][usize::from(p.0[0]) - 1].to_string();
        let reach = BTreeSet::from([ids[1]]);
        let text = ipam.format_status(&names, &reach);
        assert_eq!(
            text,
            "01:01:01:01:01:01(one)                  349526 IPs (33.3% of total) (2 active)\n\
             02:02:02:02:02:02(two)                  349525 IPs (33.3% of total) \n\
             03:03:03:03:03:03(three)                349525 IPs (33.3% of total) - unreachable!\n"
        );
        assert_eq!(ipam.status_line(), "ready");
        assert_eq!(ipam.unreachable_owners(&reach), vec![ids[2]]);
    }
}
