//! A shard: one event loop owning a set of connections, the only code that touches both the
//! reactor (`io/`) and the protocol (`ws/`, `chat/`).
//!
//! One iteration of the loop:
//! ```text
//!   poll(timeout = next deadline) ──> for each event: feed ws, run chat, queue frames
//!        ^                                   on receivers' outboxes, mark them dirty
//!        |                           register accepted sockets; fire due deadlines
//!        └──── flush: one writev per dirty connection; end finished connections
//! ```
//! Output is corked for the whole iteration: every ready event is handled first, and each
//! dirty connection is flushed once at the end (DESIGN.md, "The hot path"). What is queued
//! before that flush is bounded: past `FANOUT_PER_ITERATION` receiver deliveries the loop
//! takes no more events (the connections that have some are deferred and not read) and
//! delivers peer batches in slices; the next iteration starts with what was left, oldest
//! first, before anything new.
//!
//! Owns: connections (ws state, outbox, role), the chat state of its members, deadlines,
//! and this thread's counters. Must never: block other than in `poll`, or make a syscall
//! except through the reactor.
//!
//! A server has one shard or several; what they share is in [`Hub`]. A room delivery planned
//! here is queued for this shard's members at once and handed to the shard's peers
//! ([`crate::peer::Peer`]: the other shards, and with `--cluster` the broker) in one batch
//! per iteration (hub.rs says why every shard gets every batch). Peers also see joins,
//! leaves and renames, may make a join wait for its room (the broker's subscription), and
//! may answer `/who`; the loop asks every peer the same way and never which kind it is.
//! A shard may also hand its members' messages to workers ([`Shard::offload`], work.rs) and
//! apply what they return.

pub mod acceptor;
pub mod heartbeat;
pub mod hub;
pub mod inbox;
mod tls_link;
pub mod work;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

pub use acceptor::Acceptor;
pub use hub::Hub;
pub use inbox::{Inbox, InboxMsg};
pub use work::{WorkDone, WorkItem, WorkQueue};

use crate::chat::{self, Audience, Chat, Delivery, Intent, Name, RoomName, Route};
use crate::config::Config;
use crate::io::{AcceptWakeup, ConnId, Event, ListenerId, Outbox, Reactor};
use crate::net;
use crate::peer::Batch;
pub use crate::peer::MemberId;
use crate::stats::{StatsRegistry, ThreadStats, bump, set};
use crate::ws::Event as WsEvent;
use crate::ws::deflate::Compressor;
use crate::ws::handshake::http_response;
use crate::ws::{
    CloseCode, Connection, Finish, HandshakeError, Message, OutMessage, Request, SharedFrame,
};
use heartbeat::HeartbeatWheel;
use tls_link::TlsLink;

/// How long accepting pauses after running out of descriptors or memory: long enough for
/// some connections to close, short enough that a burst of 503s is not needed.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Receiver deliveries (a frame queued on one outbox) a loop plans in one iteration before
/// it stops taking messages until it has flushed: 16 bytes of outbox each, so about 4 MiB.
/// Without it one read of tiny messages in a big room (9,000 messages to 1,000 members)
/// queued 150 MiB of references before the first flush. At 245,000 deliveries a second a
/// loop iteration plans far fewer.
const FANOUT_PER_ITERATION: usize = 1 << 18;
/// A continuous run of pauses is reported on stderr about this often.
const ACCEPT_PAUSE_REPORT: Duration = Duration::from_secs(10);
/// The header of a 101 that names the thread (its id in `/stats`) serving the connection,
/// so that a client, or a test, can see where the kernel and the pattern placed it.
pub const THREAD_HEADER: &str = "X-Wschat-Thread";

/// What a connection is, once its request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Before the request head is answered.
    Pending,
    /// A plain HTTP exchange (page, stats, error).
    Http,
    /// `/echo`.
    Echo,
    /// A chat member.
    Member,
}

#[derive(Debug)]
struct Conn {
    ws: Connection,
    /// Bytes for the socket: frames, or TLS records when `tls` is set.
    outbox: Outbox,
    /// With --tls-*: the session between the socket and `ws`, and the frames it will seal.
    tls: Option<Box<TlsLink>>,
    peer: SocketAddr,
    role: Role,
    /// Accepted beyond --max-conns: its request gets 503.
    over_capacity: bool,
    /// Tells this connection from an earlier one with the same key (work results).
    serial: u64,
    /// Its last message is with a worker: no further event is taken until it returns.
    awaiting_work: bool,
    /// The loop's fan-out budget ran out with events of this connection still to take: they
    /// are taken next iteration, after the flush, and the socket is not read meanwhile.
    deferred: bool,
    /// The reactor was told to stop reading it (follows `awaiting_work || deferred` at each
    /// flush).
    reading_paused: bool,
    /// When the last complete message or control frame (a pong included) arrived, or the
    /// upgrade was done.
    last_heard: Instant,
    /// Since when part of a message has been in and its last frame not (see
    /// `fire_heartbeats`: a message may stay open for at most --idle-timeout).
    message_since: Option<Instant>,
    /// A heartbeat ping went out since `last_heard`.
    pinged: bool,
    /// On the `dirty` list already.
    dirty: bool,
    /// The peer will send nothing more (FIN or error).
    peer_done: bool,
    /// We sent FIN.
    write_shut: bool,
    /// When the transport is dropped at the latest once the session has finished.
    linger_deadline: Option<Instant>,
    /// The deadline this connection has in the timer heap (older entries are stale).
    armed: Option<Instant>,
}

