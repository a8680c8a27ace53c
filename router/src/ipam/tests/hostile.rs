//! The hostile simulation: eight honest routers allocate and release on `gossip::sim`
//! while a ninth, holding the network secret, sends every IPAM message kind with extreme
//! and forged values in random sequences (gossip, unicasts, garbage). After every step:
//! - no honest router panicked (a panic fails the test);
//! - every honest router's state is bounded: votes, foreign rings, ring tokens,
//!   proposals, pending requests, and its persisted snapshot decodes again;
//! - no address is held twice among honest routers, and each allocation lies in space
//!   its router owns;
//! - every honest router reaches every other (checked every 50 steps).
//!
//! What the hostile router cannot do here: forge *relayed ring gossip* that moves an
//! honest router's token to another owner. Ring entries do not yet carry their
//! writer's signature, so every replica but the victim's own would take such an entry;
//! that attack waits for signed ring entries (docs/security.md, "Open"). Nor does it
//! start before the ring exists: bootstrap claims are signed by their participant, but
//! a peer can invent participants (a fresh key each), and consensus counts whoever
//! takes part, so it could stall the first consensus (docs/security.md, "Open"). Its
//! bootstrap claims after that (in honest peers' names, signed with its own key) are
//! still sent and refused. Everything a
//! router can check from what it already knows is tried: donations of space the
//! sender does not own, takeover decisions about live peers, version jumps, foreign
//! rings, bootstrap claims, oversized and undecodable payloads.
//!
//! `cargo test -p router ipam_hostile` runs 20 seeds × [`STEPS`] steps.

use super::harness::*;
use crate::ipam::allocator::{MAX_FOREIGN_RINGS, MAX_VOTES};
use crate::ipam::consensus::{Ballot, Claims, SignedClaims, SignedClaimsMap};
use crate::ipam::persist::MAX_SNAPSHOT_BYTES;
use crate::ipam::ring::{Entries, Entry, MAX_RING_ENTRIES, MAX_VERSION, MAX_VERSION_STEP};
use crate::ipam::takeover::{TakeoverMsg, Vote};
use crate::ipam::wire::{GossipMsg, UnicastMsg};
use crate::ipam::{AddrRange, ContainerId, InitMode, Snapshot, IPAM_CHANNEL};
use gossip::mesh::Mesh;
use gossip::peer::PeerId;
use gossip::sim::{node_id, node_identity};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

const HONEST: usize = 8;
const RANGE: &str = "10.32.0.0/22";
const STEPS: usize = 10_000;

/// What the hostile router has overheard: the ring's seeds and entries (any router
/// that holds the secret receives the ring's gossip).
#[derive(Default)]
struct Overheard {
    ring: Option<(u64, Vec<PeerId>, Entries)>,
}

/// The hostile router's forger.
struct Forger {
    rng: StdRng,
    honest: Vec<PeerId>,
    universe: AddrRange,
    overheard: Rc<RefCell<Overheard>>,
    sent: Rc<RefCell<u64>>,
    /// Whether this message may break the codec's or IPAM's limits.
    wild: bool,
}

impl Forger {
    fn peer(&mut self) -> PeerId {
        match self.rng.gen_range(0..4) {
            0 | 1 => self.honest[self.rng.gen_range(0..self.honest.len())],
            2 => PeerId(self.rng.gen()),
            _ => node_id(HONEST),
        }
    }

    /// A version to forge over `current`; above [`MAX_VERSION`] only when `wild` (the
    /// whole message is then refused, and a neighbour that sent it loses its link).
    fn version(&mut self, current: u64) -> u64 {
        let top = if self.wild { 6 } else { 4 };
        match self.rng.gen_range(0..top) {
            0 => current.saturating_add(1).min(MAX_VERSION),
            1 => current.saturating_add(MAX_VERSION_STEP).min(MAX_VERSION),
            2 => current
                .saturating_add(MAX_VERSION_STEP + 1)
                .min(MAX_VERSION),
            3 => MAX_VERSION,
            4 => u64::MAX,
            _ => self.rng.gen(),
        }
    }

    fn round(&mut self) -> u64 {
        match self.rng.gen_range(usize::from(!self.wild)..4) {
            0 => u64::MAX,
            1 => crate::ipam::consensus::MAX_ROUND,
            2 => 0,
            _ => self.rng.gen_range(1..1000),
        }
    }

