//! What members are told about the other nodes of a cluster (`--cluster`): messages that did
//! not reach this node, the link to the broker lost and restored, and `/who` when the other
//! nodes' members cannot be listed.
//!
//! Owns the wording; the broker (`cluster/`) decides when each is sent and to whom, and
//! hands the frames to the shards. Must never: do I/O, or decide anything but the words: a
//! function here is text in, one encoded frame out.
//!
//! Every notice starts with `* cluster:`, which no member's line can: a line starts with its
//! sender's name, and a name cannot start with `*` (see [`super::Name`]).

use super::{RoomName, member_list, text_frame};
use crate::ws::SharedFrame;

/// Why `/who` lists a note in place of the other nodes' members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OthersUnknown {
    /// The link to the broker is down: the other nodes cannot be asked.
    NoLink,
    /// The broker had too much in flight to ask them.
    Busy,
}

impl OthersUnknown {
    fn note(self) -> &'static str {
        match self {
            OthersUnknown::NoLink => "(other nodes unknown: no link to the broker)",
            OthersUnknown::Busy => "(other nodes unknown: the broker is busy)",
        }
    }
}

/// The answer to `/who` in a room that spans nodes: `names` (this node's members, then the
/// others' found), then the note saying why the others are missing, if they are; shortened
/// like [`member_list`].
pub fn member_list_across_nodes(
    room: &RoomName,
    names: &[&str],
    unknown: Option<OthersUnknown>,
) -> SharedFrame {
    match unknown {
        None => member_list(room, names),
        Some(unknown) => {
            let mut listed = names.to_vec();
            listed.push(unknown.note());
            member_list(room, &listed)
        }
    }
}

/// `missed` messages published on another node never reached this one (sequence numbers
/// skipped, or an event larger than this node accepts).
pub fn messages_missed(missed: u64) -> SharedFrame {
    let missed = missed.to_string();
    text_frame(&[
        "* cluster: ",
        &missed,
        " message(s) from another node did not reach this node (published while its broker \
         link was down, lost in transit, or larger than this node accepts)",
    ])
}

/// The link to the broker dropped: until [`link_restored`], the room is local only.
pub fn link_lost() -> SharedFrame {
    text_frame(&[
        "* cluster: lost the link to the broker; messages from other nodes are missing until \
         it is back",
    ])
}

/// The link is back and the room's channel subscribed again.
pub fn link_restored() -> SharedFrame {
    text_frame(&["* cluster: link to the broker restored"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::FrameHeader;

    fn payload(frame: &[u8]) -> String {
        let (header, len) = FrameHeader::parse(frame).unwrap().unwrap();
        assert_eq!(header.opcode, crate::ws::Opcode::Text);
        String::from_utf8(frame[len..].to_vec()).unwrap()
    }

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).unwrap()
    }

    #[test]
    fn notices_are_the_agreed_lines() {
        assert_eq!(
            payload(&messages_missed(3)),
            "* cluster: 3 message(s) from another node did not reach this node (published \
             while its broker link was down, lost in transit, or larger than this node accepts)"
        );
        assert_eq!(
            payload(&link_lost()),
            "* cluster: lost the link to the broker; messages from other nodes are missing \
             until it is back"
        );
        assert_eq!(
            payload(&link_restored()),
            "* cluster: link to the broker restored"
        );
    }

    #[test]
    fn who_across_nodes_notes_why_the_others_are_missing() {
        let r = room("r");
        assert_eq!(
            payload(&member_list_across_nodes(&r, &["ann", "bo"], None)),
            "Members of r: ann, bo"
        );
        assert_eq!(
            payload(&member_list_across_nodes(
                &r,
                &["ann"],
                Some(OthersUnknown::NoLink)
            )),
            "Members of r: ann, (other nodes unknown: no link to the broker)"
        );
        assert_eq!(
            payload(&member_list_across_nodes(
                &r,
                &[],
                Some(OthersUnknown::Busy)
            )),
            "Members of r: (other nodes unknown: the broker is busy)"
        );
    }

    #[test]
    fn who_across_nodes_is_bounded_like_any_who() {
        let long: Vec<String> = (0..2000).map(|i| format!("member{i}")).collect();
        let names: Vec<&str> = long.iter().map(String::as_str).collect();
        let reply = payload(&member_list_across_nodes(
            &room("r"),
            &names,
            Some(OthersUnknown::Busy),
        ));
        assert!(reply.len() <= crate::chat::WHO_REPLY_MAX, "{}", reply.len());
        assert!(reply.ends_with(" more"), "{reply}");
    }
}
