//! The receiver's side: TCP segments that arrived together merged into superframes
//! before they are written to the TAP device, so that the bridge, the veth and the
//! container's TCP see one 64 KiB frame instead of ~45; and UDP datagrams of one flow
//! merged the same way into UDP superframes (`GSO_UDP_L4`), which the kernel cuts back
//! into the same datagrams at the container's socket, so that the bridge and the veth
//! carry one frame instead of up to [`MAX_UDP_SEGMENTS`].
//!
//! A segment joins the superframe being built for its flow (same Ethernet header, IP
//! addresses, ports) only if it continues it exactly: next sequence number, same
//! acknowledgement, same TCP options and header lengths, same IPv4 TOS/TTL/DF and next
//! identification (IPv6: same traffic class, flow label, hop limit), flags ACK (ECE
//! allowed if the first had it) with PSH only on the last, a payload of the first's
//! size (the last may be shorter, and ends it), a TCP checksum that verifies, and room
//! left under 64 KiB. Anything else ends the flow's superframe, which is written first,
//! so a flow's frames keep their order; frames that are neither are written as they came.
//!
//! A UDP datagram joins its flow's superframe only if the kernel's segmentation will
//! give it back byte for byte: a payload of the first's size (the last may be shorter,
//! and ends it), the same IP fields as for TCP and the next IPv4 identification, a
//! UDP checksum that is present and verifies (the kernel writes one in every segment),
//! and at most [`MAX_UDP_SEGMENTS`] datagrams.
//!
//! Sans-IO: frames go in through [`Coalescer::push`], and out (a `virtio_net_hdr` and
//! a frame) through a callback; [`Coalescer::flush`] writes what is held at the end of
//! a batch. The buffers are allocated once, in [`Coalescer::new`].

use super::checksum;
use super::tcp::{flags, Ip, Layout, ETHERNET_LEN, PROTO_TCP, PROTO_UDP};
use super::vnet::{Repr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_HDR_LEN};

/// Flows held at once; a further flow writes out the oldest.
pub const MAX_FLOWS: usize = 8;
/// The longest superframe built: the IP length field's limit, plus Ethernet.
pub const MAX_SUPERFRAME: usize = ETHERNET_LEN + u16::MAX as usize;
/// The most datagrams in one UDP superframe (the kernel's own limit for UDP GSO sends,
/// `UDP_MAX_SEGMENTS`, is 128).
pub const MAX_UDP_SEGMENTS: u32 = 64;

/// Where a coalesced frame goes: its `virtio_net_hdr` and the frame.
pub type Output<'o> = dyn FnMut(&[u8; VNET_HDR_LEN], &[u8]) + 'o;

/// The superframe being built for one flow.
struct Flow {
    buf: Box<[u8]>,
    len: usize,
    layout: Layout,
    gso_size: usize,
    segments: u32,
    next_seq: u32,
    next_id: u16,
    /// A shorter or PSH segment ended it: nothing more may join.
    closed: bool,
    /// When it was started, for choosing which to write out when all are in use.
    started: u64,
}

/// Merges runs of TCP segments into superframes.
pub struct Coalescer {
    flows: Vec<Flow>,
    /// Whether UDP datagrams are merged too (the TAP device takes UDP superframes).
    udp: bool,
    used: usize,
    clock: u64,
    /// Superframes written (of two or more segments).
    pub merged: u64,
    /// Segments that went into them.
    pub merged_segments: u64,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

impl Coalescer {
    /// A coalescer with its buffers.
    pub fn new() -> Coalescer {
        let flows = (0..MAX_FLOWS)
            .map(|_| Flow {
                buf: vec![0; MAX_SUPERFRAME].into_boxed_slice(),
                len: 0,
                layout: Layout {
                    ip: Ip::V4,
                    proto: PROTO_TCP,
                    l4: 0,
                    payload: 0,
                    end: 0,
                },
                gso_size: 0,
                segments: 0,
                next_seq: 0,
                next_id: 0,
                closed: false,
                started: 0,
            })
            .collect();
        Coalescer {
            flows,
            udp: true,
            used: 0,
            clock: 0,
            merged: 0,
            merged_segments: 0,
        }
    }

