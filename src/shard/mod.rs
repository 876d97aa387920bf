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
//! delivers peer batches in slices; the next iteration goes on with what was left, oldest
//! first, after its flush (so that an outbox never holds two slices, even while a
//! completion-based reactor still has the last one in flight) and flushes again.
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

//!
//! Files: conn.rs (one connection), admission.rs (accepted sockets), input.rs (events and
//! the order they are taken in), requests.rs (answers, upgrades), members.rs (chat glue),
//! fanout.rs (queueing deliveries, peers), flush.rs (the flush and ending connections),
//! timers.rs (deadlines, heartbeats); hub.rs, inbox.rs and work.rs are what shards share
//! with other threads.

pub mod acceptor;
mod admission;
mod conn;
mod fanout;
mod flush;
pub mod heartbeat;
pub mod hub;
pub mod inbox;
mod input;
mod members;
mod requests;
#[cfg(test)]
mod tests;
mod timers;
mod tls_link;
pub mod work;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use self::timers::{Epoch, Stamp};

use slab::Slab;

pub use acceptor::Acceptor;
pub use hub::Hub;
pub use inbox::{Inbox, InboxMsg};
pub use requests::THREAD_HEADER;
pub use work::{WorkDone, WorkItem, WorkQueue};

use crate::chat::{Chat, Delivery};
use crate::config::Config;
use crate::io::{AcceptWakeup, ConnId, ListenerId, Reactor};
use crate::peer::Batch;
pub use crate::peer::MemberId;
use crate::stats::{StatsRegistry, ThreadStats, set};
use crate::ws::deflate::Compressor;
use conn::Conn;
use heartbeat::HeartbeatWheel;
use requests::Parked;

/// Everything but the reactor, so that reactor callbacks can borrow it mutably.
struct State {
    config: Arc<Config>,
    /// This shard's index in the hub.
    index: usize,
    hub: Arc<Hub>,
    conns: Slab<Conn>,
    next_serial: u32,
    chat: Chat<MemberId>,
    /// Connections to flush and re-examine at the end of the iteration, in the order they
    /// became dirty: the receivers of the iteration's first message are flushed first.
    dirty: VecDeque<ConnId>,
    accepted: Vec<(TcpStream, SocketAddr)>,
    paused_listeners: Vec<(Instant, ListenerId)>,
    timers: BinaryHeap<Reverse<(Stamp, ConnId)>>,
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
    peer_batches: VecDeque<(Batch, usize)>,
    /// Connections not read because a peer shard is backlogged (see `throttle_senders`).
    throttled: Vec<ConnId>,
    /// `fan_out` is running (see there).
    fanning_out: bool,
    /// Decrypted input of one read (TLS), reused.
    plaintext: Vec<u8>,
    inbox_batch: Vec<InboxMsg>,
    stats: Arc<ThreadStats>,
    /// This thread's id in `/stats`, as every 101 names it (`THREAD_HEADER`).
    thread_id: String,
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
    /// Where `now` comes from: the system clock, or a test's virtual one.
    clock: fn() -> Instant,
    /// The time of this iteration: read once after the wait, then passed to everything.
    now: Instant,
    /// What the connections' and the timer heap's stamps count from.
    epoch: Epoch,
}

/// Connections a loop reserves room for at start, at most (see `Shard::new`).
const RESERVED_CONNS: usize = 1 << 16;

/// One event loop and the connections it owns.
pub struct Shard<R: Reactor> {
    io: R,
    state: State,
}

