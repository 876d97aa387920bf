//! `/who` across nodes, driven: this node's fields of the rooms' `/who` hashes written as
//! members join, rename and leave (and all of them again after a reconnect), and each
//! `/who` taken through its steps (HSCAN pages, then one MGET of the liveness keys) to its
//! answer. What the steps decide is [`crate::cluster::who`]'s (pure); this file turns the
//! decisions into commands and the replies back into steps.
//!
//! Must never: leave an asker without an answer (a query refused, or cut by the link
//! dropping, is answered without the other nodes, saying why), have more than
//! [`MAX_WHO_PENDING`] queries in flight, or write more than the changed member's field for
//! one join, rename or leave.

use std::sync::Arc;
use std::time::Instant;

use super::Session;
use super::commands::{Class, Expect};
use crate::chat::nodes::{OthersUnknown, member_list_across_nodes};
use crate::chat::{Audience, Delivery, Name, RoomName};
use crate::cluster::BrokerCounters;
use crate::cluster::resp::Value;
use crate::cluster::who::{self, FieldWrite, Next, Query};
use crate::cluster::wire::{self, WhoField};
use crate::peer::MemberId;

/// `/who` queries in flight at most; more are answered at once without the other nodes
/// (`who_refused`), so that `/who` from many clients cannot queue unbounded work and state.
pub(super) const MAX_WHO_PENDING: usize = 32;
/// Fields per HSET or HDEL when many are written at once (the rewrite after a reconnect,
/// the cleanup of a dead node): bounds one command's size.
pub(super) const FIELDS_PER_COMMAND: usize = 256;

impl Session {
    /// A local member of `room` joined or was renamed (`name`), or left (`None`).
    pub(super) fn roster_changed(
        &mut self,
        room: &RoomName,
        member: MemberId,
        name: Option<Name>,
        now: Instant,
    ) {
        let mut writes = Vec::new();
        self.roster.change(room, member, name, &mut writes);
        // While down, the copy alone changes: the reconnect writes all of it.
        if self.up {
            for write in writes {
                self.write_field(write, now);
            }
        }
    }

    /// This node's field for its member with join number `member`, in this epoch.
    fn field(&self, member: u64) -> WhoField {
        WhoField {
            node: self.node,
            epoch: self.epoch,
            member,
        }
    }

    /// Writes one member's field: a join, a rename or a leave costs one field, whatever the
    /// size of the room.
    fn write_field(&mut self, write: FieldWrite, now: Instant) {
        match write {
            FieldWrite::Set { room, member, name } => {
                let (key, field) = (wire::who_key(&room), self.field(member).encode());
                let args: [&[u8]; 4] = [
                    b"HSET",
                    key.as_bytes(),
                    field.as_bytes(),
                    name.as_str().as_bytes(),
                ];
                self.command(Class::State, &args, Expect::Ignore, now);
            }
            FieldWrite::Del { room, member } => {
                let (key, field) = (wire::who_key(&room), self.field(member).encode());
                let args: [&[u8]; 3] = [b"HDEL", key.as_bytes(), field.as_bytes()];
                self.command(Class::State, &args, Expect::Ignore, now);
            }
        }
    }

    /// After a (re)connect: writes every local member's field in the new epoch, a bounded
    /// number of fields per command. The fields of earlier epochs are deleted by the next
    /// `/who` that finds them (here or on any node).
    pub(super) fn write_rosters(&mut self, now: Instant) {
        let mut commands: Vec<(String, Vec<(String, Name)>)> = Vec::new();
        for (room, members) in self.roster.rooms() {
            let key = wire::who_key(room);
            let fields: Vec<(String, Name)> = members
                .iter()
                .map(|(&no, name)| (self.field(no).encode(), name.clone()))
                .collect();
            for chunk in fields.chunks(FIELDS_PER_COMMAND) {
                commands.push((key.clone(), chunk.to_vec()));
            }
        }
        for (key, fields) in commands {
            let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
            for (field, name) in &fields {
                args.push(field.as_bytes());
                args.push(name.as_str().as_bytes());
            }
            if !self.command(Class::State, &args, Expect::Ignore, now) {
                return; // the link fails; the next connect writes them all again
            }
        }
    }

