//! Fuzz target: `datapath::offload::fuzz_offload` (virtio_net_hdr checks, TCP
//! segmentation and coalescing) must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| datapath::offload::fuzz_offload(data));
