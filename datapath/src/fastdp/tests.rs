use super::link::{Mode, ProbeConfig, Reason};
use super::*;
use std::time::Duration;

fn id(b: u8) -> PeerId {
    PeerId([b; 16])
}

fn lan(a: &str) -> LinkAddr {
    a.parse().unwrap()
}

#[test]
fn eligibility_needs_both_ends_plain_or_mutually_trusted() {
    let ip: IpAddr = "198.18.0.2".parse().unwrap();
    let plain = Policy {
        enabled: true,
        encrypted: false,
        trusted: vec![],
    };
    let theirs_plain = Hello {
        enabled: true,
        no_encryption: true,
        trusts_you: false,
    };
    assert_eq!(plain.eligible(ip, theirs_plain), Ok(()));
    let off = Hello {
        enabled: false,
        ..theirs_plain
    };
    assert_eq!(plain.eligible(ip, off), Err(Ineligible::Disabled));
    let secret = Policy {
        enabled: true,
        encrypted: true,
        trusted: vec![lan("198.18.0.0/16")],
    };
    let theirs_secret = Hello {
        enabled: true,
        no_encryption: false,
        trusts_you: false,
    };
    assert_eq!(
        secret.eligible(ip, theirs_secret),
        Err(Ineligible::NotTrusted),
        "trust must be mutual"
    );
    let trusting = Hello {
        trusts_you: true,
        ..theirs_secret
    };
    assert_eq!(secret.eligible(ip, trusting), Ok(()));
    let outside: IpAddr = "198.19.0.2".parse().unwrap();
    assert_eq!(
        secret.eligible(outside, trusting),
        Err(Ineligible::NotTrusted)
    );
    // An encrypted end never qualifies by the other's lack of encryption.
    let lone = Policy {
        trusted: vec![],
        ..secret.clone()
    };
    assert_eq!(lone.eligible(ip, theirs_plain), Err(Ineligible::NotTrusted));
    assert!(secret.hello(ip).trusts_you && !secret.hello(outside).trusts_you);
    for b in 0..=255u8 {
        if let Some(h) = Hello::from_byte(b) {
            assert_eq!(h.to_byte(), b);
        } else {
            assert!(b > 7);
        }
    }
}

#[test]
fn subnets_contain_their_addresses_only() {
    let s = lan("198.18.0.0/15");
    assert!(subnet_contains(&s, "198.19.255.1".parse().unwrap()));
    assert!(!subnet_contains(&s, "198.20.0.1".parse().unwrap()));
    assert!(subnet_contains(
        &lan("0.0.0.0/0"),
        "1.2.3.4".parse().unwrap()
    ));
    assert!(!subnet_contains(&s, "::1".parse().unwrap()));
    assert!(subnet_contains(
        &lan("fd00::/8"),
        "fd12::1".parse().unwrap()
    ));
}

type ModeLog = Vec<(Duration, PeerId, Mode, Option<Reason>)>;