    /// Deletes fields of `room`'s `/who` hash found stale (a cleanup: refusable).
    fn delete_fields(&mut self, room: &RoomName, fields: &[WhoField], now: Instant) {
        let key = wire::who_key(room);
        for chunk in fields.chunks(FIELDS_PER_COMMAND) {
            let names: Vec<String> = chunk.iter().map(WhoField::encode).collect();
            let mut args: Vec<&[u8]> = vec![b"HDEL", key.as_bytes()];
            args.extend(names.iter().map(String::as_bytes));
            self.command(Class::Query, &args, Expect::Ignore, now);
        }
    }

    /// `/who` from `member`: this node's members are known here; the others' are read
    /// from the room's hash, a page at a time ([`who`]).
    pub(super) fn who(&mut self, room: RoomName, member: MemberId, now: Instant) {
        let local = self.roster.count(&room);
        if !self.up {
            self.answer_who(&room, member, &[], Some(OthersUnknown::NoLink));
        } else if local >= who::MAX_NAMES {
            self.answer_who(&room, member, &[], None); // this node alone fills the reply
        } else if self.who_pending >= MAX_WHO_PENDING {
            BrokerCounters::bump(&self.link.counters.who_refused);
            self.answer_who(&room, member, &[], Some(OthersUnknown::Busy));
        } else {
            self.who_pending += 1;
            self.who_scan(Box::new(Query::new(room, member, local)), b"0", now);
        }
    }

    fn who_scan(&mut self, query: Box<Query>, cursor: &[u8], now: Instant) {
        let key = wire::who_key(&query.room);
        let count = who::PAGE.to_string();
        let args: [&[u8]; 5] = [b"HSCAN", key.as_bytes(), cursor, b"COUNT", count.as_bytes()];
        if let Err(query) = self.ask(&args, query, Expect::WhoScan, now) {
            self.who_refused(&query);
        }
    }

    /// A page of the room's hash arrived: the next page, the liveness keys, or the answer.
    pub(super) fn who_page(&mut self, mut query: Box<Query>, value: &Value, now: Instant) {
        let page = query.handle_page(self.node, self.epoch, value);
        for _ in 0..page.bad {
            self.bad_input("a malformed entry in a /who hash");
        }
        if !page.own_stale.is_empty() {
            let room = query.room.clone();
            self.delete_fields(&room, &page.own_stale, now);
        }
        match page.next {
            Next::Scan(cursor) => self.who_scan(query, &cursor, now),
            Next::Alive(nodes) => {
                let keys: Vec<String> = nodes.into_iter().map(wire::node_key).collect();
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                args.extend(keys.iter().map(String::as_bytes));
                if let Err(query) = self.ask(&args, query, Expect::WhoAlive, now) {
                    self.who_refused(&query);
                }
            }
            Next::Done => self.who_done(&query.room, query.member, &[], None),
        }
    }

    /// The liveness keys arrived: the answer, and the cleanup of what is stale.
    pub(super) fn who_alive(&mut self, query: Query, value: &Value, now: Instant) {
        let (room, member) = (query.room.clone(), query.member);
        match query.handle_alive(value) {
            Some(found) => {
                // Nodes that died without cleaning up (their liveness key expired), or
                // fields from before a node's reconnect.
                self.delete_fields(&room, &found.stale, now);
                self.who_done(&room, member, &found.names, None);
            }
            None => {
                if !matches!(value, Value::Error(_)) {
                    self.bad_input("an unexpected reply to MGET");
                }
                self.who_done(&room, member, &[], Some(OthersUnknown::Busy));
            }
        }
    }

    /// A query the command backlog refused: answered without the other nodes.
    fn who_refused(&mut self, query: &Query) {
        BrokerCounters::bump(&self.link.counters.who_refused);
        self.who_done(&query.room, query.member, &[], Some(OthersUnknown::Busy));
    }

    /// A query cut by the link dropping: answered without the other nodes.
    pub(super) fn who_link_down(&mut self, query: &Query) {
        self.who_done(&query.room, query.member, &[], Some(OthersUnknown::NoLink));
    }

    /// Ends a query in flight with its answer.
    fn who_done(
        &mut self,
        room: &RoomName,
        member: MemberId,
        remote: &[Name],
        unknown: Option<OthersUnknown>,
    ) {
        self.who_pending = self.who_pending.saturating_sub(1);
        self.answer_who(room, member, remote, unknown);
    }

