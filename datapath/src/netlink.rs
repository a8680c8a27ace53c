//! Kernel network configuration through rtnetlink: links, bridge ports, addresses,
//! routes and MTUs.
//!
//! Each method does one kernel operation and names its `ip` equivalent, so that what
//! the router changes can be reproduced and checked by hand. A [`Netlink`] talks to the
//! network namespace it was created in; to act inside another namespace, create one on
//! a thread that has entered it (see [`crate::netns`]).

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};
use std::net::IpAddr;
use std::os::fd::RawFd;

/// A failed netlink operation.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetlinkError {
    /// What was attempted, e.g. `add bridge weft`.
    pub op: String,
    /// The kernel's answer.
    #[source]
    pub source: rtnetlink::Error,
}

/// The operation failed because the link does not exist.
#[derive(Debug, thiserror::Error)]
#[error("no network interface named {0:?}")]
pub struct NoSuchLink(pub String);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A link is missing.
    #[error(transparent)]
    NoSuchLink(#[from] NoSuchLink),
    /// Opening the netlink socket failed.
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    /// A per-interface sysctl could not be written.
    #[error("{what}: {source}")]
    Sysctl {
        /// What was being set.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// True when the kernel answered EEXIST (the address, route or link is already there).
    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Netlink(NetlinkError { source: rtnetlink::Error::NetlinkError(m), .. }) if m.raw_code() == -17)
    }
}

fn op(what: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink(NetlinkError { op: what(), source })
}

/// Sets `accept_ra 0` on `name` (see [`crate::sysctl`]). Where `/proc/sys` is read-only
/// (a container without privileges, as a Kubernetes DaemonSet runs) that cannot be
/// done: it is logged, and the host keeps the kernel's setting.
fn refuse_ra(name: &str) -> Result<(), Error> {
    match crate::sysctl::refuse_router_advertisements(name) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            tracing::warn!(
                "cannot set accept_ra 0 on {name} ({e}): /proc/sys is read-only here; set \
                 net.ipv6.conf.{name}.accept_ra=0 on the host, or pods could configure its \
                 IPv6 with router advertisements"
            );
            Ok(())
        }
        other => other.map_err(|source| Error::Sysctl {
            what: format!("set accept_ra 0 on {name}"),
            source,
        }),
    }
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddr {
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// A CIDR such as `10.32.1.2/12` is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX, like 10.32.1.2/12 or fd00::2/64")]
pub struct BadCidr(pub String);

impl std::str::FromStr for LinkAddr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(LinkAddr { ip, prefix })
    }
}

impl LinkAddr {
    /// True for link-local addresses (fe80::/10, 169.254.0.0/16), which the kernel
    /// adds by itself and which are never part of the overlay.
    pub fn is_link_local(&self) -> bool {
        match self.ip {
            IpAddr::V6(ip) => ip.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(ip) => ip.is_link_local(),
        }
    }
}

