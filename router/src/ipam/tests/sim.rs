//! The randomized simulation: 20 routers on `gossip::sim`, random allocate, release,
//! partition, heal, crash, restart from the persisted snapshot, and rmpeer (also on both
//! sides of a partition at once). After every step:
//! - no address is allocated to two live containers (live: on any peer not removed,
//!   running or crashed-and-restartable, whose state is its persisted snapshot);
//! - no address is owned by two peers (each peer's own view; crashed peers by their
//!   snapshot; removed peers excluded), so every address is owned by exactly one peer
//!   or is in flight in a donation;
//! - every live peer's allocations lie in space it owns.
//!
//! `cargo test -p router ipam_sim` runs 20 seeds × [`STEPS`] steps on every core (about
//! 15 s of CPU per seed; `router` and `gossip` are optimized in test builds too).

use super::harness::*;
use crate::ipam::{AddrRange, ContainerId, InitMode, Ipam, Snapshot};
use gossip::sim::{node_id, node_identity};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PEERS: usize = 20;
const RANGE: &str = "10.32.0.0/22";
const STEPS: usize = 10_000;

struct World {
    net: Net,
    log: Shared,
    rng: StdRng,
    crashed: BTreeMap<usize, Duration>,
    removed: BTreeSet<usize>,
    next_container: u64,
    seed: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let (mut net, log) = network(seed, PEERS, RANGE, |_| InitMode::Consensus { peers: PEERS });
        net.run_for(Duration::from_secs(3));
        World {
            net,
            log,
            rng: StdRng::seed_from_u64(seed),
            crashed: BTreeMap::new(),
            removed: BTreeSet::new(),
            next_container: 0,
            seed,
        }
    }

    fn live(&self) -> Vec<usize> {
        self.net.alive()
    }

    fn pick_live(&mut self) -> Option<usize> {
        let live = self.live();
        (!live.is_empty()).then(|| live[self.rng.gen_range(0..live.len())])
    }

    fn step(&mut self) {
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=44 => {
                if let Some(i) = self.pick_live() {
                    self.next_container += 1;
                    let c = ContainerId(format!("c{}", self.next_container));
                    request(&mut self.net, i, |x, now| x.allocate(now, c, None));
                }
            }
            45..=74 => {
                if let Some(i) = self.pick_live() {
                    let held = ipam(self.net.node(i))
                        .map(|x| x.allocations())
                        .unwrap_or_default();
                    if !held.is_empty() {
                        let c = held[self.rng.gen_range(0..held.len())].0.clone();
                        request(&mut self.net, i, |x, now| x.release_all(now, c));
                    }
                }
            }
            75..=79 => {
                let groups = (0..PEERS).map(|_| self.rng.gen_range(0..2)).collect();
                self.net.partition(groups);
            }
            80..=86 => self.net.heal(),
            87..=90 => {
                if self.live().len() > PEERS * 2 / 3 {
                    if let Some(i) = self.pick_live() {
                        self.net.crash(i);
                        self.crashed.insert(i, self.net.elapsed());
                    }
                }
            }
            91..=95 => {
                let waiting: Vec<usize> = self.crashed.keys().copied().collect();
                if !waiting.is_empty() {
                    let i = waiting[self.rng.gen_range(0..waiting.len())];
                    self.restart(i);
                }
            }
            _ => self.rmpeer(),
        }
        let ms = self.rng.gen_range(20..1500);
        self.net.run_for(Duration::from_millis(ms));
    }

    fn restart(&mut self, i: usize) {
        self.crashed.remove(&i);
        let snapshot = self.log.borrow().store.get(&i).cloned();
        *self.log.borrow_mut().incarnation.entry(i).or_insert(0) += 1;
        let cfg = ipam_config(RANGE, InitMode::Consensus { peers: PEERS });
        let seed = self.rng.gen();
        self.net.restart_with(i, |channels, now| {
            let ipam = match snapshot {
                Some(s) => Ipam::restore(node_id(i), cfg, &s, now, seed).expect("restore"),
                None => Ipam::new(node_id(i), cfg, now, seed),
            };
            let ipam = ipam.with_identity(node_identity(i));
            channels.ipam = Some(ipam);
        });
    }

    /// rmpeer a peer crashed long enough ago that the mesh noticed, on one or two live
    /// peers (on both sides if partitioned). It is gone for good afterwards.
    fn rmpeer(&mut self) {
        let now = self.net.elapsed();
        let old: Vec<usize> = self
            .crashed
            .iter()
            .filter(|(_, at)| now - **at > Duration::from_secs(8))
            .map(|(i, _)| *i)
            .collect();
        if old.is_empty() {
            return;
        }
        let dead = old[self.rng.gen_range(0..old.len())];
        self.crashed.remove(&dead);
        self.removed.insert(dead);
        let runners = if self.rng.gen_bool(0.5) { 2 } else { 1 };
        for _ in 0..runners {
            if let Some(i) = self.pick_live() {
                request(&mut self.net, i, |x, t| x.rmpeer(t, node_id(dead)));
            }
        }
    }

    /// (allocations, own ranges) of every peer that is not removed.
    fn states(&self) -> Vec<(usize, BTreeMap<u64, String>, Vec<AddrRange>)> {
        let mut out = Vec::new();
        let store = self.log.borrow();
        for i in 0..PEERS {
            if self.removed.contains(&i) {
                continue;
            }
            if self.net.node(i).alive {
                let Some(x) = ipam(self.net.node(i)) else {
                    continue;
                };
                let allocs = x
                    .allocations()
                    .into_iter()
                    .flat_map(|(c, v)| {
                        v.into_iter()
                            .map(move |a| (u64::from(u32::from(a)), c.0.clone()))
                    })
                    .collect();
                out.push((i, allocs, x.own_ranges()));
            } else if let Some(bytes) = store.store.get(&i) {
                let Ok(s) = Snapshot::decode(bytes) else {
                    continue;
                };
                let me = node_id(i);
                let mut ring = crate::ipam::ring::Ring::empty(s.universe, Vec::new());
                let allocs = s
                    .allocations
                    .iter()
                    .flat_map(|(c, v)| v.iter().map(move |a| (*a, c.0.clone())))
                    .collect();
                let ranges = match s.ring {
                    Some((_, entries)) => {
                        ring.merge_entries(&entries);
                        ring.owned_by(&me)
                    }
                    None => Vec::new(),
                };
                out.push((i, allocs, ranges));
            }
        }
        out
    }

    fn check(&self, step: usize) {
        let fail = |what: String| panic!("seed {} step {step}: {what}", self.seed);
        let states = self.states();
        let mut holder: BTreeMap<u64, (usize, &String)> = BTreeMap::new();
        let mut owned: Vec<(AddrRange, usize)> = Vec::new();
        for (i, allocs, ranges) in &states {
            for (a, c) in allocs {
                if let Some(prev) = holder.insert(*a, (*i, c)) {
                    fail(format!(
                        "address {a} allocated to {prev:?} and to ({i}, {c})"
                    ));
                }
                if !ranges.iter().any(|r| r.contains(*a)) && self.net.node(*i).alive {
                    fail(format!("peer {i} allocated {a} outside its space"));
                }
            }
            owned.extend(ranges.iter().map(|r| (*r, *i)));
        }
        owned.sort();
        for w in owned.windows(2) {
            if w[1].0.start < w[0].0.end {
                fail(format!("{:?} owned by two peers: {:?}", w[1].0, w));
            }
        }
    }
}

