//! Reactor-level tests over real loopback sockets, each run with every feature the kernel
//! has and with none (every fallback). Waits are liveness bounds (a loop gives up after
//! many rounds), never performance thresholds.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, RwLockWriteGuard};
use std::time::Duration;

use super::*;

/// Held by every test that counts this process's descriptors, so that the counts of one
/// are not disturbed by the sockets of another running in parallel.
fn fd_lock() -> RwLockWriteGuard<'static, ()> {
    crate::io::DESCRIPTORS
        .write()
        .unwrap_or_else(|e| e.into_inner())
}

const ROUNDS: usize = 2000;
const STEP: Duration = Duration::from_millis(20);

/// An owned copy of an [`Event`].
#[derive(Debug)]
enum Seen {
    Accepted(TcpStream),
    AcceptFailed,
    Received(ConnId, Vec<u8>),
    Writable(ConnId),
    Eof(ConnId),
    Failed(ConnId),
    Wake,
}

/// Every feature the kernel has (multishot recvs kept in their connections' slots); the
/// buffer ring without multishot recv (one-shot recvs, kept in the slots too); nothing
/// (recvs with their own buffers, in the slab).
fn feature_sets() -> Vec<FeatureSet> {
    let probed = probe().expect("io_uring on the test machine").features;
    let ring_only = probed.intersect(FeatureSet::NONE.with(Feature::BufRing));
    let mut sets = vec![probed, ring_only, FeatureSet::NONE];
    sets.dedup();
    sets
}

/// Whether connections' recvs live in their slots (a buffer ring) rather than the slab.
fn recv_in_slot(features: FeatureSet) -> bool {
    features.contains(Feature::BufRing)
}

struct Harness {
    reactor: UringReactor,
    addr: SocketAddr,
    seen: Vec<Seen>,
}

impl Harness {
    fn new(features: FeatureSet, wakeup: AcceptWakeup) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut reactor = UringReactor::new(Waker::new().unwrap(), features).unwrap();
        // As the shard does: with every feature, connections get entries in the table of
        // registered files.
        reactor.reserve_conns(64);
        reactor.add_listener(listener, wakeup).unwrap();
        Harness {
            reactor,
            addr,
            seen: Vec::new(),
        }
    }

    fn poll(&mut self, timeout: Duration) {
        let seen = &mut self.seen;
        self.reactor
            .poll(Some(timeout), &mut |event| {
                seen.push(match event {
                    Event::Accepted { stream, .. } => Seen::Accepted(stream),
                    Event::AcceptFailed { .. } => Seen::AcceptFailed,
                    Event::Received { conn, bytes } => Seen::Received(conn, bytes.to_vec()),
                    Event::Writable { conn } => Seen::Writable(conn),
                    Event::Eof { conn } => Seen::Eof(conn),
                    Event::Failed { conn, .. } => Seen::Failed(conn),
                    Event::Wake => Seen::Wake,
                });
            })
            .unwrap();
    }

    /// Polls until `done` holds for what was seen (which is then taken), or panics.
    fn poll_until(&mut self, what: &str, mut done: impl FnMut(&[Seen]) -> bool) -> Vec<Seen> {
        for _ in 0..ROUNDS {
            if done(&self.seen) {
                return std::mem::take(&mut self.seen);
            }
            self.poll(STEP);
        }
        panic!("never saw {what}; saw {:?}", self.seen);
    }

    fn connect(&self) -> TcpStream {
        let client = TcpStream::connect(self.addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client
    }

    /// Accepts one connection and registers it as `conn`.
    fn accept_as(&mut self, conn: ConnId) {
        let seen = self.poll_until("an accept", |s| {
            s.iter().any(|e| matches!(e, Seen::Accepted(_)))
        });
        let mut accepted = seen.into_iter().filter_map(|e| match e {
            Seen::Accepted(stream) => Some(stream),
            _ => None,
        });
        let stream = accepted.next().unwrap();
        self.reactor.add_conn(conn, stream).unwrap();
    }

    /// Ops in flight: the slab's and the recvs kept in open connections' slots (a closed
    /// connection's are counted in `closed`).
    fn in_flight(&self) -> usize {
        let in_slots = self
            .reactor
            .conns
            .iter()
            .flatten()
            .filter(|s| s.recv.is_some_and(|id| id.as_conn_recv().is_some()))
            .count();
        self.reactor.ops.len() + in_slots
    }

    /// Polls until only the waker's read, the listener's accept and `extra` ops are left,
    /// and every closed connection's ops have finished.
    fn settle(&mut self, extra: usize) {
        for _ in 0..ROUNDS {
            if self.in_flight() <= 2 + extra && self.reactor.closed.is_empty() {
                return;
            }
            self.poll(STEP);
        }
        panic!(
            "{} ops still in flight, {} sockets closing",
            self.in_flight(),
            self.reactor.closed.len()
        );
    }

    /// Accepts one connection and returns its stream, not yet registered.
    fn accept_stream(&mut self) -> TcpStream {
        let seen = self.poll_until("an accept", |s| {
            s.iter().any(|e| matches!(e, Seen::Accepted(_)))
        });
        let mut rest = Vec::new();
        let mut stream = None;
        for event in seen {
            match event {
                Seen::Accepted(s) if stream.is_none() => stream = Some(s),
                other => rest.push(other),
            }
        }
        self.seen = rest;
        stream.unwrap()
    }

    /// The id of `conn`'s recv in flight.
    fn recv_of(&self, conn: ConnId) -> OpId {
        self.reactor.conns[conn].as_ref().unwrap().recv.unwrap()
    }

    /// Enters the kernel as `poll` does (submitting what is queued, running deferred task
    /// work) until a completion is posted, but reaps nothing: the test can then act in the
    /// window between the kernel completing an op and the reactor dispatching it, which in
    /// the server is only the time between two lines of `poll`.
    fn wait_posted(&mut self) {
        for _ in 0..ROUNDS {
            self.reactor.flush_backlog().unwrap();
            if !self.reactor.ring.completion().is_empty() {
                return;
            }
            let ts = types::Timespec::from(STEP);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.reactor.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if is_retry(&e) || e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
        }
        panic!("no completion was posted");
    }
}

