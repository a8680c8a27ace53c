//! Links: lookup, bridges and their ports, veth pairs, moves between namespaces, MTU,
//! MAC and state (`ip link`).

use super::{op, refuse_ra, Error, Netlink, NoSuchLink};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth};
use std::os::fd::RawFd;

impl Netlink {
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

    pub(super) async fn set(
        &self,
        msg: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<(), Error> {
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
}

const fn libc_enodev() -> i32 {
    19
}
