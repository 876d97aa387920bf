//! The epoll reactor: edge-triggered, every socket registered once.
//!
//! Connections are registered for READ|WRITE|RDHUP edges at accept and never modified, so a
//! flush costs no `epoll_ctl`: "wants to write" is just "outbox not empty", and a short write
//! waits for the next WRITE edge. Edge-triggered means a source must be drained until EAGAIN
//! or until a named budget stops it; a budget-stopped source goes on `ready` and is served by
//! the next `poll` without waiting for an edge that would never come.
//!
//! epoll is used through a thin libc wrapper rather than mio so that one implementation can
//! offer what mio hides (EPOLLEXCLUSIVE for the shared-listener pattern, RDHUP to skip a read).

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::accept::{Burst, accept_burst};
use super::sys::syscall;
use super::{
    AcceptWakeup, ConnId, Event, IoCounters, ListenerId, Outbox, Reactor, SendOutcome, Waker,
};

/// Bytes read from one connection per wake-up before the others get their turn.
const READ_BUDGET_BYTES: usize = 256 * 1024;
/// The per-thread read buffer; one read takes up to this much.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// epoll_wait returns at most this many events per call.
const EVENTS_PER_WAIT: usize = 1024;
/// Slices per sendmsg; Linux's IOV_MAX.
const IOV_MAX: usize = 1024;

/// epoll user data: connections use their key; listeners and the waker use the top bit.
const LISTENER_TAG: u64 = 1 << 63;
const WAKER_TOKEN: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
enum Source {
    Listener(usize),
    Conn(ConnId),
}

/// A registered connection.
#[derive(Debug)]
struct ConnSlot {
    stream: TcpStream,
    /// `pause_reading` is in force.
    paused: bool,
    /// An input edge arrived (or a budget stopped a read) while paused: on resume the
    /// connection goes on `ready`, since that edge will not come again.
    unread: bool,
}

/// One thread's epoll instance and the sockets registered in it.
pub struct EpollReactor {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
    listeners: Vec<Option<TcpListener>>,
    conns: Vec<Option<ConnSlot>>,
    /// Sources stopped by a budget, served by the next poll.
    ready: Vec<Source>,
    read_buf: Box<[u8]>,
    iov: Vec<libc::iovec>,
    waker: Waker,
    counters: IoCounters,
}

