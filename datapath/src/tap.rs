//! The TAP device that connects the host's `weft` bridge to the router.
//!
//! Frames the bridge sends towards the TAP are read here, and frames from other hosts
//! are written here. The device is opened with `tun-tap` (no packet-info header) and
//! driven by tokio through [`AsyncFd`], non-blocking, so no worker thread ever blocks on
//! it. `try_recv` lets the caller drain several queued frames per wake-up.

use std::io;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_tap::{Iface, Mode};

/// Name of the TAP device on every host.
pub const TAP_NAME: &str = "weft-tap";

/// A non-blocking TAP device.
pub struct Tap {
    fd: AsyncFd<Iface>,
}

impl Tap {
    /// Creates (or opens) TAP device `name` in the current network namespace.
    pub fn open(name: &str) -> io::Result<Tap> {
        let iface = Iface::without_packet_info(name, Mode::Tap)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open TAP device {name}: {e}")))?;
        iface.set_non_blocking()?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        // SAFETY: `Iface` owns its file descriptor and closes it only when dropped; the
        // `AsyncFd` owns the `Iface`, never replaces or closes the descriptor, and
        // deregisters it before dropping the `Iface`. So the registered descriptor stays
        // valid and unique for as long as tokio watches it (tokio#8587).
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(iface, interest) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Tap { fd })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        self.fd.get_ref().name()
    }

    /// Waits for a frame and reads it into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().recv(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads a frame if one is queued; `WouldBlock` otherwise.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.get_ref().recv(buf)
    }

    /// Writes one frame if the device can take it now; `WouldBlock` otherwise (the
    /// caller drops and counts, as a switch does when a port's queue is full).
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        self.fd.get_ref().send(frame)
    }

    /// Writes one frame, waiting while the device queue is full.
    pub async fn send(&self, frame: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| fd.get_ref().send(frame)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}
