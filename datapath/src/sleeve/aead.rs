//! The sleeve's AEAD: ChaCha20-Poly1305 (RFC 8439), in place, with the tag beside the
//! ciphertext.
//!
//! The implementation is AWS-LC's (through `aws-lc-rs`): its assembly (AVX2 and
//! AVX-512 where the CPU has them, chosen at run time) seals a full datagram about three
//! times as fast as the pure-Rust `chacha20poly1305` crate, which bounded the sleeve's
//! throughput (docs/performance.md). The wire format is the same AEAD, byte for byte:
//! `tests::agrees_with_the_chacha20poly1305_crate` checks both directions on random
//! keys, nonces, lengths and tampered inputs. AWS-LC cleanses the key schedule when a
//! [`Cipher`] is dropped (`EVP_AEAD_CTX_cleanup`), as the keys' `Zeroizing` wrappers do
//! for the raw bytes.
//!
//! The nonce is the 32-bit zero prefix and the 64-bit little-endian counter, as
//! WireGuard builds it; the counter is unique per key (the session refuses to seal past
//! `REJECT_AFTER_MESSAGES`), which is what `Nonce::assume_unique_for_key` asks.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a tag.
pub const TAG_LEN: usize = 16;

/// A ChaCha20-Poly1305 key, ready to seal or open.
pub struct Cipher(LessSafeKey);

/// Authentication failed (or the tag is not [`TAG_LEN`] bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Cipher {
    /// A cipher under `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Cipher {
        // ChaCha20-Poly1305 takes every 32-byte string as a key: `new` fails only for a
        // key of another length, which the type rules out.
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key");
        Cipher(LessSafeKey::new(key))
    }

    /// Encrypts `body` in place under nonce `counter`, authenticating `aad` too; returns
    /// the tag.
    pub fn seal(&self, counter: u64, aad: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        // Sealing fails only for a body longer than the AEAD's limit (2^38 bytes);
        // datagram bodies are under 64 KiB. Should it ever fail, the tag stays zero and
        // the receiver drops the datagram as forged.
        if let Ok(tag) = self
            .0
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), body)
        {
            out.copy_from_slice(tag.as_ref());
        }
        out
    }

    /// Checks and decrypts `body_and_tag` (the ciphertext, then the [`TAG_LEN`]-byte tag)
    /// in place under nonce `counter` and `aad`; the plaintext is then the first
    /// `body_and_tag.len() - TAG_LEN` bytes.
    pub fn open(
        &self,
        counter: u64,
        aad: &[u8],
        body_and_tag: &mut [u8],
    ) -> Result<(), AuthFailed> {
        if body_and_tag.len() < TAG_LEN {
            return Err(AuthFailed);
        }
        self.0
            .open_in_place(nonce(counter), Aad::from(aad), body_and_tag)
            .map(|_| ())
            .map_err(|_| AuthFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Nonce as RefNonce, Tag};
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    fn ref_nonce(counter: u64) -> RefNonce {
        let mut n = RefNonce::default();
        n[4..].copy_from_slice(&counter.to_le_bytes());
        n
    }

    /// Same AEAD as the `chacha20poly1305` crate on random keys, counters, AAD and
    /// lengths (0 to 9,000 bytes, and 64 KiB), both ways; every tampered byte, AAD byte,
    /// wrong counter or wrong key is refused by both.
    #[test]
    fn agrees_with_the_chacha20poly1305_crate() {
        let mut rng = StdRng::seed_from_u64(0x5ee7e);
        for round in 0..400 {
            let mut key = [0u8; KEY_LEN];
            rng.fill_bytes(&mut key);
            let counter: u64 = match round % 4 {
                0 => 0,
                1 => u64::MAX - 1,
                _ => rng.gen(),
            };
            let len = match round {
                0 => 0,
                1 => 65_536,
                _ => rng.gen_range(0..9_000),
            };
            let mut aad = vec![0u8; rng.gen_range(0..40)];
            rng.fill_bytes(&mut aad);
            let mut plain = vec![0u8; len];
            rng.fill_bytes(&mut plain);
            let ours = Cipher::new(&key);
            let theirs = ChaCha20Poly1305::new((&key).into());

            // Ours seals, theirs opens.
            let mut buf = plain.clone();
            let tag = ours.seal(counter, &aad, &mut buf);
            let mut check = buf.clone();
            theirs
                .decrypt_in_place_detached(
                    &ref_nonce(counter),
                    &aad,
                    &mut check,
                    Tag::from_slice(&tag),
                )
                .expect("the crate opens what we seal");
            assert_eq!(check, plain);

            // Theirs seals, ours opens: same ciphertext and tag.
            let mut sealed = plain.clone();
            let ref_tag = theirs
                .encrypt_in_place_detached(&ref_nonce(counter), &aad, &mut sealed)
                .expect("seal");
            assert_eq!(sealed, buf, "ciphertext");
            assert_eq!(ref_tag.as_slice(), &tag, "tag");
            let mut wire = sealed.clone();
            wire.extend_from_slice(&tag);
            let mut opened = wire.clone();
            ours.open(counter, &aad, &mut opened).expect("we open it");
            assert_eq!(&opened[..len], &plain[..]);

            // Tampering: one random bit of the ciphertext or tag, of the AAD, the
            // counter, the key.
            let mut bad = wire.clone();
            let i = rng.gen_range(0..bad.len());
            bad[i] ^= 1 << rng.gen_range(0..8);
            assert_eq!(ours.open(counter, &aad, &mut bad), Err(AuthFailed));
            if !aad.is_empty() {
                let mut bad_aad = aad.clone();
                let i = rng.gen_range(0..bad_aad.len());
                bad_aad[i] ^= 0x80;
                assert_eq!(
                    ours.open(counter, &bad_aad, &mut wire.clone()),
                    Err(AuthFailed)
                );
            }
            assert_eq!(
                ours.open(counter ^ 1, &aad, &mut wire.clone()),
                Err(AuthFailed)
            );
            let mut other = key;
            other[rng.gen_range(0..KEY_LEN)] ^= 1;
            assert_eq!(
                Cipher::new(&other).open(counter, &aad, &mut wire.clone()),
                Err(AuthFailed)
            );
        }
    }

    #[test]
    fn short_input_is_refused() {
        let c = Cipher::new(&[7; KEY_LEN]);
        for n in 0..TAG_LEN {
            assert_eq!(c.open(0, b"", &mut vec![0u8; n]), Err(AuthFailed));
        }
    }
}
