//! The overlay MTU the router applies to its interfaces.
//!
//! `--mtu` is the most the overlay offers. Path MTU discovery in the data plane measures
//! each neighbour's path; the narrowest measured path, if lower, becomes the *effective*
//! overlay MTU. It is applied to the weft bridge (the host's own traffic into the
//! overlay, `weft expose`) and to the veth pairs `weft attach` makes from then on.
//!
//! What is deliberately left alone:
//! - the TAP device and existing host-side veths. The kernel drops, silently, a frame
//!   larger than the MTU of the veth end or bridge port it crosses; a pod whose own end
//!   keeps the larger MTU would have its large frames discarded before they reached the
//!   router, which could then not answer with ICMP "too big". So they keep the
//!   configured MTU, and pods learn the narrower path from those ICMP replies.
//! - anything below 1280 bytes: Linux removes IPv6 from a link whose MTU drops below
//!   the IPv6 minimum. The interfaces stop at 1280; packets between the path's MTU and
//!   1280 get ICMP "too big" (IPv4 adapts; IPv6 cannot go below 1280).

use crate::config::{BRIDGE, MIN_MTU};
use datapath::netlink::Netlink;
use gossip::peer::PeerId;
use std::collections::HashMap;
use tokio::sync::watch;
use tracing::{info, warn};

/// Measured path MTUs and the MTU the interfaces get.
pub struct OverlayMtu {
    configured: u32,
    paths: HashMap<PeerId, u16>,
    link: watch::Sender<u32>,
}

impl OverlayMtu {
    /// Starts at the configured MTU; the receiver follows the interface MTU.
    pub fn new(configured: u32) -> (OverlayMtu, watch::Receiver<u32>) {
        let (link, rx) = watch::channel(configured);
        let mtu = OverlayMtu {
            configured,
            paths: HashMap::new(),
            link,
        };
        (mtu, rx)
    }

    /// The overlay MTU towards `peer`: measured, or the configured one until then.
    pub fn path(&self, peer: &PeerId) -> u32 {
        self.paths
            .get(peer)
            .map_or(self.configured, |&m| u32::from(m).min(self.configured))
    }

    /// The narrowest path, or the configured MTU.
    pub fn effective(&self) -> u32 {
        self.paths
            .values()
            .map(|&m| u32::from(m))
            .fold(self.configured, u32::min)
    }

    /// The MTU the interfaces get for `effective`.
    pub fn link_mtu(&self) -> u32 {
        self.effective().max(MIN_MTU).min(self.configured)
    }

    /// The path to `peer` measures `mtu`.
    pub fn set_path(&mut self, peer: PeerId, mtu: u16) {
        self.paths.insert(peer, mtu);
        self.publish();
    }

    /// `peer` is no longer a neighbour.
    pub fn remove(&mut self, peer: &PeerId) {
        if self.paths.remove(peer).is_some() {
            self.publish();
        }
    }

    fn publish(&self) {
        let link = self.link_mtu();
        if *self.link.borrow() != link {
            info!(
                overlay_mtu = self.effective(),
                link_mtu = link,
                "overlay MTU is now {} (narrowest measured path); bridge {BRIDGE} and new attachments use {link}",
                self.effective()
            );
            let _ = self.link.send(link);
        }
    }
}

/// Applies each new interface MTU to the bridge until the sender is gone.
pub async fn apply(mut link: watch::Receiver<u32>) {
    while link.changed().await.is_ok() {
        let mtu = *link.borrow_and_update();
        let result = match Netlink::new() {
            Ok(nl) => nl.set_mtu(BRIDGE, mtu).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => info!(mtu, "bridge {BRIDGE} MTU set to {mtu}"),
            Err(e) => warn!(mtu, "setting the MTU of bridge {BRIDGE} to {mtu}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowest_path_wins_but_links_stop_at_1280() {
        let (mut m, rx) = OverlayMtu::new(1377);
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        assert_eq!(
            (m.path(&a), m.effective(), m.link_mtu()),
            (1377, 1377, 1377)
        );
        m.set_path(a, 1392);
        assert_eq!(
            (m.path(&a), m.effective()),
            (1377, 1377),
            "never above --mtu"
        );
        m.set_path(b, 1300);
        assert_eq!(
            (m.path(&b), m.effective(), *rx.borrow()),
            (1300, 1300, 1300)
        );
        m.set_path(b, 1168);
        assert_eq!(
            (m.effective(), m.link_mtu(), *rx.borrow()),
            (1168, 1280, 1280)
        );
        m.remove(&b);
        assert_eq!((m.effective(), *rx.borrow()), (1377, 1377));
    }
}
