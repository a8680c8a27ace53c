//! The forwarding decision: where an Ethernet frame goes next. Pure, sans-IO.
//!
//! A frame enters either from our bridge (captured on the TAP) or from a neighbour peer
//! (opened from a sleeve datagram, with the `src_peer`/`dst_peer` it carried). The
//! [`Switch`] learns its source MAC, then decides:
//!
//! | entered from | destination | decision |
//! |---|---|---|
//! | bridge | MAC known behind peer X | [`Forward::Unicast`] to the next hop towards X, `dst_peer` = X |
//! | bridge | unknown unicast, broadcast, multicast | [`Forward::Flood`] along *our* broadcast tree, `dst_peer` = broadcast |
//! | bridge | MAC known here | dropped: the bridge has delivered it already |
//! | peer, from S | `dst_peer` = us | [`Forward::Deliver`] to the bridge |
//! | peer, from S | `dst_peer` = another peer D | [`Forward::Unicast`] relayed towards D |
//! | peer, from S | `dst_peer` = broadcast | delivered here *and* flooded along S's tree |
//!
//! A frame from the bridge whose source MAC is known behind another peer is dropped and
//! counted ([`DropReason::SpoofedLocalSource`]): a local container must not impersonate a
//! remote one. Nor may a remote peer claim a local container's MAC: a frame from a peer
//! whose source MAC was seen on our bridge within [`LOCAL_HOLD`] is dropped and counted
//! ([`DropReason::SpoofedRemoteSource`]), so the local container keeps its traffic; a
//! MAC silent here for longer may move (a container that moved to another host). Flooding
//! never sends a frame back to the neighbour it came from, and a
//! frame that comes back to its source peer is a loop.

use crate::mac_table::{is_group, Mac, MacTable, MacTableConfig, Owner};
use crate::sleeve::BROADCAST;
use gossip::peer::PeerId;
use gossip::routes::Routes;
use smoltcp::wire::EthernetFrame;
use std::time::{Duration, Instant};

/// How long after a MAC was last seen on our bridge no peer may claim it.
pub const LOCAL_HOLD: Duration = Duration::from_secs(30);

/// The routes the switch needs; the router implements it over gossip's [`Routes`].
pub trait RouteView {
    /// The neighbour to send to for `dest`, or `None` if unreachable (or `dest` is us).
    fn unicast_next_hop(&self, dest: &PeerId) -> Option<PeerId>;
    /// Our children in `source`'s broadcast tree: where to relay its broadcasts.
    fn broadcast_next_hops(&self, source: &PeerId) -> &[PeerId];
    /// Whether neighbour `from` may hand us a frame that entered the overlay at `source`
    /// (it lies one hop closer to `source` than we do).
    fn may_relay(&self, source: &PeerId, from: &PeerId) -> bool;
}

impl RouteView for Routes {
    fn unicast_next_hop(&self, dest: &PeerId) -> Option<PeerId> {
        self.unicast(dest)
    }

    fn broadcast_next_hops(&self, source: &PeerId) -> &[PeerId] {
        Routes::broadcast_next_hops(self, source)
    }

    fn may_relay(&self, source: &PeerId, from: &PeerId) -> bool {
        Routes::may_relay(self, source, from)
    }
}

/// Where a frame entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// Captured from our bridge.
    Local,
    /// Received from neighbour `from`, carrying the peers written by its source.
    Peer {
        /// The neighbour whose datagram carried it.
        from: PeerId,
        /// The peer where the frame entered the overlay.
        src_peer: PeerId,
        /// The peer it is for, or [`BROADCAST`].
        dst_peer: PeerId,
    },
}

/// Why a frame was dropped; the router counts each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or a group source address.
    Malformed,
    /// Captured locally with a source MAC that lives behind another peer.
    SpoofedLocalSource,
    /// Received from a peer with a source MAC seen on our bridge within [`LOCAL_HOLD`].
    SpoofedRemoteSource,
    /// Relayed by a neighbour that is not on a path from its `src_peer` (forged or stale).
    WrongRelay,
    /// No route to the destination peer.
    NoRoute,
    /// The frame came back to its source, or would go back where it came from.
    Loop,
    /// Captured locally for a local MAC: the bridge has delivered it (not an error).
    LocalDestination,
}

/// The neighbours a flooded frame goes to: a tree's children, less the one it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHops<'r> {
    hops: &'r [PeerId],
    except: Option<PeerId>,
    us: PeerId,
}

