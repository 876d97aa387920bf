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

    /// io_uring features to use where the kernel has them: `all`, `none`, or a comma list of
    /// multishot-accept, multishot-recv, buf-ring, single-issuer, defer-taskrun,
    /// coop-taskrun (the others fall back; `none` tests every fallback).
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
    /// Bytes, with an optional KiB/MiB/GiB suffix.
    #[arg(long, env = "WSCHAT_MAX_MESSAGE", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_message: usize,

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

    /// Print a stats line on stderr at this interval (e.g. 1s).
    #[arg(long, env = "WSCHAT_STATS_INTERVAL", value_parser = parse_duration)]
    pub stats_interval: Option<Duration>,
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
    fn defaults() {
        let args = Args::try_parse_from(["wschat"]).unwrap();
        assert_eq!(args.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.pattern, PatternKind::SingleThread);
        assert_eq!(args.max_message, 1 << 20);
        assert_eq!(args.max_outbound, 4 << 20);
        assert_eq!(args.handshake_timeout, Duration::from_secs(10));
    }
}
