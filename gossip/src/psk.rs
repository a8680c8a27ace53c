//! The network secret, stretched with Argon2id into the Noise pre-shared key.
//!
//! Every router of a network holds the same secret ("password"). It is stretched once at
//! start into a 32-byte [`Psk`] that enters the handshake at msg3 (`XXpsk3`), so a wrong
//! secret fails there and nothing before it depends on the secret.
//!
//! The parameters are RFC 9106's low-memory option: Argon2id, m = 64 MiB, t = 3, p = 4.
//! The salt is the fixed string `"weft/1 psk"`. A salt exists to stop one precomputation
//! from serving many contexts; here the network *is* the only context (all routers must
//! derive the same key with no prior exchange), and the version in the salt separates
//! future protocol versions. Generated secrets (`weft secret generate`, 256 random bits)
//! make precomputation pointless anyway; Argon2id only protects human-chosen ones.
//!
//! Neither the secret nor the key is ever printed: [`Psk`]'s `Debug` shows `Psk(..)`.

use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Length of the derived pre-shared key in bytes.
pub const PSK_LEN: usize = 32;
/// Argon2id memory cost in KiB (64 MiB).
pub const ARGON2_M_KIB: u32 = 65536;
/// Argon2id passes.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 4;
/// The fixed salt; see the module documentation for why it is fixed.
pub const PSK_SALT: &[u8] = b"weft/1 psk";
/// Largest secret file we read; a generated secret is 64 bytes.
pub const MAX_SECRET_FILE_LEN: u64 = 4096;
/// Secrets shorter than this are weak unless the operator insists.
pub const MIN_SECRET_LEN: usize = 20;

/// The 32-byte pre-shared key derived from the network secret; zeroized on drop.
#[derive(Clone)]
pub struct Psk(Zeroizing<[u8; PSK_LEN]>);

impl Psk {
    /// Wraps an already derived key (tests, or a key held in a secrets store).
    pub fn from_bytes(bytes: [u8; PSK_LEN]) -> Psk {
        Psk(Zeroizing::new(bytes))
    }

    /// The key bytes, for the handshake only.
    pub(crate) fn expose(&self) -> &[u8; PSK_LEN] {
        &self.0
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// Why a secret could not be read or stretched.
#[derive(Debug, thiserror::Error)]
pub enum PskError {
    /// The secret is empty.
    #[error("the network secret is empty; generate one with `weft secret generate`")]
    Empty,
    /// The secret file could not be read.
    #[error("could not read the secret file {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The secret file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The secret file is larger than [`MAX_SECRET_FILE_LEN`].
    #[error(
        "the secret file {} is larger than {MAX_SECRET_FILE_LEN} bytes; it should hold one \
         line, such as the output of `weft secret generate`",
        path.display()
    )]
    TooLarge {
        /// The secret file.
        path: PathBuf,
    },
    /// Other users may read (or change) the secret file.
    #[error(
        "the secret file {} has mode {mode:04o}: other users may read or change it; \
         make it readable by its owner only: chmod 600 {}",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error(
        "the network secret has {len} bytes: at least {MIN_SECRET_LEN} are needed to resist \
         guessing; generate one with `weft secret generate`"
    )]
    Weak {
        /// Its length.
        len: usize,
    },
    /// The secret file holds only whitespace.
    #[error("the secret file {} is empty; write a secret from `weft secret generate` into it", path.display())]
    EmptyFile {
        /// The secret file.
        path: PathBuf,
    },
    /// Argon2 refused its parameters or ran out of memory.
    #[error("could not stretch the network secret with Argon2id: {0}; check that 64 MiB of memory is available")]
    Argon2(argon2::Error),
}

/// The Argon2id parameters used by [`derive_psk`].
pub fn argon2_params() -> Result<Params, PskError> {
    Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(PSK_LEN)).map_err(PskError::Argon2)
}

/// Stretches the network secret into the 32-byte PSK (Argon2id, 64 MiB, t = 3, p = 4).
///
/// This takes a noticeable fraction of a second and 64 MiB of memory: call it once at
/// start, never per connection.
pub fn derive_psk(secret: &[u8]) -> Result<Psk, PskError> {
    if secret.is_empty() {
        return Err(PskError::Empty);
    }
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon2_params()?);
    let mut out = Zeroizing::new([0u8; PSK_LEN]);
    argon
        .hash_password_into(secret, PSK_SALT, &mut out[..])
        .map_err(PskError::Argon2)?;
    Ok(Psk(out))
}

