//! The router's long-term identity: a static X25519 key kept in the data dir.
//!
//! The key file holds exactly 32 raw bytes (the private scalar) and must be readable by
//! its owner only (mode 0600). It is created on first start with `create_new`, so two
//! routers racing on the same data dir never overwrite each other's key, and it is
//! fsynced before use so that a crash cannot leave a router with an identity it did not
//! persist. The [`PeerId`] is derived from the public half (see [`crate::peer`]), so a
//! peer can only ever claim the id that its private key proves.
//!
//! This module also holds [`is_low_order`], the check that every X25519 public key
//! received from the network must pass before we trust a Diffie-Hellman result with it.

mod signing;
pub use signing::{
    key_binds, verify, x25519_of, ProofError, Signature, DOMAIN_BOOTSTRAP_CLAIMS, DOMAIN_RECORD,
    DOMAIN_TAKEOVER_VOTE, DOMAIN_UNICAST, SIGNATURE_LEN,
};

use crate::peer::PeerId;
#[cfg(any(test, feature = "sim"))]
use blake2::Digest;
use rand::rngs::OsRng;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// Length of an X25519 key (private or public) in bytes.
pub const KEY_LEN: usize = 32;

/// Mode of a newly created key file: read and write for the owner only.
const KEY_FILE_MODE: u32 = 0o600;

/// Any scalar works for the low-order probe; after clamping it is a non-zero multiple
/// of the cofactor smaller than the group order, so the product is the identity (all
/// zeros) exactly when the point lies in the small-order subgroup.
const LOW_ORDER_PROBE: [u8; KEY_LEN] = [0x5a; KEY_LEN];

/// Whether an X25519 public key is one of the small-order points (including the
/// all-zero key and their non-canonical encodings).
///
/// A Diffie-Hellman with such a key yields an all-zero shared secret whatever our private
/// key is, so a peer sending one would contribute nothing to the session keys. The check
/// multiplies by a fixed clamped scalar, which is the same test as x25519-dalek's
/// `SharedSecret::was_contributory`, and covers every encoding the curve reduces.
pub fn is_low_order(public_key: &[u8; KEY_LEN]) -> bool {
    let product = x25519_dalek::x25519(LOW_ORDER_PROBE, *public_key);
    // No early exit: the input is public, but there is no reason to branch per byte.
    product.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// A router's static X25519 key pair and the [`PeerId`] derived from it.
///
/// The private half is zeroized when the `Identity` is dropped.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
    public: [u8; KEY_LEN],
    /// The Ed25519 public key of the same scalar (see [`signing`]).
    signing_public: [u8; KEY_LEN],
    id: PeerId,
}

impl PartialEq for Identity {
    /// Compares public keys only.
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public
    }
}

impl Eq for Identity {}

impl Identity {
    /// Loads the key at `path`, or creates it (mode 0600) if the file does not exist.
    ///
    /// An existing file is refused when it is not exactly 32 bytes, when its mode lets the
    /// group or others access it, or when it holds an all-zero key.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        match File::open(path) {
            Ok(file) => Self::load(path, file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match Self::create(path) {
                // Another process created it between our open and create_new: use theirs.
                Err(IdentityError::Io { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    let file = File::open(path).map_err(io_error(path, "open"))?;
                    Self::load(path, file)
                }
                other => other,
            },
            Err(e) => Err(io_error(path, "open")(e)),
        }
    }

    /// Builds an identity from raw private key bytes (tests, and keys held elsewhere).
    pub fn from_secret_bytes(bytes: [u8; KEY_LEN]) -> Identity {
        let bytes = Zeroizing::new(bytes);
        let secret = StaticSecret::from(*bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Identity {
            secret,
            public,
            signing_public: signing::signing_public(&bytes),
            id: PeerId::from_public_key(&public),
        }
    }

    /// Generates a fresh identity from the operating system's RNG (not persisted).
    pub fn generate() -> Identity {
        let secret = StaticSecret::random_from_rng(OsRng);
        Self::from_secret_bytes(secret.to_bytes())
    }

    /// A deterministic identity for tests and the simulation: `n` picks the key.
    #[cfg(any(test, feature = "sim"))]
    pub fn for_test(n: u64) -> Identity {
        let digest = blake2::Blake2s256::digest(
            [b"weft test identity ".as_slice(), &n.to_le_bytes()].concat(),
        );
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&digest);
        Self::from_secret_bytes(bytes)
    }

