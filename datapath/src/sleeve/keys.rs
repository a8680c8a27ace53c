//! Epoch keys: the X25519 rekey exchange and the key derivation.
//!
//! Every epoch, each side of a neighbour pair sends a [`RekeyOffer`] over the control
//! link (already authenticated and encrypted by Noise): the epoch number, a fresh X25519
//! ephemeral public key, the receiver index under which it wants to find the new
//! key in datagram headers, and the [`LinkId`] of the control link its keys are bound
//! to. Once a side holds its own offer and the peer's for the same epoch and link it
//! derives two 32-byte ChaCha20-Poly1305 keys, one per direction.
//!
//! # Link id
//!
//! Offers travel over the mesh, not over one link, and two routers that dial each other
//! at once hold two links for a moment (the mesh keeps one and closes the other): an
//! offer made for the closed link's session can reach the session of the kept one.
//! Its epoch number may even match the one that session waits for, and keys agreed
//! from it would be salted with the other link's hash: both sides would install keys
//! that open nothing, and stay so until the next rekey. So every offer names its link,
//! `LinkId = MAC(key = handshake_hash, "weft/1 sleeve link")[..8]`, and an offer for
//! another link is refused ([`RekeyError::OtherLink`]); the initiator's own offer then
//! times out and it offers again.
//!
//! # Key derivation
//!
//! HKDF's extract-then-expand shape (RFC 5869), with keyed BLAKE2s-256 (RFC 7693,
//! `MAC(key, msg)`) in place of HMAC. Keyed BLAKE2s is a PRF on its own, so the HMAC
//! wrapping is not needed:
//!
//! ```text
//! ikm  = X25519(e_local, e_remote)                    (must be contributory)
//! info = "weft/1 sleeve" ‖ epoch ‖ index_initiator ‖ index_responder  (u32 big-endian each)
//! prk  = MAC(key = handshake_hash, ikm)               extract; the control link's Noise
//!                                                     handshake hash is the salt
//! T1   = MAC(key = prk, info ‖ 0x01)                  expand
//! T2   = MAC(key = prk, T1 ‖ info ‖ 0x02)
//! K_i2r = T1,  K_r2i = T2
//! ```
//!
//! Salting with the handshake hash binds the epoch keys to one authenticated control link,
//! so two links between the same pair of routers never share keys. The "initiator" is
//! the side with the lower [`PeerId`]: both sides can compute that alone, so they agree
//! on which key is which without another message.

use blake2::digest::Mac;
use blake2::Blake2sMac256;
use gossip::peer::PeerId;
use rand::{CryptoRng, RngCore};
use thiserror::Error;
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

/// The label at the start of the KDF's info string.
pub const KDF_LABEL: &[u8] = b"weft/1 sleeve";
/// The message MACed under the handshake hash to name a control link.
pub const LINK_LABEL: &[u8] = b"weft/1 sleeve link";

/// Names the control link (its Noise handshake) an offer's keys are bound to; see the
/// module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(pub [u8; 8]);

impl LinkId {
    /// The id of the control link whose Noise handshake hash is `handshake_hash`.
    pub fn of(handshake_hash: &[u8; 32]) -> LinkId {
        let tag = mac(handshake_hash, &[LINK_LABEL]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag[..8]);
        LinkId(id)
    }
}
/// Length of a ChaCha20-Poly1305 key.
pub const KEY_LEN: usize = 32;

/// One side's half of a rekey exchange, carried over the control link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RekeyOffer {
    /// The epoch these keys are for; epochs count up from 1 on each control link.
    pub epoch: u32,
    /// The sender's fresh X25519 ephemeral public key.
    pub ephemeral_public: [u8; 32],
    /// The index the sender wants to see in the header of datagrams sent *to* it.
    pub receiver_index: u32,
    /// The control link the keys are bound to.
    pub link: LinkId,
}

impl RekeyOffer {
    /// Length of [`RekeyOffer::to_bytes`].
    pub const WIRE_LEN: usize = 48;

    /// A fixed encoding, `epoch (u32 BE) ‖ ephemeral_public ‖ receiver_index (u32 BE) ‖
    /// link (8 bytes)`, for a control message that wants raw bytes.
    pub fn to_bytes(&self) -> [u8; Self::WIRE_LEN] {
        let mut out = [0u8; Self::WIRE_LEN];
        out[..4].copy_from_slice(&self.epoch.to_be_bytes());
        out[4..36].copy_from_slice(&self.ephemeral_public);
        out[36..40].copy_from_slice(&self.receiver_index.to_be_bytes());
        out[40..].copy_from_slice(&self.link.0);
        out
    }

