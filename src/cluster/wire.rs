//! What nodes say to each other through Redis, pure: channel and key names, the event
//! payload published on a room's channel, the fields of a room's `/who` hash, and the
//! longest event a node accepts ([`max_event_len`]).
//!
//! Must never: do I/O, accept two spellings of one id (a field decoded and encoded again
//! must name the same field), or panic on what it decodes.
//!
//! An event is `wschat1 <node> <seq> <kind> <payload>`: the publishing node's id (16 hex
//! digits), its sequence number for this room (decimal, from 1, one per event whether or not
//! it reached Redis), `t` (text) or `b` (binary), then the payload bytes verbatim (the text
//! the receivers see, already formatted by the origin: `Ann says: hi`, `Ann just
//! connected`...). Publishing the payload rather than the encoded frame keeps the frame
//! format a per-node matter (an extension such as permessage-deflate may frame differently
//! per connection), and the receiver encodes the frame once for all its members.
//!
//! Everything decoded here comes from the network: bad input is an error, never a panic.

use std::fmt;

use crate::chat::RoomName;

const MAGIC: &[u8] = b"wschat1";
/// The most bytes an origin adds to a member's message in the text it publishes: the prefix
/// `<name> says: ` (a name is at most 32 characters of up to 4 bytes: 135 bytes), or a
/// whole notice (`<old> is now <new>`: at most 264 bytes, which is more than a prefix plus
/// the smallest `--max-message`, 125). 512 covers both with room to spare.
pub const PAYLOAD_SLACK: usize = 512;
/// The longest envelope before the payload: `wschat1 <16 hex digits> <up to 20 digits> t `.
pub const ENVELOPE_MAX: usize = MAGIC.len() + 1 + 16 + 1 + 20 + 3;
const CHANNEL_PREFIX: &str = "wschat:room:";
const WHO_PREFIX: &str = "wschat:who:";
const NODE_PREFIX: &str = "wschat:node:";

/// A node's identity in the cluster: random at start unless `--node-id` gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl NodeId {
    /// Parses the 16 lowercase hex digits of [`NodeId`]'s `Display`, and nothing else (no
    /// sign, no uppercase): one id has one spelling, so a field parsed and encoded again
    /// names the same field.
    pub fn parse(s: &[u8]) -> Option<NodeId> {
        if s.len() != 16 || !s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let s = std::str::from_utf8(s).ok()?;
        u64::from_str_radix(s, 16).ok().map(NodeId)
    }
}

/// Text or binary: the opcode the receivers' frame gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
}

/// A decoded event, borrowing the payload from the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub node: NodeId,
    pub seq: u64,
    pub kind: Kind,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    BadMagic,
    BadNode,
    BadSeq,
    BadKind,
    /// A text event whose payload is not UTF-8: forwarding it would make every browser close
    /// the connection with 1007.
    BadUtf8,
    Truncated,
}

/// Appends the event to `out`.
pub fn encode_event(node: NodeId, seq: u64, kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(b' ');
    out.extend_from_slice(node.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(match kind {
        Kind::Text => b" t ",
        Kind::Binary => b" b ",
    });
    out.extend_from_slice(payload);
}

/// The longest event a node accepts from another when its clients may send `max_message`
/// bytes: the longest text its own chat layer could publish for such a message, plus the
/// envelope. Anything longer was not sent by a node configured like this one.
pub fn max_event_len(max_message: usize) -> usize {
    max_message.saturating_add(PAYLOAD_SLACK + ENVELOPE_MAX)
}

pub fn decode_event(bytes: &[u8]) -> Result<Event<'_>, WireError> {
    let event = decode_envelope(bytes)?;
    if event.kind == Kind::Text && std::str::from_utf8(event.payload).is_err() {
        return Err(WireError::BadUtf8);
    }
    Ok(event)
}

