//! Accepting: `--max-conns`, and the pause after running out of descriptors.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::Harness;

#[test]
fn a_connection_over_max_conns_gets_503_and_the_others_are_served() {
    let mut h = Harness::new(&["--max-conns", "2"]);
    let ann = h.join("r", "ann");
    let _bo = h.join("r", "bo");
    let (_over, status) = h.upgrade("/chat/r?name=cy");
    assert_eq!(status, 503);
    assert_eq!(h.counters().rejected_over_capacity.load(Relaxed), 1);
    h.send_text(ann, "still here");
    h.drive();
    assert!(h.is_open(ann));
}

#[test]
fn emfile_pauses_accepting_for_a_while_then_the_queued_connection_is_served() {
    let mut h = Harness::new(&[]);
    h.net.borrow_mut().accept_failures = 1;
    let client = h.connect();
    h.drive();
    assert_eq!(h.counters().accept_pauses.load(Relaxed), 1);
    assert!(!h.is_open(client), "not accepted while paused");
    h.advance(Duration::from_millis(99));
    assert!(!h.is_open(client));
    h.advance(Duration::from_millis(1));
    assert!(h.is_open(client), "accepted when the pause is over");
}
