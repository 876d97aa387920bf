//! What permessage-deflate costs wschat per message, measured on the server's own code
//! (`ws::deflate`): the compressed size of sample chat lines, the time of one compression
//! (a fresh context per message, as the server compresses), and the heap that the
//! compressor and an inflater hold. Prints one JSON object; the README's Compression section
//! quotes it (results/deflate/).
//!
//!     cargo run --release --example deflate-cost > results/deflate/<date>.json
//!     taskset -c 0 target/release/examples/deflate-cost      # pinned, on a quiet machine
//!
//! Heap bytes come from dhat's counting allocator (live bytes before and after), so they are
//! what was requested from the allocator, without malloc's per-chunk overhead. Timings are
//! taken after the profiler has stopped.

use std::hint::black_box;
use std::time::Instant;

use serde_json::json;

use wschat::ws::deflate::{Compressor, Inflater};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Sample messages: chat lines of a few lengths and a log excerpt (long and repetitive: where
/// deflate pays).
const SAMPLES: [(&str, &str); 4] = [
    ("short line", "see you at 6"),
    (
        "chat line",
        "did anyone try the new build? it crashed on startup",
    ),
    (
        "long chat line",
        "ok so the plan is: we meet at the station at nine, take the first train north, \
         and walk the last bit if the weather holds up",
    ),
    ("log excerpt", LOG),
];

const LOG: &str = "\
2026-12-06T09:14:02Z INFO  shard[0] accepted 127.0.0.1:51234 (conns=118)
2026-12-06T09:14:02Z INFO  shard[0] upgrade /chat/lobby name=ann (members=41)
2026-12-06T09:14:02Z INFO  shard[0] accepted 127.0.0.1:51236 (conns=119)
2026-12-06T09:14:02Z INFO  shard[0] upgrade /chat/lobby name=bob (members=42)
2026-12-06T09:14:03Z WARN  shard[0] slow consumer 127.0.0.1:50990 kicked (queued=4194412)
2026-12-06T09:14:03Z INFO  shard[0] closed 127.0.0.1:50990 code=1008 (members=41)
2026-12-06T09:14:03Z INFO  shard[0] accepted 127.0.0.1:51240 (conns=119)
2026-12-06T09:14:03Z INFO  shard[0] upgrade /chat/lobby name=cid (members=42)
2026-12-06T09:14:04Z INFO  shard[0] accepted 127.0.0.1:51242 (conns=120)
2026-12-06T09:14:04Z INFO  shard[0] upgrade /chat/dev name=dee (members=7)
2026-12-06T09:14:04Z INFO  shard[0] closed 127.0.0.1:51236 code=1000 (members=41)
2026-12-06T09:14:05Z INFO  shard[0] accepted 127.0.0.1:51244 (conns=120)
2026-12-06T09:14:05Z INFO  shard[0] upgrade /chat/lobby name=eve (members=42)
";

/// Compressions timed per sample, after as many untimed ones.
const ROUNDS: usize = 20_000;

fn live_bytes() -> u64 {
    dhat::HeapStats::get().curr_bytes as u64
}

fn main() {
    // Heap first, with dhat's profiler running; the timings after it, without (dhat then
    // passes allocations straight to the system allocator, and records no backtraces).
    let profiler = dhat::Profiler::builder().testing().build();
    let mut compressor = Compressor::default();

    // The compressor's state per window size, allocated on first use and kept.
    let before = live_bytes();
    drop(compressor.compress(b"x", 15));
    let compressor_15 = live_bytes() - before;
    let before = live_bytes();
    drop(compressor.compress(b"x", 9));
    let compressor_9 = live_bytes() - before;

    // An inflater, as a connection holds one while a compressed message is coming in.
    let compressed = compressor.compress(LOG.as_bytes(), 15);
    let before = live_bytes();
    let mut inflater = Inflater::new(15);
    let mut out = Vec::new();
    inflater
        .inflate(&compressed, &mut out, 1 << 20)
        .and_then(|()| inflater.finish(&mut out, 1 << 20))
        .expect("our own compressed data inflates");
    assert_eq!(out, LOG.as_bytes());
    // Measured with the message inflated (zlib may allocate its window on first use), less
    // the message itself.
    let inflater_bytes = live_bytes() - before - out.capacity() as u64;
    drop(inflater);
    drop(profiler);

    let samples: Vec<serde_json::Value> = SAMPLES
        .iter()
        .map(|(name, text)| {
            let bytes = text.as_bytes();
            let size = compressor.compress(bytes, 15).len();
            for _ in 0..ROUNDS {
                black_box(compressor.compress(black_box(bytes), 15));
            }
            let mut times: Vec<f64> = (0..ROUNDS)
                .map(|_| {
                    let start = Instant::now();
                    black_box(compressor.compress(black_box(bytes), 15));
                    start.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let at = |q: f64| round(times[((times.len() - 1) as f64 * q) as usize], 2);
            json!({
                "sample": name,
                "bytes": bytes.len(),
                "compressed_bytes": size,
                "compressed_pct": round(100.0 * size as f64 / bytes.len() as f64, 1),
                "compress_us_p50": at(0.5),
                "compress_us_p99": at(0.99),
            })
        })
        .collect();

    let report = json!({
        "what": "examples/deflate-cost.rs: ws::deflate, level 6, 15-bit window, a fresh context per message",
        "rounds_per_sample": ROUNDS,
        "compressor_heap_bytes_15bit": compressor_15,
        "compressor_heap_bytes_9bit": compressor_9,
        "inflater_heap_bytes": inflater_bytes,
        "samples": samples,
    });
    println!("{report:#}");
}

/// `x` to `digits` decimals, as the report prints it.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
