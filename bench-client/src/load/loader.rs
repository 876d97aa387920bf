//! One loader thread: a mio loop over its share of the connections, from connect through
//! upgrade to the goodbye, driven by the phase the main thread sets.
//!
//! Owns: the per-connection state, the connect queue (at most its share of
//! --connect-concurrency in flight), connect timeouts, the loop itself (events, ready list,
//! send deadlines, one flush per dirty connection per iteration) and what the thread hands
//! back when it stops. Must never: block outside `poll`, touch another thread's
//! connections, or keep running once the phase is STOP.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use wschat::ws::deflate::Compressor;

use super::outcome::LoadCounters;
use super::{Drive, LoadConfig, PHASE_CONNECT, PHASE_DRAIN, PHASE_RUN, PHASE_STOP, Shared, Target};
use crate::clock::{DeadlineTimer, now_ns};
use crate::handshake::{ClientHandshake, ResponseState, read_response};
use crate::histo::{new_histogram, record_ns};
use crate::net::{ConnectError, connect_finished, source_ip, start_connect};
use crate::rng::SplitMix64;
use crate::schedule::Timetable;
use crate::track::SeqTracker;
use crate::transport::Transport;
use crate::wsclient::{self, InflateMemo, MessageReader};

/// The largest message the loader accepts from the server; ours are --payload bytes and the
/// notices are short, so anything bigger is a protocol problem worth counting.
const MAX_INCOMING_MESSAGE: usize = 16 << 20;
/// Bytes read per `read` call, into the per-thread buffer.
const READ_CHUNK: usize = 64 << 10;
/// How often loader threads hand their interval histogram to the main thread.
const HISTOGRAM_HANDOFF: Duration = Duration::from_secs(1);
/// Closed loop: how long a loop may sleep while a window is full. Deliveries that reopen
/// a window may be seen by another thread, which cannot wake this one, so poll often.
const CLOSED_LOOP_POLL: Duration = Duration::from_millis(1);
/// Outside the run phase, loops wake this often to notice phase changes.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// The token of the thread's send-deadline timer (connections use their index).
const TIMER: Token = Token(usize::MAX);

/// What one loader thread hands back when it stops.
pub(super) struct LoaderReport {
    pub(super) counters: LoadCounters,
    pub(super) close_codes: BTreeMap<u16, u64>,
    pub(super) connect: Histogram<u64>,
    pub(super) send_lag: Histogram<u64>,
    /// CLOCK_MONOTONIC ns of the latest arrival of a measured delivery (0: none arrived).
    pub(super) last_arrival_ns: u64,
    /// Open loop: how long each lost measured delivery to a receiver still open at the end
    /// was waited for, from its due time (see `Loader::lost_waits`).
    pub(super) lost_wait: Histogram<u64>,
}

impl LoaderReport {
    /// An empty report, for the main thread to add the threads' reports to.
    pub(super) fn new() -> LoaderReport {
        LoaderReport {
            counters: LoadCounters::default(),
            close_codes: BTreeMap::new(),
            connect: new_histogram(),
            send_lag: new_histogram(),
            last_arrival_ns: 0,
            lost_wait: new_histogram(),
        }
    }

    /// Adds another thread's report to this one.
    pub(super) fn add(&mut self, other: LoaderReport) {
        self.counters.add(&other.counters);
        for (code, n) in other.close_codes {
            *self.close_codes.entry(code).or_default() += n;
        }
        let _ = self.connect.add(&other.connect);
        let _ = self.send_lag.add(&other.send_lag);
        self.last_arrival_ns = self.last_arrival_ns.max(other.last_arrival_ns);
        let _ = self.lost_wait.add(&other.lost_wait);
    }
}

/// Where a connection is in its life.
pub(super) enum State {
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

/// One connection and everything the loader keeps about it.
pub(super) struct Conn {
    /// Global index: the sender id in payloads and the `b<id>` name.
    pub(super) id: u32,
    pub(super) room: usize,
    pub(super) stream: Option<Transport>,
    pub(super) state: State,
    pub(super) out: Vec<u8>,
    pub(super) out_sent: usize,
    pub(super) reader: MessageReader,
    pub(super) timetable: Option<Timetable>,
    /// Closed loop: deliveries this connection's messages are expected to make.
    pub(super) expected_deliveries: u64,
    pub(super) next_seq: u64,
    pub(super) trackers: HashMap<u32, SeqTracker>,
    /// Stopped reading by a budget: serve again next iteration without a new edge.
    pub(super) read_pending: bool,
}

impl Conn {
    pub(super) fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }
}

