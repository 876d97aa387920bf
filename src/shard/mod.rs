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
//! dirty connection is flushed once at the end (DESIGN.md, "The hot path").
//!
//! Owns: connections (ws state, outbox, role), the chat state of its members, deadlines,
//! and this thread's counters. Must never: block other than in `poll`, or make a syscall
//! except through the reactor.

pub mod inbox;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

pub use inbox::{Inbox, InboxMsg};

use crate::chat::{self, Audience, Chat, Delivery, Name, Route};
use crate::config::Config;
use crate::io::{AcceptWakeup, ConnId, Event, ListenerId, Outbox, Reactor, sys};
use crate::net;
use crate::stats::{StatsRegistry, ThreadStats, bump, set};
use crate::ws::Event as WsEvent;
use crate::ws::handshake::http_response;
use crate::ws::{CloseCode, Connection, Finish, HandshakeError, Message, Request, SharedFrame};

/// How long accepting pauses after running out of descriptors or memory: long enough for
/// some connections to close, short enough that a burst of 503s is not needed.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often a busy loop refreshes its voluntary-context-switch count (one getrusage).
const SWITCHES_REFRESH: Duration = Duration::from_secs(1);

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
    outbox: Outbox,
    peer: SocketAddr,
    role: Role,
    /// Accepted beyond --max-conns: its request gets 503.
    over_capacity: bool,
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

/// Everything but the reactor, so that reactor callbacks can borrow it mutably.
struct State {
    config: Arc<Config>,
    conns: Slab<Conn>,
    chat: Chat<ConnId>,
    /// Connections to flush and re-examine at the end of the iteration.
    dirty: Vec<ConnId>,
    accepted: Vec<(TcpStream, SocketAddr)>,
    paused_listeners: Vec<(Instant, ListenerId)>,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    deliveries: Vec<Delivery<ConnId>>,
    kicks: Vec<ConnId>,
    /// `fan_out` is running (see there).
    fanning_out: bool,
    inbox: Arc<Inbox>,
    inbox_batch: Vec<InboxMsg>,
    stats: Arc<ThreadStats>,
    registry: Arc<StatsRegistry>,
    stopping: bool,
    now: Instant,
    switches_refreshed: Instant,
}

/// One event loop and the connections it owns.
pub struct Shard<R: Reactor> {
    io: R,
    state: State,
}

impl<R: Reactor> Shard<R> {
    pub fn new(
        io: R,
        config: Arc<Config>,
        stats: Arc<ThreadStats>,
        registry: Arc<StatsRegistry>,
    ) -> Shard<R> {
        let now = Instant::now();
        let inbox = Arc::new(Inbox::new(io.waker()));
        Shard {
            io,
            state: State {
                config,
                conns: Slab::new(),
                chat: Chat::default(),
                dirty: Vec::new(),
                accepted: Vec::new(),
                paused_listeners: Vec::new(),
                timers: BinaryHeap::new(),
                deliveries: Vec::new(),
                kicks: Vec::new(),
                fanning_out: false,
                inbox,
                inbox_batch: Vec::new(),
                stats,
                registry,
                stopping: false,
                now,
                switches_refreshed: now,
            },
        }
    }

