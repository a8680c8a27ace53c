//! Handshake accounting: control-link handshakes accepted, and refused by reason.
//!
//! The mesh owner holds the one [`HandshakeStats`]; link tasks and the accept loop tell
//! it what happened through [`crate::owner::Input::HandshakeRefused`] and `LinkUp`. The
//! reasons are a small fixed vocabulary (metric label values), so that an attacker who
//! sends garbage cannot grow the table.

use gossip::handshake::HandshakeError;
use gossip::ratelimit::Refusal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a handshake was refused or failed (a label value of `weft_handshakes_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusedReason {
    /// The pre-authentication rate limit (per address or in total) was exceeded.
    RateLimit,
    /// Too many unauthenticated connections were pending (per address or in total).
    TooManyPending,
    /// The network secrets differ (msg3 or key confirmation did not authenticate).
    Auth,
    /// One side has a network secret and the other runs with `--no-encryption`.
    EncryptionMismatch,
    /// No common protocol version.
    Version,
    /// Not a weft peer: bad header, wrong lengths, corrupt messages, low-order keys.
    Protocol,
    /// The remote's key is not on the `--peer-keys` list.
    NotListed,
    /// The deadline passed.
    Timeout,
    /// The remote closed the connection, or the socket failed.
    Closed,
    /// A bug on our side (snow refused its inputs).
    Internal,
    /// Authenticated, but as many inbound links as allowed are open
    /// ([`crate::inbound::InboundLinks`]).
    TooManyLinks,
}

impl RefusedReason {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [RefusedReason; 11] = [
        RefusedReason::RateLimit,
        RefusedReason::TooManyPending,
        RefusedReason::Auth,
        RefusedReason::EncryptionMismatch,
        RefusedReason::Version,
        RefusedReason::Protocol,
        RefusedReason::NotListed,
        RefusedReason::Timeout,
        RefusedReason::Closed,
        RefusedReason::Internal,
        RefusedReason::TooManyLinks,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::RateLimit => "rate_limit",
            RefusedReason::TooManyPending => "too_many_pending",
            RefusedReason::Auth => "auth",
            RefusedReason::EncryptionMismatch => "encryption_mismatch",
            RefusedReason::Version => "version",
            RefusedReason::Protocol => "protocol",
            RefusedReason::NotListed => "not_listed",
            RefusedReason::Timeout => "timeout",
            RefusedReason::Closed => "closed",
            RefusedReason::Internal => "internal",
            RefusedReason::TooManyLinks => "too_many_links",
        }
    }

    /// The reason for a handshake error.
    pub fn of_error(e: &HandshakeError) -> RefusedReason {
        match e {
            HandshakeError::AuthFailed
            | HandshakeError::ConfirmFailed
            | HandshakeError::ClosedAfterMsg3 => RefusedReason::Auth,
            HandshakeError::RemoteEncrypted | HandshakeError::RemoteUnencrypted => {
                RefusedReason::EncryptionMismatch
            }
            HandshakeError::VersionMismatch { .. } => RefusedReason::Version,
            HandshakeError::NotWeft
            | HandshakeError::BadHeader(_)
            | HandshakeError::BadLength { .. }
            | HandshakeError::LowOrderKey { .. }
            | HandshakeError::Corrupt { .. } => RefusedReason::Protocol,
            HandshakeError::NotListed { .. } => RefusedReason::NotListed,
            HandshakeError::TimedOut => RefusedReason::Timeout,
            HandshakeError::ClosedEarly | HandshakeError::Aborted => RefusedReason::Closed,
            HandshakeError::NotFinished(_) | HandshakeError::Noise(_) => RefusedReason::Internal,
        }
    }

    /// The reason for a refusal by the pre-authentication limiter.
    pub fn of_refusal(r: &Refusal) -> RefusedReason {
        match r {
            Refusal::PerIpRate | Refusal::GlobalRate => RefusedReason::RateLimit,
            Refusal::TooManyPending | Refusal::TooManyPendingFromIp => {
                RefusedReason::TooManyPending
            }
        }
    }
}

/// Handshake counters, owned by the mesh owner.
#[derive(Debug, Clone, Default)]
pub struct HandshakeStats {
    accepted: [u64; 2],
    refused: BTreeMap<(bool, RefusedReason), u64>,
}

impl HandshakeStats {
    /// A handshake completed; `outbound` when we dialled.
    pub fn accepted(&mut self, outbound: bool) {
        self.accepted[usize::from(outbound)] += 1;
    }

    /// A handshake was refused or failed.
    pub fn refused(&mut self, outbound: bool, reason: RefusedReason) {
        *self.refused.entry((outbound, reason)).or_default() += 1;
    }

    /// The report form.
    pub fn report(&self) -> HandshakeReport {
        HandshakeReport {
            accepted_inbound: self.accepted[0],
            accepted_outbound: self.accepted[1],
            refused: self
                .refused
                .iter()
                .map(|(&(outbound, reason), &count)| HandshakeRefusal {
                    direction: direction(outbound).to_string(),
                    reason: reason.as_str().to_string(),
                    count,
                })
                .collect(),
            gossip_throttled: 0,
        }
    }
}

fn direction(outbound: bool) -> &'static str {
    if outbound {
        "outbound"
    } else {
        "inbound"
    }
}

/// Handshakes in `weft report`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct HandshakeReport {
    /// Handshakes completed on connections the remote opened.
    pub accepted_inbound: u64,
    /// Handshakes completed on connections we dialled.
    pub accepted_outbound: u64,
    /// Handshakes refused or failed, by direction and reason (only non-zero ones).
    pub refused: Vec<HandshakeRefusal>,
    /// Messages read late because their peer had spent its gossip budget (bytes per
    /// second per link, `gossip::budget`).
    #[serde(default)]
    pub gossip_throttled: u64,
}

/// One (direction, reason) count of refused handshakes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandshakeRefusal {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `rate_limit`, `too_many_pending`, `auth`, `encryption_mismatch`, `version`,
    /// `protocol`, `not_listed`, `timeout`, `closed` or `internal`.
    pub reason: String,
    /// How many.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_direction_and_reason() {
        let mut s = HandshakeStats::default();
        s.accepted(true);
        s.accepted(false);
        s.accepted(false);
        s.refused(false, RefusedReason::of_error(&HandshakeError::AuthFailed));
        s.refused(false, RefusedReason::of_error(&HandshakeError::AuthFailed));
        s.refused(false, RefusedReason::of_refusal(&Refusal::PerIpRate));
        s.refused(true, RefusedReason::of_error(&HandshakeError::TimedOut));
        let r = s.report();
        assert_eq!((r.accepted_inbound, r.accepted_outbound), (2, 1));
        let got: Vec<(&str, &str, u64)> = r
            .refused
            .iter()
            .map(|x| (x.direction.as_str(), x.reason.as_str(), x.count))
            .collect();
        assert_eq!(
            got,
            vec![
                ("inbound", "rate_limit", 1),
                ("inbound", "auth", 2),
                ("outbound", "timeout", 1)
            ]
        );
    }
}
