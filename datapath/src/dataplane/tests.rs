//! Two data planes wired back to back: keys, path confirmation, frames, replays.

use super::*;
use crate::switch::RouteView;

/// Two peers, each the other's only neighbour.
struct Pair(PeerId);

impl RouteView for Pair {
    fn unicast_next_hop(&self, dest: &PeerId) -> Option<PeerId> {
        (dest == &self.0).then_some(self.0)
    }
    fn broadcast_next_hops(&self, _source: &PeerId) -> &[PeerId] {
        std::slice::from_ref(&self.0)
    }
    fn may_relay(&self, source: &PeerId, from: &PeerId) -> bool {
        source == &self.0 && from == &self.0
    }
}

/// Routes that send everything through a relay (which the data plane need not know).
struct Via(PeerId);

impl RouteView for Via {
    fn unicast_next_hop(&self, _dest: &PeerId) -> Option<PeerId> {
        Some(self.0)
    }
    fn broadcast_next_hops(&self, _source: &PeerId) -> &[PeerId] {
        std::slice::from_ref(&self.0)
    }
    fn may_relay(&self, _source: &PeerId, from: &PeerId) -> bool {
        from == &self.0
    }
}

const A: PeerId = PeerId([1; 16]);
const B: PeerId = PeerId([2; 16]);

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, i], 6783))
}

/// Carries every pending control-link event from `from` to `to`.
fn relay(now: Instant, from: &mut Dataplane, from_id: PeerId, to: &mut Dataplane) -> usize {
    relay_seen(now, from, from_id, to, &mut Vec::new())
}

/// [`relay`], keeping the MTU changes `from` reported.
fn relay_seen(
    now: Instant,
    from: &mut Dataplane,
    from_id: PeerId,
    to: &mut Dataplane,
    mtus: &mut Vec<(PeerId, u16)>,
) -> usize {
    let mut n = 0;
    while let Some(ev) = from.poll_event() {
        // Reports for the router, not messages for the peer.
        if matches!(ev, Event::Alive(_)) {
            continue;
        }
        n += 1;
        if let Event::MtuChanged { peer, mtu } = ev {
            mtus.push((peer, mtu));
        }
        match ev {
            Event::SendOffer { offer, .. } => to.handle_offer(now, from_id, offer),
            Event::SendHeard { .. } => to.handle_heard(now, from_id),
            Event::SendProbeAck { size, .. } => to.handle_probe_ack(now, from_id, size),
            Event::PathChanged { .. }
            | Event::Alive(_)
            | Event::MtuChanged { .. }
            | Event::EndpointChanged { .. }
            | Event::Fallback { .. } => {}
        }
    }
    n
}

/// Delivers every datagram in `tx` to `to`, returning the frames it delivered.
fn deliver_all<R: RouteView>(
    now: Instant,
    tx: &mut TxBuffer,
    to: &mut Dataplane,
    routes: &R,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut scratch = TxBuffer::new(1 << 20, 64);
    let datagrams: Vec<(SocketAddr, Vec<u8>)> = tx.iter().map(|(a, d)| (a, d.to_vec())).collect();
    tx.clear();
    for (_, mut d) in datagrams {
        let from = if to.us == B { addr(1) } else { addr(2) };
        to.handle_datagram(now, from, &mut d, routes, &mut scratch, &mut |f| {
            got.push(f.to_vec())
        });
    }
    got
}

fn frame(src: u8, dst: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, src]);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(payload);
    f
}

fn connected(now: Instant) -> (Dataplane, Dataplane) {
    let mut a = Dataplane::new(A, DataplaneConfig::default());
    let mut b = Dataplane::new(B, DataplaneConfig::default());
    a.add_peer(now, B, addr(2), [7; 32]);
    b.add_peer(now, A, addr(1), [7; 32]);
    for _ in 0..4 {
        relay(now, &mut a, A, &mut b);
        relay(now, &mut b, B, &mut a);
    }
    (a, b)
}

/// Keepalives both ways, then the "heard" messages over the control link, until the
/// UDP paths between `a` (peer A) and `b` (peer B) are confirmed.
fn confirm_paths(now: Instant, a: &mut Dataplane, b: &mut Dataplane, tx: &mut TxBuffer) {
    let (ra, rb) = (Pair(B), Pair(A));
    for _ in 0..3 {
        a.poll_keepalives(now, tx);
        deliver_all(now, tx, b, &rb);
        b.poll_keepalives(now, tx);
        deliver_all(now, tx, a, &ra);
        relay(now, a, A, b);
        relay(now, b, B, a);
    }
}

/// With encryption deferred, the data plane only frames: the frame is still in clear
/// in the batch until `encrypt` (or the first `next_run`), and what then leaves opens
/// at the peer exactly as an at-once seal does.
#[test]
fn deferred_encryption_leaves_nothing_in_clear() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    let mut deferred = TxBuffer::new(1 << 20, 64).deferring_encryption();
    let bcast = frame(1, [0xff; 6], b"deferred-secret");
    a.handle_local_frame(now, &bcast, &ra, &mut deferred);
    a.flush(&mut deferred);
    assert_eq!(deferred.len(), 1);
    let framed = deferred.framed_for_test().to_vec();
    assert!(
        framed.windows(15).any(|w| w == b"deferred-secret"),
        "framed, not encrypted yet"
    );
    let (_, run, _, n) = deferred.next_run(64, 65_000, 1500).unwrap();
    assert_eq!(n, 1);
    assert!(
        !run.windows(15).any(|w| w == b"deferred-secret"),
        "encrypted before it leaves"
    );
    let mut d = run.to_vec();
    let mut scratch = TxBuffer::new(1 << 16, 8);
    let mut got = Vec::new();
    b.handle_datagram(now, addr(1), &mut d, &rb, &mut scratch, &mut |f| {
        got.push(f.to_vec())
    });
    assert_eq!(got, vec![bcast]);
}

