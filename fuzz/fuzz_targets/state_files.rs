//! Fuzz target: the files the router reads back at start. The first byte's low bit picks
//! `router::attachments::fuzz_attachments_file` (the attachments registry) or
//! `router::store::fuzz_stored_values` (the stored connection targets and the sealed
//! snapshot value); neither may panic, and what is read must write back the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&which, rest)) = data.split_first() {
        if which & 1 == 0 {
            router::attachments::fuzz_attachments_file(rest);
        } else {
            router::store::fuzz_stored_values(rest);
        }
    }
});