impl std::fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// A netlink connection in the current network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; its driver runs on the current tokio runtime.
    pub fn new() -> Result<Netlink, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The link called `name`, if it exists (`ip link show NAME`).
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>, Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            // The kernel answers ENODEV for a name it does not know.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
            Err(source) => Err(op(|| format!("look up link {name}"))(source)),
        }
    }

    /// The index of link `name`, or [`NoSuchLink`].
    pub async fn index(&self, name: &str) -> Result<u32, Error> {
        self.link(name)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| NoSuchLink(name.to_string()).into())
    }

    /// Names of the ports of bridge `bridge` (`ip link show master BRIDGE`); empty if the
    /// bridge does not exist.
    pub async fn ports(&self, bridge: &str) -> Result<Vec<String>, Error> {
        let Some(bridge_index) = self.link(bridge).await?.map(|l| l.header.index) else {
            return Ok(Vec::new());
        };
        let mut links = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(op(|| format!("link show master {bridge}")))?
        {
            let attrs = &link.attributes;
            if attrs.contains(&LinkAttribute::Controller(bridge_index)) {
                out.extend(attrs.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }));
            }
        }
        Ok(out)
    }

    /// Creates bridge `name` if missing, sets its MTU and brings it up
    /// (`ip link add NAME type bridge; ip link set NAME mtu MTU up`). Returns its index.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32, Error> {
        if self.link(name).await?.is_none() {
            self.handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(op(|| format!("add bridge {name}")))?;
        }
        let index = self.index(name).await?;
        // Pods must not configure the host through router advertisements.
        refuse_ra(name)?;
        self.set(
            LinkUnspec::new_with_index(index).mtu(mtu).up().build(),
            || format!("set bridge {name} mtu {mtu} up"),
        )
        .await?;
        Ok(index)
    }

    async fn set(&self, msg: LinkMessage, what: impl FnOnce() -> String) -> Result<(), Error> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(op(what))
    }

    /// Makes link `name` a port of bridge `bridge_index`, sets its MTU and brings it up
    /// (`ip link set NAME master BRIDGE mtu MTU up`).
    /// Ports refuse router advertisements too (`accept_ra 0`).
    pub async fn enslave(&self, name: &str, bridge_index: u32, mtu: u32) -> Result<(), Error> {
        let index = self.index(name).await?;
        refuse_ra(name)?;
        self.set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .mtu(mtu)
                .up()
                .build(),
            || format!("set {name} master {bridge_index} mtu {mtu} up"),
        )
        .await
    }

    /// Sets the MTU of link `name` (`ip link set NAME mtu MTU`).
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.set(LinkUnspec::new_with_index(index).mtu(mtu).build(), || {
            format!("set {name} mtu {mtu}")
        })
        .await
    }

    /// Brings link `name` up (`ip link set NAME up`).
    pub async fn set_up(&self, name: &str) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.set(LinkUnspec::new_with_index(index).up().build(), || {
            format!("set {name} up")
        })
        .await
    }

    /// Creates a veth pair (`ip link add NAME type veth peer name PEER`).
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<(), Error> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(op(|| format!("add veth {name} peer {peer}")))
    }

    /// Moves link `name` into the namespace open at `netns_fd`, renaming it to `new_name`
    /// (`ip link set NAME netns NS name NEW`).
    pub async fn move_to_netns(
        &self,
        name: &str,
        netns_fd: RawFd,
        new_name: &str,
    ) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(netns_fd)
                .name(new_name.to_string())
                .build(),
            || format!("set {name} netns {netns_fd} name {new_name}"),
        )
        .await
    }

    /// Deletes link `name` if it exists (`ip link del NAME`); true if it existed.
    pub async fn delete_link(&self, name: &str) -> Result<bool, Error> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        self.handle
            .link()
            .del(link.header.index)
            .execute()
            .await
            .map_err(op(|| format!("del link {name}")))?;
        Ok(true)
    }

    /// The MAC address of link `name`.
    pub async fn mac(&self, name: &str) -> Result<Option<[u8; 6]>, Error> {
        let Some(link) = self.link(name).await? else {
            return Err(NoSuchLink(name.to_string()).into());
        };
        Ok(link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                let mut out = [0u8; 6];
                out.copy_from_slice(mac);
                Some(out)
            }
            _ => None,
        }))
    }

    /// Adds `ip/prefix` to link `name` (`ip addr add IP/PREFIX dev NAME`).
    pub async fn add_address(&self, name: &str, addr: LinkAddr) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.handle
            .address()
            .add(index, addr.ip, addr.prefix)
            .execute()
            .await
            .map_err(op(|| {
                format!("addr add {}/{} dev {name}", addr.ip, addr.prefix)
            }))
    }

    /// The addresses on link `name` (`ip addr show dev NAME`).
    pub async fn addresses(&self, name: &str) -> Result<Vec<LinkAddr>, Error> {
        let index = self.index(name).await?;
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(op(|| format!("addr show dev {name}")))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    out.push(LinkAddr {
                        ip: *ip,
                        prefix: msg.header.prefix_len,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes `ip/prefix` from link `name` (`ip addr del IP/PREFIX dev NAME`); true if
    /// it was there.
    pub async fn del_address(&self, name: &str, addr: LinkAddr) -> Result<bool, Error> {
        let index = self.index(name).await?;
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr.ip)
            .set_prefix_length_filter(addr.prefix)
            .execute();
        let mut found = false;
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(op(|| format!("addr show dev {name}")))?
        {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(op(|| {
                    format!("addr del {}/{} dev {name}", addr.ip, addr.prefix)
                }))?;
            found = true;
        }
        Ok(found)
    }

    /// Adds a route to `dest/prefix` out of link `name`, on link (no gateway)
    /// (`ip route add DEST/PREFIX dev NAME`).
    pub async fn add_link_route(&self, name: &str, dest: LinkAddr) -> Result<(), Error> {
        let index = self.index(name).await?;
        let what = || format!("route add {}/{} dev {name}", dest.ip, dest.prefix);
        let result = match dest.ip {
            IpAddr::V4(ip) => {
                let msg = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
            IpAddr::V6(ip) => {
                let msg = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
        };
        result.map_err(op(what))
    }

    /// Turns hairpin mode on or off on bridge port `name`
    /// (`ip link set NAME type bridge_slave hairpin on|off`).
    pub async fn set_hairpin(&self, name: &str, on: bool) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(on).build())
            .execute()
            .await
            .map_err(op(|| format!("set {name} type bridge_slave hairpin {on}")))
    }

    /// Sets the MAC address of link `name` (`ip link set NAME address MAC`).
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
            || format!("set {name} address {mac:02x?}"),
        )
        .await
    }

    /// The MTU of link `name` (`ip link show NAME`).
    pub async fn mtu(&self, name: &str) -> Result<u32, Error> {
        let Some(link) = self.link(name).await? else {
            return Err(NoSuchLink(name.to_string()).into());
        };
        Ok(link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500))
    }

    /// Adds a route to `dest/prefix` via gateway `gw` out of link `name`
    /// (`ip route add DEST/PREFIX via GW dev NAME`). The gateway must be of the same
    /// family as the destination.
    pub async fn add_gateway_route(
        &self,
        name: &str,
        dest: LinkAddr,
        gw: IpAddr,
    ) -> Result<(), Error> {
        let index = self.index(name).await?;
        let what = || format!("route add {dest} via {gw} dev {name}");
        let result = match (dest.ip, gw) {
            (IpAddr::V4(ip), IpAddr::V4(gw)) => {
                let msg = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .gateway(gw)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
            (IpAddr::V6(ip), IpAddr::V6(gw)) => {
                let msg = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .gateway(gw)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
            _ => {
                return Err(op(what)(rtnetlink::Error::InvalidIp(
                    gw.to_string().into_bytes(),
                )))
            }
        };
        result.map_err(op(what))
    }
}

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

    /// Turns port isolation on or off on bridge port `name`: isolated ports never
    /// exchange frames with each other (`ip link set NAME type bridge_slave isolated on`).
    pub async fn set_isolated(&self, name: &str, on: bool) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).isolated(on).build())
            .execute()
            .await
            .map_err(op(|| format!("set {name} type bridge_slave isolated {on}")))
    }

    /// Forgets the MACs the bridge learnt on port `name`
    /// (`ip link set NAME type bridge_slave fdb_flush`).
    pub async fn flush_port(&self, name: &str) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).fdb_flush().build())
            .execute()
            .await
            .map_err(op(|| format!("set {name} type bridge_slave fdb_flush")))
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

