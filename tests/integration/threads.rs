//! Chat across threads: rooms whose members live on different event loops, concurrent
//! senders, shutdown, and the per-thread stats. The patterns with one loop run the same
//! bodies (their members just share the thread).

use std::collections::{BTreeSet, HashMap};
use std::thread;

use crate::common::*;

/// Distinct server threads among `members`.
fn threads_of(members: &[Member]) -> BTreeSet<u64> {
    members.iter().map(|m| m.thread).collect()
}

wstest!(
    room_across_threads_every_member_gets_every_message_once,
    |s| {
        let server = s.server();
        let mut members = join_spanning(&server, "wide");
        assert!(threads_of(&members).len() >= s.loops().min(2));
        for m in members.iter_mut() {
            let line = format!("hello from {}", m.name);
            send_text(&mut m.ws, &line);
        }
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        for m in members.iter_mut() {
            let got: BTreeSet<String> =
                (0..names.len() - 1).map(|_| recv_text(&mut m.ws)).collect();
            let want: BTreeSet<String> = names
                .iter()
                .filter(|n| **n != m.name)
                .map(|n| format!("{n} says: hello from {n}"))
                .collect();
            assert_eq!(got, want, "{} (thread {})", m.name, m.thread);
        }
        // Nothing was delivered twice: the next thing each member reads is its /who reply,
        // which lists members of every thread.
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.sort();
        for m in members.iter_mut() {
            send_text(&mut m.ws, "/who");
            let reply = recv_text(&mut m.ws);
            let listed = reply
                .strip_prefix("Members of wide: ")
                .unwrap_or_else(|| panic!("{reply:?}"));
            let mut listed: Vec<&str> = listed.split(", ").collect();
            listed.sort();
            assert_eq!(listed, all, "{}", m.name);
        }
    }
);

wstest!(join_and_leave_notices_cross_threads, |s| {
    let server = s.server();
    let mut members = join_spanning(&server, "doors");
    // The first member leaves; everyone else, on every thread, hears it once.
    let gone = members.remove(0);
    let (gone_name, gone_thread) = (gone.name.clone(), gone.thread);
    drop(gone);
    for m in members.iter_mut() {
        assert_eq!(
            recv_text(&mut m.ws),
            format!("{gone_name} disconnected"),
            "{} on thread {} about a member of thread {gone_thread}",
            m.name,
            m.thread
        );
    }
    let (mut late, _) = connect_on_thread(server.addr(), "/chat/doors?name=late");
    for m in members.iter_mut() {
        assert_eq!(recv_text(&mut m.ws), "late just connected");
    }
    send_text(&mut late, "/nick later");
    for m in members.iter_mut() {
        assert_eq!(recv_text(&mut m.ws), "late is now later");
    }
});

wstest!(concurrent_senders_keep_per_sender_order, |s| {
    const PER_SENDER: usize = 1000;
    let server = s.server();
    let members = join_spanning(&server, "busy");
    // Senders: one per thread first, then others, up to 4.
    let mut senders: Vec<String> = Vec::new();
    for t in threads_of(&members) {
        if let Some(m) = members.iter().find(|m| m.thread == t) {
            senders.push(m.name.clone());
        }
    }
    for m in &members {
        if senders.len() < 4 && !senders.contains(&m.name) {
            senders.push(m.name.clone());
        }
    }
    let handles: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            let senders = senders.clone();
            thread::spawn(move || {
                let sends = senders.contains(&m.name);
                if sends {
                    for i in 0..PER_SENDER {
                        m.ws.write(tungstenite::Message::text(format!("{} {i}", m.name)))
                            .unwrap();
                    }
                    m.ws.flush().unwrap();
                }
                let others = senders.iter().filter(|n| **n != m.name).count();
                let mut next: HashMap<String, usize> = HashMap::new();
                for _ in 0..others * PER_SENDER {
                    let text = recv_text(&mut m.ws);
                    let (from, rest) = text.split_once(" says: ").expect("a chat line");
                    let (sender, seq) = rest.split_once(' ').expect("name and number");
                    assert_eq!(from, sender);
                    let seq: usize = seq.parse().unwrap();
                    let expected = next.entry(sender.to_string()).or_default();
                    assert_eq!(
                        seq, *expected,
                        "{} got {sender}'s messages out of order",
                        m.name
                    );
                    *expected += 1;
                }
                assert!(
                    next.values().all(|n| *n == PER_SENDER),
                    "{}: {next:?}",
                    m.name
                );
                // No duplicates or strays: the next message is the /who reply.
                send_text(&mut m.ws, "/who");
                let reply = recv_text(&mut m.ws);
                assert!(
                    reply.starts_with("Members of busy: "),
                    "{}: {reply}",
                    m.name
                );
                m // still connected: a departure now would reach members still reading
            })
        })
        .collect();
    let members: Vec<Member> = handles
        .into_iter()
        .map(|h| h.join().expect("a member thread failed"))
        .collect();
    drop(members);
});

wstest!(shutdown_closes_clients_on_every_thread, |s| {
    let mut server = s.server();
    let mut members = join_spanning(&server, "bye");
    server.sigterm();
    for m in members.iter_mut() {
        assert_eq!(
            recv_close_code(&mut m.ws),
            Some(1001),
            "{} on thread {}",
            m.name,
            m.thread
        );
        let _ = m.ws.flush();
    }
    assert_eq!(server.wait_exit().code(), Some(0));
});

wstest!(stats_show_each_thread_with_its_role, |s| {
    let server = s.server();
    let members = join_spanning(&server, "counted");
    let stats = server.stats();
    let threads = stats["threads"].as_array().expect("threads array");
    let roles: Vec<&str> = threads
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    let expected: &[&str] = match s.pattern {
        "single-thread" => &["loop"],
        "acceptor-readers" => &["reader", "reader", "acceptor"],
        "work-queue" => &["io", "worker", "worker"],
        _ => &["loop", "loop"],
    };
    assert_eq!(roles, expected, "{stats}");
    let members_gauge: u64 = threads.iter().map(|t| t["members"].as_u64().unwrap()).sum();
    assert_eq!(members_gauge, members.len() as u64, "{stats}");
    for m in &members {
        let t = &threads[m.thread as usize];
        assert!(
            t["members"].as_u64().unwrap() >= 1,
            "thread {} holds {}: {stats}",
            m.thread,
            m.name
        );
    }
    if s.loops() > 1 {
        assert!(
            stats["totals"]["peer_batches_in"].as_u64().unwrap() > 0,
            "{stats}"
        );
    }
});
