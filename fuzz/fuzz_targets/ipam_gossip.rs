//! Fuzz target: `router::ipam::fuzz_ipam_gossip` must never panic, and refused input must
//! leave IPAM's state unchanged.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| router::ipam::fuzz_ipam_gossip(data));