fn received(seen: &[Seen], conn: ConnId) -> Vec<u8> {
    seen.iter()
        .filter_map(|e| match e {
            Seen::Received(c, bytes) if *c == conn => Some(bytes.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

fn count(seen: &[Seen], pred: impl Fn(&Seen) -> bool) -> usize {
    seen.iter().filter(|e| pred(e)).count()
}

/// The socket inodes ("socket:[N]") among this process's descriptors.
fn open_sockets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with("socket:"))
        .collect()
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn socket_name(stream: &TcpStream) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", stream.as_raw_fd()))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn accept_receive_send_round_trip() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let mut client = h.connect();
        h.accept_as(7);
        client.write_all(b"hello").unwrap();
        let seen = h.poll_until("hello", |s| received(s, 7) == b"hello");
        assert_eq!(count(&seen, |e| matches!(e, Seen::Eof(_))), 0);

        let mut outbox = Outbox::default();
        outbox.push(Arc::from(&b"wor"[..]));
        outbox.push(Arc::from(&b"ld"[..]));
        // Asynchronous: nothing is complete yet, and the bytes stay in the outbox.
        assert_eq!(
            h.reactor.send(7, &mut outbox).unwrap(),
            SendOutcome::default()
        );
        assert_eq!(outbox.queued_bytes(), 5);
        assert_eq!(outbox.in_flight(), 5);
        h.poll_until("writable", |s| {
            s.iter().any(|e| matches!(e, Seen::Writable(7)))
        });
        let outcome = h.reactor.send(7, &mut outbox).unwrap();
        assert_eq!(
            outcome,
            SendOutcome {
                bytes: 5,
                frames: 2
            }
        );
        assert!(outbox.is_empty());
        let mut reply = [0; 5];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"world");

        client.shutdown(Shutdown::Write).unwrap();
        h.poll_until("eof", |s| s.iter().any(|e| matches!(e, Seen::Eof(7))));
        // Input ended and the send finished: no op names the socket, so `close` closes it.
        let name = socket_name(&h.reactor.conns[7].as_ref().unwrap().stream);
        h.reactor.close(7);
        assert!(!open_sockets().contains(&name));
        assert!(h.reactor.closed.is_empty());
        h.settle(0);
        assert!(h.reactor.counters().wakeups > 0);
        assert_eq!(h.reactor.counters().sendmsg, 1);
    }
}

