//! Path MTU discovery towards one neighbour, sans-IO.
//!
//! The sleeve socket sends with DF and ignores the kernel's path-MTU cache (so a forged
//! ICMP message cannot shrink it); instead each router measures the path itself. It
//! sends *probes*, sealed keepalives padded with zeros to candidate sizes (valid sleeve
//! plaintext: a frame list that ends at once, then zero padding), and the neighbour
//! reports over the control link each probe size it received. Sizes are datagram (UDP
//! payload) lengths, always `32 + 16·k`, the only lengths a sleeve datagram can have.
//!
//! A search runs in rounds of up to [`PROBES_PER_ROUND`] probes spread over the sizes
//! still in doubt, between a floor (what a 576-byte IPv4 or 1280-byte IPv6 path carries)
//! and the ceiling (what the configured overlay MTU needs). A round lasts
//! [`PmtuConfig::round`]; afterwards the largest acknowledged size is known to pass and
//! the next larger unacknowledged one is taken not to, and the next round probes the
//! sizes between. Two or three rounds settle it to the exact 16-byte step. A round
//! with no acknowledgement at all is repeated, up to [`MAX_SILENT_ROUNDS`] times; if
//! nothing is ever acknowledged (an older neighbour, or a control link in trouble) the
//! limit is left where it was rather than guessed.
//!
//! Until the first search ends the limit is the ceiling (optimistic, as the kernel's
//! own discovery starts at the link MTU): a pessimistic start would have containers
//! cache a tiny path MTU for ten minutes. Searches repeat every
//! [`PmtuConfig::reprobe`], and at once when a send fails with `EMSGSIZE`, which also
//! lowers the limit below the failed size straight away.

use crate::sleeve::{datagram_len, IpVersion, DIRECT_HEADER_LEN, MIN_DATAGRAM_LEN};
use std::time::{Duration, Instant};

/// Datagram sizes differ by this much (the plaintext padding multiple).
pub const STEP: usize = crate::sleeve::codec::PADDING_MULTIPLE;
/// Most probes sent in one round.
pub const PROBES_PER_ROUND: usize = 8;
/// Rounds without any acknowledgement before a search gives up.
pub const MAX_SILENT_ROUNDS: u8 = 3;
/// The IPv4 minimum reassembly size (RFC 791): every IPv4 path carries this.
const IPV4_MIN_PATH: usize = 576;
/// The IPv6 minimum link MTU (RFC 8200).
const IPV6_MIN_PATH: usize = 1280;
/// The UDP header.
const UDP_HEADER_LEN: usize = 8;
/// The inner frame's Ethernet header (an overlay MTU is an IP MTU).
const ETHERNET_HEADER_LEN: usize = 14;

/// Timing of path MTU discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtuConfig {
    /// How long a round waits for acknowledgements.
    pub round: Duration,
    /// Time between searches once one has ended (and after a neighbour is added, the
    /// first search starts at once).
    pub reprobe: Duration,
}

impl Default for PmtuConfig {
    fn default() -> Self {
        PmtuConfig {
            round: Duration::from_secs(1),
            reprobe: Duration::from_secs(600),
        }
    }
}

/// The largest datagram (UDP payload) a frame of `overlay_mtu` IP bytes needs.
pub const fn datagram_for_mtu(overlay_mtu: u16) -> usize {
    datagram_len(DIRECT_HEADER_LEN + ETHERNET_HEADER_LEN + overlay_mtu as usize)
}

/// The largest IP packet (an overlay MTU) that fits, as one frame, in a datagram of
/// `datagram` bytes: the padding is exact here, not the worst case.
pub const fn mtu_for_datagram(datagram: usize) -> u16 {
    let body = datagram.saturating_sub(MIN_DATAGRAM_LEN) / STEP * STEP;
    let mtu = body.saturating_sub(DIRECT_HEADER_LEN + ETHERNET_HEADER_LEN);
    if mtu > u16::MAX as usize {
        u16::MAX
    } else {
        mtu as u16
    }
}

/// The largest sleeve datagram an underlay path of `path_mtu` bytes carries whole.
pub const fn datagram_for_path(path_mtu: usize, ip: IpVersion) -> usize {
    let payload = path_mtu.saturating_sub(ip.header_len() + UDP_HEADER_LEN);
    let body = payload.saturating_sub(MIN_DATAGRAM_LEN) / STEP * STEP;
    MIN_DATAGRAM_LEN + body
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No search; the next starts at `next`.
    Idle { next: Instant },
    /// A round is under way.
    Round {
        /// The sizes probed, ascending; `len` of them are used.
        sizes: [u16; PROBES_PER_ROUND],
        len: usize,
        /// How many have been handed out to send.
        sent: usize,
        /// When the round is over.
        ends: Instant,
        /// Whether any probe of this round was acknowledged.
        acked: bool,
        /// Rounds in a row with no acknowledgement.
        silent: u8,
    },
}

/// Path MTU discovery state for one neighbour.
#[derive(Debug, Clone)]
pub struct PathMtu {
    config: PmtuConfig,
    floor: usize,
    ceiling: usize,
    /// Datagrams up to this size are sent.
    limit: usize,
    /// Largest size acknowledged in the current search (0: none yet).
    good: usize,
    /// Smallest size taken to fail in the current search.
    bad: usize,
    /// Whether a search has ever ended with an acknowledgement.
    measured: bool,
    state: State,
}

