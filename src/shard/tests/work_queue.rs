//! Work-queue gating: one message per member at the workers, its socket not read meanwhile,
//! and results applied in the order sent. The test plays the worker.

use crossbeam_channel::Receiver;

use super::Harness;
use crate::chat;
use crate::shard::{InboxMsg, WorkDone, WorkItem, WorkQueue};

fn work_queue_harness() -> (Harness, Receiver<WorkItem>) {
    let mut h = Harness::new(&["--pattern", "work-queue"]);
    let (queue, items) = WorkQueue::bounded(16);
    h.shard.offload(queue);
    (h, items)
}

/// Interprets every queued item as a worker would and hands the results back.
fn work(h: &Harness, items: &Receiver<WorkItem>) -> usize {
    let mut done = 0;
    while let Ok(item) = items.try_recv() {
        let intent = chat::interpret(&item.name, &item.message);
        h.hub.inbox(0).push(InboxMsg::WorkDone(WorkDone {
            conn: item.conn,
            serial: item.serial,
            intent,
        }));
        done += 1;
    }
    done
}

#[test]
fn one_message_per_member_is_with_the_workers_and_its_socket_waits() {
    let (mut h, items) = work_queue_harness();
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    h.frames(ann);
    for text in ["1", "2", "3"] {
        h.send_text(ann, text);
    }
    h.drive();
    assert_eq!(items.len(), 1, "one message of ann's at the workers");
    assert!(h.net.borrow_mut().wire(ann).reading_paused);
    assert!(h.texts(bo).is_empty());
    let mut rounds = 0;
    while work(&h, &items) > 0 {
        h.drive();
        rounds += 1;
        assert!(items.len() <= 1);
    }
    assert_eq!(rounds, 3);
    assert!(!h.net.borrow_mut().wire(ann).reading_paused);
    assert_eq!(h.texts(bo), ["ann says: 1", "ann says: 2", "ann says: 3"]);
}

/// A message read before the client reset is still delivered (as in every pattern): the
/// connection is ended only after its result, and its leave follows its message.
#[test]
fn a_member_that_resets_with_a_message_at_the_workers_leaves_after_its_result() {
    let (mut h, items) = work_queue_harness();
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    h.send_text(ann, "last words");
    h.drive();
    h.net.borrow_mut().wire(ann).reset = true;
    h.drive();
    assert!(
        h.is_open(ann),
        "held until its message is back from the workers"
    );
    assert!(h.texts(bo).is_empty());
    work(&h, &items);
    h.drive();
    assert_eq!(h.texts(bo), ["ann says: last words", "ann disconnected"]);
    assert!(!h.is_open(ann));
}
