//! The owner's glue for who its peers are: `--peers-from-dns`
//! ([`crate::dns_peers::DnsTargets`]: answers become the node's named targets),
//! `--reclaim-after` ([`crate::reclaim::Reclaim`]: departed peers that are due get an
//! `rmpeer`, whose end comes back as an [`Input::Reclaimed`]) and `--peer-keys` (the
//! topology takes only listed peers' records; links to others close).

use super::Owner;
use crate::dns_peers::{DnsName, DnsTargets};
use crate::handle::{Input, LinkCmd};
use crate::ipam_driver::{IpamFailure, IpamOp, Removal};
use crate::reclaim::{Outcome, Reclaim};
use crate::status::{DnsTarget, ReclaimDone, ReclaimReport, ReclaimWaiting, Report};
use gossip::mesh::ConnId;
use gossip::node::{Input as NodeInput, LinkUp};
use gossip::peer::PeerId;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// What the owner knows of its peers' sources beyond the node.
#[derive(Default)]
pub(super) struct Peers {
    /// The last good DNS answers.
    dns: DnsTargets,
    /// `--reclaim-after`.
    reclaim: Option<Reclaim>,
}

impl Owner {
    /// With `--peers-from-dns`' first answers (already the node's named targets) and
    /// `--reclaim-after`.
    pub fn with_dns(mut self, dns: DnsTargets, reclaim: Option<Reclaim>) -> Owner {
        self.peers = Peers { dns, reclaim };
        self
    }

