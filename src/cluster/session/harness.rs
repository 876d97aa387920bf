//! A session with no sockets and no clock, for the tests: its one shard is a [`Mailbox`],
//! its time a base instant plus explicit offsets, Redis's side byte strings of RESP.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::commands::CMD_BOUNDS;
use super::{Conn, Session};
use crate::chat::{Audience, Delivery, Name, RoomName};
use crate::cluster::resp::Decoder;
use crate::cluster::wire::{self, Kind, NodeId};
use crate::cluster::{BrokerMsg, ClusterConfig, Link, REMOTE};
use crate::io::Waker;
use crate::peer::{Batch, MemberId, Peer as _, Shards};
use crate::stats::StatsRegistry;
use crate::ws::Opcode;
use crate::ws::frame::{FrameHeader, server_frame};

pub const MAX_MESSAGE: usize = 1000;
/// The driver seeds the session at random; the tests with a constant, so runs repeat.
const SEED: u64 = 42;

/// The link's wake-up, which a session never signals: one eventfd shared by every test
/// rather than one each, so that the tests that count the process's descriptors (io/) are
/// not disturbed by these opening and closing theirs meanwhile.
fn waker() -> Waker {
    static WAKER: OnceLock<Waker> = OnceLock::new();
    WAKER
        .get_or_init(|| Waker::new().expect("an eventfd"))
        .clone()
}

/// One shard as the broker sees it: what was handed to it, and the backlog it reports
/// (set by the test: the mailbox delivers nothing by itself).
#[derive(Debug, Default)]
pub struct Mailbox {
    batches: Mutex<Vec<Batch>>,
    ready: Mutex<Vec<RoomName>>,
    pub backlog: Mutex<(usize, usize)>,
}

impl Shards for Mailbox {
    fn count(&self) -> usize {
        1
    }
    fn deliver(&self, shard: usize, batch: Batch) {
        assert_eq!(shard, 0);
        self.batches.lock().unwrap().push(batch);
    }
    fn room_ready(&self, room: &RoomName) {
        self.ready.lock().unwrap().push(room.clone());
    }
    fn backlog(&self) -> (usize, usize) {
        *self.backlog.lock().unwrap()
    }
}

/// A session, its one shard's mailbox, and the instant its time starts from.
pub struct Harness {
    pub session: Session,
    pub shard: Arc<Mailbox>,
    pub t0: Instant,
}

impl std::ops::Deref for Harness {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

impl Harness {
    /// A session at `t0` for node 1 on `url`, its link down and due to connect.
    pub fn down_on(url: &str) -> Harness {
        let config = ClusterConfig {
            url: url.parse().unwrap(),
            node: NodeId(1),
            max_message: MAX_MESSAGE,
        };
        let link = Arc::new(Link::new(&config, waker()));
        let shard = Arc::new(Mailbox::default());
        // The one clock read: the base every instant of the test is an offset from.
        let t0 = Instant::now();
        let stats = StatsRegistry::new("test", "test", t0).add_thread("broker");
        let session = Session::new(link, shard.clone(), stats, MAX_MESSAGE, SEED, t0);
        Harness { session, shard, t0 }
    }

    pub fn down() -> Harness {
        Harness::down_on("redis://h")
    }

    /// A session whose link came up at `t0` and whose set-up Redis has answered; nothing
    /// written, owed or reported.
    pub fn up() -> Harness {
        let mut h = Harness::down();
        let t0 = h.t0;
        assert!(h.poll_connect(t0));
        h.handle_connected(t0);
        h.written(Conn::Cmd);
        h.written(Conn::Sub);
        // CLIENT SETNAME and the heartbeat's SET; on `Sub` CLIENT SETNAME and PING.
        h.handle_input(Conn::Cmd, b"+OK\r\n+OK\r\n", t0);
        h.handle_input(Conn::Sub, b"+OK\r\n+PONG\r\n", t0);
        assert!(h.expect.is_empty());
        while h.poll_report().is_some() {}
        h
    }

    /// A link up with `room` subscribed and confirmed, as a shard's first member made it
    /// (one local member); nothing written, owed or reported.
    pub fn in_room(room: &RoomName) -> Harness {
        let mut h = Harness::up();
        let t = h.at(1);
        assert!(!h.link.join(room));
        h.requests(t);
        h.handle_input(Conn::Sub, subscribed(room, 1).as_bytes(), t);
        h.written(Conn::Sub);
        h.ready();
        h
    }

