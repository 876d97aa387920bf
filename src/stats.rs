//! Per-thread counters, their totals, and how they are shown (`GET /stats`, interval lines,
//! and `GET /metrics` in [`prometheus`]).
//!
//! Each counter has exactly one writer, the thread it belongs to, which updates it with a
//! relaxed load and store (no locked read-modify-write on the hot path); readers on other
//! threads see a value at most one update old. Must never: block a writer.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

pub mod prometheus;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $kind:ident $name:ident,)*) => {
        /// One thread's counters (written only by that thread).
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// A copy of counters at one moment, or their sum over threads.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
        pub struct CounterValues {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        /// Every field of [`Counters`], in the order of the list: its name, its kind and its
        /// doc comment (the help text of `GET /metrics`).
        pub const FIELDS: &[Field] = &[
            $(Field { name: stringify!($name), kind: Kind::$kind, doc: concat!($($doc),*) },)*
        ];

        impl Counters {
            pub fn snapshot(&self) -> CounterValues {
                CounterValues { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl CounterValues {
            fn add(&mut self, other: &CounterValues) {
                $(self.$name += other.$name;)*
            }

            /// The values in the order of [`FIELDS`].
            pub fn values(&self) -> impl Iterator<Item = u64> {
                [$(self.$name,)*].into_iter()
            }
        }
    };
}

/// What a field of [`Counters`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (with [`bump`]): a rate is what a reader wants of it.
    Counter,
    /// A level now (with [`set`]): it goes up and down, and a sum over threads is the level
    /// of the whole server.
    Gauge,
}

/// A field of [`Counters`], as the list in `counters!` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// The field's doc comment, its lines joined (each starts with a space).
    pub doc: &'static str,
}

// The one list of counters: each field's kind (a `Counter` only grows, a `Gauge` is set to a
// level), name and doc comment, which `/stats`, the interval line and `/metrics` all read.
counters! {
    /// Connections accepted by this thread.
    Counter accepted,
    /// Connections another thread accepted and handed to this one (acceptor-readers).
    Counter adopted,
    /// Connections this thread currently owns (handshaking, open or closing).
    Gauge active,
    /// WebSocket frames received.
    Counter frames_in,
    /// Frames (and HTTP responses) written completely.
    Counter frames_out,
    /// Bytes read from clients (TLS records included).
    Counter bytes_in,
    /// Bytes written to clients (TLS records included).
    Counter bytes_out,
    /// Returns from the reactor's wait.
    Counter wakeups,
    /// Wake-ups that reported a listener readable.
    Counter listener_wakeups,
    /// Listener wake-ups whose first accept returned EAGAIN.
    Counter futile_accepts,
    /// The thread's voluntary context switches (sleeps), read from /proc when reported.
    Counter voluntary_switches,
    /// Vectored sends started (`IoCounters::sendmsg`): sendmsg(2) calls under epoll,
    /// IORING_OP_SENDMSG submissions under io_uring.
    Counter sendmsg,
    /// io_uring sends (counted in `sendmsg` too) that named their socket by its entry in the
    /// ring's table of registered files (`--uring-features registered-files`), sparing the
    /// kernel the fd lookup; 0 under epoll.
    Counter registered_sends,
    /// epoll_ctl system calls.
    Counter epoll_ctl,
    /// Receivers disconnected with 1008 for exceeding --max-outbound.
    Counter slow_consumer_kicks,
    /// Connections closed with 1008 for going over an input budget: control frames per read,
    /// commands per second, inflated bytes per compressed byte.
    Counter flood_closes,
    /// Times a loop left work for its next iteration because it had planned its fan-out
    /// budget (262,144 receiver deliveries) in this one: a connection's events, or the rest
    /// of a peer's batch.
    Counter fanout_yields,
    /// Connections closed with 1008 for keeping a message open (fragments without the last)
    /// for longer than --idle-timeout.
    Counter message_timeouts,
    /// Handshakes answered 503 because of --max-conns.
    Counter rejected_over_capacity,
    /// Requests answered with a 4xx error.
    Counter handshake_errors,
    /// Connections dropped for not finishing the handshake in time.
    Counter handshake_timeouts,
    /// Times accepting paused because descriptors or memory ran out.
    Counter accept_pauses,
    /// Connections whose TLS failed (bad records, a handshake that went wrong).
    Counter tls_errors,
    /// Heartbeat pings sent to quiet connections.
    Counter pings_sent,
    /// Connections closed (1001) for sending nothing for --idle-timeout.
    Counter idle_closes,
    /// Chat members this thread holds now.
    Gauge members,
    /// Accepted connections handed to another thread (acceptor-readers' acceptor).
    Counter handoffs,
    /// Batches of room deliveries sent to other loops (one inbox item per loop per batch).
    Counter peer_batches_out,
    /// Batches of room deliveries received from other loops.
    Counter peer_batches_in,
    /// Connections this loop stopped reading because another loop had more of their room
    /// deliveries waiting than it may hold (see `Hub::peer_backlog`); read again when
    /// that loop has caught up by half.
    Counter peer_backpressure,
    /// Chat messages waiting for a worker now: in the queue, or held by the loop while the
    /// queue is full (work-queue's I/O loop).
    Gauge queue_depth,
    /// Chat messages interpreted (work-queue's workers).
    Counter work_items,
    /// --cluster (the broker thread): events published and confirmed by Redis.
    Counter cluster_published,
    /// Events delivered locally but not propagated to other nodes: published while the link
    /// was down, or written and unconfirmed when it dropped, or over the command backlog.
    Counter cluster_not_propagated,
    /// Events from other nodes handed to this node's shards.
    Counter cluster_received,
    /// Times the broker stopped reading the subscription connection because a shard held
    /// more room deliveries than it may (the limit of `peer_backpressure`); it reads again
    /// when every shard has caught up by half, and Redis holds what arrives meanwhile.
    Counter cluster_backpressure,
    /// Gaps made visible to a room's members: the link dropped while subscribed, or a
    /// publisher's sequence number jumped.
    Counter cluster_gaps,
    /// Times the link to Redis came back after being down.
    Counter cluster_reconnects,
    /// 1 while the link to Redis is up.
    Gauge cluster_link_up,
    /// Room channels subscribed.
    Gauge cluster_subscriptions,
    /// Malformed or unexpected input from Redis (dropped).
    Counter cluster_bad_input,
}

/// Adds `n` to a counter owned by the calling thread.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed) + n, Relaxed);
}

