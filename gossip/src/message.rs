//! Control messages carried in link records.
//!
//! A message is one version byte ([`WIRE_VERSION`]) followed by a [`Message`] encoded by
//! [`crate::codec`]. The first message each side sends on a new link is [`Hello`]; after
//! that come heartbeats and gossip. Gossip payloads (`summary`, `update`, `payload`) are
//! opaque bytes here: each [`crate::channel::GossipChannel`] encodes and validates its own.
//!
//! [`Message::decode`] is for untrusted input: it never panics, caps the size, and checks
//! every string and list bound before the mesh looks at the contents.

use crate::codec::{self, DecodeError};
use crate::identity::{self, Identity, ProofError, Signature};
use crate::peer::{PeerId, PeerUid};
use serde::{Deserialize, Serialize};

/// First byte of every message; bumped on an incompatible change of the encoding.
pub const WIRE_VERSION: u8 = 1;
/// Control-protocol version announced in [`Hello`]; routers of two versions refuse to
/// link, with a message that says so. 2: signed topology records (`RecordDelta.base`,
/// `.proof`) and signed unicasts ([`Unicast`]), issue 14. 3: unsigned unicasts to a
/// neighbour ([`Unicast::proof`] optional), and the sleeve beside it: a rekey offer
/// names its control link, a keepalive may say "I hear you". 4: heartbeats are asked
/// for and answered ([`Message::Heartbeat`], [`Message::HeartbeatAnswer`]), and a link
/// whose sleeve datagrams arrive needs none. 5: IPAM bootstrap claims are signed by
/// their participant (the `ipam` channel's `Bootstrap` gossip).
pub const PROTOCOL_VERSION: u16 = 5;
/// Largest message accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = codec::MAX_DECODE_LEN;
/// Longest nickname accepted, in bytes.
pub const MAX_NICKNAME_LEN: usize = 64;
/// Longest gossip channel name accepted, in bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 32;
/// Most channel digests in one [`Message::Digest`].
pub const MAX_DIGESTS: usize = 64;
/// Relays after which a broadcast or unicast is dropped; a guard against forwarding
/// loops while peers' views of the topology disagree.
pub const MAX_HOPS: u8 = 64;

/// The first message on a link: who we are in this process run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u16,
    /// The sender's incarnation; a new value under a known id means a restart.
    pub uid: PeerUid,
    /// The sender's nickname (at most [`MAX_NICKNAME_LEN`] bytes).
    pub nickname: String,
    /// The TCP port the sender accepts links on (for discovery).
    pub listen_port: u16,
    /// The sender's per-process link counter; orders two links dialled by the same peer.
    pub link_seq: u64,
}

/// One channel's state fingerprint, for anti-entropy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDigest {
    /// The gossip channel.
    pub channel: String,
    /// [`crate::channel::GossipChannel::digest`] of the sender's state.
    pub digest: u64,
}

/// A control message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Sent once, first, by both ends of a new link.
    Hello(Hello),
    /// "Are you there?": sent by a link that heard nothing from the peer for a while
    /// (see [`crate::mesh::HEARTBEAT_ASK_AFTER`]); the peer answers at once with
    /// [`Message::HeartbeatAnswer`].
    Heartbeat,
    /// "My state on these channels has this fingerprint."
    Digest(Vec<ChannelDigest>),
    /// A (chunk of a) channel summary. The receiver answers with the updates the sender
    /// lacks and, if `reply_wanted`, with its own summary of what it lacks itself.
    Summary {
        /// The gossip channel.
        channel: String,
        /// Whether the receiver should answer with its own summary.
        reply_wanted: bool,
        /// Channel-encoded summary.
        #[serde(with = "crate::codec::bytes")]
        summary: Vec<u8>,
    },
    /// State for a neighbour, from a summary exchange; never relayed.
    Update {
        /// The gossip channel.
        channel: String,
        /// Channel-encoded delta.
        #[serde(with = "crate::codec::bytes")]
        update: Vec<u8>,
    },
    /// A delta relayed along `source`'s broadcast tree to every peer.
    Broadcast {
        /// The root of the broadcast tree.
        source: PeerId,
        /// Random per broadcast: each peer relays a given id once.
        id: u64,
        /// Relays so far.
        hops: u8,
        /// The gossip channel.
        channel: String,
        /// Channel-encoded delta.
        #[serde(with = "crate::codec::bytes")]
        update: Vec<u8>,
    },
    /// A payload for one peer, relayed along unicast routes.
    Unicast(Unicast),
    /// The answer to a [`Message::Heartbeat`]; never answered itself.
    HeartbeatAnswer,
}