    fn ballot(&mut self) -> Ballot {
        Ballot {
            round: self.round(),
            proposer: self.peer(),
        }
    }

    /// A vote no honest voter made: the hostile router's own (for any decision), one
    /// in an honest voter's name signed with the hostile key, or an honest voter's key
    /// with a random signature.
    fn vote(&mut self) -> Vote {
        let ring = match &self.overheard.borrow().ring {
            Some((id, ..)) if self.rng.gen_bool(0.8) => *id,
            _ => self.rng.gen(),
        };
        let (dead, ballot, heir) = (self.peer(), self.ballot(), self.peer());
        let own = Vote::new(&node_identity(HONEST), ring, dead, ballot, heir);
        let victim = self.rng.gen_range(0..HONEST);
        match self.rng.gen_range(0..3) {
            0 => own,
            1 => Vote {
                voter: node_id(victim),
                ..own
            },
            _ => {
                let mut signature = own.signature;
                self.rng.fill(&mut signature.0[..]);
                Vote {
                    voter: node_id(victim),
                    key: *node_identity(victim).signing_key(),
                    signature,
                }
            }
        }
    }

    fn range(&mut self) -> AddrRange {
        let u = self.universe;
        match self.rng.gen_range(if self.wild { 0 } else { 2 }..4) {
            0 => AddrRange {
                start: 0,
                end: u64::MAX,
            },
            1 => AddrRange {
                start: u.end,
                end: u.end + 16,
            },
            _ => {
                let start = self.rng.gen_range(u.start..u.end);
                let end = self.rng.gen_range(start..=u.end);
                AddrRange { start, end }
            }
        }
    }

    /// Entries that keep each token's owner (the only ring edits a replica other than
    /// the owner can refuse today, see the module doc) but with extreme versions and
    /// free counts, plus new tokens inside a range for that range's owner.
    fn same_owner_entries(&mut self, entries: &Entries) -> Entries {
        let mut out = Entries::new();
        let tokens: Vec<(u64, Entry)> = entries.iter().map(|(t, e)| (*t, *e)).collect();
        for _ in 0..self.rng.gen_range(1..8) {
            let Some(&(t, e)) = tokens.get(self.rng.gen_range(0..tokens.len().max(1))) else {
                break;
            };
            let version = self.version(e.version);
            let free = if self.wild && self.rng.gen_bool(0.5) {
                u64::MAX
            } else {
                self.rng.gen()
            };
            out.insert(t, Entry { version, free, ..e });
            let inside = t.saturating_add(self.rng.gen_range(1..4));
            if inside < self.universe.end && !entries.contains_key(&inside) {
                out.insert(inside, Entry { version, free, ..e });
            }
        }
        out
    }

    /// A donation to `to` of space `to` may not get from us: a real token of someone
    /// else's, or a new one inside it.
    fn stolen_space(&mut self, to: PeerId, entries: &Entries) -> Entries {
        let mut out = Entries::new();
        for (t, e) in entries.iter().filter(|(_, e)| e.owner != to).take(4) {
            let version = self.version(e.version);
            out.insert(
                *t,
                Entry {
                    owner: to,
                    version,
                    free: 1,
                },
            );
        }
        out
    }

    fn gossip(&mut self) -> GossipMsg {
        let overheard = self.overheard.borrow().ring.clone();
        match (self.rng.gen_range(0..4), overheard) {
            (0 | 1, Some((_, seeds, entries))) => GossipMsg::Ring {
                sender: self.peer(),
                universe: self.universe,
                seeds,
                entries: self.same_owner_entries(&entries),
            },
            (2, _) => {
                let seeds = (0..self.rng.gen_range(1..40))
                    .map(|_| self.peer())
                    .collect();
                let universe = if self.rng.gen_bool(0.5) {
                    self.universe
                } else {
                    self.range()
                };
                GossipMsg::Ring {
                    sender: self.peer(),
                    universe,
                    seeds,
                    entries: Entries::new(),
                }
            }
            _ => {
                let mut claims = SignedClaimsMap::new();
                for _ in 0..self.rng.gen_range(0..20) {
                    let accepted = if self.rng.gen_bool(0.5) {
                        let seeds = (0..self.rng.gen_range(0..6)).map(|_| self.peer()).collect();
                        Some((self.ballot(), seeds))
                    } else {
                        None
                    };
                    let c = Claims {
                        version: self.version(0),
                        promised: self.ballot(),
                        accepted,
                    };
                    // Signed with the forger's own key: good only for its own id.
                    let mut signed = SignedClaims::new(&node_identity(HONEST), self.universe, c);
                    if self.rng.gen_bool(0.2) {
                        self.rng.fill(&mut signed.signature.0[..]);
                    }
                    claims.insert(self.peer(), signed);
                }
                GossipMsg::Bootstrap {
                    sender: self.peer(),
                    universe: self.universe,
                    claims,
                }
            }
        }
    }

