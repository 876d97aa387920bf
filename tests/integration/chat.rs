//! The chat protocol: join/leave notices, forwarding to the other members,
//! commands, rooms, and per-sender ordering.

use std::collections::HashMap;
use std::thread;

use tungstenite::Message;

use crate::common::*;

wstest!(chat_join_notice, |s| {
    let server = s.server();
    let mut alice = server.connect("/chat/room1?name=alice");
    let mut bob = server.connect("/chat/room1?name=bob");
    assert_eq!(recv_text(&mut alice), "bob just connected");
    let _carol = server.connect("/chat/room1?name=carol");
    assert_eq!(recv_text(&mut alice), "carol just connected");
    assert_eq!(recv_text(&mut bob), "carol just connected");
    // Nobody is told about their own arrival.
    assert_next_is_who(&mut bob, "Members of room1: alice, bob, carol");
});

wstest!(chat_leave_notice, |s| {
    let server = s.server();
    let mut m = join_room(&server, "leave", &["alice", "bob", "carol"]);
    // Clean close.
    let mut bob = m.remove(1);
    bob.close(None).unwrap();
    let _ = bob.flush();
    assert_eq!(recv_text(&mut m[0]), "bob disconnected");
    assert_eq!(recv_text(&mut m[1]), "bob disconnected");
    // Abrupt TCP close without a close frame.
    let carol = m.pop().unwrap();
    drop(carol);
    assert_eq!(recv_text(&mut m[0]), "carol disconnected");
    assert_next_is_who(&mut m[0], "Members of leave: alice");
});

wstest!(chat_message_reaches_others_not_sender, |s| {
    let server = s.server();
    let mut m = join_room(&server, "talk", &["alice", "bob", "carol"]);
    send_text(&mut m[0], "hello there");
    assert_eq!(recv_text(&mut m[1]), "alice says: hello there");
    assert_eq!(recv_text(&mut m[2]), "alice says: hello there");
    send_text(
        &mut m[2],
        "héllo 🌍 \"quoted\" /not-a-command-in-the-middle",
    );
    assert_eq!(
        recv_text(&mut m[0]),
        "carol says: héllo 🌍 \"quoted\" /not-a-command-in-the-middle"
    );
    assert_eq!(
        recv_text(&mut m[1]),
        "carol says: héllo 🌍 \"quoted\" /not-a-command-in-the-middle"
    );
    // The sender never got its own messages back.
    assert_next_is_who(&mut m[0], "Members of talk: alice, bob, carol");
    assert_next_is_who(&mut m[2], "Members of talk: alice, bob, carol");
});

wstest!(chat_binary_forwarded_verbatim, |s| {
    let server = s.server();
    let mut m = join_room(&server, "bin", &["alice", "bob", "carol"]);
    let payload: Vec<u8> = vec![0, 1, 2, 0xFF, 0xFE, b'/', b'w', b'h', b'o'];
    m[1].send(Message::binary(payload.clone())).unwrap();
    assert_eq!(recv_binary(&mut m[0]), payload);
    assert_eq!(recv_binary(&mut m[2]), payload);
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    m[0].send(Message::binary(big.clone())).unwrap();
    assert_eq!(recv_binary(&mut m[1]), big);
    assert_eq!(recv_binary(&mut m[2]), big);
    assert_next_is_who(&mut m[1], "Members of bin: alice, bob, carol");
    assert_next_is_who(&mut m[0], "Members of bin: alice, bob, carol");
});

wstest!(chat_who_lists_members_in_join_order, |s| {
    let server = s.server();
    let mut m = join_room(&server, "who", &["zed", "amy", "Mid_dle.x-1"]);
    assert_next_is_who(&mut m[0], "Members of who: zed, amy, Mid_dle.x-1");
    assert_next_is_who(&mut m[2], "Members of who: zed, amy, Mid_dle.x-1");
    // /who is a reply to the sender only.
    send_text(&mut m[0], "marker");
    assert_eq!(recv_text(&mut m[1]), "zed says: marker");
    assert_eq!(recv_text(&mut m[2]), "zed says: marker");
    // After a leave, the order of the remaining members is kept.
    let amy = m.remove(1);
    drop(amy);
    assert_eq!(recv_text(&mut m[0]), "amy disconnected");
    assert_eq!(recv_text(&mut m[1]), "amy disconnected");
    let mut m3 = server.connect("/chat/who?name=late");
    assert_eq!(recv_text(&mut m[0]), "late just connected");
    assert_next_is_who(&mut m3, "Members of who: zed, Mid_dle.x-1, late");
    // Lone member.
    let mut solo = server.connect("/chat/solo?name=only");
    assert_next_is_who(&mut solo, "Members of solo: only");
});

