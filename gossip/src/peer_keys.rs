//! The peer key allow-list (`--peer-keys`): which static keys may join.
//!
//! Holding the network secret lets a host join the mesh; with a list, it must also
//! hold one of the listed static keys. The handshake refuses any other key
//! ([`crate::handshake::Handshake::with_admitted`]) before the link carries anything,
//! and the topology drops records of peers not on the list, so a peer that is not
//! listed never appears, also when another router (without a list) links to it.
//!
//! The text form, one key per line: the 32-byte X25519 public key as 64 hex digits
//! (what `weft identity` prints), then an optional name; `#` starts a comment. Parsing
//! is strict: a malformed line is an error naming the line, and nothing is loaded.

use crate::identity::{is_low_order, KEY_LEN};
use crate::peer::PeerId;
use std::collections::{BTreeMap, BTreeSet};

/// Most keys a list may hold (the topology's own peer bound is larger; a list is typed
/// by hand or generated, and this keeps a wrong file from becoming a memory problem).
pub const MAX_KEYS: usize = 16_384;
/// Longest name after a key.
pub const MAX_NAME: usize = 64;

/// A parsed allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerKeys {
    keys: BTreeMap<[u8; KEY_LEN], String>,
    ids: BTreeSet<PeerId>,
}

/// Why a list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl PeerKeys {
    /// Parses the text form.
    pub fn parse(text: &str) -> Result<PeerKeys, ParseError> {
        let mut list = PeerKeys::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |what: String| ParseError { line: i + 1, what };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let hex = words.next().unwrap_or("");
            let key = parse_hex_key(hex).ok_or_else(|| {
                err(format!(
                    "{hex:?} is not a public key (64 hex digits, as `weft identity` prints)"
                ))
            })?;
            if is_low_order(&key) {
                return Err(err("a low-order key cannot be a peer's".into()));
            }
            let name = words.collect::<Vec<_>>().join(" ");
            if name.len() > MAX_NAME || name.chars().any(char::is_control) {
                return Err(err(format!(
                    "the name must be at most {MAX_NAME} printable characters"
                )));
            }
            if list.keys.len() >= MAX_KEYS && !list.keys.contains_key(&key) {
                return Err(err(format!("more than {MAX_KEYS} keys")));
            }
            list.ids.insert(PeerId::from_public_key(&key));
            list.keys.insert(key, name);
        }
        Ok(list)
    }

    /// Whether `key` is listed.
    pub fn admits_key(&self, key: &[u8; KEY_LEN]) -> bool {
        self.keys.contains_key(key)
    }

    /// Whether the peer with this id is listed.
    pub fn admits(&self, peer: &PeerId) -> bool {
        self.ids.contains(peer)
    }

    /// The listed peers' ids.
    pub fn ids(&self) -> &BTreeSet<PeerId> {
        &self.ids
    }

    /// How many keys are listed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds the text of another file (a directory of lists is their union).
    pub fn extend(&mut self, other: PeerKeys) -> Result<(), ParseError> {
        for (key, name) in other.keys {
            if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(&key) {
                return Err(ParseError {
                    line: 0,
                    what: format!("more than {MAX_KEYS} keys in all"),
                });
            }
            self.ids.insert(PeerId::from_public_key(&key));
            self.keys.insert(key, name);
        }
        Ok(())
    }
}

/// A public key as 64 hex digits.
pub fn to_hex(key: &[u8; KEY_LEN]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex_key(s: &str) -> Option<[u8; KEY_LEN]> {
    if s.len() != 2 * KEY_LEN || !s.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn lists_parse_with_names_and_comments_and_refuse_bad_lines() {
        let a = Identity::generate();
        let b = Identity::generate();
        let text = format!(
            "# hosts\n{}  h1 east\n\n{} # no name\n",
            to_hex(a.public_key()),
            to_hex(b.public_key()).to_uppercase()
        );
        let list = PeerKeys::parse(&text).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.admits_key(a.public_key()) && list.admits(&b.id()));
        assert!(!list.admits(&Identity::generate().id()));
        let good = to_hex(a.public_key());
        for (bad, line) in [
            ("abc".to_string(), 1),
            (format!("{good}\n{}", &good[..62]), 2),
            (format!("x{}", &good[1..]), 1),
            ("00".repeat(32), 1),
            (format!("{good} {}", "n".repeat(65)), 1),
            (format!("{good} a\u{7}b"), 1),
            (format!("é{}", &good[2..]), 1),
        ] {
            let e = PeerKeys::parse(&bad).unwrap_err();
            assert_eq!(e.line, line, "{bad:?}: {e}");
        }
    }

    #[test]
    fn lists_are_bounded() {
        let text: String = (0..=MAX_KEYS)
            .map(|_| format!("{}\n", to_hex(Identity::generate().public_key())))
            .collect();
        let e = PeerKeys::parse(&text).unwrap_err();
        assert_eq!(e.line, MAX_KEYS + 1);
    }
}
