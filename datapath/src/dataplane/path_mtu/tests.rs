//! Path MTU searches against simulated paths, with a virtual clock.

use super::*;

const MTU_1500: u16 = 1408;

fn v4(now: Instant) -> PathMtu {
    PathMtu::new(now, PmtuConfig::default(), IpVersion::V4, MTU_1500)
}

/// Runs a search over a path that carries datagrams up to `path` bytes, losing the
/// acknowledgements `lose` picks; returns the time taken and the number of probes.
fn search(
    pmtu: &mut PathMtu,
    mut now: Instant,
    path: usize,
    mut lose: impl FnMut(usize) -> bool,
) -> (Duration, usize) {
    let start = now;
    let mut probes = 0;
    loop {
        while let Some(size) = pmtu.poll_probe(now) {
            assert!(size <= pmtu.ceiling && (size - MIN_DATAGRAM_LEN) % STEP == 0);
            probes += 1;
            if size <= path && !lose(size) {
                pmtu.handle_ack(size);
            }
        }
        now = pmtu.poll_timeout();
        pmtu.handle_timeout(now);
        if !pmtu.is_searching() {
            return (now - start, probes);
        }
        assert!(now - start < Duration::from_secs(60), "search never ends");
    }
}

#[test]
fn sizes_follow_the_overhead() {
    assert_eq!(
        datagram_for_mtu(MTU_1500),
        1472,
        "1408 needs a full 1500-byte path"
    );
    assert_eq!(datagram_for_path(1500, IpVersion::V4), 1472);
    assert_eq!(datagram_for_path(1280, IpVersion::V4), 1248);
    assert_eq!(datagram_for_path(1280, IpVersion::V6), 1232);
    assert_eq!(
        mtu_for_datagram(1248),
        1199,
        "1280-byte path, exact padding"
    );
    assert_eq!(mtu_for_datagram(1472), 1423);
    assert_eq!(mtu_for_datagram(0), 0);
    assert!(crate::sleeve::overlay_mtu(1280, IpVersion::V4) <= mtu_for_datagram(1248));
}

#[test]
fn starts_at_the_ceiling_and_finds_a_full_path() {
    let now = Instant::now();
    let mut p = v4(now);
    assert_eq!((p.limit(), p.mtu(), p.is_measured()), (1472, 1423, false));
    let (took, probes) = search(&mut p, now, 1472, |_| false);
    assert_eq!(p.limit(), 1472);
    assert!(p.is_measured());
    assert!(
        took <= Duration::from_secs(1) && probes <= 8,
        "{took:?} {probes}"
    );
}

#[test]
fn finds_a_1280_byte_path_to_the_step() {
    let now = Instant::now();
    let mut p = v4(now);
    let path = datagram_for_path(1280, IpVersion::V4);
    let (took, probes) = search(&mut p, now, path, |_| false);
    assert_eq!(p.limit(), path);
    assert_eq!(p.mtu(), 1199);
    assert_eq!(p.frame_limit(), 1213);
    assert!(took <= Duration::from_secs(3), "took {took:?}");
    assert!(probes <= 24, "{probes} probes");
}

#[test]
fn every_path_size_is_found_exactly() {
    let now = Instant::now();
    for path_mtu in (576..=1500).step_by(7) {
        let mut p = v4(now);
        let path = datagram_for_path(path_mtu, IpVersion::V4);
        search(&mut p, now, path, |_| false);
        assert_eq!(p.limit(), path, "path MTU {path_mtu}");
    }
}

#[test]
fn a_silent_neighbour_leaves_the_limit_alone() {
    let now = Instant::now();
    let mut p = v4(now);
    let (took, probes) = search(&mut p, now, 1472, |_| true);
    assert_eq!(p.limit(), 1472);
    assert!(!p.is_measured());
    assert_eq!(took, Duration::from_secs(u64::from(MAX_SILENT_ROUNDS)));
    assert_eq!(probes, 8 * usize::from(MAX_SILENT_ROUNDS));
}

