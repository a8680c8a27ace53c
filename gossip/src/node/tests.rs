//! Unit tests of the node's wiring between links, the mesh and the connection maker.
//! Multi-peer scenarios live in [`crate::sim`], which drives the same [`Node`].

use super::*;
use crate::connection_maker::{MakerConfig, TargetState};
use crate::mesh::{LocalPeer, MeshConfig};
use crate::peer::PeerUid;

fn id(n: u8) -> PeerId {
    crate::identity::Identity::for_test(u64::from(n)).id()
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6783))
}

fn node(n: u8, now: Instant) -> Node {
    let local = LocalPeer {
        id: id(n),
        identity: crate::identity::Identity::for_test(u64::from(n)),
        uid: PeerUid(u64::from(n)),
        nickname: format!("n{n}"),
        listen_port: 6783,
    };
    let mesh = Mesh::new(local, MeshConfig::default(), u64::from(n), now);
    Node::new(mesh, ConnectionMaker::new(MakerConfig::default(), 7), now)
}

fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn link_up(conn: u64, remote: u8, target: Option<SocketAddr>) -> Input {
    Input::LinkUp(LinkUp {
        conn: ConnId(conn),
        remote_id: id(remote),
        outbound: target.is_some(),
        addr: addr(remote),
        target,
        encrypted: true,
        hash: [0; 32],
    })
}

#[test]
fn a_target_is_dialled_then_marked_connected_by_its_link() {
    let now = Instant::now();
    let mut a = node(1, now);
    a.handle(
        now,
        Input::Connect {
            targets: vec![addr(2)],
            replace: false,
        },
        &mut (),
    );
    assert_eq!(drain(&mut a), vec![Output::Dial(addr(2))]);
    a.handle(now, link_up(1, 2, Some(addr(2))), &mut ());
    let out = drain(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Output::Send {
                conn: ConnId(1),
                ..
            }]
        ),
        "the Hello goes out on the new link: {out:?}"
    );
    let t = &a.maker().targets()[0];
    assert_eq!((t.state, t.peer), (TargetState::Established, Some(id(2))));
    assert_eq!(a.links()[&ConnId(1)].target, Some(addr(2)));
}

#[test]
fn a_link_down_is_reported_and_frees_its_target_for_a_retry() {
    let now = Instant::now();
    let mut a = node(1, now);
    a.handle(
        now,
        Input::Connect {
            targets: vec![addr(2)],
            replace: false,
        },
        &mut (),
    );
    a.handle(now, link_up(1, 2, Some(addr(2))), &mut ());
    drain(&mut a);
    a.handle(
        now,
        Input::LinkDown {
            conn: ConnId(1),
            error: Some("reset".into()),
        },
        &mut (),
    );
    let out = drain(&mut a);
    assert!(out.contains(&Output::Event(Event::LinkDown {
        conn: ConnId(1),
        peer: id(2),
        established: false,
        duplicate: false,
        error: Some("reset".into()),
    })));
    assert!(a.links().is_empty());
    assert_eq!(a.maker().targets()[0].state, TargetState::Retrying);
    // Messages on a link the node no longer knows are ignored.
    a.handle(
        now,
        Input::Message {
            conn: ConnId(1),
            bytes: vec![1, 2, 3],
        },
        &mut (),
    );
    assert!(drain(&mut a).is_empty());
}

#[test]
fn dialling_ourselves_closes_the_link_and_fails_the_target_for_good() {
    let now = Instant::now();
    let mut a = node(1, now);
    a.handle(
        now,
        Input::Connect {
            targets: vec![addr(1)],
            replace: false,
        },
        &mut (),
    );
    drain(&mut a);
    // Both ends of a link to ourselves: each sends the other our own Hello.
    a.handle(now, link_up(1, 1, Some(addr(1))), &mut ());
    a.handle(now, link_up(2, 1, None), &mut ());
    let hellos: Vec<(ConnId, Vec<u8>)> = drain(&mut a)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { conn, message } => Some((conn, message)),
            _ => None,
        })
        .collect();
    assert_eq!(hellos.len(), 2);
    let (_, hello) = &hellos[0];
    a.handle(
        now,
        Input::Message {
            conn: ConnId(2),
            bytes: hello.clone(),
        },
        &mut (),
    );
    let out = drain(&mut a);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Close {
            reason: CloseReason::ConnectedToSelf,
            ..
        }
    )));
    assert!(a.links().is_empty(), "{:?}", a.links());
    assert_eq!(a.maker().targets()[0].state, TargetState::Failed);
    assert_eq!(a.poll_timeout(), a.mesh().poll_timeout());
}
