//! `/who` across nodes, pure: this node's members as the rooms' `/who` hashes hold them, and
//! the gathering of the other nodes' members from those hashes, bounded.
//!
//! Owns: [`LocalRoster`], the broker's copy of this node's members (room, join number, name),
//! from which it writes one field per member ([`wire::WhoField`]) and rewrites them all after
//! a reconnect; and [`Query`], one `/who` in progress. Must never: do I/O (the broker sends
//! the commands these decide and hands back the replies), write more than the changed
//! member's field for a join, rename or leave, or hold more of a room than a reply can list.
//!
//! # Why the bounds are what they are
//! A `/who` reply is one line for a person to read: [`MAX_NAMES`] names is already more than
//! that, and `chat::member_list` shortens long lists further. So a query keeps at most
//! [`MAX_NAMES`] names (this node's members first), reads the room's hash a page at a time
//! (HSCAN, [`PAGE`] fields a page, at most [`MAX_PAGES`] pages) instead of all of it at once
//! (HGETALL: a reply, and work at Redis, as large as the room), and stops once it has its
//! names. It remembers at most [`MAX_FIELDS`] fields (for deleting those of dead nodes) and
//! [`MAX_GROUPS`] node epochs (one MGET of liveness keys). A room larger than that is listed
//! in part; which members are listed is then up to the order of the hash.

use std::collections::{BTreeMap, HashMap};

use super::resp::Value;
use super::wire::{self, NodeId, WhoField};
use crate::chat::{Name, RoomName};
use crate::peer::MemberId;

/// The most names a `/who` reply lists.
pub const MAX_NAMES: usize = 256;
/// Fields asked for per HSCAN page (COUNT: a hint Redis may exceed a few times; a small
/// hash comes whole in one page). Each field and name is at most ~200 bytes on the wire, so
/// a page is well under the command connection's reply bound.
pub const PAGE: usize = 256;
/// Pages read per `/who` at most: bounds the work a `/who` costs Redis and us.
pub const MAX_PAGES: u32 = 8;
/// Fields remembered per `/who` (kept names, and fields of possibly dead nodes to delete).
pub const MAX_FIELDS: usize = 4096;
/// Distinct (node, epoch) pairs per `/who`: one liveness key each in a single MGET. More
/// nodes than this in one room is far beyond what we deploy.
pub const MAX_GROUPS: usize = 64;

/// A write to this node's part of a room's `/who` hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldWrite {
    /// HSET of the member's field to its name.
    Set {
        room: RoomName,
        member: u64,
        name: Name,
    },
    /// HDEL of the member's field.
    Del { room: RoomName, member: u64 },
}

/// This node's members by room, in join order, as the `/who` hashes should hold them.
/// Entries go with the member, and a room's with its last member.
#[derive(Debug, Default)]
pub struct LocalRoster {
    /// Member -> its room and join number (which names its field).
    members: HashMap<MemberId, (RoomName, u64)>,
    /// Room -> join number -> name.
    rooms: HashMap<RoomName, BTreeMap<u64, Name>>,
    /// The last join number given.
    joins: u64,
}

impl LocalRoster {
    /// `member` of `room` is now called `name` (a join or a rename), or left (`None`).
    /// Appends to `out` the field writes that bring the room's hash up to date: one for a
    /// join, a leave or a rename, none for a rename to the same name.
    pub fn change(
        &mut self,
        room: &RoomName,
        member: MemberId,
        name: Option<Name>,
        out: &mut Vec<FieldWrite>,
    ) {
        let current = self.members.get(&member).cloned();
        match (current, name) {
            (Some((at, no)), Some(name)) if at == *room => {
                let slot = self.rooms.get_mut(room).and_then(|list| list.get_mut(&no));
                if let Some(slot) = slot
                    && *slot != name
                {
                    *slot = name.clone();
                    out.push(FieldWrite::Set {
                        room: at,
                        member: no,
                        name,
                    });
                }
            }
            (current, name) => {
                // A leave, a join, or (never in practice) a member seen in another room
                // without its leave: both writes, so the hashes stay right anyway.
                if let Some((at, no)) = current {
                    self.members.remove(&member);
                    if let Some(list) = self.rooms.get_mut(&at) {
                        list.remove(&no);
                        if list.is_empty() {
                            self.rooms.remove(&at);
                        }
                    }
                    out.push(FieldWrite::Del {
                        room: at,
                        member: no,
                    });
                }
                if let Some(name) = name {
                    self.joins += 1;
                    let no = self.joins;
                    self.members.insert(member, (room.clone(), no));
                    let list = self.rooms.entry(room.clone()).or_default();
                    list.insert(no, name.clone());
                    out.push(FieldWrite::Set {
                        room: room.clone(),
                        member: no,
                        name,
                    });
                }
            }
        }
    }

