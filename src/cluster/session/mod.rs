//! The broker's session with Redis, sans-IO: everything the link decides, with the bytes of
//! its two connections and the time passed in, and the bytes to write and the next deadline
//! passed out.
//!
//! Owns: whether the link is up, its epoch, the reconnect backoff and the heartbeat; the
//! two connections' bytes (`commands.rs`: what is written, what each reply answers, the
//! caps); the rooms' subscriptions, sequence numbers and gaps (`rooms.rs`, `sequence.rs`);
//! this node's `/who` fields and the queries in flight (`roster.rs`); what the shards are
//! handed, and whether `Sub` is read while they deliver it ([`Session::poll_read`]).
//! Must never: read the clock (every input that needs the time takes `now`), make a system
//! call (the driver, [`super::broker`], owns the sockets and the reactor, prints the lines
//! of [`Session::poll_report`] and seeds the randomness), block, or panic on what Redis sends.
//!
//! # Call order
//! The driver runs one iteration at a time:
//! 1. [`Session::poll_connect`]`(now)`: true when the link is down and its retry is due;
//!    then open both connections and call [`Session::handle_connected`]`(now)`, or
//!    [`Session::handle_connect_failed`]`(reason, now)`.
//! 2. [`Session::poll_read`]`(conn)`: whether to read each connection in the wait that
//!    follows; the driver pauses or resumes reading it when the answer changes (and knows
//!    that a connection it just opened is read).
//! 3. Wait for input until [`Session::poll_timeout`], and hand in what arrived, in order:
//!    [`Session::handle_input`]`(conn, bytes, now)` for bytes read from a connection,
//!    [`Session::handle_request`]`(msg, now)` for each request drained from the shards'
//!    [`Link`], [`Session::handle_failure`]`(reason)` for a connection that ended or failed.
//! 4. [`Session::handle_timeout`]`(now)`: the heartbeat, and whether the shards caught up
//!    with a throttled `Sub`, when due.
//! 5. [`Session::poll_transmit`]`(conn)` for each connection: the outbox to write (what the
//!    socket does not take stays in it); a write error is a [`Session::handle_failure`].
//! 6. [`Session::poll_close`]`(now)`: true when the link failed during the iteration; the
//!    session has torn its side down (counted what is lost, told the rooms, scheduled the
//!    retry): close both sockets.
//! 7. [`Session::poll_deliveries`]`(now)`: hands the shards this iteration's remote events
//!    and notices, one shared batch (after `poll_close`, whose teardown adds notices), and
//!    stops reading `Sub` if the shards now hold more than they may.
//! 8. [`Session::poll_report`] until `None`: lines for the log (any time; the driver drains
//!    them before it waits again).
//!
//! Answers to `/who` and [`Shards::room_ready`] go to the shards through [`Shards`] as soon
//! as they are decided: they concern one member or one room and wait for nothing else.
//!
//! Commands are written into a per-iteration buffer and moved to the connection's outbox by
//! `poll_transmit`, so a wake-up that drained many publishes sends them as one pipelined
//! burst, one writev per connection.

mod commands;
#[cfg(test)]
mod harness;
mod rooms;
mod roster;
mod sequence;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::who::LocalRoster;
use super::wire::{self, NodeId};
use super::{BrokerMsg, Link};
use crate::chat::{Delivery, RoomName};
use crate::io::Outbox;
use crate::peer::{
    Batch, MemberId, PEER_BACKLOG_RECHECK, Shards, backlog_caught_up, backlog_over_limit,
};
use crate::stats::{ThreadStats, bump, set};
use commands::{CMD_BOUNDS, Class, Expect, Pipe, sub_bounds};
use sequence::Sequences;