/// The `Alive` reports `a` gives at `now`.
fn alive_reports(now: Instant, a: &mut Dataplane) -> Vec<Vec<PeerId>> {
    a.handle_timeout(now);
    std::iter::from_fn(|| a.poll_event())
        .filter_map(|e| match e {
            Event::Alive(peers) => Some(peers),
            _ => None,
        })
        .collect()
}

/// The peers heard from are reported at most every `ALIVE_REPORT`, once per datagram
/// run, and not at all while nothing arrives; a datagram that fails authentication
/// counts for nothing.
#[test]
fn peers_heard_from_are_reported_in_batches() {
    let start = Instant::now();
    let (mut a, mut b) = connected(start);
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(start, &mut a, &mut b, &mut tx);
    assert_eq!(alive_reports(start + ALIVE_REPORT, &mut a), vec![vec![B]]);
    let mut now = start + 2 * ALIVE_REPORT;
    assert!(
        alive_reports(now, &mut a).is_empty(),
        "nothing arrived since"
    );

    // A keepalive from b: reported at the next report, not before, and once.
    b.poll_keepalives(now + Duration::from_secs(30), &mut tx);
    deliver_all(now, &mut tx, &mut a, &Pair(B));
    now += ALIVE_REPORT / 2;
    assert!(alive_reports(now, &mut a).is_empty(), "not due yet");
    now += ALIVE_REPORT / 2;
    assert_eq!(alive_reports(now, &mut a), vec![vec![B]]);
    now += ALIVE_REPORT;
    assert!(alive_reports(now, &mut a).is_empty(), "reported once");

    // Garbage with b's address is not a sign of life.
    let mut scratch = TxBuffer::new(1 << 16, 8);
    let mut forged = vec![0x5a; 80];
    a.handle_datagram(
        now,
        addr(2),
        &mut forged,
        &Pair(B),
        &mut scratch,
        &mut |_| {},
    );
    now += ALIVE_REPORT;
    assert!(
        alive_reports(now, &mut a).is_empty(),
        "forged datagram reported"
    );
}

#[test]
fn keys_then_paths_then_frames() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    assert!(!a.is_established(&B), "no datagram has crossed yet");
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    // Keepalives both ways, then the "heard" messages over the control link.
    confirm_paths(now, &mut a, &mut b, &mut tx);
    assert!(a.is_established(&B) && b.is_established(&A));

    // A broadcast from a's bridge reaches b's bridge; b learns the MAC behind A.
    let bcast = frame(1, [0xff; 6], b"hello");
    a.handle_local_frame(now, &bcast, &ra, &mut tx);
    assert!(tx.is_empty(), "staged until the flush");
    a.flush(&mut tx);
    assert_eq!(tx.len(), 1);
    let sent = tx.iter().next().map(|(to, d)| (to, d.to_vec())).unwrap();
    assert_eq!(sent.0, addr(2), "sent to the pinned endpoint");
    assert!(!sent.1.windows(5).any(|w| w == b"hello"), "frame in clear");
    assert_eq!(deliver_all(now, &mut tx, &mut b, &rb), vec![bcast]);
    // A unicast back to that MAC goes to A only.
    let reply = frame(2, [0x02, 0, 0, 0, 0, 1], b"back");
    b.handle_local_frame(now, &reply, &rb, &mut tx);
    b.flush(&mut tx);
    assert_eq!(deliver_all(now, &mut tx, &mut a, &ra), vec![reply]);
    let counters = a.counters();
    assert_eq!(counters.peers[0].1.rx_frames, 1);

    // The same datagram twice: the second is a replay, delivered once.
    a.handle_local_frame(now, &frame(1, [0xff; 6], b"once"), &ra, &mut tx);
    a.flush(&mut tx);
    let d = tx.iter().next().unwrap().1.to_vec();
    tx.clear();
    let mut scratch = TxBuffer::new(1 << 16, 8);
    let mut delivered = 0;
    for _ in 0..2 {
        let mut copy = d.clone();
        b.handle_datagram(now, addr(1), &mut copy, &rb, &mut scratch, &mut |_| {
            delivered += 1
        });
    }
    assert_eq!(delivered, 1);
    assert_eq!(b.counters().peers[0].1.replay, 1);
}

#[test]
fn garbage_and_unknown_indices_are_counted_not_delivered() {
    let now = Instant::now();
    let (mut _a, mut b) = connected(now);
    let rb = Pair(A);
    let mut tx = TxBuffer::new(1 << 16, 8);
    let mut delivered = 0;
    for len in [0usize, 5, 31, 32, 100, 1500] {
        let mut junk = vec![0x5a; len];
        b.handle_datagram(now, addr(9), &mut junk, &rb, &mut tx, &mut |_| {
            delivered += 1
        });
    }
    assert_eq!(delivered, 0);
    b.flush(&mut tx);
    assert!(tx.is_empty(), "nothing unauthenticated gets a reply");
    let c = b.counters();
    assert!(c.drops.malformed + c.drops.unknown_index >= 6, "{c:?}");
}

#[test]
fn removed_peer_gets_nothing_and_its_macs_are_forgotten() {
    let now = Instant::now();
    let (mut a, _b) = connected(now);
    a.remove_peer(B);
    let mut tx = TxBuffer::new(1 << 16, 8);
    a.handle_local_frame(now, &frame(1, [0xff; 6], b"x"), &Pair(B), &mut tx);
    a.flush(&mut tx);
    assert!(tx.is_empty());
    assert_eq!(a.counters().drops.no_route, 1);
}

