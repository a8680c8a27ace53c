//! Sleeve codec throughput: seal then open one datagram, in place, per iteration; and
//! the TAP offloads' segmentation and coalescing of one 64 KiB superframe.
//!
//! `cargo bench -p datapath --bench sleeve` (add `-- --quick` for a short run). These
//! measure the crypto and framing only: no syscalls, no routing.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use datapath::sleeve::{InnerFrame, Session, SessionConfig, BROADCAST};
use gossip::peer::PeerId;
use std::time::Instant;

fn seal_open(c: &mut Criterion) {
    let now = Instant::now();
    let (mut tx, mut rx) = Session::pair_for_testing(now, SessionConfig::default(), 1);
    let src = PeerId([1; 16]);
    let mut buf = vec![0u8; 65_536];
    let mut group = c.benchmark_group("sleeve_seal_open");
    for (name, frame_len, frames_per_datagram) in [
        ("1400B", 1400usize, 1usize),
        ("64B", 64, 1),
        ("64Bx16_batched", 64, 16),
    ] {
        let frame = vec![0xa5u8; frame_len];
        let frames = vec![
            InnerFrame {
                dst: BROADCAST,
                src,
                frame: &frame,
            };
            frames_per_datagram
        ];
        group.throughput(Throughput::Bytes((frame_len * frames_per_datagram) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let len = tx.seal(black_box(&frames), &mut buf).expect("sealed");
                let opened = rx.open(now, &mut buf[..len]).expect("opened");
                black_box(opened.frames().count())
            })
        });
    }
    group.finish();
}

/// The sleeve's AEAD (AWS-LC) on the same sizes, beside the `chacha20poly1305` crate.
fn sleeve_aead(c: &mut Criterion) {
    use datapath::sleeve::aead::{Cipher, TAG_LEN};
    let cipher = Cipher::new(&[7u8; 32]);
    let mut group = c.benchmark_group("sleeve_aead_in_place");
    for len in [1400usize, 64] {
        let mut buf = vec![0u8; len + TAG_LEN];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len}B"), |b| {
            b.iter(|| {
                let tag = cipher.seal(0, b"header", &mut buf[..len]);
                buf[len..].copy_from_slice(&tag);
                cipher.open(0, b"header", &mut buf).expect("opened");
                black_box(buf[0])
            })
        });
    }
    group.finish();
}

/// The bare AEAD on the same sizes, as a baseline for the codec's own cost.
fn raw_aead(c: &mut Criterion) {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Nonce};
    let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
    let mut group = c.benchmark_group("chacha20poly1305_in_place");
    for len in [1400usize, 64] {
        let mut buf = vec![0u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len}B"), |b| {
            let nonce = Nonce::default();
            b.iter(|| {
                let tag = cipher
                    .encrypt_in_place_detached(&nonce, b"header", &mut buf)
                    .expect("sealed");
                cipher
                    .decrypt_in_place_detached(&nonce, b"header", &mut buf, &tag)
                    .expect("opened");
            })
        });
    }
    group.finish();
}

/// Cutting a 64 KiB IPv4 TCP superframe into 1368-byte segments (written into one
/// buffer, as into transmit slots) and coalescing them back: the userspace price of
/// TAP offloads, per superframe.
fn offload(c: &mut Criterion) {
    use datapath::offload::coalesce::Coalescer;
    use datapath::offload::segment::{prepare, Prepared, Superframe};
    use datapath::offload::vnet::{Repr, F_NEEDS_CSUM, GSO_TCPV4};
    let payload = 47 * 1368;
    let mut frame = vec![0u8; 14 + 20 + 20 + payload];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    frame[14 + 9] = 6;
    frame[14 + 20 + 12] = 5 << 4;
    frame[14 + 20 + 13] = 0x10;
    let vnet = Repr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1368,
        csum_start: 34,
        csum_offset: 16,
    };
    let Ok(Prepared::Superframe { layout, gso_size }) = prepare(&vnet, &mut frame) else {
        panic!("the bench superframe does not parse");
    };
    let sf = Superframe::new(&frame, layout, gso_size);
    let count = sf.count(1368);
    let mut segs = vec![0u8; count * 1500];
    let mut coalescer = Coalescer::new();
    let mut group = c.benchmark_group("offload_64KiB");
    group.throughput(Throughput::Bytes(payload as u64));
    group.bench_function("split", |b| {
        b.iter(|| {
            for i in 0..count {
                sf.write_segment(i, 1368, &mut segs[i * 1500..]);
            }
            black_box(&segs);
        })
    });
    group.bench_function("split_then_coalesce", |b| {
        b.iter(|| {
            let mut out = 0;
            for i in 0..count {
                let n = sf.write_segment(i, 1368, &mut segs[i * 1500..]);
                coalescer.push(&segs[i * 1500..i * 1500 + n], &mut |_, f| out += f.len());
            }
            coalescer.flush(&mut |_, f| out += f.len());
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, seal_open, sleeve_aead, raw_aead, offload);
criterion_main!(benches);