    /// The names of this node's members of `room`, in join order.
    pub fn names(&self, room: &RoomName) -> impl Iterator<Item = &Name> {
        self.rooms.get(room).into_iter().flat_map(BTreeMap::values)
    }

    /// How many members of `room` are on this node.
    pub fn count(&self, room: &RoomName) -> usize {
        self.rooms.get(room).map_or(0, BTreeMap::len)
    }

    /// Every room with members here, with its members (join number -> name).
    pub fn rooms(&self) -> impl Iterator<Item = (&RoomName, &BTreeMap<u64, Name>)> {
        self.rooms.iter()
    }
}

/// One `/who` in progress: the other nodes' members found so far, bounded.
#[derive(Debug)]
pub struct Query {
    pub room: RoomName,
    pub member: MemberId,
    pages: u32,
    /// Names still to keep ([`MAX_NAMES`] less this node's members).
    budget: usize,
    groups: Vec<Group>,
    /// Fields remembered in `groups`.
    held: usize,
}

/// The fields of one node written in one epoch.
#[derive(Debug)]
struct Group {
    node: NodeId,
    epoch: u64,
    /// Join number, and the name if it is to be listed (the budget was not spent).
    members: Vec<(u64, Option<Name>)>,
}

/// What to ask after a page of the room's hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The next page, from this cursor.
    Scan(Vec<u8>),
    /// Which of these nodes are alive, and in which epoch (MGET of their liveness keys, in
    /// this order); then [`Query::handle_alive`].
    Alive(Vec<NodeId>),
    /// No other node's members: answer with this node's.
    Done,
}

/// What one page taught.
#[derive(Debug)]
pub struct Page {
    pub next: Next,
    /// This node's fields from an earlier epoch (members who left while the link was down):
    /// to delete.
    pub own_stale: Vec<WhoField>,
    /// Malformed entries (fields not ours, names no client could have), skipped.
    pub bad: usize,
}

/// What the liveness keys decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// The live nodes' members, by node, each node's in join order.
    pub names: Vec<Name>,
    /// Fields of nodes that are dead or wrote them in an earlier epoch: to delete.
    pub stale: Vec<WhoField>,
}

impl Query {
    /// A `/who` of `member`'s in `room`, where this node lists `local` members itself.
    pub fn new(room: RoomName, member: MemberId, local: usize) -> Query {
        Query {
            room,
            member,
            pages: 0,
            budget: MAX_NAMES.saturating_sub(local),
            groups: Vec::new(),
            held: 0,
        }
    }

