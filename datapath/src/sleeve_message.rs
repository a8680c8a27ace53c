//! The data plane's control messages to one neighbour, carried over the control link.
//!
//! Rekey offers, "I hear your datagrams" notices, path MTU probe acknowledgements, and
//! the fast path's hello (eligibility flags) and VXLAN probe acknowledgements: the
//! sleeve and fast-path machines emit and consume them, the router only moves the bytes
//! (as mesh unicasts on its `sleeve` gossip channel). Parsing is strict: a wrong length
//! is refused, and each message has exactly one encoding.

use crate::fastdp::Hello;
use crate::sleeve::keys::RekeyOffer;

const KIND_OFFER: u8 = 1;
const KIND_HEARD: u8 = 2;
const KIND_PROBE_ACK: u8 = 3;
const KIND_FASTDP_HELLO: u8 = 4;
const KIND_FASTDP_ACK: u8 = 5;

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
            _ => None,
        }
    }
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
            SleeveMessage::Offer(RekeyOffer {
                epoch: 1,
                ephemeral_public: [1; 32],
                receiver_index: 2,
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
