//! What was attached through this router: the registry behind `weft ps`.
//!
//! The kernel keeps the veths, but not the name the user gave for the namespace (a name
//! under /run/netns, a path or a PID): the host end `vethwe<hash>` only knows its peer's
//! namespace *id*, which cannot be turned back into that name. So each attachment is
//! recorded as (id as given, interface name, host veth name) in
//! `<data-dir>/attachments.json`, rewritten atomically on every change (temp file,
//! fsync, rename, fsync of the directory), so that a crash leaves the old or the new
//! list, never half of one.
//!
//! At startup the router loads the file and keeps only the entries whose host veth is
//! still a port of the `weft` bridge (scanned by netlink): containers that went away
//! while the router was down drop out. `ps` prunes the same way. Bridge ports with no
//! record (the file was deleted) are logged, not listed. MACs and addresses are not
//! stored: `ps` reads them live inside the namespaces, so they are never stale.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::warn;

/// One attached interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The namespace as given to `attach`: a name, a path or a PID.
    pub id: String,
    /// Interface name inside the namespace (`ethwe0`).
    pub ifname: String,
    /// Host end of the veth, a port of the bridge (`vethwe<hash>`).
    pub host_ifname: String,
}

/// The file's layout.
#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    attachments: Vec<Entry>,
}

const VERSION: u32 = 1;

/// The registry: in memory, mirrored to its file. Methods that change it write the file
/// (blocking I/O: call them off the async workers).
#[derive(Debug)]
pub struct Attachments {
    path: PathBuf,
    entries: Mutex<Vec<Entry>>,
}

