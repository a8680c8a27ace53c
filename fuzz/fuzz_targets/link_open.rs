//! Fuzz target: `gossip::link::fuzz_link_open` must never panic or allocate without bound.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gossip::link::fuzz_link_open(data));
