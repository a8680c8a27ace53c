//! The TAP device that connects the host's `weft` bridge to the router.
//!
//! Frames the bridge sends towards the TAP are read here, and frames from other hosts
//! are written here. The device is opened on `/dev/net/tun` directly (`IFF_TAP |
//! IFF_NO_PI`), non-blocking. A [`Tap`] is driven by tokio through [`AsyncFd`], so no
//! worker thread ever blocks on it; the data plane takes each queue out of tokio
//! ([`Tap::into_queue`]) and its thread waits on the [`TapQueue`] itself.
//!
//! With offloads ([`Tap::open_with_offloads`]) it is opened with `IFF_VNET_HDR`: every
//! frame read or written starts with a [`virtio_net_hdr`](crate::offload::vnet), and
//! `TUNSETOFFLOAD` tells the kernel it may hand us frames whose checksum is still to be
//! completed (`TUN_F_CSUM`) and TCP superframes of up to 64 KiB (`TUN_F_TSO4 |
//! TUN_F_TSO6`), which the data plane cuts into segments itself; where the kernel has
//! them (Linux 6.2), UDP superframes too (`TUN_F_USO4 | TUN_F_USO6`: a pod that sends
//! with `UDP_SEGMENT`), which the data plane cuts into the pod's datagrams, and which
//! the coalescer then also builds for the other direction
//! ([`OffloadMode::TsoUso`]). Where the kernel refuses, the device falls back
//! to what it takes, down to plain frames; [`Tap::mode`] says which.
//!
//! With several queues ([`Tap::open_queues`], `IFF_MULTI_QUEUE`), the device has one
//! descriptor per data-plane thread: the kernel spreads the frames the bridge sends by
//! their flow hash, so each flow is read on one queue, in order; a frame written on any
//! queue enters the bridge the same way.
//!
//! This is the one module of the crate allowed `unsafe`: the three ioctls, each with
//! its SAFETY argument, and registering the descriptor with tokio.

use crate::offload::vnet::{Repr, VNET_HDR_LEN};
use nix::libc;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::info;

/// The most queues a TAP device is opened with (`--dataplane-threads` at most).
pub const MAX_QUEUES: usize = 8;

/// Name of the TAP device on every host.
pub const TAP_NAME: &str = "weft-tap";

/// What the TAP device hands over and takes, from most to least offloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadMode {
    /// As [`OffloadMode::Tso`], and UDP superframes both ways (USO, Linux 6.2).
    TsoUso,
    /// `virtio_net_hdr`, checksum offload and TCP segmentation (IPv4 and IPv6).
    Tso,
    /// `virtio_net_hdr` and checksum offload only.
    Checksum,
    /// Plain Ethernet frames, no header (offloads off, or refused by the kernel).
    Plain,
}

