//! Handshake tests: both modes end to end, the PSK only at msg3 (T14), wrong secrets
//! (T07), mode mismatch (T08), tampering (T10, T05), replay (T22), pre-auth bounds (T36),
//! low-order keys (T48) and the responder fuzz target (T42).

use super::fuzz::{drive, Direction};
use super::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn identities() -> (Identity, Identity) {
    (
        Identity::from_secret_bytes([1; 32]),
        Identity::from_secret_bytes([2; 32]),
    )
}

/// An initiator and a responder with the given PSKs and fixed ephemerals.
fn pair(
    a: &Identity,
    b: &Identity,
    psk_a: Option<&Psk>,
    psk_b: Option<&Psk>,
) -> (Handshake, Handshake) {
    let now = Instant::now();
    let init = Handshake::new_initiator(&HandshakeConfig {
        identity: a,
        psk: psk_a,
        now,
    })
    .with_fixed_ephemeral([0x10; 32]);
    let resp = Handshake::new_responder(&HandshakeConfig {
        identity: b,
        psk: psk_b,
        now,
    })
    .with_fixed_ephemeral([0x20; 32]);
    (init, resp)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

const SECRET_HEADER: &[u8; 8] = b"WEFT\x01\x01\x01\x00";
const PLAIN_HEADER: &[u8; 8] = b"WEFT\x01\x01\x00\x00";

#[test]
fn completes_in_both_modes_and_carries_messages() {
    let (a, b) = identities();
    let psk = Psk::from_bytes([7; 32]);
    for psk in [Some(&psk), None] {
        let (mut init, mut resp) = pair(&a, &b, psk, psk);
        let outcome = drive(&mut init, &mut resp, |_, _, _| {});
        assert!(outcome.initiator_error.is_none() && outcome.responder_error.is_none());
        assert_eq!(outcome.leftover, 0);
        let (mut i, mut r) = (
            init.finish().expect("initiator"),
            resp.finish().expect("responder"),
        );
        assert_eq!(i.remote_id, b.id());
        assert_eq!(r.remote_id, a.id());
        assert_eq!(&i.remote_static, b.public_key());
        assert_eq!(i.handshake_hash, r.handshake_hash);
        assert_eq!((i.version, r.version), (1, 1));
        assert_eq!(i.encrypted, psk.is_some());
        let mut big = vec![0u8; 1 << 20];
        StdRng::seed_from_u64(5).fill_bytes(&mut big);
        for message in [&b"ping"[..], &[], &big] {
            let wire = i.records.seal(message).expect("seal");
            r.records.open(&wire).expect("open");
            assert_eq!(r.records.poll_message().as_deref(), Some(message));
            let wire = r.records.seal(message).expect("seal");
            i.records.open(&wire).expect("open");
            assert_eq!(i.records.poll_message().as_deref(), Some(message));
        }
    }
}

#[test]
fn messages_have_exact_sizes() {
    let (a, b) = identities();
    let psk = Psk::from_bytes([7; 32]);
    for (psk, msg1) in [(Some(&psk), 48), (None, 32)] {
        let (mut init, mut resp) = pair(&a, &b, psk, psk);
        let outcome = drive(&mut init, &mut resp, |_, _, _| {});
        assert_eq!(outcome.to_responder.len(), 8 + 2 + msg1 + 2 + 64);
        assert_eq!(outcome.to_initiator.len(), 8 + 2 + 96 + 2 + 16);
        assert!(outcome.to_responder.len() <= MAX_PRE_AUTH_INPUT);
        assert!(outcome.to_initiator.len() <= MAX_PRE_AUTH_INPUT);
    }
}

/// T14: with fixed ephemerals, msg1 and msg2 are byte-identical under two PSKs; msg3 is not.
#[test]
fn psk_enters_only_at_msg3() {
    let (a, b) = identities();
    let (psk_a, psk_b) = (Psk::from_bytes([0xaa; 32]), Psk::from_bytes([0xbb; 32]));
    let run = |psk: &Psk| {
        let (mut init, mut resp) = pair(&a, &b, Some(psk), Some(psk));
        let outcome = drive(&mut init, &mut resp, |_, _, _| {});
        assert!(init.is_finished() && resp.is_finished());
        (outcome.to_responder, outcome.to_initiator)
    };
    let (up_a, down_a) = run(&psk_a);
    let (up_b, down_b) = run(&psk_b);
    let msg1_end = 8 + 2 + MSG1_PSK_LEN;
    assert_eq!(up_a[..msg1_end], up_b[..msg1_end], "header and msg1");
    let msg2_end = 8 + 2 + MSG2_LEN;
    assert_eq!(down_a[..msg2_end], down_b[..msg2_end], "header and msg2");
    assert_ne!(
        up_a[msg1_end..],
        up_b[msg1_end..],
        "msg3 depends on the PSK"
    );
    assert_ne!(
        down_a[msg2_end..],
        down_b[msg2_end..],
        "so does the confirm record"
    );
}

/// T07: a wrong secret fails at msg3 on the responder, which then says nothing.
#[test]
fn wrong_secret_fails_at_msg3() {
    let (a, b) = identities();
    let (right, wrong) = (Psk::from_bytes([1; 32]), Psk::from_bytes([2; 32]));
    let (mut init, mut resp) = pair(&a, &b, Some(&wrong), Some(&right));
    let outcome = drive(&mut init, &mut resp, |_, _, _| {});
    assert!(matches!(
        outcome.responder_error,
        Some(HandshakeError::AuthFailed)
    ));
    assert!(outcome.initiator_error.is_none());
    assert_eq!(
        outcome.to_initiator.len(),
        8 + 2 + MSG2_LEN,
        "nothing after msg2"
    );
    assert_eq!(init.stage(), Stage::Confirm);
    assert!(matches!(
        init.closed_error(),
        HandshakeError::ClosedAfterMsg3
    ));
    assert!(matches!(
        init.finish(),
        Err(HandshakeError::NotFinished(Stage::Confirm))
    ));
    assert!(resp.poll_transmit().is_none());
    let msg = HandshakeError::AuthFailed.to_string();
    assert!(msg.contains("network secret differs"), "{msg}");
}

/// T08: a secret router and a --no-encryption router refuse each other at the header.
#[test]
fn encrypted_and_unencrypted_refuse_each_other() {
    let (a, b) = identities();
    let psk = Psk::from_bytes([3; 32]);
    for (psk_a, psk_b) in [(Some(&psk), None), (None, Some(&psk))] {
        let (mut init, mut resp) = pair(&a, &b, psk_a, psk_b);
        let outcome = drive(&mut init, &mut resp, |_, _, _| {});
        let (i, r) = (outcome.initiator_error, outcome.responder_error);
        if psk_a.is_some() {
            assert!(
                matches!(i, Some(HandshakeError::RemoteUnencrypted)),
                "{i:?}"
            );
            assert!(matches!(r, Some(HandshakeError::RemoteEncrypted)), "{r:?}");
        } else {
            assert!(matches!(i, Some(HandshakeError::RemoteEncrypted)), "{i:?}");
            assert!(
                matches!(r, Some(HandshakeError::RemoteUnencrypted)),
                "{r:?}"
            );
        }
        assert_eq!(
            outcome.to_responder.len(),
            HEADER_LEN,
            "no Noise bytes were sent"
        );
        assert_eq!(outcome.to_initiator.len(), HEADER_LEN);
    }
}

/// Every single-bit change of either header stops the handshake (T10).
#[test]
fn tampered_headers_fail() {
    let (a, b) = identities();
    let psk = Psk::from_bytes([4; 32]);
    for psk in [Some(&psk), None] {
        for direction in [Direction::ToResponder, Direction::ToInitiator] {
            for bit in 0..HEADER_LEN * 8 {
                let (mut init, mut resp) = pair(&a, &b, psk, psk);
                let outcome = drive(&mut init, &mut resp, |dir, offset, bytes| {
                    if dir == direction && offset == 0 {
                        bytes[bit / 8] ^= 1 << (bit % 8);
                    }
                });
                let failed = outcome.initiator_error.is_some() || outcome.responder_error.is_some();
                assert!(failed, "{direction:?} bit {bit}");
                assert!(!init.is_finished(), "{direction:?} bit {bit}");
            }
        }
    }
}

/// Flipping any bit of msg1, msg2, msg3 or the confirm record fails the handshake.
#[test]
fn tampered_messages_fail() {
    let (a, b) = identities();
    let psk = Psk::from_bytes([5; 32]);
    let up_len = 8 + 2 + MSG1_PSK_LEN + 2 + MSG3_LEN;
    let down_len = 8 + 2 + MSG2_LEN + 2 + CONFIRM_LEN;
    for (direction, len) in [
        (Direction::ToResponder, up_len),
        (Direction::ToInitiator, down_len),
    ] {
        for at in HEADER_LEN..len {
            let bit = at % 8;
            let (mut init, mut resp) = pair(&a, &b, Some(&psk), Some(&psk));
            let outcome = drive(&mut init, &mut resp, |dir, offset, bytes| {
                if dir == direction && (offset..offset + bytes.len()).contains(&at) {
                    bytes[at - offset] ^= 1 << bit;
                }
            });
            assert!(!init.is_finished(), "{direction:?} byte {at}");
            let errors = [&outcome.initiator_error, &outcome.responder_error];
            assert!(
                errors.iter().any(|e| e.is_some()),
                "{direction:?} byte {at}"
            );
            if direction == Direction::ToResponder && at >= 8 + 2 + MSG1_PSK_LEN + 2 {
                assert!(matches!(
                    outcome.responder_error,
                    Some(HandshakeError::AuthFailed)
                ));
            }
            // T11: a forged or damaged confirm record never gives the initiator a link.
            if direction == Direction::ToInitiator && at >= 8 + 2 + MSG2_LEN + 2 {
                assert!(matches!(
                    outcome.initiator_error,
                    Some(HandshakeError::ConfirmFailed)
                ));
            }
        }
    }
}

/// T22: a recorded initiator stream replayed to a new responder (fresh ephemeral) fails.
#[test]
fn replayed_session_fails() {
    let (a, b) = identities();
    let psk = Psk::from_bytes([6; 32]);
    let now = Instant::now();
    let cfg_a = HandshakeConfig {
        identity: &a,
        psk: Some(&psk),
        now,
    };
    let cfg_b = HandshakeConfig {
        identity: &b,
        psk: Some(&psk),
        now,
    };
    let mut init = Handshake::new_initiator(&cfg_a);
    let mut resp = Handshake::new_responder(&cfg_b);
    let recorded = drive(&mut init, &mut resp, |_, _, _| {}).to_responder;
    assert!(init.is_finished());
    let mut fresh = Handshake::new_responder(&cfg_b);
    let err = fresh.handle_input(&recorded).expect_err("replay must fail");
    assert!(matches!(err, HandshakeError::AuthFailed), "{err}");
}

#[test]
fn stops_exactly_at_the_end_of_the_handshake() {
    let (a, b) = identities();
    let (mut init, mut resp) = pair(&a, &b, None, None);
    // Let the initiator send msg3, but hold back the responder's answer.
    init.handle_input(PLAIN_HEADER).expect("header");
    let up = init.poll_transmit().expect("header + msg1");
    resp.handle_input(&up).expect("msg1");
    let down = resp.poll_transmit().expect("header + msg2");
    init.handle_input(&down[HEADER_LEN..]).expect("msg2");
    let mut msg3 = init.poll_transmit().expect("msg3");
    assert_eq!(init.stage(), Stage::Confirm);
    msg3.extend_from_slice(b"trailing");
    assert_eq!(resp.handle_input(&msg3).expect("msg3"), msg3.len() - 8);
    let mut confirm = resp.poll_transmit().expect("confirm");
    let mut r = resp.finish().expect("responder finished");
    confirm.extend(r.records.seal(b"first record").expect("seal"));
    let used = init.handle_input(&confirm).expect("confirm");
    assert_eq!(used, 2 + CONFIRM_LEN);
    let mut i = init.finish().expect("initiator finished");
    i.records
        .open(&confirm[used..])
        .expect("rest is the link's");
    assert_eq!(
        i.records.poll_message().as_deref(),
        Some(&b"first record"[..])
    );
}

/// T36: a huge declared length is refused after the two length bytes.
#[test]
fn oversize_length_is_refused_immediately() {
    let (_, b) = identities();
    let psk = Psk::from_bytes([8; 32]);
    let cfg = HandshakeConfig {
        identity: &b,
        psk: Some(&psk),
        now: Instant::now(),
    };
    let mut resp = Handshake::new_responder(&cfg);
    let mut input = SECRET_HEADER.to_vec();
    input.extend_from_slice(&[0xff, 0xff, 0, 0, 0]);
    let err = resp.handle_input(&input).expect_err("0xffff");
    assert!(
        matches!(
            err,
            HandshakeError::BadLength {
                got: 0xffff,
                expected: 48,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(resp.consumed(), HEADER_LEN + 2);
    assert!(matches!(
        resp.handle_input(&[0]),
        Err(HandshakeError::Aborted)
    ));
}

/// T36: an oversize msg3 is refused on its length prefix, like msg1.
#[test]
fn oversize_msg3_is_refused_immediately() {
    let (a, b) = identities();
    let (mut init, mut resp) = pair(&a, &b, None, None);
    init.handle_input(PLAIN_HEADER).expect("header");
    let up = init.poll_transmit().expect("header + msg1");
    resp.handle_input(&up).expect("msg1");
    assert_eq!(resp.stage(), Stage::Msg3);
    let before = resp.consumed();
    let err = resp
        .handle_input(&[0x01, 0x00, 0xaa])
        .expect_err("oversize msg3");
    assert!(
        matches!(
            err,
            HandshakeError::BadLength {
                what: "msg3",
                got: 256,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(resp.consumed(), before + 2);
}

/// T36/T34: junk and slow input never grow the pre-auth buffers.
#[test]
fn junk_never_grows_buffers() {
    let (a, b) = identities();
    let cfg_a = HandshakeConfig {
        identity: &a,
        psk: None,
        now: Instant::now(),
    };
    let cfg_b = HandshakeConfig {
        identity: &b,
        psk: None,
        now: Instant::now(),
    };
    let mut rng = StdRng::seed_from_u64(36);
    let mut junk = vec![0u8; 10 << 20];
    rng.fill_bytes(&mut junk);
    for starts_valid in [false, true] {
        for mut hs in [
            Handshake::new_initiator(&cfg_a),
            Handshake::new_responder(&cfg_b),
        ] {
            if starts_valid {
                hs.handle_input(PLAIN_HEADER).expect("header");
            }
            for piece in junk.chunks(65536) {
                let _ = hs.handle_input(piece);
                let _ = hs.poll_transmit();
                assert!(hs.buffer_capacity() <= 1024);
                assert!(hs.consumed() <= MAX_PRE_AUTH_INPUT);
            }
            assert_eq!(hs.stage(), Stage::Failed);
        }
    }
    // Byte-at-a-time (slowloris) input is buffered in the same fixed space.
    let mut resp = Handshake::new_responder(&cfg_b);
    for &byte in PLAIN_HEADER.iter().chain(&[0, 32]) {
        assert_eq!(resp.handle_input(&[byte]).expect("byte"), 1);
        assert!(resp.buffer_capacity() <= 1024);
    }
    assert_eq!(resp.stage(), Stage::Msg1);
}

#[test]
fn versions_are_negotiated_and_checked() {
    let (_, b) = identities();
    let cfg = HandshakeConfig {
        identity: &b,
        psk: None,
        now: Instant::now(),
    };
    let mut resp = Handshake::new_responder(&cfg);
    resp.handle_input(b"WEFT\x01\x02\x00\x00")
        .expect("1..=2 overlaps");
    assert_eq!(resp.stage(), Stage::Msg1);
    assert_eq!(resp.version, 1);
    let mut resp = Handshake::new_responder(&cfg);
    let err = resp
        .handle_input(b"WEFT\x02\x03\x00\x00")
        .expect_err("2..=3");
    assert!(
        matches!(err, HandshakeError::VersionMismatch { .. }),
        "{err}"
    );
    let mut resp = Handshake::new_responder(&cfg);
    let err = resp.handle_input(b"GET / HTTP/1.1\r\n").expect_err("http");
    assert!(matches!(err, HandshakeError::NotWeft));
    assert_eq!(resp.consumed(), HEADER_LEN);
}

#[test]
fn times_out_at_the_deadline() {
    let (a, _) = identities();
    let now = Instant::now();
    let mut hs = Handshake::new_initiator(&HandshakeConfig {
        identity: &a,
        psk: None,
        now,
    });
    assert_eq!(hs.deadline(), now + HANDSHAKE_TIMEOUT);
    hs.handle_timeout(now + Duration::from_secs(9))
        .expect("not yet");
    let err = hs
        .handle_timeout(now + HANDSHAKE_TIMEOUT)
        .expect_err("deadline");
    assert!(matches!(err, HandshakeError::TimedOut));
    assert!(matches!(hs.closed_error(), HandshakeError::ClosedEarly));
}

#[test]
fn low_order_ephemerals_are_refused() {
    let (a, b) = identities();
    let now = Instant::now();
    let mut resp = Handshake::new_responder(&HandshakeConfig {
        identity: &b,
        psk: None,
        now,
    });
    let mut input = PLAIN_HEADER.to_vec();
    input.extend(frame(&[0u8; 32]));
    let err = resp.handle_input(&input).expect_err("zero e");
    assert!(
        matches!(err, HandshakeError::LowOrderKey { which: "ephemeral" }),
        "{err}"
    );
    let mut init = Handshake::new_initiator(&HandshakeConfig {
        identity: &a,
        psk: None,
        now,
    });
    init.handle_input(PLAIN_HEADER).expect("header");
    let mut msg2 = [0u8; MSG2_LEN];
    msg2[0] = 1; // u = 1 has order 4
    let err = init.handle_input(&frame(&msg2)).expect_err("low-order e");
    assert!(
        matches!(err, HandshakeError::LowOrderKey { which: "ephemeral" }),
        "{err}"
    );
}

#[test]
fn low_order_statics_are_refused() {
    let psk = Psk::from_bytes([9; 32]);
    let (a, b) = identities();
    let now = Instant::now();
    // A victim initiator facing an evil responder.
    let mut victim = Handshake::new_initiator(&HandshakeConfig {
        identity: &a,
        psk: Some(&psk),
        now,
    });
    let err = evil::run_against(&mut victim, false, &psk).expect_err("evil responder");
    assert!(
        matches!(err, HandshakeError::LowOrderKey { which: "static" }),
        "{err}"
    );
    // A victim responder facing an evil initiator.
    let mut victim = Handshake::new_responder(&HandshakeConfig {
        identity: &b,
        psk: Some(&psk),
        now,
    });
    let err = evil::run_against(&mut victim, true, &psk).expect_err("evil initiator");
    assert!(
        matches!(err, HandshakeError::LowOrderKey { which: "static" }),
        "{err}"
    );
}

#[test]
fn fuzz_responder_edge_cases() {
    let mut cases: Vec<Vec<u8>> =
        vec![vec![], vec![0], vec![1], vec![2], vec![3], vec![4], vec![5]];
    let mut oversize = vec![0];
    oversize.extend_from_slice(PLAIN_HEADER);
    oversize.extend_from_slice(&[0xff, 0xff]);
    cases.push(oversize);
    let mut gossip_first = vec![3];
    gossip_first.extend_from_slice(&[0u8; 300]);
    cases.push(gossip_first);
    for case in &cases {
        fuzz_handshake_responder(case);
    }
    // An all-zero mask over a genuine transcript completes; any other stops short.
    for control in [4u8, 5, 6, 7] {
        assert_eq!(
            super::fuzz::run_responder(&[control]),
            Some(Stage::Finished)
        );
        assert_eq!(
            super::fuzz::run_responder(&[control, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Some(Stage::Failed)
        );
    }
    assert_eq!(
        super::fuzz::run_responder(&[2]),
        Some(Stage::Msg3),
        "genuine msg1 prefix"
    );
}

#[test]
fn fuzz_responder_random_inputs() {
    let mut rng = StdRng::seed_from_u64(0x42);
    for _ in 0..4000 {
        let len = rng.gen_range(0..300);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        // Mostly small XOR masks, so the genuine-transcript modes get deep.
        if data.len() > 1 && rng.gen_bool(0.5) {
            // Keep one byte of the mask: a single corrupted byte.
            let keep = rng.gen_range(1..data.len());
            let kept = data[keep];
            data[1..].fill(0);
            data[keep] = kept;
        }
        fuzz_handshake_responder(&data);
    }
}

mod evil;

#[test]
fn only_listed_keys_complete_the_handshake() {
    use crate::peer_keys::{to_hex, PeerKeys};
    use std::sync::Arc;
    let (a, b) = identities();
    let psk = Psk::from_bytes([7; 32]);
    let list = |ids: &[&Identity]| {
        let text: String = ids
            .iter()
            .map(|i| format!("{}\n", to_hex(i.public_key())))
            .collect();
        Some(Arc::new(PeerKeys::parse(&text).unwrap()))
    };
    // Both listed: it completes.
    let (init, resp) = pair(&a, &b, Some(&psk), Some(&psk));
    let (mut init, mut resp) = (
        init.with_admitted(list(&[&b])),
        resp.with_admitted(list(&[&a])),
    );
    let outcome = drive(&mut init, &mut resp, |_, _, _| {});
    assert!(outcome.initiator_error.is_none() && outcome.responder_error.is_none());
    // The responder does not list the initiator: refused at msg3, no confirmation.
    let (init, resp) = pair(&a, &b, Some(&psk), Some(&psk));
    let (mut init, mut resp) = (init, resp.with_admitted(list(&[&b])));
    let outcome = drive(&mut init, &mut resp, |_, _, _| {});
    assert!(
        matches!(outcome.responder_error, Some(HandshakeError::NotListed { peer, .. }) if peer == a.id()),
        "{:?}",
        outcome.responder_error
    );
    assert!(!init.is_finished(), "the initiator got no key confirmation");
    // The initiator does not list the responder: refused at msg2, msg3 never sent.
    let (init, resp) = pair(&a, &b, Some(&psk), Some(&psk));
    let (mut init, mut resp) = (init.with_admitted(list(&[&a])), resp);
    let outcome = drive(&mut init, &mut resp, |_, _, _| {});
    assert!(
        matches!(outcome.initiator_error, Some(HandshakeError::NotListed { peer, .. }) if peer == b.id()),
        "{:?}",
        outcome.initiator_error
    );
    assert!(!resp.is_finished(), "the responder never saw msg3");
}
