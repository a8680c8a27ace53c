//! The sleeve session with one neighbour: epoch keys, counters and rekey timing (sans-IO).
//!
//! A [`Session`] holds the current send key and its counter, and up to two receive keys
//! (the current epoch's and the previous one's), each found by the receiver index that
//! we chose and that the peer writes into datagram headers. It never reads the clock:
//! every call that depends on time takes `now`.
//!
//! # Rekeying
//!
//! The side with the lower [`PeerId`] (the initiator) starts an exchange when
//! [`SessionConfig::rekey_after_time`] has passed since the current epoch began (and at
//! once on a new session), or [`SessionConfig::idle_rekey_after_time`] if no frame moved
//! under the epoch's keys yet ([`Session::note_frames`]: an idle pair's keepalives need
//! no fresh keys, and rotating them for nothing costs both routers): [`Session::poll_rekey`] returns an offer for the router to send
//! over the control link. The responder answers it from [`Session::handle_offer`], and
//! installs the new keys at once: it accepts the new receive key straight away, but keeps
//! *sending* with the old key (on the first epoch: not at all) until the new one is
//! confirmed, either by a datagram that
//! opens under the new receive key or by the next offer (the initiator only offers again
//! after it has the keys), and at the latest after [`SessionConfig::rekey_timeout`]. The
//! initiator, on the answer, switches its send key at once (the responder has the keys:
//! it answered) and asks for a keepalive ([`Session::poll_keepalive`]) so that the
//! responder confirms quickly. This way a rekey loses no datagram when the control link is
//! slower than the UDP path.
//!
//! Receive keys are dropped, and their key material zeroized, once
//! [`SessionConfig::reject_after_time`] has passed since they were made; an expired key
//! is never used even if [`Session::handle_timeout`] has not run yet.

use super::aead::Cipher;
use super::keys::{LinkId, LocalOffer, RekeyError, RekeyOffer, Role};
use super::replay::ReplayWindow;
use super::SessionConfig;
use gossip::peer::PeerId;
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// A send key: the peer's index for it and our counter under it.
pub(super) struct TxKey {
    pub(super) cipher: Arc<Cipher>,
    pub(super) remote_index: u32,
    pub(super) counter: u64,
    pub(super) created: Instant,
    pub(super) epoch: u32,
}

/// A receive key: our index for it and its replay window.
pub(super) struct RxKey {
    pub(super) cipher: Arc<Cipher>,
    pub(super) index: u32,
    pub(super) window: ReplayWindow,
    pub(super) created: Instant,
    pub(super) epoch: u32,
}

/// Our offer waiting for the peer's answer.
struct Pending {
    local: LocalOffer,
    sent_at: Instant,
}

/// The sleeve state for one neighbour peer. See the module doc.
pub struct Session {
    config: SessionConfig,
    local: PeerId,
    remote: PeerId,
    role: Role,
    handshake_hash: Zeroizing<[u8; 32]>,
    /// Names the control link in our offers; offers for another link are refused.
    link: LinkId,
    created: Instant,
    /// The newest epoch whose keys are installed (0: none yet).
    epoch: u32,
    /// The newest epoch we offered (initiator only).
    offered_epoch: u32,
    epoch_started: Option<Instant>,
    pending: Option<Pending>,
    pub(super) tx: Option<TxKey>,
    /// The responder's new send key, waiting for confirmation.
    pub(super) next_tx: Option<TxKey>,
    /// `[current, previous]` receive keys.
    pub(super) rx: [Option<RxKey>; 2],
    keepalive_due: bool,
    /// Frames moved under the current epoch's keys ([`Session::note_frames`]).
    carried: bool,
}

impl Session {
    /// A session between `local` and its neighbour `remote` over a control link whose
    /// Noise handshake hash is `handshake_hash`. It has no keys until the first exchange.
    pub fn new(
        now: Instant,
        config: SessionConfig,
        local: PeerId,
        remote: PeerId,
        handshake_hash: [u8; 32],
    ) -> Session {
        Session {
            config,
            local,
            remote,
            role: Role::between(&local, &remote),
            handshake_hash: Zeroizing::new(handshake_hash),
            link: LinkId::of(&handshake_hash),
            created: now,
            epoch: 0,
            offered_epoch: 0,
            epoch_started: None,
            pending: None,
            tx: None,
            next_tx: None,
            rx: [None, None],
            keepalive_due: false,
            carried: false,
        }
    }

    /// Frames (not only keepalives or probes) were sealed or opened under the current
    /// keys, as the data plane saw: the epoch carries data, and the next rekey is due
    /// [`SessionConfig::rekey_after_time`] after it began, not
    /// [`SessionConfig::idle_rekey_after_time`].
    pub fn note_frames(&mut self) {
        self.carried = true;
    }

    /// Our peer.
    pub fn local(&self) -> PeerId {
        self.local
    }

    /// The neighbour at the other end.
    pub fn remote(&self) -> PeerId {
        self.remote
    }

