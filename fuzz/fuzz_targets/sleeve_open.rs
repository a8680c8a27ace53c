//! Fuzz target: `datapath::sleeve::fuzz_open` (header checks, replay window, AEAD, strict
//! inner parser) must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| datapath::sleeve::fuzz_open(data));
