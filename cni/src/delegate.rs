//! Delegation to an IPAM plugin (spec §4): the binary named by `ipam.type` is looked up
//! in `CNI_PATH` and run with the same environment (CNI_COMMAND possibly changed) and
//! the complete configuration on stdin; its stderr goes to ours.

use crate::env::Env;
use crate::error::{CniError, CniResult, DECODE, INVALID_CONFIG};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Finds `name` in the `CNI_PATH` directories.
pub fn find(env: &Env, name: &str) -> CniResult<PathBuf> {
    env.path
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                INVALID_CONFIG,
                format!("IPAM plugin {name:?} not found"),
                format!("looked in CNI_PATH {:?}", env.path.join(":")),
            )
        })
}

/// Runs plugin `name` for `command` with `stdin`; returns its stdout on success, or
/// the error it printed (its own code) on failure.
pub fn exec(env: &Env, name: &str, command: &str, stdin: &[u8]) -> CniResult<Vec<u8>> {
    let path = find(env, name)?;
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                crate::error::IO_FAILURE,
                format!("cannot run IPAM plugin {name}"),
                format!("{}: {e}", path.display()),
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe: not our error.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            crate::error::IO_FAILURE,
            format!("waiting for IPAM plugin {name}"),
            e.to_string(),
        )
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Err(match v["code"].as_u64() {
        Some(code) => CniError::new(
            code as u32,
            format!(
                "IPAM plugin {name} {command} failed: {}",
                v["msg"].as_str().unwrap_or_default()
            ),
            v["details"].as_str().unwrap_or_default(),
        ),
        None => CniError::new(
            DECODE,
            format!("IPAM plugin {name} {command} failed ({})", out.status),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
    })
}
