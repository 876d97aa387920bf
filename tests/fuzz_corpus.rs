//! Replays the committed fuzz corpus and every fuzzing regression through the same checks the
//! cargo-fuzz targets run (`wschat::ws::fuzzing`), on stable Rust, in the normal suite: where
//! no nightly toolchain exists, this is what keeps the targets' findings from coming back.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wschat::ws::fuzzing;

/// Every file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (dotfiles and
/// READMEs are not inputs).
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("readable fuzz folder").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_file() && !name.starts_with('.') && !name.ends_with(".md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`, naming the file that fails.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no corpus for fuzz target {target}: fuzz/corpus/{target}/ must not be empty"
    );
    for path in files {
        let data = fs::read(&path).expect("readable corpus file");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(
            result.is_ok(),
            "fuzz check {target} failed on {}",
            path.display()
        );
    }
}

#[test]
fn handshake_corpus() {
    let now = Instant::now();
    replay("handshake", |data| fuzzing::check_handshake(data, now));
}

#[test]
fn frames_corpus() {
    let now = Instant::now();
    replay("frames", |data| fuzzing::check_frames(data, now));
}

#[test]
fn close_corpus() {
    let now = Instant::now();
    replay("close", |data| fuzzing::check_close_payload(data, now));
}

#[test]
fn utf8_corpus() {
    replay("utf8", fuzzing::check_utf8);
}
