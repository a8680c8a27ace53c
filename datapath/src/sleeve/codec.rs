//! Sealing and opening sleeve datagrams, in place and without allocation.
//!
//! The plaintext inside the AEAD is a list of Ethernet frames ("entries"), then zero
//! padding to a multiple of 16 bytes (as WireGuard pads, so that lengths leak less). Each
//! entry starts with a kind byte that says which peers the frame travels between:
//!
//! ```text
//! 1 direct     | len u16 BE | frame(len)                 sender → receiver
//! 2 broadcast  | len u16 BE | frame(len)                 sender → everyone
//! 3 full       | dst_peer(16) | src_peer(16) | len u16 BE | frame(len)
//! 0            end of the list; every byte from here on is zero padding
//! ```
//!
//! A keepalive may instead hold one byte, `4` ("heard"), then zero padding: its sender
//! says that it receives the receiver's datagrams. A path is up only when datagrams get
//! through both ways, so this is all either end needs to learn that its own datagrams
//! arrive: once a path is up, keepalives carry that news and the control link does not.
//!
//! "Sender" and "receiver" are the two ends of the session, so the common cases (a frame
//! that entered the overlay at the sender and is for the receiver, or a broadcast from
//! the sender) cost 3 bytes; only relayed frames name their peers (35 bytes). `dst_peer`
//! all-zero means broadcast. A datagram with no entry is a keepalive. Parsing is strict:
//! an unknown kind, a zero length, a length past the end or a non-zero byte in the
//! padding makes the whole datagram [`OpenError::Malformed`]; nothing from it is
//! delivered.
//!
//! [`Session::open`] works in the order of the security design: length and header
//! checks, receiver-index lookup, replay check (no crypto yet), AEAD open in place, replay
//! mark, inner parse; it may be taken in three steps ([`Session::prepare_open`],
//! [`OpenJob::run`], [`Session::finish_open`]) so that the decryption runs without the
//! session, and the replay mark is still made after it, refusing a counter taken
//! meanwhile. Neither [`Session::seal`] nor [`Session::open`] allocates: both work
//! in the caller's buffer, and the AEAD runs in place with a detached tag.
//! [`Session::append`] builds a datagram's plaintext one frame at a time, so that frames
//! which queue up can share a datagram.

use super::aead::Cipher;
use super::header::{HeaderError, Packet, Repr, HEADER_LEN, TAG_LEN};
use super::replay::REJECT_AFTER_MESSAGES;
use super::session::Session;
use gossip::peer::{PeerId, PEER_ID_LEN};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Kind byte of an entry for the receiver that entered the overlay at the sender.
const KIND_DIRECT: u8 = 1;
/// Kind byte of a broadcast entry that entered the overlay at the sender.
const KIND_BROADCAST: u8 = 2;
/// Kind byte of an entry that names both of its peers (a relayed frame).
const KIND_FULL: u8 = 3;
/// The first and only byte of a keepalive that says "I receive your datagrams".
const KIND_HEARD: u8 = 4;
/// Bytes before a frame in a direct or broadcast entry: kind and length.
pub const DIRECT_HEADER_LEN: usize = 1 + 2;
/// Bytes before a frame in a full entry: kind, dst peer, src peer, length.
pub const FULL_HEADER_LEN: usize = 1 + 2 * PEER_ID_LEN + 2;
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

/// The two ends of a datagram: who sealed it and who opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// The peer that sealed the datagram.
    pub sender: PeerId,
    /// The peer that opens it.
    pub receiver: PeerId,
}

impl Ends {
    /// The kind byte `f` is encoded with between these ends.
    fn kind(&self, f: &InnerFrame<'_>) -> u8 {
        self.kind_for(f.dst, f.src)
    }

    /// The kind byte of a frame from peer `src` for `dst` between these ends.
    fn kind_for(&self, dst: PeerId, src: PeerId) -> u8 {
        if src != self.sender {
            KIND_FULL
        } else if dst == self.receiver {
            KIND_DIRECT
        } else if dst == BROADCAST {
            KIND_BROADCAST
        } else {
            KIND_FULL
        }
    }

    /// The bytes `f`'s entry takes, header included.
    pub fn entry_len(&self, f: &InnerFrame<'_>) -> usize {
        self.entry_len_for(f.dst, f.src, f.frame.len())
    }

