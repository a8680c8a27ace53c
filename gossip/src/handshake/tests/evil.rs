//! A Noise peer that presents a low-order static key, to prove we refuse it.
//!
//! snow always derives the public key from the private one, so the evil side plugs in
//! its own `Dh`: the static "public key" is a small-order point, and every DH with the
//! static returns all zeros, which is exactly what the victim computes against that
//! point. The transcript therefore authenticates, and only our explicit check stops it.

use super::super::{Handshake, HandshakeError, NOISE_SECRET};
use super::SECRET_HEADER;
use crate::psk::Psk;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// u = 1: a point of order 4.
const LOW_ORDER: [u8; 32] = {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
};

#[derive(Default)]
struct EvilDh {
    private: [u8; 32],
    public: [u8; 32],
    is_static: bool,
}

impl Dh for EvilDh {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        // Only the static key is set explicitly; ephemerals are generated.
        self.private.copy_from_slice(&privkey[..32]);
        self.public = LOW_ORDER;
        self.is_static = true;
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private)?;
        let mut base = [0u8; 32];
        base[0] = 9;
        self.public = x25519_dalek::x25519(self.private, base);
        self.is_static = false;
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let result = if self.is_static {
            [0u8; 32]
        } else {
            let mut their = [0u8; 32];
            their.copy_from_slice(&pubkey[..32]);
            x25519_dalek::x25519(self.private, their)
        };
        out[..32].copy_from_slice(&result);
        Ok(())
    }
}

struct EvilResolver;

impl CryptoResolver for EvilResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }
    fn resolve_dh(&self, _choice: &DHChoice) -> Option<Box<dyn Dh>> {
        Some(Box::<EvilDh>::default())
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    super::frame(body)
}

/// Runs an evil peer (initiator if `evil_initiates`) against `victim`; returns the
/// victim's first error.
pub(super) fn run_against(
    victim: &mut Handshake,
    evil_initiates: bool,
    psk: &Psk,
) -> Result<(), HandshakeError> {
    let victim_header = victim.poll_transmit().expect("victim header");
    let mut prologue = b"weft/1".to_vec();
    // Both headers are identical here (same versions, mode 1), so order is moot.
    prologue.extend_from_slice(&victim_header);
    prologue.extend_from_slice(SECRET_HEADER);
    let builder = snow::Builder::with_resolver(
        NOISE_SECRET.parse().expect("params"),
        Box::new(EvilResolver),
    )
    .local_private_key(&[0x77; 32])
    .and_then(|b| b.prologue(&prologue))
    .and_then(|b| b.psk(3, psk.expose()))
    .expect("builder");
    let mut buf = [0u8; 256];
    let mut payload = [0u8; 256];
    victim.handle_input(SECRET_HEADER)?;
    if evil_initiates {
        let mut evil = builder.build_initiator().expect("evil initiator");
        let n = evil.write_message(&[], &mut buf).expect("msg1");
        victim.handle_input(&framed(&buf[..n]))?;
        let msg2 = victim.poll_transmit().expect("msg2");
        evil.read_message(&msg2[2..], &mut payload)
            .expect("evil reads msg2");
        let n = evil.write_message(&[], &mut buf).expect("msg3");
        victim.handle_input(&framed(&buf[..n]))?;
    } else {
        let mut evil = builder.build_responder().expect("evil responder");
        let msg1 = victim.poll_transmit().expect("msg1");
        evil.read_message(&msg1[2..], &mut payload)
            .expect("evil reads msg1");
        let n = evil.write_message(&[], &mut buf).expect("msg2");
        victim.handle_input(&framed(&buf[..n]))?;
    }
    Ok(())
}