    fn takeover(&mut self, to: PeerId) -> TakeoverMsg {
        match self.rng.gen_range(0..7) {
            0 => TakeoverMsg::Prepare {
                ballot: self.ballot(),
            },
            1 => TakeoverMsg::Promise {
                ballot: self.ballot(),
                accepted: Some((self.ballot(), self.peer())),
            },
            2 => TakeoverMsg::Accept {
                ballot: self.ballot(),
                heir: self.peer(),
            },
            3 => TakeoverMsg::Accepted {
                ballot: self.ballot(),
                vote: self.vote(),
            },
            4 => TakeoverMsg::Nack {
                promised: self.ballot(),
            },
            5 => TakeoverMsg::Chosen {
                heir: to,
                ballot: self.ballot(),
                votes: (0..self.rng.gen_range(0..6)).map(|_| self.vote()).collect(),
            },
            _ => TakeoverMsg::Alive,
        }
    }

    fn unicast(&mut self, to: PeerId) -> Vec<u8> {
        let overheard = self.overheard.borrow().ring.clone();
        let ring = match &overheard {
            Some((id, ..)) if self.rng.gen_bool(0.8) => *id,
            _ => self.rng.gen(),
        };
        let msg = match self.rng.gen_range(0..6) {
            0 => UnicastMsg::SpaceRequest {
                ring,
                within: self.range(),
            },
            1 => {
                let entries = overheard.map(|o| o.2).unwrap_or_default();
                UnicastMsg::Space {
                    ring,
                    entries: self.stolen_space(to, &entries),
                }
            }
            2 => UnicastMsg::Denied { ring },
            3 => UnicastMsg::Gossip(self.gossip().encode()),
            _ => {
                let msg = self.takeover(to);
                // A decision is checked only about a peer the heir cannot reach: often
                // one nobody knows.
                let dead = match msg {
                    TakeoverMsg::Chosen { .. } if self.rng.gen_bool(0.8) => PeerId(self.rng.gen()),
                    _ => self.peer(),
                };
                UnicastMsg::Takeover { ring, dead, msg }
            }
        };
        msg.encode()
    }

    fn garbage(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..200) {
            0..=99 => (0..self.rng.gen_range(0..8))
                .map(|_| self.rng.gen())
                .collect(),
            100..=198 => (0..self.rng.gen_range(0..512))
                .map(|_| self.rng.gen())
                .collect(),
            // Above the link's limit: the neighbour closes the link (and the connection
            // maker dials again later), so this one is rare. One byte repeated: random
            // bytes cost more to make than the routers spend refusing them.
            _ => vec![self.rng.gen(); 2 << 20],
        }
    }

    /// One burst of forged messages, once the honest routers have a ring.
    fn pump(&mut self, now: Instant, mesh: &mut Mesh) -> Option<Instant> {
        if self.overheard.borrow().ring.is_none() {
            return Some(now + Duration::from_millis(500));
        }
        for _ in 0..self.rng.gen_range(1..4) {
            let to = self.honest[self.rng.gen_range(0..self.honest.len())];
            // A broadcast that fails to merge costs the hostile router its link (the
            // neighbour closes it, and it dials again after a backoff), so those are
            // rare; a bad unicast only costs the payload.
            self.wild = false;
            match self.rng.gen_range(0..100) {
                0..=29 => mesh.broadcast(now, IPAM_CHANNEL, self.gossip().encode()),
                30..=84 => {
                    self.wild = self.rng.gen_bool(0.3);
                    let payload = self.unicast(to);
                    mesh.send_unicast(to, IPAM_CHANNEL, payload);
                }
                85..=97 => {
                    let payload = self.garbage();
                    mesh.send_unicast(to, IPAM_CHANNEL, payload);
                }
                _ => {
                    self.wild = true;
                    let update = if self.rng.gen_bool(0.5) {
                        self.gossip().encode()
                    } else {
                        self.garbage()
                    };
                    mesh.broadcast(now, IPAM_CHANNEL, update);
                }
            }
            *self.sent.borrow_mut() += 1;
        }
        Some(now + Duration::from_millis(self.rng.gen_range(20..400)))
    }
}

