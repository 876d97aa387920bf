//! Deadlines: each connection's protocol deadlines (handshake, close) and linger, paused
//! listeners, and heartbeats (ping the quiet, close the idle and the message kept open).
//!
//! Owns: the timer heap and when the loop must wake next. Must never: read the clock (the
//! loop's `now` is passed in through `State`) or sleep.

use std::cmp::Reverse;
use std::time::Instant;

use super::fanout::PEER_BACKLOG_RECHECK;
use super::{Shard, State};
use crate::io::{ConnId, Reactor};
use crate::stats::bump;
use crate::ws::CloseCode;

impl<R: Reactor> Shard<R> {
    pub(super) fn fire_deadlines(&mut self) {
        let now = self.state.now;
        self.state.fire_heartbeats();
        while let Some(&Reverse((at, id))) = self.state.timers.peek() {
            if at > now {
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
            if conn.linger_deadline.is_some_and(|t| t <= now) {
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
        let wanted = match (conn.ws.poll_timeout(), conn.linger_deadline) {
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
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
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
        let ping = beat.ping_interval.map(|p| {
            if conn.pinged {
                self.now + p
            } else {
                conn.last_heard + p
            }
        });
        let idle = beat.idle_timeout.map(|t| conn.last_heard + t);
        let open_message = beat
            .idle_timeout
            .zip(conn.message_since)
            .map(|(t, since)| since + t);
        if let Some(at) = [ping, idle, open_message].into_iter().flatten().min() {
            wheel.insert(at, (id, conn.serial));
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
        wheel.expire(self.now, &mut due);
        let beat = self.config.heartbeat;
        for (id, serial) in due.drain(..) {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if conn.serial != serial || !conn.ws.is_open() {
                continue; // replaced, or closing under its own deadline
            }
            let quiet = self.now.saturating_duration_since(conn.last_heard);
            let open_for = conn
                .message_since
                .map(|since| self.now.saturating_duration_since(since));
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
