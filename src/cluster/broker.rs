//! The broker thread: this node's link to Redis, an event loop of its own.
//!
//! One iteration: wait (epoll) for the Redis sockets, the inbox's eventfd, or the next
//! deadline (heartbeat, reconnect); handle what arrived (replies, subscription messages,
//! shards' requests); then write everything queued, one writev per connection, so a wake-up
//! that drained many publishes sends them as one pipelined burst.
//!
//! Two connections, both owned here: `CMD` carries PUBLISH, the `/who` fields and reads,
//! and the heartbeat, and its replies come back in order, matched by [`Expect`]; `SUB` is in
//! subscribe mode (Redis allows only (UN)SUBSCRIBE and PING there). Either failing drops
//! both: one notion of "the link is up" keeps the gap accounting simple.
//!
//! Must never: block except in `poll` and in a bounded connect while the link is down,
//! panic on what Redis sends, or take more from Redis than from a client: a remote event
//! longer than this node's `--max-message` allows is dropped and counted
//! (`remote_oversize`), and each connection's decoder refuses what is beyond its bounds
//! (`sub_bounds`, `CMD_BOUNDS`), which resets the link like any other link error.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::resp::{Bounds, Decoder, Value, command_len, encode_command};
use super::who::{self, FieldWrite, LocalRoster, Next, Query};
use super::wire::{self, Kind, NodeId, WhoField};
use super::{BrokerCounters, BrokerMsg, ClusterConfig, Link, REMOTE};
use crate::chat::nodes::{self, OthersUnknown};
use crate::chat::{Audience, Delivery, Name, RoomName};
use crate::io::{ConnId, EpollReactor, Event, Outbox, Reactor, Waker};
use crate::peer::{Batch, MemberId, Shards};
use crate::stats::{StatsRegistry, ThreadStats, bump, set};
use crate::ws::frame::{FrameHeader, server_frame};
use crate::ws::{Opcode, SharedFrame};

const CMD: ConnId = 0;
const SUB: ConnId = 1;
/// How often the node refreshes its liveness key and pings the subscription connection.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// The liveness key's expiry: three heartbeats, so one late heartbeat does not make a live
/// node look dead to `/who`, and a dead node drops out of `/who` within 6 s.
const NODE_TTL_MS: &str = "6000";
/// No reply for this long on a connection that owes one: the link is dead even if TCP has
/// not noticed (a partition, a stopped Redis).
const SILENCE_LIMIT: Duration = Duration::from_secs(6);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Unsent bytes on a connection beyond which commands are refused rather than buffered
/// without bound (Redis is not keeping up, or the socket is stuck): publishes are dropped
/// and counted as not propagated; see [`Class`] for the others.
const MAX_CMD_BACKLOG: usize = 64 << 20;
/// Room kept above [`MAX_CMD_BACKLOG`] for commands other than publishes: they are small
/// and few (one per join, leave, rename, `/who` or heartbeat), so a burst of publishes that
/// fills the backlog drops messages but neither fails the link nor refuses a `/who`.
const CONTROL_HEADROOM: usize = 1 << 20;

/// What a command is for, which decides what a refusal (the backlog over its cap) means.
/// Every refusal is counted (`commands_refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A PUBLISH, refused at [`MAX_CMD_BACKLOG`]: the event was delivered locally; counted
    /// as not propagated too.
    Publish,
    /// A read for `/who`, or a cleanup of another node's stale field: the asker is answered
    /// without the other nodes, the cleanup waits for the next `/who`.
    Query,
    /// State that Redis must hold for the link to be right (this node's `/who` fields, its
    /// liveness key, the subscriptions, the connections' set-up): a refusal leaves Redis
    /// wrong, so it fails the link, and the reconnect rewrites all of it.
    State,
}

/// How many times this node's own event limit ([`wire::max_event_len`]) a bulk string on
/// `SUB` may reach before the decoder refuses it and the link is reset. Events between the
/// two are dropped and counted (`remote_oversize`): a peer configured with a larger
/// `--max-message` then costs dropped messages, not a reconnect (and a gap notice in every
/// room) each time it publishes a large one; a broken or hostile server still cannot make
/// us buffer more than this per event.
const OVERSIZE_HEADROOM: usize = 4;
/// The largest reply we ask for on `CMD`: replies there are short (integers, `OK`, names
/// and ids a few dozen bytes long), the longest being a room's `/who` hash.
const MAX_REPLY: usize = 1 << 20;

/// What one value read from `SUB` may cost: an event (see [`OVERSIZE_HEADROOM`]) inside a
/// `message` push, whose other parts (the kind, the channel) are short.
fn sub_bounds(max_message: usize) -> Bounds {
    let bulk = wire::max_event_len(max_message).saturating_mul(OVERSIZE_HEADROOM);
    Bounds {
        bulk,
        value: bulk.saturating_add(1024),
    }
}

const CMD_BOUNDS: Bounds = Bounds {
    bulk: MAX_REPLY,
    value: MAX_REPLY,
};

/// `/who` queries in flight at most; more are answered at once without the other nodes
/// (`who_refused`), so that `/who` from many clients cannot queue unbounded work and state.
const MAX_WHO_PENDING: usize = 32;
/// Fields per HSET or HDEL when many are written at once (the rewrite after a reconnect,
/// the cleanup of a dead node): bounds one command's size.
const FIELDS_PER_COMMAND: usize = 256;

/// What a reply on `CMD` answers, in the order the commands were written.
#[derive(Debug)]
enum Expect {
    /// SET, HSET, HDEL, SELECT, CLIENT SETNAME: only an error matters.
    Ignore,
    /// A PUBLISH: confirmed on reply.
    Publish,
    /// `/who`: a page of the room's hash (HSCAN).
    WhoScan(Box<Query>),
    /// `/who`: the liveness keys of the nodes found (MGET).
    WhoAlive(Box<Query>),
}

/// Starts the broker thread for `shards`; returns the shards' handle on it.
pub fn start(
    config: &ClusterConfig,
    shards: Arc<dyn Shards>,
    registry: &Arc<StatsRegistry>,
) -> anyhow::Result<Arc<Link>> {
    let waker = Waker::new().context("creating the broker's eventfd")?;
    let link = Arc::new(Link::new(config, waker.clone()));
    let stats = registry.add_thread("broker");
    let state = State::new(link.clone(), shards, stats, config.max_message);
    // The reactor is opened on its own thread (it is not Send); start-up waits for it.
    let (ready, opened) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let io = match EpollReactor::new(waker) {
                Ok(io) => {
                    let _ = ready.send(Ok(()));
                    io
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let mut broker = Broker { io, state };
            if let Err(e) = broker.run() {
                eprintln!("wschat: cluster: the broker thread stopped: {e}");
            }
        })
        .context("spawning the broker thread")?;
    opened
        .recv()
        .context("the broker thread ended during start-up")?
        .context("creating the broker's event loop")?;
    Ok(link)
}

struct Broker {
    io: EpollReactor,
    state: State,
}

