//! The TCP accept loop, with pre-authentication admission control.
//!
//! This task alone owns the [`PreAuthLimiter`]: each accepted socket must win a token
//! (per source IP and globally) and a pending-handshake slot before any cryptography
//! runs. The handshake task gives its slot back through a channel when it ends, however
//! it ends, so the count of pending handshakes stays exact.

use crate::control_links::{self, LinkContext};
use crate::handle::Input;
use crate::handshakes::RefusedReason;
use gossip::ratelimit::{Admission, PreAuthLimiter};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Accepts control links forever.
pub async fn run(listener: TcpListener, ctx: Arc<LinkContext>) {
    let mut limiter = PreAuthLimiter::new(Default::default());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Admission>();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // Dual-stack: an IPv4 peer has its IPv4 spelling from here on.
                let (stream, remote) = match accepted {
                    Ok((stream, remote)) => (stream, crate::underlay::canonical(remote)),
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let ip = remote.ip();
                let admission = match limiter.try_admit(Instant::now(), ip) {
                    Ok(a) => a,
                    Err(refusal) => {
                        debug!(%remote, "refused before handshake: {refusal}");
                        ctx.owner.send(Input::HandshakeRefused {
                            outbound: false,
                            reason: RefusedReason::of_refusal(&refusal),
                        });
                        drop(stream);
                        continue;
                    }
                };
                let slot = PendingSlot { admission: Some(admission), done: done_tx.clone() };
                tokio::spawn(control_links::accept(ctx.clone(), stream, remote, slot));
            }
            Some(admission) = done_rx.recv() => limiter.release(admission),
        }
    }
}

/// A pending-handshake slot; dropping it gives the slot back to the limiter.
struct PendingSlot {
    admission: Option<Admission>,
    done: mpsc::UnboundedSender<Admission>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            let _ = self.done.send(admission);
        }
    }
}
