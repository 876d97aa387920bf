//! The validated, effective configuration: what the server will really do, including what
//! the kernel grants (backlog, descriptor limit). The start-up line is printed from it.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::cli::{Args, IoKind, PatternKind};
use crate::io::sys::{FdLimit, raise_fd_limit};
use crate::io::uring::{self, FeatureSet};
use crate::net::Backlog;
use crate::ws::Limits;

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
    pub max_outbound: usize,
    pub stats_interval: Option<Duration>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the open-file limit: {0}")]
    FdLimit(#[source] std::io::Error),
    #[error(
        "--max-conns {requested} exceeds what the open-file limit allows ({allowed}); raise the hard limit (ulimit -Hn) or lower --max-conns"
    )]
    MaxConnsOverFdLimit { requested: u64, allowed: u64 },
    #[error("--max-message must be at least 125 bytes (a control frame's payload)")]
    MaxMessageTooSmall,
    #[error("--close-timeout and --handshake-timeout must be between 1ms and 24h")]
    TimeoutOutOfRange,
    #[error(transparent)]
    UringUnavailable(#[from] uring::Unavailable),
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
        if args.max_message < 125 {
            return Err(ConfigError::MaxMessageTooSmall);
        }
        // Deadlines are `now + timeout`: bounding the timeout keeps that sum representable.
        let in_range = |d: Duration| (Duration::from_millis(1)..=MAX_TIMEOUT).contains(&d);
        if !in_range(args.close_timeout) || !in_range(args.handshake_timeout) {
            return Err(ConfigError::TimeoutOutOfRange);
        }
        // Probed here, so that an unusable io_uring stops the server before it binds, and the
        // start-up line shows what is really in use.
        let uring_features = match args.io {
            IoKind::Uring => uring::probe()?
                .features
                .intersect(args.uring_features)
                .consistent(),
            IoKind::Epoll => FeatureSet::NONE,
        };
        Ok(Config {
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
        )
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("wschat").chain(args.iter().copied());
        Config::from_args(Args::try_parse_from(argv).unwrap())
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
