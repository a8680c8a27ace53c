//! Reclaim tests: the wait, the DNS guard, the stagger, failures and the history.

use super::*;

fn peer(n: u8) -> PeerId {
    PeerId([n; 16])
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([198, 18, 0, n])
}

const AFTER: Duration = Duration::from_secs(20);

/// Router 1 with peers 2 and 3 owning space, all seen at their addresses.
fn three(now: Instant) -> Reclaim {
    let mut r = Reclaim::new(AFTER, peer(1));
    for n in 2..=3 {
        r.link_up(peer(n), ip(n));
    }
    let all: BTreeSet<PeerId> = [peer(2), peer(3)].into();
    r.update(now, &[peer(1), peer(2), peer(3)], &all);
    r
}

#[test]
fn a_peer_down_for_longer_than_the_wait_and_not_named_is_reclaimed_once() {
    let t0 = Instant::now();
    let mut r = three(t0);
    assert_eq!(r.poll_timeout(), None, "nobody is down");
    r.update(t0, &[peer(1), peer(2), peer(3)], &[peer(2)].into());
    assert_eq!(r.poll_timeout(), Some(t0 + AFTER), "rank 0: no stagger");
    assert_eq!(
        r.poll_due(t0 + AFTER - Duration::from_secs(1), |_| false),
        None
    );
    assert_eq!(r.poll_due(t0 + AFTER, |_| false), Some(peer(3)));
    assert_eq!(r.poll_due(t0 + AFTER, |_| false), None, "already running");
    assert_eq!(r.poll_timeout(), None);
    r.finished(t0 + AFTER, peer(3), Ok((Some(peer(1)), 42)));
    assert_eq!(r.stats().took, 1);
    // It owns nothing now; the next update forgets it for good.
    r.update(t0 + AFTER, &[peer(1), peer(2)], &[peer(2)].into());
    assert!(r.waiting().is_empty());
    assert_eq!(r.poll_due(t0 + AFTER * 10, |_| false), None);
    let rec = r.history().next().unwrap();
    assert_eq!(rec.outcome, Outcome::Took { ips: 42 });
    assert_eq!(rec.down_for, AFTER);
}

#[test]
fn a_peer_still_named_by_dns_is_never_reclaimed() {
    let t0 = Instant::now();
    let mut r = three(t0);
    r.update(t0, &[peer(1), peer(2), peer(3)], &[peer(2)].into());
    let named = |a: &IpAddr| *a == ip(3);
    let mut t = t0;
    for _ in 0..100 {
        t += Duration::from_secs(10);
        assert_eq!(r.poll_due(t, named), None);
        assert!(r.poll_timeout().is_some_and(|at| at > t), "no busy loop");
    }
    assert_eq!(r.waiting()[0].blocked, Some("still named by DNS"));
    // Its address leaves the answer: reclaimed at the next check.
    t += RECHECK;
    assert_eq!(r.poll_due(t, |_| false), Some(peer(3)));
}

#[test]
fn a_peer_whose_address_was_never_seen_is_not_reclaimed() {
    let t0 = Instant::now();
    let mut r = Reclaim::new(AFTER, peer(1));
    r.update(t0, &[peer(1), peer(7)], &BTreeSet::new());
    assert_eq!(r.poll_due(t0 + AFTER * 5, |_| false), None);
    assert_eq!(
        r.waiting()[0].blocked,
        Some("its address was never seen here")
    );
}

#[test]
fn higher_ranks_wait_longer_and_a_failure_retries_after_the_wait() {
    let t0 = Instant::now();
    // Router 5 ranks after 2 (lower id) among the live owners.
    let mut r = Reclaim::new(AFTER, peer(5));
    r.link_up(peer(3), ip(3));
    r.update(t0, &[peer(2), peer(3), peer(5)], &[peer(2)].into());
    assert_eq!(r.poll_timeout(), Some(t0 + AFTER));
    // Still named at first: the stagger counts from when it may be reclaimed.
    assert_eq!(r.poll_due(t0 + AFTER, |_| true), None);
    let t = t0 + AFTER * 3;
    assert_eq!(r.poll_due(t, |_| false), None, "rank 1 waits its turn");
    assert_eq!(r.poll_timeout(), Some(t + STAGGER));
    let t1 = t + STAGGER;
    assert_eq!(r.poll_due(t1, |_| false), Some(peer(3)));
    r.finished(t1, peer(3), Err("no quorum".into()));
    assert_eq!(r.stats().failed, 1);
    assert_eq!(r.poll_due(t1 + AFTER / 2, |_| false), None);
    assert_eq!(
        r.poll_due(t1 + AFTER, |_| false),
        None,
        "and its turn again"
    );
    let t2 = t1 + AFTER + STAGGER;
    assert_eq!(r.poll_due(t2, |_| false), Some(peer(3)));
    r.finished(t2, peer(3), Ok((Some(peer(2)), 10)));
    assert_eq!(r.stats().other_heir, 1);
}

#[test]
fn a_peer_that_comes_back_is_no_longer_waiting_and_state_is_bounded() {
    let t0 = Instant::now();
    let mut r = three(t0);
    r.update(t0, &[peer(1), peer(2), peer(3)], &[peer(2)].into());
    assert_eq!(r.waiting().len(), 1);
    r.update(t0, &[peer(1), peer(2), peer(3)], &[peer(2), peer(3)].into());
    assert!(r.waiting().is_empty());
    for n in 0..=255u8 {
        for k in 0..20u8 {
            r.link_up(
                PeerId([n, k, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                ip(k),
            );
        }
    }
    assert!(r.seen_at.len() <= MAX_PEERS);
    assert!(r.seen_at.values().all(|s| s.len() <= MAX_ADDRS_PER_PEER));
    for i in 0..(MAX_HISTORY + 5) {
        r.finished(t0, peer(3), Err(format!("{i}")));
    }
    assert_eq!(r.history().count(), MAX_HISTORY);
}
