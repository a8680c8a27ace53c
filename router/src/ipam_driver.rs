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

/// Where one request's answer goes, typed by the request: a caller only ever gets the
/// kind of answer it asked for.
pub type Answer<T> = oneshot::Sender<Result<T, IpamFailure>>;

/// An address with its prefix length, as allocated or claimed.
pub type Assigned = (Ipv4Addr, u8);

/// An IPAM request from the API, with where its answer goes.
#[derive(Debug)]
pub enum IpamOp {
    /// Allocate for a container, in the range or a subnet of it.
    Allocate {
        /// Container.
        id: ContainerId,
        /// Subnet.
        subnet: Option<Cidr>,
        /// The address and the subnet's prefix length.
        answer: Answer<Assigned>,
    },
    /// Take a given address.
    Claim {
        /// Container.
        id: ContainerId,
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length given back with the address.
        prefix: u8,
        /// The address and `prefix`.
        answer: Answer<Assigned>,
    },
    /// Release one address of a container, or all of them.
    Release {
        /// Container.
        id: ContainerId,
        /// Address; all if none.
        addr: Option<Ipv4Addr>,
        /// The addresses released.
        answer: Answer<Vec<Ipv4Addr>>,
    },
    /// `rmpeer` by name, nickname or id.
    Rmpeer {
        /// The peer as the user named it.
        name: String,
        /// The decision.
        answer: Answer<Removal>,
    },
    /// `reset`: hand our space to a live peer.
    Leave {
        /// The heir, as `weft status` names it.
        answer: Answer<String>,
    },
    /// `--reclaim-after`: `rmpeer` of this departed peer ([`crate::reclaim`]).
    Reclaim {
        /// The departed peer.
        dead: PeerId,
        /// The decision.
        answer: Answer<Removal>,
    },
}

/// What `rmpeer` (or a reclaim) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// The heir; none if the peer owned nothing any more.
    pub heir: Option<PeerId>,
    /// The addresses the peer owned.
    pub ips: u64,
}

/// A failure, with the HTTP status the API answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamFailure {
    /// 400, 409, 503, or 500 for a bug.
    pub status: u16,
    /// What failed and what to do.
    pub message: String,
}

/// A request waiting for IPAM, by the kind of answer its caller wants.
enum Waiter {
    Assigned(Answer<Assigned>),
    Released(Answer<Vec<Ipv4Addr>>),
    Removed(Answer<Removal>),
    Left(Answer<String>),
}

impl Waiter {
    /// Answers with `f` (a caller that went away needs no answer).
    fn fail(self, f: IpamFailure) {
        match self {
            Waiter::Assigned(tx) => drop(tx.send(Err(f))),
            Waiter::Released(tx) => drop(tx.send(Err(f))),
            Waiter::Removed(tx) => drop(tx.send(Err(f))),
            Waiter::Left(tx) => drop(tx.send(Err(f))),
        }
    }
}

/// The driver state kept by the owner beside IPAM.
pub struct IpamDriver {
    pending: HashMap<RequestId, Waiter>,
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

    /// Starts a request; the answer goes where the request says once it completes.
    pub fn request(&mut self, ipam: &mut Ipam, now: Instant, op: IpamOp) {
        let (id, waiter) = match op {
            IpamOp::Allocate { id, subnet, answer } => {
                (ipam.allocate(now, id, subnet), Waiter::Assigned(answer))
            }
            IpamOp::Claim {
                id,
                addr,
                prefix,
                answer,
            } => (ipam.claim(now, id, addr, prefix), Waiter::Assigned(answer)),
            IpamOp::Release { id, addr, answer } => {
                let request = match addr {
                    Some(a) => ipam.release(now, id, a),
                    None => ipam.release_all(now, id),
                };
                (request, Waiter::Released(answer))
            }
            IpamOp::Rmpeer { name, answer } => match self.resolve(ipam, &name) {
                Ok(dead) => (ipam.rmpeer(now, dead), Waiter::Removed(answer)),
                Err(e) => return drop(answer.send(Err(e))),
            },
            IpamOp::Reclaim { dead, answer } => (ipam.rmpeer(now, dead), Waiter::Removed(answer)),
            IpamOp::Leave { answer } => (ipam.leave(now), Waiter::Left(answer)),
        };
        self.pending.insert(id, waiter);
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
        let Some(waiter) = self.pending.remove(&request) else {
            return;
        };
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => return waiter.fail(failure(e)),
        };
        // A caller that went away needs no answer: send errors are dropped.
        match (waiter, reply) {
            (Waiter::Assigned(tx), Reply::Allocated(a, subnet)) => {
                drop(tx.send(Ok((a, subnet.prefix))))
            }
            (Waiter::Assigned(tx), Reply::Claimed(a, prefix)) => drop(tx.send(Ok((a, prefix)))),
            (Waiter::Released(tx), Reply::Released(list)) => drop(tx.send(Ok(list))),
            (Waiter::Removed(tx), Reply::Removed { heir, ips }) => {
                drop(tx.send(Ok(Removal { heir, ips })))
            }
            (Waiter::Left(tx), Reply::Left { heir }) => drop(tx.send(Ok(self.name(&heir)))),
            // Each IPAM entry point completes with its own kind of reply; this is a bug.
            (waiter, reply) => {
                error!("IPAM request {request:?} completed with {reply:?}, not its kind of reply");
                waiter.fail(IpamFailure {
                    status: 500,
                    message: format!("internal error: IPAM answered {reply:?}"),
                });
            }
        }
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
