//! The peer-facing sockets on both IP families: the control links' TCP listener and
//! the sleeve's UDP socket, each one dual-stack IPv6 socket (`[::]:PORT` with
//! `IPV6_V6ONLY` off) where the kernel has IPv6, else IPv4 alone (`0.0.0.0:PORT`).
//!
//! A dual-stack socket reports an IPv4 peer as an IPv4-mapped IPv6 address
//! (`::ffff:198.18.0.1`). Every address that leaves this module's callers is made
//! [`canonical`] first, so an IPv4 peer has one spelling whichever socket saw it (rate
//! limits, targets, the topology and status all key on it).

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use tokio::net::{TcpListener, TcpSocket};
use tracing::info;

pub use datapath::udp::canonical;

/// Pending connections the listener's kernel queue holds (what `std` uses).
const BACKLOG: u32 = 1024;

/// Listens for control links on `port` of both families. The address returned is
/// the one bound, for messages.
pub fn tcp_listener(port: u16) -> io::Result<(TcpListener, SocketAddr)> {
    match dual_stack_tcp(port) {
        Ok(l) => Ok((l, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))),
        Err(e) if no_ipv6(&e) => {
            info!("no IPv6 on this host ({e}); control links on IPv4 only");
            let addr = SocketAddr::from(([0, 0, 0, 0], port));
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            Ok((socket.listen(BACKLOG)?, addr))
        }
        Err(e) => Err(e),
    }
}

fn dual_stack_tcp(port: u16) -> io::Result<TcpListener> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = TcpSocket::new_v6()?;
    setsockopt(&socket, sockopt::Ipv6V6Only, &false).map_err(io::Error::from)?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    socket.listen(BACKLOG)
}

/// The sleeve's UDP sockets: `count` of them on `port` of both families (blocking; the
/// caller sets their options), or, for port 0, on the port the first one got,
/// sharing it with `SO_REUSEPORT` when there are several: one per data-plane thread.
/// Returns them and whether they are dual-stack.
pub fn udp_sockets(port: u16, count: usize) -> io::Result<(Vec<std::net::UdpSocket>, bool)> {
    let reuse = count > 1;
    let (first, dual) = match datapath::udp::bind_dual_stack(port, reuse) {
        Ok(s) => (s, true),
        Err(e) if no_ipv6(&e) => {
            info!("no IPv6 on this host ({e}); the sleeve on IPv4 only");
            (datapath::udp::bind_v4(port, reuse)?, false)
        }
        Err(e) => return Err(e),
    };
    let port = first.local_addr()?.port();
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(if dual {
            datapath::udp::bind_dual_stack(port, true)?
        } else {
            datapath::udp::bind_v4(port, true)?
        });
    }
    Ok((sockets, dual))
}

/// Errors that mean "this kernel has no IPv6" (built without it, or `ipv6.disable=1`).
fn no_ipv6(e: &io::Error) -> bool {
    use nix::libc::{EADDRNOTAVAIL, EAFNOSUPPORT, EPROTONOSUPPORT};
    matches!(
        e.raw_os_error(),
        Some(EAFNOSUPPORT | EPROTONOSUPPORT | EADDRNOTAVAIL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both families reach the one listener, and the IPv4 peer's address it reports
    /// (once canonical) is plain IPv4.
    #[tokio::test]
    async fn one_listener_takes_both_families() {
        let (listener, bound) = tcp_listener(0).unwrap();
        let port = listener.local_addr().unwrap().port();
        let c4 = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (_s, from) = listener.accept().await.unwrap();
        assert_eq!(canonical(from), c4.local_addr().unwrap());
        if bound.is_ipv6() {
            let c6 = tokio::net::TcpStream::connect(("::1", port)).await;
            if let Ok(c6) = c6 {
                let (_s, from) = listener.accept().await.unwrap();
                assert_eq!(canonical(from), c6.local_addr().unwrap());
                assert!(canonical(from).is_ipv6());
            }
        }
    }
}
