//! The CNI result (interfaces, ips, routes, dns) and its conversion between versions:
//! before 1.0.0 each `ips[]` entry carries `"version": "4"|"6"`.

use crate::error::{CniError, CniResult, DECODE};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Netns path for interfaces inside the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An address in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR.
    pub address: String,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// An ADD result (full for weft-net, abbreviated for IPAM plugins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniOutput {
    /// Interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

impl CniOutput {
    /// Decodes a result of any supported version (0.3.0 to 1.1.0); unknown fields and
    /// `ips[].version` are ignored.
    pub fn from_value(v: &Value) -> CniResult<CniOutput> {
        serde_json::from_value(v.clone())
            .map_err(|e| CniError::new(DECODE, "cannot decode CNI result", e.to_string()))
    }

    /// Decodes a result from bytes.
    pub fn from_slice(b: &[u8]) -> CniResult<CniOutput> {
        let v: Value = serde_json::from_slice(b)
            .map_err(|e| CniError::new(DECODE, "cannot decode CNI result", e.to_string()))?;
        Self::from_value(&v)
    }

    /// The result as JSON in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("cniVersion".into(), Value::String(version.into()));
            if crate::version::ips_have_version(version) {
                if let Some(Value::Array(ips)) = m.get_mut("ips") {
                    for ip in ips {
                        let fam = if ip["address"].as_str().is_some_and(|a| a.contains(':')) {
                            "6"
                        } else {
                            "4"
                        };
                        ip["version"] = Value::String(fam.into());
                    }
                }
            }
        }
        v
    }
}

/// Fuzz entry: decoding arbitrary bytes as a result never panics.
pub fn fuzz_result(data: &[u8]) {
    if let Ok(r) = CniOutput::from_slice(data) {
        let _ = r.to_json("0.3.1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniOutput {
        CniOutput {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "c2:11:22:33:44:55".into(),
                sandbox: "/run/netns/x".into(),
            }],
            ips: vec![
                IpConfig {
                    address: "10.40.0.2/16".into(),
                    gateway: Some("10.40.0.1".into()),
                    interface: Some(0),
                },
                IpConfig {
                    address: "fd00::2/64".into(),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: None,
            }],
            dns: None,
        }
    }

    #[test]
    fn ips_carry_version_before_1_0() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let j = sample().to_json(v);
            assert_eq!(j["cniVersion"], v);
            assert_eq!(j["ips"][0]["version"], "4");
            assert_eq!(j["ips"][1]["version"], "6");
        }
        for v in ["1.0.0", "1.1.0"] {
            let j = sample().to_json(v);
            assert!(j["ips"][0].get("version").is_none());
            assert_eq!(j["ips"][0]["interface"], 0);
        }
    }

    #[test]
    fn results_round_trip_across_versions() {
        let j = sample().to_json("0.3.1");
        assert_eq!(CniOutput::from_value(&j).unwrap(), sample());
        assert!(CniOutput::from_slice(b"{\"ips\":3}").is_err());
    }

    #[test]
    fn fuzz_result_random_inputs() {
        let seed = sample().to_json("0.4.0").to_string().into_bytes();
        crate::for_each_mutation(&seed, 3000, 0x9e37_79b9_7f4a_7c15, fuzz_result);
    }
}