impl PathMtu {
    /// Discovery for a path of IP version `ip`, for an overlay MTU of at most
    /// `max_mtu`; the first search starts at `now`.
    pub fn new(now: Instant, config: PmtuConfig, ip: IpVersion, max_mtu: u16) -> PathMtu {
        let ceiling = datagram_for_mtu(max_mtu);
        let min_path = match ip {
            IpVersion::V4 => IPV4_MIN_PATH,
            IpVersion::V6 => IPV6_MIN_PATH,
        };
        let floor = datagram_for_path(min_path, ip).min(ceiling);
        PathMtu {
            config,
            floor,
            ceiling,
            limit: ceiling,
            good: 0,
            bad: ceiling + STEP,
            measured: false,
            state: State::Idle { next: now },
        }
    }

    /// The largest datagram to send now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The largest Ethernet frame that fits in one datagram now.
    pub fn frame_limit(&self) -> usize {
        usize::from(self.mtu()) + ETHERNET_HEADER_LEN
    }

    /// The overlay MTU (an IP MTU) this path allows now.
    pub fn mtu(&self) -> u16 {
        mtu_for_datagram(self.limit)
    }

    /// Whether a search has measured the path (rather than assuming the ceiling).
    pub fn is_measured(&self) -> bool {
        self.measured
    }

    /// Whether a search is under way.
    pub fn is_searching(&self) -> bool {
        matches!(self.state, State::Round { .. })
    }

    /// The next probe size to send now, if any. Call until `None`.
    pub fn poll_probe(&mut self, now: Instant) -> Option<usize> {
        if let State::Idle { next } = self.state {
            if now < next {
                return None;
            }
            self.good = 0;
            self.bad = self.ceiling + STEP;
            self.start_round(now);
        }
        match &mut self.state {
            State::Round {
                sizes, len, sent, ..
            } if *sent < *len => {
                *sent += 1;
                Some(usize::from(sizes[*sent - 1]))
            }
            _ => None,
        }
    }

    /// The neighbour received our probe of `size` bytes.
    pub fn handle_ack(&mut self, size: usize) {
        if let State::Round { acked, .. } = &mut self.state {
            if size <= self.ceiling && size > self.good {
                self.good = size;
                *acked = true;
            }
        }
    }

    /// A datagram of `size` bytes could not be sent (`EMSGSIZE`): the limit drops below
    /// it at once, and a search starts unless one is running.
    pub fn handle_too_big(&mut self, now: Instant, size: usize) {
        if size <= self.limit {
            self.limit = size.saturating_sub(STEP).max(self.floor);
            self.measured = true;
        }
        if let State::Idle { .. } = self.state {
            self.state = State::Idle { next: now };
        }
    }

    /// The path changed (the neighbour's endpoint moved): a search starts now unless one
    /// is running. The limit stays until the search ends.
    pub fn restart(&mut self, now: Instant) {
        if let State::Idle { .. } = self.state {
            self.state = State::Idle { next: now };
        }
    }

    /// Ends a round that is over. Returns true when the limit changed.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let State::Round {
            sizes,
            len,
            ends,
            acked,
            silent,
            ..
        } = self.state
        else {
            return false;
        };
        if now < ends {
            return false;
        }
        if !acked {
            if silent + 1 >= MAX_SILENT_ROUNDS {
                return self.finish(now);
            }
            // Repeat the same probes: one lost acknowledgement must not end a search.
            self.begin_round(now, sizes, len, silent + 1);
            return false;
        }
        if let Some(&above) = sizes[..len].iter().find(|&&s| usize::from(s) > self.good) {
            self.bad = self.bad.min(usize::from(above));
        }
        if self.good + STEP >= self.bad {
            return self.finish(now);
        }
        self.start_round(now);
        false
    }

    /// When [`PathMtu::handle_timeout`] or [`PathMtu::poll_probe`] next has work.
    pub fn poll_timeout(&self) -> Instant {
        match self.state {
            State::Idle { next } => next,
            State::Round { ends, .. } => ends,
        }
    }

    /// Probes the sizes strictly between what passed and what failed, spread evenly,
    /// always including the largest.
    fn start_round(&mut self, now: Instant) {
        let low = if self.good == 0 {
            self.floor
        } else {
            self.good + STEP
        };
        let high = self.bad - STEP;
        let count = if high >= low {
            (high - low) / STEP + 1
        } else {
            0
        };
        let mut sizes = [0u16; PROBES_PER_ROUND];
        let len = count.min(PROBES_PER_ROUND);
        for (i, size) in sizes[..len].iter_mut().enumerate() {
            // Evenly spaced candidates from `low` to `high`, both included.
            let k = if len == 1 {
                count - 1
            } else {
                i * (count - 1) / (len - 1)
            };
            *size = (low + k * STEP).min(usize::from(u16::MAX)) as u16;
        }
        self.begin_round(now, sizes, len, 0);
    }

    /// Starts sending a round of `len` probe sizes; `silent` rounds went unanswered before.
    fn begin_round(
        &mut self,
        now: Instant,
        sizes: [u16; PROBES_PER_ROUND],
        len: usize,
        silent: u8,
    ) {
        self.state = State::Round {
            sizes,
            len,
            sent: 0,
            ends: now + self.config.round,
            acked: false,
            silent,
        };
    }

    fn finish(&mut self, now: Instant) -> bool {
        let old = self.limit;
        if self.good > 0 {
            self.limit = self.good;
            self.measured = true;
        }
        self.state = State::Idle {
            next: now + self.config.reprobe,
        };
        self.limit != old
    }
}

#[cfg(test)]
mod tests;
