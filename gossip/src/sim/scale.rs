//! Scale, measured on the daemon's own [`crate::node::Node`]: peers join a mesh one at a
//! time, each launched knowing one earlier peer, and discovery turns it into a full mesh.
//!
//! For each join the test waits until every peer is linked to every other and all agree
//! on the topology, and records:
//! - the virtual time that took, and the **gossip rounds** it spans (anti-entropy rounds
//!   of the default 30 s interval started meanwhile, so a join that converges within one
//!   interval counts as one round);
//! - the **bytes** every link carried meanwhile (Hellos, heartbeats, gossip), per peer.
//!
//! Every 100 joins it prints the wall time so far (long runs show their progress). Then
//! the mesh idles for a minute: **idle bytes per peer per minute** (heartbeats and
//! anti-entropy digests). Figures are printed, and recorded in `docs/performance.md`.
//!
//! 50 and 100 peers run in CI. 200 peers (~20,000 links) take minutes in a debug build:
//! `#[ignore]`d; run them with
//! `cargo test -p gossip --release --lib sim::scale -- --ignored --nocapture`.
//!
//! A full mesh of 1,000 peers does not fit one process on this machine: every peer
//! holds the whole topology, 999,000 link entries, so the 1,000 copies hold 10⁹. The
//! 100-peer full mesh peaks at 141 MiB for its 990,000 (about 150 bytes each, all of a
//! peer's state included), so 1,000 peers would need some 150 GB; and the joins deliver
//! about N³/3 = 3·10⁸ signed records (each an Ed25519 check): at the 200-peer run's rate
//! (913 s), about 30 hours. Its test is kept, `#[ignore]`d, for a larger machine. What
//! runs instead at 1,000 is the same join with at most [`SPARSE_LIMIT`] discovered links
//! per peer (the product's default limit is 200), next to 50 and 200 peers with the
//! same limit: the gossip each join costs, and the rounds it takes, as N grows. 200
//! sparse peers take 35 s in a release build, 1,000 about 83 minutes
//! (docs/performance.md).

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    /// Most gossip rounds any join took to converge.
    max_rounds: u32,
    /// Longest convergence after a join.
    max_converge: Duration,
    /// Bytes per peer for the last join (the largest mesh).
    last_join_bytes_per_peer: u64,
    /// Bytes per peer per minute once idle.
    idle_bytes_per_peer_minute: u64,
}

/// Whether every peer has its links (all others with no limit, else at least
/// `conn_limit`) and all agree on the topology.
fn converged(net: &Net, conn_limit: usize) -> bool {
    let n = net.len();
    let want = if conn_limit == 0 {
        n - 1
    } else {
        conn_limit.min(n - 1)
    };
    let digest = net.node(0).mesh().topology().digest();
    (0..n).all(|i| {
        let node = net.node(i);
        let links = node.link_count();
        (links == want || (conn_limit != 0 && links >= want))
            && node.mesh().topology().len() == n
            && node.mesh().topology().digest() == digest
    })
}

/// `n` peers join one at a time, each knowing one random earlier peer, and each dials
/// the peers it discovers up to `conn_limit` links (0: all of them, a full mesh).
fn join_one_at_a_time(n: usize, seed: u64) -> Figures {
    join_with_limit(n, seed, 0)
}

