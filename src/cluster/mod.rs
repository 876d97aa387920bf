//! Scale-out: rooms spanning several server nodes through Redis pub/sub (`--cluster`).
//!
//! Owns: the node's identity, the link to Redis (two TCP connections: one for commands and
//! publishes, one in subscribe mode), which room channels this node subscribes to, this
//! node's fields of the per-room Redis hashes that `/who` reads, and the counters that make
//! every gap and every refusal visible.
//! Must never: touch a shard's connections or chat state (it talks to shards only through
//! their inboxes), block a shard's loop, trust what Redis sends (bad input is counted and
//! dropped, never a panic), accept from Redis more than from a client (an event is bounded
//! by `--max-message` like a client's message), or keep state that grows without bound
//! with what others choose: per-room state goes with the room's last local member,
//! per-node state is capped, and every queue towards Redis has a cap.
//!
//! Modules: [`resp`] and [`wire`] are pure codecs, [`who`] the pure part of `/who` (this
//! node's roster and the bounded reading of a room's hash), [`session`] the link's logic
//! (sans-IO: bytes and time in, bytes, deadlines and deliveries out), [`broker`] the thread
//! that owns the sockets and drives the session.
//!
//! # Where the link runs
//! The broker is one thread with its own epoll reactor (`io::EpollReactor`, the shards' own
//! I/O layer) and a typed inbox ([`BrokerMsg`]) woken by an eventfd: the Redis sockets are I/O
//! sources like any other, non-blocking and edge-triggered, and the shards never wait for
//! Redis. One thread rather than a shard's loop: the broker's work (encoding PUBLISH
//! commands, parsing every remote event) then never delays a shard's clients, and a shard
//! pattern needs no special case. Only a connection attempt blocks, on the broker thread,
//! bounded by a 500 ms timeout, while the link is down anyway. The thread only moves bytes
//! and reads the clock: what the link does is decided by [`session::Session`], which takes
//! the time as an argument and makes no system call, so its tests give it explicit instants
//! and RESP byte strings.
//!
//! # The hooks in the shard (few and small)
//! - every room delivery a shard plans (a message, a join, leave or nick notice) goes in its
//!   per-iteration batch to the broker as well as to the other shards ([`Link::publish`]);
//! - a join asks [`Link::join`]; if the room's channel is not yet confirmed subscribed, the
//!   101 waits for [`crate::peer::Shards::room_ready`], so a member never misses
//!   what other nodes publish after its join completed ("a join completes only after the
//!   SUBSCRIBE reply");
//! - a leave calls [`Link::leave`] (the last local member unsubscribes), joins, leaves and
//!   renames call [`Link::roster_changed`] with the member and its name (one field of the
//!   room's `/who` hash is written), and `/who` is answered by the broker ([`Link::who`]);
//! - remote events arrive as ordinary `InboxMsg::Deliver` batches whose audience is the whole
//!   room ([`REMOTE`] is nobody's id), encoded once per node on receipt and shared by
//!   reference by every member on every shard.
//!
//! # Order
//! Messages of one sender reach every receiver on every node in the order sent: the sender's
//! shard plans them in order and hands them to the broker in per-iteration batches through
//! one FIFO inbox; the broker writes them as PUBLISH commands in that order on its single
//! command connection; Redis executes one connection's commands in order and appends each
//! message to every subscriber's output in execution order; there is one channel per room
//! (a sender is in one room), so the receiving broker reads them in order on its single
//! subscription connection and pushes them, in order, into each shard's FIFO inbox. Several
//! channels per room (sharding a room) would lose this, as would several command
//! connections.
//!
//! # Gaps: pub/sub is at-most-once, so every loss is made visible
//! - an event published while the link is down is delivered locally and counted as
//!   `cluster_not_propagated` (also those written but not yet confirmed when the link
//!   dropped: they may or may not have reached Redis);
//! - every event carries the publisher's per-room sequence number; a receiver that sees a
//!   jump counts a gap for the room and tells its local members how many were missed;
//! - a dropped link (Redis restarted, or Redis closing our subscriber at its pub/sub
//!   output-buffer limit, `client-output-buffer-limit pubsub`, set in deploy/redis.conf)
//!   counts a gap in every subscribed room and tells its members at once, then reconnects
//!   with backoff, resubscribes, rewrites this node's part of every `/who` hash, and tells
//!   the members that the link is back.
//!
//! Redis Streams would give at-least-once delivery (XADD per room, XREAD from the last id
//! after a reconnect), at the price of a read cursor per room per node, trimming, and a
//! blocking XREAD per connection; docs/README-cluster.md says why we chose pub/sub.
//!
//! # Bounds: Redis input is treated like client input
//! Whoever can write to Redis can publish on our channels and write our hashes, so nothing
//! read from Redis may cost more than the same thing from a client:
//! - a remote event longer than a client of this node could have caused
//!   ([`wire::max_event_len`] of `--max-message`) is dropped and counted
//!   (`remote_oversize` in this section of `/stats`); the decoders refuse, as a protocol
//!   error that resets the link, a bulk string a few times longer, and any reply longer than
//!   what we ask for ([`resp::Bounds`], set in [`session`]); decoding is linear in the bytes
//!   received however they are split;
//! - what is kept per room (sequence numbers, gap counts, this node's roster) goes when the
//!   room's last local member leaves, and what is kept per publishing node is capped;
//! - every command queue towards Redis is capped (`commands_refused`), and so are the
//!   `/who` queries in flight (`who_refused`) and what each may read and keep.
//!
//! # `/who` across nodes
//! The hash `wschat:who:<room>` has one field per member, `<node>:<epoch>:<join number>`
//! -> name ([`wire::WhoField`]): a join, a rename or a leave writes (HSET/HDEL) that one
//! field, never the room. A node that dies cannot remove its fields, so liveness is a
//! separate key per node, `wschat:node:<id>`, set with a 6 s expiry and refreshed every 2 s
//! (a heartbeat). Its value is the node's link epoch, random at each connect: after a
//! reconnect the node writes all its members' fields in the new epoch, and the fields of
//! the old one (members who left while it could not write) are stale without anyone
//! listing them. `/who` lists this node's members from the broker's own copy, reads the
//! other nodes' from the hash a page at a time (HSCAN), keeps the fields whose node's key
//! holds their epoch (MGET), deletes the others, and stops at a bounded number of names
//! and pages ([`who`] says why). Per-field expiry (HEXPIRE) needs Redis 7.4 (Debian ships
//! 7.0), and an expiry on the whole hash would drop the live nodes' fields with the dead.

