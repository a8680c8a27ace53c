//! The steps of the handshake: one method per unit read from the stream.
//!
//! Each step runs once its unit (the remote header, or one whole length-prefixed Noise
//! message) sits in the fixed input buffer; it advances [`Stage`] and queues what we
//! answer. Every remote X25519 key is checked for small order: ephemerals before any
//! Diffie-Hellman with them, statics as soon as Noise has decrypted them.

use super::{
    Handshake, HandshakeError, Header, HeaderRepr, Mode, Role, Stage, BUF_LEN, CONFIRM_LEN,
    HEADER_LEN, NOISE_NO_ENCRYPTION, NOISE_SECRET, PROLOGUE_LABEL,
};
use crate::identity::{is_low_order, KEY_LEN};
use crate::record_layer::RECORD_HEADER_LEN;
use snow::HandshakeState;
use std::ops::Range;

impl Handshake {
    pub(super) fn process_unit(&mut self) -> Result<(), HandshakeError> {
        let (_, body_len) = self.expected_frame();
        let body = RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len;
        match self.stage {
            Stage::Header => self.on_header(),
            Stage::Msg1 => self.on_msg1(body),
            Stage::Msg2 => self.on_msg2(body),
            Stage::Msg3 => self.on_msg3(body),
            Stage::Confirm => self.on_confirm(body),
            Stage::Finished | Stage::Failed => Ok(()),
        }
    }

    fn on_header(&mut self) -> Result<(), HandshakeError> {
        let mut remote_header = [0u8; HEADER_LEN];
        remote_header.copy_from_slice(&self.buf[..HEADER_LEN]);
        let theirs = HeaderRepr::parse(&Header::new_unchecked(&remote_header[..]))?;
        let ours = HeaderRepr::parse(&Header::new_unchecked(&self.local_header[..]))?;
        self.version = ours.negotiate(&theirs)?;
        let (first, second) = match self.role {
            Role::Initiator => (self.local_header, remote_header),
            Role::Responder => (remote_header, self.local_header),
        };
        let mut prologue = [0u8; PROLOGUE_LABEL.len() + 2 * HEADER_LEN];
        prologue[..PROLOGUE_LABEL.len()].copy_from_slice(PROLOGUE_LABEL);
        prologue[PROLOGUE_LABEL.len()..][..HEADER_LEN].copy_from_slice(&first);
        prologue[PROLOGUE_LABEL.len() + HEADER_LEN..].copy_from_slice(&second);
        self.noise = Some(Box::new(self.build_noise(&prologue)?));
        match self.role {
            Role::Initiator => {
                self.write_frame()?;
                self.stage = Stage::Msg2;
            }
            Role::Responder => self.stage = Stage::Msg1,
        }
        Ok(())
    }

