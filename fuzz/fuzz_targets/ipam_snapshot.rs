//! Fuzz target: `router::ipam::fuzz_restore` (the stored IPAM snapshot through
//! `Snapshot::decode` and `Ipam::restore`, then requests on what was restored) must never
//! panic, and every snapshot the restored IPAM writes must decode.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| router::ipam::fuzz_restore(data));
