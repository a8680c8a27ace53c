//! VXLAN devices and their forwarding entries (`ip link … type vxlan`, `bridge fdb`).

use super::{op, Error, Netlink};
use futures_util::TryStreamExt;
use rtnetlink::LinkVxlan;
use std::net::IpAddr;

/// A forwarding entry of a VXLAN device: inner MAC to underlay address.
pub type VxlanFdbEntry = crate::fastdp::desired::FdbEntry;

impl Netlink {
    /// Creates VXLAN device `name` (RFC 7348, UDP `port`, `vni`, learning on, DF set on
    /// the outer header, so that a path narrower than the MTU loses probes rather than
    /// fragmenting), with `mtu`, up, as a port of bridge `bridge_index`
    /// (`ip link add NAME type vxlan id VNI dstport PORT learning df set;
    /// ip link set NAME master BRIDGE mtu MTU up`). An existing device is replaced.
    pub async fn add_vxlan(
        &self,
        name: &str,
        vni: u32,
        port: u16,
        mtu: u32,
        bridge_index: u32,
    ) -> Result<(), Error> {
        self.delete_link(name).await?;
        self.handle
            .link()
            .add(
                LinkVxlan::new(name, vni)
                    .port(port)
                    .learning(true)
                    .df(rtnetlink::packet_route::link::VxlanDf::Set)
                    .build(),
            )
            .execute()
            .await
            .map_err(op(|| {
                format!("add {name} type vxlan id {vni} dstport {port}")
            }))?;
        self.enslave(name, bridge_index, mtu).await
    }

    /// The forwarding entries of VXLAN device `name` that have a destination address
    /// (`bridge fdb show dev NAME self`).
    pub async fn vxlan_fdb(&self, name: &str) -> Result<Vec<VxlanFdbEntry>, Error> {
        use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
        let index = self.index(name).await?;
        let mut dump = self
            .handle
            .neighbours()
            .get()
            .set_address_family(rtnetlink::packet_route::AddressFamily::Bridge)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(op(|| format!("fdb show dev {name}")))?
        {
            if msg.header.ifindex != index {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &msg.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                        let mut x = [0u8; 6];
                        x.copy_from_slice(m);
                        mac = Some(x);
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        dst = Some(IpAddr::V4(*ip))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                        dst = Some(IpAddr::V6(*ip))
                    }
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push(VxlanFdbEntry { mac, dst });
            }
        }
        Ok(out)
    }

    fn vxlan_fdb_message(
        index: u32,
        entry: &VxlanFdbEntry,
    ) -> rtnetlink::packet_route::neighbour::NeighbourMessage {
        use rtnetlink::packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        };
        let mut msg = NeighbourMessage::default();
        msg.header.family = rtnetlink::packet_route::AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(match entry.dst {
                IpAddr::V4(ip) => NeighbourAddress::Inet(ip),
                IpAddr::V6(ip) => NeighbourAddress::Inet6(ip),
            }));
        msg
    }

    /// Adds a permanent forwarding entry to VXLAN device `name`, next to any other for
    /// the same MAC (`bridge fdb append MAC dev NAME dst IP self permanent`).
    pub async fn vxlan_fdb_append(&self, name: &str, entry: &VxlanFdbEntry) -> Result<(), Error> {
        use futures_util::StreamExt;
        use rtnetlink::packet_core::{
            NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
        };
        let index = self.index(name).await?;
        let what = || {
            format!(
                "fdb append {:02x?} dev {name} dst {} self",
                entry.mac, entry.dst
            )
        };
        let mut req =
            NetlinkMessage::from(rtnetlink::packet_route::RouteNetlinkMessage::NewNeighbour(
                Self::vxlan_fdb_message(index, entry),
            ));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        let mut handle = self.handle.clone();
        let mut response = handle.request(req).map_err(op(what))?;
        while let Some(message) = response.next().await {
            if let NetlinkPayload::Error(err) = message.payload {
                return Err(op(what)(rtnetlink::Error::NetlinkError(err)));
            }
        }
        Ok(())
    }

    /// Deletes a forwarding entry from VXLAN device `name`
    /// (`bridge fdb del MAC dev NAME dst IP self`).
    pub async fn vxlan_fdb_del(&self, name: &str, entry: &VxlanFdbEntry) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.handle
            .neighbours()
            .del(Self::vxlan_fdb_message(index, entry))
            .execute()
            .await
            .map_err(op(|| {
                format!(
                    "fdb del {:02x?} dev {name} dst {} self",
                    entry.mac, entry.dst
                )
            }))
    }
}
