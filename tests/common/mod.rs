//! Shared helpers for the black-box integration tests.
//!
//! Everything here talks to the real `wschat` binary over loopback TCP:
//! [`Server`] starts it and kills it on drop, the `connect*` helpers use
//! `tungstenite` as an independent client, and the raw helpers write hand-built
//! bytes (HTTP heads, WebSocket frames) and parse the replies themselves.
//!
//! Every read and write has a timeout ([`IO_TIMEOUT`]); those are liveness
//! bounds so that a broken server fails a test instead of hanging it, never
//! performance thresholds.
#![allow(dead_code)]

#[macro_use]
pub mod macros;

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// Liveness bound for every socket read/write in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Liveness bound for the server to print its start-up line (debug builds).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Liveness bound for the server to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

pub type Ws = WebSocket<TcpStream>;

/// The RFC 6455 sample key and its accept value.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// WebSocket opcodes.
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

// ---------------------------------------------------------------------------
// Test matrix
// ---------------------------------------------------------------------------

/// One (execution pattern, I/O backend) combination under test.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub pattern: &'static str,
    pub io: &'static str,
    /// Flags every server of this combination gets (thread counts, `--uring-features none`).
    pub flags: &'static [&'static str],
}

impl Setup {
    pub const fn new(
        pattern: &'static str,
        io: &'static str,
        flags: &'static [&'static str],
    ) -> Setup {
        Setup { pattern, io, flags }
    }

    /// Event loops that hold connections: how many threads a room can span.
    pub fn loops(&self) -> usize {
        match self.pattern {
            "single-thread" | "work-queue" => 1,
            _ => self
                .flags
                .iter()
                .position(|f| *f == "--threads")
                .and_then(|i| self.flags.get(i + 1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        }
    }

    /// Starts the server for this combination with default flags.
    pub fn server(&self) -> Server {
        self.server_with(&[])
    }

    /// Starts the server for this combination with extra flags.
    pub fn server_with(&self, extra: &[&str]) -> Server {
        Server::start(*self, extra)
    }
}

// ---------------------------------------------------------------------------
// Server process guard
// ---------------------------------------------------------------------------

/// A running `wschat` process; killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    pub setup: Setup,
    /// Everything the server printed (stdout and stderr), for failure diagnostics.
    log: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

fn spawn_line_pump<R: Read + Send + 'static>(
    src: R,
    tag: &'static str,
    log: Arc<Mutex<String>>,
    first_lines: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if let Ok(mut l) = log.lock() {
                        // Keep diagnostics bounded.
                        if l.len() < 256 * 1024 {
                            l.push_str(tag);
                            l.push_str(&line);
                        }
                    }
                    if let Some(tx) = &first_lines {
                        // The receiver may be gone after start-up: ignore errors.
                        let _ = tx.send(line);
                    }
                }
            }
        }
    });
}

impl Server {
    pub fn start(setup: Setup, extra: &[&str]) -> Server {
        Server::launch(setup, Command::new(env!("CARGO_BIN_EXE_wschat")), extra)
    }

