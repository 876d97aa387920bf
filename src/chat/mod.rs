//! The chat application, pure: rooms, names, join/leave notices, commands, and the fan-out
//! plan.
//!
//! Owns: who is in which room under which name, and what each event means to the others.
//! Every outgoing message is encoded into a WebSocket frame exactly once here, and the plan
//! (`Delivery`) names its audience instead of listing receivers, so that whoever holds the
//! connections (one shard, or each of several) resolves it without copying the frame.
//!
//! Three pieces, so that a server can split them across threads:
//! - [`interpret`]: message + sender's name -> [`Intent`]. Stateless: the CPU part.
//! - [`Chat`]: the members one shard holds. Plans deliveries for them.
//! - [`Roster`]: every member of the server by room, in join order, for `/who`. Touched by
//!   joins, leaves and renames only, never by a plain message.
//!
//! All the wording members read lives here, including what the cluster broker tells them
//! about the other nodes ([`nodes`]).
//!
//! Costs a hostile member cannot inflate: joining, leaving and renaming are O(log room)
//! amortized (a binary search for the member's [`Seat`], never a scan of the room), `/who` answers with one cached frame of at most
//! [`WHO_REPLY_MAX`] bytes shared by every asker until the room changes, and commands draw on
//! a per-member [`CommandBudget`].
//!
//! Must never: do I/O, read the clock (time is passed in), know about threads or sockets.

pub mod names;
pub mod nodes;
pub mod route;

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub use names::{Name, NameError, RoomName};
pub use route::{Route, route};

use crate::ws::{Message, MessageKind, Opcode, OutMessage, SharedFrame, frame::server_frame};

/// The browser chat page served on `GET /`.
pub const PAGE_HTML: &str = include_str!("page.html");

/// Who receives a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience<M> {
    /// Every member of `room` except `except` (the sender, or the member who left or joined).
    Room { room: RoomName, except: M },
    /// One member: a reply to a command, or an error.
    Member(M),
}

/// One encoded frame and its audience. The frame is encoded once; its compressed form, for
/// receivers that agreed to permessage-deflate, is computed at most once too, by whichever
/// shard first needs it (`OutMessage`).
#[derive(Debug, Clone)]
pub struct Delivery<M> {
    pub frame: OutMessage,
    pub to: Audience<M>,
}

/// What a member's message asks for, decided from the message and the sender's name alone.
///
/// [`interpret`] is the CPU part of handling a message (command parsing, validation, the one
/// encoding of the outgoing frame) and needs no chat state, so a pattern may run it on another
/// thread (work-queue); applying the intent to the state is cheap and stays with the owner.
#[derive(Debug, Clone)]
pub enum Intent {
    /// A frame for the others in the sender's room: a chat line, or a binary message verbatim.
    ToRoom(SharedFrame),
    /// A frame for the sender alone: the answer to a bad command.
    ToSender(SharedFrame),
    /// `/nick <name>`.
    Rename(Name),
    /// `/who`.
    ListMembers,
}

impl Intent {
    /// Whether the message was a command (`/...`), which draws on the [`CommandBudget`].
    pub fn is_command(&self) -> bool {
        !matches!(self, Intent::ToRoom(_))
    }
}

/// The largest `/who` reply payload: past it the list ends with `and N more`. A room of
/// thousands of long names would otherwise make every `/who` (a dozen bytes from the asker)
/// cost the server tens of kilobytes to queue.
pub const WHO_REPLY_MAX: usize = 4096;

/// How many commands a member may send in a burst, and how fast the allowance refills. A
/// person types a few commands a minute; a script flooding `/who` or `/nick` is closed (1008)
/// once the burst is spent.
#[derive(Debug, Clone, Copy)]
pub struct CommandBudget {
    tokens: u32,
    /// When `tokens` was last refilled.
    since: Instant,
}

impl CommandBudget {
    pub const BURST: u32 = 32;
    pub const PER_SECOND: u32 = 16;

    /// A full budget at `now`.
    pub fn new(now: Instant) -> CommandBudget {
        CommandBudget {
            tokens: Self::BURST,
            since: now,
        }
    }