/// How often the node refreshes its liveness key and pings the subscription connection.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// The liveness key's expiry: three heartbeats, so one late heartbeat does not make a live
/// node look dead to `/who`, and a dead node drops out of `/who` within 6 s.
const NODE_TTL_MS: &str = "6000";
/// No reply for this long on a connection that owes one: the link is dead even if TCP has
/// not noticed (a partition, a stopped Redis).
const SILENCE_LIMIT: Duration = Duration::from_secs(6);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bad input reported in the log at most (all of it is counted, `cluster_bad_input`): a
/// broken or hostile server must not flood the log.
const BAD_INPUT_REPORTS: u64 = 10;

/// One of the two connections to Redis: `Cmd` carries PUBLISH, the `/who` fields and reads,
/// and the heartbeat, and its replies come back in order; `Sub` is in subscribe mode (Redis
/// allows only (UN)SUBSCRIBE and PING there). Either failing drops both: one notion of "the
/// link is up" keeps the gap accounting simple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Cmd,
    Sub,
}

/// The link to Redis as state: see the module docs for the call order.
pub struct Session {
    link: Arc<Link>,
    shards: Arc<dyn Shards>,
    stats: Arc<ThreadStats>,
    node: NodeId,
    node_key: String,
    /// This link's epoch: random at each connect, the value of the liveness key, and part
    /// of every `/who` field written meanwhile ([`wire::WhoField`]).
    epoch: u64,
    /// This node's members as the `/who` hashes should hold them.
    roster: LocalRoster,
    /// `/who` queries in flight (at most [`roster::MAX_WHO_PENDING`]).
    who_pending: usize,
    /// The longest remote event accepted: what a client of this node may send, formatted
    /// by its origin, plus the envelope ([`wire::max_event_len`]).
    max_event: usize,
    up: bool,
    /// The link failed during this iteration: torn down by [`Session::poll_close`].
    failed: Option<String>,
    cmd: Pipe,
    sub: Pipe,
    /// What each reply owed on `Cmd` answers, in the order the commands were written.
    expect: VecDeque<Expect>,
    /// SUBSCRIBE replies still owed, per room; ready when it reaches 0.
    pending_sub: HashMap<RoomName, u32>,
    /// Channels we are subscribed to (or asked for).
    subscribed: HashSet<RoomName>,
    /// Rooms resubscribed after a reconnect whose "restored" notice waits for Redis to
    /// confirm the SUBSCRIBE: told earlier, a member could answer with a message that another
    /// node, not yet subscribed again, would miss.
    restoring: HashSet<RoomName>,
    sequences: Sequences,
    /// Remote events and notices for every shard, handed over once per iteration.
    remote: Vec<Delivery<MemberId>>,
    /// Set while `Sub` is not read because a shard held more than
    /// [`crate::peer::PEER_BACKLOG_LIMIT`] after a batch: when to look next whether every
    /// shard is down to half. Kept across a reconnect: it is the shards' state, not the
    /// connection's.
    sub_throttled: Option<Instant>,
    backoff: Duration,
    next_attempt: Instant,
    next_heartbeat: Instant,
    down_since: Option<Instant>,
    /// Events not propagated since the link went down (for the reconnect line).
    lost_while_down: u64,
    connected_once: bool,
    bad_input_reported: u64,
    reports: VecDeque<String>,
    /// State of the generator behind epochs and backoff jitter (seeded by the driver).
    random: u64,
}

impl Session {
    /// A session whose link is down and due to connect at `now`. `seed` feeds the epochs and
    /// the backoff jitter: the driver passes a random one, so that nodes differ.
    pub fn new(
        link: Arc<Link>,
        shards: Arc<dyn Shards>,
        stats: Arc<ThreadStats>,
        max_message: usize,
        seed: u64,
        now: Instant,
    ) -> Session {
        let node = link.node();
        Session {
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
            cmd: Pipe::new(CMD_BOUNDS, now),
            sub: Pipe::new(sub_bounds(max_message), now),
            expect: VecDeque::new(),
            pending_sub: HashMap::new(),
            subscribed: HashSet::new(),
            restoring: HashSet::new(),
            sequences: Sequences::default(),
            remote: Vec::new(),
            sub_throttled: None,
            backoff: BACKOFF_MIN,
            next_attempt: now,
            next_heartbeat: now,
            down_since: None,
            lost_while_down: 0,
            connected_once: false,
            bad_input_reported: 0,
            reports: VecDeque::new(),
            random: seed,
        }
    }

