//! Accepted sockets becoming connections: socket options, the `--max-conns` admission, the
//! TLS session, registration with the reactor; and accepting paused when descriptors or
//! memory ran out.
//!
//! Owns: the accept pause and its report. Must never: answer a request (requests.rs does)
//! or block, except `--accept-delay-us` (an experiment's stall, on purpose).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::conn::{Conn, Role};
use super::tls_link::TlsLink;
use super::{Shard, State};
use crate::io::{ListenerId, Outbox, Reactor};
use crate::net;
use crate::stats::{ThreadStats, bump, set};
use crate::ws::Connection;

/// How long accepting pauses after running out of descriptors or memory: long enough for
/// some connections to close, short enough that a burst of 503s is not needed.
pub(super) const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A continuous run of pauses is reported on stderr about this often.
pub(super) const ACCEPT_PAUSE_REPORT: Duration = Duration::from_secs(10);

/// `--accept-delay-us`, for experiments only: the one place a loop blocks outside its wait,
/// on purpose, to play a slow accept loop and let the accept queue fill.
pub(super) fn stall_after_accept(delay: Duration) {
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}

/// Tells the operator that accepting paused, at most once per `ACCEPT_PAUSE_REPORT` per
/// thread (a server out of descriptors pauses ten times a second; the count is in /stats).
pub(super) fn report_accept_pause(stats: &ThreadStats, error: &io::Error) {
    let pauses = stats
        .counters
        .accept_pauses
        .load(std::sync::atomic::Ordering::Relaxed);
    let every = ACCEPT_PAUSE_REPORT.as_millis() / ACCEPT_PAUSE.as_millis();
    if pauses % every as u64 == 1 {
        eprintln!(
            "wschat: {}: accept paused for {ACCEPT_PAUSE:?}: {error} ({pauses} pauses so far; \
             see accept_pauses in /stats)",
            stats.role
        );
    }
}

impl State {
    pub(super) fn on_accepted(&mut self, stream: TcpStream, peer: SocketAddr) {
        bump(&self.stats.counters.accepted, 1);
        self.accepted.push((stream, peer));
        stall_after_accept(self.config.accept_delay);
    }

    pub(super) fn on_accept_failed(&mut self, listener: ListenerId, error: &io::Error) {
        bump(&self.stats.counters.accept_pauses, 1);
        report_accept_pause(&self.stats, error);
        self.paused_listeners
            .push((self.now + ACCEPT_PAUSE, listener));
    }
}

impl<R: Reactor> Shard<R> {
    pub(super) fn register_accepted(&mut self) {
        let state = &mut self.state;
        for (stream, peer) in std::mem::take(&mut state.accepted) {
            if state.stopping {
                continue; // dropped: closes the socket
            }
            // A socket we cannot configure or register is closed; the client sees a reset.
            if net::configure_stream(&stream, state.config.nodelay).is_err() {
                continue;
            }
            let over_capacity = !state.hub.admit_conn();
            if over_capacity && state.config.tls.is_some() {
                // A 503 would cost a whole TLS handshake first: over the limit, a TLS client
                // gets its socket closed instead.
                state.hub.release_conn();
                bump(&state.stats.counters.rejected_over_capacity, 1);
                continue;
            }
            // A session that cannot even start leaves the client to see a closed socket.
            let tls = match &state.config.tls {
                Some(config) => match config.session() {
                    Ok(session) => Some(Box::new(TlsLink::new(session))),
                    Err(_) => {
                        state.hub.release_conn();
                        continue;
                    }
                },
                None => None,
            };
            let entry = state.conns.vacant_entry();
            let id = entry.key();
            if self.io.add_conn(id, stream).is_err() {
                state.hub.release_conn();
                continue;
            }
            state.next_serial = state.next_serial.wrapping_add(1);
            entry.insert(Conn {
                ws: Connection::new(state.config.limits, state.now),
                outbox: Outbox::default(),
                tls,
                peer_port: peer.port(),
                role: Role::Pending,
                over_capacity,
                serial: state.next_serial,
                awaiting_work: false,
                deferred: false,
                throttled: false,
                reading_paused: false,
                last_heard: state.epoch.stamp(state.now),
                message_since: None,
                pinged: false,
                dirty: false,
                peer_done: false,
                write_shut: false,
                linger_deadline: None,
                armed: None,
            });
            state.mark_dirty(id);
        }
        set(&state.stats.counters.active, state.conns.len() as u64);
    }
}
