//! `connect`: a handshake storm. Opens `--conns` WebSocket connections with at most
//! `--concurrency` handshakes in flight and measures, separately, the TCP `connect()` (until
//! the socket is writable), for `wss://` the TLS handshake (`tls_us`: connected until the
//! client has the server's Finished and has queued its own), and the upgrade (request
//! written until the 101 is read; with TLS the request leaves with the client's Finished).
//!
//! Owns: the storm loop and its counters. Must never: retry a failed attempt (a failure is a
//! data point), or wait without a deadline (each attempt has `--timeout`, the whole run
//! `--time-limit`).

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use crate::clock::now_ns;
use crate::counters::counter_set;
use crate::handshake::{ClientHandshake, ResponseState, read_response};
use crate::histo::{new_histogram, record_ns};
use crate::net::{ConnectError, ConnectErrors, WsUrl, connect_finished, source_ip, start_connect};
use crate::rng::SplitMix64;
use crate::transport::{TlsClient, Transport};

#[derive(Debug, Clone)]
pub struct ConnectConfig {
    pub url: WsUrl,
    /// `wss://`: each attempt gets a TLS session from this.
    pub tls: Option<TlsClient>,
    pub conns: usize,
    pub concurrency: usize,
    pub threads: usize,
    pub timeout: Duration,
    pub time_limit: Duration,
    /// Keep every upgraded connection open until the end (a concurrency test) instead of
    /// closing it at once (a churn test).
    pub hold: bool,
    pub source_ips: u8,
    pub seed: u64,
    /// Offer permessage-deflate in every upgrade.
    pub deflate: bool,
}

counter_set! {
    /// What a storm counted: attempts and how each ended.
    pub struct ConnectCounters {
        /// Connects started (a start that fails at once counts here and as failed).
        attempted,
        /// Upgrades that ended in a valid 101.
        handshakes,
        /// Attempts that failed, whatever the kind (the kinds are in `errors`).
        failed,
        /// --hold: the most connections held open at once, added over threads.
        held_peak,
        /// Threads that stopped at --time-limit with attempts still to make or in flight.
        stopped_by_time_limit,
        /// 101s that agreed to permessage-deflate.
        deflate_agreed,
    }
    nested {
        errors: ConnectErrors,
    }
}

pub struct ConnectOutcome {
    pub counters: ConnectCounters,
    pub connect: Histogram<u64>,
    pub upgrade: Histogram<u64>,
    /// `wss://` only (empty otherwise).
    pub tls: Histogram<u64>,
    pub wall: Duration,
}

enum Step {
    Connecting,
    /// `wss://`: TCP is up, the TLS handshake is under way.
    Securing {
        connected_ns: u64,
    },
    Upgrading {
        /// When the upgrade began: TCP connected (ws://) or TLS done (wss://).
        connected_ns: u64,
        handshake: ClientHandshake,
        request: Vec<u8>,
        written: usize,
    },
}

struct Attempt {
    stream: Transport,
    started_ns: u64,
    step: Step,
}

enum Outcome {
    Pending,
    Open(Transport),
    Failed(ConnectError),
}

struct Storm {
    cfg: ConnectConfig,
    thread: usize,
    poll: Poll,
    slots: Vec<Option<Attempt>>,
    free: Vec<usize>,
    rng: SplitMix64,
    counters: ConnectCounters,
    connect: Histogram<u64>,
    upgrade: Histogram<u64>,
    tls: Histogram<u64>,
    held: Vec<Transport>,
    scratch: Vec<u8>,
}

impl Storm {
    /// Counts a failed attempt of kind `why`.
    fn count_failure(&mut self, why: ConnectError) {
        self.counters.failed += 1;
        self.counters.errors.count(why);
    }

    fn start(&mut self, global_index: usize) {
        self.counters.attempted += 1;
        let source: Option<Ipv4Addr> = source_ip(global_index, self.cfg.source_ips);
        let started = start_connect(self.cfg.url.addr, source)
            .and_then(|tcp| Transport::new(tcp, self.cfg.tls.as_ref()));
        let mut stream = match started {
            Ok(s) => s,
            Err(e) => return self.count_failure(ConnectError::from_io(&e)),
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            stream.tcp_mut(),
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(slot);
            return self.count_failure(ConnectError::from_io(&e));
        }
        self.slots[slot] = Some(Attempt {
            stream,
            started_ns: now_ns(),
            step: Step::Connecting,
        });
    }

