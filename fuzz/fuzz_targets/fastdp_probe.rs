//! Fuzz target: `datapath::fastdp::probe::fuzz_decode_probe` must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| datapath::fastdp::probe::fuzz_decode_probe(data));