/// Carries the outputs of two routers `a` and `b` between them until both are quiet;
/// probes are lost while `cut`. Mode changes are logged at `t - t0`.
fn exchange(
    routers: [(&mut FastPath, PeerId); 2],
    t: Instant,
    t0: Instant,
    cut: bool,
    modes: &mut ModeLog,
) {
    let [(fa, a), (fb, b)] = routers;
    let mut buf = Vec::new();
    loop {
        let mut moved = false;
        for dir in 0..2 {
            let (from, to, from_id, to_id) = if dir == 0 {
                (&mut *fa, &mut *fb, a, b)
            } else {
                (&mut *fb, &mut *fa, b, a)
            };
            while let Some(o) = from.poll_output() {
                moved = true;
                match o {
                    Output::SendProbe { peer, nonce } => {
                        assert_eq!(peer, to_id);
                        let f = probe::encode(&mut buf, &from_id, &peer, nonce, 1464);
                        if !cut {
                            to.handle_frame(t, f);
                        }
                    }
                    Output::SendAck { peer, nonce } => {
                        assert_eq!(peer, to_id);
                        to.handle_ack(t, from_id, nonce);
                    }
                    Output::ModeChanged { peer, mode, reason } => {
                        modes.push((t - t0, peer, mode, reason));
                    }
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// Both confirm, both fall back (no acks) once, both recover.
fn assert_confirm_fall_back_recover(modes: &ModeLog, cut_at: Duration) {
    let ups: Vec<_> = modes.iter().filter(|m| m.2 == Mode::Fastdp).collect();
    let downs: Vec<_> = modes.iter().filter(|m| m.2 == Mode::Sleeve).collect();
    assert_eq!(ups.len(), 4, "both confirm, then both recover: {modes:?}");
    assert_eq!(downs.len(), 2, "both fall back: {modes:?}");
    for d in &downs {
        assert!(d.0 <= cut_at + Duration::from_secs(10), "{d:?}");
        assert_eq!(d.3, Some(Reason::NoAck));
    }
}

/// Two routers exchanging probes through a "VXLAN path" that can be cut.
#[test]
fn two_routers_confirm_fall_back_and_recover() {
    let (a, b) = (id(1), id(2));
    let ip_a: IpAddr = "198.18.0.1".parse().unwrap();
    let ip_b: IpAddr = "198.18.0.2".parse().unwrap();
    let cfg = ProbeConfig::default();
    let mut fa = FastPath::new(a, cfg, vec![]);
    let mut fb = FastPath::new(b, cfg, vec![]);
    let t0 = Instant::now();
    fa.add_candidate(t0, b, ip_b);
    fb.add_candidate(t0, a, ip_a);
    assert_eq!(fa.desired().allowed, [ip_b].into());
    assert!(
        fa.desired().flood.is_empty(),
        "no flood entry before confirmation"
    );
    let mut modes = ModeLog::new();
    let step = Duration::from_millis(250);
    for i in 0..160u32 {
        let t = t0 + step * i;
        let cut = (40..80).contains(&i);
        fa.handle_timeout(t);
        fb.handle_timeout(t);
        exchange([(&mut fa, a), (&mut fb, b)], t, t0, cut, &mut modes);
    }
    assert_confirm_fall_back_recover(&modes, step * 40);
    assert_eq!(fa.fallbacks().get(&Reason::NoAck), Some(&1));
    assert_eq!(fa.desired().flood, [ip_b].into());
    fa.remove(b);
    assert_eq!(
        fa.poll_output(),
        Some(Output::ModeChanged {
            peer: b,
            mode: Mode::Sleeve,
            reason: None
        })
    );
    assert_eq!(fa.desired(), desired::Desired::default());
}

/// The same, with each router's timers run only when `poll_timeout` says: the driver
/// sleeps until then rather than ticking, and nothing is late.
#[test]
fn timers_run_when_poll_timeout_says_and_no_sooner() {
    let (a, b) = (id(1), id(2));
    let cfg = ProbeConfig::default();
    let mut fa = FastPath::new(a, cfg, vec![]);
    let mut fb = FastPath::new(b, cfg, vec![]);
    assert_eq!(fa.poll_timeout(), None, "no candidate: nothing to wake for");
    let t0 = Instant::now();
    fa.add_candidate(t0, b, "198.18.0.2".parse().unwrap());
    fb.add_candidate(t0, a, "198.18.0.1".parse().unwrap());
    assert_eq!(
        fa.poll_timeout(),
        Some(t0),
        "the first probe is due at once"
    );
    let mut modes = ModeLog::new();
    let (cut_at, heal_at) = (Duration::from_secs(10), Duration::from_secs(20));
    let mut t = t0;
    let mut wakeups = 0;
    while t - t0 < Duration::from_secs(40) {
        let cut = (cut_at..heal_at).contains(&(t - t0));
        fa.handle_timeout(t);
        fb.handle_timeout(t);
        exchange([(&mut fa, a), (&mut fb, b)], t, t0, cut, &mut modes);
        let next = [fa.poll_timeout(), fb.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let next = next.expect("candidates keep a timer");
        assert!(
            next > t,
            "poll_timeout must move past the instant it was run at"
        );
        t = next;
        wakeups += 1;
    }
    assert_confirm_fall_back_recover(&modes, cut_at);
    // The last probes before the cut go at 9 s: both fall back the moment they are
    // `timeout` old, not at the next probe.
    let downs: Vec<Duration> = modes
        .iter()
        .filter(|m| m.2 == Mode::Sleeve)
        .map(|m| m.0)
        .collect();
    assert_eq!(downs, [Duration::from_secs(9) + cfg.timeout; 2]);
    // One probe a second from each, and the two fallbacks: far fewer than a 250 ms tick.
    assert!(wakeups <= 2 * 40 + 4, "{wakeups} wakeups in 40 s");
}

#[test]
fn probes_from_strangers_or_for_others_are_ignored() {
    let (a, b, c) = (id(1), id(2), id(3));
    let mut fa = FastPath::new(a, ProbeConfig::default(), vec![]);
    let t = Instant::now();
    fa.add_candidate(t, b, "198.18.0.2".parse().unwrap());
    let mut buf = Vec::new();
    fa.handle_frame(t, probe::encode(&mut buf, &c, &a, 1, 100));
    fa.handle_frame(t, probe::encode(&mut buf, &b, &c, 1, 100));
    assert_eq!(fa.poll_output(), None);
    let mut bad = probe::encode(&mut buf, &b, &a, 1, 100).to_vec();
    bad[14] = b'X';
    fa.handle_frame(t, &bad);
    assert_eq!(fa.malformed_probes(), 1);
    fa.handle_frame(t, probe::encode(&mut buf, &b, &a, 5, 100));
    assert_eq!(
        fa.poll_output(),
        Some(Output::SendAck { peer: b, nonce: 5 })
    );
}