    /// The same, merging TCP only: for a kernel that does not take UDP superframes
    /// ([`Tap::takes_udp_superframes`](crate::tap::Tap::takes_udp_superframes)).
    pub fn without_udp(mut self) -> Coalescer {
        self.udp = false;
        self
    }

    /// Takes one received frame; writes out through `out` what can no longer grow.
    pub fn push(&mut self, frame: &[u8], out: &mut Output<'_>) {
        let layout = Layout::parse(frame, true)
            .or_else(|| self.udp.then(|| Layout::parse_udp(frame, true)).flatten());
        let Some(layout) = layout else {
            out(&Repr::PLAIN.to_bytes(), frame);
            return;
        };
        let at = self.flows[..self.used]
            .iter()
            .position(|f| same_flow(f, frame, &layout));
        if !is_candidate(frame, &layout) {
            if let Some(at) = at {
                self.write(at, out);
            }
            out(&Repr::PLAIN.to_bytes(), frame);
            return;
        }
        if let Some(at) = at {
            if self.try_append(at, frame, &layout) {
                return;
            }
            self.write(at, out);
        }
        if self.used == MAX_FLOWS {
            let oldest = (0..self.used)
                .min_by_key(|&i| self.flows[i].started)
                .unwrap_or(0);
            self.write(oldest, out);
        }
        self.start(frame, layout);
    }

    /// Writes out every superframe held.
    pub fn flush(&mut self, out: &mut Output<'_>) {
        while self.used > 0 {
            self.write(self.used - 1, out);
        }
    }

    fn start(&mut self, frame: &[u8], layout: Layout) {
        self.clock += 1;
        let f = &mut self.flows[self.used];
        self.used += 1;
        f.buf[..frame.len()].copy_from_slice(frame);
        f.len = frame.len();
        f.layout = layout;
        f.gso_size = layout.end - layout.payload;
        f.segments = 1;
        f.next_id = ipv4_id(frame, &layout).wrapping_add(1);
        if layout.proto == PROTO_TCP {
            f.next_seq = layout.seq(frame).wrapping_add(f.gso_size as u32);
            f.closed = layout.flags(frame) & flags::PSH != 0;
        } else {
            f.next_seq = 0;
            f.closed = false;
        }
        f.started = self.clock;
    }

    fn try_append(&mut self, at: usize, frame: &[u8], l: &Layout) -> bool {
        let f = &mut self.flows[at];
        let payload = l.end - l.payload;
        let head = &f.buf[..f.layout.payload];
        let ok = !f.closed
            && l.payload == f.layout.payload
            && l.l4 == f.layout.l4
            && payload <= f.gso_size
            && f.len + payload <= MAX_SUPERFRAME
            && ipv4_id(frame, l) == if l.ip == Ip::V4 { f.next_id } else { 0 }
            && same_ip_fields(head, frame, l)
            && match l.proto {
                // Sequence, acknowledgement, header length, the flags but PSH, and the
                // options.
                PROTO_TCP => {
                    l.seq(frame) == f.next_seq
                        && head[l.l4 + 8..l.l4 + 13] == frame[l.l4 + 8..l.l4 + 13]
                        && head[l.l4 + 13] == frame[l.l4 + 13] & !flags::PSH
                        && head[l.l4 + 20..l.payload] == frame[l.l4 + 20..l.payload]
                }
                _ => f.segments < MAX_UDP_SEGMENTS,
            };
        if !ok {
            return false;
        }
        f.buf[f.len..f.len + payload].copy_from_slice(&frame[l.payload..]);
        f.len += payload;
        f.segments += 1;
        f.next_id = f.next_id.wrapping_add(1);
        if l.proto == PROTO_TCP {
            f.next_seq = f.next_seq.wrapping_add(payload as u32);
            if frame[l.l4 + 13] & flags::PSH != 0 {
                f.closed = true;
                f.buf[l.l4 + 13] |= flags::PSH;
            }
        }
        if payload < f.gso_size {
            f.closed = true;
        }
        true
    }

