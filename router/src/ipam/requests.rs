//! Requests from this host: allocate, claim and release addresses, served from the
//! space this peer owns, or waiting (with the reason, for the status) for a ring, space
//! or a quorum.

use super::addr::{from_ip, to_ip, AddrRange, Cidr};
use super::allocator::{Ipam, PendingKind};
use super::ring::{Entries, Entry};
use super::space::{first_free, free_count};
use super::{ContainerId, IpamError, Reply, RequestId, MAX_CONTAINER_ID_LEN};
use std::net::Ipv4Addr;
use std::time::Instant;

impl Ipam {
    /// Allocates an address for `container` inside `subnet` (default: the whole range).
    /// Idempotent: a container that has an address there gets it again.
    pub fn allocate(
        &mut self,
        now: Instant,
        container: ContainerId,
        subnet: Option<Cidr>,
    ) -> RequestId {
        let id = self.new_request(now);
        let subnet = subnet.unwrap_or(self.config.range);
        if let Err(e) = self.check_request(&container, subnet.range()) {
            self.complete(id, Err(e));
            return id;
        }
        self.wait(id, PendingKind::Allocate { container, subnet });
        id
    }

    /// Claims `addr` for `container` (fails if another container or peer holds it); the
    /// reply gives `prefix` back with the address.
    pub fn claim(
        &mut self,
        now: Instant,
        container: ContainerId,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> RequestId {
        let id = self.new_request(now);
        let a = from_ip(addr);
        let single = AddrRange {
            start: a,
            end: a + 1,
        };
        if let Err(e) = self.check_request(&container, single) {
            self.complete(id, Err(e));
            return id;
        }
        self.wait(
            id,
            PendingKind::Claim {
                container,
                addr: a,
                prefix,
            },
        );
        id
    }

    /// Releases `addr` of `container` (releasing what it does not hold is not an error).
    pub fn release(&mut self, now: Instant, container: ContainerId, addr: Ipv4Addr) -> RequestId {
        let id = self.new_request(now);
        let freed = self.free_addr(&container, from_ip(addr));
        let released = if freed { vec![addr] } else { Vec::new() };
        self.complete(id, Ok(Reply::Released(released)));
        id
    }

    /// Releases every address of `container`.
    pub fn release_all(&mut self, now: Instant, container: ContainerId) -> RequestId {
        let id = self.new_request(now);
        let addrs: Vec<u64> = self
            .by_container
            .get(&container)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let released = addrs
            .into_iter()
            .filter(|a| self.free_addr(&container, *a))
            .map(to_ip)
            .collect();
        self.complete(id, Ok(Reply::Released(released)));
        id
    }

    pub(super) fn check_request(
        &self,
        container: &ContainerId,
        r: AddrRange,
    ) -> Result<(), IpamError> {
        if self.leaving {
            return Err(IpamError::Leaving);
        }
        if container.0.is_empty() || container.0.len() > MAX_CONTAINER_ID_LEN {
            return Err(IpamError::Invalid(format!(
                "container id must be 1..={MAX_CONTAINER_ID_LEN} bytes"
            )));
        }
        if !self.universe.covers(&r) {
            let what = if r.len() == 1 {
                to_ip(r.start).to_string()
            } else {
                format!("subnet {r}")
            };
            return Err(IpamError::OutOfRange(what, self.config.range));
        }
        Ok(())
    }

    /// Tries every waiting request again (after a ring, space or reachability change).
    pub(super) fn serve_pending(&mut self) {
        let ids: Vec<RequestId> = self.pending.keys().copied().collect();
        for id in ids {
            let Some(p) = self.pending.get(&id).cloned() else {
                continue;
            };
            let result = match p.kind {
                PendingKind::Allocate { container, subnet } => {
                    self.try_allocate(&container, subnet)
                }
                PendingKind::Claim {
                    container,
                    addr,
                    prefix,
                } => self.try_claim(&container, addr, prefix),
                PendingKind::Remove { .. } => None,
            };
            if let Some(result) = result {
                self.pending.remove(&id);
                self.complete(id, result);
            }
        }
    }

    pub(super) fn try_allocate(
        &mut self,
        c: &ContainerId,
        subnet: Cidr,
    ) -> Option<Result<Reply, IpamError>> {
        let within = subnet.usable();
        if let Some(a) = self
            .by_container
            .get(c)
            .and_then(|s| s.range(within.start..within.end).next())
        {
            return Some(Ok(Reply::Allocated(to_ip(*a), subnet)));
        }
        let ring = self.ring.as_ref()?;
        let mine = ring.owned_by(&self.me);
        match first_free(&mine, &self.by_addr, within) {
            Some(a) => {
                self.record(c, a);
                Some(Ok(Reply::Allocated(to_ip(a), subnet)))
            }
            None => {
                self.ask_for_space(within);
                None
            }
        }
    }

    pub(super) fn try_claim(
        &mut self,
        c: &ContainerId,
        a: u64,
        prefix: u8,
    ) -> Option<Result<Reply, IpamError>> {
        if let Some(holder) = self.by_addr.get(&a) {
            return Some(if holder == c {
                Ok(Reply::Claimed(to_ip(a), prefix))
            } else {
                Err(IpamError::InUse(to_ip(a), holder.clone()))
            });
        }
        let owner = self.ring.as_ref()?.owner_of(a).map(|(_, e)| e.owner)?;
        if owner != self.me {
            return Some(Err(IpamError::OwnedElsewhere(to_ip(a), owner)));
        }
        self.record(c, a);
        Some(Ok(Reply::Claimed(to_ip(a), prefix)))
    }

    pub(super) fn record(&mut self, c: &ContainerId, a: u64) {
        self.by_addr.insert(a, c.clone());
        self.by_container.entry(c.clone()).or_default().insert(a);
        self.outbox.dirty();
        self.refresh_free(&[a]);
    }

    pub(super) fn free_addr(&mut self, c: &ContainerId, a: u64) -> bool {
        if self.by_addr.get(&a) != Some(c) {
            return false;
        }
        self.by_addr.remove(&a);
        if let Some(set) = self.by_container.get_mut(c) {
            set.remove(&a);
            if set.is_empty() {
                self.by_container.remove(c);
            }
        }
        self.outbox.dirty();
        self.refresh_free(&[a]);
        self.serve_pending();
        true
    }

    /// Re-advertises the free counts of our tokens holding `addrs`; gossips the change.
    pub(super) fn refresh_free(&mut self, addrs: &[u64]) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let mut delta = Entries::new();
        for &a in addrs {
            let Some((r, e)) = ring.owner_of(a) else {
                continue;
            };
            let free = free_count(r, &self.by_addr);
            if e.owner == self.me && e.free != free {
                let Some(version) = super::ring::next_version(e.version) else {
                    self.stats.version_exhausted += 1;
                    continue;
                };
                let entry = Entry {
                    free,
                    version,
                    ..*e
                };
                ring.set(r.start, entry);
                delta.insert(r.start, entry);
            }
        }
        if !delta.is_empty() {
            self.outbox.dirty();
            self.broadcast_entries(delta);
        }
    }