/// Frames that queue up share datagrams, up to `max_datagram`, and arrive in order.
#[test]
fn queued_frames_share_datagrams() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    let small: Vec<Vec<u8>> = (0..40u8).map(|i| frame(1, [0xff; 6], &[i; 50])).collect();
    for f in &small {
        a.handle_local_frame(now, f, &ra, &mut tx);
    }
    // A full-size frame (1408 IP bytes) needs a datagram of its own, after what was staged.
    let big = frame(1, [0xff; 6], &[7; 1408]);
    a.handle_local_frame(now, &big, &ra, &mut tx);
    let last = frame(1, [0xff; 6], b"last");
    a.handle_local_frame(now, &last, &ra, &mut tx);
    a.flush(&mut tx);
    let per_datagram = (1472 - 32) / (3 + 64);
    let expected = 40usize.div_ceil(per_datagram) + 2;
    assert_eq!(tx.len(), expected, "{} frames per datagram", per_datagram);
    assert!(tx.iter().all(|(_, d)| d.len() <= 1472));
    let got = deliver_all(now, &mut tx, &mut b, &rb);
    let mut want = small.clone();
    want.push(big);
    want.push(last);
    assert_eq!(got, want);
    assert_eq!(a.counters().peers[0].1.tx_frames, 42);
}

/// Delivers the datagrams in `tx` that an underlay path of `path` bytes (UDP payload)
/// carries; larger ones are lost, as with DF on a narrow hop.
fn deliver_upto(now: Instant, tx: &mut TxBuffer, path: usize, to: &mut Dataplane, routes: &Pair) {
    let mut scratch = TxBuffer::new(1 << 20, 64);
    let datagrams: Vec<(SocketAddr, Vec<u8>)> = tx.iter().map(|(a, d)| (a, d.to_vec())).collect();
    tx.clear();
    for (_, mut d) in datagrams.into_iter().filter(|(_, d)| d.len() <= path) {
        let from = if to.us == B { addr(1) } else { addr(2) };
        to.handle_datagram(now, from, &mut d, routes, &mut scratch, &mut |_| {});
    }
}

/// An IPv4 frame (DF set) from a's container to b's, of `ip_len` IP bytes.
fn ipv4_frame(ip_len: usize, df: bool) -> Vec<u8> {
    let mut ip = vec![0u8; ip_len];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = if df { 0x40 } else { 0 };
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 40, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 40, 0, 2]);
    let mut sum = 0u32;
    for c in ip[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame(1, [0x02, 0, 0, 0, 0, 2], &ip)
}

/// Keys, paths and a path MTU search over a path carrying `path`-byte datagrams.
fn measured(now: Instant, path: usize) -> (Dataplane, Dataplane, Instant) {
    let (a, b, t, _) = measured_seen(now, path);
    (a, b, t)
}

/// [`measured`], with the MTU changes a reported.
fn measured_seen(now: Instant, path: usize) -> (Dataplane, Dataplane, Instant, Vec<(PeerId, u16)>) {
    let mut mtus = Vec::new();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    let mut t = now;
    for _ in 0..8 {
        a.poll_keepalives(t, &mut tx);
        a.poll_probes(t, &mut tx);
        deliver_upto(t, &mut tx, path, &mut b, &rb);
        b.poll_keepalives(t, &mut tx);
        deliver_upto(t, &mut tx, path, &mut a, &ra);
        relay_seen(t, &mut a, A, &mut b, &mut mtus);
        relay(t, &mut b, B, &mut a);
        t += Duration::from_millis(1100);
        a.handle_timeout(t);
        b.handle_timeout(t);
    }
    (a, b, t, mtus)
}

#[test]
fn a_narrow_path_is_measured_and_reported() {
    let now = Instant::now();
    let (a, _b, _, changes) = measured_seen(now, 1248);
    assert_eq!(a.path_mtu(&B), Some(1199));
    assert_eq!(changes, [(B, 1199)], "reported once");
    // A full path reports the configured MTU, never more.
    let (a, _b, _) = measured(now, 1472);
    assert_eq!(a.path_mtu(&B), Some(1408));
}

#[test]
fn too_big_frames_get_icmp_back_and_count_as_mtu() {
    let now = Instant::now();
    let (mut a, mut b, t) = measured(now, 1248);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    // b learns the destination MAC is behind B... a learns it from b's frame.
    let hello = frame(2, [0x02, 0, 0, 0, 0, 1], b"hello");
    b.handle_local_frame(t, &hello, &rb, &mut tx);
    deliver_upto(t, &mut tx, 1248, &mut a, &ra);

    let fits = ipv4_frame(1199, true);
    a.handle_local_frame(t, &fits, &ra, &mut tx);
    a.flush(&mut tx);
    assert_eq!(tx.len(), 1, "a frame of exactly the MTU is sent");
    assert!(tx.iter().all(|(_, d)| d.len() <= 1248));
    tx.clear();

    let big = ipv4_frame(1200, true);
    a.handle_local_frame(t, &big, &ra, &mut tx);
    a.flush(&mut tx);
    assert!(tx.is_empty(), "too big: nothing sent");
    let mut replies = Vec::new();
    a.poll_local_frames(&mut |f| replies.push(f.to_vec()));
    assert_eq!(replies.len(), 1);
    let r = &replies[0];
    assert_eq!(&r[..6], &[0x02, 0, 0, 0, 0, 1], "back to the sender's MAC");
    let icmp = &r[14 + 20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1199, "next-hop MTU");

    // Without DF: dropped and counted, no reply.
    a.handle_local_frame(t, &ipv4_frame(1300, false), &ra, &mut tx);
    a.flush(&mut tx);
    a.poll_local_frames(&mut |_| panic!("no reply without DF"));
    assert!(tx.is_empty());
    assert_eq!(a.counters().drops.mtu, 2);
}

