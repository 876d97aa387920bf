//! Close frame payloads: see `wschat::ws::fuzzing::check_close_payload`.
#![no_main]

use std::time::Instant;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wschat::ws::fuzzing::check_close_payload(data, Instant::now());
});
