//! The rooms' channels: this node's events published, channels subscribed and unsubscribed
//! as rooms gain their first and lose their last local member, and what arrives on `Sub`:
//! confirmations (a waiting join may complete) and other nodes' events, checked for gaps.
//!
//! Must never: deliver an event larger than a client of this node could send, trust a
//! channel name or an envelope it did not check, or keep anything for a room after its last
//! local member left.

use std::time::Instant;

use super::commands::{Class, Expect};
use super::{Conn, Session};
use crate::chat::{self, Audience, Delivery, RoomName};
use crate::cluster::resp::Value;
use crate::cluster::wire::{self, Kind};
use crate::cluster::{BrokerCounters, REMOTE};
use crate::peer::MemberId;
use crate::stats::{bump, set};
use crate::ws::frame::{FrameHeader, server_frame};
use crate::ws::{Opcode, SharedFrame};

impl Session {
    /// Publishes a shard's room deliveries on their rooms' channels, each numbered in its
    /// room; while the link is down they are counted as not propagated.
    pub(super) fn publish(&mut self, deliveries: &[Delivery<MemberId>], now: Instant) {
        let mut payload = Vec::new();
        for delivery in deliveries {
            let Audience::Room { room, .. } = &delivery.to else {
                continue;
            };
            // Our own encoding of a complete unmasked frame: the header always parses.
            let Ok(Some((header, len))) = FrameHeader::parse(&delivery.frame) else {
                continue;
            };
            let kind = match header.opcode {
                Opcode::Text => Kind::Text,
                Opcode::Binary => Kind::Binary,
                _ => continue,
            };
            let link = &self.link;
            let seq = self
                .sequences
                .next_published(room, || link.has_members(room));
            if !self.up {
                // Delivered locally already; counted, never silently lost.
                bump(&self.stats.counters.cluster_not_propagated, 1);
                self.lost_while_down += 1;
                continue;
            }
            payload.clear();
            wire::encode_event(self.node, seq, kind, &delivery.frame[len..], &mut payload);
            let channel = wire::channel(room);
            // Refused over the backlog cap: counted there, like an event while down.
            let args: [&[u8]; 3] = [b"PUBLISH", channel.as_bytes(), &payload];
            self.command(Class::Publish, &args, Expect::Publish, now);
        }
    }

    /// Subscribes to the rooms' channels; their waiting joins complete on confirmation.
    pub(super) fn subscribe(&mut self, rooms: &[RoomName]) {
        if rooms.is_empty() {
            return;
        }
        let channels: Vec<String> = rooms.iter().map(wire::channel).collect();
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(channels.iter().map(|c| c.as_bytes()));
        if !self.sub_command(&args) {
            return; // the link fails: the reconnect subscribes every room with members
        }
        for room in rooms {
            self.subscribed.insert(room.clone());
            *self.pending_sub.entry(room.clone()).or_default() += 1;
        }
        set(
            &self.stats.counters.cluster_subscriptions,
            self.subscribed.len() as u64,
        );
    }

    /// The room's last local member left: unsubscribes, unless someone joined since.
    pub(super) fn unsubscribe(&mut self, room: RoomName) {
        if self.link.has_members(&room) {
            return; // someone joined again since: its Subscribe follows in the inbox
        }
        // Nobody here any more: forget everything kept for the room.
        self.sequences.forget(&room);
        self.link.forget_gaps(&room);
        self.restoring.remove(&room);
        if self.subscribed.remove(&room) && self.up {
            let channel = wire::channel(&room);
            self.sub_command(&[b"UNSUBSCRIBE", channel.as_bytes()]);
        }
        set(
            &self.stats.counters.cluster_subscriptions,
            self.subscribed.len() as u64,
        );
    }

