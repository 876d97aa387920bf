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
    roster: &mut Roster,
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

/// The `/who` payload for `r`, as text.
fn who_text(roster: &mut Roster, r: &str) -> String {
    String::from_utf8(decode(&roster.who_reply(&room(r))).1).unwrap()
}

/// What the roster promises about a room's seats, checked from the inside: only vacancies
/// before `head`, seat numbers sorted from `head` on, the vacancy count right, and never more
/// than half of the seats vacant after a leave.
fn assert_seats_sound(roster: &Roster) {
    for list in roster.rooms.values() {
        assert!(list.seats[..list.head].iter().all(|(_, n)| n.is_none()));
        let live = &list.seats[list.head..];
        assert!(live.windows(2).all(|w| w[0].0 < w[1].0), "sorted by seat");
        let vacant = list.seats.iter().filter(|(_, n)| n.is_none()).count();
        assert_eq!(vacant, list.vacant);
        assert!(list.vacant * 2 <= list.seats.len(), "compacted in time");
        assert!(list.occupied() > 0, "an empty room is dropped");
    }
}

#[test]
fn who_keeps_join_order_and_a_rename_keeps_the_place() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    for (m, n) in [(1, "ann"), (2, "bob"), (3, "cy")] {
        chat.join(&mut roster, m, room("r"), name(n), &mut out);
    }
    assert_eq!(who_text(&mut roster, "r"), "Members of r: ann, bob, cy");
    handle(&mut chat, &mut roster, 2, &text("/nick aaa"), &mut out);
    assert_eq!(who_text(&mut roster, "r"), "Members of r: ann, aaa, cy");
    handle(&mut chat, &mut roster, 1, &text("/nick zed"), &mut out);
    assert_eq!(roster.names(&room("r")), ["zed", "aaa", "cy"]);
}

#[test]
fn a_leave_of_the_first_middle_or_last_member_keeps_the_others_in_order() {
    for gone in [1, 3, 5] {
        let mut chat = Chat::default();
        let mut roster = Roster::default();
        let mut out = Vec::new();
        for m in 1..=5u32 {
            chat.join(&mut roster, m, room("r"), name(&format!("m{m}")), &mut out);
        }
        chat.leave(&mut roster, gone, &mut out);
        let expected: Vec<String> = (1..=5)
            .filter(|&m| m != gone)
            .map(|m| format!("m{m}"))
            .collect();
        assert_eq!(roster.names(&room("r")), expected, "m{gone} left");
        // Everyone else can still be renamed and found: their seats were not disturbed.
        for m in (1..=5).filter(|&m| m != gone) {
            handle(
                &mut chat,
                &mut roster,
                m,
                &text(&format!("/nick n{m}")),
                &mut out,
            );
        }
        let renamed: Vec<String> = (1..=5)
            .filter(|&m| m != gone)
            .map(|m| format!("n{m}"))
            .collect();
        assert_eq!(roster.names(&room("r")), renamed);
        assert_seats_sound(&roster);
    }
}

#[test]
fn a_member_who_joins_again_goes_to_the_end() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    for (m, n) in [(1, "ann"), (2, "bob"), (3, "cy")] {
        chat.join(&mut roster, m, room("r"), name(n), &mut out);
    }
    chat.leave(&mut roster, 1, &mut out);
    chat.join(&mut roster, 1, room("r"), name("ann"), &mut out);
    assert_eq!(roster.names(&room("r")), ["bob", "cy", "ann"]);
    // Joining again without a leave (the owner leaves for it) lists the member once.
    chat.join(&mut roster, 2, room("r"), name("bob"), &mut out);
    assert_eq!(roster.names(&room("r")), ["cy", "ann", "bob"]);
    // And into another room: gone from the first.
    chat.join(&mut roster, 3, room("s"), name("cy"), &mut out);
    assert_eq!(roster.names(&room("r")), ["ann", "bob"]);
    assert_eq!(roster.names(&room("s")), ["cy"]);
    assert_seats_sound(&roster);
}

