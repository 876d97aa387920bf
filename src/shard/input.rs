//! What arrives: reactor events (bytes, writability, FIN, errors), the inbox's messages from
//! other threads, and shutdown; and `pump`, which drains a connection's protocol state
//! machine in order: its output to the outbox, then one event at a time.
//!
//! Owns: the order in which a connection's output and events are taken. Must never: flush
//! (the iteration's end does) or decide chat meaning (members.rs does).

use super::State;
use super::fanout::FANOUT_PER_ITERATION;
use super::inbox::InboxMsg;
use crate::io::{ConnId, Event};
use crate::stats::bump;
use crate::ws::CloseCode;
use crate::ws::Event as WsEvent;

impl State {
    pub(super) fn on_event(&mut self, event: Event<'_>) {
        match event {
            Event::Accepted { stream, peer, .. } => self.on_accepted(stream, peer),
            Event::AcceptFailed { listener, error } => self.on_accept_failed(listener, &error),
            Event::Received { conn, bytes } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                bump(&self.stats.counters.bytes_in, bytes.len() as u64);
                let (now, epoch) = (self.now, self.epoch);
                match &mut c.tls {
                    None => c.ws.handle_input(bytes),
                    Some(tls) => {
                        let plaintext = &mut self.plaintext;
                        plaintext.clear();
                        match tls.receive(bytes, plaintext) {
                            Ok(received) => {
                                c.ws.handle_input(plaintext);
                                if received.peer_closed {
                                    c.ws.handle_eof();
                                    c.peer_done = true;
                                }
                            }
                            // The alert goes out at the flush; then the connection ends.
                            Err(_) => {
                                bump(&self.stats.counters.tls_errors, 1);
                                c.ws.handle_eof();
                                c.peer_done = true;
                            }
                        }
                    }
                }
                c.note_message_progress(epoch.stamp(now));
                self.pump(conn);
            }
            Event::Writable { conn } => {
                let has_output = self.conns.get(conn).is_some_and(|c| {
                    !c.outbox.is_empty() || c.tls.as_ref().is_some_and(|tls| tls.has_output())
                });
                if has_output {
                    self.mark_dirty(conn);
                }
            }
            Event::Eof { conn } | Event::Failed { conn, .. } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                c.ws.handle_eof();
                c.peer_done = true;
                if matches!(event, Event::Failed { .. }) {
                    c.outbox.clear();
                    if let Some(tls) = &mut c.tls {
                        tls.drop_unstarted();
                    }
                }
                self.pump(conn);
            }
            Event::Wake => self.drain_inbox(),
        }
    }

    pub(super) fn drain_inbox(&mut self) {
        let mut batch = std::mem::take(&mut self.inbox_batch);
        self.hub.inbox(self.index).drain_into(&mut batch);
        for msg in batch.drain(..) {
            match msg {
                InboxMsg::Adopt(conns) => {
                    bump(&self.stats.counters.adopted, conns.len() as u64);
                    self.accepted.extend(conns);
                }
                InboxMsg::Deliver(deliveries) => {
                    bump(&self.stats.counters.peer_batches_in, 1);
                    self.peer_batches.push_back((deliveries, 0));
                    self.deliver_peer_batches();
                }
                InboxMsg::RoomReady(room) => self.room_ready(&room),
                InboxMsg::WorkDone(done) => self.work_done(done),
                InboxMsg::Stop => self.stop(),
            }
        }
        self.inbox_batch = batch;
        if let Some(work) = &mut self.work {
            work.retry();
        }
    }

    /// Shutdown: Close 1001 to every open session; pending handshakes are dropped.
    pub(super) fn stop(&mut self) {
        self.stopping = true;
        self.stop_deadline = Some(self.now + self.config.shutdown_timeout);
        self.paused_listeners.clear();
        let ids: Vec<ConnId> = self.conns.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.ws.close(CloseCode::GOING_AWAY, self.now);
            }
            self.pump(id);
        }
    }

    /// Reacts to what the connection's state machine produced, in order: its output goes to
    /// the outbox, then one event is handled and the deliveries it plans are queued, and so
    /// on. A reply thus lands after the output that preceded its cause (the 101) and before
    /// the output that followed it (our Close).
    pub(super) fn pump(&mut self, id: ConnId) {
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            while let Some(frame) = conn.ws.poll_output() {
                conn.push(frame);
            }
            if conn.awaiting_work || conn.deferred {
                break;
            }
            if self.fanout >= FANOUT_PER_ITERATION && conn.ws.has_event() {
                conn.deferred = true;
                self.deferred.push(id);
                bump(&self.stats.counters.fanout_yields, 1);
                break;
            }
            let Some(event) = conn.ws.poll_event() else {
                if conn.ws.has_held_input() {
                    // Work-queue: the message before it was dealt with; parse up to the next.
                    conn.ws.resume_input();
                    continue;
                }
                break;
            };
            match event {
                WsEvent::Request(request) => self.answer(id, &request),
                WsEvent::HandshakeFailed(_) => bump(&self.stats.counters.handshake_errors, 1),
                WsEvent::HandshakeTimedOut => bump(&self.stats.counters.handshake_timeouts, 1),
                WsEvent::Message(message) => self.on_message(id, message),
                WsEvent::Closed { .. } => {
                    if self.conns.get(id).is_some_and(|conn| conn.ws.flooded()) {
                        bump(&self.stats.counters.flood_closes, 1);
                    }
                    self.leave(id);
                }
            }
            self.fan_out();
        }
        if let Some(conn) = self.conns.get_mut(id) {
            if conn.ws.take_heard() {
                conn.last_heard = self.epoch.stamp(self.now);
                conn.pinged = false;
            }
            bump(
                &self.stats.counters.frames_in,
                conn.ws.take_frames_received(),
            );
        }
        self.mark_dirty(id);
    }
}