/// A payload for one peer, relayed along unicast routes, signed by its source.
///
/// The destination checks the proof before the channel sees the payload, so a channel's
/// `source` is always the peer that made the message, wherever it was relayed. The
/// signature covers source, destination, channel and payload, not `hops` (relays raise
/// it). It proves origin, not freshness: a relay can replay a unicast it saw, so
/// channels treat repeats as repeats (their messages are idempotent or carry their own
/// counters).
///
/// A unicast whose first hop is its destination goes unsigned ([`Unicast::direct`]):
/// the control link it travels on already proves its source (the Noise handshake binds
/// the link to the peer's static key), so the destination accepts it only from a link
/// to `source`, and no relay forwards it. In a full mesh that is nearly every unicast:
/// each confirmed sleeve path is reported every 12.5 s each way, and an Ed25519
/// signature and its check cost more than the rest of the message's journey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unicast {
    /// The sender.
    pub source: PeerId,
    /// The recipient.
    pub dest: PeerId,
    /// Relays so far.
    pub hops: u8,
    /// The gossip channel.
    pub channel: String,
    /// Channel-defined payload.
    #[serde(with = "crate::codec::bytes")]
    pub payload: Vec<u8>,
    /// The source's proof; `None` on a unicast sent straight to its destination.
    pub proof: Option<UnicastProof>,
}

/// A unicast source's proof of origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnicastProof {
    /// The source's Ed25519 key (binds to `source`, see [`crate::identity`]).
    pub key: [u8; 32],
    /// The source's signature over [`Unicast::signed_bytes`].
    pub signature: Signature,
}

impl Unicast {
    /// A new unicast from `identity`, signed, for relaying.
    pub fn new(identity: &Identity, dest: PeerId, channel: &str, payload: Vec<u8>) -> Unicast {
        let mut unicast = Unicast::direct(identity.id(), dest, channel, payload);
        unicast.proof = Some(UnicastProof {
            key: *identity.signing_key(),
            signature: identity.sign(identity::DOMAIN_UNICAST, &unicast.signed_bytes()),
        });
        unicast
    }

    /// A new unicast from `source`, unsigned: only for the control link to `dest`.
    pub fn direct(source: PeerId, dest: PeerId, channel: &str, payload: Vec<u8>) -> Unicast {
        Unicast {
            source,
            dest,
            hops: 0,
            channel: channel.into(),
            payload,
            proof: None,
        }
    }

    /// What the source signs: source, destination, channel, payload.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.channel.len() + self.payload.len());
        out.extend_from_slice(&self.source.0);
        out.extend_from_slice(&self.dest.0);
        out.push(self.channel.len() as u8);
        out.extend_from_slice(self.channel.as_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Whether `source` made this message, received on a control link to `link_peer`:
    /// its signature, or for an unsigned one, that the link is to `source` itself.
    pub fn verify(&self, link_peer: &PeerId) -> Result<(), ProofError> {
        let Some(proof) = &self.proof else {
            return if *link_peer == self.source {
                Ok(())
            } else {
                Err(ProofError::Unsigned)
            };
        };
        identity::verify(
            &self.source,
            &proof.key,
            identity::DOMAIN_UNICAST,
            &self.signed_bytes(),
            &proof.signature,
        )
    }
}

/// Why received bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Zero-length record.
    #[error("empty message")]
    Empty,
    /// The first byte is not a wire version we speak.
    #[error("unsupported message encoding version {0} (this router speaks {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// The body could not be decoded.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// Decoded, but a field is out of bounds.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

impl Message {
    /// Encodes the message with its version byte.
    pub fn encode(&self) -> Vec<u8> {
        let body = codec::encode(self);
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(WIRE_VERSION);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes and validates a message from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
        let (&version, body) = bytes.split_first().ok_or(MessageError::Empty)?;
        if version != WIRE_VERSION {
            return Err(MessageError::UnsupportedVersion(version));
        }
        let message: Message = codec::decode(body)?;
        message.validate()?;
        Ok(message)
    }

