//! The owner's relay between the neighbours' state machine ([`crate::neighbours`]) and
//! the rest: sleeve messages that came over the mesh go in; its commands go to the
//! data-plane tasks and its messages to the mesh (kept for later when unrouted).

use super::Owner;
use crate::neighbours::Output as NbOutput;
use crate::sleeve_channel::SLEEVE_CHANNEL;

impl Owner {
    /// Hands the neighbours the data plane's messages that arrived over the mesh.
    pub(super) fn take_sleeve_messages(&mut self) {
        while let Some((peer, message)) = self.channels.sleeve.pop() {
            self.neighbours.handle_message(peer, message);
        }
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
