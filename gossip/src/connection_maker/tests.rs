//! Connection maker tests: backoff, permanent failures, limits, discovery, forget.

use super::*;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6783))
}

fn peer(n: u8) -> PeerId {
    PeerId([n; 16])
}

fn maker(config: MakerConfig) -> ConnectionMaker {
    ConnectionMaker::new(config, 7)
}

#[test]
fn explicit_targets_are_dialled_and_retried_with_growing_backoff() {
    let now = Instant::now();
    let mut m = maker(MakerConfig::default());
    m.add_targets(now, &[addr(1)], false);
    assert_eq!(m.poll_dial(now), Some(addr(1)));
    assert_eq!(m.poll_dial(now), None, "already connecting");
    let mut delays = Vec::new();
    let mut t = now;
    for _ in 0..8 {
        m.handle_failed(t, addr(1), "refused".into(), Retry::Later);
        let due = m.poll_timeout().expect("retry scheduled");
        assert_eq!(m.poll_dial(due - Duration::from_millis(1)), None);
        delays.push(due - t);
        t = due;
        assert_eq!(m.poll_dial(t), Some(addr(1)));
    }
    assert!(delays[0] <= Duration::from_millis(1500));
    assert!(delays[7] >= Duration::from_secs(60), "{delays:?}");
    assert!(delays.iter().all(|d| *d <= MAX_RETRY * 3 / 2));
}

#[test]
fn a_permanent_failure_is_never_retried() {
    let now = Instant::now();
    let mut m = maker(MakerConfig::default());
    m.add_targets(now, &[addr(1)], false);
    assert_eq!(m.poll_dial(now), Some(addr(1)));
    m.handle_failed(
        now,
        addr(1),
        "cannot connect to ourself".into(),
        Retry::Never,
    );
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.poll_dial(now + Duration::from_secs(3600)), None);
    let status = &m.targets()[0];
    assert_eq!(
        (status.state, status.next_retry),
        (TargetState::Failed, None)
    );
    assert_eq!(
        status.last_error.as_deref(),
        Some("cannot connect to ourself")
    );
    // Discovery does not bring it back either.
    m.set_discovered(now, &[(peer(9), addr(1))]);
    assert_eq!(m.poll_dial(now + Duration::from_secs(3600)), None);
}

#[test]
fn linked_peers_are_not_dialled_and_long_links_reset_backoff() {
    let now = Instant::now();
    let mut m = maker(MakerConfig::default());
    m.add_targets(now, &[addr(1)], false);
    assert_eq!(m.poll_dial(now), Some(addr(1)));
    m.handle_connected(now, addr(1), peer(1));
    m.set_connected_peers(&[peer(1)]);
    assert_eq!(m.targets()[0].state, TargetState::Established);
    assert_eq!(m.poll_timeout(), None);
    let later = now + Duration::from_secs(120);
    m.handle_disconnected(later, addr(1), peer(1));
    // Still linked another way (the link lost a duplicate race): no redial.
    assert_eq!(m.poll_timeout(), None);
    m.set_connected_peers(&[]);
    let due = m.poll_timeout().expect("redial scheduled");
    assert!(
        due - later <= Duration::from_millis(1500),
        "backoff was reset"
    );
    // Linked through an inbound link meanwhile: no dial.
    m.set_connected_peers(&[peer(1)]);
    assert_eq!(m.poll_dial(due), None);
}

#[test]
fn discovered_targets_respect_the_limit_and_the_switch() {
    let now = Instant::now();
    let config = MakerConfig {
        conn_limit: 2,
        ..MakerConfig::default()
    };
    let mut m = maker(config);
    m.set_connected_peers(&[peer(1)]);
    m.set_discovered(now, &[(peer(2), addr(2)), (peer(3), addr(3))]);
    m.add_targets(now, &[addr(4)], false);
    let mut dialled = Vec::new();
    while let Some(a) = m.poll_dial(now) {
        dialled.push(a);
    }
    // One discovered dial fills the limit (1 linked + 1 connecting); explicit still goes.
    assert_eq!(dialled, vec![addr(2), addr(4)]);

    let mut off = maker(MakerConfig {
        discovery: false,
        ..MakerConfig::default()
    });
    off.set_discovered(now, &[(peer(2), addr(2))]);
    assert!(off.targets().is_empty());
    let mut unlimited = maker(MakerConfig {
        conn_limit: 0,
        ..MakerConfig::default()
    });
    unlimited.set_discovered(now, &[(peer(2), addr(2)), (peer(3), addr(3))]);
    assert_eq!(std::iter::from_fn(|| unlimited.poll_dial(now)).count(), 2);
}