#[test]
fn emsgsize_lowers_the_limit_at_once() {
    let now = Instant::now();
    let (mut a, _b, t) = measured(now, 1472);
    assert_eq!(a.path_mtu(&B), Some(1408));
    a.handle_send_too_big(t, addr(2), 1472);
    assert_eq!(a.path_mtu(&B), Some(1407), "1456 carries 1407");
    a.handle_send_too_big(t, addr(2), 1400);
    assert_eq!(a.path_mtu(&B), Some(path_mtu::mtu_for_datagram(1384)));
    a.handle_send_too_big(t, addr(9), 600);
    assert_eq!(
        a.path_mtu(&B),
        Some(path_mtu::mtu_for_datagram(1384)),
        "other endpoint"
    );
    let mut tx = TxBuffer::new(1 << 20, 64);
    a.poll_probes(t, &mut tx);
    assert!(!tx.is_empty(), "a search started");
}

/// The first key exchange of a session is not a rekey; each later one is, on both ends.
#[test]
fn rekeys_are_counted_per_peer() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let rekeys = |dp: &Dataplane| dp.counters().peers[0].1.rekeys;
    assert_eq!((rekeys(&a), rekeys(&b)), (0, 0), "the first exchange");
    // No frame moved: the pair rotates at the idle epoch's end.
    let idle = DataplaneConfig::default().session.idle_rekey_after_time;
    let later = now + idle + Duration::from_secs(1);
    a.handle_timeout(later);
    b.handle_timeout(later);
    for _ in 0..4 {
        relay(later, &mut a, A, &mut b);
        relay(later, &mut b, B, &mut a);
    }
    assert_eq!((rekeys(&a), rekeys(&b)), (1, 1));
}

/// Whether `dp` has a rekey offer to send at `at`.
fn offers_at(at: Instant, dp: &mut Dataplane) -> bool {
    dp.handle_timeout(at);
    std::iter::from_fn(|| dp.poll_event()).any(|e| matches!(e, Event::SendOffer { .. }))
}

/// A pair that moved a frame rotates its keys `rekey_after_time` into the epoch; an
/// idle one waits until `idle_rekey_after_time`. Frames received count as much as
/// frames sent.
#[test]
fn a_pair_that_moved_frames_rotates_sooner_than_an_idle_one() {
    let now = Instant::now();
    let session = DataplaneConfig::default().session;
    let busy = now + session.rekey_after_time + Duration::from_secs(1);
    let mut tx = TxBuffer::new(1 << 20, 64);
    // The initiator (a) sends, or receives, one broadcast; or nothing moves.
    for case in ["sent", "received", "idle"] {
        let (mut a, mut b) = connected(now);
        confirm_paths(now, &mut a, &mut b, &mut tx);
        let _ = offers_at(now, &mut a);
        let (from, to, routes, id) = match case {
            "sent" => (&mut a, &mut b, Pair(A), 1),
            _ => (&mut b, &mut a, Pair(B), 2),
        };
        if case != "idle" {
            from.handle_local_frame(
                now,
                &frame(id, [0xff; 6], b"x"),
                &Pair(if id == 1 { B } else { A }),
                &mut tx,
            );
            from.flush(&mut tx);
            assert_eq!(deliver_all(now, &mut tx, to, &routes).len(), 1, "{case}");
        }
        assert_eq!(offers_at(busy, &mut a), case != "idle", "{case} at 121 s");
    }
    let (mut a, mut b) = connected(now);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    let idle = now + session.idle_rekey_after_time + Duration::from_secs(1);
    assert!(offers_at(idle, &mut a), "an idle pair rotates in the end");
}

#[test]
fn fastdp_neighbours_get_floods_but_not_their_own_unicasts() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    // b's MAC is learnt behind B while the connection is still on sleeve.
    let from_b = frame(2, [0xff; 6], b"arp");
    b.handle_local_frame(now, &from_b, &rb, &mut tx);
    b.flush(&mut tx);
    assert_eq!(deliver_all(now, &mut tx, &mut a, &ra), vec![from_b]);

    a.set_fastdp(B, true);
    b.set_fastdp(A, true);
    assert!(a.is_fastdp(&B));
    // A unicast to B's own MAC is left to the kernel.
    a.handle_local_frame(now, &frame(1, [0x02, 0, 0, 0, 0, 2], b"uni"), &ra, &mut tx);
    a.flush(&mut tx);
    assert!(
        tx.is_empty(),
        "unicast to a fastdp neighbour went by sleeve"
    );
    // A flood still goes by sleeve (B may relay it), but B does not deliver it again:
    // the VXLAN copy was delivered.
    a.handle_local_frame(now, &frame(1, [0xff; 6], b"flood"), &ra, &mut tx);
    a.flush(&mut tx);
    assert_eq!(tx.len(), 1, "the flood goes by sleeve too");
    assert!(deliver_all(now, &mut tx, &mut b, &rb).is_empty());
    // In a full mesh nobody relays: the kernel alone carries our floods to B.
    a.set_flood_relay(false);
    a.handle_local_frame(now, &frame(1, [0xff; 6], b"flood2"), &ra, &mut tx);
    a.flush(&mut tx);
    assert!(
        tx.is_empty(),
        "a flood went by sleeve to a fastdp neighbour in a full mesh"
    );
    a.set_flood_relay(true);
    // A probe (by its EtherType) never goes by sleeve, whatever its destination.
    let mut probe = frame(1, [0xff; 6], b"probe");
    probe[12..14].copy_from_slice(&crate::fastdp::probe::ETHERTYPE.to_be_bytes());
    a.handle_local_frame(now, &probe, &ra, &mut tx);
    a.flush(&mut tx);
    assert!(tx.is_empty(), "a fast-path probe went by sleeve");
    // Back on sleeve: both are carried and delivered again.
    a.set_fastdp(B, false);
    b.set_fastdp(A, false);
    let uni = frame(1, [0x02, 0, 0, 0, 0, 2], b"uni2");
    a.handle_local_frame(now, &uni, &ra, &mut tx);
    a.flush(&mut tx);
    assert_eq!(deliver_all(now, &mut tx, &mut b, &rb), vec![uni]);
}

