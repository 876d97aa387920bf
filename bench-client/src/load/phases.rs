//! The main thread of a load run: it starts the loader threads, moves the run through its
//! phases (CONNECT, SETTLE, RUN with its warm-up and measured interval, DRAIN, STOP), prints
//! the progress line, and gathers what the threads hand back for judging.
//!
//! Owns: the phase changes and their deadlines, the run's timetable (start, measure and end
//! times), the CPU snapshots (the loader's around the measured window; the server's around
//! the accounting interval, see `INTERVAL_NAME`), and the stderr progress.
//! Must never: wait without a deadline (connect, settle and drain are bounded), or touch a
//! connection (the loaders own them).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::loader::{Loader, LoaderReport};
use super::outcome::{LoadOutcome, RunRecord};
use super::{
    LoadConfig, PHASE_CONNECT, PHASE_DRAIN, PHASE_RUN, PHASE_SETTLE, PHASE_STOP, Progress,
    SenderTimes, Shared, Target,
};
use crate::clock::now_ns;
use crate::histo::{new_histogram, percentiles};

/// The first message is due this long after the main thread starts the run, so that every
/// loop has seen the phase change before anything is due.
const RUN_LEAD: Duration = Duration::from_millis(20);

/// Runs a whole load test and returns what it measured. Errors are run errors (exit 1).
pub fn run(cfg: LoadConfig) -> anyhow::Result<LoadOutcome> {
    let cfg = Arc::new(cfg);
    let rooms = match &cfg.target {
        Target::Chat { rooms, .. } => *rooms,
        Target::Echo => 1,
    };
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(PHASE_CONNECT),
        start_ns: AtomicU64::new(u64::MAX),
        measure_ns: AtomicU64::new(u64::MAX),
        end_ns: AtomicU64::new(u64::MAX),
        room_members: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..cfg.conns).map(|_| AtomicU64::new(0)).collect(),
        senders: (0..cfg.conns).map(|_| SenderTimes::default()).collect(),
        stop_ns: AtomicU64::new(u64::MAX),
        progress: (0..cfg.threads).map(|_| Progress::default()).collect(),
    });
    let (histogram_tx, histogram_rx) = mpsc::channel();
    let mut handles = Vec::new();
    let connect_started = Instant::now();
    for thread in 0..cfg.threads {
        let loader = Loader::new(
            Arc::clone(&cfg),
            Arc::clone(&shared),
            thread,
            histogram_tx.clone(),
        )?;
        handles.push(
            std::thread::Builder::new()
                .name(format!("loader-{thread}"))
                .spawn(move || loader.run())?,
        );
    }
    drop(histogram_tx);
    let conns = cfg.conns as u64;
    let stop_threads = |shared: &Shared| shared.phase.store(PHASE_STOP, Relaxed);

    // CONNECT: every connection opens or fails (each has its own timeout).
    let connect_limit =
        cfg.connect_timeout * ((cfg.conns / cfg.connect_concurrency.max(1)) as u32 + 2);
    while shared.sum(|p| &p.opened) + shared.sum(|p| &p.failed) < conns {
        if connect_started.elapsed() > connect_limit || handles.iter().any(|h| h.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let connect_time = connect_started.elapsed();
    let opened = shared.sum(|p| &p.opened);
    let failed = shared.sum(|p| &p.failed);
    if cfg.progress {
        eprintln!(
            "connected {opened}/{conns} in {:.3}s ({failed} failed)",
            connect_time.as_secs_f64()
        );
    }
    if opened == 0 {
        stop_threads(&shared);
        for h in handles {
            let _ = h.join();
        }
        anyhow::bail!("no connection could be opened ({failed} failed)");
    }

    // SETTLE: every member has been announced to every earlier member, so all are joined.
    shared.phase.store(PHASE_SETTLE, Relaxed);
    let settle_started = Instant::now();
    let notices_expected: u64 = match cfg.target {
        Target::Chat { .. } => shared
            .room_members
            .iter()
            .map(|m| {
                let n = m.load(Relaxed);
                n * n.saturating_sub(1) / 2
            })
            .sum(),
        Target::Echo => 0,
    };
    while shared.sum(|p| &p.notices) < notices_expected
        && settle_started.elapsed() < cfg.settle_timeout
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let settle_time = settle_started.elapsed();
    let notices_seen = shared.sum(|p| &p.notices);
    if cfg.progress {
        eprintln!(
            "join notices {notices_seen}/{notices_expected} settled in {:.3}s",
            settle_time.as_secs_f64()
        );
    }

    // RUN.
    let start_ns = now_ns() + RUN_LEAD.as_nanos() as u64;
    let measure_ns = start_ns + cfg.warmup.as_nanos() as u64;
    let end_ns = measure_ns + cfg.duration.as_nanos() as u64;
    shared.start_ns.store(start_ns, Relaxed);
    shared.measure_ns.store(measure_ns, Relaxed);
    shared.end_ns.store(end_ns, Relaxed);
    shared.phase.store(PHASE_RUN, Relaxed);

    let mut latency = new_histogram();
    let mut progress = ProgressLine::new(cfg.progress);
    let sleep_until = |deadline_ns: u64,
                       shared: &Shared,
                       latency: &mut Histogram<u64>,
                       progress: &mut ProgressLine| {
        loop {
            while let Ok(h) = histogram_rx.try_recv() {
                let _ = latency.add(&h);
            }
            progress.maybe_print(shared, latency);
            let now = now_ns();
            if now >= deadline_ns {
                break;
            }
            std::thread::sleep(Duration::from_nanos((deadline_ns - now).min(5_000_000)));
        }
    };
    // The accounting interval (INTERVAL_NAME) starts with the measured window and ends at
    // the last arrival of a measured delivery, or the window's end if that is later: the
    // server's CPU is sampled at both ends, so that its cost covers the same work as the
    // deliveries it is divided by, including those it was still catching up on after the
    // window. A server that falls behind would otherwise look cheaper than it is.
    let server_sample = || cfg.server_pid.and_then(crate::cpu::process_cpu);
    sleep_until(measure_ns, &shared, &mut latency, &mut progress);
    let cpu_before = crate::cpu::self_cpu();
    let server_before = server_sample();
    let interval_start_ns = now_ns();
    let measure_started = Instant::now();
    sleep_until(end_ns, &shared, &mut latency, &mut progress);
    let loader_cpu = crate::cpu::self_cpu().since(cpu_before);
    let measured = measure_started.elapsed();
    let mut server_after = server_sample();
    let mut interval_end_ns = now_ns();
    // Sampled again whenever a measured delivery arrived since the last sample: the end is
    // then the first check after the last arrival (the drain polls every millisecond).
    let mut extend_interval = |shared: &Shared| {
        if shared.max(|p| &p.last_arrival_ns) > interval_end_ns {
            server_after = server_sample();
            interval_end_ns = now_ns();
        }
    };

    // DRAIN: stop sending (an open-loop loader that was late first sends what was due before
    // the end: `done_sending` says it has), wait for the stragglers.
    shared.phase.store(PHASE_DRAIN, Relaxed);
    let drain_started = Instant::now();
    loop {
        let done = shared.progress.iter().all(|p| p.done_sending.load(Relaxed));
        extend_interval(&shared);
        if done && shared.sum(|p| &p.delivered) >= shared.sum(|p| &p.expected) {
            break;
        }
        if drain_started.elapsed() >= cfg.drain {
            break;
        }
        while let Ok(h) = histogram_rx.try_recv() {
            let _ = latency.add(&h);
        }
        progress.maybe_print(&shared, &latency);
        std::thread::sleep(Duration::from_millis(1));
    }
    extend_interval(&shared);
    let server_cpu = match (server_before, server_after) {
        (Some(before), Some(after)) => Some(crate::cpu::process_cpu_delta(&before, &after)),
        _ => None,
    };
    let interval = Duration::from_nanos(interval_end_ns.saturating_sub(interval_start_ns));
    let drain_time = drain_started.elapsed();
    let drain_end_ns = now_ns();
    shared.stop_ns.store(drain_end_ns, Relaxed);
    stop_threads(&shared);

    let mut threads = LoaderReport::new();
    for h in handles {
        match h.join() {
            Ok(Ok(report)) => threads.add(report),
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context("loader thread failed")),
            Err(_) => anyhow::bail!("loader thread panicked"),
        }
    }
    while let Ok(h) = histogram_rx.try_recv() {
        let _ = latency.add(&h);
    }

    Ok(LoadOutcome::judge(RunRecord {
        threads,
        latency,
        conns,
        notices_expected,
        duration: cfg.duration,
        waited_ns: drain_end_ns.saturating_sub(end_ns),
        connect_time,
        settle_time,
        drain_time,
        measured,
        loader_cpu,
        server_cpu,
        interval,
        end_ns,
    }))
}

