//! The chat application, pure: rooms, names, join/leave notices, commands, and the fan-out
//! plan.
//!
//! Owns: who is in which room under which name, and what each event means to the others.
//! Every outgoing message is encoded into a WebSocket frame exactly once here, and the plan
//! (`Delivery`) names its audience instead of listing receivers, so that whoever holds the
//! connections (one shard, or each of several) resolves it without copying the frame.
//! Must never: do I/O, read the clock, know about threads or sockets.

pub mod names;
pub mod route;

use std::collections::HashMap;
use std::hash::Hash;

pub use names::{Name, NameError, RoomName};
pub use route::{Route, route};

use crate::ws::{Message, MessageKind, Opcode, SharedFrame, frame::server_frame};

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

/// One encoded frame and its audience.
#[derive(Debug, Clone)]
pub struct Delivery<M> {
    pub frame: SharedFrame,
    pub to: Audience<M>,
}

#[derive(Debug)]
struct MemberState {
    name: Name,
    room: RoomName,
}

/// The chat state of one server, keyed by a member handle `M` chosen by the caller.
#[derive(Debug)]
pub struct Chat<M> {
    /// Members of each room in join order (the order `/who` lists them).
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
    pub fn join(&mut self, member: M, room: RoomName, name: Name, out: &mut Vec<Delivery<M>>) {
        self.leave(member, out);
        out.push(Delivery {
            frame: text_frame(&[name.as_str(), " just connected"]),
            to: Audience::Room {
                room: room.clone(),
                except: member,
            },
        });
        self.rooms.entry(room.clone()).or_default().push(member);
        self.members.insert(member, MemberState { name, room });
    }

    /// Removes `member` (if present); the others get `"<name> disconnected"`.
    pub fn leave(&mut self, member: M, out: &mut Vec<Delivery<M>>) {
        let Some(state) = self.members.remove(&member) else {
            return;
        };
        if let Some(list) = self.rooms.get_mut(&state.room) {
            list.retain(|m| *m != member);
            if list.is_empty() {
                self.rooms.remove(&state.room);
            }
        }
        out.push(Delivery {
            frame: text_frame(&[state.name.as_str(), " disconnected"]),
            to: Audience::Room {
                room: state.room,
                except: member,
            },
        });
    }

    /// A complete message from `member`: text is a chat line or a command, binary is
    /// forwarded verbatim to the others.
    pub fn handle_message(&mut self, member: M, message: &Message, out: &mut Vec<Delivery<M>>) {
        let Some(state) = self.members.get(&member) else {
            return;
        };
        let room = state.room.clone();
        let delivery = match message.kind {
            MessageKind::Binary => Delivery {
                frame: server_frame(Opcode::Binary, &[&message.data]),
                to: Audience::Room {
                    room,
                    except: member,
                },
            },
            MessageKind::Text => {
                // The connection validated the UTF-8; a lossy view cannot differ from it.
                let text = String::from_utf8_lossy(&message.data);
                match text.strip_prefix('/') {
                    Some(command) => self.command(member, command),
                    None => Delivery {
                        frame: text_frame(&[state.name.as_str(), " says: ", &text]),
                        to: Audience::Room {
                            room,
                            except: member,
                        },
                    },
                }
            }
        };
        out.push(delivery);
    }

    /// Members of `room` in join order.
    pub fn members(&self, room: &RoomName) -> &[M] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    fn command(&mut self, member: M, command: &str) -> Delivery<M> {
        let reply = |text: &[&str]| Delivery {
            frame: text_frame(text),
            to: Audience::Member(member),
        };
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        match verb {
            "nick" => match Name::parse(arg) {
                Ok(new) => {
                    let Some(state) = self.members.get_mut(&member) else {
                        return reply(&["error: not in a room"]);
                    };
                    let old = std::mem::replace(&mut state.name, new.clone());
                    Delivery {
                        frame: text_frame(&[old.as_str(), " is now ", new.as_str()]),
                        to: Audience::Room {
                            room: state.room.clone(),
                            except: member,
                        },
                    }
                }
                Err(e) => reply(&["error: /nick <name>: ", &e.to_string()]),
            },
            "who" if arg.trim().is_empty() => {
                let Some(state) = self.members.get(&member) else {
                    return reply(&["error: not in a room"]);
                };
                let names: Vec<&str> = self
                    .members(&state.room)
                    .iter()
                    .filter_map(|m| self.members.get(m).map(|s| s.name.as_str()))
                    .collect();
                reply(&["Members of ", state.room.as_str(), ": ", &names.join(", ")])
            }
            _ => reply(&[
                "error: unknown command /",
                verb,
                " (commands: /nick <name>, /who)",
            ]),
        }
    }
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
