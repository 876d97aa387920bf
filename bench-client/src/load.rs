//! The message-load engine behind `chat`, `saturate` and `ping`: `--threads` hand-rolled
//! mio loops, each owning a share of the connections, plus a coordinating main thread.
//!
//! ```text
//!  main thread                          loader thread t (owns conns i with i % threads == t)
//!  ───────────                          ─────────────────────────────────────────────────
//!  CONNECT  wait: opened+failed == C    connect, upgrade (bounded in flight), join room
//!  SETTLE   wait: join notices settled  count "<name> just connected" notices
//!  RUN      progress line each second   send on timetable (open loop) or window (closed),
//!           CPU snapshots at measure      receive, track (sender, seq), record latency
//!           start and end
//!  DRAIN    wait: delivered == expected receive only
//!           or --drain elapsed
//!  STOP     join threads, build results  close, hand back counters and histograms
//! ```
//! Owns: the phases, the per-connection state, delivery accounting and latency recording.
//! Must never: stamp a message with anything but its due time (open loop), count a
//! duplicate as a delivery, run unbounded (every phase has a deadline), or panic on what the
//! server sends.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use wschat::ws::deflate::Compressor;
use wschat::ws::frame::Opcode;

use crate::clock::{DeadlineTimer, now_ns};
use crate::counters::counter_set;
use crate::handshake::{ClientHandshake, ResponseState, read_response};
use crate::histo::{new_histogram, percentiles, record_ns};
use crate::net::{ConnectError, ConnectErrors, WsUrl, connect_finished, source_ip, start_connect};
use crate::payload::{self, Fill, Stamp};
use crate::rng::SplitMix64;
use crate::schedule::Timetable;
use crate::track::{Arrival, SeqTracker};
use crate::transport::{TlsClient, Transport, is_tls_error};
use crate::wsclient::{self, InflateMemo, MessageReader};

/// Where the connections go and who receives what.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/chat/<prefix><i % rooms>`: every message reaches the room's other members.
    Chat { rooms: usize, room_prefix: String },
    /// An echo endpoint: every message comes back to its sender only.
    Echo,
}

/// How sending is paced.
#[derive(Debug, Clone, Copy)]
pub enum Drive {
    /// `rate` messages per second in total, each connection on its own fixed timetable.
    OpenLoop { rate: f64 },
    /// Each connection keeps at most `window` messages undelivered.
    ClosedLoop { window: u64 },
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: WsUrl,
    /// `wss://`: every connection gets a TLS session from this.
    pub tls: Option<TlsClient>,
    pub target: Target,
    pub drive: Drive,
    pub conns: usize,
    pub threads: usize,
    pub payload: usize,
    /// What pads each message after its header.
    pub fill: Fill,
    /// Offer permessage-deflate; where agreed, compress what we send and inflate what
    /// arrives compressed.
    pub deflate: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub connect_timeout: Duration,
    pub connect_concurrency: usize,
    pub settle_timeout: Duration,
    pub source_ips: u8,
    pub seed: u64,
    pub progress: bool,
    pub server_pid: Option<u32>,
    /// Skewed sender mix (open loop): every `hot_every`-th connection (0 = none) sends
    /// `hot_weight` times the rate of the others.
    pub hot_every: usize,
    pub hot_weight: f64,
}

const PHASE_CONNECT: u8 = 0;
const PHASE_SETTLE: u8 = 1;
const PHASE_RUN: u8 = 2;
const PHASE_DRAIN: u8 = 3;
const PHASE_STOP: u8 = 4;

/// The largest message the loader accepts from the server; ours are --payload bytes and the
/// notices are short, so anything bigger is a protocol problem worth counting.
const MAX_INCOMING_MESSAGE: usize = 16 << 20;
/// Bytes read per `read` call, into the per-thread buffer.
const READ_CHUNK: usize = 64 << 10;
/// Reads per connection per readiness event before moving on to the others (the
/// connection goes on the loop's ready list and is served again next iteration).
const READS_PER_EVENT: usize = 16;
/// How often loader threads hand their interval histogram to the main thread.
const HISTOGRAM_HANDOFF: Duration = Duration::from_secs(1);
/// Closed loop: how long a loop may sleep while a window is full. Deliveries that reopen
/// a window may be seen by another thread, which cannot wake this one, so poll often.
const CLOSED_LOOP_POLL: Duration = Duration::from_millis(1);
/// Outside the run phase, loops wake this often to notice phase changes.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// The first message is due this long after the main thread starts the run, so that every
/// loop has seen the phase change before anything is due.
const RUN_LEAD: Duration = Duration::from_millis(20);

const TIMER: Token = Token(usize::MAX);

/// Per-thread counters the main thread reads for progress lines and phase decisions. Each
/// is written by one thread only (plain stores of the thread's running totals).
#[derive(Default)]
struct Progress {
    opened: AtomicU64,
    failed: AtomicU64,
    notices: AtomicU64,
    sent: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    done_sending: AtomicBool,
}

struct Shared {
    phase: AtomicU8,
    start_ns: AtomicU64,
    measure_ns: AtomicU64,
    end_ns: AtomicU64,
    /// Open members per room (one room for Echo): who a message is expected to reach.
    room_members: Vec<AtomicU64>,
    /// Closed loop: deliveries of each sender's messages seen by any receiver.
    acked: Vec<AtomicU64>,
    progress: Vec<Progress>,
}

