//! Incremental UTF-8 validation against std: see `wschat::ws::fuzzing::check_utf8`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wschat::ws::fuzzing::check_utf8(data);
});
