//! Reactors: the only layer that makes I/O system calls, and the only one with `unsafe`.
//!
//! Owns: sockets after they are accepted, the readiness/completion mechanism, the per-thread
//! read buffer, cross-thread wake-ups, and the budgets that bound the work per wake-up.
//! Reports what happened as [`Event`]s: a connection accepted, bytes received, a connection
//! writable again, the peer gone, a wake-up. The layer above answers by handing an
//! [`Outbox`] to [`Reactor::send`]; it never sees a file descriptor.
//! Must never: parse WebSocket or HTTP, know about chat, or decide policy (what to close,
//! when to time out); it moves bytes and reports.
//!
//! The boundary is completion-shaped on purpose ("these bytes arrived", "you may send
//! again"), so that a readiness backend (epoll: read until EAGAIN, then report) and a
//! completion backend (io_uring) can sit behind the same trait.

#![allow(unsafe_code)]

mod accept;
pub mod epoll;
pub mod outbox;
pub mod signals;
pub mod sys;
pub mod uring;
pub mod waker;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use epoll::EpollReactor;
pub use outbox::Outbox;
pub use uring::UringReactor;
pub use waker::Waker;

/// Tests that count this process's descriptors hold this for writing; tests that open many
/// descriptors meanwhile hold it for reading (libtest runs the tests as threads of one
/// process, so a count would see the other tests' sockets).
#[cfg(test)]
pub(crate) static DESCRIPTORS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A connection's key, chosen by the caller when it hands the socket over (a slab index).
pub type ConnId = usize;

/// Who holds a listening socket, and how a connection's arrival wakes its holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptWakeup {
    /// This reactor alone holds the socket (single-thread, reuseport, an acceptor): accept
    /// the cheapest way (io_uring: one multishot accept).
    Sole,
    /// Several reactors hold the socket; one waiting reactor is woken per arrival (epoll's
    /// EPOLLEXCLUSIVE; io_uring: a single-shot accept re-armed after each connection, since
    /// a multishot accept keeps its place at the head of the socket's wait queue and would
    /// take every connection, which we measured).
    Exclusive,
    /// Every reactor holding the listener is woken, and all but one find nothing to accept:
    /// the thundering herd, offered so that it can be measured.
    All,
}

/// A listener's key, returned by [`Reactor::add_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerId(pub usize);

/// Something the reactor observed or did.
#[derive(Debug)]
pub enum Event<'a> {
    /// A connection was accepted (non-blocking, close-on-exec); not yet registered.
    Accepted {
        listener: ListenerId,
        stream: TcpStream,
        peer: SocketAddr,
    },
    /// Accepting failed for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM), or the
    /// listener itself failed (see [`crate::net::AcceptError`]). The listener is paused until
    /// [`Reactor::resume_accepting`]; transient errors never get here.
    AcceptFailed {
        listener: ListenerId,
        error: io::Error,
    },
    /// Bytes arrived on a connection. The slice is the reactor's read buffer: process or copy
    /// it before returning.
    Received { conn: ConnId, bytes: &'a [u8] },
    /// The connection can take more output (its send buffer drained).
    Writable { conn: ConnId },
    /// The peer finished sending (FIN).
    Eof { conn: ConnId },
    /// The connection failed (reset, or another error); it should be closed.
    Failed { conn: ConnId, error: io::Error },
    /// A [`Waker`] was signalled.
    Wake,
}

/// What one [`Reactor::send`] achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    pub bytes: usize,
    /// Frames written completely.
    pub frames: usize,
}

/// Counters the reactor keeps about its own system calls (plain integers: one owner).
#[derive(Debug, Default, Clone, Copy)]
pub struct IoCounters {
    /// Returns from the blocking wait (epoll_wait).
    pub wakeups: u64,
    /// Wake-ups that reported a listener readable.
    pub listener_wakeups: u64,
    /// Listener wake-ups whose first accept found nothing (another waiter took it).
    pub futile_accepts: u64,
    pub reads: u64,
    /// Vectored sends started: epoll, each sendmsg(2) call, counted whatever it returns
    /// (EAGAIN and errors included); io_uring, each IORING_OP_SENDMSG submitted (at most one
    /// in flight per connection; no system call of its own). One per flushed connection per
    /// loop iteration, plus one per time a full send buffer cut a flush short.
    pub sendmsg: u64,
    /// Of those, io_uring sends that named their socket by its entry in the ring's table of
    /// registered files (no fd lookup); 0 under epoll.
    pub registered_sends: u64,
    pub epoll_ctl: u64,
}

/// An event loop's view of the kernel. One per thread; not shared.
pub trait Reactor {
    /// Starts accepting on `listener` (which must be non-blocking). Several reactors may hold
    /// the same listening socket (`try_clone`); `wakeup` says how they are woken.
    fn add_listener(
        &mut self,
        listener: TcpListener,
        wakeup: AcceptWakeup,
    ) -> io::Result<ListenerId>;
    /// Stops accepting on every listener and closes them (shutdown).
    fn close_listeners(&mut self);
    /// Resumes a listener paused by [`Event::AcceptFailed`].
    fn resume_accepting(&mut self, listener: ListenerId);
    /// Takes ownership of an accepted connection under the caller's key `conn`, which must
    /// not be in use.
    fn add_conn(&mut self, conn: ConnId, stream: TcpStream) -> io::Result<()>;
    /// Stops reading `conn`: from the next `poll` on, no `Received` or `Eof` is reported for
    /// it, and what the peer sends stays in the kernel, so TCP flow control pushes back on
    /// the peer. Writing goes on. Idempotent.
    fn pause_reading(&mut self, conn: ConnId);
    /// Undoes [`Reactor::pause_reading`]: input that arrived meanwhile is reported by the next
    /// `poll` without waiting for new input. Idempotent.
    fn resume_reading(&mut self, conn: ConnId);
    /// Waits up to `timeout` (forever if `None`) and reports what happened. Work stopped by a
    /// budget is remembered and reported by the next call without waiting.
    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()>;
    /// Writes as much of `outbox` as the socket takes now, removing what was written. What is
    /// left is resumed after the next [`Event::Writable`].
    fn send(&mut self, conn: ConnId, outbox: &mut Outbox) -> io::Result<SendOutcome>;
    /// Sends FIN after the queued bytes; reading goes on.
    fn shutdown_write(&mut self, conn: ConnId);
    /// Closes the connection; its key may be reused at once.
    fn close(&mut self, conn: ConnId);
    /// A handle other threads use to interrupt [`Reactor::poll`].
    fn waker(&self) -> Waker;
    /// The clock that [`Reactor::poll`]'s timeouts run on, which the loop reads once per
    /// wake-up: the system's monotonic clock, or a test reactor's virtual time.
    fn clock(&self) -> fn() -> Instant {
        Instant::now
    }
    /// Reserves room for `conns` connections at once (address space: pages are touched as
    /// connections come), so that per-connection tables do not grow by copying, which
    /// leaves the outgrown copies in the thread's malloc arena.
    fn reserve_conns(&mut self, _conns: usize) {}
    fn counters(&self) -> IoCounters;
}