/// A lone whole frame goes as a plain send that holds the frame; several frames go as one
/// sendmsg. (The rest of a frame that a short send cut goes as a sendmsg too:
/// `client_closes_while_a_large_send_is_in_flight` sends one 8 MiB frame that way.)
#[test]
fn a_lone_whole_frame_goes_as_a_plain_send() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let mut client = h.connect();
        h.accept_as(3);
        let op_in_flight = |h: &mut Harness| {
            let id = h.reactor.conns[3].as_ref().unwrap().send.unwrap();
            match h.reactor.ops.get_mut(id) {
                Some(Op::SendFrame { .. }) => "send",
                Some(Op::Send { .. }) => "sendmsg",
                _ => "none",
            }
        };
        let mut outbox = Outbox::default();
        for frames in [&[&b"lone"[..]][..], &[b"two ", b"frames"]] {
            for frame in frames {
                outbox.push(Arc::from(*frame));
            }
            h.reactor.send(3, &mut outbox).unwrap();
            let expected = if frames.len() == 1 { "send" } else { "sendmsg" };
            assert_eq!(op_in_flight(&mut h), expected);
            h.poll_until("writable", |s| {
                s.iter().any(|e| matches!(e, Seen::Writable(3)))
            });
            h.seen.clear();
            let outcome = h.reactor.send(3, &mut outbox).unwrap();
            assert_eq!(outcome.frames, frames.len());
            assert!(outbox.is_empty());
        }
        let mut got = [0; 14];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"lonetwo frames");
        h.reactor.close(3);
        h.settle(0);
    }
}

/// Sends `outbox` until a send stays in flight (the client does not read, so the socket
/// buffers fill): returns with a sendmsg pending in the kernel.
fn fill_until_send_blocks(h: &mut Harness, conn: ConnId, outbox: &mut Outbox) {
    for _ in 0..ROUNDS {
        h.reactor.send(conn, outbox).unwrap();
        h.poll(STEP);
        let writable = count(&h.seen, |e| matches!(e, Seen::Writable(c) if *c == conn));
        h.seen.clear();
        if writable == 0 {
            assert!(h.reactor.conns[conn].as_ref().unwrap().send.is_some());
            return;
        }
    }
    panic!("the socket never filled");
}

#[test]
fn client_closes_while_a_large_send_is_in_flight() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let client = h.connect();
        h.accept_as(0);
        let mut outbox = Outbox::default();
        outbox.push(Arc::from(vec![b'x'; 8 << 20]));
        fill_until_send_blocks(&mut h, 0, &mut outbox);
        drop(client); // unread data: the kernel answers with a reset
        let mut failed = false;
        for _ in 0..ROUNDS {
            h.poll(STEP);
            let seen = std::mem::take(&mut h.seen);
            if count(&seen, |e| matches!(e, Seen::Failed(0) | Seen::Eof(0))) > 0 {
                failed = true;
            }
            if count(&seen, |e| matches!(e, Seen::Writable(0))) > 0 {
                match h.reactor.send(0, &mut outbox) {
                    Err(_) => failed = true,
                    Ok(_) if outbox.is_empty() => unreachable!("nobody read 8 MiB"),
                    Ok(_) => {}
                }
            }
            if failed {
                break;
            }
        }
        assert!(failed, "the reset was never reported");
        outbox.clear();
        h.reactor.close(0);
        h.settle(0);
    }
}