    /// The bytes an entry takes for a frame of `len` bytes from `src` for `dst`.
    pub fn entry_len_for(&self, dst: PeerId, src: PeerId, len: usize) -> usize {
        let head = match self.kind_for(dst, src) {
            KIND_FULL => FULL_HEADER_LEN,
            _ => DIRECT_HEADER_LEN,
        };
        head + len
    }
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
    ends: Ends,
    /// The datagram's counter.
    pub counter: u64,
    /// The epoch of the key that opened it.
    pub epoch: u32,
    /// Whether its counter is above every counter received before under that key: the
    /// newest datagram, not one that arrived late or out of order. Only such a datagram
    /// may move the peer's endpoint (roaming).
    pub newest: bool,
}

impl<'a> Opened<'a> {
    /// The frames, in order. The list was validated by [`Session::open`].
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            rest: if self.is_heard() { &[] } else { self.plaintext },
            ends: self.ends,
        }
    }

    /// Whether this is a keepalive that says its sender receives our datagrams.
    pub fn is_heard(&self) -> bool {
        self.plaintext.first() == Some(&KIND_HEARD)
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
    ends: Ends,
}

impl<'a> Iterator for Frames<'a> {
    type Item = InnerFrame<'a>;

    fn next(&mut self) -> Option<InnerFrame<'a>> {
        let (frame, rest) = parse_entry(self.rest, &self.ends).ok()??;
        self.rest = rest;
        Some(frame)
    }
}

/// Parses the entry at the start of `rest`: `Ok(None)` at a valid end of the list.
fn parse_entry<'a>(
    rest: &'a [u8],
    ends: &Ends,
) -> Result<Option<(InnerFrame<'a>, &'a [u8])>, OpenError> {
    let Some((&kind, tail)) = rest.split_first() else {
        return Ok(None);
    };
    let (dst, src, tail) = match kind {
        0 if tail.iter().all(|&b| b == 0) => return Ok(None),
        KIND_DIRECT => (ends.receiver, ends.sender, tail),
        KIND_BROADCAST => (BROADCAST, ends.sender, tail),
        KIND_FULL => {
            let (dst, tail) = tail
                .split_first_chunk::<PEER_ID_LEN>()
                .ok_or(OpenError::Malformed)?;
            let (src, tail) = tail
                .split_first_chunk::<PEER_ID_LEN>()
                .ok_or(OpenError::Malformed)?;
            (PeerId(*dst), PeerId(*src), tail)
        }
        _ => return Err(OpenError::Malformed),
    };
    let (len, tail) = tail.split_first_chunk::<2>().ok_or(OpenError::Malformed)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len == 0 {
        return Err(OpenError::Malformed);
    }
    let frame = tail.get(..len).ok_or(OpenError::Malformed)?;
    Ok(Some((InnerFrame { dst, src, frame }, &tail[len..])))
}

/// Checks a whole plaintext, sealed by `ends.sender` for `ends.receiver`, with the strict
/// rules of the module doc.
pub fn validate_inner(mut plaintext: &[u8], ends: &Ends) -> Result<(), OpenError> {
    if let Some((&KIND_HEARD, padding)) = plaintext.split_first() {
        return if padding.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(OpenError::Malformed)
        };
    }
    while let Some((_, rest)) = parse_entry(plaintext, ends)? {
        plaintext = rest;
    }
    Ok(())
}

/// Checks that `f` can be carried at all.
fn check_frame(f: &InnerFrame<'_>) -> Result<(), SealError> {
    if f.frame.is_empty() {
        return Err(SealError::EmptyFrame);
    }
    if f.frame.len() > usize::from(u16::MAX) {
        return Err(SealError::FrameTooLarge(f.frame.len()));
    }
    Ok(())
}

/// The datagram length for a plaintext of `inner_len` bytes: header, padded ciphertext, tag.
pub const fn datagram_len(inner_len: usize) -> usize {
    HEADER_LEN + inner_len.next_multiple_of(PADDING_MULTIPLE) + TAG_LEN
}

/// The encryption of one datagram whose header, plaintext and padding are in place
/// ([`Session::prepare_in_place`]): the key and the counter it was given. Running it
/// needs no session, so many may run at once, on several threads.
pub struct SealJob {
    cipher: Arc<Cipher>,
    counter: u64,
}