/// One change to a room, applied by its owner.
type Change = fn(&mut Chat<u32>, &mut Roster, &mut Vec<Delivery<u32>>);

#[test]
fn every_change_to_a_room_invalidates_its_who_and_nothing_else_does() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    chat.join(&mut roster, 1, room("r"), name("ann"), &mut out);
    chat.join(&mut roster, 2, room("r"), name("bob"), &mut out);
    chat.join(&mut roster, 9, room("other"), name("zed"), &mut out);
    let cached = |roster: &mut Roster, before: &SharedFrame| {
        std::sync::Arc::ptr_eq(before, &roster.who_reply(&room("r")))
    };
    let mut who = roster.who_reply(&room("r"));
    let changes: [(&str, Change); 4] = [
        ("join", |c, r, o| c.join(r, 3, room("r"), name("cy"), o)),
        ("rename", |c, r, o| handle(c, r, 1, &text("/nick di"), o)),
        ("leave", |c, r, o| c.leave(r, 2, o)),
        ("join again", |c, r, o| {
            c.join(r, 2, room("r"), name("bob"), o)
        }),
    ];
    for (what, change) in changes {
        // What leaves this room alone keeps the cached reply.
        handle(&mut chat, &mut roster, 1, &text("hello"), &mut out);
        handle(&mut chat, &mut roster, 9, &text("/nick zoe"), &mut out);
        chat.leave(&mut roster, 7, &mut out);
        assert!(cached(&mut roster, &who), "before {what}");
        change(&mut chat, &mut roster, &mut out);
        assert!(!cached(&mut roster, &who), "{what} is seen");
        who = roster.who_reply(&room("r"));
    }
    assert_eq!(who_text(&mut roster, "r"), "Members of r: di, cy, bob");
    // A rename to the same name changes nothing.
    handle(&mut chat, &mut roster, 3, &text("/nick cy"), &mut out);
    assert!(cached(&mut roster, &who));
}

#[test]
fn a_room_emptied_by_leaves_in_any_order_is_compacted_and_dropped() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    let n = 1000u32;
    for m in 0..n {
        chat.join(&mut roster, m, room("r"), name(&format!("m{m}")), &mut out);
    }
    // Every third member first (vacancies spread out), then from the front, then the rest.
    let order: Vec<u32> = (0..n)
        .filter(|m| m % 3 == 1)
        .chain((0..n).filter(|m| m % 3 != 1))
        .collect();
    let mut compactions = 0;
    for (k, &m) in order.iter().enumerate() {
        let before = roster.rooms.get(&room("r")).map_or(0, |l| l.seats.len());
        chat.leave(&mut roster, m, &mut out);
        let after = roster.rooms.get(&room("r")).map_or(0, |l| l.seats.len());
        if after < before {
            compactions += 1;
        }
        assert_seats_sound(&roster);
        if k % 97 == 0 {
            let left: Vec<String> = order[k + 1..]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|m| format!("m{m}"))
                .collect();
            assert_eq!(roster.names(&room("r")), left);
        }
    }
    assert!(roster.rooms.is_empty(), "the last leave drops the room");
    // Each compaction at least halves the seats: a logarithmic number of them.
    assert!(compactions <= 12, "{compactions} compactions");
}

#[test]
fn who_reads_past_each_vacancy_once() {
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut out = Vec::new();
    for m in 0..100u32 {
        chat.join(&mut roster, m, room("r"), name(&format!("m{m}")), &mut out);
    }
    // 40 leaves at the front: not yet half, so no compaction.
    for m in 0..40 {
        chat.leave(&mut roster, m, &mut out);
    }
    let list = &roster.rooms[&room("r")];
    assert_eq!((list.seats.len(), list.head, list.vacant), (100, 0, 40));
    let first = who_text(&mut roster, "r");
    assert!(first.starts_with("Members of r: m40, m41, "), "{first}");
    assert_eq!(
        roster.rooms[&room("r")].head,
        40,
        "the read vacancies are behind head"
    );
    assert_seats_sound(&roster);
    // Members behind and past the moved seats are still found, and the order holds.
    handle(&mut chat, &mut roster, 40, &text("/nick first"), &mut out);
    handle(&mut chat, &mut roster, 99, &text("/nick last"), &mut out);
    chat.leave(&mut roster, 41, &mut out);
    let names = roster.names(&room("r"));
    assert_eq!(
        (names[0], names[1], names[names.len() - 1]),
        ("first", "m42", "last")
    );
    assert_eq!(names.len(), 59);
    assert!(who_text(&mut roster, "r").starts_with("Members of r: first, m42, m43"));
}

