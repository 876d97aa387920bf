//! Baseline for scripts/bench.sh: a chat server on fastwebsockets (tokio + hyper, as the
//! crate's examples use it) speaking wschat's chat protocol (the top-level README and
//! DESIGN.md "Chat protocol").
//!
//! ```text
//!   wschat-baseline-fastwebsockets [--addr 127.0.0.1:8080] [--runtime current-thread|multi-thread]
//!       [--threads N] [--work-us N] [--max-outbound BYTES]          (port 0 picks a free port)
//! ```
//! `--runtime current-thread` (the default) runs everything on one thread: the fair match
//! for wschat's single-thread pattern. `--runtime multi-thread` is tokio's work-stealing
//! scheduler with `--threads` workers (default: the CPUs this process may use).
//!
//! Prints "listening on HOST:PORT" once bound. SIGTERM/SIGINT: close 1001 to every client,
//! wait up to 1 s for them to go, exit 0.
//!
//! Per connection: hyper answers the upgrade, fastwebsockets reads frames (reassembling
//! fragments, answering pings and closes) in a reader task, and a writer task owns the
//! socket's write half and an unbounded queue of encoded frames. A room message is encoded
//! once (`Frame::write`) into a refcounted `Bytes` and a clone is queued to each other
//! member, under the room table's lock (so every receiver sees one sender's messages in
//! order). The writer takes whatever is queued (up to 1024 frames) and writes it with
//! vectored writes: one writev per batch, as wschat's cork-and-flush does per loop iteration.
//! A receiver whose queued bytes exceed `--max-outbound` (default 4 MiB, as wschat) is
//! dropped (see README.md: without a close frame when it is stuck mid-write).
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use fastwebsockets::{after_handshake_split, upgrade, FragmentCollectorRead, Frame, OpCode, Payload, Role};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;

/// Frames a writer takes off its queue per writev (IOV_MAX is 1024 on Linux).
const BATCH: usize = 1024;
/// Largest message accepted from a client, as node-ws's `maxPayload`.
const MAX_MESSAGE: usize = 1 << 20;

struct Args {
    addr: String,
    multi_thread: bool,
    threads: usize,
    work_us: u64,
    max_outbound: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        addr: "127.0.0.1:8080".into(),
        multi_thread: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        work_us: 0,
        max_outbound: 4 << 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?,
            "--runtime" => {
                a.multi_thread = match value()?.as_str() {
                    "current-thread" => false,
                    "multi-thread" => true,
                    other => bail!("--runtime: current-thread or multi-thread, not {other}"),
                }
            }
            "--threads" => a.threads = value()?.parse().context("--threads")?,
            "--work-us" => a.work_us = value()?.parse().context("--work-us")?,
            "--max-outbound" => a.max_outbound = value()?.parse().context("--max-outbound (bytes)")?,
            "-h" | "--help" => {
                println!(
                    "usage: wschat-baseline-fastwebsockets [--addr HOST:PORT] \
                     [--runtime current-thread|multi-thread] [--threads N] [--work-us N] [--max-outbound BYTES]"
                );
                std::process::exit(0);
            }
            _ => bail!("unknown argument: {arg}"),
        }
    }
    if a.threads == 0 {
        bail!("--threads must be at least 1");
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wschat-baseline-fastwebsockets: {e:#}");
            std::process::exit(2);
        }
    };
    let rt = if args.multi_thread {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let status = match rt.map_err(anyhow::Error::from).and_then(|rt| rt.block_on(serve(args))) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wschat-baseline-fastwebsockets: {e:#}");
            1
        }
    };
    std::process::exit(status);
}

/// One connection's outgoing queue, as held by the rooms and the connection itself.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    shared: Arc<OutShared>,
}

struct OutShared {
    /// Bytes queued or being written: the `--max-outbound` budget.
    queued: AtomicUsize,
    max: usize,
    kicked: AtomicBool,
    kick: Notify,
}

impl Outbox {
    fn push(&self, frame: Bytes) {
        let s = &self.shared;
        if s.kicked.load(Relaxed) {
            return;
        }
        if s.queued.fetch_add(frame.len(), Relaxed) + frame.len() > s.max {
            // A slow consumer: disconnect it rather than drop its messages.
            s.kicked.store(true, Relaxed);
            s.kick.notify_one();
            return;
        }
        let _ = self.tx.send(frame);
    }
}