/// Totals over a run, to show what it exercised.
#[derive(Default, Debug)]
struct Totals {
    ok: usize,
    failed: usize,
    donations: u64,
    takeovers: usize,
    inconsistent: u64,
    restarts: u64,
}

fn run(seed: u64, steps: usize) -> Totals {
    let mut w = World::new(seed);
    for step in 0..steps {
        w.step();
        w.check(step);
    }
    let log = w.log.borrow();
    let mut t = Totals {
        ok: log.done.iter().filter(|d| d.3.is_ok()).count(),
        failed: log.done.iter().filter(|d| d.3.is_err()).count(),
        restarts: log.incarnation.values().sum(),
        ..Totals::default()
    };
    t.takeovers = log
        .events
        .iter()
        .filter(|(_, e)| matches!(e, crate::ipam::IpamEvent::TookOver { .. }))
        .count();
    for i in w.net.alive() {
        if let Some(x) = ipam(w.net.node(i)) {
            t.donations += x.stats().donations_given;
            t.inconsistent += x.stats().inconsistent;
        }
    }
    t
}

fn add(sum: &mut Totals, t: Totals) {
    sum.ok += t.ok;
    sum.failed += t.failed;
    sum.donations += t.donations;
    sum.takeovers += t.takeovers;
    sum.inconsistent += t.inconsistent;
    sum.restarts += t.restarts;
}

fn seeds(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|k| 0x1ba3_0000 + k)
}

/// `WEFT_IPAM_SIM_SEEDS` / `WEFT_IPAM_SIM_STEPS` change the run's size.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run: 20 seeds × 10,000 steps, the seeds spread over the machine's
/// cores. A failing seed panics with its number and step (`seed … step …: …`); rerun
/// it alone with `WEFT_IPAM_SIM_FIRST_SEED=<seed> WEFT_IPAM_SIM_SEEDS=1`.
#[test]
fn ipam_sim_20_seeds_10000_steps() {
    let n = env_or("WEFT_IPAM_SIM_SEEDS", 20) as u64;
    let steps = env_or("WEFT_IPAM_SIM_STEPS", STEPS);
    let first = std::env::var("WEFT_IPAM_SIM_FIRST_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok());
    let all: Vec<u64> = match first {
        Some(f) => (0..n).map(|k| f + k).collect(),
        None => seeds(n).collect(),
    };
    let start = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let sum = std::sync::Mutex::new(Totals::default());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(all.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&seed) = all.get(k) else { break };
                let t = run(seed, steps);
                eprintln!("seed {seed:#x}: {t:?} after {:?}", start.elapsed());
                add(&mut sum.lock().expect("no worker panicked holding it"), t);
            });
        }
    });
    let sum = sum.into_inner().expect("no worker panicked holding it");
    eprintln!(
        "ipam sim: {n} seeds x {steps} steps, {:?} wall; {sum:?}",
        start.elapsed()
    );
    assert!(
        sum.donations > 0 && sum.takeovers > 0 && sum.restarts > 0,
        "{sum:?}"
    );
}
