//! Client frames after the upgrade, whole and split: see `wschat::ws::fuzzing::check_frames`.
#![no_main]

use std::time::Instant;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wschat::ws::fuzzing::check_frames(data, Instant::now());
});
