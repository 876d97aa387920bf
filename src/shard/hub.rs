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
//! With `--cluster`, the hub also holds the broker's [`Link`] (set once at start-up), through
//! which shards publish their room deliveries to other nodes.
//!
//! Must never: hold a lock while doing I/O or waiting for another thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{Inbox, InboxMsg, MemberId};
use crate::chat::{Delivery, Roster};
use crate::cluster::Link;
use crate::io::Waker;

#[derive(Debug)]
pub struct Hub {
    inboxes: Vec<Arc<Inbox>>,
    roster: Mutex<Roster<MemberId>>,
    conns: AtomicUsize,
    max_conns: usize,
    cluster: OnceLock<Arc<Link>>,
}

impl Hub {
    /// A hub for one shard per waker: shard `i`'s reactor must be opened with `wakers[i]`.
    pub fn new(wakers: &[Waker], max_conns: usize) -> Arc<Hub> {
        Arc::new(Hub {
            inboxes: wakers
                .iter()
                .map(|w| Arc::new(Inbox::new(w.clone())))
                .collect(),
            roster: Mutex::new(Roster::default()),
            conns: AtomicUsize::new(0),
            max_conns,
            cluster: OnceLock::new(),
        })
    }

    pub fn inbox(&self, shard: usize) -> &Arc<Inbox> {
        &self.inboxes[shard]
    }

    pub fn inboxes(&self) -> &[Arc<Inbox>] {
        &self.inboxes
    }

    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// The link to other nodes (`--cluster`), if any.
    pub fn cluster(&self) -> Option<&Arc<Link>> {
        self.cluster.get()
    }

    /// Attaches the broker's link; before any shard runs. A second call is ignored.
    pub fn set_cluster(&self, link: Arc<Link>) {
        let _ = self.cluster.set(link);
    }

    /// Sends `batch` to every shard but `from`.
    pub fn send_to_peers(&self, from: usize, batch: Arc<[Delivery<MemberId>]>) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != from {
                inbox.push(InboxMsg::Deliver(batch.clone()));
            }
        }
    }

    pub fn roster(&self) -> MutexGuard<'_, Roster<MemberId>> {
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