impl OffloadMode {
    /// The name used in the log, `weft report` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            OffloadMode::TsoUso => "tso_uso",
            OffloadMode::Tso => "tso",
            OffloadMode::Checksum => "checksum",
            OffloadMode::Plain => "plain",
        }
    }

    /// Whether every frame carries a `virtio_net_hdr`.
    pub fn vnet_hdr(self) -> bool {
        self != OffloadMode::Plain
    }
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags (in a union of 24
/// bytes on 64-bit Linux).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// A non-blocking TAP device (one queue of it), driven by tokio.
pub struct Tap {
    fd: AsyncFd<TapQueue>,
    name: String,
}

/// One queue of a TAP device without a reactor: non-blocking reads and writes, for a
/// thread that waits on the descriptor itself ([`AsFd`]).
pub struct TapQueue {
    file: File,
    mode: OffloadMode,
}

impl Tap {
    /// Creates (or opens) TAP device `name` in the current network namespace, for plain
    /// frames.
    pub fn open(name: &str) -> io::Result<Tap> {
        Tap::open_mode(name, OffloadMode::Plain, false)
    }

    /// Creates (or opens) TAP device `name` with as many offloads as the kernel takes,
    /// and logs the mode in use.
    pub fn open_with_offloads(name: &str) -> io::Result<Tap> {
        let mut queues = Tap::open_queues(name, 1, true)?;
        queues
            .pop()
            .ok_or_else(|| io::Error::other("no queue opened"))
    }

    /// Creates TAP device `name` with `queues` queues (`IFF_MULTI_QUEUE` when more than
    /// one; at most [`MAX_QUEUES`]), one descriptor each, all in one offload mode: with
    /// `offloads`, as many as the kernel takes, else plain frames. The kernel hands each
    /// flow's frames to one queue (by its flow hash), so a flow stays in order. Logs the
    /// mode in use.
    pub fn open_queues(name: &str, queues: usize, offloads: bool) -> io::Result<Vec<Tap>> {
        let queues = queues.clamp(1, MAX_QUEUES);
        let modes: &[OffloadMode] = if offloads {
            &[
                OffloadMode::TsoUso,
                OffloadMode::Tso,
                OffloadMode::Checksum,
                OffloadMode::Plain,
            ]
        } else {
            &[OffloadMode::Plain]
        };
        let mut refused = None;
        for &mode in modes {
            // Each queue is one more descriptor on the same device; dropping the ones
            // opened so far (on a refusal) closes the device again.
            let opened: io::Result<Vec<Tap>> = (0..queues)
                .map(|_| Tap::open_mode(name, mode, queues > 1))
                .collect();
            match opened {
                Ok(taps) => {
                    match (&refused, offloads) {
                        (None, true) => info!(
                            mode = mode.as_str(),
                            queues, "TAP device {name} opened with offloads"
                        ),
                        (Some(e), true) => info!(
                            mode = mode.as_str(),
                            queues, "TAP device {name}: the kernel refused more offloads ({e})"
                        ),
                        (_, false) => info!(queues, "TAP device {name} opened for plain frames"),
                    }
                    return Ok(taps);
                }
                Err(e) => refused = Some(e),
            }
        }
        Err(refused.unwrap_or_else(|| io::Error::other("no offload mode to try")))
    }

    fn open_mode(name: &str, mode: OffloadMode, multi_queue: bool) -> io::Result<Tap> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot open TAP device {name}: {e}"));
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(context(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(context)?;
        let fd = file.as_raw_fd();
        let mut ifr = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _union_rest: [0; 22],
        };
        ifr.name[..name.len()].copy_from_slice(name.as_bytes());
        if mode.vnet_hdr() {
            ifr.flags |= libc::IFF_VNET_HDR as libc::c_short;
        }
        if multi_queue {
            ifr.flags |= libc::IFF_MULTI_QUEUE as libc::c_short;
        }
        // SAFETY: `fd` is the open /dev/net/tun descriptor `file` owns; TUNSETIFF reads
        // and writes one `struct ifreq`, and `ifr` is a live, exclusively borrowed
        // `repr(C)` value of that size and layout (16-byte name, then the flags).
        #[allow(unsafe_code)]
        let r = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut ifr as *mut IfReq) };
        if r < 0 {
            return Err(context(io::Error::last_os_error()));
        }
        if mode.vnet_hdr() {
            let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which points
            // at `size`, alive for the call; `fd` is owned by `file`.
            #[allow(unsafe_code)]
            let r = unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &size as *const libc::c_int) };
            if r < 0 {
                return Err(context(io::Error::last_os_error()));
            }
            let tso = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
            let offloads = match mode {
                OffloadMode::TsoUso => tso | libc::TUN_F_USO4 | libc::TUN_F_USO6,
                OffloadMode::Tso => tso,
                _ => libc::TUN_F_CSUM,
            };
            set_offload(fd, offloads).map_err(context)?;
        }
        Ok(Tap {
            fd: register(TapQueue { file, mode })?,
            name: name.to_owned(),
        })
    }

    /// The queue, out of tokio's reactor, for a thread that waits on it itself (the
    /// data plane's).
    pub fn into_queue(self) -> TapQueue {
        self.fd.into_inner()
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the device hands over and takes.
    pub fn mode(&self) -> OffloadMode {
        self.fd.get_ref().mode
    }

    /// Waits for a frame and reads it into `buf`: in a `virtio_net_hdr` mode, the header
    /// and then the frame.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().try_recv(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// As [`TapQueue::try_send`].
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        self.fd.get_ref().try_send(frame)
    }

    /// Writes one ordinary frame, waiting while the device queue is full.
    pub async fn send(&self, frame: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|_| self.try_send(frame)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

impl TapQueue {
    /// What the device hands over and takes.
    pub fn mode(&self) -> OffloadMode {
        self.mode
    }

    /// Whether UDP superframes (`GSO_UDP_L4`) pass through the device both ways: the
    /// kernel took `TUN_F_USO4 | TUN_F_USO6`.
    pub fn takes_udp_superframes(&self) -> bool {
        self.mode == OffloadMode::TsoUso
    }

    /// Reads a frame if one is queued (in a `virtio_net_hdr` mode, the header and then
    /// the frame); `WouldBlock` otherwise.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one ordinary frame if the device can take it now; `WouldBlock` otherwise
    /// (the caller drops and counts, as a switch does when a port's queue is full).
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        write_frame(&self.file, self.mode, frame)
    }

    /// A second descriptor for this queue, for writing only, that any thread may use:
    /// the data plane writes each received frame on its flow's queue
    /// ([`crate::flow`]), whichever thread received it.
    pub fn writer(&self) -> io::Result<TapWriter> {
        Ok(TapWriter {
            file: self.file.try_clone()?,
            mode: self.mode,
        })
    }
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A write-only handle on one queue of the TAP device ([`Tap::writer`]): a duplicate of
/// its descriptor (non-blocking, like the queue's own).
pub struct TapWriter {
    file: File,
    mode: OffloadMode,
}

impl TapWriter {
    /// As [`Tap::try_send`].
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        write_frame(&self.file, self.mode, frame)
    }

    /// As [`Tap::try_send_vnet`].
    pub fn try_send_vnet(&self, vnet: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
        debug_assert!(self.mode.vnet_hdr());
        write_vnet(&self.file, vnet, frame)
    }
}