    /// Decodes [`RekeyOffer::to_bytes`]; `None` unless exactly [`RekeyOffer::WIRE_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<RekeyOffer> {
        let bytes: &[u8; Self::WIRE_LEN] = bytes.try_into().ok()?;
        let (epoch, rest) = bytes.split_at(4);
        let (public, rest) = rest.split_at(32);
        let (index, link) = rest.split_at(4);
        Some(RekeyOffer {
            epoch: u32::from_be_bytes(epoch.try_into().ok()?),
            ephemeral_public: public.try_into().ok()?,
            receiver_index: u32::from_be_bytes(index.try_into().ok()?),
            link: LinkId(link.try_into().ok()?),
        })
    }
}

/// Which end of a neighbour pair we are, for naming the two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The lower [`PeerId`]: starts every rekey, sends with `K_i2r`.
    Initiator,
    /// The higher [`PeerId`]: answers offers, sends with `K_r2i`.
    Responder,
}

impl Role {
    /// Our role towards `remote`. Both sides reach opposite answers from the same ids.
    pub fn between(local: &PeerId, remote: &PeerId) -> Role {
        if local < remote {
            Role::Initiator
        } else {
            Role::Responder
        }
    }
}

/// Why a rekey offer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RekeyError {
    /// The peer's ephemeral key is of low order: the shared secret would be predictable.
    #[error("peer's ephemeral key gives a non-contributory X25519 result; offer refused")]
    NonContributory,
    /// The offer's epoch is not the one we are waiting for (stale or out of order).
    #[error("rekey offer for epoch {got} refused: expected epoch {expected}")]
    UnexpectedEpoch {
        /// Epoch in the offer.
        got: u32,
        /// Epoch we expected.
        expected: u32,
    },
    /// The initiator received an answer while it had no offer outstanding, or the
    /// responder was sent an answer-shaped offer it cannot use.
    #[error("rekey answer received with no offer of ours outstanding")]
    Unsolicited,
    /// The offer was made for another control link to the same peer (one of two links
    /// made at once, since closed); see the module doc.
    #[error("rekey offer for another control link refused")]
    OtherLink,
}

/// The two keys of one epoch. Zeroized on drop.
pub struct EpochKeys {
    /// Key for datagrams from the initiator (lower PeerId) to the responder.
    pub initiator_to_responder: Zeroizing<[u8; KEY_LEN]>,
    /// Key for datagrams from the responder to the initiator.
    pub responder_to_initiator: Zeroizing<[u8; KEY_LEN]>,
}

impl EpochKeys {
    /// `(send key, receive key)` for `role`.
    pub fn for_role(self, role: Role) -> (Zeroizing<[u8; KEY_LEN]>, Zeroizing<[u8; KEY_LEN]>) {
        match role {
            Role::Initiator => (self.initiator_to_responder, self.responder_to_initiator),
            Role::Responder => (self.responder_to_initiator, self.initiator_to_responder),
        }
    }
}