    /// Handles the values decoded on `Sub`: subscription confirmations and events.
    pub(super) fn read_subscription(&mut self) {
        while let Some(value) = self.next_value(Conn::Sub) {
            match value.as_array() {
                Some([kind, channel, payload]) => {
                    match (kind.as_bytes(), channel.as_bytes(), payload) {
                        (Some(b"message"), Some(channel), Value::Bulk(Some(payload))) => {
                            self.on_message(channel, payload);
                        }
                        (Some(b"subscribe"), Some(channel), _) => self.on_subscribed(channel),
                        (Some(b"unsubscribe"), ..) => {}
                        _ => self.bad_input("unexpected push on the subscription connection"),
                    }
                }
                // PING in subscribe mode: ["pong", ""]; CLIENT SETNAME before it: +OK.
                Some([_, _]) => {}
                None if matches!(value, Value::Simple(_)) => {}
                _ => {
                    if let Value::Error(e) = &value {
                        self.bad_input(&format!("Redis error: {}", String::from_utf8_lossy(e)));
                    } else {
                        self.bad_input("unexpected value on the subscription connection");
                    }
                }
            }
        }
    }

    /// Redis confirmed a SUBSCRIBE: once every one asked for the room is confirmed, its
    /// waiting joins complete, and after a reconnect its members hear the link is back.
    fn on_subscribed(&mut self, channel: &[u8]) {
        let Some(room) = wire::room_of_channel(channel) else {
            return;
        };
        let Some(pending) = self.pending_sub.get_mut(&room) else {
            return;
        };
        *pending -= 1;
        if *pending == 0 {
            self.pending_sub.remove(&room);
            if self.link.mark_ready(&room) {
                self.shards.room_ready(&room);
            }
            if self.restoring.remove(&room) {
                self.notice(&room, &chat::nodes::link_restored());
            }
        }
    }

    /// Another node's event in a room: checked, numbered, and queued for the room's local
    /// members.
    pub(super) fn on_message(&mut self, channel: &[u8], payload: &[u8]) {
        let Some(room) = wire::room_of_channel(channel) else {
            self.bad_input("a message on a channel that is not a room");
            return;
        };
        // More than a client could have sent here: refused like a client's message would
        // be, but its sender and number are read, so that its members are told at once.
        let oversize = payload.len() > self.max_event;
        if oversize {
            BrokerCounters::bump(&self.link.counters.remote_oversize);
        }
        let decoded = if oversize {
            wire::decode_envelope(payload)
        } else {
            wire::decode_event(payload)
        };
        let event = match decoded {
            Ok(event) => event,
            Err(e) => {
                self.bad_input(&format!("bad event in room {}: {e:?}", room.as_str()));
                return;
            }
        };
        if event.node == self.node {
            return; // our own, delivered locally when it was sent
        }
        if !self.subscribed.contains(&room) {
            return; // unsubscribed meanwhile: nobody here to receive it
        }
        let missed = self.sequences.missed(&room, event.node, event.seq) + u64::from(oversize);
        if missed > 0 {
            self.gap(&room, &chat::nodes::messages_missed(missed));
        }
        if oversize {
            return;
        }
        let opcode = match event.kind {
            Kind::Text => Opcode::Text,
            Kind::Binary => Opcode::Binary,
        };
        bump(&self.stats.counters.cluster_received, 1);
        self.remote.push(Delivery {
            frame: server_frame(opcode, &[event.payload]).into(),
            to: Audience::Room {
                room,
                except: REMOTE,
            },
        });
    }

    /// Counts a gap in `room` and tells its local members with `notice`.
    pub(super) fn gap(&mut self, room: &RoomName, notice: &SharedFrame) {
        bump(&self.stats.counters.cluster_gaps, 1);
        self.link.count_gap(room);
        self.notice(room, notice);
    }

