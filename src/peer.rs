//! How a shard and the other parties that share its rooms reach each other: the other shards
//! of this server, and, with `--cluster`, the broker that links this node to others.
//!
//! Owns the vocabulary both sides speak (a member's server-wide id, a batch of room
//! deliveries) and the two interfaces between them: [`Peer`], what a shard tells each
//! party sharing its rooms, and [`Shards`], what such a party may hand back to the shards.
//! The shard loop talks to a list of peers and never asks which kind each one is; the
//! broker sees the shards through [`Shards`] and never imports the shard.
//!
//! Also owns the one bound on what a shard may be handed and not yet have delivered
//! ([`PEER_BACKLOG_LIMIT`]), which every party that hands shards batches keeps: a sibling
//! shard stops reading the senders of its batches, the broker stops reading Redis.
//! Must never: hold connection or chat state, do I/O, or block: a peer queues and returns.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::chat::{Delivery, MemberHandle, Name, RoomName};

/// A connection's key inside its shard (the reactor's key, a slab index).
pub type ConnKey = usize;

/// A chat member's handle across the server: which shard holds it, and its key there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId {
    pub shard: usize,
    pub conn: ConnKey,
}

impl MemberHandle for MemberId {
    /// Its key in its shard: a shard's `Chat` holds only the shard's own members.
    fn local_index(self) -> usize {
        self.conn
    }
}

/// One shard iteration's room deliveries, shared by every receiving party.
pub type Batch = Arc<[Delivery<MemberId>]>;

/// How many room deliveries (and how many bytes of their frames) a shard may hold, handed
/// to it and not yet delivered, before whoever hands it batches stops reading the source of
/// them (a sibling shard: the batch's senders; the broker: Redis). Without a bound, a
/// source that out-sends what a shard can deliver (the shard is busier, or its core is
/// slower) queues without limit in that shard's inbox. 65,536 deliveries is about a quarter
/// of a second of a loop's full rate. Reading resumes once every shard is down to half
/// ([`backlog_caught_up`]), so that a source hovering at the limit is not paused and resumed
/// on every batch.
pub const PEER_BACKLOG_LIMIT: (usize, usize) = (1 << 16, 8 << 20);

/// How often a party that stopped reading looks whether the shards caught up: they do not
/// tell it when they do, and it is short next to the quarter of a second of full-rate
/// delivery that the limit holds, so the shards do not run dry waiting for it. Only a party
/// that stopped reading wakes up this often.
pub const PEER_BACKLOG_RECHECK: Duration = Duration::from_millis(1);

/// Whether a backlog (deliveries, bytes) is over [`PEER_BACKLOG_LIMIT`]: stop reading.
pub fn backlog_over_limit((deliveries, bytes): (usize, usize)) -> bool {
    let (max_deliveries, max_bytes) = PEER_BACKLOG_LIMIT;
    deliveries > max_deliveries || bytes > max_bytes
}

/// Whether a backlog (deliveries, bytes) is down to half of [`PEER_BACKLOG_LIMIT`] in both
/// counts: read again.
pub fn backlog_caught_up((deliveries, bytes): (usize, usize)) -> bool {
    let (max_deliveries, max_bytes) = PEER_BACKLOG_LIMIT;
    deliveries <= max_deliveries / 2 && bytes <= max_bytes / 2
}

/// The bytes of a batch's frames: what a shard's backlog counts besides its deliveries.
/// Summed once per batch by whoever hands it to several shards.
pub fn batch_bytes(batch: &Batch) -> usize {
    batch.iter().map(|d| d.frame.len()).sum()
}

/// A party that shares rooms with a shard. Every call queues and returns at once; the
/// default methods are what a party that only carries messages does.
pub trait Peer: Debug + Send + Sync {
    /// The room deliveries that shard `from` planned in one iteration, in order.
    fn publish(&self, from: usize, batch: &Batch);

    /// A member is joining `room`. True: the join may complete now. False: this peer sends
    /// [`Shards::room_ready`] for `room` when it may. Either way the member counts until
    /// [`Peer::leave`].
    fn join(&self, _room: &RoomName) -> bool {
        true
    }

    /// A member counted by [`Peer::join`] left `room`.
    fn leave(&self, _room: &RoomName) {}

    /// `member` of `room` joined or was renamed (`name`: its name now), or left (`None`).
    fn roster_changed(&self, _room: &RoomName, _member: MemberId, _name: Option<&Name>) {}

    /// `/who` from `member`: true if this peer answers it (through [`Shards::deliver`]);
    /// false if the shard should answer from the server's own roster.
    fn who(&self, _room: &RoomName, _member: MemberId) -> bool {
        false
    }
}

/// The shards of this server, as a [`Peer`] reaches them.
pub trait Shards: Debug + Send + Sync {
    fn count(&self) -> usize;
    /// Hands `batch` to shard `shard`, which queues each delivery for its members.
    fn deliver(&self, shard: usize, batch: Batch);
    /// Hands `batch` to every shard.
    fn deliver_to_all(&self, batch: Batch) {
        for shard in 0..self.count() {
            self.deliver(shard, batch.clone());
        }
    }
    /// The largest backlog any shard holds: room deliveries handed to it and not yet
    /// delivered, and their frames' bytes (each the largest of its kind, possibly of two
    /// shards). What a party that hands batches compares with [`PEER_BACKLOG_LIMIT`].
    fn backlog(&self) -> (usize, usize);
    /// Joins to `room` that waited for it ([`Peer::join`] said false) may complete.
    fn room_ready(&self, room: &RoomName);
}
