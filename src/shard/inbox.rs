//! A shard's typed inbox: other threads push, the shard drains the whole batch at once.
//!
//! `push` wakes the shard only when the inbox goes from empty to non-empty, so a burst of
//! messages costs one eventfd write and one wake-up (memcached's `cq_push` + notify). The
//! lock is held only to append or to swap the batch out, never while work is done, so a
//! pushing thread (a worker, another loop) never waits for the shard.
//!
//! Owns: the queue of [`InboxMsg`]s, the shard's waker, and the backlog count of deliveries
//! handed over but not yet delivered (what its peers hold back on). Must never: wake the
//! shard for a push onto a non-empty inbox, hold the lock while a message is handled, or
//! block a pushing thread for longer than an append.

use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::work::WorkDone;
use crate::chat::RoomName;
use crate::io::Waker;
use crate::peer::Batch;

/// Messages a shard accepts from other threads.
#[derive(Debug)]
pub enum InboxMsg {
    /// Connections accepted by another thread, now this shard's to serve (acceptor-readers).
    Adopt(Vec<(TcpStream, SocketAddr)>),
    /// Room deliveries planned by another shard, for this shard's members of those rooms.
    /// One batch per sending loop iteration, shared by every receiving shard.
    Deliver(Batch),
    /// A peer that made joins to the room wait ([`crate::peer::Peer::join`]) lets them
    /// complete (`--cluster`: the room's channel is subscribed, or the link is down).
    RoomReady(RoomName),
    /// A worker interpreted a chat message (work-queue).
    WorkDone(WorkDone),
    /// Stop accepting, close every connection with 1001, then return from `run`.
    Stop,
}

/// Many-producer inbox of one shard.
#[derive(Debug)]
pub struct Inbox {
    queue: Mutex<Vec<InboxMsg>>,
    waker: Waker,
    /// Deliveries handed to the shard (in `Deliver` batches) that it has not yet queued on
    /// its members' outboxes, and their frames' bytes: what its peers hold back on.
    backlog: Backlog,
}

/// Room deliveries waiting for a shard, counted by whoever hands them over and discounted by
/// the shard as it delivers them.
#[derive(Debug, Default)]
struct Backlog {
    deliveries: AtomicUsize,
    bytes: AtomicUsize,
}

impl Inbox {
    pub fn new(waker: Waker) -> Inbox {
        Inbox {
            queue: Mutex::new(Vec::new()),
            waker,
            backlog: Backlog::default(),
        }
    }

    /// Deliveries handed to this shard and not yet delivered by it, and their bytes.
    pub fn backlog(&self) -> (usize, usize) {
        (
            self.backlog.deliveries.load(Relaxed),
            self.backlog.bytes.load(Relaxed),
        )
    }

    /// The shard delivered `deliveries` of the batches it was handed, of `bytes` in all.
    pub fn delivered(&self, deliveries: usize, bytes: usize) {
        self.backlog.deliveries.fetch_sub(deliveries, Relaxed);
        self.backlog.bytes.fetch_sub(bytes, Relaxed);
    }

    /// Queues room deliveries, `bytes` of frames in all ([`crate::peer::batch_bytes`],
    /// summed once by the caller however many inboxes the batch goes to), and counts them
    /// in the backlog until the shard says they are [`Inbox::delivered`].
    pub fn push_deliveries(&self, batch: Batch, bytes: usize) {
        self.backlog.deliveries.fetch_add(batch.len(), Relaxed);
        self.backlog.bytes.fetch_add(bytes, Relaxed);
        self.enqueue(InboxMsg::Deliver(batch));
    }

    /// Queues `msg`, any message but `Deliver` (which goes through
    /// [`Inbox::push_deliveries`], so that it is counted); wakes the shard if it may be
    /// asleep (the inbox was empty).
    pub fn push(&self, msg: InboxMsg) {
        debug_assert!(
            !matches!(msg, InboxMsg::Deliver(_)),
            "deliveries are pushed with push_deliveries, which counts them"
        );
        self.enqueue(msg);
    }

    fn enqueue(&self, msg: InboxMsg) {
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = queue.is_empty();
            queue.push(msg);
            was_empty
        };
        if was_empty {
            self.waker.wake();
        }
    }

    /// Swaps the queued batch into `batch` (which should be empty), holding the lock only for
    /// the swap.
    pub fn drain_into(&self, batch: &mut Vec<InboxMsg>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *queue, batch);
    }
}
