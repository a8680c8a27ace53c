//! `weft setup-cni`: installs `weft-net` and `weft-ipam` (symlinks to the running
//! binary) into the CNI bin dir and writes `10-weft.conflist` (weft-net, then the
//! reference `portmap` plugin with the portMappings capability, as weave's does).
//! Running it again changes nothing.
//!
//! With [`Install::Copy`] (`--copy`), `weft-net` is a copy of the binary and `weft-ipam`
//! a relative link to it: what a container that installs onto its host's directories
//! needs, since a link to the container's own binary would not resolve on the host.

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

/// How the plugin files reach the bin dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// `weft-net` and `weft-ipam` are symlinks to the binary (on the same host).
    Link,
    /// `weft-net` is a copy of the binary, `weft-ipam` a relative link to `weft-net`.
    Copy,
}

/// Installs into `bin_dir` and `conf_dir`; returns what changed (empty if nothing).
pub fn setup(exe: &Path, bin_dir: &Path, conf_dir: &Path) -> io::Result<Vec<PathBuf>> {
    setup_with(Install::Link, exe, bin_dir, conf_dir)
}

/// [`setup`], linking or copying the binary as `how` says.
pub fn setup_with(
    how: Install,
    exe: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
) -> io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    std::fs::create_dir_all(bin_dir)?;
    std::fs::create_dir_all(conf_dir)?;
    if how == Install::Copy && copy_binary(exe, &bin_dir.join("weft-net"))? {
        changed.push(bin_dir.join("weft-net"));
    }
    let links: &[(&str, &Path)] = match how {
        Install::Link => &[("weft-net", exe), ("weft-ipam", exe)],
        Install::Copy => &[("weft-ipam", Path::new("weft-net"))],
    };
    for &(name, target) in links {
        let link = bin_dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(target) {
            continue;
        }
        let tmp = bin_dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
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

/// Copies `exe` to `dest` (mode 0755) through a temporary file and a rename, so that a
/// runtime never executes a half-written plugin; false if `dest` already has the same
/// contents.
fn copy_binary(exe: &Path, dest: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let want = std::fs::read(exe)?;
    let is_file = std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_file());
    if is_file && std::fs::read(dest).ok().as_deref() == Some(want.as_slice()) {
        return Ok(false);
    }
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dest.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, &want)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, dest)?;
    Ok(true)
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

    #[test]
    fn copy_installs_a_file_and_a_relative_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("weft-setup-cni-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (bin, conf) = (dir.join("bin"), dir.join("net.d"));
        let exe = dir.join("weft");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&exe, b"first").unwrap();
        // A link left by an earlier `setup-cni` without --copy is replaced by a file.
        setup(&exe, &bin, &conf).unwrap();
        let changed = setup_with(Install::Copy, &exe, &bin, &conf).unwrap();
        assert_eq!(changed, vec![bin.join("weft-net"), bin.join("weft-ipam")]);
        let net = std::fs::symlink_metadata(bin.join("weft-net")).unwrap();
        assert!(net.file_type().is_file(), "weft-net must be a file");
        assert_eq!(net.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(bin.join("weft-net")).unwrap(), b"first");
        assert_eq!(
            std::fs::read_link(bin.join("weft-ipam")).unwrap(),
            Path::new("weft-net")
        );
        assert!(setup_with(Install::Copy, &exe, &bin, &conf)
            .unwrap()
            .is_empty());
        // A new binary (an upgraded image) replaces the copy.
        std::fs::write(&exe, b"second").unwrap();
        let changed = setup_with(Install::Copy, &exe, &bin, &conf).unwrap();
        assert_eq!(changed, vec![bin.join("weft-net")]);
        assert_eq!(std::fs::read(bin.join("weft-ipam")).unwrap(), b"second");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