    /// Takes one command's worth at `now`; false when the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let refill = Duration::from_secs(1) / Self::PER_SECOND;
        let elapsed = now.saturating_duration_since(self.since);
        let earned = (elapsed.as_nanos() / refill.as_nanos()).min(Self::BURST as u128) as u32;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(Self::BURST);
            // Keep the fraction of a token already earned, unless the bucket is full.
            self.since = if self.tokens == Self::BURST {
                now
            } else {
                self.since + refill * earned
            };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Reads a complete message from a member called `name`.
pub fn interpret(name: &Name, message: &Message) -> Intent {
    let text = match message.kind {
        MessageKind::Binary => {
            return Intent::ToRoom(server_frame(Opcode::Binary, &[&message.data]));
        }
        // The connection validated the UTF-8; a lossy view cannot differ from it.
        MessageKind::Text => String::from_utf8_lossy(&message.data),
    };
    let Some(command) = text.strip_prefix('/') else {
        return Intent::ToRoom(text_frame(&[name.as_str(), " says: ", &text]));
    };
    let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "nick" => match Name::parse(arg) {
            Ok(new) => Intent::Rename(new),
            Err(e) => Intent::ToSender(text_frame(&["error: /nick <name>: ", &e.to_string()])),
        },
        "who" if arg.trim().is_empty() => Intent::ListMembers,
        _ => Intent::ToSender(text_frame(&[
            "error: unknown command /",
            verb,
            " (commands: /nick <name>, /who)",
        ])),
    }
}

/// Who is in which room across the whole server, under which name, in join order: what `/who`
/// lists. A server has one, shared by its shards; it changes on join, leave and rename and is
/// read by `/who`, never touched by a plain message (the caller decides how it is shared).
/// Every operation is O(log room) amortized or cached: the caller may hold a lock around it.
///
/// It does not know the members' handles: a join hands back a [`Seat`], which the member's
/// owner keeps in the member's state (`MemberState.seat`, 8 B) and hands in again for a
/// rename or a leave. So there is no member -> place index here at all, which with the
/// per-room join order was most of what the roster cost (a `BTreeMap` by join number plus a
/// `HashMap` by member: ~108 B per member, results/memory/2026-12-06; now ~31 B, see
/// results/memory/2026-12-06-roster). Not a slot index kept in the member's state: the
/// members of one room live in several shards' `Chat`s, out of reach under this lock, so a
/// compaction could not rewrite their indices; a seat number never changes. Not a
/// `HashMap<M, u32>` either: with 16-byte handles its buckets are as big as the old map's.
#[derive(Debug, Default)]
pub struct Roster {
    rooms: HashMap<RoomName, RoomRoster>,
    /// The last seat number given out, in any room.
    seats: u64,
}

/// A member's place in the [`Roster`]: its join number. Numbers grow with every join
/// anywhere on the server and are never given out twice, so a room's seats are sorted by
/// number (a leave or rename finds its seat by binary search) and a stale seat can never name
/// another member. u64: a u32 would wrap after 4 billion joins, hours of churn for a hostile
/// client, and the member's state has no spare 4 bytes to save anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seat(u64);

/// One room's members in join order: a `Vec` of seats, 24 B each, that a leave empties in
/// place (a vacancy) instead of closing the gap, so that nobody's seat moves.
///
/// Why this shape: it needs no index besides the seat number the member's owner already
/// holds (binary search over the sorted numbers, O(log room)); a leave costs no shift of
/// the room; a rename overwrites the name where it stands, so the member keeps its place in
/// `/who`. The price is the vacancies, bounded two ways:
/// - when they are more than half of the seats, the room is compacted: O(seats), after at
///   least half that many leaves, so O(1) amortized per leave on top of its O(log room)
///   search. A room of N emptying at once costs O(N log N) in all, as the `BTreeMap` did,
///   and holds at most twice its members' seats at any time;
/// - a `/who` that reads past vacancies moves them behind `head`, where no later `/who` reads
///   them again, so each vacancy is read once and building a `/who` stays O([`WHO_REPLY_MAX`])
///   amortized whatever the room's size and churn.
#[derive(Debug)]
struct RoomRoster {
    /// Seat number and name (`None`: a vacancy), by seat number from `head` on. Before
    /// `head` only vacancies, in no particular order.
    seats: Vec<(Seat, Option<Name>)>,
    /// Where the seats that may be occupied begin.
    head: usize,
    /// Vacancies in `seats`, those before `head` included.
    vacant: usize,
    /// The `/who` reply, built by the first `/who` after a change and shared by the next.
    who: Option<SharedFrame>,
}