wstest!(chat_nick_renames, |s| {
    let server = s.server();
    let mut m = join_room(&server, "nick", &["alice", "bob", "carol"]);
    send_text(&mut m[1], "/nick robert");
    assert_eq!(recv_text(&mut m[0]), "bob is now robert");
    assert_eq!(recv_text(&mut m[2]), "bob is now robert");
    send_text(&mut m[1], "as robert");
    assert_eq!(recv_text(&mut m[0]), "robert says: as robert");
    assert_eq!(recv_text(&mut m[2]), "robert says: as robert");
    // The renamed member keeps its place in the member list.
    send_text(&mut m[1], "/who");
    let who = recv_text_until(&mut m[1], 5, |t| t.starts_with("Members of"));
    assert_eq!(who, "Members of nick: alice, robert, carol");
    // A name with a space (valid), sent as a command argument.
    send_text(&mut m[0], "/nick Alice Liddell");
    assert_eq!(recv_text(&mut m[1]), "alice is now Alice Liddell");
    assert_eq!(recv_text(&mut m[2]), "alice is now Alice Liddell");
    // The leave notice uses the new name.
    let robert = m.remove(1);
    drop(robert);
    assert_eq!(recv_text(&mut m[1]), "robert disconnected");
});

wstest!(chat_nick_invalid_is_error_to_sender_only, |s| {
    let server = s.server();
    let mut m = join_room(&server, "nickbad", &["alice", "bob"]);
    let long = format!("/nick {}", "n".repeat(33));
    for cmd in ["/nick bad!name", "/nick", long.as_str(), "/nick a/b"] {
        send_text(&mut m[1], cmd);
        let reply = recv_text(&mut m[1]);
        assert!(reply.starts_with("error:"), "{cmd:?} answered {reply:?}");
    }
    // alice heard nothing of it, and bob kept his name.
    send_text(&mut m[1], "still bob");
    assert_eq!(recv_text(&mut m[0]), "bob says: still bob");
    assert_next_is_who(&mut m[1], "Members of nickbad: alice, bob");
});

wstest!(chat_unknown_command_is_error_to_sender_only, |s| {
    let server = s.server();
    let mut m = join_room(&server, "cmd", &["alice", "bob"]);
    for cmd in ["/frobnicate", "/nickname x", "/frobnicate with args"] {
        send_text(&mut m[0], cmd);
        let reply = recv_text(&mut m[0]);
        assert!(reply.starts_with("error:"), "{cmd:?} answered {reply:?}");
    }
    send_text(&mut m[0], "marker");
    assert_eq!(recv_text(&mut m[1]), "alice says: marker");
    assert_next_is_who(&mut m[1], "Members of cmd: alice, bob");
});

