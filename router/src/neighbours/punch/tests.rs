//! Unit tests of hole punching: requests refused or taken, attempts confirmed, failed
//! and lost, and the coordinator's schedule.

use super::*;

const US: PeerId = PeerId([1; 16]);
const RELAY: PeerId = PeerId([2; 16]);
const OTHER: PeerId = PeerId([3; 16]);

fn ep(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, last], 6783))
}

fn ctx() -> RequestContext {
    RequestContext {
        us: US,
        from_neighbour: true,
        peer_neighbour: false,
        peer_reachable: true,
    }
}

fn req(peer: PeerId, endpoint: SocketAddr) -> PunchRequest {
    PunchRequest {
        peer,
        endpoint,
        attempt: 42,
    }
}

#[test]
fn both_ends_derive_one_salt_and_attempts_differ() {
    assert_eq!(salt(7, &US, &OTHER), salt(7, &OTHER, &US));
    assert_ne!(salt(7, &US, &OTHER), salt(8, &US, &OTHER));
    assert_ne!(salt(7, &US, &OTHER), salt(7, &US, &RELAY));
}

#[test]
fn a_request_starts_one_attempt_per_peer() {
    let now = Instant::now();
    let mut p = Punches::default();
    let start = p.handle_request(now, RELAY, req(OTHER, ep(3)), ctx());
    assert_eq!(
        start,
        Ok(Some(Start {
            peer: OTHER,
            endpoint: ep(3),
            salt: salt(42, &US, &OTHER),
        }))
    );
    // A resend while it runs changes nothing.
    assert_eq!(
        p.handle_request(now, RELAY, req(OTHER, ep(9)), ctx()),
        Ok(None)
    );
    assert!(p.contains(&OTHER));
    assert_eq!(p.up(&OTHER), None, "not confirmed yet");
    assert_eq!(p.stats().started, 1);
}

#[test]
fn requests_from_strangers_about_neighbours_or_to_nowhere_are_refused() {
    let now = Instant::now();
    let mut p = Punches::default();
    let cases = [
        (
            RELAY,
            req(OTHER, ep(3)),
            RequestContext {
                from_neighbour: false,
                ..ctx()
            },
            Refusal::NotFromNeighbour,
        ),
        (RELAY, req(US, ep(3)), ctx(), Refusal::BadPeer),
        (RELAY, req(RELAY, ep(3)), ctx(), Refusal::BadPeer),
        (
            RELAY,
            req(OTHER, ep(3)),
            RequestContext {
                peer_neighbour: true,
                ..ctx()
            },
            Refusal::AlreadyLinked,
        ),
        (
            RELAY,
            req(OTHER, ep(3)),
            RequestContext {
                peer_reachable: false,
                ..ctx()
            },
            Refusal::Unreachable,
        ),
        (
            RELAY,
            req(OTHER, "255.255.255.255:6783".parse().unwrap()),
            ctx(),
            Refusal::BadEndpoint,
        ),
        (
            RELAY,
            req(OTHER, "127.0.0.1:6783".parse().unwrap()),
            ctx(),
            Refusal::BadEndpoint,
        ),
        (
            RELAY,
            req(OTHER, "[ff02::1]:6783".parse().unwrap()),
            ctx(),
            Refusal::BadEndpoint,
        ),
    ];
    for (from, r, c, why) in cases {
        assert_eq!(p.handle_request(now, from, r, c), Err(why), "{r:?}");
    }
    assert_eq!(p.stats().refused, cases.len() as u64);
    assert_eq!(p.stats().started, 0);
}

