//! The traffic of a loader's connections: reading and classifying what arrives, queuing
//! what is sent (on the open-loop timetable or the closed-loop window), writing it out, and
//! closing.
//!
//! Owns: delivery accounting (every arrival is classified exactly once: a delivery, a
//! duplicate, malformed, foreign, a notice or other text; a loader message counts only as
//! the type the run sends, text or binary, so a server that changed a message's type is
//! named as malformed), latency recording, the per-event read budget, and the replies a
//! client owes (pong, close). Must never: stamp a message with anything but its due time
//! (open loop) or its send time (closed loop), count a duplicate as a delivery, or panic on
//! what the server sends.

use std::cmp::Reverse;
use std::io;
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use wschat::ws::frame::Opcode;

use super::loader::{Loader, State};
use super::{Drive, PHASE_RUN, PHASE_STOP, Target};
use crate::clock::now_ns;
use crate::histo::{new_histogram, record_ns};
use crate::payload::{self, Messages, Stamp, TextError};
use crate::schedule::Timetable;
use crate::track::{Arrival, SeqTracker};
use crate::transport::is_tls_error;
use crate::wsclient;

/// What one data message is, for the accounting.
enum Arrived {
    /// One of ours, of the type the run sends.
    Ours(Stamp),
    /// One of ours damaged, or of the other type.
    Malformed,
    /// Text that is not ours: a notice, a reply.
    OtherText,
}

/// Classifies a Text or Binary message: binary by the binary layout, text by the text one
/// (after a chat server's prefix, or as sent). Text that is not UTF-8 is malformed, whoever
/// sent it: a browser would fail the connection (RFC 6455 8.1), and the server was meant
/// to check what it forwards.
fn classify(is_text: bool, sent: Messages, payload: &[u8]) -> Arrived {
    if is_text && std::str::from_utf8(payload).is_err() {
        return Arrived::Malformed;
    }
    match (is_text, sent) {
        (false, Messages::Binary) => {
            payload::decode(payload).map_or(Arrived::Malformed, Arrived::Ours)
        }
        (false, Messages::Text) => Arrived::Malformed,
        (true, Messages::Text) => match payload::decode_text(payload) {
            Ok(stamp) => Arrived::Ours(stamp),
            Err(TextError::NotOurs) => Arrived::OtherText,
            Err(TextError::Truncated | TextError::Encoding | TextError::Padding) => {
                Arrived::Malformed
            }
        },
        (true, Messages::Binary) => match payload::decode_text(payload) {
            Err(TextError::NotOurs) => Arrived::OtherText,
            _ => Arrived::Malformed,
        },
    }
}

/// Reads per connection per readiness event before moving on to the others (the
/// connection goes on the loop's ready list and is served again next iteration).
const READS_PER_EVENT: usize = 16;

impl Loader {
    /// How many deliveries one message from a member of `room` should make right now.
    fn fanout(&self, room: usize) -> u64 {
        match self.cfg.target {
            Target::Chat { .. } => self.shared.room_members[room]
                .load(Relaxed)
                .saturating_sub(1),
            Target::Echo => 1,
        }
    }