impl Conn {
    /// Queues a frame for the peer (as plaintext to seal, over TLS).
    fn push(&mut self, frame: SharedFrame) {
        match &mut self.tls {
            Some(tls) => tls.push(frame),
            None => self.outbox.push(frame),
        }
    }

    /// Bytes queued for the peer and not yet sent.
    fn queued_bytes(&self) -> usize {
        self.outbox.queued_bytes() + self.tls.as_ref().map_or(0, |tls| tls.queued_bytes())
    }

    /// Bytes queued for the peer and not yet handed to the kernel: what --max-outbound
    /// bounds. A completion backend (io_uring) has the front of the outbox in flight from
    /// the moment it submits, as a readiness backend's writev would have had it copied.
    fn backlog(&self) -> usize {
        self.queued_bytes() - self.outbox.in_flight()
    }

    /// Since when a message has been open, at `now`, after input was fed.
    fn note_message_progress(&mut self, now: Instant) {
        self.message_since = if self.ws.message_in_progress() {
            Some(self.message_since.unwrap_or(now))
        } else {
            None
        };
    }

    /// The slow-consumer cut: frames not yet started go (over TLS: those not yet sealed).
    fn drop_unstarted(&mut self) {
        match &mut self.tls {
            Some(tls) => tls.drop_unstarted(),
            None => {
                self.outbox.drop_unstarted();
            }
        }
    }
}

/// An accepted upgrade whose 101 waits until every peer that asked it to wait lets joins to
/// its room complete (`--cluster`: the room's SUBSCRIBE reply).
#[derive(Debug)]
struct Parked {
    conn: ConnId,
    serial: u64,
    room: RoomName,
    name: Option<Name>,
    /// Peers whose `RoomReady` is still to come.
    waiting: usize,
}

/// Everything but the reactor, so that reactor callbacks can borrow it mutably.
struct State {
    config: Arc<Config>,
    /// This shard's index in the hub.
    index: usize,
    hub: Arc<Hub>,
    conns: Slab<Conn>,
    next_serial: u64,
    chat: Chat<MemberId>,
    /// Connections to flush and re-examine at the end of the iteration, in the order they
    /// became dirty: the receivers of the iteration's first message are flushed first.
    dirty: VecDeque<ConnId>,
    accepted: Vec<(TcpStream, SocketAddr)>,
    paused_listeners: Vec<(Instant, ListenerId)>,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    deliveries: Vec<Delivery<MemberId>>,
    /// Room deliveries planned here in this iteration, for the peers (the other shards, and
    /// the broker with `--cluster`).
    to_peers: Vec<Delivery<MemberId>>,
    /// Upgrades waiting for their room to be ready at every peer (`InboxMsg::RoomReady`).
    parked: Vec<Parked>,
    /// Set by `offload`: members' messages go to workers.
    work: Option<WorkQueue>,
    /// Receiver deliveries planned in this iteration (see `FANOUT_PER_ITERATION`).
    fanout: usize,
    /// Connections whose events wait for the next iteration's budget, oldest first.
    deferred: Vec<ConnId>,
    /// Peer batches not yet delivered here, oldest first, each with the index of its next
    /// delivery: taken before any new event, so that a reply never overtakes what it answers.
    peer_batches: VecDeque<(Arc<[Delivery<MemberId>]>, usize)>,
    /// `fan_out` is running (see there).
    fanning_out: bool,
    /// Decrypted input of one read (TLS), reused.
    plaintext: Vec<u8>,
    inbox_batch: Vec<InboxMsg>,
    stats: Arc<ThreadStats>,
    registry: Arc<StatsRegistry>,
    stopping: bool,
    /// When a stopping shard gives up on unfinished closing handshakes.
    stop_deadline: Option<Instant>,
    listeners_closed: bool,
    /// Open connections' heartbeat deadlines (None: heartbeats off).
    heartbeats: Option<HeartbeatWheel>,
    heartbeats_due: Vec<heartbeat::Entry>,
    /// Compresses messages for this shard's deflate receivers (its zlib state is allocated
    /// on first use and reused for every message).
    compressor: Compressor,
    now: Instant,
}

/// One event loop and the connections it owns.
pub struct Shard<R: Reactor> {
    io: R,
    state: State,
}

impl<R: Reactor> Shard<R> {
    /// Shard `index` of `hub`: `io` must have been opened with `hub`'s waker for `index`, so
    /// that what others push to this shard's inbox wakes this reactor.
    pub fn new(
        io: R,
        index: usize,
        hub: Arc<Hub>,
        config: Arc<Config>,
        stats: Arc<ThreadStats>,
        registry: Arc<StatsRegistry>,
    ) -> Shard<R> {
        let now = Instant::now();
        Shard {
            io,
            state: State {
                index,
                hub,
                conns: Slab::new(),
                next_serial: 0,
                chat: Chat::default(),
                dirty: VecDeque::new(),
                accepted: Vec::new(),
                paused_listeners: Vec::new(),
                timers: BinaryHeap::new(),
                deliveries: Vec::new(),
                to_peers: Vec::new(),
                parked: Vec::new(),
                work: None,
                fanout: 0,
                deferred: Vec::new(),
                peer_batches: VecDeque::new(),
                fanning_out: false,
                plaintext: Vec::new(),
                inbox_batch: Vec::new(),
                heartbeats: config
                    .heartbeat
                    .shortest()
                    .map(|interval| HeartbeatWheel::new(interval, now)),
                config,
                stats,
                registry,
                stopping: false,
                stop_deadline: None,
                listeners_closed: false,
                heartbeats_due: Vec::new(),
                compressor: Compressor::default(),
                now,
            },
        }
    }