impl Shared {
    fn sum(&self, field: impl Fn(&Progress) -> &AtomicU64) -> u64 {
        self.progress.iter().map(|p| field(p).load(Relaxed)).sum()
    }
}

counter_set! {
    /// What a load run counted. Each loader thread counts its own connections and
    /// deliveries; the main thread adds the threads' sets and derives the run's totals
    /// (`conns`, `lost`, `unexpected`, ...), which are zero in a thread's set.
    pub struct LoadCounters {
        /// Connections the run asked for (derived).
        conns,
        /// Connections that completed their upgrade.
        opened,
        /// Connections that failed to open (the kinds are in `connect_errors`).
        connect_failed,
        /// 101s that agreed to permessage-deflate.
        deflate_agreed,
        /// "<name> just connected" notices received.
        join_notices,
        /// Join notices the open members should receive: n(n-1)/2 per room of n (derived).
        join_notices_expected,
        /// Messages sent, and of them those due in the measured interval.
        sent,
        sent_measured,
        /// Deliveries the messages sent should make (receivers present when sent).
        expected,
        expected_measured,
        /// Deliveries received once each (duplicates are not), and of them those of
        /// messages due in the measured interval.
        received,
        received_measured,
        /// expected - received, in all and of the measured messages (derived).
        lost,
        lost_measured,
        /// received - expected, when more arrived than expected (derived).
        unexpected,
        /// Sequence numbers skipped by a later arrival and never filled: the lost
        /// deliveries that left a gap (the rest is a tail that never arrived at all).
        holes,
        /// Deliveries that arrived after a later one from the same sender.
        out_of_order,
        /// Deliveries that arrived a second time (not counted as received).
        duplicates,
        /// Binary messages that are not our payload layout.
        malformed,
        /// Payloads from a sender this run does not have (or, on echo, another sender).
        foreign,
        /// Connections closed for a frame a client must not accept.
        protocol_errors,
        /// Connections whose TLS failed after the upgrade.
        tls_errors,
        /// Open connections that closed, whoever closed them.
        disconnects,
        /// Payload and frame-payload bytes sent (they differ where compressed), and the
        /// messages sent compressed.
        payload_bytes_sent,
        wire_bytes_sent,
        compressed_sent,
        /// The same for what was received.
        payload_bytes_received,
        wire_bytes_received,
        compressed_received,
        /// Compressed messages actually inflated: each distinct one once per thread.
        inflations,
    }
    nonzero_only {
        /// Text messages other than join notices (leave notices, replies): results files
        /// have only ever listed it when something arrived.
        other_text,
    }
    nested {
        connect_errors: ConnectErrors,
    }
}

/// What a load run measured; `results` turns it into the JSON document.
pub struct LoadOutcome {
    pub counters: LoadCounters,
    pub close_codes: BTreeMap<String, u64>,
    pub rates: BTreeMap<String, f64>,
    pub latency: Histogram<u64>,
    pub connect: Histogram<u64>,
    /// Open loop only (empty for closed loop): actual send time minus due time.
    pub send_lag: Histogram<u64>,
    pub measured: Duration,
    pub loader_cpu: crate::cpu::CpuTime,
    pub server_cpu: Option<crate::cpu::ProcessCpu>,
    pub correct: bool,
}

/// What one loader thread hands back when it stops.
struct LoaderReport {
    counters: LoadCounters,
    close_codes: BTreeMap<u16, u64>,
    connect: Histogram<u64>,
    send_lag: Histogram<u64>,
}

enum State {
    /// Not started yet (waiting for a connect slot).
    Idle,
    Connecting {
        since_ns: u64,
    },
    Upgrading {
        since_ns: u64,
        handshake: ClientHandshake,
    },
    Open,
    Closed,
}

struct Conn {
    /// Global index: the sender id in payloads and the `b<id>` name.
    id: u32,
    room: usize,
    stream: Option<Transport>,
    state: State,
    out: Vec<u8>,
    out_sent: usize,
    reader: MessageReader,
    timetable: Option<Timetable>,
    /// Closed loop: deliveries this connection's messages are expected to make.
    expected_deliveries: u64,
    next_seq: u64,
    trackers: HashMap<u32, SeqTracker>,
    /// Stopped reading by a budget: serve again next iteration without a new edge.
    read_pending: bool,
}

impl Conn {
    fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }
}

/// One loader thread's view: its connections, its clock, its counters.
struct Loader {
    cfg: Arc<LoadConfig>,
    shared: Arc<Shared>,
    thread: usize,
    poll: Poll,
    timer: DeadlineTimer,
    conns: Vec<Conn>,
    connect_queue: VecDeque<usize>,
    in_flight: usize,
    max_in_flight: usize,
    rng: SplitMix64,
    counters: LoadCounters,
    close_codes: BTreeMap<u16, u64>,
    interval: Histogram<u64>,
    connect_hist: Histogram<u64>,
    /// Open loop: how late each measured message left relative to its due time. The part
    /// of the latency that is the loader's own (timer wake-up, a busy loop), shown so that
    /// nobody mistakes it for the server's.
    send_lag: Histogram<u64>,
    histogram_tx: mpsc::Sender<Histogram<u64>>,
    scratch: Vec<u8>,
    payload_buf: Vec<u8>,
    /// Compresses what we send on deflate connections (its zlib state made on first use).
    compressor: Compressor,
    /// Inflates what arrives compressed, each distinct message once per thread.
    inflate_memo: InflateMemo,
    send_heap: BinaryHeap<Reverse<(u64, usize)>>,
    dirty: Vec<usize>,
    ready: Vec<usize>,
    running: bool,
    /// Problems seen (for the progress line only): malformed or foreign payloads, protocol
    /// errors, connections closed before the end.
    errors: u64,
}

