//! The CPU part of a chat message, and the queue that carries it to workers (work-queue).
//!
//! A work item is one complete chat message with its sender's name; a worker interprets it
//! (command parsing and validation, the one encoding of the outgoing frame, plus the
//! synthetic `--work-us` cost) and returns the [`Intent`] through the I/O loop's inbox. The
//! I/O loop keeps the connections and the rooms and applies every intent itself.
//!
//! Per-sender order: at most one item per connection is in flight. The I/O loop stops taking
//! events from a connection whose message is with a worker (later messages wait, parsed, in
//! that connection's protocol state) and stops reading its socket. A sequence number and a
//! reorder buffer would let one sender's messages run in parallel, but the worker encodes
//! the sender's name into the frame, so a `/nick` followed by a line could be encoded with
//! the old name; one in flight keeps every message's meaning exactly as in the other
//! patterns, and parallelism comes from many senders, which a chat server has.
//!
//! Backpressure: the queue is bounded (`--queue-depth`). When it is full the I/O loop holds
//! the item in `overflow` (at most one per connection, since a connection with an item out
//! is not read) and submits it when a slot frees; it never blocks, and no socket whose
//! message is waiting is read, so TCP flow control pushes back on the senders.
//!
//! Owns: the I/O loop's end of the bounded queue and its `overflow`, the workers' loop and
//! the synthetic cost. Must never: block the I/O loop (a full queue holds the item), reorder
//! items (`overflow` keeps arrival order), or let a worker touch a connection or a room (it
//! interprets and reports through the inbox; the I/O loop applies).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{Inbox, InboxMsg};
use crate::chat::{self, Intent, Name};
use crate::io::ConnId;
use crate::stats::{ThreadStats, bump};
use crate::ws::Message;

/// A complete chat message on its way to a worker.
#[derive(Debug)]
pub struct WorkItem {
    pub conn: ConnId,
    /// Tells this connection from a later one that reuses its key.
    pub serial: u32,
    pub name: Name,
    pub message: Message,
}

/// What a worker made of a [`WorkItem`].
#[derive(Debug)]
pub struct WorkDone {
    pub conn: ConnId,
    pub serial: u32,
    pub intent: Intent,
}

/// The I/O loop's end of the work queue.
#[derive(Debug)]
pub struct WorkQueue {
    queue: Sender<WorkItem>,
    /// Items that found the queue full, oldest first.
    overflow: VecDeque<WorkItem>,
}

impl WorkQueue {
    /// A bounded queue of `depth` items and its worker end.
    pub fn bounded(depth: usize) -> (WorkQueue, Receiver<WorkItem>) {
        let (queue, items) = crossbeam_channel::bounded(depth);
        let queue = WorkQueue {
            queue,
            overflow: VecDeque::new(),
        };
        (queue, items)
    }

    /// Queues `item` for a worker, or holds it if the queue is full. Never blocks.
    pub fn submit(&mut self, item: WorkItem) {
        if !self.overflow.is_empty() {
            self.overflow.push_back(item); // keep arrival order across connections too
            return;
        }
        if let Err(TrySendError::Full(item)) = self.queue.try_send(item) {
            self.overflow.push_back(item);
        }
        // Disconnected: every worker is gone, which happens only at shutdown; the item's
        // connection is being closed anyway.
    }

    /// Moves held items into the queue while it has room.
    pub fn retry(&mut self) {
        while let Some(item) = self.overflow.pop_front() {
            match self.queue.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => {
                    self.overflow.push_front(item);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.overflow.clear();
                    return;
                }
            }
        }
    }

    /// Items waiting for a worker: queued or held.
    pub fn depth(&self) -> usize {
        self.queue.len() + self.overflow.len()
    }
}

/// A worker thread's loop: until the I/O loop drops its end of the queue, interpret each
/// item and hand the result back through `results`.
pub fn run_worker(
    items: Receiver<WorkItem>,
    results: Arc<Inbox>,
    cost: Duration,
    stats: Arc<ThreadStats>,
) {
    stats.bind_thread(crate::io::sys::current_thread_id());
    while let Ok(item) = items.recv() {
        let intent = chat::interpret(&item.name, &item.message);
        burn(cost);
        bump(&stats.counters.work_items, 1);
        results.push(InboxMsg::WorkDone(WorkDone {
            conn: item.conn,
            serial: item.serial,
            intent,
        }));
    }
}

/// Spins for `cost` (the synthetic CPU work of `--work-us`): busy, never asleep, so that it
/// costs CPU the way real message processing would.
pub fn burn(cost: Duration) {
    if cost.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < cost {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::MessageKind;

    fn item(conn: ConnId) -> WorkItem {
        WorkItem {
            conn,
            serial: 0,
            name: Name::parse("ann").unwrap(),
            message: Message {
                kind: MessageKind::Text,
                data: b"hi".to_vec(),
            },
        }
    }

    #[test]
    fn a_full_queue_holds_items_in_order_and_never_blocks() {
        let (mut queue, items) = WorkQueue::bounded(2);
        for conn in 0..5 {
            queue.submit(item(conn));
        }
        assert_eq!(queue.depth(), 5);
        assert_eq!(items.try_recv().unwrap().conn, 0);
        queue.retry();
        let order: Vec<ConnId> = std::iter::from_fn(|| {
            let got = items.try_recv().ok().map(|i| i.conn);
            queue.retry();
            got
        })
        .collect();
        assert_eq!(order, [1, 2, 3, 4]);
        assert_eq!(queue.depth(), 0);
    }
}
