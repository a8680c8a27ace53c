//! Stateful fuzz target: `gossip::mesh::fuzz_mesh_session` feeds a sequence of messages,
//! clock steps and relinks from three neighbours into one mesh; never panics, and every
//! message the mesh sends decodes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gossip::mesh::fuzz_mesh_session(data));