struct World {
    net: Net,
    log: Shared,
    rng: StdRng,
    overheard: Rc<RefCell<Overheard>>,
    sent: Rc<RefCell<u64>>,
    next_container: u64,
    seed: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let (mut net, log) = network(seed, HONEST, RANGE, |_| InitMode::Consensus {
            peers: HONEST,
        });
        let overheard = Rc::new(RefCell::new(Overheard::default()));
        let sent = Rc::new(RefCell::new(0));
        let hostile = net.add_node(&[0, HONEST / 2]);
        let mut forger = Forger {
            rng: StdRng::seed_from_u64(seed ^ 0x0405_711e),
            honest: (0..HONEST).map(node_id).collect(),
            universe: RANGE.parse::<crate::ipam::Cidr>().expect("range").range(),
            overheard: overheard.clone(),
            sent: sent.clone(),
            wild: false,
        };
        net.set_pump(
            hostile,
            Box::new(move |now: Instant, mesh: &mut Mesh, _: &mut IpamChannels| {
                forger.pump(now, mesh)
            }),
        );
        // Long enough for the ring's consensus and for every route to settle.
        net.run_for(Duration::from_secs(10));
        World {
            net,
            log,
            rng: StdRng::seed_from_u64(seed),
            overheard,
            sent,
            next_container: 0,
            seed,
        }
    }

    fn step(&mut self) {
        let i = self.rng.gen_range(0..HONEST);
        match self.rng.gen_range(0..10) {
            0..=5 => {
                self.next_container += 1;
                let c = ContainerId(format!("c{}", self.next_container));
                request(&mut self.net, i, |x, now| x.allocate(now, c, None));
            }
            6..=8 => {
                let held = ipam(self.net.node(i))
                    .map(|x| x.allocations())
                    .unwrap_or_default();
                if !held.is_empty() {
                    let c = held[self.rng.gen_range(0..held.len())].0.clone();
                    request(&mut self.net, i, |x, now| x.release_all(now, c));
                }
            }
            _ => {}
        }
        if let Some(ring) = ipam(self.net.node(0)).and_then(|x| x.ring.as_ref()) {
            let id = ipam(self.net.node(0)).map_or(0, |x| x.ring_id());
            self.overheard.borrow_mut().ring =
                Some((id, ring.seeds().to_vec(), ring.entries().clone()));
        }
        let ms = self.rng.gen_range(20..500);
        self.net.run_for(Duration::from_millis(ms));
    }

    fn check(&self, step: usize) {
        let fail = |what: String| panic!("seed {:#x} step {step}: {what}", self.seed);
        let log = self.log.borrow();
        let mut holder: BTreeMap<u64, (usize, String)> = BTreeMap::new();
        let mut owned: Vec<(AddrRange, usize)> = Vec::new();
        for i in 0..HONEST {
            let Some(x) = ipam(self.net.node(i)) else {
                fail(format!("honest router {i} has no IPAM"));
                return;
            };
            let ring_tokens = x.ring.as_ref().map_or(0, |r| r.entries().len());
            let sizes = [
                ("votes", x.votes.len(), MAX_VOTES),
                ("foreign rings", x.foreign.len(), MAX_FOREIGN_RINGS),
                ("ring tokens", ring_tokens, MAX_RING_ENTRIES),
                ("proposals", x.proposals.len(), MAX_VOTES),
                ("pending requests", x.pending.len(), STEPS),
            ];
            for (what, len, cap) in sizes {
                if len > cap {
                    fail(format!("router {i}: {len} {what}, above the cap {cap}"));
                }
            }
            if let Some(bytes) = log.store.get(&i) {
                if bytes.len() > MAX_SNAPSHOT_BYTES {
                    fail(format!("router {i}: snapshot of {} bytes", bytes.len()));
                }
                if let Err(e) = Snapshot::decode(bytes) {
                    fail(format!("router {i}: its snapshot does not decode: {e}"));
                }
            }
            let ranges = x.own_ranges();
            for (c, addrs) in x.allocations() {
                for a in addrs {
                    let a = u64::from(u32::from(a));
                    if let Some(prev) = holder.insert(a, (i, c.0.clone())) {
                        fail(format!("address {a} held by {prev:?} and by ({i}, {c})"));
                    }
                    if !ranges.iter().any(|r| r.contains(a)) {
                        fail(format!("router {i} holds {a} outside its space"));
                    }
                }
            }
            owned.extend(ranges.iter().map(|r| (*r, i)));
        }
        owned.sort();
        for w in owned.windows(2) {
            if w[1].0.start < w[0].0.end {
                fail(format!("{:?} owned by two honest routers: {w:?}", w[1].0));
            }
        }
        if step.is_multiple_of(50) {
            for i in 0..HONEST {
                let reach: Vec<PeerId> = self.net.node(i).mesh().routes().reachable().collect();
                for j in (0..HONEST).filter(|j| *j != i) {
                    if !reach.contains(&node_id(j)) {
                        fail(format!("router {i} cannot reach router {j}"));
                    }
                }
            }
        }
    }
}

