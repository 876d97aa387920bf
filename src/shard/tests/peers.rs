//! Peers: room deliveries to the other shards in one batch per iteration, and a peer that
//! makes joins wait for their room or answers `/who` (what the `--cluster` broker does).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Harness, config};
use crate::chat::{Name, RoomName};
use crate::io::Waker;
use crate::peer::{Batch, MemberId, Peer, Shards};
use crate::shard::Hub;

/// Two shards of one server (sharing a hub), driven in turns until both are idle.
fn two_shards() -> (Harness, Harness) {
    super::fake::hold_descriptors();
    let wakers = [Waker::new().unwrap(), Waker::new().unwrap()];
    let config = config(&[]);
    let hub = Hub::new(&wakers, config.max_conns);
    let [w0, w1] = wakers;
    (
        Harness::shard_of(hub.clone(), 0, w0, config.clone()),
        Harness::shard_of(hub, 1, w1, config),
    )
}

fn drive_both(a: &mut Harness, b: &mut Harness) {
    for _ in 0..4 {
        a.drive();
        b.drive();
    }
}

#[test]
fn a_room_spanning_two_shards_gets_one_batch_per_iteration_in_order() {
    let (mut a, mut b) = two_shards();
    let ann = a.join("r", "ann");
    let bo = b.join("r", "bo");
    drive_both(&mut a, &mut b);
    assert_eq!(a.texts(ann), ["bo just connected"]);
    for text in ["1", "2", "3"] {
        a.send_text(ann, text);
    }
    drive_both(&mut a, &mut b);
    assert_eq!(b.texts(bo), ["ann says: 1", "ann says: 2", "ann says: 3"]);
    assert_eq!(
        a.counters().peer_batches_out.load(Relaxed),
        2,
        "the join, then the burst"
    );
    assert_eq!(b.counters().peer_batches_in.load(Relaxed), 2);
}

/// A remote party as a test sees it: what it was told, and whether joins must wait.
#[derive(Debug, Default)]
struct Recorder {
    joins_wait: bool,
    answers_who: bool,
    told: Mutex<Vec<String>>,
}

impl Recorder {
    fn note(&self, what: String) {
        self.told.lock().unwrap().push(what);
    }
    fn told(&self) -> Vec<String> {
        std::mem::take(&mut *self.told.lock().unwrap())
    }
}

impl Peer for Recorder {
    fn publish(&self, from: usize, batch: &Batch) {
        self.note(format!("publish from {from}: {} deliveries", batch.len()));
    }
    fn join(&self, room: &RoomName) -> bool {
        self.note(format!("join {}", room.as_str()));
        !self.joins_wait
    }
    fn leave(&self, room: &RoomName) {
        self.note(format!("leave {}", room.as_str()));
    }
    fn roster_changed(&self, room: &RoomName, _: MemberId, name: Option<&Name>) {
        let name = name.map_or("-", Name::as_str);
        self.note(format!("roster {} {name}", room.as_str()));
    }
    fn who(&self, room: &RoomName, _: MemberId) -> bool {
        self.note(format!("who {}", room.as_str()));
        self.answers_who
    }
}

#[test]
fn a_join_waits_for_a_peer_that_is_not_ready_for_the_room() {
    let mut h = Harness::new(&[]);
    let remote = Arc::new(Recorder {
        joins_wait: true,
        ..Recorder::default()
    });
    h.hub.set_remote(remote.clone());
    let (ann, status) = h.upgrade("/chat/r?name=ann");
    assert_eq!(status, 0, "no response while the room is not ready");
    assert_eq!(remote.told(), ["join r"]);
    h.hub.room_ready(&RoomName::parse("r").unwrap());
    h.drive();
    assert_eq!(h.take_status(ann), Some(101));
    assert_eq!(
        remote.told(),
        ["roster r ann", "publish from 0: 1 deliveries"],
        "the member is told to the peer, and its join notice published"
    );
}

#[test]
fn a_peer_hears_every_room_change_and_may_answer_who() {
    let mut h = Harness::new(&[]);
    let remote = Arc::new(Recorder {
        answers_who: true,
        ..Recorder::default()
    });
    h.hub.set_remote(remote.clone());
    let ann = h.join("r", "ann");
    let bo = h.join("r", "bo");
    assert_eq!(
        remote.told(),
        [
            "join r",
            "roster r ann",
            "publish from 0: 1 deliveries",
            "join r",
            "roster r bo",
            "publish from 0: 1 deliveries"
        ]
    );
    assert_eq!(h.texts(ann), ["bo just connected"]);
    h.send_text(ann, "/who");
    h.send_text(ann, "/nick anne");
    h.drive();
    assert!(
        h.texts(ann).is_empty(),
        "the peer answers /who, not the shard"
    );
    assert_eq!(h.texts(bo), ["ann is now anne"]);
    assert_eq!(
        remote.told(),
        ["who r", "roster r anne", "publish from 0: 1 deliveries"]
    );
    h.net.borrow_mut().wire(bo).client_fin = true;
    h.drive();
    assert_eq!(
        remote.told(),
        ["leave r", "roster r -", "publish from 0: 1 deliveries"]
    );
}

