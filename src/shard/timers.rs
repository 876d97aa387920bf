//! Deadlines: each connection's protocol deadlines (handshake, close) and linger, paused
//! listeners, and heartbeats (ping the quiet, close the idle and the message kept open).
//!
//! Owns: the timer heap and when the loop must wake next. Must never: read the clock (the
//! loop's `now` is passed in through `State`) or sleep.

use std::cmp::Reverse;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use super::heartbeat;
use super::{Shard, State};
use crate::io::{ConnId, Reactor};
use crate::peer::PEER_BACKLOG_RECHECK;
use crate::stats::bump;
use crate::ws::CloseCode;

/// Heartbeat checks (a ping, a close, or a re-filing) one loop iteration makes at most;
/// the rest of a clump comes the next iteration, at once. Half the io_uring submission
/// queue: a round of pings to thousands of connections that came in together otherwise
/// put a send per connection in flight at once (about 50 bytes each in the ops slab, kept
/// resident after) and held the loop for the whole round.
const HEARTBEAT_CHECKS_PER_ITERATION: usize = 512;

/// A moment of the loop's clock in whole milliseconds since its [`Epoch`], rounded up (a
/// deadline never fires early): 8 bytes where an `Instant` takes 16, and an
/// `Option<Stamp>` 8 as well. Every connection keeps four, and the timer heap one per
/// deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp(NonZeroU64);

/// The instant a loop's [`Stamp`]s count from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch(Instant);

impl Epoch {
    pub(super) fn new(start: Instant) -> Epoch {
        Epoch(start)
    }

    pub(super) fn stamp(self, t: Instant) -> Stamp {
        let since = t.saturating_duration_since(self.0);
        // In u64: a u128 division of `as_nanos` costs ~100 instructions, and this runs a few
        // times per handshake and per message.
        let ms = since
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(since.subsec_nanos().div_ceil(1_000_000)));
        // Stored plus one, so that zero is free for `Option`'s none.
        Stamp(NonZeroU64::MIN.saturating_add(ms))
    }

    pub(super) fn instant(self, stamp: Stamp) -> Instant {
        self.0 + Duration::from_millis(stamp.0.get() - 1)
    }
}

impl<R: Reactor> Shard<R> {
    pub(super) fn fire_deadlines(&mut self) {
        let (now, epoch) = (self.state.now, self.state.epoch);
        self.state.fire_heartbeats();
        while let Some(&Reverse((at, id))) = self.state.timers.peek() {
            if epoch.instant(at) > now {
                break;
            }
            self.state.timers.pop();
            let Some(conn) = self.state.conns.get_mut(id) else {
                continue;
            };
            if conn.armed != Some(at) {
                continue; // superseded by an earlier deadline
            }
            conn.armed = None;
            if conn
                .linger_deadline
                .is_some_and(|t| epoch.instant(t) <= now)
            {
                self.close(id);
                continue;
            }
            conn.ws.handle_timeout(now);
            self.state.pump(id);
        }
        let resumed = {
            let paused = &mut self.state.paused_listeners;
            let (due, waiting) = paused.drain(..).partition::<Vec<_>, _>(|(t, _)| *t <= now);
            *paused = waiting;
            due
        };
        for (_, listener) in resumed {
            self.io.resume_accepting(listener);
        }
    }
}