/// One loader thread's view: its connections, its clock, its counters.
pub(super) struct Loader {
    pub(super) cfg: Arc<LoadConfig>,
    pub(super) shared: Arc<Shared>,
    pub(super) thread: usize,
    pub(super) poll: Poll,
    pub(super) timer: DeadlineTimer,
    pub(super) conns: Vec<Conn>,
    pub(super) connect_queue: VecDeque<usize>,
    pub(super) in_flight: usize,
    pub(super) max_in_flight: usize,
    pub(super) rng: SplitMix64,
    pub(super) counters: LoadCounters,
    pub(super) close_codes: BTreeMap<u16, u64>,
    pub(super) interval: Histogram<u64>,
    pub(super) connect_hist: Histogram<u64>,
    /// Open loop: how late each measured message left relative to its due time. The part
    /// of the latency that is the loader's own (timer wake-up, a busy loop), shown so that
    /// nobody mistakes it for the server's.
    pub(super) send_lag: Histogram<u64>,
    pub(super) histogram_tx: mpsc::Sender<Histogram<u64>>,
    pub(super) scratch: Vec<u8>,
    pub(super) payload_buf: Vec<u8>,
    /// Compresses what we send on deflate connections (its zlib state made on first use).
    pub(super) compressor: Compressor,
    /// Inflates what arrives compressed, each distinct message once per thread.
    pub(super) inflate_memo: InflateMemo,
    pub(super) send_heap: BinaryHeap<Reverse<(u64, usize)>>,
    pub(super) dirty: Vec<usize>,
    pub(super) ready: Vec<usize>,
    pub(super) running: bool,
    /// Problems seen (for the progress line only): malformed or foreign payloads, protocol
    /// errors, connections closed before the end.
    pub(super) errors: u64,
    /// CLOCK_MONOTONIC ns of the latest arrival of a measured delivery (0: none yet).
    pub(super) last_arrival_ns: u64,
}

impl Loader {
    /// The loader of thread `thread`: the connections `i` with `i % threads == thread`, each
    /// waiting for a connect slot.
    pub(super) fn new(
        cfg: Arc<LoadConfig>,
        shared: Arc<Shared>,
        thread: usize,
        histogram_tx: mpsc::Sender<Histogram<u64>>,
    ) -> io::Result<Loader> {
        let conns = (0..cfg.conns)
            .filter(|i| i % cfg.threads == thread)
            .map(|i| Conn {
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
        Ok(Loader {
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
            histogram_tx,
            scratch: vec![0; READ_CHUNK],
            payload_buf: Vec::new(),
            compressor: Compressor::default(),
            inflate_memo: InflateMemo::default(),
            send_heap: BinaryHeap::new(),
            dirty: Vec::new(),
            ready: Vec::new(),
            running: false,
            errors: 0,
            last_arrival_ns: 0,
            cfg,
            shared,
            thread,
        })
    }

    fn path_for(&self, conn: &Conn) -> String {
        match &self.cfg.target {
            Target::Chat { room_prefix, .. } => {
                format!("/chat/{room_prefix}{}?name=b{}", conn.room, conn.id)
            }
            Target::Echo => self.cfg.url.path.clone(),
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
        p.last_arrival_ns.store(self.last_arrival_ns, Relaxed);
    }

    /// The thread's loop, until the main thread sets STOP.
    pub(super) fn run(mut self) -> io::Result<LoaderReport> {
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
            // Open loop, also in the first iteration of DRAIN: a message due before the end that
            // a late loader had not sent when the phase changed still goes, stamped with its
            // due time (its timetable ends at the end of the run, so nothing later is due).
            // Sending only in RUN lost it silently (one of 200 in a busy test run). Closed
            // loop sends nothing after the run.
            let sending = match self.cfg.drive {
                Drive::OpenLoop { .. } => phase == PHASE_RUN || phase == PHASE_DRAIN,
                Drive::ClosedLoop { .. } => phase == PHASE_RUN,
            };
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
        // Before the goodbye, while `is_open` still says who stayed to the end. The drain's
        // end is stored before STOP; if this thread does not see it yet, now is a few ms
        // later at most.
        let stop_ns = match self.shared.stop_ns.load(Relaxed) {
            u64::MAX => now_ns(),
            ns => ns,
        };
        let lost_wait = self.lost_waits(stop_ns);
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
            last_arrival_ns: self.last_arrival_ns,
            lost_wait,
        })
    }
}
