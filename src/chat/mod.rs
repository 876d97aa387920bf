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
//! Must never: do I/O, read the clock, know about threads or sockets.

pub mod names;
pub mod route;

use std::collections::HashMap;
use std::hash::Hash;

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
#[derive(Debug)]
pub struct Roster<M> {
    rooms: HashMap<RoomName, Vec<(M, Name)>>,
}

impl<M> Default for Roster<M> {
    fn default() -> Self {
        Roster {
            rooms: HashMap::new(),
        }
    }
}

impl<M: Copy + Eq> Roster<M> {
    fn add(&mut self, room: &RoomName, member: M, name: &Name) {
        let list = self.rooms.entry(room.clone()).or_default();
        list.push((member, name.clone()));
    }

    fn remove(&mut self, room: &RoomName, member: M) {
        if let Some(list) = self.rooms.get_mut(room) {
            list.retain(|(m, _)| *m != member);
            if list.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    fn rename(&mut self, room: &RoomName, member: M, name: &Name) {
        let entry = self
            .rooms
            .get_mut(room)
            .and_then(|list| list.iter_mut().find(|(m, _)| *m == member));
        if let Some((_, old)) = entry {
            *old = name.clone();
        }
    }

    /// The names in `room`, in join order.
    pub fn names(&self, room: &RoomName) -> Vec<&str> {
        self.rooms.get(room).map_or_else(Vec::new, |list| {
            list.iter().map(|(_, n)| n.as_str()).collect()
        })
    }
}

#[derive(Debug)]
struct MemberState {
    name: Name,
    room: RoomName,
}

/// The chat state of the members one owner (a shard) holds, keyed by a member handle `M`
/// that is unique across the server, so that a delivery planned here can be resolved by any
/// shard.
#[derive(Debug)]
pub struct Chat<M> {
    /// Members of each room in join order.
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
        out.push(Delivery {
            frame: text_frame(&[name.as_str(), " just connected"]).into(),
            to: Audience::Room {
                room: room.clone(),
                except: member,
            },
        });
        roster.add(&room, member, &name);
        self.rooms.entry(room.clone()).or_default().push(member);
        self.members.insert(member, MemberState { name, room });
    }

    /// Removes `member` (if present); the others get `"<name> disconnected"`.
    pub fn leave(&mut self, roster: &mut Roster<M>, member: M, out: &mut Vec<Delivery<M>>) {
        let Some(state) = self.members.remove(&member) else {
            return;
        };
        if let Some(list) = self.rooms.get_mut(&state.room) {
            list.retain(|m| *m != member);
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

    /// Plans any [`Intent`] of `member`'s.
    pub fn apply(
        &mut self,
        roster: &mut Roster<M>,
        member: M,
        intent: Intent,
        out: &mut Vec<Delivery<M>>,
    ) {
        let Some(intent) = self.apply_local(member, intent, out) else {
            return;
        };
        let Some(state) = self.members.get_mut(&member) else {
            return;
        };
        let delivery = match intent {
            Intent::Rename(new) => {
                roster.rename(&state.room, member, &new);
                let old = std::mem::replace(&mut state.name, new.clone());
                Delivery {
                    frame: text_frame(&[old.as_str(), " is now ", new.as_str()]).into(),
                    to: Audience::Room {
                        room: state.room.clone(),
                        except: member,
                    },
                }
            }
            Intent::ListMembers => Delivery {
                frame: member_list(&state.room, &roster.names(&state.room)).into(),
                to: Audience::Member(member),
            },
            Intent::ToRoom(_) | Intent::ToSender(_) => return, // handled by apply_local
        };
        out.push(delivery);
    }

    /// `member`'s current name, if it is a member here.
    pub fn name(&self, member: M) -> Option<&Name> {
        self.members.get(&member).map(|s| &s.name)
    }

    /// The room `member` is in, if it is a member here.
    pub fn room(&self, member: M) -> Option<&RoomName> {
        self.members.get(&member).map(|s| &s.room)
    }

    /// This owner's members of `room`, in join order.
    pub fn members(&self, room: &RoomName) -> &[M] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// How many members this owner holds.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
}

/// The answer to `/who`: `Members of <room>: <name>, ...` (names in the order given).
pub fn member_list(room: &RoomName, names: &[&str]) -> SharedFrame {
    text_frame(&["Members of ", room.as_str(), ": ", &names.join(", ")])
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
