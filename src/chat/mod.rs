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
//! Costs a hostile member cannot inflate: joining, leaving and renaming are O(log room) (index
//! maps, never a scan of the room), `/who` answers with one cached frame of at most
//! [`WHO_REPLY_MAX`] bytes shared by every asker until the room changes, and commands draw on
//! a per-member [`CommandBudget`].
//!
//! Must never: do I/O, read the clock (time is passed in), know about threads or sockets.

pub mod names;
pub mod nodes;
pub mod route;

use std::collections::{BTreeMap, HashMap};
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
/// Every operation is O(log room) or cached: the caller may hold a lock around it.
#[derive(Debug)]
pub struct Roster<M> {
    rooms: HashMap<RoomName, RoomRoster<M>>,
}

/// One room's members in join order, with an index to find a member without a scan.
#[derive(Debug)]
struct RoomRoster<M> {
    /// Join number -> member and name; iterating gives the join order.
    by_join: BTreeMap<u64, (M, Name)>,
    join_of: HashMap<M, u64>,
    joins: u64,
    /// The `/who` reply, built by the first `/who` after a change and shared by the next.
    who: Option<SharedFrame>,
}

impl<M> Default for Roster<M> {
    fn default() -> Self {
        Roster {
            rooms: HashMap::new(),
        }
    }
}

impl<M: Copy + Eq + Hash> Roster<M> {
    fn add(&mut self, room: &RoomName, member: M, name: &Name) {
        let list = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| RoomRoster {
                by_join: BTreeMap::new(),
                join_of: HashMap::new(),
                joins: 0,
                who: None,
            });
        list.joins += 1;
        if let Some(earlier) = list.join_of.insert(member, list.joins) {
            list.by_join.remove(&earlier);
        }
        list.by_join.insert(list.joins, (member, name.clone()));
        list.who = None;
    }

    fn remove(&mut self, room: &RoomName, member: M) {
        if let Some(list) = self.rooms.get_mut(room)
            && let Some(join) = list.join_of.remove(&member)
        {
            list.by_join.remove(&join);
            list.who = None;
            if list.join_of.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    fn rename(&mut self, room: &RoomName, member: M, name: &Name) {
        if let Some(list) = self.rooms.get_mut(room)
            && let Some(join) = list.join_of.get(&member)
            && let Some((_, old)) = list.by_join.get_mut(join)
        {
            *old = name.clone();
            list.who = None;
        }
    }

    /// The `/who` reply for `room`: built at most once per change of the room, in
    /// O([`WHO_REPLY_MAX`]) whatever the room's size.
    pub fn who_reply(&mut self, room: &RoomName) -> SharedFrame {
        let Some(list) = self.rooms.get_mut(room) else {
            return member_list(room, &[]);
        };
        list.who
            .get_or_insert_with(|| {
                let names = list.by_join.values().map(|(_, n)| n.as_str());
                bounded_member_list(room, names, list.join_of.len())
            })
            .clone()
    }

    /// The names in `room`, in join order.
    pub fn names(&self, room: &RoomName) -> Vec<&str> {
        self.rooms.get(room).map_or_else(Vec::new, |list| {
            list.by_join.values().map(|(_, n)| n.as_str()).collect()
        })
    }
}

#[derive(Debug)]
struct MemberState {
    name: Name,
    room: RoomName,
    /// Where the member stands in its room's list here (`Chat::rooms`).
    slot: usize,
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
    members: HashMap<M, MemberState>,
}

impl<M> Default for Chat<M> {
    fn default() -> Self {
        Chat {
            rooms: HashMap::new(),
            members: HashMap::new(),
        }
    }
}

impl<M: Copy + Eq + Hash> Chat<M> {
    /// Adds `member` to `room`; the others get `"<name> just connected"`.
    pub fn join(
        &mut self,
        roster: &mut Roster<M>,
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
        roster.add(&room, member, &name);
        let list = self.rooms.entry(room.clone()).or_default();
        let slot = list.len();
        list.push(member);
        self.members.insert(
            member,
            MemberState {
                name,
                room,
                slot,
                commands: None,
            },
        );
    }

    /// Removes `member` (if present); the others get `"<name> disconnected"`.
    pub fn leave(&mut self, roster: &mut Roster<M>, member: M, out: &mut Vec<Delivery<M>>) {
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
        roster.remove(&state.room, member);
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
        roster: &mut Roster<M>,
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
                roster.rename(&state.room, member, &new);
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
