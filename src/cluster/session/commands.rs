//! The session's two connections as byte streams: the commands written on each, the caps on
//! their backlog and what a refusal means ([`Class`]), the decoders of what comes back (with
//! the bounds that keep Redis input as cheap as a client's), and on `Cmd` what each reply
//! answers ([`Expect`]), matched in order.
//!
//! Must never: buffer without bound in either direction: a command over its connection's
//! cap is refused and counted (`commands_refused`), and a value over its decoder's bounds is
//! a protocol error that resets the link.

use std::time::Instant;

use super::{Conn, Session};
use crate::cluster::BrokerCounters;
use crate::cluster::resp::{Bounds, Decoder, Value, command_len, encode_command};
use crate::cluster::who::Query;
use crate::cluster::wire;
use crate::io::Outbox;
use crate::stats::bump;

/// Unsent bytes on a connection beyond which commands are refused rather than buffered
/// without bound (Redis is not keeping up, or the socket is stuck): publishes are dropped
/// and counted as not propagated; see [`Class`] for the others.
pub(super) const MAX_CMD_BACKLOG: usize = 64 << 20;
/// Room kept above [`MAX_CMD_BACKLOG`] for commands other than publishes: they are small
/// and few (one per join, leave, rename, `/who` or heartbeat), so a burst of publishes that
/// fills the backlog drops messages but neither fails the link nor refuses a `/who`.
pub(super) const CONTROL_HEADROOM: usize = 1 << 20;

/// How many times this node's own event limit ([`wire::max_event_len`]) a bulk string on
/// `Sub` may reach before the decoder refuses it and the link is reset. Events between the
/// two are dropped and counted (`remote_oversize`): a peer configured with a larger
/// `--max-message` then costs dropped messages, not a reconnect (and a gap notice in every
/// room) each time it publishes a large one; a broken or hostile server still cannot make
/// us buffer more than this per event.
const OVERSIZE_HEADROOM: usize = 4;
/// The largest reply we ask for on `Cmd`: replies there are short (integers, `OK`, names
/// and ids a few dozen bytes long), the longest being a page of a room's `/who` hash.
const MAX_REPLY: usize = 1 << 20;

/// What one value read from `Sub` may cost: an event (see [`OVERSIZE_HEADROOM`]) inside a
/// `message` push, whose other parts (the kind, the channel) are short.
pub(super) fn sub_bounds(max_message: usize) -> Bounds {
    let bulk = wire::max_event_len(max_message).saturating_mul(OVERSIZE_HEADROOM);
    Bounds {
        bulk,
        value: bulk.saturating_add(1024),
    }
}

pub(super) const CMD_BOUNDS: Bounds = Bounds {
    bulk: MAX_REPLY,
    value: MAX_REPLY,
};

/// What a command is for, which decides what a refusal (the backlog over its cap) means.
/// Every refusal is counted (`commands_refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// A PUBLISH, refused at [`MAX_CMD_BACKLOG`]: the event was delivered locally; counted
    /// as not propagated too.
    Publish,
    /// A read for `/who`, or a cleanup of another node's stale field: the asker is answered
    /// without the other nodes, the cleanup waits for the next `/who`.
    Query,
    /// State that Redis must hold for the link to be right (this node's `/who` fields, its
    /// liveness key, the subscriptions, the connections' set-up): a refusal leaves Redis
    /// wrong, so it fails the link, and the reconnect rewrites all of it.
    State,
}

/// What a reply on `Cmd` answers, in the order the commands were written.
#[derive(Debug)]
pub(super) enum Expect {
    /// SET, HSET, HDEL, SELECT, CLIENT SETNAME: only an error matters.
    Ignore,
    /// A PUBLISH: confirmed on reply.
    Publish,
    /// `/who`: a page of the room's hash (HSCAN).
    WhoScan(Box<Query>),
    /// `/who`: the liveness keys of the nodes found (MGET).
    WhoAlive(Box<Query>),
}

/// One connection's bytes.
#[derive(Debug)]
pub(super) struct Pipe {
    /// Commands written this iteration, moved to `out` in one piece by [`Pipe::transmit`].
    pub(super) buf: Vec<u8>,
    /// What the socket has not taken yet.
    pub(super) out: Outbox,
    pub(super) decoder: Decoder,
    /// When the connection last made progress: on `Cmd` a reply, or a command written
    /// while none was owed; on `Sub` anything received (it answers our PINGs).
    pub(super) progress: Instant,
}

impl Pipe {
    pub(super) fn new(bounds: Bounds, now: Instant) -> Pipe {
        Pipe {
            buf: Vec::new(),
            out: Outbox::default(),
            decoder: Decoder::new(bounds),
            progress: now,
        }
    }