impl SealJob {
    /// Encrypts `datagram` (exactly the length [`Session::prepare_in_place`] returned)
    /// in place and writes its tag.
    pub fn run(&self, datagram: &mut [u8]) {
        encrypt(&self.cipher, self.counter, datagram);
    }
}

/// The decryption of one received datagram that passed the checks before it
/// ([`Session::prepare_open`]): the key and the counter. Running it needs no session.
pub struct OpenJob {
    cipher: Arc<Cipher>,
    counter: u64,
}

impl OpenJob {
    /// Checks and decrypts `datagram` (the one [`Session::prepare_open`] saw) in place.
    pub fn run(&self, datagram: &mut [u8]) -> Result<(), OpenError> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::TooShort);
        }
        let (head, rest) = datagram.split_at_mut(HEADER_LEN);
        self.cipher
            .open(self.counter, head, rest)
            .map_err(|_| OpenError::AuthFailed)
    }
}

/// Encrypts a framed datagram (header, padded plaintext, room for the tag) in place.
fn encrypt(cipher: &Cipher, counter: u64, datagram: &mut [u8]) {
    if datagram.len() < HEADER_LEN + TAG_LEN {
        return;
    }
    let (head, rest) = datagram.split_at_mut(HEADER_LEN);
    let (body, tag_out) = rest.split_at_mut(rest.len() - TAG_LEN);
    let tag = cipher.seal(counter, head, body);
    tag_out.copy_from_slice(&tag);
}

impl Session {
    /// The ends of datagrams this session seals.
    pub fn seal_ends(&self) -> Ends {
        Ends {
            sender: self.local(),
            receiver: self.remote(),
        }
    }

    /// The ends of datagrams this session opens.
    pub fn open_ends(&self) -> Ends {
        Ends {
            sender: self.remote(),
            receiver: self.local(),
        }
    }

