//! Fuzz target: `gossip::message::fuzz_decode_message` must never panic or allocate without bound.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gossip::message::fuzz_decode_message(data));
