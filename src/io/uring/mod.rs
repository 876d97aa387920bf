//! The io_uring reactor: completion-based, one ring per thread, behind the same
//! [`Reactor`] trait as epoll.
//!
//! One `poll` is one `io_uring_enter`: it submits every SQE queued since the last call (recv
//! re-arms, sends of every flushed connection, cancels) and waits for at least one
//! completion or the deadline. What the kernel offers is probed at start ([`probe`]) and can
//! be narrowed with `--uring-features`; each feature has a fallback:
//!
//! | feature            | with it                                   | without it                      |
//! |--------------------|-------------------------------------------|---------------------------------|
//! | multishot-accept   | one accept SQE per listener, ever         | an accept re-armed per conn     |
//! | buf-ring           | recv buffers picked by the kernel         | a 16 KiB buffer per recv op     |
//! | multishot-recv     | one recv SQE per connection, ever         | a recv re-armed per completion  |
//! | single-issuer, defer-taskrun, coop-taskrun | completions batched into our wait | the kernel interrupts us |
//! | registered-files   | sends name a table entry (no fd lookup)   | sends name the fd               |
//!
//! Sends: at most one send per connection in flight (a plain send of a lone frame, a
//! sendmsg of several). `send` hands the outbox's front bytes
//! to the kernel and marks them in flight in the outbox; the completion is remembered and
//! reported as [`Event::Writable`]; the shard then calls `send` again, which settles the
//! completed bytes (a short send leaves the rest at the front, sent next) and starts the next
//! batch. The outbox stays non-empty while bytes are in flight, so the shard holds its FIN.
//!
//! Counters, as this backend means them: `wakeups` returns from `io_uring_enter`;
//! `listener_wakeups` accept completions (exclusive: one per connection handed to us) or poll
//! completions (`AcceptWakeup::All`); `futile_accepts` listener wake-ups whose accept found
//! nothing (EAGAIN: only possible with `All`, since an exclusive accept waits in the kernel);
//! `reads` recv completions carrying data; `sendmsg` sends submitted (IORING_OP_SENDMSG, or
//! IORING_OP_SEND for a lone frame); `registered_sends` those that named a table entry;
//! `epoll_ctl` 0.
//!
//! Per idle connection the reactor holds one `ConnSlot` and nothing else: with a buffer
//! ring, the connection's recv lives in the slot (its user_data names key and generation,
//! `OpId::conn_recv`), not in the op slab, as its SQE points at no memory of ours; the
//! connection table is the "slab" of STYLE rule 7 for these recvs. Without a buffer ring
//! the recv owns a buffer and stays in the slab (results/memory/2026-12-06-uring-recv).
//!
//! Owns: the ring, the op slab (`ops.rs`), the provided-buffer ring, the sockets. Must never:
//! free or reuse memory an op handed to the kernel before that op's final completion, close
//! a connection's socket before the final completion of every op that names its fd (the
//! number could be reused by the next accept, and the op would act on another socket),
//! name a table entry that may hold another connection's socket (see `Registered`),
//! report a completion of a closed connection under a key reused since, or block except in
//! `poll`.

mod bufring;
mod ops;
mod probe;

pub use probe::{Feature, FeatureSet, Probed, Unavailable, probe};

use std::collections::VecDeque;
use std::collections::hash_map::{Entry, HashMap};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use self::bufring::BufRing;
use self::ops::{
    CANCEL_USER_DATA, ConnRef, Op, OpId, Ops, RecvMode, SendBuf, next_generation, recv_entry,
};
use super::accept::{Burst, accept_burst};
use super::{
    AcceptWakeup, ConnId, Event, IoCounters, ListenerId, Outbox, Reactor, SendOutcome, Waker,
};
use crate::net::AcceptError;

/// Submission queue slots; more SQEs in one iteration wait in `backlog`.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue slots: room for a burst of multishot completions between two waits
/// (the kernel keeps overflow, but overflow costs a slow path).
const CQ_ENTRIES: u32 = 8192;
/// Provided receive buffers per thread and their size: 4 MiB in all, shared by every
/// connection of the thread (a buffer is back in the ring as soon as its bytes are handed on).
const RING_BUFFERS: u16 = 256;
const RING_BUFFER_BYTES: usize = 16 * 1024;
const BUFFER_GROUP: u16 = 0;
/// Buffer of a recv op when there is no buffer ring.
const OWNED_RECV_BYTES: usize = 16 * 1024;
/// Slices per sendmsg; Linux's IOV_MAX.
const IOV_MAX: usize = 1024;
/// Finished sends' buffers kept for reuse, at most: enough for every send in flight in a
/// busy iteration of a loop with a thousand receivers, about 1.5 MiB at most
/// (`SendBuf::worth_keeping`).
const SPARE_SEND_BUFS: usize = 1024;
/// Completions handled per batch, and batches per `poll` before the others get their turn.
const CQES_PER_BATCH: usize = 1024;
const BATCHES_PER_POLL: usize = 8;
/// Dropping the reactor waits this long per round, for this many rounds, for the
/// cancelled ops to complete before leaking what they own.
const DRAIN_WAIT: Duration = Duration::from_millis(100);
const DRAIN_ROUNDS: usize = 50;