impl Attachments {
    /// Loads the registry from `path`; a missing file is an empty registry, and an
    /// unreadable or corrupt one is logged and treated as empty.
    pub fn load(path: &Path) -> Attachments {
        let entries = match std::fs::read(path) {
            Ok(bytes) => decode_file(&bytes).unwrap_or_else(|e| {
                warn!(path = %path.display(), "{e}");
                Vec::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warn!(path = %path.display(), "cannot read the attachments file: {e}");
                Vec::new()
            }
        };
        Attachments {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
        }
    }

    /// The entries, in the order they were attached.
    pub fn list(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// Records an attachment, replacing an entry for the same veth or the same
    /// (id, ifname). Nothing changes unless the file was written (a full disk leaves
    /// the list as it was, in memory and on disk).
    pub fn record(&self, entry: Entry) -> io::Result<()> {
        let mut entries = self.lock();
        let mut next = entries.clone();
        next.retain(|e| {
            e.host_ifname != entry.host_ifname && (e.id != entry.id || e.ifname != entry.ifname)
        });
        next.push(entry);
        self.persist(&next)?;
        *entries = next;
        Ok(())
    }

    /// Forgets the attachment of `ifname` in namespace `id`; true if there was one.
    pub fn forget(&self, id: &str, ifname: &str) -> io::Result<bool> {
        self.change(|e| !(e.id == id && e.ifname == ifname))
    }

    /// Keeps only the entries whose host veth is among `ports`; true if any was dropped.
    pub fn retain_ports(&self, ports: &[String]) -> io::Result<bool> {
        self.change(|e| ports.contains(&e.host_ifname))
    }

    /// Drops those of `listed` (entries read *before* `ports` was scanned) whose host
    /// veth is not among `ports`. An entry recorded after the scan is kept, even though
    /// its veth is not in `ports`: an attach that ran meanwhile is not undone.
    pub fn prune(&self, listed: &[Entry], ports: &[String]) -> io::Result<bool> {
        self.change(|e| !listed.contains(e) || ports.contains(&e.host_ifname))
    }

    /// `ports` that start with `prefix` but have no entry.
    pub fn unknown_ports(&self, ports: &[String], prefix: &str) -> Vec<String> {
        let entries = self.lock();
        ports
            .iter()
            .filter(|p| p.starts_with(prefix) && !entries.iter().any(|e| &e.host_ifname == *p))
            .cloned()
            .collect()
    }

    fn change(&self, keep: impl Fn(&Entry) -> bool) -> io::Result<bool> {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|e| keep(e));
        if entries.len() == before {
            return Ok(false);
        }
        self.persist(&entries)?;
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A panic while holding the lock leaves a consistent Vec; keep using it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the list to a temp file, fsyncs it, renames it over the file and fsyncs
    /// the directory.
    fn persist(&self, entries: &[Entry]) -> io::Result<()> {
        write_atomically(&self.path, &encode_file(entries)?)
    }
}

/// The entries in the file's bytes, or why the file is ignored.
fn decode_file(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    match serde_json::from_slice::<File>(bytes) {
        Ok(f) if f.version == VERSION => Ok(f.attachments),
        Ok(f) => Err(format!(
            "unknown attachments file version {}; ignored",
            f.version
        )),
        Err(e) => Err(format!("corrupt attachments file ignored: {e}")),
    }
}

/// The file's bytes for `entries`, as [`Attachments`] writes them.
fn encode_file(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let file = File {
        version: VERSION,
        attachments: entries.to_vec(),
    };
    serde_json::to_vec_pretty(&file).map_err(io::Error::other)
}

/// Fuzz entry: arbitrary bytes as the attachments file, decoded as [`Attachments::load`]
/// does; never panics, and what is read is written back in a form that reads the same.
pub fn fuzz_attachments_file(data: &[u8]) {
    let Ok(entries) = decode_file(data) else {
        return;
    };
    let registry = Attachments {
        path: PathBuf::from("/nonexistent/weft-fuzz/attachments.json"),
        entries: Mutex::new(entries.clone()),
    };
    let ports: Vec<String> = entries.iter().map(|e| e.host_ifname.clone()).collect();
    assert!(registry.unknown_ports(&ports, "").is_empty());
    if let Ok(bytes) = encode_file(&registry.list()) {
        assert_eq!(
            decode_file(&bytes),
            Ok(entries),
            "write then read changed it"
        );
    }
}

/// `path` + `.tmp`, the temp file of an atomic write.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically (temp file, fsync, rename, fsync the dir).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = temp_path(path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        // A full disk: leave no partial temp file taking the space.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_attachments_file_replay_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(53);
        let seed =
            encode_file(&[entry("pod1", "vethwe1"), entry("/proc/9/ns/net", "vethwe2")]).unwrap();
        assert_eq!(decode_file(&seed).map(|e| e.len()), Ok(2));
        for i in 0..3000 {
            let mut d = seed.clone();
            for _ in 0..rng.gen_range(0..(1 + i % 5)) {
                let j = rng.gen_range(0..d.len());
                d[j] = rng.gen();
            }
            if i % 4 == 0 {
                d.truncate(rng.gen_range(0..=d.len()));
            }
            fuzz_attachments_file(&d);
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-att-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entry(id: &str, veth: &str) -> Entry {
        Entry {
            id: id.into(),
            ifname: "ethwe0".into(),
            host_ifname: veth.into(),
        }
    }

    #[test]
    fn survives_a_reload_and_prunes_gone_ports() {
        let dir = temp_dir("reload");
        let path = dir.join("attachments.json");
        let reg = Attachments::load(&path);
        assert!(reg.list().is_empty());
        reg.record(entry("pod1", "vethwe01")).unwrap();
        reg.record(entry("pod2", "vethwe02")).unwrap();
        reg.record(entry("pod1", "vethwe01")).unwrap();
        assert!(!temp_path(&path).exists());

        let reg = Attachments::load(&path);
        assert_eq!(
            reg.list(),
            vec![entry("pod2", "vethwe02"), entry("pod1", "vethwe01")]
        );
        let ports = vec!["vethwe01".to_string(), "vethwe99".into(), "weft-tap".into()];
        assert!(reg.retain_ports(&ports).unwrap());
        assert_eq!(reg.list(), vec![entry("pod1", "vethwe01")]);
        assert_eq!(reg.unknown_ports(&ports, "vethwe"), vec!["vethwe99"]);
        reg.record(entry("pod3", "vethwe03")).unwrap();
        let listed = reg.list();
        reg.record(entry("pod4", "vethwe04")).unwrap();
        assert!(reg.prune(&listed, &ports).unwrap());
        assert_eq!(
            reg.list(),
            vec![entry("pod1", "vethwe01"), entry("pod4", "vethwe04")]
        );
        assert!(reg.forget("pod4", "ethwe0").unwrap());
        assert!(reg.forget("pod1", "ethwe0").unwrap());
        assert!(!reg.forget("pod1", "ethwe0").unwrap());
        assert!(Attachments::load(&path).list().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_empty_registry() {
        let dir = temp_dir("corrupt");
        let path = dir.join("attachments.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(Attachments::load(&path).list().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
