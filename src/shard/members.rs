//! The chat glue: a member's message is interpreted here (or by a worker, work-queue) and
//! applied to the rooms; commands are held to the member's budget; joins, leaves and
//! renames are told to the peers.
//!
//! Owns: the shard's `Chat` state and the `members` gauge. Must never: queue a frame on an
//! outbox (it plans deliveries; fanout.rs queues them) or take the roster's lock for an
//! ordinary message.

use super::State;
use super::conn::Role;
use super::work::{self, WorkDone, WorkItem};
use crate::chat::{self, Audience, Delivery, Intent};
use crate::io::ConnId;
use crate::peer::MemberId;
use crate::stats::{bump, set};
use crate::ws::{CloseCode, Message};

impl State {
    pub(super) fn on_message(&mut self, id: ConnId, message: Message) {
        let member = self.member(id);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        match conn.role {
            Role::Echo => self.deliveries.push(Delivery {
                frame: chat::echo(&message).into(),
                to: Audience::Member(member),
            }),
            Role::Member => {
                let Some(name) = self.chat.name(member).cloned() else {
                    return;
                };
                if let Some(work) = &mut self.work {
                    work.submit(WorkItem {
                        conn: id,
                        serial: conn.serial,
                        name,
                        message,
                    });
                    conn.awaiting_work = true;
                    set(&self.stats.counters.queue_depth, work.depth() as u64);
                } else {
                    let intent = chat::interpret(&name, &message);
                    work::burn(self.config.work_cost);
                    self.act(member, intent);
                }
            }
            Role::Pending | Role::Http => {}
        }
    }

    /// A worker's result: apply it, then take the connection's next events.
    pub(super) fn work_done(&mut self, done: WorkDone) {
        let Some(conn) = self.conns.get_mut(done.conn) else {
            return; // closed meanwhile
        };
        if conn.serial != done.serial || !conn.awaiting_work {
            return; // a later connection with the same key
        }
        conn.awaiting_work = false;
        self.act(self.member(done.conn), done.intent);
        self.fan_out();
        self.pump(done.conn);
    }

    /// Plans what a member's message means; the roster's lock is taken only for `/nick` and
    /// `/who`. A command over the member's budget closes it (1008) instead.
    pub(super) fn act(&mut self, member: MemberId, intent: Intent) {
        if intent.is_command() && !self.chat.take_command(member, self.now) {
            self.close_flooder(member.conn);
            return;
        }
        if let Some(intent) = self.chat.apply_local(member, intent, &mut self.deliveries) {
            let Some(room) = self.chat.room(member).cloned() else {
                return;
            };
            // A peer may answer /who for the whole room (`--cluster`: every node's members).
            if matches!(intent, Intent::ListMembers)
                && self.hub.peers().any(|peer| peer.who(&room, member))
            {
                return;
            }
            let renamed =
                self.chat
                    .apply(&mut self.hub.roster(), member, intent, &mut self.deliveries);
            if renamed {
                let name = self.chat.name(member);
                for peer in self.hub.peers() {
                    peer.roster_changed(&room, member, name);
                }
            }
        }
    }

    pub(super) fn leave(&mut self, id: ConnId) {
        let member = self.member(id);
        if self.chat.name(member).is_some() {
            let room = self.chat.room(member).cloned();
            self.chat
                .leave(&mut self.hub.roster(), member, &mut self.deliveries);
            self.publish_members();
            if let Some(room) = room {
                for peer in self.hub.peers() {
                    peer.leave(&room);
                    peer.roster_changed(&room, member, None);
                }
            }
        }
    }

    /// Sets the `members` gauge at the join or leave itself, before the notice it plans can
    /// reach anyone: a client that saw the notice (through another loop, which may flush it
    /// before this loop's iteration ends) then finds the gauge counting it.
    pub(super) fn publish_members(&self) {
        set(
            &self.stats.counters.members,
            self.chat.member_count() as u64,
        );
    }

    pub(super) fn member(&self, conn: ConnId) -> MemberId {
        MemberId {
            shard: self.index,
            conn,
        }
    }

    /// Closes a connection that went over an input budget (1008); what it sent after the
    /// overrun and was already parsed is dropped with the close.
    pub(super) fn close_flooder(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.ws.close(CloseCode::POLICY_VIOLATION, self.now);
        bump(&self.stats.counters.flood_closes, 1);
    }
}