    /// `ms` milliseconds after `t0`.
    pub fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// The commands the session writes on `conn` now, as argument lists; taken, as if the
    /// socket took every byte.
    pub fn written(&mut self, conn: Conn) -> Vec<Vec<String>> {
        let Some(outbox) = self.session.poll_transmit(conn) else {
            return Vec::new();
        };
        let bytes: Vec<u8> = outbox.slices().flatten().copied().collect();
        outbox.clear();
        let mut d = Decoder::new(CMD_BOUNDS);
        d.handle_input(&bytes);
        let mut out = Vec::new();
        while let Some(v) = d.poll_value().unwrap() {
            let args = v.as_array().unwrap().iter();
            let args = args.map(|a| String::from_utf8_lossy(a.as_bytes().unwrap()).into_owned());
            out.push(args.collect());
        }
        out
    }

    /// Hands the session what the shards asked of the link since the last call, at `now`.
    pub fn requests(&mut self, now: Instant) {
        let mut batch: Vec<BrokerMsg> = Vec::new();
        self.session.link.drain_into(&mut batch);
        for msg in batch {
            self.session.handle_request(msg, now);
        }
    }

    /// Everything handed to the shard since the last call (after [`Session::poll_deliveries`]
    /// at `t0`: tests that need its time call it themselves first), as (audience, payload).
    pub fn handed(&mut self) -> Vec<(Audience<MemberId>, Vec<u8>)> {
        let t0 = self.t0;
        self.session.poll_deliveries(t0);
        let batches = std::mem::take(&mut *self.shard.batches.lock().unwrap());
        let mut out = Vec::new();
        for deliveries in batches {
            for d in deliveries.iter() {
                out.push((d.to.clone(), payload(&d.frame)));
            }
        }
        out
    }

    /// The replies to single members among [`Harness::handed`], as text.
    pub fn replies(&mut self) -> Vec<String> {
        self.handed()
            .into_iter()
            .filter(|(to, _)| matches!(to, Audience::Member(_)))
            .map(|(_, p)| String::from_utf8(p).unwrap())
            .collect()
    }

    /// The payloads for whole rooms among [`Harness::handed`].
    pub fn room_payloads(&mut self) -> Vec<Vec<u8>> {
        self.handed()
            .into_iter()
            .filter(|(to, _)| matches!(to, Audience::Room { .. }))
            .map(|(_, p)| p)
            .collect()
    }

    /// The rooms told ready since the last call.
    pub fn ready(&self) -> Vec<RoomName> {
        std::mem::take(&mut *self.shard.ready.lock().unwrap())
    }

    /// The lines reported since the last call.
    pub fn reports(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.session.poll_report()).collect()
    }
}

/// The payload of an unmasked server frame.
pub fn payload(frame: &[u8]) -> Vec<u8> {
    let (_, len) = FrameHeader::parse(frame).unwrap().unwrap();
    frame[len..].to_vec()
}

pub fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

pub fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

pub fn member(conn: usize) -> MemberId {
    MemberId { shard: 0, conn }
}

/// Another node's event as it travels inside a `message` push.
pub fn event(node: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_event(NodeId(node), seq, Kind::Binary, payload, &mut out);
    out
}

/// A chat line for the room, as a shard plans it.
pub fn room_delivery(room: &RoomName) -> Delivery<MemberId> {
    Delivery {
        frame: server_frame(Opcode::Text, &[b"Ann says: hi"]).into(),
        to: Audience::Room {
            room: room.clone(),
            except: REMOTE,
        },
    }
}

/// A RESP bulk string.
pub fn bulk(b: &str) -> String {
    format!("${}\r\n{b}\r\n", b.len())
}

/// Redis's push on `Sub` for a subscription confirmed.
pub fn subscribed(room: &RoomName, count: usize) -> String {
    format!(
        "*3\r\n{}{}:{count}\r\n",
        bulk("subscribe"),
        bulk(&wire::channel(room))
    )
}

/// Redis's push on `Sub` for a message on a room's channel.
pub fn message(room: &RoomName, payload: &[u8]) -> Vec<u8> {
    let channel = wire::channel(room);
    let mut out = format!(
        "*3\r\n{}{}${}\r\n",
        bulk("message"),
        bulk(&channel),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}