    /// Reads an open connection until EAGAIN or the per-event budget.
    pub(super) fn read_open(&mut self, idx: usize) {
        self.conns[idx].read_pending = false;
        for _ in 0..READS_PER_EVENT {
            let conn = &mut self.conns[idx];
            let (Some(stream), State::Open) = (&mut conn.stream, &conn.state) else {
                return;
            };
            // The arrival time is taken right after the read that delivered the bytes (with
            // TLS: once they are decrypted, which is part of what a wss:// client waits for).
            let mut arrived_ns = 0;
            let reader = &mut conn.reader;
            let read = stream.read_with(&mut self.scratch, |bytes| {
                if arrived_ns == 0 {
                    arrived_ns = now_ns();
                }
                reader.handle_input(bytes);
            });
            match read {
                Ok(0) => {
                    // EOF without a Close frame: an abnormal closure (1006 by RFC 6455 7.1.5).
                    self.close(idx, Some(1006), false);
                    return;
                }
                Ok(_) if arrived_ns == 0 => {} // TLS bytes that completed no record
                Ok(_) => self.handle_messages(idx, arrived_ns),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if is_tls_error(&e) {
                        self.counters.tls_errors += 1;
                    }
                    self.close(idx, Some(1006), false);
                    return;
                }
            }
        }
        self.conns[idx].read_pending = true;
        self.ready.push(idx);
    }

    pub(super) fn handle_messages(&mut self, idx: usize, arrived_ns: u64) {
        let measure_ns = self.shared.measure_ns.load(Relaxed);
        let end_ns = self.shared.end_ns.load(Relaxed);
        let echo = matches!(self.cfg.target, Target::Echo);
        let conns_total = self.cfg.conns as u64;
        loop {
            let conn = &mut self.conns[idx];
            let own_id = conn.id;
            let message = match conn.reader.poll_message(&mut self.inflate_memo) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(_) => {
                    self.counters.protocol_errors += 1;
                    self.errors += 1;
                    let key = self.rng.mask_key();
                    self.conns[idx]
                        .out
                        .extend_from_slice(&wsclient::close_frame(1002, key));
                    self.mark_dirty(idx);
                    self.close(idx, None, true);
                    return;
                }
            };
            match message.opcode {
                Opcode::Binary | Opcode::Text => {
                    let is_text = message.opcode == Opcode::Text;
                    let stamp = match classify(is_text, self.cfg.messages, message.payload) {
                        Arrived::Ours(stamp) => stamp,
                        Arrived::Malformed => {
                            self.counters.malformed += 1;
                            self.errors += 1;
                            continue;
                        }
                        Arrived::OtherText => {
                            if message.payload.ends_with(b" just connected") {
                                self.counters.join_notices += 1;
                            } else {
                                self.counters.other_text += 1;
                            }
                            continue;
                        }
                    };
                    if u64::from(stamp.sender) >= conns_total || (echo && stamp.sender != own_id) {
                        self.counters.foreign += 1;
                        self.errors += 1;
                        continue;
                    }
                    // A member of another room sent this: the server delivered it to a
                    // room its sender is not in. Judged by the rooms (connection i joins
                    // room i % rooms), not by the sender index alone, which any member of
                    // any room has.
                    let sender_room = match self.cfg.target {
                        Target::Chat { rooms, .. } => stamp.sender as usize % rooms.max(1),
                        Target::Echo => conn.room,
                    };
                    if sender_room != conn.room {
                        self.counters.misrouted += 1;
                        self.errors += 1;
                        continue;
                    }
                    let arrival = conn
                        .trackers
                        .entry(stamp.sender)
                        .or_default()
                        .observe(stamp.seq);
                    match arrival {
                        Arrival::Duplicate => {
                            self.counters.duplicates += 1;
                            continue;
                        }
                        Arrival::Late => self.counters.out_of_order += 1,
                        Arrival::InOrder | Arrival::AfterGap { .. } => {}
                    }
                    self.counters.received += 1;
                    self.counters.payload_bytes_received += message.payload.len() as u64;
                    self.counters.wire_bytes_received += message.wire_len as u64;
                    if message.compressed {
                        self.counters.compressed_received += 1;
                    }
                    if matches!(self.cfg.drive, Drive::ClosedLoop { .. }) {
                        self.shared.acked[stamp.sender as usize].fetch_add(1, Relaxed);
                    }
                    if stamp.stamp_ns >= measure_ns && stamp.stamp_ns < end_ns {
                        self.counters.received_measured += 1;
                        self.last_arrival_ns = self.last_arrival_ns.max(arrived_ns);
                        record_ns(
                            &mut self.interval,
                            arrived_ns.saturating_sub(stamp.stamp_ns),
                        );
                    }
                }
                Opcode::Ping => {
                    let ping = message.payload.to_vec();
                    let key = self.rng.mask_key();
                    let conn = &mut self.conns[idx];
                    wsclient::push_masked_frame(&mut conn.out, Opcode::Pong, &ping, key);
                    self.mark_dirty(idx);
                }
                Opcode::Close => {
                    let code = wsclient::close_code(message.payload);
                    let key = self.rng.mask_key();
                    // Echo the server's code (RFC 6455 5.5.1) unless it is one that must
                    // never be sent on the wire.
                    let reply = match code {
                        1005 | 1006 | 1015 => 1000,
                        1000..=4999 => code,
                        _ => 1000,
                    };
                    self.conns[idx]
                        .out
                        .extend_from_slice(&wsclient::close_frame(reply, key));
                    self.mark_dirty(idx);
                    self.close(idx, Some(code), true);
                    return;
                }
                Opcode::Pong | Opcode::Continuation => {}
            }
        }
    }

    /// Marks a connection closed, counting the close code; with `flush_first`, tries one
    /// last write of what is queued (our Close reply) before dropping the socket.
    pub(super) fn close(&mut self, idx: usize, code: Option<u16>, flush_first: bool) {
        if !self.conns[idx].is_open() {
            return;
        }
        if let Some(code) = code {
            *self.close_codes.entry(code).or_default() += 1;
        }
        self.counters.disconnects += 1;
        let phase = self.shared.phase.load(Relaxed);
        if phase < PHASE_STOP {
            self.errors += 1;
        }
        // From the first message due to the end of the drain, a connection lost shrinks the
        // deliveries expected of every later message (the fan-out is the live member
        // count), so it could hide a server fault: the run is then not correct.
        if (PHASE_RUN..PHASE_STOP).contains(&phase) {
            self.counters.disconnects_during_run += 1;
        }
        let room = self.conns[idx].room;
        self.shared.room_members[room].fetch_sub(1, Relaxed);
        if flush_first {
            self.flush(idx);
        }
        let conn = &mut self.conns[idx];
        conn.state = State::Closed;
        conn.stream = None;
        conn.timetable = None;
    }

    pub(super) fn mark_dirty(&mut self, idx: usize) {
        self.dirty.push(idx);
    }

    /// Writes what is queued for one connection until EAGAIN; the rest waits for the next
    /// WRITABLE edge (the socket is registered for both directions once).
    pub(super) fn flush(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        let Some(stream) = &mut conn.stream else {
            conn.out.clear();
            conn.out_sent = 0;
            return;
        };
        let mut failed = false;
        while conn.out_sent < conn.out.len() {
            match stream.write(&conn.out[conn.out_sent..]) {
                Ok(0) => break,
                Ok(n) => conn.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        conn.out.clear();
        conn.out_sent = 0;
        // TLS: sealed records rustls still holds (nothing for a plain stream). This runs even
        // when `out` was empty, so the WRITABLE edge that marks a connection dirty also
        // drains them.
        if !failed {
            loop {
                match stream.flush() {
                    Ok(()) => return,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if conn.is_open() {
            self.close(idx, Some(1006), false);
        }
    }

    fn queue_message(&mut self, idx: usize, stamp: Stamp) {
        self.payload_buf.clear();
        let opcode = match self.cfg.messages {
            Messages::Text => {
                payload::encode_text(stamp, self.cfg.payload, &mut self.payload_buf);
                Opcode::Text
            }
            Messages::Binary => {
                payload::encode(
                    stamp,
                    self.cfg.payload,
                    self.cfg.fill,
                    &mut self.payload_buf,
                );
                Opcode::Binary
            }
        };
        let key = self.rng.mask_key();
        let conn = &mut self.conns[idx];
        // The window we may compress with, where the server agreed to deflate.
        let deflate = conn
            .reader
            .deflate()
            .map(|terms| (&mut self.compressor, terms.client_window_bits));
        let wire = wsclient::push_message(&mut conn.out, opcode, &self.payload_buf, key, deflate);
        self.counters.payload_bytes_sent += self.payload_buf.len() as u64;
        self.counters.wire_bytes_sent += wire as u64;
        if wire != self.payload_buf.len() {
            self.counters.compressed_sent += 1;
        }
        let fanout = self.fanout(self.conns[idx].room);
        self.counters.sent += 1;
        self.counters.expected += fanout;
        self.conns[idx].expected_deliveries += fanout;
        let measure_ns = self.shared.measure_ns.load(Relaxed);
        let end_ns = self.shared.end_ns.load(Relaxed);
        if stamp.stamp_ns >= measure_ns && stamp.stamp_ns < end_ns {
            self.counters.sent_measured += 1;
            self.counters.expected_measured += fanout;
        }
    }

    /// Open loop, at the end of the run: each measured delivery a receiver still open never
    /// got, recorded at the time it was waited for, from its due time to the end of the
    /// drain (`stop_ns`). Receivers that closed are left out: which messages they were
    /// expected to get depends on when they left (the caller records what is left of
    /// `lost_measured` at the shorter wait from the end of sending).
    pub(super) fn lost_waits(&self, stop_ns: u64) -> Histogram<u64> {
        let mut waits = new_histogram();
        if !matches!(self.cfg.drive, Drive::OpenLoop { .. }) {
            return waits;
        }
        let measure_ns = self.shared.measure_ns.load(Relaxed);
        let end_ns = self.shared.end_ns.load(Relaxed);
        let (step, echo) = match self.cfg.target {
            Target::Chat { rooms, .. } => (rooms.max(1), false),
            Target::Echo => (1, true),
        };
        let empty = SeqTracker::default();
        for conn in self.conns.iter().filter(|c| c.is_open()) {
            let senders: Box<dyn Iterator<Item = usize>> = if echo {
                Box::new(std::iter::once(conn.id as usize))
            } else {
                Box::new(
                    (conn.room..self.cfg.conns)
                        .step_by(step)
                        .filter(|&s| s != conn.id as usize),
                )
            };
            for sender in senders {
                let times = &self.shared.senders[sender];
                let first = times.first_ns.load(Relaxed);
                let period = times.period_ns.load(Relaxed);
                let sent = times.sent.load(Relaxed);
                if period == 0 || sent == 0 {
                    continue;
                }
                // The sequence numbers due inside the measured window.
                let lo = measure_ns.saturating_sub(first).div_ceil(period);
                let hi = end_ns.saturating_sub(first).div_ceil(period).min(sent);
                let tracker = conn.trackers.get(&(sender as u32)).unwrap_or(&empty);
                for (start, stop) in tracker.unseen(lo, hi) {
                    for seq in start..stop {
                        let due = first.saturating_add(seq.saturating_mul(period));
                        record_ns(&mut waits, stop_ns.saturating_sub(due));
                    }
                }
            }
        }
        waits
    }

    /// Called once when the loop first sees the run phase.
    pub(super) fn start_running(&mut self) {
        self.running = true;
        let start_ns = self.shared.start_ns.load(Relaxed);
        let end_ns = self.shared.end_ns.load(Relaxed);
        if let Drive::OpenLoop { rate } = self.cfg.drive {
            for idx in 0..self.conns.len() {
                if !self.conns[idx].is_open() {
                    continue;
                }
                // Each connection sends rate/C per second (period = C/rate seconds), unless
                // the sender mix is skewed (--hot-every): see skewed_period_ns.
                let period_ns = crate::schedule::skewed_period_ns(
                    rate,
                    self.cfg.conns,
                    self.conns[idx].id as usize,
                    self.cfg.hot_every,
                    self.cfg.hot_weight,
                );
                let phase = self.rng.below(period_ns);
                let tt = Timetable::new(start_ns, period_ns, phase, end_ns);
                let times = &self.shared.senders[self.conns[idx].id as usize];
                times.first_ns.store(tt.first_ns(), Relaxed);
                times.period_ns.store(tt.period_ns(), Relaxed);
                if let Some(due) = tt.next_due() {
                    self.send_heap.push(Reverse((due, idx)));
                }
                self.conns[idx].timetable = Some(tt);
            }
        }
    }

    /// Open loop: sends everything due by now, each stamped with its due time.
    pub(super) fn send_due(&mut self) {
        let now = now_ns();
        while let Some(&Reverse((due, idx))) = self.send_heap.peek() {
            if due > now {
                break;
            }
            self.send_heap.pop();
            let Some(mut tt) = self.conns[idx].timetable.take() else {
                continue;
            };
            let id = self.conns[idx].id;
            let measure_ns = self.shared.measure_ns.load(Relaxed);
            while let Some((seq, due_ns)) = tt.take_due(now) {
                if due_ns >= measure_ns {
                    record_ns(&mut self.send_lag, now - due_ns);
                }
                self.queue_message(
                    idx,
                    Stamp {
                        stamp_ns: due_ns,
                        sender: id,
                        seq,
                    },
                );
            }
            self.mark_dirty(idx);
            self.shared.senders[id as usize]
                .sent
                .store(tt.sent(), Relaxed);
            if let Some(next) = tt.next_due() {
                self.send_heap.push(Reverse((next, idx)));
            }
            self.conns[idx].timetable = Some(tt);
        }
    }

    /// Closed loop: fills every connection's window, stamping the actual send time.
    pub(super) fn send_window(&mut self, window: u64) {
        let end_ns = self.shared.end_ns.load(Relaxed);
        for idx in 0..self.conns.len() {
            if !self.conns[idx].is_open() {
                continue;
            }
            let fanout = self.fanout(self.conns[idx].room);
            if fanout == 0 {
                continue;
            }
            let id = self.conns[idx].id;
            let mut queued = false;
            loop {
                let now = now_ns();
                let acked = self.shared.acked[id as usize].load(Relaxed);
                let outstanding = self.conns[idx].expected_deliveries.saturating_sub(acked);
                if now >= end_ns || outstanding >= window * fanout {
                    break;
                }
                let seq = self.conns[idx].next_seq;
                self.conns[idx].next_seq += 1;
                self.queue_message(
                    idx,
                    Stamp {
                        stamp_ns: now,
                        sender: id,
                        seq,
                    },
                );
                queued = true;
            }
            if queued {
                self.mark_dirty(idx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            stamp_ns: 5,
            sender: 6,
            seq: 7,
        }
    }

    #[test]
    fn each_type_is_decoded_by_its_own_layout_and_only_when_sent() {
        let mut text = b"b6 says: ".to_vec();
        payload::encode_text(stamp(), 64, &mut text);
        let mut binary = Vec::new();
        payload::encode(stamp(), 64, payload::Fill::Zeros, &mut binary);
        let ours = |a: Arrived| matches!(a, Arrived::Ours(s) if s == stamp());
        assert!(ours(classify(true, Messages::Text, &text)));
        assert!(ours(classify(false, Messages::Binary, &binary)));
        // The server changed a message's type.
        assert!(matches!(
            classify(false, Messages::Text, &binary),
            Arrived::Malformed
        ));
        assert!(matches!(
            classify(true, Messages::Binary, &text),
            Arrived::Malformed
        ));
        // Notices are other text either way; damaged or non-UTF-8 text is malformed.
        for sent in [Messages::Text, Messages::Binary] {
            assert!(matches!(
                classify(true, sent, b"b3 just connected"),
                Arrived::OtherText
            ));
            assert!(matches!(
                classify(true, sent, b"b3 just connected \xff"),
                Arrived::Malformed
            ));
        }
        assert!(matches!(
            classify(true, Messages::Text, &text[..20]),
            Arrived::Malformed
        ));
    }
}