impl Loader {
    fn path_for(&self, conn: &Conn) -> String {
        match &self.cfg.target {
            Target::Chat { room_prefix, .. } => {
                format!("/chat/{room_prefix}{}?name=b{}", conn.room, conn.id)
            }
            Target::Echo => self.cfg.url.path.clone(),
        }
    }

    /// How many deliveries one message from a member of `room` should make right now.
    fn fanout(&self, room: usize) -> u64 {
        match self.cfg.target {
            Target::Chat { .. } => self.shared.room_members[room]
                .load(Relaxed)
                .saturating_sub(1),
            Target::Echo => 1,
        }
    }

    fn fail(&mut self, idx: usize, why: ConnectError) {
        self.counters.connect_errors.count(why);
        self.counters.connect_failed += 1;
        self.in_flight -= 1;
        let conn = &mut self.conns[idx];
        conn.state = State::Closed;
        conn.stream = None;
    }

    fn start_connect(&mut self, idx: usize) {
        let source = source_ip(idx, self.cfg.source_ips);
        self.in_flight += 1;
        let started = start_connect(self.cfg.url.addr, source)
            .and_then(|tcp| Transport::new(tcp, self.cfg.tls.as_ref()));
        match started {
            Ok(mut stream) => {
                let token = Token(idx);
                if let Err(e) = self.poll.registry().register(
                    stream.tcp_mut(),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.fail(idx, ConnectError::from_io(&e));
                    return;
                }
                let conn = &mut self.conns[idx];
                conn.stream = Some(stream);
                conn.state = State::Connecting { since_ns: now_ns() };
            }
            Err(e) => self.fail(idx, ConnectError::from_io(&e)),
        }
    }

    /// Drives connect -> upgrade -> open on any event for a connection not yet open.
    fn advance_handshake(&mut self, idx: usize) {
        if let State::Connecting { since_ns } = self.conns[idx].state {
            let Some(stream) = &self.conns[idx].stream else {
                return;
            };
            match connect_finished(stream.tcp()) {
                Ok(false) => return,
                Ok(true) => {
                    let (handshake, request) = ClientHandshake::start(
                        self.rng.bytes16(),
                        &self.cfg.url.host,
                        &self.path_for(&self.conns[idx]),
                        self.cfg.deflate,
                    );
                    // With TLS the request waits inside rustls until the handshake is done,
                    // and leaves with the client's last handshake flight: open_us covers
                    // connect, TLS and upgrade.
                    let conn = &mut self.conns[idx];
                    conn.out.extend_from_slice(&request);
                    conn.state = State::Upgrading {
                        since_ns,
                        handshake,
                    };
                    self.mark_dirty(idx);
                }
                Err(e) => return self.fail(idx, ConnectError::from_io(&e)),
            }
        }
        if let State::Upgrading { .. } = self.conns[idx].state {
            self.read_handshake(idx);
        }
    }

    fn read_handshake(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        let (
            Some(stream),
            State::Upgrading {
                since_ns,
                handshake,
            },
        ) = (&mut conn.stream, &mut conn.state)
        else {
            return;
        };
        let since_ns = *since_ns;
        match read_response(stream, &mut self.scratch, handshake) {
            ResponseState::Incomplete => {}
            ResponseState::Failed(why) => self.fail(idx, why),
            ResponseState::Opened(opened) => {
                if let Some(terms) = opened.deflate {
                    conn.reader.use_deflate(terms);
                    self.counters.deflate_agreed += 1;
                }
                conn.reader.handle_input(&opened.after_head);
                conn.state = State::Open;
                let room = conn.room;
                record_ns(&mut self.connect_hist, now_ns().saturating_sub(since_ns));
                self.shared.room_members[room].fetch_add(1, Relaxed);
                self.counters.opened += 1;
                self.in_flight -= 1;
                // Frames may have arrived with the 101.
                self.handle_messages(idx, now_ns());
                self.read_open(idx);
            }
        }
    }

