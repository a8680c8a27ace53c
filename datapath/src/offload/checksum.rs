//! The Internet checksum (RFC 1071): ones' complement sums, folded to 16 bits.
//!
//! [`sum`] adds bytes as big-endian 16-bit words into a wide accumulator (eight bytes
//! at a time), so that a 64 KiB superframe costs about one pass of a memory copy.
//! Partial sums add with [`add`]; [`fold`] turns one into the 16-bit value, and the
//! checksum field holds its complement.

/// Adds `data` (as big-endian 16-bit words, odd tail padded with zero) to `acc`.
pub fn sum(data: &[u8], acc: u64) -> u64 {
    let mut acc = acc;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Ones' complement addition: the carry out of bit 63 wraps around.
        let (s, carry) = acc.overflowing_add(w);
        acc = s.wrapping_add(u64::from(carry));
    }
    let mut tail = chunks.remainder().chunks_exact(2);
    for c in &mut tail {
        acc = add(acc, u64::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = tail.remainder() {
        acc = add(acc, u64::from(*last) << 8);
    }
    acc
}

/// Adds two partial sums.
pub fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(u64::from(carry))
}

/// Folds a partial sum to 16 bits (not complemented).
pub fn fold(acc: u64) -> u16 {
    let mut acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The pseudo-header sum of TCP over IPv4 or IPv6: the two addresses (4 or 16 bytes
/// each), the protocol and the transport length.
pub fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: u32) -> u64 {
    let acc = sum(src, 0);
    let acc = sum(dst, acc);
    add(acc, u64::from(protocol) + u64::from(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's example words, plus the naive 16-bit definition on random data.
    #[test]
    fn matches_the_definition() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        let mut x = 0x1234_5678_u32;
        let bytes: Vec<u8> = (0..1001)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for len in [0, 1, 2, 7, 8, 9, 63, 1000, 1001] {
            let d = &bytes[..len];
            let mut naive: u32 = 0;
            for c in d.chunks(2) {
                let w = u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
                naive += w;
                naive = (naive & 0xffff) + (naive >> 16);
            }
            assert_eq!(u32::from(fold(sum(d, 0))), naive, "len {len}");
        }
    }
}