#[test]
fn attempts_are_capped() {
    let now = Instant::now();
    let mut p = Punches::default();
    for i in 0..MAX_ATTEMPTS {
        let peer = PeerId([
            10,
            (i >> 8) as u8,
            i as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        assert!(matches!(
            p.handle_request(now, RELAY, req(peer, ep(3)), ctx()),
            Ok(Some(_))
        ));
    }
    let one_more = p.handle_request(now, RELAY, req(OTHER, ep(3)), ctx());
    assert_eq!(one_more, Err(Refusal::TooMany));
}

#[test]
fn an_unconfirmed_attempt_fails_after_its_timeout() {
    let now = Instant::now();
    let mut p = Punches::default();
    p.handle_request(now, RELAY, req(OTHER, ep(3)), ctx())
        .unwrap();
    assert_eq!(p.poll_timeout(), Some(now + ATTEMPT_TIMEOUT));
    let early = now + ATTEMPT_TIMEOUT - Duration::from_millis(1);
    assert!(p.poll_expired(early, |_| true).is_empty());
    assert_eq!(p.poll_expired(now + ATTEMPT_TIMEOUT, |_| true), vec![OTHER]);
    assert!(!p.contains(&OTHER));
    assert_eq!(p.stats().failed, 1);
    // A new request may start another.
    let again = p.handle_request(now + ATTEMPT_TIMEOUT, RELAY, req(OTHER, ep(3)), ctx());
    assert!(matches!(again, Ok(Some(_))));
}

#[test]
fn a_confirmed_path_is_up_follows_roaming_and_is_given_up_only_when_lost_for_long() {
    let now = Instant::now();
    let mut p = Punches::default();
    p.handle_request(now, RELAY, req(OTHER, ep(3)), ctx())
        .unwrap();
    assert!(p.handle_path(now, &OTHER, true));
    assert!(!p.handle_path(now, &RELAY, true), "not punched");
    assert!(p.handle_endpoint(&OTHER, ep(33)));
    assert_eq!(p.up(&OTHER), Some(ep(33)));
    assert_eq!(p.stats().succeeded, 1);
    // Long after the attempt's timeout, a path that is up stays.
    let later = now + ATTEMPT_TIMEOUT * 10;
    assert!(p.poll_expired(later, |_| true).is_empty());
    assert_eq!(p.poll_timeout(), None);
    // Lost, then back within the grace: kept, and not counted twice.
    p.handle_path(later, &OTHER, false);
    assert_eq!(p.up(&OTHER), None);
    assert!(p.poll_expired(later + LOST_GRACE / 2, |_| true).is_empty());
    p.handle_path(later + LOST_GRACE / 2, &OTHER, true);
    assert_eq!(p.stats().succeeded, 1);
    // Lost for the grace: given up.
    let t = later + LOST_GRACE;
    p.handle_path(t, &OTHER, false);
    assert_eq!(p.poll_expired(t + LOST_GRACE, |_| true), vec![OTHER]);
    assert_eq!(p.stats().lost, 1);
    assert_eq!(p.stats().failed, 0);
}

#[test]
fn a_peer_that_leaves_the_mesh_or_gets_a_link_is_dropped() {
    let now = Instant::now();
    let mut p = Punches::default();
    p.handle_request(now, RELAY, req(OTHER, ep(3)), ctx())
        .unwrap();
    assert_eq!(p.poll_expired(now, |peer| *peer != OTHER), vec![OTHER]);
    p.handle_request(now, RELAY, req(OTHER, ep(3)), ctx())
        .unwrap();
    assert!(p.forget(&OTHER));
    assert!(!p.contains(&OTHER));
}

#[test]
fn the_coordinator_asks_both_ends_then_backs_off_and_forgets_linked_pairs() {
    let now = Instant::now();
    let mut p = Punches::default();
    let pair = Candidate {
        a: (RELAY, ep(2)),
        b: (OTHER, ep(3)),
    };
    let mut ids = 100..;
    let mut next_id = || ids.next().unwrap_or(0);
    assert!(
        p.coordinate(now, &[pair], &mut next_id).is_empty(),
        "not yet"
    );
    assert_eq!(p.poll_timeout(), Some(now + FIRST_REQUEST_AFTER));
    let t1 = now + FIRST_REQUEST_AFTER;
    let sent = p.coordinate(t1, &[pair], &mut next_id);
    assert_eq!(
        sent,
        vec![
            (
                RELAY,
                PunchRequest {
                    peer: OTHER,
                    endpoint: ep(3),
                    attempt: 100
                }
            ),
            (
                OTHER,
                PunchRequest {
                    peer: RELAY,
                    endpoint: ep(2),
                    attempt: 100
                }
            ),
        ]
    );
    assert!(p
        .coordinate(t1 + RESEND_AFTER / 2, &[pair], &mut next_id)
        .is_empty());
    let t2 = t1 + RESEND_AFTER;
    let again = p.coordinate(t2, &[pair], &mut next_id);
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].1.attempt, 101, "a fresh attempt id each round");
    assert!(p
        .coordinate(t2 + RESEND_AFTER, &[pair], &mut next_id)
        .is_empty());
    assert_eq!(
        p.coordinate(t2 + RESEND_AFTER * 2, &[pair], &mut next_id)
            .len(),
        2
    );
    assert_eq!(p.stats().coordinated, 6);
    // Linked now (no longer a candidate): forgotten; if it comes back, it starts over.
    assert!(p.coordinate(t2, &[], &mut next_id).is_empty());
    assert_eq!(p.poll_timeout(), None);
    let t3 = t2 + MAX_RESEND;
    assert!(p.coordinate(t3, &[pair], &mut next_id).is_empty());
    assert_eq!(
        p.coordinate(t3 + FIRST_REQUEST_AFTER, &[pair], &mut next_id)
            .len(),
        2
    );
}
