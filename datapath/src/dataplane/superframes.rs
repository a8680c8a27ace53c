//! Frames read from a TAP device with a `virtio_net_hdr`: checked, checksums
//! completed, and TCP or UDP superframes cut into segments that fit the next hop's
//! path, each written straight into the transmit buffer ([`Session::write_with`]) and sealed there.
//!
//! A superframe is switched once, on its Ethernet header (every segment has the same);
//! its segments take the path MTU of the next hop into account, so a path narrower
//! than the sender's TCP segment size gets smaller segments rather than ICMP replies.
//! A UDP superframe's segments are the pod's own datagrams and are never cut smaller:
//! one that does not fit the path is dropped and counted (`drops_mtu`).
//! Segments of a superframe each fill a datagram of their own, and datagrams of equal
//! length for one peer leave in one GSO call.
//!
//! [`Session::write_with`]: crate::sleeve::Session::write_with

use super::{is_probe, seal_stage, Dataplane, TxBuffer};
use crate::offload::segment::{prepare, Prepared, Superframe};
use crate::offload::vnet::{Packet, Repr, VNET_HDR_LEN};
use crate::sleeve::codec::{SealError, BROADCAST};
use crate::sleeve::datagram_len;
use crate::switch::{Forward, Ingress, RouteView};
use gossip::peer::PeerId;
use std::time::Instant;

impl Dataplane {
    /// What a read from the TAP device returned: with `vnet_hdr`, a `virtio_net_hdr`
    /// and then the frame (or superframe); without, a plain frame. Malformed headers
    /// are dropped and counted as `offload_malformed`.
    pub fn handle_tap_read<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        read: &mut [u8],
        vnet_hdr: bool,
        routes: &R,
        tx: &mut TxBuffer,
    ) {
        if !vnet_hdr {
            return self.handle_local_frame(now, read, routes, tx);
        }
        let Ok(packet) = Packet::new_checked(&*read) else {
            self.drops.offload_malformed += 1;
            return;
        };
        let vnet = Repr::parse(&packet);
        let frame = &mut read[VNET_HDR_LEN..];
        match prepare(&vnet, frame) {
            Ok(Prepared::Frame) => self.handle_local_frame(now, frame, routes, tx),
            Ok(Prepared::Superframe { layout, gso_size }) => {
                let sf = Superframe::new(frame, layout, gso_size);
                self.handle_superframe(now, &sf, routes, tx);
            }
            Err(_) => self.drops.offload_malformed += 1,
        }
    }

    fn handle_superframe<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        sf: &Superframe<'_>,
        routes: &R,
        tx: &mut TxBuffer,
    ) {
        if is_probe(sf.frame()) {
            return;
        }
        self.superframes += 1;
        match self.forward(now, sf.frame(), Ingress::Local, routes) {
            Forward::Unicast { next_hop, dst_peer }
                if next_hop == dst_peer && self.fastdp.contains(&dst_peer) => {}
            Forward::Unicast { next_hop, dst_peer } => {
                let relayed = dst_peer != next_hop;
                match sf.mss_for(self.frame_limit(&next_hop, relayed)) {
                    Some(mss) => self.send_segments(now, next_hop, dst_peer, sf, mss, tx),
                    None => self.drops.mtu += 1,
                }
            }
            Forward::Flood { next_hops, .. } => {
                // Rare (a TCP flow to an unknown MAC): each segment goes the ordinary way.
                let mut scratch = std::mem::take(&mut self.scratch);
                for hop in next_hops.iter() {
                    if !self.flood_relay && self.fastdp.contains(&hop) {
                        continue;
                    }
                    let Some(mss) = sf.mss_for(self.frame_limit(&hop, false)) else {
                        self.drops.mtu += 1;
                        continue;
                    };
                    for i in 0..sf.count(mss) {
                        let n = sf.write_segment(i, mss, &mut scratch);
                        self.send(now, hop, BROADCAST, self.us, &scratch[..n], tx);
                    }
                }
                self.scratch = scratch;
            }
            Forward::Deliver => {}
            Forward::Drop(reason) => self.drops.count(reason),
        }
    }

    /// Seals `sf`'s segments of `mss` payload bytes for `next_hop`, one per datagram,
    /// after whatever was staged for it (so the flow keeps its order).
    fn send_segments(
        &mut self,
        now: Instant,
        next_hop: PeerId,
        dst: PeerId,
        sf: &Superframe<'_>,
        mss: usize,
        tx: &mut TxBuffer,
    ) {
        let Some(entry) = self.peers.get_mut(&next_hop) else {
            self.drops.no_route += 1;
            return;
        };
        if !entry.session.can_send() {
            self.drops.count_seal_error(SealError::NoKey);
            return;
        }
        if entry.fallback.is_active() {
            // TCP fallback: each segment goes the ordinary way, into the control link.
            let mut scratch = std::mem::take(&mut self.scratch);
            for i in 0..sf.count(mss) {
                let n = sf.write_segment(i, mss, &mut scratch);
                self.send(now, next_hop, dst, self.us, &scratch[..n], tx);
            }
            self.scratch = scratch;
            return;
        }
        seal_stage(next_hop, entry, tx, &mut self.tcp_out, &mut self.drops);
        let ends = entry.session.seal_ends();
        for i in 0..sf.count(mss) {
            let len = sf.segment_len(i, mss);
            let needed = datagram_len(ends.entry_len_for(dst, self.us, len));
            let Some(slot) = tx.slot(needed) else {
                self.drops.tx_full += 1;
                return;
            };
            let prepared = entry
                .session
                .write_with(slot, dst, self.us, len, |out| {
                    sf.write_segment(i, mss, out);
                })
                .and_then(|inner| entry.session.prepare_in_place(slot, inner));
            match prepared {
                Ok((n, job)) => {
                    tx.commit_prepared(entry.endpoint, n, job);
                    entry.last_tx = Some(now);
                    entry.counters.tx_frames += 1;
                    entry.counters.tx_bytes += len as u64;
                    entry.session.note_frames();
                }
                Err(e) => {
                    self.drops.count_seal_error(e);
                    return;
                }
            }
        }
    }
}
