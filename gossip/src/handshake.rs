//! The control-link handshake: version header, then Noise `XXpsk3`, sans-IO.
//!
//! ```text
//! initiator                                      responder
//!   header "WEFT" 1 1 mode 0  ───────────────►
//!                             ◄───────────────  header "WEFT" 1 1 mode 0
//!   msg1  len ‖ e                      ───────►   (32 B; 48 B with psk: e is also MixKey'd)
//!                             ◄───────  msg2  len ‖ e, ee, s, es        (96 B)
//!   msg3  len ‖ s, se, psk             ───────►   (64 B)
//!                             ◄───────  confirm: the first link record, no plaintext (16 B)
//! ```
//!
//! Every Noise message is framed as a 2-byte big-endian length and a body, and each body
//! has one exact length; any other declared length fails at once, after reading only the
//! two length bytes. All pre-authentication input lands in one fixed 128-byte buffer, and
//! at most [`MAX_PRE_AUTH_INPUT`] bytes are ever read before authentication. The
//! prologue is `"weft/1" ‖ initiator header ‖ responder header`, so tampering with either
//! cleartext header fails the handshake.
//!
//! The PSK enters only at msg3: msg1 and msg2 are the same whatever the secret, so an
//! attacker that dials us learns nothing it could test offline, and a wrong secret fails
//! at msg3 on the responder ([`HandshakeError::AuthFailed`]), which then closes without a
//! word. The initiator only sees the connection close after its msg3
//! ([`HandshakeError::ClosedAfterMsg3`] via [`Handshake::closed_error`]).
//!
//! **Key confirmation.** msg3 proves the initiator to the responder, but nothing yet
//! proves to the initiator that the responder knew the secret (msg2 does not depend on
//! it). So the responder answers a valid msg3 with one empty transport record, and the
//! initiator's handshake finishes only once that record authenticates. Until then there
//! is no [`RecordLayer`] on the initiator side, so it cannot send application data to an
//! impersonator. The responder may send right after its confirm record.
//!
//! [`Handshake::handle_input`] stops consuming exactly where the handshake ends; whatever
//! follows in the stream belongs to the [`RecordLayer`].

use crate::identity::{Identity, KEY_LEN};
use crate::peer::PeerId;
use crate::psk::Psk;
use crate::record_layer::{Record, RecordLayer, RECORD_HEADER_LEN, TAG_LEN};
use snow::{HandshakeState, StatelessTransportState};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

mod error;
mod fuzz;
mod header;
mod steps;
#[cfg(test)]
mod tests;

pub use error::HandshakeError;
#[doc(hidden)]
pub use fuzz::fuzz_handshake_responder;
pub(crate) use fuzz::in_memory_pair;
pub use header::{Header, HeaderRepr, Mode, VersionRange, HEADER_LEN, MAGIC};

/// Lowest protocol version this router speaks.
pub const MIN_VERSION: u8 = 1;
/// Highest protocol version this router speaks.
pub const MAX_VERSION: u8 = 1;
/// How long a handshake may take before the caller must close it (Weave's HeaderTimeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The Noise protocol with a network secret.
pub const NOISE_SECRET: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// The Noise protocol for `--no-encryption`.
pub const NOISE_NO_ENCRYPTION: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// First bytes of the prologue.
const PROLOGUE_LABEL: &[u8] = b"weft/1";
/// msg1 body without a PSK: `e`.
pub const MSG1_LEN: usize = KEY_LEN;
/// msg1 body with a PSK: `e` and the tag of the empty payload (psk modes MixKey `e`).
pub const MSG1_PSK_LEN: usize = KEY_LEN + TAG_LEN;
/// msg2 body: `e`, encrypted `s`, the tag of the empty payload.
pub const MSG2_LEN: usize = KEY_LEN + (KEY_LEN + TAG_LEN) + TAG_LEN;
/// msg3 body: encrypted `s` and the tag of the empty payload.
pub const MSG3_LEN: usize = (KEY_LEN + TAG_LEN) + TAG_LEN;
/// The key-confirmation record body: a tag over no plaintext.
pub const CONFIRM_LEN: usize = TAG_LEN;
/// The most bytes either side reads before the handshake authenticates.
pub const MAX_PRE_AUTH_INPUT: usize =
    HEADER_LEN + RECORD_HEADER_LEN + MSG2_LEN + RECORD_HEADER_LEN + CONFIRM_LEN;
/// The input buffer: room for the largest unit (msg2 with its length prefix).
const BUF_LEN: usize = 128;