    /// This router's peer id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The static public key, as sent (encrypted) in the handshake.
    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// A copy of the private key for the Noise handshake; zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    fn load(path: &Path, mut file: File) -> Result<Identity, IdentityError> {
        // fstat the open file rather than the path, so the checks apply to what we read.
        let meta = file.metadata().map_err(io_error(path, "inspect"))?;
        if !meta.is_file() {
            return Err(IdentityError::NotAFile { path: path.into() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions {
                path: path.into(),
                mode,
            });
        }
        // Read at most one byte more than a key, so a huge file costs nothing.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
        let mut len = 0;
        loop {
            let n = file.read(&mut buf[len..]).map_err(io_error(path, "read"))?;
            if n == 0 || len + n == buf.len() {
                len += n;
                break;
            }
            len += n;
        }
        if len != KEY_LEN {
            return Err(IdentityError::WrongLength {
                path: path.into(),
                len: meta.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&buf[..KEY_LEN]);
        if bytes.iter().fold(0u8, |acc, b| acc | b) == 0 {
            return Err(IdentityError::WeakKey { path: path.into() });
        }
        let identity = Self::from_secret_bytes(*bytes);
        // Cannot happen for a clamped scalar, but costs one multiplication to be sure.
        if is_low_order(&identity.public) {
            return Err(IdentityError::WeakKey { path: path.into() });
        }
        Ok(identity)
    }

    fn create(path: &Path) -> Result<Identity, IdentityError> {
        let identity = Self::generate();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(path)
            .map_err(io_error(path, "create"))?;
        file.write_all(&identity.secret_bytes()[..])
            .map_err(io_error(path, "write"))?;
        file.sync_all().map_err(io_error(path, "fsync"))?;
        // Make the new directory entry durable too; a failure here is not fatal because
        // the file itself is already on disk.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(identity)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        write!(f, "Identity({:?})", self.id)
    }
}

/// Why the identity key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A filesystem operation on the key file failed.
    #[error(
        "could not {action} the identity key {}: {source}; check that the data dir exists \
         and is writable by this user",
        path.display()
    )]
    Io {
        /// The key file.
        path: PathBuf,
        /// What we were doing: open, create, read, write, fsync, inspect.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The key file is readable or writable by the group or others.
    #[error(
        "the identity key {} has mode {mode:03o}, which lets other users access it; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not 32 bytes long.
    #[error(
        "the identity key {} holds {len} bytes, not 32: it is damaged or not a weft key; \
         move it away to create a new identity (peers will see a new peer id)",
        path.display()
    )]
    WrongLength {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// The key file is a directory, a device or a socket.
    #[error("the identity key {} is not a regular file; remove it or point --data-dir elsewhere", path.display())]
    NotAFile {
        /// The key path.
        path: PathBuf,
    },
    /// The key is all zeros (or otherwise unusable).
    #[error(
        "the identity key {} is all zeros, which is not a usable key; \
         move it away to create a new identity",
        path.display()
    )]
    WeakKey {
        /// The key file.
        path: PathBuf,
    },
}

fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> IdentityError + 'a {
    move |source| IdentityError::Io {
        path: path.into(),
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-identity-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn creates_then_loads_the_same_key() {
        let dir = temp_dir("create");
        let path = dir.join("identity.key");
        let a = Identity::load_or_create(&path).expect("create");
        let meta = std::fs::metadata(&path).expect("metadata");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let b = Identity::load_or_create(&path).expect("load");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.id(), PeerId::from_public_key(a.public_key()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_group_readable_key() {
        let dir = temp_dir("mode");
        let path = dir.join("identity.key");
        Identity::load_or_create(&path).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = Identity::load_or_create(&path).expect_err("must refuse 0640");
        assert!(matches!(
            err,
            IdentityError::InsecurePermissions { mode: 0o640, .. }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && msg.contains(path.to_str().expect("utf8")),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_wrong_length_and_zero_key() {
        let dir = temp_dir("len");
        for (name, content) in [
            ("short", vec![1u8; 31]),
            ("long", vec![1u8; 33]),
            ("empty", vec![]),
        ] {
            let path = dir.join(name);
            write_private(&path, &content);
            let err = Identity::load_or_create(&path).expect_err(name);
            assert!(
                matches!(err, IdentityError::WrongLength { .. }),
                "{name}: {err}"
            );
        }
        let path = dir.join("zero");
        write_private(&path, &[0u8; 32]);
        let err = Identity::load_or_create(&path).expect_err("zero key");
        assert!(matches!(err, IdentityError::WeakKey { .. }));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_dir_names_the_path() {
        let path = Path::new("/nonexistent-weft-dir/identity.key");
        let err = Identity::load_or_create(path).expect_err("no dir");
        assert!(err
            .to_string()
            .contains("/nonexistent-weft-dir/identity.key"));
    }

    #[test]
    fn low_order_points_are_detected() {
        let mut points: Vec<[u8; 32]> = Vec::new();
        let hex = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            // X25519 ignores the top bit, so these encode the order-8 points too.
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
            "0000000000000000000000000000000000000000000000000000000000000080",
        ];
        for h in hex {
            let mut p = [0u8; 32];
            for (i, b) in p.iter_mut().enumerate() {
                *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex");
            }
            points.push(p);
        }
        for p in &points {
            assert!(is_low_order(p), "{p:02x?}");
        }
        let good = Identity::generate();
        assert!(!is_low_order(good.public_key()));
        // The base point itself (u = 9) has large prime order.
        let mut nine = [0u8; 32];
        nine[0] = 9;
        assert!(!is_low_order(&nine));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let id = Identity::from_secret_bytes([7u8; 32]);
        let shown = format!("{id:?}");
        assert!(shown.starts_with("Identity(PeerId("), "{shown}");
        assert_eq!(&id.secret_bytes()[..], &[7u8; 32][..]);
    }

    fn write_private(path: &Path, content: &[u8]) {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .expect("write test key");
        f.write_all(content).expect("write");
    }
}
