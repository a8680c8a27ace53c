//! The sleeve's UDP socket, with the kernel's batching: UDP GSO to send a run of
//! datagrams for one peer in one call, and UDP GRO to receive a run in one call.
//!
//! With `UDP_SEGMENT` the kernel takes one buffer holding several datagrams of one size
//! (the last may be shorter) and sends them as separate datagrams, cutting them as late
//! as it can (in the NIC, or not at all across veths and bridges). With `UDP_GRO` the
//! receiving socket gets such a run back as one buffer and the segment size in a control
//! message. A kernel or device without them makes the first such call fail; the socket
//! then falls back to one datagram per call, logs it once, and keeps working.
//!
//! All calls are non-blocking (`try_*`); the data-plane thread that owns the socket
//! waits on it itself (`poll(2)` on [`SleeveSocket::as_fd`]), with no reactor between.
//!
//! The socket may be dual-stack (IPv6 with `IPV6_V6ONLY` off): IPv4 peers then appear
//! to the kernel as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`). This module keeps
//! that out of sight: every address it returns is canonical (an IPv4 peer is a
//! `SocketAddr::V4`), and an IPv4 destination is mapped on the way out ([`wire_addr`]).

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use tracing::{info, warn};

/// The most datagrams handed to the kernel in one GSO call.
pub const GSO_MAX_SEGMENTS: usize = 64;
/// The most bytes handed to the kernel in one GSO call (an IPv4 datagram's limit, less
/// headers, with room to spare).
pub const GSO_MAX_BYTES: usize = 65_000;

/// A received run of datagrams: `len` bytes from `from`, cut every `segment` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes received in all.
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// The length of each datagram but the last (the whole length if one datagram);
    /// never zero, even for an empty datagram.
    pub segment: usize,
}

/// The sleeve socket.
pub struct SleeveSocket {
    udp: UdpSocket,
    /// The socket is IPv6 (so dual-stack, or IPv6 only): IPv4 destinations are mapped.
    v6: bool,
    gso: bool,
    gso_failures: u32,
    gro: bool,
    cmsg: Vec<u8>,
}

/// GSO calls refused as unsupported before the socket stops trying.
const GSO_FAILURES_TO_GIVE_UP: u32 = 8;

impl SleeveSocket {
    /// Wraps a bound socket, makes it non-blocking, and turns GRO on where the kernel
    /// has it.
    pub fn new(udp: UdpSocket) -> io::Result<SleeveSocket> {
        udp.set_nonblocking(true)?;
        let gro = setsockopt(&udp, sockopt::UdpGroSegment, &true).is_ok();
        if !gro {
            info!("UDP GRO is not available; receiving one datagram per call");
        }
        let v6 = udp.local_addr().is_ok_and(|a| a.is_ipv6());
        Ok(SleeveSocket {
            udp,
            v6,
            gso: true,
            gso_failures: 0,
            gro,
            cmsg: nix::cmsg_space!(i32),
        })
    }

    /// Whether runs are sent with GSO.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Receives the next datagram or run of datagrams into `buf` without waiting.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        if !self.gro {
            let (len, from) = self.udp.recv_from(buf)?;
            return Ok(Received {
                len,
                from: canonical(from),
                segment: len.max(1),
            });
        }
        let fd = self.udp.as_raw_fd();
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut self.cmsg), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let len = msg.bytes;
        let mut segment = len.max(1);
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::UdpGroSegments(size) = c {
                    segment = usize::try_from(size).unwrap_or(len).clamp(1, len.max(1));
                }
            }
        }
        let from = msg
            .address
            .as_ref()
            .and_then(to_socket_addr)
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        Ok(Received { len, from, segment })
    }

    /// Sends `count` datagrams of `segment` bytes each (the last may be shorter), back to
    /// back in `bytes`, to `to`, without waiting. Returns how many left: `WouldBlock`
    /// (or `Ok(0)`) means none did and the caller should wait for the socket; any other
    /// error means the first one was refused.
    pub fn try_send_run(
        &mut self,
        to: SocketAddr,
        bytes: &[u8],
        segment: usize,
        count: usize,
    ) -> io::Result<usize> {
        let to = wire_addr(to, self.v6);
        let mut gso_error = None;
        if count > 1 && self.gso {
            match self.send_gso(to, bytes, segment) {
                Ok(()) => return Ok(count),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) if is_gso_unsupported(&e) => gso_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        // One call per datagram, stopping at a full socket buffer.
        let mut sent = 0;
        let mut result = Ok(());
        for chunk in bytes.chunks(segment.max(1)) {
            match self.udp.send_to(chunk, to) {
                Ok(_) => sent += 1,
                Err(e) if sent == 0 => {
                    result = Err(e);
                    break;
                }
                Err(_) => break,
            }
        }
        // A segment larger than the path makes GSO fail with EINVAL, and the datagram
        // alone with EMSGSIZE: that is path MTU's business, not a GSO failure.
        let too_big = matches!(&result, Err(e) if e.raw_os_error() == Some(nix::libc::EMSGSIZE));
        if let (Some(e), false) = (gso_error, too_big) {
            self.gso_failures += 1;
            if self.gso_failures == GSO_FAILURES_TO_GIVE_UP {
                warn!("UDP GSO keeps failing ({e}); sending one datagram per call");
                self.gso = false;
            }
        }
        result.map(|()| sent)
    }

    fn send_gso(&self, to: SocketAddr, bytes: &[u8], segment: usize) -> io::Result<()> {
        let fd = self.udp.as_raw_fd();
        let size = u16::try_from(segment).map_err(|_| io::Error::other("segment too large"))?;
        let addr = SockaddrStorage::from(to);
        let iov = [IoSlice::new(bytes)];
        let cmsgs = [ControlMessage::UdpGsoSegments(&size)];
        sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(&addr))
            .map(drop)
            .map_err(io::Error::from)
    }
}