impl State {
    /// Puts the connection's next deadline in the heap unless an earlier one is there.
    pub(super) fn arm_timer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let protocol = conn.ws.poll_timeout().map(|t| self.epoch.stamp(t));
        let wanted = match (protocol, conn.linger_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wanted
            && conn.armed.is_none_or(|armed| at < armed)
        {
            conn.armed = Some(at);
            self.timers.push(Reverse((at, id)));
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let timer = self
            .timers
            .peek()
            .map(|Reverse((at, _))| self.epoch.instant(*at));
        let paused = self.paused_listeners.iter().map(|(at, _)| *at).min();
        let heartbeat = self.heartbeats.as_ref().and_then(|w| w.next_deadline());
        // Work left for the next iteration's budget: come back at once.
        let left = self.has_deferred_work().then_some(self.now);
        // Throttled senders: look again soon whether the peers caught up (they do not wake
        // us when they do).
        let throttled = (!self.throttled.is_empty()).then(|| self.now + PEER_BACKLOG_RECHECK);
        [
            timer,
            paused,
            heartbeat,
            self.stop_deadline,
            left,
            throttled,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Files an open connection's next heartbeat check: its ping deadline (or, once pinged,
    /// another interval to look again) and its idle deadline, whichever comes first.
    pub(super) fn file_heartbeat(&mut self, id: ConnId) {
        let (Some(wheel), Some(conn)) = (&mut self.heartbeats, self.conns.get(id)) else {
            return;
        };
        let beat = self.config.heartbeat;
        let last_heard = self.epoch.instant(conn.last_heard);
        let ping = beat.ping_interval.map(|p| {
            if conn.pinged {
                self.now + p
            } else {
                last_heard + p
            }
        });
        let idle = beat.idle_timeout.map(|t| last_heard + t);
        let open_message = beat
            .idle_timeout
            .zip(conn.message_since)
            .map(|(t, since)| self.epoch.instant(since) + t);
        if let Some(at) = [ping, idle, open_message].into_iter().flatten().min() {
            wheel.insert(at, heartbeat::entry(id, conn.serial));
        }
    }

    /// Pings the connections that have been quiet for --ping-interval, closes (1001) those
    /// silent for --idle-timeout and (1008) those that kept a message open that long (its
    /// fragments, pings between them, do not make it complete); files the others' next check.
    pub(super) fn fire_heartbeats(&mut self) {
        let Some(wheel) = &mut self.heartbeats else {
            return;
        };
        let mut due = std::mem::take(&mut self.heartbeats_due);
        wheel.expire(self.now, &mut due, HEARTBEAT_CHECKS_PER_ITERATION);
        let beat = self.config.heartbeat;
        for (key, serial) in due.drain(..) {
            let id = key as ConnId;
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if heartbeat::entry(id, conn.serial) != (key, serial) || !conn.ws.is_open() {
                continue; // replaced, or closing under its own deadline
            }
            let epoch = self.epoch;
            let quiet = self
                .now
                .saturating_duration_since(epoch.instant(conn.last_heard));
            let open_for = conn
                .message_since
                .map(|since| self.now.saturating_duration_since(epoch.instant(since)));
            let counters = &self.stats.counters;
            let close = match beat.idle_timeout {
                Some(t) if open_for.is_some_and(|open| open >= t) => {
                    Some((CloseCode::POLICY_VIOLATION, &counters.message_timeouts))
                }
                Some(t) if quiet >= t => Some((CloseCode::GOING_AWAY, &counters.idle_closes)),
                _ => None,
            };
            if let Some((code, counter)) = close {
                conn.ws.close(code, self.now);
                bump(counter, 1);
                self.pump(id);
                continue;
            }
            if beat.ping_interval.is_some_and(|p| quiet >= p) && !conn.pinged {
                conn.ws.ping(b"wschat");
                conn.pinged = true;
                bump(&self.stats.counters.pings_sent, 1);
                self.pump(id);
            }
            self.file_heartbeat(id);
        }
        self.heartbeats_due = due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_never_earlier_than_its_instant_and_at_most_a_millisecond_later() {
        let start = Instant::now();
        let epoch = Epoch::new(start);
        for nanos in [0, 1, 999_999, 1_000_000, 1_000_001, 86_400_000_000_123] {
            let t = start + Duration::from_nanos(nanos);
            let back = epoch.instant(epoch.stamp(t));
            assert!(back >= t, "{nanos} ns came back earlier");
            assert!(back - t < Duration::from_millis(1), "{nanos} ns");
        }
        assert!(
            epoch.stamp(start + Duration::from_millis(5))
                < epoch.stamp(start + Duration::from_millis(6))
        );
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }
}
