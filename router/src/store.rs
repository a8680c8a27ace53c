//! The router's durable store: `<data-dir>/weft.redb` (redb).
//!
//! It holds IPAM's state (the persisted allocation range and the last IPAM snapshot:
//! ring, allocations, votes) and the connection targets given by the user (launch
//! arguments and `weft connect`, less `weft forget`), so a restarted router dials them
//! again. The identity key stays in its own 0600 file (`identity.key`, as DESIGN.md
//! fixes: a secret is not mixed into a database that tools may copy), and the
//! attachments registry in `attachments.json`. Writes are blocking, so the daemon makes
//! them on one dedicated thread ([`spawn_writer`]), in order, and confirms each IPAM
//! snapshot to the owner only once the transaction has committed.
//!
//! redb checks its own structure but hands back a value's bytes as the disk holds them,
//! so the IPAM snapshot carries its own BLAKE2s checksum ([`SUM_MAGIC`], then the sum,
//! then the snapshot). A snapshot whose sum fails (the file was corrupted on disk) is
//! moved aside at open ([`Store::set_aside_snapshot`]) and logged at error level; IPAM
//! starts without it, as for a snapshot it cannot decode. A snapshot written before the
//! sum existed (no magic) is read as it is.
//!
//! A file redb cannot open or read at all (a garbage header, a broken tree) is not a
//! reason to refuse to start for good, nor to lose it: it is renamed to
//! `weft.redb.corrupt-<unix seconds>` next to itself ([`set_aside_file`]), an error says
//! so, and the router starts with a fresh store. What that file held is re-learnt: the
//! ring from the peers by gossip, the addresses of the containers still attached by
//! claiming them again ([`Opened::lost_ipam`]); the connection targets added with
//! `weft connect` are lost (the launch arguments still apply). An I/O error (permissions,
//! a full disk) is still a refusal with the reason: the file is not corrupt.

use crate::ipam::{Cidr, PersistSeq};
use redb::{Database, TableDefinition};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const IPAM: TableDefinition<&str, &[u8]> = TableDefinition::new("ipam");
const KEY_SNAPSHOT: &str = "snapshot";
const KEY_RANGE: &str = "range";
const KEY_TARGETS: &str = "targets";
/// The first bytes of a stored snapshot that carries its checksum.
pub const SUM_MAGIC: &[u8; 4] = b"WSS1";
const SUM_LEN: usize = 32;

fn checksum(bytes: &[u8]) -> [u8; SUM_LEN] {
    use blake2::Digest;
    blake2::Blake2s256::digest(bytes).into()
}

/// The stored form of a snapshot: magic, checksum, snapshot.
fn seal_snapshot(snapshot: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SUM_MAGIC.len() + SUM_LEN + snapshot.len());
    v.extend_from_slice(SUM_MAGIC);
    v.extend_from_slice(&checksum(snapshot));
    v.extend_from_slice(snapshot);
    v
}

/// The snapshot in a stored value, or `None` if its checksum fails. A value without
/// the magic (written before the checksum existed) is the snapshot itself.
fn open_snapshot(stored: &[u8]) -> Option<&[u8]> {
    let Some(rest) = stored.strip_prefix(SUM_MAGIC) else {
        return Some(stored);
    };
    let (sum, snapshot) = rest.split_at_checked(SUM_LEN)?;
    (checksum(snapshot) == sum).then_some(snapshot)
}

/// The stored connection targets: one address per line; unparsable lines are skipped
/// (and logged).
fn decode_targets(stored: &[u8]) -> Vec<SocketAddr> {
    String::from_utf8_lossy(stored)
        .lines()
        .filter_map(|l| match l.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                tracing::warn!("ignoring unreadable stored connection target {l:?}");
                None
            }
        })
        .collect()
}

/// The stored form of the connection targets.
fn encode_targets(targets: &[SocketAddr]) -> String {
    targets.iter().map(|a| format!("{a}\n")).collect()
}