#[test]
fn thousands_of_short_connections_leak_no_descriptors() {
    let _fds = fd_lock();
    const BATCH: usize = 50;
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        h.settle(0);
        let before = fd_count();
        let mut names = Vec::new();
        for _ in 0..ROUNDS / BATCH {
            let clients: Vec<TcpStream> = (0..BATCH).map(|_| h.connect()).collect();
            let mut conns = 0;
            let mut seen = Vec::new();
            for _ in 0..ROUNDS {
                h.poll(STEP);
                for event in std::mem::take(&mut h.seen) {
                    match event {
                        Seen::Accepted(stream) => {
                            names.push(socket_name(&stream));
                            h.reactor.add_conn(conns, stream).unwrap();
                            conns += 1;
                        }
                        other => seen.push(other),
                    }
                }
                if conns == BATCH {
                    break;
                }
            }
            assert_eq!(conns, BATCH);
            drop(clients);
            h.seen = seen;
            let seen = h.poll_until("every eof", |s| {
                count(s, |e| matches!(e, Seen::Eof(_) | Seen::Failed(_))) == BATCH
            });
            assert_eq!(count(&seen, |e| matches!(e, Seen::Received(..))), 0);
            for conn in 0..BATCH {
                h.reactor.close(conn); // keys are reused by the next batch at once
            }
        }
        h.settle(0);
        assert_eq!(fd_count(), before, "descriptors leaked");
        let open = open_sockets();
        assert!(
            names.iter().all(|n| !open.contains(n)),
            "a socket stayed open"
        );
    }
}

#[test]
fn a_reused_key_never_sees_the_old_connections_completions() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let mut old = h.connect();
        h.accept_as(0);
        let mut outbox = Outbox::default();
        outbox.push(Arc::from(vec![b'o'; 8 << 20]));
        fill_until_send_blocks(&mut h, 0, &mut outbox);
        // Input for the old connection's recv, which is in flight but not yet reaped.
        old.write_all(b"stale").unwrap();
        let old_name = socket_name(&h.reactor.conns[0].as_ref().unwrap().stream);
        h.reactor.close(0);
        outbox.clear();
        // Its recv and send are in flight: the socket stays open, so that its fd number
        // cannot go to the next accept while they may still use it.
        assert!(open_sockets().contains(&old_name));
        assert_eq!(h.reactor.closed.len(), 1);

        let mut new = h.connect();
        h.accept_as(0);
        new.write_all(b"fresh").unwrap();
        let seen = h.poll_until("the new connection's input", |s| received(s, 0) == b"fresh");
        assert_eq!(count(&seen, |e| matches!(e, Seen::Writable(0))), 0);
        assert_eq!(
            count(&seen, |e| matches!(e, Seen::Eof(0) | Seen::Failed(0))),
            0
        );
        h.settle(1); // the new connection's recv
        assert!(
            h.seen
                .iter()
                .all(|e| !matches!(e, Seen::Writable(_) | Seen::Eof(_)))
        );
        assert!(received(&h.seen, 0).is_empty());
        // Once the cancelled ops are done, the old socket is really closed.
        assert!(!open_sockets().contains(&old_name));
        assert!(h.reactor.closed.is_empty());
        let mut rest = Vec::new();
        let _ = old.read_to_end(&mut rest); // EOF or reset: either way it ends
    }
}

#[test]
fn paused_input_stays_in_the_kernel_until_resumed() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let mut client = h.connect();
        h.accept_as(3);
        client.write_all(b"one").unwrap();
        h.poll_until("one", |s| received(s, 3) == b"one");

        h.reactor.pause_reading(3);
        client.write_all(b"two").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        for _ in 0..10 {
            h.poll(STEP);
        }
        assert!(
            h.seen
                .iter()
                .all(|e| !matches!(e, Seen::Received(3, _) | Seen::Eof(3))),
            "input reported while paused: {:?}",
            h.seen
        );
        h.reactor.resume_reading(3);
        let seen = h.poll_until("two, then eof", |s| {
            s.iter().any(|e| matches!(e, Seen::Eof(3)))
        });
        assert_eq!(received(&seen, 3), b"two");
        let eof_at = seen.iter().position(|e| matches!(e, Seen::Eof(3)));
        let data_at = seen.iter().rposition(|e| matches!(e, Seen::Received(3, _)));
        assert!(data_at < eof_at, "eof before the data: {seen:?}");
        h.reactor.close(3);
        h.settle(0);
    }
}