struct State {
    link: Arc<Link>,
    shards: Arc<dyn Shards>,
    stats: Arc<ThreadStats>,
    node: NodeId,
    node_key: String,
    /// This link's epoch: random at each connect, the value of the liveness key, and part
    /// of every `/who` field written meanwhile ([`WhoField`]).
    epoch: u64,
    /// This node's members as the `/who` hashes should hold them.
    roster: LocalRoster,
    /// `/who` queries in flight (at most [`MAX_WHO_PENDING`]).
    who_pending: usize,
    /// The longest remote event accepted: what a client of this node may send, formatted
    /// by its origin, plus the envelope ([`wire::max_event_len`]).
    max_event: usize,
    up: bool,
    /// The link failed during this iteration: tear it down after the poll.
    failed: Option<String>,
    /// Commands written this iteration, moved to the outboxes in one piece at the end.
    cmd_buf: Vec<u8>,
    sub_buf: Vec<u8>,
    cmd_out: Outbox,
    sub_out: Outbox,
    cmd_in: Decoder,
    sub_in: Decoder,
    expect: VecDeque<Expect>,
    /// When `CMD` last made progress (a reply, or a command written while none was owed).
    cmd_progress: Instant,
    /// When `SUB` last sent anything (it answers our PINGs).
    sub_progress: Instant,
    /// SUBSCRIBE replies still owed, per room; ready when it reaches 0.
    pending_sub: HashMap<RoomName, u32>,
    /// Channels we are subscribed to (or asked for).
    subscribed: HashSet<RoomName>,
    /// Rooms resubscribed after a reconnect whose "restored" notice waits for Redis to
    /// confirm the SUBSCRIBE: told earlier, a member could answer with a message that another
    /// node, not yet subscribed again, would miss.
    restoring: HashSet<RoomName>,
    /// This node's sequence number per room with local members (the last one used).
    publish_seq: HashMap<RoomName, u64>,
    /// The last sequence number seen per subscribed room and publishing node.
    seen: HashMap<RoomName, Peers>,
    /// Remote events and notices for every shard, pushed once per iteration.
    remote: Vec<Delivery<MemberId>>,
    inbox_batch: Vec<BrokerMsg>,
    backoff: Duration,
    next_attempt: Instant,
    next_heartbeat: Instant,
    down_since: Option<Instant>,
    /// Events not propagated since the link went down (for the reconnect line).
    lost_while_down: u64,
    connected_once: bool,
    bad_input_reported: u64,
}

impl Broker {
    fn run(&mut self) -> io::Result<()> {
        self.state
            .stats
            .bind_thread(crate::io::sys::current_thread_id());
        loop {
            let now = Instant::now();
            if !self.state.up && now >= self.state.next_attempt {
                self.connect(now);
            }
            let deadline = if self.state.up {
                self.state.next_heartbeat
            } else {
                self.state.next_attempt
            };
            let timeout = deadline.saturating_duration_since(Instant::now());
            let state = &mut self.state;
            self.io
                .poll(Some(timeout), &mut |event| state.on_event(event))?;
            let now = Instant::now();
            if self.state.up && now >= self.state.next_heartbeat {
                self.state.heartbeat(now);
            }
            self.flush();
            if let Some(reason) = self.state.failed.take() {
                self.disconnect(&reason, now);
            }
            self.state.push_remote();
        }
    }

    /// Opens both connections and restores what this node had: its name for the
    /// connections, its `/who` fields, its liveness key, its subscriptions.
    fn connect(&mut self, now: Instant) {
        let state = &mut self.state;
        let url = state.link.url.clone();
        let opened = open(&url.host, url.port).and_then(|cmd| {
            let sub = open(&url.host, url.port)?;
            self.io.add_conn(CMD, cmd)?;
            if let Err(e) = self.io.add_conn(SUB, sub) {
                self.io.close(CMD);
                return Err(e);
            }
            Ok(())
        });
        if let Err(e) = opened {
            state.retry_later(now, &format!("connecting to {url}: {e}"));
            return;
        }
        state.up = true;
        state.epoch = NodeId::random().0;
        state.cmd_in.reset();
        state.sub_in.reset();
        state.cmd_progress = now;
        state.sub_progress = now;
        state.next_heartbeat = now;
        let node = state.node.to_string();
        if url.db != 0 {
            let db = url.db.to_string();
            state.command(Class::State, &[b"SELECT", db.as_bytes()], Expect::Ignore);
        }
        let name = format!("wschat-{node}-cmd");
        state.command(
            Class::State,
            &[b"CLIENT", b"SETNAME", name.as_bytes()],
            Expect::Ignore,
        );
        let name = format!("wschat-{node}-sub");
        state.sub_command(&[b"CLIENT", b"SETNAME", name.as_bytes()]);
        // Redis answers CLIENT SETNAME on SUB with +OK before subscribe mode starts.
        // The liveness key gets the new epoch before any field of that epoch is written, so
        // that no `/who` elsewhere can find a field whose epoch does not look alive.
        state.heartbeat(now);
        state.write_rosters();
        let link = state.link.clone();
        let mut rooms = Vec::new();
        link.set_up(|all| rooms = all);
        state.subscribe(&rooms);
        let lost = std::mem::take(&mut state.lost_while_down);
        if let Some(since) = state.down_since.take() {
            bump(&state.stats.counters.cluster_reconnects, 1);
            eprintln!(
                "wschat: cluster: link to {url} restored after {:.1}s; {lost} event(s) were not \
                 propagated meanwhile (cluster_not_propagated in /stats); resubscribed {} room(s)",
                now.duration_since(since).as_secs_f64(),
                rooms.len()
            );
            state.restoring.extend(rooms.iter().cloned());
        } else if !state.connected_once {
            eprintln!("wschat: cluster: connected to {url} as node {node}");
        }
        state.connected_once = true;
        state.backoff = BACKOFF_MIN;
        set(&state.stats.counters.cluster_link_up, 1);
    }

    fn disconnect(&mut self, reason: &str, now: Instant) {
        self.io.close(CMD);
        self.io.close(SUB);
        self.state.link_down(reason, now);
    }

    /// Moves this iteration's commands to the outboxes and writes what the sockets take.
    fn flush(&mut self) {
        let state = &mut self.state;
        if !state.up {
            state.cmd_buf.clear();
            state.sub_buf.clear();
            return;
        }
        for (conn, buf, outbox) in [
            (CMD, &mut state.cmd_buf, &mut state.cmd_out),
            (SUB, &mut state.sub_buf, &mut state.sub_out),
        ] {
            if !buf.is_empty() {
                outbox.push(std::mem::take(buf).into());
            }
            if !outbox.is_empty()
                && let Err(e) = self.io.send(conn, outbox)
            {
                state.failed.get_or_insert(format!("writing to Redis: {e}"));
            }
        }
    }
}

