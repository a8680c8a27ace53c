//! Fuzz target: `router::http::fuzz_parse_request` must never panic or allocate without bound.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| router::http::fuzz_parse_request(data));
