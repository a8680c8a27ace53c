//! Sealing and opening sleeve datagrams, in place and without allocation.
//!
//! The plaintext inside the AEAD is a list of Ethernet frames, each with the peers it
//! travels between, then zero padding to a multiple of 16 bytes (as WireGuard pads, so
//! that lengths leak less):
//!
//! ```text
//! { dst_peer(16) | src_peer(16) | len u16 BE | frame(len) } ... | 0x00 padding
//! ```
//!
//! `dst_peer` all-zero means broadcast. A zero length, or fewer than 34 bytes left, ends
//! the list, and everything from there on must be zero. A datagram with no frame is a
//! keepalive. Parsing is strict: any byte out of place makes the whole datagram
//! [`OpenError::Malformed`]; nothing from it is delivered.
//!
//! [`Session::open`] works in the order of the security design: length and header
//! checks, receiver-index lookup, replay check (no crypto yet), AEAD open in place, replay
//! mark, inner parse. Neither [`Session::seal`] nor [`Session::open`] allocates: both work
//! in the caller's buffer, and the AEAD runs in place with a detached tag.

use super::header::{HeaderError, Packet, Repr, HEADER_LEN, TAG_LEN};
use super::replay::REJECT_AFTER_MESSAGES;
use super::session::Session;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Nonce, Tag};
use gossip::peer::{PeerId, PEER_ID_LEN};
use std::time::Instant;
use thiserror::Error;

/// Bytes before each frame in the plaintext: dst peer, src peer, length.
pub const FRAME_HEADER_LEN: usize = 2 * PEER_ID_LEN + 2;
/// The `dst_peer` of a broadcast frame.
pub const BROADCAST: PeerId = PeerId([0; PEER_ID_LEN]);
/// The plaintext is padded to a multiple of this.
pub const PADDING_MULTIPLE: usize = 16;

/// One Ethernet frame inside a datagram, with the peers it travels between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerFrame<'a> {
    /// The peer the frame is for, or [`BROADCAST`].
    pub dst: PeerId,
    /// The peer where the frame entered the overlay.
    pub src: PeerId,
    /// The Ethernet frame.
    pub frame: &'a [u8],
}

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SealError {
    /// No send key yet (the first exchange has not finished) or it has expired.
    #[error("no sleeve key to send with yet; waiting for the rekey exchange")]
    NoKey,
    /// The send counter reached REJECT_AFTER_MESSAGES: the key may not be used again.
    #[error("send counter exhausted for this key; waiting for a rekey")]
    CounterExhausted,
    /// A frame is empty (a zero length would end the list).
    #[error("empty frame")]
    EmptyFrame,
    /// A frame is longer than the 16-bit length field.
    #[error("frame of {0} bytes is too long for a sleeve datagram")]
    FrameTooLarge(usize),
    /// The output buffer is too small.
    #[error("output buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the datagram needs.
        needed: usize,
    },
}

/// Why a datagram was dropped. Each variant is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OpenError {
    /// Shorter than a header and a tag.
    #[error("datagram too short")]
    TooShort,
    /// Wrong type, non-zero reserved bytes, or a ciphertext length that is not a multiple of 16.
    #[error("bad datagram header")]
    BadHeader,
    /// No live key has this receiver index.
    #[error("unknown receiver index")]
    UnknownIndex,
    /// The counter was seen before, is older than the window, or is past the key's limit.
    #[error("replayed or too old counter")]
    Replay,
    /// The AEAD tag did not verify: forged, corrupted, or the wrong key.
    #[error("authentication failed")]
    AuthFailed,
    /// Authentic, but the inner frame list is malformed.
    #[error("malformed inner frames")]
    Malformed,
}

impl From<HeaderError> for OpenError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::TooShort => OpenError::TooShort,
            HeaderError::BadHeader => OpenError::BadHeader,
        }
    }
}