    /// Unsent bytes: queued in the outbox or written this iteration.
    fn backlog(&self) -> usize {
        self.out.queued_bytes() + self.buf.len()
    }

    /// A fresh connection at `now`: nothing decoded yet.
    pub(super) fn reset(&mut self, now: Instant) {
        self.decoder.reset();
        self.progress = now;
    }

    /// The connection is gone: nothing left to write.
    pub(super) fn clear(&mut self) {
        self.out.clear();
        self.buf.clear();
    }

    pub(super) fn transmit(&mut self) -> Option<&mut Outbox> {
        if !self.buf.is_empty() {
            self.out.push(std::mem::take(&mut self.buf).into());
        }
        (!self.out.is_empty()).then_some(&mut self.out)
    }
}

impl Session {
    /// Writes a command on `Cmd` whose reply `expect` describes, unless the connection's
    /// backlog is over the cap for its class: then it is refused (see [`Class`]) and false
    /// is returned.
    pub(super) fn command(
        &mut self,
        class: Class,
        args: &[&[u8]],
        expect: Expect,
        now: Instant,
    ) -> bool {
        if !self.admit(class, self.cmd.backlog(), command_len(args)) {
            return false;
        }
        self.queue(args, expect, now);
        true
    }

    /// A `/who` step: like [`Session::command`] ([`Class::Query`]), but a refused query
    /// comes back to be answered.
    pub(super) fn ask(
        &mut self,
        args: &[&[u8]],
        query: Box<Query>,
        step: fn(Box<Query>) -> Expect,
        now: Instant,
    ) -> Result<(), Box<Query>> {
        if !self.admit(Class::Query, self.cmd.backlog(), command_len(args)) {
            return Err(query);
        }
        self.queue(args, step(query), now);
        Ok(())
    }

    fn queue(&mut self, args: &[&[u8]], expect: Expect, now: Instant) {
        if self.expect.is_empty() {
            self.cmd.progress = now;
        }
        encode_command(args, &mut self.cmd.buf);
        self.expect.push_back(expect);
    }

    /// Writes a command on `Sub` (subscriptions and their PING: all [`Class::State`]).
    pub(super) fn sub_command(&mut self, args: &[&[u8]]) -> bool {
        if !self.admit(Class::State, self.sub.backlog(), command_len(args)) {
            return false;
        }
        encode_command(args, &mut self.sub.buf);
        true
    }

    /// Whether `len` more bytes of a `class` command fit on a connection with `backlog`
    /// unsent bytes; counts a refusal and does what it implies.
    fn admit(&mut self, class: Class, backlog: usize, len: usize) -> bool {
        let cap = match class {
            Class::Publish => MAX_CMD_BACKLOG,
            Class::Query | Class::State => MAX_CMD_BACKLOG + CONTROL_HEADROOM,
        };
        if backlog.saturating_add(len) <= cap {
            return true;
        }
        BrokerCounters::bump(&self.link.counters.commands_refused);
        match class {
            Class::Publish => {
                bump(&self.stats.counters.cluster_not_propagated, 1);
                self.lost_while_down += 1;
            }
            Class::Query => {}
            Class::State => {
                self.failed.get_or_insert_with(|| {
                    "the backlog of commands to Redis is over its cap (Redis is not keeping up)"
                        .into()
                });
            }
        }
        false
    }

    /// The next complete value decoded on `conn`. Input that is not RESP, or over the
    /// decoder's bounds, is bad input that fails the link (and ends the values).
    pub(super) fn next_value(&mut self, conn: Conn) -> Option<Value> {
        let (pipe, which) = match conn {
            Conn::Cmd => (&mut self.cmd, "command connection"),
            Conn::Sub => (&mut self.sub, "subscription connection"),
        };
        match pipe.decoder.poll_value() {
            Ok(value) => value,
            Err(e) => {
                self.bad_input(&format!("{which}: {e}"));
                self.failed.get_or_insert_with(|| format!("bad reply: {e}"));
                None
            }
        }
    }