    /// Takes one HSCAN reply (`[cursor, [field, name, ...]]`) of the room's hash; `me` and
    /// `epoch` are this node's, whose current fields it lists itself.
    pub fn handle_page(&mut self, me: NodeId, epoch: u64, value: &Value) -> Page {
        let mut page = Page {
            next: Next::Done,
            own_stale: Vec::new(),
            bad: 0,
        };
        let (cursor, items) = match value.as_array() {
            Some([cursor, items]) => (cursor.as_bytes(), items.as_array()),
            _ => (None, None),
        };
        let Some(items) = items else {
            // An error reply is reported where replies are read; anything else is ours.
            page.bad = usize::from(!matches!(value, Value::Error(_)));
            page.next = self.after_scan();
            return page;
        };
        page.bad = items.len() % 2;
        for pair in items.chunks_exact(2) {
            let Some(field) = pair[0].as_bytes().and_then(WhoField::parse) else {
                page.bad += 1;
                continue;
            };
            if field.node == me {
                if field.epoch != epoch {
                    page.own_stale.push(field);
                }
                continue;
            }
            if self.held >= MAX_FIELDS {
                continue;
            }
            let name = pair[1]
                .as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| Name::parse(s).ok());
            let Some(name) = name else {
                page.bad += 1;
                continue;
            };
            let at = self
                .groups
                .iter()
                .position(|g| g.node == field.node && g.epoch == field.epoch);
            let group = match at {
                Some(i) => &mut self.groups[i],
                None if self.groups.len() < MAX_GROUPS => {
                    self.groups.push(Group {
                        node: field.node,
                        epoch: field.epoch,
                        members: Vec::new(),
                    });
                    let last = self.groups.len() - 1;
                    &mut self.groups[last]
                }
                None => continue,
            };
            let listed = if self.budget > 0 {
                self.budget -= 1;
                Some(name)
            } else {
                None
            };
            group.members.push((field.member, listed));
            self.held += 1;
        }
        self.pages += 1;
        page.next = match cursor {
            Some(cursor)
                if cursor != b"0"
                    && self.budget > 0
                    && self.pages < MAX_PAGES
                    && self.held < MAX_FIELDS =>
            {
                Next::Scan(cursor.to_vec())
            }
            _ => self.after_scan(),
        };
        page
    }

    fn after_scan(&self) -> Next {
        if self.groups.is_empty() {
            Next::Done
        } else {
            Next::Alive(self.nodes())
        }
    }

    /// The distinct nodes found, in the order first found.
    fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = Vec::new();
        for g in &self.groups {
            if !nodes.contains(&g.node) {
                nodes.push(g.node);
            }
        }
        nodes
    }

    /// Takes the MGET reply for [`Next::Alive`]'s nodes: a node's fields count if its
    /// liveness key holds the epoch they were written in. `None` if the reply is not what
    /// MGET returns (then nothing is deleted).
    pub fn handle_alive(self, value: &Value) -> Option<Found> {
        let nodes = self.nodes();
        let values = value.as_array()?;
        if values.len() != nodes.len() {
            return None;
        }
        let mut found = Found {
            names: Vec::new(),
            stale: Vec::new(),
        };
        let mut groups = self.groups;
        groups.sort_by_key(|g| (g.node, g.epoch));
        for mut group in groups {
            let live = nodes
                .iter()
                .position(|n| *n == group.node)
                .and_then(|i| values.get(i))
                .and_then(Value::as_bytes)
                .and_then(wire::parse_epoch)
                == Some(group.epoch);
            if live {
                group.members.sort_by_key(|(no, _)| *no);
                found
                    .names
                    .extend(group.members.into_iter().filter_map(|(_, name)| name));
            } else {
                found
                    .stale
                    .extend(group.members.iter().map(|(no, _)| WhoField {
                        node: group.node,
                        epoch: group.epoch,
                        member: *no,
                    }));
            }
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn m(conn: usize) -> MemberId {
        MemberId { shard: 0, conn }
    }

    fn bulk(b: impl AsRef<[u8]>) -> Value {
        Value::Bulk(Some(b.as_ref().to_vec()))
    }

    fn field(node: u64, epoch: u64, member: u64) -> WhoField {
        WhoField {
            node: NodeId(node),
            epoch,
            member,
        }
    }

    /// An HSCAN reply with `cursor` and these (field, name) pairs.
    fn page(cursor: &str, entries: &[(WhoField, &str)]) -> Value {
        let mut items = Vec::new();
        for (f, n) in entries {
            items.push(bulk(f.encode()));
            items.push(bulk(n));
        }
        Value::Array(Some(vec![bulk(cursor), Value::Array(Some(items))]))
    }

    fn names(list: &[Name]) -> Vec<&str> {
        list.iter().map(Name::as_str).collect()
    }

    #[test]
    fn a_roster_change_writes_only_the_changed_members_field() {
        let mut roster = LocalRoster::default();
        let (r, mut out) = (room("r"), Vec::new());
        for (conn, n) in [(1, "ann"), (2, "bob"), (3, "cy")] {
            roster.change(&r, m(conn), Some(name(n)), &mut out);
        }
        assert_eq!(out.len(), 3);
        out.clear();

        // A rename: one field. The same name again: nothing.
        roster.change(&r, m(2), Some(name("bee")), &mut out);
        assert_eq!(
            out,
            [FieldWrite::Set {
                room: r.clone(),
                member: 2,
                name: name("bee")
            }]
        );
        out.clear();
        roster.change(&r, m(2), Some(name("bee")), &mut out);
        assert!(out.is_empty());

        // A leave: one field.
        roster.change(&r, m(1), None, &mut out);
        assert_eq!(
            out,
            [FieldWrite::Del {
                room: r.clone(),
                member: 1
            }]
        );
        let listed: Vec<&str> = roster.names(&r).map(Name::as_str).collect();
        assert_eq!(listed, ["bee", "cy"]);
        assert_eq!(roster.count(&r), 2);

        // The same connection id joining again is a new member with a new field.
        out.clear();
        roster.change(&r, m(1), Some(name("ann")), &mut out);
        assert!(matches!(&out[..], [FieldWrite::Set { member: 4, .. }]));
    }

    #[test]
    fn a_room_is_forgotten_with_its_last_member() {
        let mut roster = LocalRoster::default();
        let mut out = Vec::new();
        for i in 0..100 {
            let r = room(&format!("room-{i}"));
            roster.change(&r, m(i), Some(name("x")), &mut out);
            roster.change(&r, m(i), None, &mut out);
        }
        assert_eq!(roster.rooms().count(), 0);
        assert!(roster.members.is_empty() && roster.rooms.is_empty());
        // Leaving twice, or without a join, writes nothing.
        out.clear();
        roster.change(&room("r"), m(1), None, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_query_lists_live_nodes_in_join_order_and_deletes_what_is_stale() {
        let (me, epoch) = (NodeId(1), 10);
        let mut q = Query::new(room("r"), m(0), 2);
        let first = q.handle_page(
            me,
            epoch,
            &page(
                "17",
                &[
                    (field(1, 10, 1), "mine"), // listed locally: skipped
                    (field(1, 9, 5), "gone"),  // mine, an earlier epoch: stale
                    (field(2, 20, 3), "b3"),   // node 2, live epoch
                    (field(3, 30, 1), "c1"),   // node 3: dead
                    (field(2, 19, 1), "old"),  // node 2, an earlier epoch
                    (field(2, 20, 1), "b1"),   // joined before b3
                ],
            ),
        );
        assert_eq!(first.own_stale, [field(1, 9, 5)]);
        assert_eq!(first.bad, 0);
        assert_eq!(first.next, Next::Scan(b"17".to_vec()));
        let second = q.handle_page(
            me,
            epoch,
            &Value::Array(Some(vec![
                bulk("0"),
                Value::Array(Some(vec![
                    bulk("not a field"),
                    bulk("x"),
                    bulk(field(2, 20, 9).encode()),
                    bulk("* cluster: fake notice"),
                    bulk(field(2, 20, 2).encode()),
                ])),
            ])),
        );
        assert_eq!(second.bad, 3, "a bad field, a bad name, an odd element");
        assert_eq!(second.next, Next::Alive(vec![NodeId(2), NodeId(3)]));
        let alive = Value::Array(Some(vec![bulk(wire::epoch_value(20)), Value::Bulk(None)]));
        let found = q.handle_alive(&alive).unwrap();
        assert_eq!(names(&found.names), ["b1", "b3"]);
        let mut stale = found.stale;
        stale.sort();
        assert_eq!(stale, [field(2, 19, 1), field(3, 30, 1)]);
    }

    #[test]
    fn a_query_keeps_at_most_its_budget_of_names_and_stops_reading() {
        // This node lists MAX_NAMES - 3 itself: three remote names at most.
        let mut q = Query::new(room("r"), m(0), MAX_NAMES - 3);
        let entries: Vec<(WhoField, &str)> = (0..10).map(|i| (field(2, 1, i), "n")).collect();
        let p = q.handle_page(NodeId(1), 1, &page("5", &entries));
        assert_eq!(
            p.next,
            Next::Alive(vec![NodeId(2)]),
            "budget spent: no next page"
        );
        let found = q
            .handle_alive(&Value::Array(Some(vec![bulk(wire::epoch_value(1))])))
            .unwrap();
        assert_eq!(found.names.len(), 3);
        // A dead node's fields are all deleted, listed or not.
        let mut q = Query::new(room("r"), m(0), MAX_NAMES - 3);
        q.handle_page(NodeId(1), 1, &page("0", &entries));
        let found = q
            .handle_alive(&Value::Array(Some(vec![Value::Bulk(None)])))
            .unwrap();
        assert!(found.names.is_empty());
        assert_eq!(found.stale.len(), 10);
        // This node alone fills the reply: nothing to keep, nothing asked.
        let mut q = Query::new(room("r"), m(0), MAX_NAMES + 5);
        assert_eq!(q.budget, 0);
        let p = q.handle_page(NodeId(1), 1, &page("5", &entries));
        assert_eq!(p.next, Next::Alive(vec![NodeId(2)]));
    }

    #[test]
    fn a_query_reads_a_bounded_number_of_pages_groups_and_fields() {
        let mut q = Query::new(room("r"), m(0), 0);
        q.budget = usize::MAX; // keep reading: only the page limit stops it
        let mut pages = 0;
        loop {
            pages += 1;
            let entries: Vec<(WhoField, &str)> =
                (0..100).map(|i| (field(1000 + i, 1, pages), "n")).collect();
            match q.handle_page(NodeId(1), 1, &page("9", &entries)).next {
                Next::Scan(_) => continue,
                Next::Alive(nodes) => {
                    assert_eq!(nodes.len(), MAX_GROUPS);
                    break;
                }
                Next::Done => panic!("fields were found"),
            }
        }
        assert_eq!(pages, MAX_PAGES as u64);
        assert_eq!(q.groups.len(), MAX_GROUPS);
        assert!(q.held <= MAX_FIELDS);

        let mut q = Query::new(room("r"), m(0), 0);
        q.budget = usize::MAX;
        let entries: Vec<(WhoField, &str)> = (0..(2 * MAX_FIELDS as u64))
            .map(|i| (field(2, 1, i), "n"))
            .collect();
        q.handle_page(NodeId(1), 1, &page("3", &entries));
        assert_eq!(q.held, MAX_FIELDS);
    }

    #[test]
    fn malformed_replies_delete_nothing() {
        let mut q = Query::new(room("r"), m(0), 0);
        let p = q.handle_page(NodeId(1), 1, &page("0", &[(field(2, 1, 1), "b")]));
        assert_eq!(p.next, Next::Alive(vec![NodeId(2)]));
        for bad in [
            Value::Error(b"ERR".to_vec()),
            Value::Array(Some(vec![])),
            Value::Integer(1),
        ] {
            let mut q = Query::new(room("r"), m(0), 0);
            q.handle_page(NodeId(1), 1, &page("0", &[(field(2, 1, 1), "b")]));
            assert_eq!(q.handle_alive(&bad), None);
        }
        // An HSCAN reply of the wrong shape ends the scan; an error reply is not counted
        // twice (the broker reports every error reply).
        let mut q = Query::new(room("r"), m(0), 0);
        assert_eq!(q.handle_page(NodeId(1), 1, &Value::Integer(3)).bad, 1);
        let p = q.handle_page(NodeId(1), 1, &Value::Error(b"WRONGTYPE".to_vec()));
        assert_eq!((p.bad, p.next), (0, Next::Done));
    }
}