/// Writes one ordinary frame to a queue in `mode` (with a plain `virtio_net_hdr` first
/// where the mode has one).
fn write_frame(mut file: &File, mode: OffloadMode, frame: &[u8]) -> io::Result<usize> {
    if mode.vnet_hdr() {
        write_vnet(file, &Repr::PLAIN.to_bytes(), frame)
    } else {
        file.write(frame)
    }
}

/// Writes a `virtio_net_hdr` and a frame to a queue in one call.
fn write_vnet(mut file: &File, vnet: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
    file.write_vectored(&[IoSlice::new(vnet), IoSlice::new(frame)])
}

/// `TUNSETOFFLOAD`: which offloads the kernel may use in frames it hands us.
fn set_offload(fd: libc::c_int, offloads: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of TUN_F_*
    // bits) and dereferences nothing; `fd` is an open TUN descriptor the caller owns.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(offloads)) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Registers the queue's descriptor with the current runtime's reactor.
fn register(queue: TapQueue) -> io::Result<AsyncFd<TapQueue>> {
    let interest = Interest::READABLE | Interest::WRITABLE;
    // SAFETY: the queue's `File` owns its descriptor and closes it only when dropped;
    // the `AsyncFd` owns the queue, never replaces or closes the descriptor, and
    // deregisters it before dropping the queue (also in `into_inner`). So the
    // registered descriptor stays valid and unique for as long as tokio watches it
    // (tokio#8587).
    #[allow(unsafe_code)]
    let fd = unsafe { AsyncFd::register_with_interest(queue, interest) }
        .map_err(|e| e.into_parts().1)?;
    Ok(fd)
}
