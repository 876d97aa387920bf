//! The cluster behind the proxies of deploy/, on loopback ports: HAProxy in TCP mode (L4)
//! and nginx as an HTTP/1.1 upgrade proxy (L7), both from the Debian packages and both
//! configured from the templates deploy/run.sh uses. Proves that each passes the upgrade
//! (the 101 with the server's own headers) and the chat, across two nodes. Skipped, with a
//! SKIPPED line, where haproxy, nginx or redis-server is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::cluster::{Redis, free_port, have};
use crate::common::*;

const SETUP: Setup = Setup::new("single-thread", "epoll", &[]);

/// A proxy process in its own scratch directory; killed on drop.
struct Proxy {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wschat-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Fills `@KEY@` placeholders of a deploy/ template.
fn fill(template: &str, pairs: &[(&str, String)]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/");
    let mut text = std::fs::read_to_string(format!("{path}{template}"))
        .unwrap_or_else(|e| panic!("read deploy/{template}: {e}"));
    for (key, value) in pairs {
        text = text.replace(&format!("@{key}@"), value);
    }
    assert!(
        !text.contains("@SERVERS@"),
        "unfilled placeholder in {template}"
    );
    text
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str, dir: &Path) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
            panic!("{what} exited ({status}) before listening:\n{log}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_logged(cmd: &mut Command, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("out.log")).expect("create log");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn proxy")
}

fn haproxy(nodes: &[SocketAddr]) -> Proxy {
    let dir = scratch("haproxy");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("    server n{i} {n}\n"))
        .collect();
    let config = fill(
        "haproxy.cfg.in",
        &[
            ("LISTEN", addr.to_string()),
            ("MAXCONN", "1000".into()),
            ("TIMEOUT", "90s".into()),
            ("SERVERS", servers),
        ],
    );
    std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
    let mut child = spawn_logged(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg")),
        &dir,
    );
    wait_listening(addr, &mut child, "haproxy", &dir);
    Proxy { child, dir, addr }
}

fn nginx(nodes: &[SocketAddr]) -> Proxy {
    let dir = scratch("nginx");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let servers: String = nodes
        .iter()
        .map(|n| format!("        server {n};\n"))
        .collect();
    let config = fill(
        "nginx.conf.in",
        &[
            ("PREFIX", dir.display().to_string()),
            ("LISTEN", addr.to_string()),
            ("WORKER_CONNECTIONS", "1024".into()),
            ("RLIMIT", "4096".into()),
            ("TIMEOUT", "90s".into()),
            ("SERVERS", servers),
        ],
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let mut child = spawn_logged(
        Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log")),
        &dir,
    );
    wait_listening(addr, &mut child, "nginx", &dir);
    Proxy { child, dir, addr }
}

/// Members through `proxy` land on both nodes (least connections), and chat crosses them.
fn chat_through(proxy: &Proxy, n1: &Server, n2: &Server, room: &str) {
    let before = n1.total("members") + n2.total("members");
    let mut members = Vec::new();
    for name in ["p", "q", "r", "s"] {
        // connect_on_thread fails unless the 101 carries X-Wschat-Thread: the proxy passed
        // the server's upgrade response, not one of its own.
        let (ws, _thread) = connect_on_thread(proxy.addr, &format!("/chat/{room}?name={name}"));
        members.push(ws);
        // Let the join settle before the next (its notice is published by then).
        let deadline = Instant::now() + IO_TIMEOUT;
        while n1.total("members") + n2.total("members") < before + members.len() as u64 {
            assert!(Instant::now() < deadline, "join through the proxy not seen");
            thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        n1.total("members") >= 1 && n2.total("members") >= 1,
        "one node got every member"
    );
    // Join notices are not asserted here, and not waited for: notices of members on the
    // other node come through Redis and may reach a member after a later local one, or
    // reach a member that joined while they were in flight. Whatever notices come first,
    // the line and the /who reply must follow them.
    let is_notice = |t: &str| t.ends_with(" just connected");
    send_text(&mut members[0], "through the proxy");
    for ws in members.iter_mut().skip(1) {
        let line = recv_text_until(ws, 8, |t| !is_notice(t));
        assert_eq!(line, "p says: through the proxy");
    }
    send_text(&mut members[3], "/who");
    let who = recv_text_until(&mut members[3], 8, |t| !is_notice(t));
    for name in ["p", "q", "r", "s"] {
        assert!(who.contains(name), "{who:?}");
    }
}

#[test]
fn cluster_behind_haproxy_and_nginx() {
    for program in ["redis-server", "haproxy", "nginx"] {
        if !have(program, "proxies cluster_behind_haproxy_and_nginx") {
            return;
        }
    }
    let redis = Redis::start();
    let url = redis.url();
    let n1 = SETUP.server_with(&["--cluster", &url]);
    let n2 = SETUP.server_with(&["--cluster", &url]);
    let nodes = [n1.addr(), n2.addr()];

    let l4 = haproxy(&nodes);
    chat_through(&l4, &n1, &n2, "l4");
    let l7 = nginx(&nodes);
    chat_through(&l7, &n1, &n2, "l7");

    // The page is served through both, too.
    for proxy in [&l4, &l7] {
        let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        use std::io::Write as _;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let head = read_http_head(&mut s).expect("page through the proxy");
        assert_eq!(head.status, 200);
    }
}