/// A listener and the op that accepts from it.
struct ListenerSlot {
    socket: Arc<TcpListener>,
    wakeup: AcceptWakeup,
    /// The accept (exclusive) or poll (`All`) in flight.
    op: Option<OpId>,
    /// Paused by an accept failure until `resume_accepting`.
    paused: bool,
}

/// How the peer's input ended.
#[derive(Debug)]
enum InputEnd {
    Eof,
    Failed(io::Error),
}

/// Input that completed while its connection was paused (at most what the kernel had
/// already taken when the cancel landed), reported after resume; then the end of input, if
/// it came.
#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    end: Option<InputEnd>,
}

/// A finished send's result as the kernel reported it (bytes sent, or -errno), kept until
/// the next `send` settles it in the outbox. Four bytes: an `Option<io::Result<usize>>`
/// took 16 in every connection's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent(i32);

impl Sent {
    /// No send finished since the last `send`. Never a completion's result: a send reports
    /// at most i32::MAX bytes, and errors are -4095..=-1.
    const NONE: Sent = Sent(i32::MIN);

    /// The result, as `send` settles it; `None` if no send finished.
    fn take(&mut self) -> Option<io::Result<usize>> {
        match std::mem::replace(self, Sent::NONE).0 {
            i32::MIN => None,
            n if n >= 0 => Some(Ok(n as usize)),
            n if -n == libc::EINTR || -n == libc::EAGAIN => Some(Ok(0)),
            n => Some(Err(io::Error::from_raw_os_error(-n))),
        }
    }
}

/// A connection. Kept small, as every idle connection holds one: 32 bytes, where it was
/// 112 with the held input inline, a 16-byte `Option<OpId>`, a 16-byte send result and the
/// socket behind an `Arc` (results/memory/2026-12-06-uring-slot), and 40 with a pointer to
/// held input, now in `UringReactor::held`.
struct ConnSlot {
    /// Owned here, not shared with the ops (they name its fd number): `close` moves it to
    /// `UringReactor::closed` while any op of the connection is in flight.
    stream: TcpStream,
    /// The recv and the send in flight. A completion is this connection's only if its op
    /// is named here: the key may have been reused since the op started, but the old
    /// connection's slab op still holds its slab key, and its recv kept in the slot
    /// (`OpId::conn_recv`) names the old generation, so a new one's ops have other ids.
    recv: Option<OpId>,
    send: Option<OpId>,
    /// Distinguishes this connection from earlier ones under the same key: in the id of its
    /// recv kept in this slot, in the key of `UringReactor::closed`, and in a `Ready::Conn`
    /// entry, which lives until the next `poll`. 31 bits (`ops::GENERATIONS`): it wraps
    /// after 2 billion connections, while a closed connection's recv lingers for about one
    /// iteration (until its cancel lands), and one iteration cannot accept that many.
    generation: u32,
    /// The last send's result, settled in the outbox by the next `send`.
    sent: Sent,
    paused: bool,
    /// EOF or an error was seen: no more recv.
    input_ended: bool,
}

/// The socket of a closed connection that ops still name, and how many: the last one's
/// final completion closes it. Keyed by (connection key, generation), which every op of a
/// connection knows: a slab op from its `ConnRef`, a recv kept in the slot from its
/// user_data (which has no room for the fd as well). The pair is unique among closing
/// sockets: a key is reused only after `close`, under the next generation.
struct Closed {
    stream: TcpStream,
    ops: u8,
}

/// Work to do in the next `poll` without waiting for the kernel.
#[derive(Debug, Clone, Copy)]
enum Ready {
    /// A shared (`All`) listener stopped by its budget or resumed.
    Listener(usize),
    /// A resumed connection with held input.
    Conn(ConnId, u32),
}

/// What a completion is for (copied out of the slab so that the slab can be changed).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Accept(usize),
    ListenerPoll(usize),
    Recv,
    Send,
    Waker,
    FilesUpdate,
}

/// A connection key's entry in the ring's table of registered files. A send that names its
/// socket by this entry spares the kernel looking the fd up and counting a reference on the
/// file (fget/fput: 3.5 % of a loop's perf samples at 98,000 deliveries/s, and 2 % of its
/// CPU per delivery in an A/B: results/intel-xeon-processor-2cpu/uring-registered-files).
///
/// The table holds a reference to the socket, so a closed connection's entry must be cleared
/// before the socket really closes (and its FIN goes). Updates are ops like any other, so
/// the entry's state follows their completions: a connection's sends use the entry only
/// once the update that set it has completed ([`Registered::Set`]), and a new connection
/// under the key sets it again only once the previous one's clearing has completed
/// ([`Registered::Free`]); until then it is named by its fd, as without the table. So no send
/// can reach another connection's socket, whatever order the kernel runs updates in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registered {
    /// Empty, and no update in flight.
    Free,
    /// The connection under this key is being put in.
    Setting,
    /// Holds the socket of the connection under this key.
    Set,
    /// Being put in for a connection that has closed since: cleared when that completes.
    SettingThenClear,
    /// Being cleared.
    Clearing,
}

/// Entries of a loop's table of registered files at most (the shard reserves as many
/// connections at most): the kernel allocates a pointer per entry, and a node per set entry.
const MAX_REGISTERED: usize = 65_536;

