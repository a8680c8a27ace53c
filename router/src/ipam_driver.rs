//! The owner's side of IPAM: drives the [`Ipam`] that the owner holds (in its
//! [`crate::channels::RouterChannels`]) and lends to the mesh as [`IPAM_CHANNEL`].
//!
//! The owner calls in for requests, persisted snapshots and topology changes;
//! [`IpamDriver::pump`] then carries out every output: snapshots go to the store thread
//! (confirmed later by `Input::IpamPersisted`), gossip goes to the mesh, completions go
//! back to the API caller's oneshot, events to the log.

use crate::ipam::{Cidr, ContainerId, Ipam, IpamError, IpamOutput, Reply, RequestId, IPAM_CHANNEL};
use crate::status::{IpamAllocation, IpamReport, IpamShare};
use gossip::mesh::Mesh;
use gossip::peer::{display_name, PeerId, ShortName};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

/// An IPAM request from the API.
#[derive(Debug, Clone)]
pub enum IpamOp {
    /// Allocate for a container, in the range or a subnet of it.
    Allocate {
        /// Container.
        id: ContainerId,
        /// Subnet.
        subnet: Option<Cidr>,
    },
    /// Take a given address.
    Claim {
        /// Container.
        id: ContainerId,
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length echoed back.
        prefix: u8,
    },
    /// Release one address of a container, or all of them.
    Release {
        /// Container.
        id: ContainerId,
        /// Address; all if none.
        addr: Option<Ipv4Addr>,
    },
    /// `rmpeer` by name, nickname or id.
    Rmpeer(String),
    /// `reset`: hand our space to a live peer.
    Leave,
    /// `--reclaim-after`: `rmpeer` of this departed peer ([`crate::reclaim`]).
    Reclaim(PeerId),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamAnswer {
    /// An address with its prefix length.
    Addr(Ipv4Addr, u8),
    /// Addresses released.
    Released(Vec<Ipv4Addr>),
    /// weave's `N IPs taken over from X` line.
    Removed(String),
    /// Space handed to this peer.
    Left(String),
    /// A reclaim's decision: the heir (none if the peer owned nothing any more) and the
    /// addresses the peer held.
    Reclaimed {
        /// The heir.
        heir: Option<PeerId>,
        /// Addresses it held.
        ips: u64,
    },
}

/// A failure, with the HTTP status the API answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamFailure {
    /// 400, 409 or 503.
    pub status: u16,
    /// What failed and what to do.
    pub message: String,
}

/// What an API caller gets back.
pub type IpamResult = Result<IpamAnswer, IpamFailure>;

enum Ctx {
    Addr(Option<u8>),
    Release(Vec<Ipv4Addr>),
    Removed { ips: u64, name: String },
    Reclaimed { ips: u64 },
    Left,
}

/// The driver state kept by the owner beside IPAM.
pub struct IpamDriver {
    pending: HashMap<RequestId, (Ctx, oneshot::Sender<IpamResult>)>,
    persist: std::sync::mpsc::Sender<crate::store::Write>,
    nicknames: HashMap<PeerId, String>,
}

fn failure(e: IpamError) -> IpamFailure {
    let status = match &e {
        IpamError::TimedOut(_) | IpamError::NoRing(_) | IpamError::Leaving => 503,
        IpamError::InUse(..) | IpamError::OwnedElsewhere(..) | IpamError::PeerAlive(_) => 409,
        IpamError::OutOfRange(..) | IpamError::Invalid(_) => 400,
    };
    let message = match e {
        IpamError::TimedOut(why) => why,
        other => other.to_string(),
    };
    IpamFailure { status, message }
}

fn bad(message: String) -> IpamFailure {
    IpamFailure {
        status: 400,
        message,
    }
}

impl IpamDriver {
    /// A driver whose snapshots go to `persist` (the store thread).
    pub fn new(persist: std::sync::mpsc::Sender<crate::store::Write>) -> IpamDriver {
        IpamDriver {
            pending: HashMap::new(),
            persist,
            nicknames: HashMap::new(),
        }
    }

    /// Starts a request; the answer comes on `reply` once it completes.
    pub fn request(
        &mut self,
        ipam: &mut Ipam,
        now: Instant,
        op: IpamOp,
        reply: oneshot::Sender<IpamResult>,
    ) {
        let (id, ctx) = match op {
            IpamOp::Allocate { id, subnet } => (ipam.allocate(now, id, subnet), Ctx::Addr(None)),
            IpamOp::Claim { id, addr, prefix } => {
                (ipam.claim(now, id, addr), Ctx::Addr(Some(prefix)))
            }
            IpamOp::Release { id, addr } => {
                let held: Vec<Ipv4Addr> = ipam
                    .allocations()
                    .into_iter()
                    .find(|(c, _)| *c == id)
                    .map(|(_, a)| a)
                    .unwrap_or_default();
                match addr {
                    Some(a) => {
                        let list = held.into_iter().filter(|h| *h == a).collect();
                        (ipam.release(now, id, a), Ctx::Release(list))
                    }
                    None => (ipam.release_all(now, id), Ctx::Release(held)),
                }
            }
            IpamOp::Rmpeer(name) => {
                let dead = match self.resolve(ipam, &name) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let ips = ipam
                    .shares()
                    .iter()
                    .find(|s| s.peer == dead)
                    .map_or(0, |s| s.ips);
                (ipam.rmpeer(now, dead), Ctx::Removed { ips, name })
            }
            IpamOp::Reclaim(dead) => {
                let ips = ipam
                    .shares()
                    .iter()
                    .find(|s| s.peer == dead)
                    .map_or(0, |s| s.ips);
                (ipam.rmpeer(now, dead), Ctx::Reclaimed { ips })
            }
            IpamOp::Leave => (ipam.leave(now), Ctx::Left),
        };
        self.pending.insert(id, (ctx, reply));
    }