/// A TCP superframe read from the TAP device leaves as equal datagrams (one GSO run),
/// each a valid segment, which the receiver's coalescer turns back into the same
/// superframe; malformed `virtio_net_hdr`s are dropped and counted.
#[test]
fn superframes_are_cut_sealed_and_coalesced_back() {
    use crate::offload::tests::{base_spec, checksums_verify, coalesce, superframe};
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 128);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    // a learns the MAC behind B.
    b.handle_local_frame(now, &frame(2, [0xff; 6], b"hi"), &rb, &mut tx);
    b.flush(&mut tx);
    deliver_all(now, &mut tx, &mut a, &ra);

    for v6 in [false, true] {
        let spec = base_spec(v6, crate::offload::tcp::flags::ACK, 10_000);
        let (vnet, mut sf) = superframe(&spec, 1000);
        // The spec's MACs: 02:00:00:00:00:01 to ...:02, as the frames above.
        sf[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        let mut read = vnet.to_bytes().to_vec();
        read.extend_from_slice(&sf);
        a.handle_tap_read(now, &mut read, true, &ra, &mut tx);
        assert_eq!(tx.len(), 10, "one datagram per segment, no staging");
        let (_, run, _, count) = tx.next_run(64, 65_000, 1500).unwrap();
        assert_eq!(count, 10, "one GSO run");
        assert!(run.len() > 10_000);
        let segs = deliver_all(now, &mut tx, &mut b, &rb);
        assert_eq!(segs.len(), 10);
        assert!(segs.iter().all(|s| checksums_verify(s, v6)));
        let back = coalesce(&segs);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0.gso_size, 1000);
        assert!(back[0].1 == sf, "coalesced superframe differs (v6 {v6})");
    }
    assert_eq!(a.counters().superframes, 2);

    let (vnet, sf) = superframe(
        &base_spec(false, crate::offload::tcp::flags::ACK, 3000),
        1000,
    );
    let mut bad = crate::offload::vnet::Repr {
        gso_size: 0,
        ..vnet
    }
    .to_bytes()
    .to_vec();
    bad.extend_from_slice(&sf);
    a.handle_tap_read(now, &mut bad, true, &ra, &mut tx);
    a.handle_tap_read(now, &mut [1, 2, 3], true, &ra, &mut tx);
    assert_eq!(a.counters().drops.offload_malformed, 2);
    assert!(tx.is_empty());
}

/// The datagrams `tx` holds, taken out of it.
fn take(tx: &mut TxBuffer) -> Vec<(SocketAddr, Vec<u8>)> {
    let out = tx.iter().map(|(a, d)| (a, d.to_vec())).collect();
    tx.clear();
    out
}

/// Hands `d` to `to` as if it came from `from`; returns the frames delivered.
fn receive_from(
    now: Instant,
    to: &mut Dataplane,
    from: SocketAddr,
    d: &[u8],
    routes: &Pair,
) -> usize {
    let mut scratch = TxBuffer::new(1 << 16, 8);
    let mut copy = d.to_vec();
    let mut delivered = 0;
    to.handle_datagram(now, from, &mut copy, routes, &mut scratch, &mut |_| {
        delivered += 1
    });
    delivered
}

fn endpoint_events(dp: &mut Dataplane) -> Vec<(SocketAddr, SocketAddr)> {
    let mut moves = Vec::new();
    while let Some(ev) = dp.poll_event() {
        if let Event::EndpointChanged { from, to, .. } = ev {
            moves.push((from, to));
        }
    }
    moves
}

/// A host behind a NAT: its authentic datagrams come from the NAT's address and port,
/// and the endpoint follows them (and is answered there), once per move.
#[test]
fn an_authentic_fresh_datagram_moves_the_endpoint() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let nat = SocketAddr::from(([198, 18, 0, 254], 40_123));
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    b.handle_local_frame(
        now,
        &frame(2, [0xff; 6], b"from behind the nat"),
        &rb,
        &mut tx,
    );
    b.flush(&mut tx);
    let sent = take(&mut tx);
    assert_eq!(sent.len(), 1);
    endpoint_events(&mut a);
    assert_eq!(receive_from(now, &mut a, nat, &sent[0].1, &ra), 1);
    assert_eq!(a.endpoint(&B), Some(nat));
    assert_eq!(endpoint_events(&mut a), vec![(addr(2), nat)]);
    assert_eq!(a.counters().peers[0].1.endpoint_changes, 1);
    // Our answer goes to the NAT.
    a.handle_local_frame(now, &frame(1, [0xff; 6], b"back"), &ra, &mut tx);
    a.flush(&mut tx);
    assert_eq!(take(&mut tx)[0].0, nat);
    // More datagrams from the same place change nothing.
    b.handle_local_frame(now, &frame(2, [0xff; 6], b"again"), &rb, &mut tx);
    b.flush(&mut tx);
    let sent = take(&mut tx);
    assert_eq!(receive_from(now, &mut a, nat, &sent[0].1, &ra), 1);
    assert!(endpoint_events(&mut a).is_empty());
    assert_eq!(a.counters().peers[0].1.endpoint_changes, 1);
}

