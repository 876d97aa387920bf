//! What the shards of one server share: each other's inboxes, the room roster, and the
//! connection count that `--max-conns` limits.
//!
//! How a room delivery finds the shards with members in that room: it is sent to every other
//! shard, and each one resolves it against its own members (a shard with none in the room
//! does one hash lookup). A shared room directory (room -> shards with members) would spare
//! those lookups, but every message would then read shared state that every join and leave
//! writes, and where the kernel places connections (the reuseport hash, epoll's wake-up
//! order, round-robin hand-off) a room of n members misses a given shard of T only with
//! probability (1 - 1/T)^n: for rooms of 50 on a few shards, never. So a message touches no
//! shared state; one inbox item per peer per loop iteration carries all of that iteration's
//! room deliveries, and a peer's wake-up is one eventfd write only when its inbox was empty.
//!
//! The roster (every member's name, by room, in join order) is shared under a lock because
//! `/who` lists the whole room; joins, leaves, renames and `/who` take it, messages never do.
//!
//! The hub is also where a shard finds its [`Peer`]s, the parties that share its rooms: the
//! other shards (when there are any) and, with `--cluster`, the broker's link to other nodes
//! (set once at start-up). The broker reaches the shards back through [`Shards`], which the
//! hub implements.
//!
//! Owns: every shard's inbox, the roster, the connection count held to `--max-conns`, and
//! the remote peer once set. Must never: hold a lock while doing I/O or waiting for another
//! thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{Inbox, InboxMsg};
use crate::chat::{RoomName, Roster};
use crate::io::Waker;
use crate::peer::{Batch, Peer, Shards, batch_bytes};

#[derive(Debug)]
pub struct Hub {
    siblings: Siblings,
    roster: Mutex<Roster>,
    conns: AtomicUsize,
    max_conns: usize,
    /// Who shares the rooms beyond this server (the `--cluster` broker's link).
    remote: OnceLock<Arc<dyn Peer>>,
}

/// The shards of one server as each other's peer: a batch goes to every inbox but the
/// sender's.
#[derive(Debug)]
struct Siblings {
    inboxes: Vec<Arc<Inbox>>,
}

impl Peer for Siblings {
    fn publish(&self, from: usize, batch: &Batch) {
        let bytes = batch_bytes(batch);
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != from {
                inbox.push_deliveries(batch.clone(), bytes);
            }
        }
    }
}

impl Hub {
    /// A hub for one shard per waker: shard `i`'s reactor must be opened with `wakers[i]`.
    pub fn new(wakers: &[Waker], max_conns: usize) -> Arc<Hub> {
        Arc::new(Hub {
            siblings: Siblings {
                inboxes: wakers
                    .iter()
                    .map(|w| Arc::new(Inbox::new(w.clone())))
                    .collect(),
            },
            roster: Mutex::new(Roster::default()),
            conns: AtomicUsize::new(0),
            max_conns,
            remote: OnceLock::new(),
        })
    }

    pub fn inbox(&self, shard: usize) -> &Arc<Inbox> {
        &self.siblings.inboxes[shard]
    }

    pub fn inboxes(&self) -> &[Arc<Inbox>] {
        &self.siblings.inboxes
    }

    pub fn shard_count(&self) -> usize {
        self.siblings.inboxes.len()
    }

    /// Attaches the party that shares the rooms beyond this server (the broker's link);
    /// before any shard runs. A second call is ignored.
    pub fn set_remote(&self, peer: Arc<dyn Peer>) {
        let _ = self.remote.set(peer);
    }

    /// Everyone a shard's room traffic concerns besides itself: the other shards, if any,
    /// then the remote party, if any.
    pub fn peers(&self) -> impl Iterator<Item = &dyn Peer> {
        let siblings = (self.shard_count() > 1).then_some(&self.siblings as &dyn Peer);
        siblings
            .into_iter()
            .chain(self.remote.get().map(|peer| &**peer))
    }

    pub fn has_peers(&self) -> bool {
        self.peers().next().is_some()
    }

    /// The largest backlog of room deliveries (count, bytes) that a shard other than `from`
    /// has been handed and not yet delivered.
    pub fn peer_backlog(&self, from: usize) -> (usize, usize) {
        self.largest_backlog(Some(from))
    }

    /// The largest backlog (count, bytes; each the largest of its kind) among the shards
    /// but `except`: for a shard, its peers' ([`Hub::peer_backlog`]); for the broker, every
    /// shard's ([`Shards::backlog`]).
    fn largest_backlog(&self, except: Option<usize>) -> (usize, usize) {
        self.inboxes()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .map(|(_, inbox)| inbox.backlog())
            .fold((0, 0), |(d, b), (d2, b2)| (d.max(d2), b.max(b2)))
    }

    pub fn roster(&self) -> MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection; false if it is over `--max-conns` (it still counts until
    /// [`Hub::release_conn`], since it holds a descriptor until its 503 is sent).
    pub fn admit_conn(&self) -> bool {
        self.conns.fetch_add(1, Ordering::Relaxed) < self.max_conns
    }

    pub fn release_conn(&self) {
        self.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shards for Hub {
    fn count(&self) -> usize {
        self.shard_count()
    }

    fn deliver(&self, shard: usize, batch: Batch) {
        if let Some(inbox) = self.siblings.inboxes.get(shard) {
            let bytes = batch_bytes(&batch);
            inbox.push_deliveries(batch, bytes);
        }
    }

    /// One sum of the batch's bytes for every inbox, not one per inbox.
    fn deliver_to_all(&self, batch: Batch) {
        let bytes = batch_bytes(&batch);
        for inbox in &self.siblings.inboxes {
            inbox.push_deliveries(batch.clone(), bytes);
        }
    }

    fn backlog(&self) -> (usize, usize) {
        self.largest_backlog(None)
    }

    fn room_ready(&self, room: &RoomName) {
        for inbox in &self.siblings.inboxes {
            inbox.push(InboxMsg::RoomReady(room.clone()));
        }
    }
}
