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

/// What the owner of `chat` does with a member's message.
fn handle(
    chat: &mut Chat<u32>,
    roster: &mut Roster<u32>,
    member: u32,
    message: &Message,
    out: &mut Vec<Delivery<u32>>,
) {
    let name = chat.name(member).cloned().unwrap();
    chat.apply(roster, member, interpret(&name, message), out);
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
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    chat.join(&mut roster, 2, room("lobby"), name("bob"), &mut out);
    assert_eq!(
        texts(&mut out),
        [
            (others("lobby", 1), "ann just connected".to_string()),
            (others("lobby", 2), "bob just connected".to_string())
        ]
    );
    assert_eq!(chat.members(&room("lobby")), [1, 2]);
    handle(&mut chat, &mut roster, 1, &text("hi all"), &mut out);
    assert_eq!(
        texts(&mut out),
        [(others("lobby", 1), "ann says: hi all".to_string())]
    );
    chat.leave(&mut roster, 1, &mut out);
    assert_eq!(
        texts(&mut out),
        [(others("lobby", 1), "ann disconnected".to_string())]
    );
    assert_eq!(chat.members(&room("lobby")), [2]);
    chat.leave(&mut roster, 1, &mut out);
    assert!(out.is_empty(), "leaving twice says nothing");
}

#[test]
fn rooms_are_separate() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("a"), name("ann"), &mut out);
    chat.join(&mut roster, 2, room("b"), name("bob"), &mut out);
    assert_eq!(chat.members(&room("a")), [1]);
    assert_eq!(chat.members(&room("b")), [2]);
    out.clear();
    handle(&mut chat, &mut roster, 2, &text("x"), &mut out);
    assert_eq!(out[0].to, others("b", 2));
}

#[test]
fn binary_is_forwarded_verbatim() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    out.clear();
    let data = vec![0u8, 255, 7];
    handle(
        &mut chat,
        &mut roster,
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
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    chat.join(&mut roster, 2, room("lobby"), name("bob"), &mut out);
    out.clear();
    handle(&mut chat, &mut roster, 1, &text("/nick Anna K"), &mut out);
    assert_eq!(
        texts(&mut out),
        [(others("lobby", 1), "ann is now Anna K".to_string())]
    );
    handle(&mut chat, &mut roster, 2, &text("/who"), &mut out);
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
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    out.clear();
    for bad in [
        "/nick",
        "/nick  lead",
        "/nick a:b",
        "/dance",
        "/",
        "/who is there",
    ] {
        handle(&mut chat, &mut roster, 1, &text(bad), &mut out);
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

#[test]
fn who_lists_the_whole_server_in_join_order() {
    // Two owners (two shards) share one roster; each knows only its own members.
    let mut roster = Roster::default();
    let (mut east, mut west) = (Chat::default(), Chat::default());
    let mut out = Vec::new();
    east.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    west.join(&mut roster, 2, room("lobby"), name("bob"), &mut out);
    east.join(&mut roster, 3, room("lobby"), name("cy"), &mut out);
    west.join(&mut roster, 4, room("attic"), name("dee"), &mut out);
    assert_eq!(east.members(&room("lobby")), [1, 3]);
    assert_eq!(west.members(&room("lobby")), [2]);
    out.clear();
    handle(&mut west, &mut roster, 2, &text("/nick Bo"), &mut out);
    out.clear();
    handle(&mut east, &mut roster, 1, &text("/who"), &mut out);
    assert_eq!(
        texts(&mut out),
        [(
            Audience::Member(1),
            "Members of lobby: ann, Bo, cy".to_string()
        )]
    );
    east.leave(&mut roster, 1, &mut out);
    out.clear();
    handle(&mut west, &mut roster, 2, &text("/who"), &mut out);
    assert_eq!(texts(&mut out)[0].1, "Members of lobby: Bo, cy");
}

#[test]
fn interpret_needs_no_state() {
    let ann = name("ann");
    assert!(matches!(
        interpret(&ann, &text("/who")),
        Intent::ListMembers
    ));
    assert!(matches!(interpret(&ann, &text("/nick bo")), Intent::Rename(n) if n == name("bo")));
    let Intent::ToRoom(frame) = interpret(&ann, &text("hi")) else {
        panic!("a chat line goes to the room");
    };
    assert_eq!(decode(&frame), (Opcode::Text, b"ann says: hi".to_vec()));
    assert!(matches!(interpret(&ann, &text("/x")), Intent::ToSender(_)));
}

#[test]
fn a_message_from_someone_who_left_is_dropped() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    let intent = interpret(&name("ann"), &text("late"));
    chat.leave(&mut roster, 1, &mut out);
    out.clear();
    chat.apply(&mut roster, 1, intent, &mut out);
    assert!(out.is_empty());
}

#[test]
fn nick_to_the_same_name_tells_nobody() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    chat.join(&mut roster, 2, room("lobby"), name("bob"), &mut out);
    out.clear();
    let name = chat.name(1).cloned().unwrap();
    let renamed = chat.apply(
        &mut roster,
        1,
        interpret(&name, &text("/nick ann")),
        &mut out,
    );
    assert!(!renamed && out.is_empty());
    assert!(chat.apply(
        &mut roster,
        1,
        interpret(&name, &text("/nick anne")),
        &mut out
    ));
}

