//! TAP offloads in userspace: the `virtio_net_hdr`, TCP and UDP segmentation before
//! sealing and coalescing after opening (issue 15).
//!
//! With `IFF_VNET_HDR` and TSO turned on, the kernel hands the router TCP superframes
//! of up to 64 KiB and takes them back; with USO too, UDP superframes (a pod's
//! `UDP_SEGMENT` sends, and runs of one UDP flow on the way in). The sleeve still
//! carries frames that fit the path, so the sender cuts superframes into segments
//! ([`segment`]) and the receiver merges the segments that arrive together back into
//! superframes ([`coalesce`]). The wire format does not change, and a router with
//! offloads talks to one without.
//!
//! - [`vnet`]: the `virtio_net_hdr` wire view and its `Repr`.
//! - [`checksum`]: the Internet checksum.
//! - [`tcp`]: where the IP and TCP (or UDP) headers of a frame are.
//! - [`segment`]: checking a frame from the TAP device, and cutting a superframe.
//! - [`coalesce`]: merging received segments into superframes.

pub mod checksum;
pub mod coalesce;
pub mod segment;
pub mod tcp;
pub mod vnet;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod udp_tests;

use thiserror::Error;

/// Why a frame read from the TAP device was refused. Each is counted as
/// `offload_malformed`; none can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OffloadError {
    /// A superframe with a segment size of zero.
    #[error("gso_size 0")]
    GsoSizeZero,
    /// `hdr_len` is past the end of the frame.
    #[error("hdr_len past the end of the frame")]
    HeaderPastEnd,
    /// The checksum to complete is past the end of the frame.
    #[error("csum_start/csum_offset past the end of the frame")]
    ChecksumPastEnd,
    /// A GSO type we never asked the kernel for (UDP, ECN).
    #[error("unsupported gso_type")]
    Unsupported,
    /// A TCP superframe whose headers do not parse as the type says.
    #[error("malformed superframe")]
    Malformed,
    /// Shorter than a `virtio_net_hdr`.
    #[error("shorter than a virtio_net_hdr")]
    TooShort,
}

/// Longest input [`fuzz_offload`] looks at.
const FUZZ_MAX_LEN: usize = 70_000;

/// Fuzz entry point for both directions: never panics, whatever `data` is.
///
/// `data` is read as a `virtio_net_hdr` and a frame, as the TAP device would hand it
/// over. It is prepared; a superframe is split at its own size and at a smaller one
/// (as for a narrower path), each segment checked to be within bounds and to carry a
/// TCP or UDP checksum that verifies; and the segments, then the raw frame, go through a
/// coalescer, whose output must be within [`coalesce::MAX_SUPERFRAME`].
pub fn fuzz_offload(data: &[u8]) {
    let data = &data[..data.len().min(FUZZ_MAX_LEN)];
    let mut buf = data.to_vec();
    let Ok(packet) = vnet::Packet::new_checked(&mut buf[..]) else {
        return;
    };
    let repr = vnet::Repr::parse(&packet);
    let frame = &mut buf[vnet::VNET_HDR_LEN..];
    let mut coalescer = coalesce::Coalescer::new();
    let mut out = |_: &[u8; vnet::VNET_HDR_LEN], f: &[u8]| {
        assert!(f.len() <= coalesce::MAX_SUPERFRAME, "superframe too long");
    };
    if let Ok(segment::Prepared::Superframe { layout, gso_size }) = segment::prepare(&repr, frame) {
        let sf = segment::Superframe::new(frame, layout, gso_size);
        let mut seg = vec![0u8; coalesce::MAX_SUPERFRAME];
        for max in [usize::MAX, sf.header_len() + 7] {
            let Some(mss) = sf.mss_for(max) else { continue };
            for i in 0..sf.count(mss).min(200) {
                let n = sf.write_segment(i, mss, &mut seg);
                assert_eq!(n, sf.segment_len(i, mss));
                let l = tcp::Layout::parse(&seg[..n], true)
                    .or_else(|| tcp::Layout::parse_udp(&seg[..n], true))
                    .expect("a segment parses");
                assert!(l.checksum_ok(&seg[..n]), "segment checksum");
                coalescer.push(&seg[..n], &mut out);
            }
        }
    }
    coalescer.push(&data[data.len().min(vnet::VNET_HDR_LEN)..], &mut out);
    coalescer.flush(&mut out);
}