/// Keyed BLAKE2s-256 of the concatenation of `parts`.
fn mac(key: &[u8; 32], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut mac = <Blake2sMac256 as blake2::digest::KeyInit>::new(&(*key).into());
    for part in parts {
        mac.update(part);
    }
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// Derives an epoch's keys from the X25519 result (see the module doc for the construction).
pub fn derive_epoch_keys(
    handshake_hash: &[u8; 32],
    shared_secret: &[u8; 32],
    epoch: u32,
    index_initiator: u32,
    index_responder: u32,
) -> EpochKeys {
    let mut info = [0u8; KDF_LABEL.len() + 12];
    let (label, numbers) = info.split_at_mut(KDF_LABEL.len());
    label.copy_from_slice(KDF_LABEL);
    numbers[..4].copy_from_slice(&epoch.to_be_bytes());
    numbers[4..8].copy_from_slice(&index_initiator.to_be_bytes());
    numbers[8..].copy_from_slice(&index_responder.to_be_bytes());
    let prk = mac(handshake_hash, &[shared_secret]);
    let t1 = mac(&prk, &[&info, &[1]]);
    let t2 = mac(&prk, &[&t1[..], &info, &[2]]);
    EpochKeys {
        initiator_to_responder: t1,
        responder_to_initiator: t2,
    }
}

/// Our half of an exchange in progress: the offer we sent and its ephemeral secret.
pub struct LocalOffer {
    secret: EphemeralSecret,
    offer: RekeyOffer,
}

impl LocalOffer {
    /// Generates a fresh ephemeral key pair for `epoch` and `receiver_index`, on `link`.
    pub fn generate<R: RngCore + CryptoRng>(
        rng: &mut R,
        epoch: u32,
        receiver_index: u32,
        link: LinkId,
    ) -> LocalOffer {
        let secret = EphemeralSecret::random_from_rng(rng);
        let offer = RekeyOffer {
            epoch,
            ephemeral_public: PublicKey::from(&secret).to_bytes(),
            receiver_index,
            link,
        };
        LocalOffer { secret, offer }
    }

    /// The offer to send to the peer.
    pub fn offer(&self) -> RekeyOffer {
        self.offer
    }

    /// Completes the exchange with the peer's offer for the same epoch. Consumes (and so
    /// zeroizes) the ephemeral secret. Refuses a non-contributory shared secret.
    pub fn agree(
        self,
        remote: &RekeyOffer,
        role: Role,
        handshake_hash: &[u8; 32],
    ) -> Result<EpochKeys, RekeyError> {
        if remote.link != self.offer.link {
            return Err(RekeyError::OtherLink);
        }
        if remote.epoch != self.offer.epoch {
            return Err(RekeyError::UnexpectedEpoch {
                got: remote.epoch,
                expected: self.offer.epoch,
            });
        }
        let shared = self
            .secret
            .diffie_hellman(&PublicKey::from(remote.ephemeral_public));
        if !shared.was_contributory() {
            return Err(RekeyError::NonContributory);
        }
        let (index_initiator, index_responder) = match role {
            Role::Initiator => (self.offer.receiver_index, remote.receiver_index),
            Role::Responder => (remote.receiver_index, self.offer.receiver_index),
        };
        Ok(derive_epoch_keys(
            handshake_hash,
            shared.as_bytes(),
            self.offer.epoch,
            index_initiator,
            index_responder,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::ChaCha20Poly1305;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn kat_inputs() -> ([u8; 32], [u8; 32]) {
        let mut salt = [0u8; 32];
        let mut ikm = [0u8; 32];
        for i in 0..32 {
            salt[i] = i as u8;
            ikm[i] = 0x20 + i as u8;
        }
        (salt, ikm)
    }

    /// Fixed inputs → fixed keys. The hex was computed once, independently, with Python's
    /// `hashlib.blake2s(msg, key=k)` following the construction in the module doc.
    #[test]
    fn kdf_known_answer() {
        let (salt, ikm) = kat_inputs();
        let keys = derive_epoch_keys(&salt, &ikm, 7, 0x0102_0304, 0xa0b0_c0d0);
        assert_eq!(
            hex(&keys.initiator_to_responder[..]),
            "06af05f3c612ca1bb776abeb0c627ffe142a74e6ddd19e232cb9beb0275fb5f0"
        );
        assert_eq!(
            hex(&keys.responder_to_initiator[..]),
            "1a11e8074226a54fefed4383d3b959e4839b53a640cf837654be45461b1813ed"
        );
    }

    /// The same keys, spelled out step by step with the MAC primitive.
    #[test]
    fn kdf_matches_manual_computation() {
        let (salt, ikm) = kat_inputs();
        let mut info = b"weft/1 sleeve".to_vec();
        info.extend_from_slice(&[0, 0, 0, 7, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0]);
        let prk = mac(&salt, &[&ikm]);
        let mut m1 = info.clone();
        m1.push(1);
        let t1 = mac(&prk, &[&m1]);
        let mut m2 = t1.to_vec();
        m2.extend_from_slice(&info);
        m2.push(2);
        let t2 = mac(&prk, &[&m2]);
        let keys = derive_epoch_keys(&salt, &ikm, 7, 0x0102_0304, 0xa0b0_c0d0);
        assert_eq!(*keys.initiator_to_responder, *t1);
        assert_eq!(*keys.responder_to_initiator, *t2);
        // Every input matters.
        let other = derive_epoch_keys(&salt, &ikm, 8, 0x0102_0304, 0xa0b0_c0d0);
        assert_ne!(*other.initiator_to_responder, *t1);
        let other = derive_epoch_keys(&salt, &ikm, 7, 0xa0b0_c0d0, 0x0102_0304);
        assert_ne!(*other.initiator_to_responder, *t1);
    }

    #[test]
    fn both_sides_agree_and_fresh_exchanges_differ() {
        let mut rng = StdRng::seed_from_u64(1);
        let hash = [9u8; 32];
        let derive = |rng: &mut StdRng| {
            let a = LocalOffer::generate(rng, 1, 11, LinkId::of(&hash));
            let b = LocalOffer::generate(rng, 1, 22, LinkId::of(&hash));
            let (a_offer, b_offer) = (a.offer(), b.offer());
            let ka = a.agree(&b_offer, Role::Initiator, &hash).expect("ok");
            let kb = b.agree(&a_offer, Role::Responder, &hash).expect("ok");
            (ka.for_role(Role::Initiator), kb.for_role(Role::Responder))
        };
        let ((a_tx, a_rx), (b_tx, b_rx)) = derive(&mut rng);
        assert_eq!(*a_tx, *b_rx);
        assert_eq!(*a_rx, *b_tx);
        assert_ne!(*a_tx, *a_rx);
        let ((a_tx2, _), _) = derive(&mut rng);
        assert_ne!(
            *a_tx, *a_tx2,
            "same statics, fresh ephemerals: different keys (T25)"
        );
    }

    #[test]
    fn refuses_low_order_points_and_wrong_epoch() {
        let mut rng = StdRng::seed_from_u64(2);
        for low_order in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let ours = LocalOffer::generate(&mut rng, 3, 1, LinkId([0; 8]));
            let theirs = RekeyOffer {
                epoch: 3,
                ephemeral_public: low_order,
                receiver_index: 2,
                link: LinkId([0; 8]),
            };
            let result = ours.agree(&theirs, Role::Initiator, &[0; 32]);
            assert_eq!(result.err(), Some(RekeyError::NonContributory));
        }
        let ours = LocalOffer::generate(&mut rng, 3, 1, LinkId([0; 8]));
        let mut theirs = LocalOffer::generate(&mut rng, 4, 2, LinkId([0; 8])).offer();
        theirs.epoch = 4;
        let result = ours.agree(&theirs, Role::Initiator, &[0; 32]);
        assert!(matches!(
            result,
            Err(RekeyError::UnexpectedEpoch {
                got: 4,
                expected: 3
            })
        ));
        let ours = LocalOffer::generate(&mut rng, 3, 1, LinkId::of(&[1; 32]));
        let theirs = LocalOffer::generate(&mut rng, 3, 2, LinkId::of(&[2; 32])).offer();
        let result = ours.agree(&theirs, Role::Initiator, &[1; 32]);
        assert_eq!(result.err(), Some(RekeyError::OtherLink));
        assert_ne!(LinkId::of(&[1; 32]), LinkId::of(&[2; 32]));
    }

    #[test]
    fn offer_bytes_round_trip() {
        let offer = LocalOffer::generate(
            &mut StdRng::seed_from_u64(3),
            0x0102_0304,
            0xdead_beef,
            LinkId(*b"link id!"),
        )
        .offer();
        let bytes = offer.to_bytes();
        assert_eq!(&bytes[40..], b"link id!");
        assert_eq!(RekeyOffer::from_bytes(&bytes), Some(offer));
        assert_eq!(RekeyOffer::from_bytes(&bytes[..47]), None);
        assert!(Role::between(&PeerId([1; 16]), &PeerId([2; 16])) == Role::Initiator);
        assert!(Role::between(&PeerId([2; 16]), &PeerId([1; 16])) == Role::Responder);
    }

    /// RFC 7748 §6.1: X25519 Diffie-Hellman (Alice's secret, Bob's public).
    #[test]
    fn x25519_rfc7748_vector() {
        let alice: [u8; 32] =
            unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .try_into()
                .expect("32");
        let bob: [u8; 32] =
            unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
                .try_into()
                .expect("32");
        let shared = x25519_dalek::x25519(alice, bob);
        assert_eq!(
            hex(&shared),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
    }

    /// RFC 8439 §2.8.2: the AEAD we seal with, in place and detached, as the codec uses it.
    #[test]
    fn chacha20poly1305_rfc8439_vector() {
        let key: Vec<u8> = (0x80..0xa0).collect();
        let nonce = unhex("070000004041424344454647");
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let mut buf = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        let cipher = ChaCha20Poly1305::new_from_slice(&key).expect("32-byte key");
        let tag = cipher
            .encrypt_in_place_detached(nonce.as_slice().into(), &aad, &mut buf)
            .expect("short message");
        assert_eq!(hex(&buf[..16]), "d31a8d34648e60db7b86afbc53ef7ec2");
        assert_eq!(hex(&buf[buf.len() - 2..]), "6116");
        assert_eq!(hex(&tag), "1ae10b594f09e26a7e902ecbd0600691");
    }
}
