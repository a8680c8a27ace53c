//! Signatures with the identity key: one X25519 key for the Noise handshake and for
//! Ed25519 signatures, so that the peer id binds both with no new key file.
//!
//! # Why one key is enough
//! An X25519 private key is a scalar `s` (clamped); its public key is the Montgomery
//! u-coordinate of `s·B`. Ed25519 uses the same curve in Edwards form, so the Ed25519
//! public key `A = s·B` of that scalar maps back (birationally) to exactly the X25519
//! public key: `u = (1 + y) / (1 − y)`. A verifier that receives `A` with a signature
//! therefore checks `BLAKE2s(u(A))[..16] == PeerId`, and knows the signer holds the very
//! key whose id it claims, as the handshake would prove. This is the idea of Signal's
//! XEdDSA (one key for X25519 and EdDSA). We do not need XEdDSA's sign-bit
//! normalisation: `A` travels with every signature, so either sign works, and only the
//! holder of `s` can sign for `A` or `−A`.
//!
//! The Ed25519 expanded key is `(s, prefix)` where `prefix`, the secret that makes the
//! nonce deterministic (RFC 8032), is a domain-separated BLAKE2s of `s`. Standard
//! Ed25519 derives both halves from one SHA-512 of a seed; here the scalar is given, so
//! only the prefix is derived; what matters is that the prefix is secret and fixed per
//! key, so that two messages never share a nonce under one key.
//!
//! Every signed message starts with a domain tag ([`DOMAIN_RECORD`], [`DOMAIN_UNICAST`],
//! [`DOMAIN_TAKEOVER_VOTE`]), so that a signature made for one purpose can never be
//! replayed as another; the handshake never signs, it only does Diffie-Hellman.
//!
//! Verification uses `verify_strict`: non-canonical and small-order keys and `R` values
//! are refused (no malleability).
//!
//! Checking that a key binds to its peer id costs two point decompressions and a field
//! inversion, more than the signature check itself, and every record, unicast and vote
//! of a peer carries the same key. Keys that bind are remembered ([`BoundKeys`], a
//! bounded memo of a pure function), so each later signature costs one verification.

use super::{Identity, KEY_LEN};
use crate::peer::PeerId;
use blake2::{Blake2s256, Digest};
use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature as EdSignature, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};
use zeroize::Zeroizing;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Domain tag of a topology record's signature.
pub const DOMAIN_RECORD: &[u8] = b"weft/topology-record/v1\0";
/// Domain tag of a unicast's signature.
pub const DOMAIN_UNICAST: &[u8] = b"weft/unicast/v1\0";
/// Domain tag of an IPAM takeover vote (a voter's acceptance of an heir).
pub const DOMAIN_TAKEOVER_VOTE: &[u8] = b"weft/takeover-vote/v1\0";
/// Domain tag of a participant's IPAM bootstrap claims.
pub const DOMAIN_BOOTSTRAP_CLAIMS: &[u8] = b"weft/bootstrap-claims/v1\0";
/// Domain tag of the nonce prefix derivation (never a signed message).
const DOMAIN_PREFIX: &[u8] = b"weft/ed25519-nonce-prefix/v1\0";

/// An Ed25519 signature; serialized as one byte string.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x?}..)", &self.0[..4])
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{SIGNATURE_LEN} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                <[u8; SIGNATURE_LEN]>::try_from(v)
                    .map(Signature)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// Why a proof of origin was refused; each is counted under its [`ProofError::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum ProofError {
    /// No proof at all.
    #[error("unsigned")]
    Unsigned,
    /// The key is not a valid (or is a small-order) Ed25519 point.
    #[error("invalid signing key")]
    BadKey,
    /// The key is valid but is not the one the claimed peer id is derived from.
    #[error("signing key does not belong to the peer id")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

impl ProofError {
    /// Every reason, for metrics.
    pub const ALL: [ProofError; 4] = [
        ProofError::Unsigned,
        ProofError::BadKey,
        ProofError::KeyMismatch,
        ProofError::BadSignature,
    ];

    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            ProofError::Unsigned => "unsigned",
            ProofError::BadKey => "bad_key",
            ProofError::KeyMismatch => "key_mismatch",
            ProofError::BadSignature => "bad_signature",
        }
    }
}

