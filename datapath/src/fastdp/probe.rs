//! Fast-path probes: Ethernet frames that the router writes into its probe TAP device,
//! which the bridge hands to the VXLAN device, which carries them to the peer.
//!
//! Layout: destination MAC = the receiver's probe MAC, source MAC = the sender's probe
//! MAC (both derived from the peer ids by [`probe_mac`]), EtherType 0x88b5 (IEEE
//! "local experimental"), then the magic `WFP1`, the sender's PeerId (16 bytes), a
//! 64-bit nonce, and zero padding up to the size being probed (the overlay MTU plus the
//! Ethernet header). The nonce comes back in the acknowledgement over the control link,
//! so a forged probe cannot confirm anything by itself.

use gossip::peer::PeerId;

/// EtherType of probe frames.
pub const ETHERTYPE: u16 = 0x88b5;
/// Magic after the Ethernet header.
pub const MAGIC: [u8; 4] = *b"WFP1";
/// Ethernet header, magic, PeerId, nonce.
pub const MIN_LEN: usize = 14 + 4 + 16 + 8;

/// A decoded probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Where it was sent.
    pub dst_mac: [u8; 6],
    /// Who sent it.
    pub src: PeerId,
    /// The nonce to acknowledge.
    pub nonce: u64,
}

/// Why a frame is not a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAProbe {
    /// Another kind of frame (floods also reach the probe port): ignored.
    Other,
    /// It has the probe EtherType but is not a well-formed probe: counted.
    Malformed,
}

/// The probe MAC of `peer`: locally administered, unicast, `fe:77` then the first four
/// bytes of its id.
pub fn probe_mac(peer: &PeerId) -> [u8; 6] {
    let id = peer.0;
    [0xfe, 0x77, id[0], id[1], id[2], id[3]]
}

/// Whether `mac` is some peer's probe MAC.
pub fn is_probe_mac(mac: &[u8; 6]) -> bool {
    mac[0] == 0xfe && mac[1] == 0x77
}

/// Writes a probe from `src` to `dst` with `nonce`, `len` bytes long (at least
/// [`MIN_LEN`]), into `buf`; returns the frame.
pub fn encode<'b>(
    buf: &'b mut Vec<u8>,
    src: &PeerId,
    dst: &PeerId,
    nonce: u64,
    len: usize,
) -> &'b [u8] {
    buf.clear();
    buf.extend_from_slice(&probe_mac(dst));
    buf.extend_from_slice(&probe_mac(src));
    buf.extend_from_slice(&ETHERTYPE.to_be_bytes());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&src.0);
    buf.extend_from_slice(&nonce.to_be_bytes());
    buf.resize(len.max(MIN_LEN), 0);
    buf
}

/// Decodes a frame read from the probe port.
pub fn decode(frame: &[u8]) -> Result<Probe, NotAProbe> {
    if frame.len() < 14 || frame[12..14] != ETHERTYPE.to_be_bytes() {
        return Err(NotAProbe::Other);
    }
    if frame.len() < MIN_LEN || frame[14..18] != MAGIC {
        return Err(NotAProbe::Malformed);
    }
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[..6]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&frame[18..34]);
    let src = PeerId(id);
    if frame[6..12] != probe_mac(&src) || !is_probe_mac(&dst_mac) {
        return Err(NotAProbe::Malformed);
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&frame[34..42]);
    Ok(Probe {
        dst_mac,
        src,
        nonce: u64::from_be_bytes(nonce),
    })
}

/// Fuzz entry point: decoding never panics.
#[doc(hidden)]
pub fn fuzz_decode_probe(data: &[u8]) {
    let _ = decode(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_at_any_size() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let mut buf = Vec::new();
        for len in [0, MIN_LEN, 1422, 9014] {
            let f = encode(&mut buf, &a, &b, 77, len).to_vec();
            assert_eq!(f.len(), len.max(MIN_LEN));
            let p = decode(&f).unwrap();
            assert_eq!(
                p,
                Probe {
                    dst_mac: probe_mac(&b),
                    src: a,
                    nonce: 77
                }
            );
        }
        let mut f = encode(&mut buf, &a, &b, 1, 100).to_vec();
        f[7] ^= 1;
        assert_eq!(
            decode(&f),
            Err(NotAProbe::Malformed),
            "source MAC must match"
        );
        assert_eq!(decode(&f[..30]), Err(NotAProbe::Malformed));
        f[12] = 0x08;
        assert_eq!(decode(&f), Err(NotAProbe::Other));
        assert_eq!(decode(&[]), Err(NotAProbe::Other));
    }

    #[test]
    fn fuzz_replay_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut buf = Vec::new();
        let seed = encode(&mut buf, &PeerId([3; 16]), &PeerId([4; 16]), 9, 64).to_vec();
        for _ in 0..5000 {
            let mut d = seed.clone();
            for _ in 0..rng.gen_range(0..4) {
                let j = rng.gen_range(0..d.len());
                d[j] = rng.gen();
            }
            d.truncate(rng.gen_range(0..=d.len()));
            fuzz_decode_probe(&d);
            let random: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
            fuzz_decode_probe(&random);
        }
    }
}