/// Fuzz entry: arbitrary bytes as the stored targets value and as the stored snapshot
/// value, read as [`Store::open`] reads them; never panics, targets read back the same
/// once written, and a sealed snapshot opens to itself.
pub fn fuzz_stored_values(data: &[u8]) {
    let targets = decode_targets(data);
    assert_eq!(decode_targets(encode_targets(&targets).as_bytes()), targets);
    let _ = open_snapshot(data);
    assert_eq!(open_snapshot(&seal_snapshot(data)), Some(data));
}

/// What the daemon finds in the store at start.
pub struct Opened {
    /// The store.
    pub store: Store,
    /// The last IPAM snapshot, if any.
    pub snapshot: Option<Vec<u8>>,
    /// The connection targets the user gave (unparsable lines are skipped, and logged).
    pub targets: Vec<SocketAddr>,
    /// IPAM state this router had was not usable (its snapshot or the whole file was
    /// moved aside): the daemon claims the attached containers' addresses again.
    pub lost_ipam: bool,
}

/// One write for the store thread.
pub enum Write {
    /// An IPAM snapshot; confirmed by sequence number once committed.
    Snapshot(PersistSeq, Vec<u8>),
    /// The user's connection targets, replacing the stored list.
    Targets(Vec<SocketAddr>),
}

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("cannot use the state database {path}: {message} (check the data dir, or move the file away to start afresh, losing IPAM state)")]
    Db {
        /// The file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// The range given differs from the one persisted.
    #[error("--ipalloc-range {configured} differs from the range {persisted} this router's data (in {path}) was made with; launch with --ipalloc-range {persisted}, or run `weft reset` on this host first to discard its IPAM state")]
    RangeMismatch {
        /// Persisted.
        persisted: String,
        /// Given.
        configured: Cidr,
        /// The file.
        path: PathBuf,
    },
}

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the database and checks the range against the persisted one,
    /// recording it if none is. Returns the store, the last IPAM snapshot and the targets.
    pub fn open(path: &Path, range: Cidr) -> Result<Opened, StoreError> {
        match Store::open_once(path, range) {
            Err(Unreadable::Corrupt(why)) => {
                let aside = set_aside_file(path)?;
                tracing::error!(
                    path = %path.display(),
                    "the state database {} cannot be read ({why}): it was moved aside to {} \
                     and the router starts with a fresh one; IPAM state is re-learnt from \
                     the peers (the ring by gossip, attached containers' addresses claimed \
                     again); connection targets added with `weft connect` are lost",
                    path.display(),
                    aside.display()
                );
                let mut opened = Store::open_once(path, range).map_err(|e| match e {
                    Unreadable::Corrupt(why) => db_err(path, why),
                    Unreadable::Other(e) => e,
                })?;
                opened.lost_ipam = true;
                Ok(opened)
            }
            Err(Unreadable::Other(e)) => Err(e),
            Ok(opened) => Ok(opened),
        }
    }

    fn open_once(path: &Path, range: Cidr) -> Result<Opened, Unreadable> {
        // redb asserts on some inconsistencies: a panic while reading the file is a
        // corrupt file too, not a crash loop.
        let opened = std::panic::catch_unwind(|| Store::open_checked(path, range));
        opened.unwrap_or_else(|_| Err(Unreadable::Corrupt("redb panicked reading it".into())))
    }

    fn open_checked(path: &Path, range: Cidr) -> Result<Opened, Unreadable> {
        let db = Database::create(path).map_err(|e| classify(path, Box::new(e.into())))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        let persisted = store
            .get_raw(KEY_RANGE)
            .map_err(|e| classify(path, e))?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        match persisted {
            Some(p) if p != range.to_string() => {
                return Err(Unreadable::Other(StoreError::RangeMismatch {
                    persisted: p,
                    configured: range,
                    path: path.to_path_buf(),
                }))
            }
            Some(_) => {}
            None => store
                .write(KEY_RANGE, range.to_string().as_bytes())
                .map_err(Unreadable::Other)?,
        }
        let mut lost_ipam = false;
        let snapshot = match store.get_raw(KEY_SNAPSHOT).map_err(|e| classify(path, e))? {
            None => None,
            Some(stored) => match open_snapshot(&stored) {
                Some(s) => Some(s.to_vec()),
                None => {
                    lost_ipam = true;
                    let kept = store.set_aside_snapshot().map_err(Unreadable::Other)?;
                    tracing::error!(
                        path = %path.display(),
                        "the IPAM snapshot in {} fails its checksum (the file was corrupted \
                         on disk); moved aside under the key {kept} of that file, starting \
                         without it: IPAM state is re-learnt from the peers (the ring by \
                         gossip, attached containers' addresses claimed again)",
                        path.display()
                    );
                    None
                }
            },
        };
        let stored_targets = store
            .get_raw(KEY_TARGETS)
            .map_err(|e| classify(path, e))?
            .unwrap_or_default();
        let targets = decode_targets(&stored_targets);
        Ok(Opened {
            store,
            snapshot,
            targets,
            lost_ipam,
        })
    }

    /// The value stored under `key`, if any.
    #[cfg(test)]
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_raw(key).map_err(|e| db_err(&self.path, e))
    }

    /// The value stored under `key`, if any, with redb's own error.
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, Box<redb::Error>> {
        let boxed = |e: redb::Error| Box::new(e);
        let tx = self.db.begin_read().map_err(|e| boxed(e.into()))?;
        let table = match tx.open_table(IPAM) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(boxed(e.into())),
        };
        let value = table.get(key).map_err(|e| boxed(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| db_err(&self.path, e);
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = tx.open_table(IPAM).map_err(|e| err(&e))?;
            table.insert(key, value).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Replaces the IPAM snapshot, durably.
    pub fn write_snapshot(&self, snapshot: &[u8]) -> Result<(), StoreError> {
        self.write(KEY_SNAPSHOT, &seal_snapshot(snapshot))
    }

    /// Moves the IPAM snapshot aside, in one transaction: its bytes are kept under the
    /// key `snapshot.bad-<unix seconds>` (for a post-mortem) and the snapshot is removed,
    /// so the router starts without it. Returns the key it is kept under.
    pub fn set_aside_snapshot(&self) -> Result<String, StoreError> {
        let err = |e: &dyn std::fmt::Display| db_err(&self.path, e);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = format!("{KEY_SNAPSHOT}.bad-{secs}");
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = tx.open_table(IPAM).map_err(|e| err(&e))?;
            let bad = table
                .remove(KEY_SNAPSHOT)
                .map_err(|e| err(&e))?
                .map(|v| v.value().to_vec());
            if let Some(bad) = bad {
                table
                    .insert(kept.as_str(), bad.as_slice())
                    .map_err(|e| err(&e))?;
            }
        }
        tx.commit().map_err(|e| err(&e))?;
        Ok(kept)
    }

    /// Replaces the stored connection targets, durably (one address per line).
    pub fn write_targets(&self, targets: &[SocketAddr]) -> Result<(), StoreError> {
        let text = encode_targets(targets);
        self.write(KEY_TARGETS, text.as_bytes())
    }
}

