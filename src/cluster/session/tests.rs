//! The link's life with explicit time: connecting, heartbeats, silence, failure, backoff,
//! reconnecting. (What each part does while the link is up is tested beside it.)

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::harness::{Harness, bulk, room, subscribed};
use super::*;
use crate::chat::nodes;
use crate::peer::Peer as _;
use crate::stats::Section as _;

#[test]
fn the_first_connect_is_due_at_once_and_sets_the_link_up() {
    let mut h = Harness::down_on("redis://h:6380/2");
    let t0 = h.t0;
    assert_eq!(h.poll_timeout(), t0);
    assert!(h.poll_connect(t0));
    assert!(
        h.written(Conn::Cmd).is_empty(),
        "nothing is written while down"
    );

    h.handle_connected(t0);
    assert!(!h.poll_connect(t0));
    let epoch = wire::epoch_value(h.epoch);
    assert_eq!(
        h.written(Conn::Cmd),
        [
            vec!["SELECT", "2"],
            vec!["CLIENT", "SETNAME", "wschat-0000000000000001-cmd"],
            vec!["SET", "wschat:node:0000000000000001", &epoch, "PX", "6000"],
        ]
    );
    assert_eq!(
        h.written(Conn::Sub),
        [
            vec!["CLIENT", "SETNAME", "wschat-0000000000000001-sub"],
            vec!["PING"],
        ]
    );
    assert_eq!(h.reports().len(), 1, "one line says the node is connected");
    assert_eq!(h.stats.counters.cluster_link_up.load(Relaxed), 1);
    assert_eq!(h.poll_timeout(), h.at(2000), "the next heartbeat");
}

