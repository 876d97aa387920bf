//! Fan-out: who receives a message, in what order, and the per-iteration budget.

use super::Harness;
use crate::shard::fanout::FANOUT_PER_ITERATION;

#[test]
fn a_message_reaches_every_other_member_in_the_order_sent() {
    let mut h = Harness::new(&[]);
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    let cy = h.join("r", "cy");
    let elsewhere = h.join("other", "dee");
    h.frames(ann);
    h.frames(bo);
    // Three messages in one read: one iteration plans them all, in order.
    for text in ["1", "2", "3"] {
        h.send_text(ann, text);
    }
    h.drive();
    let expected = ["ann says: 1", "ann says: 2", "ann says: 3"];
    assert_eq!(h.texts(bo), expected);
    assert_eq!(h.texts(cy), expected);
    assert!(
        h.texts(ann).is_empty(),
        "the sender does not get its own message"
    );
    assert!(h.texts(elsewhere).is_empty());
}

#[test]
fn joins_and_leaves_are_told_to_the_others() {
    let mut h = Harness::new(&[]);
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    assert_eq!(h.texts(ann), ["bo just connected"]);
    h.net.borrow_mut().wire(bo).client_fin = true;
    h.drive();
    assert_eq!(h.texts(ann), ["bo disconnected"]);
    assert_eq!(
        h.counters()
            .members
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// One read of many messages in a big room plans more deliveries than one iteration may
/// queue: the rest waits (the sender is not read meanwhile) and everything still arrives,
/// in order, to everyone.
#[test]
fn past_the_fanout_budget_the_rest_waits_for_the_next_iteration_and_nothing_is_lost() {
    fan_out_past_the_budget(false);
}

/// The same with sends that complete later, as io_uring's do: a slice is planned only once
/// the last one's sends were settled, so no outbox ever holds more than one slice. (When
/// the rest was planned before the flush, each outbox held the slice in flight beside the
/// new one, and a loop's memory in the tiny-messages attack was twice epoll's.)
#[test]
fn with_completion_based_sends_an_outbox_holds_one_slice_at_a_time() {
    fan_out_past_the_budget(true);
}

fn fan_out_past_the_budget(completions: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    const MEMBERS: usize = 600;
    const MESSAGES: usize = 500; // 599 x 500 receiver deliveries > FANOUT_PER_ITERATION
    const SLICE: usize = FANOUT_PER_ITERATION.div_ceil(MEMBERS - 1); // messages
    const { assert!((MEMBERS - 1) * MESSAGES > FANOUT_PER_ITERATION) };
    let mut h = Harness::new(&[]);
    h.net.borrow_mut().completions = completions;
    let members: Vec<_> = (0..MEMBERS)
        .map(|i| {
            let client = h.connect();
            let request = format!(
                "GET /chat/big?name=m{i} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            h.send(client, request.as_bytes());
            client
        })
        .collect();
    h.drive();
    for &m in &members {
        assert_eq!(h.take_status(m), Some(101));
        h.frames(m);
    }
    let sender = members[0];
    for i in 0..MESSAGES {
        h.send_text(sender, &i.to_string());
    }
    h.net.borrow_mut().outbox_frames_max = 0;
    h.drive();
    assert!(
        h.counters().fanout_yields.load(Relaxed) >= 1,
        "the budget was reached"
    );
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m0 says: {i}")).collect();
    for &m in &members[1..] {
        assert_eq!(h.texts(m), expected);
    }
    let most = h.net.borrow().outbox_frames_max;
    assert!(
        most <= SLICE,
        "an outbox held {most} frames at a flush; a slice is {SLICE}"
    );
}