/// Sets a gauge owned by the calling thread.
pub fn set(counter: &AtomicU64, value: u64) {
    counter.store(value, Relaxed);
}

/// One thread's identity and counters.
#[derive(Debug)]
pub struct ThreadStats {
    pub id: usize,
    pub role: &'static str,
    pub counters: Counters,
    /// The kernel's id of the thread, once it runs (0 before).
    tid: AtomicU64,
}

impl ThreadStats {
    /// Records that these are the stats of the thread with kernel id `tid` (the calling
    /// thread calls it first thing, with `io::sys::current_thread_id()`).
    pub fn bind_thread(&self, tid: u64) {
        self.tid.store(tid, Relaxed);
    }

    fn snapshot(&self) -> CounterValues {
        let mut values = self.counters.snapshot();
        let tid = self.tid.load(Relaxed);
        if tid != 0 {
            values.voluntary_switches = voluntary_switches_of(tid).unwrap_or(0);
        }
        values
    }
}

/// Voluntary context switches of thread `tid` of this process (`voluntary_ctxt_switches` in
/// `/proc/self/task/<tid>/status`): how often it went to sleep, which counts the wake-ups the
/// kernel hid from user space (a waiter woken for a listener and put back to sleep inside
/// epoll_wait). Read by whoever reports, so the thread itself pays nothing.
fn voluntary_switches_of(tid: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Every thread's stats, for reading from anywhere.
#[derive(Debug)]
pub struct StatsRegistry {
    started: Instant,
    pattern: &'static str,
    io: &'static str,
    threads: Mutex<Vec<Arc<ThreadStats>>>,
    /// The `cluster` section's source, with --cluster.
    cluster: std::sync::OnceLock<Arc<dyn Section>>,
}

/// A part of the server that reports a section of its own in `/stats` and `/metrics`.
pub trait Section: std::fmt::Debug + Send + Sync {
    fn report(&self) -> serde_json::Value;

    /// The section's numbers for `/metrics`, one series each.
    fn metrics(&self) -> Vec<SectionMetric>;
}

/// One number of a [`Section`] for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionMetric {
    /// As a field of [`Counters`] is named: without the `wschat_` prefix, nor a counter's
    /// `_total`; never one of [`FIELDS`]' names.
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Its labels. Their values must come from configuration, never from clients: each
    /// distinct value is a series for Prometheus to keep.
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

/// The JSON document of `GET /stats`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub pattern: &'static str,
    pub io: &'static str,
    pub uptime_secs: f64,
    pub totals: CounterValues,
    pub threads: Vec<ThreadReport>,
    /// With --cluster: node id, link state, gaps per room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<serde_json::Value>,
    /// With --cluster: the section's numbers for `/metrics` (the JSON has them above).
    #[serde(skip)]
    pub cluster_metrics: Vec<SectionMetric>,
}

#[derive(Debug, Serialize)]
pub struct ThreadReport {
    pub id: usize,
    pub role: &'static str,
    #[serde(flatten)]
    pub counters: CounterValues,
}

