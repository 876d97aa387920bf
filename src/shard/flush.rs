//! The end of each iteration: every dirty connection is flushed once, held to
//! `--max-outbound`, and ended when its session is over (our FIN after the Close, TLS
//! close_notify before it, the close timeout as the bound).
//!
//! Owns: the flush and end-of-connection policy, and the one place `--max-outbound` is
//! enforced. Must never: plan deliveries (a departure's notices are planned by members.rs
//! through `leave`) or read input.

use super::{Shard, State};
use crate::io::{ConnId, Reactor};
use crate::stats::{bump, set};
use crate::ws::{CloseCode, Finish};

impl<R: Reactor> Shard<R> {
    /// Flushes every dirty connection once and ends the finished ones. Ending one may queue
    /// notices for others, so this repeats until nothing is dirty.
    pub(super) fn settle(&mut self) {
        while let Some(id) = self.state.dirty.pop_front() {
            let now = self.state.now;
            let close_timeout = self.state.config.limits.close_timeout;
            let Some(conn) = self.state.conns.get_mut(id) else {
                continue;
            };
            conn.dirty = false;
            let pause = conn.awaiting_work || conn.deferred || conn.throttled;
            if pause != conn.reading_paused {
                conn.reading_paused = pause;
                if conn.reading_paused {
                    self.io.pause_reading(id);
                } else {
                    self.io.resume_reading(id);
                }
            }
            // Over TLS, rounds of sealing and sending go on while the socket takes all: rustls
            // holds 64 KiB of records at a time, and an emptied outbox means no write edge
            // will come to resume. Each round seals or sends something, or it stops.
            loop {
                let queued_before = conn.queued_bytes();
                // Over TLS, frames are counted when sealed (a buffer of records holds many).
                let sealed = conn.tls.as_mut().map(|tls| tls.seal_into(&mut conn.outbox));
                let tls_alert = conn.tls.as_ref().is_some_and(|tls| tls.failed);
                let sendable =
                    !conn.write_shut && (conn.ws.finish() != Some(Finish::Now) || tls_alert);
                bump(
                    &self.state.stats.counters.frames_out,
                    sealed.unwrap_or(0) as u64,
                );
                if sendable && !conn.outbox.is_empty() {
                    match self.io.send(id, &mut conn.outbox) {
                        Ok(sent) => {
                            bump(&self.state.stats.counters.bytes_out, sent.bytes as u64);
                            if sealed.is_none() {
                                bump(&self.state.stats.counters.frames_out, sent.frames as u64);
                            }
                        }
                        Err(_) => {
                            // The peer reset the connection: nothing more can be delivered.
                            conn.ws.handle_eof();
                            conn.outbox.clear();
                            conn.peer_done = true;
                        }
                    }
                }
                let more = conn.outbox.is_empty()
                    && conn
                        .tls
                        .as_ref()
                        .is_some_and(|tls| tls.has_output() && !tls.failed);
                if !more || conn.queued_bytes() >= queued_before {
                    break;
                }
            }
            // The one place --max-outbound is enforced, on every byte queued for the peer
            // (deliveries, pongs, replies, TLS records), and only after the socket took what
            // it would: a burst that a reading client absorbs is never held against it.
            if conn.ws.is_open() && conn.backlog() > self.state.config.max_outbound {
                self.state.kick_slow_consumer(id); // dirty again: its Close is flushed below
                continue;
            }
            let end_now = match conn.ws.finish() {
                // Its message is with a worker, or its events wait for the next iteration's
                // fan-out budget: the events behind (at least its Closed) are taken, and the
                // connection ended, after that.
                _ if conn.awaiting_work || conn.deferred => false,
                None => false,
                Some(Finish::Now) => true,
                Some(Finish::AfterFlush) => {
                    let deadline = *conn
                        .linger_deadline
                        .get_or_insert(self.state.epoch.stamp(now + close_timeout));
                    let flushed = conn.outbox.is_empty()
                        && conn.tls.as_ref().is_none_or(|tls| !tls.has_output());
                    if flushed && conn.peer_done {
                        true
                    } else if let Some(tls) =
                        conn.tls.as_mut().filter(|tls| flushed && !tls.closed())
                    {
                        // Over TLS, close_notify goes before our FIN: send it first.
                        tls.close();
                        self.state.mark_dirty(id);
                        false
                    } else {
                        if flushed && !conn.write_shut {
                            // Our FIN goes first (RFC 6455 7.1.1); we keep reading until the
                            // peer's FIN so that unread input cannot turn our close into a
                            // reset that destroys the Close frame in flight.
                            self.io.shutdown_write(id);
                            conn.write_shut = true;
                        }
                        self.state.epoch.instant(deadline) <= now
                    }
                }
            };
            if end_now {
                self.close(id);
            } else {
                self.state.arm_timer(id);
            }
        }
    }

    /// Drops the transport and forgets the connection.
    pub(super) fn close(&mut self, id: ConnId) {
        let state = &mut self.state;
        if state.conns.try_remove(id).is_none() {
            return;
        }
        self.io.close(id);
        state.hub.release_conn();
        // Normally the ws Closed event already removed the member; this covers a transport
        // that ended before that event could be produced.
        state.leave(id);
        state.fan_out();
        set(&state.stats.counters.active, state.conns.len() as u64);
    }
}

impl State {
    /// Disconnects a receiver whose unsent output is over --max-outbound after a flush:
    /// frames not yet started are dropped, the one in progress is finished, and Close 1008
    /// follows it; the close timeout bounds how long we wait. Its departure is planned here.
    pub(super) fn kick_slow_consumer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.drop_unstarted();
        conn.ws.close(CloseCode::POLICY_VIOLATION, self.now);
        bump(&self.stats.counters.slow_consumer_kicks, 1);
        self.pump(id);
    }
}