/// One thread's io_uring and the sockets it serves.
pub struct UringReactor {
    /// Declared first so that it is dropped (and the kernel done with every buffer) before
    /// the memory the ops and the buffer ring own.
    ring: IoUring,
    ops: Ops,
    bufs: Option<BufRing>,
    features: FeatureSet,
    /// SQEs that found the submission queue full, submitted in order before newer ones.
    backlog: VecDeque<squeue::Entry>,
    /// Set up disabled: SINGLE_ISSUER binds the ring to the thread that enables it, so the
    /// first `poll` enables it on the thread that runs the loop.
    disabled: bool,
    /// Dropping: nothing is re-armed.
    closing: bool,
    listeners: Vec<Option<ListenerSlot>>,
    conns: Vec<Option<ConnSlot>>,
    /// Closed connections' sockets, by (key, generation), until their ops in flight have
    /// finished. While a socket is here its fd stays open, so no other socket can have its
    /// number meanwhile.
    closed: HashMap<(ConnId, u32), Closed>,
    /// Input that arrived for a paused connection (a recv completed before its cancel
    /// landed), until it resumes: a few connections at a time have any, so it is kept here
    /// rather than in every slot.
    held: HashMap<ConnId, Held>,
    /// The ring's table of registered files, an entry per connection key below its length
    /// (empty without [`Feature::RegisteredFiles`], or until `reserve_conns`).
    registered: Vec<Registered>,
    next_generation: u32,
    ready: Vec<Ready>,
    spare_recv_bufs: Vec<Box<[u8]>>,
    /// Buffers of finished sends, refilled by the next ones (see `SendBuf`). Boxed as the
    /// ops hold them, so that taking one for a send allocates nothing.
    #[expect(
        clippy::vec_box,
        reason = "the boxes move into and out of ops as they are"
    )]
    spare_send_bufs: Vec<Box<SendBuf>>,
    cqes: Vec<(u64, i32, u32)>,
    waker: Waker,
    counters: IoCounters,
}

