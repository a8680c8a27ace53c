//! Fuzz target: `gossip::handshake::fuzz_handshake_responder` must never panic or allocate without bound.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gossip::handshake::fuzz_handshake_responder(data));
