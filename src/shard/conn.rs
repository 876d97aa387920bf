//! One connection as the loop holds it: its protocol state, its outbox (and TLS session),
//! its role once its request is answered, and the flags the loop's policies read.
//!
//! Owns: what is queued for the peer and how much of it counts against `--max-outbound`.
//! Must never: decide when to flush, close or time out (flush.rs and timers.rs do), or
//! touch another connection.

use super::timers::Stamp;
use super::tls_link::TlsLink;
use crate::io::Outbox;
use crate::ws::{Connection, SharedFrame};

/// What a connection is, once its request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Before the request head is answered.
    Pending,
    /// A plain HTTP exchange (page, stats, error).
    Http,
    /// `/echo`.
    Echo,
    /// A chat member.
    Member,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) ws: Connection,
    /// Bytes for the socket: frames, or TLS records when `tls` is set.
    pub(super) outbox: Outbox,
    /// With --tls-*: the session between the socket and `ws`, and the frames it will seal.
    pub(super) tls: Option<Box<TlsLink>>,
    /// The client's port: a member's default name (`User <port>`). Only the port is kept
    /// (2 bytes where the address took 32).
    pub(super) peer_port: u16,
    pub(super) role: Role,
    /// Accepted beyond --max-conns: its request gets 503.
    pub(super) over_capacity: bool,
    /// Tells this connection from an earlier one with the same key (work results, heartbeat
    /// entries). 4 bytes: it wraps after four billion connections, and a stale result would
    /// be taken for this connection's only if its key came back exactly that many
    /// connections later while the result was out (a result is out for milliseconds).
    pub(super) serial: u32,
    /// Its last message is with a worker: no further event is taken until it returns.
    pub(super) awaiting_work: bool,
    /// The loop's fan-out budget ran out with events of this connection still to take: they
    /// are taken next iteration, after the flush, and the socket is not read meanwhile.
    pub(super) deferred: bool,
    /// Another shard holds too many of the room deliveries this loop handed it: the
    /// connections whose messages went into them are not read until it catches up.
    pub(super) throttled: bool,
    /// The reactor was told to stop reading it (follows `awaiting_work || deferred` at each
    /// flush).
    pub(super) reading_paused: bool,
    /// When the last complete message or control frame (a pong included) arrived, or the
    /// upgrade was done.
    pub(super) last_heard: Stamp,
    /// Since when part of a message has been in and its last frame not (see
    /// `fire_heartbeats`: a message may stay open for at most --idle-timeout).
    pub(super) message_since: Option<Stamp>,
    /// A heartbeat ping went out since `last_heard`.
    pub(super) pinged: bool,
    /// On the `dirty` list already.
    pub(super) dirty: bool,
    /// The peer will send nothing more (FIN or error).
    pub(super) peer_done: bool,
    /// We sent FIN.
    pub(super) write_shut: bool,
    /// When the transport is dropped at the latest once the session has finished.
    pub(super) linger_deadline: Option<Stamp>,
    /// The deadline this connection has in the timer heap (older entries are stale).
    pub(super) armed: Option<Stamp>,
}

impl Conn {
    /// Queues a frame for the peer (as plaintext to seal, over TLS).
    pub(super) fn push(&mut self, frame: SharedFrame) {
        match &mut self.tls {
            Some(tls) => tls.push(frame),
            None => self.outbox.push(frame),
        }
    }

    /// Bytes queued for the peer and not yet sent.
    pub(super) fn queued_bytes(&self) -> usize {
        self.outbox.queued_bytes() + self.tls.as_ref().map_or(0, |tls| tls.queued_bytes())
    }

    /// Bytes queued for the peer and not yet handed to the kernel: what --max-outbound
    /// bounds. A completion backend (io_uring) has the front of the outbox in flight from
    /// the moment it submits, as a readiness backend's writev would have had it copied.
    pub(super) fn backlog(&self) -> usize {
        self.queued_bytes() - self.outbox.in_flight()
    }

    /// Since when a message has been open, at `now`, after input was fed.
    pub(super) fn note_message_progress(&mut self, now: Stamp) {
        self.message_since = if self.ws.message_in_progress() {
            Some(self.message_since.unwrap_or(now))
        } else {
            None
        };
    }

    /// The slow-consumer cut: frames not yet started go (over TLS: those not yet sealed).
    pub(super) fn drop_unstarted(&mut self) {
        match &mut self.tls {
            Some(tls) => tls.drop_unstarted(),
            None => {
                self.outbox.drop_unstarted();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every connection holds one, idle or not: with the reactor's slot and the slab's tag,
    /// most of an idle `/echo` connection's memory (see the README's Memory section).
    #[test]
    fn a_connection_is_176_bytes() {
        assert_eq!(std::mem::size_of::<super::Conn>(), 176);
    }
}
