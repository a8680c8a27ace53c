//! In-memory drivers for two handshakes, and the responder fuzz target.
//!
//! [`drive`] shuttles bytes between an initiator and a responder (with an optional
//! tamper hook) until neither has anything to send. Tests, the link fuzz target and the
//! simulation use it; nothing here touches a socket or a clock other than the `Instant`
//! handed to the configs.
//!
//! [`fuzz_handshake_responder`] feeds arbitrary bytes, split at data-derived points, into
//! a responder: raw, after a genuine header and msg1, or XORed over a genuine transcript
//! (so the fuzzer also reaches msg3). It checks that nothing panics, that pre-auth
//! buffers stay fixed and that the responder never reads past the handshake.

use super::{Handshake, HandshakeConfig, HandshakeError, Stage, MAX_PRE_AUTH_INPUT};
use crate::identity::Identity;
use crate::psk::Psk;
use std::sync::OnceLock;
use std::time::Instant;

/// Which way bytes travel in [`drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Initiator to responder.
    ToResponder,
    /// Responder to initiator.
    ToInitiator,
}

/// What happened in [`drive`]: each side's error, and the bytes that crossed each way.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) initiator_error: Option<HandshakeError>,
    pub(crate) responder_error: Option<HandshakeError>,
    pub(crate) to_responder: Vec<u8>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) to_initiator: Vec<u8>,
    /// Bytes a finished handshake did not consume (they would go to the link).
    pub(crate) leftover: usize,
}

/// Runs two handshakes against each other. `tamper(direction, stream_offset, bytes)` may
/// alter each chunk in flight; `stream_offset` is where the chunk starts in its direction.
pub(crate) fn drive(
    initiator: &mut Handshake,
    responder: &mut Handshake,
    mut tamper: impl FnMut(Direction, usize, &mut Vec<u8>),
) -> Outcome {
    let mut outcome = Outcome::default();
    loop {
        // Take both sides' output before delivering either, as two hosts writing at
        // once would: each header is on the wire before the other side reacts to it.
        let up = initiator.poll_transmit();
        let down = responder.poll_transmit();
        if up.is_none() && down.is_none() {
            return outcome;
        }
        if let Some(mut bytes) = up {
            tamper(
                Direction::ToResponder,
                outcome.to_responder.len(),
                &mut bytes,
            );
            outcome.to_responder.extend_from_slice(&bytes);
            deliver(
                responder,
                &bytes,
                &mut outcome.responder_error,
                &mut outcome.leftover,
            );
        }
        if let Some(mut bytes) = down {
            tamper(
                Direction::ToInitiator,
                outcome.to_initiator.len(),
                &mut bytes,
            );
            outcome.to_initiator.extend_from_slice(&bytes);
            deliver(
                initiator,
                &bytes,
                &mut outcome.initiator_error,
                &mut outcome.leftover,
            );
        }
    }
}

fn deliver(
    to: &mut Handshake,
    bytes: &[u8],
    error: &mut Option<HandshakeError>,
    leftover: &mut usize,
) {
    if error.is_some() {
        return;
    }
    match to.handle_input(bytes) {
        Ok(n) => *leftover += bytes.len() - n,
        Err(e) => *error = Some(e),
    }
}

/// The fixed identities and ephemerals of [`in_memory_pair`] and the fuzz targets.
const INITIATOR_KEY: [u8; 32] = [0x31; 32];
const RESPONDER_KEY: [u8; 32] = [0x32; 32];
const INITIATOR_EPHEMERAL: [u8; 32] = [0x33; 32];
const RESPONDER_EPHEMERAL: [u8; 32] = [0x34; 32];
const FUZZ_PSK: [u8; 32] = [0x42; 32];

fn fixed_pair(psk: Option<&Psk>, now: Instant) -> (Handshake, Handshake) {
    let a = Identity::from_secret_bytes(INITIATOR_KEY);
    let b = Identity::from_secret_bytes(RESPONDER_KEY);
    let init = Handshake::new_initiator(&HandshakeConfig {
        identity: &a,
        psk,
        now,
    })
    .with_fixed_ephemeral(INITIATOR_EPHEMERAL);
    let resp = Handshake::new_responder(&HandshakeConfig {
        identity: &b,
        psk,
        now,
    })
    .with_fixed_ephemeral(RESPONDER_EPHEMERAL);
    (init, resp)
}

