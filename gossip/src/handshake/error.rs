//! Why a control-link handshake failed.
//!
//! The messages are for the local log only. The remote is never told why: on any error
//! the caller closes the connection without writing anything more (a wrong network secret
//! and a tampered message look the same from outside).

use super::header::VersionRange;
use super::Stage;

/// Why a handshake failed. On every variant the caller closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The first bytes were not a weft header.
    #[error(
        "the remote did not send a weft header: it is not a weft router, or another \
         service listens on that port"
    )]
    NotWeft,
    /// The header had the weft magic but was malformed.
    #[error("the remote sent a malformed weft header ({0}); it is not a compatible weft router")]
    BadHeader(&'static str),
    /// The version ranges do not overlap.
    #[error(
        "the remote speaks weft protocol version {theirs} and this router speaks {ours}; \
         upgrade the older router"
    )]
    VersionMismatch {
        /// Versions this router speaks.
        ours: VersionRange,
        /// Versions the remote speaks.
        theirs: VersionRange,
    },
    /// We have a network secret; the remote runs without one.
    #[error(
        "the remote runs with --no-encryption but this router has a network secret; \
         give both the same secret"
    )]
    RemoteUnencrypted,
    /// We run with `--no-encryption`; the remote has a network secret.
    #[error("the remote requires a network secret but this router runs with --no-encryption")]
    RemoteEncrypted,
    /// A handshake message declared the wrong length.
    #[error(
        "the remote's handshake {what} declares {got} bytes where exactly {expected} are \
         allowed; it is not a compatible weft peer"
    )]
    BadLength {
        /// Which message: "msg1", "msg2", "msg3" or "key confirmation".
        what: &'static str,
        /// The only allowed length.
        expected: usize,
        /// The declared length.
        got: usize,
    },
    /// The remote sent a small-order X25519 key.
    #[error(
        "the remote sent a low-order {which} key, which would make the session keys \
         predictable; it is not a genuine weft peer"
    )]
    LowOrderKey {
        /// "ephemeral" or "static".
        which: &'static str,
    },
    /// msg1 or msg2 failed to authenticate.
    #[error(
        "handshake {what} failed to authenticate: the cleartext header or the message was \
         altered in transit, or the remote is not a weft peer"
    )]
    Corrupt {
        /// Which message.
        what: &'static str,
    },
    /// The responder could not authenticate msg3.
    #[error(
        "authentication failed at msg3: the remote's network secret differs from ours, \
         or it is not a weft peer"
    )]
    AuthFailed,
    /// The initiator could not authenticate the responder's key-confirmation record.
    #[error(
        "key confirmation failed: the responder's first record did not authenticate; its \
         network secret most likely differs from ours, or the link was tampered with"
    )]
    ConfirmFailed,
    /// The remote's static key is not on this router's `--peer-keys` list.
    #[error(
        "peer {peer} is not on the --peer-keys list (its key: {key}); add the key (`weft \
         identity` on that host prints it) and run `weft peers reload`"
    )]
    NotListed {
        /// The remote's id.
        peer: crate::peer::PeerId,
        /// Its public key, in hex.
        key: String,
    },
    /// The remote closed the connection before msg3 was sent.
    #[error("the remote closed the connection before the handshake completed")]
    ClosedEarly,
    /// The remote closed the connection after our msg3.
    #[error(
        "the remote closed the link after our final handshake message: its network secret \
         most likely differs from ours"
    )]
    ClosedAfterMsg3,
    /// The deadline passed.
    #[error(
        "the handshake did not complete within {} s; the remote is too slow or not a \
         weft router",
        super::HANDSHAKE_TIMEOUT.as_secs()
    )]
    TimedOut,
    /// `finish()` was called too early (a bug in the caller).
    #[error("the handshake is not finished (waiting at {0:?}); this is a bug in weft")]
    NotFinished(Stage),
    /// Input arrived after an earlier error.
    #[error("the handshake already failed; close the connection")]
    Aborted,
    /// snow refused its inputs (a bug in weft, not a network condition).
    #[error("internal Noise error ({0}); this is a bug in weft")]
    Noise(#[from] snow::Error),
}