#[test]
fn heartbeats_are_due_every_two_seconds_and_silence_fails_the_link() {
    let mut h = Harness::up();
    assert_eq!(h.poll_timeout(), h.at(2000));
    let early = h.at(1999);
    h.handle_timeout(early);
    assert!(h.written(Conn::Cmd).is_empty() && h.written(Conn::Sub).is_empty());

    let beat = h.at(2000);
    h.handle_timeout(beat);
    assert_eq!(h.written(Conn::Cmd)[0][0], "SET");
    assert_eq!(h.written(Conn::Sub), [["PING"]]);
    assert_eq!(h.poll_timeout(), h.at(4000));
    h.handle_input(Conn::Cmd, b"+OK\r\n", beat);
    h.handle_input(Conn::Sub, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", beat);

    // Redis stops answering: the link holds while the silence is within the limit...
    for ms in [4000, 6000, 8000] {
        let now = h.at(ms);
        h.handle_timeout(now);
        assert!(!h.poll_close(now), "at {ms} ms");
    }
    // ... and fails at the first heartbeat past it.
    let now = h.at(10_000);
    h.handle_timeout(now);
    assert!(h.poll_close(now));
    assert!(!h.poll_connect(now));
    assert_eq!(h.stats.counters.cluster_link_up.load(Relaxed), 0);
    assert_eq!(h.reports().len(), 1, "the failure is reported once");
    // Nothing is written on a link that is down, and the unsent output is gone.
    assert!(h.written(Conn::Cmd).is_empty() && h.written(Conn::Sub).is_empty());
}

#[test]
fn a_command_connection_owing_replies_for_too_long_fails_the_link() {
    let mut h = Harness::up();
    // `Sub` keeps answering its PINGs; `Cmd` answers nothing from 2 s on.
    for ms in (2000..=8000).step_by(2000) {
        let now = h.at(ms);
        h.handle_timeout(now);
        h.handle_input(Conn::Sub, b"+PONG\r\n", now);
        assert!(!h.poll_close(now), "at {ms} ms");
    }
    let now = h.at(10_000);
    h.handle_timeout(now);
    assert!(h.poll_close(now));
}

/// The delay between `now` and the next attempt, checked to be `backoff` plus at most a
/// quarter of it (the jitter).
fn next_delay(h: &Harness, now: Instant, backoff: Duration) -> Duration {
    let delay = h.poll_timeout() - now;
    assert!(
        delay >= backoff && delay <= backoff + backoff / 4,
        "{delay:?} for a backoff of {backoff:?}"
    );
    delay
}

#[test]
fn a_lost_link_is_retried_with_a_backoff_that_doubles_up_to_its_cap() {
    let mut h = Harness::up();
    h.handle_failure("Redis closed the connection".into());
    h.handle_failure("a second reason".into());
    let mut now = h.at(500);
    assert!(h.poll_close(now));
    assert_eq!(
        h.reports(),
        ["Redis closed the connection; retrying with backoff"]
    );
    assert!(!h.poll_close(now), "torn down once");

    let mut backoff = BACKOFF_MIN;
    for _ in 0..8 {
        let delay = next_delay(&h, now, backoff);
        assert!(!h.poll_connect(now + delay - Duration::from_millis(1)));
        now += delay;
        assert!(h.poll_connect(now));
        h.handle_connect_failed("connection refused", now);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    assert_eq!(backoff, BACKOFF_MAX);
    next_delay(&h, now, BACKOFF_MAX);
    assert!(
        h.reports().is_empty(),
        "one line per outage, not per attempt"
    );

    // Connected again: one line, the reconnect counted, and the backoff starts over.
    now = h.poll_timeout();
    h.handle_connected(now);
    assert_eq!(h.reports().len(), 1);
    assert_eq!(h.stats.counters.cluster_reconnects.load(Relaxed), 1);
    h.handle_failure("reset".into());
    assert!(h.poll_close(now));
    next_delay(&h, now, BACKOFF_MIN);
}

#[test]
fn a_connection_that_cannot_be_opened_is_retried_without_ever_coming_up() {
    let mut h = Harness::down();
    let t0 = h.t0;
    h.handle_connect_failed("connecting to redis://h:6379/0: refused", t0);
    assert_eq!(h.reports().len(), 1);
    next_delay(&h, t0, BACKOFF_MIN);
    // A failure reported while down (a stale event) changes nothing.
    h.handle_failure("late".into());
    assert!(!h.poll_close(t0));
    assert_eq!(h.stats.counters.cluster_link_up.load(Relaxed), 0);
}

#[test]
fn the_epoch_is_new_at_every_connect() {
    let mut h = Harness::up();
    let first = h.epoch;
    let now = h.at(1);
    h.handle_failure("x".into());
    assert!(h.poll_close(now));
    let now = h.poll_timeout();
    h.handle_connected(now);
    assert_ne!(h.epoch, first);
}

#[test]
fn a_lost_link_is_a_gap_in_every_room_and_its_return_is_told_after_resubscribing() {
    let mut h = Harness::up();
    let (r, s) = (room("r"), room("s"));
    let t = h.at(10);
    assert!(
        !h.link.join(&r),
        "the first joiner waits for the subscription"
    );
    h.requests(t);
    h.handle_input(Conn::Sub, subscribed(&r, 1).as_bytes(), t);
    assert_eq!(h.ready(), std::slice::from_ref(&r));
    h.written(Conn::Sub);

    // A publish written but not confirmed when the link drops: counted as not propagated.
    h.session
        .link
        .publish(0, &Arc::from(vec![super::harness::room_delivery(&r)]));
    h.requests(t);
    h.handle_failure("reset".into());
    assert!(h.poll_close(t));
    assert_eq!(h.stats.counters.cluster_not_propagated.load(Relaxed), 1);
    assert_eq!(h.stats.counters.cluster_gaps.load(Relaxed), 1);
    assert_eq!(h.link.report()["gaps_by_room"]["r"], 1);
    assert_eq!(
        h.room_payloads(),
        [super::harness::payload(&nodes::link_lost())]
    );

    // While down a join completes at once (local only), and a publish is counted.
    assert!(h.link.join(&s));
    h.session
        .link
        .publish(0, &Arc::from(vec![super::harness::room_delivery(&s)]));
    h.requests(t);
    assert_eq!(h.stats.counters.cluster_not_propagated.load(Relaxed), 2);

    // Back: every room with members is subscribed again, and told only once Redis
    // confirmed it, so that no member answers into a channel another node has not joined.
    let now = h.poll_timeout();
    h.handle_connected(now);
    let sub = h.written(Conn::Sub);
    let mut channels = sub.iter().find(|c| c[0] == "SUBSCRIBE").unwrap()[1..].to_vec();
    channels.sort();
    assert_eq!(channels, [wire::channel(&r), wire::channel(&s)]);
    assert!(h.room_payloads().is_empty());
    h.handle_input(Conn::Sub, subscribed(&r, 1).as_bytes(), now);
    h.handle_input(Conn::Sub, subscribed(&s, 2).as_bytes(), now);
    assert_eq!(
        h.room_payloads(),
        vec![super::harness::payload(&nodes::link_restored()); 2]
    );
}

#[test]
fn input_after_a_failure_in_the_same_iteration_is_not_read() {
    let mut h = Harness::up();
    let (r, t) = (room("r"), h.at(1));
    h.subscribed.insert(r.clone());
    h.handle_failure("Redis closed the connection".into());
    let push = super::harness::message(&r, &super::harness::event(7, 1, b"x"));
    h.handle_input(Conn::Sub, &push, t);
    h.handle_input(Conn::Cmd, format!("*1\r\n{}", bulk("?")).as_bytes(), t);
    assert!(h.room_payloads().is_empty());
    assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 0);
}

/// Another node's event `seq` arrives on `Sub` at `now` and is handed to the shards.
fn remote_event(h: &mut Harness, r: &RoomName, seq: u64, now: Instant) {
    let push = super::harness::message(r, &super::harness::event(7, seq, b"x"));
    h.handle_input(Conn::Sub, &push, now);
    h.poll_deliveries(now);
}

/// What the shards report holding, delivered or not.
fn set_backlog(h: &Harness, backlog: (usize, usize)) {
    *h.shard.backlog.lock().unwrap() = backlog;
}

fn throttles(h: &Harness) -> u64 {
    h.stats.counters.cluster_backpressure.load(Relaxed)
}

#[test]
fn shards_over_their_backlog_limit_stop_the_reading_of_sub_until_all_are_down_to_half() {
    use crate::peer::{PEER_BACKLOG_LIMIT, PEER_BACKLOG_RECHECK};
    let (max, max_bytes) = PEER_BACKLOG_LIMIT;
    let r = room("r");
    let mut h = Harness::in_room(&r);
    let t = h.at(10);
    assert!(h.poll_read(Conn::Sub) && h.poll_read(Conn::Cmd));

    // At the limit is within it; and with nothing handed over, the backlog is not looked at.
    set_backlog(&h, (max, max_bytes));
    remote_event(&mut h, &r, 1, t);
    assert!(h.poll_read(Conn::Sub));
    set_backlog(&h, (max + 1, 0));
    h.poll_deliveries(t);
    assert!(h.poll_read(Conn::Sub), "no batch, no look");

    // A batch leaves a shard over the limit: `Sub` is not read, `Cmd` still is, and the
    // session asks to be woken soon to look again.
    remote_event(&mut h, &r, 2, t);
    assert!(!h.poll_read(Conn::Sub));
    assert!(h.poll_read(Conn::Cmd), "publishes and the heartbeat go on");
    assert_eq!(throttles(&h), 1);
    assert_eq!(h.poll_timeout(), t + PEER_BACKLOG_RECHECK);
    assert_eq!(h.room_payloads().len(), 2, "what was read is handed over");

    // Batches already read when it stopped are handed over, not counted again.
    remote_event(&mut h, &r, 3, t);
    assert_eq!(throttles(&h), 1);

    // Below the limit but above half, in either count: still not read (hysteresis).
    for backlog in [(max / 2 + 1, 0), (0, max_bytes / 2 + 1), (max, max_bytes)] {
        set_backlog(&h, backlog);
        let now = h.poll_timeout();
        h.handle_timeout(now);
        assert!(!h.poll_read(Conn::Sub), "{backlog:?}");
        assert_eq!(h.poll_timeout(), now + PEER_BACKLOG_RECHECK);
    }

    // Exactly half: read again, but only when the look is due.
    set_backlog(&h, (max / 2, max_bytes / 2));
    let due = h.poll_timeout();
    h.handle_timeout(due - Duration::from_micros(1));
    assert!(!h.poll_read(Conn::Sub));
    h.handle_timeout(due);
    assert!(h.poll_read(Conn::Sub));
    assert_eq!(h.poll_timeout(), h.at(2000), "back to the heartbeat");

    // Too many bytes alone stop it too, and each stop is counted.
    set_backlog(&h, (0, max_bytes + 1));
    remote_event(&mut h, &r, 4, due);
    assert!(!h.poll_read(Conn::Sub));
    assert_eq!(throttles(&h), 2);
}

/// While `Sub` is not read its PONGs are not either: a node whose shards stay behind for
/// SILENCE_LIMIT loses its link and tells its rooms of the gap (see `Session::heartbeat`).
/// The throttle is the shards' state and outlives the connection: the new `Sub` is written
/// (its CLIENT SETNAME and SUBSCRIBE) but read only once the shards caught up.
#[test]
fn a_throttled_sub_fails_the_link_after_the_silence_limit_and_stays_throttled_across_a_reconnect() {
    use crate::peer::{PEER_BACKLOG_LIMIT, PEER_BACKLOG_RECHECK};
    let r = room("r");
    let mut h = Harness::in_room(&r);
    let t = h.at(10);
    set_backlog(&h, (PEER_BACKLOG_LIMIT.0 + 1, 0));
    remote_event(&mut h, &r, 1, t);
    assert!(!h.poll_read(Conn::Sub));
    h.room_payloads();

    // `Cmd` keeps answering; the PINGs on `Sub` are written but their replies are not read.
    for ms in [2000, 4000, 6000] {
        let now = h.at(ms);
        h.handle_timeout(now);
        assert_eq!(h.written(Conn::Sub), [["PING"]]);
        h.handle_input(Conn::Cmd, b"+OK\r\n", now);
        assert!(!h.poll_close(now), "at {ms} ms");
        assert!(!h.poll_read(Conn::Sub));
    }
    let now = h.at(8000);
    h.handle_timeout(now);
    assert!(h.poll_close(now));
    assert_eq!(h.stats.counters.cluster_gaps.load(Relaxed), 1);
    h.poll_deliveries(now);
    assert_eq!(
        h.room_payloads(),
        [super::harness::payload(&nodes::link_lost())]
    );
    assert!(!h.poll_read(Conn::Sub), "still the shards' backlog");
    assert_eq!(throttles(&h), 1, "the notice is not a second stop");
    assert_eq!(
        h.poll_timeout(),
        now + PEER_BACKLOG_RECHECK,
        "the look is due before the retry"
    );

    // Reconnected while the shards are still behind: `Sub` is written, not read.
    h.handle_timeout(now + PEER_BACKLOG_RECHECK);
    let again = h.at(9000);
    assert!(h.poll_connect(again));
    h.handle_connected(again);
    assert!(!h.poll_read(Conn::Sub));
    let sub = h.written(Conn::Sub);
    assert!(sub.iter().any(|c| c[0] == "SUBSCRIBE"), "{sub:?}");

    // Caught up: read again, and the resubscription completes as usual.
    set_backlog(&h, (0, 0));
    let due = h.poll_timeout();
    assert!(due <= again + PEER_BACKLOG_RECHECK);
    h.handle_timeout(due);
    assert!(h.poll_read(Conn::Sub));
    h.handle_input(Conn::Sub, b"+OK\r\n+PONG\r\n", due);
    h.handle_input(Conn::Sub, subscribed(&r, 1).as_bytes(), due);
    assert_eq!(
        h.room_payloads(),
        [super::harness::payload(&nodes::link_restored())]
    );
    assert!(!h.poll_close(due));
}
