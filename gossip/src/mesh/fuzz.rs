//! A stateful fuzz entry: one [`Mesh`] with three authenticated neighbours, fed a sequence
//! of messages, clock steps and relinks taken from arbitrary bytes. Each message goes
//! through [`Mesh::handle_message`], the path every decrypted link message takes in the
//! router, against state built up by the messages before it.

use super::{ConnId, LocalPeer, Mesh, MeshConfig, MeshOutput};
use crate::channel::{Channels, CrdtChannel, GossipChannel};
use crate::crdt::GCounter;
use crate::identity::Identity;
use crate::message::{Hello, Message, PROTOCOL_VERSION};
use crate::peer::{PeerId, PeerUid};
use crate::topology::wire::MAX_PEERS;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Steps read from the input at most (each step is `op`, a 2-byte length, the payload).
const MAX_STEPS: usize = 256;

/// One application channel, so that summaries, updates and broadcasts reach a channel.
struct Counter(CrdtChannel<GCounter>);

impl Channels for Counter {
    fn names(&self) -> &'static [&'static str] {
        &["counter"]
    }

    fn get(&self, name: &str) -> Option<&dyn GossipChannel> {
        (name == "counter").then_some(&self.0 as &dyn GossipChannel)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut dyn GossipChannel> {
        (name == "counter").then_some(&mut self.0 as &mut dyn GossipChannel)
    }
}

fn identity(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6783))
}

struct Session {
    mesh: Mesh,
    channels: Counter,
    now: Instant,
    /// Each neighbour's id and its current link.
    neighbours: [(PeerId, ConnId); 3],
    next_conn: u64,
    link_seq: u64,
}

impl Session {
    fn new() -> Session {
        let now = Instant::now();
        let me = identity(1);
        let local = LocalPeer {
            id: me.id(),
            identity: me,
            uid: PeerUid(1),
            nickname: "fuzz".into(),
            listen_port: 6783,
        };
        let mut s = Session {
            mesh: Mesh::new(local, MeshConfig::default(), 1, now),
            channels: Counter(CrdtChannel::new(GCounter::new())),
            now,
            neighbours: [2, 3, 4].map(|n| (identity(n).id(), ConnId(0))),
            next_conn: 1,
            link_seq: 1,
        };
        for i in 0..3 {
            s.link_up(i);
        }
        s
    }

    /// A new authenticated link to neighbour `i`, and its Hello.
    fn link_up(&mut self, i: usize) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.link_seq += 1;
        let (id, _) = self.neighbours[i];
        self.neighbours[i].1 = conn;
        let n = i as u8 + 2;
        self.mesh
            .handle_link_up(self.now, conn, id, i.is_multiple_of(2), addr(n));
        let hello = Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            uid: PeerUid(u64::from(n)),
            nickname: format!("n{n}"),
            listen_port: 6783,
            link_seq: self.link_seq,
        });
        self.deliver(i, &hello.encode());
    }

    fn deliver(&mut self, i: usize, message: &[u8]) {
        let conn = self.neighbours[i].1;
        self.mesh
            .handle_message(self.now, conn, message, &mut self.channels);
        self.drain();
    }

    /// Takes every output; what the mesh sends must decode, as its neighbours will.
    fn drain(&mut self) {
        while let Some(out) = self.mesh.poll_output() {
            if let MeshOutput::Send { message, .. } = out {
                assert!(
                    Message::decode(&message).is_ok(),
                    "the mesh sent a message that does not decode"
                );
            }
        }
        assert!(self.mesh.peers().len() <= MAX_PEERS + 1, "peers unbounded");
    }
}

/// Fuzz entry: a session of messages from three neighbours into one mesh. The input is
/// a sequence of steps `op, len (u16 LE), payload[len]`: op 0 to 2 deliver the payload
/// as a message from neighbour `op`; op 3 moves the clock by `payload[0]` seconds and
/// fires the timers; op 4 drops neighbour `payload[0] % 3`'s link and brings up a new
/// one. Never panics; every message the mesh sends decodes, and peers stay bounded.
pub fn fuzz_mesh_session(data: &[u8]) {
    let mut s = Session::new();
    let mut rest = data;
    for _ in 0..MAX_STEPS {
        let [op, lo, hi, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        match op % 5 {
            i @ 0..=2 => s.deliver(usize::from(i), payload),
            3 => {
                let secs = payload.first().copied().unwrap_or(1);
                s.now += Duration::from_secs(u64::from(secs));
                s.mesh.handle_timeout(s.now, &s.channels);
                s.drain();
            }
            _ => {
                let i = usize::from(payload.first().copied().unwrap_or(0) % 3);
                s.mesh.handle_link_down(s.now, s.neighbours[i].1);
                s.drain();
                s.link_up(i);
            }
        }
    }
}

/// The steps of a session in [`fuzz_mesh_session`]'s input format.
pub fn fuzz_session_input(steps: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, payload) in steps {
        out.push(*op);
        let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&payload[..usize::from(len)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ChannelDigest;
    use rand::{Rng, SeedableRng};

    /// A session of well-formed messages: the seed the replay mutates.
    fn seed_session() -> Vec<u8> {
        let digest = Message::Digest(vec![ChannelDigest {
            channel: "counter".into(),
            digest: 7,
        }])
        .encode();
        let summary = Message::Summary {
            channel: "topology".into(),
            reply_wanted: true,
            summary: Vec::new(),
        }
        .encode();
        let heartbeat = Message::Heartbeat.encode();
        fuzz_session_input(&[
            (0, &digest),
            (1, &summary),
            (2, &heartbeat),
            (3, &[5]),
            (4, &[1]),
            (1, &heartbeat),
            (3, &[200]),
        ])
    }

    #[test]
    fn a_session_reaches_established_links() {
        let mut s = Session::new();
        assert_eq!(
            s.mesh
                .connections()
                .iter()
                .filter(|c| c.is_established())
                .count(),
            3,
            "the replay starts from three established links"
        );
        s.deliver(0, &Message::Heartbeat.encode());
        fuzz_mesh_session(&seed_session());
    }

    #[test]
    fn fuzz_mesh_session_replay_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(61);
        let seed = seed_session();
        for i in 0..2000 {
            let mut d = seed.clone();
            for _ in 0..rng.gen_range(0..(1 + i % 8)) {
                let j = rng.gen_range(0..d.len());
                d[j] = rng.gen();
            }
            if i % 5 == 0 {
                d.truncate(rng.gen_range(0..=d.len()));
            }
            fuzz_mesh_session(&d);
        }
    }
}