pub mod broker;
pub mod resp;
pub mod session;
pub mod who;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::chat::{Name, RoomName};
use crate::io::Waker;
use crate::peer::{Batch, MemberId, Peer};
use crate::stats::{Kind, SectionMetric};
pub use wire::NodeId;

/// The audience exception of remote deliveries: no local member has this id, so every
/// local member of the room receives them.
pub const REMOTE: MemberId = MemberId {
    shard: usize::MAX,
    conn: usize::MAX,
};

/// `redis://HOST[:PORT][/DB]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<RedisUrl, String> {
        let rest = s
            .strip_prefix("redis://")
            .ok_or_else(|| format!("{s:?}: expected redis://HOST[:PORT][/DB]"))?;
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, db)) => (a, db.parse().map_err(|_| format!("bad database {db:?}"))?),
            None => (rest, 0),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        // [v6]:port, host:port, host
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad address {authority:?}"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, p),
                None if after.is_empty() => (host, "6379"),
                None => return Err(format!("bad address {authority:?}")),
            }
        } else {
            authority.rsplit_once(':').unwrap_or((authority, "6379"))
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let port = port.parse().map_err(|_| format!("bad port {port:?}"))?;
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            db,
        })
    }
}

impl NodeId {
    /// A random id: std's per-process random hash keys, the pid and the time, so that two
    /// nodes started together differ.
    pub fn random() -> NodeId {
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        NodeId(h.finish())
    }
}

/// What `--cluster` and `--node-id` configure, and the client limit that bounds what this
/// node accepts from Redis too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub url: RedisUrl,
    pub node: NodeId,
    /// `--max-message`: a remote event may carry no more than a client could send here.
    pub max_message: usize,
}