    /// Starts the server with its open-file limit (soft and hard) set to `limit`.
    pub fn start_with_fd_limit(setup: Setup, limit: u32, extra: &[&str]) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_wschat"));
        Server::launch(setup, cmd, extra)
    }

    fn launch(setup: Setup, mut cmd: Command, extra: &[&str]) -> Server {
        cmd.args([
            "--addr",
            "127.0.0.1:0",
            "--pattern",
            setup.pattern,
            "--io",
            setup.io,
        ])
        .args(setup.flags)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // Flags only: no WSCHAT_* setting from the caller's environment leaks in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WSCHAT_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().expect("spawn wschat binary");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        spawn_line_pump(
            child.stdout.take().unwrap(),
            "[stdout] ",
            log.clone(),
            Some(tx),
        );
        spawn_line_pump(child.stderr.take().unwrap(), "[stderr] ", log.clone(), None);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on").nth(1) {
                        let tok = rest.split_whitespace().next().unwrap_or("");
                        let tok = tok.trim_end_matches(|c: char| !c.is_ascii_digit());
                        let addr: SocketAddr = tok
                            .parse()
                            .unwrap_or_else(|e| panic!("bad address {tok:?} in {line:?}: {e}"));
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    thread::sleep(Duration::from_millis(100));
                    panic!(
                        "server ({setup:?}, flags {extra:?}) printed no 'listening on' line \
                         (exit: {status:?}); output:\n{}",
                        log.lock().map(|l| l.clone()).unwrap_or_default()
                    );
                }
            }
        };
        Server {
            child,
            addr,
            setup,
            log,
            exited: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A plain TCP connection with liveness timeouts and TCP_NODELAY.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("tcp connect to server");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// WebSocket handshake with tungstenite; `Err(status)` if the server
    /// answered the upgrade with an HTTP error status.
    pub fn try_connect(&self, path: &str) -> Result<Ws, u16> {
        let stream = self.tcp();
        let url = format!("ws://{}{}", self.addr, path);
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

    /// Raw WebSocket handshake (RFC sample key) on a plain TcpStream; checks
    /// the 101 and its accept value and returns the stream positioned right
    /// after the response head.
    pub fn raw_ws(&self, path: &str) -> TcpStream {
        let mut s = self.tcp();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes()).unwrap();
        let resp = read_http_head(&mut s).expect("read 101 response head");
        assert_eq!(resp.status, 101, "raw handshake to {path}: {resp:?}");
        assert_eq!(
            resp.header("sec-websocket-accept"),
            Some(SAMPLE_ACCEPT),
            "{resp:?}"
        );
        s
    }

    /// Sends a raw HTTP request and reads the response (head, plus body by
    /// Content-Length or until EOF).
    pub fn http_raw(&self, request: &[u8]) -> HttpResponse {
        let mut s = self.tcp();
        // The server may answer (and close) before it read everything, e.g.
        // 431 for an oversized head: a failed write is not a test failure.
        let _ = s.write_all(request);
        let mut resp = read_http_head(&mut s)
            .unwrap_or_else(|e| panic!("no HTTP response to {:?}: {e}", preview(request)));
        read_http_body(&mut s, &mut resp);
        resp
    }

    /// `GET path` as a plain (non-upgrade) HTTP/1.1 request.
    pub fn get(&self, path: &str) -> HttpResponse {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        self.http_raw(req.as_bytes())
    }

    /// `GET /stats`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let resp = self.get("/stats");
        assert_eq!(resp.status, 200, "GET /stats: {resp:?}");
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
            panic!(
                "/stats is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&resp.body)
            )
        })
    }

    /// `totals.<counter>` from /stats.
    pub fn total(&self, counter: &str) -> u64 {
        let stats = self.stats();
        stats["totals"][counter]
            .as_u64()
            .unwrap_or_else(|| panic!("totals.{counter} missing or not an integer: {stats}"))
    }

    /// Polls /stats (bounded: up to ~IO_TIMEOUT) until `totals.<counter>` >= `min`.
    pub fn wait_total_at_least(&self, counter: &str, min: u64) -> u64 {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let v = self.total(counter);
            if v >= min || Instant::now() >= deadline {
                return v;
            }
            thread::sleep(Duration::from_millis(50));
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

    /// Sends SIGTERM to the server process.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM failed: {st:?}");
    }

    /// Waits (bounded by EXIT_TIMEOUT) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(st);
                return st;
            }
            if Instant::now() >= deadline {
                panic!("server did not exit within {EXIT_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            // Give the pumps a moment to collect the last lines.
            thread::sleep(Duration::from_millis(50));
            let out = self.output();
            let tail: String = {
                let start = out.len().saturating_sub(8 * 1024);
                let start = (start..out.len())
                    .find(|&i| out.is_char_boundary(i))
                    .unwrap_or(0);
                out[start..].to_string()
            };
            eprintln!(
                "--- server output ({:?}) ---\n{tail}--- end ---",
                self.setup
            );
        }
    }
}

