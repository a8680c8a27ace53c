//! The data plane's control messages to one neighbour, carried over the control link.
//!
//! Rekey offers, "I hear your datagrams" notices, path MTU probe acknowledgements, the
//! fast path's hello (eligibility flags) and VXLAN probe acknowledgements, and the hole
//! punching request a common neighbour sends to both ends of an unconnected pair: the
//! sleeve and fast-path machines emit and consume them, the router only moves the bytes
//! (as mesh unicasts on its `sleeve` gossip channel). Parsing is strict: a wrong length
//! is refused, and each message has exactly one encoding.

use crate::fastdp::Hello;
use crate::sleeve::keys::RekeyOffer;
use gossip::peer::{PeerId, PEER_ID_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const KIND_OFFER: u8 = 1;
const KIND_HEARD: u8 = 2;
const KIND_PROBE_ACK: u8 = 3;
const KIND_FASTDP_HELLO: u8 = 4;
const KIND_FASTDP_ACK: u8 = 5;
const KIND_PUNCH: u8 = 6;

/// Length of a punch request's body with an IPv4 / IPv6 endpoint.
const PUNCH_V4_LEN: usize = PEER_ID_LEN + 8 + 1 + 4 + 2;
const PUNCH_V6_LEN: usize = PEER_ID_LEN + 8 + 1 + 16 + 2;

/// "Send to `peer` at `endpoint` now": from a neighbour that has a confirmed UDP path to
/// both of us and sees that we have no link to each other. Both ends get one, with the
/// same `attempt`, and salt their new sleeve session with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchRequest {
    /// The other end.
    pub peer: PeerId,
    /// Where the sender sees the other end's datagrams come from.
    pub endpoint: SocketAddr,
    /// Chosen at random by the sender, the same in both requests.
    pub attempt: u64,
}

/// A data-plane control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleeveMessage {
    /// A rekey offer.
    Offer(RekeyOffer),
    /// The sender receives our datagrams.
    Heard,
    /// The sender received our path MTU probe of this many bytes (UDP payload).
    ProbeAck(u16),
    /// The sender's fast-path flags (offer, no encryption, trusts us).
    FastdpHello(Hello),
    /// The sender received our VXLAN probe with this nonce.
    FastdpAck(u64),
    /// Punch a hole to another peer (see [`PunchRequest`]).
    Punch(PunchRequest),
}

impl SleeveMessage {
    /// Wire form: a kind byte, then the body.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SleeveMessage::Offer(offer) => {
                let mut v = vec![KIND_OFFER];
                v.extend_from_slice(&offer.to_bytes());
                v
            }
            SleeveMessage::Heard => vec![KIND_HEARD],
            SleeveMessage::ProbeAck(size) => {
                let [hi, lo] = size.to_be_bytes();
                vec![KIND_PROBE_ACK, hi, lo]
            }
            SleeveMessage::FastdpHello(h) => vec![KIND_FASTDP_HELLO, h.to_byte()],
            SleeveMessage::FastdpAck(nonce) => {
                let mut v = vec![KIND_FASTDP_ACK];
                v.extend_from_slice(&nonce.to_be_bytes());
                v
            }
            SleeveMessage::Punch(p) => {
                let mut v = Vec::with_capacity(1 + PUNCH_V6_LEN);
                v.push(KIND_PUNCH);
                v.extend_from_slice(&p.peer.0);
                v.extend_from_slice(&p.attempt.to_be_bytes());
                match p.endpoint.ip() {
                    IpAddr::V4(ip) => {
                        v.push(4);
                        v.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        v.push(6);
                        v.extend_from_slice(&ip.octets());
                    }
                }
                v.extend_from_slice(&p.endpoint.port().to_be_bytes());
                v
            }
        }
    }

    /// Parses the wire form strictly.
    pub fn decode(bytes: &[u8]) -> Option<SleeveMessage> {
        match bytes.split_first()? {
            (&KIND_OFFER, body) if body.len() == RekeyOffer::WIRE_LEN => {
                RekeyOffer::from_bytes(body).map(SleeveMessage::Offer)
            }
            (&KIND_HEARD, []) => Some(SleeveMessage::Heard),
            (&KIND_PROBE_ACK, &[hi, lo]) => {
                let size = u16::from_be_bytes([hi, lo]);
                is_datagram_size(size).then_some(SleeveMessage::ProbeAck(size))
            }
            (&KIND_FASTDP_HELLO, &[flags]) => {
                Hello::from_byte(flags).map(SleeveMessage::FastdpHello)
            }
            (&KIND_FASTDP_ACK, body) if body.len() == 8 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(body);
                Some(SleeveMessage::FastdpAck(u64::from_be_bytes(n)))
            }
            (&KIND_PUNCH, body) => decode_punch(body).map(SleeveMessage::Punch),
            _ => None,
        }
    }
}