wstest!(chat_rooms_are_isolated, |s| {
    let server = s.server();
    let mut red = join_room(&server, "red", &["r1", "r2"]);
    let mut blue = join_room(&server, "blue", &["b1", "b2"]);
    // "/", "/chat" and "/chat/lobby" are the same room.
    let mut l1 = server.connect("/?name=l1");
    let mut l2 = server.connect("/chat?name=l2");
    assert_eq!(recv_text(&mut l1), "l2 just connected");
    let mut l3 = server.connect("/chat/lobby?name=l3");
    assert_eq!(recv_text(&mut l1), "l3 just connected");
    assert_eq!(recv_text(&mut l2), "l3 just connected");
    // Room names are case-sensitive: "Red" is not "red".
    let mut other = server.connect("/chat/Red?name=R");

    send_text(&mut red[0], "to red");
    m_binary(&mut blue[0], b"to blue");
    send_text(&mut l3, "to lobby");
    assert_eq!(recv_text(&mut red[1]), "r1 says: to red");
    assert_eq!(recv_binary(&mut blue[1]), b"to blue");
    assert_eq!(recv_text(&mut l1), "l3 says: to lobby");
    assert_eq!(recv_text(&mut l2), "l3 says: to lobby");

    // Nothing leaked across rooms.
    assert_next_is_who(&mut red[1], "Members of red: r1, r2");
    assert_next_is_who(&mut blue[1], "Members of blue: b1, b2");
    assert_next_is_who(&mut l1, "Members of lobby: l1, l2, l3");
    assert_next_is_who(&mut other, "Members of Red: R");
    // Leaving one room notifies only that room.
    drop(blue.pop());
    assert_eq!(recv_text(&mut blue[0]), "b2 disconnected");
    assert_next_is_who(&mut red[0], "Members of red: r1, r2");
});

fn m_binary(ws: &mut Ws, b: &[u8]) {
    ws.send(Message::binary(b.to_vec())).unwrap();
}

wstest!(chat_per_sender_order_concurrent, |s| {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 200;
    let server = s.server();
    let names: Vec<String> = (0..SENDERS)
        .map(|i| format!("s{i}"))
        .chain(["r0".to_string(), "r1".to_string()])
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // join_room waits for every join notice, so all six are members and
    // have no unread notices before anybody sends.
    let members = join_room(&server, "order", &name_refs);

    let mut handles = Vec::new();
    for (idx, mut ws) in members.into_iter().enumerate() {
        let is_sender = idx < SENDERS;
        handles.push(thread::spawn(move || {
            if is_sender {
                for n in 0..PER_SENDER {
                    ws.write(Message::text(format!("{n}"))).unwrap();
                    if n % 16 == 15 {
                        ws.flush().unwrap();
                    }
                }
                ws.flush().unwrap();
            }
            // Everyone receives every other sender's messages.
            let expected_senders = if is_sender { SENDERS - 1 } else { SENDERS };
            let mut next: HashMap<String, usize> = HashMap::new();
            for _ in 0..expected_senders * PER_SENDER {
                let t = recv_text(&mut ws);
                let (who, n) = t
                    .split_once(" says: ")
                    .unwrap_or_else(|| panic!("member {idx}: unexpected message {t:?}"));
                let n: usize = n
                    .parse()
                    .unwrap_or_else(|_| panic!("member {idx}: bad payload {t:?}"));
                let want = next.entry(who.to_string()).or_insert(0);
                assert_eq!(
                    n, *want,
                    "member {idx}: message from {who} out of order / lost / duplicated"
                );
                *want += 1;
            }
            assert_eq!(
                next.len(),
                expected_senders,
                "member {idx}: senders seen {next:?}"
            );
            assert!(
                next.values().all(|&v| v == PER_SENDER),
                "member {idx}: {next:?}"
            );
            ws
        }));
    }
    let mut done: Vec<Ws> = handles
        .into_iter()
        .map(|h| h.join().expect("member thread"))
        .collect();
    // Nothing extra arrived afterwards.
    assert_next_is_who(
        &mut done[SENDERS],
        "Members of order: s0, s1, s2, s3, r0, r1",
    );
});

wstest!(chat_message_then_close_in_one_write_is_delivered, |s| {
    let server = s.server();
    let mut watcher = server.connect("/chat/lastwords?name=watcher");
    let mut raw = server.raw_ws("/chat/lastwords?name=leaver");
    assert_eq!(recv_text(&mut watcher), "leaver just connected");
    // The last message and the Close arrive together: the message still counts.
    send_frames(
        &mut raw,
        &[Frame::text("last words"), Frame::close(1000, b"")],
    );
    assert_eq!(read_close(&mut raw), Some(1000));
    assert_eq!(recv_text(&mut watcher), "leaver says: last words");
    assert_eq!(recv_text(&mut watcher), "leaver disconnected");
});
