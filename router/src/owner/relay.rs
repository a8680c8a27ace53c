//! The owner's relay between the neighbours' state machine ([`crate::neighbours`]) and
//! the rest: sleeve messages that came over the mesh go in (punch requests with what
//! the mesh knows of their parties); its commands go to the data-plane tasks and its
//! messages to the mesh (kept for later when unrouted); its timers run with the pairs
//! the mesh's topology shows.

use super::Owner;
use crate::neighbours::punch::RequestContext;
use crate::neighbours::{self, Output as NbOutput};
use crate::sleeve_channel::SLEEVE_CHANNEL;
use datapath::sleeve_message::SleeveMessage;
use std::time::Instant;

impl Owner {
    /// Hands the neighbours the data plane's messages that arrived over the mesh.
    pub(super) fn take_sleeve_messages(&mut self, now: Instant) {
        while let Some((peer, message)) = self.channels.sleeve.pop() {
            match message {
                SleeveMessage::Punch(req) => {
                    let ctx = RequestContext {
                        us: self.node.mesh().topology().local(),
                        from_neighbour: self.neighbours.is_neighbour(&peer),
                        peer_neighbour: self.neighbours.is_neighbour(&req.peer),
                        peer_reachable: self.node.mesh().routes().unicast(&req.peer).is_some(),
                    };
                    self.neighbours.handle_punch(now, peer, req, ctx);
                }
                message => self.neighbours.handle_message(peer, message),
            }
        }
    }

    /// The neighbours' timers: hole punching's attempts and, as coordinator, its pairs.
    pub(super) fn neighbours_timeout(&mut self, now: Instant) {
        if self.neighbours.poll_timeout().is_some_and(|t| t > now) {
            return;
        }
        let pairs = neighbours::candidates(&self.node, &mut self.neighbours);
        let routes = self.node.mesh().routes();
        let reachable = |p: &gossip::peer::PeerId| routes.unicast(p).is_some();
        self.neighbours
            .handle_timeout(now, reachable, &pairs, &mut rand::random::<u64>);
    }

    /// Carries out the neighbours' outputs; true if a message went to the mesh.
    pub(super) fn relay(&mut self) -> bool {
        let mut sent = false;
        while let Some(out) = self.neighbours.poll_output() {
            match out {
                NbOutput::Dataplane(command) => self.tasks.sleeve.send(command),
                NbOutput::Fastdp(command) => self.tasks.fastdp.send(command),
                NbOutput::Send { peer, payload } => {
                    if self
                        .node
                        .send_unicast(peer, SLEEVE_CHANNEL, payload.clone())
                    {
                        sent = true;
                    } else {
                        self.neighbours.handle_unrouted(peer, payload);
                    }
                }
            }
        }
        sent
    }
}
