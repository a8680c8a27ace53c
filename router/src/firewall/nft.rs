//! Running the `nft` program: one atomic transaction per script, over stdin.
//!
//! Speaking nf_tables netlink by hand (batches, set elements, expressions) is out of
//! scope for this router, and the text form is what an operator reads with
//! `nft list table inet weft` anyway. The program is looked up in the system's sbin
//! and bin directories, never through `PATH` (a root daemon must not run whatever an
//! inherited `PATH` names first); `WEFT_NFT` names another one (tests use it to show
//! what happens without nftables).

use super::ruleset::{COUNTER, TABLE};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Where `nft` is looked for, in order.
const SEARCH: [&str; 4] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

/// Why a script could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NftError {
    /// No `nft` program.
    #[error("nft not found (install nftables: apt-get install nftables)")]
    NotFound,
    /// `nft` ran and refused, or could not be run.
    #[error("nft failed: {0}")]
    Failed(String),
}

impl NftError {
    /// A few words for `weft status`: `nft not found`, `nft failed`.
    pub fn short(&self) -> &'static str {
        match self {
            NftError::NotFound => "nft not found",
            NftError::Failed(_) => "nft failed",
        }
    }
}

/// The `nft` program to run, if there is one.
pub fn program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEFT_NFT") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    SEARCH.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Runs `script` as one transaction; returns what nft printed.
pub async fn run(script: &str) -> Result<String, NftError> {
    let program = program().ok_or(NftError::NotFound)?;
    let mut child = tokio::process::Command::new(&program)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::NotFound,
            _ => NftError::Failed(format!("cannot run {}: {e}", program.display())),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| NftError::Failed(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NftError::Failed(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NftError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Deletes the table, if it is there.
pub async fn remove() -> Result<(), NftError> {
    run(&format!("table {TABLE}\ndelete table {TABLE}\n"))
        .await
        .map(drop)
}

/// Packets dropped so far by the fast path's guard (None: no table or unreadable).
pub async fn dropped() -> Option<u64> {
    parse_packets(
        &run(&format!("list counter {TABLE} {COUNTER}\n"))
            .await
            .ok()?,
    )
}

/// The packet count in `nft list counter` output.
pub fn parse_packets(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_output_parses() {
        let text =
            "table inet weft {\n\tcounter vxlan_injected {\n\t\tpackets 12 bytes 960\n\t}\n}\n";
        assert_eq!(parse_packets(text), Some(12));
        assert_eq!(parse_packets("packets"), None);
        assert_eq!(parse_packets(""), None);
    }

    #[test]
    fn a_missing_program_says_so() {
        assert_eq!(NftError::NotFound.short(), "nft not found");
        assert!(NftError::NotFound
            .to_string()
            .contains("apt-get install nftables"));
    }
}
