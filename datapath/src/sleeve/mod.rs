//! The sleeve: Ethernet frames carried between neighbour routers in encrypted UDP datagrams.
//!
//! ```text
//! | header (16, cleartext, AEAD associated data) | ciphertext (16·n) | tag (16) |
//!   type=4, reserved, receiver_index, counter      frames + zero padding
//! ```
//!
//! - [`header`]: the 16-byte cleartext header, a smoltcp-style view and `Repr`.
//! - [`replay`]: the 8192-bit sliding replay window, checked before decryption.
//! - [`keys`]: the per-epoch X25519 exchange over the control link and the key derivation.
//! - [`session`]: one neighbour's keys, counters and rekey timing, sans-IO.
//! - [`codec`]: [`Session::seal`] and [`Session::open`], in place, with no allocation.
//!
//! Nothing here does I/O or reads the clock; the router passes datagrams and `now` in.

pub mod aead;
pub mod codec;
pub mod header;
pub mod keys;
pub mod replay;
pub mod session;

#[cfg(test)]
mod tests;

pub use codec::{
    datagram_len, validate_inner, Ends, Frames, InnerFrame, OpenError, OpenJob, Opened, SealError,
    SealJob, BROADCAST, DIRECT_HEADER_LEN, FULL_HEADER_LEN,
};
pub use header::{peek_receiver_index, HEADER_LEN, MIN_DATAGRAM_LEN, TAG_LEN};
pub use keys::{LinkId, RekeyError, RekeyOffer, Role};
pub use replay::{ReplayWindow, REJECT_AFTER_MESSAGES};
pub use session::Session;

use gossip::peer::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::{Duration, Instant};

/// The most zero padding a datagram carries (its plaintext is padded to a multiple of 16).
pub const MAX_PADDING: usize = codec::PADDING_MULTIPLE - 1;
/// Sleeve bytes around one frame from the sender (the common case), in the worst case:
/// header 16 + tag 16 + entry header 3 + padding 15 = 50. A relayed frame names its two
/// peers and needs [`RELAY_OVERHEAD`] more.
pub const SLEEVE_OVERHEAD: usize = HEADER_LEN + TAG_LEN + DIRECT_HEADER_LEN + MAX_PADDING;
/// The extra bytes of a relayed frame's entry (its two peer ids).
pub const RELAY_OVERHEAD: usize = FULL_HEADER_LEN - DIRECT_HEADER_LEN;
/// The UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// The inner frame's Ethernet header, which the overlay MTU (an IP MTU) does not count.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// The IP version of the underlay path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    /// 20-byte IPv4 header.
    V4,
    /// 40-byte IPv6 header.
    V6,
}

impl IpVersion {
    /// The version of the path to `addr` (an IPv4-mapped IPv6 address is IPv4 on the
    /// wire, but the sleeve's addresses are canonical: see [`crate::udp::canonical`]).
    pub fn of(addr: &std::net::SocketAddr) -> IpVersion {
        if addr.is_ipv4() {
            IpVersion::V4
        } else {
            IpVersion::V6
        }
    }

    /// The IP header length without options or extension headers.
    pub const fn header_len(self) -> usize {
        match self {
            IpVersion::V4 => 20,
            IpVersion::V6 => 40,
        }
    }
}

/// The largest IP packet a container may send so that one frame fits, whole, in one
/// sleeve datagram on an underlay path of `underlay_mtu`:
///
/// ```text
/// overlay = underlay − IP (20 | 40) − UDP 8 − header 16 − tag 16 − entry header 3
///           − padding 15 (worst case) − inner Ethernet 14
/// ```
///
/// For a 1500-byte IPv4 underlay that is 1500 − 92 = 1408 (1388 over IPv6). A frame
/// relayed through another peer needs [`RELAY_OVERHEAD`] (32) bytes more. Zero if the
/// underlay is too small for any frame.
pub const fn overlay_mtu(underlay_mtu: u16, ip: IpVersion) -> u16 {
    let overhead = ip.header_len() + UDP_HEADER_LEN + SLEEVE_OVERHEAD + ETHERNET_HEADER_LEN;
    (underlay_mtu as usize).saturating_sub(overhead) as u16
}

/// Default time between rekeys (WireGuard's REKEY_AFTER_TIME).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Default time between rekeys of an epoch that carried no frame, only keepalives and
/// probes: the keys die at [`REJECT_AFTER_TIME`] all the same, and until then they
/// protect nothing a peer would need kept secret. Frames that start to move under an
/// older epoch bring the rekey forward to at once. 15 s before the keys die: room for
/// two offers ([`REKEY_TIMEOUT`]) over a slow control link, and the responder's switch.
pub const IDLE_REKEY_AFTER_TIME: Duration = Duration::from_secs(165);
/// Default lifetime of a key (WireGuard's REJECT_AFTER_TIME).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Default wait for an answer or a confirmation (WireGuard's REKEY_TIMEOUT).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages after which the initiator rekeys early (WireGuard's REKEY_AFTER_MESSAGES).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;

