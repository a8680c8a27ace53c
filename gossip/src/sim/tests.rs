//! Seeded scenarios on 50-router meshes. Every test is deterministic: the same seed
//! replays the same run.

use super::*;
use crate::channel::CrdtChannel;
use crate::crdt::GCounter;

const N: usize = 50;

/// Launches `n` routers, 100 ms apart, each knowing only node 0's address.
fn launch(seed: u64, n: usize, config: SimConfig) -> Net {
    let mut net = Net::new(seed, config);
    net.add_node(&[]);
    for _ in 1..n {
        net.run_for(Duration::from_millis(100));
        net.add_node(&[0]);
    }
    net
}

/// Every running node knows exactly the running nodes, and all agree on the topology.
fn agree(net: &Net) -> bool {
    let alive = net.alive();
    let digest = net.node(alive[0]).mesh.topology().digest();
    alive.iter().all(|&i| {
        let t = net.node(i).mesh.topology();
        t.len() == alive.len() && t.digest() == digest
    })
}

fn full_mesh(net: &Net) -> bool {
    let alive = net.alive();
    alive
        .iter()
        .all(|&i| net.node(i).link_count() == alive.len() - 1)
}

fn converge(net: &mut Net, limit: Duration) {
    let ok = net.run_until(limit, Duration::from_secs(1), |n| full_mesh(n) && agree(n));
    assert!(ok, "no full, agreed mesh after {:?}", net.elapsed());
}

#[test]
fn joins_converge_to_a_full_mesh_by_discovery() {
    let t0 = std::time::Instant::now();
    let mut net = launch(1, 50, SimConfig::default());
    println!("launch {:?}", t0.elapsed());
    converge(&mut net, Duration::from_secs(300));
    println!("converge {:?}", t0.elapsed());
    println!(
        "converged after {:?}, {} bytes {:?}",
        net.elapsed(),
        net.bytes_sent,
        net.diag
    );
    for i in 0..N {
        let routes = net.node(i).mesh.routes();
        assert_eq!(routes.reachable().count(), N - 1);
        assert!(
            routes.reachable().all(|p| routes.unicast(&p) == Some(p)),
            "all direct"
        );
    }
    // Stable: no link churn once converged.
    let closes: usize = (0..N).map(|i| net.node(i).closes.len()).sum();
    let dials: u64 = (0..N).map(|i| net.node(i).dials).sum();
    net.run_for(Duration::from_secs(600));
    assert_eq!(
        (0..N).map(|i| net.node(i).closes.len()).sum::<usize>(),
        closes
    );
    assert_eq!((0..N).map(|i| net.node(i).dials).sum::<u64>(), dials);
    assert!(full_mesh(&net) && agree(&net));
    println!("stable {:?} {:?}", t0.elapsed(), net.diag);
}
