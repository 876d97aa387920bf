//! `--cluster`: rooms across two server nodes through a real `redis-server` (Debian
//! package), started by each test on a free loopback port without persistence. Skipped, with
//! a SKIPPED line, where redis-server is not installed (scripts/test.sh --require-all and CI
//! install it).
//!
//! Not in the every-pattern matrix (each test starts Redis and two nodes): single-thread and
//! reuseport with two loops (a room spans nodes and, on each node, threads) for everything;
//! work-queue (`/who` and renames come back from workers) and single-thread on io_uring for
//! the chat across nodes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const SINGLE: Setup = Setup::new("single-thread", "epoll", &[]);
const REUSEPORT: Setup = Setup::new("reuseport", "epoll", &["--threads", "2"]);
const WORK_QUEUE: Setup = Setup::new("work-queue", "epoll", &["--workers", "2"]);
const SINGLE_URING: Setup = Setup::new("single-thread", "uring", &[]);

/// A `redis-server` on a loopback port; killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

/// A free loopback port (bound, then released: another process could take it meanwhile,
/// which would fail the test loudly, not silently).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Whether `program` can be run; prints the SKIPPED line when it cannot (fails under CI=true).
pub fn have(program: &str, test: &str) -> bool {
    let found = Command::new(program)
        .arg(if program == "nginx" {
            "-v"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        // CI installs every tool (.ci/run): there a missing one is a failure, not a skip.
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {program} not found, and CI=true requires it");
        }
        eprintln!("SKIPPED {test}: {program} not found (apt-get install {program})");
    }
    found
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server vanishes as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // What deploy/redis.conf sets: a subscriber this far behind is disconnected.
            .args(["--client-output-buffer-limit", "pubsub 32mb 8mb 60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + IO_TIMEOUT;
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one inline command and returns the raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// PUBLISH with any payload (a RESP command, not an inline one); returns the reply.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> String {
        let mut cmd = Vec::new();
        cmd.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        for arg in [channel.as_bytes(), payload] {
            cmd.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            cmd.extend_from_slice(arg);
            cmd.extend_from_slice(b"\r\n");
        }
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(&cmd).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node of the cluster.
fn node(setup: Setup, redis: &Redis) -> Server {
    setup.server_with(&["--cluster", &redis.url()])
}

fn join(addr: SocketAddr, room: &str, name: &str) -> Ws {
    connect_on_thread(addr, &format!("/chat/{room}?name={name}")).0
}

/// Text messages up to and including the first that satisfies `pred` (at most `max`).
fn read_until(ws: &mut Ws, max: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..max {
        let t = recv_text(ws);
        let done = pred(&t);
        seen.push(t);
        if done {
            return seen;
        }
    }
    panic!("expected message not seen; got {seen:?}");
}

/// Reads `count` text messages.
fn read_n(ws: &mut Ws, count: usize) -> Vec<String> {
    (0..count).map(|_| recv_text(ws)).collect()
}

/// The names in a `/who` answer, sorted (order across nodes is per node).
fn who_names(ws: &mut Ws, room: &str) -> Vec<String> {
    send_text(ws, "/who");
    let reply = recv_text_until(ws, 64, |t| t.starts_with("Members of "));
    let list = reply
        .strip_prefix(&format!("Members of {room}: "))
        .unwrap_or_else(|| panic!("bad /who reply {reply:?}"));
    let mut names: Vec<String> = list.split(", ").map(str::to_string).collect();
    names.sort();
    names
}

/// Joins `name` to `room` on `server` and waits until Redis confirmed the publish of its
/// join notice, so that a member joining next, anywhere, cannot receive that notice (a
/// member who joins while a message is in flight may receive it, as across threads).
fn join_settled(server: &Server, room: &str, name: &str) -> Ws {
    let published = server.total("cluster_published");
    let ws = join(server.addr(), room, name);
    server.wait_total_at_least("cluster_published", published + 1);
    ws
}

/// Members a and c on node 1, b and d on node 2, joined in that order; every member has
/// read every join notice on return.
fn two_node_room(n1: &Server, n2: &Server, room: &str) -> Vec<(String, Ws)> {
    let mut members: Vec<(String, Ws)> = Vec::new();
    for (name, server) in [("a", n1), ("b", n2), ("c", n1), ("d", n2)] {
        let ws = join_settled(server, room, name);
        let notice = format!("{name} just connected");
        for (_, m) in members.iter_mut() {
            assert_eq!(recv_text(m), notice);
        }
        members.push((name.to_string(), ws));
    }
    members
}

fn chat_across_nodes(setup: Setup) {
    if !have("redis-server", "cluster chat_across_nodes") {
        return;
    }
    let redis = Redis::start();
    let (n1, n2) = (node(setup, &redis), node(setup, &redis));
    let mut members = two_node_room(&n1, &n2, "r");

    // Every member sends 40 messages, interleaved; everyone else gets each one once, in
    // each sender's order.
    const N: usize = 40;
    for i in 0..N {
        for (name, ws) in members.iter_mut() {
            send_text(ws, &format!("{name}-{i}"));
        }
    }
    for (receiver, ws) in members.iter_mut() {
        let got = read_n(ws, 3 * N);
        for sender in ["a", "b", "c", "d"] {
            let prefix = format!("{sender} says: ");
            let from: Vec<&str> = got.iter().filter_map(|t| t.strip_prefix(&prefix)).collect();
            if sender == receiver {
                assert!(from.is_empty(), "{receiver} got its own messages back");
                continue;
            }
            let want: Vec<String> = (0..N).map(|i| format!("{sender}-{i}")).collect();
            assert_eq!(from, want, "{receiver} from {sender}: once each, in order");
        }
    }

    // /who lists the whole room from either node.
    let all = ["a", "b", "c", "d"].map(String::from).to_vec();
    assert_eq!(who_names(&mut members[0].1, "r"), all);
    assert_eq!(who_names(&mut members[1].1, "r"), all);

    // /nick crosses nodes, and /who sees it.
    send_text(&mut members[1].1, "/nick bee");
    for i in [0, 2, 3] {
        assert_eq!(recv_text(&mut members[i].1), "b is now bee");
    }
    let mut names = who_names(&mut members[0].1, "r");
    names.sort();
    assert_eq!(names, ["a", "bee", "c", "d"]);

    // A leave on node 2 reaches node 1; /who forgets it.
    let (_, d) = members.pop().unwrap();
    drop(d);
    for i in [0, 1, 2] {
        assert_eq!(recv_text(&mut members[i].1), "d disconnected");
    }
    assert_eq!(who_names(&mut members[2].1, "r"), ["a", "bee", "c"]);

    // Binary messages cross verbatim.
    members[0]
        .1
        .send(tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
        .unwrap();
    assert_eq!(recv_binary(&mut members[1].1), [0, 1, 2, 255]);
    assert_eq!(recv_binary(&mut members[2].1), [0, 1, 2, 255]);

    // Another room on the same nodes hears nothing of this one.
    let mut other = join(n2.addr(), "elsewhere", "x");
    send_text(&mut members[0].1, "only r");
    assert_eq!(recv_text(&mut members[1].1), "a says: only r");
    assert_eq!(who_names(&mut other, "elsewhere"), ["x"]);

    assert!(n1.total("cluster_published") > 0);
    assert!(n2.total("cluster_received") > 0);
    assert_eq!(n1.total("cluster_not_propagated"), 0);
    assert_eq!(n1.total("cluster_bad_input"), 0);
    let stats = n1.stats();
    assert_eq!(stats["cluster"]["link_up"], true, "{stats}");

    // /metrics says the same: the broker thread's gauge, its counters, the section's info.
    let metrics = n1.get("/metrics").body_text();
    let broker = stats["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "broker")
        .unwrap_or_else(|| panic!("no broker thread: {stats}"))["id"]
        .clone();
    let link_up = format!("wschat_cluster_link_up{{thread=\"{broker}\",role=\"broker\"}} 1\n");
    assert!(metrics.contains(&link_up), "no {link_up:?} in:\n{metrics}");
    assert!(
        metrics.contains("# TYPE wschat_cluster_published_total counter\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "wschat_cluster_info{{node=\"{}\",",
            stats["cluster"]["node"].as_str().unwrap()
        )),
        "{metrics}"
    );
}

fn redis_restart(setup: Setup) {
    if !have("redis-server", "cluster redis_restart") {
        return;
    }
    let mut redis = Redis::start();
    let (n1, n2) = (node(setup, &redis), node(setup, &redis));
    let mut m = two_node_room(&n1, &n2, "r");
    send_text(&mut m[0].1, "before");
    for (_, ws) in m.iter_mut().skip(1) {
        assert_eq!(recv_text(ws), "a says: before");
    }

    redis.kill();
    // Every member hears that the link is gone.
    for (name, ws) in m.iter_mut() {
        let notice = recv_text(ws);
        assert!(
            notice.contains("lost the link to the broker"),
            "{name}: {notice:?}"
        );
    }
    // A message sent meanwhile reaches its own node, and is counted as not propagated.
    send_text(&mut m[0].1, "while down");
    assert_eq!(recv_text(&mut m[2].1), "a says: while down");
    n1.wait_total_at_least("cluster_not_propagated", 1);
    // /who while down says that it only knows this node.
    let who = {
        send_text(&mut m[2].1, "/who");
        recv_text_until(&mut m[2].1, 8, |t| t.starts_with("Members of"))
    };
    assert!(who.contains("no link to the broker"), "{who:?}");

    redis.restart();
    for (_, ws) in m.iter_mut() {
        recv_text_until(ws, 8, |t| t.contains("link to the broker restored"));
    }
    n1.wait_total_at_least("cluster_reconnects", 1);
    n2.wait_total_at_least("cluster_reconnects", 1);

    // Resumed: messages cross again; node 2 is told that one of a's messages is missing,
    // and never gets it.
    send_text(&mut m[0].1, "after");
    for i in [1, 3] {
        let seen = read_until(&mut m[i].1, 8, |t| t == "a says: after");
        assert!(!seen.iter().any(|t| t.contains("while down")), "{seen:?}");
        assert!(
            seen.iter()
                .any(|t| t.contains("1 message(s) from another node did not reach")),
            "{seen:?}"
        );
    }
    assert_eq!(recv_text(&mut m[2].1), "a says: after");
    send_text(&mut m[1].1, "b after");
    for i in [0, 2, 3] {
        assert_eq!(recv_text(&mut m[i].1), "b says: b after");
    }
    // /who sees both nodes again (each rewrote its part after the restart).
    assert_eq!(who_names(&mut m[3].1, "r"), ["a", "b", "c", "d"]);
    assert!(n1.total("cluster_gaps") >= 1);
    assert!(
        n2.total("cluster_gaps") >= 2,
        "the link drop and a's missing message"
    );
}

fn dead_node_leaves_who(setup: Setup) {
    if !have("redis-server", "cluster dead_node_leaves_who") {
        return;
    }
    let redis = Redis::start();
    let n1 = node(setup, &redis);
    let mut a = join_settled(&n1, "r", "a");
    {
        let n2 = node(setup, &redis);
        let _b = join(n2.addr(), "r", "b");
        assert_eq!(recv_text(&mut a), "b just connected");
        assert_eq!(who_names(&mut a, "r"), ["a", "b"]);
        // n2 is SIGKILLed here: it cannot clean up its part of the room's hash.
    }
    // Its liveness key expires (6 s); bounded wait for /who to forget it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = who_names(&mut a, "r");
        if names == ["a"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead node still listed: {names:?}"
        );
        thread::sleep(Duration::from_millis(500));
    }
    // And the stale field is removed (the HDEL follows the answer: bounded wait): a's
    // field (`<node>:<epoch>:<member>`, 50 bytes) is the only one left.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let fields = redis.command("HKEYS wschat:who:r");
        if fields.starts_with("*1\r\n$50\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "stale field kept: {fields:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn gap_on_output_buffer_limit(setup: Setup) {
    if !have("redis-server", "cluster gap_on_output_buffer_limit") {
        return;
    }
    let redis = Redis::start();
    let (n1, n2) = (node(setup, &redis), node(setup, &redis));
    let mut m = two_node_room(&n1, &n2, "r");
    // Redis kills every subscriber over a tiny hard limit (CLIENT KILL TYPE pubsub has the
    // same effect): node 2's members are told of the gap, and the link comes back.
    let reply = redis.command("CLIENT KILL TYPE pubsub");
    assert!(reply.starts_with(':'), "{reply:?}");
    for i in [0, 1] {
        recv_text_until(&mut m[i].1, 8, |t| {
            t.contains("lost the link to the broker")
        });
        recv_text_until(&mut m[i].1, 8, |t| {
            t.contains("link to the broker restored")
        });
    }
    send_text(&mut m[0].1, "again");
    recv_text_until(&mut m[1].1, 8, |t| t == "a says: again");
    n2.wait_total_at_least("cluster_gaps", 1);
}

/// Redis input is bounded like a client's: an event longer than a client of this node could
/// have caused (here from a node id nobody runs: whoever can publish on the channel) is
/// dropped and counted, and the publisher's next event shows the gap; one far longer is a
/// protocol error that resets the link.
fn remote_event_over_max_message(setup: Setup) {
    if !have("redis-server", "cluster remote_event_over_max_message") {
        return;
    }
    let redis = Redis::start();
    let n1 = setup.server_with(&["--cluster", &redis.url(), "--max-message", "1000"]);
    let mut a = join_settled(&n1, "r", "a");
    let event = |seq: u64, text: &str| format!("wschat1 00000000000000ee {seq} t {text}");

    let reply = redis.publish("wschat:room:r", event(1, &"x".repeat(4000)).as_bytes());
    assert_eq!(reply, ":1\r\n", "one subscriber: node 1");
    redis.publish("wschat:room:r", event(2, "after").as_bytes());
    let seen = read_until(&mut a, 4, |t| t == "after");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("1 message(s) from another node did not reach"),
        "{seen:?}"
    );
    assert_eq!(n1.stats()["cluster"]["remote_oversize"], 1);
    assert_eq!(n1.total("cluster_bad_input"), 0);
    assert_eq!(n1.total("cluster_reconnects"), 0);

    redis.publish("wschat:room:r", event(3, &"y".repeat(64 * 1024)).as_bytes());
    recv_text_until(&mut a, 8, |t| t.contains("lost the link to the broker"));
    recv_text_until(&mut a, 8, |t| t.contains("link to the broker restored"));
    assert!(n1.total("cluster_bad_input") >= 1);
    n1.wait_total_at_least("cluster_reconnects", 1);
}

#[test]
fn remote_event_over_max_message_single_thread() {
    remote_event_over_max_message(SINGLE);
}

#[test]
fn chat_across_nodes_single_thread() {
    chat_across_nodes(SINGLE);
}

#[test]
fn chat_across_nodes_reuseport() {
    chat_across_nodes(REUSEPORT);
}

#[test]
fn chat_across_nodes_work_queue() {
    chat_across_nodes(WORK_QUEUE);
}

#[test]
fn chat_across_nodes_single_thread_uring() {
    chat_across_nodes(SINGLE_URING);
}

#[test]
fn redis_restart_single_thread() {
    redis_restart(SINGLE);
}

#[test]
fn redis_restart_reuseport() {
    redis_restart(REUSEPORT);
}

#[test]
fn dead_node_leaves_who_single_thread() {
    dead_node_leaves_who(SINGLE);
}

#[test]
fn subscriber_disconnect_is_a_visible_gap() {
    gap_on_output_buffer_limit(SINGLE);
}
