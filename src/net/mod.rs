//! Sockets before the reactor owns them: listeners with an explicit backlog, accepting one
//! connection, and per connection options.
//!
//! Owns: how a listening socket is made (SO_REUSEADDR, optional SO_REUSEPORT, the backlog
//! and what the kernel really grants), how a connection is accepted (accept4 with
//! NONBLOCK|CLOEXEC) and what an accept error means ([`AcceptError`]), and TCP_NODELAY on
//! accepted sockets.
//! Must never: read or write payload bytes, block, use `unsafe` (socket2 wraps the system
//! calls), or import anything from the rest of the crate: `io/` builds on it.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Protocol, Socket, Type};

mod accept;

pub use accept::{AcceptError, accept_nonblocking};

/// Where Linux caps every listen() backlog.
const SOMAXCONN_PATH: &str = "/proc/sys/net/core/somaxconn";

/// The backlog as asked for and as the kernel applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub requested: u32,
    /// `net.core.somaxconn`, if readable.
    pub somaxconn: Option<u32>,
}

impl Backlog {
    pub fn new(requested: u32) -> Backlog {
        let somaxconn = std::fs::read_to_string(SOMAXCONN_PATH)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Backlog {
            requested,
            somaxconn,
        }
    }

    /// The accept queue length the kernel uses: min(requested, somaxconn) (listen(2)).
    pub fn granted(&self) -> u32 {
        self.somaxconn
            .map_or(self.requested, |max| self.requested.min(max))
    }

    /// Whether somaxconn silently cut the request.
    pub fn is_capped(&self) -> bool {
        self.granted() < self.requested
    }
}

/// Binds a non-blocking listener on `addr`. With `reuse_port`, several listeners may bind
/// the same address and the kernel spreads connections over their separate accept queues.
pub fn bind_listener(
    addr: SocketAddr,
    backlog: &Backlog,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    let kind = Type::STREAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::for_address(addr), kind, Some(Protocol::TCP))?;
    // Restarting the server must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    // listen() takes an int; the kernel caps it at somaxconn anyway.
    socket.listen(backlog.requested.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Options every accepted connection gets. Nagle's algorithm would hold a small frame back
/// until the previous one is acknowledged, which turns chat fan-out into 40 ms stalls; we
/// batch writes ourselves (one writev per loop iteration), so it is off unless asked for.
/// Measured (results/experiments/nagle/2026-12-06/README.md): with `--no-nodelay`, a receiver
/// that answers what it gets and is sent two messages in two loop iterations waited past
/// 30 ms on 289 of 300 round trips (p50 42 ms); with TCP_NODELAY on 0 of 300.
pub fn configure_stream(stream: &TcpStream, nodelay: bool) -> io::Result<()> {
    if nodelay {
        stream.set_nodelay(true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_backlog_is_capped_by_somaxconn() {
        let b = Backlog {
            requested: 4096,
            somaxconn: Some(128),
        };
        assert_eq!(b.granted(), 128);
        assert!(b.is_capped());
        let b = Backlog {
            requested: 64,
            somaxconn: Some(4096),
        };
        assert_eq!(b.granted(), 64);
        assert!(!b.is_capped());
    }
}