#[test]
fn the_roster_agrees_with_a_plain_list_under_random_churn() {
    // A deterministic xorshift drives joins, leaves, renames, room changes and /who over
    // three rooms; after every step each room's names equal a plain list kept in join order.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let rooms = ["a", "b", "c"];
    let mut chat = Chat::default();
    let mut roster = Roster::default();
    let mut model: Vec<(u32, &str, String)> = Vec::new(); // join order: member, room, name
    let mut out = Vec::new();
    let mut renames = 0u32;
    for step in 0..20_000 {
        let m = next(64) as u32;
        match next(10) {
            0..=3 => {
                let r = rooms[next(3) as usize];
                let n = format!("m{m}");
                chat.join(&mut roster, m, room(r), name(&n), &mut out);
                model.retain(|(x, _, _)| *x != m);
                model.push((m, r, n));
            }
            4..=6 => {
                chat.leave(&mut roster, m, &mut out);
                model.retain(|(x, _, _)| *x != m);
            }
            7 | 8 => {
                if chat.name(m).is_some() {
                    renames += 1;
                    let n = format!("r{renames}");
                    handle(
                        &mut chat,
                        &mut roster,
                        m,
                        &text(&format!("/nick {n}")),
                        &mut out,
                    );
                    model.iter_mut().find(|(x, _, _)| *x == m).unwrap().2 = n;
                }
            }
            _ => {
                let r = rooms[next(3) as usize];
                let listed: Vec<&str> = model
                    .iter()
                    .filter(|(_, at, _)| *at == r)
                    .map(|(_, _, n)| n.as_str())
                    .collect();
                assert_eq!(
                    roster.who_reply(&room(r)),
                    member_list(&room(r), &listed),
                    "step {step}"
                );
            }
        }
        out.clear();
        assert_seats_sound(&roster);
        for r in rooms {
            let listed: Vec<&str> = model
                .iter()
                .filter(|(_, at, _)| *at == r)
                .map(|(_, _, n)| n.as_str())
                .collect();
            assert_eq!(roster.names(&room(r)), listed, "step {step}");
        }
    }
}

/// Test handles are small numbers, dense enough to index by.
impl MemberHandle for u32 {
    fn local_index(self) -> usize {
        self as usize
    }
}

/// A handle whose index is shared with another owner's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Owned {
    owner: u8,
    key: u8,
}

impl MemberHandle for Owned {
    fn local_index(self) -> usize {
        self.key.into()
    }
}

#[test]
fn a_handle_finds_only_its_own_state_even_where_another_shares_its_index() {
    let mut roster = Roster::default();
    let mut chat = Chat::default();
    let mut out = Vec::new();
    let ann = Owned { owner: 0, key: 3 };
    let stranger = Owned { owner: 1, key: 3 };
    chat.join(&mut roster, ann, room("lobby"), name("ann"), &mut out);
    assert_eq!(chat.name(ann).map(Name::as_str), Some("ann"));
    assert_eq!(chat.name(stranger), None, "same index, other owner");
    chat.leave(&mut roster, stranger, &mut out);
    assert_eq!(chat.member_count(), 1, "a stranger's leave removes nothing");
    chat.leave(&mut roster, ann, &mut out);
    assert_eq!((chat.member_count(), chat.name(ann)), (0, None));
    chat.join(&mut roster, ann, room("lobby"), name("ann"), &mut out);
    chat.join(&mut roster, ann, room("attic"), name("ann"), &mut out);
    assert_eq!(chat.member_count(), 1, "a re-join replaces, never adds");
}