#[test]
fn one_lost_round_is_repeated() {
    let now = Instant::now();
    let mut p = v4(now);
    let mut first_round = 8;
    search(&mut p, now, 1248, |_| {
        first_round -= 1;
        first_round >= 0
    });
    assert_eq!(p.limit(), 1248);
}

#[test]
fn reprobes_later_and_follows_a_path_that_grows() {
    let now = Instant::now();
    let mut p = v4(now);
    let (took, _) = search(&mut p, now, 1248, |_| false);
    assert_eq!(p.limit(), 1248);
    let done = now + took;
    assert_eq!(p.poll_probe(done), None, "no search before the interval");
    assert_eq!(p.poll_timeout(), done + Duration::from_secs(600));
    let later = p.poll_timeout();
    search(&mut p, later, 1472, |_| false);
    assert_eq!(p.limit(), 1472);
}

#[test]
fn emsgsize_lowers_at_once_and_searches() {
    let now = Instant::now();
    let mut p = v4(now);
    search(&mut p, now, 1472, |_| false);
    let t = now + Duration::from_secs(5);
    p.handle_too_big(t, 1472);
    assert_eq!(p.limit(), 1456, "below the failed size at once");
    let mut p2 = p.clone();
    assert!(p.poll_probe(t).is_some(), "a search starts at once");
    search(&mut p2, t, 1360, |_| false);
    assert_eq!(p2.limit(), 1360);
    // A failure larger than the limit changes nothing but still searches.
    let mut q = v4(now);
    search(&mut q, now, 1248, |_| false);
    q.handle_too_big(t, 1400);
    assert_eq!(q.limit(), 1248);
    q.handle_too_big(t, 0);
    assert_eq!(q.limit(), q.floor, "never below the floor");
}

#[test]
fn acks_outside_a_search_or_above_the_ceiling_are_ignored() {
    let now = Instant::now();
    let mut p = v4(now);
    search(&mut p, now, 1248, |_| false);
    p.handle_ack(1472);
    assert_eq!(p.limit(), 1248);
    let t = p.poll_timeout();
    let _ = p.poll_probe(t);
    p.handle_ack(60_000);
    p.handle_ack(usize::MAX);
    search(&mut p, t, 1248, |_| false);
    assert_eq!(p.limit(), 1248);
}

/// Over IPv6 the header is 40 bytes, not 20: a 1500-byte IPv6 path carries a 1440-byte
/// datagram (1500 − 40 − 8 = 1452, down to the 16-byte step) and an overlay MTU of
/// 1391, below the 1408 that a 1500-byte IPv4 path allows; the floor is what the
/// IPv6 minimum (1280) carries.
#[test]
fn an_ipv6_path_accounts_for_its_larger_header() {
    assert_eq!(datagram_for_path(1500, IpVersion::V6), 1440);
    assert_eq!(mtu_for_datagram(1440), 1391);
    assert_eq!(crate::sleeve::overlay_mtu(1500, IpVersion::V6), 1388);
    assert!(crate::sleeve::overlay_mtu(1500, IpVersion::V6) <= mtu_for_datagram(1440));
    let now = Instant::now();
    let mut p = PathMtu::new(now, PmtuConfig::default(), IpVersion::V6, MTU_1500);
    assert_eq!(p.floor, datagram_for_path(1280, IpVersion::V6));
    search(&mut p, now, datagram_for_path(1500, IpVersion::V6), |_| {
        false
    });
    assert_eq!((p.limit(), p.mtu()), (1440, 1391));
    // Every IPv6 path from the minimum up is found exactly.
    for path_mtu in (1280..=1500).step_by(11) {
        let mut p = PathMtu::new(now, PmtuConfig::default(), IpVersion::V6, MTU_1500);
        let path = datagram_for_path(path_mtu, IpVersion::V6);
        search(&mut p, now, path, |_| false);
        assert_eq!(p.limit(), path, "IPv6 path MTU {path_mtu}");
    }
}
