//! The validated, effective configuration: what the server will really do, including what
//! the kernel grants (backlog, descriptor limit). The start-up line is printed from it.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::cli::{AcceptWakeupArg, Args, Assign, IoKind, PatternKind};
use crate::io::AcceptWakeup;
use crate::io::sys::{FdLimit, raise_fd_limit};
use crate::io::uring::{self, FeatureSet};
use crate::net::Backlog;
use crate::tls::{TlsConfig, TlsSetupError};
use crate::ws::{Limits, MAX_MESSAGE_LIMIT};

/// Descriptors kept free for listeners, epoll, eventfds, stdio and the connections that are
/// accepted only to be told 503.
const FD_RESERVE: u64 = 64;
/// The longest handshake or close timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub pattern: PatternKind,
    pub io: IoKind,
    /// With `--io uring`: the features in use (probed, narrowed by --uring-features).
    pub uring_features: FeatureSet,
    pub backlog: Backlog,
    pub nodelay: bool,
    pub max_conns: usize,
    pub fd_limit: FdLimit,
    pub limits: Limits,
    /// Accept permessage-deflate offers (`--deflate`).
    pub deflate: bool,
    pub max_outbound: usize,
    pub stats_interval: Option<Duration>,
    /// Event-loop threads (1 for single-thread and work-queue).
    pub threads: usize,
    /// Worker threads (work-queue only; 0 otherwise).
    pub workers: usize,
    pub assign: Assign,
    pub queue_depth: usize,
    /// Synthetic CPU work per chat message (`--work-us`).
    pub work_cost: Duration,
    /// Experiments only: a stall after each accepted connection (`--accept-delay-us`).
    pub accept_delay: Duration,
    /// Tests only: a request for this path panics its loop (`--test-panic-path`).
    pub test_panic_path: Option<String>,
    pub accept_wakeup: AcceptWakeup,
    /// The CPUs of the process's affinity mask, in order; `--pin` places thread i on
    /// `cpus[i % len]`. Empty if the mask could not be read.
    pub cpus: Vec<usize>,
    pub pin: bool,
    /// Flags given that the chosen pattern does not use (reported at start-up).
    pub ignored_flags: Vec<&'static str>,
    pub heartbeat: Heartbeat,
    pub shutdown_timeout: Duration,
    /// Origins allowed to open WebSockets; empty: any.
    pub allowed_origins: Vec<String>,
    /// `Some`: every connection speaks TLS (https://, wss://).
    pub tls: Option<TlsConfig>,
    /// `--cluster`: the Redis URL and this node's id.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// Keeping connections honest: pings to the quiet ones, a close for the silent ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub ping_interval: Option<Duration>,
    pub idle_timeout: Option<Duration>,
}

