//! The broker thread: owns the two Redis sockets and an epoll reactor of its own, and moves
//! bytes between them and the [`Session`], which decides everything else.
//!
//! One iteration: connect if the session says so; pause or resume reading the subscription
//! connection if the session's answer changed (it stops reading Redis while the shards
//! hold too much of what it sent); wait (epoll) for the Redis sockets, the
//! inbox's eventfd, or the session's next deadline (heartbeat, reconnect); hand the session
//! what arrived (replies, subscription messages, the shards' requests) and the time; write
//! what it queued, one writev per connection, so a wake-up that drained many publishes sends
//! them as one pipelined burst; close the sockets if the link failed; hand the shards the
//! iteration's remote events; print the session's lines for the log (before the next wait).
//! The session's doc has the call order this follows.
//!
//! Must never: decide anything about the link (the session does), or block except in
//! `poll` and in a bounded connect while the link is down.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::session::{Conn, Session};
use super::{BrokerMsg, ClusterConfig, Link, NodeId};
use crate::io::{ConnId, EpollReactor, Event, Reactor, Waker};
use crate::peer::Shards;
use crate::stats::{StatsRegistry, ThreadStats};

/// The reactor's keys of the two connections.
const CMD: ConnId = 0;
const SUB: ConnId = 1;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Starts the broker thread for `shards`; returns the shards' handle on it.
pub fn start(
    config: &ClusterConfig,
    shards: Arc<dyn Shards>,
    registry: &Arc<StatsRegistry>,
) -> anyhow::Result<Arc<Link>> {
    let waker = Waker::new().context("creating the broker's eventfd")?;
    let link = Arc::new(Link::new(config, waker.clone()));
    let stats = registry.add_thread("broker");
    let session = Session::new(
        link.clone(),
        shards,
        stats.clone(),
        config.max_message,
        NodeId::random().0,
        Instant::now(),
    );
    // The reactor is opened on its own thread (it is not Send); start-up waits for it.
    let (ready, opened) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let thread_link = link.clone();
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let io = match EpollReactor::new(waker) {
                Ok(io) => {
                    let _ = ready.send(Ok(()));
                    io
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let mut broker = Broker {
                io,
                session,
                link: thread_link,
                stats,
                requests: Vec::new(),
                sub_read: true,
            };
            if let Err(e) = broker.run() {
                eprintln!("wschat: cluster: the broker thread stopped: {e}");
            }
        })
        .context("spawning the broker thread")?;
    opened
        .recv()
        .context("the broker thread ended during start-up")?
        .context("creating the broker's event loop")?;
    Ok(link)
}

struct Broker {
    io: EpollReactor,
    session: Session,
    link: Arc<Link>,
    stats: Arc<ThreadStats>,
    /// The shards' requests drained from the link's inbox (kept for its capacity).
    requests: Vec<BrokerMsg>,
    /// Whether the reactor reads `SUB` (as last told, or as opened: a new connection is
    /// read), so that it is told only when the session's answer changes.
    sub_read: bool,
}

impl Broker {
    fn run(&mut self) -> io::Result<()> {
        self.stats.bind_thread(crate::io::sys::current_thread_id());
        loop {
            let now = Instant::now();
            if self.session.poll_connect(now) {
                self.connect(now);
            }
            // After connecting, so that a new `SUB` is paused before its first read.
            self.apply_sub_read();
            // Before waiting, so that no line waits for the next event.
            while let Some(line) = self.session.poll_report() {
                eprintln!("wschat: cluster: {line}");
            }
            let timeout = self
                .session
                .poll_timeout()
                .saturating_duration_since(Instant::now());
            let (session, link, requests) = (&mut self.session, &self.link, &mut self.requests);
            self.io.poll(Some(timeout), &mut |event| match event {
                Event::Received { conn, bytes } => {
                    if let Some(conn) = conn_of(conn) {
                        session.handle_input(conn, bytes, Instant::now());
                    }
                }
                Event::Wake => {
                    link.drain_into(requests);
                    let now = Instant::now();
                    for msg in requests.drain(..) {
                        session.handle_request(msg, now);
                    }
                }
                Event::Eof { .. } => session.handle_failure("Redis closed the connection".into()),
                Event::Failed { error, .. } => {
                    session.handle_failure(format!("connection to Redis failed: {error}"));
                }
                // The flush after every poll writes whatever is queued.
                Event::Writable { .. } => {}
                Event::Accepted { .. } | Event::AcceptFailed { .. } => {}
            })?;
            let now = Instant::now();
            self.session.handle_timeout(now);
            self.flush();
            if self.session.poll_close(now) {
                self.io.close(CMD);
                self.io.close(SUB);
            }
            self.session.poll_deliveries(now);
        }
    }

    /// Pauses or resumes reading `SUB` if the session's answer changed. While the link is
    /// down there is no `SUB` and the reactor ignores the call; what counts is `sub_read`,
    /// which a new connection resets.
    fn apply_sub_read(&mut self) {
        let read = self.session.poll_read(Conn::Sub);
        if read == self.sub_read {
            return;
        }
        if read {
            self.io.resume_reading(SUB);
        } else {
            self.io.pause_reading(SUB);
        }
        self.sub_read = read;
    }

    /// Opens both connections; the session then restores what this node had.
    fn connect(&mut self, now: Instant) {
        let url = &self.link.url;
        let opened = open(&url.host, url.port).and_then(|cmd| {
            let sub = open(&url.host, url.port)?;
            self.io.add_conn(CMD, cmd)?;
            if let Err(e) = self.io.add_conn(SUB, sub) {
                self.io.close(CMD);
                return Err(e);
            }
            // A new connection is read until told otherwise.
            self.sub_read = true;
            Ok(())
        });
        match opened {
            Ok(()) => self.session.handle_connected(now),
            Err(e) => {
                let reason = format!("connecting to {url}: {e}");
                self.session.handle_connect_failed(&reason, now);
            }
        }
    }

    /// Writes what the session queued on each connection, as much as the sockets take.
    fn flush(&mut self) {
        for (id, conn) in [(CMD, Conn::Cmd), (SUB, Conn::Sub)] {
            let sent = match self.session.poll_transmit(conn) {
                Some(outbox) => self.io.send(id, outbox).map(drop),
                None => Ok(()),
            };
            if let Err(e) = sent {
                self.session
                    .handle_failure(format!("writing to Redis: {e}"));
            }
        }
    }
}

fn conn_of(id: ConnId) -> Option<Conn> {
    match id {
        CMD => Some(Conn::Cmd),
        SUB => Some(Conn::Sub),
        _ => None,
    }
}

/// A blocking connect (bounded), then a non-blocking socket with TCP_NODELAY: a publish
/// must not wait for Nagle.
fn open(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
