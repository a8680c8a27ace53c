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
//! All calls are non-blocking (`try_*`); the driver waits on readiness through tokio.

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;
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
    gso: bool,
    gso_failures: u32,
    gro: bool,
    cmsg: Vec<u8>,
}

/// GSO calls refused as unsupported before the socket stops trying.
const GSO_FAILURES_TO_GIVE_UP: u32 = 8;

impl SleeveSocket {
    /// Wraps a bound socket and turns GRO on where the kernel has it.
    pub fn new(udp: UdpSocket) -> SleeveSocket {
        let gro = setsockopt(&udp, sockopt::UdpGroSegment, &true).is_ok();
        if !gro {
            info!("UDP GRO is not available; receiving one datagram per call");
        }
        SleeveSocket {
            udp,
            gso: true,
            gso_failures: 0,
            gro,
            cmsg: nix::cmsg_space!(i32),
        }
    }

    /// The tokio socket, to wait for readiness.
    pub fn socket(&self) -> &UdpSocket {
        &self.udp
    }

    /// Whether runs are sent with GSO.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Receives the next datagram or run of datagrams into `buf` without waiting.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        if !self.gro {
            let (len, from) = self.udp.try_recv_from(buf)?;
            return Ok(Received {
                len,
                from,
                segment: len.max(1),
            });
        }
        let fd = self.udp.as_raw_fd();
        let cmsg = &mut self.cmsg;
        self.udp.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut *cmsg), MsgFlags::empty())
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
        })
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
            match self.udp.try_send_to(chunk, to) {
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
        self.udp.try_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(bytes)];
            let cmsgs = [ControlMessage::UdpGsoSegments(&size)];
            sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(&addr))
                .map(drop)
                .map_err(io::Error::from)
        })
    }
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
    Some(SocketAddr::V6(SocketAddrV6::new(
        v6.ip(),
        v6.port(),
        v6.flowinfo(),
        v6.scope_id(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback, inside whatever namespace the test runs in: a run sent with GSO comes
    /// back as the same datagrams, however the receiver gets them.
    #[tokio::test]
    async fn a_run_arrives_as_its_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let mut a = SleeveSocket::new(a);
        let mut b = SleeveSocket::new(b);
        let mut bytes = Vec::new();
        for i in 0..5u8 {
            bytes.extend(std::iter::repeat_n(i, if i == 4 { 300 } else { 1000 }));
        }
        a.socket().writable().await.unwrap();
        assert_eq!(a.try_send_run(to, &bytes, 1000, 5).unwrap(), 5);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_535];
        while got.len() < 5 {
            b.socket().readable().await.unwrap();
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
    #[tokio::test]
    async fn an_empty_datagram_has_a_nonzero_segment() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.send_to(&[], b.local_addr().unwrap()).await.unwrap();
        let mut b = SleeveSocket::new(b);
        let mut buf = vec![0u8; 2048];
        loop {
            b.socket().readable().await.unwrap();
            if let Ok(r) = b.try_recv(&mut buf) {
                assert_eq!((r.len, r.segment), (0, 1));
                break;
            }
        }
    }
}
