//! Unit tests of the neighbour diff, fast-path hellos and the relay queue.

use super::*;
use datapath::sleeve::keys::RekeyOffer;
use std::net::IpAddr;

fn peer(n: u8) -> PeerId {
    PeerId([n; 16])
}

fn endpoint(n: u8) -> Endpoint {
    (SocketAddr::from(([198, 18, 0, n], 6783)), [n; 32])
}

fn neighbours(fastdp: bool) -> Neighbours {
    let policy = Policy {
        enabled: fastdp,
        encrypted: false,
        trusted: Vec::new(),
    };
    Neighbours::new(policy, fastdp, OverlayMtu::new(1376).0)
}

fn drain(n: &mut Neighbours) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn sent(outputs: &[Output]) -> Vec<(PeerId, SleeveMessage)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { peer, payload } => Some((*peer, SleeveMessage::decode(payload)?)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_neighbour_is_added_and_greeted_then_removed_from_both_tasks() {
    let mut n = neighbours(false);
    n.handle_links(HashMap::from([(peer(1), endpoint(1))]));
    let out = drain(&mut n);
    assert!(matches!(
        out[0],
        Output::Dataplane(DpCommand::AddPeer { peer: p, endpoint: e, hash: h, punched: false })
            if p == peer(1) && (e, h) == endpoint(1)
    ));
    let hello = n.policy().hello(endpoint(1).0.ip());
    assert_eq!(
        sent(&out),
        vec![(peer(1), SleeveMessage::FastdpHello(hello))]
    );
    // The same set again changes nothing.
    n.handle_links(HashMap::from([(peer(1), endpoint(1))]));
    assert!(drain(&mut n).is_empty());
    n.handle_links(HashMap::new());
    let out = drain(&mut n);
    assert!(matches!(out[0], Output::Dataplane(DpCommand::RemovePeer(p)) if p == peer(1)));
    assert!(matches!(out[1], Output::Fastdp(FpCommand::Remove(p)) if p == peer(1)));
}

#[test]
fn a_new_hash_re_adds_the_neighbour_and_forgets_its_path() {
    let mut n = neighbours(false);
    n.handle_links(HashMap::from([(peer(1), endpoint(1))]));
    drain(&mut n);
    n.handle_dataplane(
        Instant::now(),
        DpEvent::PathChanged {
            peer: peer(1),
            established: true,
        },
    );
    assert!(n.is_path_established(&peer(1)));
    let (addr, _) = endpoint(1);
    n.handle_links(HashMap::from([(peer(1), (addr, [9; 32]))]));
    let out = drain(&mut n);
    assert!(matches!(
        out[0],
        Output::Dataplane(DpCommand::AddPeer { hash, .. }) if hash == [9; 32]
    ));
    assert!(!n.is_path_established(&peer(1)));
}

#[test]
fn a_hello_before_the_endpoint_is_kept_until_the_neighbour_is_known() {
    let mut n = neighbours(true);
    let theirs = Hello {
        enabled: true,
        no_encryption: true,
        trusts_you: false,
    };
    n.handle_message(peer(2), SleeveMessage::FastdpHello(theirs));
    assert!(
        drain(&mut n).is_empty(),
        "no endpoint yet: nothing to decide"
    );
    n.handle_links(HashMap::from([(peer(2), endpoint(2))]));
    let out = drain(&mut n);
    let ip: IpAddr = endpoint(2).0.ip();
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Fastdp(FpCommand::Candidate { peer: p, ip: i }) if *p == peer(2) && *i == ip
        )),
        "{out:?}"
    );
    assert_eq!(n.overlay(&peer(2)), ("sleeve", Some("probing".into())));
}

#[test]
fn an_eligible_connection_over_ipv6_stays_on_sleeve_and_says_why() {
    let mut n = neighbours(true);
    let theirs = Hello {
        enabled: true,
        no_encryption: true,
        trusts_you: false,
    };
    let v6 = (
        SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 2], 6783)),
        [2; 32],
    );
    n.handle_links(HashMap::from([(peer(2), v6)]));
    drain(&mut n);
    n.handle_message(peer(2), SleeveMessage::FastdpHello(theirs));
    let out = drain(&mut n);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Fastdp(FpCommand::Candidate { .. }))),
        "{out:?}"
    );
    assert_eq!(
        n.overlay(&peer(2)),
        (
            "sleeve",
            Some("IPv6 underlay, the fast path is IPv4 only".into())
        )
    );
}

#[test]
fn messages_without_a_route_wait_and_go_when_routes_change() {
    let mut n = neighbours(false);
    n.handle_links(HashMap::from([(peer(1), endpoint(1))]));
    drain(&mut n);
    n.handle_dataplane(Instant::now(), DpEvent::SendHeard { peer: peer(1) });
    let out = drain(&mut n);
    assert_eq!(sent(&out), vec![(peer(1), SleeveMessage::Heard)]);
    let payload = SleeveMessage::Heard.encode();
    n.handle_unrouted(peer(1), payload.clone());
    n.handle_unrouted(peer(3), payload.clone());
    n.handle_routes_changed();
    let out = drain(&mut n);
    assert_eq!(
        sent(&out),
        vec![(peer(1), SleeveMessage::Heard)],
        "a message to a peer that is no neighbour is dropped"
    );
    for _ in 0..MAX_UNROUTED + 5 {
        n.handle_unrouted(peer(1), payload.clone());
    }
    n.handle_routes_changed();
    assert_eq!(drain(&mut n).len(), MAX_UNROUTED, "the queue is bounded");
}