/// A new random secret: 32 bytes from the OS RNG as 64 lowercase hex digits.
///
/// This is what `weft secret generate` prints.
pub fn generate_secret() -> String {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut bytes[..]);
    let mut out = String::with_capacity(64);
    for b in bytes.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a secret is too short to resist guessing (shorter than [`MIN_SECRET_LEN`]).
pub fn is_weak_secret(secret: &[u8]) -> bool {
    secret.len() < MIN_SECRET_LEN
}

/// Refuses a secret shorter than [`MIN_SECRET_LEN`].
pub fn check_strength(secret: &[u8]) -> Result<(), PskError> {
    if is_weak_secret(secret) {
        return Err(PskError::Weak { len: secret.len() });
    }
    Ok(())
}

/// Reads a secret file: trailing whitespace (the newline) is trimmed; files over 4 KiB,
/// empty files and files that other users may read or write (any group or other
/// permission bit, as ssh refuses private keys) are refused.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, PskError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| PskError::Read {
        path: path.into(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PskError::Permissions {
            path: path.into(),
            mode,
        });
    }
    let mut content = Zeroizing::new(Vec::new());
    // Read one byte past the limit, so a large (or endless) file is detected cheaply.
    file.take(MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut content)
        .map_err(read_err)?;
    if content.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(PskError::TooLarge { path: path.into() });
    }
    let trimmed = content
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    // Truncate in place; the removed bytes are whitespace, not secret.
    content.truncate(trimmed);
    if content.is_empty() {
        return Err(PskError::EmptyFile { path: path.into() });
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Argon2id(m=65536, t=3, p=4, salt="weft/1 psk", secret="weft test secret").
    /// Cross-checked against the reference C implementation (libargon2 `argon2id_hash_raw`).
    const KAT_HEX: &str = "b43a1f8f938b9f71ef1bd234f30f92f86e2416e5f478d51416519fd3d5afc6b5";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn argon2_known_answer_and_params() {
        let params = argon2_params().expect("params");
        assert_eq!(params.m_cost(), 64 * 1024, "64 MiB in KiB");
        assert_eq!(params.t_cost(), 3);
        assert_eq!(params.p_cost(), 4);
        assert_eq!(params.output_len(), Some(32));
        assert_eq!(PSK_SALT, b"weft/1 psk");
        let psk = derive_psk(b"weft test secret").expect("derive");
        assert_eq!(hex(psk.expose()), KAT_HEX);
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(matches!(derive_psk(b""), Err(PskError::Empty)));
    }

    #[test]
    fn debug_hides_the_key() {
        let psk = Psk::from_bytes([0xab; 32]);
        assert_eq!(format!("{psk:?}"), "Psk(..)");
    }

    #[test]
    fn generated_secrets_are_hex_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        assert!(!is_weak_secret(a.as_bytes()));
        assert!(is_weak_secret(b"hunter2"));
        assert!(check_strength(a.as_bytes()).is_ok());
        let err = check_strength(b"hunter2").expect_err("weak");
        assert!(err.to_string().contains("weft secret generate"), "{err}");
    }

    #[test]
    fn secret_file_is_trimmed_and_bounded() {
        let dir = std::env::temp_dir().join(format!("weft-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let write = |name: &str, content: &[u8]| {
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .expect("create");
            f.write_all(content).expect("write");
            path
        };
        let ok = write("ok", b"  s3cret value \r\n\n");
        assert_eq!(&read_secret_file(&ok).expect("read")[..], b"  s3cret value");
        let empty = write("empty", b" \n\t\n");
        assert!(matches!(
            read_secret_file(&empty),
            Err(PskError::EmptyFile { .. })
        ));
        let big = write("big", &[b'a'; 4097]);
        assert!(matches!(
            read_secret_file(&big),
            Err(PskError::TooLarge { .. })
        ));
        let max = write("max", &[b'a'; 4096]);
        assert_eq!(read_secret_file(&max).expect("4 KiB is fine").len(), 4096);
        // Group- or world-accessible files are refused with the command that fixes them.
        for mode in [0o640, 0o604, 0o620, 0o666] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = read_secret_file(&ok).expect_err("too open");
            assert!(matches!(err, PskError::Permissions { .. }), "{mode:o}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        let missing = dir.join("missing");
        let err = read_secret_file(&missing).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