/// The next due time follows every change that holds a target back or lets it go (it
/// is kept, not recomputed per call; debug builds also check it against a walk).
#[test]
fn the_next_due_time_follows_the_limit_and_the_links() {
    let now = Instant::now();
    let mut m = maker(MakerConfig {
        conn_limit: 1,
        ..MakerConfig::default()
    });
    m.set_discovered(now, &[(peer(2), addr(2)), (peer(3), addr(3))]);
    assert_eq!(m.poll_timeout(), Some(now));
    m.set_connected_peers(&[peer(9)]);
    assert_eq!(m.poll_timeout(), None, "the limit holds both back");
    assert_eq!(m.poll_dial(now), None);
    m.set_connected_peers(&[]);
    assert_eq!(m.poll_dial(now), Some(addr(2)));
    assert_eq!(m.poll_timeout(), None, "one dial fills the limit");
    let later = now + Duration::from_secs(1);
    m.handle_failed(now, addr(2), "refused".into(), Retry::Later);
    // addr(3) is due at once; addr(2) after its backoff.
    assert_eq!(m.poll_timeout(), Some(now));
    assert_eq!(m.poll_dial(later), Some(addr(3)));
    m.handle_connected(later, addr(3), peer(3));
    m.set_connected_peers(&[peer(3)]);
    assert_eq!(m.poll_timeout(), None, "linked: the limit is reached");
    assert_eq!(m.forget(&[addr(3)]), 1);
    m.set_connected_peers(&[]);
    let retry = m.poll_timeout().expect("addr(2) waits for its backoff");
    assert!(retry > now, "{retry:?}");
}

#[test]
fn one_dial_per_peer_and_stale_discoveries_go() {
    let now = Instant::now();
    let mut m = maker(MakerConfig::default());
    m.set_discovered(now, &[(peer(2), addr(2)), (peer(2), addr(3))]);
    assert_eq!(m.poll_dial(now), Some(addr(2)));
    assert_eq!(m.poll_dial(now), None, "the peer's other address waits");
    m.handle_failed(now, addr(2), "timeout".into(), Retry::Later);
    assert_eq!(m.poll_dial(now), Some(addr(3)));
    m.set_discovered(now, &[]);
    // addr(3) is connecting and stays; addr(2) was only retrying and goes.
    let left: Vec<SocketAddr> = m.targets().iter().map(|t| t.addr).collect();
    assert_eq!(left, vec![addr(3)]);
}

#[test]
fn forget_and_replace() {
    let now = Instant::now();
    let mut m = maker(MakerConfig::default());
    m.add_targets(now, &[addr(1), addr(2)], false);
    m.set_discovered(now, &[(peer(3), addr(3))]);
    m.add_targets(now, &[addr(3), addr(4)], true);
    let explicit: Vec<SocketAddr> = m
        .targets()
        .iter()
        .filter(|t| t.explicit)
        .map(|t| t.addr)
        .collect();
    assert_eq!(explicit, vec![addr(3), addr(4)]);
    assert_eq!(m.forget(&[addr(3), addr(9)]), 1);
    assert_eq!(m.targets().len(), 1);
}

#[test]
fn named_targets_are_replaced_as_a_whole_and_ignore_the_limit() {
    let now = Instant::now();
    let mut m = maker(MakerConfig {
        discovery: false,
        conn_limit: 1,
        ..MakerConfig::default()
    });
    m.add_targets(now, &[addr(1)], false);
    m.set_named(now, &[addr(1), addr(2), addr(3)]);
    m.set_connected_peers(&[peer(9)]);
    let mut dialled = Vec::new();
    while let Some(a) = m.poll_dial(now) {
        dialled.push(a);
    }
    assert_eq!(dialled, vec![addr(1), addr(2), addr(3)], "named: no limit");
    // A new answer: 2 is gone (no longer dialled), 4 is new, 1 stays explicit.
    m.set_named(now, &[addr(3), addr(4)]);
    let t: Vec<(SocketAddr, bool, bool)> = m
        .targets()
        .iter()
        .map(|t| (t.addr, t.explicit, t.named))
        .collect();
    assert_eq!(
        t,
        vec![
            (addr(1), true, false),
            (addr(3), false, true),
            (addr(4), false, true)
        ]
    );
    assert_eq!(m.poll_dial(now), Some(addr(4)));
    // Dropping the explicit target keeps what is still named.
    m.set_named(now, &[addr(1)]);
    m.add_targets(now, &[], true);
    let t: Vec<SocketAddr> = m.targets().iter().map(|t| t.addr).collect();
    assert_eq!(t, vec![addr(1)]);
}
