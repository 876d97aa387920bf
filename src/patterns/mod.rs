//! Execution patterns: how threads listen, accept, read and process. One short file per
//! pattern, wiring only (threads, listeners, how sockets and work travel); the protocol and
//! the chat live below, in `shard/`, `ws/` and `chat/`, and are the same for every pattern.
//!
//! Every event-loop thread opens its own reactor (an io_uring ring belongs to the thread
//! that creates it) and reports back before the server announces itself, so a reactor that
//! cannot be opened stops the start-up with its reason, never a half-started server.
//!
//! Must never: touch protocol or chat state, or make a syscall other than through `net/`
//! and `io/`.

pub mod acceptor_readers;
pub mod multi_accept;
pub mod reuseport;
pub mod single_thread;
pub mod work_queue;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use crate::cli::{IoKind, PatternKind};
use crate::config::Config;
use crate::io::signals::{TerminationSignals, signal_name};
use crate::io::{AcceptWakeup, EpollReactor, Reactor, UringReactor, Waker};
use crate::net;
use crate::shard::{Acceptor, Hub, Inbox, InboxMsg, Shard};
use crate::stats::{StatsRegistry, ThreadStats};

/// Runs the configured pattern until SIGINT/SIGTERM has closed every connection.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Before any thread exists, so that every thread inherits the blocked mask and only the
    // watcher's sigwait receives the signals.
    let signals = TerminationSignals::block().context("blocking SIGINT/SIGTERM")?;
    for flag in &config.ignored_flags {
        eprintln!(
            "wschat: {flag} does not apply to --pattern {}; ignored",
            config.pattern.name()
        );
    }
    let config = Arc::new(config);
    match (config.pattern, config.io) {
        (PatternKind::SingleThread, IoKind::Epoll) => {
            single_thread::run::<EpollReactor>(config, signals)
        }
        (PatternKind::AcceptorReaders, IoKind::Epoll) => {
            acceptor_readers::run::<EpollReactor>(config, signals)
        }
        (PatternKind::WorkQueue, IoKind::Epoll) => work_queue::run::<EpollReactor>(config, signals),
        (PatternKind::MultiAccept, IoKind::Epoll) => {
            multi_accept::run::<EpollReactor>(config, signals)
        }
        (PatternKind::Reuseport, IoKind::Epoll) => reuseport::run::<EpollReactor>(config, signals),
        (PatternKind::SingleThread, IoKind::Uring) => {
            single_thread::run::<UringReactor>(config, signals)
        }
        (PatternKind::AcceptorReaders, IoKind::Uring) => {
            acceptor_readers::run::<UringReactor>(config, signals)
        }
        (PatternKind::WorkQueue, IoKind::Uring) => work_queue::run::<UringReactor>(config, signals),
        (PatternKind::MultiAccept, IoKind::Uring) => {
            multi_accept::run::<UringReactor>(config, signals)
        }
        (PatternKind::Reuseport, IoKind::Uring) => reuseport::run::<UringReactor>(config, signals),
    }
}

/// A reactor constructor per backend, so that pattern files stay generic over the io. It
/// takes the config because a backend may have options (the io_uring features).
pub trait NewReactor: Reactor + Sized + 'static {
    /// Opens a reactor on the calling thread, woken by `waker`.
    fn open(waker: Waker, config: &Config) -> std::io::Result<Self>;
}

impl NewReactor for EpollReactor {
    fn open(waker: Waker, _config: &Config) -> std::io::Result<Self> {
        EpollReactor::new(waker)
    }
}

impl NewReactor for UringReactor {
    fn open(waker: Waker, config: &Config) -> std::io::Result<Self> {
        UringReactor::new(waker, config.uring_features)
    }
}

/// What a thread of a pattern runs once its reactor is open.
pub trait EventLoop {
    fn run(&mut self) -> std::io::Result<()>;
}

impl<R: Reactor> EventLoop for Shard<R> {
    fn run(&mut self) -> std::io::Result<()> {
        Shard::run(self)
    }
}

/// The server's threads, started one by one and joined together.
struct Threads {
    config: Arc<Config>,
    handles: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
}

impl Threads {
    fn new(config: &Arc<Config>) -> Threads {
        Threads {
            config: config.clone(),
            handles: Vec::new(),
        }
    }

    /// Starts thread `name`: it opens a reactor woken by `waker`, builds its loop with
    /// `build`, and runs it. Returns once the loop is built, or with the reason it was not.
    fn start_loop<R, L>(
        &mut self,
        name: String,
        waker: &Waker,
        build: impl FnOnce(R) -> anyhow::Result<L> + Send + 'static,
    ) -> anyhow::Result<()>
    where
        R: NewReactor,
        L: EventLoop,
    {
        let (waker, config) = (waker.clone(), self.config.clone());
        let (ready, built) = mpsc::sync_channel::<anyhow::Result<()>>(1);
        let body = move || {
            let made = R::open(waker, &config)
                .context("creating the event loop")
                .and_then(build);
            let mut event_loop = match made {
                Ok(l) => {
                    let _ = ready.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return Ok(());
                }
            };
            event_loop.run().context("event loop failed")
        };
        self.start(name.clone(), body)?;
        built
            .recv()
            .map_err(|_| anyhow!("thread {name} ended during start-up"))?
            .with_context(|| format!("starting thread {name}"))
    }