/// What a handshake needs from the router.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeConfig<'a> {
    /// This router's static key.
    pub identity: &'a Identity,
    /// The network PSK; `None` runs `--no-encryption` (Noise_XX, no secret).
    pub psk: Option<&'a Psk>,
    /// When the connection was set up; the deadline counts from here.
    pub now: Instant,
}

/// Which side of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialed.
    Initiator,
    /// We accepted.
    Responder,
}

/// What the handshake waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The remote's version header.
    Header,
    /// msg1 (responder).
    Msg1,
    /// msg2 (initiator).
    Msg2,
    /// msg3 (responder).
    Msg3,
    /// The key-confirmation record (initiator, after sending msg3).
    Confirm,
    /// Nothing: done, call [`Handshake::finish`].
    Finished,
    /// Nothing: it failed, close the connection.
    Failed,
}

/// A completed handshake.
#[derive(Debug)]
pub struct Established {
    /// The record layer for everything that follows.
    pub records: RecordLayer,
    /// The remote's peer id, derived from its static key.
    pub remote_id: PeerId,
    /// The remote's static public key.
    pub remote_static: [u8; KEY_LEN],
    /// The Noise handshake hash, unique to this session (salt for later key exchanges).
    pub handshake_hash: [u8; 32],
    /// The negotiated protocol version.
    pub version: u8,
    /// Whether the network secret was used (mode 1); `false` means `--no-encryption`.
    pub encrypted: bool,
}

/// The handshake state machine of one control connection.
pub struct Handshake {
    role: Role,
    mode: Mode,
    local_header: [u8; HEADER_LEN],
    secret: Zeroizing<[u8; KEY_LEN]>,
    psk: Option<Psk>,
    fixed_ephemeral: Option<Zeroizing<[u8; KEY_LEN]>>,
    noise: Option<Box<HandshakeState>>,
    transport: Option<StatelessTransportState>,
    stage: Stage,
    version: u8,
    remote_static: [u8; KEY_LEN],
    handshake_hash: [u8; 32],
    buf: [u8; BUF_LEN],
    filled: usize,
    consumed: usize,
    out: Vec<u8>,
    deadline: Instant,
    /// `--peer-keys`: only these static keys may complete the handshake.
    admitted: Option<std::sync::Arc<crate::peer_keys::PeerKeys>>,
}

impl Handshake {
    /// A handshake for a connection we dialed. Its header is ready to send.
    pub fn new_initiator(cfg: &HandshakeConfig<'_>) -> Handshake {
        Self::new(cfg, Role::Initiator)
    }

    /// A handshake for a connection we accepted. Its header is ready to send.
    pub fn new_responder(cfg: &HandshakeConfig<'_>) -> Handshake {
        Self::new(cfg, Role::Responder)
    }

    fn new(cfg: &HandshakeConfig<'_>, role: Role) -> Handshake {
        let mode = if cfg.psk.is_some() {
            Mode::Secret
        } else {
            Mode::NoEncryption
        };
        let local_header = HeaderRepr {
            versions: VersionRange {
                min: MIN_VERSION,
                max: MAX_VERSION,
            },
            mode,
        }
        .to_bytes();
        let mut out = Vec::with_capacity(BUF_LEN);
        out.extend_from_slice(&local_header);
        Handshake {
            role,
            mode,
            local_header,
            secret: cfg.identity.secret_bytes(),
            psk: cfg.psk.cloned(),
            fixed_ephemeral: None,
            noise: None,
            transport: None,
            stage: Stage::Header,
            version: 0,
            remote_static: [0; KEY_LEN],
            handshake_hash: [0; 32],
            buf: [0; BUF_LEN],
            filled: 0,
            consumed: 0,
            out,
            deadline: cfg.now + HANDSHAKE_TIMEOUT,
            admitted: None,
        }
    }

    /// Admits only the keys on `list` (`--peer-keys`); `None` admits any key that
    /// proves the network secret. The initiator refuses at msg2, before it sends msg3;
    /// the responder at msg3, before its key confirmation: an unlisted peer never gets
    /// a link.
    pub fn with_admitted(
        mut self,
        list: Option<std::sync::Arc<crate::peer_keys::PeerKeys>>,
    ) -> Handshake {
        self.admitted = list;
        self
    }

