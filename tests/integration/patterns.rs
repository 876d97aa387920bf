//! What only one pattern does: how acceptor-readers places connections, multi-accept's
//! thundering herd, work-queue's workers and backpressure.

use std::collections::HashMap;

use crate::common::*;

fn server(pattern: &'static str, flags: &'static [&'static str]) -> Server {
    Setup::new(pattern, "epoll", flags).server()
}

/// Connections per serving thread.
fn placement(clients: &[(Ws, u64)]) -> HashMap<u64, usize> {
    let mut per_thread = HashMap::new();
    for (_, t) in clients {
        *per_thread.entry(*t).or_default() += 1;
    }
    per_thread
}

/// `n` clients of `path`, opened one after another.
fn open(server: &Server, path: &str, n: usize) -> Vec<(Ws, u64)> {
    (0..n)
        .map(|_| connect_on_thread(server.addr(), path))
        .collect()
}

/// Polls /stats (bounded) until `thread` holds `members` chat members. (Members, not
/// active connections: the /stats request is itself a connection on some reader.)
fn wait_members(server: &Server, thread: usize, members: u64) {
    for _ in 0..200 {
        if server.stats()["threads"][thread]["members"].as_u64() == Some(members) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!(
        "thread {thread} never held {members} members: {}",
        server.stats()
    );
}

#[test]
fn acceptor_readers_round_robin_alternates() {
    let server = server("acceptor-readers", &["--threads", "2"]);
    let threads: Vec<u64> = open(&server, "/echo", 6).iter().map(|(_, t)| *t).collect();
    assert_eq!(threads, [0, 1, 0, 1, 0, 1]);
}

#[test]
fn acceptor_readers_least_conns_fills_the_emptier_reader() {
    for assign in ["least-conns", "round-robin"] {
        let server = Setup::new("acceptor-readers", "epoll", &["--threads", "2"])
            .server_with(&["--assign", assign]);
        let mut clients = open(&server, "/chat/lb", 4);
        assert_eq!(placement(&clients), HashMap::from([(0, 2), (1, 2)]));
        // Empty reader 0, then place two more.
        clients.retain(|(_, t)| *t != 0);
        wait_members(&server, 0, 0);
        let new: Vec<u64> = open(&server, "/chat/lb", 2)
            .iter()
            .map(|(_, t)| *t)
            .collect();
        if assign == "least-conns" {
            assert_eq!(new, [0, 0], "both go to the empty reader");
        } else {
            assert_ne!(new[0], new[1], "readers in turn, whatever their load");
        }
    }
}

#[test]
fn multi_accept_all_wakes_every_loop_for_each_connection() {
    // With --accept-wakeup all, each arrival wakes both loops; the kernel puts the loser
    // back to sleep inside epoll_wait, so futile accepts barely show it, but the loops'
    // sleeps (voluntary context switches) do. Compared as counts, never as times.
    let sleeps_per_100 = |wakeup: &str| {
        let server = Setup::new("multi-accept", "epoll", &["--threads", "2"])
            .server_with(&["--accept-wakeup", wakeup]);
        let before = server.total("voluntary_switches");
        for _ in 0..100 {
            drop(server.tcp());
            std::thread::sleep(std::time::Duration::from_millis(2)); // let both loops sleep
        }
        server.wait_total_at_least("accepted", 101);
        server.total("voluntary_switches") - before
    };
    let (calm, herd) = (sleeps_per_100("exclusive"), sleeps_per_100("all"));
    assert!(
        herd > calm,
        "sleeps per 100 connections: all {herd}, exclusive {calm}"
    );
}

#[test]
fn work_queue_keeps_order_through_a_tiny_queue_and_slow_workers() {
    // A one-slot queue and a worker that takes 300 µs a message: the I/O loop must hold
    // messages and stop reading, never lose or reorder them.
    let server = Setup::new("work-queue", "epoll", &[]).server_with(&[
        "--workers",
        "1",
        "--queue-depth",
        "1",
        "--work-us",
        "300",
    ]);
    let mut m = join_room(&server, "q", &["rx", "tx1", "tx2"]);
    let mut senders = m.split_off(1);
    for i in 0..200 {
        for (k, tx) in senders.iter_mut().enumerate() {
            tx.write(tungstenite::Message::text(format!("{k} {i}")))
                .unwrap();
        }
    }
    for tx in senders.iter_mut() {
        tx.flush().unwrap();
    }
    let mut next = [0usize; 2];
    for _ in 0..400 {
        let text = recv_text(&mut m[0]);
        let line = text.split_once(" says: ").unwrap().1;
        let (k, i) = line.split_once(' ').unwrap();
        let (k, i): (usize, usize) = (k.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[k], "sender {k} out of order");
        next[k] += 1;
    }
    let stats = server.stats();
    let worker = &stats["threads"][1];
    assert_eq!(worker["role"], "worker");
    assert!(worker["work_items"].as_u64().unwrap() >= 400, "{stats}");
}
