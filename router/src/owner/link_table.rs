//! The owner's side of the control links: admitting an authenticated link (the inbound
//! cap), the command and datagram queues of each link task, the link each neighbour's
//! TCP fallback uses, and closing.

use super::Owner;
use crate::control_links;
use crate::handle::LinkCmd;
use crate::handshakes::RefusedReason;
use gossip::mesh::{CloseReason, ConnId};
use gossip::node::{Input as NodeInput, LinkUp};
use gossip::peer::PeerId;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::sync::mpsc;
use tracing::warn;

impl Owner {
    /// A link task's link is authenticated: admitted (past the inbound cap it is closed
    /// at once, and the node never hears of it), its queues kept.
    pub(super) fn link_up(
        &mut self,
        link: LinkUp,
        tx: mpsc::Sender<LinkCmd>,
        data: mpsc::Sender<Vec<u8>>,
    ) -> Option<NodeInput> {
        if !self.inbound.admit(link.conn, link.outbound) {
            self.handshakes.refused(false, RefusedReason::TooManyLinks);
            if self.inbound.refused() == 1 {
                warn!(
                    peer = %link.remote_id,
                    limit = self.inbound.limit(),
                    "refusing inbound links past the limit of {} (counted as \
                     too_many_links; logged once)",
                    self.inbound.limit()
                );
            }
            let _ = tx.try_send(LinkCmd::Close("too many inbound links".into()));
            return None;
        }
        self.handshakes.accepted(link.outbound);
        self.reclaim_link_up(&link);
        self.links.insert(link.conn, tx);
        self.data_links.insert(link.conn, data);
        Some(NodeInput::LinkUp(link))
    }

    /// Gives the sleeve task each neighbour's established link for its TCP fallback,
    /// and takes back those gone.
    pub(super) fn update_tcp_paths(&mut self) {
        let mut now: HashMap<PeerId, ConnId> = HashMap::new();
        for (conn, l) in self.node.links() {
            if l.established && self.data_links.contains_key(conn) {
                now.insert(l.peer, *conn);
            }
        }
        for (peer, conn) in &now {
            if self.tcp_paths.get(peer) != Some(conn) {
                let data = self.data_links.get(conn).cloned();
                let command = crate::dataplane_driver::Command::TcpLink(*peer, data);
                self.tasks.sleeve.send(command);
            }
        }
        for peer in self.tcp_paths.keys().filter(|p| !now.contains_key(p)) {
            let command = crate::dataplane_driver::Command::TcpLink(*peer, None);
            self.tasks.sleeve.send(command);
        }
        self.tcp_paths = now;
    }

    pub(super) fn send(&mut self, conn: ConnId, message: Vec<u8>) {
        if let Some(tx) = self.links.get(&conn) {
            crate::handle::send_to_link(tx, conn, message);
        }
    }

    /// The node closed a link (and has forgotten it): tell the link task.
    pub(super) fn close(
        &mut self,
        conn: ConnId,
        peer: PeerId,
        addr: SocketAddr,
        reason: CloseReason,
    ) {
        self.data_links.remove(&conn);
        self.inbound.gone(conn);
        if let Some(tx) = self.links.remove(&conn) {
            control_links::log_close(conn, peer, addr, &reason);
            let _ = tx.try_send(LinkCmd::Close(reason.to_string()));
        }
    }
}
