//! Packet captures inside test namespaces: [`Capture`] runs `tcpdump -w` as our child
//! (ended by its PID, also from `Drop`), and [`read_pcap`] plus a few header parsers
//! read what it wrote. Captures only ever run in namespaces the test created.

use super::netns::Net;
use super::{run_with_timeout, wait_until};
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `tcpdump -i IFACE -w FILE -U` in one of the test's namespaces.
pub struct Capture {
    child: Child,
    /// The pcap file (flushed per packet, so it can be read while the capture runs).
    pub file: PathBuf,
    log: PathBuf,
    label: String,
}

impl Capture {
    /// Starts tcpdump in namespace `ns` on `iface` with the given filter words and waits
    /// until it is listening. `name` names the files in the test dir (`<name>.pcap`).
    /// `snaplen` 0 keeps whole packets.
    pub fn start(
        net: &Net,
        ns: &str,
        iface: &str,
        filter: &[&str],
        snaplen: u32,
        name: &str,
    ) -> Capture {
        assert!(
            ns.starts_with(net.prefix()),
            "capture in {ns}, which this test did not create"
        );
        let file = net.dir().join(format!("{name}.pcap"));
        let log = net.dir().join(format!("{name}.tcpdump.log"));
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open tcpdump log");
        let snap = snaplen.to_string();
        let path = file.display().to_string();
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs tcpdump in place: the child's PID is tcpdump's.
        // `-Z root`: Debian's tcpdump would otherwise drop to user tcpdump before it
        // opens the file in our (root-owned) test dir.
        // `--immediate-mode`: without it packets wait in the kernel ring for up to a
        // second (TPACKET_V3 block timeout), and those still waiting when tcpdump is
        // stopped never reach the file.
        cmd.args(["netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-U"])
            .arg("--immediate-mode")
            .args(["-Z", "root", "-s", &snap, "-w", &path])
            .args(filter);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn tcpdump in {ns}: {e}"));
        let mut capture = Capture {
            child,
            file,
            log,
            label: format!("tcpdump -i {iface} {} in {ns}", filter.join(" ")),
        };
        let mut exited = None;
        let ready = wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
            if let Ok(Some(status)) = capture.child.try_wait() {
                exited = Some(status);
                return true;
            }
            std::fs::read_to_string(&capture.log).is_ok_and(|l| l.contains("listening on"))
        });
        if exited.is_some() || ready.is_none() {
            panic!(
                "{} did not start ({exited:?}): {}",
                capture.label,
                std::fs::read_to_string(&capture.log).unwrap_or_default()
            );
        }
        capture
    }

    /// PID of tcpdump.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The packets captured so far (the file is flushed per packet).
    pub fn packets(&self) -> Pcap {
        read_pcap(&std::fs::read(&self.file).unwrap_or_default())
    }

    /// The raw bytes of the pcap file so far.
    pub fn raw(&self) -> Vec<u8> {
        std::fs::read(&self.file).unwrap_or_default()
    }

    /// Stops tcpdump (SIGTERM by PID, then SIGKILL if it lingers), reaps it and returns
    /// the packets. Panics if tcpdump reported dropped packets.
    pub fn stop(mut self) -> Pcap {
        self.end();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("dropped by kernel")) {
            let dropped: u64 = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert_eq!(dropped, 0, "{}: {line}", self.label);
        }
        self.packets()
    }

    fn end(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = run_with_timeout(
                Command::new("kill").args(["-TERM", &pid]),
                Duration::from_secs(5),
            );
            let exited = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            });
            if exited.is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.end();
    }
}

/// The packets of a pcap file: link type and each packet's captured bytes.
#[derive(Debug, Clone, Default)]
pub struct Pcap {
    /// Link-layer type (1 = Ethernet).
    pub linktype: u32,
    /// Captured bytes of each packet, in order.
    pub packets: Vec<Vec<u8>>,
}

/// Parses a classic pcap file (either byte order, µs or ns). A record cut short at the
/// end (a capture still being written) is ignored.
pub fn read_pcap(data: &[u8]) -> Pcap {
    if data.len() < 24 {
        return Pcap::default();
    }
    let magic = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes"));
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => panic!("not a pcap file (magic {other:#x})"),
    };
    let u32_at = |off: usize| {
        let b: [u8; 4] = data[off..off + 4].try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20);
    let mut packets = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = u32_at(off + 8) as usize;
        let start = off + 16;
        if start + incl > data.len() {
            break;
        }
        packets.push(data[start..start + incl].to_vec());
        off = start + incl;
    }
    Pcap { linktype, packets }
}

/// An IPv4 UDP packet inside an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port.
    pub dport: u16,
    /// The UDP payload as captured (may be cut by the snap length).
    pub payload: &'a [u8],
    /// The payload length from the UDP header.
    pub len: usize,
}

/// The IPv4 header and its payload of an Ethernet frame carrying IPv4 (no VLAN tag).
fn ipv4(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    Some((&ip[..ihl], &ip[ihl..]))
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Source and destination of an IPv4 packet in an Ethernet frame.
pub fn ipv4_addrs(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (hdr, _) = ipv4(frame)?;
    Some((addr(&hdr[12..16]), addr(&hdr[16..20])))
}

/// The UDP packet in an Ethernet frame, if it is IPv4/UDP (first fragment).
pub fn udp(frame: &[u8]) -> Option<Udp<'_>> {
    let (hdr, rest) = ipv4(frame)?;
    if hdr[9] != 17 || rest.len() < 8 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[4], rest[5]])).saturating_sub(8);
    Some(Udp {
        src: addr(&hdr[12..16]),
        sport: u16::from_be_bytes([rest[0], rest[1]]),
        dst: addr(&hdr[16..20]),
        dport: u16::from_be_bytes([rest[2], rest[3]]),
        payload: &rest[8..],
        len,
    })
}

/// `(identifier, sequence)` of an ICMPv4 echo request in an Ethernet frame.
pub fn icmp_echo_request(frame: &[u8]) -> Option<(u16, u16)> {
    let (hdr, rest) = ipv4(frame)?;
    if hdr[9] != 1 || rest.len() < 8 || rest[0] != 8 {
        return None;
    }
    Some((
        u16::from_be_bytes([rest[4], rest[5]]),
        u16::from_be_bytes([rest[6], rest[7]]),
    ))
}