/// Decodes only the envelope of an event: its payload is returned unchecked. For an event
/// refused for its size, whose sender and sequence number still matter (the gap is told).
pub fn decode_envelope(bytes: &[u8]) -> Result<Event<'_>, WireError> {
    let mut fields = bytes.splitn(5, |&b| b == b' ');
    if fields.next() != Some(MAGIC) {
        return Err(WireError::BadMagic);
    }
    let node = fields
        .next()
        .and_then(NodeId::parse)
        .ok_or(WireError::BadNode)?;
    let seq = fields
        .next()
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(WireError::BadSeq)?;
    let kind = match fields.next() {
        Some(b"t") => Kind::Text,
        Some(b"b") => Kind::Binary,
        Some(_) => return Err(WireError::BadKind),
        None => return Err(WireError::Truncated),
    };
    let payload = fields.next().ok_or(WireError::Truncated)?;
    Ok(Event {
        node,
        seq,
        kind,
        payload,
    })
}

/// The pub/sub channel of a room.
pub fn channel(room: &RoomName) -> String {
    format!("{CHANNEL_PREFIX}{}", room.as_str())
}

/// The room a channel name belongs to, if it is one of ours.
pub fn room_of_channel(channel: &[u8]) -> Option<RoomName> {
    let name = channel.strip_prefix(CHANNEL_PREFIX.as_bytes())?;
    RoomName::parse(std::str::from_utf8(name).ok()?).ok()
}

/// The hash of a room's members: one field per member ([`WhoField`]), whose value is the
/// member's name. One field per member, so that a join, a rename or a leave writes one
/// field, whatever the size of the room.
pub fn who_key(room: &RoomName) -> String {
    format!("{WHO_PREFIX}{}", room.as_str())
}

/// A node's liveness key, set with an expiry and refreshed by its heartbeat; its value is
/// the node's current link epoch ([`epoch_value`]).
pub fn node_key(node: NodeId) -> String {
    format!("{NODE_PREFIX}{node}")
}

/// A member's field in a room's `/who` hash: `<node>:<epoch>:<member>`, 16 hex digits each.
///
/// `epoch` is the writing node's link epoch, random at each connect and kept in its
/// liveness key: the fields a node wrote before its link dropped (members who left while it
/// could not write) are told from its current ones without scanning for them. `member` is
/// the member's join number on that node, so that sorting a node's fields sorts its members
/// in join order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WhoField {
    pub node: NodeId,
    pub epoch: u64,
    pub member: u64,
}

impl WhoField {
    /// The encoded length: three times 16 digits and two colons.
    const LEN: usize = 16 * 3 + 2;

    pub fn encode(&self) -> String {
        format!("{}:{:016x}:{:016x}", self.node, self.epoch, self.member)
    }

    pub fn parse(bytes: &[u8]) -> Option<WhoField> {
        if bytes.len() != Self::LEN || bytes[16] != b':' || bytes[33] != b':' {
            return None;
        }
        Some(WhoField {
            node: NodeId::parse(&bytes[..16])?,
            epoch: parse_hex16(&bytes[17..33])?,
            member: parse_hex16(&bytes[34..])?,
        })
    }
}

