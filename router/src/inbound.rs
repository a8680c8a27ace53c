//! The cap on authenticated inbound control links.
//!
//! The pre-authentication limiter ([`gossip::ratelimit::PreAuthLimiter`]) bounds the
//! handshakes in flight, but every peer holding the secret could still open link after
//! link. This table admits an inbound link only while fewer than its limit are open (the
//! connection limit `--conn-limit`, never more than [`MAX_INBOUND_LINKS`]); one more is
//! refused (closed, counted as the handshake refusal `too_many_links`). Links we dial
//! are not counted: the connection maker bounds them. Sans-IO: the owner calls
//! [`InboundLinks::admit`] on every link up and [`InboundLinks::gone`] on every link down.

use gossip::mesh::ConnId;
use std::collections::BTreeSet;

/// The most inbound links whatever the connection limit (also with `--conn-limit 0`,
/// "unlimited" for dialling): 4 × the default connection limit.
pub const MAX_INBOUND_LINKS: usize = 800;

/// The open inbound links.
#[derive(Debug, Clone)]
pub struct InboundLinks {
    limit: usize,
    open: BTreeSet<ConnId>,
    refused: u64,
}

impl InboundLinks {
    /// A table for connection limit `conn_limit` (0 = unlimited dialling).
    pub fn new(conn_limit: usize) -> InboundLinks {
        let limit = match conn_limit {
            0 => MAX_INBOUND_LINKS,
            n => n.min(MAX_INBOUND_LINKS),
        };
        InboundLinks {
            limit,
            open: BTreeSet::new(),
            refused: 0,
        }
    }

    /// Whether link `conn` may stay open; an outbound one always may.
    pub fn admit(&mut self, conn: ConnId, outbound: bool) -> bool {
        if outbound {
            return true;
        }
        if self.open.len() >= self.limit {
            self.refused += 1;
            return false;
        }
        self.open.insert(conn);
        true
    }

    /// Link `conn` is down (or closed); its place is free.
    pub fn gone(&mut self, conn: ConnId) {
        self.open.remove(&conn);
    }

    /// Inbound links open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Inbound links refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_links_past_the_limit_are_refused_until_one_goes() {
        let mut t = InboundLinks::new(3);
        assert!((0..3).all(|i| t.admit(ConnId(i), false)));
        assert!(!t.admit(ConnId(3), false), "a fourth inbound link");
        assert!(t.admit(ConnId(4), true), "we dialled it");
        assert_eq!((t.len(), t.refused()), (3, 1));
        t.gone(ConnId(1));
        t.gone(ConnId(3)); // never admitted: no effect
        assert!(t.admit(ConnId(5), false));
        assert!(!t.admit(ConnId(6), false));
        assert_eq!(t.refused(), 2);
    }

    #[test]
    fn unlimited_dialling_still_caps_inbound_links() {
        assert_eq!(InboundLinks::new(0).limit(), MAX_INBOUND_LINKS);
        assert_eq!(InboundLinks::new(100_000).limit(), MAX_INBOUND_LINKS);
        assert_eq!(InboundLinks::new(200).limit(), 200);
    }
}