impl Netlink {
    /// The main table's routes of both families (`ip route show; ip -6 route show`):
    /// destination (with its prefix length) and gateway, if any.
    pub async fn routes(&self) -> Result<Vec<(LinkAddr, Option<IpAddr>)>, Error> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let v4 = RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
        let v6 = RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
        let mut out = Vec::new();
        for (query, unspecified) in [(v4, IpAddr::from([0u8; 4])), (v6, IpAddr::from([0u16; 8]))] {
            let mut stream = self.handle.route().get(query).execute();
            while let Some(msg) = stream
                .try_next()
                .await
                .map_err(op(|| "route show".to_string()))?
            {
                if msg.header.table != 254 && msg.header.table != 0 {
                    continue; // not the main table (local, ...)
                }
                let addr = |a: &RouteAddress| match a {
                    RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
                    RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
                    _ => None,
                };
                let mut dst = unspecified;
                let mut gw = None;
                for attr in &msg.attributes {
                    match attr {
                        RouteAttribute::Destination(a) => dst = addr(a).unwrap_or(dst),
                        RouteAttribute::Gateway(a) => gw = addr(a),
                        _ => {}
                    }
                }
                let prefix = msg.header.destination_prefix_length;
                out.push((LinkAddr { ip: dst, prefix }, gw));
            }
        }
        Ok(out)
    }
}

const fn libc_enodev() -> i32 {
    19
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_print() {
        let a: LinkAddr = "10.32.1.2/12".parse().unwrap();
        assert_eq!(a.prefix, 12);
        assert_eq!(a.to_string(), "10.32.1.2/12");
        assert_eq!("fd00::2/64".parse::<LinkAddr>().unwrap().prefix, 64);
        for bad in [
            "10.32.1.2",
            "10.32.1.2/33",
            "fd00::1/129",
            "x/1",
            "10.32.1.2/",
            "/12",
        ] {
            assert!(bad.parse::<LinkAddr>().is_err(), "{bad}");
        }
    }
}