/// The value of a node's liveness key: its link epoch.
pub fn epoch_value(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// Parses [`epoch_value`].
pub fn parse_epoch(bytes: &[u8]) -> Option<u64> {
    parse_hex16(bytes)
}

fn parse_hex16(bytes: &[u8]) -> Option<u64> {
    NodeId::parse(bytes).map(|n| n.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips() {
        let mut out = Vec::new();
        encode_event(
            NodeId(0xab),
            7,
            Kind::Text,
            "Ann says: hi there ✓".as_bytes(),
            &mut out,
        );
        assert_eq!(
            out,
            "wschat1 00000000000000ab 7 t Ann says: hi there ✓".as_bytes()
        );
        assert_eq!(
            decode_event(&out),
            Ok(Event {
                node: NodeId(0xab),
                seq: 7,
                kind: Kind::Text,
                payload: "Ann says: hi there ✓".as_bytes()
            })
        );
    }

    #[test]
    fn the_longest_event_a_node_publishes_fits_its_own_limit() {
        for max_message in [125, 1 << 20] {
            let name = "\u{10348}".repeat(32);
            let mut longest = Vec::new();
            let said = format!("{name} says: {}", "x".repeat(max_message));
            let renamed = format!("{name} is now {name}");
            for text in [said, renamed] {
                longest.clear();
                encode_event(
                    NodeId(u64::MAX),
                    u64::MAX,
                    Kind::Text,
                    text.as_bytes(),
                    &mut longest,
                );
                assert!(longest.len() <= max_event_len(max_message), "{max_message}");
            }
        }
        assert_eq!(max_event_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn binary_payloads_keep_every_byte() {
        let payload = [0u8, b' ', 0xff, b'\n', b' '];
        let mut out = Vec::new();
        encode_event(NodeId(u64::MAX), 1, Kind::Binary, &payload, &mut out);
        let event = decode_event(&out).unwrap();
        assert_eq!(event.payload, payload);
        assert_eq!(event.node, NodeId(u64::MAX));
        let mut empty = Vec::new();
        encode_event(NodeId(1), 2, Kind::Binary, b"", &mut empty);
        assert_eq!(decode_event(&empty).unwrap().payload, b"");
    }

    #[test]
    fn bad_events_are_errors() {
        for (bytes, want) in [
            (&b""[..], WireError::BadMagic),
            (b"wschat2 0000000000000001 1 t x", WireError::BadMagic),
            (b"wschat1 01 1 t x", WireError::BadNode),
            (b"wschat1 000000000000000g 1 t x", WireError::BadNode),
            (b"wschat1 +000000000000001 1 t x", WireError::BadNode),
            (b"wschat1 000000000000000A 1 t x", WireError::BadNode),
            (b"wschat1 0000000000000001 -1 t x", WireError::BadSeq),
            (b"wschat1 0000000000000001 1 x x", WireError::BadKind),
            (b"wschat1 0000000000000001 1 t", WireError::Truncated),
            (b"wschat1 0000000000000001 1", WireError::Truncated),
            (b"wschat1 0000000000000001 1 t \xff", WireError::BadUtf8),
        ] {
            assert_eq!(
                decode_event(bytes),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            if want != WireError::BadUtf8 {
                assert_eq!(decode_envelope(bytes), Err(want));
            }
        }
        // The envelope alone: the payload is not looked at.
        let event = decode_envelope(b"wschat1 0000000000000001 9 t \xff").unwrap();
        assert_eq!(
            (event.node, event.seq, event.payload),
            (NodeId(1), 9, &b"\xff"[..])
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_events_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let _ = decode_event(&bytes);
            let _ = decode_envelope(&bytes);
            let _ = room_of_channel(&bytes);
            let _ = WhoField::parse(&bytes);
            let _ = parse_epoch(&bytes);
        }
    }

    #[test]
    fn channels_map_back_to_rooms() {
        let room = RoomName::parse("ops-1.b_c").unwrap();
        assert_eq!(channel(&room), "wschat:room:ops-1.b_c");
        assert_eq!(room_of_channel(channel(&room).as_bytes()), Some(room));
        assert_eq!(room_of_channel(b"wschat:room:"), None);
        assert_eq!(room_of_channel(b"wschat:room:a b"), None);
        assert_eq!(room_of_channel(b"other:room:a"), None);
    }

    #[test]
    fn who_fields_round_trip_and_sort_in_join_order() {
        let field = WhoField {
            node: NodeId(0xab),
            epoch: u64::MAX,
            member: 2,
        };
        let text = field.encode();
        assert_eq!(text, "00000000000000ab:ffffffffffffffff:0000000000000002");
        assert_eq!(WhoField::parse(text.as_bytes()), Some(field));
        let later = WhoField {
            member: 10,
            ..field
        };
        assert!(text < later.encode() && field < later);
        for bad in [
            &b""[..],
            b"00000000000000ab:ffffffffffffffff:000000000000002",
            b"00000000000000ab-ffffffffffffffff:0000000000000002",
            b"00000000000000ab:ffffffffffffffff:000000000000000g",
            b"00000000000000ab:ffffffffffffffff:00000000000000022",
        ] {
            assert_eq!(
                WhoField::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_epoch(epoch_value(7).as_bytes()), Some(7));
        assert_eq!(parse_epoch(b"7"), None);
    }
}