/// A loop whose clients send faster than a peer loop delivers stops reading those senders
/// while the peer holds more than its limit, so the peer's backlog stays bounded; everyone
/// else on the loop is served meanwhile, and nothing is lost once the peer catches up.
#[test]
fn a_backlogged_peer_throttles_the_senders_that_feed_it_and_only_them() {
    use crate::peer::PEER_BACKLOG_LIMIT;
    const MESSAGES: usize = 100;
    const SIZE: usize = 100 << 10; // 100 messages of 100 KiB: past the 8 MiB limit
    let (mut a, mut b) = two_shards();
    let ann = a.join("r", "ann");
    let bo = b.join("r", "bo");
    let cy = a.join("s", "cy");
    let dee = a.join("s", "dee");
    drive_both(&mut a, &mut b);
    for c in [ann, cy, dee] {
        a.frames(c);
    }
    b.frames(bo);
    for i in 0..MESSAGES {
        a.send_text(ann, &format!("{i:03}{}", "x".repeat(SIZE - 3)));
    }
    a.drive(); // b does not run: its backlog grows until ann is throttled
    assert_eq!(a.counters().peer_backpressure.load(Relaxed), 1);
    assert!(a.net.borrow_mut().wire(ann).reading_paused);
    assert!(
        !a.net.borrow_mut().wire(ann).to_server.is_empty(),
        "the rest waits in the kernel"
    );
    let (_, held) = a.hub.inbox(1).backlog();
    assert!(held > PEER_BACKLOG_LIMIT.1 && held <= PEER_BACKLOG_LIMIT.1 + 2 * SIZE);
    // The others on the loop are served meanwhile.
    a.send_text(cy, "still served");
    a.drive();
    assert_eq!(a.texts(dee), ["cy says: still served"]);
    // The peer catches up; the sender is read again and everything arrives, in order.
    let mut received = Vec::new();
    for _ in 0..100 {
        b.drive();
        received.extend(b.texts(bo));
        a.advance(Duration::from_millis(1));
        if received.len() == MESSAGES {
            break;
        }
    }
    assert_eq!(received.len(), MESSAGES);
    for (i, text) in received.iter().enumerate() {
        assert!(text.starts_with(&format!("ann says: {i:03}")));
    }
    assert_eq!(a.hub.inbox(1).backlog(), (0, 0));
    assert!(!a.net.borrow_mut().wire(ann).reading_paused);
}

/// What the broker compares with the limit: the largest backlog any shard holds, in each
/// count; a shard's own view ([`Hub::peer_backlog`]) leaves itself out. A batch counts its
/// frames' bytes in every inbox it reaches, however it got there.
#[test]
fn the_shards_backlog_is_the_largest_any_inbox_holds_and_a_shards_view_leaves_itself_out() {
    use crate::chat::{Audience, Delivery};
    use crate::ws::{Opcode, frame::server_frame};
    super::fake::hold_descriptors();
    let wakers = [(); 3].map(|_| Waker::new().unwrap());
    let hub = Hub::new(&wakers, 10);
    let delivery = |n: usize| Delivery {
        frame: server_frame(Opcode::Binary, &[&vec![0; n]]).into(),
        to: Audience::Room {
            room: RoomName::parse("r").unwrap(),
            except: MemberId { shard: 0, conn: 0 },
        },
    };
    let batch: Batch = Arc::from(vec![delivery(10), delivery(200)]);
    let bytes = (2 + 10) + (4 + 200); // headers: 2 bytes, 4 from a payload of 126 on
    let shards: &dyn Shards = &*hub;
    assert_eq!(shards.backlog(), (0, 0));

    hub.peers().next().unwrap().publish(0, &batch); // shards 1 and 2
    shards.deliver(2, batch.clone());
    assert_eq!(hub.inbox(0).backlog(), (0, 0));
    assert_eq!(hub.inbox(1).backlog(), (2, bytes));
    assert_eq!(shards.backlog(), (4, 2 * bytes));
    assert_eq!(hub.peer_backlog(2), (2, bytes));
    assert_eq!(hub.peer_backlog(0), (4, 2 * bytes));

    shards.deliver_to_all(batch);
    assert_eq!(hub.inbox(0).backlog(), (2, bytes));
    assert_eq!(shards.backlog(), (6, 3 * bytes));
    hub.inbox(2).delivered(6, 3 * bytes);
    assert_eq!(
        shards.backlog(),
        (4, 2 * bytes),
        "shard 1's, now the largest"
    );
    assert_eq!(hub.peer_backlog(1), (2, bytes));
}