#[test]
fn dropping_the_reactor_with_ops_in_flight_closes_everything() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let before = fd_count();
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let mut client = h.connect();
        h.accept_as(0);
        let name = socket_name(&h.reactor.conns[0].as_ref().unwrap().stream);
        let mut outbox = Outbox::default();
        outbox.push(Arc::from(vec![b'd'; 8 << 20]));
        fill_until_send_blocks(&mut h, 0, &mut outbox);
        assert!(h.in_flight() >= 4, "waker, accept, recv, send");
        drop(h);
        // The outbox may be dropped now: the op had its own references.
        drop(outbox);
        assert!(!open_sockets().contains(&name));
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
        drop(client);
        assert_eq!(fd_count(), before, "descriptors leaked");
    }
}

#[test]
fn a_waker_interrupts_the_wait_and_a_timeout_ends_it() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        h.poll(Duration::from_millis(1));
        assert!(h.seen.is_empty());
        let waker = h.reactor.waker();
        let thread = std::thread::spawn(move || waker.wake());
        h.poll_until("a wake", |s| s.iter().any(|e| matches!(e, Seen::Wake)));
        thread.join().unwrap();
    }
}

#[test]
fn a_shared_listener_wakes_through_poll() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::All);
        let mut client = h.connect();
        h.accept_as(1);
        assert!(h.reactor.counters().listener_wakeups >= 1);
        client.write_all(b"x").unwrap();
        h.poll_until("x", |s| received(s, 1) == b"x");
    }
}

/// Input the kernel completed before a pause landed is held (only then is a `Held`
/// allocated), reported after resume in order with what followed, and the reactor lets go of
/// it again.
#[test]
fn input_completed_before_a_pause_is_held_and_delivered_in_order_after_resume() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let mut client = h.connect();
        h.accept_as(2);
        client.write_all(b"one").unwrap();
        h.poll_until("one", |s| received(s, 2) == b"one");
        assert!(!h.reactor.held.contains_key(&2));

        // The pause lands after the kernel completed the recv with "two" but before the
        // reactor reaped that completion, so the bytes must be held. Nothing else can
        // complete meanwhile: no client connects, nobody wakes the reactor, nothing is sent.
        client.write_all(b"two").unwrap();
        h.wait_posted();
        h.reactor.pause_reading(2);
        for _ in 0..10 {
            h.poll(STEP);
        }
        assert!(
            h.seen.iter().all(|e| !matches!(e, Seen::Received(2, _))),
            "input reported while paused: {:?}",
            h.seen
        );
        assert!(
            h.reactor.held.contains_key(&2),
            "{features:?}: the completed input was not held"
        );
        client.write_all(b"three").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        h.reactor.resume_reading(2);
        let seen = h.poll_until("two, three, then eof", |s| {
            s.iter().any(|e| matches!(e, Seen::Eof(2)))
        });
        assert_eq!(received(&seen, 2), b"twothree");
        let eof_at = seen.iter().position(|e| matches!(e, Seen::Eof(2)));
        let data_at = seen.iter().rposition(|e| matches!(e, Seen::Received(2, _)));
        assert!(data_at < eof_at, "eof before the data: {seen:?}");
        assert!(!h.reactor.held.contains_key(&2));
        h.reactor.close(2);
        h.settle(0);
    }
}

/// Every idle connection holds a slot; with a buffer ring its recv lives in the slot, not
/// in the ops slab, so the slot is the reactor's whole part of the memory per idle
/// connection (results/memory/2026-12-06-uring-recv). Sends still use the slab.
#[test]
fn an_idle_connection_costs_a_32_byte_slot_and_no_op() {
    assert_eq!(std::mem::size_of::<Option<ConnSlot>>(), 32);
    assert_eq!(std::mem::size_of::<Option<OpId>>(), 8);
    assert!(std::mem::size_of::<Op>() <= 40);
}

