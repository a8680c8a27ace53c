//! The network configuration on stdin: parsing, defaults and validation (codes 6 and 7).

use crate::error::{CniError, CniResult, DECODE, INVALID_CONFIG};
use crate::types::{Dns, Route};
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;

/// Largest configuration read from stdin.
pub const MAX_STDIN: u64 = 1 << 20;

/// The bridge that the router creates and weft-net plugs into by default.
pub const DEFAULT_BRIDGE: &str = "weft";

/// The `ipam` section.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    /// Plugin to delegate to; empty or `weft-ipam` means the router's IPAM.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Subnet to allocate from (router IPAM).
    #[serde(default)]
    pub subnet: Option<String>,
    /// Gateway to report and route through.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Extra routes for the container.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// The `runtimeConfig` section (capabilities `ips` and `mac`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Addresses to claim.
    #[serde(default)]
    pub ips: Vec<String>,
    /// MAC of the container interface.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One entry of the GC attachment list.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The request configuration of one invocation.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// Version to answer in.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// Plugin type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Bridge to plug into.
    #[serde(default)]
    pub bridge: Option<String>,
    /// MTU of the veth; the bridge's when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Hairpin mode on the host port (default on).
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: Option<bool>,
    /// IPAM section.
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    /// DNS settings copied to the result.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Runtime configuration.
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    /// The result of the previous plugin (chains), or of ADD (DEL, CHECK).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    /// GC: attachments still valid.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// GC: the spec-1.1.0 name of the same list.
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses and validates `bytes` (the whole stdin).
    pub fn parse(bytes: &[u8]) -> CniResult<NetConf> {
        let decode = |e: String| CniError::new(DECODE, "cannot decode network configuration", e);
        let v: Value = serde_json::from_slice(bytes).map_err(|e| decode(e.to_string()))?;
        if !v.is_object() {
            return Err(decode("the configuration must be a JSON object".into()));
        }
        let conf: NetConf = serde_json::from_value(v).map_err(|e| decode(e.to_string()))?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> CniResult<()> {
        let invalid =
            |what: String| CniError::new(INVALID_CONFIG, "invalid network configuration", what);
        if !crate::env::valid_container_id(&self.name) {
            return Err(invalid(format!(
                "network name {:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
                self.name
            )));
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(format!("mtu {mtu} is outside 68..65535")));
            }
        }
        if let Some(b) = &self.bridge {
            if !crate::env::valid_ifname(b) {
                return Err(invalid(format!(
                    "bridge {b:?} is not a valid interface name"
                )));
            }
        }
        if let Some(ipam) = &self.ipam {
            if ipam.kind.contains('/') {
                return Err(invalid(format!(
                    "ipam.type {:?} must be a plain name",
                    ipam.kind
                )));
            }
            if let Some(s) = &ipam.subnet {
                s.parse::<datapath::cidr::LinkAddr>()
                    .map_err(|e| invalid(format!("ipam.subnet: {e}")))?;
            }
            if let Some(g) = &ipam.gateway {
                g.parse::<std::net::IpAddr>()
                    .map_err(|_| invalid(format!("ipam.gateway {g:?} is not an IP address")))?;
            }
        }
        for ip in &self.runtime_config.ips {
            ip.parse::<datapath::cidr::LinkAddr>()
                .map_err(|e| invalid(format!("runtimeConfig.ips: {e}")))?;
        }
        if let Some(mac) = &self.runtime_config.mac {
            parse_mac(mac).ok_or_else(|| {
                invalid(format!("runtimeConfig.mac {mac:?} is not a MAC address"))
            })?;
        }
        Ok(())
    }

    /// Applies podman-style `CNI_ARGS` (`IgnoreUnknown=1;MAC=..;IP=..`): `MAC` and `IP`
    /// fill `runtimeConfig.mac` and `runtimeConfig.ips` when those are not set (the
    /// config wins, as the conventions say). Other keys are ignored.
    pub fn apply_cni_args(&mut self, args: &str) -> CniResult<()> {
        for pair in args.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    crate::error::INVALID_ENV,
                    "invalid CNI_ARGS",
                    format!("{pair:?} is not KEY=VALUE"),
                )
            })?;
            match k {
                "MAC" if self.runtime_config.mac.is_none() => {
                    self.runtime_config.mac = Some(v.to_string())
                }
                "IP" if self.runtime_config.ips.is_empty() => {
                    // host-local's convention: an address without a prefix gets the subnet's.
                    let prefix = self
                        .ipam
                        .as_ref()
                        .and_then(|i| i.subnet.as_deref())
                        .and_then(|s| s.split_once('/').map(|(_, p)| p.to_string()));
                    let ip = match (v.contains('/'), prefix) {
                        (false, Some(p)) => format!("{v}/{p}"),
                        _ => v.to_string(),
                    };
                    self.runtime_config.ips = vec![ip]
                }
                _ => {}
            }
        }
        self.validate()
    }

    /// The IPAM plugin to delegate to, or `None` for the router's own IPAM.
    pub fn delegate(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .map(|i| i.kind.as_str())
            .filter(|k| !k.is_empty() && *k != "weft-ipam" && *k != "weft")
    }

    /// Bridge name (default `weft`).
    pub fn bridge(&self) -> &str {
        self.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE)
    }

    /// The GC list of valid attachments from either key.
    pub fn gc_valid(&self) -> Vec<Attachment> {
        let mut out = self.valid_attachments.clone().unwrap_or_default();
        out.extend(self.attachments.clone().unwrap_or_default());
        out
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads stdin up to [`MAX_STDIN`]; larger input is refused (code 6).
pub fn read_bounded(mut r: impl Read) -> CniResult<Vec<u8>> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::new(crate::error::IO_FAILURE, "cannot read stdin", e.to_string()))?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(CniError::new(
            DECODE,
            "network configuration too large",
            format!("stdin is over {MAX_STDIN} bytes"),
        ));
    }
    Ok(buf)
}

