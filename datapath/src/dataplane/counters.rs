//! Counters of the data plane: traffic per peer, and drops by reason.
//!
//! Plain integers owned by the data plane; the router reads a copy ([`Counters`]) when
//! status or metrics ask, so the hot path never shares them.

use crate::sleeve::codec::{OpenError, SealError};
use crate::switch::DropReason;
use gossip::peer::PeerId;
use serde::Serialize;

/// Traffic and drops for one neighbour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// Frames sealed to this neighbour.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames received from this neighbour.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Datagrams dropped as replays.
    pub replay: u64,
    /// Datagrams that failed authentication.
    pub auth_failed: u64,
    /// Datagrams whose header or inner frames were malformed.
    pub malformed: u64,
    /// Datagrams for a receiver index that has expired.
    pub unknown_index: u64,
    /// Authentic datagrams from an address other than the endpoint that did not move it
    /// (they arrived after a newer one).
    pub src_mismatch: u64,
    /// Times the endpoint moved to the source of an authentic, fresh datagram (roaming).
    pub endpoint_changes: u64,
    /// Key exchanges that replaced a working epoch (the first exchange of a session,
    /// which gives it its first keys, is not a rekey).
    pub rekeys: u64,
    /// Times its frames went to the TCP fallback.
    pub fallbacks: u64,
    /// Datagrams sent to it inside the control link (TCP fallback).
    pub tcp_tx_datagrams: u64,
    /// Authentic datagrams received from it inside the control link.
    pub tcp_rx_datagrams: u64,
}

impl PeerCounters {
    pub(crate) fn count_open_error(&mut self, e: OpenError) {
        match e {
            OpenError::Replay => self.replay += 1,
            OpenError::AuthFailed => self.auth_failed += 1,
            OpenError::UnknownIndex => self.unknown_index += 1,
            OpenError::TooShort | OpenError::BadHeader | OpenError::Malformed => {
                self.malformed += 1
            }
        }
    }
}

/// Drops not tied to one neighbour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// Datagrams too short or with a bad header, before any key was found.
    pub malformed: u64,
    /// Datagrams whose receiver index matches no key.
    pub unknown_index: u64,
    /// Frames with no route to their destination peer.
    pub no_route: u64,
    /// Frames captured locally whose source MAC lives behind another peer.
    pub spoofed_source: u64,
    /// Frames that would have looped.
    pub looped: u64,
    /// Relayed frames from a neighbour not on a path from their `src_peer` (forged or
    /// stale source peer).
    pub wrong_relay: u64,
    /// Frames too large for a datagram, or with no key to seal with yet.
    pub unsendable: u64,
    /// Frames dropped because the transmit batch was full.
    pub tx_full: u64,
    /// Rekey offers refused.
    pub rekey_refused: u64,
    /// Frames larger than the path MTU to their next hop.
    pub mtu: u64,
    /// Frames from the TAP device with a malformed `virtio_net_hdr` (gso_size 0,
    /// lengths or offsets past the frame, a GSO type never asked for).
    pub offload_malformed: u64,
    /// Datagrams inside a control link under another neighbour's keys.
    pub tcp_wrong_peer: u64,
}

impl DropCounts {
    pub(crate) fn count(&mut self, reason: DropReason) {
        match reason {
            DropReason::Malformed => self.malformed += 1,
            DropReason::SpoofedLocalSource | DropReason::SpoofedRemoteSource => {
                self.spoofed_source += 1
            }
            DropReason::NoRoute => self.no_route += 1,
            DropReason::Loop => self.looped += 1,
            DropReason::WrongRelay => self.wrong_relay += 1,
            // The bridge has delivered it already: not an error.
            DropReason::LocalDestination => {}
        }
    }

    pub(crate) fn count_seal_error(&mut self, _e: SealError) {
        self.unsendable += 1;
    }
}

/// A copy of all counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Per neighbour.
    pub peers: Vec<(PeerId, PeerCounters)>,
    /// Drops not tied to a neighbour.
    pub drops: DropCounts,
    /// MAC addresses learnt.
    pub mac_entries: usize,
    /// TCP superframes read from the TAP device (and cut into segments).
    pub superframes: u64,
    /// Datagrams for the TCP fallback dropped because its queue was full.
    pub tcp_queue_full: u64,
}