impl<R: Reactor> Shard<R> {
    /// Shard `index` of `hub`: `io` must have been opened with `hub`'s waker for `index`, so
    /// that what others push to this shard's inbox wakes this reactor.
    pub fn new(
        mut io: R,
        index: usize,
        hub: Arc<Hub>,
        config: Arc<Config>,
        stats: Arc<ThreadStats>,
        registry: Arc<StatsRegistry>,
    ) -> Shard<R> {
        let clock = io.clock();
        let now = clock();
        // Room for every connection the loop may hold, reserved once: address space only
        // (pages are touched as connections come), where a doubling slab or heap left the
        // copies it outgrew in the loop's malloc arena (26 B more per idle connection with
        // two loops than with one: results/memory/2026-12-06-after-diet). Capped, so that a
        // huge descriptor limit does not reserve gigabytes.
        let reserved = config.max_conns.min(RESERVED_CONNS);
        io.reserve_conns(reserved);
        Shard {
            io,
            state: State {
                index,
                hub,
                conns: Slab::with_capacity(reserved),
                next_serial: 0,
                chat: {
                    let mut chat = Chat::default();
                    chat.reserve(reserved);
                    chat
                },
                dirty: VecDeque::new(),
                accepted: Vec::new(),
                paused_listeners: Vec::new(),
                timers: BinaryHeap::with_capacity(reserved),
                deliveries: Vec::new(),
                to_peers: Vec::new(),
                parked: Vec::new(),
                work: None,
                fanout: 0,
                deferred: Vec::new(),
                peer_batches: VecDeque::new(),
                fanning_out: false,
                throttled: Vec::new(),
                plaintext: Vec::new(),
                inbox_batch: Vec::new(),
                heartbeats: config
                    .heartbeat
                    .shortest()
                    .map(|interval| HeartbeatWheel::new(interval, now)),
                config,
                thread_id: stats.id.to_string(),
                stats,
                registry,
                stopping: false,
                stop_deadline: None,
                listeners_closed: false,
                heartbeats_due: Vec::new(),
                compressor: Compressor::default(),
                clock,
                now,
                epoch: Epoch::new(now),
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
            self.turn()?;
        }
        Ok(())
    }

    /// One iteration of the loop (the diagram above): wait for the next event or deadline,
    /// handle everything ready, fire what is due, hand room deliveries to the peers, flush.
    fn turn(&mut self) -> io::Result<()> {
        let clock = self.state.clock;
        self.state.now = clock();
        self.state.release_throttled();
        self.state.fanout = 0;
        let timeout = self
            .state
            .next_deadline()
            .map(|t| t.saturating_duration_since(clock()));
        let state = &mut self.state;
        let mut clock_read = false;
        self.io.poll(timeout, &mut |event| {
            if !clock_read {
                state.now = clock();
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
            self.state.now = clock();
        }
        if self.state.stopping && !self.state.listeners_closed {
            // New clients are refused from now on instead of accepted and dropped.
            self.io.close_listeners();
            self.state.listeners_closed = true;
        }
        self.register_accepted();
        self.fire_deadlines();
        self.flush();
        // What the last iteration's fan-out budget left is planned only now, after the
        // flush, with what is left of this iteration's budget, and flushed at once. Before
        // the flush, an io_uring loop would queue it on outboxes that still held the last
        // slice, in flight and not yet settled (its completions are reaped in `poll` and
        // settled in the flush), so the outboxes held two slices at a time
        // (results/hostile/fanout).
        if self.state.has_deferred_work() {
            self.state.resume_deferred();
            self.flush();
        }
        self.state.publish_counters(self.io.counters());
        Ok(())
    }

    /// Peers get the room deliveries planned so far before any client sees its output
    /// (the flush), and again after it for what ending connections planned.
    fn flush(&mut self) {
        self.state.send_to_peers();
        self.settle();
        self.state.send_to_peers();
    }
}

impl State {
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push_back(id);
        }
    }

    /// Done: stopping, and every connection is gone or the shutdown timeout has passed
    /// (what is left is dropped with the reactor).
    fn stopped(&self) -> bool {
        self.stopping
            && (self.conns.is_empty() || self.stop_deadline.is_some_and(|t| self.now >= t))
    }

    fn publish_counters(&mut self, io: crate::io::IoCounters) {
        let c = &self.stats.counters;
        set(&c.wakeups, io.wakeups);
        set(&c.listener_wakeups, io.listener_wakeups);
        set(&c.futile_accepts, io.futile_accepts);
        set(&c.sendmsg, io.sendmsg);
        set(&c.registered_sends, io.registered_sends);
        set(&c.epoll_ctl, io.epoll_ctl);
        if let Some(work) = &self.work {
            set(&c.queue_depth, work.depth() as u64);
        }
    }
}
