//! Heartbeats: the quiet are pinged, the silent closed (1001), a message kept open closed
//! (1008). Deadlines fire up to one wheel tick (a 32nd of the interval) late.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::Harness;
use crate::ws::Opcode;
use crate::ws::frame::encode_frame;

const TICK: Duration = Duration::from_millis(1000 / 32 + 1); // of a 1 s interval

#[test]
fn a_quiet_member_is_pinged_and_a_pong_keeps_it() {
    let mut h = Harness::new(&["--ping-interval", "1s", "--idle-timeout", "3s"]);
    let ann = h.join("r", "ann");
    h.advance(Duration::from_millis(999));
    assert!(h.frames(ann).is_empty(), "no ping before the interval");
    h.advance(TICK);
    let ping = h.frames(ann);
    assert_eq!(ping.len(), 1);
    assert_eq!(ping[0].opcode, Opcode::Ping);
    assert_eq!(h.counters().pings_sent.load(Relaxed), 1);
    // Each ping answered: never idle, pinged again an interval after each pong.
    let mut payload = ping[0].payload.clone();
    for _ in 0..5 {
        h.send_frame(ann, Opcode::Pong, &payload);
        h.drive();
        h.advance(Duration::from_secs(1) + TICK);
        let pings = h.frames(ann);
        assert_eq!(pings.len(), 1);
        payload = pings[0].payload.clone();
    }
    assert!(h.is_open(ann));
    assert_eq!(h.counters().idle_closes.load(Relaxed), 0);
}

#[test]
fn a_member_silent_for_the_idle_timeout_is_closed_with_1001() {
    let mut h = Harness::new(&["--ping-interval", "1s", "--idle-timeout", "3s"]);
    let ann = h.join("r", "ann");
    h.advance(Duration::from_millis(2900));
    assert!(h.frames(ann).iter().all(|f| f.opcode == Opcode::Ping));
    h.advance(Duration::from_millis(100) + TICK);
    let frames = h.frames(ann);
    assert_eq!(frames.last().and_then(|f| f.close_code()), Some(1001));
    assert_eq!(h.counters().idle_closes.load(Relaxed), 1);
}

#[test]
fn a_message_kept_open_past_the_idle_timeout_is_closed_with_1008_though_pings_flow() {
    let mut h = Harness::new(&["--ping-interval", "1s", "--idle-timeout", "3s"]);
    let ann = h.join("r", "ann");
    // The first fragment of a message that never ends, then pings (control frames may
    // come between fragments) to look alive.
    let mut fragment = encode_frame(Opcode::Text, &[b"par"], Some([1, 2, 3, 4]));
    fragment[0] &= 0x7f; // FIN off
    h.send(ann, &fragment);
    h.drive();
    for _ in 0..3 {
        h.advance(Duration::from_secs(1));
        h.send_frame(ann, Opcode::Ping, b"alive");
        h.drive();
    }
    h.advance(TICK);
    let frames = h.frames(ann);
    assert_eq!(frames.last().and_then(|f| f.close_code()), Some(1008));
    assert_eq!(h.counters().message_timeouts.load(Relaxed), 1);
}