/// Fuzz entry: parsing arbitrary bytes never panics.
pub fn fuzz_config(data: &[u8]) {
    if let Ok(c) = NetConf::parse(data) {
        let _ = (c.delegate(), c.bridge(), c.gc_valid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"weft","type":"weft-net","mtu":1376,
            "ipam":{"subnet":"10.40.0.0/16","routes":[{"dst":"10.32.0.0/12"}]},
            "runtimeConfig":{"mac":"c2:11:22:33:44:55","ips":["10.40.0.9/16"]},
            "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}],
            "cni.dev/valid-attachments":[{"containerID":"b","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.mtu, Some(1376));
        assert_eq!(c.bridge(), "weft");
        assert_eq!(c.delegate(), None);
        assert_eq!(c.gc_valid().len(), 2);
        assert_eq!(
            parse_mac("c2:11:22:33:44:55"),
            Some([0xc2, 0x11, 0x22, 0x33, 0x44, 0x55])
        );
        assert_eq!(
            format_mac([0xc2, 0x11, 0x22, 0x33, 0x44, 0x55]),
            "c2:11:22:33:44:55"
        );
    }

    #[test]
    fn bad_configs_get_codes_6_and_7() {
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, DECODE);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code, DECODE);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0"}"#)
                .unwrap_err()
                .code,
            INVALID_CONFIG
        );
        for bad in [
            r#"{"cniVersion":"1.0.0","name":"bad/name"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","mtu":10}"#,
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"../x"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"mac":"zz"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","bridge":"a b"}"#,
        ] {
            assert_eq!(
                NetConf::parse(bad.as_bytes()).unwrap_err().code,
                INVALID_CONFIG,
                "{bad}"
            );
        }
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#)
                .unwrap();
        assert_eq!(c.delegate(), Some("host-local"));
    }

    #[test]
    fn cni_args_fill_mac_and_ip() {
        let mut c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.40.0.0/16"}}"#,
        )
        .unwrap();
        c.apply_cni_args("IgnoreUnknown=1;K8S_POD_NAME=x;MAC=c2:11:22:33:44:55;IP=10.40.1.2")
            .unwrap();
        assert_eq!(c.runtime_config.mac.as_deref(), Some("c2:11:22:33:44:55"));
        assert_eq!(c.runtime_config.ips, vec!["10.40.1.2/16"]);
        assert_eq!(c.apply_cni_args("novalue").unwrap_err().code, 4);
        assert_eq!(c.clone().apply_cni_args("").map(|()| 0), Ok(0));
        let mut d = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
        assert_eq!(d.apply_cni_args("MAC=zz").unwrap_err().code, INVALID_CONFIG);
    }

    #[test]
    fn stdin_is_bounded() {
        let big = vec![b' '; MAX_STDIN as usize + 1];
        assert_eq!(read_bounded(&big[..]).unwrap_err().code, DECODE);
        assert_eq!(read_bounded(&b"{}"[..]).unwrap(), b"{}");
    }

    #[test]
    fn fuzz_config_random_inputs() {
        let mut s = 0x1234_5678_9abc_def0u64;
        let seeds: [&[u8]; 3] = [
            br#"{"cniVersion":"1.0.0","name":"n"}"#,
            b"{\"ipam\":{}}",
            b"\xff\x00",
        ];
        for i in 0..3000 {
            let mut data = seeds[i % 3].to_vec();
            for _ in 0..(i % 8) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let pos = (s as usize) % (data.len() + 1);
                data.insert(pos, (s >> 32) as u8);
            }
            fuzz_config(&data);
        }
    }
}
