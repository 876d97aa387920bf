//! The shard driven without sockets: a [`Harness`] holds one shard on the fake reactor
//! (fake.rs), plays its clients byte by byte, and runs the loop until nothing is left to do
//! ([`Harness::drive`]), with a bound that reports a livelock. Time is virtual and moves only
//! when a test says ([`Harness::advance`]), so deadlines are exact and no test waits.
//!
//! Each behaviour file below asserts what a client sees (frames, close codes, FIN) and what
//! the shard counts, never how long anything took.

mod fake;

mod admission;
mod closing;
mod fanout;
mod heartbeats;
mod peers;
mod slow_consumers;
mod work_queue;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{Hub, Shard};
use crate::config::Config;
use crate::io::{Reactor as _, Waker};
use crate::stats::{Counters, StatsRegistry, ThreadStats};
use crate::ws::Opcode;
use crate::ws::frame::{FrameHeader, encode_frame};
pub use fake::ClientId;
use fake::{FakeReactor, Net, Tokens};

/// Loop iterations `drive` allows before it calls the shard livelocked.
const DRIVE_LIMIT: usize = 10_000;

/// A frame as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == Opcode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// One shard on the fake reactor and the clients it serves.
pub struct Harness {
    pub shard: Shard<FakeReactor>,
    pub net: Rc<RefCell<Net>>,
    pub hub: Arc<Hub>,
    pub stats: Arc<ThreadStats>,
    tokens: Tokens,
    next_client: ClientId,
    /// Clients whose response head has been read (frames follow).
    upgraded: Vec<ClientId>,
}

/// The configuration `wschat <args>` would run with.
pub fn config(args: &[&str]) -> Arc<Config> {
    Arc::new(crate::config::for_test(args))
}

impl Harness {
    /// A server of one shard run with `args`.
    pub fn new(args: &[&str]) -> Harness {
        fake::hold_descriptors();
        let waker = Waker::new().expect("eventfd");
        let config = config(args);
        let hub = Hub::new(std::slice::from_ref(&waker), config.max_conns);
        Harness::shard_of(hub, 0, waker, config)
    }

    /// Shard `index` of `hub`, whose waker for that shard is `waker`.
    pub fn shard_of(hub: Arc<Hub>, index: usize, waker: Waker, config: Arc<Config>) -> Harness {
        let io = FakeReactor::new(waker);
        let net = io.net.clone();
        let registry = StatsRegistry::new("test", "fake", io.clock()());
        let stats = registry.add_thread("loop");
        let shard = Shard::new(io, index, hub.clone(), config, stats.clone(), registry);
        Harness {
            shard,
            net,
            hub,
            stats,
            tokens: Tokens::new(),
            next_client: 0,
            upgraded: Vec::new(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.stats.counters
    }

    /// Runs the loop until an iteration finds nothing to do twice in a row and no deadline
    /// is due. Panics if that takes more than `DRIVE_LIMIT` iterations (a livelock).
    pub fn drive(&mut self) {
        let mut idle_turns = 0;
        for _ in 0..DRIVE_LIMIT {
            if self.shard.state.stopped() {
                return; // `run` would have returned
            }
            self.turn();
            let due = self
                .shard
                .state
                .next_deadline()
                .is_some_and(|t| t <= fake::now());
            if self.net.borrow().idle && !due {
                idle_turns += 1;
                if idle_turns == 2 {
                    return;
                }
            } else {
                idle_turns = 0;
            }
        }
        panic!("the shard was still busy after {DRIVE_LIMIT} iterations: a livelock");
    }

    /// One loop iteration.
    pub fn turn(&mut self) {
        self.shard.turn().expect("the fake reactor never fails");
    }

    /// Moves virtual time forward by `by` and drives the loop.
    pub fn advance(&mut self, by: Duration) {
        fake::advance(by);
        self.drive();
    }

    /// A new client connecting; the shard accepts it at the next drive.
    pub fn connect(&mut self) -> ClientId {
        let client = self.next_client;
        self.next_client += 1;
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000 + client as u16));
        fake::queue_accept(&mut self.net.borrow_mut(), &mut self.tokens, client, peer);
        client
    }

    /// Bytes from `client` to the server.
    pub fn send(&mut self, client: ClientId, bytes: &[u8]) {
        self.net
            .borrow_mut()
            .wire(client)
            .to_server
            .extend(bytes.iter().copied());
    }

    /// A masked frame from `client`.
    pub fn send_frame(&mut self, client: ClientId, opcode: Opcode, payload: &[u8]) {
        self.send(
            client,
            &encode_frame(opcode, &[payload], Some([7, 1, 8, 2])),
        );
    }

    pub fn send_text(&mut self, client: ClientId, text: &str) {
        self.send_frame(client, Opcode::Text, text.as_bytes());
    }

    /// A client that sent the upgrade request for `path` and read the response head.
    /// Returns the client and the status code.
    pub fn upgrade(&mut self, path: &str) -> (ClientId, u16) {
        let client = self.connect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.send(client, request.as_bytes());
        self.drive();
        (client, self.take_status(client).unwrap_or(0))
    }

    /// A chat member of `room` named `name`, upgraded, with the output so far taken.
    pub fn join(&mut self, room: &str, name: &str) -> ClientId {
        let (client, status) = self.upgrade(&format!("/chat/{room}?name={name}"));
        assert_eq!(status, 101, "{name} joins {room}");
        self.frames(client);
        client
    }

    /// Reads the response head `client` received; its status code.
    pub fn take_status(&mut self, client: ClientId) -> Option<u16> {
        let mut net = self.net.borrow_mut();
        let out = &mut net.wire(client).to_client;
        let end = out.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head: Vec<u8> = out.drain(..end).collect();
        self.upgraded.push(client);
        let line = String::from_utf8_lossy(&head);
        line.split(' ').nth(1)?.parse().ok()
    }

    /// The whole frames `client` has received since the last call, taken.
    pub fn frames(&mut self, client: ClientId) -> Vec<Frame> {
        assert!(
            self.upgraded.contains(&client),
            "read the response head first"
        );
        let mut net = self.net.borrow_mut();
        let out = &mut net.wire(client).to_client;
        let mut frames = Vec::new();
        let mut at = 0;
        loop {
            let header = match FrameHeader::parse(&out[at..]) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => panic!("the server sent a bad frame: {e:?}"),
            };
            let (header, len) = header;
            let end = at + len + header.payload_len as usize;
            if end > out.len() {
                break;
            }
            frames.push(Frame {
                fin: header.fin,
                opcode: header.opcode,
                payload: out[at + len..end].to_vec(),
            });
            at = end;
        }
        out.drain(..at);
        frames
    }

    /// The text messages among the frames `client` received, taken.
    pub fn texts(&mut self, client: ClientId) -> Vec<String> {
        self.frames(client)
            .iter()
            .filter(|f| f.opcode == Opcode::Text)
            .map(Frame::text)
            .collect()
    }

    /// Whether the shard still holds `client`'s connection.
    pub fn is_open(&self, client: ClientId) -> bool {
        self.net.borrow().key(client).is_some()
    }

    /// Whether the server sent FIN to `client`.
    pub fn got_fin(&self, client: ClientId) -> bool {
        self.net.borrow_mut().wire(client).server_fin
    }
}
