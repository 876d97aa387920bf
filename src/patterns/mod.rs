//! Execution patterns: how threads listen, accept, read and process. One short file per
//! pattern, wiring only (threads, listeners, how sockets and work travel); the protocol and
//! the chat live below, in `shard/`, `ws/` and `chat/`, and are the same for every pattern.
//!
//! Must never: touch protocol or chat state, or make a syscall other than through `net/`
//! and `io/`.

pub mod single_thread;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cli::{IoKind, PatternKind};
use crate::config::Config;
use crate::io::signals::{TerminationSignals, signal_name};
use crate::io::{EpollReactor, Reactor, UringReactor};
use crate::shard::{Inbox, InboxMsg};
use crate::stats::StatsRegistry;

/// Runs the configured pattern until SIGINT/SIGTERM has closed every connection.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Before any thread exists, so that every thread inherits the blocked mask and only the
    // watcher's sigwait receives the signals.
    let signals = TerminationSignals::block().context("blocking SIGINT/SIGTERM")?;
    let config = Arc::new(config);
    match (config.pattern, config.io) {
        (PatternKind::SingleThread, IoKind::Epoll) => {
            single_thread::run::<EpollReactor>(config, signals)
        }
        (PatternKind::SingleThread, IoKind::Uring) => {
            single_thread::run::<UringReactor>(config, signals)
        }
    }
}

/// A reactor constructor per backend, so that pattern files stay generic over the io.
/// Takes the config because a backend may have options (the io_uring features).
pub trait NewReactor: Reactor + Sized {
    fn open(config: &Config) -> std::io::Result<Self>;
}

impl NewReactor for EpollReactor {
    fn open(_config: &Config) -> std::io::Result<Self> {
        EpollReactor::new()
    }
}

impl NewReactor for UringReactor {
    fn open(config: &Config) -> std::io::Result<Self> {
        UringReactor::new(config.uring_features)
    }
}

/// A new registry for this run's threads.
fn registry(config: &Config) -> Arc<StatsRegistry> {
    StatsRegistry::new(config.pattern.name(), config.io.name(), Instant::now())
}

/// Prints the start-up line (stdout, flushed: tests and scripts read the bound address from
/// it) and the backlog warning (stderr).
fn announce(config: &Config, bound: std::net::SocketAddr, threads: &str) {
    if let Some(warning) = config.backlog_warning() {
        eprintln!("wschat: {warning}");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", config.startup_line(bound, threads));
    let _ = writeln!(
        out,
        "wschat: open http://{bound}/ in a browser; Ctrl-C stops"
    );
    let _ = out.flush();
}

/// Background helpers every pattern has: the signal watcher, which asks each shard to stop,
/// and the optional stats printer. Dropping the guard stops the printer.
pub struct Helpers {
    _stop_printer: Option<mpsc::Sender<()>>,
}

fn start_helpers(
    config: &Config,
    signals: TerminationSignals,
    shards: Vec<Arc<Inbox>>,
    registry: Arc<StatsRegistry>,
) -> anyhow::Result<Helpers> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                eprintln!(
                    "wschat: {}: closing connections with 1001",
                    signal_name(signal)
                );
                for inbox in &shards {
                    inbox.push(InboxMsg::Stop);
                }
            }
        })
        .context("spawning the signal watcher")?;
    let stop_printer = match config.stats_interval {
        Some(interval) => Some(spawn_stats_printer(interval, registry)?),
        None => None,
    };
    Ok(Helpers {
        _stop_printer: stop_printer,
    })
}

/// Prints `Report::interval_line` every `interval` until the returned sender is dropped.
fn spawn_stats_printer(
    interval: Duration,
    registry: Arc<StatsRegistry>,
) -> anyhow::Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            let mut previous = registry.report(Instant::now());
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let report = registry.report(Instant::now());
                eprintln!("{}", report.interval_line(&previous));
                previous = report;
            }
        })
        .context("spawning the stats printer")?;
    Ok(stop)
}