    /// Why a request waits, for its timeout error and the status.
    pub(super) fn waiting_reason(&self, kind: &PendingKind) -> String {
        let Some(ring) = &self.ring else {
            return match self.config.init {
                super::InitMode::Observer => {
                    "awaiting the IP allocation ring from another peer (this peer is an observer)"
                        .to_string()
                }
                super::InitMode::SeedNames(ref names) => format!(
                    "awaiting the seed peers: {} of {} known",
                    self.seed_names_known(names),
                    names.len()
                ),
                _ => format!(
                    "awaiting consensus: {} of {} peers known",
                    self.consensus.known(),
                    self.expected_peers()
                ),
            };
        };
        match kind {
            PendingKind::Remove { dead, .. } => match self.proposals.get(dead) {
                Some((p, _, _)) => format!(
                    "rmpeer {dead}: {} of the {} votes needed (a majority of the ring's {} seed \
                     peers other than {dead}); bring more of them back",
                    p.answered(),
                    p.quorum(),
                    p.voters.len()
                ),
                None => format!("rmpeer {dead}: no vote"),
            },
            _ => {
                let unreachable = ring
                    .advertised_free()
                    .into_iter()
                    .filter(|(p, free)| *p != self.me && *free > 0)
                    .all(|(p, _)| !self.is_reachable(&p));
                if unreachable {
                    "no free address here and every peer with free space is unreachable".into()
                } else {
                    "no free address here; waiting for a donation from another peer".into()
                }
            }
        }
    }
}