/// An authentic datagram, decrypted in place.
#[derive(Debug, Clone, Copy)]
pub struct Opened<'a> {
    plaintext: &'a [u8],
    /// The datagram's counter.
    pub counter: u64,
    /// The epoch of the key that opened it.
    pub epoch: u32,
}

impl<'a> Opened<'a> {
    /// The frames, in order. The list was validated by [`Session::open`].
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            rest: self.plaintext,
        }
    }

    /// Whether this is a keepalive (no frame at all).
    pub fn is_keepalive(&self) -> bool {
        self.frames().next().is_none()
    }
}

/// Iterator over the frames of an [`Opened`] datagram.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = InnerFrame<'a>;

    fn next(&mut self) -> Option<InnerFrame<'a>> {
        let (frame, rest) = parse_entry(self.rest).ok()??;
        self.rest = rest;
        Some(frame)
    }
}

/// Parses the entry at the start of `rest`: `Ok(None)` at a valid end of the list.
fn parse_entry(rest: &[u8]) -> Result<Option<(InnerFrame<'_>, &[u8])>, OpenError> {
    let all_zero = |bytes: &[u8]| bytes.iter().all(|&b| b == 0);
    let Some((head, tail)) = rest.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return if all_zero(rest) {
            Ok(None)
        } else {
            Err(OpenError::Malformed)
        };
    };
    let (dst, src_len) = head.split_at(PEER_ID_LEN);
    let (src, len) = src_len.split_at(PEER_ID_LEN);
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len == 0 {
        return if all_zero(rest) {
            Ok(None)
        } else {
            Err(OpenError::Malformed)
        };
    }
    let frame = tail.get(..len).ok_or(OpenError::Malformed)?;
    let peer = |bytes: &[u8]| {
        let mut id = [0u8; PEER_ID_LEN];
        id.copy_from_slice(bytes);
        PeerId(id)
    };
    let entry = InnerFrame {
        dst: peer(dst),
        src: peer(src),
        frame,
    };
    Ok(Some((entry, &tail[len..])))
}

/// Checks a whole plaintext with the strict rules of the module doc.
pub fn validate_inner(mut plaintext: &[u8]) -> Result<(), OpenError> {
    while let Some((_, rest)) = parse_entry(plaintext)? {
        plaintext = rest;
    }
    Ok(())
}

