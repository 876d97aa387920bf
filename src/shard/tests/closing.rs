//! The close handshake, its deadlines, and shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::Harness;
use crate::shard::InboxMsg;
use crate::ws::Opcode;

fn close_payload(code: u16) -> Vec<u8> {
    code.to_be_bytes().to_vec()
}

#[test]
fn a_client_close_is_echoed_then_our_fin_and_the_end_after_its_fin() {
    let mut h = Harness::new(&[]);
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    h.send_frame(bo, Opcode::Close, &close_payload(1000));
    h.drive();
    let frames = h.frames(bo);
    assert_eq!(frames.last().and_then(|f| f.close_code()), Some(1000));
    assert!(h.got_fin(bo), "our FIN follows our Close (RFC 6455 7.1.1)");
    assert!(h.is_open(bo), "we keep reading until the client's FIN");
    assert_eq!(h.texts(ann), ["bo just connected", "bo disconnected"]);
    h.net.borrow_mut().wire(bo).client_fin = true;
    h.drive();
    assert!(!h.is_open(bo));
}

#[test]
fn a_client_that_never_finishes_the_close_is_dropped_at_the_close_timeout() {
    let mut h = Harness::new(&["--close-timeout", "2s"]);
    let bo = h.join("r", "bo");
    h.send_frame(bo, Opcode::Close, &close_payload(1000));
    h.drive();
    assert!(h.got_fin(bo));
    h.advance(Duration::from_millis(1999));
    assert!(h.is_open(bo), "not before the close timeout");
    h.advance(Duration::from_millis(1));
    assert!(!h.is_open(bo), "dropped at the close timeout");
}

#[test]
fn a_client_that_sends_no_request_is_closed_at_the_handshake_timeout() {
    let mut h = Harness::new(&["--handshake-timeout", "3s"]);
    let idle = h.connect();
    h.drive();
    assert!(h.is_open(idle));
    h.advance(Duration::from_secs(3));
    assert!(!h.is_open(idle));
    assert_eq!(h.counters().handshake_timeouts.load(Relaxed), 1);
}

#[test]
fn shutdown_sends_1001_to_every_session_and_ends_when_they_have_closed() {
    let mut h = Harness::new(&["--shutdown-timeout", "5s"]);
    let members = [h.join("r", "ann"), h.join("r", "bo"), h.join("s", "cy")];
    let (echo, status) = h.upgrade("/echo");
    assert_eq!(status, 101);
    h.hub.inbox(0).push(InboxMsg::Stop);
    h.drive();
    for client in members.into_iter().chain([echo]) {
        let frames = h.frames(client);
        assert_eq!(frames.last().and_then(|f| f.close_code()), Some(1001));
        assert!(
            !h.shard.state.stopped(),
            "waits for every closing handshake"
        );
        h.send_frame(client, Opcode::Close, &close_payload(1001));
        h.net.borrow_mut().wire(client).client_fin = true;
        h.drive();
    }
    assert!(h.shard.state.stopped());
    // A client arriving now is refused: the listener is closed.
    let late = h.connect();
    h.drive();
    assert!(!h.is_open(late));
}

#[test]
fn shutdown_gives_up_on_unfinished_handshakes_at_the_shutdown_timeout() {
    let mut h = Harness::new(&["--shutdown-timeout", "5s", "--close-timeout", "60s"]);
    let _silent = h.join("r", "ann");
    h.hub.inbox(0).push(InboxMsg::Stop);
    h.drive();
    h.advance(Duration::from_millis(4999));
    assert!(!h.shard.state.stopped());
    h.advance(Duration::from_millis(1));
    assert!(h.shard.state.stopped());
}
