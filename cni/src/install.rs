//! `weft setup-cni`: installs `weft-net` and `weft-ipam` (symlinks to the running
//! binary) into the CNI bin dir and writes `10-weft.conflist` (weft-net, then the
//! reference `portmap` plugin with the portMappings capability, as weave's does).
//! Running it again changes nothing.

use std::io;
use std::path::{Path, PathBuf};

/// Name of the configuration file.
pub const CONFLIST: &str = "10-weft.conflist";

/// The conflist weft installs. Version 1.0.0: podman 4.3 (Debian 12) rejects 1.1.0.
pub fn conflist() -> String {
    let v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "weft",
        "plugins": [
            {"name": "weft", "type": "weft-net", "hairpinMode": true,
             "capabilities": {"mac": true, "ips": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Installs into `bin_dir` and `conf_dir`; returns what changed (empty if nothing).
pub fn setup(exe: &Path, bin_dir: &Path, conf_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    std::fs::create_dir_all(bin_dir)?;
    std::fs::create_dir_all(conf_dir)?;
    for name in ["weft-net", "weft-ipam"] {
        let link = bin_dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(exe) {
            continue;
        }
        let tmp = bin_dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(exe, &tmp)?;
        std::fs::rename(&tmp, &link)?;
        changed.push(link);
    }
    let conf = conf_dir.join(CONFLIST);
    let want = conflist();
    if std::fs::read_to_string(&conf).ok().as_deref() != Some(want.as_str()) {
        let tmp = conf_dir.join(format!(".{CONFLIST}.tmp"));
        std::fs::write(&tmp, &want)?;
        std::fs::rename(&tmp, &conf)?;
        changed.push(conf);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("weft-setup-cni-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (bin, conf) = (dir.join("bin"), dir.join("net.d"));
        let exe = Path::new("/usr/bin/true");
        assert_eq!(setup(exe, &bin, &conf).unwrap().len(), 3);
        assert!(setup(exe, &bin, &conf).unwrap().is_empty());
        assert_eq!(std::fs::read_link(bin.join("weft-ipam")).unwrap(), exe);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(conf.join(CONFLIST)).unwrap()).unwrap();
        assert_eq!(v["plugins"][0]["type"], "weft-net");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