    /// Whether the driver should open the connections now: the link is down and its retry
    /// (or the first attempt) is due.
    pub fn poll_connect(&self, now: Instant) -> bool {
        !self.up && now >= self.next_attempt
    }

    /// Both connections are open: restores what this node had (its name for the
    /// connections, its liveness key, its `/who` fields, its subscriptions).
    pub fn handle_connected(&mut self, now: Instant) {
        self.up = true;
        self.failed = None;
        self.epoch = self.next_random();
        self.cmd.reset(now);
        self.sub.reset(now);
        self.next_heartbeat = now;
        let node = self.node.to_string();
        let url = self.link.url.clone();
        if url.db != 0 {
            let db = url.db.to_string();
            let args: [&[u8]; 2] = [b"SELECT", db.as_bytes()];
            self.command(Class::State, &args, Expect::Ignore, now);
        }
        let name = format!("wschat-{node}-cmd");
        let args: [&[u8]; 3] = [b"CLIENT", b"SETNAME", name.as_bytes()];
        self.command(Class::State, &args, Expect::Ignore, now);
        let name = format!("wschat-{node}-sub");
        // Redis answers CLIENT SETNAME on `Sub` with +OK before subscribe mode starts.
        self.sub_command(&[b"CLIENT", b"SETNAME", name.as_bytes()]);
        // The liveness key gets the new epoch before any field of that epoch is written, so
        // that no `/who` elsewhere can find a field whose epoch does not look alive.
        self.heartbeat(now);
        self.write_rosters(now);
        let link = self.link.clone();
        let mut rooms = Vec::new();
        link.set_up(|all| rooms = all);
        self.subscribe(&rooms);
        let lost = std::mem::take(&mut self.lost_while_down);
        if let Some(since) = self.down_since.take() {
            bump(&self.stats.counters.cluster_reconnects, 1);
            self.report(format!(
                "link to {url} restored after {:.1}s; {lost} event(s) were not propagated \
                 meanwhile (cluster_not_propagated in /stats); resubscribed {} room(s)",
                now.duration_since(since).as_secs_f64(),
                rooms.len()
            ));
            self.restoring.extend(rooms);
        } else if !self.connected_once {
            self.report(format!("connected to {url} as node {node}"));
        }
        self.connected_once = true;
        self.backoff = BACKOFF_MIN;
        set(&self.stats.counters.cluster_link_up, 1);
    }

    /// Opening the connections failed (`reason` says how): retried after the backoff.
    pub fn handle_connect_failed(&mut self, reason: &str, now: Instant) {
        self.retry_later(now, reason);
    }

    /// Bytes read from `conn` at `now`.
    pub fn handle_input(&mut self, conn: Conn, bytes: &[u8], now: Instant) {
        // The link is being torn down: what else arrived is not read.
        if !self.up || self.failed.is_some() {
            return;
        }
        match conn {
            Conn::Cmd => {
                self.cmd.decoder.handle_input(bytes);
                self.read_replies(now);
            }
            Conn::Sub => {
                self.sub.progress = now;
                self.sub.decoder.handle_input(bytes);
                self.read_subscription();
            }
        }
    }