impl EpollReactor {
    /// A reactor that `waker` interrupts.
    pub fn new(waker: Waker) -> io::Result<EpollReactor> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut reactor = EpollReactor {
            epoll,
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            listeners: Vec::new(),
            conns: Vec::new(),
            ready: Vec::new(),
            read_buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            iov: Vec::with_capacity(IOV_MAX),
            waker,
            counters: IoCounters::default(),
        };
        let waker_fd = reactor.waker.raw_fd();
        reactor.register(waker_fd, libc::EPOLLIN | libc::EPOLLET, WAKER_TOKEN)?;
        Ok(reactor)
    }

    fn register(&mut self, fd: i32, flags: i32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        self.counters.epoll_ctl += 1;
        // SAFETY: `event` is a valid epoll_event; `fd` is open for the duration of the call.
        syscall!(epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            &mut event
        ))?;
        Ok(())
    }

    /// Accepts until EAGAIN or the budget. `on_edge` is true when an epoll event (not the
    /// ready list) brought us here: only then is an empty first accept a futile wake-up.
    fn accept_from(&mut self, index: usize, on_edge: bool, on_event: &mut dyn FnMut(Event<'_>)) {
        let Some(Some(listener)) = self.listeners.get(index) else {
            return;
        };
        match accept_burst(listener, ListenerId(index), on_event) {
            Burst::Drained { accepted: 0 } if on_edge => self.counters.futile_accepts += 1,
            Burst::Drained { .. } | Burst::Failed => {}
            Burst::Budget => self.ready.push(Source::Listener(index)),
        }
    }

    /// Reads until EAGAIN, EOF or the budget. A read shorter than the buffer means the socket
    /// was drained, and any later arrival raises a new edge, so we stop there and save the
    /// EAGAIN read, unless the peer's FIN was already seen (`until_eof`): then no edge will
    /// come and we must read on to the 0.
    fn read_from(&mut self, conn: ConnId, until_eof: bool, on_event: &mut dyn FnMut(Event<'_>)) {
        let Some(Some(slot)) = self.conns.get_mut(conn) else {
            return;
        };
        if slot.paused {
            slot.unread = true;
            return;
        }
        let stream = &slot.stream;
        let mut budget = READ_BUDGET_BYTES;
        loop {
            self.counters.reads += 1;
            match (&*stream).read(&mut self.read_buf) {
                Ok(0) => return on_event(Event::Eof { conn }),
                Ok(n) => {
                    on_event(Event::Received {
                        conn,
                        bytes: &self.read_buf[..n],
                    });
                    if n < self.read_buf.len() && !until_eof {
                        return;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.ready.push(Source::Conn(conn));
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return on_event(Event::Failed { conn, error }),
            }
        }
    }
}

impl Reactor for EpollReactor {
    fn add_listener(
        &mut self,
        listener: TcpListener,
        wakeup: AcceptWakeup,
    ) -> io::Result<ListenerId> {
        let index = self.listeners.len();
        // EPOLLEXCLUSIVE (Linux 4.5): of the epoll instances holding this socket with the
        // flag, the kernel wakes one that has a thread waiting, instead of all of them.
        let flags = match wakeup {
            AcceptWakeup::Sole => libc::EPOLLIN | libc::EPOLLET,
            AcceptWakeup::Exclusive => libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE,
            AcceptWakeup::All => libc::EPOLLIN | libc::EPOLLET,
        };
        self.register(listener.as_raw_fd(), flags, LISTENER_TAG | index as u64)?;
        self.listeners.push(Some(listener));
        Ok(ListenerId(index))
    }

    fn close_listeners(&mut self) {
        for listener in self.listeners.iter_mut().filter_map(Option::take) {
            // Deregister first: closing our descriptor removes the registration only when it
            // is the socket's last one, and multi-accept's loops each hold a dup of one
            // socket, so a loop that had stopped could otherwise still be woken (and, with
            // EPOLLEXCLUSIVE, take a wake-up meant for a loop that still accepts).
            self.counters.epoll_ctl += 1;
            // SAFETY: a null event is allowed for EPOLL_CTL_DEL (Linux 2.6.9+); the
            // descriptor is open until `listener` drops below.
            let _ = syscall!(epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                listener.as_raw_fd(),
                std::ptr::null_mut()
            ));
        }
    }

    fn resume_accepting(&mut self, listener: ListenerId) {
        self.ready.push(Source::Listener(listener.0));
    }

    fn reserve_conns(&mut self, conns: usize) {
        self.conns.reserve(conns);
    }

    fn add_conn(&mut self, conn: ConnId, stream: TcpStream) -> io::Result<()> {
        let flags = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        self.register(stream.as_raw_fd(), flags, conn as u64)?;
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, || None);
        }
        self.conns[conn] = Some(ConnSlot {
            stream,
            paused: false,
            unread: false,
        });
        Ok(())
    }

    fn pause_reading(&mut self, conn: ConnId) {
        if let Some(Some(slot)) = self.conns.get_mut(conn) {
            slot.paused = true;
        }
    }

    fn resume_reading(&mut self, conn: ConnId) {
        if let Some(Some(slot)) = self.conns.get_mut(conn) {
            slot.paused = false;
            if std::mem::take(&mut slot.unread) {
                self.ready.push(Source::Conn(conn));
            }
        }
    }

    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        let timeout_ms = if !self.ready.is_empty() {
            0
        } else {
            // Round up: waking before a deadline would only spin.
            timeout.map_or(-1, |d| {
                d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            })
        };
        self.events.clear();
        // SAFETY: the buffer has room for EVENTS_PER_WAIT events, and epoll_wait writes at
        // most that many.
        let n = match syscall!(epoll_wait(
            self.epoll.as_raw_fd(),
            self.events.as_mut_ptr(),
            EVENTS_PER_WAIT as i32,
            timeout_ms
        )) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        // SAFETY: epoll_wait initialised the first `n` entries.
        unsafe { self.events.set_len(n) };
        self.counters.wakeups += 1;

        for source in std::mem::take(&mut self.ready) {
            match source {
                Source::Listener(index) => self.accept_from(index, false, on_event),
                Source::Conn(conn) => self.read_from(conn, true, on_event),
            }
        }
        for i in 0..n {
            let event = self.events[i];
            let (flags, token) = (event.events as i32, event.u64);
            if token == WAKER_TOKEN {
                self.waker.drain();
                on_event(Event::Wake);
            } else if token & LISTENER_TAG != 0 {
                self.counters.listener_wakeups += 1;
                self.accept_from((token & !LISTENER_TAG) as usize, true, on_event);
            } else {
                let conn = token as ConnId;
                let hangup = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0;
                if flags & libc::EPOLLIN != 0 || hangup {
                    self.read_from(conn, hangup, on_event);
                }
                if flags & libc::EPOLLOUT != 0 {
                    on_event(Event::Writable { conn });
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, conn: ConnId, outbox: &mut Outbox) -> io::Result<SendOutcome> {
        let Some(Some(ConnSlot { stream, .. })) = self.conns.get(conn) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut outcome = SendOutcome::default();
        while !outbox.is_empty() {
            self.iov.clear();
            let mut offered = 0;
            for slice in outbox.slices().take(IOV_MAX) {
                self.iov.push(libc::iovec {
                    iov_base: slice.as_ptr() as *mut _,
                    iov_len: slice.len(),
                });
                offered += slice.len();
            }
            // SAFETY: msghdr is plain data; all-zero is a valid empty header.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = self.iov.as_mut_ptr();
            msg.msg_iovlen = self.iov.len();
            self.counters.sendmsg += 1;
            // sendmsg is writev plus flags: MSG_NOSIGNAL turns a write to a reset connection
            // into EPIPE instead of a process-killing SIGPIPE.
            // SAFETY: every iovec points into a frame owned by `outbox`, which is borrowed
            // for the whole call and not modified until it returns.
            match syscall!(sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)) {
                Ok(written) => {
                    let written = written as usize;
                    outcome.bytes += written;
                    outcome.frames += outbox.advance(written);
                    if written < offered {
                        break; // the send buffer is full: wait for the WRITE edge
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    fn shutdown_write(&mut self, conn: ConnId) {
        if let Some(Some(ConnSlot { stream, .. })) = self.conns.get(conn) {
            // Fails only if the peer already reset the connection; closing follows anyway.
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }

    fn close(&mut self, conn: ConnId) {
        // Dropping the only descriptor closes it and removes it from the epoll set; a stale
        // entry on `ready` for this key just reads EAGAIN (or the next owner's bytes).
        if let Some(slot) = self.conns.get_mut(conn) {
            *slot = None;
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}