    /// From now on members' messages are interpreted by workers fed through `queue`, whose
    /// results come back through this shard's inbox.
    pub fn offload(&mut self, queue: WorkQueue) {
        self.state.work = Some(queue);
    }

    pub fn add_listener(
        &mut self,
        listener: TcpListener,
        wakeup: AcceptWakeup,
    ) -> io::Result<ListenerId> {
        self.io.add_listener(listener, wakeup)
    }

    /// Runs until `InboxMsg::Stop` and every connection has closed.
    pub fn run(&mut self) -> io::Result<()> {
        self.state
            .stats
            .bind_thread(crate::io::sys::current_thread_id());
        while !self.state.stopped() {
            self.state.now = Instant::now();
            self.state.resume_deferred();
            let timeout = self
                .state
                .next_deadline()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let state = &mut self.state;
            let mut clock_read = false;
            self.io.poll(timeout, &mut |event| {
                if !clock_read {
                    state.now = Instant::now();
                    clock_read = true;
                    // Whatever other threads sent before this wake-up is handled before
                    // the sockets' events, wherever epoll put the wake-up in the batch:
                    // a client that saw a shard's output and then acts on this shard finds
                    // that shard's deliveries already here.
                    state.drain_inbox();
                }
                state.on_event(event);
            })?;
            if !clock_read {
                self.state.now = Instant::now();
            }
            if self.state.stopping && !self.state.listeners_closed {
                // New clients are refused from now on instead of accepted and dropped.
                self.io.close_listeners();
                self.state.listeners_closed = true;
            }
            self.register_accepted();
            self.fire_deadlines();
            // Peers get this iteration's room deliveries before any client sees its output
            // (the flush), and again after it for what ending connections planned.
            self.state.send_to_peers();
            self.settle();
            self.state.send_to_peers();
            self.state.publish_counters(self.io.counters());
        }
        Ok(())
    }

    fn register_accepted(&mut self) {
        let state = &mut self.state;
        for (stream, peer) in std::mem::take(&mut state.accepted) {
            if state.stopping {
                continue; // dropped: closes the socket
            }
            // A socket we cannot configure or register is closed; the client sees a reset.
            if net::configure_stream(&stream, state.config.nodelay).is_err() {
                continue;
            }
            let over_capacity = !state.hub.admit_conn();
            if over_capacity && state.config.tls.is_some() {
                // A 503 would cost a whole TLS handshake first: over the limit, a TLS client
                // gets its socket closed instead.
                state.hub.release_conn();
                bump(&state.stats.counters.rejected_over_capacity, 1);
                continue;
            }
            // A session that cannot even start leaves the client to see a closed socket.
            let tls = match &state.config.tls {
                Some(config) => match config.session() {
                    Ok(session) => Some(Box::new(TlsLink::new(session))),
                    Err(_) => {
                        state.hub.release_conn();
                        continue;
                    }
                },
                None => None,
            };
            let entry = state.conns.vacant_entry();
            let id = entry.key();
            if self.io.add_conn(id, stream).is_err() {
                state.hub.release_conn();
                continue;
            }
            state.next_serial += 1;
            entry.insert(Conn {
                ws: Connection::new(state.config.limits, state.now),
                outbox: Outbox::default(),
                tls,
                peer,
                role: Role::Pending,
                over_capacity,
                serial: state.next_serial,
                awaiting_work: false,
                deferred: false,
                reading_paused: false,
                last_heard: state.now,
                message_since: None,
                pinged: false,
                dirty: false,
                peer_done: false,
                write_shut: false,
                linger_deadline: None,
                armed: None,
            });
            state.mark_dirty(id);
        }
        set(&state.stats.counters.active, state.conns.len() as u64);
    }

    fn fire_deadlines(&mut self) {
        let now = self.state.now;
        self.state.fire_heartbeats();
        while let Some(&Reverse((at, id))) = self.state.timers.peek() {
            if at > now {
                break;
            }
            self.state.timers.pop();
            let Some(conn) = self.state.conns.get_mut(id) else {
                continue;
            };
            if conn.armed != Some(at) {
                continue; // superseded by an earlier deadline
            }
            conn.armed = None;
            if conn.linger_deadline.is_some_and(|t| t <= now) {
                self.close(id);
                continue;
            }
            conn.ws.handle_timeout(now);
            self.state.pump(id);
        }
        let resumed = {
            let paused = &mut self.state.paused_listeners;
            let (due, waiting) = paused.drain(..).partition::<Vec<_>, _>(|(t, _)| *t <= now);
            *paused = waiting;
            due
        };
        for (_, listener) in resumed {
            self.io.resume_accepting(listener);
        }
    }