    /// A request from a shard, drained from the [`Link`]'s inbox in the order sent.
    pub fn handle_request(&mut self, msg: BrokerMsg, now: Instant) {
        match msg {
            BrokerMsg::Publish(deliveries) => self.publish(&deliveries, now),
            BrokerMsg::Subscribe(room) => {
                if self.up {
                    self.subscribe(std::slice::from_ref(&room));
                } else if self.link.mark_ready(&room) {
                    self.shards.room_ready(&room);
                }
            }
            BrokerMsg::Unsubscribe(room) => self.unsubscribe(room),
            BrokerMsg::RosterChanged { room, member, name } => {
                self.roster_changed(&room, member, name, now);
            }
            BrokerMsg::Who { room, member } => self.who(room, member, now),
        }
    }

    /// A connection ended or failed (`reason` says how): the link is torn down at the end
    /// of the iteration ([`Session::poll_close`]). The first reason is the one reported.
    pub fn handle_failure(&mut self, reason: String) {
        if self.up {
            self.failed.get_or_insert(reason);
        }
    }

    /// The heartbeat, if it is due at `now`; and while `Sub` is throttled, whether every
    /// shard is down to half the limit, so that it is read again (the shards do not tell the
    /// broker when they catch up: it looks every [`PEER_BACKLOG_RECHECK`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(recheck) = self.sub_throttled
            && now >= recheck
        {
            let caught_up = backlog_caught_up(self.shards.backlog());
            self.sub_throttled = (!caught_up).then_some(now + PEER_BACKLOG_RECHECK);
        }
        if self.up && now >= self.next_heartbeat {
            self.heartbeat(now);
        }
    }

    /// When the session next needs [`Session::handle_timeout`] (the link up: the next
    /// heartbeat; `Sub` throttled: the next look at the shards' backlog) or
    /// [`Session::poll_connect`] (down: the next attempt).
    pub fn poll_timeout(&self) -> Instant {
        let link = if self.up {
            self.next_heartbeat
        } else {
            self.next_attempt
        };
        self.sub_throttled.map_or(link, |recheck| recheck.min(link))
    }

    /// Whether the driver should read `conn` now. `Cmd` always; `Sub` not while the
    /// shards hold more remote events than they may ([`Session::poll_deliveries`] decides,
    /// [`Session::handle_timeout`] undoes it): what Redis sends meanwhile stays in the
    /// kernel, then in Redis, whose `client-output-buffer-limit pubsub` bounds what it holds
    /// for us (deploy/redis.conf), so the inboxes stay bounded however fast the other nodes
    /// publish. `Cmd` carries this node's publishes, the heartbeat and `/who`, which the
    /// shards' backlog does not concern.
    pub fn poll_read(&self, conn: Conn) -> bool {
        match conn {
            Conn::Cmd => true,
            Conn::Sub => self.sub_throttled.is_none(),
        }
    }

    /// The output to write on `conn`, if any: this iteration's commands join whatever the
    /// socket did not take before. The driver writes what the socket takes and leaves the
    /// rest in the outbox. While the link is down nothing is written (and nothing kept).
    pub fn poll_transmit(&mut self, conn: Conn) -> Option<&mut Outbox> {
        let pipe = match conn {
            Conn::Cmd => &mut self.cmd,
            Conn::Sub => &mut self.sub,
        };
        if !self.up {
            pipe.buf.clear();
            return None;
        }
        pipe.transmit()
    }

    /// Whether the link failed during this iteration. If so the session is already down
    /// (what was owed is counted as lost, the rooms are told, the retry is scheduled) and
    /// the driver closes both sockets.
    pub fn poll_close(&mut self, now: Instant) -> bool {
        match self.failed.take() {
            Some(reason) if self.up => {
                self.link_down(&reason, now);
                true
            }
            _ => false,
        }
    }

    /// Hands this iteration's remote events and notices to every shard, one shared batch;
    /// then, if a shard holds more than [`crate::peer::PEER_BACKLOG_LIMIT`], stops reading
    /// `Sub` ([`Session::poll_read`]) until every shard is down to half, as a shard stops
    /// reading the senders of a batch a sibling cannot take. Looked at only when a batch was
    /// handed: only a batch makes the backlog grow.
    pub fn poll_deliveries(&mut self, now: Instant) {
        if self.remote.is_empty() {
            return;
        }
        let batch: Batch = std::mem::take(&mut self.remote).into();
        self.shards.deliver_to_all(batch);
        if self.sub_throttled.is_none() && backlog_over_limit(self.shards.backlog()) {
            self.sub_throttled = Some(now + PEER_BACKLOG_RECHECK);
            bump(&self.stats.counters.cluster_backpressure, 1);
        }
    }

    /// A line for the log (the driver prefixes it with who is speaking).
    pub fn poll_report(&mut self) -> Option<String> {
        self.reports.pop_front()
    }

    /// Refreshes the liveness key, pings `Sub`, and fails the link if either connection
    /// has owed a reply for too long.
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
        self.command(Class::State, &args, Expect::Ignore, now);
        self.sub_command(&[b"PING"]);
        let cmd_silent =
            !self.expect.is_empty() && now.duration_since(self.cmd.progress) > SILENCE_LIMIT;
        // While `Sub` is throttled its PONGs are not read either, and this fails the link
        // after SILENCE_LIMIT, on purpose. A node whose shards cannot keep up with the
        // cluster's traffic for that long has already made Redis hold seconds of events for
        // it, near the `pubsub` output limit at which Redis drops the connection without a
        // word; and an unread connection shows no EOF, so this check is the only one that
        // would notice Redis closing it. Failing here is bounded and visible: the rooms are
        // told of the gap (`cluster_gaps`), the link is retried, and what the shards hold
        // drains meanwhile. Exempting a throttled `Sub` would instead keep a link that
        // may already be dead.
        let sub_silent = now.duration_since(self.sub.progress) > SILENCE_LIMIT;
        if cmd_silent || sub_silent {
            self.failed
                .get_or_insert_with(|| format!("no reply from Redis for {SILENCE_LIMIT:?}"));
        }
    }

    /// The link is down: what it owed is lost (and counted), every room waiting for its
    /// subscription may complete (local only), every subscribed room is told of the gap.
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
                self.who_link_down(&query);
            }
        }
        self.cmd.clear();
        self.sub.clear();
        self.pending_sub.clear();
        self.restoring.clear();
        for room in self.link.set_down() {
            self.shards.room_ready(&room);
        }
        if was_up {
            let notice = crate::chat::nodes::link_lost();
            let rooms: Vec<RoomName> = self.subscribed.iter().cloned().collect();
            for room in &rooms {
                self.gap(room, &notice);
            }
        }
        self.subscribed.clear();
        self.retry_later(now, reason);
    }

    /// Schedules the next connection attempt after the backoff (plus jitter), and doubles
    /// the backoff up to [`BACKOFF_MAX`].
    fn retry_later(&mut self, now: Instant, reason: &str) {
        if self.down_since.is_none() {
            self.down_since = Some(now);
            self.report(format!("{reason}; retrying with backoff"));
        }
        let jitter = self.jitter(self.backoff);
        self.next_attempt = now + self.backoff + jitter;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Up to a quarter of `backoff`, so that nodes that lost Redis together do not reconnect
    /// in lockstep.
    fn jitter(&mut self, backoff: Duration) -> Duration {
        backoff / 4 * (self.next_random() % 1000) as u32 / 1000
    }

    /// splitmix64 (Steele, Lea and Flood): a well-spread sequence from any seed, which is all
    /// epochs and jitter need; no secret depends on it.
    fn next_random(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Counts input from Redis that makes no sense, and reports the first few.
    fn bad_input(&mut self, what: &str) {
        bump(&self.stats.counters.cluster_bad_input, 1);
        self.bad_input_reported += 1;
        if self.bad_input_reported <= BAD_INPUT_REPORTS {
            self.report(what.to_string());
        }
    }

    fn report(&mut self, line: String) {
        self.reports.push_back(line);
    }
}