/// Timing knobs; the defaults are WireGuard's. Tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time from the start of an epoch until the initiator offers the next one.
    pub rekey_after_time: Duration,
    /// The same for an epoch that carried no frame ([`IDLE_REKEY_AFTER_TIME`]); never
    /// sooner than `rekey_after_time`.
    pub idle_rekey_after_time: Duration,
    /// Lifetime of each key from its creation; older keys are dropped and zeroized.
    pub reject_after_time: Duration,
    /// How long an offer waits for its answer before a new one is made, and how long the
    /// responder waits for confirmation before sending with a new key anyway.
    pub rekey_timeout: Duration,
    /// Send counter at which the initiator rekeys early.
    pub rekey_after_messages: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            rekey_after_time: REKEY_AFTER_TIME,
            idle_rekey_after_time: IDLE_REKEY_AFTER_TIME,
            reject_after_time: REJECT_AFTER_TIME,
            rekey_timeout: REKEY_TIMEOUT,
            rekey_after_messages: REKEY_AFTER_MESSAGES,
        }
    }
}

impl Session {
    /// Two sessions with a completed first exchange, from a seeded RNG: for tests,
    /// benchmarks and the fuzz entry point. The first is the initiator.
    pub fn pair_for_testing(now: Instant, config: SessionConfig, seed: u64) -> (Session, Session) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (a_id, b_id) = (PeerId([1; 16]), PeerId([2; 16]));
        let hash = [0x5a; 32];
        let mut a = Session::new(now, config, a_id, b_id, hash);
        let mut b = Session::new(now, config, b_id, a_id, hash);
        let offer = a.poll_rekey_with(now, &mut rng, |_| false);
        let offer = offer.expect("a new initiator offers at once");
        let answer = b.handle_offer_with(now, offer, &mut rng, |_| false);
        let answer = answer
            .ok()
            .flatten()
            .expect("a responder answers a fresh offer");
        let done = a.handle_offer_with(now, answer, &mut rng, |_| false);
        debug_assert!(matches!(done, Ok(None)));
        // The initiator's keepalive confirms the keys, so the responder can send too.
        let mut keepalive = [0u8; MIN_DATAGRAM_LEN];
        if a.poll_keepalive() {
            if let Ok(len) = a.seal(&[], &mut keepalive) {
                let _ = b.open(now, &mut keepalive[..len]);
            }
        }
        (a, b)
    }
}

/// Longest input [`fuzz_open`] looks at.
const FUZZ_MAX_LEN: usize = 2048;

/// Fuzz entry point for the receive path: never panics, whatever `data` is.
///
/// With a fixed pair of sessions (seeded keys) it opens `data` three ways: as it is (the
/// unauthenticated checks); behind a forced valid header with a live receiver index (the
/// replay check and the AEAD); and as a plaintext sealed with the real key (the strict
/// inner parser, through the real open path).
pub fn fuzz_open(data: &[u8]) {
    let now = Instant::now();
    let (mut sender, mut receiver) = Session::pair_for_testing(now, SessionConfig::default(), 7);
    let mut buf = [0u8; FUZZ_MAX_LEN];
    let n = data.len().min(FUZZ_MAX_LEN);
    buf[..n].copy_from_slice(&data[..n]);
    drain(receiver.open(now, &mut buf[..n]), n);

    let live_index = receiver.receiver_indices().next();
    if let (Some(index), true) = (live_index, n >= HEADER_LEN) {
        buf[..n].copy_from_slice(&data[..n]);
        let mut packet = header::Packet::new_unchecked(&mut buf[..]);
        packet.set_msg_type(header::TYPE_DATA);
        packet.clear_reserved();
        packet.set_receiver_index(index);
        drain(receiver.open(now, &mut buf[..n]), n);
    }

    let m = data
        .len()
        .min(FUZZ_MAX_LEN - HEADER_LEN - TAG_LEN - MAX_PADDING);
    // Any plaintext, valid or not, sealed with the right key.
    buf[HEADER_LEN..HEADER_LEN + m].copy_from_slice(&data[..m]);
    // The inner list may run into the zero padding the seal adds (a frame's length read
    // from `data` may reach past `m`): the frames must stay inside the padded plaintext.
    if let Ok(len) = sender.seal_in_place(&mut buf, m) {
        drain(
            receiver.open(now, &mut buf[..len]),
            len - HEADER_LEN - TAG_LEN,
        );
    }
}

/// Walks an opened datagram's frames, checking they stay inside the `plaintext_len`
/// bytes that were opened.
fn drain(result: Result<Opened<'_>, OpenError>, plaintext_len: usize) {
    if let Ok(opened) = result {
        let total: usize = opened
            .frames()
            .map(|f| DIRECT_HEADER_LEN + f.frame.len())
            .sum();
        assert!(total <= plaintext_len, "frames larger than the datagram");
        let _ = opened.is_keepalive();
    }
}