/// Spoofed datagrams from another address never move the endpoint: garbage, a forged
/// header with a live receiver index, a replay of a valid datagram, and a valid datagram
/// that arrives after a newer one (delayed by whoever sends it from elsewhere).
#[test]
fn spoofed_replayed_and_late_datagrams_never_move_the_endpoint() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    endpoint_events(&mut a);
    let attacker = SocketAddr::from(([198, 18, 0, 66], 6783));

    // Two genuine datagrams, in order: the first is held back by the attacker.
    let mut genuine = Vec::new();
    for text in [&b"first"[..], b"second"] {
        b.handle_local_frame(now, &frame(2, [0xff; 6], text), &rb, &mut tx);
        b.flush(&mut tx);
        genuine.extend(take(&mut tx));
    }
    let (first, second) = (genuine[0].1.clone(), genuine[1].1.clone());

    // Garbage of every length, and forged datagrams under a live receiver index.
    for len in [0usize, 16, 31, 32, 48, 100, 1500] {
        receive_from(now, &mut a, attacker, &vec![0x5a; len], &ra);
        let mut forged = second.clone();
        forged.resize(len.max(32) / 16 * 16, 0xa5);
        forged[..16].copy_from_slice(&second[..16]);
        receive_from(now, &mut a, attacker, &forged, &ra);
    }
    let mut flipped = second.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(receive_from(now, &mut a, attacker, &flipped, &ra), 0);
    assert_eq!(
        a.endpoint(&B),
        Some(addr(2)),
        "moved by an unauthenticated datagram"
    );

    // The second arrives from the real endpoint; then its replay from the attacker.
    assert_eq!(receive_from(now, &mut a, addr(2), &second, &ra), 1);
    assert_eq!(receive_from(now, &mut a, attacker, &second, &ra), 0);
    assert_eq!(a.endpoint(&B), Some(addr(2)), "moved by a replay");

    // The held-back first one is authentic and not a replay, but older: it is
    // delivered, and counted as a mismatch, and the endpoint stays.
    assert_eq!(receive_from(now, &mut a, attacker, &first, &ra), 1);
    assert_eq!(a.endpoint(&B), Some(addr(2)), "moved by a late datagram");
    assert!(endpoint_events(&mut a).is_empty());
    let c = a.counters().peers[0].1;
    assert_eq!(c.endpoint_changes, 0, "{c:?}");
    assert_eq!(c.src_mismatch, 1, "{c:?}");
    assert!(c.replay >= 1 && c.auth_failed >= 1, "{c:?}");
}

/// A confirmed path sends a keepalive only when nothing else went to the peer for the
/// keepalive interval (25 s by default); a pending one probes every second.
#[test]
fn keepalives_hold_a_confirmed_path_and_no_more() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    assert!(a.is_established(&B));
    assert_eq!(
        DataplaneConfig::default().keepalive,
        Duration::from_secs(25)
    );
    let mut sent = Vec::new();
    for s in 1..=60u64 {
        let t = now + Duration::from_secs(s);
        a.poll_keepalives(t, &mut tx);
        if !take(&mut tx).is_empty() {
            sent.push(s);
        }
        // A frame at 30 s resets the clock.
        if s == 30 {
            a.handle_local_frame(t, &frame(1, [0xff; 6], b"data"), &Pair(B), &mut tx);
            a.flush(&mut tx);
            take(&mut tx);
        }
    }
    assert_eq!(sent, vec![25, 55], "keepalives at");
}

/// Every `Event::Fallback` of `dp` (other events are dropped).
fn fallback_events(dp: &mut Dataplane) -> Vec<Option<FallbackReason>> {
    let mut out = Vec::new();
    while let Some(ev) = dp.poll_event() {
        if let Event::Fallback { reason, .. } = ev {
            out.push(reason);
        }
    }
    out
}

#[test]
fn unconfirmed_udp_falls_back_to_tcp_and_comes_back() {
    let t0 = Instant::now();
    let (mut a, mut b) = connected(t0);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    // UDP is dropped: keepalives leave, nothing arrives.
    let t9 = t0 + Duration::from_secs(9);
    a.handle_timeout(t9);
    assert_eq!(fallback_events(&mut a), vec![]);
    assert_eq!(a.fallback(&B), None);
    let t10 = t0 + Duration::from_secs(10);
    a.handle_timeout(t10);
    b.handle_timeout(t10);
    assert_eq!(
        fallback_events(&mut a),
        vec![Some(FallbackReason::NotConfirmed)]
    );
    assert_eq!(a.fallback(&B), Some(FallbackReason::NotConfirmed));
    fallback_events(&mut b);
    tx.clear();

    // A frame for B is sealed for the control link, not the socket.
    let f = frame(1, [0xff; 6], b"over tcp");
    a.handle_local_frame(t10, &f, &ra, &mut tx);
    a.flush(&mut tx);
    assert!(tx.is_empty(), "nothing for the socket");
    let (peer, mut d) = a.poll_tcp().expect("a datagram for the control link");
    assert_eq!(peer, B);
    assert!(!d.windows(8).any(|w| w == b"over tcp"), "sealed");
    let replayed = d.clone();
    // Keepalives still go by UDP, to retry the path.
    a.poll_keepalives(t10 + Duration::from_secs(1), &mut tx);
    assert_eq!(take(&mut tx).len(), 1);

    // b opens it as a datagram from A's link: delivered, no endpoint move, no UDP path.
    let mut got = Vec::new();
    b.handle_tcp_datagram(t10, A, &mut d, &rb, &mut tx, &mut |fr| {
        got.push(fr.to_vec())
    });
    assert_eq!(got, vec![f.clone()]);
    assert_eq!(b.endpoint(&A), Some(addr(1)));
    assert!(!b.is_established(&A));
    assert!(
        !std::iter::from_fn(|| b.poll_event()).any(|e| matches!(e, Event::SendHeard { .. })),
        "a datagram by TCP never confirms the UDP path"
    );
    // Replayed inside the link: refused by the replay window.
    let mut again = replayed.clone();
    b.handle_tcp_datagram(t10, A, &mut again, &rb, &mut tx, &mut |fr| {
        got.push(fr.to_vec())
    });
    assert_eq!(got.len(), 1);
    assert_eq!(b.counters().peers[0].1.replay, 1);
    // Under A's keys but inside some other neighbour's link: refused.
    let mut wrong = replayed;
    b.handle_tcp_datagram(t10, PeerId([9; 16]), &mut wrong, &rb, &mut tx, &mut |_| {
        panic!("delivered from the wrong link")
    });
    assert_eq!(b.counters().drops.tcp_wrong_peer, 1);
    assert_eq!(a.counters().peers[0].1.tcp_tx_datagrams, 1);
    assert_eq!(b.counters().peers[0].1.tcp_rx_datagrams, 1);

    // UDP is unblocked: the path confirms and frames go by UDP again.
    let t20 = t0 + Duration::from_secs(20);
    confirm_paths(t20, &mut a, &mut b, &mut tx);
    assert!(a.is_established(&B));
    // (The `Fallback { reason: None }` event went by in the relay.)
    assert_eq!(a.fallback(&B), None);
    a.handle_local_frame(t20, &f, &ra, &mut tx);
    a.flush(&mut tx);
    assert!(a.poll_tcp().is_none());
    assert_eq!(deliver_all(t20, &mut tx, &mut b, &rb), vec![f]);
    assert_eq!(a.counters().peers[0].1.fallbacks, 1);
}

