//! The kernel state the fast path needs, as a pure function of the candidates and
//! their modes, and its difference from what netlink reports.
//!
//! Forwarding database of the VXLAN device (`bridge fdb ... dev weft-vxlan self`):
//! - a probe entry `probe_mac(P) dst IP(P)` for every candidate P, so probes reach it
//!   before it is confirmed;
//! - an all-zero (flood) entry `00:00:00:00:00:00 dst IP(P)` for every *confirmed*
//!   fast-path peer and every admitted legacy host, so broadcasts and unknown unicasts
//!   reach them, and only them;
//! - unicast entries for the MACs behind fast-path peers are learnt by the kernel from
//!   the VXLAN packets it receives. The router cannot program them itself: frames that
//!   travel by VXLAN never pass through it, so its MAC table does not know those MACs.
//!   Learning is safe because only candidates' addresses may send to the VXLAN port
//!   (the firewall rule, [`Desired::allowed`]); learnt entries pointing anywhere but a
//!   flood destination are removed by the diff, so a peer that falls back to sleeve
//!   keeps no stale entry.
//!
//! Firewall: [`Desired::allowed`] is the set of underlay addresses that may send to the
//! VXLAN port: candidates (probing or confirmed) and admitted legacy hosts.

use super::link::Mode;
use super::probe::is_probe_mac;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The all-zero MAC of flood entries.
pub const ZERO_MAC: [u8; 6] = [0; 6];

/// One forwarding entry of the VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    /// The inner destination MAC (all zeroes: flood).
    pub mac: [u8; 6],
    /// The underlay address to send it to.
    pub dst: IpAddr,
}

/// What the kernel should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Entries the router owns on the VXLAN device.
    pub fdb: BTreeSet<FdbEntry>,
    /// Underlay addresses whose learnt entries may stay (flood destinations).
    pub flood: BTreeSet<IpAddr>,
    /// Underlay addresses allowed to send to the VXLAN port.
    pub allowed: BTreeSet<IpAddr>,
}

/// The desired state for candidates `(probe MAC, address, mode)` and admitted hosts.
pub fn desired(
    candidates: impl IntoIterator<Item = ([u8; 6], IpAddr, Mode)>,
    admitted: &[IpAddr],
) -> Desired {
    let mut d = Desired::default();
    for (probe_mac, ip, mode) in candidates {
        d.allowed.insert(ip);
        d.fdb.insert(FdbEntry {
            mac: probe_mac,
            dst: ip,
        });
        if mode == Mode::Fastdp {
            d.flood.insert(ip);
        }
    }
    for ip in admitted {
        d.allowed.insert(*ip);
        d.flood.insert(*ip);
    }
    for ip in d.flood.clone() {
        d.fdb.insert(FdbEntry {
            mac: ZERO_MAC,
            dst: ip,
        });
    }
    d
}

/// The changes that take the device from `actual` to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdbDiff {
    /// Entries to add (`bridge fdb append`).
    pub add: Vec<FdbEntry>,
    /// Entries to delete (`bridge fdb del`).
    pub del: Vec<FdbEntry>,
}

impl FdbDiff {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.del.is_empty()
    }
}

/// Adds what is missing; deletes flood and probe entries the router no longer wants,
/// and learnt entries that point anywhere but a flood destination.
pub fn diff(desired: &Desired, actual: &[FdbEntry]) -> FdbDiff {
    let have: BTreeSet<FdbEntry> = actual.iter().copied().collect();
    let add = desired.fdb.difference(&have).copied().collect();
    let del = have
        .iter()
        .filter(|e| !desired.fdb.contains(e))
        .filter(|e| e.mac == ZERO_MAC || is_probe_mac(&e.mac) || !desired.flood.contains(&e.dst))
        .copied()
        .collect();
    FdbDiff { add, del }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, last])
    }
    const P1: [u8; 6] = [0xfe, 0x77, 1, 1, 1, 1];
    const P2: [u8; 6] = [0xfe, 0x77, 2, 2, 2, 2];
    const POD: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

    fn e(mac: [u8; 6], dst: IpAddr) -> FdbEntry {
        FdbEntry { mac, dst }
    }

    #[test]
    fn only_confirmed_peers_and_admitted_hosts_get_flood_entries() {
        let d = desired(
            [(P1, ip(1), Mode::Fastdp), (P2, ip(2), Mode::Sleeve)],
            &[ip(9)],
        );
        let want: BTreeSet<_> = [
            e(P1, ip(1)),
            e(P2, ip(2)),
            e(ZERO_MAC, ip(1)),
            e(ZERO_MAC, ip(9)),
        ]
        .into();
        assert_eq!(d.fdb, want);
        assert_eq!(d.allowed, [ip(1), ip(2), ip(9)].into());
        assert_eq!(d.flood, [ip(1), ip(9)].into());
        assert_eq!(desired([], &[]), Desired::default());
    }

    #[test]
    fn diff_adds_missing_and_removes_stale_entries_but_keeps_learnt_ones() {
        let d = desired([(P1, ip(1), Mode::Fastdp), (P2, ip(2), Mode::Sleeve)], &[]);
        let actual = [
            e(P1, ip(1)),
            e(ZERO_MAC, ip(2)), // peer 2 fell back: its flood entry goes
            e(POD, ip(1)),      // learnt behind a fastdp peer: stays
            e(POD, ip(2)),      // learnt behind a sleeve peer: goes
            e(ZERO_MAC, ip(7)), // a peer that left
            e(P1, ip(7)),       // a probe entry with a wrong destination
        ];
        let diff = diff(&d, &actual);
        assert_eq!(diff.add, vec![e(ZERO_MAC, ip(1)), e(P2, ip(2))]);
        let mut del = diff.del.clone();
        del.sort();
        let mut want = vec![
            e(ZERO_MAC, ip(2)),
            e(POD, ip(2)),
            e(ZERO_MAC, ip(7)),
            e(P1, ip(7)),
        ];
        want.sort();
        assert_eq!(del, want);
    }

    #[test]
    fn applying_the_diff_converges() {
        let d = desired([(P1, ip(1), Mode::Fastdp)], &[ip(3)]);
        let mut actual = vec![e(ZERO_MAC, ip(5)), e(POD, ip(1)), e(POD, ip(5))];
        let step = diff(&d, &actual);
        actual.retain(|x| !step.del.contains(x));
        actual.extend(step.add);
        assert!(diff(&d, &actual).is_empty());
        assert!(actual.contains(&e(POD, ip(1))));
        // Everything gone: every entry is removed.
        let empty = diff(&Desired::default(), &actual);
        assert_eq!(empty.del.len(), actual.len());
    }
}
