//! `--peer-keys FILE|DIR`: the allow-list of peer keys, loaded at start and again on
//! SIGHUP or `weft peers reload` ([`KeyList::reload`]).
//!
//! The list itself ([`gossip::peer_keys::PeerKeys`]) is checked by every handshake
//! (link tasks take the current snapshot when they start one) and by the topology (the
//! owner is told the listed ids). A reload that fails (a missing file, a bad line)
//! keeps the list in force and says why; a good one replaces it, and the owner closes
//! the links of peers no longer listed while every other link stays up.

use gossip::peer_keys::PeerKeys;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Largest list file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The list in force and where it comes from.
#[derive(Debug)]
pub struct KeyList {
    path: PathBuf,
    current: RwLock<Arc<PeerKeys>>,
    reloads: AtomicU64,
}

/// Reads a list file, or every regular file of a directory (names starting with `.`
/// skipped), as one list.
pub fn load(path: &Path) -> Result<PeerKeys, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("--peer-keys {}: {e}", path.display()))?;
    let files = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("--peer-keys {}: {e}", path.display()))?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut list = PeerKeys::default();
    for file in files {
        let len = std::fs::metadata(&file).map_or(0, |m| m.len());
        if len > MAX_FILE_BYTES {
            return Err(format!(
                "--peer-keys {}: larger than {MAX_FILE_BYTES} bytes",
                file.display()
            ));
        }
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("--peer-keys {}: {e}", file.display()))?;
        let more =
            PeerKeys::parse(&text).map_err(|e| format!("--peer-keys {}: {e}", file.display()))?;
        list.extend(more)
            .map_err(|e| format!("--peer-keys {}: {e}", file.display()))?;
    }
    Ok(list)
}

impl KeyList {
    /// Loads the list at `path` (an error refuses the start).
    pub fn open(path: &Path) -> Result<Arc<KeyList>, String> {
        let list = load(path)?;
        Ok(Arc::new(KeyList {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(list)),
            reloads: AtomicU64::new(0),
        }))
    }

    /// The list in force.
    pub fn current(&self) -> Arc<PeerKeys> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the list again; on success it replaces the one in force, which is returned.
    pub fn reload(&self) -> Result<Arc<PeerKeys>, String> {
        let list = Arc::new(load(&self.path)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&list);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(list)
    }

    /// For the report.
    pub fn report(&self) -> crate::status::PeerKeysReport {
        crate::status::PeerKeysReport {
            path: self.path.display().to_string(),
            keys: self.current().len(),
            reloads: self.reloads.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip::identity::Identity;
    use gossip::peer_keys::to_hex;

    #[test]
    fn a_file_or_a_directory_loads_and_a_bad_reload_keeps_the_list() {
        let dir = std::env::temp_dir().join(format!("weft-peer-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (Identity::generate(), Identity::generate());
        std::fs::write(
            dir.join("a.keys"),
            format!("{} a\n", to_hex(a.public_key())),
        )
        .unwrap();
        std::fs::write(dir.join(".hidden"), "garbage\n").unwrap();
        let list = KeyList::open(&dir).unwrap();
        assert_eq!(list.current().len(), 1);
        std::fs::write(dir.join("b.keys"), format!("{}\n", to_hex(b.public_key()))).unwrap();
        assert!(list.reload().unwrap().admits(&b.id()));
        std::fs::write(dir.join("c.keys"), "not a key\n").unwrap();
        let e = list.reload().unwrap_err();
        assert!(e.contains("c.keys") && e.contains("line 1"), "{e}");
        assert_eq!(
            list.current().len(),
            2,
            "a bad reload keeps the list in force"
        );
        assert_eq!(list.report().reloads, 1);
        assert!(KeyList::open(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