    /// Where other threads send this shard messages.
    pub fn inbox(&self) -> Arc<Inbox> {
        self.state.inbox.clone()
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
        while !(self.state.stopping && self.state.conns.is_empty()) {
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
                }
                state.on_event(event);
            })?;
            if !clock_read {
                self.state.now = Instant::now();
            }
            self.register_accepted();
            self.fire_deadlines();
            self.settle();
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
            let over_capacity = state.conns.len() >= state.config.max_conns;
            let entry = state.conns.vacant_entry();
            let id = entry.key();
            if self.io.add_conn(id, stream).is_err() {
                continue;
            }
            entry.insert(Conn {
                ws: Connection::new(state.config.limits, state.now),
                outbox: Outbox::default(),
                peer,
                role: Role::Pending,
                over_capacity,
                dirty: false,
                peer_done: false,
                write_shut: false,
                linger_deadline: None,
                armed: None,
            });
            bump(&state.stats.counters.accepted, 1);
            state.mark_dirty(id);
        }
        set(&state.stats.counters.active, state.conns.len() as u64);
    }

    fn fire_deadlines(&mut self) {
        let now = self.state.now;
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
        while let Some(id) = self.state.dirty.pop() {
            let now = self.state.now;
            let close_timeout = self.state.config.limits.close_timeout;
            let Some(conn) = self.state.conns.get_mut(id) else {
                continue;
            };
            conn.dirty = false;
            let sendable = !conn.write_shut && conn.ws.finish() != Some(Finish::Now);
            if sendable && !conn.outbox.is_empty() {
                match self.io.send(id, &mut conn.outbox) {
                    Ok(sent) => {
                        bump(&self.state.stats.counters.bytes_out, sent.bytes as u64);
                        bump(&self.state.stats.counters.frames_out, sent.frames as u64);
                    }
                    Err(_) => {
                        // The peer reset the connection: nothing more can be delivered.
                        conn.ws.handle_eof();
                        conn.outbox.clear();
                        conn.peer_done = true;
                    }
                }
            }
            let end_now = match conn.ws.finish() {
                None => false,
                Some(Finish::Now) => true,
                Some(Finish::AfterFlush) => {
                    let deadline = *conn.linger_deadline.get_or_insert(now + close_timeout);
                    if conn.outbox.is_empty() && conn.peer_done {
                        true
                    } else {
                        if conn.outbox.is_empty() && !conn.write_shut {
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
        // Normally the ws Closed event already removed the member; this covers a transport
        // that ended before that event could be produced.
        state.chat.leave(id, &mut state.deliveries);
        state.fan_out();
        set(&state.stats.counters.active, state.conns.len() as u64);
    }
}

impl State {
    fn on_event(&mut self, event: Event<'_>) {
        match event {
            Event::Accepted { stream, peer, .. } => self.accepted.push((stream, peer)),
            Event::AcceptFailed { listener, error } => {
                bump(&self.stats.counters.accept_pauses, 1);
                eprintln!("wschat: accept paused for {ACCEPT_PAUSE:?}: {error}");
                self.paused_listeners
                    .push((self.now + ACCEPT_PAUSE, listener));
            }
            Event::Received { conn, bytes } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                bump(&self.stats.counters.bytes_in, bytes.len() as u64);
                c.ws.handle_input(bytes);
                self.pump(conn);
            }
            Event::Writable { conn } => {
                if self.conns.get(conn).is_some_and(|c| !c.outbox.is_empty()) {
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
                }
                self.pump(conn);
            }
            Event::Wake => self.drain_inbox(),
        }
    }

    fn drain_inbox(&mut self) {
        let mut batch = std::mem::take(&mut self.inbox_batch);
        self.inbox.drain_into(&mut batch);
        for msg in batch.drain(..) {
            match msg {
                InboxMsg::Stop => self.stop(),
            }
        }
        self.inbox_batch = batch;
    }

    /// Shutdown: Close 1001 to every open session; pending handshakes are dropped.
    fn stop(&mut self) {
        self.stopping = true;
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
                conn.outbox.push(frame);
            }
            let Some(event) = conn.ws.poll_event() else {
                break;
            };
            match event {
                WsEvent::Request(request) => self.answer(id, &request),
                WsEvent::HandshakeFailed(_) => bump(&self.stats.counters.handshake_errors, 1),
                WsEvent::HandshakeTimedOut => bump(&self.stats.counters.handshake_timeouts, 1),
                WsEvent::Message(message) => self.on_message(id, &message),
                WsEvent::Closed { .. } => self.chat.leave(id, &mut self.deliveries),
            }
            self.fan_out();
        }
        if let Some(conn) = self.conns.get_mut(id) {
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
        let route = chat::route(request);
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
                self.refresh_switches();
                let body = self.registry.report(self.now).to_json();
                let response = http_response(200, &[], "application/json", &body);
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.ws.respond(response);
                }
            }
            Ok(Route::Echo) => {
                let _ = conn.ws.accept();
            }
            Ok(Route::Join { room, name }) => {
                let name = name.unwrap_or_else(|| Name::default_for_port(conn.peer.port()));
                // A plain request never routes to Join, so accept cannot fail here.
                if conn.ws.accept().is_ok() {
                    self.chat.join(id, room, name, &mut self.deliveries);
                }
            }
            Err(err) => conn.ws.reject(&err),
        }
    }

    fn on_message(&mut self, id: ConnId, message: &Message) {
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        match conn.role {
            Role::Echo => self.deliveries.push(Delivery {
                frame: chat::echo(message),
                to: Audience::Member(id),
            }),
            Role::Member => self.chat.handle_message(id, message, &mut self.deliveries),
            Role::Pending | Role::Http => {}
        }
    }

    /// Queues every planned delivery on its receivers' outboxes (the frame is shared, never
    /// copied), then disconnects receivers that went over --max-outbound, whose departure
    /// plans more deliveries; repeats until the plan is empty.
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
                match &delivery.to {
                    Audience::Member(id) => self.queue(*id, &delivery.frame),
                    Audience::Room { room, except } => {
                        for &id in self.chat.members(room) {
                            if id != *except {
                                queue_frame(
                                    &mut self.conns,
                                    &mut self.dirty,
                                    &mut self.kicks,
                                    self.config.max_outbound,
                                    id,
                                    &delivery.frame,
                                );
                            }
                        }
                    }
                }
            }
            for id in std::mem::take(&mut self.kicks) {
                let Some(conn) = self.conns.get_mut(id) else {
                    continue;
                };
                if !conn.ws.is_open() {
                    continue;
                }
                // Frames not yet started are dropped, the one in progress is finished, and
                // Close 1008 follows it; the close timeout bounds how long we wait.
                conn.outbox.drop_unstarted();
                conn.ws.close(CloseCode::POLICY_VIOLATION, self.now);
                bump(&self.stats.counters.slow_consumer_kicks, 1);
                self.pump(id);
            }
        }
        self.fanning_out = false;
    }

    fn queue(&mut self, id: ConnId, frame: &SharedFrame) {
        queue_frame(
            &mut self.conns,
            &mut self.dirty,
            &mut self.kicks,
            self.config.max_outbound,
            id,
            frame,
        );
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(id);
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
        match (timer, paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn refresh_switches(&mut self) {
        set(
            &self.stats.counters.voluntary_switches,
            sys::thread_voluntary_switches(),
        );
        self.switches_refreshed = self.now;
    }

    fn publish_counters(&mut self, io: crate::io::IoCounters) {
        let c = &self.stats.counters;
        set(&c.wakeups, io.wakeups);
        set(&c.listener_wakeups, io.listener_wakeups);
        set(&c.futile_accepts, io.futile_accepts);
        set(&c.writev, io.writev);
        set(&c.epoll_ctl, io.epoll_ctl);
        if self.now.duration_since(self.switches_refreshed) >= SWITCHES_REFRESH {
            self.refresh_switches();
        }
    }
}

/// Appends `frame` to the outbox of a receiver that accepts messages; a receiver now over `max_outbound` is put
/// on `kicks`. A free function so that the caller can hold the room's member list.
fn queue_frame(
    conns: &mut Slab<Conn>,
    dirty: &mut Vec<ConnId>,
    kicks: &mut Vec<ConnId>,
    max_outbound: usize,
    id: ConnId,
    frame: &SharedFrame,
) {
    let Some(conn) = conns.get_mut(id) else {
        return;
    };
    if !conn.ws.accepts_messages() {
        return;
    }
    conn.outbox.push(frame.clone());
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(id);
    }
    if conn.outbox.queued_bytes() > max_outbound && !kicks.contains(&id) {
        kicks.push(id);
    }
}