#[test]
fn arriving_messages_become_commands_for_their_task() {
    let mut n = neighbours(true);
    let offer = RekeyOffer {
        epoch: 1,
        ephemeral_public: [3; 32],
        receiver_index: 4,
        link: datapath::sleeve::keys::LinkId([5; 8]),
    };
    n.handle_message(peer(1), SleeveMessage::Offer(offer));
    n.handle_message(peer(1), SleeveMessage::ProbeAck(1248));
    n.handle_message(peer(1), SleeveMessage::FastdpAck(77));
    let out = drain(&mut n);
    assert!(
        matches!(out[0], Output::Dataplane(DpCommand::Offer(p, o)) if p == peer(1) && o == offer)
    );
    assert!(matches!(
        out[1],
        Output::Dataplane(DpCommand::ProbeAck(_, 1248))
    ));
    assert!(matches!(out[2], Output::Fastdp(FpCommand::Ack(_, 77))));
    n.handle_dataplane(
        Instant::now(),
        DpEvent::MtuChanged {
            peer: peer(1),
            mtu: 1200,
        },
    );
    assert_eq!(n.mtu(&peer(1)), 1200);
    assert_eq!(n.mtu(&peer(2)), 1376);
}

#[test]
fn a_learnt_endpoint_is_shown_until_the_link_is_re_added() {
    let mut n = neighbours(false);
    n.handle_links(HashMap::from([(peer(1), endpoint(1))]));
    drain(&mut n);
    let (first, _) = endpoint(1);
    assert_eq!(n.endpoint(&peer(1)), Some((first, false)));
    let nat = SocketAddr::from(([198, 18, 0, 253], 40_000));
    n.handle_dataplane(
        Instant::now(),
        DpEvent::EndpointChanged {
            peer: peer(1),
            from: first,
            to: nat,
        },
    );
    assert!(drain(&mut n).is_empty(), "nothing to send or command");
    assert_eq!(n.endpoint(&peer(1)), Some((nat, true)));
    // Back to the first guess: nothing learnt any more.
    n.handle_dataplane(
        Instant::now(),
        DpEvent::EndpointChanged {
            peer: peer(1),
            from: nat,
            to: first,
        },
    );
    assert_eq!(n.endpoint(&peer(1)), Some((first, false)));
    n.handle_dataplane(
        Instant::now(),
        DpEvent::EndpointChanged {
            peer: peer(1),
            from: first,
            to: nat,
        },
    );
    // A new link (new hash) starts from the control link's address again.
    n.handle_links(HashMap::from([(peer(1), (first, [9; 32]))]));
    assert_eq!(n.endpoint(&peer(1)), Some((first, false)));
    // Events about unknown neighbours are ignored.
    n.handle_dataplane(
        Instant::now(),
        DpEvent::EndpointChanged {
            peer: peer(2),
            from: first,
            to: nat,
        },
    );
    assert_eq!(n.endpoint(&peer(2)), None);
}

#[test]
fn the_path_kind_follows_the_fallback_and_the_udp_path() {
    let mut n = neighbours(false);
    n.handle_links(HashMap::from([(peer(1), endpoint(1))]));
    drain(&mut n);
    assert_eq!(n.path(&peer(1)), PathKind::Pending);
    n.handle_dataplane(
        Instant::now(),
        DpEvent::Fallback {
            peer: peer(1),
            reason: Some(FallbackReason::NotConfirmed),
        },
    );
    let kind = n.path(&peer(1));
    assert_eq!(kind, PathKind::TcpFallback(FallbackReason::NotConfirmed));
    assert_eq!(
        (kind.as_str(), kind.reason()),
        ("tcp fallback", Some("no UDP path confirmed"))
    );
    n.handle_dataplane(
        Instant::now(),
        DpEvent::PathChanged {
            peer: peer(1),
            established: true,
        },
    );
    n.handle_dataplane(
        Instant::now(),
        DpEvent::Fallback {
            peer: peer(1),
            reason: None,
        },
    );
    assert_eq!(n.path(&peer(1)), PathKind::Direct);
    assert!(
        drain(&mut n).is_empty(),
        "nothing to send for a path change"
    );
    // A fallback for a neighbour that is gone is not kept.
    n.handle_links(HashMap::new());
    n.handle_dataplane(
        Instant::now(),
        DpEvent::Fallback {
            peer: peer(1),
            reason: Some(FallbackReason::PathLost),
        },
    );
    assert_eq!(n.path(&peer(1)), PathKind::Pending);
}