    fn build_noise(&self, prologue: &[u8]) -> Result<HandshakeState, HandshakeError> {
        let name = match self.mode {
            Mode::Secret => NOISE_SECRET,
            Mode::NoEncryption => NOISE_NO_ENCRYPTION,
        };
        let mut builder = snow::Builder::new(name.parse()?)
            .local_private_key(&self.secret[..])?
            .prologue(prologue)?;
        if let Some(psk) = &self.psk {
            builder = builder.psk(3, psk.expose())?;
        }
        if let Some(e) = &self.fixed_ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(&e[..]);
        }
        Ok(match self.role {
            Role::Initiator => builder.build_initiator()?,
            Role::Responder => builder.build_responder()?,
        })
    }

    fn on_msg1(&mut self, body: Range<usize>) -> Result<(), HandshakeError> {
        check_key(&self.buf[body.clone()], "ephemeral")?;
        self.read_noise(body, HandshakeError::Corrupt { what: "msg1" })?;
        self.write_frame()?;
        self.stage = Stage::Msg3;
        Ok(())
    }

    fn on_msg2(&mut self, body: Range<usize>) -> Result<(), HandshakeError> {
        check_key(&self.buf[body.clone()], "ephemeral")?;
        self.read_noise(body, HandshakeError::Corrupt { what: "msg2" })?;
        self.take_remote_static()?;
        self.write_frame()?;
        self.enter_transport()?;
        self.stage = Stage::Confirm;
        Ok(())
    }

    fn on_msg3(&mut self, body: Range<usize>) -> Result<(), HandshakeError> {
        self.read_noise(body, HandshakeError::AuthFailed)?;
        self.take_remote_static()?;
        self.enter_transport()?;
        let transport = self.transport.as_ref().ok_or(HandshakeError::Aborted)?;
        let mut confirm = [0u8; CONFIRM_LEN];
        transport.write_message(0, &[], &mut confirm)?;
        self.push_frame(&confirm);
        self.stage = Stage::Finished;
        Ok(())
    }

    fn on_confirm(&mut self, body: Range<usize>) -> Result<(), HandshakeError> {
        let transport = self.transport.as_ref().ok_or(HandshakeError::Aborted)?;
        transport
            .read_message(0, &self.buf[body], &mut [])
            .map_err(|_| HandshakeError::ConfirmFailed)?;
        self.stage = Stage::Finished;
        Ok(())
    }

    /// Reads one Noise message from the buffer; its payload must be empty.
    fn read_noise(
        &mut self,
        body: Range<usize>,
        on_error: HandshakeError,
    ) -> Result<(), HandshakeError> {
        let noise = self.noise.as_mut().ok_or(HandshakeError::Aborted)?;
        let mut payload = [0u8; BUF_LEN];
        match noise.read_message(&self.buf[body], &mut payload) {
            Ok(0) => Ok(()),
            // The exact body lengths leave no room for a payload; be strict anyway.
            Ok(_) | Err(_) => Err(on_error),
        }
    }

    /// Writes our next Noise message (empty payload) as a frame.
    fn write_frame(&mut self) -> Result<(), HandshakeError> {
        let noise = self.noise.as_mut().ok_or(HandshakeError::Aborted)?;
        let mut message = [0u8; BUF_LEN];
        let len = noise.write_message(&[], &mut message)?;
        self.push_frame(&message[..len]);
        Ok(())
    }

    fn push_frame(&mut self, body: &[u8]) {
        // Bodies are at most BUF_LEN bytes, so the length always fits.
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(body);
    }

    fn take_remote_static(&mut self) -> Result<(), HandshakeError> {
        let noise = self.noise.as_ref().ok_or(HandshakeError::Aborted)?;
        let remote = noise
            .get_remote_static()
            .ok_or(HandshakeError::Corrupt { what: "static key" })?;
        check_key(remote, "static")?;
        self.remote_static.copy_from_slice(&remote[..KEY_LEN]);
        if let Some(list) = &self.admitted {
            if !list.admits_key(&self.remote_static) {
                return Err(HandshakeError::NotListed {
                    peer: crate::peer::PeerId::from_public_key(&self.remote_static),
                    key: crate::peer_keys::to_hex(&self.remote_static),
                });
            }
        }
        Ok(())
    }

    /// Captures the handshake hash, then switches to transport mode.
    fn enter_transport(&mut self) -> Result<(), HandshakeError> {
        let noise = self.noise.take().ok_or(HandshakeError::Aborted)?;
        let hash = noise.get_handshake_hash();
        if hash.len() != self.handshake_hash.len() {
            return Err(HandshakeError::Noise(snow::Error::Input));
        }
        self.handshake_hash.copy_from_slice(hash);
        self.transport = Some(noise.into_stateless_transport_mode()?);
        Ok(())
    }
}

/// Refuses a key whose first 32 bytes are a low-order point (or that is too short).
fn check_key(bytes: &[u8], which: &'static str) -> Result<(), HandshakeError> {
    let key: &[u8; KEY_LEN] = bytes
        .get(..KEY_LEN)
        .and_then(|k| k.try_into().ok())
        .ok_or(HandshakeError::LowOrderKey { which })?;
    if is_low_order(key) {
        return Err(HandshakeError::LowOrderKey { which });
    }
    Ok(())
}