    /// Matches the replies decoded on `Cmd` with the commands they answer.
    pub(super) fn read_replies(&mut self, now: Instant) {
        while let Some(value) = self.next_value(Conn::Cmd) {
            self.cmd.progress = now;
            let Some(expect) = self.expect.pop_front() else {
                self.bad_input("a reply nobody asked for");
                continue;
            };
            if let Value::Error(e) = &value {
                self.bad_input(&format!("Redis error: {}", String::from_utf8_lossy(e)));
            }
            match expect {
                Expect::Ignore => {}
                Expect::Publish => {
                    if matches!(value, Value::Integer(_)) {
                        bump(&self.stats.counters.cluster_published, 1);
                    } else {
                        bump(&self.stats.counters.cluster_not_propagated, 1);
                    }
                }
                Expect::WhoScan(query) => self.who_page(query, &value, now),
                Expect::WhoAlive(query) => self.who_alive(*query, &value, now),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use super::super::harness::{Harness, MAX_MESSAGE, member, payload, room, room_delivery};
    use super::*;
    use crate::chat::nodes::{OthersUnknown, member_list_across_nodes};
    use crate::cluster::BrokerMsg;
    use crate::peer::Peer as _;

    fn refused(h: &Harness) -> u64 {
        h.link.counters.commands_refused.load(Relaxed)
    }

    #[test]
    fn every_command_path_is_capped() {
        let mut h = Harness::up();
        let (r, asker, t) = (room("r"), member(3), h.at(1));
        // Redis has not read 64 MiB of commands.
        h.cmd.out.push(vec![0u8; MAX_CMD_BACKLOG].into());

        // A publish is dropped and counted.
        h.handle_request(BrokerMsg::Publish(Arc::from(vec![room_delivery(&r)])), t);
        assert!(h.cmd.buf.is_empty() && h.expect.is_empty());
        assert_eq!(refused(&h), 1);
        assert_eq!(h.stats.counters.cluster_not_propagated.load(Relaxed), 1);

        // Control commands still have their headroom: a /who is asked.
        h.link.who(&r, asker);
        h.requests(t);
        assert!(matches!(h.expect.front(), Some(Expect::WhoScan(_))));
        assert_eq!(refused(&h), 1);

        // Past the headroom too: a /who is answered without the other nodes...
        h.cmd.out.push(vec![0u8; CONTROL_HEADROOM].into());
        h.link.who(&r, asker);
        h.requests(t);
        assert_eq!(h.expect.len(), 1);
        assert_eq!(refused(&h), 2);
        let busy = member_list_across_nodes(&r, &[], Some(OthersUnknown::Busy));
        assert_eq!(h.replies(), [String::from_utf8(payload(&busy)).unwrap()]);
        assert!(h.failed.is_none());

        // ... and state that Redis must hold fails the link (the reconnect rewrites it).
        let beat = h.at(2000);
        h.handle_timeout(beat);
        assert_eq!(refused(&h), 3);
        assert!(h.poll_close(beat));

        // The subscription connection has its own cap; the join it refused completes
        // locally when the link fails.
        let mut h = Harness::up();
        h.sub
            .out
            .push(vec![0u8; MAX_CMD_BACKLOG + CONTROL_HEADROOM].into());
        assert!(!h.link.join(&r));
        h.requests(t);
        assert!(h.sub.buf.is_empty());
        assert!(h.pending_sub.is_empty() && h.subscribed.is_empty());
        assert_eq!(refused(&h), 1);
        assert!(h.poll_close(t));
        assert_eq!(h.ready(), [r]);
    }

    #[test]
    fn replies_are_matched_to_their_commands_in_order_however_they_are_split() {
        let mut h = Harness::up();
        let (r, t) = (room("r"), h.at(1));
        let batch = Arc::from(vec![room_delivery(&r); 3]);
        h.handle_request(BrokerMsg::Publish(batch), t);
        assert_eq!(h.written(Conn::Cmd).len(), 3);
        // Two confirmed (an integer: the number of subscribers), one refused by Redis.
        for byte in b":2\r\n-ERR no\r\n:0\r\n" {
            h.handle_input(Conn::Cmd, std::slice::from_ref(byte), t);
        }
        let counters = &h.stats.counters;
        assert_eq!(counters.cluster_published.load(Relaxed), 2);
        assert_eq!(counters.cluster_not_propagated.load(Relaxed), 1);
        assert_eq!(counters.cluster_bad_input.load(Relaxed), 1, "the error");
        assert!(h.expect.is_empty());

        // A reply nobody asked for is counted; the link holds.
        h.handle_input(Conn::Cmd, b"+OK\r\n", t);
        assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 2);
        assert!(!h.poll_close(t));

        // Bytes that are not RESP reset the link.
        h.handle_input(Conn::Cmd, b"?\r\n", t);
        assert!(h.poll_close(t));
        assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 3);
    }

    #[test]
    fn the_subscription_decoder_refuses_what_no_node_could_have_sent() {
        let bounds = sub_bounds(MAX_MESSAGE);
        assert!(bounds.bulk >= wire::max_event_len(MAX_MESSAGE));
        assert!(bounds.bulk < 64 * wire::max_event_len(MAX_MESSAGE));
        // On the link: a protocol error, which tears the link down (and reconnects).
        let mut h = Harness::up();
        let t = h.at(1);
        let header = format!(
            "*3\r\n$7\r\nmessage\r\n$3\r\nr:x\r\n${}\r\n",
            bounds.bulk + 1
        );
        h.handle_input(Conn::Sub, header.as_bytes(), t);
        assert!(h.poll_close(t));
        assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 1);
    }
}