/// The once-a-second progress line on stderr.
struct ProgressLine {
    enabled: bool,
    started: Instant,
    next: Instant,
    last_sent: u64,
    last_delivered: u64,
}

impl ProgressLine {
    fn new(enabled: bool) -> ProgressLine {
        let now = Instant::now();
        ProgressLine {
            enabled,
            started: now,
            next: now + Duration::from_secs(1),
            last_sent: 0,
            last_delivered: 0,
        }
    }

    fn maybe_print(&mut self, shared: &Shared, latency: &Histogram<u64>) {
        let now = Instant::now();
        if !self.enabled || now < self.next {
            return;
        }
        self.next += Duration::from_secs(1);
        let sent = shared.sum(|p| &p.sent);
        let delivered = shared.sum(|p| &p.delivered);
        let errors = shared.sum(|p| &p.errors);
        let p = percentiles(latency);
        let pct = if p.count == 0 {
            "p50 -      p99 -     ".to_string()
        } else {
            format!("p50 {:>6}us p99 {:>6}us", p.p50, p.p99)
        };
        eprintln!(
            "[{:>4}s] sent {:>8}/s delivered {:>9}/s {pct} errors {errors}",
            self.started.elapsed().as_secs(),
            sent - self.last_sent,
            delivered - self.last_delivered,
        );
        self.last_sent = sent;
        self.last_delivered = delivered;
    }
}
