//! WebSocket clients made with `tungstenite`, an independent implementation (the tests must
//! not reuse the server's own codec): connecting, receiving, and joining rooms.
//!
//! Owns: the handshake helpers on [`Server`], the receive helpers (which skip pings and
//! pongs), and room joins that return only once every join notice has been read. Must
//! never: read without a bound (the stream's timeouts, and a bounded message count).

use std::net::{SocketAddr, TcpStream};
use std::thread;

use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::IO_TIMEOUT;
use super::server::Server;

pub type Ws = WebSocket<TcpStream>;

impl Server {
    /// WebSocket handshake with tungstenite; `Err(status)` if the server
    /// answered the upgrade with an HTTP error status.
    pub fn try_connect(&self, path: &str) -> Result<Ws, u16> {
        let stream = self.tcp();
        let url = format!("ws://{}{}", self.addr(), path);
        match tungstenite::client(url.as_str(), stream) {
            Ok((ws, _resp)) => Ok(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                Err(resp.status().as_u16())
            }
            Err(e) => panic!("handshake to {url} failed unexpectedly: {e:?}"),
        }
    }

    /// WebSocket handshake that must succeed.
    pub fn connect(&self, path: &str) -> Ws {
        match self.try_connect(path) {
            Ok(ws) => ws,
            Err(status) => panic!("handshake to {path} rejected with HTTP {status}"),
        }
    }

    /// The HTTP status of a WebSocket handshake that must fail.
    pub fn connect_status(&self, path: &str) -> u16 {
        match self.try_connect(path) {
            Ok(_) => panic!("handshake to {path} unexpectedly succeeded"),
            Err(status) => status,
        }
    }

    /// A fresh client can still do an echo round-trip.
    pub fn assert_still_serving(&self) {
        let mut ws = self.connect("/echo");
        ws.send(Message::text("still alive?")).unwrap();
        assert_eq!(recv_text(&mut ws), "still alive?");
        let _ = ws.close(None);
        let _ = ws.flush();
    }
}

/// Next data or close message, skipping pings and pongs.
pub fn recv(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(m) => return m,
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }
}

/// Next message, which must be text.
pub fn recv_text(ws: &mut Ws) -> String {
    match recv(ws) {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Next message, which must be binary.
pub fn recv_binary(ws: &mut Ws) -> Vec<u8> {
    match recv(ws) {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected a binary message, got {}", describe(&other)),
    }
}

/// Reads messages until a close frame; returns its code (None for an empty
/// close). Text/binary messages before it are skipped (bounded count).
pub fn recv_close_code(ws: &mut Ws) -> Option<u16> {
    for _ in 0..10_000 {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f: CloseFrame| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
    panic!("no close frame within 10000 messages");
}

pub fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text))
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
}

/// Reads text messages until one satisfies `pred` (at most `max` messages).
pub fn recv_text_until(ws: &mut Ws, max: usize, pred: impl Fn(&str) -> bool) -> String {
    let mut seen = Vec::new();
    for _ in 0..max {
        let t = recv_text(ws);
        if pred(&t) {
            return t;
        }
        seen.push(t);
    }
    panic!("expected message not seen; got {seen:?}");
}

fn describe(m: &Message) -> String {
    match m {
        Message::Text(t) if t.len() > 200 => format!("Text({} bytes)", t.len()),
        Message::Binary(b) if b.len() > 200 => format!("Binary({} bytes)", b.len()),
        other => format!("{other:?}"),
    }
}

/// Connects `names` one after another to `/chat/<room>?name=<name>`, and after
/// each join waits until every earlier member got the "<name> just
/// connected" notice, so that on return all of them are members and have no
/// unread notices. Names must be URL-safe.
pub fn join_room(server: &Server, room: &str, names: &[&str]) -> Vec<Ws> {
    let mut members: Vec<Ws> = Vec::new();
    for name in names {
        let ws = server.connect(&format!("/chat/{room}?name={name}"));
        let expected = format!("{name} just connected");
        for m in members.iter_mut() {
            assert_eq!(recv_text(m), expected);
        }
        members.push(ws);
    }
    members
}

/// A chat client and the server thread serving it.
pub struct Member {
    pub name: String,
    pub ws: Ws,
    /// The `X-Wschat-Thread` of its 101: the id of the serving thread in /stats.
    pub thread: u64,
}

/// Handshake to `ws://addr/path` that must succeed; also returns the serving thread's id.
pub fn connect_on_thread(addr: SocketAddr, path: &str) -> (Ws, u64) {
    let stream = TcpStream::connect(addr).expect("tcp connect to server");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let url = format!("ws://{addr}{path}");
    let (ws, response) = tungstenite::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("handshake to {url}: {e:?}"));
    let thread = response
        .headers()
        .get("x-wschat-thread")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no X-Wschat-Thread in {response:?}"));
    (ws, thread)
}

/// Members of `room` on at least two server threads where the pattern has two loops
/// (one otherwise). The kernel decides where a connection lands, so clients join in
/// concurrent batches of 4 until their threads differ (bounded: 16 batches). After each
/// batch a sentinel member joins alone and everyone reads up to its join notice, so on
/// return every member has read every notice and nothing is pending.
pub fn join_spanning(server: &Server, room: &str) -> Vec<Member> {
    let want = server.setup.loops().min(2);
    let addr = server.addr();
    let mut members: Vec<Member> = Vec::new();
    for round in 0..16 {
        let batch: Vec<_> = (0..4)
            .map(|i| {
                let (name, path) = (format!("m{round}-{i}"), format!("/chat/{room}"));
                thread::spawn(move || {
                    let (ws, thread) = connect_on_thread(addr, &format!("{path}?name={name}"));
                    Member { name, ws, thread }
                })
            })
            .collect();
        members.extend(batch.into_iter().map(|h| h.join().expect("join batch")));
        let name = format!("s{round}");
        let (ws, thread) = connect_on_thread(addr, &format!("/chat/{room}?name={name}"));
        let notice = format!("{name} just connected");
        for m in members.iter_mut() {
            recv_text_until(&mut m.ws, 128, |t| t == notice);
        }
        members.push(Member { name, ws, thread });
        let mut threads: Vec<u64> = members.iter().map(|m| m.thread).collect();
        threads.sort();
        threads.dedup();
        if threads.len() >= want {
            return members;
        }
    }
    panic!("16 batches of clients all landed on one server thread");
}

/// Asserts that `ws` has nothing pending from the server except what a
/// subsequent `/who` produces: sends `/who` and checks that the very next
/// message is the member list.
pub fn assert_next_is_who(ws: &mut Ws, expected_list: &str) {
    send_text(ws, "/who");
    let got = recv_text(ws);
    assert_eq!(
        got, expected_list,
        "expected nothing pending before the /who reply"
    );
}