    /// Replies to `/who`: this node's members, then the others', or why they are unknown;
    /// at most [`who::MAX_NAMES`] names, worded by chat.
    fn answer_who(
        &mut self,
        room: &RoomName,
        member: MemberId,
        remote: &[Name],
        unknown: Option<OthersUnknown>,
    ) {
        let local = self.roster.names(room).map(Name::as_str);
        let names: Vec<&str> = local
            .chain(remote.iter().map(Name::as_str))
            .take(who::MAX_NAMES)
            .collect();
        let frame = member_list_across_nodes(room, &names, unknown);
        self.shards.deliver(
            member.shard,
            Arc::from(vec![Delivery {
                frame: frame.into(),
                to: Audience::Member(member),
            }]),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::super::Conn;
    use super::super::harness::{Harness, bulk, member, name, payload, room};
    use super::*;
    use crate::cluster::wire::NodeId;
    use crate::peer::Peer as _;
    use crate::stats::Section as _;

    /// Redis's reply to HSCAN: a cursor and field/value pairs.
    fn hscan_reply(cursor: &str, pairs: &[(String, &str)]) -> String {
        let mut out = format!("*2\r\n{}*{}\r\n", bulk(cursor), pairs.len() * 2);
        for (field, name) in pairs {
            out += &bulk(field);
            out += &bulk(name);
        }
        out
    }

    fn field(node: u64, epoch: u64, member: u64) -> String {
        WhoField {
            node: NodeId(node),
            epoch,
            member,
        }
        .encode()
    }

    /// The text of the `/who` reply chat words for these names and note.
    fn who_reply(room: &RoomName, names: &[&str], unknown: Option<OthersUnknown>) -> String {
        String::from_utf8(payload(&member_list_across_nodes(room, names, unknown))).unwrap()
    }

    #[test]
    fn a_roster_change_writes_one_field_of_the_room() {
        let mut h = Harness::up();
        let (r, t) = (room("r"), h.at(1));
        h.epoch = 0xe;
        for (conn, n) in [(1, "ann"), (2, "bob"), (3, "cy")] {
            h.link.roster_changed(&r, member(conn), Some(&name(n)));
        }
        h.requests(t);
        let (f1, f2, f3) = (field(1, 0xe, 1), field(1, 0xe, 2), field(1, 0xe, 3));
        assert_eq!(
            h.written(Conn::Cmd),
            [
                ["HSET", "wschat:who:r", &f1, "ann"],
                ["HSET", "wschat:who:r", &f2, "bob"],
                ["HSET", "wschat:who:r", &f3, "cy"],
            ]
        );
        // /nick: one field; /nick to the same name: nothing; a leave: one field.
        h.link.roster_changed(&r, member(2), Some(&name("bee")));
        h.link.roster_changed(&r, member(2), Some(&name("bee")));
        h.link.roster_changed(&r, member(1), None);
        h.requests(t);
        assert_eq!(
            h.written(Conn::Cmd),
            [
                vec!["HSET", "wschat:who:r", &f2, "bee"],
                vec!["HDEL", "wschat:who:r", &f1],
            ]
        );
        // While the link is down only the copy changes; the reconnect writes it whole, in
        // the new epoch (after the liveness key that makes it look alive), a bounded number
        // of fields per command.
        h.handle_failure("reset".into());
        assert!(h.poll_close(t));
        for conn in 10..(10 + 2 * FIELDS_PER_COMMAND) {
            h.link.roster_changed(&r, member(conn), Some(&name("x")));
        }
        h.link
            .roster_changed(&room("s"), member(1000), Some(&name("y")));
        h.requests(t);
        assert!(h.written(Conn::Cmd).is_empty());
        let now = h.poll_timeout();
        h.handle_connected(now);
        let epoch = h.epoch;
        let written = h.written(Conn::Cmd);
        assert_eq!(written[0][0], "CLIENT");
        assert_eq!(
            written[1][..3],
            [
                "SET",
                "wschat:node:0000000000000001",
                &wire::epoch_value(epoch)
            ]
        );
        let hsets = &written[2..];
        assert_eq!(hsets.len(), 4, "3 chunks for r, 1 for s");
        let fields: usize = hsets.iter().map(|c| (c.len() - 2) / 2).sum();
        assert_eq!(fields, 2 + 2 * FIELDS_PER_COMMAND + 1);
        assert!(hsets.iter().all(|c| c.len() <= 2 + 2 * FIELDS_PER_COMMAND));
        let in_epoch = format!(":{:016x}:", epoch);
        assert!(hsets.iter().all(|c| c[2].contains(&in_epoch)));
    }

    #[test]
    fn who_reads_the_room_a_page_at_a_time_and_answers_through_chat() {
        let mut h = Harness::up();
        let (r, asker, t) = (room("r"), member(1), h.at(1));
        h.epoch = 5;
        h.link.roster_changed(&r, asker, Some(&name("ann")));
        h.requests(t);
        h.written(Conn::Cmd);

        h.link.who(&r, asker);
        h.requests(t);
        assert_eq!(
            h.written(Conn::Cmd),
            [["HSCAN", "wschat:who:r", "0", "COUNT", "256"]]
        );
        let page = hscan_reply(
            "42",
            &[
                (field(1, 5, 1), "ann"),
                (field(1, 4, 9), "left"),
                (field(2, 7, 2), "dee"),
            ],
        );
        // The HSET's reply, then the page.
        h.handle_input(Conn::Cmd, format!(":1\r\n{page}").as_bytes(), t);
        assert_eq!(
            h.written(Conn::Cmd),
            [
                vec!["HDEL", "wschat:who:r", &field(1, 4, 9)],
                vec!["HSCAN", "wschat:who:r", "42", "COUNT", "256"],
            ]
        );
        let last = hscan_reply("0", &[(field(2, 7, 1), "bo"), (field(3, 1, 1), "dead")]);
        // The HDEL's reply, then the last page.
        h.handle_input(Conn::Cmd, format!(":1\r\n{last}").as_bytes(), t);
        assert_eq!(
            h.written(Conn::Cmd),
            [[
                "MGET",
                "wschat:node:0000000000000002",
                "wschat:node:0000000000000003"
            ]]
        );
        assert!(h.replies().is_empty());
        let alive = format!("*2\r\n{}$-1\r\n", bulk(&wire::epoch_value(7)));
        h.handle_input(Conn::Cmd, alive.as_bytes(), t);
        assert_eq!(h.replies(), [who_reply(&r, &["ann", "bo", "dee"], None)]);
        assert_eq!(
            h.written(Conn::Cmd),
            [["HDEL", "wschat:who:r", &field(3, 1, 1)]]
        );
        assert_eq!(h.who_pending, 0);
        assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 0);
    }

    #[test]
    fn who_in_flight_is_bounded_and_answered_when_the_link_drops() {
        let mut h = Harness::up();
        let (r, t) = (room("r"), h.at(1));
        for conn in 0..MAX_WHO_PENDING + 3 {
            h.link.who(&r, member(conn));
        }
        h.requests(t);
        assert_eq!(h.who_pending, MAX_WHO_PENDING);
        assert_eq!(h.link.report()["who_refused"], 3);
        let busy = who_reply(&r, &[], Some(OthersUnknown::Busy));
        assert_eq!(h.replies(), vec![busy; 3]);

        h.handle_failure("test".into());
        assert!(h.poll_close(t));
        let down = who_reply(&r, &[], Some(OthersUnknown::NoLink));
        assert_eq!(h.replies(), vec![down.clone(); MAX_WHO_PENDING]);
        assert_eq!(h.who_pending, 0);

        // While the link is down, /who is answered at once from this node alone.
        h.link.who(&r, member(0));
        h.requests(t);
        assert_eq!(h.replies(), [down]);
        assert!(h.written(Conn::Cmd).is_empty());
    }

    #[test]
    fn who_lists_a_bounded_number_of_names() {
        let mut h = Harness::up();
        let (r, t) = (room("r"), h.at(1));
        for conn in 0..who::MAX_NAMES + 50 {
            let n = name(&format!("m{conn}"));
            h.link.roster_changed(&r, member(conn), Some(&n));
        }
        h.requests(t);
        h.written(Conn::Cmd);
        h.link.who(&r, member(0));
        h.requests(t);
        assert!(
            h.written(Conn::Cmd).is_empty(),
            "this node alone fills the reply: no query"
        );
        // Names past the bound never reach chat's wording (which may shorten it further).
        let names: Vec<String> = (0..who::MAX_NAMES).map(|i| format!("m{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(h.replies(), [who_reply(&r, &names, None)]);
    }
}