/// A deterministic completed handshake: (initiator side, responder side).
pub(crate) fn in_memory_pair(
    psk: Option<&Psk>,
) -> Option<(super::Established, super::Established)> {
    let (mut init, mut resp) = fixed_pair(psk, Instant::now());
    let outcome = drive(&mut init, &mut resp, |_, _, _| {});
    if outcome.initiator_error.is_some()
        || outcome.responder_error.is_some()
        || outcome.leftover != 0
    {
        return None;
    }
    Some((init.finish().ok()?, resp.finish().ok()?))
}

/// The genuine initiator-to-responder stream of the fixed pair, per mode.
fn genuine_transcript(secret: bool) -> &'static [u8] {
    static TRANSCRIPTS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let all = TRANSCRIPTS.get_or_init(|| {
        let psk = Psk::from_bytes(FUZZ_PSK);
        [None, Some(&psk)].map(|psk| {
            let (mut init, mut resp) = fixed_pair(psk, Instant::now());
            drive(&mut init, &mut resp, |_, _, _| {}).to_responder
        })
    });
    &all[usize::from(secret)]
}

/// Fuzz target: arbitrary stream bytes into a responder. Must never panic.
///
/// Byte 0 selects the mode (bit 0: with a PSK) and the prefix (bits 1-2: none, a
/// genuine header and msg1, or the rest XORed over a whole genuine transcript); it
/// also seeds the split points.
#[doc(hidden)]
pub fn fuzz_handshake_responder(data: &[u8]) {
    let _ = run_responder(data);
}

/// [`fuzz_handshake_responder`], returning the responder's final stage.
pub(crate) fn run_responder(data: &[u8]) -> Option<Stage> {
    let (&control, rest) = data.split_first()?;
    let secret = control & 1 == 1;
    let psk = Psk::from_bytes(FUZZ_PSK);
    let (_, mut resp) = fixed_pair(secret.then_some(&psk), Instant::now());
    let genuine = genuine_transcript(secret);
    let mut stream = Vec::with_capacity(genuine.len() + rest.len());
    match (control >> 1) & 3 {
        0 => {}
        1 => stream.extend_from_slice(&genuine[..genuine.len().min(genuine_msg1_end(secret))]),
        _ => {
            stream.extend_from_slice(genuine);
            for (b, x) in stream.iter_mut().zip(rest) {
                *b ^= x;
            }
        }
    }
    if (control >> 1) & 3 < 2 || rest.len() > genuine.len() {
        let skip = if (control >> 1) & 3 >= 2 {
            genuine.len()
        } else {
            0
        };
        stream.extend_from_slice(&rest[skip..]);
    }
    feed_responder(&mut resp, &stream, control);
    Some(resp.stage())
}

/// Where msg1 ends in the genuine transcript: header, length prefix, body.
fn genuine_msg1_end(secret: bool) -> usize {
    let body = if secret {
        super::MSG1_PSK_LEN
    } else {
        super::MSG1_LEN
    };
    super::HEADER_LEN + 2 + body
}

fn feed_responder(resp: &mut Handshake, stream: &[u8], seed: u8) {
    let _ = resp.poll_transmit();
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut pos = 0;
    while pos < stream.len() {
        // xorshift32: cheap, deterministic split points.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let end = stream.len().min(pos + 1 + (state % 97) as usize);
        let chunk = &stream[pos..end];
        match resp.handle_input(chunk) {
            Ok(n) => {
                assert!(n <= chunk.len());
                if n < chunk.len() {
                    // Only a finished handshake leaves bytes for the link.
                    assert_eq!(resp.stage(), Stage::Finished);
                    break;
                }
            }
            Err(_) => {
                assert_eq!(resp.stage(), Stage::Failed);
                assert!(matches!(
                    resp.handle_input(b"x"),
                    Err(HandshakeError::Aborted)
                ));
                break;
            }
        }
        assert!(
            resp.buffer_capacity() <= 1024,
            "pre-auth buffers must stay small"
        );
        assert!(resp.consumed() <= MAX_PRE_AUTH_INPUT);
        let _ = resp.poll_transmit();
        pos = end;
    }
    if resp.stage() == Stage::Finished {
        let _ = resp.poll_transmit();
        assert!(resp.is_finished());
    }
}