impl Identity {
    /// Our Ed25519 public key (`s·B`, whose Montgomery form is our X25519 key).
    pub fn signing_key(&self) -> &[u8; KEY_LEN] {
        &self.signing_public
    }

    /// Signs `domain ‖ message`.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> Signature {
        let esk = self.expanded();
        // `signing_public` was computed from this very key at construction.
        let vk = VerifyingKey::from(&esk);
        let mut buf = Vec::with_capacity(domain.len() + message.len());
        buf.extend_from_slice(domain);
        buf.extend_from_slice(message);
        Signature(raw_sign::<sha2::Sha512>(&esk, &buf, &vk).to_bytes())
    }

    fn expanded(&self) -> ExpandedSecretKey {
        let secret = self.secret_bytes();
        let mut bytes = Zeroizing::new([0u8; 64]);
        bytes[..KEY_LEN].copy_from_slice(&secret[..]);
        bytes[KEY_LEN..].copy_from_slice(&nonce_prefix(&secret)[..]);
        // Clamps the scalar exactly as X25519 does.
        ExpandedSecretKey::from_bytes(&bytes)
    }
}

/// The Ed25519 public key of an X25519 private key.
pub(super) fn signing_public(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut bytes = Zeroizing::new([0u8; 64]);
    bytes[..KEY_LEN].copy_from_slice(secret);
    let esk = ExpandedSecretKey::from_bytes(&bytes);
    VerifyingKey::from(&esk).to_bytes()
}

fn nonce_prefix(secret: &[u8; KEY_LEN]) -> Zeroizing<[u8; 32]> {
    let mut h = Blake2s256::new();
    h.update(DOMAIN_PREFIX);
    h.update(secret);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&h.finalize());
    out
}

/// The X25519 public key that an Ed25519 key `key` stands for, if it is a valid,
/// non-small-order point.
pub fn x25519_of(key: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], ProofError> {
    let vk = VerifyingKey::from_bytes(key).map_err(|_| ProofError::BadKey)?;
    if vk.is_weak() {
        return Err(ProofError::BadKey);
    }
    Ok(vk.to_montgomery().to_bytes())
}

/// Whether Ed25519 key `key` is the signing key of peer `peer`.
pub fn key_binds(peer: &PeerId, key: &[u8; KEY_LEN]) -> Result<(), ProofError> {
    let x = x25519_of(key)?;
    if PeerId::from_public_key(&x) != *peer {
        return Err(ProofError::KeyMismatch);
    }
    Ok(())
}

/// Checks that `signature` over `domain ‖ message` was made by peer `peer` with key
/// `key`: the key must bind to the id, and the signature verify strictly.
pub fn verify(
    peer: &PeerId,
    key: &[u8; KEY_LEN],
    domain: &[u8],
    message: &[u8],
    signature: &Signature,
) -> Result<(), ProofError> {
    let vk = BoundKeys::get(peer, key)?;
    let mut buf = Vec::with_capacity(domain.len() + message.len());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(message);
    vk.verify_strict(&buf, &EdSignature::from_bytes(&signature.0))
        .map_err(|_| ProofError::BadSignature)
}

/// Keys already found to bind to their peer id, decompressed: a memo of [`key_binds`]
/// and [`VerifyingKey::from_bytes`], shared by every verifier of the process. Only
/// keys that bind are kept, at most [`BoundKeys::CAP`] (emptied when full: the peers of
/// a real mesh fit many times over, and a flood of new keys only costs recomputation).
struct BoundKeys;

/// The memo's map: key → the peer it binds to, and the key decompressed.
type KeyMemo = Mutex<HashMap<[u8; KEY_LEN], (PeerId, VerifyingKey)>>;

impl BoundKeys {
    const CAP: usize = 4096;