    /// The plaintext length (before padding) that `frames` need.
    pub fn inner_len(&self, frames: &[InnerFrame<'_>]) -> Result<usize, SealError> {
        let ends = self.seal_ends();
        frames.iter().try_fold(0usize, |total, f| {
            check_frame(f)?;
            Ok(total + ends.entry_len(f))
        })
    }

    /// Appends `f` to the plaintext being built in the datagram buffer `buf` (which holds
    /// `inner` plaintext bytes after the header so far). Returns the new plaintext length,
    /// or `Ok(None)` if the sealed datagram would outgrow `max_datagram` bytes or `buf`.
    /// Nothing is written when it does not fit. Seal with [`Session::seal_in_place`].
    pub fn append(
        &self,
        buf: &mut [u8],
        inner: usize,
        f: &InnerFrame<'_>,
        max_datagram: usize,
    ) -> Result<Option<usize>, SealError> {
        check_frame(f)?;
        let ends = self.seal_ends();
        let end = inner + ends.entry_len(f);
        if datagram_len(end) > max_datagram.min(buf.len()) {
            return Ok(None);
        }
        let at = HEADER_LEN + inner;
        let kind = ends.kind(f);
        buf[at] = kind;
        let mut at = at + 1;
        if kind == KIND_FULL {
            buf[at..at + PEER_ID_LEN].copy_from_slice(&f.dst.0);
            buf[at + PEER_ID_LEN..at + 2 * PEER_ID_LEN].copy_from_slice(&f.src.0);
            at += 2 * PEER_ID_LEN;
        }
        buf[at..at + 2].copy_from_slice(&(f.frame.len() as u16).to_be_bytes());
        buf[at + 2..at + 2 + f.frame.len()].copy_from_slice(f.frame);
        Ok(Some(end))
    }

    /// Seals `frames` (none for a keepalive) into `out` and returns the datagram length.
    /// Writes the header, the frames and the padding, then encrypts in place.
    pub fn seal(&mut self, frames: &[InnerFrame<'_>], out: &mut [u8]) -> Result<usize, SealError> {
        let inner = self.write(frames, out)?;
        self.seal_in_place(out, inner)
    }

    /// Writes `frames` (none for a keepalive) as the plaintext of a datagram in `out`,
    /// which must have room for the whole datagram; returns the plaintext length, to seal
    /// as [`Session::write_with`]'s.
    pub fn write(&self, frames: &[InnerFrame<'_>], out: &mut [u8]) -> Result<usize, SealError> {
        let needed = datagram_len(self.inner_len(frames)?);
        if out.len() < needed {
            return Err(SealError::BufferTooSmall { needed });
        }
        let mut inner = 0;
        for f in frames {
            inner = self
                .append(out, inner, f, usize::MAX)?
                .ok_or(SealError::BufferTooSmall { needed })?;
        }
        Ok(inner)
    }

    /// Writes the plaintext of a "heard" keepalive in `out` (see the module doc), which
    /// must have room for the whole datagram; returns the plaintext length, to seal as
    /// [`Session::write`]'s.
    pub fn write_heard(&self, out: &mut [u8]) -> Result<usize, SealError> {
        let needed = datagram_len(1);
        match out.get_mut(..needed) {
            Some(datagram) => {
                datagram[HEADER_LEN] = KIND_HEARD;
                Ok(1)
            }
            None => Err(SealError::BufferTooSmall { needed }),
        }
    }

    /// Writes one frame of `len` bytes from `src` for `dst` into `out` as the only entry
    /// of a datagram's plaintext, with `fill` writing the frame itself straight into its
    /// place (so a segment cut from a superframe is written once, where it is
    /// encrypted). Returns the plaintext length, to seal with [`Session::seal_in_place`]
    /// or [`Session::prepare_in_place`]; the datagram is [`datagram_len`] of it.
    pub fn write_with(
        &self,
        out: &mut [u8],
        dst: PeerId,
        src: PeerId,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<usize, SealError> {
        if len == 0 {
            return Err(SealError::EmptyFrame);
        }
        if len > usize::from(u16::MAX) {
            return Err(SealError::FrameTooLarge(len));
        }
        let ends = self.seal_ends();
        let inner = ends.entry_len_for(dst, src, len);
        let needed = datagram_len(inner);
        if out.len() < needed {
            return Err(SealError::BufferTooSmall { needed });
        }
        let kind = ends.kind_for(dst, src);
        let mut at = HEADER_LEN;
        out[at] = kind;
        at += 1;
        if kind == KIND_FULL {
            out[at..at + PEER_ID_LEN].copy_from_slice(&dst.0);
            out[at + PEER_ID_LEN..at + 2 * PEER_ID_LEN].copy_from_slice(&src.0);
            at += 2 * PEER_ID_LEN;
        }
        out[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
        fill(&mut out[at + 2..at + 2 + len]);
        Ok(inner)
    }

    /// Writes the plaintext of a keepalive padded with zeros into a datagram of `len`
    /// bytes (rounded down to `32 + 16·k`), a path MTU probe; returns the plaintext
    /// length, to seal as [`Session::write_with`]'s. The plaintext is all zeros: a frame
    /// list that ends at once, which every receiver opens as a keepalive.
    pub fn write_padded_keepalive(&self, len: usize, out: &mut [u8]) -> Result<usize, SealError> {
        let body = len.saturating_sub(HEADER_LEN + TAG_LEN) / PADDING_MULTIPLE * PADDING_MULTIPLE;
        let needed = datagram_len(body);
        out.get_mut(HEADER_LEN..HEADER_LEN + body)
            .ok_or(SealError::BufferTooSmall { needed })?
            .fill(0);
        Ok(body)
    }

    /// Pads the `inner_len` plaintext bytes after the header with zeros, writes the
    /// header, encrypts, appends the tag, and counts the message. Returns the datagram
    /// length.
    pub fn seal_in_place(&mut self, out: &mut [u8], inner_len: usize) -> Result<usize, SealError> {
        let (needed, counter) = self.frame_in_place(out, inner_len)?;
        let tx = self.tx.as_ref().ok_or(SealError::NoKey)?;
        encrypt(&tx.cipher, counter, &mut out[..needed]);
        Ok(needed)
    }

    /// As [`Session::seal_in_place`], but leaves the encryption to the returned
    /// [`SealJob`]: the header, the padding and the counter are settled here (under
    /// whatever owns the session), the expensive part may run later, elsewhere, on the
    /// same bytes. Returns the datagram length and the job.
    pub fn prepare_in_place(
        &mut self,
        out: &mut [u8],
        inner_len: usize,
    ) -> Result<(usize, SealJob), SealError> {
        let (needed, counter) = self.frame_in_place(out, inner_len)?;
        let tx = self.tx.as_ref().ok_or(SealError::NoKey)?;
        let job = SealJob {
            cipher: Arc::clone(&tx.cipher),
            counter,
        };
        Ok((needed, job))
    }

    /// Pads the plaintext, writes the header and takes a counter: everything of a seal
    /// but the encryption. Returns the datagram length and the counter.
    fn frame_in_place(
        &mut self,
        out: &mut [u8],
        inner_len: usize,
    ) -> Result<(usize, u64), SealError> {
        let needed = datagram_len(inner_len);
        let tx = self.tx.as_mut().ok_or(SealError::NoKey)?;
        if tx.counter >= REJECT_AFTER_MESSAGES {
            return Err(SealError::CounterExhausted);
        }
        let datagram = out
            .get_mut(..needed)
            .ok_or(SealError::BufferTooSmall { needed })?;
        let (head, rest) = datagram.split_at_mut(HEADER_LEN);
        let body_len = rest.len() - TAG_LEN;
        rest[inner_len..body_len].fill(0);
        let repr = Repr {
            receiver_index: tx.remote_index,
            counter: tx.counter,
        };
        repr.emit(&mut Packet::new_unchecked(head));
        let counter = tx.counter;
        tx.counter += 1;
        Ok((needed, counter))
    }

    /// Opens a received datagram in place (see the module doc for the order of checks).
    /// On success the frames borrow from `datagram`. The three steps of
    /// [`Session::prepare_open`], [`OpenJob::run`] and [`Session::finish_open`] in one.
    pub fn open<'a>(
        &mut self,
        now: Instant,
        datagram: &'a mut [u8],
    ) -> Result<Opened<'a>, OpenError> {
        let job = self.prepare_open(now, datagram)?;
        job.run(datagram)?;
        self.finish_open(&job, datagram)
    }

    /// The checks before decryption: length and header, receiver index (a live key),
    /// replay window. Returns the decryption to run ([`OpenJob::run`]), which needs no
    /// session, so it may run later, elsewhere; then [`Session::finish_open`].
    pub fn prepare_open(&self, now: Instant, datagram: &[u8]) -> Result<OpenJob, OpenError> {
        let packet = Packet::new_checked(datagram)?;
        let repr = Repr::parse(&packet)?;
        if (datagram.len() - HEADER_LEN - TAG_LEN) % PADDING_MULTIPLE != 0 {
            return Err(OpenError::BadHeader);
        }
        let key = self
            .rx
            .iter()
            .flatten()
            .find(|k| k.index == repr.receiver_index && self.rx_live(k.created, now))
            .ok_or(OpenError::UnknownIndex)?;
        if !key.window.will_accept(repr.counter) {
            return Err(OpenError::Replay);
        }
        Ok(OpenJob {
            cipher: Arc::clone(&key.cipher),
            counter: repr.counter,
        })
    }

    /// The rest of opening, once `job` decrypted `datagram` (its [`OpenJob::run`]
    /// succeeded): the replay mark (refused if the counter was taken meanwhile, or if
    /// the key is gone), the epoch's confirmation, the inner parse.
    pub fn finish_open<'a>(
        &mut self,
        job: &OpenJob,
        datagram: &'a mut [u8],
    ) -> Result<Opened<'a>, OpenError> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::TooShort);
        }
        let Some(key) = self
            .rx
            .iter_mut()
            .flatten()
            .find(|k| Arc::ptr_eq(&k.cipher, &job.cipher))
        else {
            // Dropped (expired or replaced) while the datagram was decrypted.
            return Err(OpenError::UnknownIndex);
        };
        let newest = job.counter >= key.window.next_expected();
        if !key.window.mark(job.counter) {
            // The same counter, on another thread, since the check before decryption.
            return Err(OpenError::Replay);
        }
        let epoch = key.epoch;
        // Authentic, so the peer holds this epoch's keys, even if the inner list is bad.
        self.confirm(epoch);
        let ends = self.open_ends();
        let body_len = datagram.len() - HEADER_LEN - TAG_LEN;
        let body = &mut datagram[HEADER_LEN..HEADER_LEN + body_len];
        validate_inner(body, &ends)?;
        Ok(Opened {
            plaintext: body,
            ends,
            counter: job.counter,
            epoch,
            newest,
        })
    }
}
