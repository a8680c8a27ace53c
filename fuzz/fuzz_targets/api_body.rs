//! Fuzz target: `router::api::fuzz_request_body` (the first byte picks the endpoint: the
//! IPAM, attach/detach, expose/hide and connect/forget bodies) must never panic, and a
//! refused body is a 400.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| router::api::fuzz_request_body(data));
