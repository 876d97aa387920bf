//! Chat semantics with plain member ids and decoded frames.

use super::*;
use crate::ws::frame::FrameHeader;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn room(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

fn text(s: &str) -> Message {
    Message {
        kind: MessageKind::Text,
        data: s.as_bytes().to_vec(),
    }
}

/// (opcode, payload) of an unmasked server frame.
fn decode(frame: &[u8]) -> (Opcode, Vec<u8>) {
    let (h, len) = FrameHeader::parse(frame).unwrap().unwrap();
    assert!(h.mask.is_none() && h.fin);
    (h.opcode, frame[len..].to_vec())
}

/// Deliveries as (audience, text) pairs.
fn texts(out: &mut Vec<Delivery<u32>>) -> Vec<(Audience<u32>, String)> {
    out.drain(..)
        .map(|d| {
            let (op, payload) = decode(&d.frame);
            assert_eq!(op, Opcode::Text);
            (d.to, String::from_utf8(payload).unwrap())
        })
        .collect()
}

fn others(r: &str, except: u32) -> Audience<u32> {
    Audience::Room {
        room: room(r),
        except,
    }
}

#[test]
fn join_message_leave() {
    let mut chat = Chat::default();
    let mut out = Vec::new();
    chat.join(1, room("lobby"), name("ann"), &mut out);
    chat.join(2, room("lobby"), name("bob"), &mut out);
    assert_eq!(
        texts(&mut out),
        [
            (others("lobby", 1), "ann just connected".to_string()),
            (others("lobby", 2), "bob just connected".to_string())
        ]
    );
    assert_eq!(chat.members(&room("lobby")), [1, 2]);
    chat.handle_message(1, &text("hi all"), &mut out);
    assert_eq!(
        texts(&mut out),
        [(others("lobby", 1), "ann says: hi all".to_string())]
    );
    chat.leave(1, &mut out);
    assert_eq!(
        texts(&mut out),
        [(others("lobby", 1), "ann disconnected".to_string())]
    );
    assert_eq!(chat.members(&room("lobby")), [2]);
    chat.leave(1, &mut out);
    assert!(out.is_empty(), "leaving twice says nothing");
}

#[test]
fn rooms_are_separate() {
    let mut chat = Chat::default();
    let mut out = Vec::new();
    chat.join(1, room("a"), name("ann"), &mut out);
    chat.join(2, room("b"), name("bob"), &mut out);
    assert_eq!(chat.members(&room("a")), [1]);
    assert_eq!(chat.members(&room("b")), [2]);
    out.clear();
    chat.handle_message(2, &text("x"), &mut out);
    assert_eq!(out[0].to, others("b", 2));
}

#[test]
fn binary_is_forwarded_verbatim() {
    let mut chat = Chat::default();
    let mut out = Vec::new();
    chat.join(1, room("lobby"), name("ann"), &mut out);
    out.clear();
    let data = vec![0u8, 255, 7];
    chat.handle_message(
        1,
        &Message {
            kind: MessageKind::Binary,
            data: data.clone(),
        },
        &mut out,
    );
    assert_eq!(decode(&out[0].frame), (Opcode::Binary, data));
    assert_eq!(out[0].to, others("lobby", 1));
}

#[test]
fn nick_and_who() {
    let mut chat = Chat::default();
    let mut out = Vec::new();
    chat.join(1, room("lobby"), name("ann"), &mut out);
    chat.join(2, room("lobby"), name("bob"), &mut out);
    out.clear();
    chat.handle_message(1, &text("/nick Anna K"), &mut out);
    assert_eq!(
        texts(&mut out),
        [(others("lobby", 1), "ann is now Anna K".to_string())]
    );
    chat.handle_message(2, &text("/who"), &mut out);
    assert_eq!(
        texts(&mut out),
        [(
            Audience::Member(2),
            "Members of lobby: Anna K, bob".to_string()
        )]
    );
}

#[test]
fn command_errors_go_to_the_sender_only() {
    let mut chat = Chat::default();
    let mut out = Vec::new();
    chat.join(1, room("lobby"), name("ann"), &mut out);
    out.clear();
    for bad in [
        "/nick",
        "/nick  lead",
        "/nick a:b",
        "/dance",
        "/",
        "/who is there",
    ] {
        chat.handle_message(1, &text(bad), &mut out);
        let got = texts(&mut out);
        assert_eq!(got.len(), 1, "{bad}");
        assert_eq!(got[0].0, Audience::Member(1), "{bad}");
        assert!(got[0].1.starts_with("error: "), "{bad}: {}", got[0].1);
    }
}

#[test]
fn echo_keeps_the_kind() {
    let frame = echo(&text("abc"));
    assert_eq!(decode(&frame), (Opcode::Text, b"abc".to_vec()));
    let frame = echo(&Message {
        kind: MessageKind::Binary,
        data: vec![1, 2],
    });
    assert_eq!(decode(&frame), (Opcode::Binary, vec![1, 2]));
}