    /// Reads an open connection until EAGAIN or the per-event budget.
    fn read_open(&mut self, idx: usize) {
        self.conns[idx].read_pending = false;
        for _ in 0..READS_PER_EVENT {
            let conn = &mut self.conns[idx];
            let (Some(stream), State::Open) = (&mut conn.stream, &conn.state) else {
                return;
            };
            // The arrival time is taken right after the read that delivered the bytes (with
            // TLS: once they are decrypted, which is part of what a wss:// client waits for).
            let mut arrived_ns = 0;
            let reader = &mut conn.reader;
            let read = stream.read_with(&mut self.scratch, |bytes| {
                if arrived_ns == 0 {
                    arrived_ns = now_ns();
                }
                reader.handle_input(bytes);
            });
            match read {
                Ok(0) => {
                    // EOF without a Close frame: an abnormal closure (1006 by RFC 6455 7.1.5).
                    self.close(idx, Some(1006), false);
                    return;
                }
                Ok(_) if arrived_ns == 0 => {} // TLS bytes that completed no record
                Ok(_) => self.handle_messages(idx, arrived_ns),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if is_tls_error(&e) {
                        self.counters.tls_errors += 1;
                    }
                    self.close(idx, Some(1006), false);
                    return;
                }
            }
        }
        self.conns[idx].read_pending = true;
        self.ready.push(idx);
    }

    fn handle_messages(&mut self, idx: usize, arrived_ns: u64) {
        let measure_ns = self.shared.measure_ns.load(Relaxed);
        let end_ns = self.shared.end_ns.load(Relaxed);
        let echo = matches!(self.cfg.target, Target::Echo);
        let conns_total = self.cfg.conns as u64;
        loop {
            let conn = &mut self.conns[idx];
            let own_id = conn.id;
            let message = match conn.reader.poll_message(&mut self.inflate_memo) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(_) => {
                    self.counters.protocol_errors += 1;
                    self.errors += 1;
                    let key = self.rng.mask_key();
                    self.conns[idx]
                        .out
                        .extend_from_slice(&wsclient::close_frame(1002, key));
                    self.mark_dirty(idx);
                    self.close(idx, None, true);
                    return;
                }
            };
            match message.opcode {
                Opcode::Binary => {
                    let Some(stamp) = payload::decode(message.payload) else {
                        self.counters.malformed += 1;
                        self.errors += 1;
                        continue;
                    };
                    if u64::from(stamp.sender) >= conns_total || (echo && stamp.sender != own_id) {
                        self.counters.foreign += 1;
                        self.errors += 1;
                        continue;
                    }
                    let arrival = conn
                        .trackers
                        .entry(stamp.sender)
                        .or_default()
                        .observe(stamp.seq);
                    match arrival {
                        Arrival::Duplicate => {
                            self.counters.duplicates += 1;
                            continue;
                        }
                        Arrival::Late => self.counters.out_of_order += 1,
                        Arrival::InOrder | Arrival::AfterGap { .. } => {}
                    }
                    self.counters.received += 1;
                    self.counters.payload_bytes_received += message.payload.len() as u64;
                    self.counters.wire_bytes_received += message.wire_len as u64;
                    if message.compressed {
                        self.counters.compressed_received += 1;
                    }
                    if matches!(self.cfg.drive, Drive::ClosedLoop { .. }) {
                        self.shared.acked[stamp.sender as usize].fetch_add(1, Relaxed);
                    }
                    if stamp.stamp_ns >= measure_ns && stamp.stamp_ns < end_ns {
                        self.counters.received_measured += 1;
                        record_ns(
                            &mut self.interval,
                            arrived_ns.saturating_sub(stamp.stamp_ns),
                        );
                    }
                }
                Opcode::Text => {
                    if message.payload.ends_with(b" just connected") {
                        self.counters.join_notices += 1;
                    } else {
                        self.counters.other_text += 1;
                    }
                }
                Opcode::Ping => {
                    let ping = message.payload.to_vec();
                    let key = self.rng.mask_key();
                    let conn = &mut self.conns[idx];
                    wsclient::push_masked_frame(&mut conn.out, Opcode::Pong, &ping, key);
                    self.mark_dirty(idx);
                }
                Opcode::Close => {
                    let code = wsclient::close_code(message.payload);
                    let key = self.rng.mask_key();
                    // Echo the server's code (RFC 6455 5.5.1) unless it is one that must
                    // never be sent on the wire.
                    let reply = match code {
                        1005 | 1006 | 1015 => 1000,
                        1000..=4999 => code,
                        _ => 1000,
                    };
                    self.conns[idx]
                        .out
                        .extend_from_slice(&wsclient::close_frame(reply, key));
                    self.mark_dirty(idx);
                    self.close(idx, Some(code), true);
                    return;
                }
                Opcode::Pong | Opcode::Continuation => {}
            }
        }
    }

    /// Marks a connection closed, counting the close code; with `flush_first`, tries one
    /// last write of what is queued (our Close reply) before dropping the socket.
    fn close(&mut self, idx: usize, code: Option<u16>, flush_first: bool) {
        if !self.conns[idx].is_open() {
            return;
        }
        if let Some(code) = code {
            *self.close_codes.entry(code).or_default() += 1;
        }
        self.counters.disconnects += 1;
        if self.shared.phase.load(Relaxed) < PHASE_STOP {
            self.errors += 1;
        }
        let room = self.conns[idx].room;
        self.shared.room_members[room].fetch_sub(1, Relaxed);
        if flush_first {
            self.flush(idx);
        }
        let conn = &mut self.conns[idx];
        conn.state = State::Closed;
        conn.stream = None;
        conn.timetable = None;
    }

    fn mark_dirty(&mut self, idx: usize) {
        self.dirty.push(idx);
    }

    /// Writes what is queued for one connection until EAGAIN; the rest waits for the next
    /// WRITABLE edge (the socket is registered for both directions once).
    fn flush(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        let Some(stream) = &mut conn.stream else {
            conn.out.clear();
            conn.out_sent = 0;
            return;
        };
        let mut failed = false;
        while conn.out_sent < conn.out.len() {
            match stream.write(&conn.out[conn.out_sent..]) {
                Ok(0) => break,
                Ok(n) => conn.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        conn.out.clear();
        conn.out_sent = 0;
        // TLS: sealed records rustls still holds (nothing for a plain stream). This runs even
        // when `out` was empty, so the WRITABLE edge that marks a connection dirty also
        // drains them.
        if !failed {
            loop {
                match stream.flush() {
                    Ok(()) => return,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if conn.is_open() {
            self.close(idx, Some(1006), false);
        }
    }

    fn queue_message(&mut self, idx: usize, stamp: Stamp) {
        self.payload_buf.clear();
        payload::encode(
            stamp,
            self.cfg.payload,
            self.cfg.fill,
            &mut self.payload_buf,
        );
        let key = self.rng.mask_key();
        let conn = &mut self.conns[idx];
        // The window we may compress with, where the server agreed to deflate.
        let deflate = conn
            .reader
            .deflate()
            .map(|terms| (&mut self.compressor, terms.client_window_bits));
        let wire = wsclient::push_message(
            &mut conn.out,
            Opcode::Binary,
            &self.payload_buf,
            key,
            deflate,
        );
        self.counters.payload_bytes_sent += self.payload_buf.len() as u64;
        self.counters.wire_bytes_sent += wire as u64;
        if wire != self.payload_buf.len() {
            self.counters.compressed_sent += 1;
        }
        let fanout = self.fanout(self.conns[idx].room);
        self.counters.sent += 1;
        self.counters.expected += fanout;
        self.conns[idx].expected_deliveries += fanout;
        let measure_ns = self.shared.measure_ns.load(Relaxed);
        let end_ns = self.shared.end_ns.load(Relaxed);
        if stamp.stamp_ns >= measure_ns && stamp.stamp_ns < end_ns {
            self.counters.sent_measured += 1;
            self.counters.expected_measured += fanout;
        }
    }

    /// Called once when the loop first sees the run phase.
    fn start_running(&mut self) {
        self.running = true;
        let start_ns = self.shared.start_ns.load(Relaxed);
        let end_ns = self.shared.end_ns.load(Relaxed);
        if let Drive::OpenLoop { rate } = self.cfg.drive {
            for idx in 0..self.conns.len() {
                if !self.conns[idx].is_open() {
                    continue;
                }
                // Each connection sends rate/C per second (period = C/rate seconds), unless
                // the sender mix is skewed (--hot-every): see skewed_period_ns.
                let period_ns = crate::schedule::skewed_period_ns(
                    rate,
                    self.cfg.conns,
                    self.conns[idx].id as usize,
                    self.cfg.hot_every,
                    self.cfg.hot_weight,
                );
                let phase = self.rng.below(period_ns);
                let tt = Timetable::new(start_ns, period_ns, phase, end_ns);
                if let Some(due) = tt.next_due() {
                    self.send_heap.push(Reverse((due, idx)));
                }
                self.conns[idx].timetable = Some(tt);
            }
        }
    }

    /// Open loop: sends everything due by now, each stamped with its due time.
    fn send_due(&mut self) {
        let now = now_ns();
        while let Some(&Reverse((due, idx))) = self.send_heap.peek() {
            if due > now {
                break;
            }
            self.send_heap.pop();
            let Some(mut tt) = self.conns[idx].timetable.take() else {
                continue;
            };
            let id = self.conns[idx].id;
            let measure_ns = self.shared.measure_ns.load(Relaxed);
            while let Some((seq, due_ns)) = tt.take_due(now) {
                if due_ns >= measure_ns {
                    record_ns(&mut self.send_lag, now - due_ns);
                }
                self.queue_message(
                    idx,
                    Stamp {
                        stamp_ns: due_ns,
                        sender: id,
                        seq,
                    },
                );
            }
            self.mark_dirty(idx);
            if let Some(next) = tt.next_due() {
                self.send_heap.push(Reverse((next, idx)));
            }
            self.conns[idx].timetable = Some(tt);
        }
    }

    /// Closed loop: fills every connection's window, stamping the actual send time.
    fn send_window(&mut self, window: u64) {
        let end_ns = self.shared.end_ns.load(Relaxed);
        for idx in 0..self.conns.len() {
            if !self.conns[idx].is_open() {
                continue;
            }
            let fanout = self.fanout(self.conns[idx].room);
            if fanout == 0 {
                continue;
            }
            let id = self.conns[idx].id;
            let mut queued = false;
            loop {
                let now = now_ns();
                let acked = self.shared.acked[id as usize].load(Relaxed);
                let outstanding = self.conns[idx].expected_deliveries.saturating_sub(acked);
                if now >= end_ns || outstanding >= window * fanout {
                    break;
                }
                let seq = self.conns[idx].next_seq;
                self.conns[idx].next_seq += 1;
                self.queue_message(
                    idx,
                    Stamp {
                        stamp_ns: now,
                        sender: id,
                        seq,
                    },
                );
                queued = true;
            }
            if queued {
                self.mark_dirty(idx);
            }
        }
    }

    fn check_connect_timeouts(&mut self, now: u64) {
        let limit = self.cfg.connect_timeout.as_nanos() as u64;
        for idx in 0..self.conns.len() {
            let since = match &self.conns[idx].state {
                State::Connecting { since_ns } | State::Upgrading { since_ns, .. } => *since_ns,
                _ => continue,
            };
            if now.saturating_sub(since) > limit {
                self.fail(idx, ConnectError::Timeout);
            }
        }
    }

    fn publish(&self) {
        let p = &self.shared.progress[self.thread];
        let c = &self.counters;
        p.opened.store(c.opened, Relaxed);
        p.failed.store(c.connect_failed, Relaxed);
        p.notices.store(c.join_notices, Relaxed);
        p.sent.store(c.sent, Relaxed);
        p.expected.store(c.expected, Relaxed);
        p.delivered.store(c.received, Relaxed);
        p.errors.store(self.errors, Relaxed);
    }

    fn run(mut self) -> io::Result<LoaderReport> {
        // The default 50 µs timer slack would make every timerfd wake-up, and so every
        // open-loop send, about 50 µs late; 1 ns asks for the deadline as it is. Best
        // effort: a kernel that refuses leaves the lag visible in send_lag_us.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        self.timer.register(self.poll.registry(), TIMER)?;
        let mut events = Events::with_capacity(1024);
        let mut next_handoff = Instant::now() + HISTOGRAM_HANDOFF;
        let mut last_timeout_check = 0u64;
        loop {
            let phase = self.shared.phase.load(Relaxed);
            if phase == PHASE_STOP {
                break;
            }
            while self.in_flight < self.max_in_flight {
                let Some(idx) = self.connect_queue.pop_front() else {
                    break;
                };
                self.start_connect(idx);
            }
            if phase >= PHASE_RUN && !self.running {
                self.start_running();
            }
            let sending = phase == PHASE_RUN;
            let mut timeout = IDLE_POLL;
            if sending {
                match self.cfg.drive {
                    Drive::OpenLoop { .. } => {
                        timeout = Duration::from_millis(50);
                        if let Some(&Reverse((due, _))) = self.send_heap.peek() {
                            self.timer.arm(due)?;
                        }
                    }
                    Drive::ClosedLoop { .. } => timeout = CLOSED_LOOP_POLL,
                }
            }
            if !self.ready.is_empty() {
                timeout = Duration::ZERO;
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                let token = ev.token();
                if token == TIMER {
                    self.timer.acknowledge();
                    continue;
                }
                let idx = token.0;
                if idx >= self.conns.len() {
                    continue;
                }
                match self.conns[idx].state {
                    State::Connecting { .. } | State::Upgrading { .. } => {
                        self.advance_handshake(idx);
                        // A request (or, with TLS, a handshake flight) the socket could not
                        // take at once goes on the WRITABLE edge.
                        if ev.is_writable() {
                            self.mark_dirty(idx);
                        }
                    }
                    State::Open => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read_open(idx);
                        }
                        if ev.is_writable() {
                            self.mark_dirty(idx);
                        }
                    }
                    State::Idle | State::Closed => {}
                }
            }
            for idx in std::mem::take(&mut self.ready) {
                if self.conns[idx].read_pending {
                    self.read_open(idx);
                }
            }
            let now = now_ns();
            if phase == PHASE_CONNECT && now - last_timeout_check > 10_000_000 {
                last_timeout_check = now;
                self.check_connect_timeouts(now);
            }
            if sending {
                match self.cfg.drive {
                    Drive::OpenLoop { .. } => self.send_due(),
                    Drive::ClosedLoop { window } => self.send_window(window),
                }
            }
            // Cork: one write per dirty connection per iteration.
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for &idx in &dirty {
                self.flush(idx);
            }
            dirty.clear();
            self.dirty = dirty;
            if phase >= PHASE_DRAIN {
                self.shared.progress[self.thread]
                    .done_sending
                    .store(true, Relaxed);
            }
            self.publish();
            if Instant::now() >= next_handoff {
                next_handoff += HISTOGRAM_HANDOFF;
                let full = std::mem::replace(&mut self.interval, new_histogram());
                let _ = self.histogram_tx.send(full);
            }
        }
        // Say goodbye politely so the server does not count resets.
        for idx in 0..self.conns.len() {
            if self.conns[idx].is_open() {
                let key = self.rng.mask_key();
                self.conns[idx]
                    .out
                    .extend_from_slice(&wsclient::close_frame(1000, key));
                self.flush(idx);
                // After the Close frame, which rustls would not seal behind close_notify.
                if let Some(stream) = &mut self.conns[idx].stream {
                    stream.close_notify();
                }
            }
        }
        let _ = self
            .histogram_tx
            .send(std::mem::replace(&mut self.interval, new_histogram()));
        self.publish();
        self.counters.holes = self
            .conns
            .iter()
            .flat_map(|c| c.trackers.values())
            .map(SeqTracker::missing)
            .sum();
        self.counters.inflations = self.inflate_memo.inflations;
        Ok(LoaderReport {
            counters: self.counters,
            close_codes: self.close_codes,
            connect: self.connect_hist,
            send_lag: self.send_lag,
        })
    }
}

/// Runs a whole load test and returns what it measured. Errors are run errors (exit 1).
pub fn run(cfg: LoadConfig) -> anyhow::Result<LoadOutcome> {
    let cfg = Arc::new(cfg);
    let rooms = match &cfg.target {
        Target::Chat { rooms, .. } => *rooms,
        Target::Echo => 1,
    };
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(PHASE_CONNECT),
        start_ns: AtomicU64::new(u64::MAX),
        measure_ns: AtomicU64::new(u64::MAX),
        end_ns: AtomicU64::new(u64::MAX),
        room_members: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..cfg.conns).map(|_| AtomicU64::new(0)).collect(),
        progress: (0..cfg.threads).map(|_| Progress::default()).collect(),
    });
    let (histogram_tx, histogram_rx) = mpsc::channel();
    let mut handles = Vec::new();
    let connect_started = Instant::now();
    for thread in 0..cfg.threads {
        let mine: Vec<usize> = (0..cfg.conns)
            .filter(|i| i % cfg.threads == thread)
            .collect();
        let conns = mine
            .iter()
            .map(|&i| Conn {
                id: i as u32,
                room: match &cfg.target {
                    Target::Chat { rooms, .. } => i % rooms,
                    Target::Echo => 0,
                },
                stream: None,
                state: State::Idle,
                out: Vec::new(),
                out_sent: 0,
                reader: MessageReader::new(MAX_INCOMING_MESSAGE),
                timetable: None,
                expected_deliveries: 0,
                next_seq: 0,
                trackers: HashMap::new(),
                read_pending: false,
            })
            .collect::<Vec<_>>();
        let loader = Loader {
            cfg: Arc::clone(&cfg),
            shared: Arc::clone(&shared),
            thread,
            poll: Poll::new()?,
            timer: DeadlineTimer::new()?,
            connect_queue: (0..conns.len()).collect(),
            conns,
            in_flight: 0,
            max_in_flight: (cfg.connect_concurrency / cfg.threads).max(1),
            rng: SplitMix64::new(cfg.seed ^ (thread as u64).wrapping_mul(0x9e37_79b9)),
            counters: LoadCounters::default(),
            close_codes: BTreeMap::new(),
            interval: new_histogram(),
            connect_hist: new_histogram(),
            send_lag: new_histogram(),
            histogram_tx: histogram_tx.clone(),
            scratch: vec![0; READ_CHUNK],
            payload_buf: Vec::new(),
            compressor: Compressor::default(),
            inflate_memo: InflateMemo::default(),
            send_heap: BinaryHeap::new(),
            dirty: Vec::new(),
            ready: Vec::new(),
            running: false,
            errors: 0,
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("loader-{thread}"))
                .spawn(move || loader.run())?,
        );
    }
    drop(histogram_tx);
    let conns = cfg.conns as u64;
    let stop_threads = |shared: &Shared| shared.phase.store(PHASE_STOP, Relaxed);

    // CONNECT: every connection opens or fails (each has its own timeout).
    let connect_limit =
        cfg.connect_timeout * ((cfg.conns / cfg.connect_concurrency.max(1)) as u32 + 2);
    while shared.sum(|p| &p.opened) + shared.sum(|p| &p.failed) < conns {
        if connect_started.elapsed() > connect_limit || handles.iter().any(|h| h.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let connect_time = connect_started.elapsed();
    let opened = shared.sum(|p| &p.opened);
    let failed = shared.sum(|p| &p.failed);
    if cfg.progress {
        eprintln!(
            "connected {opened}/{conns} in {:.3}s ({failed} failed)",
            connect_time.as_secs_f64()
        );
    }
    if opened == 0 {
        stop_threads(&shared);
        for h in handles {
            let _ = h.join();
        }
        anyhow::bail!("no connection could be opened ({failed} failed)");
    }

    // SETTLE: every member has been announced to every earlier member, so all are joined.
    shared.phase.store(PHASE_SETTLE, Relaxed);
    let settle_started = Instant::now();
    let notices_expected: u64 = match cfg.target {
        Target::Chat { .. } => shared
            .room_members
            .iter()
            .map(|m| {
                let n = m.load(Relaxed);
                n * n.saturating_sub(1) / 2
            })
            .sum(),
        Target::Echo => 0,
    };
    while shared.sum(|p| &p.notices) < notices_expected
        && settle_started.elapsed() < cfg.settle_timeout
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let settle_time = settle_started.elapsed();
    let notices_seen = shared.sum(|p| &p.notices);
    if cfg.progress {
        eprintln!(
            "join notices {notices_seen}/{notices_expected} settled in {:.3}s",
            settle_time.as_secs_f64()
        );
    }

    // RUN.
    let start_ns = now_ns() + RUN_LEAD.as_nanos() as u64;
    let measure_ns = start_ns + cfg.warmup.as_nanos() as u64;
    let end_ns = measure_ns + cfg.duration.as_nanos() as u64;
    shared.start_ns.store(start_ns, Relaxed);
    shared.measure_ns.store(measure_ns, Relaxed);
    shared.end_ns.store(end_ns, Relaxed);
    shared.phase.store(PHASE_RUN, Relaxed);

    let mut latency = new_histogram();
    let mut progress = ProgressLine::new(cfg.progress);
    let sleep_until = |deadline_ns: u64,
                       shared: &Shared,
                       latency: &mut Histogram<u64>,
                       progress: &mut ProgressLine| {
        loop {
            while let Ok(h) = histogram_rx.try_recv() {
                let _ = latency.add(&h);
            }
            progress.maybe_print(shared, latency);
            let now = now_ns();
            if now >= deadline_ns {
                break;
            }
            std::thread::sleep(Duration::from_nanos((deadline_ns - now).min(5_000_000)));
        }
    };
    sleep_until(measure_ns, &shared, &mut latency, &mut progress);
    let cpu_before = crate::cpu::self_cpu();
    let server_before = cfg.server_pid.and_then(crate::cpu::process_cpu);
    let measure_started = Instant::now();
    sleep_until(end_ns, &shared, &mut latency, &mut progress);
    let loader_cpu = crate::cpu::self_cpu().since(cpu_before);
    let measured = measure_started.elapsed();
    let server_cpu = match (
        server_before,
        cfg.server_pid.and_then(crate::cpu::process_cpu),
    ) {
        (Some(before), Some(after)) => Some(crate::cpu::process_cpu_delta(&before, &after)),
        _ => None,
    };

    // DRAIN: stop sending, wait for the stragglers.
    shared.phase.store(PHASE_DRAIN, Relaxed);
    let drain_started = Instant::now();
    loop {
        let done = shared.progress.iter().all(|p| p.done_sending.load(Relaxed));
        if done && shared.sum(|p| &p.delivered) >= shared.sum(|p| &p.expected) {
            break;
        }
        if drain_started.elapsed() >= cfg.drain {
            break;
        }
        while let Ok(h) = histogram_rx.try_recv() {
            let _ = latency.add(&h);
        }
        progress.maybe_print(&shared, &latency);
        std::thread::sleep(Duration::from_millis(1));
    }
    let drain_time = drain_started.elapsed();
    let drain_end_ns = now_ns();
    stop_threads(&shared);

    let mut counters = LoadCounters::default();
    let mut close_codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut connect = new_histogram();
    let mut send_lag = new_histogram();
    for h in handles {
        match h.join() {
            Ok(Ok(report)) => {
                counters.add(&report.counters);
                for (code, n) in report.close_codes {
                    *close_codes.entry(code).or_default() += n;
                }
                let _ = connect.add(&report.connect);
                let _ = send_lag.add(&report.send_lag);
            }
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context("loader thread failed")),
            Err(_) => anyhow::bail!("loader thread panicked"),
        }
    }
    while let Ok(h) = histogram_rx.try_recv() {
        let _ = latency.add(&h);
    }

    // Whatever is still missing is lost; a lost delivery's latency is at least the time we
    // waited for it, so it is recorded at that (never left out of the percentiles).
    let c = &mut counters;
    c.conns = conns;
    c.join_notices_expected = notices_expected;
    c.lost = c.expected.saturating_sub(c.received);
    c.lost_measured = c.expected_measured.saturating_sub(c.received_measured);
    c.unexpected = c.received.saturating_sub(c.expected);
    if c.lost_measured > 0 {
        let waited_ns = drain_end_ns.saturating_sub(end_ns);
        latency.saturating_record_n(waited_ns / 1_000, c.lost_measured);
    }
    let close_codes = close_codes
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let secs = cfg.duration.as_secs_f64().max(1e-9);
    let mut rates = BTreeMap::new();
    rates.insert("sent_per_s".into(), c.sent_measured as f64 / secs);
    rates.insert("delivered_per_s".into(), c.received_measured as f64 / secs);
    rates.insert("connect_s".into(), connect_time.as_secs_f64());
    rates.insert("settle_s".into(), settle_time.as_secs_f64());
    rates.insert("drain_s".into(), drain_time.as_secs_f64());
    let correct = c.lost == 0
        && c.received == c.expected
        && c.out_of_order == 0
        && c.duplicates == 0
        && c.malformed == 0
        && c.foreign == 0;
    Ok(LoadOutcome {
        counters,
        close_codes,
        rates,
        latency,
        connect,
        send_lag,
        measured,
        loader_cpu,
        server_cpu,
        correct,
    })
}