struct Member {
    id: u64,
    out: Outbox,
}

struct Server {
    rooms: Mutex<HashMap<String, Vec<Member>>>,
    /// Every open connection, for the close 1001 at shutdown.
    conns: Mutex<HashMap<u64, Outbox>>,
    next_id: AtomicU64,
    work_us: u64,
    max_outbound: usize,
}

impl Server {
    /// Queues `frame` to every member of `room` but `from`.
    fn broadcast(members: &[Member], from: u64, frame: &Bytes) {
        for m in members {
            if m.id != from {
                m.out.push(frame.clone());
            }
        }
    }

    fn send_room(&self, room: &str, from: u64, frame: Bytes) {
        let rooms = self.rooms.lock().unwrap();
        if let Some(members) = rooms.get(room) {
            Self::broadcast(members, from, &frame);
        }
    }
}

/// The frame encoded once (server frames are unmasked), ready to be shared by every receiver.
fn encode(mut frame: Frame<'_>) -> Bytes {
    let mut buf = Vec::new();
    let n = frame.write(&mut buf).len();
    buf.truncate(n);
    Bytes::from(buf)
}

fn text(s: &str) -> Bytes {
    encode(Frame::text(Payload::Borrowed(s.as_bytes())))
}

fn valid_room(r: &str) -> bool {
    (1..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_name(n: &str) -> bool {
    (1..=32).contains(&n.chars().count())
        && n.chars().all(|c| c.is_alphanumeric() || " _.-".contains(c))
        && !n.starts_with(' ')
        && !n.ends_with(' ')
}

async fn serve(args: Args) -> Result<()> {
    let listener = TcpListener::bind(&args.addr).await.with_context(|| format!("bind {}", args.addr))?;
    let local = listener.local_addr()?;
    let runtime = if args.multi_thread {
        format!("multi-thread ({} workers)", args.threads)
    } else {
        "current-thread (1 thread)".to_string()
    };
    eprintln!(
        "fastwebsockets baseline: runtime {runtime}, max-outbound {} B, work-us {}",
        args.max_outbound, args.work_us
    );
    println!("listening on {local}");
    let server = Arc::new(Server {
        rooms: Mutex::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        work_us: args.work_us,
        max_outbound: args.max_outbound,
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(server.clone(), peer, req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades();
            let _ = conn.await;
        });
    }
    drop(listener);
    let outboxes: Vec<Outbox> = server.conns.lock().unwrap().values().cloned().collect();
    let bye = encode(Frame::close(1001, b"server shutting down"));
    for out in &outboxes {
        out.push(bye.clone());
    }
    drop(outboxes);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && !server.conns.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn status(code: StatusCode, body: &'static str) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    Ok(r)
}

async fn handle(server: Arc<Server>, peer: SocketAddr, mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if !upgrade::is_upgrade_request(&req) {
        return status(StatusCode::NOT_FOUND, "not found\n");
    }
    let path = req.uri().path();
    let room = if path == "/echo" {
        None
    } else if path == "/" || path == "/chat" {
        Some("lobby".to_string())
    } else if let Some(r) = path.strip_prefix("/chat/") {
        if !valid_room(r) {
            return status(StatusCode::BAD_REQUEST, "bad room name\n");
        }
        Some(r.to_string())
    } else {
        return status(StatusCode::NOT_FOUND, "not found\n");
    };
    let query = req.uri().query().unwrap_or("");
    let name = match form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "name") {
        Some((_, v)) if valid_name(&v) => v.into_owned(),
        Some(_) => return status(StatusCode::BAD_REQUEST, "bad name\n"),
        None => format!("User {}", peer.port()),
    };
    let (response, fut) = match upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(_) => return status(StatusCode::BAD_REQUEST, "bad upgrade\n"),
    };
    tokio::spawn(async move {
        if let Ok(ws) = fut.await {
            let _ = run_conn(server, ws.into_inner().into_inner(), room, name).await;
        }
    });
    Ok(response.map(|_| Full::new(Bytes::new())))
}

/// Leaves the room (and the connection table) when the reader ends or is aborted.
struct Leave {
    server: Arc<Server>,
    id: u64,
    room: Option<String>,
    name: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.server.conns.lock().unwrap().remove(&self.id);
        let Some(room) = &self.room else { return };
        let mut rooms = self.server.rooms.lock().unwrap();
        let Some(members) = rooms.get_mut(room) else { return };
        members.retain(|m| m.id != self.id);
        if members.is_empty() {
            rooms.remove(room);
        } else {
            Server::broadcast(members, self.id, &text(&format!("{} disconnected", self.name)));
        }
    }
}