/// Totals over a run, to show what it exercised.
#[derive(Default, Debug)]
struct Totals {
    forged: u64,
    allocated: usize,
    failed: usize,
    malformed: u64,
    out_of_range: u64,
    inconsistent: u64,
    version_jumps: u64,
    foreign_ring: u64,
    takeover_refused: u64,
    takeover_unproven: u64,
}

fn run(seed: u64, steps: usize) -> Totals {
    let mut w = World::new(seed);
    for step in 0..steps {
        w.step();
        w.check(step);
    }
    let log = w.log.borrow();
    let mut t = Totals {
        forged: *w.sent.borrow(),
        allocated: log.done.iter().filter(|d| d.3.is_ok()).count(),
        failed: log.done.iter().filter(|d| d.3.is_err()).count(),
        ..Totals::default()
    };
    for i in 0..HONEST {
        if let Some(x) = ipam(w.net.node(i)) {
            let s = x.stats();
            t.malformed += s.malformed;
            t.out_of_range += s.out_of_range;
            t.inconsistent += s.inconsistent;
            t.version_jumps += s.version_jumps;
            t.foreign_ring += s.foreign_ring;
            t.takeover_refused += s.takeover_refused;
            t.takeover_unproven += s.takeover_unproven;
        }
    }
    t
}

/// `WEFT_IPAM_HOSTILE_SEEDS` / `WEFT_IPAM_HOSTILE_STEPS` change the run's size.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run: 20 seeds × 10,000 steps over the machine's cores. A failing seed
/// panics with its number and step.
#[test]
fn ipam_hostile_20_seeds_10000_steps() {
    let n = env_or("WEFT_IPAM_HOSTILE_SEEDS", 20) as u64;
    let steps = env_or("WEFT_IPAM_HOSTILE_STEPS", STEPS);
    let all: Vec<u64> = (0..n).map(|k| 0x4057_0000 + k).collect();
    let start = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let totals = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(all.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&seed) = all.get(k) else { break };
                let t = run(seed, steps);
                eprintln!("seed {seed:#x}: {t:?} after {:?}", start.elapsed());
                totals
                    .lock()
                    .expect("no worker panicked holding it")
                    .push(t);
            });
        }
    });
    let totals = totals.into_inner().expect("no worker panicked holding it");
    eprintln!(
        "ipam hostile: {n} seeds x {steps} steps, {:?} wall",
        start.elapsed()
    );
    assert_eq!(totals.len(), all.len(), "every seed ran to the end");
    for t in &totals {
        // The honest routers kept allocating, and the forgeries reached them.
        assert!(t.allocated > steps / 10 && t.failed < t.allocated, "{t:?}");
        assert!(t.forged > steps as u64, "{t:?}");
        assert!(t.malformed + t.out_of_range > 0, "{t:?}");
        assert!(t.inconsistent + t.version_jumps > 0, "{t:?}");
        assert!(t.foreign_ring > 0, "{t:?}");
        assert!(
            t.takeover_unproven > 0,
            "forged decisions reached their heir: {t:?}"
        );
    }
}