/// A blocking connect (bounded), then a non-blocking socket with TCP_NODELAY: a publish
/// must not wait for Nagle.
fn open(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl State {
    fn new(
        link: Arc<Link>,
        shards: Arc<dyn Shards>,
        stats: Arc<ThreadStats>,
        max_message: usize,
    ) -> State {
        let now = Instant::now();
        let node = link.node();
        State {
            node_key: wire::node_key(node),
            node,
            epoch: 0,
            roster: LocalRoster::default(),
            who_pending: 0,
            max_event: wire::max_event_len(max_message),
            link,
            shards,
            stats,
            up: false,
            failed: None,
            cmd_buf: Vec::new(),
            sub_buf: Vec::new(),
            cmd_out: Outbox::default(),
            sub_out: Outbox::default(),
            cmd_in: Decoder::new(CMD_BOUNDS),
            sub_in: Decoder::new(sub_bounds(max_message)),
            expect: VecDeque::new(),
            cmd_progress: now,
            sub_progress: now,
            pending_sub: HashMap::new(),
            subscribed: HashSet::new(),
            restoring: HashSet::new(),
            publish_seq: HashMap::new(),
            seen: HashMap::new(),
            remote: Vec::new(),
            inbox_batch: Vec::new(),
            backoff: BACKOFF_MIN,
            next_attempt: now,
            next_heartbeat: now,
            down_since: None,
            lost_while_down: 0,
            connected_once: false,
            bad_input_reported: 0,
        }
    }

    fn on_event(&mut self, event: Event<'_>) {
        match event {
            // The link is being torn down: what else arrived is not read.
            Event::Received { .. } if self.failed.is_some() => {}
            Event::Received { conn: CMD, bytes } => {
                self.cmd_in.handle_input(bytes);
                self.read_replies();
            }
            Event::Received { conn: SUB, bytes } => {
                self.sub_progress = Instant::now();
                self.sub_in.handle_input(bytes);
                self.read_subscription();
            }
            Event::Received { .. } | Event::Accepted { .. } | Event::AcceptFailed { .. } => {}
            // The flush after every poll writes whatever is queued.
            Event::Writable { .. } => {}
            Event::Eof { .. } => {
                self.failed
                    .get_or_insert_with(|| "Redis closed the connection".into());
            }
            Event::Failed { error, .. } => {
                self.failed
                    .get_or_insert_with(|| format!("connection to Redis failed: {error}"));
            }
            Event::Wake => self.drain_inbox(),
        }
    }

    fn drain_inbox(&mut self) {
        let mut batch = std::mem::take(&mut self.inbox_batch);
        self.link.drain_into(&mut batch);
        for msg in batch.drain(..) {
            match msg {
                BrokerMsg::Publish(deliveries) => self.publish(&deliveries),
                BrokerMsg::Subscribe(room) => {
                    if self.up {
                        self.subscribe(std::slice::from_ref(&room));
                    } else if self.link.mark_ready(&room) {
                        self.ready(&room);
                    }
                }
                BrokerMsg::Unsubscribe(room) => self.unsubscribe(room),
                BrokerMsg::RosterChanged { room, member, name } => {
                    let mut writes = Vec::new();
                    self.roster.change(&room, member, name, &mut writes);
                    // While down, the copy alone changes: the reconnect writes all of it.
                    if self.up {
                        for write in writes {
                            self.write_field(write);
                        }
                    }
                }
                BrokerMsg::Who { room, member } => self.who(room, member),
            }
        }
        self.inbox_batch = batch;
    }

    /// Writes a command on `CMD` whose reply `expect` describes, unless the connection's
    /// backlog is over the cap for its class: then it is refused (see [`Class`]) and false
    /// is returned.
    fn command(&mut self, class: Class, args: &[&[u8]], expect: Expect) -> bool {
        let backlog = self.cmd_out.queued_bytes() + self.cmd_buf.len();
        if !self.admit(class, backlog, command_len(args)) {
            return false;
        }
        self.queue(args, expect);
        true
    }

    /// A `/who` step: like [`State::command`] ([`Class::Query`]), but a refused query comes
    /// back to be answered.
    fn ask(
        &mut self,
        args: &[&[u8]],
        query: Box<Query>,
        step: fn(Box<Query>) -> Expect,
    ) -> Result<(), Box<Query>> {
        let backlog = self.cmd_out.queued_bytes() + self.cmd_buf.len();
        if !self.admit(Class::Query, backlog, command_len(args)) {
            return Err(query);
        }
        self.queue(args, step(query));
        Ok(())
    }

    fn queue(&mut self, args: &[&[u8]], expect: Expect) {
        if self.expect.is_empty() {
            self.cmd_progress = Instant::now();
        }
        encode_command(args, &mut self.cmd_buf);
        self.expect.push_back(expect);
    }

    /// Writes a command on `SUB` (subscriptions and their PING: all [`Class::State`]).
    fn sub_command(&mut self, args: &[&[u8]]) -> bool {
        let backlog = self.sub_out.queued_bytes() + self.sub_buf.len();
        if !self.admit(Class::State, backlog, command_len(args)) {
            return false;
        }
        encode_command(args, &mut self.sub_buf);
        true
    }

    /// Whether `len` more bytes of a `class` command fit on a connection with `backlog`
    /// unsent bytes; counts a refusal and does what it implies.
    fn admit(&mut self, class: Class, backlog: usize, len: usize) -> bool {
        let cap = match class {
            Class::Publish => MAX_CMD_BACKLOG,
            Class::Query | Class::State => MAX_CMD_BACKLOG + CONTROL_HEADROOM,
        };
        if backlog.saturating_add(len) <= cap {
            return true;
        }
        BrokerCounters::bump(&self.link.counters.commands_refused);
        match class {
            Class::Publish => {
                bump(&self.stats.counters.cluster_not_propagated, 1);
                self.lost_while_down += 1;
            }
            Class::Query => {}
            Class::State => {
                self.failed.get_or_insert_with(|| {
                    "the backlog of commands to Redis is over its cap (Redis is not keeping up)"
                        .into()
                });
            }
        }
        false
    }

    fn publish(&mut self, deliveries: &[Delivery<MemberId>]) {
        let mut payload = Vec::new();
        for delivery in deliveries {
            let Audience::Room { room, .. } = &delivery.to else {
                continue;
            };
            // Our own encoding of a complete unmasked frame: the header always parses.
            let Ok(Some((header, len))) = FrameHeader::parse(&delivery.frame) else {
                continue;
            };
            let kind = match header.opcode {
                Opcode::Text => Kind::Text,
                Opcode::Binary => Kind::Binary,
                _ => continue,
            };
            let seq = match self.publish_seq.get_mut(room) {
                Some(seq) => {
                    *seq += 1;
                    *seq
                }
                // The room's first event, or one planned as its last member left (the leave
                // notice follows the Unsubscribe): numbered without keeping an entry for a
                // room that has nobody here, so that the map cannot outgrow the rooms in use.
                None => {
                    if self.link.has_members(room) {
                        self.publish_seq.insert(room.clone(), 1);
                    }
                    1
                }
            };
            if !self.up {
                // Delivered locally already; counted, never silently lost.
                bump(&self.stats.counters.cluster_not_propagated, 1);
                self.lost_while_down += 1;
                continue;
            }
            payload.clear();
            wire::encode_event(self.node, seq, kind, &delivery.frame[len..], &mut payload);
            let channel = wire::channel(room);
            // Refused over the backlog cap: counted there, like an event while down.
            self.command(
                Class::Publish,
                &[b"PUBLISH", channel.as_bytes(), &payload],
                Expect::Publish,
            );
        }
    }

    fn subscribe(&mut self, rooms: &[RoomName]) {
        if rooms.is_empty() {
            return;
        }
        let channels: Vec<String> = rooms.iter().map(wire::channel).collect();
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(channels.iter().map(|c| c.as_bytes()));
        if !self.sub_command(&args) {
            return; // the link fails: the reconnect subscribes every room with members
        }
        for room in rooms {
            self.subscribed.insert(room.clone());
            *self.pending_sub.entry(room.clone()).or_default() += 1;
        }
        set(
            &self.stats.counters.cluster_subscriptions,
            self.subscribed.len() as u64,
        );
    }

    fn unsubscribe(&mut self, room: RoomName) {
        if self.link.has_members(&room) {
            return; // someone joined again since: its Subscribe follows in the inbox
        }
        // Nobody here any more: forget everything kept for the room.
        self.seen.remove(&room);
        self.publish_seq.remove(&room);
        self.link.forget_gaps(&room);
        self.restoring.remove(&room);
        if self.subscribed.remove(&room) && self.up {
            let channel = wire::channel(&room);
            self.sub_command(&[b"UNSUBSCRIBE", channel.as_bytes()]);
        }
        set(
            &self.stats.counters.cluster_subscriptions,
            self.subscribed.len() as u64,
        );
    }

    /// This node's field for its member with join number `member`, in this epoch.
    fn field(&self, member: u64) -> WhoField {
        WhoField {
            node: self.node,
            epoch: self.epoch,
            member,
        }
    }

    /// Writes one member's field: a join, a rename or a leave costs one field, whatever the
    /// size of the room.
    fn write_field(&mut self, write: FieldWrite) {
        match write {
            FieldWrite::Set { room, member, name } => {
                let (key, field) = (wire::who_key(&room), self.field(member).encode());
                let args: [&[u8]; 4] = [
                    b"HSET",
                    key.as_bytes(),
                    field.as_bytes(),
                    name.as_str().as_bytes(),
                ];
                self.command(Class::State, &args, Expect::Ignore);
            }
            FieldWrite::Del { room, member } => {
                let (key, field) = (wire::who_key(&room), self.field(member).encode());
                let args: [&[u8]; 3] = [b"HDEL", key.as_bytes(), field.as_bytes()];
                self.command(Class::State, &args, Expect::Ignore);
            }
        }
    }

    /// After a (re)connect: writes every local member's field in the new epoch, a bounded
    /// number of fields per command. The fields of earlier epochs are deleted by the next
    /// `/who` that finds them (here or on any node).
    fn write_rosters(&mut self) {
        let mut commands: Vec<(String, Vec<(String, Name)>)> = Vec::new();
        for (room, members) in self.roster.rooms() {
            let key = wire::who_key(room);
            let fields: Vec<(String, Name)> = members
                .iter()
                .map(|(&no, name)| (self.field(no).encode(), name.clone()))
                .collect();
            for chunk in fields.chunks(FIELDS_PER_COMMAND) {
                commands.push((key.clone(), chunk.to_vec()));
            }
        }
        for (key, fields) in commands {
            let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
            for (field, name) in &fields {
                args.push(field.as_bytes());
                args.push(name.as_str().as_bytes());
            }
            if !self.command(Class::State, &args, Expect::Ignore) {
                return; // the link fails; the next connect writes them all again
            }
        }
    }

    /// Deletes fields of `room`'s `/who` hash found stale (a cleanup: refusable).
    fn delete_fields(&mut self, room: &RoomName, fields: &[WhoField]) {
        let key = wire::who_key(room);
        for chunk in fields.chunks(FIELDS_PER_COMMAND) {
            let names: Vec<String> = chunk.iter().map(WhoField::encode).collect();
            let mut args: Vec<&[u8]> = vec![b"HDEL", key.as_bytes()];
            args.extend(names.iter().map(String::as_bytes));
            self.command(Class::Query, &args, Expect::Ignore);
        }
    }

    fn heartbeat(&mut self, now: Instant) {
        self.next_heartbeat = now + HEARTBEAT;
        let (key, epoch) = (self.node_key.clone(), wire::epoch_value(self.epoch));
        let args: [&[u8]; 5] = [
            b"SET",
            key.as_bytes(),
            epoch.as_bytes(),
            b"PX",
            NODE_TTL_MS.as_bytes(),
        ];
        self.command(Class::State, &args, Expect::Ignore);
        self.sub_command(&[b"PING"]);
        let cmd_silent =
            !self.expect.is_empty() && now.duration_since(self.cmd_progress) > SILENCE_LIMIT;
        let sub_silent = now.duration_since(self.sub_progress) > SILENCE_LIMIT;
        if cmd_silent || sub_silent {
            self.failed
                .get_or_insert_with(|| format!("no reply from Redis for {SILENCE_LIMIT:?}"));
        }
    }

    fn read_replies(&mut self) {
        loop {
            let value = match self.cmd_in.poll_value() {
                Ok(Some(v)) => v,
                Ok(None) => return,
                Err(e) => {
                    self.bad_input(&format!("command connection: {e}"));
                    self.failed.get_or_insert_with(|| format!("bad reply: {e}"));
                    return;
                }
            };
            self.cmd_progress = Instant::now();
            let Some(expect) = self.expect.pop_front() else {
                self.bad_input("a reply nobody asked for");
                continue;
            };
            if let Value::Error(e) = &value {
                self.bad_input(&format!("Redis error: {}", String::from_utf8_lossy(e)));
            }
            match expect {
                Expect::Ignore => {}
                Expect::Publish => {
                    if matches!(value, Value::Integer(_)) {
                        bump(&self.stats.counters.cluster_published, 1);
                    } else {
                        bump(&self.stats.counters.cluster_not_propagated, 1);
                    }
                }
                Expect::WhoScan(query) => self.who_page(query, &value),
                Expect::WhoAlive(query) => self.who_alive(*query, &value),
            }
        }
    }

    /// `/who` from `member`: this node's members are known here; the others' are read
    /// from the room's hash, a page at a time ([`who`]).
    fn who(&mut self, room: RoomName, member: MemberId) {
        let local = self.roster.count(&room);
        if !self.up {
            self.answer_who(&room, member, &[], Some(OthersUnknown::NoLink));
        } else if local >= who::MAX_NAMES {
            self.answer_who(&room, member, &[], None); // this node alone fills the reply
        } else if self.who_pending >= MAX_WHO_PENDING {
            BrokerCounters::bump(&self.link.counters.who_refused);
            self.answer_who(&room, member, &[], Some(OthersUnknown::Busy));
        } else {
            self.who_pending += 1;
            self.who_scan(Box::new(Query::new(room, member, local)), b"0");
        }
    }

    fn who_scan(&mut self, query: Box<Query>, cursor: &[u8]) {
        let key = wire::who_key(&query.room);
        let count = who::PAGE.to_string();
        let args: [&[u8]; 5] = [b"HSCAN", key.as_bytes(), cursor, b"COUNT", count.as_bytes()];
        if let Err(query) = self.ask(&args, query, Expect::WhoScan) {
            self.who_refused(&query);
        }
    }

    fn who_page(&mut self, mut query: Box<Query>, value: &Value) {
        let page = query.handle_page(self.node, self.epoch, value);
        for _ in 0..page.bad {
            self.bad_input("a malformed entry in a /who hash");
        }
        if !page.own_stale.is_empty() {
            let room = query.room.clone();
            self.delete_fields(&room, &page.own_stale);
        }
        match page.next {
            Next::Scan(cursor) => self.who_scan(query, &cursor),
            Next::Alive(nodes) => {
                let keys: Vec<String> = nodes.into_iter().map(wire::node_key).collect();
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                args.extend(keys.iter().map(String::as_bytes));
                if let Err(query) = self.ask(&args, query, Expect::WhoAlive) {
                    self.who_refused(&query);
                }
            }
            Next::Done => self.who_done(&query.room, query.member, &[], None),
        }
    }

    fn who_alive(&mut self, query: Query, value: &Value) {
        let (room, member) = (query.room.clone(), query.member);
        match query.handle_alive(value) {
            Some(found) => {
                // Nodes that died without cleaning up (their liveness key expired), or
                // fields from before a node's reconnect.
                self.delete_fields(&room, &found.stale);
                self.who_done(&room, member, &found.names, None);
            }
            None => {
                if !matches!(value, Value::Error(_)) {
                    self.bad_input("an unexpected reply to MGET");
                }
                self.who_done(&room, member, &[], Some(OthersUnknown::Busy));
            }
        }
    }

    /// A query the command backlog refused: answered without the other nodes.
    fn who_refused(&mut self, query: &Query) {
        BrokerCounters::bump(&self.link.counters.who_refused);
        self.who_done(&query.room, query.member, &[], Some(OthersUnknown::Busy));
    }

    /// Ends a query in flight with its answer.
    fn who_done(
        &mut self,
        room: &RoomName,
        member: MemberId,
        remote: &[Name],
        unknown: Option<OthersUnknown>,
    ) {
        self.who_pending = self.who_pending.saturating_sub(1);
        self.answer_who(room, member, remote, unknown);
    }

    /// Replies to `/who`: this node's members, then the others', or why they are unknown;
    /// at most [`who::MAX_NAMES`] names, worded by chat.
    fn answer_who(
        &mut self,
        room: &RoomName,
        member: MemberId,
        remote: &[Name],
        unknown: Option<OthersUnknown>,
    ) {
        let local = self.roster.names(room).map(Name::as_str);
        let names: Vec<&str> = local
            .chain(remote.iter().map(Name::as_str))
            .take(who::MAX_NAMES)
            .collect();
        let frame = nodes::member_list_across_nodes(room, &names, unknown);
        self.shards.deliver(
            member.shard,
            Arc::from(vec![Delivery {
                frame: frame.into(),
                to: Audience::Member(member),
            }]),
        );
    }

    fn read_subscription(&mut self) {
        loop {
            let value = match self.sub_in.poll_value() {
                Ok(Some(v)) => v,
                Ok(None) => return,
                Err(e) => {
                    self.bad_input(&format!("subscription connection: {e}"));
                    self.failed.get_or_insert_with(|| format!("bad reply: {e}"));
                    return;
                }
            };
            match value.as_array() {
                Some([kind, channel, payload]) => {
                    match (kind.as_bytes(), channel.as_bytes(), payload) {
                        (Some(b"message"), Some(channel), Value::Bulk(Some(payload))) => {
                            self.on_message(channel, payload);
                        }
                        (Some(b"subscribe"), Some(channel), _) => self.on_subscribed(channel),
                        (Some(b"unsubscribe"), ..) => {}
                        _ => self.bad_input("unexpected push on the subscription connection"),
                    }
                }
                // PING in subscribe mode: ["pong", ""]; CLIENT SETNAME before it: +OK.
                Some([_, _]) => {}
                None if matches!(value, Value::Simple(_)) => {}
                _ => {
                    if let Value::Error(e) = &value {
                        self.bad_input(&format!("Redis error: {}", String::from_utf8_lossy(e)));
                    } else {
                        self.bad_input("unexpected value on the subscription connection");
                    }
                }
            }
        }
    }

    fn on_subscribed(&mut self, channel: &[u8]) {
        let Some(room) = wire::room_of_channel(channel) else {
            return;
        };
        let Some(pending) = self.pending_sub.get_mut(&room) else {
            return;
        };
        *pending -= 1;
        if *pending == 0 {
            self.pending_sub.remove(&room);
            if self.link.mark_ready(&room) {
                self.ready(&room);
            }
            if self.restoring.remove(&room) {
                self.notice(&room, &nodes::link_restored());
            }
        }
    }

    fn on_message(&mut self, channel: &[u8], payload: &[u8]) {
        let Some(room) = wire::room_of_channel(channel) else {
            self.bad_input("a message on a channel that is not a room");
            return;
        };
        // More than a client could have sent here: refused like a client's message would
        // be, but its sender and number are read, so that its members are told at once.
        let oversize = payload.len() > self.max_event;
        if oversize {
            BrokerCounters::bump(&self.link.counters.remote_oversize);
        }
        let decoded = if oversize {
            wire::decode_envelope(payload)
        } else {
            wire::decode_event(payload)
        };
        let event = match decoded {
            Ok(event) => event,
            Err(e) => {
                self.bad_input(&format!("bad event in room {}: {e:?}", room.as_str()));
                return;
            }
        };
        if event.node == self.node {
            return; // our own, delivered locally when it was sent
        }
        if !self.subscribed.contains(&room) {
            return; // unsubscribed meanwhile: nobody here to receive it
        }
        let last = self
            .seen
            .entry(room.clone())
            .or_default()
            .record(event.node, event.seq);
        let jumped = match last {
            Some(last) if event.seq > last.saturating_add(1) => event.seq - last - 1,
            _ => 0,
        };
        let missed = jumped + u64::from(oversize);
        if missed > 0 {
            self.gap(&room, &nodes::messages_missed(missed));
        }
        if oversize {
            return;
        }
        let opcode = match event.kind {
            Kind::Text => Opcode::Text,
            Kind::Binary => Opcode::Binary,
        };
        bump(&self.stats.counters.cluster_received, 1);
        self.remote.push(Delivery {
            frame: server_frame(opcode, &[event.payload]).into(),
            to: Audience::Room {
                room,
                except: REMOTE,
            },
        });
    }

    /// Counts a gap in `room` and tells its local members with `notice`.
    fn gap(&mut self, room: &RoomName, notice: &SharedFrame) {
        bump(&self.stats.counters.cluster_gaps, 1);
        self.link.count_gap(room);
        self.notice(room, notice);
    }

    fn notice(&mut self, room: &RoomName, frame: &SharedFrame) {
        self.remote.push(Delivery {
            frame: frame.clone().into(),
            to: Audience::Room {
                room: room.clone(),
                except: REMOTE,
            },
        });
    }

    fn link_down(&mut self, reason: &str, now: Instant) {
        let was_up = std::mem::replace(&mut self.up, false);
        set(&self.stats.counters.cluster_link_up, 0);
        // Written but unconfirmed: they may or may not have reached Redis.
        let unconfirmed = self
            .expect
            .iter()
            .filter(|e| matches!(e, Expect::Publish))
            .count() as u64;
        bump(&self.stats.counters.cluster_not_propagated, unconfirmed);
        self.lost_while_down += unconfirmed;
        let owed: Vec<Expect> = self.expect.drain(..).collect();
        for expect in owed {
            if let Expect::WhoScan(query) | Expect::WhoAlive(query) = expect {
                self.who_done(&query.room, query.member, &[], Some(OthersUnknown::NoLink));
            }
        }
        self.cmd_out.clear();
        self.sub_out.clear();
        self.cmd_buf.clear();
        self.sub_buf.clear();
        self.pending_sub.clear();
        self.restoring.clear();
        for room in self.link.set_down() {
            self.ready(&room);
        }
        if was_up {
            let notice = nodes::link_lost();
            let rooms: Vec<RoomName> = self.subscribed.iter().cloned().collect();
            for room in &rooms {
                self.gap(room, &notice);
            }
        }
        self.subscribed.clear();
        self.retry_later(now, reason);
    }

    fn retry_later(&mut self, now: Instant, reason: &str) {
        if self.down_since.is_none() {
            self.down_since = Some(now);
            eprintln!("wschat: cluster: {reason}; retrying with backoff");
        }
        self.next_attempt = now + self.backoff + jitter(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn bad_input(&mut self, what: &str) {
        bump(&self.stats.counters.cluster_bad_input, 1);
        self.bad_input_reported += 1;
        if self.bad_input_reported <= 10 {
            eprintln!("wschat: cluster: {what}");
        }
    }

    /// Tells every shard that joins to `room` may complete (a shard without any waiting
    /// ignores it; this is rare: once per room subscription).
    fn ready(&self, room: &RoomName) {
        self.shards.room_ready(room);
    }

    /// Hands this iteration's remote events to every shard, one shared batch.
    fn push_remote(&mut self) {
        if self.remote.is_empty() {
            return;
        }
        let batch: Batch = std::mem::take(&mut self.remote).into();
        self.shards.deliver_to_all(batch);
    }
}

/// How many publishing nodes a room remembers the sequence of. Node ids arrive from the
/// network (whoever can publish on the channel picks them), so the map is capped, the node
/// heard from least recently going first; forgetting a node costs only the gap check of its
/// next event. A room spanning more nodes than this is far beyond what we deploy.
const MAX_PEERS: usize = 128;

/// The last sequence number seen from each publishing node in one room (at most
/// [`MAX_PEERS`] nodes).
#[derive(Debug, Default)]
struct Peers {
    /// Node -> (last sequence number, when it was heard on `clock`).
    last: HashMap<NodeId, (u64, u64)>,
    /// Counts the room's events: an order of hearing that needs no clock.
    clock: u64,
}

impl Peers {
    /// Records `seq` from `node`; returns the sequence number it had before, if known.
    fn record(&mut self, node: NodeId, seq: u64) -> Option<u64> {
        self.clock += 1;
        if let Some(entry) = self.last.get_mut(&node) {
            let before = entry.0;
            *entry = (seq, self.clock);
            return Some(before);
        }
        if self.last.len() >= MAX_PEERS {
            // O(MAX_PEERS), and only for a node not seen before while the map is full.
            let oldest = self.last.iter().min_by_key(|(_, (_, heard))| *heard);
            if let Some((&oldest, _)) = oldest {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(node, (seq, self.clock));
        None
    }
}

/// Up to a quarter of `backoff`, so that nodes that lost Redis together do not reconnect in
/// lockstep.
fn jitter(backoff: Duration) -> Duration {
    let random = NodeId::random().0;
    backoff / 4 * (random % 1000) as u32 / 1000
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::peer::Peer as _;
    use crate::stats::{Section as _, StatsRegistry};

    const MAX_MESSAGE: usize = 1000;

    /// One shard as the broker sees it: what was handed to it.
    #[derive(Debug, Default)]
    struct Mailbox {
        batches: std::sync::Mutex<Vec<Batch>>,
    }

    impl Shards for Mailbox {
        fn count(&self) -> usize {
            1
        }
        fn deliver(&self, shard: usize, batch: Batch) {
            assert_eq!(shard, 0);
            self.batches.lock().unwrap().push(batch);
        }
        fn room_ready(&self, _room: &RoomName) {}
    }

    /// A broker's state with its link up (no sockets: what it writes stays in its buffers),
    /// and its one shard's mailbox.
    struct Harness {
        state: State,
        shard: Arc<Mailbox>,
    }

    impl std::ops::Deref for Harness {
        type Target = State;
        fn deref(&self) -> &State {
            &self.state
        }
    }

    impl std::ops::DerefMut for Harness {
        fn deref_mut(&mut self) -> &mut State {
            &mut self.state
        }
    }

    fn state() -> Harness {
        let config = ClusterConfig {
            url: "redis://h".parse().unwrap(),
            node: NodeId(1),
            max_message: MAX_MESSAGE,
        };
        let link = Arc::new(Link::new(&config, Waker::new().unwrap()));
        let shard = Arc::new(Mailbox::default());
        let stats = StatsRegistry::new("test", "test", Instant::now()).add_thread("broker");
        let mut state = State::new(link, shard.clone(), stats, MAX_MESSAGE);
        state.up = true;
        Harness { state, shard }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn event(node: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode_event(NodeId(node), seq, Kind::Binary, payload, &mut out);
        out
    }

    /// A chat line for the room, as a shard plans it.
    fn room_delivery(room: &RoomName) -> Delivery<MemberId> {
        Delivery {
            frame: server_frame(Opcode::Text, &[b"Ann says: hi"]).into(),
            to: Audience::Room {
                room: room.clone(),
                except: REMOTE,
            },
        }
    }

    /// The payload of an unmasked server frame.
    fn payload(frame: &[u8]) -> Vec<u8> {
        let (_, len) = FrameHeader::parse(frame).unwrap().unwrap();
        frame[len..].to_vec()
    }

    /// The `/who` reply chat words when the other nodes are unknown.
    fn unknown(room: &RoomName, why: OthersUnknown) -> String {
        let frame = nodes::member_list_across_nodes(room, &[], Some(why));
        String::from_utf8(payload(&frame)).unwrap()
    }

    /// The frames handed to the shards since the last call, as payload bytes.
    fn delivered(state: &mut State) -> Vec<Vec<u8>> {
        std::mem::take(&mut state.remote)
            .iter()
            .map(|d| payload(&d.frame))
            .collect()
    }

    #[test]
    fn a_remote_event_larger_than_a_client_may_send_is_dropped_and_counted() {
        let mut state = state();
        let r = room("r");
        state.subscribed.insert(r.clone());
        let channel = wire::channel(&r);
        let limit = wire::max_event_len(MAX_MESSAGE);

        let fits = event(7, 1, &vec![b'a'; limit - event(7, 1, b"").len()]);
        assert_eq!(fits.len(), limit);
        state.on_message(channel.as_bytes(), &fits);
        assert_eq!(delivered(&mut state).len(), 1);

        let over = event(7, 2, &vec![b'b'; limit + 1 - event(7, 2, b"").len()]);
        state.on_message(channel.as_bytes(), &over);
        let got = delivered(&mut state);
        assert_eq!(got.len(), 1, "the gap notice alone");
        assert_eq!(got[0], payload(&nodes::messages_missed(1)));
        assert_eq!(state.link.report()["remote_oversize"], 1);
        assert_eq!(state.stats.counters.cluster_bad_input.load(Relaxed), 0);
        assert_eq!(state.stats.counters.cluster_gaps.load(Relaxed), 1);

        // Its number was seen: the next event is not a second gap.
        state.on_message(channel.as_bytes(), &event(7, 3, b"next"));
        assert_eq!(delivered(&mut state), [b"next"]);
        assert_eq!(state.stats.counters.cluster_gaps.load(Relaxed), 1);

        // An oversize first event from a node, or one whose envelope is garbage.
        state.on_message(channel.as_bytes(), &event(8, 1, &vec![b'c'; limit]));
        assert_eq!(delivered(&mut state).len(), 1);
        state.on_message(channel.as_bytes(), &vec![b'?'; limit + 1]);
        assert!(delivered(&mut state).is_empty());
        assert_eq!(state.link.report()["remote_oversize"], 3);
        assert_eq!(state.stats.counters.cluster_bad_input.load(Relaxed), 1);
    }

    #[test]
    fn the_subscription_decoder_refuses_what_no_node_could_have_sent() {
        let bounds = sub_bounds(MAX_MESSAGE);
        assert!(bounds.bulk >= wire::max_event_len(MAX_MESSAGE));
        assert!(bounds.bulk < 64 * wire::max_event_len(MAX_MESSAGE));
        // On the link: a protocol error, which tears the link down (and reconnects).
        let mut state = state();
        let header = format!(
            "*3\r\n$7\r\nmessage\r\n$3\r\nr:x\r\n${}\r\n",
            bounds.bulk + 1
        );
        state.on_event(Event::Received {
            conn: SUB,
            bytes: header.as_bytes(),
        });
        assert!(state.failed.is_some());
        assert_eq!(state.stats.counters.cluster_bad_input.load(Relaxed), 1);
    }

    #[test]
    fn a_room_remembers_a_bounded_number_of_publishing_nodes() {
        let mut peers = Peers::default();
        // One node keeps publishing among a flood of new ids: it is never the oldest.
        for i in 0..(3 * MAX_PEERS as u64) {
            assert_eq!(peers.record(NodeId(1_000_000 + i), 1), None);
            let before = (i > 0).then_some(i);
            assert_eq!(peers.record(NodeId(1), i + 1), before);
            assert!(peers.last.len() <= MAX_PEERS);
        }
        assert_eq!(peers.last.len(), MAX_PEERS);
        assert!(peers.last.contains_key(&NodeId(1)));
        // The newest ids are kept, the oldest went.
        assert!(
            peers
                .last
                .contains_key(&NodeId(1_000_000 + 3 * MAX_PEERS as u64 - 1))
        );
        assert!(!peers.last.contains_key(&NodeId(1_000_000)));

        // Through the broker: a flood of forged node ids in one room.
        let mut state = state();
        let r = room("r");
        state.subscribed.insert(r.clone());
        for node in 0..(2 * MAX_PEERS as u64) {
            state.on_message(wire::channel(&r).as_bytes(), &event(100 + node, 5, b"x"));
        }
        assert_eq!(state.seen[&r].last.len(), MAX_PEERS);
    }

    #[test]
    fn a_room_without_local_members_leaves_nothing_behind() {
        let mut state = state();
        let (r, other) = (room("r"), room("other"));
        for room in [&r, &other] {
            assert!(state.link.join(room));
            state.subscribed.insert(room.clone());
            state.on_message(wire::channel(room).as_bytes(), &event(7, 1, b"x"));
            state.on_message(wire::channel(room).as_bytes(), &event(7, 3, b"y"));
            state.publish(&[room_delivery(room)]);
        }
        assert_eq!(state.link.report()["gaps_by_room"]["r"], 1);
        assert!(state.seen.contains_key(&r) && state.publish_seq.contains_key(&r));

        // The last member leaves; its leave notice is published after the Unsubscribe.
        state.link.leave(&r);
        state.unsubscribe(r.clone());
        state.publish(&[room_delivery(&r)]);
        assert!(!state.seen.contains_key(&r));
        assert!(!state.publish_seq.contains_key(&r));
        assert!(state.link.report()["gaps_by_room"].get("r").is_none());
        // The other room keeps its entries.
        assert!(state.seen.contains_key(&other));
        assert_eq!(state.publish_seq[&other], 1);
        assert_eq!(state.link.report()["gaps_by_room"]["other"], 1);
    }

    /// The text frames sent to shard 0's members (replies), as strings.
    fn replies(harness: &Harness) -> Vec<String> {
        let batches = std::mem::take(&mut *harness.shard.batches.lock().unwrap());
        let mut out = Vec::new();
        for deliveries in batches {
            for d in deliveries.iter() {
                let frame: &[u8] = &d.frame;
                let (_, len) = FrameHeader::parse(frame).unwrap().unwrap();
                out.push(String::from_utf8_lossy(&frame[len..]).into_owned());
            }
        }
        out
    }

    fn refused(state: &State) -> u64 {
        state.link.counters.commands_refused.load(Relaxed)
    }

    #[test]
    fn every_command_path_is_capped() {
        let mut state = state();
        let r = room("r");
        let asker = MemberId { shard: 0, conn: 3 };
        // Redis has not read 64 MiB of commands.
        state.cmd_out.push(vec![0u8; MAX_CMD_BACKLOG].into());

        // A publish is dropped and counted.
        state.publish(&[room_delivery(&r)]);
        assert!(state.cmd_buf.is_empty() && state.expect.is_empty());
        assert_eq!(refused(&state), 1);
        assert_eq!(state.stats.counters.cluster_not_propagated.load(Relaxed), 1);

        // Control commands still have their headroom: a /who is asked.
        state.link.who(&r, asker);
        state.drain_inbox();
        assert!(matches!(state.expect.front(), Some(Expect::WhoScan(_))));
        assert_eq!(refused(&state), 1);

        // Past the headroom too: a /who is answered without the other nodes...
        state.cmd_out.push(vec![0u8; CONTROL_HEADROOM].into());
        state.link.who(&r, asker);
        state.drain_inbox();
        assert_eq!(state.expect.len(), 1);
        assert_eq!(refused(&state), 2);
        let reply = replies(&state);
        assert_eq!(reply.len(), 1);
        assert_eq!(reply[0], unknown(&r, OthersUnknown::Busy));
        assert!(state.failed.is_none());

        // ... and state that Redis must hold fails the link (the reconnect rewrites it).
        state.heartbeat(Instant::now());
        assert_eq!(refused(&state), 3);
        assert!(state.failed.is_some());

        // The subscription connection has its own cap.
        let mut state = super::tests::state();
        state
            .sub_out
            .push(vec![0u8; MAX_CMD_BACKLOG + CONTROL_HEADROOM].into());
        state.subscribe(std::slice::from_ref(&r));
        assert!(state.sub_buf.is_empty());
        assert!(state.pending_sub.is_empty() && state.subscribed.is_empty());
        assert_eq!(refused(&state), 1);
        assert!(state.failed.is_some());
    }

    /// The commands written on `CMD` since the last call, as argument lists.
    fn commands(state: &mut State) -> Vec<Vec<String>> {
        let mut d = Decoder::new(CMD_BOUNDS);
        d.handle_input(&std::mem::take(&mut state.cmd_buf));
        let mut out = Vec::new();
        while let Some(v) = d.poll_value().unwrap() {
            let args = v.as_array().unwrap().iter();
            let args = args.map(|a| String::from_utf8_lossy(a.as_bytes().unwrap()).into_owned());
            out.push(args.collect());
        }
        out
    }

    fn bulk(b: &str) -> String {
        format!("${}\r\n{b}\r\n", b.len())
    }

    /// Redis's reply to HSCAN: a cursor and field/value pairs.
    fn hscan_reply(cursor: &str, pairs: &[(String, &str)]) -> String {
        let mut out = format!("*2\r\n{}*{}\r\n", bulk(cursor), pairs.len() * 2);
        for (field, name) in pairs {
            out += &bulk(field);
            out += &bulk(name);
        }
        out
    }

    fn reply(state: &mut State, bytes: &str) {
        state.on_event(Event::Received {
            conn: CMD,
            bytes: bytes.as_bytes(),
        });
    }

    fn member(conn: usize) -> MemberId {
        MemberId { shard: 0, conn }
    }

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn a_roster_change_writes_one_field_of_the_room() {
        let mut state = state();
        state.epoch = 0xe;
        let r = room("r");
        for (conn, n) in [(1, "ann"), (2, "bob"), (3, "cy")] {
            state.link.roster_changed(&r, member(conn), Some(&name(n)));
        }
        state.drain_inbox();
        let field = |no: u64| {
            WhoField {
                node: NodeId(1),
                epoch: 0xe,
                member: no,
            }
            .encode()
        };
        let (f1, f2, f3) = (field(1), field(2), field(3));
        assert_eq!(
            commands(&mut state),
            [
                ["HSET", "wschat:who:r", &f1, "ann"],
                ["HSET", "wschat:who:r", &f2, "bob"],
                ["HSET", "wschat:who:r", &f3, "cy"],
            ]
        );
        // /nick: one field; /nick to the same name: nothing; a leave: one field.
        state.link.roster_changed(&r, member(2), Some(&name("bee")));
        state.link.roster_changed(&r, member(2), Some(&name("bee")));
        state.link.roster_changed(&r, member(1), None);
        state.drain_inbox();
        assert_eq!(
            commands(&mut state),
            [
                vec!["HSET", "wschat:who:r", &f2, "bee"],
                vec!["HDEL", "wschat:who:r", &f1],
            ]
        );
        // While the link is down only the copy changes; the reconnect writes it whole, in
        // the new epoch, a bounded number of fields per command.
        state.up = false;
        for conn in 10..(10 + 2 * FIELDS_PER_COMMAND) {
            state
                .link
                .roster_changed(&r, member(conn), Some(&name("x")));
        }
        state
            .link
            .roster_changed(&room("s"), member(1000), Some(&name("y")));
        state.drain_inbox();
        assert!(commands(&mut state).is_empty());
        state.up = true;
        state.epoch = 0xf;
        state.heartbeat(Instant::now());
        state.write_rosters();
        let written = commands(&mut state);
        assert_eq!(
            written[0][..3],
            ["SET", "wschat:node:0000000000000001", "000000000000000f"]
        );
        let hsets = &written[1..];
        assert_eq!(hsets.len(), 4, "3 chunks for r, 1 for s");
        let fields: usize = hsets.iter().map(|c| (c.len() - 2) / 2).sum();
        assert_eq!(fields, 2 + 2 * FIELDS_PER_COMMAND + 1);
        assert!(hsets.iter().all(|c| c.len() <= 2 + 2 * FIELDS_PER_COMMAND));
        assert!(hsets.iter().all(|c| c[2].contains(":000000000000000f:")));
    }

    #[test]
    fn who_reads_the_room_a_page_at_a_time_and_answers_through_chat() {
        let mut state = state();
        state.epoch = 5;
        let r = room("r");
        let asker = member(1);
        state.link.roster_changed(&r, asker, Some(&name("ann")));
        state.drain_inbox();
        commands(&mut state);

        state.link.who(&r, asker);
        state.drain_inbox();
        assert_eq!(
            commands(&mut state),
            [["HSCAN", "wschat:who:r", "0", "COUNT", "256"]]
        );
        let f = |node, epoch, no| {
            WhoField {
                node: NodeId(node),
                epoch,
                member: no,
            }
            .encode()
        };
        reply(
            &mut state,
            &format!(
                ":1\r\n{}", // the HSET's reply, then the page
                hscan_reply(
                    "42",
                    &[
                        (f(1, 5, 1), "ann"),
                        (f(1, 4, 9), "left"),
                        (f(2, 7, 2), "dee"),
                    ],
                )
            ),
        );
        let next = commands(&mut state);
        assert_eq!(
            next,
            [
                vec!["HDEL", "wschat:who:r", &f(1, 4, 9)],
                vec!["HSCAN", "wschat:who:r", "42", "COUNT", "256"],
            ]
        );
        reply(
            &mut state,
            &format!(
                ":1\r\n{}", // the HDEL's reply, then the last page
                hscan_reply("0", &[(f(2, 7, 1), "bo"), (f(3, 1, 1), "dead")])
            ),
        );
        assert_eq!(
            commands(&mut state),
            [[
                "MGET",
                "wschat:node:0000000000000002",
                "wschat:node:0000000000000003"
            ]]
        );
        assert!(replies(&state).is_empty());
        reply(
            &mut state,
            &format!("*2\r\n{}$-1\r\n", bulk(&wire::epoch_value(7))),
        );
        assert_eq!(replies(&state), ["Members of r: ann, bo, dee"]);
        assert_eq!(
            commands(&mut state),
            [["HDEL", "wschat:who:r", &f(3, 1, 1)]]
        );
        assert_eq!(state.who_pending, 0);
        assert_eq!(state.stats.counters.cluster_bad_input.load(Relaxed), 0);
    }

    #[test]
    fn who_in_flight_is_bounded_and_answered_when_the_link_drops() {
        let mut state = state();
        let r = room("r");
        for conn in 0..MAX_WHO_PENDING + 3 {
            state.link.who(&r, member(conn));
        }
        state.drain_inbox();
        assert_eq!(state.who_pending, MAX_WHO_PENDING);
        assert_eq!(state.link.report()["who_refused"], 3);
        let busy = replies(&state);
        assert_eq!(busy.len(), 3);
        assert!(
            busy.iter().all(|t| *t == unknown(&r, OthersUnknown::Busy)),
            "{busy:?}"
        );

        state.link_down("test", Instant::now());
        let down = replies(&state);
        assert_eq!(down.len(), MAX_WHO_PENDING);
        assert!(
            down.iter()
                .all(|t| *t == unknown(&r, OthersUnknown::NoLink))
        );
        assert_eq!(state.who_pending, 0);
    }

    #[test]
    fn who_lists_a_bounded_number_of_names() {
        let mut state = state();
        let r = room("r");
        for conn in 0..who::MAX_NAMES + 50 {
            let n = name(&format!("m{conn}"));
            state.link.roster_changed(&r, member(conn), Some(&n));
        }
        state.drain_inbox();
        state.cmd_buf.clear();
        state.link.who(&r, member(0));
        state.drain_inbox();
        assert!(
            state.cmd_buf.is_empty(),
            "this node alone fills the reply: no query"
        );
        // Names past the bound never reach chat's wording (which may shorten it further).
        let reply = replies(&state);
        assert_eq!(reply.len(), 1);
        assert!(reply[0].contains("m0"), "{reply:?}");
        let past = format!("m{}", who::MAX_NAMES);
        assert!(!reply[0].contains(&past), "{reply:?}");
    }
}
