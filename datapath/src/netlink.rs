//! Kernel network configuration through rtnetlink, laid out as rtnetlink is: `link`
//! (links, bridge ports, MTUs), `addr`, `route`, `vxlan`. Addresses with their
//! prefix are [`crate::cidr::LinkAddr`].
//!
//! Each method does one kernel operation and names its `ip` equivalent, so that what
//! the router changes can be reproduced and checked by hand. A [`Netlink`] talks to the
//! network namespace it was created in; to act inside another namespace, create one on
//! a thread that has entered it (see [`crate::netns`]).

mod addr;
mod link;
mod route;
mod vxlan;

pub use vxlan::VxlanFdbEntry;

use rtnetlink::Handle;

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
}
