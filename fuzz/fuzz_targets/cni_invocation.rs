//! Fuzz target: `cni::fuzz_invocation` (CNI_* environment, stdin network configuration,
//! CNI_ARGS, version checks, prevResult) must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cni::fuzz_invocation(data));