    /// Our role in rekey exchanges.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The newest installed epoch (0 before the first exchange).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether [`Session::seal`] has a key to seal with.
    pub fn can_send(&self) -> bool {
        self.tx.is_some()
    }

    /// The counter the next sealed datagram will carry, if there is a send key.
    pub fn send_counter(&self) -> Option<u64> {
        self.tx.as_ref().map(|tx| tx.counter)
    }

    /// The receiver indices of our live receive keys, for the router's index → session map.
    pub fn receiver_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.rx.iter().flatten().map(|rx| rx.index)
    }

    /// The offer to send over the control link, if a rekey is due (initiator only).
    /// Draws the ephemeral key and index from the OS.
    pub fn poll_rekey(&mut self, now: Instant) -> Option<RekeyOffer> {
        self.poll_rekey_with(now, &mut OsRng, |_| false)
    }

    /// [`Session::poll_rekey`] with the randomness passed in; `index_taken` tells which
    /// receiver indices other sessions already use, so that the new one is unique.
    pub fn poll_rekey_with<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        index_taken: impl Fn(u32) -> bool,
    ) -> Option<RekeyOffer> {
        if self.role != Role::Initiator {
            return None;
        }
        if let Some(pending) = &self.pending {
            if now.saturating_duration_since(pending.sent_at) < self.config.rekey_timeout {
                return None;
            }
            // No answer in time (the peer refused it, or lost its session): start over
            // with a fresh epoch number, so a late answer cannot be confused with it.
            self.pending = None;
        }
        if !self.rekey_due(now) {
            return None;
        }
        let epoch = self.epoch.max(self.offered_epoch).checked_add(1)?;
        let index = self.fresh_index(rng, &index_taken);
        let local = LocalOffer::generate(rng, epoch, index, self.link);
        let offer = local.offer();
        self.offered_epoch = epoch;
        self.pending = Some(Pending {
            local,
            sent_at: now,
        });
        Some(offer)
    }

    /// Handles the peer's offer. The responder returns its answer, to send back over the
    /// control link; the initiator completes its exchange and returns `None`.
    pub fn handle_offer(
        &mut self,
        now: Instant,
        offer: RekeyOffer,
    ) -> Result<Option<RekeyOffer>, RekeyError> {
        self.handle_offer_with(now, offer, &mut OsRng, |_| false)
    }

    /// [`Session::handle_offer`] with the randomness passed in (see
    /// [`Session::poll_rekey_with`] for `index_taken`).
    pub fn handle_offer_with<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        offer: RekeyOffer,
        rng: &mut R,
        index_taken: impl Fn(u32) -> bool,
    ) -> Result<Option<RekeyOffer>, RekeyError> {
        // Before anything else: an offer for another link must not use up ours.
        if offer.link != self.link {
            return Err(RekeyError::OtherLink);
        }
        match self.role {
            Role::Initiator => {
                let Some(pending) = self.pending.take() else {
                    return Err(RekeyError::Unsolicited);
                };
                let ours = pending.local.offer();
                if ours.epoch != offer.epoch {
                    self.pending = Some(pending);
                    return Err(RekeyError::UnexpectedEpoch {
                        got: offer.epoch,
                        expected: ours.epoch,
                    });
                }
                let keys = pending
                    .local
                    .agree(&offer, self.role, &self.handshake_hash)?;
                self.install(
                    now,
                    offer.epoch,
                    keys,
                    ours.receiver_index,
                    offer.receiver_index,
                );
                self.keepalive_due = true;
                Ok(None)
            }
            Role::Responder => {
                if offer.epoch <= self.epoch {
                    return Err(RekeyError::UnexpectedEpoch {
                        got: offer.epoch,
                        expected: self.epoch.saturating_add(1),
                    });
                }
                let index = self.fresh_index(rng, &index_taken);
                let local = LocalOffer::generate(rng, offer.epoch, index, self.link);
                let answer = local.offer();
                let keys = local.agree(&offer, self.role, &self.handshake_hash)?;
                self.install(now, offer.epoch, keys, index, offer.receiver_index);
                Ok(Some(answer))
            }
        }
    }

    /// Whether a keepalive should be sealed and sent now (asked once per new epoch by
    /// the initiator, so that the responder confirms the new key).
    pub fn poll_keepalive(&mut self) -> bool {
        std::mem::take(&mut self.keepalive_due)
    }

    /// Drops expired keys (zeroizing them) and promotes an unconfirmed send key whose
    /// wait is over. Call it at [`Session::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let lifetime = self.config.reject_after_time;
        for slot in &mut self.rx {
            if slot
                .as_ref()
                .is_some_and(|rx| expired(rx.created, lifetime, now))
            {
                *slot = None;
            }
        }
        if self
            .tx
            .as_ref()
            .is_some_and(|tx| expired(tx.created, lifetime, now))
        {
            self.tx = None;
        }
        let wait = self.config.rekey_timeout;
        if self
            .next_tx
            .as_ref()
            .is_some_and(|tx| expired(tx.created, wait, now))
        {
            self.tx = self.next_tx.take();
        }
    }

    /// Whether a rekey is under way: our offer awaits its answer, or a new send key
    /// awaits confirmation. Its timers then count in fractions of a second.
    pub fn is_rekeying(&self) -> bool {
        self.pending.is_some() || self.next_tx.is_some()
    }

    /// The next instant at which [`Session::handle_timeout`] or [`Session::poll_rekey`]
    /// has work to do ([`Session::note_frames`] may bring it forward).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lifetime = self.config.reject_after_time;
        let rekey = match (self.role, &self.pending) {
            (Role::Responder, _) => None,
            (Role::Initiator, Some(p)) => Some(p.sent_at + self.config.rekey_timeout),
            (Role::Initiator, None) => Some(
                self.epoch_started
                    .map_or(self.created, |t| t + self.rekey_after()),
            ),
        };
        let keys = self.rx.iter().flatten().map(|rx| rx.created + lifetime);
        let tx = self.tx.iter().map(|tx| tx.created + lifetime);
        let confirm = self
            .next_tx
            .iter()
            .map(|tx| tx.created + self.config.rekey_timeout);
        rekey.into_iter().chain(keys).chain(tx).chain(confirm).min()
    }

    /// Whether the initiator should offer a new epoch now.
    fn rekey_due(&self, now: Instant) -> bool {
        let Some(started) = self.epoch_started else {
            return true;
        };
        now.saturating_duration_since(started) >= self.rekey_after()
            || self
                .tx
                .as_ref()
                .is_some_and(|tx| tx.counter >= self.config.rekey_after_messages)
    }

    /// How long the current epoch lasts: shorter once it carried frames. An idle epoch
    /// still ends three offer timeouts before its keys die (a configuration with short
    /// lifetimes, such as `--rekey-interval`, rotates idle epochs as often as others).
    fn rekey_after(&self) -> Duration {
        let c = &self.config;
        if self.carried {
            return c.rekey_after_time;
        }
        let latest = c.reject_after_time.saturating_sub(3 * c.rekey_timeout);
        c.idle_rekey_after_time.min(latest).max(c.rekey_after_time)
    }

    /// A random non-zero receiver index that neither we nor (per `taken`) anyone else uses.
    fn fresh_index<R: RngCore>(&self, rng: &mut R, taken: &impl Fn(u32) -> bool) -> u32 {
        let mut index = rng.next_u32();
        // A collision is a 2^-32 event per live index; a handful of tries always suffices.
        for _ in 0..64 {
            if index != 0 && !taken(index) && !self.receiver_indices().any(|i| i == index) {
                break;
            }
            index = rng.next_u32();
        }
        index
    }

    /// Installs an epoch's keys: a new current receive key (the old current one becomes
    /// the previous), and a new send key, at once for the initiator, after confirmation
    /// for the responder (even on the first epoch: until the initiator has our answer,
    /// anything we sent under the new key could not be opened).
    fn install(
        &mut self,
        now: Instant,
        epoch: u32,
        keys: super::keys::EpochKeys,
        local_index: u32,
        remote_index: u32,
    ) {
        let (tx_key, rx_key) = keys.for_role(self.role);
        let rx = RxKey {
            cipher: Arc::new(Cipher::new(&rx_key)),
            index: local_index,
            window: ReplayWindow::new(),
            created: now,
            epoch,
        };
        self.rx[1] = self.rx[0].take();
        self.rx[0] = Some(rx);
        let tx = TxKey {
            cipher: Arc::new(Cipher::new(&tx_key)),
            remote_index,
            counter: 0,
            created: now,
            epoch,
        };
        if self.role == Role::Responder {
            // A new offer proves the initiator holds the previous epoch's keys.
            if let Some(confirmed) = self.next_tx.take() {
                self.tx = Some(confirmed);
            }
            self.next_tx = Some(tx);
        } else {
            self.tx = Some(tx);
            self.next_tx = None;
        }
        self.epoch = epoch;
        self.epoch_started = Some(now);
        self.carried = false;
    }

    /// Whether a receive key made at `created` is still usable at `now`.
    pub(super) fn rx_live(&self, created: Instant, now: Instant) -> bool {
        !expired(created, self.config.reject_after_time, now)
    }

    /// Called when a datagram opened under the receive key of `epoch`: if that is the
    /// epoch of the unconfirmed send key, the peer has the keys, so switch to it.
    pub(super) fn confirm(&mut self, epoch: u32) {
        if self.next_tx.as_ref().is_some_and(|tx| tx.epoch == epoch) {
            self.tx = self.next_tx.take();
        }
    }
}

/// Whether `lifetime` has passed between `created` and `now`.
fn expired(created: Instant, lifetime: Duration, now: Instant) -> bool {
    now.saturating_duration_since(created) >= lifetime
}
