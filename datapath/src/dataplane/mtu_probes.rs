//! The data plane's side of path MTU discovery and of frames too large for a path:
//! probes, their acknowledgements, send failures, and ICMP "too big" replies.
//!
//! Kept apart from the send path so that the per-frame cost is one comparison
//! ([`Dataplane::fits`]) before a frame is sealed.

use super::{Dataplane, Event, PeerEntry, TxBuffer};
use crate::icmp::too_big_reply;
use crate::sleeve::MIN_DATAGRAM_LEN;
use crate::sleeve::RELAY_OVERHEAD;
use gossip::peer::PeerId;
use std::net::SocketAddr;
use std::time::Instant;

impl Dataplane {
    /// Path MTU probes that are due, sealed into `tx`. Call with the keepalives.
    pub fn poll_probes(&mut self, now: Instant, tx: &mut TxBuffer) {
        for entry in self.peers.values_mut() {
            if !entry.session.can_send() {
                continue;
            }
            while let Some(size) = entry.pmtu.poll_probe(now) {
                // A probe that does not fit the batch is simply not acknowledged.
                let Some(slot) = tx.slot(size) else {
                    self.drops.tx_full += 1;
                    continue;
                };
                let prepared = entry
                    .session
                    .write_padded_keepalive(size, slot)
                    .and_then(|inner| entry.session.prepare_in_place(slot, inner));
                match prepared {
                    Ok((n, job)) => {
                        tx.commit_prepared(entry.endpoint, n, job);
                        entry.last_tx = Some(now);
                    }
                    Err(e) => self.drops.count_seal_error(e),
                }
            }
        }
    }

    /// `peer` says, over the control link, that our probe of `size` bytes arrived.
    pub fn handle_probe_ack(&mut self, now: Instant, peer: PeerId, size: u16) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.pmtu.handle_ack(usize::from(size));
        }
        self.pmtu_timeout(now);
    }

    /// The socket refused a datagram of `len` bytes to `to` as too large (`EMSGSIZE`):
    /// that path's limit drops below it at once and a new search starts.
    pub fn handle_send_too_big(&mut self, now: Instant, to: SocketAddr, len: usize) {
        for (peer, entry) in self.peers.iter_mut() {
            if entry.endpoint == to {
                entry.pmtu.handle_too_big(now, len);
                report_mtu(*peer, entry, self.config.mtu, &mut self.events);
            }
        }
    }

    /// The overlay MTU towards `peer` now (the configured one until measured).
    pub fn path_mtu(&self, peer: &PeerId) -> Option<u16> {
        let entry = self.peers.get(peer)?;
        Some(entry.pmtu.mtu().min(self.config.mtu))
    }

    /// Frames the data plane sends back to local containers (ICMP "too big" replies),
    /// for the TAP device. Call after each batch of local frames.
    pub fn poll_local_frames(&mut self, deliver: &mut dyn FnMut(&[u8])) {
        self.replies.drain(deliver);
    }

    /// Ends path MTU rounds that are over and reports changed limits.
    pub(super) fn pmtu_timeout(&mut self, now: Instant) {
        for (peer, entry) in self.peers.iter_mut() {
            entry.pmtu.handle_timeout(now);
            report_mtu(*peer, entry, self.config.mtu, &mut self.events);
        }
    }

    /// Whether `frame` fits in one datagram to `next_hop` (an unknown neighbour is the
    /// send path's business). A `relayed` frame (one that names its peers: it is for a
    /// peer beyond `next_hop`, or came from one) needs [`RELAY_OVERHEAD`] bytes more.
    pub(super) fn fits(&self, next_hop: &PeerId, frame: &[u8], relayed: bool) -> bool {
        let extra = if relayed { RELAY_OVERHEAD } else { 0 };
        self.peers
            .get(next_hop)
            .is_none_or(|e| frame.len() + extra <= e.pmtu.frame_limit())
    }

    /// The longest frame one datagram to `next_hop` carries (unlimited for an unknown
    /// neighbour: the send path counts it).
    pub(super) fn frame_limit(&self, next_hop: &PeerId, relayed: bool) -> usize {
        let extra = if relayed { RELAY_OVERHEAD } else { 0 };
        self.peers
            .get(next_hop)
            .map_or(usize::MAX, |e| e.pmtu.frame_limit().saturating_sub(extra))
    }

    /// A frame captured here was too large for `next_hop`: counted as `mtu`, and
    /// answered with an ICMP "too big" if it is IPv4 with DF or IPv6 (the builder
    /// refuses ICMP errors, non-first IPv4 fragments and group addresses).
    pub(super) fn refuse_too_big(&mut self, next_hop: &PeerId, frame: &[u8], relayed: bool) {
        self.drops.mtu += 1;
        let Some(mtu) = self.path_mtu(next_hop) else {
            return;
        };
        let extra = if relayed { RELAY_OVERHEAD as u16 } else { 0 };
        let mtu = mtu.saturating_sub(extra);
        self.replies.push(|out| too_big_reply(frame, mtu, out).ok());
    }

    /// A frame relayed from `back.src` (whose datagram came from the neighbour
    /// `back.from`) to `back.dst` did not fit `next_hop`: the ICMP "too big" reply
    /// (with `next_hop`'s MTU less [`RELAY_OVERHEAD`]) goes back to the sender's
    /// container through the sleeve, as a frame from `back.dst` (the peer the packet was
    /// for, as a relay forwards it), so that its MAC stays learnt where it is. Without
    /// it, packets between the two hops' limits would vanish with no signal. Returns
    /// whether a reply was sent.
    pub(super) fn answer_relayed_too_big(
        &mut self,
        now: Instant,
        back: RelayBack,
        next_hop: &PeerId,
        frame: &[u8],
        tx: &mut TxBuffer,
    ) -> bool {
        let Some(mtu) = self.path_mtu(next_hop) else {
            return false;
        };
        let mtu = mtu.saturating_sub(RELAY_OVERHEAD as u16);
        let mut out = [0u8; super::replies::SLOT_LEN];
        let Ok(len) = too_big_reply(frame, mtu, &mut out) else {
            return false;
        };
        let reply = &out[..len.min(out.len())];
        if back.dst == self.us || !self.fits(&back.from, reply, true) {
            return false;
        }
        self.send(now, back.from, back.src, back.dst, reply, tx);
        true
    }

    /// Acknowledges a probe: an authentic keepalive longer than a plain one.
    pub(super) fn ack_probe(&mut self, peer: PeerId, datagram_len: usize) {
        if datagram_len > MIN_DATAGRAM_LEN {
            let size = u16::try_from(datagram_len).unwrap_or(u16::MAX);
            self.events.push_back(Event::SendProbeAck { peer, size });
        }
    }
}

/// Where a relayed frame came from: the neighbour that sent its datagram, and the
/// peers its entry names.
#[derive(Debug, Clone, Copy)]
pub(super) struct RelayBack {
    /// The neighbour.
    pub(super) from: PeerId,
    /// The frame's source peer.
    pub(super) src: PeerId,
    /// The frame's destination peer.
    pub(super) dst: PeerId,
}

/// Emits [`Event::MtuChanged`] once a path is measured and whenever its MTU changes.
fn report_mtu(
    peer: PeerId,
    entry: &mut PeerEntry,
    max: u16,
    events: &mut std::collections::VecDeque<Event>,
) {
    if !entry.pmtu.is_measured() {
        return;
    }
    let mtu = entry.pmtu.mtu().min(max);
    if mtu != entry.reported_mtu {
        entry.reported_mtu = mtu;
        events.push_back(Event::MtuChanged { peer, mtu });
    }
}