impl Heartbeat {
    /// The shortest of the two intervals, if either is on.
    pub fn shortest(&self) -> Option<Duration> {
        match (self.ping_interval, self.idle_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the open-file limit: {0}")]
    FdLimit(#[source] std::io::Error),
    #[error(
        "--max-conns {requested} exceeds what the open-file limit allows ({allowed}); raise the hard limit (ulimit -Hn) or lower --max-conns"
    )]
    MaxConnsOverFdLimit { requested: u64, allowed: u64 },
    #[error(
        "--max-message must be between 125 bytes (a control frame's payload) and 1GiB (a connection keeps its limits in 4 bytes)"
    )]
    MaxMessageOutOfRange,
    #[error(
        "--close-timeout, --handshake-timeout and --shutdown-timeout must be between 1ms and 24h; --ping-interval and --idle-timeout 0s (off) or between 1ms and 24h"
    )]
    TimeoutOutOfRange,
    #[error(
        "--ping-interval must be shorter than --idle-timeout, or the pings could never be answered in time"
    )]
    PingNotBeforeIdle,
    #[error(transparent)]
    UringUnavailable(#[from] uring::Unavailable),
    #[error("TLS: {0}")]
    Tls(#[from] TlsSetupError),
}

impl Config {
    /// Validates `args` and raises the soft descriptor limit to the hard one.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let fd_limit = raise_fd_limit().map_err(ConfigError::FdLimit)?;
        let allowed = fd_limit.soft.saturating_sub(FD_RESERVE).max(1);
        let max_conns = match args.max_conns {
            Some(requested) if requested > allowed => {
                return Err(ConfigError::MaxConnsOverFdLimit { requested, allowed });
            }
            Some(requested) => requested,
            None => allowed,
        };
        if !(125..=MAX_MESSAGE_LIMIT).contains(&args.max_message) {
            return Err(ConfigError::MaxMessageOutOfRange);
        }
        // Deadlines are `now + timeout`: bounding the timeout keeps that sum representable.
        let in_range = |d: Duration| (Duration::from_millis(1)..=MAX_TIMEOUT).contains(&d);
        if !in_range(args.close_timeout)
            || !in_range(args.handshake_timeout)
            || !in_range(args.shutdown_timeout)
        {
            return Err(ConfigError::TimeoutOutOfRange);
        }
        let optional = |d: Duration| -> Result<Option<Duration>, ConfigError> {
            match d {
                Duration::ZERO => Ok(None),
                d if in_range(d) => Ok(Some(d)),
                _ => Err(ConfigError::TimeoutOutOfRange),
            }
        };
        let heartbeat = Heartbeat {
            ping_interval: optional(args.ping_interval)?,
            idle_timeout: optional(args.idle_timeout)?,
        };
        if let Heartbeat {
            ping_interval: Some(ping),
            idle_timeout: Some(idle),
        } = heartbeat
            && ping >= idle
        {
            return Err(ConfigError::PingNotBeforeIdle);
        }
        let cpus: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|core| core.id)
            .collect();
        let default_threads = cpus.len().max(1);
        let pattern = args.pattern;
        let uses = |flag: &str| match flag {
            "--threads" => !matches!(pattern, PatternKind::SingleThread | PatternKind::WorkQueue),
            "--workers" | "--queue-depth" => pattern == PatternKind::WorkQueue,
            "--assign" => pattern == PatternKind::AcceptorReaders,
            "--accept-wakeup" => pattern == PatternKind::MultiAccept,
            _ => true,
        };
        let given = [
            ("--threads", args.threads.is_some()),
            ("--workers", args.workers.is_some()),
            ("--queue-depth", args.queue_depth.is_some()),
            ("--assign", args.assign.is_some()),
            ("--accept-wakeup", args.accept_wakeup.is_some()),
        ];
        let ignored_flags = given
            .into_iter()
            .filter(|&(flag, given)| given && !uses(flag))
            .map(|(flag, _)| flag)
            .collect();
        // Probed here, so that an unusable io_uring stops the server before it binds, and the
        // start-up line shows what is really in use.
        let uring_features = match args.io {
            IoKind::Uring => uring::probe()?
                .features
                .intersect(args.uring_features)
                .consistent(),
            IoKind::Epoll => FeatureSet::NONE,
        };
        let tls = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
            (Some(cert), Some(key), _) => Some(TlsConfig::from_pem_files(cert, key)?),
            (_, _, true) => Some(TlsConfig::self_signed()?),
            _ => None,
        };
        Ok(Config {
            tls,
            heartbeat,
            shutdown_timeout: args.shutdown_timeout,
            allowed_origins: args.allowed_origins,
            cluster: args.cluster.map(|url| crate::cluster::ClusterConfig {
                url,
                node: args
                    .node_id
                    .map_or_else(crate::cluster::NodeId::random, crate::cluster::NodeId),
                max_message: args.max_message,
            }),
            threads: if uses("--threads") {
                args.threads.map_or(default_threads, usize::from)
            } else {
                1
            },
            workers: if uses("--workers") {
                args.workers.map_or(default_threads, usize::from)
            } else {
                0
            },
            assign: args.assign.unwrap_or(Assign::RoundRobin),
            queue_depth: args.queue_depth.map_or(1024, |d| d as usize),
            work_cost: Duration::from_micros(args.work_us.into()),
            accept_delay: Duration::from_micros(args.accept_delay_us.into()),
            test_panic_path: args.test_panic_path.clone(),
            accept_wakeup: match args.accept_wakeup {
                Some(AcceptWakeupArg::All) => AcceptWakeup::All,
                Some(AcceptWakeupArg::Exclusive) | None => AcceptWakeup::Exclusive,
            },
            cpus,
            pin: args.pin,
            ignored_flags,
            addr: args.addr,
            pattern: args.pattern,
            io: args.io,
            uring_features,
            backlog: Backlog::new(args.backlog),
            nodelay: !args.no_nodelay,
            max_conns: usize::try_from(max_conns).unwrap_or(usize::MAX),
            fd_limit,
            limits: Limits {
                max_message: args.max_message,
                handshake_timeout: args.handshake_timeout,
                close_timeout: args.close_timeout,
            },
            deflate: args.deflate,
            max_outbound: args.max_outbound,
            stats_interval: args.stats_interval,
        })
    }

    /// The start-up line: everything that decides the numbers, as the kernel granted it.
    pub fn startup_line(&self, bound: SocketAddr, threads: &str) -> String {
        let backlog = match self.backlog.somaxconn {
            Some(max) => format!(
                "{} (requested {}, somaxconn {max})",
                self.backlog.granted(),
                self.backlog.requested
            ),
            None => format!("{} (somaxconn unknown)", self.backlog.requested),
        };
        format!(
            "wschat listening on {bound} pattern={} io={}{} threads={threads} backlog={backlog} \
             nodelay={} max-conns={} fd-limit={}/{} max-message={} max-outbound={}",
            self.pattern.name(),
            self.io.name(),
            match self.io {
                IoKind::Uring => format!(" uring-features={}", self.uring_features),
                IoKind::Epoll => String::new(),
            },
            if self.nodelay { "on" } else { "off" },
            self.max_conns,
            self.fd_limit.soft,
            self.fd_limit.hard,
            self.limits.max_message,
            self.max_outbound,
        ) + &self.pattern_settings()
    }

    /// The settings that only the chosen pattern uses, and the ones every pattern may add.
    fn pattern_settings(&self) -> String {
        let mut out = match self.pattern {
            PatternKind::AcceptorReaders => format!(
                " assign={}",
                match self.assign {
                    Assign::RoundRobin => "round-robin",
                    Assign::LeastConns => "least-conns",
                }
            ),
            PatternKind::WorkQueue => format!(" queue-depth={}", self.queue_depth),
            PatternKind::MultiAccept => format!(
                " accept-wakeup={}",
                match self.accept_wakeup {
                    AcceptWakeup::Exclusive | AcceptWakeup::Sole => "exclusive",
                    AcceptWakeup::All => "all",
                }
            ),
            PatternKind::SingleThread | PatternKind::Reuseport => String::new(),
        };
        if !self.work_cost.is_zero() {
            out += &format!(" work-us={}", self.work_cost.as_micros());
        }
        if !self.accept_delay.is_zero() {
            out += &format!(
                " accept-delay-us={} (experiment)",
                self.accept_delay.as_micros()
            );
        }
        if let Some(tls) = &self.tls {
            out += &format!(" tls=on ({})", tls.source);
        }
        if self.pin {
            out += &format!(" pin=on cpus={:?}", self.cpus);
        }
        if self.deflate {
            out += " deflate=on";
        }
        if let Some(cluster) = &self.cluster {
            out += &format!(" cluster={} node={}", cluster.url, cluster.node);
        }
        out
    }

    /// A warning to print when somaxconn silently shortened the accept queue.
    pub fn backlog_warning(&self) -> Option<String> {
        self.backlog.is_capped().then(|| {
            format!(
                "warning: --backlog {} is capped to {} by net.core.somaxconn; raise it with \
                 `sysctl -w net.core.somaxconn={}`",
                self.backlog.requested,
                self.backlog.granted(),
                self.backlog.requested
            )
        })
    }
}

