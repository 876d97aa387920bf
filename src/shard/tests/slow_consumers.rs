//! `--max-outbound`: held after the flush, against what the socket did not take.

use std::sync::atomic::Ordering::Relaxed;

use super::Harness;
use crate::ws::Opcode;

#[test]
fn a_member_whose_unsent_output_passes_max_outbound_is_closed_with_1008() {
    let mut h = Harness::new(&["--max-outbound", "1000"]);
    let ann = h.join("r", "ann");
    let slow = h.join("r", "slow");
    let cy = h.join("r", "cy");
    h.frames(ann);
    h.net.borrow_mut().wire(slow).window = Some(0); // its socket takes nothing
    let line = "x".repeat(100);
    for _ in 0..20 {
        h.send_text(ann, &line);
    }
    h.drive();
    assert_eq!(h.counters().slow_consumer_kicks.load(Relaxed), 1);
    assert_eq!(
        h.texts(cy).len(),
        20 + 1,
        "the others get every line, and the leave"
    );
    // The kicked member gets its Close once its socket takes bytes again (the frames not
    // yet started were dropped); our FIN follows its answering Close.
    h.net.borrow_mut().open_window(slow, None);
    h.drive();
    let frames = h.frames(slow);
    assert!(frames.len() < 20);
    assert_eq!(frames.last().and_then(|f| f.close_code()), Some(1008));
    h.send_frame(slow, Opcode::Close, &1008u16.to_be_bytes());
    h.drive();
    assert!(h.got_fin(slow));
}

#[test]
fn a_burst_the_socket_takes_is_not_held_against_the_reader() {
    let mut h = Harness::new(&["--max-outbound", "1000"]);
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    h.frames(ann);
    let line = "x".repeat(100);
    for _ in 0..20 {
        h.send_text(ann, &line); // 2,000+ bytes for bo in one iteration
    }
    h.drive();
    assert_eq!(h.counters().slow_consumer_kicks.load(Relaxed), 0);
    assert_eq!(h.texts(bo).len(), 20);
}

#[test]
fn a_short_write_resumes_on_the_writable_edge_in_order() {
    let mut h = Harness::new(&[]);
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    h.frames(ann);
    h.net.borrow_mut().wire(bo).window = Some(7); // cuts the first frame short
    for text in ["one", "two", "three"] {
        h.send_text(ann, text);
    }
    h.drive();
    assert!(h.texts(bo).is_empty(), "no whole frame yet");
    for _ in 0..10 {
        h.net.borrow_mut().open_window(bo, Some(5));
        h.drive();
    }
    h.net.borrow_mut().open_window(bo, None);
    h.drive();
    assert_eq!(
        h.texts(bo),
        ["ann says: one", "ann says: two", "ann says: three"]
    );
}