// ---------------------------------------------------------------------------
// tungstenite client helpers
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    if b.len() > 200 {
        format!("{s}...({} bytes)", b.len())
    } else {
        s
    }
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed). Any byte
/// stream will do: a TcpStream, or a TLS stream over one.
pub fn read_http_head(s: &mut impl Read) -> io::Result<HttpResponse> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("response head too large"));
        }
        match s.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("EOF after {:?}", String::from_utf8_lossy(&head)),
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{e} after {:?}", String::from_utf8_lossy(&head)),
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::other(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(HttpResponse {
        status,
        status_line,
        headers,
        body: Vec::new(),
    })
}

/// Reads the body: Content-Length bytes if given, else until EOF/reset (bounded
/// by the read timeout). A reset after a complete head is tolerated.
pub fn read_http_body(s: &mut TcpStream, resp: &mut HttpResponse) {
    if (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304 {
        return; // no body; for 101 what follows is the WebSocket stream
    }
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)
            .unwrap_or_else(|e| panic!("reading {len}-byte body of {}: {e}", resp.status_line));
        resp.body = body;
    } else {
        let mut body = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading body of {}: {e}", resp.status_line),
            }
        }
        resp.body = body;
    }
}

/// A handshake request head built from header lines (each without CRLF).
/// The head of a WebSocket upgrade of `path` (RFC 6455's sample key) with `extra` headers.
pub fn upgrade_head(addr: SocketAddr, path: &str, extra: &[&str]) -> Vec<u8> {
    let host = format!("Host: {addr}");
    let key = format!("Sec-WebSocket-Key: {SAMPLE_KEY}");
    let mut headers = vec![
        host.as_str(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        key.as_str(),
        "Sec-WebSocket-Version: 13",
    ];
    headers.extend_from_slice(extra);
    request_head(&format!("GET {path} HTTP/1.1"), &headers)
}

pub fn request_head(request_line: &str, headers: &[&str]) -> Vec<u8> {
    let mut s = String::new();
    s.push_str(request_line);
    s.push_str("\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// Raw WebSocket frames
// ---------------------------------------------------------------------------

/// How the payload length is encoded in a hand-built frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LenEnc {
    /// The shortest encoding (what a correct client sends).
    Minimal,
    /// Force the 16-bit extended length (126).
    Ext16,
    /// Force the 64-bit extended length (127).
    Ext64,
    /// 64-bit extended length with this exact value, whatever the payload.
    Raw64(u64),
}

/// A hand-built WebSocket frame (client to server: masked unless told not to).
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: LenEnc,
    pub payload: Vec<u8>,
}

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

impl Frame {
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(MASK),
            len: LenEnc::Minimal,
            payload: payload.into(),
        }
    }
    pub fn text(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_TEXT, payload)
    }
    pub fn binary(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_BINARY, payload)
    }
    pub fn cont(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_CONT, payload)
    }
    pub fn ping(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_PING, payload)
    }
    /// Close frame with a status code and a (raw bytes) reason.
    pub fn close(code: u16, reason: &[u8]) -> Frame {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        Frame::new(OP_CLOSE, p)
    }
    pub fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }
    pub fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }
    pub fn unmasked(mut self) -> Frame {
        self.mask = None;
        self
    }
    pub fn len_enc(mut self, len: LenEnc) -> Frame {
        self.len = len;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push(((self.fin as u8) << 7) | ((self.rsv & 0x7) << 4) | (self.opcode & 0xF));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let n = self.payload.len();
        let enc = match self.len {
            LenEnc::Minimal if n <= 125 => None,
            LenEnc::Minimal if n <= 0xFFFF => Some(LenEnc::Ext16),
            LenEnc::Minimal => Some(LenEnc::Ext64),
            other => Some(other),
        };
        match enc {
            None => out.push(mask_bit | n as u8),
            Some(LenEnc::Ext16) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            Some(LenEnc::Ext64) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
            Some(LenEnc::Raw64(v)) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Some(LenEnc::Minimal) => unreachable!(),
        }
        match self.mask {
            Some(m) => {
                out.extend_from_slice(&m);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// Writes frames back to back (one write call, so they may share a segment).
pub fn send_frames(s: &mut TcpStream, frames: &[Frame]) {
    let mut bytes = Vec::new();
    for f in frames {
        bytes.extend_from_slice(&f.encode());
    }
    s.write_all(&bytes).expect("write frames");
}

/// A frame as received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Close code of a close frame (None for an empty payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE);
        assert_ne!(self.payload.len(), 1, "server sent a 1-byte close payload");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one server frame; server frames must be unmasked. Any byte stream will do (a
/// TcpStream, a buffered or TLS stream over one).
pub fn read_frame(s: &mut impl Read) -> io::Result<RawFrame> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let fin = h[0] & 0x80 != 0;
    let rsv = (h[0] >> 4) & 0x7;
    let opcode = h[0] & 0xF;
    if h[1] & 0x80 != 0 {
        return Err(io::Error::other("server sent a masked frame"));
    }
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as u64
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => n as u64,
    };
    if len > 64 * 1024 * 1024 {
        return Err(io::Error::other(format!(
            "server frame length {len} is absurd"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    Ok(RawFrame {
        fin,
        rsv,
        opcode,
        payload,
    })
}

/// Reads one complete data message (handling fragmentation, skipping pongs).
/// Returns (opcode, payload).
pub fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut opcode = None;
    let mut data = Vec::new();
    for _ in 0..100_000 {
        let f = read_frame(s).expect("read frame");
        match f.opcode {
            OP_PING | OP_PONG => continue,
            OP_CLOSE => panic!("expected a data message, got close {:?}", f.close_code()),
            OP_CONT => {
                assert!(
                    opcode.is_some(),
                    "server sent a continuation without a start"
                );
                data.extend_from_slice(&f.payload);
            }
            op => {
                assert!(
                    opcode.is_none(),
                    "server started a new message mid-fragment"
                );
                opcode = Some(op);
                data.extend_from_slice(&f.payload);
            }
        }
        if f.fin {
            return (opcode.unwrap(), data);
        }
    }
    panic!("message with too many fragments");
}

/// Reads frames until a close frame arrives (skipping others) and returns its
/// code. Then answers with a close frame of our own (ignoring write errors)
/// and checks that the server closes the TCP connection.
pub fn expect_close(s: &mut TcpStream) -> Option<u16> {
    let code = read_close(s);
    let mut reply = Frame::new(OP_CLOSE, Vec::new()).encode();
    if let Some(c) = code {
        reply = Frame::close(c, b"").encode();
    }
    let _ = s.write_all(&reply);
    expect_eof(s);
    code
}

/// Reads frames until a close frame; returns its code. Panics on EOF/error.
pub fn read_close(s: &mut TcpStream) -> Option<u16> {
    let mut skipped = 0usize;
    loop {
        match read_frame(s) {
            Ok(f) if f.opcode == OP_CLOSE => return f.close_code(),
            Ok(f) => {
                skipped += 1;
                assert!(
                    skipped < 100_000,
                    "no close frame, only other frames (last {:?})",
                    f.opcode
                );
            }
            Err(e) => panic!("expected a close frame, got {e} (after {skipped} other frames)"),
        }
    }
}

/// Asserts the close code the server sends, then that it closes TCP.
pub fn assert_close_code(s: &mut TcpStream, expected: u16, what: &str) {
    let code = expect_close(s);
    assert_eq!(code, Some(expected), "{what}: wrong close code");
}

/// Reads until the peer closes the connection (EOF or reset). Data before
/// that is discarded. Panics on timeout.
pub fn expect_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return;
            }
            Err(e) => panic!("expected the server to close the connection, got {e}"),
        }
    }
}