    fn active(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn advance(&mut self, slot: usize) -> Outcome {
        let Some(attempt) = self.slots[slot].as_mut() else {
            return Outcome::Pending;
        };
        if let Step::Connecting = attempt.step {
            match connect_finished(attempt.stream.tcp()) {
                Ok(false) => return Outcome::Pending,
                Err(e) => return Outcome::Failed(ConnectError::from_io(&e)),
                Ok(true) => {
                    let connected_ns = now_ns();
                    record_ns(&mut self.connect, connected_ns - attempt.started_ns);
                    attempt.step = Step::Securing { connected_ns };
                }
            }
        }
        if let Step::Securing { connected_ns } = attempt.step {
            // A plain stream is never handshaking: it goes straight on to the upgrade.
            while attempt.stream.handshaking() {
                match attempt.stream.flush() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Outcome::Failed(ConnectError::from_io(&e)),
                }
                // No plaintext can come before the request has gone; none is expected.
                match attempt.stream.read_with(&mut self.scratch, |_| {}) {
                    Ok(0) => return Outcome::Failed(ConnectError::Reset),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Outcome::Failed(ConnectError::from_io(&e)),
                }
            }
            let upgrade_from = if self.cfg.tls.is_some() {
                let secured_ns = now_ns();
                record_ns(&mut self.tls, secured_ns - connected_ns);
                secured_ns
            } else {
                connected_ns
            };
            let (handshake, request) = ClientHandshake::start(
                self.rng.bytes16(),
                &self.cfg.url.host,
                &self.cfg.url.path,
                self.cfg.deflate,
            );
            attempt.step = Step::Upgrading {
                connected_ns: upgrade_from,
                handshake,
                request,
                written: 0,
            };
        }
        let Step::Upgrading {
            connected_ns,
            handshake,
            request,
            written,
        } = &mut attempt.step
        else {
            return Outcome::Pending;
        };
        while *written < request.len() {
            match attempt.stream.write(&request[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Failed(ConnectError::from_io(&e)),
            }
        }
        // TLS records of the request that the socket did not take yet (none for plain).
        loop {
            match attempt.stream.flush() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Failed(ConnectError::from_io(&e)),
            }
        }
        match read_response(&mut attempt.stream, &mut self.scratch, handshake) {
            ResponseState::Incomplete => Outcome::Pending,
            ResponseState::Failed(why) => Outcome::Failed(why),
            ResponseState::Opened(opened) => {
                if opened.deflate.is_some() {
                    self.counters.deflate_agreed += 1;
                }
                record_ns(&mut self.upgrade, now_ns() - *connected_ns);
                let Some(done) = self.slots[slot].take() else {
                    return Outcome::Pending;
                };
                self.free.push(slot);
                Outcome::Open(done.stream)
            }
        }
    }

    fn finish(&mut self, slot: usize, outcome: Outcome) {
        match outcome {
            Outcome::Pending => {}
            Outcome::Open(mut stream) => {
                self.counters.handshakes += 1;
                let _ = self.poll.registry().deregister(stream.tcp_mut());
                if self.cfg.hold {
                    self.held.push(stream);
                    let held = self.held.len() as u64;
                    self.counters.held_peak = self.counters.held_peak.max(held);
                } else {
                    // Dropped here: the client closes first (and keeps the TIME_WAIT); with
                    // TLS after a close_notify, so the server sees a clean close.
                    stream.close_notify();
                }
            }
            Outcome::Failed(why) => {
                self.count_failure(why);
                if let Some(mut a) = self.slots[slot].take() {
                    let _ = self.poll.registry().deregister(a.stream.tcp_mut());
                    self.free.push(slot);
                }
            }
        }
    }

    fn run(mut self, quota: usize, concurrency: usize) -> io::Result<Storm> {
        let mut events = Events::with_capacity(1024);
        let deadline = Instant::now() + self.cfg.time_limit;
        let timeout_ns = self.cfg.timeout.as_nanos() as u64;
        let mut started = 0;
        loop {
            while self.active() < concurrency && started < quota {
                self.start(started * self.cfg.threads + self.thread);
                started += 1;
            }
            if self.active() == 0 && started >= quota {
                break;
            }
            if Instant::now() >= deadline {
                self.counters.stopped_by_time_limit += 1;
                break;
            }
            match self.poll.poll(&mut events, Some(Duration::from_millis(10))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for slot in ready {
                if slot < self.slots.len() {
                    let outcome = self.advance(slot);
                    self.finish(slot, outcome);
                }
            }
            let now = now_ns();
            for slot in 0..self.slots.len() {
                let expired = self.slots[slot]
                    .as_ref()
                    .is_some_and(|a| now.saturating_sub(a.started_ns) > timeout_ns);
                if expired {
                    self.finish(slot, Outcome::Failed(ConnectError::Timeout));
                }
            }
        }
        Ok(self)
    }
}

pub fn run(cfg: ConnectConfig) -> anyhow::Result<ConnectOutcome> {
    let started = Instant::now();
    let mut handles = Vec::new();
    for thread in 0..cfg.threads {
        let quota = cfg.conns / cfg.threads + usize::from(thread < cfg.conns % cfg.threads);
        let concurrency = (cfg.concurrency / cfg.threads).max(1);
        let storm = Storm {
            cfg: cfg.clone(),
            thread,
            poll: Poll::new()?,
            slots: Vec::new(),
            free: Vec::new(),
            rng: SplitMix64::new(cfg.seed ^ thread as u64),
            counters: ConnectCounters::default(),
            connect: new_histogram(),
            upgrade: new_histogram(),
            tls: new_histogram(),
            held: Vec::new(),
            scratch: vec![0; 16 << 10],
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("connect-{thread}"))
                .spawn(move || storm.run(quota, concurrency))?,
        );
    }
    let mut counters = ConnectCounters::default();
    let mut connect = new_histogram();
    let mut upgrade = new_histogram();
    let mut tls = new_histogram();
    let mut storms = Vec::new();
    for h in handles {
        let storm = match h.join() {
            Ok(Ok(storm)) => storm,
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context("connect thread failed")),
            Err(_) => anyhow::bail!("connect thread panicked"),
        };
        counters.add(&storm.counters);
        let _ = connect.add(&storm.connect);
        let _ = upgrade.add(&storm.upgrade);
        let _ = tls.add(&storm.tls);
        storms.push(storm);
    }
    // Held connections close only now, after every thread finished: the wall time covers
    // the storm, not the teardown.
    let wall = started.elapsed();
    drop(storms);
    Ok(ConnectOutcome {
        counters,
        connect,
        upgrade,
        tls,
        wall,
    })
}