    /// Flushes every dirty connection once and ends the finished ones. Ending one may queue
    /// notices for others, so this repeats until nothing is dirty.
    fn settle(&mut self) {
        while let Some(id) = self.state.dirty.pop_front() {
            let now = self.state.now;
            let close_timeout = self.state.config.limits.close_timeout;
            let Some(conn) = self.state.conns.get_mut(id) else {
                continue;
            };
            conn.dirty = false;
            let pause = conn.awaiting_work || conn.deferred;
            if pause != conn.reading_paused {
                conn.reading_paused = pause;
                if conn.reading_paused {
                    self.io.pause_reading(id);
                } else {
                    self.io.resume_reading(id);
                }
            }
            // Over TLS, rounds of sealing and sending go on while the socket takes all: rustls
            // holds 64 KiB of records at a time, and an emptied outbox means no write edge
            // will come to resume. Each round seals or sends something, or it stops.
            loop {
                let queued_before = conn.queued_bytes();
                // Over TLS, frames are counted when sealed (a buffer of records holds many).
                let sealed = conn.tls.as_mut().map(|tls| tls.seal_into(&mut conn.outbox));
                let tls_alert = conn.tls.as_ref().is_some_and(|tls| tls.failed);
                let sendable =
                    !conn.write_shut && (conn.ws.finish() != Some(Finish::Now) || tls_alert);
                bump(
                    &self.state.stats.counters.frames_out,
                    sealed.unwrap_or(0) as u64,
                );
                if sendable && !conn.outbox.is_empty() {
                    match self.io.send(id, &mut conn.outbox) {
                        Ok(sent) => {
                            bump(&self.state.stats.counters.bytes_out, sent.bytes as u64);
                            if sealed.is_none() {
                                bump(&self.state.stats.counters.frames_out, sent.frames as u64);
                            }
                        }
                        Err(_) => {
                            // The peer reset the connection: nothing more can be delivered.
                            conn.ws.handle_eof();
                            conn.outbox.clear();
                            conn.peer_done = true;
                        }
                    }
                }
                let more = conn.outbox.is_empty()
                    && conn
                        .tls
                        .as_ref()
                        .is_some_and(|tls| tls.has_output() && !tls.failed);
                if !more || conn.queued_bytes() >= queued_before {
                    break;
                }
            }
            // The one place --max-outbound is enforced, on every byte queued for the peer
            // (deliveries, pongs, replies, TLS records), and only after the socket took what
            // it would: a burst that a reading client absorbs is never held against it.
            if conn.ws.is_open() && conn.backlog() > self.state.config.max_outbound {
                self.state.kick_slow_consumer(id); // dirty again: its Close is flushed below
                continue;
            }
            let end_now = match conn.ws.finish() {
                // Its message is with a worker, or its events wait for the next iteration's
                // fan-out budget: the events behind (at least its Closed) are taken, and the
                // connection ended, after that.
                _ if conn.awaiting_work || conn.deferred => false,
                None => false,
                Some(Finish::Now) => true,
                Some(Finish::AfterFlush) => {
                    let deadline = *conn.linger_deadline.get_or_insert(now + close_timeout);
                    let flushed = conn.outbox.is_empty()
                        && conn.tls.as_ref().is_none_or(|tls| !tls.has_output());
                    if flushed && conn.peer_done {
                        true
                    } else if let Some(tls) =
                        conn.tls.as_mut().filter(|tls| flushed && !tls.closed())
                    {
                        // Over TLS, close_notify goes before our FIN: send it first.
                        tls.close();
                        self.state.mark_dirty(id);
                        false
                    } else {
                        if flushed && !conn.write_shut {
                            // Our FIN goes first (RFC 6455 7.1.1); we keep reading until the
                            // peer's FIN so that unread input cannot turn our close into a
                            // reset that destroys the Close frame in flight.
                            self.io.shutdown_write(id);
                            conn.write_shut = true;
                        }
                        deadline <= now
                    }
                }
            };
            if end_now {
                self.close(id);
            } else {
                self.state.arm_timer(id);
            }
        }
    }

    /// Drops the transport and forgets the connection.
    fn close(&mut self, id: ConnId) {
        let state = &mut self.state;
        if state.conns.try_remove(id).is_none() {
            return;
        }
        self.io.close(id);
        state.hub.release_conn();
        // Normally the ws Closed event already removed the member; this covers a transport
        // that ended before that event could be produced.
        state.leave(id);
        state.fan_out();
        set(&state.stats.counters.active, state.conns.len() as u64);
    }
}