async fn run_conn(server: Arc<Server>, upgraded: hyper::upgrade::Upgraded, room: Option<String>, name: String) -> Result<()> {
    // Back to the plain TcpStream (and whatever hyper read past the request head), so that
    // the writer owns its half without a lock shared with the reader.
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().map_err(|_| anyhow!("upgraded io is not a TcpStream"))?;
    let (r, w) = parts.io.into_inner().into_split();
    let read = std::io::Cursor::new(parts.read_buf).chain(r);

    let id = server.next_id.fetch_add(1, Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(OutShared {
        queued: AtomicUsize::new(0),
        max: server.max_outbound,
        kicked: AtomicBool::new(false),
        kick: Notify::new(),
    });
    let out = Outbox { tx, shared: shared.clone() };
    server.conns.lock().unwrap().insert(id, out.clone());
    if let Some(room) = &room {
        let mut rooms = server.rooms.lock().unwrap();
        let members = rooms.entry(room.clone()).or_default();
        Server::broadcast(members, id, &text(&format!("{name} just connected")));
        members.push(Member { id, out: out.clone() });
    }
    let leave = Leave { server: server.clone(), id, room: room.clone(), name: name.clone() };
    let reader = tokio::spawn(async move {
        let _leave = leave;
        let (mut ws_read, _) = after_handshake_split(read, tokio::io::sink(), Role::Server);
        ws_read.set_max_message_size(MAX_MESSAGE);
        let mut ws = FragmentCollectorRead::new(ws_read);
        // Pongs and close replies go through our own queue, behind what is already queued.
        let reply = out.clone();
        let mut send_fn = move |frame: Frame<'_>| {
            reply.push(encode(frame));
            std::future::ready(Ok::<(), Infallible>(()))
        };
        loop {
            let frame = match ws.read_frame(&mut send_fn).await {
                Ok(f) => f,
                Err(_) => break,
            };
            match (frame.opcode, &room) {
                (OpCode::Close, _) => break,
                (OpCode::Text | OpCode::Binary, None) => {
                    out.push(encode(Frame::new(true, frame.opcode, None, frame.payload)));
                }
                (OpCode::Binary, Some(room)) => {
                    work(server.work_us);
                    server.send_room(room, id, encode(Frame::binary(frame.payload)));
                }
                (OpCode::Text, Some(room)) => {
                    work(server.work_us);
                    // fastwebsockets has checked the UTF-8 of a complete text message.
                    let m = String::from_utf8_lossy(&frame.payload);
                    server.send_room(room, id, text(&format!("{name} says: {m}")));
                }
                _ => {}
            }
        }
    });
    writer(w, rx, shared, reader.abort_handle()).await;
    Ok(())
}

/// `--work-us`: busy CPU per chat message, as wschat's --work-us.
fn work(us: u64) {
    if us == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_micros(us);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Owns the write half: writes batches of queued frames until every sender is gone (the
/// reader ended and left its room), a write fails, or the connection is kicked for
/// exceeding --max-outbound. Then sends FIN and stops the reader.
async fn writer(mut w: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>, shared: Arc<OutShared>, reader: AbortHandle) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(16);
    loop {
        let n = tokio::select! {
            biased;
            _ = shared.kick.notified() => {
                // Between frames: tell the client why, briefly, as wschat does.
                let bye = encode(Frame::close(1008, b"too slow"));
                let _ = tokio::time::timeout(Duration::from_millis(100), w.write_all(&bye)).await;
                break;
            }
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if n == 0 {
            break;
        }
        let total: usize = batch.iter().map(Bytes::len).sum();
        let ok = tokio::select! {
            biased;
            // Stuck mid-write behind a slow reader: drop it (no close frame can follow a
            // partial frame).
            _ = shared.kick.notified() => false,
            r = write_all_vectored(&mut w, &batch) => r.is_ok(),
        };
        if !ok {
            break;
        }
        shared.queued.fetch_sub(total, Relaxed);
        batch.clear();
    }
    let _ = w.shutdown().await;
    reader.abort();
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Bytes]) -> std::io::Result<()> {
    if let [one] = frames {
        return w.write_all(one).await;
    }
    let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}
