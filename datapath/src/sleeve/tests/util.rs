//! Helpers shared by the sleeve's test modules.

use crate::sleeve::codec::{InnerFrame, OpenError};
use crate::sleeve::Session;
use gossip::peer::PeerId;
use std::time::Instant;

/// An inner frame from `src` to `dst`.
pub(super) fn frame(dst: PeerId, src: PeerId, bytes: &[u8]) -> InnerFrame<'_> {
    InnerFrame {
        dst,
        src,
        frame: bytes,
    }
}

/// Opens `datagram` (a copy) and returns the frames as owned values.
pub(super) fn open_frames(
    s: &mut Session,
    now: Instant,
    datagram: &[u8],
) -> Result<Vec<(PeerId, PeerId, Vec<u8>)>, OpenError> {
    let mut copy = datagram.to_vec();
    let opened = s.open(now, &mut copy)?;
    Ok(opened
        .frames()
        .map(|f| (f.dst, f.src, f.frame.to_vec()))
        .collect())
}