impl RoomRoster {
    /// Where `seat` is in `seats`, if it is still there (occupied or vacant).
    fn find(&self, seat: Seat) -> Option<usize> {
        self.seats[self.head..]
            .binary_search_by_key(&seat, |(s, _)| *s)
            .ok()
            .map(|i| self.head + i)
    }

    fn occupied(&self) -> usize {
        self.seats.len() - self.vacant
    }

    /// Drops every vacancy, keeping the order; gives back memory a crowd left behind.
    fn compact(&mut self) {
        self.seats.retain(|(_, name)| name.is_some());
        self.head = 0;
        self.vacant = 0;
        // Keeps room to double again before the next growth, so a room that shrinks and
        // grows back does not reallocate on every compaction.
        self.seats.shrink_to(self.seats.len() * 2);
    }

    /// After a `/who` read `read` seats from `head`: moves the vacancies among them behind
    /// `head` (the occupied seats slide towards the unread ones, keeping their order), so
    /// the next `/who` does not read them again. O(read).
    fn skip_vacancies(&mut self, read: usize) {
        let end = self.head + read;
        let mut to = end;
        for at in (self.head..end).rev() {
            if self.seats[at].1.is_some() {
                to -= 1;
                self.seats.swap(at, to);
            }
        }
        self.head = to;
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.seats[self.head..]
            .iter()
            .filter_map(|(_, name)| name.as_ref().map(Name::as_str))
    }
}

impl Roster {
    /// `name` joins `room` at the end of its join order; the returned seat finds it again.
    fn add(&mut self, room: &RoomName, name: &Name) -> Seat {
        self.seats += 1;
        let seat = Seat(self.seats);
        let list = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| RoomRoster {
                seats: Vec::new(),
                head: 0,
                vacant: 0,
                who: None,
            });
        list.seats.push((seat, Some(name.clone())));
        list.who = None;
        seat
    }

    fn remove(&mut self, room: &RoomName, seat: Seat) {
        let Some(list) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(at) = list.find(seat) else {
            return;
        };
        if list.seats[at].1.take().is_none() {
            return; // already vacant
        }
        list.vacant += 1;
        list.who = None;
        if list.occupied() == 0 {
            self.rooms.remove(room);
        } else if list.vacant * 2 > list.seats.len() {
            list.compact();
        }
    }

    fn rename(&mut self, room: &RoomName, seat: Seat, name: &Name) {
        if let Some(list) = self.rooms.get_mut(room)
            && let Some(at) = list.find(seat)
            && let Some(old) = &mut list.seats[at].1
        {
            *old = name.clone();
            list.who = None;
        }
    }

    /// The `/who` reply for `room`: built at most once per change of the room, in
    /// O([`WHO_REPLY_MAX`]) amortized whatever the room's size (see `RoomRoster`).
    pub fn who_reply(&mut self, room: &RoomName) -> SharedFrame {
        let Some(list) = self.rooms.get_mut(room) else {
            return member_list(room, &[]);
        };
        if let Some(who) = &list.who {
            return who.clone();
        }
        let mut read = 0;
        let names = list.seats[list.head..]
            .iter()
            .inspect(|_| read += 1)
            .filter_map(|(_, name)| name.as_ref().map(Name::as_str));
        let who = bounded_member_list(room, names, list.occupied());
        list.skip_vacancies(read);
        list.who = Some(who.clone());
        who
    }

    /// The names in `room`, in join order.
    pub fn names(&self, room: &RoomName) -> Vec<&str> {
        self.rooms
            .get(room)
            .map_or_else(Vec::new, |list| list.names().collect())
    }
}

#[derive(Debug)]
struct MemberState {
    name: Name,
    room: RoomName,
    /// Where the member stands in its room's list here (`Chat::rooms`).
    slot: usize,
    /// Where it stands in the server's [`Roster`].
    seat: Seat,
    /// What its commands may still cost; made by its first command, and boxed: most members
    /// never send one, and every member's entry would carry its 24 bytes.
    commands: Option<Box<CommandBudget>>,
}

/// The chat state of the members one owner (a shard) holds, keyed by a member handle `M`
/// that is unique across the server, so that a delivery planned here can be resolved by any
/// shard.
#[derive(Debug)]
pub struct Chat<M> {
    /// This owner's members of each room, in no particular order (fan-out order across
    /// receivers is not observable): a leave swaps the last member into the gap, O(1).
    rooms: HashMap<RoomName, Vec<M>>,
    members: Members<M>,
}