    /// Uses a fixed ephemeral key instead of a random one: tests and fuzzing only.
    pub(crate) fn with_fixed_ephemeral(mut self, key: [u8; KEY_LEN]) -> Handshake {
        self.fixed_ephemeral = Some(Zeroizing::new(key));
        self
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What the handshake waits for next.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// When the caller must give up: [`HANDSHAKE_TIMEOUT`] after the config's `now`.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Fails the handshake with [`HandshakeError::TimedOut`] once `now` reaches the
    /// deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        if now >= self.deadline && !matches!(self.stage, Stage::Finished | Stage::Failed) {
            return Err(self.fail(HandshakeError::TimedOut));
        }
        Ok(())
    }

    /// The error to report when the remote closes the connection now.
    pub fn closed_error(&self) -> HandshakeError {
        match (self.role, self.stage) {
            (Role::Initiator, Stage::Confirm) => HandshakeError::ClosedAfterMsg3,
            _ => HandshakeError::ClosedEarly,
        }
    }

    /// Bytes to write to the connection, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// Whether [`Handshake::finish`] will succeed: the handshake is complete and all its
    /// output has been taken with [`Handshake::poll_transmit`].
    pub fn is_finished(&self) -> bool {
        self.stage == Stage::Finished && self.out.is_empty()
    }

    /// Consumes bytes read from the connection and returns how many were used. It stops
    /// exactly at the end of the handshake: unused bytes belong to the [`RecordLayer`].
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, HandshakeError> {
        if self.stage == Stage::Failed {
            return Err(HandshakeError::Aborted);
        }
        let mut used = 0;
        while used < data.len() && self.wants_input() {
            let take = (self.unit_len() - self.filled).min(data.len() - used);
            self.buf[self.filled..self.filled + take].copy_from_slice(&data[used..used + take]);
            self.filled += take;
            used += take;
            self.consumed += take;
            if self.stage != Stage::Header && self.filled == RECORD_HEADER_LEN {
                let got = Record::new_unchecked(&self.buf[..]).body_len();
                let (what, expected) = self.expected_frame();
                if got != expected {
                    return Err(self.fail(HandshakeError::BadLength {
                        what,
                        expected,
                        got,
                    }));
                }
            }
            if self.filled == self.unit_len() {
                self.filled = 0;
                if let Err(e) = self.process_unit() {
                    return Err(self.fail(e));
                }
            }
        }
        Ok(used)
    }

    /// The established link and what we learned about the remote.
    pub fn finish(self) -> Result<Established, HandshakeError> {
        if !self.is_finished() {
            return Err(HandshakeError::NotFinished(self.stage));
        }
        let transport = self
            .transport
            .ok_or(HandshakeError::NotFinished(self.stage))?;
        // Record 0 from the responder is the key confirmation.
        let (send, recv) = match self.role {
            Role::Initiator => (0, 1),
            Role::Responder => (1, 0),
        };
        Ok(Established {
            records: RecordLayer::new(transport, send, recv),
            remote_id: PeerId::from_public_key(&self.remote_static),
            remote_static: self.remote_static,
            handshake_hash: self.handshake_hash,
            version: self.version,
            encrypted: self.mode == Mode::Secret,
        })
    }

    /// Total bytes consumed so far (bounded by [`MAX_PRE_AUTH_INPUT`]).
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Bytes of buffer this handshake holds: the fixed input buffer and pending output.
    pub(crate) fn buffer_capacity(&self) -> usize {
        BUF_LEN + self.out.capacity()
    }

    fn wants_input(&self) -> bool {
        matches!(
            self.stage,
            Stage::Header | Stage::Msg1 | Stage::Msg2 | Stage::Msg3 | Stage::Confirm
        )
    }

    /// Bytes of the unit being read: the header, a length prefix, or a whole frame.
    fn unit_len(&self) -> usize {
        if self.stage == Stage::Header {
            HEADER_LEN
        } else if self.filled < RECORD_HEADER_LEN {
            RECORD_HEADER_LEN
        } else {
            RECORD_HEADER_LEN + self.expected_frame().1
        }
    }

    fn expected_frame(&self) -> (&'static str, usize) {
        match self.stage {
            Stage::Msg1 if self.mode == Mode::Secret => ("msg1", MSG1_PSK_LEN),
            Stage::Msg1 => ("msg1", MSG1_LEN),
            Stage::Msg2 => ("msg2", MSG2_LEN),
            Stage::Msg3 => ("msg3", MSG3_LEN),
            _ => ("key confirmation", CONFIRM_LEN),
        }
    }

    fn fail(&mut self, error: HandshakeError) -> HandshakeError {
        self.stage = Stage::Failed;
        self.noise = None;
        self.transport = None;
        self.out = Vec::new();
        error
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("mode", &self.mode)
            .field("stage", &self.stage)
            .field("consumed", &self.consumed)
            .finish()
    }
}