    /// A new answer for `name`: the named targets follow it.
    pub(super) fn dns_answer(&mut self, now: Instant, name: DnsName, ips: Vec<IpAddr>) {
        if !self.peers.dns.answer(name.clone(), ips) {
            return;
        }
        let targets = self.peers.dns.targets();
        info!(
            %name,
            "--peers-from-dns {name} changed; targets now: {}",
            targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.node
            .handle(now, NodeInput::Named { targets }, &mut self.channels);
    }

    /// `--peer-keys` now lists `ids`: the topology keeps only their records, and the
    /// links of peers no longer listed close (every other link stays up).
    pub(super) fn peer_keys(&mut self, now: Instant, ids: BTreeSet<PeerId>) {
        let unlisted: Vec<(ConnId, PeerId)> = self
            .node
            .links()
            .iter()
            .filter(|(_, l)| !ids.contains(&l.peer))
            .map(|(conn, l)| (*conn, l.peer))
            .collect();
        self.channels.ipam.set_admitted(Some(ids.clone()));
        self.node.mesh_mut().set_admitted(now, Some(ids));
        for (conn, peer) in unlisted {
            warn!(%peer, "closing the link to {peer}: its key is no longer on the --peer-keys list");
            if let Some(tx) = self.links.get(&conn) {
                let _ = tx.try_send(LinkCmd::Close("not on the --peer-keys list".into()));
            }
        }
    }

    /// Remembers where a peer's link came from (reclaim checks it against DNS).
    pub(super) fn reclaim_link_up(&mut self, link: &LinkUp) {
        if let Some(r) = self.peers.reclaim.as_mut() {
            r.link_up(link.remote_id, link.addr.ip());
        }
    }

    /// Brings reclaim up to date and starts the `rmpeer`s that are due.
    pub(super) fn reclaim_step(&mut self, now: Instant) {
        let Some(reclaim) = self.peers.reclaim.as_mut() else {
            return;
        };
        let owners: Vec<PeerId> = self.channels.ipam.shares().iter().map(|s| s.peer).collect();
        let reachable: BTreeSet<PeerId> = self.node.mesh().routes().reachable().collect();
        reclaim.update(now, &owners, &reachable);
        while let Some(dead) = reclaim.poll_due(now, |ip| self.peers.dns.names(ip)) {
            let name = self.ipam.name(&dead);
            info!(peer = %dead, "reclaiming the address space of {name}: unreachable for longer than --reclaim-after and named by no DNS answer");
            let (answer, rx) = oneshot::channel();
            let op = IpamOp::Reclaim { dead, answer };
            self.ipam.request(&mut self.channels.ipam, now, op);
            if let Some(ctx) = self.ctx.upgrade() {
                let owner = ctx.owner.clone();
                tokio::spawn(async move {
                    if let Ok(result) = rx.await {
                        owner.send(Input::Reclaimed { dead, result });
                    }
                });
            }
        }
    }

    /// When reclaim wants to be asked again.
    pub(super) fn reclaim_timeout(&self) -> Option<Instant> {
        self.peers.reclaim.as_ref().and_then(|r| r.poll_timeout())
    }

    /// A reclaim ended.
    pub(super) fn reclaimed(
        &mut self,
        now: Instant,
        dead: PeerId,
        result: Result<Removal, IpamFailure>,
    ) {
        let Some(reclaim) = self.peers.reclaim.as_mut() else {
            return;
        };
        let name = self.ipam.name(&dead);
        let result = result.map(|r| (r.heir, r.ips)).map_err(|e| e.message);
        match &result {
            Ok((Some(heir), ips)) => {
                info!(peer = %dead, "reclaimed {name}: {ips} IPs, heir {}", self.ipam.name(heir))
            }
            Ok((None, _)) => info!(peer = %dead, "reclaimed {name}: it owned nothing any more"),
            Err(why) => warn!(peer = %dead, "reclaiming {name} failed: {why}; retrying later"),
        }
        reclaim.finished(now, dead, result);
    }

    /// The DNS targets and the reclaim block of the report.
    pub(super) fn dns_report(&self, now: Instant, r: &mut Report) {
        r.router.dns_targets = self
            .peers
            .dns
            .targets()
            .iter()
            .filter_map(|t| {
                self.peers.dns.source(t).map(|name| DnsTarget {
                    address: t.to_string(),
                    name: name.to_string(),
                })
            })
            .collect();
        let (Some(reclaim), Some(ipam)) = (self.peers.reclaim.as_ref(), r.ipam.as_mut()) else {
            return;
        };
        let stats = reclaim.stats();
        let report = ReclaimReport {
            after_secs: reclaim.after().as_secs(),
            waiting: reclaim
                .waiting()
                .into_iter()
                .map(|w| ReclaimWaiting {
                    peer: self.ipam.name(&w.peer),
                    down_secs: now.saturating_duration_since(w.since).as_secs(),
                    blocked: w.blocked.map(str::to_string),
                })
                .collect(),
            done: reclaim
                .history()
                .map(|d| ReclaimDone {
                    peer: self.ipam.name(&d.dead),
                    at: ago(now, d.at),
                    down_secs: d.down_for.as_secs(),
                    outcome: match &d.outcome {
                        Outcome::Took { ips } => format!("took {ips} IPs"),
                        Outcome::OtherHeir(Some(h)) => format!("heir {}", self.ipam.name(h)),
                        Outcome::OtherHeir(None) => "already taken over".into(),
                        Outcome::Failed(why) => format!("failed: {why}"),
                    },
                })
                .collect(),
            took: stats.took,
            other_heir: stats.other_heir,
            failed: stats.failed,
        };
        for w in &report.waiting {
            let why = w.blocked.as_deref().unwrap_or("waiting");
            ipam.text.push_str(&format!(
                "Reclaim: {} unreachable for {} s ({why})\n",
                w.peer, w.down_secs
            ));
        }
        for d in &report.done {
            ipam.text.push_str(&format!(
                "Reclaimed: {} at {} after {} s unreachable: {}\n",
                d.peer, d.at, d.down_secs, d.outcome
            ));
        }
        ipam.reclaim = Some(report);
    }
}

/// `at` (in the past) as a UTC time.
fn ago(now: Instant, at: Instant) -> String {
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let back = now.saturating_duration_since(at).as_secs();
    crate::status::format_utc(unix_now.saturating_sub(back))
}