    /// Writes out flow `at` and frees its place.
    fn write(&mut self, at: usize, out: &mut Output<'_>) {
        let f = &mut self.flows[at];
        let frame = &mut f.buf[..f.len];
        if f.segments == 1 {
            out(&Repr::PLAIN.to_bytes(), frame);
        } else {
            let l = f.layout;
            l.set_ip_len(frame, f.len);
            let (gso_type, csum_offset) = match (l.proto, l.ip) {
                (PROTO_TCP, Ip::V4) => (GSO_TCPV4, 16),
                (PROTO_TCP, Ip::V6) => (GSO_TCPV6, 16),
                _ => {
                    // The UDP length of the whole; the kernel writes each segment's.
                    let len = (f.len - l.l4) as u16;
                    frame[l.l4 + 4..l.l4 + 6].copy_from_slice(&len.to_be_bytes());
                    (GSO_UDP_L4, 6)
                }
            };
            // The checksum field holds the pseudo-header sum; the kernel adds the rest.
            let partial = checksum::fold(l.pseudo_header(frame, f.len - l.l4));
            frame[l.l4 + csum_offset..l.l4 + csum_offset + 2]
                .copy_from_slice(&partial.to_be_bytes());
            let vnet = Repr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: l.payload as u16,
                gso_size: f.gso_size as u16,
                csum_start: l.l4 as u16,
                csum_offset: csum_offset as u16,
            };
            self.merged += 1;
            self.merged_segments += u64::from(f.segments);
            out(&vnet.to_bytes(), frame);
        }
        self.used -= 1;
        self.flows.swap(at, self.used);
    }
}

/// Whether a TCP segment or UDP datagram may start or join a superframe at all.
fn is_candidate(frame: &[u8], l: &Layout) -> bool {
    let plain_ip = l.ip == Ip::V6 || l.l4 == ETHERNET_LEN + 20;
    if l.proto == PROTO_UDP {
        // A zero checksum is "none" (IPv4): the kernel's segments would carry one.
        return l.payload < l.end
            && plain_ip
            && frame[l.l4 + 6..l.l4 + 8] != [0, 0]
            && l.checksum_ok(frame);
    }
    let f = l.flags(frame);
    l.payload < l.end
        && f & flags::ACK != 0
        && f & !(flags::ACK | flags::PSH | flags::ECE) == 0
        && plain_ip
        && l.checksum_ok(frame)
}

/// Whether `frame` belongs to the flow `f` holds: Ethernet header, addresses, ports.
fn same_flow(f: &Flow, frame: &[u8], l: &Layout) -> bool {
    let head = &f.buf[..f.layout.payload];
    f.layout.ip == l.ip
        && f.layout.proto == l.proto
        && head[..ETHERNET_LEN] == frame[..ETHERNET_LEN]
        && f.layout.addresses(head) == l.addresses(frame)
        && head[f.layout.l4..f.layout.l4 + 4] == frame[l.l4..l.l4 + 4]
}

/// The IP fields that must not change within a superframe.
fn same_ip_fields(head: &[u8], frame: &[u8], l: &Layout) -> bool {
    let ip = ETHERNET_LEN;
    match l.ip {
        // TOS; flags and fragment offset; TTL.
        Ip::V4 => head[ip + 1] == frame[ip + 1] && head[ip + 6..ip + 9] == frame[ip + 6..ip + 9],
        // Version, traffic class, flow label; hop limit.
        Ip::V6 => head[ip..ip + 4] == frame[ip..ip + 4] && head[ip + 7] == frame[ip + 7],
    }
}

fn ipv4_id(frame: &[u8], l: &Layout) -> u16 {
    match l.ip {
        Ip::V4 => u16::from_be_bytes([frame[ETHERNET_LEN + 4], frame[ETHERNET_LEN + 5]]),
        Ip::V6 => 0,
    }
}
