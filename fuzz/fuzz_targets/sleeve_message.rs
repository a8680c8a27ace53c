//! Fuzz target: `datapath::sleeve_message::fuzz_decode_sleeve_message` (rekey offers,
//! "heard" notices, path MTU probe acknowledgements) must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| datapath::sleeve_message::fuzz_decode_sleeve_message(data));