#[test]
fn an_idle_connections_recv_is_in_its_slot_with_a_buffer_ring_and_in_the_slab_without() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        h.settle(0);
        let slab_before = h.reactor.ops.len();
        let mut clients = Vec::new();
        for conn in 0..3 {
            clients.push(h.connect());
            h.accept_as(conn);
        }
        let in_slot = recv_in_slot(h.reactor.features());
        // Until the updates that put them in the table of registered files have completed.
        h.settle(3);
        for conn in 0..3 {
            let id = h.recv_of(conn);
            let generation = h.reactor.conns[conn].as_ref().unwrap().generation;
            if in_slot {
                assert_eq!(id.as_conn_recv(), Some((conn, generation)));
            } else {
                assert_eq!(id.as_conn_recv(), None);
            }
        }
        let per_conn = if in_slot { 0 } else { 1 };
        assert_eq!(h.reactor.ops.len(), slab_before + 3 * per_conn);
        // Input still flows through the recv, re-armed or multishot.
        for (conn, client) in clients.iter_mut().enumerate() {
            client.write_all(&[b'a' + conn as u8; 3]).unwrap();
        }
        let seen = h.poll_until("every input", |s| (0..3).all(|c| received(s, c).len() == 3));
        for conn in 0..3 {
            assert_eq!(received(&seen, conn), [b'a' + conn as u8; 3]);
        }
        assert_eq!(h.reactor.ops.len(), slab_before + 3 * per_conn);
        for conn in 0..3 {
            h.reactor.close(conn);
        }
        h.settle(0);
    }
}

/// A connection closed while its recv is in flight, its key given at once to the next
/// connection: the old recv's completions (input that raced the close, then the
/// cancellation) are never reported under the key, its socket stays open until the
/// recv's final completion and is closed then.
#[test]
fn a_closed_connections_recv_is_not_reported_under_the_reused_key_and_closes_its_socket() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        h.settle(0);
        let before = fd_count();
        let mut old = h.connect();
        h.accept_as(0);
        let mut new = h.connect();
        let new_stream = h.accept_stream();
        let old_name = socket_name(&h.reactor.conns[0].as_ref().unwrap().stream);
        let old_recv = h.recv_of(0);

        h.reactor.close(0);
        h.reactor.add_conn(0, new_stream).unwrap();
        assert_ne!(h.recv_of(0), old_recv, "the same key, another recv");
        // The old recv is in flight (its cancel is not even submitted): its socket waits.
        assert!(open_sockets().contains(&old_name));
        assert_eq!(h.reactor.closed.len(), 1);
        let _ = old.write_all(b"stale");
        new.write_all(b"fresh").unwrap();
        let seen = h.poll_until("the new connection's input", |s| received(s, 0) == b"fresh");
        assert_eq!(
            count(&seen, |e| matches!(e, Seen::Eof(0) | Seen::Failed(0))),
            0
        );
        h.settle(1); // the new connection's recv
        assert!(received(&h.seen, 0).is_empty(), "stale input: {:?}", h.seen);
        assert!(h.reactor.closed.is_empty());
        assert!(!open_sockets().contains(&old_name), "the old socket leaked");

        // The new connection is whole: more input, then its end.
        new.write_all(b"more").unwrap();
        new.shutdown(Shutdown::Write).unwrap();
        let seen = h.poll_until("more, then eof", |s| {
            s.iter().any(|e| matches!(e, Seen::Eof(0)))
        });
        assert_eq!(received(&seen, 0), b"more");
        h.reactor.close(0);
        h.settle(0);
        drop((old, new));
        assert_eq!(fd_count(), before, "descriptors leaked");
    }
}

/// A cancel reaches the connection's recv: a pause ends it (nothing reported, the input
/// stays in the kernel), a resume starts it again under the same id. A cancel that lands
/// on a later recv of the same connection (the slot form reuses the id) only re-arms it.
#[test]
fn a_cancel_reaches_the_connections_recv_and_a_stray_one_only_re_arms_it() {
    let _fds = fd_lock();
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        let mut client = h.connect();
        h.accept_as(5);
        let first = h.recv_of(5);
        h.reactor.pause_reading(5);
        for _ in 0..ROUNDS {
            if h.reactor.conns[5].as_ref().unwrap().recv.is_none() {
                break;
            }
            h.poll(STEP);
        }
        assert!(
            h.reactor.conns[5].as_ref().unwrap().recv.is_none(),
            "the cancel never ended the recv"
        );
        assert_eq!(h.in_flight(), 2, "only the waker's read and the accept");
        client.write_all(b"kept").unwrap();
        for _ in 0..5 {
            h.poll(STEP);
        }
        assert!(received(&h.seen, 5).is_empty(), "input while paused");
        h.reactor.resume_reading(5);
        if recv_in_slot(h.reactor.features()) {
            assert_eq!(h.recv_of(5), first, "a connection's recv keeps its id");
        }
        h.poll_until("kept", |s| received(s, 5) == b"kept");

        // A stray cancel for the recv in flight, as a late one would land.
        let id = h.recv_of(5);
        h.reactor.cancel(id);
        for _ in 0..5 {
            h.poll(STEP);
        }
        assert!(
            h.reactor.conns[5].as_ref().unwrap().recv.is_some(),
            "re-armed after the cancel"
        );
        client.write_all(b"after").unwrap();
        let seen = h.poll_until("after", |s| received(s, 5) == b"after");
        assert_eq!(
            count(&seen, |e| matches!(e, Seen::Eof(5) | Seen::Failed(5))),
            0
        );
        h.reactor.close(5);
        h.settle(0);
    }
}