/// The once-a-second progress line on stderr.
struct ProgressLine {
    enabled: bool,
    started: Instant,
    next: Instant,
    last_sent: u64,
    last_delivered: u64,
}

impl ProgressLine {
    fn new(enabled: bool) -> ProgressLine {
        let now = Instant::now();
        ProgressLine {
            enabled,
            started: now,
            next: now + Duration::from_secs(1),
            last_sent: 0,
            last_delivered: 0,
        }
    }

    fn maybe_print(&mut self, shared: &Shared, latency: &Histogram<u64>) {
        let now = Instant::now();
        if !self.enabled || now < self.next {
            return;
        }
        self.next += Duration::from_secs(1);
        let sent = shared.sum(|p| &p.sent);
        let delivered = shared.sum(|p| &p.delivered);
        let errors = shared.sum(|p| &p.errors);
        let p = percentiles(latency);
        let pct = if p.count == 0 {
            "p50 -      p99 -     ".to_string()
        } else {
            format!("p50 {:>6}us p99 {:>6}us", p.p50, p.p99)
        };
        eprintln!(
            "[{:>4}s] sent {:>8}/s delivered {:>9}/s {pct} errors {errors}",
            self.started.elapsed().as_secs(),
            sent - self.last_sent,
            delivered - self.last_delivered,
        );
        self.last_sent = sent;
        self.last_delivered = delivered;
    }
}
