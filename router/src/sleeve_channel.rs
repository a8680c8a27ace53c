//! The `sleeve` gossip channel: the data plane's control messages on the mesh.
//!
//! Each [`SleeveMessage`] goes to one neighbour as a mesh unicast on this channel. It
//! holds no replicated state (its digest never changes, it has nothing to summarise); it
//! only queues what arrives until the owner, which holds it, takes it. Payloads are parsed strictly: a
//! malformed one is an error, and the mesh counts it as malformed input from that link.

use datapath::sleeve_message::SleeveMessage;
use gossip::channel::{ChannelError, GossipChannel};
use gossip::peer::PeerId;
use std::collections::VecDeque;
use std::time::Instant;

/// The channel's name on the mesh.
pub const SLEEVE_CHANNEL: &str = "sleeve";

/// Bound on queued messages; beyond it the oldest are dropped (the data plane retries).
const MAX_QUEUED: usize = 4096;

/// The channel, held by the owner and lent to the mesh.
#[derive(Default)]
pub struct SleeveChannel {
    inbox: VecDeque<(PeerId, SleeveMessage)>,
}

impl SleeveChannel {
    /// Takes the next received message.
    pub fn pop(&mut self) -> Option<(PeerId, SleeveMessage)> {
        self.inbox.pop_front()
    }
}

fn invalid() -> ChannelError {
    ChannelError::Invalid("malformed sleeve control message")
}

impl GossipChannel for SleeveChannel {
    fn digest(&self) -> u64 {
        0
    }
    fn summary(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn updates_for(&self, _summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        Ok(Vec::new())
    }
    fn missing_here(&self, _summary: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        Ok(Vec::new())
    }
    fn merge(&mut self, _now: Instant, _update: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        Ok(None)
    }
    fn handle_unicast(
        &mut self,
        _now: Instant,
        source: PeerId,
        payload: &[u8],
    ) -> Result<(), ChannelError> {
        let message = SleeveMessage::decode(payload).ok_or_else(invalid)?;
        if self.inbox.len() == MAX_QUEUED {
            self.inbox.pop_front();
        }
        self.inbox.push_back((source, message));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_queue_in_order_and_junk_is_refused() {
        let mut ch = SleeveChannel::default();
        let now = Instant::now();
        assert!(ch.handle_unicast(now, PeerId([1; 16]), &[9, 9]).is_err());
        ch.handle_unicast(now, PeerId([1; 16]), &SleeveMessage::Heard.encode())
            .unwrap();
        ch.handle_unicast(
            now,
            PeerId([2; 16]),
            &SleeveMessage::ProbeAck(1248).encode(),
        )
        .unwrap();
        assert_eq!(ch.pop(), Some((PeerId([1; 16]), SleeveMessage::Heard)));
        assert_eq!(
            ch.pop(),
            Some((PeerId([2; 16]), SleeveMessage::ProbeAck(1248)))
        );
        assert_eq!(ch.pop(), None);
    }
}
