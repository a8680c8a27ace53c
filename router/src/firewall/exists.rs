//! Whether the table is still there, asked of the kernel over nf_tables netlink.
//!
//! The firewall task checks every 30 s that nobody deleted its table. Running
//! `nft list table` for that cost a process per router and check: 100 idle routers
//! spent more than 1 % of a core on it. One `NFT_MSG_GETTABLE` request on a netlink
//! socket gets the same answer: a `NFT_MSG_NEWTABLE` message describing the table, or
//! an error, `ENOENT` when there is no such table. Changing the table is still `nft`'s
//! job ([`super::nft`]).
//!
//! The request and the reply are built and read here, without a socket
//! ([`request`], [`parse_reply`]); [`table_exists`] does the one exchange.

use super::nft::NftError;
use std::time::Duration;

/// The table's family: `inet` (NFPROTO_INET).
const FAMILY_INET: u8 = 1;
/// The table's name (with [`FAMILY_INET`]: [`super::ruleset::TABLE`]).
pub const NAME: &str = "weft";

/// nfnetlink subsystem of nf_tables, in the high byte of the message type.
const SUBSYS_NFTABLES: u16 = 10;
const MSG_NEWTABLE: u16 = 0;
const MSG_GETTABLE: u16 = 1;
const ATTR_TABLE_NAME: u16 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const HEADER_LEN: usize = 16;
/// The nfgenmsg after the netlink header: family, version, resource id.
const NFGEN_LEN: usize = 4;
const ENOENT: i32 = 2;

/// The request for table `name` of family `inet`, with sequence number `seq`.
pub fn request(seq: u32, name: &str) -> Vec<u8> {
    let attr_len = 4 + name.len() + 1;
    let padded = attr_len.next_multiple_of(4);
    let total = HEADER_LEN + NFGEN_LEN + padded;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&((SUBSYS_NFTABLES << 8) | MSG_GETTABLE).to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[FAMILY_INET, 0, 0, 0]);
    m.extend_from_slice(&u16::try_from(attr_len).unwrap_or(u16::MAX).to_ne_bytes());
    m.extend_from_slice(&ATTR_TABLE_NAME.to_ne_bytes());
    m.extend_from_slice(name.as_bytes());
    m.resize(total, 0);
    m
}

/// What one datagram of the kernel's reply to request `seq` says: `Some(true)` the
/// table exists, `Some(false)` it does not, `None` nothing about it (another sequence
/// number, or another message type).
pub fn parse_reply(mut buf: &[u8], seq: u32) -> Result<Option<bool>, NftError> {
    let bad = |what: &str| NftError::Failed(format!("nf_tables netlink reply: {what}"));
    while buf.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < HEADER_LEN || len > buf.len() {
            return Err(bad("a message length out of bounds"));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let msg_seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let payload = &buf[HEADER_LEN..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        if msg_seq != seq {
            continue;
        }
        if kind == (SUBSYS_NFTABLES << 8) | MSG_NEWTABLE {
            return Ok(Some(true));
        }
        if kind == NLMSG_ERROR {
            let code = payload
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("a short error message"))?;
            return match code {
                0 => Ok(None),
                c if c == -ENOENT => Ok(Some(false)),
                c => Err(NftError::Failed(format!(
                    "asking the kernel for table {NAME}: {}",
                    std::io::Error::from_raw_os_error(c.saturating_neg())
                ))),
            };
        }
    }
    Ok(None)
}

/// How long the kernel gets to answer (it answers while handling the request).
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Whether table `inet weft` exists in this network namespace. Blocks for at most
/// [`ANSWER_WITHIN`]; the kernel answers within the send, so in practice not at all.
pub fn table_exists() -> Result<bool, NftError> {
    use nix::sys::socket::{
        recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
        SockProtocol, SockType,
    };
    use std::os::fd::AsRawFd;
    let failed = |what: &str, e: nix::Error| {
        NftError::Failed(format!(
            "nf_tables netlink: {what}: {}",
            std::io::Error::from(e)
        ))
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| failed("socket", e))?;
    let timeout = nix::sys::time::TimeVal::new(ANSWER_WITHIN.as_secs() as i64, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(|e| failed("timeout", e))?;
    let seq = std::process::id();
    sendto(
        fd.as_raw_fd(),
        &request(seq, NAME),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| failed("send", e))?;
    let mut buf = vec![0u8; 8192];
    // A few datagrams at most: anything not about our request is skipped.
    for _ in 0..8 {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(|e| failed("recv", e))?;
        if let Some(exists) = parse_reply(&buf[..n], seq)? {
            return Ok(exists);
        }
    }
    Err(NftError::Failed(
        "nf_tables netlink: no answer about the table".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = HEADER_LEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(len.next_multiple_of(4), 0);
        m
    }

    #[test]
    fn the_name_is_the_rulesets_table() {
        assert_eq!(super::super::ruleset::TABLE, format!("inet {NAME}"));
    }

    #[test]
    fn the_request_is_one_aligned_gettable_message() {
        let m = request(7, "weft");
        assert_eq!(m.len(), 32);
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0a01);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(m[16], FAMILY_INET);
        assert_eq!(
            u16::from_ne_bytes([m[20], m[21]]),
            9,
            "attribute: 4 + \"weft\\0\""
        );
        assert_eq!(&m[24..29], b"weft\0");
        assert_eq!(&m[29..], [0, 0, 0]);
    }

    #[test]
    fn replies_say_there_not_there_or_fail() {
        let table = header(0x0a00, 7, &[1, 0, 0, 0]);
        assert_eq!(parse_reply(&table, 7), Ok(Some(true)));
        let missing = header(NLMSG_ERROR, 7, &(-ENOENT).to_ne_bytes());
        assert_eq!(parse_reply(&missing, 7), Ok(Some(false)));
        let denied = header(NLMSG_ERROR, 7, &(-1i32).to_ne_bytes());
        assert!(parse_reply(&denied, 7).is_err());
        // Another request's answer, then ours, in one datagram.
        let mut both = header(NLMSG_ERROR, 6, &(-ENOENT).to_ne_bytes());
        both.extend(header(0x0a00, 7, &[]));
        assert_eq!(parse_reply(&both, 7), Ok(Some(true)));
        assert_eq!(
            parse_reply(&header(NLMSG_ERROR, 7, &0i32.to_ne_bytes()), 7),
            Ok(None)
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let table = header(0x0a00, 7, &[1, 0, 0, 0]);
        for cut in 0..table.len() {
            let _ = parse_reply(&table[..cut], 7);
        }
        let mut long = table.clone();
        long[0] = 200;
        assert!(parse_reply(&long, 7).is_err());
        let mut short = table;
        short[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse_reply(&short, 7).is_err());
        assert!(parse_reply(&header(NLMSG_ERROR, 7, &[1, 2]), 7).is_err());
        proptest::proptest!(|(bytes: Vec<u8>)| {
            let _ = parse_reply(&bytes, 7);
        });
    }
}