#[test]
fn a_send_result_is_settled_once() {
    let mut sent = Sent::NONE;
    assert!(sent.take().is_none());
    for (res, want) in [
        (0, Some(0)),
        (5, Some(5)),
        (i32::MAX, Some(i32::MAX as usize)),
    ] {
        sent = Sent(res);
        assert_eq!(sent.take().unwrap().unwrap(), want.unwrap());
        assert_eq!(sent, Sent::NONE);
    }
    // Interrupted or would block: nothing was sent, and no error.
    for errno in [libc::EINTR, libc::EAGAIN] {
        sent = Sent(-errno);
        assert_eq!(sent.take().unwrap().unwrap(), 0);
    }
    sent = Sent(-libc::EPIPE);
    let error = sent.take().unwrap().unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EPIPE));
    assert!(sent.take().is_none());
}

/// Connections closed by the server while their recv is in flight, their keys reused at
/// once: each socket stays open until its op finished (the `closed` table counts them
/// down; a miscount trips its debug assertion), input that raced the close is never
/// reported under the reused key, and in the end every descriptor is closed.
#[test]
fn connections_closed_with_ops_in_flight_close_once_the_ops_finish() {
    let _fds = fd_lock();
    const BATCH: usize = 50;
    for features in feature_sets() {
        let mut h = Harness::new(features, AcceptWakeup::Sole);
        h.settle(0);
        let before = fd_count();
        let mut clients = Vec::new();
        for _ in 0..20 {
            let batch: Vec<TcpStream> = (0..BATCH).map(|_| h.connect()).collect();
            let mut conns = 0;
            for _ in 0..ROUNDS {
                if conns == BATCH {
                    break;
                }
                h.poll(STEP);
                for event in std::mem::take(&mut h.seen) {
                    match event {
                        Seen::Accepted(stream) => {
                            h.reactor.add_conn(conns, stream).unwrap();
                            conns += 1;
                        }
                        other => h.seen.push(other),
                    }
                }
            }
            assert_eq!(conns, BATCH);
            for conn in 0..BATCH {
                h.reactor.close(conn);
            }
            for mut client in batch {
                let _ = client.write_all(b"stale");
                clients.push(client);
            }
            assert!(!h.reactor.closed.is_empty());
        }
        h.settle(0);
        assert!(h.reactor.closed.is_empty());
        assert!(
            h.seen.iter().all(|e| !matches!(e, Seen::Received(..))),
            "a closed connection's input was reported: {:?}",
            h.seen
        );
        drop(clients);
        assert_eq!(fd_count(), before, "descriptors leaked");
    }
}

/// The entry of `conn` in the table of registered files.
fn entry(h: &Harness, conn: ConnId) -> Option<Registered> {
    h.reactor.registered.get(conn).copied()
}

/// Reads until EOF: the server really closed the socket (a table entry still holding it
/// would keep it open, and this would time out).
fn read_to_eof(client: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("EOF from the server, not a timeout");
    rest
}

/// A harness with every feature the kernel has, if registered files are among them.
fn with_registered_files() -> Option<Harness> {
    let probed = probe().unwrap().features;
    if !probed.contains(Feature::RegisteredFiles) {
        eprintln!("registered files are not available here; tested by the fallback only");
        return None;
    }
    Some(Harness::new(probed, AcceptWakeup::Sole))
}

