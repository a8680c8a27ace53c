//! The router's application gossip channels: IPAM ([`IPAM_CHANNEL`]) and the data
//! plane's messages ([`SLEEVE_CHANNEL`]).
//!
//! The owner task holds them, uses their concrete types between inputs (IPAM requests,
//! the sleeve's inbox), and lends them to the node, as a [`Channels`], for each input
//! that may reach them.

use crate::ipam::{Ipam, IPAM_CHANNEL};
use crate::sleeve_channel::{SleeveChannel, SLEEVE_CHANNEL};
use gossip::channel::{Channels, GossipChannel};

/// The channels of one router.
pub struct RouterChannels {
    /// IPAM.
    pub ipam: Box<Ipam>,
    /// The data plane's messages to and from neighbours.
    pub sleeve: SleeveChannel,
}

impl RouterChannels {
    /// The channels of a router with this IPAM.
    pub fn new(ipam: Box<Ipam>) -> RouterChannels {
        RouterChannels {
            ipam,
            sleeve: SleeveChannel::default(),
        }
    }
}

impl Channels for RouterChannels {
    fn names(&self) -> &'static [&'static str] {
        &[IPAM_CHANNEL, SLEEVE_CHANNEL]
    }

    fn get(&self, name: &str) -> Option<&dyn GossipChannel> {
        match name {
            IPAM_CHANNEL => Some(&*self.ipam),
            SLEEVE_CHANNEL => Some(&self.sleeve),
            _ => None,
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut dyn GossipChannel> {
        match name {
            IPAM_CHANNEL => Some(&mut *self.ipam),
            SLEEVE_CHANNEL => Some(&mut self.sleeve),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Cidr, InitMode, IpamConfig};
    use gossip::peer::PeerId;
    use std::time::Instant;

    #[test]
    fn each_name_finds_its_channel() {
        let config = IpamConfig::new(Cidr::default_range(), InitMode::Observer);
        let ipam = Ipam::new(PeerId([1; 16]), config, Instant::now(), 1);
        let mut channels = RouterChannels::new(Box::new(ipam));
        for name in channels.names() {
            assert!(channels.get(name).is_some(), "{name}");
            assert!(channels.get_mut(name).is_some(), "{name}");
        }
        assert!(channels.get("topology").is_none());
        assert_eq!(channels.names(), &["ipam", "sleeve"]);
    }
}
