//! The one place that serializes.
//!
//! Every structure that crosses a link is encoded here with bincode's standard
//! configuration (little-endian, variable-length integers). No other module names
//! bincode, so the wire format can change in one file.
//!
//! Decoding is for untrusted input: a size limit caps every allocation the decoder may
//! make ([`MAX_DECODE_LEN`]), trailing bytes are an error, and no input makes it panic.
//! Semantic limits (string lengths, list counts) are checked by the callers' `validate`
//! functions after decoding.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Upper bound on the bytes a single decode may claim for its allocations, and on the
/// input it accepts. Matches [`crate::message::MAX_MESSAGE_LEN`].
pub const MAX_DECODE_LEN: usize = 1 << 20;

/// The bincode configuration shared by encoder and decoder.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_LEN>()
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than [`MAX_DECODE_LEN`].
    #[error("input of {0} bytes exceeds the {MAX_DECODE_LEN}-byte limit")]
    TooLong(usize),
    /// The input does not describe a value of the expected type.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// A value was decoded but bytes were left over.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes `value`.
///
/// Encoding into a `Vec` can only fail for `Serialize` impls that refuse themselves
/// (unknown-length sequences, custom errors); every type this crate encodes is a plain
/// derive, so that cannot happen.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config())
        .expect("encoding a derived type into a Vec cannot fail")
}

/// Decodes a whole `T` from `bytes`, refusing oversized input and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_DECODE_LEN {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        items: Vec<u64>,
    }

    #[test]
    fn round_trip() {
        let s = Sample {
            name: "weft".into(),
            items: vec![1, 300, u64::MAX],
        };
        let bytes = encode(&s);
        assert_eq!(decode::<Sample>(&bytes), Ok(s));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u32);
        bytes.push(0);
        assert_eq!(decode::<u32>(&bytes), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // A varint length of 2^56 for the Vec<u64>: the limit must stop it.
        let mut bytes = encode(&String::from("x"));
        bytes.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_input_is_refused() {
        let bytes = vec![0u8; MAX_DECODE_LEN + 1];
        assert_eq!(
            decode::<u8>(&bytes),
            Err(DecodeError::TooLong(MAX_DECODE_LEN + 1))
        );
    }
}

/// Input generation for the stable fuzz tests of every decoder in this crate.
#[cfg(test)]
pub(crate) mod fuzz {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `count` inputs from `seed`: random byte strings, and mutations (bit flips, byte
    /// overwrites, truncations, insertions) of the valid encodings in `corpus`.
    pub(crate) fn inputs(seed: u64, corpus: &[Vec<u8>], count: usize) -> Vec<Vec<u8>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out: Vec<Vec<u8>> = corpus.to_vec();
        while out.len() < count {
            if corpus.is_empty() || rng.gen_bool(0.25) {
                let len = rng.gen_range(0..64);
                out.push((0..len).map(|_| rng.gen()).collect());
                continue;
            }
            let mut v = corpus[rng.gen_range(0..corpus.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                mutate(&mut rng, &mut v);
            }
            out.push(v);
        }
        out
    }

    fn mutate(rng: &mut StdRng, v: &mut Vec<u8>) {
        if v.is_empty() {
            v.push(rng.gen());
            return;
        }
        let i = rng.gen_range(0..v.len());
        match rng.gen_range(0..5) {
            0 => v[i] ^= 1 << rng.gen_range(0..8),
            1 => v[i] = rng.gen(),
            2 => v.truncate(i),
            3 => v.insert(i, rng.gen()),
            _ => v[i] = [0x00, 0xff, 0xfb, 0xfc, 0xfd][rng.gen_range(0..5)],
        }
    }
}

/// Serde glue for `Vec<u8>` fields: one length-prefixed byte string instead of a
/// sequence of integers (use as `#[serde(with = "gossip::codec::bytes")]`). Payloads
/// nest other encoded messages, so decoding them byte by byte cost more than the rest.
pub mod bytes {
    use serde::{Deserializer, Serializer};

    /// Serializes `v` as a byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes a byte string (or, from self-describing formats, a sequence).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Visitor)
    }

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
