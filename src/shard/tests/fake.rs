//! A reactor with no kernel behind it, for driving a shard step by step: each connection is
//! an in-memory pair of byte queues whose readiness the test scripts (input arriving, a
//! send buffer that takes only so much, FIN, reset), and time is virtual.
//!
//! Owns: the virtual clock of the calling thread, and every fake connection's bytes in both
//! directions. Must never: block, or make the shard wait for wall-clock time: `poll` reports
//! what is ready or returns idle at once, and time moves only when a test advances it.
//!
//! An accepted connection needs a `TcpStream` (the reactor trait hands sockets over as
//! such), so each fake connection carries a real loopback socket as its token; no byte is
//! ever read from or written to it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::io::{
    AcceptWakeup, ConnId, Event, IoCounters, ListenerId, Outbox, Reactor, SendOutcome, Waker,
};

thread_local! {
    /// This test thread's virtual time (each test runs on its own thread).
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The virtual clock: starts at the first reading and moves only through [`advance`].
pub fn now() -> Instant {
    NOW.with(|now| match now.get() {
        Some(t) => t,
        None => {
            let t = Instant::now();
            now.set(Some(t));
            t
        }
    })
}

/// Moves the virtual clock forward.
pub fn advance(by: Duration) {
    let t = now() + by;
    NOW.with(|now| now.set(Some(t)));
}

/// A fake connection's id as the test knows it (the shard's key is found at `add_conn`).
pub type ClientId = usize;

/// The reading size of one `Received`: what one read of the per-thread buffer gives.
const READ_SIZE: usize = 64 * 1024;

/// One fake connection, seen from the network.
#[derive(Debug, Default)]
pub struct Wire {
    /// What the client sent and the shard has not yet been given.
    pub to_server: VecDeque<u8>,
    /// What the shard sent and the client has not yet taken.
    pub to_client: Vec<u8>,
    /// The client sent FIN (reported once `to_server` is drained).
    pub client_fin: bool,
    fin_reported: bool,
    /// The client reset the connection: reported as `Failed`, sends fail.
    pub reset: bool,
    reset_reported: bool,
    /// How many more bytes the send buffer takes (`None`: all).
    pub window: Option<usize>,
    /// The window grew after a send was cut short: a `Writable` is due.
    writable_due: bool,
    /// A send found the window too small (so the next growth is an edge).
    blocked: bool,
    /// Completion-based sends ([`Net::completions`]): the bytes of the send in flight, and
    /// those of one completed but not yet settled by the next `send`.
    in_flight: Option<usize>,
    completed: Option<usize>,
    pub reading_paused: bool,
    pub server_fin: bool,
    pub closed: bool,
}

/// The network behind a [`FakeReactor`], shared with the test that scripts it.
#[derive(Debug, Default)]
pub struct Net {
    pub wires: BTreeMap<ClientId, Wire>,
    /// The shard's key for each client, once registered.
    pub keys: BTreeMap<ConnId, ClientId>,
    /// Connections waiting in the accept queue.
    accept_queue: VecDeque<(ClientId, TcpStream, SocketAddr)>,
    /// Tokens handed to the shard, by descriptor, until `add_conn` names their key.
    tokens: BTreeMap<i32, ClientId>,
    /// Accepting fails with this many EMFILEs before it works again.
    pub accept_failures: usize,
    listener_paused: bool,
    listeners_closed: bool,
    /// The last `poll` found nothing to report.
    pub idle: bool,
    /// Sends complete as io_uring's do: a send hands the outbox's bytes over and marks them
    /// in flight, the next `poll` reports its completion (`Writable`), and the next `send`
    /// settles it in the outbox. Otherwise a send writes at once, as epoll's writev does.
    pub completions: bool,
    /// The most frames an outbox held when the shard called `send`, in flight or not.
    pub outbox_frames_max: usize,
    counters: IoCounters,
}

impl Net {
    pub fn wire(&mut self, client: ClientId) -> &mut Wire {
        self.wires.entry(client).or_default()
    }

    /// Lets `n` more bytes into the client's send buffer (all, if `None`); an edge follows
    /// if a send was cut short.
    pub fn open_window(&mut self, client: ClientId, n: Option<usize>) {
        let wire = self.wire(client);
        wire.window = match (wire.window, n) {
            (Some(w), Some(n)) => Some(w + n),
            _ => None,
        };
        if wire.blocked {
            wire.blocked = false;
            wire.writable_due = true;
        }
    }

    /// The shard's key for `client`, while it holds the connection.
    pub fn key(&self, client: ClientId) -> Option<ConnId> {
        self.keys
            .iter()
            .find(|(_, c)| **c == client)
            .map(|(key, _)| *key)
    }
}

/// Makes the loopback sockets that stand for accepted connections.
#[derive(Debug)]
pub struct Tokens {
    listener: TcpListener,
    /// The client ends, kept open so that the server ends stay valid sockets.
    clients: Vec<TcpStream>,
}

thread_local! {
    /// Held by a test thread that made tokens, until the test ends (its thread exits), so
    /// that tests counting the process's descriptors do not see them. Once per thread: a
    /// second read lock on one thread could wait behind a waiting writer forever.
    static DESCRIPTORS_HELD: RefCell<Option<std::sync::RwLockReadGuard<'static, ()>>> =
        const { RefCell::new(None) };
}

impl Tokens {
    pub fn new() -> Tokens {
        hold_descriptors();
        Tokens {
            listener: TcpListener::bind("127.0.0.1:0").expect("binding a loopback listener"),
            clients: Vec::new(),
        }
    }

    fn make(&mut self) -> TcpStream {
        let addr = self.listener.local_addr().expect("listener address");
        self.clients
            .push(TcpStream::connect(addr).expect("connecting on loopback"));
        self.listener.accept().expect("accepting on loopback").0
    }
}

/// Keeps tests that count the process's descriptors waiting until this test ends: call it
/// before opening any (an eventfd, a socket).
pub fn hold_descriptors() {
    DESCRIPTORS_HELD.with(|held| {
        held.borrow_mut().get_or_insert_with(|| {
            crate::io::DESCRIPTORS
                .read()
                .unwrap_or_else(|e| e.into_inner())
        });
    });
}

pub struct FakeReactor {
    pub net: Rc<RefCell<Net>>,
    waker: Waker,
}

impl FakeReactor {
    pub fn new(waker: Waker) -> FakeReactor {
        FakeReactor {
            net: Rc::new(RefCell::new(Net::default())),
            waker,
        }
    }
}

/// Queues a new connection from `client` (whose address is `peer`) for the shard to accept.
pub fn queue_accept(net: &mut Net, tokens: &mut Tokens, client: ClientId, peer: SocketAddr) {
    let stream = tokens.make();
    net.tokens.insert(stream.as_raw_fd(), client);
    net.wire(client);
    net.accept_queue.push_back((client, stream, peer));
}

impl Reactor for FakeReactor {
    fn add_listener(&mut self, _: TcpListener, _: AcceptWakeup) -> io::Result<ListenerId> {
        Ok(ListenerId(0))
    }

    fn close_listeners(&mut self) {
        let mut net = self.net.borrow_mut();
        net.listeners_closed = true;
        net.accept_queue.clear();
    }

    fn resume_accepting(&mut self, _: ListenerId) {
        self.net.borrow_mut().listener_paused = false;
    }

    fn add_conn(&mut self, conn: ConnId, stream: TcpStream) -> io::Result<()> {
        let mut net = self.net.borrow_mut();
        let client = net
            .tokens
            .remove(&stream.as_raw_fd())
            .ok_or_else(|| io::Error::other("fake reactor: an unknown socket"))?;
        net.keys.insert(conn, client);
        Ok(())
    }

    fn pause_reading(&mut self, conn: ConnId) {
        let mut net = self.net.borrow_mut();
        if let Some(client) = net.keys.get(&conn).copied() {
            net.wire(client).reading_paused = true;
        }
    }

    fn resume_reading(&mut self, conn: ConnId) {
        let mut net = self.net.borrow_mut();
        if let Some(client) = net.keys.get(&conn).copied() {
            net.wire(client).reading_paused = false;
        }
    }

    /// Reports, in order: pending accepts (or a scripted failure), a wake-up if one was
    /// signalled, then per connection (by key) its input, FIN, reset and writability.
    /// Never waits: with nothing to report it returns at once and marks the net idle.
    fn poll(
        &mut self,
        _timeout: Option<Duration>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        let mut reported = false;
        self.net.borrow_mut().counters.wakeups += 1;
        if self.waker.drain() {
            reported = true;
            on_event(Event::Wake);
        }
        loop {
            let mut net = self.net.borrow_mut();
            if net.listener_paused || net.listeners_closed {
                break;
            }
            if net.accept_failures > 0 && !net.accept_queue.is_empty() {
                net.accept_failures -= 1;
                net.listener_paused = true;
                drop(net);
                reported = true;
                on_event(Event::AcceptFailed {
                    listener: ListenerId(0),
                    error: io::Error::from_raw_os_error(24), // EMFILE
                });
                break;
            }
            let Some((_, stream, peer)) = net.accept_queue.pop_front() else {
                break;
            };
            drop(net);
            reported = true;
            on_event(Event::Accepted {
                listener: ListenerId(0),
                stream,
                peer,
            });
        }
        let keys: Vec<(ConnId, ClientId)> = self
            .net
            .borrow()
            .keys
            .iter()
            .map(|(k, c)| (*k, *c))
            .collect();
        let mut buf = Vec::new();
        for (conn, client) in keys {
            let mut net = self.net.borrow_mut();
            let wire = net.wire(client);
            if wire.closed {
                continue;
            }
            if wire.reset && !wire.reset_reported {
                wire.reset_reported = true;
                drop(net);
                reported = true;
                on_event(Event::Failed {
                    conn,
                    error: io::ErrorKind::ConnectionReset.into(),
                });
                continue;
            }
            // A send that found no room waits, as in the kernel, until the window opens.
            if let Some(sent) = wire.in_flight.filter(|&n| n > 0 || !wire.blocked) {
                wire.in_flight = None;
                wire.completed = Some(sent);
                wire.writable_due = true;
            }
            if wire.writable_due {
                wire.writable_due = false;
                drop(net);
                reported = true;
                on_event(Event::Writable { conn });
                net = self.net.borrow_mut();
            }
            let wire = net.wire(client);
            if wire.reading_paused {
                continue;
            }
            if !wire.to_server.is_empty() {
                let n = wire.to_server.len().min(READ_SIZE);
                buf.clear();
                buf.extend(wire.to_server.drain(..n));
                net.counters.reads += 1;
                drop(net);
                reported = true;
                on_event(Event::Received { conn, bytes: &buf });
                continue;
            }
            if wire.client_fin && !wire.fin_reported {
                wire.fin_reported = true;
                drop(net);
                reported = true;
                on_event(Event::Eof { conn });
            }
        }
        self.net.borrow_mut().idle = !reported;
        Ok(())
    }

    fn send(&mut self, conn: ConnId, outbox: &mut Outbox) -> io::Result<SendOutcome> {
        let mut net = self.net.borrow_mut();
        let client = *net
            .keys
            .get(&conn)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        net.outbox_frames_max = net.outbox_frames_max.max(outbox.pending().count());
        let completions = net.completions;
        let wire = net.wire(client);
        if wire.reset {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut outcome = SendOutcome::default();
        if completions {
            if wire.in_flight.is_some() {
                return Ok(outcome); // its completion reports Writable
            }
            let (bytes, frames) = outbox.complete_in_flight(wire.completed.take().unwrap_or(0));
            outcome = SendOutcome { bytes, frames };
            if outbox.is_empty() {
                return Ok(outcome);
            }
        }
        let room = wire.window.unwrap_or(usize::MAX);
        let mut taken = 0;
        for slice in outbox.slices() {
            let n = slice.len().min(room - taken);
            wire.to_client.extend_from_slice(&slice[..n]);
            taken += n;
            if taken == room {
                break;
            }
        }
        if let Some(window) = &mut wire.window {
            *window -= taken;
        }
        if taken < outbox.queued_bytes() {
            wire.blocked = true;
        }
        if completions {
            // The bytes left the outbox's hands now; the shard learns it only later.
            outbox.set_in_flight(outbox.queued_bytes());
            wire.in_flight = Some(taken);
            return Ok(outcome);
        }
        outcome.bytes = taken;
        outcome.frames = outbox.advance(taken);
        Ok(outcome)
    }

    fn shutdown_write(&mut self, conn: ConnId) {
        let mut net = self.net.borrow_mut();
        if let Some(client) = net.keys.get(&conn).copied() {
            net.wire(client).server_fin = true;
        }
    }

    fn close(&mut self, conn: ConnId) {
        let mut net = self.net.borrow_mut();
        if let Some(client) = net.keys.remove(&conn) {
            net.wire(client).closed = true;
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn counters(&self) -> IoCounters {
        self.net.borrow().counters
    }

    fn clock(&self) -> fn() -> Instant {
        now
    }
}
