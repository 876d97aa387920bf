//! Command-line flags (every one also readable from a `WSCHAT_*` environment variable).
//!
//! Owns: spelling, defaults and parsing of flags. Turning them into a validated effective
//! configuration is `config.rs`'s job.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::io::uring::FeatureSet;

/// How threads listen, accept, read and process (see patterns/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatternKind {
    /// One event loop listens, accepts, reads and processes.
    SingleThread,
    /// One acceptor thread hands connections to --threads reader loops (memcached).
    AcceptorReaders,
    /// One I/O loop reads and parses; --workers threads process messages from a queue
    /// (RAMCloud).
    WorkQueue,
    /// --threads loops accept on one shared listening socket.
    MultiAccept,
    /// --threads loops, each with its own SO_REUSEPORT listener and accept queue.
    Reuseport,
}

/// How acceptor-readers picks the reader for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Assign {
    /// Readers in turn.
    RoundRobin,
    /// The reader with the fewest connections.
    LeastConns,
}

/// Which of the loops sharing a listener (multi-accept) a new connection wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcceptWakeupArg {
    /// One waiting loop (EPOLLEXCLUSIVE).
    Exclusive,
    /// Every loop: the thundering herd, to measure it.
    All,
}

/// The I/O mechanism under every pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoKind {
    /// Readiness: edge-triggered epoll.
    Epoll,
    /// Completion: io_uring (multishot accept and recv, provided buffers, batched sends).
    Uring,
}

impl PatternKind {
    pub fn name(self) -> &'static str {
        match self {
            PatternKind::SingleThread => "single-thread",
            PatternKind::AcceptorReaders => "acceptor-readers",
            PatternKind::WorkQueue => "work-queue",
            PatternKind::MultiAccept => "multi-accept",
            PatternKind::Reuseport => "reuseport",
        }
    }
}

impl IoKind {
    pub fn name(self) -> &'static str {
        match self {
            IoKind::Epoll => "epoll",
            IoKind::Uring => "uring",
        }
    }
}

/// A WebSocket chat server whose execution pattern is chosen at run time.
#[derive(Debug, Parser)]
#[command(name = "wschat", version, about, max_term_width = 100)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "WSCHAT_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Execution pattern.
    #[arg(long, env = "WSCHAT_PATTERN", value_enum, default_value_t = PatternKind::SingleThread)]
    pub pattern: PatternKind,

    /// I/O backend.
    #[arg(long, env = "WSCHAT_IO", value_enum, default_value_t = IoKind::Epoll)]
    pub io: IoKind,

    /// Event-loop threads (readers, or accepting loops). Default: the CPUs this process may
    /// run on (its affinity mask, so `taskset` decides).
    #[arg(long, env = "WSCHAT_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Worker threads of work-queue. Default: the CPUs in the affinity mask.
    #[arg(long, env = "WSCHAT_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// How acceptor-readers assigns a connection to a reader. Default: round-robin.
    #[arg(long, env = "WSCHAT_ASSIGN", value_enum)]
    pub assign: Option<Assign>,

    /// Capacity of work-queue's queue, in messages. Default: 1024.
    #[arg(long, env = "WSCHAT_QUEUE_DEPTH",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue_depth: Option<u32>,

    /// Synthetic CPU work per chat message, in microseconds (every pattern; work-queue runs
    /// it on its workers).
    #[arg(long, env = "WSCHAT_WORK_US", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub work_us: u32,

    /// Experiments only: the accepting thread sleeps this many microseconds after each
    /// connection it accepts, so that the accept queue fills (see scripts/experiments/).
    #[arg(long, env = "WSCHAT_ACCEPT_DELAY_US", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub accept_delay_us: u32,

    /// Tests only: a request for this path panics the loop that reads it, so that a test can
    /// see a dead loop take the whole server down (never a zombie with ghost members).
    #[arg(long, env = "WSCHAT_TEST_PANIC_PATH", hide = true)]
    pub test_panic_path: Option<String>,

    /// How multi-accept's loops are woken by a new connection. Default: exclusive.
    #[arg(long, env = "WSCHAT_ACCEPT_WAKEUP", value_enum)]
    pub accept_wakeup: Option<AcceptWakeupArg>,

    /// Pin each thread to one CPU of the affinity mask (in turn, wrapping around).
    #[arg(long, env = "WSCHAT_PIN")]
    pub pin: bool,
    /// io_uring features to use where the kernel has them: `all`, `none`, or a comma list of
    /// multishot-accept, multishot-recv, buf-ring, single-issuer, defer-taskrun,
    /// coop-taskrun, registered-files (the others fall back; `none` tests every fallback).
    #[arg(long, env = "WSCHAT_URING_FEATURES", default_value = "all")]
    pub uring_features: FeatureSet,

    /// listen() backlog; the kernel caps it at net.core.somaxconn (the start-up line says).
    #[arg(long, env = "WSCHAT_BACKLOG", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub backlog: u32,

    /// Leave Nagle's algorithm on for accepted sockets (TCP_NODELAY is set by default).
    #[arg(long, env = "WSCHAT_NO_NODELAY")]
    pub no_nodelay: bool,

    /// Most concurrent connections; more get 503. Default: the fd limit minus a reserve.
    #[arg(long, env = "WSCHAT_MAX_CONNS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: Option<u64>,

    /// Largest message accepted (sum of its fragments); larger closes with 1009.
    /// Bytes, with an optional KiB/MiB/GiB suffix; from 125 bytes to 1GiB.
    #[arg(long, env = "WSCHAT_MAX_MESSAGE", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_message: usize,

    /// Accept permessage-deflate (RFC 7692) when a client offers it. Off by default: chat
    /// lines are short, so compression saves few bytes for a CPU cost per message (see
    /// docs/README-deflate.md).
    #[arg(long, env = "WSCHAT_DEFLATE")]
    pub deflate: bool,

    /// Unsent bytes a receiver may accumulate before it is disconnected with 1008.
    #[arg(long, env = "WSCHAT_MAX_OUTBOUND", default_value = "4MiB", value_parser = parse_bytes)]
    pub max_outbound: usize,

    /// Time allowed from accept to a complete request head (e.g. 10s, 500ms).
    #[arg(long, env = "WSCHAT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Time we wait for the peer's Close after ours, and for its FIN after the close
    /// handshake, before dropping the TCP connection.
    #[arg(long, env = "WSCHAT_CLOSE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// Ping a connection that has sent no complete frame for this long (0s: never).
    #[arg(long, env = "WSCHAT_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Close (1001) a connection that has sent no complete frame, pongs included, for this
    /// long (0s: never). A frame trickled in slower than this does not count as activity.
    #[arg(long, env = "WSCHAT_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// At SIGINT/SIGTERM, how long closing handshakes may take before the server exits anyway.
    #[arg(long, env = "WSCHAT_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// An Origin allowed to open WebSockets (repeatable, e.g. `https://chat.example.com`);
    /// others get 403. Default: any origin (see the README's security note).
    #[arg(
        long = "allowed-origin",
        env = "WSCHAT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve https:// and wss:// with this certificate chain (PEM), with --tls-key.
    #[arg(
        long,
        env = "WSCHAT_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "WSCHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Serve https:// and wss:// with a certificate for 127.0.0.1 and localhost made at start
    /// (browsers will warn: it is for trying TLS out, not for production).
    #[arg(long, env = "WSCHAT_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Scale-out: share rooms with other nodes through Redis pub/sub at this URL
    /// (`redis://HOST[:PORT][/DB]`). Off by default: a single node.
    #[arg(long, env = "WSCHAT_CLUSTER")]
    pub cluster: Option<crate::cluster::RedisUrl>,

    /// This node's id in the cluster (up to 16 hex digits); default: random at start.
    #[arg(long, env = "WSCHAT_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<u64>,

    /// Print a stats line on stderr at this interval (e.g. 1s).
    #[arg(long, env = "WSCHAT_STATS_INTERVAL", value_parser = parse_duration)]
    pub stats_interval: Option<Duration>,
}