impl State {
    fn on_event(&mut self, event: Event<'_>) {
        match event {
            Event::Accepted { stream, peer, .. } => {
                bump(&self.stats.counters.accepted, 1);
                self.accepted.push((stream, peer));
                stall_after_accept(self.config.accept_delay);
            }
            Event::AcceptFailed { listener, error } => {
                bump(&self.stats.counters.accept_pauses, 1);
                report_accept_pause(&self.stats, &error);
                self.paused_listeners
                    .push((self.now + ACCEPT_PAUSE, listener));
            }
            Event::Received { conn, bytes } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                bump(&self.stats.counters.bytes_in, bytes.len() as u64);
                let now = self.now;
                match &mut c.tls {
                    None => c.ws.handle_input(bytes),
                    Some(tls) => {
                        let plaintext = &mut self.plaintext;
                        plaintext.clear();
                        match tls.receive(bytes, plaintext) {
                            Ok(received) => {
                                c.ws.handle_input(plaintext);
                                if received.peer_closed {
                                    c.ws.handle_eof();
                                    c.peer_done = true;
                                }
                            }
                            // The alert goes out at the flush; then the connection ends.
                            Err(_) => {
                                bump(&self.stats.counters.tls_errors, 1);
                                c.ws.handle_eof();
                                c.peer_done = true;
                            }
                        }
                    }
                }
                c.note_message_progress(now);
                self.pump(conn);
            }
            Event::Writable { conn } => {
                let has_output = self.conns.get(conn).is_some_and(|c| {
                    !c.outbox.is_empty() || c.tls.as_ref().is_some_and(|tls| tls.has_output())
                });
                if has_output {
                    self.mark_dirty(conn);
                }
            }
            Event::Eof { conn } | Event::Failed { conn, .. } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                c.ws.handle_eof();
                c.peer_done = true;
                if matches!(event, Event::Failed { .. }) {
                    c.outbox.clear();
                    if let Some(tls) = &mut c.tls {
                        tls.drop_unstarted();
                    }
                }
                self.pump(conn);
            }
            Event::Wake => self.drain_inbox(),
        }
    }

    /// Starts an iteration's fan-out budget with the work the last one left: the rest of
    /// the peer batches, then the deferred connections' events, oldest first.
    fn resume_deferred(&mut self) {
        self.fanout = 0;
        self.deliver_peer_batches();
        for id in std::mem::take(&mut self.deferred) {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.deferred = false;
                self.pump(id); // defers it again if the budget runs out
            }
        }
    }

    /// Delivers the waiting peer batches here, in order, until the fan-out budget runs out.
    fn deliver_peer_batches(&mut self) {
        while let Some((batch, next)) = self.peer_batches.front_mut() {
            let (batch, from) = (batch.clone(), *next);
            for (i, delivery) in batch.iter().enumerate().skip(from) {
                if self.fanout >= FANOUT_PER_ITERATION {
                    if let Some(front) = self.peer_batches.front_mut() {
                        front.1 = i;
                    }
                    bump(&self.stats.counters.fanout_yields, 1);
                    return;
                }
                self.deliver_here(delivery);
            }
            self.peer_batches.pop_front();
        }
    }

    fn drain_inbox(&mut self) {
        let mut batch = std::mem::take(&mut self.inbox_batch);
        self.hub.inbox(self.index).drain_into(&mut batch);
        for msg in batch.drain(..) {
            match msg {
                InboxMsg::Adopt(conns) => {
                    bump(&self.stats.counters.adopted, conns.len() as u64);
                    self.accepted.extend(conns);
                }
                InboxMsg::Deliver(deliveries) => {
                    bump(&self.stats.counters.peer_batches_in, 1);
                    self.peer_batches.push_back((deliveries, 0));
                    self.deliver_peer_batches();
                }
                InboxMsg::RoomReady(room) => self.room_ready(&room),
                InboxMsg::WorkDone(done) => self.work_done(done),
                InboxMsg::Stop => self.stop(),
            }
        }
        self.inbox_batch = batch;
        if let Some(work) = &mut self.work {
            work.retry();
        }
    }

    /// Shutdown: Close 1001 to every open session; pending handshakes are dropped.
    fn stop(&mut self) {
        self.stopping = true;
        self.stop_deadline = Some(self.now + self.config.shutdown_timeout);
        self.paused_listeners.clear();
        let ids: Vec<ConnId> = self.conns.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.ws.close(CloseCode::GOING_AWAY, self.now);
            }
            self.pump(id);
        }
    }

    /// Reacts to what the connection's state machine produced, in order: its output goes to
    /// the outbox, then one event is handled and the deliveries it plans are queued, and so
    /// on. A reply thus lands after the output that preceded its cause (the 101) and before
    /// the output that followed it (our Close).
    fn pump(&mut self, id: ConnId) {
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            while let Some(frame) = conn.ws.poll_output() {
                conn.push(frame);
            }
            if conn.awaiting_work || conn.deferred {
                break;
            }
            if self.fanout >= FANOUT_PER_ITERATION && conn.ws.has_event() {
                conn.deferred = true;
                self.deferred.push(id);
                bump(&self.stats.counters.fanout_yields, 1);
                break;
            }
            let Some(event) = conn.ws.poll_event() else {
                if conn.ws.has_held_input() {
                    // Work-queue: the message before it was dealt with; parse up to the next.
                    conn.ws.resume_input();
                    continue;
                }
                break;
            };
            match event {
                WsEvent::Request(request) => self.answer(id, &request),
                WsEvent::HandshakeFailed(_) => bump(&self.stats.counters.handshake_errors, 1),
                WsEvent::HandshakeTimedOut => bump(&self.stats.counters.handshake_timeouts, 1),
                WsEvent::Message(message) => self.on_message(id, message),
                WsEvent::Closed { .. } => {
                    if self.conns.get(id).is_some_and(|conn| conn.ws.flooded()) {
                        bump(&self.stats.counters.flood_closes, 1);
                    }
                    self.leave(id);
                }
            }
            self.fan_out();
        }
        if let Some(conn) = self.conns.get_mut(id) {
            if conn.ws.take_heard() {
                conn.last_heard = self.now;
                conn.pinged = false;
            }
            bump(
                &self.stats.counters.frames_in,
                conn.ws.take_frames_received(),
            );
        }
        self.mark_dirty(id);
    }

    /// Answers a request head: a page, stats, an upgrade, or an error status.
    fn answer(&mut self, id: ConnId, request: &Request) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.over_capacity {
            bump(&self.stats.counters.rejected_over_capacity, 1);
            conn.role = Role::Http;
            conn.ws.reject(&HandshakeError::OverCapacity);
            return;
        }
        if self.config.test_panic_path.as_ref() == Some(&request.path) {
            panic!("--test-panic-path: a request for {}", request.path);
        }
        let route = chat::route(request, &self.config.allowed_origins);
        conn.role = match route {
            Ok(Route::Echo) => Role::Echo,
            Ok(Route::Join { .. }) => Role::Member,
            Ok(Route::Page | Route::Stats) | Err(_) => Role::Http,
        };
        match route {
            Ok(Route::Page) => conn.ws.respond(http_response(
                200,
                &[],
                "text/html; charset=utf-8",
                chat::PAGE_HTML.as_bytes(),
            )),
            Ok(Route::Stats) => {
                let body = self.registry.report(self.now).to_json();
                let response = http_response(200, &[], "application/json", &body);
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.ws.respond(response);
                }
            }
            Ok(Route::Echo) => self.upgrade(id, None),
            Ok(Route::Join { room, name }) => {
                // Every peer counts the join; the 101 waits for those not ready for the room.
                let waiting = self.hub.peers().filter(|peer| !peer.join(&room)).count();
                if waiting > 0 {
                    let serial = conn.serial;
                    self.parked.push(Parked {
                        conn: id,
                        serial,
                        room,
                        name,
                        waiting,
                    });
                    return;
                }
                self.upgrade(id, Some((room, name)));
            }
            Err(err) => conn.ws.reject(&err),
        }
    }

    /// Sends the 101; for a chat member, joins its room.
    fn upgrade(&mut self, id: ConnId, join: Option<(RoomName, Option<Name>)>) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let thread = self.stats.id.to_string();
        // A plain request never routes to Echo or Join, so accept cannot fail here.
        let accepted = conn
            .ws
            .accept_with_deflate(&[(THREAD_HEADER, &thread)], self.config.deflate)
            .is_ok();
        conn.last_heard = self.now;
        let port = conn.peer.port();
        self.file_heartbeat(id);
        let Some((room, name)) = join else {
            return;
        };
        if !accepted {
            self.hub.peers().for_each(|peer| peer.leave(&room));
            return;
        }
        if self.work.is_some()
            && let Some(conn) = self.conns.get_mut(id)
        {
            // One message per member at the workers, and no more than one parsed behind it:
            // the rest of its input waits unparsed (a read of small compressed messages would
            // otherwise be inflated whole while the first is out).
            conn.ws.hold_after_message();
        }
        let name = name.unwrap_or_else(|| Name::default_for_port(port));
        let member = self.member(id);
        self.chat.join(
            &mut self.hub.roster(),
            member,
            room.clone(),
            name,
            &mut self.deliveries,
        );
        self.publish_members();
        let name = self.chat.name(member);
        for peer in self.hub.peers() {
            peer.roster_changed(&room, member, name);
        }
    }

    /// A peer is ready for `room`: the upgrades that waited for no other complete.
    fn room_ready(&mut self, room: &RoomName) {
        for parked in self.parked.iter_mut().filter(|p| p.room == *room) {
            parked.waiting = parked.waiting.saturating_sub(1);
        }
        let (ready, waiting) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.waiting == 0);
        self.parked = waiting;
        for parked in ready {
            let Parked {
                conn,
                serial,
                room,
                name,
                ..
            } = parked;
            if self.conns.get(conn).is_some_and(|c| c.serial == serial) {
                self.upgrade(conn, Some((room, name)));
                self.fan_out();
                self.pump(conn);
            } else {
                // Gone while it waited.
                self.hub.peers().for_each(|peer| peer.leave(&room));
            }
        }
    }

    fn on_message(&mut self, id: ConnId, message: Message) {
        let member = self.member(id);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        match conn.role {
            Role::Echo => self.deliveries.push(Delivery {
                frame: chat::echo(&message).into(),
                to: Audience::Member(member),
            }),
            Role::Member => {
                let Some(name) = self.chat.name(member).cloned() else {
                    return;
                };
                if let Some(work) = &mut self.work {
                    work.submit(WorkItem {
                        conn: id,
                        serial: conn.serial,
                        name,
                        message,
                    });
                    conn.awaiting_work = true;
                    set(&self.stats.counters.queue_depth, work.depth() as u64);
                } else {
                    let intent = chat::interpret(&name, &message);
                    work::burn(self.config.work_cost);
                    self.act(member, intent);
                }
            }
            Role::Pending | Role::Http => {}
        }
    }

    /// A worker's result: apply it, then take the connection's next events.
    fn work_done(&mut self, done: WorkDone) {
        let Some(conn) = self.conns.get_mut(done.conn) else {
            return; // closed meanwhile
        };
        if conn.serial != done.serial || !conn.awaiting_work {
            return; // a later connection with the same key
        }
        conn.awaiting_work = false;
        self.act(self.member(done.conn), done.intent);
        self.fan_out();
        self.pump(done.conn);
    }

    /// Plans what a member's message means; the roster's lock is taken only for `/nick` and
    /// `/who`. A command over the member's budget closes it (1008) instead.
    fn act(&mut self, member: MemberId, intent: Intent) {
        if intent.is_command() && !self.chat.take_command(member, self.now) {
            self.close_flooder(member.conn);
            return;
        }
        if let Some(intent) = self.chat.apply_local(member, intent, &mut self.deliveries) {
            let Some(room) = self.chat.room(member).cloned() else {
                return;
            };
            // A peer may answer /who for the whole room (`--cluster`: every node's members).
            if matches!(intent, Intent::ListMembers)
                && self.hub.peers().any(|peer| peer.who(&room, member))
            {
                return;
            }
            let renamed =
                self.chat
                    .apply(&mut self.hub.roster(), member, intent, &mut self.deliveries);
            if renamed {
                let name = self.chat.name(member);
                for peer in self.hub.peers() {
                    peer.roster_changed(&room, member, name);
                }
            }
        }
    }

    fn leave(&mut self, id: ConnId) {
        let member = self.member(id);
        if self.chat.name(member).is_some() {
            let room = self.chat.room(member).cloned();
            self.chat
                .leave(&mut self.hub.roster(), member, &mut self.deliveries);
            self.publish_members();
            if let Some(room) = room {
                for peer in self.hub.peers() {
                    peer.leave(&room);
                    peer.roster_changed(&room, member, None);
                }
            }
        }
    }

    /// Sets the `members` gauge at the join or leave itself, before the notice it plans can
    /// reach anyone: a client that saw the notice (through another loop, which may flush it
    /// before this loop's iteration ends) then finds the gauge counting it.
    fn publish_members(&self) {
        set(
            &self.stats.counters.members,
            self.chat.member_count() as u64,
        );
    }

    fn member(&self, conn: ConnId) -> MemberId {
        MemberId {
            shard: self.index,
            conn,
        }
    }

    /// Queues every planned delivery on its receivers' outboxes here (the frame is shared,
    /// never copied) and keeps room deliveries for the other shards, then disconnects
    /// receivers that went over --max-outbound, whose departure plans more deliveries;
    /// repeats until the plan is empty.
    ///
    /// Not re-entrant: a kicked receiver's departure, handled inside, only adds to the plan
    /// that the outer loop is draining (so a chain of kicks cannot grow the stack).
    fn fan_out(&mut self) {
        if self.fanning_out {
            return;
        }
        self.fanning_out = true;
        while !self.deliveries.is_empty() {
            for delivery in std::mem::take(&mut self.deliveries) {
                self.deliver_here(&delivery);
                if matches!(delivery.to, Audience::Room { .. }) && self.hub.has_peers() {
                    self.to_peers.push(delivery);
                }
            }
        }
        self.fanning_out = false;
    }

    /// Disconnects a receiver whose unsent output is over --max-outbound after a flush:
    /// frames not yet started are dropped, the one in progress is finished, and Close 1008
    /// follows it; the close timeout bounds how long we wait. Its departure is planned here.
    fn kick_slow_consumer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.drop_unstarted();
        conn.ws.close(CloseCode::POLICY_VIOLATION, self.now);
        bump(&self.stats.counters.slow_consumer_kicks, 1);
        self.pump(id);
    }

    /// Closes a connection that went over an input budget (1008); what it sent after the
    /// overrun and was already parsed is dropped with the close.
    fn close_flooder(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.ws.close(CloseCode::POLICY_VIOLATION, self.now);
        bump(&self.stats.counters.flood_closes, 1);
    }

    /// Queues `delivery` for its receivers on this shard.
    fn deliver_here(&mut self, delivery: &Delivery<MemberId>) {
        let (conns, dirty) = (&mut self.conns, &mut self.dirty);
        let compressor = &mut self.compressor;
        let mut queue = |conn| queue_frame(conns, dirty, compressor, conn, &delivery.frame);
        match &delivery.to {
            Audience::Member(member) if member.shard == self.index => {
                queue(member.conn);
                self.fanout += 1;
            }
            Audience::Member(_) => {}
            Audience::Room { room, except } => {
                let members = self.chat.members(room);
                for member in members {
                    if member != except {
                        queue(member.conn);
                    }
                }
                self.fanout += members.len();
            }
        }
    }

    /// Sends this iteration's room deliveries to every peer in one batch: the other shards
    /// (one inbox item each) and, with `--cluster`, the broker, which publishes them to the
    /// other nodes.
    fn send_to_peers(&mut self) {
        if self.to_peers.is_empty() {
            return;
        }
        let batch: Batch = std::mem::take(&mut self.to_peers).into();
        for peer in self.hub.peers() {
            peer.publish(self.index, &batch);
        }
        if self.hub.shard_count() > 1 {
            bump(&self.stats.counters.peer_batches_out, 1);
        }
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push_back(id);
        }
    }

    /// Puts the connection's next deadline in the heap unless an earlier one is there.
    fn arm_timer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let wanted = match (conn.ws.poll_timeout(), conn.linger_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wanted
            && conn.armed.is_none_or(|armed| at < armed)
        {
            conn.armed = Some(at);
            self.timers.push(Reverse((at, id)));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let paused = self.paused_listeners.iter().map(|(at, _)| *at).min();
        let heartbeat = self.heartbeats.as_ref().and_then(|w| w.next_deadline());
        // Work left for the next iteration's budget: come back at once.
        let left = (!self.deferred.is_empty() || !self.peer_batches.is_empty()).then_some(self.now);
        [timer, paused, heartbeat, self.stop_deadline, left]
            .into_iter()
            .flatten()
            .min()
    }

    /// Done: stopping, and every connection is gone or the shutdown timeout has passed
    /// (what is left is dropped with the reactor).
    fn stopped(&self) -> bool {
        self.stopping
            && (self.conns.is_empty() || self.stop_deadline.is_some_and(|t| self.now >= t))
    }

    /// Files an open connection's next heartbeat check: its ping deadline (or, once pinged,
    /// another interval to look again) and its idle deadline, whichever comes first.
    fn file_heartbeat(&mut self, id: ConnId) {
        let (Some(wheel), Some(conn)) = (&mut self.heartbeats, self.conns.get(id)) else {
            return;
        };
        let beat = self.config.heartbeat;
        let ping = beat.ping_interval.map(|p| {
            if conn.pinged {
                self.now + p
            } else {
                conn.last_heard + p
            }
        });
        let idle = beat.idle_timeout.map(|t| conn.last_heard + t);
        let open_message = beat
            .idle_timeout
            .zip(conn.message_since)
            .map(|(t, since)| since + t);
        if let Some(at) = [ping, idle, open_message].into_iter().flatten().min() {
            wheel.insert(at, (id, conn.serial));
        }
    }

    /// Pings the connections that have been quiet for --ping-interval, closes (1001) those
    /// silent for --idle-timeout and (1008) those that kept a message open that long (its
    /// fragments, pings between them, do not make it complete); files the others' next check.
    fn fire_heartbeats(&mut self) {
        let Some(wheel) = &mut self.heartbeats else {
            return;
        };
        let mut due = std::mem::take(&mut self.heartbeats_due);
        wheel.expire(self.now, &mut due);
        let beat = self.config.heartbeat;
        for (id, serial) in due.drain(..) {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if conn.serial != serial || !conn.ws.is_open() {
                continue; // replaced, or closing under its own deadline
            }
            let quiet = self.now.saturating_duration_since(conn.last_heard);
            let open_for = conn
                .message_since
                .map(|since| self.now.saturating_duration_since(since));
            let counters = &self.stats.counters;
            let close = match beat.idle_timeout {
                Some(t) if open_for.is_some_and(|open| open >= t) => {
                    Some((CloseCode::POLICY_VIOLATION, &counters.message_timeouts))
                }
                Some(t) if quiet >= t => Some((CloseCode::GOING_AWAY, &counters.idle_closes)),
                _ => None,
            };
            if let Some((code, counter)) = close {
                conn.ws.close(code, self.now);
                bump(counter, 1);
                self.pump(id);
                continue;
            }
            if beat.ping_interval.is_some_and(|p| quiet >= p) && !conn.pinged {
                conn.ws.ping(b"wschat");
                conn.pinged = true;
                bump(&self.stats.counters.pings_sent, 1);
                self.pump(id);
            }
            self.file_heartbeat(id);
        }
        self.heartbeats_due = due;
    }

    fn publish_counters(&mut self, io: crate::io::IoCounters) {
        let c = &self.stats.counters;
        set(&c.wakeups, io.wakeups);
        set(&c.listener_wakeups, io.listener_wakeups);
        set(&c.futile_accepts, io.futile_accepts);
        set(&c.writev, io.writev);
        set(&c.epoll_ctl, io.epoll_ctl);
        if let Some(work) = &self.work {
            set(&c.queue_depth, work.depth() as u64);
        }
    }
}