/// Sends `bytes` on `conn` and settles the send once it has completed.
fn send_and_settle(h: &mut Harness, conn: ConnId, bytes: &[u8]) {
    let mut outbox = Outbox::default();
    outbox.push(Arc::from(bytes));
    h.reactor.send(conn, &mut outbox).unwrap();
    h.poll_until("writable", |s| {
        s.iter()
            .any(|e| matches!(e, Seen::Writable(c) if *c == conn))
    });
    h.reactor.send(conn, &mut outbox).unwrap();
    assert!(outbox.is_empty());
}

#[test]
fn sends_name_the_registered_entry_once_it_is_set_and_a_closed_socket_really_closes() {
    let _fds = fd_lock();
    let Some(mut h) = with_registered_files() else {
        return;
    };
    let mut client = h.connect();
    h.accept_as(5);
    // The update that sets the entry is an op: until it completes, sends name the fd.
    assert_eq!(entry(&h, 5), Some(Registered::Setting));
    for _ in 0..ROUNDS {
        if entry(&h, 5) == Some(Registered::Set) {
            break;
        }
        h.poll(STEP);
    }
    assert_eq!(entry(&h, 5), Some(Registered::Set));
    send_and_settle(&mut h, 5, b"by entry");
    assert_eq!(h.reactor.counters().registered_sends, 1);
    let mut got = [0; 8];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"by entry");

    h.reactor.close(5);
    assert_eq!(entry(&h, 5), Some(Registered::Clearing));
    // The poll submits the clearing; the socket then really closes.
    h.settle(0);
    assert_eq!(read_to_eof(&mut client), b"");
    assert_eq!(entry(&h, 5), Some(Registered::Free));
}

/// A connection that takes a key whose entry is still being cleared (or set for the one
/// before) is named by its fd for its whole life, and its socket closes as any other.
#[test]
fn a_key_reused_before_its_entry_is_free_uses_the_fd() {
    let _fds = fd_lock();
    let Some(mut h) = with_registered_files() else {
        return;
    };
    // Closed before its set completed (no poll in between), then the key reused at once.
    let mut first = h.connect();
    h.accept_as(2);
    assert_eq!(entry(&h, 2), Some(Registered::Setting));
    h.reactor.close(2);
    assert_eq!(entry(&h, 2), Some(Registered::SettingThenClear));
    let mut second = h.connect();
    let stream = h.accept_stream();
    // (The accept's poll may have completed the set, which started the clearing.)
    assert!(matches!(
        entry(&h, 2),
        Some(Registered::SettingThenClear | Registered::Clearing)
    ));
    h.reactor.add_conn(2, stream).unwrap();
    assert!(matches!(
        entry(&h, 2),
        Some(Registered::SettingThenClear | Registered::Clearing)
    ));
    h.settle(1); // the second connection's recv
    assert_eq!(read_to_eof(&mut first), b"");
    assert_eq!(entry(&h, 2), Some(Registered::Free));

    second.write_all(b"ping").unwrap();
    h.poll_until("ping", |s| received(s, 2) == b"ping");
    send_and_settle(&mut h, 2, b"pong");
    let mut got = [0; 4];
    second.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    assert_eq!(h.reactor.counters().registered_sends, 0);
    h.reactor.close(2);
    assert_eq!(entry(&h, 2), Some(Registered::Free));
    h.settle(0);
    assert_eq!(read_to_eof(&mut second), b"");

    // The next connection under the key gets the entry again.
    let _third = h.connect();
    h.accept_as(2);
    assert_eq!(entry(&h, 2), Some(Registered::Setting));
    h.reactor.close(2);
    h.settle(0);
    assert_eq!(entry(&h, 2), Some(Registered::Free));
}

#[test]
fn without_the_feature_there_is_no_table() {
    let _fds = fd_lock();
    let probed = probe().unwrap().features;
    let h = Harness::new(probed.without(Feature::RegisteredFiles), AcceptWakeup::Sole);
    assert!(h.reactor.registered.is_empty());
    assert!(!h.reactor.features().contains(Feature::RegisteredFiles));
}