    fn notice(&mut self, room: &RoomName, frame: &SharedFrame) {
        self.remote.push(Delivery {
            frame: frame.clone().into(),
            to: Audience::Room {
                room: room.clone(),
                except: REMOTE,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use super::super::harness::{
        Harness, MAX_MESSAGE, event, message, payload, room, room_delivery, subscribed,
    };
    use super::super::sequence::MAX_PEERS;
    use super::*;
    use crate::cluster::BrokerMsg;
    use crate::cluster::wire::NodeId;
    use crate::peer::Peer as _;
    use crate::stats::Section as _;

    fn receive(h: &mut Harness, room: &RoomName, event: &[u8]) {
        let t = h.at(1);
        h.handle_input(Conn::Sub, &message(room, event), t);
    }

    #[test]
    fn the_first_joiner_waits_for_the_subscription_and_the_last_leave_unsubscribes() {
        let mut h = Harness::up();
        let (r, t) = (room("r"), h.at(1));
        assert!(!h.link.join(&r));
        assert!(!h.link.join(&r), "still waiting");
        h.requests(t);
        assert_eq!(h.written(Conn::Sub), [["SUBSCRIBE", &wire::channel(&r)]]);
        assert!(h.ready().is_empty());
        h.handle_input(Conn::Sub, subscribed(&r, 1).as_bytes(), t);
        assert_eq!(h.ready(), std::slice::from_ref(&r));
        assert!(h.link.join(&r), "confirmed: joins complete at once");
        assert_eq!(h.stats.counters.cluster_subscriptions.load(Relaxed), 1);

        for _ in 0..3 {
            h.link.leave(&r);
        }
        h.requests(t);
        assert_eq!(h.written(Conn::Sub), [["UNSUBSCRIBE", &wire::channel(&r)]]);
        assert_eq!(h.stats.counters.cluster_subscriptions.load(Relaxed), 0);
    }

    #[test]
    fn a_room_subscribed_again_before_its_confirmation_waits_for_both() {
        let mut h = Harness::up();
        let (r, t) = (room("r"), h.at(1));
        // Join, leave, join again before the broker ran: Subscribe, Unsubscribe, Subscribe.
        assert!(!h.link.join(&r));
        h.link.leave(&r);
        assert!(!h.link.join(&r));
        h.requests(t);
        assert_eq!(
            h.written(Conn::Sub).len(),
            2,
            "two SUBSCRIBEs, no UNSUBSCRIBE"
        );
        h.handle_input(Conn::Sub, subscribed(&r, 1).as_bytes(), t);
        assert!(h.ready().is_empty());
        h.handle_input(Conn::Sub, subscribed(&r, 1).as_bytes(), t);
        assert_eq!(h.ready(), [r]);
    }

    #[test]
    fn a_jump_in_a_nodes_numbers_tells_the_room_how_many_were_missed() {
        let r = room("r");
        let mut h = Harness::in_room(&r);
        receive(&mut h, &r, &event(7, 1, b"a"));
        receive(&mut h, &r, &event(7, 2, b"b"));
        receive(&mut h, &r, &event(8, 9, b"c")); // another node's first event
        receive(&mut h, &r, &event(7, 5, b"d"));
        let missed = payload(&chat::nodes::messages_missed(2));
        assert_eq!(
            h.room_payloads(),
            [
                b"a".to_vec(),
                b"b".to_vec(),
                b"c".to_vec(),
                missed,
                b"d".to_vec()
            ]
        );
        assert_eq!(h.stats.counters.cluster_gaps.load(Relaxed), 1);
        assert_eq!(h.stats.counters.cluster_received.load(Relaxed), 4);
        assert_eq!(h.link.report()["gaps_by_room"]["r"], 1);

        // Our own events (delivered locally when sent), and a room nobody here is in.
        receive(&mut h, &r, &event(1, 40, b"mine"));
        receive(&mut h, &room("elsewhere"), &event(7, 6, b"e"));
        assert!(h.room_payloads().is_empty());
        // A channel that is not a room's is bad input.
        let t = h.at(1);
        let push = b"*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$1\r\nx\r\n";
        h.handle_input(Conn::Sub, push, t);
        assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 1);
        assert!(!h.poll_close(t));
    }

    #[test]
    fn a_remote_event_larger_than_a_client_may_send_is_dropped_and_counted() {
        let r = room("r");
        let mut h = Harness::in_room(&r);
        let limit = wire::max_event_len(MAX_MESSAGE);

        let fits = event(7, 1, &vec![b'a'; limit - event(7, 1, b"").len()]);
        assert_eq!(fits.len(), limit);
        receive(&mut h, &r, &fits);
        assert_eq!(h.room_payloads().len(), 1);

        let over = event(7, 2, &vec![b'b'; limit + 1 - event(7, 2, b"").len()]);
        receive(&mut h, &r, &over);
        let got = h.room_payloads();
        assert_eq!(
            got,
            [payload(&chat::nodes::messages_missed(1))],
            "the notice alone"
        );
        assert_eq!(h.link.report()["remote_oversize"], 1);
        assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 0);
        assert_eq!(h.stats.counters.cluster_gaps.load(Relaxed), 1);

        // Its number was seen: the next event is not a second gap.
        receive(&mut h, &r, &event(7, 3, b"next"));
        assert_eq!(h.room_payloads(), [b"next"]);
        assert_eq!(h.stats.counters.cluster_gaps.load(Relaxed), 1);

        // An oversize first event from a node, or one whose envelope is garbage.
        receive(&mut h, &r, &event(8, 1, &vec![b'c'; limit]));
        assert_eq!(h.room_payloads().len(), 1);
        receive(&mut h, &r, &vec![b'?'; limit + 1]);
        assert!(h.room_payloads().is_empty());
        assert_eq!(h.link.report()["remote_oversize"], 3);
        assert_eq!(h.stats.counters.cluster_bad_input.load(Relaxed), 1);
    }

    #[test]
    fn a_flood_of_forged_node_ids_keeps_a_bounded_number_per_room() {
        let r = room("r");
        let mut h = Harness::in_room(&r);
        for node in 0..(2 * MAX_PEERS as u64) {
            receive(&mut h, &r, &event(100 + node, 5, b"x"));
        }
        assert_eq!(h.sequences.peers(&r), MAX_PEERS);
    }

    #[test]
    fn publishes_are_numbered_per_room_and_counted_while_the_link_is_down() {
        let (r, s) = (room("r"), room("s"));
        let mut h = Harness::in_room(&r);
        let t = h.at(1);
        let reply = Delivery {
            frame: server_frame(Opcode::Text, &[b"to one member"]).into(),
            to: Audience::Member(REMOTE),
        };
        let batch = vec![
            room_delivery(&r),
            reply,
            room_delivery(&s),
            room_delivery(&r),
        ];
        h.handle_request(BrokerMsg::Publish(Arc::from(batch)), t);
        let published: Vec<(String, u64, NodeId)> = h
            .written(Conn::Cmd)
            .iter()
            .map(|c| {
                assert_eq!(c[0], "PUBLISH");
                let event = wire::decode_event(c[2].as_bytes()).unwrap();
                assert_eq!(event.payload, b"Ann says: hi");
                (c[1].clone(), event.seq, event.node)
            })
            .collect();
        let (cr, cs) = (wire::channel(&r), wire::channel(&s));
        assert_eq!(
            published,
            [
                (cr.clone(), 1, NodeId(1)),
                (cs, 1, NodeId(1)),
                (cr, 2, NodeId(1))
            ]
        );

        h.handle_failure("reset".into());
        assert!(h.poll_close(t));
        let before = h.stats.counters.cluster_not_propagated.load(Relaxed);
        h.handle_request(BrokerMsg::Publish(Arc::from(vec![room_delivery(&r)])), t);
        assert_eq!(
            h.stats.counters.cluster_not_propagated.load(Relaxed),
            before + 1
        );
    }

    #[test]
    fn a_room_without_local_members_leaves_nothing_behind() {
        let mut h = Harness::up();
        let (r, other, t) = (room("r"), room("other"), h.at(1));
        for room in [&r, &other] {
            assert!(!h.link.join(room));
            h.requests(t);
            h.handle_input(Conn::Sub, subscribed(room, 1).as_bytes(), t);
            receive(&mut h, room, &event(7, 1, b"x"));
            receive(&mut h, room, &event(7, 3, b"y"));
            let batch = Arc::from(vec![room_delivery(room)]);
            h.handle_request(BrokerMsg::Publish(batch), t);
        }
        assert_eq!(h.link.report()["gaps_by_room"]["r"], 1);
        assert_eq!(h.sequences.keeps(&r), (true, true));

        // The last member leaves; its leave notice is published after the Unsubscribe.
        h.link.leave(&r);
        h.requests(t);
        h.handle_request(BrokerMsg::Publish(Arc::from(vec![room_delivery(&r)])), t);
        assert_eq!(h.sequences.keeps(&r), (false, false));
        assert!(h.link.report()["gaps_by_room"].get("r").is_none());
        // The other room keeps its entries.
        assert_eq!(h.sequences.keeps(&other), (true, true));
        assert_eq!(h.link.report()["gaps_by_room"]["other"], 1);
    }
}