impl UringReactor {
    /// A ring using `features` (already narrowed to what the kernel has, see [`probe`]), that
    /// `waker` interrupts.
    pub fn new(waker: Waker, features: FeatureSet) -> io::Result<UringReactor> {
        let features = features.consistent();
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES).setup_clamp();
        let single_issuer = features.contains(Feature::SingleIssuer);
        if single_issuer {
            builder.setup_single_issuer().setup_r_disabled();
        }
        if features.contains(Feature::DeferTaskrun) {
            builder.setup_defer_taskrun();
        } else if features.contains(Feature::CoopTaskrun) {
            builder.setup_coop_taskrun();
        }
        let ring = builder.build(SQ_ENTRIES)?;
        let bufs = if features.contains(Feature::BufRing) {
            let bufs = BufRing::new(RING_BUFFERS, RING_BUFFER_BYTES)?;
            bufs.register(&ring, BUFFER_GROUP)?;
            Some(bufs)
        } else {
            None
        };
        let mut reactor = UringReactor {
            ring,
            ops: Ops::default(),
            bufs,
            features,
            backlog: VecDeque::new(),
            disabled: single_issuer,
            closing: false,
            listeners: Vec::new(),
            conns: Vec::new(),
            closed: HashMap::new(),
            held: HashMap::new(),
            registered: Vec::new(),
            next_generation: 0,
            ready: Vec::new(),
            spare_recv_bufs: Vec::new(),
            spare_send_bufs: Vec::new(),
            cqes: Vec::with_capacity(CQES_PER_BATCH),
            waker,
            counters: IoCounters::default(),
        };
        let waker = reactor.waker.clone();
        reactor.start(Op::WakerRead {
            waker,
            value: Box::new(0),
        });
        Ok(reactor)
    }

    /// The features this reactor uses.
    pub fn features(&self) -> FeatureSet {
        self.features
    }

    /// Stores `op` in the slab and queues the SQE that starts it.
    fn start(&mut self, op: Op) -> OpId {
        let (id, sqe) = self.ops.start(op);
        self.push(sqe);
        id
    }

    fn cancel(&mut self, id: OpId) {
        let sqe = opcode::AsyncCancel::new(id.user_data())
            .build()
            .user_data(CANCEL_USER_DATA);
        self.push(sqe);
    }

    /// Queues an SQE; a full submission queue spills into `backlog`.
    fn push(&mut self, sqe: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: every SQE is a cancel (no pointers), a connection's recv from the buffer
            // ring (no pointers; `arm_recv`), or was built by `Ops::start` from memory its op
            // owns, and the op stays in the slab until its final completion. The fds they
            // name stay open until then (`ConnSlot`, `closed`).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(sqe);
    }

    /// Moves the backlog into the submission queue, submitting when it fills.
    fn flush_backlog(&mut self) -> io::Result<()> {
        while let Some(sqe) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.backlog.pop_front();
                continue;
            }
            match self.ring.submit() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_retry(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn conn_slot(&mut self, conn: ConnId, generation: u32) -> Option<&mut ConnSlot> {
        self.conns
            .get_mut(conn)
            .and_then(Option::as_mut)
            .filter(|s| s.generation == generation)
    }

    /// Starts the listener's accept (or poll) unless one is in flight or it is paused.
    fn arm_listener(&mut self, index: usize) {
        if self.closing {
            return;
        }
        let multishot = self.features.contains(Feature::MultishotAccept);
        let Some(Some(slot)) = self.listeners.get(index) else {
            return;
        };
        if slot.op.is_some() || slot.paused {
            return;
        }
        let socket = slot.socket.clone();
        let op = match slot.wakeup {
            AcceptWakeup::Sole => Op::Accept {
                listener: index,
                socket,
                multishot,
            },
            // Re-armed per connection, so it joins the back of the socket's exclusive wait
            // queue each time and the loops take turns (see AcceptWakeup::Exclusive).
            AcceptWakeup::Exclusive => Op::Accept {
                listener: index,
                socket,
                multishot: false,
            },
            AcceptWakeup::All => Op::ListenerPoll {
                listener: index,
                socket,
            },
        };
        let id = self.start(op);
        if let Some(Some(slot)) = self.listeners.get_mut(index) {
            slot.op = Some(id);
        }
    }

    /// Starts a recv on the connection unless one is in flight, it is paused, or its input
    /// ended.
    fn arm_recv(&mut self, conn: ConnId) {
        if self.closing {
            return;
        }
        let Some(Some(slot)) = self.conns.get(conn) else {
            return;
        };
        if slot.recv.is_some() || slot.paused || slot.input_ended {
            return;
        }
        let fd = slot.stream.as_raw_fd();
        let generation = slot.generation;
        let mut mode = match &self.bufs {
            Some(_) if self.features.contains(Feature::MultishotRecv) => RecvMode::Multishot {
                group: BUFFER_GROUP,
            },
            Some(bufs) => RecvMode::Select {
                group: BUFFER_GROUP,
                len: bufs.buf_size() as u32,
            },
            None => RecvMode::Owned(
                self.spare_recv_bufs
                    .pop()
                    .unwrap_or_else(|| vec![0; OWNED_RECV_BYTES].into_boxed_slice()),
            ),
        };
        // A recv from the buffer ring owns no memory: it lives in the connection's slot, as
        // its id, and no slab entry exists for an idle connection. What the kernel touches
        // is the fd, which stays open until this recv's final completion: the slot owns the
        // socket, and `close` moves it to `closed`, counting this recv, while it is in
        // flight. A recv with its own buffer stays in the slab, which owns the buffer.
        let in_slot = match mode {
            RecvMode::Owned(_) => None,
            _ => OpId::conn_recv(conn, generation),
        };
        let id = match in_slot {
            Some(id) => {
                let sqe = recv_entry(fd, &mut mode).user_data(id.user_data());
                self.push(sqe);
                id
            }
            None => self.start(Op::Recv {
                conn: ConnRef {
                    id: conn,
                    generation,
                    fd,
                },
                mode,
            }),
        };
        if let Some(Some(slot)) = self.conns.get_mut(conn) {
            slot.recv = Some(id);
        }
    }

    /// Accepts from a shared (`All`) listener until EAGAIN or the budget, like epoll.
    fn accept_direct(&mut self, index: usize, on_edge: bool, on_event: &mut dyn FnMut(Event<'_>)) {
        let Some(Some(slot)) = self.listeners.get_mut(index) else {
            return;
        };
        if slot.paused {
            return;
        }
        match accept_burst(&slot.socket, ListenerId(index), on_event) {
            Burst::Drained { accepted: 0 } if on_edge => self.counters.futile_accepts += 1,
            Burst::Drained { .. } => {}
            Burst::Failed => slot.paused = true,
            Burst::Budget => self.ready.push(Ready::Listener(index)),
        }
    }

    /// Reports what a resumed connection held, then reads on.
    fn release_held(&mut self, conn: ConnId, generation: u32, on_event: &mut dyn FnMut(Event<'_>)) {
        let Some(slot) = self.conn_slot(conn, generation) else {
            return;
        };
        if slot.paused {
            return; // paused again before we got here: keep holding
        }
        let Held { bytes, end } = self.held.remove(&conn).unwrap_or_default();
        if !bytes.is_empty() {
            on_event(Event::Received {
                conn,
                bytes: &bytes,
            });
        }
        match end {
            Some(InputEnd::Eof) => on_event(Event::Eof { conn }),
            Some(InputEnd::Failed(error)) => on_event(Event::Failed { conn, error }),
            None => {}
        }
        self.arm_recv(conn);
    }

    /// Handles every completion available now.
    fn reap(&mut self, on_event: &mut dyn FnMut(Event<'_>)) {
        for _ in 0..BATCHES_PER_POLL {
            let mut batch = std::mem::take(&mut self.cqes);
            batch.clear();
            batch.extend(
                self.ring
                    .completion()
                    .take(CQES_PER_BATCH)
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &batch {
                self.complete(user_data, result, flags, on_event);
            }
            let done = batch.len() < CQES_PER_BATCH;
            self.cqes = batch;
            if done {
                break;
            }
        }
    }

    fn complete(
        &mut self,
        user_data: u64,
        res: i32,
        flags: u32,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        if user_data == CANCEL_USER_DATA {
            return;
        }
        let Some(id) = OpId::from_user_data(user_data) else {
            return;
        };
        if id.as_conn_recv().is_some() {
            return self.on_recv(id, res, flags, on_event);
        }
        let kind = match self.ops.get_mut(id) {
            Some(Op::Accept { listener, .. }) => Kind::Accept(*listener),
            Some(Op::ListenerPoll { listener, .. }) => Kind::ListenerPoll(*listener),
            Some(Op::Recv { .. }) => Kind::Recv,
            Some(Op::Send { .. } | Op::SendFrame { .. }) => Kind::Send,
            Some(Op::WakerRead { .. } | Op::WakerPoll { .. }) => Kind::Waker,
            Some(Op::FilesUpdate { .. }) => Kind::FilesUpdate,
            None => return,
        };
        let more = cqueue::more(flags);
        match kind {
            Kind::Accept(index) => self.on_accept(id, index, res, more, on_event),
            Kind::ListenerPoll(index) => {
                let open = matches!(self.listeners.get(index), Some(Some(_)));
                if res >= 0 && open {
                    self.counters.listener_wakeups += 1;
                    self.accept_direct(index, true, on_event);
                }
                if !more {
                    self.listener_op_finished(id, index);
                }
            }
            Kind::Recv => self.on_recv(id, res, flags, on_event),
            Kind::Send => self.on_send(id, res, more, on_event),
            Kind::FilesUpdate => self.on_files_update(id, res),
            Kind::Waker => {
                if res >= 0 {
                    on_event(Event::Wake);
                }
                if !more {
                    self.waker_op_finished(id, res);
                } else if let Some(Op::WakerPoll { waker }) = self.ops.get_mut(id) {
                    waker.drain();
                }
            }
        }
    }

    /// Re-arms the waker: the same read, or (after EAGAIN: this kernel does not wait on a
    /// non-blocking eventfd) a multishot poll that stays armed.
    fn waker_op_finished(&mut self, id: OpId, res: i32) {
        let op = self.ops.finish(id);
        if self.closing || res == -libc::ECANCELED {
            return;
        }
        match op {
            Some(Op::WakerRead { waker, .. }) if res == -libc::EAGAIN => {
                self.start(Op::WakerPoll { waker });
            }
            Some(Op::WakerRead { waker, value }) => {
                self.start(Op::WakerRead { waker, value });
            }
            Some(Op::WakerPoll { waker }) => {
                waker.drain();
                self.start(Op::WakerPoll { waker });
            }
            _ => {}
        }
    }

    fn listener_op_finished(&mut self, id: OpId, index: usize) {
        self.ops.finish(id);
        if let Some(Some(slot)) = self.listeners.get_mut(index) {
            slot.op = None;
        }
        self.arm_listener(index);
    }

    fn on_accept(
        &mut self,
        id: OpId,
        index: usize,
        res: i32,
        more: bool,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        let open = matches!(self.listeners.get(index), Some(Some(_)));
        self.counters.listener_wakeups += 1;
        if res >= 0 {
            // SAFETY: a non-negative accept result is a new descriptor that nobody owns yet.
            let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(res) });
            // Dropped (closed) if the listener was closed meanwhile, as epoll would never
            // have accepted it.
            if open && !self.closing {
                // A multishot accept cannot return the address: ask for it (a connection
                // reset already in the queue has none; the shard only logs it).
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                on_event(Event::Accepted {
                    listener: ListenerId(index),
                    stream,
                    peer,
                });
            }
        } else {
            let error = io::Error::from_raw_os_error(-res);
            let kind = AcceptError::of(&error);
            if kind == AcceptError::WouldBlock {
                self.counters.futile_accepts += 1;
            } else if res == -libc::ECANCELED || kind == AcceptError::Transient {
                // Closing, or one dead connection: the next accept may be fine.
            } else if open {
                if let Some(Some(slot)) = self.listeners.get_mut(index) {
                    slot.paused = true;
                }
                if more {
                    self.cancel(id);
                }
                on_event(Event::AcceptFailed {
                    listener: ListenerId(index),
                    error,
                });
            }
        }
        if !more {
            self.listener_op_finished(id, index);
        }
    }

    /// A recv's completion, kept in its connection's slot (`OpId::conn_recv`) or in the
    /// slab. It is reported only if the connection under its key still names it as its
    /// recv; otherwise the connection was closed, and its final completion counts down the
    /// socket in `closed`.
    fn on_recv(&mut self, id: OpId, res: i32, flags: u32, on_event: &mut dyn FnMut(Event<'_>)) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let (cid, generation, owned) = match id.as_conn_recv() {
            Some((cid, generation)) => (cid, generation, None),
            None => match self.ops.get_mut(id) {
                Some(Op::Recv { conn, mode }) => {
                    let owned = match mode {
                        RecvMode::Owned(buf) => Some(&**buf),
                        _ => None,
                    };
                    (conn.id, conn.generation, owned)
                }
                _ => return,
            },
        };
        // The id names the generation (in the slot) or a slab key the old op still holds
        // (in the slab): a connection that reused the key never matches.
        let slot = self
            .conns
            .get_mut(cid)
            .and_then(Option::as_mut)
            .filter(|s| s.recv == Some(id));
        if let Some(slot) = slot {
            if res > 0 {
                self.counters.reads += 1;
                let n = res as usize;
                let bytes = match (owned, bid, &self.bufs) {
                    (Some(buf), _, _) => buf.get(..n),
                    (None, Some(bid), Some(bufs)) => bufs.filled(bid, n),
                    _ => None,
                };
                if let Some(bytes) = bytes {
                    if slot.paused {
                        let held = self.held.entry(cid).or_default();
                        held.bytes.extend_from_slice(bytes);
                    } else {
                        on_event(Event::Received { conn: cid, bytes });
                    }
                }
            } else {
                let end = match -res {
                    0 => Some(InputEnd::Eof),
                    // Cancelled (pause), out of ring buffers, or interrupted: re-armed below.
                    libc::ECANCELED | libc::ENOBUFS | libc::EAGAIN | libc::EINTR => None,
                    errno => Some(InputEnd::Failed(io::Error::from_raw_os_error(errno))),
                };
                if let Some(end) = end {
                    slot.input_ended = true;
                    if slot.paused {
                        self.held.entry(cid).or_default().end = Some(end);
                    } else {
                        match end {
                            InputEnd::Eof => on_event(Event::Eof { conn: cid }),
                            InputEnd::Failed(error) => {
                                on_event(Event::Failed { conn: cid, error });
                            }
                        }
                    }
                }
            }
        }
        if let (Some(bid), Some(bufs)) = (bid, self.bufs.as_mut()) {
            bufs.recycle(bid);
        }
        if !more {
            if let Some(Op::Recv {
                mode: RecvMode::Owned(buf),
                ..
            }) = self.ops.finish(id)
            {
                self.spare_recv_bufs.push(buf);
            }
            match self.conns.get_mut(cid) {
                Some(Some(slot)) if slot.recv == Some(id) => {
                    slot.recv = None;
                    self.arm_recv(cid);
                }
                _ => self.closed_conn_op_finished(cid, generation),
            }
        }
    }

    /// The final completion of an op whose connection was closed (its key may be in use by
    /// another connection already): the last such op closes the socket.
    fn closed_conn_op_finished(&mut self, conn: ConnId, generation: u32) {
        let Entry::Occupied(mut closed) = self.closed.entry((conn, generation)) else {
            // Every op of a connection is named by its slot until `close` counts it here.
            debug_assert!(
                false,
                "an op of connection {conn} (generation {generation}) outlived its socket"
            );
            return;
        };
        closed.get_mut().ops -= 1;
        if closed.get().ops == 0 {
            drop(closed.remove().stream); // closes the socket: no op names it any more
        }
    }

    fn on_send(&mut self, id: OpId, res: i32, more: bool, on_event: &mut dyn FnMut(Event<'_>)) {
        if more {
            return; // sendmsg completes once; nothing to release before the final one
        }
        // The frames the op held are released here, after the kernel is done with them; the
        // buffer is kept for a later send unless it grew large (one burst to a slow reader
        // must not pin IOV_MAX iovecs for good) or enough are kept already.
        let conn = match self.ops.finish(id) {
            Some(Op::Send { conn, mut buf }) => {
                buf.recycle();
                if buf.worth_keeping() && self.spare_send_bufs.len() < SPARE_SEND_BUFS {
                    self.spare_send_bufs.push(buf);
                }
                conn
            }
            Some(Op::SendFrame { conn, .. }) => conn,
            _ => return,
        };
        let slot = match self.conns.get_mut(conn.id) {
            Some(Some(slot)) if slot.send == Some(id) => slot,
            _ => return self.closed_conn_op_finished(conn.id, conn.generation),
        };
        slot.send = None;
        slot.sent = Sent(res);
        on_event(Event::Writable { conn: conn.id });
    }

    /// Starts putting `fd` into the table entry of connection key `conn` (or clearing it,
    /// `fd` -1).
    fn update_registered(&mut self, conn: ConnId, fd: RawFd) {
        // Below the table's length, which fits in u32 (`MAX_REGISTERED`).
        let Ok(index) = u32::try_from(conn) else {
            return;
        };
        self.start(Op::FilesUpdate {
            index,
            fd: Box::new(fd),
        });
    }

    /// A table update finished: the entry's next state (see [`Registered`]). A failed set
    /// leaves the entry empty and the connection named by its fd.
    fn on_files_update(&mut self, id: OpId, res: i32) {
        let Some(Op::FilesUpdate { index, fd }) = self.ops.finish(id) else {
            return;
        };
        let conn = index as usize;
        let Some(entry) = self.registered.get_mut(conn) else {
            return;
        };
        let done = res == 1;
        *entry = match (*entry, *fd >= 0) {
            (Registered::Setting, true) if done => Registered::Set,
            (Registered::SettingThenClear, true) if done => Registered::Clearing,
            // The clearing failed, so the entry may still hold the closed socket: left out
            // of use rather than risk naming it (never seen; a failed set is harmless).
            (Registered::Clearing, false) if !done => return,
            _ => Registered::Free,
        };
        if *entry == Registered::Clearing {
            self.update_registered(conn, -1);
        }
    }

    /// How a send on `conn` names its socket: by its table entry once that holds it.
    fn registered_entry(&self, conn: ConnId) -> Option<types::Fixed> {
        match self.registered.get(conn) {
            Some(Registered::Set) => u32::try_from(conn).ok().map(types::Fixed),
            _ => None,
        }
    }
}

impl Reactor for UringReactor {
    fn add_listener(
        &mut self,
        listener: TcpListener,
        wakeup: AcceptWakeup,
    ) -> io::Result<ListenerId> {
        let index = self.listeners.len();
        self.listeners.push(Some(ListenerSlot {
            socket: Arc::new(listener),
            wakeup,
            op: None,
            paused: false,
        }));
        self.arm_listener(index);
        Ok(ListenerId(index))
    }

    fn close_listeners(&mut self) {
        for index in 0..self.listeners.len() {
            if let Some(slot) = self.listeners[index].take()
                && let Some(op) = slot.op
            {
                // The op keeps the socket open until its final completion.
                self.cancel(op);
            }
        }
    }

    fn resume_accepting(&mut self, listener: ListenerId) {
        let Some(Some(slot)) = self.listeners.get_mut(listener.0) else {
            return;
        };
        slot.paused = false;
        if slot.wakeup == AcceptWakeup::All {
            self.ready.push(Ready::Listener(listener.0));
        }
        self.arm_listener(listener.0);
    }

    fn add_conn(&mut self, conn: ConnId, stream: TcpStream) -> io::Result<()> {
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, || None);
        }
        // The shard closes a key before reusing it; were one still open, overwriting its
        // slot would close its socket under its ops.
        self.close(conn);
        let fd = stream.as_raw_fd();
        self.next_generation = next_generation(self.next_generation);
        self.conns[conn] = Some(ConnSlot {
            stream,
            recv: None,
            send: None,
            generation: self.next_generation,
            sent: Sent::NONE,
            paused: false,
            input_ended: false,
        });
        if self.registered.get(conn) == Some(&Registered::Free) {
            self.registered[conn] = Registered::Setting;
            self.update_registered(conn, fd);
        }
        self.arm_recv(conn);
        Ok(())
    }

    fn pause_reading(&mut self, conn: ConnId) {
        let Some(Some(slot)) = self.conns.get_mut(conn) else {
            return;
        };
        if slot.paused {
            return;
        }
        slot.paused = true;
        // The recv in flight is cancelled; what it completes before the cancel lands is
        // held (bounded by what the kernel had already received), the rest stays in the
        // socket so that TCP pushes back on the peer.
        if let Some(op) = slot.recv {
            self.cancel(op);
        }
    }

    fn resume_reading(&mut self, conn: ConnId) {
        let Some(Some(slot)) = self.conns.get_mut(conn) else {
            return;
        };
        if !slot.paused {
            return;
        }
        slot.paused = false;
        if self.held.contains_key(&conn) {
            let generation = slot.generation;
            self.ready.push(Ready::Conn(conn, generation));
        } else {
            self.arm_recv(conn);
        }
    }

    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        if self.disabled {
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        self.flush_backlog()?;
        let busy = !self.ready.is_empty() || !self.backlog.is_empty();
        let wait = if busy { Some(Duration::ZERO) } else { timeout };
        let entered = match wait {
            None => self.ring.submitter().submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match entered {
            Ok(_) => {}
            // ETIME: the deadline passed; EINTR: a signal; EBUSY: the completion queue
            // overflowed and must be reaped first (the SQEs stay queued).
            Err(e) if is_retry(&e) || e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) => return Err(e),
        }
        self.counters.wakeups += 1;
        for ready in std::mem::take(&mut self.ready) {
            match ready {
                Ready::Listener(index) => self.accept_direct(index, false, on_event),
                Ready::Conn(conn, generation) => self.release_held(conn, generation, on_event),
            }
        }
        self.reap(on_event);
        Ok(())
    }

    fn send(&mut self, conn: ConnId, outbox: &mut Outbox) -> io::Result<SendOutcome> {
        let Some(Some(slot)) = self.conns.get_mut(conn) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if slot.send.is_some() {
            return Ok(SendOutcome::default()); // its completion reports Writable
        }
        let mut outcome = SendOutcome::default();
        match slot.sent.take() {
            Some(Ok(sent)) => {
                let (bytes, frames) = outbox.complete_in_flight(sent);
                outcome = SendOutcome { bytes, frames };
            }
            Some(Err(error)) => {
                outbox.complete_in_flight(0);
                return Err(error);
            }
            // Nothing was in flight for this connection (a fresh outbox, or one whose
            // in-flight mark belongs to nobody): all of it is unsent.
            None => {
                outbox.complete_in_flight(0);
            }
        }
        let conn_ref = ConnRef {
            id: conn,
            generation: slot.generation,
            fd: slot.stream.as_raw_fd(),
        };
        let lone = {
            let mut pending = outbox.pending();
            match (pending.next(), pending.next()) {
                (None, _) => return Ok(outcome),
                // A frame that a short send cut goes as the rest of a message (rare).
                (Some((frame, 0)), None) if !frame.is_empty() => Some(frame.clone()),
                _ => None,
            }
        };
        let op = match lone {
            Some(frame) => {
                outbox.set_in_flight(frame.len());
                Op::SendFrame {
                    conn: conn_ref,
                    frame,
                }
            }
            None => {
                let mut buf = self
                    .spare_send_bufs
                    .pop()
                    .unwrap_or_else(|| Box::new(SendBuf::empty()));
                let len = buf.fill(outbox.pending().take(IOV_MAX));
                if len == 0 {
                    self.spare_send_bufs.push(buf);
                    return Ok(outcome);
                }
                outbox.set_in_flight(len);
                Op::Send {
                    conn: conn_ref,
                    buf,
                }
            }
        };
        self.counters.sendmsg += 1;
        let registered = self.registered_entry(conn);
        if registered.is_some() {
            self.counters.registered_sends += 1;
        }
        let (id, sqe) = self.ops.start_on(op, registered);
        self.push(sqe);
        if let Some(Some(slot)) = self.conns.get_mut(conn) {
            slot.send = Some(id);
        }
        Ok(outcome)
    }

    fn shutdown_write(&mut self, conn: ConnId) {
        if let Some(Some(slot)) = self.conns.get(conn) {
            // A direct shutdown(2): the shard calls this only once the outbox is empty, so
            // no send is in flight that the FIN could overtake. Fails only if the peer
            // already reset the connection; closing follows anyway.
            let _ = slot.stream.shutdown(std::net::Shutdown::Write);
        }
    }

    fn close(&mut self, conn: ConnId) {
        let Some(slot) = self.conns.get_mut(conn).and_then(Option::take) else {
            return;
        };
        self.held.remove(&conn);
        // The table's reference would keep the socket open: the entry is cleared (ops in
        // flight that named it keep their own reference until they finish).
        if let Some(entry) = self.registered.get_mut(conn) {
            match *entry {
                Registered::Set => {
                    *entry = Registered::Clearing;
                    self.update_registered(conn, -1);
                }
                Registered::Setting => *entry = Registered::SettingThenClear,
                _ => {}
            }
        }
        // Cancel, then wait: the ops keep their buffers, and `closed` the socket, until
        // their final completions, which find no connection naming their op and report
        // nothing. A recv kept in the slot is counted like a slab op: its completions carry
        // (key, generation), which find the socket here. Without ops in flight, the socket
        // is closed here.
        let mut ops = 0;
        for op in [slot.recv, slot.send].into_iter().flatten() {
            self.cancel(op);
            ops += 1;
        }
        if ops > 0 {
            let stream = slot.stream;
            let previous = self
                .closed
                .insert((conn, slot.generation), Closed { stream, ops });
            // Unique (see `Closed`); were it not, dropping the previous socket here would
            // close it under its ops, so it is leaked instead.
            debug_assert!(previous.is_none());
            std::mem::forget(previous);
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn reserve_conns(&mut self, conns: usize) {
        self.conns.reserve(conns);
        // Each connection keeps a recv in flight, in the slab only without a buffer ring;
        // sends and the rest come and go.
        let recvs = if self.bufs.is_some() { 0 } else { conns };
        self.ops.reserve(recvs + conns / 2);
        if self.features.contains(Feature::RegisteredFiles) && self.registered.is_empty() {
            let entries = conns.min(MAX_REGISTERED);
            // A sparse table: every entry starts empty. It fails over RLIMIT_NOFILE (entries
            // count against it) or on a thread that may not use the ring; sends then name
            // their sockets by fd, as without the feature.
            let registered = u32::try_from(entries)
                .ok()
                .filter(|n| *n > 0)
                .is_some_and(|n| self.ring.submitter().register_files_sparse(n).is_ok());
            if registered {
                self.registered = vec![Registered::Free; entries];
            } else {
                self.features = self.features.without(Feature::RegisteredFiles);
            }
        }
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}

impl Drop for UringReactor {
    /// Cancels every op and waits for the final completions, so that the kernel is done with
    /// every buffer before it is freed. If the ring cannot be driven (another thread drops
    /// a SINGLE_ISSUER ring, or the kernel does not finish within DRAIN_ROUNDS x DRAIN_WAIT)
    /// the ops, the sockets they name and the buffer ring are leaked on purpose: a leak is
    /// bounded, a use-after-free by the kernel (or an op on a reused fd number) is not.
    fn drop(&mut self) {
        self.closing = true;
        self.listeners.clear();
        // Through `close`, so that sockets with ops in flight wait for them in `closed`.
        for conn in 0..self.conns.len() {
            self.close(conn);
        }
        self.ready.clear();
        // Recvs kept in connections' slots are not in the slab: `close` cancelled them and
        // counts them in `closed` until their final completions.
        if (self.ops.is_empty() && self.closed.is_empty()) || self.disabled {
            // Never enabled: no SQE ever reached the kernel.
            return;
        }
        for id in self.ops.ids() {
            self.cancel(id);
        }
        let ts = types::Timespec::from(DRAIN_WAIT);
        for _ in 0..DRAIN_ROUNDS {
            if self.flush_backlog().is_err() {
                break;
            }
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if is_retry(&e) || e.raw_os_error() == Some(libc::ETIME) => {}
                Err(_) => break,
            }
            self.reap(&mut |_| {});
            if self.ops.is_empty() && self.closed.is_empty() {
                return;
            }
        }
        std::mem::forget(std::mem::take(&mut self.ops));
        std::mem::forget(std::mem::take(&mut self.closed));
        if let Some(bufs) = self.bufs.take() {
            std::mem::forget(bufs);
        }
    }
}

/// io_uring_enter errors after which the loop just goes on.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}

#[cfg(test)]
mod tests;
