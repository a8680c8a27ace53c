//! Fuzz target: `gossip::record_layer::fuzz_record_open` must never panic or allocate without bound.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gossip::record_layer::fuzz_record_open(data));