    /// Checks every bound that decoding alone does not.
    pub fn validate(&self) -> Result<(), MessageError> {
        match self {
            Message::Hello(hello) if hello.nickname.len() > MAX_NICKNAME_LEN => {
                Err(MessageError::Invalid("nickname longer than 64 bytes"))
            }
            Message::Hello(_) | Message::Heartbeat | Message::HeartbeatAnswer => Ok(()),
            Message::Digest(digests) => {
                if digests.len() > MAX_DIGESTS {
                    return Err(MessageError::Invalid("too many channel digests"));
                }
                digests.iter().try_for_each(|d| check_channel(&d.channel))
            }
            Message::Summary { channel, .. } | Message::Update { channel, .. } => {
                check_channel(channel)
            }
            Message::Broadcast { channel, hops, .. }
            | Message::Unicast(Unicast { channel, hops, .. }) => {
                if *hops > MAX_HOPS {
                    return Err(MessageError::Invalid("hop count over the limit"));
                }
                check_channel(channel)
            }
        }
    }

    /// Whether this is gossip (counted in the gossip statistics) rather than link control.
    pub fn is_gossip(&self) -> bool {
        !matches!(
            self,
            Message::Hello(_) | Message::Heartbeat | Message::HeartbeatAnswer
        )
    }
}

fn check_channel(name: &str) -> Result<(), MessageError> {
    if name.is_empty() || name.len() > MAX_CHANNEL_NAME_LEN {
        return Err(MessageError::Invalid(
            "channel name empty or longer than 32 bytes",
        ));
    }
    Ok(())
}

/// Fuzz entry point: decodes arbitrary bytes; never panics. A decoded message must
/// survive an encode/decode round trip unchanged.
pub fn fuzz_decode_message(data: &[u8]) {
    if let Ok(message) = Message::decode(data) {
        let again = Message::decode(&message.encode());
        assert_eq!(again.as_ref(), Ok(&message), "round trip changed a message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::fuzz;

    fn samples() -> Vec<Message> {
        let id = PeerId([7; 16]);
        vec![
            Message::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                uid: PeerUid(42),
                nickname: "host1".into(),
                listen_port: 6783,
                link_seq: 3,
            }),
            Message::Heartbeat,
            Message::HeartbeatAnswer,
            Message::Digest(vec![ChannelDigest {
                channel: "topology".into(),
                digest: 0xdead_beef,
            }]),
            Message::Summary {
                channel: "topology".into(),
                reply_wanted: true,
                summary: vec![1, 2, 3],
            },
            Message::Update {
                channel: "ipam".into(),
                update: vec![9; 40],
            },
            Message::Broadcast {
                source: id,
                id: 77,
                hops: 2,
                channel: "topology".into(),
                update: vec![0; 10],
            },
            Message::Unicast(Unicast::new(
                &Identity::from_secret_bytes([2; 32]),
                PeerId([1; 16]),
                "ipam",
                vec![5],
            )),
        ]
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn bounds_are_checked() {
        let long = Message::Hello(Hello {
            protocol_version: 1,
            uid: PeerUid(1),
            nickname: "x".repeat(MAX_NICKNAME_LEN + 1),
            listen_port: 1,
            link_seq: 0,
        });
        assert!(matches!(
            Message::decode(&long.encode()),
            Err(MessageError::Invalid(_))
        ));
        let bad_channel = Message::Update {
            channel: String::new(),
            update: vec![],
        };
        assert!(Message::decode(&bad_channel.encode()).is_err());
        assert_eq!(Message::decode(&[]), Err(MessageError::Empty));
        assert_eq!(
            Message::decode(&[9, 1]),
            Err(MessageError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn fuzz_decode_message_never_panics() {
        let corpus: Vec<Vec<u8>> = samples().iter().map(Message::encode).collect();
        for input in fuzz::inputs(0x5eed_0001, &corpus, 4000) {
            fuzz_decode_message(&input);
        }
    }
}