#[test]
fn a_lost_path_falls_back_at_once_and_the_tcp_queue_is_bounded() {
    let t0 = Instant::now();
    let (mut a, mut b) = connected(t0);
    let ra = Pair(B);
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(t0, &mut a, &mut b, &mut tx);
    assert!(a.is_established(&B));
    fallback_events(&mut a);
    // Nothing heard for the path timeout: lost, and TCP at once.
    let later = t0 + DataplaneConfig::default().path_timeout + Duration::from_secs(1);
    a.handle_timeout(later);
    assert_eq!(
        fallback_events(&mut a),
        vec![Some(FallbackReason::PathLost)]
    );
    // Nobody takes the datagrams: the queue stops at its bound and counts the rest.
    let n = fallback::TCP_QUEUE + 10;
    for i in 0..n {
        let f = frame(1, [0xff; 6], format!("frame {i}").as_bytes());
        a.handle_local_frame(later, &f, &ra, &mut tx);
        a.flush(&mut tx);
    }
    assert_eq!(a.counters().tcp_queue_full, 10);
    assert_eq!(
        std::iter::from_fn(|| a.poll_tcp()).count(),
        fallback::TCP_QUEUE
    );
}

/// B seals a full entry naming X (whom A knows nothing of) as the frame's source peer:
/// authentic, fresh, yet A drops the frame and counts it, and learns nothing from it.
#[test]
fn a_forged_source_peer_is_dropped_and_counted() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    confirm_paths(now, &mut a, &mut b, &mut tx);
    let x = PeerId([9; 16]);
    for dst in [A, BROADCAST] {
        b.send(now, A, dst, x, &frame(7, [0xff; 6], b"forged"), &mut tx);
        b.flush(&mut tx);
        assert!(deliver_all(now, &mut tx, &mut a, &ra).is_empty(), "{dst:?}");
    }
    let c = a.counters();
    assert_eq!(c.drops.wrong_relay, 2);
    assert_eq!(c.mac_entries, 0, "no MAC learnt from a forged source");
    // B's own frames still pass.
    b.handle_local_frame(now, &frame(2, [0xff; 6], b"own"), &rb, &mut tx);
    b.flush(&mut tx);
    assert_eq!(deliver_all(now, &mut tx, &mut a, &ra).len(), 1);
}

#[test]
fn a_punched_peer_gets_frames_directly_once_its_path_confirms_and_never_falls_back() {
    let now = Instant::now();
    let mut a = Dataplane::new(A, DataplaneConfig::default());
    let mut b = Dataplane::new(B, DataplaneConfig::default());
    a.add_punched_peer(now, B, addr(2), [9; 32]);
    b.add_punched_peer(now, A, addr(1), [9; 32]);
    for _ in 0..4 {
        relay(now, &mut a, A, &mut b);
        relay(now, &mut b, B, &mut a);
    }
    // Long past the TCP fallback's bound, unconfirmed: a punched peer has no control
    // link to fall back to.
    let later = now + Duration::from_secs(60);
    a.handle_timeout(later);
    b.handle_timeout(later);
    assert_eq!(a.fallback(&B), None);
    assert_eq!(b.fallback(&A), None);
    while let Some(ev) = a.poll_event() {
        assert!(!matches!(ev, Event::Fallback { .. }), "{ev:?}");
    }
    // a's routes reach B only through relay R; b's broadcast comes straight to a and
    // teaches it B's MAC.
    let routes = Via(PeerId([3; 16]));
    let mut tx = TxBuffer::new(1 << 20, 64);
    b.handle_local_frame(later, &frame(2, [0xff; 6], b"who"), &Pair(A), &mut tx);
    b.flush(&mut tx);
    let got = deliver_all(later, &mut tx, &mut a, &routes);
    assert_eq!(got.len(), 1, "the broadcast is delivered");
    tx.clear();
    let unicast = frame(1, [0x02, 0, 0, 0, 0, 2], b"direct");
    let no_route = a.counters().drops.no_route;
    a.handle_local_frame(later, &unicast, &routes, &mut tx);
    a.flush(&mut tx);
    assert!(
        tx.is_empty(),
        "unconfirmed: the frame follows the route, to R"
    );
    assert_eq!(a.counters().drops.no_route, no_route + 1);
    confirm_paths(later, &mut a, &mut b, &mut tx);
    assert!(a.is_established(&B) && b.is_established(&A));
    tx.clear();
    a.handle_local_frame(later, &unicast, &routes, &mut tx);
    a.flush(&mut tx);
    let to: Vec<SocketAddr> = tx.iter().map(|(to, _)| to).collect();
    assert_eq!(to, vec![addr(2)], "confirmed: straight to B");
    assert_eq!(deliver_all(later, &mut tx, &mut b, &Pair(A)), vec![unicast]);
}