/// Up to 16 hex digits.
pub fn parse_node_id(s: &str) -> Result<u64, String> {
    if s.is_empty() || s.len() > 16 {
        return Err("expected 1 to 16 hex digits".into());
    }
    u64::from_str_radix(s, 16).map_err(|_| "expected 1 to 16 hex digits".into())
}

/// A byte count: `65536`, `64KiB`, `1MiB`, `1GiB` (also `K`, `M`, `G`, all powers of 1024).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
    };
    let value: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count like 65536 or 4MiB"))?;
    value
        .checked_mul(1 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} must be between 1 byte and {} bytes", usize::MAX))
}

/// A duration like `10s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 10s or 500ms: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("4M"), Ok(4 << 20));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1TB").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn unknown_pattern_lists_the_valid_ones() {
        let err = Args::try_parse_from(["wschat", "--pattern", "fork-per-conn"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("single-thread"), "{text}");
    }

    #[test]
    fn every_pattern_parses() {
        for (flag, kind) in [
            ("single-thread", PatternKind::SingleThread),
            ("acceptor-readers", PatternKind::AcceptorReaders),
            ("work-queue", PatternKind::WorkQueue),
            ("multi-accept", PatternKind::MultiAccept),
            ("reuseport", PatternKind::Reuseport),
        ] {
            let args = Args::try_parse_from(["wschat", "--pattern", flag]).unwrap();
            assert_eq!(args.pattern, kind);
            assert_eq!(kind.name(), flag);
        }
        let err = Args::try_parse_from(["wschat", "--threads", "0"]).unwrap_err();
        assert!(err.to_string().contains("1..=1024"), "{err}");
        let err = Args::try_parse_from(["wschat", "--assign", "random"]).unwrap_err();
        assert!(err.to_string().contains("least-conns"), "{err}");
    }

    #[test]
    fn defaults() {
        let args = Args::try_parse_from(["wschat"]).unwrap();
        assert_eq!(args.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.pattern, PatternKind::SingleThread);
        assert_eq!(args.max_message, 1 << 20);
        assert_eq!(args.max_outbound, 4 << 20);
        assert_eq!(args.handshake_timeout, Duration::from_secs(10));
    }
}