/// `--accept-delay-us`, for experiments only: the one place a loop blocks outside its wait,
/// on purpose, to play a slow accept loop and let the accept queue fill.
fn stall_after_accept(delay: Duration) {
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}

/// Tells the operator that accepting paused, at most once per `ACCEPT_PAUSE_REPORT` per
/// thread (a server out of descriptors pauses ten times a second; the count is in /stats).
fn report_accept_pause(stats: &ThreadStats, error: &io::Error) {
    let pauses = stats
        .counters
        .accept_pauses
        .load(std::sync::atomic::Ordering::Relaxed);
    let every = ACCEPT_PAUSE_REPORT.as_millis() / ACCEPT_PAUSE.as_millis();
    if pauses % every as u64 == 1 {
        eprintln!(
            "wschat: {}: accept paused for {ACCEPT_PAUSE:?}: {error} ({pauses} pauses so far; \
             see accept_pauses in /stats)",
            stats.role
        );
    }
}

/// Appends `frame` to the outbox of a receiver that accepts messages (compressed if the
/// receiver agreed to permessage-deflate: the compressed frame is made once per message and
/// shared like the plain one) and marks it dirty; `settle` holds it to --max-outbound after
/// flushing. A free function so that the caller can hold the room's member list.
fn queue_frame(
    conns: &mut Slab<Conn>,
    dirty: &mut VecDeque<ConnId>,
    compressor: &mut Compressor,
    id: ConnId,
    frame: &OutMessage,
) {
    let Some(conn) = conns.get_mut(id) else {
        return;
    };
    if !conn.ws.accepts_messages() {
        return;
    }
    let frame = frame.for_receiver(conn.ws.deflate(), compressor);
    conn.push(frame);
    if !conn.dirty {
        conn.dirty = true;
        dirty.push_back(id);
    }
}
