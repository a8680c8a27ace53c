//! The netfilter rule the fast path owns: only candidates' and admitted hosts' underlay
//! addresses may send to the VXLAN port; everything else is dropped and counted.
//!
//! The rules live in their own nftables table, `inet weft`, in the router's network
//! namespace: installed at start, its address sets rewritten whenever the candidates
//! change, and deleted at stop and by `weft reset`. It is driven through the `nft`
//! program over stdin, one atomic transaction per change: speaking nf_tables netlink by
//! hand (batches, set elements, expressions) is out of scope for this router, and the
//! text form is what an operator reads with `nft list table inet weft` anyway.

use std::collections::BTreeSet;
use std::net::IpAddr;
use tokio::io::AsyncWriteExt;

/// The table's family and name.
pub const TABLE: &str = "inet weft";
/// The counter of VXLAN packets dropped for coming from an address not allowed.
pub const COUNTER: &str = "vxlan_injected";

/// The whole table: replaces any earlier copy (e.g. after a crash) atomically.
pub fn ruleset(port: u16, allowed: &BTreeSet<IpAddr>) -> String {
    format!(
        "table {TABLE}\n\
         delete table {TABLE}\n\
         table {TABLE} {{\n\
         \tcounter {COUNTER} {{ }}\n\
         \tset fastdp4 {{ type ipv4_addr; }}\n\
         \tset fastdp6 {{ type ipv6_addr; }}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority -10; policy accept;\n\
         \t\tudp dport {port} ip saddr @fastdp4 accept\n\
         \t\tudp dport {port} ip6 saddr @fastdp6 accept\n\
         \t\tudp dport {port} counter name {COUNTER} drop\n\
         \t}}\n\
         }}\n{}",
        set_script(allowed)
    )
}

/// Rewrites the allowed sets in one transaction.
pub fn set_script(allowed: &BTreeSet<IpAddr>) -> String {
    let mut out = format!("flush set {TABLE} fastdp4\nflush set {TABLE} fastdp6\n");
    let v4: Vec<String> = allowed
        .iter()
        .filter(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    let v6: Vec<String> = allowed
        .iter()
        .filter(|a| a.is_ipv6())
        .map(|a| a.to_string())
        .collect();
    if !v4.is_empty() {
        out.push_str(&format!(
            "add element {TABLE} fastdp4 {{ {} }}\n",
            v4.join(", ")
        ));
    }
    if !v6.is_empty() {
        out.push_str(&format!(
            "add element {TABLE} fastdp6 {{ {} }}\n",
            v6.join(", ")
        ));
    }
    out
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

async fn nft(script: &str) -> Result<String, String> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Installs the table with these allowed addresses.
pub async fn install(port: u16, allowed: &BTreeSet<IpAddr>) -> Result<(), String> {
    nft(&ruleset(port, allowed)).await.map(drop)
}

/// Replaces the allowed addresses.
pub async fn set_allowed(allowed: &BTreeSet<IpAddr>) -> Result<(), String> {
    nft(&set_script(allowed)).await.map(drop)
}

/// Deletes the table, if it is there.
pub async fn remove() -> Result<(), String> {
    nft(&format!("table {TABLE}\ndelete table {TABLE}\n"))
        .await
        .map(drop)
}

/// Packets dropped so far by the rule.
pub async fn dropped() -> Option<u64> {
    parse_packets(
        &nft(&format!("list counter {TABLE} {COUNTER}\n"))
            .await
            .ok()?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_every_allowed_address_and_the_counter() {
        let allowed: BTreeSet<IpAddr> =
            ["198.18.0.2".parse().unwrap(), "fd00::1".parse().unwrap()].into();
        let r = ruleset(6784, &allowed);
        assert!(r.starts_with("table inet weft\ndelete table inet weft\n"));
        assert!(r.contains("udp dport 6784 counter name vxlan_injected drop"));
        assert!(r.contains("add element inet weft fastdp4 { 198.18.0.2 }"));
        assert!(r.contains("add element inet weft fastdp6 { fd00::1 }"));
        let empty = set_script(&BTreeSet::new());
        assert!(!empty.contains("add element"));
        assert!(empty.contains("flush set inet weft fastdp4"));
    }

    #[test]
    fn counter_output_parses() {
        let text =
            "table inet weft {\n\tcounter vxlan_injected {\n\t\tpackets 12 bytes 960\n\t}\n}\n";
        assert_eq!(parse_packets(text), Some(12));
        assert_eq!(parse_packets("packets"), None);
        assert_eq!(parse_packets(""), None);
    }
}
