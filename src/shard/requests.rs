//! Answers to request heads: the page, `/stats`, `/metrics`, an error status, or an upgrade (echo, or a
//! chat member joining its room, which may wait until every peer is ready for the room).
//!
//! Owns: routes to roles, and upgrades parked for their room. Must never: read the socket or
//! write anything but through the connection's protocol state.

use super::State;
use super::conn::Role;
use crate::chat::{self, Name, RoomName, Route};
use crate::io::ConnId;
use crate::stats::{bump, prometheus};
use crate::ws::handshake::http_response;
use crate::ws::{HandshakeError, Request};

/// The header of a 101 that names the thread (its id in `/stats`) serving the connection,
/// so that a client, or a test, can see where the kernel and the pattern placed it.
pub const THREAD_HEADER: &str = "X-Wschat-Thread";

/// An accepted upgrade whose 101 waits until every peer that asked it to wait lets joins to
/// its room complete (`--cluster`: the room's SUBSCRIBE reply).
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) conn: ConnId,
    pub(super) serial: u32,
    pub(super) room: RoomName,
    pub(super) name: Option<Name>,
    /// Peers whose `RoomReady` is still to come.
    pub(super) waiting: usize,
}

impl State {
    /// Answers a request head: a page, stats (JSON or Prometheus text), an upgrade, or an
    /// error status.
    pub(super) fn answer(&mut self, id: ConnId, request: &Request) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.over_capacity {
            bump(&self.stats.counters.rejected_over_capacity, 1);
            conn.role = Role::Http;
            conn.ws.reject(&HandshakeError::OverCapacity);
            return;
        }
        if self.config.test_panic_path.as_ref() == Some(&request.path) {
            panic!("--test-panic-path: a request for {}", request.path);
        }
        let route = chat::route(request, &self.config.allowed_origins);
        conn.role = match route {
            Ok(Route::Echo) => Role::Echo,
            Ok(Route::Join { .. }) => Role::Member,
            Ok(Route::Page | Route::Stats | Route::Metrics) | Err(_) => Role::Http,
        };
        match route {
            Ok(Route::Page) => conn.ws.respond(http_response(
                200,
                &[],
                "text/html; charset=utf-8",
                chat::PAGE_HTML.as_bytes(),
            )),
            Ok(Route::Stats) => {
                let body = self.registry.report(self.now).to_json();
                let response = http_response(200, &[], "application/json", &body);
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.ws.respond(response);
                }
            }
            Ok(Route::Metrics) => {
                let body = self.registry.report(self.now).to_prometheus();
                let response = http_response(200, &[], prometheus::CONTENT_TYPE, body.as_bytes());
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.ws.respond(response);
                }
            }
            Ok(Route::Echo) => self.upgrade(id, None),
            Ok(Route::Join { room, name }) => {
                // Every peer counts the join; the 101 waits for those not ready for the room.
                let waiting = self.hub.peers().filter(|peer| !peer.join(&room)).count();
                if waiting > 0 {
                    let serial = conn.serial;
                    self.parked.push(Parked {
                        conn: id,
                        serial,
                        room,
                        name,
                        waiting,
                    });
                    return;
                }
                self.upgrade(id, Some((room, name)));
            }
            Err(err) => conn.ws.reject(&err),
        }
    }

    /// Sends the 101; for a chat member, joins its room.
    pub(super) fn upgrade(&mut self, id: ConnId, join: Option<(RoomName, Option<Name>)>) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        // A plain request never routes to Echo or Join, so accept cannot fail here.
        let accepted = conn
            .ws
            .accept_with_deflate(&[(THREAD_HEADER, &self.thread_id)], self.config.deflate)
            .is_ok();
        conn.last_heard = self.epoch.stamp(self.now);
        let port = conn.peer_port;
        self.file_heartbeat(id);
        let Some((room, name)) = join else {
            return;
        };
        if !accepted {
            self.hub.peers().for_each(|peer| peer.leave(&room));
            return;
        }
        if self.work.is_some()
            && let Some(conn) = self.conns.get_mut(id)
        {
            // One message per member at the workers, and no more than one parsed behind it:
            // the rest of its input waits unparsed (a read of small compressed messages would
            // otherwise be inflated whole while the first is out).
            conn.ws.hold_after_message();
        }
        let name = name.unwrap_or_else(|| Name::default_for_port(port));
        let member = self.member(id);
        self.chat.join(
            &mut self.hub.roster(),
            member,
            room.clone(),
            name,
            &mut self.deliveries,
        );
        self.publish_members();
        let name = self.chat.name(member);
        for peer in self.hub.peers() {
            peer.roster_changed(&room, member, name);
        }
    }

    /// A peer is ready for `room`: the upgrades that waited for no other complete.
    pub(super) fn room_ready(&mut self, room: &RoomName) {
        for parked in self.parked.iter_mut().filter(|p| p.room == *room) {
            parked.waiting = parked.waiting.saturating_sub(1);
        }
        let (ready, waiting) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.waiting == 0);
        self.parked = waiting;
        for parked in ready {
            let Parked {
                conn,
                serial,
                room,
                name,
                ..
            } = parked;
            if self.conns.get(conn).is_some_and(|c| c.serial == serial) {
                self.upgrade(conn, Some((room, name)));
                self.fan_out();
                self.pump(conn);
            } else {
                // Gone while it waited.
                self.hub.peers().for_each(|peer| peer.leave(&room));
            }
        }
    }
}
