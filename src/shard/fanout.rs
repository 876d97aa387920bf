//! Fan-out: each planned delivery is queued, as a reference to a frame encoded once, on its
//! receivers' outboxes here, and room deliveries go to the peers in one batch per
//! iteration; peers' batches are delivered here in order.
//!
//! Owns: the iteration's fan-out budget (`FANOUT_PER_ITERATION`), the deferred connections
//! and the peer batches not yet delivered. Must never: write to a socket (the flush does) or
//! hold a lock while queueing.

use std::collections::VecDeque;

use slab::Slab;

use super::State;
use super::conn::Conn;
use crate::chat::{Audience, Delivery};
use crate::io::ConnId;
use crate::peer::{Batch, MemberId, backlog_caught_up, backlog_over_limit};
use crate::stats::bump;
use crate::ws::OutMessage;
use crate::ws::deflate::Compressor;

/// Receiver deliveries (a frame queued on one outbox) a loop plans in one iteration before
/// it stops taking messages until it has flushed: 16 bytes of outbox each, so about 4 MiB.
/// Without it one read of tiny messages in a big room (9,000 messages to 1,000 members)
/// queued 150 MiB of references before the first flush. At 245,000 deliveries a second a
/// loop iteration plans far fewer.
pub(super) const FANOUT_PER_ITERATION: usize = 1 << 18;
/// Appends `frame` to the outbox of a receiver that accepts messages (compressed if the
/// receiver agreed to permessage-deflate: the compressed frame is made once per message and
/// shared like the plain one) and marks it dirty; `settle` holds it to --max-outbound after
/// flushing. A free function so that the caller can hold the room's member list.
pub(super) fn queue_frame(
    conns: &mut Slab<Conn>,
    dirty: &mut VecDeque<ConnId>,
    compressor: &mut Compressor,
    id: ConnId,
    frame: &OutMessage,
) {
    let Some(conn) = conns.get_mut(id) else {
        return;
    };
    if !conn.ws.accepts_messages() {
        return;
    }
    let frame = frame.for_receiver(conn.ws.deflate(), compressor);
    conn.push(frame);
    if !conn.dirty {
        conn.dirty = true;
        dirty.push_back(id);
    }
}

impl State {
    /// Whether the fan-out budget left work: deferred connections or peer batches.
    pub(super) fn has_deferred_work(&self) -> bool {
        !self.deferred.is_empty() || !self.peer_batches.is_empty()
    }

    /// Spends what is left of the iteration's fan-out budget on the work the last one
    /// left: the rest of the peer batches, then the deferred connections' events, oldest
    /// first.
    pub(super) fn resume_deferred(&mut self) {
        self.deliver_peer_batches();
        for id in std::mem::take(&mut self.deferred) {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.deferred = false;
                self.pump(id); // defers it again if the budget runs out
            }
        }
    }

    /// Delivers the waiting peer batches here, in order, until the fan-out budget runs out,
    /// and tells the inbox how much of its backlog is gone.
    pub(super) fn deliver_peer_batches(&mut self) {
        let (mut deliveries, mut bytes) = (0, 0);
        'batches: while let Some((batch, next)) = self.peer_batches.front_mut() {
            let (batch, from) = (batch.clone(), *next);
            for (i, delivery) in batch.iter().enumerate().skip(from) {
                if self.fanout >= FANOUT_PER_ITERATION {
                    if let Some(front) = self.peer_batches.front_mut() {
                        front.1 = i;
                    }
                    bump(&self.stats.counters.fanout_yields, 1);
                    break 'batches;
                }
                self.deliver_here(delivery);
                deliveries += 1;
                bytes += delivery.frame.len();
            }
            self.peer_batches.pop_front();
        }
        if deliveries > 0 {
            self.hub.inbox(self.index).delivered(deliveries, bytes);
        }
    }

    /// Queues every planned delivery on its receivers' outboxes here (the frame is shared,
    /// never copied) and keeps room deliveries for the other shards, then disconnects
    /// receivers that went over --max-outbound, whose departure plans more deliveries;
    /// repeats until the plan is empty.
    ///
    /// Not re-entrant: a kicked receiver's departure, handled inside, only adds to the plan
    /// that the outer loop is draining (so a chain of kicks cannot grow the stack).
    pub(super) fn fan_out(&mut self) {
        if self.fanning_out {
            return;
        }
        self.fanning_out = true;
        // Peers are fixed once the shards run: asked once, not per delivery.
        let has_peers = self.hub.has_peers();
        while !self.deliveries.is_empty() {
            for delivery in std::mem::take(&mut self.deliveries) {
                self.deliver_here(&delivery);
                if has_peers && matches!(delivery.to, Audience::Room { .. }) {
                    self.to_peers.push(delivery);
                }
            }
        }
        self.fanning_out = false;
    }

    /// Queues `delivery` for its receivers on this shard.
    pub(super) fn deliver_here(&mut self, delivery: &Delivery<MemberId>) {
        let (conns, dirty) = (&mut self.conns, &mut self.dirty);
        let compressor = &mut self.compressor;
        let mut queue = |conn| queue_frame(conns, dirty, compressor, conn, &delivery.frame);
        match &delivery.to {
            Audience::Member(member) if member.shard == self.index => {
                queue(member.conn);
                self.fanout += 1;
            }
            Audience::Member(_) => {}
            Audience::Room { room, except } => {
                let members = self.chat.members(room);
                for member in members {
                    if member != except {
                        queue(member.conn);
                    }
                }
                self.fanout += members.len();
            }
        }
    }

    /// Sends this iteration's room deliveries to every peer in one batch: the other shards
    /// (one inbox item each) and, with `--cluster`, the broker, which publishes them to the
    /// other nodes.
    pub(super) fn send_to_peers(&mut self) {
        if self.to_peers.is_empty() {
            return;
        }
        let batch: Batch = std::mem::take(&mut self.to_peers).into();
        for peer in self.hub.peers() {
            peer.publish(self.index, &batch);
        }
        if self.hub.shard_count() > 1 {
            bump(&self.stats.counters.peer_batches_out, 1);
            self.throttle_senders(&batch);
        }
    }

    /// If a peer shard now holds more of our deliveries than
    /// [`PEER_BACKLOG_LIMIT`](crate::peer::PEER_BACKLOG_LIMIT), stops
    /// reading this batch's senders here (TCP then pushes back on them) until it has caught
    /// up by half. Connections that sent nothing in it are read as before.
    fn throttle_senders(&mut self, batch: &Batch) {
        if !backlog_over_limit(self.hub.peer_backlog(self.index)) {
            return;
        }
        for delivery in batch.iter() {
            let Audience::Room { except: sender, .. } = &delivery.to else {
                continue;
            };
            if sender.shard != self.index {
                continue;
            }
            if let Some(conn) = self.conns.get_mut(sender.conn)
                && !conn.throttled
            {
                conn.throttled = true;
                self.throttled.push(sender.conn);
                bump(&self.stats.counters.peer_backpressure, 1);
                self.mark_dirty(sender.conn);
            }
        }
    }

    /// Reads the throttled senders again once every peer holds at most half the limit.
    pub(super) fn release_throttled(&mut self) {
        if self.throttled.is_empty() {
            return;
        }
        if !backlog_caught_up(self.hub.peer_backlog(self.index)) {
            return;
        }
        for id in std::mem::take(&mut self.throttled) {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.throttled = false;
                self.mark_dirty(id);
            }
        }
    }
}