/// The plaintext length (before padding) that `frames` need.
pub fn inner_len(frames: &[InnerFrame<'_>]) -> Result<usize, SealError> {
    frames.iter().try_fold(0usize, |total, f| {
        if f.frame.is_empty() {
            return Err(SealError::EmptyFrame);
        }
        if f.frame.len() > usize::from(u16::MAX) {
            return Err(SealError::FrameTooLarge(f.frame.len()));
        }
        Ok(total + FRAME_HEADER_LEN + f.frame.len())
    })
}

/// The datagram length for a plaintext of `inner_len` bytes: header, padded ciphertext, tag.
pub const fn datagram_len(inner_len: usize) -> usize {
    HEADER_LEN + inner_len.next_multiple_of(PADDING_MULTIPLE) + TAG_LEN
}

/// The AEAD nonce for `counter`: four zero bytes, then the counter little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut nonce = Nonce::default();
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

impl Session {
    /// Seals `frames` (none for a keepalive) into `out` and returns the datagram length.
    /// Writes the header, the frames and the padding, then encrypts in place.
    pub fn seal(&mut self, frames: &[InnerFrame<'_>], out: &mut [u8]) -> Result<usize, SealError> {
        let inner = inner_len(frames)?;
        let needed = datagram_len(inner);
        let body = out
            .get_mut(HEADER_LEN..needed - TAG_LEN)
            .ok_or(SealError::BufferTooSmall { needed })?;
        let mut at = 0;
        for f in frames {
            let (head, rest) = body[at..].split_at_mut(FRAME_HEADER_LEN);
            head[..PEER_ID_LEN].copy_from_slice(&f.dst.0);
            head[PEER_ID_LEN..2 * PEER_ID_LEN].copy_from_slice(&f.src.0);
            head[2 * PEER_ID_LEN..].copy_from_slice(&(f.frame.len() as u16).to_be_bytes());
            rest[..f.frame.len()].copy_from_slice(f.frame);
            at += FRAME_HEADER_LEN + f.frame.len();
        }
        self.seal_in_place(out, inner)
    }

    /// Seals a keepalive padded with zeros into a datagram of `len` bytes (rounded down
    /// to `32 + 16·k`), a path MTU probe; returns the datagram length. The plaintext is
    /// all zeros: a frame list that ends at once, which every receiver opens as a
    /// keepalive.
    pub fn seal_padded_keepalive(
        &mut self,
        len: usize,
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let body = len.saturating_sub(HEADER_LEN + TAG_LEN) / PADDING_MULTIPLE * PADDING_MULTIPLE;
        let needed = datagram_len(body);
        out.get_mut(HEADER_LEN..HEADER_LEN + body)
            .ok_or(SealError::BufferTooSmall { needed })?
            .fill(0);
        self.seal_in_place(out, body)
    }

    /// Pads the `inner_len` plaintext bytes after the header with zeros, writes the
    /// header, encrypts, appends the tag, and counts the message.
    pub(super) fn seal_in_place(
        &mut self,
        out: &mut [u8],
        inner_len: usize,
    ) -> Result<usize, SealError> {
        let needed = datagram_len(inner_len);
        let tx = self.tx.as_mut().ok_or(SealError::NoKey)?;
        if tx.counter >= REJECT_AFTER_MESSAGES {
            return Err(SealError::CounterExhausted);
        }
        let datagram = out
            .get_mut(..needed)
            .ok_or(SealError::BufferTooSmall { needed })?;
        let (head, rest) = datagram.split_at_mut(HEADER_LEN);
        let (body, tag_out) = rest.split_at_mut(rest.len() - TAG_LEN);
        body[inner_len..].fill(0);
        let repr = Repr {
            receiver_index: tx.remote_index,
            counter: tx.counter,
        };
        repr.emit(&mut Packet::new_unchecked(&mut *head));
        let tag = tx
            .cipher
            .encrypt_in_place_detached(&nonce(tx.counter), head, body)
            .map_err(|_| SealError::BufferTooSmall { needed })?;
        tag_out.copy_from_slice(&tag);
        tx.counter += 1;
        Ok(needed)
    }

    /// Opens a received datagram in place (see the module doc for the order of checks).
    /// On success the frames borrow from `datagram`.
    pub fn open<'a>(
        &mut self,
        now: Instant,
        datagram: &'a mut [u8],
    ) -> Result<Opened<'a>, OpenError> {
        let packet = Packet::new_checked(&*datagram)?;
        let repr = Repr::parse(&packet)?;
        if (datagram.len() - HEADER_LEN - TAG_LEN) % PADDING_MULTIPLE != 0 {
            return Err(OpenError::BadHeader);
        }
        let slot = self
            .rx
            .iter()
            .position(|k| {
                k.as_ref()
                    .is_some_and(|k| k.index == repr.receiver_index && self.rx_live(k.created, now))
            })
            .ok_or(OpenError::UnknownIndex)?;
        let Some(key) = self.rx[slot].as_mut() else {
            return Err(OpenError::UnknownIndex);
        };
        if !key.window.will_accept(repr.counter) {
            return Err(OpenError::Replay);
        }
        let (head, rest) = datagram.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        key.cipher
            .decrypt_in_place_detached(&nonce(repr.counter), head, body, Tag::from_slice(tag))
            .map_err(|_| OpenError::AuthFailed)?;
        key.window.mark(repr.counter);
        let epoch = key.epoch;
        // Authentic, so the peer holds this epoch's keys, even if the inner list is bad.
        self.confirm(epoch);
        validate_inner(body)?;
        Ok(Opened {
            plaintext: body,
            counter: repr.counter,
            epoch,
        })
    }
}
