//! Fuzz target: `gossip::topology::fuzz_decode_topology` (summaries, update requests and
//! deltas of the topology channel) must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gossip::topology::fuzz_decode_topology(data));