impl<'r> NextHops<'r> {
    /// The neighbours to send to, in tree order.
    pub fn iter(&self) -> impl Iterator<Item = PeerId> + 'r {
        let (except, us) = (self.except, self.us);
        self.hops
            .iter()
            .copied()
            .filter(move |h| Some(*h) != except && *h != us)
    }

    /// Whether there is no neighbour to send to.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward<'r> {
    /// Write it to our bridge.
    Deliver,
    /// Seal it to `next_hop` with `dst_peer` (and the frame's `src_peer`: us if captured).
    Unicast {
        /// The neighbour to send the datagram to.
        next_hop: PeerId,
        /// The peer the frame is for.
        dst_peer: PeerId,
    },
    /// Seal it to each of `next_hops` with `dst_peer` = [`BROADCAST`], and deliver it to
    /// our bridge too if `deliver_locally`.
    Flood {
        /// The neighbours to send to.
        next_hops: NextHops<'r>,
        /// Whether to write it to our bridge as well.
        deliver_locally: bool,
    },
    /// Drop it, and count it under the reason.
    Drop(DropReason),
}

/// The switch of one router: our id and the MAC table.
#[derive(Debug, Clone)]
pub struct Switch {
    us: PeerId,
    macs: MacTable,
}

impl Switch {
    /// A switch for peer `us` with an empty MAC table.
    pub fn new(us: PeerId, config: MacTableConfig) -> Switch {
        Switch {
            us,
            macs: MacTable::new(config),
        }
    }

    /// The MAC table (for status, and for expiry at the router's timer).
    pub fn macs(&mut self) -> &mut MacTable {
        &mut self.macs
    }

    /// How many MAC addresses are learnt.
    pub fn mac_len(&self) -> usize {
        self.macs.len()
    }

    /// Decides where `frame` goes, learning its source MAC on the way.
    pub fn forward<'r, R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        frame: &[u8],
        ingress: Ingress,
        routes: &'r R,
    ) -> Forward<'r> {
        let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
            return Forward::Drop(DropReason::Malformed);
        };
        let src: Mac = ethernet.src_addr().0;
        let dst: Mac = ethernet.dst_addr().0;
        if is_group(&src) {
            return Forward::Drop(DropReason::Malformed);
        }
        match ingress {
            Ingress::Local => self.captured(now, src, dst, routes),
            Ingress::Peer {
                from,
                src_peer,
                dst_peer,
            } => self.received(now, src, from, src_peer, dst_peer, routes),
        }
    }

    fn captured<'r, R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        src: Mac,
        dst: Mac,
        routes: &'r R,
    ) -> Forward<'r> {
        if let Some(Owner::Peer(_)) = self.macs.lookup(now, &src) {
            return Forward::Drop(DropReason::SpoofedLocalSource);
        }
        self.macs.learn(now, src, Owner::Local);
        let owner = if is_group(&dst) {
            None
        } else {
            self.macs.lookup(now, &dst)
        };
        match owner {
            Some(Owner::Local) => Forward::Drop(DropReason::LocalDestination),
            Some(Owner::Peer(peer)) => self.unicast(peer, None, routes),
            None => Forward::Flood {
                next_hops: self.tree(&self.us, None, routes),
                deliver_locally: false,
            },
        }
    }

    fn received<'r, R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        src: Mac,
        from: PeerId,
        src_peer: PeerId,
        dst_peer: PeerId,
        routes: &'r R,
    ) -> Forward<'r> {
        if src_peer == self.us || src_peer == BROADCAST {
            return Forward::Drop(DropReason::Loop);
        }
        if src_peer != from && !routes.may_relay(&src_peer, &from) {
            return Forward::Drop(DropReason::WrongRelay);
        }
        if self
            .macs
            .local_seen(&src)
            .is_some_and(|seen| now.saturating_duration_since(seen) < LOCAL_HOLD)
        {
            return Forward::Drop(DropReason::SpoofedRemoteSource);
        }
        self.macs.learn(now, src, Owner::Peer(src_peer));
        if dst_peer == BROADCAST {
            Forward::Flood {
                next_hops: self.tree(&src_peer, Some(from), routes),
                deliver_locally: true,
            }
        } else if dst_peer == self.us {
            Forward::Deliver
        } else {
            self.unicast(dst_peer, Some(from), routes)
        }
    }

    /// Unicast towards `dst_peer`, never back to `came_from`.
    fn unicast<'r, R: RouteView + ?Sized>(
        &self,
        dst_peer: PeerId,
        came_from: Option<PeerId>,
        routes: &R,
    ) -> Forward<'r> {
        match routes.unicast_next_hop(&dst_peer) {
            None => Forward::Drop(DropReason::NoRoute),
            Some(hop) if Some(hop) == came_from || hop == self.us => {
                Forward::Drop(DropReason::Loop)
            }
            Some(next_hop) => Forward::Unicast { next_hop, dst_peer },
        }
    }

    /// Our children in `source`'s broadcast tree, less `came_from`.
    fn tree<'r, R: RouteView + ?Sized>(
        &self,
        source: &PeerId,
        came_from: Option<PeerId>,
        routes: &'r R,
    ) -> NextHops<'r> {
        NextHops {
            hops: routes.broadcast_next_hops(source),
            except: came_from,
            us: self.us,
        }
    }
}

#[cfg(test)]
mod tests;
