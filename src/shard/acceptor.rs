//! An accept-only event loop: it owns the listener and hands every accepted connection to a
//! shard through that shard's inbox (acceptor-readers, memcached's dispatcher thread).
//!
//! Connections accepted in one wake-up are batched per shard: one inbox item, and at most one
//! wake-up, per shard per wake-up, however many connections a connect storm brings.
//!
//! Owns: the listeners and their pause after EMFILE. Must never: read from a connection.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admission::{ACCEPT_PAUSE, report_accept_pause, stall_after_accept};
use super::{Hub, Inbox, InboxMsg};
use crate::io::{AcceptWakeup, Event, ListenerId, Reactor};
use crate::stats::{ThreadStats, bump, set};

/// Picks the shard (an index into the hub's shards) for each new connection.
pub type Assign = Box<dyn FnMut() -> usize + Send>;

pub struct Acceptor<R: Reactor> {
    io: R,
    inbox: Arc<Inbox>,
    hub: Arc<Hub>,
    assign: Assign,
    stats: Arc<ThreadStats>,
    /// `--accept-delay-us` (experiments).
    accept_delay: Duration,
}

impl<R: Reactor> Acceptor<R> {
    /// An acceptor handing connections to `hub`'s shards as `assign` picks them; `inbox`
    /// (where it is told to stop) must wake `io`.
    pub fn new(
        io: R,
        inbox: Arc<Inbox>,
        hub: Arc<Hub>,
        assign: Assign,
        stats: Arc<ThreadStats>,
        accept_delay: Duration,
    ) -> Acceptor<R> {
        Acceptor {
            io,
            inbox,
            hub,
            assign,
            stats,
            accept_delay,
        }
    }

    pub fn add_listener(&mut self, listener: TcpListener) -> io::Result<ListenerId> {
        self.io.add_listener(listener, AcceptWakeup::Sole)
    }

    /// Accepts until `InboxMsg::Stop`.
    pub fn run(&mut self) -> io::Result<()> {
        self.stats.bind_thread(crate::io::sys::current_thread_id());
        let hub = self.hub.clone();
        let mut batches: Vec<Vec<(TcpStream, SocketAddr)>> =
            (0..hub.shard_count()).map(|_| Vec::new()).collect();
        let mut paused: Vec<(Instant, ListenerId)> = Vec::new();
        let mut inbox_batch = Vec::new();
        loop {
            let timeout = paused
                .iter()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()))
                .min();
            let mut stop = false;
            self.io.poll(timeout, &mut |event| match event {
                Event::Accepted { stream, peer, .. } => {
                    let shard = (self.assign)() % batches.len();
                    batches[shard].push((stream, peer));
                    stall_after_accept(self.accept_delay);
                }
                Event::AcceptFailed { listener, error } => {
                    bump(&self.stats.counters.accept_pauses, 1);
                    report_accept_pause(&self.stats, &error);
                    paused.push((Instant::now() + ACCEPT_PAUSE, listener));
                }
                Event::Wake => {
                    self.inbox.drain_into(&mut inbox_batch);
                    stop |= inbox_batch.drain(..).any(|m| matches!(m, InboxMsg::Stop));
                }
                // No connection is registered here.
                Event::Received { .. }
                | Event::Writable { .. }
                | Event::Eof { .. }
                | Event::Failed { .. } => {}
            })?;
            let c = &self.stats.counters;
            for (shard, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() {
                    bump(&c.accepted, batch.len() as u64);
                    bump(&c.handoffs, batch.len() as u64);
                    hub.inbox(shard)
                        .push(InboxMsg::Adopt(std::mem::take(batch)));
                }
            }
            let now = Instant::now();
            paused.retain(|&(at, listener)| {
                let due = at <= now;
                if due {
                    self.io.resume_accepting(listener);
                }
                !due
            });
            let io = self.io.counters();
            set(&c.wakeups, io.wakeups);
            set(&c.listener_wakeups, io.listener_wakeups);
            set(&c.futile_accepts, io.futile_accepts);
            set(&c.epoll_ctl, io.epoll_ctl);
            if stop {
                self.io.close_listeners();
                return Ok(());
            }
        }
    }
}