/// What shards ask of the broker.
#[derive(Debug)]
pub enum BrokerMsg {
    /// One shard iteration's room deliveries, to publish on their rooms' channels.
    Publish(Batch),
    /// The first local member is joining the room: subscribe to its channel.
    Subscribe(RoomName),
    /// The last local member left: unsubscribe unless someone joined since.
    Unsubscribe(RoomName),
    /// A local member of the room joined or was renamed (`name`), or left (`None`): write
    /// its field of the room's `/who` hash.
    RosterChanged {
        room: RoomName,
        member: MemberId,
        name: Option<Name>,
    },
    /// `/who` from `member`: answer with the room's names (a bounded number).
    Who { room: RoomName, member: MemberId },
}

/// One room's subscription as the shards see it.
#[derive(Debug)]
struct RoomSub {
    /// Local members, including joins waiting for the subscription.
    members: usize,
    /// Joins may complete: the SUBSCRIBE was confirmed, or the link is down (local only).
    ready: bool,
}

#[derive(Debug, Default)]
struct Shared {
    rooms: HashMap<RoomName, RoomSub>,
    /// The link is up; written under this lock, so that a join either sees the link down
    /// (and is recorded before the broker resubscribes every room) or up.
    up: bool,
}

/// What the broker refused, reported in the `cluster` section of `/stats` (written by the
/// broker thread alone).
#[derive(Debug, Default)]
struct BrokerCounters {
    /// Remote events longer than this node accepts ([`wire::max_event_len`] of its
    /// `--max-message`): dropped, and the room's members told of the gap.
    remote_oversize: AtomicU64,
    /// Commands not queued because their connection's backlog was over its cap (publishes
    /// among them are also in `cluster_not_propagated`).
    commands_refused: AtomicU64,
    /// `/who` requests answered without the other nodes' members because the broker was
    /// busy: too many in flight, or the command backlog over its cap.
    who_refused: AtomicU64,
}

impl BrokerCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The shards' handle on the broker thread.
#[derive(Debug)]
pub struct Link {
    node: NodeId,
    url: RedisUrl,
    inbox: Mutex<Vec<BrokerMsg>>,
    waker: Waker,
    shared: Mutex<Shared>,
    /// Gaps per room with local members (since its first local member joined), for /stats.
    gaps: Mutex<BTreeMap<String, u64>>,
    up_flag: AtomicBool,
    counters: BrokerCounters,
}

