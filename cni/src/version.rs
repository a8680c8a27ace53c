//! CNI versions: which ones weft speaks, which verbs each allows, and the VERSION answer.

use crate::env::Verb;
use crate::error::{CniError, CniResult, INCOMPATIBLE_VERSION};

/// Versions weft-net and weft-ipam accept and answer in.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used for errors when the config gives none we know.
pub const CURRENT: &str = "1.1.0";

/// `(major, minor, patch)` of a version string such as `0.4.0`.
pub fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

/// Checks that `version` is supported and allows `verb` (CHECK from 0.4.0, GC and
/// STATUS from 1.1.0); code 1 otherwise.
pub fn check(version: &str, verb: Verb) -> CniResult<()> {
    if !SUPPORTED.contains(&version) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "config cniVersion {version:?} is not supported; use one of {}",
                SUPPORTED.join(", ")
            ),
        ));
    }
    let v = parse(version).unwrap_or_default();
    let min = match verb {
        Verb::Check => (0, 4, 0),
        Verb::Gc | Verb::Status => (1, 1, 0),
        _ => (0, 0, 0),
    };
    if v < min {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("config version does not allow {verb:?}"),
            format!(
                "{verb:?} needs cniVersion {}.{}.{} or later; the config has {version}",
                min.0, min.1, min.2
            ),
        ));
    }
    Ok(())
}

/// True before 1.0.0, when `ips[]` entries carry `"version": "4"|"6"`.
pub fn ips_have_version(version: &str) -> bool {
    parse(version).is_some_and(|v| v < (1, 0, 0))
}

/// The VERSION answer: `{"cniVersion": <asked>, "supportedVersions": [...]}`.
pub fn answer(asked: Option<&str>) -> String {
    let v = asked.filter(|v| SUPPORTED.contains(v)).unwrap_or(CURRENT);
    serde_json::json!({"cniVersion": v, "supportedVersions": SUPPORTED}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_gated_by_version() {
        assert!(check("0.3.1", Verb::Add).is_ok());
        assert_eq!(check("0.3.1", Verb::Check).unwrap_err().code, 1);
        assert!(check("0.4.0", Verb::Check).is_ok());
        assert_eq!(check("1.0.0", Verb::Gc).unwrap_err().code, 1);
        assert_eq!(check("1.0.0", Verb::Status).unwrap_err().code, 1);
        assert!(check("1.1.0", Verb::Status).is_ok());
        assert_eq!(check("9.9.9", Verb::Add).unwrap_err().code, 1);
        assert_eq!(check("0.2.0", Verb::Add).unwrap_err().code, 1);
    }

    #[test]
    fn version_answer_lists_all() {
        let v: serde_json::Value = serde_json::from_str(&answer(Some("1.0.0"))).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let v: serde_json::Value = serde_json::from_str(&answer(Some("7"))).unwrap();
        assert_eq!(v["cniVersion"], CURRENT);
        assert!(ips_have_version("0.4.0") && !ips_have_version("1.0.0"));
        assert_eq!(parse("1.2"), None);
    }
}