/// A punch request's body: peer, attempt, family (4 or 6), address, port. One form per
/// request: an IPv4-mapped IPv6 address is refused (it has its IPv4 form), and so are
/// port 0 and the unspecified address.
fn decode_punch(body: &[u8]) -> Option<PunchRequest> {
    if body.len() != PUNCH_V4_LEN && body.len() != PUNCH_V6_LEN {
        return None;
    }
    let (peer, rest) = body.split_at(PEER_ID_LEN);
    let (attempt, rest) = rest.split_at(8);
    let (family, rest) = rest.split_first()?;
    let (addr, port) = rest.split_at(rest.len() - 2);
    let ip = match (family, addr.len()) {
        (4, 4) => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        (6, 16) => {
            let octets: [u8; 16] = addr.try_into().ok()?;
            let ip = Ipv6Addr::from(octets);
            if ip.to_ipv4_mapped().is_some() {
                return None;
            }
            IpAddr::V6(ip)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    if port == 0 || ip.is_unspecified() {
        return None;
    }
    Some(PunchRequest {
        peer: PeerId(peer.try_into().ok()?),
        endpoint: SocketAddr::new(ip, port),
        attempt: u64::from_be_bytes(attempt.try_into().ok()?),
    })
}

/// Whether `size` is a length a sleeve datagram can have: a header and a tag around a
/// plaintext that is a multiple of 16 bytes. Probes are never plain keepalives.
fn is_datagram_size(size: u16) -> bool {
    use crate::sleeve::MIN_DATAGRAM_LEN;
    let size = usize::from(size);
    size > MIN_DATAGRAM_LEN && (size - MIN_DATAGRAM_LEN) % 16 == 0
}

/// Fuzz entry point: decoding never panics.
pub fn fuzz_decode_sleeve_message(data: &[u8]) {
    let _ = SleeveMessage::decode(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        let offer = RekeyOffer {
            epoch: 3,
            ephemeral_public: [9; 32],
            receiver_index: 77,
            link: crate::sleeve::keys::LinkId([8; 8]),
        };
        for m in [
            SleeveMessage::Offer(offer),
            SleeveMessage::Heard,
            SleeveMessage::ProbeAck(1248),
            SleeveMessage::ProbeAck(65_520),
            SleeveMessage::FastdpHello(Hello {
                enabled: true,
                no_encryption: false,
                trusts_you: true,
            }),
            SleeveMessage::FastdpAck(u64::MAX - 3),
            SleeveMessage::Punch(PunchRequest {
                peer: PeerId([7; PEER_ID_LEN]),
                endpoint: "198.18.0.253:6783".parse().unwrap(),
                attempt: u64::MAX,
            }),
            SleeveMessage::Punch(PunchRequest {
                peer: PeerId([8; PEER_ID_LEN]),
                endpoint: "[fd00::1]:1".parse().unwrap(),
                attempt: 0,
            }),
        ] {
            assert_eq!(SleeveMessage::decode(&m.encode()), Some(m));
        }
        let probe_junk: [&[u8]; 5] = [&[3], &[3, 4], &[3, 0, 32], &[3, 4, 0xe1], &[3, 4, 0xe0, 0]];
        for junk in [
            &[][..],
            &[0],
            &[2, 0],
            &[1, 1, 2, 3],
            &[7],
            &[4],
            &[4, 8],
            &[4, 1, 1],
            &[5, 1],
        ]
        .into_iter()
        .chain(probe_junk)
        {
            assert_eq!(SleeveMessage::decode(junk), None, "{junk:?}");
        }
        let punch = |family: u8, addr: &[u8], port: [u8; 2]| {
            let mut v = vec![6];
            v.extend_from_slice(&[1; PEER_ID_LEN]);
            v.extend_from_slice(&[0; 8]);
            v.push(family);
            v.extend_from_slice(addr);
            v.extend_from_slice(&port);
            v
        };
        assert!(SleeveMessage::decode(&punch(4, &[198, 18, 0, 1], [26, 127])).is_some());
        let mapped = Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped().octets();
        for junk in [
            punch(4, &[198, 18, 0, 1], [0, 0]),
            punch(4, &[0, 0, 0, 0], [26, 127]),
            punch(6, &[198, 18, 0, 1], [26, 127]),
            punch(4, &[0; 16], [26, 127]),
            punch(6, &mapped, [26, 127]),
            punch(5, &[198, 18, 0, 1], [26, 127]),
            punch(4, &[198, 18, 0, 1, 0], [26, 127]),
        ] {
            assert_eq!(SleeveMessage::decode(&junk), None, "{junk:?}");
        }
    }

    #[test]
    fn fuzz_replay_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let seeds = [
            SleeveMessage::ProbeAck(1248).encode(),
            SleeveMessage::Heard.encode(),
            SleeveMessage::FastdpHello(Hello::default()).encode(),
            SleeveMessage::FastdpAck(7).encode(),
            SleeveMessage::Punch(PunchRequest {
                peer: PeerId([7; PEER_ID_LEN]),
                endpoint: "198.18.0.253:6783".parse().unwrap(),
                attempt: 9,
            })
            .encode(),
            SleeveMessage::Offer(RekeyOffer {
                epoch: 1,
                ephemeral_public: [1; 32],
                receiver_index: 2,
                link: crate::sleeve::keys::LinkId([3; 8]),
            })
            .encode(),
        ];
        for i in 0..5000 {
            let mut d = seeds[i % seeds.len()].clone();
            for _ in 0..rng.gen_range(0..4) {
                let j = rng.gen_range(0..d.len());
                d[j] = rng.gen();
            }
            d.truncate(rng.gen_range(0..=d.len()));
            fuzz_decode_sleeve_message(&d);
            if let Some(m) = SleeveMessage::decode(&d) {
                assert_eq!(m.encode(), d, "decoding is strict: one form per message");
            }
            let random: Vec<u8> = (0..rng.gen_range(0..48)).map(|_| rng.gen()).collect();
            fuzz_decode_sleeve_message(&random);
        }
    }
}
