//! Sleeve codec throughput: seal then open one datagram, in place, per iteration.
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

criterion_group!(benches, seal_open, raw_aead);
criterion_main!(benches);
