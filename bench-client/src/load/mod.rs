//! The message-load engine behind `chat`, `saturate` and `ping`: `--threads` hand-rolled
//! mio loops, each owning a share of the connections, plus a coordinating main thread.
//!
//! ```text
//!  main thread (phases.rs)              loader thread t (loader.rs, traffic.rs; owns conns i
//!  ───────────────────────              with i % threads == t) ─────────────────────────────
//!  CONNECT  wait: opened+failed == C    connect, upgrade (bounded in flight), join room
//!  SETTLE   wait: join notices settled  count "<name> just connected" notices
//!  RUN      progress line each second   send on timetable (open loop) or window (closed),
//!           CPU snapshots at measure      receive, track (sender, seq), record latency
//!           start and end
//!  DRAIN    wait: delivered == expected receive only
//!           or --drain elapsed;
//!           server CPU again after each
//!           new measured arrival
//!  STOP     join threads, judge the run  list what never arrived (lost, by due time),
//!           (outcome.rs)                 close, hand back counters and histograms
//! ```
//! This file owns what the main thread and the loaders share: the run's configuration, the
//! phase, and the per-thread progress the main thread reads. Must never (the whole engine):
//! stamp a message with anything but its due time (open loop), count a duplicate as a
//! delivery, run unbounded (every phase has a deadline), or panic on what the server sends.

mod loader;
mod outcome;
mod phases;
mod traffic;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::net::WsUrl;
use crate::payload::{Fill, Messages};
use crate::transport::TlsClient;

pub use outcome::{INTERVAL_NAME, LoadCounters, LoadOutcome};
pub use phases::run;

/// Where the connections go and who receives what.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/chat/<prefix><i % rooms>`: every message reaches the room's other members.
    Chat { rooms: usize, room_prefix: String },
    /// An echo endpoint: every message comes back to its sender only.
    Echo,
}

/// How sending is paced.
#[derive(Debug, Clone, Copy)]
pub enum Drive {
    /// `rate` messages per second in total, each connection on its own fixed timetable.
    OpenLoop { rate: f64 },
    /// Each connection keeps at most `window` messages undelivered.
    ClosedLoop { window: u64 },
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: WsUrl,
    /// `wss://`: every connection gets a TLS session from this.
    pub tls: Option<TlsClient>,
    pub target: Target,
    pub drive: Drive,
    pub conns: usize,
    pub threads: usize,
    pub payload: usize,
    /// Text (the default) or binary messages: what is sent, and the type every delivery
    /// must arrive as.
    pub messages: Messages,
    /// What pads each message after its header (always `Text` for text messages).
    pub fill: Fill,
    /// Offer permessage-deflate; where agreed, compress what we send and inflate what
    /// arrives compressed.
    pub deflate: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub connect_timeout: Duration,
    pub connect_concurrency: usize,
    pub settle_timeout: Duration,
    pub source_ips: u8,
    pub seed: u64,
    pub progress: bool,
    pub server_pid: Option<u32>,
    /// Skewed sender mix (open loop): every `hot_every`-th connection (0 = none) sends
    /// `hot_weight` times the rate of the others.
    pub hot_every: usize,
    pub hot_weight: f64,
}

/// The phases of a run, in order: loaders compare with `>=` ("from DRAIN on").
const PHASE_CONNECT: u8 = 0;
const PHASE_SETTLE: u8 = 1;
const PHASE_RUN: u8 = 2;
const PHASE_DRAIN: u8 = 3;
const PHASE_STOP: u8 = 4;

/// Per-thread counters the main thread reads for progress lines and phase decisions. Each
/// is written by one thread only (plain stores of the thread's running totals).
#[derive(Default)]
struct Progress {
    opened: AtomicU64,
    failed: AtomicU64,
    notices: AtomicU64,
    sent: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    /// CLOCK_MONOTONIC ns of the thread's latest arrival of a measured delivery (0: none).
    last_arrival_ns: AtomicU64,
    done_sending: AtomicBool,
}

/// The main thread's decisions (phase, the run's clock) and what every loader reads or adds
/// to across threads.
struct Shared {
    /// One of the `PHASE_*` values; only the main thread stores it.
    phase: AtomicU8,
    /// The run's timetable (CLOCK_MONOTONIC ns): first message due, measured interval.
    start_ns: AtomicU64,
    measure_ns: AtomicU64,
    end_ns: AtomicU64,
    /// Open members per room (one room for Echo): who a message is expected to reach.
    room_members: Vec<AtomicU64>,
    /// Closed loop: deliveries of each sender's messages seen by any receiver.
    acked: Vec<AtomicU64>,
    /// Open loop, per sender (global connection index): its timetable's first due time
    /// and period (0: no timetable) and how many messages it has sent, so that a receiver
    /// can tell when each message it never got was due.
    senders: Vec<SenderTimes>,
    /// CLOCK_MONOTONIC ns when the drain ended, stored before the phase becomes STOP.
    stop_ns: AtomicU64,
    progress: Vec<Progress>,
}

/// One sender's timetable as the other threads see it (written by its own thread only).
#[derive(Default)]
struct SenderTimes {
    first_ns: AtomicU64,
    period_ns: AtomicU64,
    sent: AtomicU64,
}

impl Shared {
    fn sum(&self, field: impl Fn(&Progress) -> &AtomicU64) -> u64 {
        self.progress.iter().map(|p| field(p).load(Relaxed)).sum()
    }

    fn max(&self, field: impl Fn(&Progress) -> &AtomicU64) -> u64 {
        self.progress
            .iter()
            .map(|p| field(p).load(Relaxed))
            .max()
            .unwrap_or(0)
    }
}