#[test]
fn who_is_cached_until_the_room_changes() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("lobby"), name("ann"), &mut out);
    chat.join(&mut roster, 2, room("lobby"), name("bob"), &mut out);
    let lobby = room("lobby");
    let first = roster.who_reply(&lobby);
    assert!(
        std::sync::Arc::ptr_eq(&first, &roster.who_reply(&lobby)),
        "shared"
    );
    // Each change is seen by the next /who; join order is kept across leaves and renames.
    chat.join(&mut roster, 3, room("lobby"), name("cy"), &mut out);
    assert_eq!(
        decode(&roster.who_reply(&lobby)).1,
        b"Members of lobby: ann, bob, cy"
    );
    chat.leave(&mut roster, 2, &mut out);
    assert_eq!(
        decode(&roster.who_reply(&lobby)).1,
        b"Members of lobby: ann, cy"
    );
    handle(&mut chat, &mut roster, 1, &text("/nick di"), &mut out);
    assert_eq!(
        decode(&roster.who_reply(&lobby)).1,
        b"Members of lobby: di, cy"
    );
    assert_eq!(chat.members(&lobby).len(), 2);
}

#[test]
fn who_of_a_big_room_is_bounded_and_says_how_many_more() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    let total = 5000u32;
    for m in 0..total {
        let long = format!("{m:0>32}");
        chat.join(&mut roster, m, room("big"), name(&long), &mut out);
    }
    let (_, payload) = decode(&roster.who_reply(&room("big")));
    let text = String::from_utf8(payload).unwrap();
    assert!(text.len() <= WHO_REPLY_MAX, "{}", text.len());
    let listed = text.matches(", ").count(); // separators: listed names - 1, plus the suffix's
    let more: u32 = text
        .rsplit_once("and ")
        .and_then(|(_, rest)| rest.strip_suffix(" more"))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(
        listed as u32 + more,
        total,
        "every member is listed or counted"
    );
    assert!(text.starts_with(&format!("Members of big: {:0>32}, {:0>32}", 0, 1)));
    // A list that fits is not cut, and the boundary holds exactly.
    let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        decode(&member_list(&room("r"), &refs)).1,
        b"Members of r: n0, n1, n2"
    );
}

#[test]
fn leaving_keeps_every_other_member_reachable() {
    // Leaves swap members around inside the room's list: every member stays listed once.
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    for m in 0..10u32 {
        chat.join(&mut roster, m, room("r"), name(&format!("m{m}")), &mut out);
    }
    for gone in [0, 9, 4, 5, 1] {
        chat.leave(&mut roster, gone, &mut out);
    }
    let mut left = chat.members(&room("r")).to_vec();
    left.sort();
    assert_eq!(left, [2, 3, 6, 7, 8]);
    for m in [2, 3, 6, 7, 8] {
        chat.leave(&mut roster, m, &mut out);
    }
    assert!(chat.members(&room("r")).is_empty());
    assert_eq!(chat.member_count(), 0);
}

#[test]
fn the_command_budget_allows_a_burst_then_refills_with_time() {
    let t0 = std::time::Instant::now();
    let mut budget = CommandBudget::new(t0);
    for _ in 0..CommandBudget::BURST {
        assert!(budget.take(t0));
    }
    assert!(!budget.take(t0), "burst spent");
    let one = std::time::Duration::from_secs(1) / CommandBudget::PER_SECOND;
    assert!(!budget.take(t0 + one / 2));
    assert!(budget.take(t0 + one), "one token per refill period");
    assert!(!budget.take(t0 + one));
    // A long pause refills to the burst, no more.
    let later = t0 + std::time::Duration::from_secs(3600);
    for _ in 0..CommandBudget::BURST {
        assert!(budget.take(later));
    }
    assert!(!budget.take(later));
}

#[test]
fn commands_draw_on_each_members_own_budget() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("r"), name("ann"), &mut out);
    chat.join(&mut roster, 2, room("r"), name("bob"), &mut out);
    let now = std::time::Instant::now();
    for _ in 0..CommandBudget::BURST {
        assert!(chat.take_command(1, now));
    }
    assert!(!chat.take_command(1, now), "ann's burst is spent");
    assert!(chat.take_command(2, now), "bob's is his own");
    assert!(
        chat.take_command(9, now),
        "someone who left is charged nothing"
    );
}