impl AsFd for SleeveSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.udp.as_fd()
    }
}

/// A UDP socket on `port` of every local address of both families: IPv6 with
/// `IPV6_V6ONLY` off, so IPv4 peers arrive as IPv4-mapped addresses (see the module
/// doc). Fails where the kernel has no IPv6 (`EAFNOSUPPORT`); the caller then binds
/// IPv4 alone ([`bind_v4`]). With `reuse_port`, `SO_REUSEPORT`: several sockets of
/// this user share the port, and the kernel gives each sender's datagrams (by their
/// addresses' hash) to one of them. Blocking, close-on-exec.
pub fn bind_dual_stack(port: u16, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    bind_any(true, port, reuse_port)
}

/// As [`bind_dual_stack`], IPv4 only.
pub fn bind_v4(port: u16, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    bind_any(false, port, reuse_port)
}

fn bind_any(v6: bool, port: u16, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockProtocol, SockType};
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Udp,
    )?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    if v6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
        let any = SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0);
        bind(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn6::from(any))?;
    } else {
        let any = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port);
        bind(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(any))?;
    }
    Ok(std::net::UdpSocket::from(fd))
}

/// Errors that mean "this kernel or device cannot segment UDP".
fn is_gso_unsupported(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().map(Errno::from_raw).is_some_and(|n| {
        matches!(
            n,
            Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP
        )
    })
}

fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    let v6 = addr.as_sockaddr_in6()?;
    Some(canonical(SocketAddr::V6(SocketAddrV6::new(
        v6.ip(),
        v6.port(),
        v6.flowinfo(),
        v6.scope_id(),
    ))))
}

/// `addr` with an IPv4-mapped IPv6 address (what a dual-stack socket reports for an
/// IPv4 peer) turned back into IPv4, so that one peer has one address whichever socket
/// saw it. Other addresses are unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The destination as the socket wants it: on an IPv6 (dual-stack) socket an IPv4
/// address is sent to as its IPv4-mapped IPv6 form.
pub fn wire_addr(addr: SocketAddr, v6_socket: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_canonical_both_ways() {
        let v4: SocketAddr = "198.18.0.1:6783".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.18.0.1]:6783".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:6783".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        assert_eq!(canonical(v6), v6);
        assert_eq!(wire_addr(v4, true), mapped);
        assert_eq!(wire_addr(v4, false), v4);
        assert_eq!(wire_addr(v6, true), v6);
        assert_eq!(canonical(wire_addr(v4, true)), v4);
    }

    /// Waits (at most 5 s) until `s` is readable, as the data-plane thread does.
    fn wait_readable(s: &impl AsFd) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(5_000u16)).expect("poll");
        assert_eq!(n, 1, "nothing arrived within 5 s");
    }

    fn loopback() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind on loopback")
    }

    /// A dual-stack socket talks to an IPv4 socket and an IPv6 one; the addresses it
    /// reports and takes are canonical (the IPv4 peer is `V4`, not `::ffff:…`).
    #[test]
    fn a_dual_stack_socket_reports_ipv4_peers_as_ipv4() {
        let Ok(dual) = bind_dual_stack(0, false) else {
            eprintln!("no IPv6 loopback here; skipping the dual-stack half");
            return;
        };
        let port = dual.local_addr().unwrap().port();
        let mut dual = SleeveSocket::new(dual).unwrap();
        let v4 = loopback();
        v4.send_to(b"four", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        wait_readable(&dual);
        let r = dual.try_recv(&mut buf).unwrap();
        assert_eq!(r.from, v4.local_addr().unwrap());
        assert_eq!(dual.try_send_run(r.from, b"back", 4, 1).unwrap(), 1);
        let (n, from) = v4.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&b"back"[..], port));
    }

    /// Loopback, inside whatever namespace the test runs in: a run sent with GSO comes
    /// back as the same datagrams, however the receiver gets them.
    #[test]
    fn a_run_arrives_as_its_datagrams() {
        let (a, b) = (loopback(), loopback());
        let to = b.local_addr().unwrap();
        let mut a = SleeveSocket::new(a).unwrap();
        let mut b = SleeveSocket::new(b).unwrap();
        let mut bytes = Vec::new();
        for i in 0..5u8 {
            bytes.extend(std::iter::repeat_n(i, if i == 4 { 300 } else { 1000 }));
        }
        assert_eq!(a.try_send_run(to, &bytes, 1000, 5).unwrap(), 5);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_535];
        while got.len() < 5 {
            wait_readable(&b);
            let Ok(r) = b.try_recv(&mut buf) else {
                continue;
            };
            for d in buf[..r.len].chunks(r.segment) {
                got.push(d.to_vec());
            }
        }
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, [1000, 1000, 1000, 1000, 300]);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, d)| d.iter().all(|&b| b == i as u8)));
    }

    /// An empty datagram is received as length 0 with a usable (non-zero) segment size.
    #[test]
    fn an_empty_datagram_has_a_nonzero_segment() {
        let (a, b) = (loopback(), loopback());
        a.send_to(&[], b.local_addr().unwrap()).unwrap();
        let mut b = SleeveSocket::new(b).unwrap();
        let mut buf = vec![0u8; 2048];
        wait_readable(&b);
        let r = b.try_recv(&mut buf).unwrap();
        assert_eq!((r.len, r.segment), (0, 1));
    }

    /// Nothing queued: `WouldBlock`, not a wait (the socket is non-blocking).
    #[test]
    fn an_empty_socket_says_would_block() {
        let mut b = SleeveSocket::new(loopback()).unwrap();
        let mut buf = vec![0u8; 2048];
        let e = b.try_recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