/// A member handle as one owner's [`Chat`] keys it: `local_index` is dense among the
/// handles the owner holds at once (a shard's connection key), so that their states sit in
/// one table indexed by it. A hash map of them cost about 120 bytes per member at 10,000
/// (72-byte entries in a table that doubles: results/memory/2026-12-06).
pub trait MemberHandle: Copy + Eq + Hash {
    fn local_index(self) -> usize;
}

/// The members' states by [`MemberHandle::local_index`]; each slot keeps its handle too, so
/// that a handle of another owner with the same index finds nothing.
#[derive(Debug)]
struct Members<M> {
    slots: Vec<Option<(M, MemberState)>>,
    len: usize,
}

impl<M: MemberHandle> Members<M> {
    fn get(&self, member: &M) -> Option<&MemberState> {
        match self.slots.get(member.local_index())? {
            Some((m, state)) if m == member => Some(state),
            _ => None,
        }
    }

    fn get_mut(&mut self, member: &M) -> Option<&mut MemberState> {
        match self.slots.get_mut(member.local_index())? {
            Some((m, state)) if m == member => Some(state),
            _ => None,
        }
    }

    /// Files `state` under `member`, replacing whatever held its index.
    fn insert(&mut self, member: M, state: MemberState) {
        let index = member.local_index();
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        if self.slots[index].replace((member, state)).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, member: &M) -> Option<MemberState> {
        let slot = self.slots.get_mut(member.local_index())?;
        if slot.as_ref().is_none_or(|(m, _)| m != member) {
            return None;
        }
        self.len -= 1;
        slot.take().map(|(_, state)| state)
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl<M> Default for Chat<M> {
    fn default() -> Self {
        Chat {
            rooms: HashMap::new(),
            members: Members {
                slots: Vec::new(),
                len: 0,
            },
        }
    }
}

impl<M: MemberHandle> Chat<M> {
    /// Room for the states of `members` members at once (address space: pages are touched
    /// as members come), so that the table does not grow by copying.
    pub fn reserve(&mut self, members: usize) {
        self.members.slots.reserve(members);
    }

    /// Adds `member` to `room`; the others get `"<name> just connected"`.
    pub fn join(
        &mut self,
        roster: &mut Roster,
        member: M,
        room: RoomName,
        name: Name,
        out: &mut Vec<Delivery<M>>,
    ) {
        self.leave(roster, member, out);
        // Every member of a room here shares one copy of its name (each request parsed its
        // own: 32 bytes per idle member, results/memory/2026-12-06).
        let room = match self.rooms.get_key_value(&room) {
            Some((shared, _)) => shared.clone(),
            None => room,
        };
        out.push(Delivery {
            frame: text_frame(&[name.as_str(), " just connected"]).into(),
            to: Audience::Room {
                room: room.clone(),
                except: member,
            },
        });
        let seat = roster.add(&room, &name);
        let list = self.rooms.entry(room.clone()).or_default();
        let slot = list.len();
        list.push(member);
        self.members.insert(
            member,
            MemberState {
                name,
                room,
                slot,
                seat,
                commands: None,
            },
        );
    }

    /// Removes `member` (if present); the others get `"<name> disconnected"`.
    pub fn leave(&mut self, roster: &mut Roster, member: M, out: &mut Vec<Delivery<M>>) {
        let Some(state) = self.members.remove(&member) else {
            return;
        };
        if let Some(list) = self.rooms.get_mut(&state.room) {
            list.swap_remove(state.slot);
            if let Some(&moved) = list.get(state.slot)
                && let Some(moved) = self.members.get_mut(&moved)
            {
                moved.slot = state.slot;
            }
            if list.is_empty() {
                self.rooms.remove(&state.room);
            }
        }
        roster.remove(&state.room, state.seat);
        out.push(Delivery {
            frame: text_frame(&[state.name.as_str(), " disconnected"]).into(),
            to: Audience::Room {
                room: state.room,
                except: member,
            },
        });
    }

    /// Plans what an [`Intent`] of `member`'s that needs no roster means (`ToRoom`,
    /// `ToSender`); returns the intent untouched when it does (`Rename`, `ListMembers`), so
    /// that the caller takes the roster's lock only then.
    pub fn apply_local(
        &self,
        member: M,
        intent: Intent,
        out: &mut Vec<Delivery<M>>,
    ) -> Option<Intent> {
        let Some(state) = self.members.get(&member) else {
            return None; // it left while its message was being interpreted
        };
        match intent {
            Intent::ToRoom(frame) => out.push(Delivery {
                frame: frame.into(),
                to: Audience::Room {
                    room: state.room.clone(),
                    except: member,
                },
            }),
            Intent::ToSender(frame) => out.push(Delivery {
                frame: frame.into(),
                to: Audience::Member(member),
            }),
            needs_roster => return Some(needs_roster),
        }
        None
    }

    /// Plans any [`Intent`] of `member`'s; true when it renamed the member (the roster
    /// changed), false otherwise (a rename to the same name changes nothing).
    pub fn apply(
        &mut self,
        roster: &mut Roster,
        member: M,
        intent: Intent,
        out: &mut Vec<Delivery<M>>,
    ) -> bool {
        let Some(intent) = self.apply_local(member, intent, out) else {
            return false;
        };
        let Some(state) = self.members.get_mut(&member) else {
            return false;
        };
        let (delivery, renamed) = match intent {
            // Nothing changes, so nobody is told (and no roster is rewritten).
            Intent::Rename(new) if new == state.name => return false,
            Intent::Rename(new) => {
                roster.rename(&state.room, state.seat, &new);
                let old = std::mem::replace(&mut state.name, new.clone());
                let notice = Delivery {
                    frame: text_frame(&[old.as_str(), " is now ", new.as_str()]).into(),
                    to: Audience::Room {
                        room: state.room.clone(),
                        except: member,
                    },
                };
                (notice, true)
            }
            Intent::ListMembers => {
                let reply = Delivery {
                    frame: roster.who_reply(&state.room).into(),
                    to: Audience::Member(member),
                };
                (reply, false)
            }
            Intent::ToRoom(_) | Intent::ToSender(_) => return false, // handled by apply_local
        };
        out.push(delivery);
        renamed
    }

    /// Charges one command to `member`'s [`CommandBudget`] at `now`; false when it is spent.
    /// A member no longer here is charged nothing (its command will be dropped anyway).
    pub fn take_command(&mut self, member: M, now: Instant) -> bool {
        self.members.get_mut(&member).is_none_or(|state| {
            state
                .commands
                .get_or_insert_with(|| Box::new(CommandBudget::new(now)))
                .take(now)
        })
    }

    /// `member`'s current name, if it is a member here.
    pub fn name(&self, member: M) -> Option<&Name> {
        self.members.get(&member).map(|s| &s.name)
    }

    /// The room `member` is in, if it is a member here.
    pub fn room(&self, member: M) -> Option<&RoomName> {
        self.members.get(&member).map(|s| &s.room)
    }

    /// This owner's members of `room`.
    pub fn members(&self, room: &RoomName) -> &[M] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// How many members this owner holds.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
}

/// The answer to `/who`: `Members of <room>: <name>, ...` (names in the order given), at
/// most [`WHO_REPLY_MAX`] bytes: a longer list ends with `, and <N> more`.
pub fn member_list(room: &RoomName, names: &[&str]) -> SharedFrame {
    bounded_member_list(room, names.iter().copied(), names.len())
}

/// [`member_list`] over the first names of a list of `total`; reads only as many as fit.
fn bounded_member_list<'a>(
    room: &RoomName,
    names: impl Iterator<Item = &'a str>,
    total: usize,
) -> SharedFrame {
    // Room for ", and <N> more" with any N a usize can hold.
    const SUFFIX_ROOM: usize = ", and  more".len() + 20;
    let mut text = format!("Members of {room}: ");
    for (listed, name) in names.enumerate() {
        let last = listed + 1 == total;
        let reserve = if last { 0 } else { SUFFIX_ROOM };
        let sep = if listed == 0 { 0 } else { 2 };
        if text.len() + sep + name.len() + reserve > WHO_REPLY_MAX {
            text.push_str(&format!(", and {} more", total - listed));
            break;
        }
        if listed > 0 {
            text.push_str(", ");
        }
        text.push_str(name);
    }
    text_frame(&[&text])
}

/// The frame that `/echo` sends back for `message`: same kind, same payload.
pub fn echo(message: &Message) -> SharedFrame {
    let opcode = match message.kind {
        MessageKind::Text => Opcode::Text,
        MessageKind::Binary => Opcode::Binary,
    };
    server_frame(opcode, &[&message.data])
}

fn text_frame(parts: &[&str]) -> SharedFrame {
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    server_frame(Opcode::Text, &parts)
}

#[cfg(test)]
mod tests;