/// The configuration `wschat <args>` runs with, for tests elsewhere in the crate (which do
/// not see the command line's types); panics on arguments a test got wrong.
#[cfg(test)]
pub(crate) fn for_test(args: &[&str]) -> Config {
    use clap::Parser as _;
    let argv = std::iter::once("wschat").chain(args.iter().copied());
    let args = Args::try_parse_from(argv).expect("test arguments parse");
    Config::from_args(args).expect("test configuration is valid")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("wschat").chain(args.iter().copied());
        Config::from_args(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn flags_a_pattern_does_not_use_are_reported() {
        let c = config(&["--pattern", "reuseport", "--workers", "3", "--threads", "2"]).unwrap();
        assert_eq!(c.ignored_flags, ["--workers"]);
        assert_eq!((c.threads, c.workers), (2, 0));
        let c = config(&[
            "--pattern",
            "work-queue",
            "--workers",
            "3",
            "--threads",
            "2",
        ])
        .unwrap();
        assert_eq!(c.ignored_flags, ["--threads"]);
        assert_eq!((c.threads, c.workers), (1, 3));
        let c = config(&["--pattern", "multi-accept", "--accept-wakeup", "all"]).unwrap();
        assert!(c.ignored_flags.is_empty());
        assert!(
            c.startup_line("127.0.0.1:1".parse().unwrap(), "2")
                .contains("accept-wakeup=all")
        );
        assert!(c.threads >= 1, "defaults to the CPUs of the affinity mask");
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(matches!(
            config(&["--close-timeout", "0s"]),
            Err(ConfigError::TimeoutOutOfRange)
        ));
        assert!(matches!(
            config(&["--handshake-timeout", "1000000years"]),
            Err(ConfigError::TimeoutOutOfRange)
        ));
        assert!(config(&["--handshake-timeout", "500ms"]).is_ok());
    }

    #[test]
    fn the_message_limit_is_bounded() {
        for bad in ["124", "2GiB"] {
            assert!(matches!(
                config(&["--max-message", bad]),
                Err(ConfigError::MaxMessageOutOfRange)
            ));
        }
        assert!(config(&["--max-message", "125"]).is_ok());
        assert!(config(&["--max-message", "1GiB"]).is_ok());
    }

    #[test]
    fn the_startup_line_names_the_uring_features_in_use() {
        let bound = "127.0.0.1:1".parse().unwrap();
        let c = config(&["--io", "uring", "--uring-features", "none"]).unwrap();
        assert_eq!(c.uring_features, FeatureSet::NONE);
        assert!(
            c.startup_line(bound, "1")
                .contains("io=uring uring-features=none")
        );
        let c = config(&["--uring-features", "buf-ring"]).unwrap();
        assert_eq!(c.uring_features, FeatureSet::NONE, "epoll uses none");
        assert!(!c.startup_line(bound, "1").contains("uring-features"));
        assert!(Args::try_parse_from(["wschat", "--uring-features", "bogus"]).is_err());
    }

    #[test]
    fn max_conns_cannot_exceed_the_fd_limit() {
        assert!(matches!(
            config(&["--max-conns", "100000000"]),
            Err(ConfigError::MaxConnsOverFdLimit { .. })
        ));
        let c = config(&[]).unwrap();
        assert_eq!(c.max_conns as u64, c.fd_limit.soft - FD_RESERVE);
    }
}