/// [`join_one_at_a_time`] with a connection limit.
fn join_with_limit(n: usize, seed: u64, conn_limit: usize) -> Figures {
    let mut config = SimConfig::default();
    config.maker.conn_limit = conn_limit;
    let interval = config.mesh.gossip_interval;
    let mut net = Net::new(seed, config);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut figures = Figures::default();
    net.add_node(&[]);
    let wall = std::time::Instant::now();
    for i in 1..n {
        if i == n - 1 {
            net.tally_kinds();
        }
        let (start, bytes) = (net.elapsed(), net.bytes_sent);
        net.add_node(&[rng.gen_range(0..i)]);
        let done = net.run_until(Duration::from_secs(300), Duration::from_millis(50), |net| {
            converged(net, conn_limit)
        });
        if !done {
            let links: Vec<usize> = (0..=i).map(|j| net.node(j).link_count()).collect();
            let known: Vec<usize> = (0..=i)
                .map(|j| net.node(j).mesh().topology().len())
                .collect();
            panic!(
                "{} peers did not converge after a join: links {links:?} known {known:?}",
                i + 1
            );
        }
        let took = net.elapsed() - start;
        if (i + 1) % 100 == 0 {
            let wall = wall.elapsed().as_secs_f64();
            eprintln!(
                "N={n:>4}: {:>4} joined after {wall:.1} s of wall time",
                i + 1
            );
        }
        let rounds = (took.as_millis() / interval.as_millis()) as u32 + 1;
        figures.max_rounds = figures.max_rounds.max(rounds);
        figures.max_converge = figures.max_converge.max(took);
        figures.last_join_bytes_per_peer = (net.bytes_sent - bytes) / (i as u64 + 1);
    }
    // Let the last join's tail (batched link changes, debounced routes) settle.
    net.run_for(interval * 2);
    let kinds: Vec<String> = net
        .bytes_by_kind()
        .iter()
        .map(|(kind, bytes)| format!("{kind} {}", bytes / n as u64))
        .collect();
    let mesh = match conn_limit {
        0 => "full mesh".to_string(),
        l => format!("links up to {l} per peer"),
    };
    println!(
        "N={n:>4} ({mesh}): the last join, bytes per peer by kind: {}",
        kinds.join(", ")
    );
    let idle_from = net.bytes_sent;
    net.run_for(Duration::from_secs(60));
    figures.idle_bytes_per_peer_minute = (net.bytes_sent - idle_from) / n as u64;
    println!(
        "N={n:>4}: join one at a time -> {mesh}; worst convergence after a join {:.2} s \
         ({} gossip round(s)); last join {} B per peer; idle {} B per peer per minute",
        figures.max_converge.as_secs_f64(),
        figures.max_rounds,
        figures.last_join_bytes_per_peer,
        figures.idle_bytes_per_peer_minute,
    );
    figures
}

#[test]
fn peers_joining_one_at_a_time_converge_to_a_full_mesh_50_and_100() {
    let f50 = join_one_at_a_time(50, 50);
    let f100 = join_one_at_a_time(100, 100);
    for f in [f50, f100] {
        assert!(f.max_rounds <= 10, "{f:?}");
    }
    // A join in a full mesh adds a link at every peer, and each peer's record change
    // reaches every peer once: per peer it grows about linearly with N (allow for the
    // log N of tree depth and a margin: 2x the peers, under 3x the bytes; 1.7x
    // measured). When every peer a newcomer linked to re-rooted its first delta to the
    // whole mesh, this was 3.3x.
    assert!(
        f100.last_join_bytes_per_peer < f50.last_join_bytes_per_peer * 3,
        "{f50:?} vs {f100:?}"
    );
    // Idle: a heartbeat per link and digests to O(log N) neighbours: about linear in N
    // per peer (heartbeats on N-1 links), under 4x for 2x the peers.
    assert!(
        f100.idle_bytes_per_peer_minute < f50.idle_bytes_per_peer_minute * 4,
        "{f50:?} vs {f100:?}"
    );
}

#[test]
#[ignore = "a full mesh of 200 peers takes minutes unoptimized; run with --release"]
fn peers_joining_one_at_a_time_converge_to_a_full_mesh_200() {
    let f = join_one_at_a_time(200, 200);
    assert!(f.max_rounds <= 10, "{f:?}");
}

#[test]
#[ignore = "a full mesh of 1,000 peers does not fit this machine (see the module doc)"]
fn peers_joining_one_at_a_time_converge_to_a_full_mesh_1000() {
    let f = join_one_at_a_time(1000, 1000);
    assert!(f.max_rounds <= 10, "{f:?}");
}

/// 50, 200 and 1,000 peers with at most 8 discovered links each: every join converges
/// within 10 gossip rounds, and what a join costs each peer grows no faster than
/// log N (under 2x from 200 to 1,000 peers).
#[test]
#[ignore = "1,000 peers take over an hour; run with --release (see the module doc)"]
fn peers_joining_a_sparse_mesh_of_up_to_1000_converge() {
    let f: Vec<Figures> = [50, 200, 1000]
        .into_iter()
        .map(|n| join_with_limit(n, n as u64, SPARSE_LIMIT))
        .collect();
    for f in &f {
        assert!(f.max_rounds <= 10, "{f:?}");
    }
    assert!(
        f[2].last_join_bytes_per_peer < 2 * f[1].last_join_bytes_per_peer,
        "{f:?}"
    );
}

/// The connection limit of the sparse runs.
const SPARSE_LIMIT: usize = 8;