impl Link {
    fn new(config: &ClusterConfig, waker: Waker) -> Link {
        Link {
            node: config.node,
            url: config.url.clone(),
            inbox: Mutex::new(Vec::new()),
            waker,
            shared: Mutex::new(Shared::default()),
            gaps: Mutex::new(BTreeMap::new()),
            up_flag: AtomicBool::new(false),
            counters: BrokerCounters::default(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg` for the broker; wakes it if its inbox was empty.
    fn push(&self, msg: BrokerMsg) {
        let was_empty = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = inbox.is_empty();
            inbox.push(msg);
            was_empty
        };
        if was_empty {
            self.waker.wake();
        }
    }

    fn drain_into(&self, batch: &mut Vec<BrokerMsg>) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *inbox, batch);
    }

    /// Marks `room` ready; false if nobody is waiting in it any more.
    fn mark_ready(&self, room: &RoomName) -> bool {
        match self.shared().rooms.get_mut(room) {
            Some(sub) => {
                sub.ready = true;
                true
            }
            None => false,
        }
    }

    /// Whether `room` has local members (or joins waiting).
    fn has_members(&self, room: &RoomName) -> bool {
        self.shared().rooms.contains_key(room)
    }

    /// Link down: every room is ready (local only); returns the rooms that were waiting.
    fn set_down(&self) -> Vec<RoomName> {
        let mut shared = self.shared();
        shared.up = false;
        self.up_flag.store(false, Ordering::Relaxed);
        shared
            .rooms
            .iter_mut()
            .filter(|(_, sub)| !sub.ready)
            .map(|(room, sub)| {
                sub.ready = true;
                room.clone()
            })
            .collect()
    }

    /// Link up: runs `subscribe_all` with every room that has local members, under the lock
    /// (see [`Shared::up`]).
    fn set_up(&self, subscribe_all: impl FnOnce(Vec<RoomName>)) {
        let mut shared = self.shared();
        subscribe_all(shared.rooms.keys().cloned().collect());
        shared.up = true;
        self.up_flag.store(true, Ordering::Relaxed);
    }

    fn count_gap(&self, room: &RoomName) -> u64 {
        let mut gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
        let n = gaps.entry(room.as_str().to_string()).or_default();
        *n += 1;
        *n
    }

    /// Forgets `room`'s gap count: it has no local members any more (the map holds only
    /// rooms in use, whatever names clients choose).
    fn forget_gaps(&self, room: &RoomName) {
        let mut gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
        gaps.remove(room.as_str());
    }
}

impl crate::stats::Section for Link {
    /// The `cluster` section of `/stats`.
    fn report(&self) -> serde_json::Value {
        let gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let rooms = self.shared().rooms.len();
        serde_json::json!({
            "node": self.node.to_string(),
            "redis": self.url.to_string(),
            "link_up": self.up_flag.load(Ordering::Relaxed),
            "rooms_with_local_members": rooms,
            "gaps_by_room": gaps,
            "remote_oversize": self.counters.remote_oversize.load(Ordering::Relaxed),
            "commands_refused": self.counters.commands_refused.load(Ordering::Relaxed),
            "who_refused": self.counters.who_refused.load(Ordering::Relaxed),
        })
    }

    /// The section's numbers for `/metrics`, but not `gaps_by_room`: room names come from
    /// clients, and a series per room would let them grow Prometheus' storage without
    /// bound; the broker thread's `cluster_gaps` counts every gap. `link_up` is the broker
    /// thread's `cluster_link_up` gauge already.
    fn metrics(&self) -> Vec<SectionMetric> {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rooms = self.shared().rooms.len() as u64;
        let metric = |name, kind, help, value| SectionMetric {
            name,
            kind,
            help,
            labels: Vec::new(),
            value,
        };
        vec![
            SectionMetric {
                labels: vec![
                    ("node", self.node.to_string()),
                    ("redis", self.url.to_string()),
                ],
                ..metric(
                    "cluster_info",
                    Kind::Gauge,
                    "--cluster: this node's id and its Redis (always 1).",
                    1,
                )
            },
            metric(
                "cluster_rooms_with_local_members",
                Kind::Gauge,
                "Rooms with members on this node, whose channels it subscribes.",
                rooms,
            ),
            metric(
                "cluster_remote_oversize",
                Kind::Counter,
                "Events from other nodes longer than this node accepts: dropped, the room told of the gap.",
                load(&self.counters.remote_oversize),
            ),
            metric(
                "cluster_commands_refused",
                Kind::Counter,
                "Commands to Redis not queued because the connection's backlog was over its cap.",
                load(&self.counters.commands_refused),
            ),
            metric(
                "cluster_who_refused",
                Kind::Counter,
                "/who answered without the other nodes' members because the broker was busy.",
                load(&self.counters.who_refused),
            ),
        ]
    }
}

/// The shards' hooks ([`crate::peer::Peer`]): each queues for the broker and returns.
impl Peer for Link {
    fn publish(&self, _from: usize, batch: &Batch) {
        self.push(BrokerMsg::Publish(batch.clone()));
    }

    /// False until the room's channel is confirmed subscribed (the first joiner's SUBSCRIBE
    /// is on its way); the broker then calls `room_ready`. While the link is down, joins
    /// complete at once (local only; the broker subscribes every room when it is back).
    fn join(&self, room: &RoomName) -> bool {
        let mut shared = self.shared();
        let up = shared.up;
        let sub = shared.rooms.entry(room.clone()).or_insert(RoomSub {
            members: 0,
            ready: false,
        });
        sub.members += 1;
        if sub.ready {
            return true;
        }
        if !up {
            sub.ready = true;
            return true;
        }
        if sub.members == 1 {
            drop(shared);
            self.push(BrokerMsg::Subscribe(room.clone()));
        }
        false
    }

    /// The last local member's leave unsubscribes the room's channel.
    fn leave(&self, room: &RoomName) {
        let mut shared = self.shared();
        let Some(sub) = shared.rooms.get_mut(room) else {
            return;
        };
        sub.members = sub.members.saturating_sub(1);
        if sub.members == 0 {
            shared.rooms.remove(room);
            drop(shared);
            self.push(BrokerMsg::Unsubscribe(room.clone()));
        }
    }

    /// Writes the member's one field of the room's `/who` hash.
    fn roster_changed(&self, room: &RoomName, member: MemberId, name: Option<&Name>) {
        self.push(BrokerMsg::RosterChanged {
            room: room.clone(),
            member,
            name: name.cloned(),
        });
    }

    /// The broker answers `/who` for the whole room, every node's members.
    fn who(&self, room: &RoomName, member: MemberId) -> bool {
        self.push(BrokerMsg::Who {
            room: room.clone(),
            member,
        });
        true
    }
}

pub use broker::start;

#[cfg(test)]
mod tests {
    use super::*;

    /// A link to `url` for node `node`, with nothing behind it.
    fn link(url: &str, node: u64) -> Link {
        let config = ClusterConfig {
            url: url.parse().unwrap(),
            node: NodeId(node),
            max_message: 1 << 20,
        };
        Link::new(&config, Waker::new().unwrap())
    }

    #[test]
    fn redis_urls() {
        let url = |s: &str| s.parse::<RedisUrl>();
        assert_eq!(
            url("redis://10.200.0.1:6380/2"),
            Ok(RedisUrl {
                host: "10.200.0.1".into(),
                port: 6380,
                db: 2
            })
        );
        assert_eq!(url("redis://localhost").unwrap().port, 6379);
        assert_eq!(url("redis://h/").unwrap().db, 0);
        assert_eq!(url("redis://[::1]:7000").unwrap().host, "::1");
        assert!(url("http://h").is_err());
        assert!(url("redis://:6379").is_err());
        assert!(url("redis://h:x").is_err());
        assert!(url("redis://u:p@h").is_err());
        assert!(url("redis://h/x").is_err());
    }

    #[test]
    fn metrics_are_named_apart_from_the_counters_and_labelled_from_configuration() {
        use crate::stats::{FIELDS, Section};
        let link = link("redis://h:7000/2", 3);
        assert!(link.join(&RoomName::parse("r").unwrap()));
        let metrics = link.metrics();
        let mut names: Vec<&str> = metrics.iter().map(|m| m.name).collect();
        for name in &names {
            assert!(
                FIELDS.iter().all(|f| f.name != *name),
                "{name} is also a per-thread counter"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), metrics.len(), "a name twice: {metrics:?}");
        let info = metrics.iter().find(|m| m.name == "cluster_info").unwrap();
        assert_eq!(
            info.labels,
            [
                ("node", NodeId(3).to_string()),
                ("redis", "redis://h:7000/2".to_string())
            ]
        );
        let rooms = metrics
            .iter()
            .find(|m| m.name == "cluster_rooms_with_local_members")
            .unwrap();
        assert_eq!(rooms.value, 1);
    }

    #[test]
    fn joins_wait_for_the_first_subscription_and_the_last_leave_unsubscribes() {
        let link = link("redis://h", 1);
        let room = RoomName::parse("r").unwrap();
        // Link down: local only at once.
        assert!(link.join(&room));
        link.leave(&room);
        link.set_up(|rooms| assert!(rooms.is_empty()));
        assert!(!link.join(&room));
        assert!(!link.join(&room));
        let mut batch = Vec::new();
        link.drain_into(&mut batch);
        assert!(matches!(
            &batch[..],
            [BrokerMsg::Unsubscribe(_), BrokerMsg::Subscribe(_)]
        ));
        assert!(link.mark_ready(&room));
        assert!(link.join(&room));
        for _ in 0..3 {
            link.leave(&room);
        }
        assert!(!link.has_members(&room));
        batch.clear();
        link.drain_into(&mut batch);
        assert!(matches!(&batch[..], [BrokerMsg::Unsubscribe(_)]));
        assert!(!link.mark_ready(&room));
    }
}
