//! How a shard and the other parties that share its rooms reach each other: the other shards
//! of this server, and, with `--cluster`, the broker that links this node to others.
//!
//! Owns the vocabulary both sides speak (a member's server-wide id, a batch of room
//! deliveries) and the two interfaces between them: [`Peer`], what a shard tells each
//! party sharing its rooms, and [`Shards`], what such a party may hand back to the shards.
//! The shard loop talks to a list of peers and never asks which kind each one is; the
//! broker sees the shards through [`Shards`] and never imports the shard.
//! Must never: hold connection or chat state, do I/O, or block: a peer queues and returns.

use std::fmt::Debug;
use std::sync::Arc;

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
    /// Joins to `room` that waited for it ([`Peer::join`] said false) may complete.
    fn room_ready(&self, room: &RoomName);
}
