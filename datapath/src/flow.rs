//! Which queue of a multi-queue TAP device carries a frame's flow.
//!
//! The kernel hands a frame that the bridge sends to the TAP device to the queue on
//! which it last saw a frame of the same flow written (its flow table, keyed by a
//! symmetric hash of the addresses and ports), and to a queue chosen by that hash
//! otherwise. So the queue a frame from a peer is written on decides which queue, and
//! so which data-plane thread, reads the frames the pod sends back in that flow. The
//! data plane writes each received frame on [`queue_for`] its flow: one flow always on
//! one queue, both directions, and different flows spread over the queues.
//!
//! The choice depends only on the flow (IP addresses, protocol, and the ports of TCP and
//! UDP, in either order), so it is the same for every frame of a flow and for both of
//! its directions. Frames that are not IP (ARP, for one) have no flow: the caller writes
//! them on its own queue.

use crate::offload::tcp::{ETHERNET_LEN, PROTO_TCP, PROTO_UDP};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The queue among `queues` for `frame`'s flow, or `None` for a frame with no flow
/// (not IP, or too short to say).
pub fn queue_for(frame: &[u8], queues: usize) -> Option<usize> {
    if queues <= 1 {
        return (queues == 1).then_some(0);
    }
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETHERNET_LEN..)?;
    let (src, dst, proto, l4): (&[u8], &[u8], u8, Option<usize>) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            // Only a first (or whole) fragment carries the ports.
            let frag_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            let l4 = (frag_offset == 0 && ihl >= 20).then_some(ihl);
            (ip.get(12..16)?, ip.get(16..20)?, *ip.get(9)?, l4)
        }
        ETHERTYPE_IPV6 => (ip.get(8..24)?, ip.get(24..40)?, *ip.get(6)?, Some(40)),
        _ => return None,
    };
    let ports = match (proto, l4) {
        (PROTO_TCP | PROTO_UDP, Some(at)) => ip.get(at..at + 4),
        _ => None,
    };
    let (sport, dport) = ports.map_or((&[][..], &[][..]), |p| p.split_at(2));
    // The two ends in a fixed order, so that both directions hash alike.
    let (a, b) = if (src, sport) <= (dst, dport) {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    let mut h = Fnv::new();
    for part in [a.0, a.1, b.0, b.1, &[proto][..]] {
        h.write(part);
    }
    // The hash scaled onto the queues (no modulo bias worth the name for 8 queues).
    let scaled = (u64::from(h.finish()) * queues as u64) >> 32;
    Some(scaled as usize)
}

/// FNV-1a, 32 bits: fast, and spread enough for picking among a few queues (the flow
/// is chosen by the endpoints, so no secret key is needed against collisions: a peer
/// who collides its flows only puts them on one queue, as without queues).
struct Fnv(u32);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u32::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }

    fn finish(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[14 + 9] = PROTO_TCP;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn ipv6_udp(src: u8, sport: u16, dst: u8, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[14 + 6] = PROTO_UDP;
        f[14 + 8..14 + 24]
            .copy_from_slice(&[0xfd, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, src]);
        f[14 + 24..14 + 40]
            .copy_from_slice(&[0xfd, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, dst]);
        f[54..56].copy_from_slice(&sport.to_be_bytes());
        f[56..58].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn both_directions_of_a_flow_share_a_queue() {
        for port in 40_000..40_200u16 {
            let there = ipv4_tcp([10, 40, 1, 2], port, [10, 40, 2, 2], 5301);
            let back = ipv4_tcp([10, 40, 2, 2], 5301, [10, 40, 1, 2], port);
            assert_eq!(queue_for(&there, 4), queue_for(&back, 4));
            let there = ipv6_udp(1, port, 2, 53);
            let back = ipv6_udp(2, 53, 1, port);
            assert_eq!(queue_for(&there, 8), queue_for(&back, 8));
        }
    }

    #[test]
    fn flows_spread_over_every_queue() {
        for queues in 2..=8 {
            let mut seen = vec![0usize; queues];
            for port in 40_000..41_000u16 {
                let f = ipv4_tcp([10, 40, 1, 2], port, [10, 40, 2, 2], 5301);
                let q = queue_for(&f, queues).expect("a TCP flow");
                assert!(q < queues);
                seen[q] += 1;
            }
            let fair = 1000 / queues;
            assert!(
                seen.iter().all(|&n| n > fair / 2),
                "{queues} queues: {seen:?}"
            );
        }
    }

    #[test]
    fn frames_without_a_flow_have_no_queue() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(queue_for(&arp, 4), None);
        assert_eq!(queue_for(&[0u8; 10], 4), None, "too short");
        let mut cut = ipv4_tcp([10, 40, 1, 2], 1, [10, 40, 2, 2], 2);
        cut.truncate(20);
        assert_eq!(queue_for(&cut, 4), None, "no addresses");
        assert_eq!(queue_for(&arp, 1), Some(0), "one queue: always it");
        // A later fragment has no ports, and still a queue, by its addresses.
        let mut frag = ipv4_tcp([10, 40, 1, 2], 1, [10, 40, 2, 2], 2);
        frag[14 + 7] = 0x10;
        assert!(queue_for(&frag, 4).is_some());
    }
}