    fn memo() -> &'static KeyMemo {
        static MEMO: OnceLock<KeyMemo> = OnceLock::new();
        MEMO.get_or_init(Default::default)
    }

    /// `key` decompressed, if it binds to `peer`.
    fn get(peer: &PeerId, key: &[u8; KEY_LEN]) -> Result<VerifyingKey, ProofError> {
        // A poisoned lock only means another thread panicked mid-insert; the map is
        // still a valid memo.
        let lock = || Self::memo().lock().unwrap_or_else(|e| e.into_inner());
        match lock().get(key) {
            Some((bound, vk)) if bound == peer => return Ok(*vk),
            Some(_) => return Err(ProofError::KeyMismatch),
            None => {}
        }
        key_binds(peer, key)?;
        let vk = VerifyingKey::from_bytes(key).map_err(|_| ProofError::BadKey)?;
        let mut memo = lock();
        if memo.len() >= Self::CAP {
            memo.clear();
        }
        memo.insert(*key, (*peer, vk));
        Ok(vk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_binds_to_the_peer_id() {
        for seed in 0..20u8 {
            let id = Identity::from_secret_bytes([seed.wrapping_mul(37).wrapping_add(1); 32]);
            // u(A) is the X25519 public key, whatever the sign of A's x.
            assert_eq!(
                &x25519_of(id.signing_key()).expect("valid"),
                id.public_key()
            );
            assert_eq!(key_binds(&id.id(), id.signing_key()), Ok(()));
        }
    }

    #[test]
    fn signatures_verify_only_for_their_peer_domain_and_message() {
        let a = Identity::from_secret_bytes([3; 32]);
        let b = Identity::from_secret_bytes([4; 32]);
        let sig = a.sign(DOMAIN_RECORD, b"hello");
        assert_eq!(sig, a.sign(DOMAIN_RECORD, b"hello"), "deterministic");
        let ok = verify(&a.id(), a.signing_key(), DOMAIN_RECORD, b"hello", &sig);
        assert_eq!(ok, Ok(()));
        let other_msg = verify(&a.id(), a.signing_key(), DOMAIN_RECORD, b"hellp", &sig);
        assert_eq!(other_msg, Err(ProofError::BadSignature));
        let other_domain = verify(&a.id(), a.signing_key(), DOMAIN_UNICAST, b"hello", &sig);
        assert_eq!(other_domain, Err(ProofError::BadSignature));
        // b's key with a's id: the key does not bind.
        let b_sig = b.sign(DOMAIN_RECORD, b"hello");
        let mismatch = verify(&a.id(), b.signing_key(), DOMAIN_RECORD, b"hello", &b_sig);
        assert_eq!(mismatch, Err(ProofError::KeyMismatch));
        // A small-order key is refused before anything else.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            verify(&a.id(), &identity_point, DOMAIN_RECORD, b"x", &sig),
            Err(ProofError::BadKey)
        );
    }

    #[test]
    fn a_remembered_key_still_binds_only_to_its_own_peer() {
        let a = Identity::from_secret_bytes([5; 32]);
        let b = Identity::from_secret_bytes([6; 32]);
        let sig = a.sign(DOMAIN_RECORD, b"hello");
        for _ in 0..2 {
            // The second time from the memo: the same answers.
            let ok = verify(&a.id(), a.signing_key(), DOMAIN_RECORD, b"hello", &sig);
            assert_eq!(ok, Ok(()));
            let stolen = verify(&b.id(), a.signing_key(), DOMAIN_RECORD, b"hello", &sig);
            assert_eq!(stolen, Err(ProofError::KeyMismatch));
            let forged = verify(&a.id(), a.signing_key(), DOMAIN_RECORD, b"hellp", &sig);
            assert_eq!(forged, Err(ProofError::BadSignature));
        }
    }

    #[test]
    fn a_standard_ed25519_verifier_accepts_our_signatures() {
        use ed25519_dalek::Verifier;
        let a = Identity::generate();
        let sig = a.sign(DOMAIN_UNICAST, b"payload");
        let vk = VerifyingKey::from_bytes(a.signing_key()).expect("key");
        let mut msg = DOMAIN_UNICAST.to_vec();
        msg.extend_from_slice(b"payload");
        assert!(vk.verify(&msg, &EdSignature::from_bytes(&sig.0)).is_ok());
    }
}