impl StatsRegistry {
    pub fn new(pattern: &'static str, io: &'static str, now: Instant) -> Arc<StatsRegistry> {
        Arc::new(StatsRegistry {
            started: now,
            pattern,
            io,
            threads: Mutex::new(Vec::new()),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Registers a thread (at start-up) and returns its counters.
    pub fn add_thread(&self, role: &'static str) -> Arc<ThreadStats> {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let stats = Arc::new(ThreadStats {
            id: threads.len(),
            role,
            counters: Counters::default(),
            tid: AtomicU64::new(0),
        });
        threads.push(stats.clone());
        stats
    }

    /// Adds the cluster link's section to every report.
    pub fn set_cluster(&self, section: Arc<dyn Section>) {
        let _ = self.cluster.set(section);
    }

    pub fn report(&self, now: Instant) -> Report {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let threads: Vec<ThreadReport> = threads
            .iter()
            .map(|t| ThreadReport {
                id: t.id,
                role: t.role,
                counters: t.snapshot(),
            })
            .collect();
        let mut totals = CounterValues::default();
        threads.iter().for_each(|t| totals.add(&t.counters));
        Report {
            pattern: self.pattern,
            io: self.io,
            uptime_secs: now.duration_since(self.started).as_secs_f64(),
            totals,
            threads,
            cluster: self.cluster.get().map(|link| link.report()),
            cluster_metrics: self
                .cluster
                .get()
                .map(|link| link.metrics())
                .unwrap_or_default(),
        }
    }
}

impl Report {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain integers and strings cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// One line for `--stats-interval`: totals as rates since `previous`, then per thread
    /// what makes imbalance and wasted wake-ups visible: connections held, frames sent per
    /// second, wake-ups and sleeps (voluntary context switches) per second.
    pub fn interval_line(&self, previous: &Report) -> String {
        let secs = (self.uptime_secs - previous.uptime_secs).max(1e-9);
        let rate = |now: u64, before: u64| (now.saturating_sub(before)) as f64 / secs;
        let (t, p) = (&self.totals, &previous.totals);
        let mut line = format!(
            "stats t={:.1}s active={} accepted/s={:.0} frames_in/s={:.0} frames_out/s={:.0} \
             sendmsg/s={:.0} wakeups/s={:.0} kicks={} queue={} |",
            self.uptime_secs,
            t.active,
            rate(t.accepted, p.accepted),
            rate(t.frames_in, p.frames_in),
            rate(t.frames_out, p.frames_out),
            rate(t.sendmsg, p.sendmsg),
            rate(t.wakeups, p.wakeups),
            t.slow_consumer_kicks,
            t.queue_depth,
        );
        for (now, before) in self.threads.iter().zip(&previous.threads) {
            let (n, b) = (&now.counters, &before.counters);
            let _ = write!(
                line,
                " {}{}: active={} out/s={:.0} wake/s={:.0} sleep/s={:.0};",
                now.role,
                now.id,
                n.active,
                rate(n.frames_out, b.frames_out),
                rate(n.wakeups, b.wakeups),
                rate(n.voluntary_switches, b.voluntary_switches),
            );
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_the_threads() {
        let now = Instant::now();
        let registry = StatsRegistry::new("single-thread", "epoll", now);
        let a = registry.add_thread("loop");
        let b = registry.add_thread("loop");
        bump(&a.counters.accepted, 2);
        bump(&b.counters.accepted, 3);
        set(&b.counters.active, 1);
        let report = registry.report(now);
        assert_eq!(report.totals.accepted, 5);
        assert_eq!(report.totals.active, 1);
        assert_eq!(report.threads[1].id, 1);
        let json: serde_json::Value = serde_json::from_slice(&report.to_json()).unwrap();
        assert_eq!(json["threads"][0]["accepted"], 2);
        assert_eq!(json["totals"]["accepted"], 5);
        assert_eq!(json["pattern"], "single-thread");
    }

    #[test]
    fn interval_line_shows_rates_and_each_thread() {
        let start = Instant::now();
        let registry = StatsRegistry::new("reuseport", "epoll", start);
        let a = registry.add_thread("loop");
        registry.add_thread("loop");
        let mut before = registry.report(start);
        before.uptime_secs = 1.0;
        bump(&a.counters.frames_out, 500);
        set(&a.counters.active, 7);
        let mut now = registry.report(start);
        now.uptime_secs = 3.0;
        let line = now.interval_line(&before);
        assert!(line.contains("frames_out/s=250"), "{line}");
        assert!(line.contains("loop0: active=7 out/s=250"), "{line}");
        assert!(line.contains("loop1: active=0 out/s=0"), "{line}");
    }
}
