//! Sequence numbers per room, pure: the numbers this node gives its own events, and the last
//! number seen from each node publishing in a room, from which a skipped number is a gap.
//!
//! Must never: keep a room that has no local members (the map would grow with whatever
//! rooms others name), or remember more publishing nodes per room than [`MAX_PEERS`] (their
//! ids arrive from the network).

use std::collections::HashMap;

use crate::chat::RoomName;
use crate::cluster::wire::NodeId;

/// How many publishing nodes a room remembers the sequence of. Node ids arrive from the
/// network (whoever can publish on the channel picks them), so the map is capped, the node
/// heard from least recently going first; forgetting a node costs only the gap check of its
/// next event. A room spanning more nodes than this is far beyond what we deploy.
pub(super) const MAX_PEERS: usize = 128;

/// This node's numbering of its events and what it has seen of the others', per room with
/// local members.
#[derive(Debug, Default)]
pub(super) struct Sequences {
    /// This node's sequence number per room (the last one used).
    published: HashMap<RoomName, u64>,
    /// The last sequence number seen per room and publishing node.
    seen: HashMap<RoomName, Peers>,
}

impl Sequences {
    /// The number of this node's next event in `room`. A room's first event, or one planned
    /// as its last member left (the leave notice follows the Unsubscribe), is numbered 1; an
    /// entry is kept only if `has_members` says the room still has local members, so that
    /// the map cannot outgrow the rooms in use.
    pub(super) fn next_published(
        &mut self,
        room: &RoomName,
        has_members: impl FnOnce() -> bool,
    ) -> u64 {
        match self.published.get_mut(room) {
            Some(seq) => {
                *seq += 1;
                *seq
            }
            None => {
                if has_members() {
                    self.published.insert(room.clone(), 1);
                }
                1
            }
        }
    }

    /// Records event `seq` of `node` in `room`; returns how many of that node's events were
    /// skipped since the last one seen (none for the first one seen from it).
    pub(super) fn missed(&mut self, room: &RoomName, node: NodeId, seq: u64) -> u64 {
        let last = self.seen.entry(room.clone()).or_default().record(node, seq);
        match last {
            Some(last) if seq > last.saturating_add(1) => seq - last - 1,
            _ => 0,
        }
    }

    /// Forgets everything kept for `room`: it has no local members any more.
    pub(super) fn forget(&mut self, room: &RoomName) {
        self.published.remove(room);
        self.seen.remove(room);
    }

    /// Whether anything is kept for `room`: (this node's numbering, others' numbers seen).
    #[cfg(test)]
    pub(super) fn keeps(&self, room: &RoomName) -> (bool, bool) {
        (
            self.published.contains_key(room),
            self.seen.contains_key(room),
        )
    }

    /// How many publishing nodes `room` remembers.
    #[cfg(test)]
    pub(super) fn peers(&self, room: &RoomName) -> usize {
        self.seen.get(room).map_or(0, |peers| peers.last.len())
    }
}

/// The last sequence number seen from each publishing node in one room (at most
/// [`MAX_PEERS`] nodes).
#[derive(Debug, Default)]
struct Peers {
    /// Node -> (last sequence number, when it was heard on `clock`).
    last: HashMap<NodeId, (u64, u64)>,
    /// Counts the room's events: an order of hearing that needs no clock.
    clock: u64,
}

impl Peers {
    /// Records `seq` from `node`; returns the sequence number it had before, if known.
    fn record(&mut self, node: NodeId, seq: u64) -> Option<u64> {
        self.clock += 1;
        if let Some(entry) = self.last.get_mut(&node) {
            let before = entry.0;
            *entry = (seq, self.clock);
            return Some(before);
        }
        if self.last.len() >= MAX_PEERS {
            // O(MAX_PEERS), and only for a node not seen before while the map is full.
            let oldest = self.last.iter().min_by_key(|(_, (_, heard))| *heard);
            if let Some((&oldest, _)) = oldest {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(node, (seq, self.clock));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn a_skipped_number_is_a_gap_of_that_many_events() {
        let (mut seq, r) = (Sequences::default(), room("r"));
        assert_eq!(seq.missed(&r, NodeId(7), 5), 0, "the first event heard");
        assert_eq!(seq.missed(&r, NodeId(7), 6), 0);
        assert_eq!(seq.missed(&r, NodeId(7), 9), 2);
        assert_eq!(
            seq.missed(&r, NodeId(8), 40),
            0,
            "another node's own numbering"
        );
        // A number going back (the node restarted) is not a gap.
        assert_eq!(seq.missed(&r, NodeId(7), 1), 0);
        assert_eq!(seq.missed(&r, NodeId(7), 2), 0);
        assert_eq!(seq.missed(&r, NodeId(7), u64::MAX), u64::MAX - 3);
        assert_eq!(seq.missed(&room("s"), NodeId(7), 3), 0, "rooms are apart");
    }

    #[test]
    fn this_nodes_numbering_is_kept_only_for_rooms_with_members() {
        let (mut seq, r) = (Sequences::default(), room("r"));
        assert_eq!(seq.next_published(&r, || false), 1);
        assert_eq!(seq.next_published(&r, || false), 1);
        assert_eq!(seq.keeps(&r), (false, false));
        assert_eq!(seq.next_published(&r, || true), 1);
        assert_eq!(seq.next_published(&r, || false), 2);
        seq.missed(&r, NodeId(7), 1);
        assert_eq!(seq.keeps(&r), (true, true));
        seq.forget(&r);
        assert_eq!(seq.keeps(&r), (false, false));
    }

    #[test]
    fn a_room_remembers_a_bounded_number_of_publishing_nodes() {
        let mut peers = Peers::default();
        // One node keeps publishing among a flood of new ids: it is never the oldest.
        for i in 0..(3 * MAX_PEERS as u64) {
            assert_eq!(peers.record(NodeId(1_000_000 + i), 1), None);
            let before = (i > 0).then_some(i);
            assert_eq!(peers.record(NodeId(1), i + 1), before);
            assert!(peers.last.len() <= MAX_PEERS);
        }
        assert_eq!(peers.last.len(), MAX_PEERS);
        assert!(peers.last.contains_key(&NodeId(1)));
        // The newest ids are kept, the oldest went.
        assert!(
            peers
                .last
                .contains_key(&NodeId(1_000_000 + 3 * MAX_PEERS as u64 - 1))
        );
        assert!(!peers.last.contains_key(&NodeId(1_000_000)));
    }
}
