//! Session tests: rekey exchanges, confirmation, expiry and limits.

use super::util::{frame, open_frames};
use crate::sleeve::*;
use gossip::peer::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Duration;

const A: PeerId = PeerId([1; 16]);
const B: PeerId = PeerId([2; 16]);

fn short_config() -> SessionConfig {
    SessionConfig {
        rekey_after_time: Duration::from_secs(2),
        idle_rekey_after_time: Duration::from_secs(2),
        reject_after_time: Duration::from_secs(3),
        rekey_timeout: Duration::from_millis(500),
        rekey_after_messages: 1 << 60,
    }
}

/// T24: with a 2 s rekey, 20 s of traffic both ways crosses ≥ 8 epochs, the receiver
/// index changes each time, and not one datagram is lost, even though control messages
/// take 30 ms and datagrams arrive at once.
#[test]
fn rekeying_loses_nothing() {
    let start = Instant::now();
    let config = short_config();
    let mut a = Session::new(start, config, A, B, [3; 32]);
    let mut b = Session::new(start, config, B, A, [3; 32]);
    let mut rng = StdRng::seed_from_u64(9);
    let mut control: Vec<(Instant, bool, RekeyOffer)> = Vec::new(); // (due, to_b, offer)
    let (mut sent, mut lost, mut indices) = (0, 0, Vec::new());
    let mut buf = [0u8; 256];
    for step in 0..2000u64 {
        let now = start + Duration::from_millis(10 * step);
        for s in [&mut a, &mut b] {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        if let Some(offer) = a.poll_rekey_with(now, &mut rng, |_| false) {
            control.push((now + Duration::from_millis(30), true, offer));
        }
        let (due, later): (Vec<_>, Vec<_>) = control.drain(..).partition(|c| c.0 <= now);
        control = later;
        for (_, to_b, offer) in due {
            if to_b {
                let answer = b
                    .handle_offer_with(now, offer, &mut rng, |_| false)
                    .expect("ok");
                let answer = answer.expect("responder answers");
                control.push((now + Duration::from_millis(30), false, answer));
            } else {
                assert_eq!(
                    a.handle_offer_with(now, offer, &mut rng, |_| false),
                    Ok(None)
                );
            }
        }
        if a.poll_keepalive() {
            let len = a.seal(&[], &mut buf).expect("keepalive");
            b.open(now, &mut buf[..len]).expect("keepalive opens");
        }
        for a_to_b in [true, false] {
            let (from, to) = if a_to_b {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            if !from.can_send() {
                continue;
            }
            let len = from
                .seal(&[frame(B, A, b"ping")], &mut buf)
                .expect("sealed");
            sent += 1;
            if to.open(now, &mut buf[..len]).is_err() {
                lost += 1;
            }
        }
        let index = b.receiver_indices().next();
        if indices.last() != Some(&index) {
            indices.push(index);
        }
    }
    assert!(a.epoch() >= 9, "only {} epochs", a.epoch());
    assert_eq!(a.epoch(), b.epoch());
    assert!(indices.len() >= 9);
    assert!(sent > 3900);
    assert_eq!(lost, 0, "{lost} of {sent} datagrams lost across rekeys");
}

/// T18 and T25: a datagram of an epoch whose key has expired meets an unknown index, and
/// the expired key is gone from the table.
#[test]
fn expired_keys_are_dropped() {
    let start = Instant::now();
    let config = short_config();
    let (mut a, mut b) = Session::pair_for_testing(start, config, 2);
    let mut out = [0u8; 128];
    let len = a.seal(&[frame(B, A, b"old")], &mut out).expect("sealed");
    let old = out[..len].to_vec();
    let old_index = b.receiver_indices().next();
    let later = start + Duration::from_secs(3);
    assert_eq!(
        open_frames(&mut b, later, &old),
        Err(OpenError::UnknownIndex)
    );
    b.handle_timeout(later);
    assert_eq!(b.receiver_indices().next(), None);
    assert!(!b.can_send(), "an expired send key is not used");
    assert_ne!(old_index, None);
}

#[test]
fn rekey_roles_and_refusals() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(4);
    let mut a = Session::new(now, short_config(), A, B, [0; 32]);
    let mut b = Session::new(now, short_config(), B, A, [0; 32]);
    assert_eq!((a.role(), b.role()), (Role::Initiator, Role::Responder));
    assert_eq!(b.poll_rekey_with(now, &mut rng, |_| false), None);
    assert_eq!(a.poll_timeout(), Some(now));
    let first = a.poll_rekey_with(now, &mut rng, |_| false).expect("offer");
    assert_eq!(first.epoch, 1);
    assert_eq!(
        a.poll_rekey_with(now, &mut rng, |_| false),
        None,
        "one at a time"
    );
    // No answer within the timeout: a fresh offer with a new epoch number.
    let later = now + Duration::from_millis(500);
    let second = a
        .poll_rekey_with(later, &mut rng, |_| false)
        .expect("re-offer");
    assert_eq!(second.epoch, 2);
    let answer = b
        .handle_offer_with(later, second, &mut rng, |_| false)
        .expect("ok");
    let answer = answer.expect("answer");
    assert!(matches!(
        b.handle_offer_with(later, first, &mut rng, |_| false),
        Err(RekeyError::UnexpectedEpoch { got: 1, .. })
    ));
    let mut stale = answer;
    stale.epoch = 1;
    assert!(matches!(
        a.handle_offer_with(later, stale, &mut rng, |_| false),
        Err(RekeyError::UnexpectedEpoch {
            got: 1,
            expected: 2
        })
    ));
    assert_eq!(
        a.handle_offer_with(later, answer, &mut rng, |_| false),
        Ok(None)
    );
    assert_eq!(
        a.handle_offer_with(later, answer, &mut rng, |_| false),
        Err(RekeyError::Unsolicited)
    );
    assert!(a.poll_keepalive() && !a.poll_keepalive());
    // Index uniqueness across sessions is honoured.
    let taken = |i: u32| i % 2 == 0;
    let offer = a
        .poll_rekey_with(later + Duration::from_secs(2), &mut rng, taken)
        .expect("offer");
    assert_eq!(offer.receiver_index % 2, 1);
}

/// Two routers that dial each other at once hold two control links for a moment, and
/// the mesh keeps one. Offers travel over the mesh, so the answer made by the closed
/// link's responder session can reach the kept link's initiator session, for the very
/// epoch (1) that session waits for. Keys agreed from it would be salted with the other
/// link's hash and open nothing, until the next rekey minutes later (found by
/// `tests/scale.rs`: a relaunched router's peers stayed on the TCP fallback). The
/// answer is refused as for another link, the initiator offers again after
/// `rekey_timeout`, and the kept link's sessions agree.
#[test]
fn an_offer_for_another_link_to_the_same_peer_is_refused() {
    let now = Instant::now();
    let config = short_config();
    let mut rng = StdRng::seed_from_u64(12);
    let (closed, kept) = ([1; 32], [2; 32]);
    let mut a_closed = Session::new(now, config, A, B, closed);
    let mut b_closed = Session::new(now, config, B, A, closed);
    let mut a_kept = Session::new(now, config, A, B, kept);
    let mut b_kept = Session::new(now, config, B, A, kept);

    let offer_closed = a_closed
        .poll_rekey_with(now, &mut rng, |_| false)
        .expect("offer");
    let offer_kept = a_kept
        .poll_rekey_with(now, &mut rng, |_| false)
        .expect("offer");
    assert_eq!((offer_closed.epoch, offer_kept.epoch), (1, 1));
    let answer_closed = b_closed
        .handle_offer_with(now, offer_closed, &mut rng, |_| false)
        .expect("same link")
        .expect("an answer");
    // The closed link's answer reaches the kept link's initiator: refused, and the
    // offer it waits for is still outstanding.
    assert_eq!(
        a_kept.handle_offer_with(now, answer_closed, &mut rng, |_| false),
        Err(RekeyError::OtherLink)
    );
    assert!(!a_kept.can_send(), "no keys from another link's answer");
    // The kept link's offer reaching the closed link's responder is refused too.
    assert_eq!(
        b_closed.handle_offer_with(now, offer_kept, &mut rng, |_| false),
        Err(RekeyError::OtherLink)
    );
    // The kept link's own exchange completes, late or re-offered, and its keys open.
    let later = now + config.rekey_timeout;
    let again = a_kept
        .poll_rekey_with(later, &mut rng, |_| false)
        .expect("re-offer");
    let answer = b_kept
        .handle_offer_with(later, again, &mut rng, |_| false)
        .expect("same link")
        .expect("an answer");
    assert_eq!(
        a_kept.handle_offer_with(later, answer, &mut rng, |_| false),
        Ok(None)
    );
    let mut buf = [0u8; 128];
    let len = a_kept
        .seal(&[frame(B, A, b"kept")], &mut buf)
        .expect("sealed");
    assert!(
        b_kept.open(later, &mut buf[..len]).is_ok(),
        "the kept link's keys agree"
    );
}

/// An epoch that carried no frame is rotated at `idle_rekey_after_time`, not at
/// `rekey_after_time`; a frame under an older epoch makes the rekey due at once, and a
/// new epoch starts idle again.
#[test]
fn an_idle_epoch_rotates_later_and_frames_bring_it_forward() {
    let now = Instant::now();
    let config = SessionConfig::default();
    let mut rng = StdRng::seed_from_u64(11);
    let (mut a, mut b) = Session::pair_for_testing(now, config, 5);
    assert_eq!(a.role(), Role::Initiator);
    let busy = now + REKEY_AFTER_TIME;
    assert_eq!(
        a.poll_rekey(busy),
        None,
        "an idle epoch is not due at 120 s"
    );
    assert_eq!(a.poll_timeout(), Some(now + IDLE_REKEY_AFTER_TIME));
    assert!(IDLE_REKEY_AFTER_TIME + 2 * REKEY_TIMEOUT < REJECT_AFTER_TIME);
    let offer = a.poll_rekey(now + IDLE_REKEY_AFTER_TIME);
    let offer = offer.expect("an idle epoch is due at its own time");

    // The exchange completes; the new epoch starts idle.
    let t = now + IDLE_REKEY_AFTER_TIME;
    let answer = b.handle_offer_with(t, offer, &mut rng, |_| false);
    let answer = answer.ok().flatten().expect("answered");
    assert_eq!(
        a.handle_offer_with(t, answer, &mut rng, |_| false),
        Ok(None)
    );
    assert_eq!(a.epoch(), 2);
    assert_eq!(a.poll_rekey(t + REKEY_AFTER_TIME), None, "idle again");

    // A frame moves: the rekey is due at once, 120 s into the epoch.
    a.note_frames();
    let early = t + REKEY_AFTER_TIME - Duration::from_secs(1);
    assert_eq!(a.poll_rekey(early), None, "not before 120 s");
    assert!(
        a.poll_rekey(t + REKEY_AFTER_TIME).is_some(),
        "frames bring it forward"
    );
}

/// With short key lifetimes (`--rekey-interval`) an idle epoch rotates as often as a
/// busy one, never after its keys died.
#[test]
fn short_lifetimes_rotate_idle_epochs_at_the_interval() {
    let now = Instant::now();
    let (mut a, _) = Session::pair_for_testing(now, short_config(), 6);
    let config = SessionConfig {
        rekey_after_time: Duration::from_secs(2),
        reject_after_time: Duration::from_secs(3),
        rekey_timeout: Duration::from_secs(1),
        ..SessionConfig::default()
    };
    let (mut c, _) = Session::pair_for_testing(now, config, 7);
    for s in [&mut a, &mut c] {
        assert!(s.poll_rekey(now + Duration::from_secs(2)).is_some());
    }
}

/// T20: the initiator rekeys early when its counter reaches `rekey_after_messages`.
#[test]
fn rekey_after_messages() {
    let now = Instant::now();
    let config = SessionConfig {
        rekey_after_messages: 10,
        ..SessionConfig::default()
    };
    let (mut a, _) = Session::pair_for_testing(now, config, 3);
    let mut out = [0u8; 64];
    while a.send_counter() < Some(9) {
        a.seal(&[], &mut out).expect("sealed");
    }
    assert_eq!(a.poll_rekey(now), None);
    a.seal(&[], &mut out).expect("sealed");
    assert!(a.poll_rekey(now).is_some());
}

/// The responder keeps sending with the old key until the new one is confirmed: by a
/// datagram under the new key, or after `rekey_timeout` at the latest.
#[test]
fn responder_switches_after_confirmation() {
    let start = Instant::now();
    let config = short_config();
    let mut rng = StdRng::seed_from_u64(5);
    let (mut a, mut b) = Session::pair_for_testing(start, config, 6);
    let mut buf = [0u8; 128];
    let epoch_seen_by_a = |b: &mut Session, a: &mut Session, now| {
        let mut buf = [0u8; 64];
        let len = b.seal(&[], &mut buf).expect("sealed");
        a.open(now, &mut buf[..len]).expect("opens").epoch
    };
    for round in 0..2 {
        let now = start + Duration::from_secs(2 * (round + 1));
        let offer = a.poll_rekey_with(now, &mut rng, |_| false).expect("due");
        let answer = b.handle_offer_with(now, offer, &mut rng, |_| false);
        let answer = answer.expect("ok").expect("answer");
        // b has the new keys but a does not yet: b must still use the old one.
        assert_eq!(epoch_seen_by_a(&mut b, &mut a, now), offer.epoch - 1);
        assert_eq!(
            a.handle_offer_with(now, answer, &mut rng, |_| false),
            Ok(None)
        );
        assert!(a.poll_keepalive());
        if round == 0 {
            // Confirmed by a's keepalive.
            let len = a.seal(&[], &mut buf).expect("keepalive");
            b.open(now, &mut buf[..len]).expect("opens");
            assert_eq!(epoch_seen_by_a(&mut b, &mut a, now), offer.epoch);
        } else {
            // The keepalive is lost: b switches once rekey_timeout has passed.
            b.handle_timeout(now + Duration::from_millis(499));
            assert_eq!(epoch_seen_by_a(&mut b, &mut a, now), offer.epoch - 1);
            b.handle_timeout(now + Duration::from_millis(500));
            assert_eq!(epoch_seen_by_a(&mut b, &mut a, now), offer.epoch);
        }
    }
}
