//! CNI errors: the spec's well-known codes and the JSON object printed on stdout.

use serde::Serialize;

/// Incompatible CNI version (also: verb not allowed for this version).
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables.
pub const INVALID_ENV: u32 = 4;
/// I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content.
pub const DECODE: u32 = 6;
/// Invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// CNI_NETNS is the plugin's own namespace (libcni's `ErrInvalidNetNS`).
pub const INVALID_NETNS: u32 = 8;
/// Try again later.
pub const TRY_AGAIN: u32 = 11;
/// STATUS: the plugin cannot service ADD.
pub const NOT_AVAILABLE: u32 = 50;
/// Weft's own (the spec leaves 100 and up to plugins): the address asked for
/// (`runtimeConfig.ips`, `CNI_ARGS IP=`) is held by another container.
pub const ADDRESS_IN_USE: u32 = 100;
/// Generic internal error (skel's `ErrInternal`).
pub const INTERNAL: u32 = 999;

/// An error as the spec prints it: `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details} (CNI error {code})")]
pub struct CniError {
    /// Well-known code (0-99) or plugin specific (100+).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// What failed, on what, and what to do.
    pub details: String,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    /// An error with `code`, a short message and details.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON object for stdout, tagged with the version in use.
    pub fn to_json(&self, version: &str) -> String {
        serde_json::to_string(&Wire {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_else(|_| format!("{{\"code\":{}}}", self.code))
    }
}

/// Shorthand for a `Result` with [`CniError`].
pub type CniResult<T> = Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields() {
        let e = CniError::new(INVALID_ENV, "bad CNI_IFNAME", "too long");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["msg"], "bad CNI_IFNAME");
        assert_eq!(v["details"], "too long");
    }
}
