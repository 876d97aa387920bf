//! What only one pattern does: how acceptor-readers places connections, multi-accept's
//! thundering herd, work-queue's workers and backpressure.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

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

/// A multi-accept server's loop threads as /proc shows them, read without touching the
/// server (a /stats request would itself be a connection that wakes a loop).
struct Loops {
    pid: u32,
    /// `/proc/<pid>/task/<tid>/status` of each thread named `loop-<i>`.
    status: Vec<PathBuf>,
}

/// A moment when every loop sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quiet {
    /// The loops' voluntary context switches, summed: how often they went to sleep.
    sleeps: u64,
    /// Descriptors the process holds: one more per connection it has accepted.
    fds: usize,
}

impl Loops {
    fn of(server: &Server) -> Loops {
        let pid = server.pid();
        let status = fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|task| task.unwrap().path())
            .filter(|task| {
                fs::read_to_string(task.join("comm")).is_ok_and(|c| c.starts_with("loop-"))
            })
            .map(|task| task.join("status"))
            .collect();
        Loops { pid, status }
    }

    /// Now, if every loop is asleep (state S).
    fn quiet(&self) -> Option<Quiet> {
        let mut sleeps = 0;
        for path in &self.status {
            let status = fs::read_to_string(path).unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap()
            };
            if !field("State:").starts_with('S') {
                return None;
            }
            sleeps += field("voluntary_ctxt_switches:").parse::<u64>().unwrap();
        }
        let fds = fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count();
        Some(Quiet { sleeps, fds })
    }

    /// Waits until every loop sleeps, with `fds` descriptors open if given, and two readings
    /// a moment apart agree: a thread that /proc shows as sleeping may still be on its way
    /// into the scheduler, its switch not yet counted; by the second reading it has been.
    fn settle(&self, fds: Option<usize>) -> Quiet {
        let mut last = None;
        for _ in 0..20_000 {
            let now = self.quiet().filter(|q| fds.is_none_or(|n| q.fds == n));
            if let Some(quiet) = now
                && now == last
            {
                return quiet;
            }
            last = now;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the loops never settled with {fds:?} descriptors: {last:?}");
    }
}

#[test]
fn multi_accept_all_wakes_every_loop_for_each_connection() {
    // What the kernel guarantees, when a connection arrives while every loop sleeps in
    // epoll_wait on the shared listener:
    // - all (no EPOLLEXCLUSIVE): the listener's wake-up runs every epoll instance's callback,
    //   and each wakes its sleeping loop, all before any of them can accept. Each then goes
    //   back to sleep: the winner after accepting, a loser inside epoll_wait (its re-check
    //   finds the queue empty) or after a futile accept4. So every loop sleeps once more:
    //   N sleeps per connection, N - 1 of them extra.
    // - exclusive: the walk of the wait queue stops at the first instance with a waiter, so
    //   one loop is woken, accepts and sleeps again: 1 sleep, 0 extra.
    // Each connection is therefore made only once every loop sleeps (and /proc agrees
    // twice), and measured once they all sleep again with the connection accepted; closing
    // it, which wakes only its owner, happens outside the measurement. The margins are
    // half the gap either way (at least (N-1)/2 extra per connection with all, at most 1/2
    // with exclusive), for a wake-up nobody planned (none are known: the loops have no
    // timer while idle). Counts of sleeps, never times: a slow or busy machine only makes
    // the waits longer.
    const LOOPS: u64 = 4;
    const CONNECTIONS: u64 = 20;
    let sleeps_per_connection = |wakeup: &str| {
        let server = Setup::new("multi-accept", "epoll", &["--threads", "4"])
            .server_with(&["--accept-wakeup", wakeup]);
        let loops = Loops::of(&server);
        assert_eq!(loops.status.len() as u64, LOOPS);
        let mut sleeps = Vec::new();
        for _ in 0..CONNECTIONS {
            let before = loops.settle(None);
            let client = server.tcp();
            let after = loops.settle(Some(before.fds + 1));
            sleeps.push(after.sleeps - before.sleeps);
            drop(client);
            loops.settle(Some(before.fds));
        }
        sleeps
    };
    let calm = sleeps_per_connection("exclusive");
    let herd = sleeps_per_connection("all");
    // Extra sleeps = sleeps - 1 per connection; the bounds, doubled to stay in integers.
    let extra_doubled = |sleeps: &[u64]| 2 * sleeps.iter().sum::<u64>().saturating_sub(CONNECTIONS);
    assert!(
        extra_doubled(&herd) >= CONNECTIONS * (LOOPS - 1),
        "all: sleeps per connection {herd:?}, expected {LOOPS} each"
    );
    assert!(
        extra_doubled(&calm) <= CONNECTIONS,
        "exclusive: sleeps per connection {calm:?}, expected 1 each"
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