    /// A peer by nickname, short name or full id, among the ring's owners and the
    /// peers the mesh knows.
    fn resolve(&self, ipam: &Ipam, name: &str) -> Result<PeerId, IpamFailure> {
        let mut candidates: BTreeSet<PeerId> = ipam.shares().iter().map(|s| s.peer).collect();
        candidates.extend(self.nicknames.keys().copied());
        let short: Option<ShortName> = name.parse().ok();
        let found: Vec<PeerId> = candidates
            .into_iter()
            .filter(|p| {
                self.nicknames.get(p).is_some_and(|n| n == name)
                    || short.as_ref().is_some_and(|s| s.matches(p))
                    || p.to_hex() == name
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(bad(format!(
                "no peer named {name:?} is known; give its name or nickname as `weft status ipam` shows"
            ))),
            _ => Err(bad(format!(
                "{name:?} names several peers; give the peer name (aa:bb:cc:dd:ee:ff) instead"
            ))),
        }
    }

    /// Routes or topology changed: tell IPAM who is reachable, learn nicknames.
    pub fn topology_changed(&mut self, ipam: &mut Ipam, mesh: &Mesh, now: Instant) {
        for (id, record) in mesh.topology().peers() {
            self.nicknames.insert(*id, record.nickname().to_string());
        }
        let reachable: Vec<PeerId> = mesh.routes().reachable().collect();
        ipam.handle_reachable(now, reachable);
    }

    /// Carries out IPAM's outputs. True if it sent gossip (the mesh has output then).
    pub fn pump(&mut self, ipam: &mut Ipam, mesh: &mut Mesh, now: Instant) -> bool {
        let mut sent = false;
        loop {
            let Some(out) = ipam.poll_output() else {
                return sent;
            };
            match out {
                IpamOutput::Persist { seq, snapshot } => {
                    if self
                        .persist
                        .send(crate::store::Write::Snapshot(seq, snapshot))
                        .is_err()
                    {
                        warn!("the store thread is gone; IPAM changes are not persisted");
                    }
                }
                IpamOutput::Broadcast(bytes) => {
                    mesh.broadcast(now, IPAM_CHANNEL, bytes);
                    sent = true;
                }
                IpamOutput::Unicast { to, payload } => {
                    sent |= mesh.send_unicast(to, IPAM_CHANNEL, payload);
                }
                IpamOutput::Completed { request, result } => self.complete(request, result),
                IpamOutput::Event(event) if event.is_error() => error!("{}", event.message()),
                IpamOutput::Event(event) => info!("{}", event.message()),
            }
        }
    }

    fn complete(&mut self, request: RequestId, result: Result<Reply, IpamError>) {
        let Some((ctx, reply)) = self.pending.remove(&request) else {
            return;
        };
        let answer = match (result, ctx) {
            (Err(e), _) => Err(failure(e)),
            (Ok(Reply::Allocated(a, cidr)), _) => Ok(IpamAnswer::Addr(a, cidr.prefix)),
            (Ok(Reply::Claimed(a)), Ctx::Addr(p)) => Ok(IpamAnswer::Addr(a, p.unwrap_or(32))),
            (Ok(Reply::Released(n)), Ctx::Release(list)) => {
                Ok(IpamAnswer::Released(list.into_iter().take(n).collect()))
            }
            (Ok(Reply::Removed { .. }), Ctx::Removed { ips, name }) => Ok(IpamAnswer::Removed(
                format!("{ips} IPs taken over from {name}"),
            )),
            (Ok(Reply::Removed { heir }), Ctx::Reclaimed { ips }) => {
                Ok(IpamAnswer::Reclaimed { heir, ips })
            }
            (Ok(Reply::Left { heir }), _) => Ok(IpamAnswer::Left(self.name(&heir))),
            (Ok(other), _) => Ok(IpamAnswer::Removed(format!("{other:?}"))),
        };
        let _ = reply.send(answer);
    }

    /// `p` as `weft status` names it (short id and nickname, when known).
    pub fn name(&self, p: &PeerId) -> String {
        display_name(p, self.nicknames.get(p).map_or("", |n| n.as_str()))
    }

    /// The IPAM part of the report.
    pub fn report(&self, ipam: &Ipam, mesh: &Mesh, my_nickname: &str) -> IpamReport {
        let reachable: BTreeSet<PeerId> = mesh.routes().reachable().collect();
        let me = ipam.peer();
        let nick = |p: &PeerId| {
            if *p == me {
                my_nickname.to_string()
            } else {
                self.nicknames.get(p).cloned().unwrap_or_default()
            }
        };
        let range = ipam.default_subnet();
        IpamReport {
            status: ipam.status_line(),
            range: range.to_string(),
            default_subnet: range.to_string(),
            range_size: ipam.universe().len(),
            shares: ipam
                .shares()
                .iter()
                .map(|s| IpamShare {
                    peer: display_name(&s.peer, &nick(&s.peer)),
                    ips: s.ips,
                    percent: s.percent,
                    reachable: s.peer == me || reachable.contains(&s.peer),
                })
                .collect(),
            allocations: ipam
                .allocations()
                .into_iter()
                .flat_map(|(c, addrs)| {
                    addrs.into_iter().map(move |a| IpamAllocation {
                        id: c.0.clone(),
                        addr: format!("{a}/{}", range.prefix),
                    })
                })
                .collect(),
            pending: ipam
                .pending_requests()
                .into_iter()
                .map(|p| format!("{}: waiting for {}", p.what, p.waiting_for))
                .collect(),
            stats: ipam.stats(),
            reclaim: None,
            text: ipam.format_status(&nick, &reachable),
        }
    }
}
