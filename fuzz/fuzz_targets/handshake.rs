//! Request heads, whole and split: see `wschat::ws::fuzzing::check_handshake`.
#![no_main]

use std::time::Instant;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wschat::ws::fuzzing::check_handshake(data, Instant::now());
});