    /// Starts thread `name` running `body`, pinned to its CPU under `--pin`.
    fn start(
        &mut self,
        name: String,
        body: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cpu = (self.config.pin && !self.config.cpus.is_empty())
            .then(|| self.config.cpus[self.handles.len() % self.config.cpus.len()]);
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Some(id) = cpu
                    && !core_affinity::set_for_current(core_affinity::CoreId { id })
                {
                    eprintln!("wschat: could not pin thread to CPU {id}; it runs unpinned");
                }
                body()
            })
            .with_context(|| format!("spawning thread {name}"))?;
        self.handles.push((name, handle));
        Ok(())
    }

    /// Waits for every thread; the first error wins.
    fn join(self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for (name, handle) in self.handles {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("thread {name} panicked")));
            if result.is_ok() {
                result = outcome.with_context(|| format!("thread {name}"));
            }
        }
        result
    }
}

/// `n` wakers, one per reactor to be opened.
fn wakers(n: usize) -> anyhow::Result<Vec<Waker>> {
    (0..n)
        .map(|_| Waker::new().context("creating an eventfd"))
        .collect()
}

/// A new registry for this run's threads.
fn registry(config: &Config) -> Arc<StatsRegistry> {
    StatsRegistry::new(config.pattern.name(), config.io.name(), Instant::now())
}

/// Starts one shard per waker of `hub`, on threads `<role>-<i>`; shard `i` runs `setups[i]`
/// (registering its listener, say) before its loop starts. Returns each shard's counters.
fn start_shards<R, F>(
    threads: &mut Threads,
    hub: &Arc<Hub>,
    wakers: &[Waker],
    role: &'static str,
    registry: &Arc<StatsRegistry>,
    setups: impl IntoIterator<Item = F>,
) -> anyhow::Result<Vec<Arc<ThreadStats>>>
where
    R: NewReactor,
    F: FnOnce(&mut Shard<R>) -> anyhow::Result<()> + Send + 'static,
{
    // --cluster: the broker thread starts before the shards, so that the hub holds its link
    // before any connection arrives.
    if let Some(cluster) = &threads.config.cluster {
        let link = crate::cluster::start(cluster, hub.clone(), registry)?;
        registry.set_cluster(link.clone());
        hub.set_remote(link);
    }
    let mut all_stats = Vec::new();
    for ((index, waker), setup) in wakers.iter().enumerate().zip(setups) {
        let (hub, config, registry) = (hub.clone(), threads.config.clone(), registry.clone());
        let stats = registry.add_thread(role);
        all_stats.push(stats.clone());
        threads.start_loop(format!("{role}-{index}"), waker, move |io: R| {
            let mut shard = Shard::new(io, index, hub, config, stats, registry);
            setup(&mut shard)?;
            Ok(shard)
        })?;
    }
    Ok(all_stats)
}

/// A shard set-up that registers `listener`.
fn serve<R: NewReactor>(
    listener: TcpListener,
    wakeup: AcceptWakeup,
) -> impl FnOnce(&mut Shard<R>) -> anyhow::Result<()> + Send + 'static {
    move |shard| {
        shard
            .add_listener(listener, wakeup)
            .context("registering the listener")?;
        Ok(())
    }
}

/// Binds the configured address (with SO_REUSEPORT if `reuse_port`).
fn listen(config: &Config, addr: SocketAddr, reuse_port: bool) -> anyhow::Result<TcpListener> {
    net::bind_listener(addr, &config.backlog, reuse_port).with_context(|| format!("binding {addr}"))
}

/// Prints the start-up line (stdout, flushed: tests and scripts read the bound address from
/// it) and the backlog warning (stderr).
fn announce(config: &Config, bound: std::net::SocketAddr, threads: &str) {
    if let Some(warning) = config.backlog_warning() {
        eprintln!("wschat: {warning}");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", config.startup_line(bound, threads));
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let _ = writeln!(
        out,
        "wschat: open {scheme}://{bound}/ in a browser; Ctrl-C stops"
    );
    let _ = out.flush();
}

/// Background helpers every pattern has: the signal watcher, which tells every loop in
/// `stop` to stop, and the optional stats printer. Dropping the guard stops the printer.
pub struct Helpers {
    _stop_printer: Option<mpsc::Sender<()>>,
}

fn start_helpers(
    config: &Config,
    signals: TerminationSignals,
    stop: Vec<Arc<Inbox>>,
    registry: Arc<StatsRegistry>,
) -> anyhow::Result<Helpers> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                eprintln!(
                    "wschat: {}: closing connections with 1001 (again to exit at once)",
                    signal_name(signal)
                );
                for inbox in &stop {
                    inbox.push(InboxMsg::Stop);
                }
            }
            // An operator who asks twice does not want to wait for closing handshakes.
            if let Ok(signal) = signals.wait() {
                eprintln!("wschat: second {}: exiting now", signal_name(signal));
                std::process::exit(1);
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

impl<R: Reactor> EventLoop for Acceptor<R> {
    fn run(&mut self) -> std::io::Result<()> {
        Acceptor::run(self)
    }
}