#[test]
fn the_timers_are_quiet_only_while_every_path_is_up_and_nothing_is_under_way() {
    let now = Instant::now();
    let (mut a, _b) = connected(now);
    a.handle_timeout(now);
    assert!(
        !a.is_quiet(),
        "a path not yet confirmed needs the fine tick"
    );
    // Paths up, keys confirmed, the path MTU measured: settled.
    let (mut a, mut b, t) = measured(now, 1472);
    a.handle_timeout(t);
    assert!(a.is_established(&B));
    assert!(a.is_quiet());
    // Keepalives keep the paths up until a rekey is due (an idle pair's, no frame
    // moved); while it is under way the initiator is not settled, and once it is over
    // both are again.
    let mut tx = TxBuffer::new(1 << 20, 64);
    let mut at = t;
    while at < now + crate::sleeve::IDLE_REKEY_AFTER_TIME {
        at += Duration::from_secs(15);
        confirm_paths(at, &mut a, &mut b, &mut tx);
    }
    a.handle_timeout(at);
    b.handle_timeout(at);
    assert!(a.is_established(&B) && b.is_established(&A));
    assert!(!(a.is_quiet() && b.is_quiet()), "an offer is out");
    for _ in 0..3 {
        at += Duration::from_secs(2);
        confirm_paths(at, &mut a, &mut b, &mut tx);
        a.handle_timeout(at);
        b.handle_timeout(at);
    }
    assert!(a.is_quiet() && b.is_quiet(), "the rekey is over");
    // A new neighbour, its path not yet up, unsettles them.
    let (mut a, _b, t) = measured(now, 1472);
    a.add_peer(t, PeerId([3; 16]), addr(3), [9; 32]);
    assert!(!a.is_quiet());
}

/// Once a path is up, keepalives say "I hear you": an idle pair stays established for
/// many path timeouts with nothing over the control link but rekeys, and with one
/// keepalive each way per keepalive interval.
#[test]
fn an_idle_path_stays_up_on_heard_keepalives_alone() {
    let now = Instant::now();
    let (mut a, mut b, t) = measured(now, 1472);
    assert!(a.is_established(&B) && b.is_established(&A));
    let (ra, rb) = (Pair(B), Pair(A));
    let mut tx = TxBuffer::new(1 << 20, 64);
    let (mut from_a, mut from_b) = (0, 0);
    let mut at = t;
    let minutes = 5;
    for _ in 0..minutes * 60 {
        at += Duration::from_secs(1);
        for dp in [&mut a, &mut b] {
            dp.handle_timeout(at);
        }
        a.poll_keepalives(at, &mut tx);
        from_a += tx.iter().count();
        deliver_all(at, &mut tx, &mut b, &rb);
        b.poll_keepalives(at, &mut tx);
        from_b += tx.iter().count();
        deliver_all(at, &mut tx, &mut a, &ra);
        // Only rekeys go over the control link; a "heard" there would fail the test.
        relay_offers(at, &mut a, A, &mut b);
        relay_offers(at, &mut b, B, &mut a);
        assert!(a.is_established(&B) && b.is_established(&A), "at {at:?}");
    }
    // 25 s keepalives, plus the ones that confirm each new key after a rekey.
    let most = minutes * 60 / 25 + 2 * (minutes * 60 / 120 + 1);
    assert!(
        from_a <= most && from_b <= most,
        "{from_a} and {from_b} datagrams, at most {most}"
    );
    assert!(from_a >= minutes * 60 / 25 - 1 && from_b >= minutes * 60 / 25 - 1);
}

/// Carries `from`'s rekey offers to `to`; panics on a "heard" over the control link.
fn relay_offers(now: Instant, from: &mut Dataplane, from_id: PeerId, to: &mut Dataplane) {
    while let Some(ev) = from.poll_event() {
        match ev {
            Event::SendOffer { offer, .. } => to.handle_offer(now, from_id, offer),
            Event::SendHeard { .. } => panic!("a heard notice over the control link"),
            _ => {}
        }
    }
}

/// The quiet tick is 2 s with the default timers, and shrinks with short ones: with
/// `--rekey-interval 2` (keys rotated 2 s in, dead at 3 s) a 2 s tick started some
/// rotations after the old keys had died, and frames were dropped (`unknown_index`) in
/// `tests/operator.rs`.
#[test]
fn the_quiet_tick_shrinks_with_short_key_lifetimes_and_keepalives() {
    assert_eq!(
        Dataplane::new(A, DataplaneConfig::default()).quiet_tick(),
        QUIET_TICK
    );
    let mut config = DataplaneConfig::default();
    config.session.rekey_after_time = Duration::from_secs(2);
    config.session.reject_after_time = Duration::from_secs(3);
    assert_eq!(
        Dataplane::new(A, config).quiet_tick(),
        Duration::from_millis(250)
    );
    let config = DataplaneConfig {
        keepalive: Duration::from_secs(4),
        ..DataplaneConfig::default()
    };
    assert_eq!(
        Dataplane::new(A, config).quiet_tick(),
        Duration::from_secs(1)
    );
}