/// Why a first open failed: the file is corrupt (it is moved aside), or anything else.
enum Unreadable {
    Corrupt(String),
    Other(StoreError),
}

/// A corrupt file (redb says so, or its header is not redb's) versus any other failure
/// (permissions, I/O, the file in use), which must not cost the file.
fn classify(path: &Path, e: Box<redb::Error>) -> Unreadable {
    use redb::Error;
    let corrupt = match &*e {
        Error::Corrupted(_) => true,
        // redb answers InvalidData for a file whose header is not its own.
        Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    };
    if corrupt {
        Unreadable::Corrupt(e.to_string())
    } else {
        Unreadable::Other(db_err(path, e))
    }
}

/// Renames the file at `path` to `<path>.corrupt-<unix seconds>` (a suffix `.N` if that
/// exists already) and syncs the directory. Returns the new path.
pub fn set_aside_file(path: &Path) -> Result<PathBuf, StoreError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)
        .map_err(|e| db_err(path, format!("cannot move it aside: {e}")))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(aside)
}

fn db_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Starts the writer thread: writes sent to the returned sender are made in order, and
/// `done(seq)` is called after each IPAM snapshot commits. A failed write is logged and
/// not confirmed, so nothing that depends on it is acknowledged. Once every sender is
/// dropped the thread makes the writes left and closes the database (which redb then
/// need not repair at the next open); the returned handle lets the daemon wait for that.
pub fn spawn_writer(
    store: Store,
    done: impl Fn(PersistSeq) + Send + 'static,
) -> (std::sync::mpsc::Sender<Write>, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<Write>();
    let thread = std::thread::Builder::new()
        .name("weft-store".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                // Only the newest snapshot and target list matter: skip superseded ones.
                let (mut snapshot, mut targets) = (None, None);
                for w in std::iter::once(first).chain(rx.try_iter()) {
                    match w {
                        Write::Snapshot(seq, bytes) => snapshot = Some((seq, bytes)),
                        Write::Targets(t) => targets = Some(t),
                    }
                }
                if let Some(t) = targets {
                    if let Err(e) = store.write_targets(&t) {
                        tracing::error!("cannot persist the connection targets: {e}");
                    }
                }
                if let Some((seq, bytes)) = snapshot {
                    match store.write_snapshot(&bytes) {
                        Ok(()) => done(seq),
                        Err(e) => tracing::error!("cannot persist IPAM state: {e}"),
                    }
                }
            }
            drop(store);
        })
        .expect("cannot start the store thread");
    (tx, thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_stored_values_replay_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(59);
        let seed = encode_targets(&[
            "198.18.0.1:6783".parse().unwrap(),
            "[fd00::1]:6783".parse().unwrap(),
        ])
        .into_bytes();
        assert_eq!(decode_targets(&seed).len(), 2);
        for i in 0..3000 {
            let mut d = if i % 2 == 0 {
                seed.clone()
            } else {
                seal_snapshot(&seed)
            };
            for _ in 0..rng.gen_range(0..(1 + i % 5)) {
                let j = rng.gen_range(0..d.len());
                d[j] = rng.gen();
            }
            d.truncate(rng.gen_range(0..=d.len()));
            fuzz_stored_values(&d);
        }
    }

    #[test]
    fn range_is_kept_and_checked() {
        let dir = std::env::temp_dir().join(format!("weft-store-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("weft.redb");
        let _ = std::fs::remove_file(&path);
        let range: Cidr = "10.32.0.0/16".parse().unwrap();
        let opened = Store::open(&path, range).unwrap();
        assert!(opened.snapshot.is_none() && opened.targets.is_empty());
        opened.store.write_snapshot(b"abc").unwrap();
        let targets: Vec<SocketAddr> = vec![
            "198.18.0.2:6783".parse().unwrap(),
            "[fd00::2]:6783".parse().unwrap(),
        ];
        opened.store.write_targets(&targets).unwrap();
        drop(opened);
        let opened = Store::open(&path, range).unwrap();
        assert_eq!(opened.snapshot.as_deref(), Some(&b"abc"[..]));
        assert_eq!(opened.targets, targets);
        drop(opened);
        let other: Cidr = "10.33.0.0/16".parse().unwrap();
        let e = Store::open(&path, other).err().unwrap().to_string();
        assert!(
            e.contains("10.32.0.0/16") && e.contains("10.33.0.0/16"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn snapshot_set_aside_is_kept_under_another_key_and_gone_at_the_next_open() {
        let dir = std::env::temp_dir().join(format!("weft-store-aside-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("weft.redb");
        let _ = std::fs::remove_file(&path);
        let range: Cidr = "10.32.0.0/16".parse().unwrap();
        let opened = Store::open(&path, range).unwrap();
        opened.store.write_snapshot(b"unloadable").unwrap();
        let kept = opened.store.set_aside_snapshot().unwrap();
        assert!(kept.starts_with("snapshot.bad-"), "{kept}");
        let kept_bytes = opened.store.get(&kept).unwrap().unwrap();
        assert_eq!(open_snapshot(&kept_bytes), Some(&b"unloadable"[..]));
        drop(opened);
        let opened = Store::open(&path, range).unwrap();
        assert!(opened.snapshot.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod corrupt_tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write as _};

    /// Bytes overwritten in the middle of the stored snapshot: the router still opens
    /// its store, without that snapshot, which is kept for a post-mortem (under another
    /// key if the checksum caught it, in the moved-aside file if redb did); never a
    /// panic, never other data.
    #[test]
    fn a_corrupted_snapshot_is_moved_aside_in_the_file_or_with_it() {
        let dir = std::env::temp_dir().join(format!("weft-store-corrupt-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("weft.redb");
        let _ = std::fs::remove_file(&path);
        let range: Cidr = "10.32.0.0/16".parse().unwrap();
        let snapshot: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let opened = Store::open(&path, range).unwrap();
        opened.store.write_snapshot(&snapshot).unwrap();
        drop(opened);
        // Find the middle of the snapshot's bytes in the file, and overwrite 4 KiB there.
        let file = std::fs::read(&path).unwrap();
        let probe = &snapshot[150_000..150_064];
        let at = file
            .windows(probe.len())
            .position(|w| w == probe)
            .expect("the snapshot is in the file");
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&[0xAA; 4096]).unwrap();
        drop(f);
        let o = Store::open(&path, range).expect("a corrupted file is not a refusal to start");
        assert_eq!(o.snapshot, None, "the corrupted snapshot is not used");
        assert!(o.lost_ipam);
        // Moved aside, not lost: its bytes are kept for a post-mortem, under another key
        // (the checksum caught it) or in a file next to it (redb caught it).
        use redb::ReadableTable;
        let kept = o.store.db.begin_read().unwrap();
        let table = kept.open_table(IPAM).unwrap();
        let aside = table
            .iter()
            .unwrap()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.value().starts_with("snapshot.bad-"))
            .count();
        let files = corrupt_files(&dir);
        assert_eq!(aside + files.len(), 1, "{aside} keys, files {files:?}");
        // A snapshot without the magic (an older store) is read as it is.
        assert_eq!(open_snapshot(b"old"), Some(&b"old"[..]));
        assert_eq!(open_snapshot(&seal_snapshot(b"new")), Some(&b"new"[..]));
        assert_eq!(open_snapshot(b"WSS1short"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("weft.redb.corrupt-"))
            })
            .collect()
    }

    /// A file redb cannot open at all (its header overwritten with garbage) is moved
    /// aside to `weft.redb.corrupt-<secs>`, bytes intact, and a fresh store opens in its
    /// place, saying IPAM state was lost; an unreadable file for another reason (a
    /// directory in its place) is still a refusal, and nothing is moved.
    #[test]
    fn a_file_redb_cannot_open_is_moved_aside_and_a_fresh_store_opens() {
        let dir = std::env::temp_dir().join(format!("weft-store-garbage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weft.redb");
        let range: Cidr = "10.32.0.0/16".parse().unwrap();
        let opened = Store::open(&path, range).unwrap();
        assert!(!opened.lost_ipam);
        opened.store.write_snapshot(b"state").unwrap();
        opened
            .store
            .write_targets(&["198.18.0.2:6783".parse().unwrap()])
            .unwrap();
        drop(opened);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (i * 131 % 253) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();

        let opened = Store::open(&path, range).expect("a garbage file is moved aside");
        assert!(opened.lost_ipam);
        assert!(opened.snapshot.is_none() && opened.targets.is_empty());
        let files = corrupt_files(&dir);
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(std::fs::read(&files[0]).unwrap(), garbage, "kept as it was");
        // The fresh store works and persists.
        opened.store.write_snapshot(b"fresh").unwrap();
        drop(opened);
        let opened = Store::open(&path, range).unwrap();
        assert!(!opened.lost_ipam);
        assert_eq!(opened.snapshot.as_deref(), Some(&b"fresh"[..]));
        drop(opened);

        // Not corrupt, just unusable: refused with the reason, nothing moved.
        let other = dir.join("sub");
        std::fs::create_dir_all(other.join("weft.redb")).unwrap();
        let e = Store::open(&other.join("weft.redb"), range).err().unwrap();
        assert!(e.to_string().contains("weft.redb"), "{e}");
        assert!(corrupt_files(&other).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
