//! The operations in flight, each owning everything the kernel may touch until its last
//! completion: the memory its SQE points into, and the socket (a listener's or the waker's
//! through a shared handle; a connection's fd number is the exception: the reactor owns
//! that socket and closes it only after the last op on it finished, see `ConnRef`).
//!
//! Owns: the op slab and the user_data encoding, which names either a slab op ([`OpId`]'s
//! slot key and sequence number) or a connection's recv that lives in the connection's own
//! slot instead ([`OpId::conn_recv`]: key and generation, tagged by the top bit). The slot
//! form is only for recvs that take their buffer from the provided-buffer ring: their SQE
//! points at no memory of ours, only at the socket's fd, which the reactor keeps open until
//! their final completion. An op leaves the slab only through [`Ops::finish`], which the
//! reactor calls for a completion without IORING_CQE_F_MORE, or never (the reactor leaks
//! the slab when it cannot drain the ring). So no buffer can be freed while the kernel may
//! still use it: that is structural, not a convention.
//! Must never: build an SQE from memory it does not own; give a slab op and a connection's
//! recv, or either and [`CANCEL_USER_DATA`], the same user_data.

use std::net::TcpListener;
use std::num::{NonZeroU32, NonZeroU64};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types};
use slab::Slab;

use super::super::{ConnId, Waker};

/// A connection as an op sees it: the key, the connection's generation and the socket's fd
/// number. The key may be reused at once after `close`; the reactor tells the connections
/// under one key apart by the op itself (a connection's slot names its ops in flight, and no
/// two ops in the slab share an [`OpId`]). The generation finds the socket of a closed
/// connection in the reactor's table of closing sockets, which is keyed by (key,
/// generation) because a recv kept in the connection's slot has no fd in its user_data.
///
/// The fd is a number, not a handle: the reactor owns the socket, in the connection's slot
/// and after `close` in its table of closing sockets, until the last op that names the fd
/// has finished, so the number cannot be closed and given to another socket while an op
/// may still use it. A shared handle per connection (`Arc<TcpStream>`) cost a 32 B
/// allocation per connection for that.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnRef {
    pub id: ConnId,
    pub generation: u32,
    pub fd: RawFd,
}

/// How a recv gets its buffer.
#[derive(Debug)]
pub(super) enum RecvMode {
    /// Multishot, buffers from the provided-buffer ring.
    Multishot { group: u16 },
    /// One completion, a buffer from the provided-buffer ring.
    Select { group: u16, len: u32 },
    /// One completion, into this op's own buffer (no buffer ring).
    Owned(Box<[u8]>),
}

/// Frames this short are copied into the send's own buffer instead of referenced: a
/// reference and an iovec cost 32 bytes and two atomic operations on a cache line that every
/// receiver's loop touches, more than a short frame itself.
pub(super) const COPY_FRAME_MAX: usize = 256;
/// Bytes one send copies at most (past them, frames are referenced): a send to a reader
/// that stopped reading waits in the kernel with what it holds, so what it holds stays
/// about what IOV_MAX references would (32 KiB).
pub(super) const COPY_BYTES_MAX: usize = 16 * 1024;
/// A send takes no further frame once it carries this many bytes: a socket's send buffer
/// holds a few MiB at most, so a longer send would only come back short, and what is in
/// flight must stay within `outbox::MAX_FRAME` (one frame of at most that, past this).
const SEND_BYTES_MAX: usize = 16 << 20;
/// A finished send's buffer is kept for reuse only if it has room for this many iovecs and
/// copied bytes or fewer.
const SPARE_IOVECS: usize = 16;
const SPARE_COPIED: usize = 1024;

/// A sendmsg's iovecs and header, which point into `frames` and `copied` (and each other).
///
/// Short frames are copied into `copied`, consecutive ones into one iovec; longer ones are
/// referenced. In a fan-out of 1-byte messages to a room of 1,000 that did not read, a send
/// per member held 512 references and iovecs (16 KiB) on top of the outbox's, and the loop's
/// memory peaked at 3 times epoll's (results/hostile/fanout).
///
/// Reused: the reactor keeps the buffers of finished sends and refills them
/// ([`SendBuf::fill`]), so a send allocates nothing once the loop has warmed up. Three
/// allocations per send (frames, iovecs, header) were about 5 % of a loop's CPU at 98,000
/// deliveries/s (perf, results/intel-xeon-processor-2cpu/uring-sends).
pub(super) struct SendBuf {
    /// Keeps the referenced frames alive whatever the shard does to its outbox.
    frames: Vec<Arc<[u8]>>,
    /// The copied frames' bytes, in order.
    copied: Vec<u8>,
    iov: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
}

impl std::fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBuf")
            .field("slices", &self.iov.len())
            .finish()
    }
}

// SAFETY: the raw pointers in `iov` and `msg` point only into `frames`, `copied` and `iov`,
// which this value owns (the frames are immutable, reference-counted with atomics; the
// vectors' heap buffers do not move with the value); moving the owner to another thread
// moves all of it.
unsafe impl Send for SendBuf {}

impl SendBuf {
    /// A buffer holding nothing.
    pub(super) fn empty() -> SendBuf {
        SendBuf {
            frames: Vec::new(),
            copied: Vec::new(),
            iov: Vec::new(),
            msg: Box::new(empty_msghdr()),
        }
    }

    /// Makes this the message over `slices` (a frame and the offset its unsent bytes start
    /// at) and returns its length in bytes. Empty slices are skipped. Must not be called
    /// while an op that was started with this buffer is in flight (the reactor refills only
    /// buffers whose op has finished).
    pub(super) fn fill<'a>(
        &mut self,
        slices: impl Iterator<Item = (&'a Arc<[u8]>, usize)> + Clone,
    ) -> usize {
        self.recycle();
        // The copies' exact size first: a doubling buffer would hold up to twice the bytes
        // for as long as the send waits in the kernel.
        let mut copy = 0;
        for (_, bytes) in unsent(slices.clone()) {
            if copied(bytes, copy) {
                copy += bytes.len();
            }
        }
        self.copied.reserve_exact(copy);
        let mut len = 0;
        for (frame, bytes) in unsent(slices) {
            len += bytes.len();
            if copied(bytes, self.copied.len()) {
                // A copied run's iovec gets its address below, once `copied` stops growing;
                // until then a null base marks it (a frame's bytes are never at null).
                match self.iov.last_mut() {
                    Some(run) if run.iov_base.is_null() => run.iov_len += bytes.len(),
                    _ => self.iov.push(libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: bytes.len(),
                    }),
                }
                self.copied.extend_from_slice(bytes);
                continue;
            }
            self.iov.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
            self.frames.push(frame.clone());
        }
        // The copied runs lie in `copied` in order, one after the other.
        let mut at = 0;
        for run in self.iov.iter_mut().filter(|iov| iov.iov_base.is_null()) {
            run.iov_base = self.copied[at..].as_ptr() as *mut libc::c_void;
            at += run.iov_len;
        }
        // Set after the last push: pushing may have moved the iovecs.
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
        len
    }

    /// Lets go of the frames (after the op's final completion) and keeps the allocations.
    pub(super) fn recycle(&mut self) {
        self.frames.clear();
        self.copied.clear();
        self.iov.clear();
        self.msg.msg_iov = std::ptr::null_mut();
        self.msg.msg_iovlen = 0;
    }

    /// Whether this buffer is small enough to keep for later sends: a burst's large one is
    /// freed rather than held.
    pub(super) fn worth_keeping(&self) -> bool {
        self.iov.capacity() <= SPARE_IOVECS && self.copied.capacity() <= SPARE_COPIED
    }
}

/// The non-empty unsent bytes of each frame, with the frame, until `SEND_BYTES_MAX` is reached.
fn unsent<'a>(
    slices: impl Iterator<Item = (&'a Arc<[u8]>, usize)>,
) -> impl Iterator<Item = (&'a Arc<[u8]>, &'a [u8])> {
    let mut before = 0;
    slices
        .filter_map(|(frame, offset)| {
            let bytes = frame.get(offset..).filter(|b| !b.is_empty())?;
            Some((frame, bytes))
        })
        .take_while(move |(_, bytes)| {
            let full = before >= SEND_BYTES_MAX;
            before += bytes.len();
            !full
        })
}

/// Whether a send that has copied `so_far` bytes copies `bytes` too.
fn copied(bytes: &[u8], so_far: usize) -> bool {
    bytes.len() <= COPY_FRAME_MAX && so_far + bytes.len() <= COPY_BYTES_MAX
}

fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    unsafe { std::mem::zeroed() }
}

/// One operation in flight.
#[derive(Debug)]
pub(super) enum Op {
    /// An accept on a listener (multishot, or re-armed after each completion).
    Accept {
        listener: usize,
        socket: Arc<TcpListener>,
        multishot: bool,
    },
    /// A multishot poll on a listener shared non-exclusively (`AcceptWakeup::All`).
    ListenerPoll {
        listener: usize,
        socket: Arc<TcpListener>,
    },
    Recv {
        conn: ConnRef,
        mode: RecvMode,
    },
    /// The buffer is boxed: inline it made every op, the recv that each idle connection
    /// keeps in flight included, as big as a send (a 104 B `Op`, where a recv needs 40; the
    /// reactor reuses the boxes, so a send still allocates nothing once warm).
    Send {
        conn: ConnRef,
        buf: Box<SendBuf>,
    },
    /// A send of one whole frame, most sends of a fan-out and every heartbeat ping: the op
    /// holds a reference to the frame, so it needs no `SendBuf` (no iovec, no header, no
    /// copy), and the kernel copies no iovec array.
    SendFrame {
        conn: ConnRef,
        frame: Arc<[u8]>,
    },
    /// An 8-byte read of the waker's eventfd.
    WakerRead {
        waker: Waker,
        value: Box<u64>,
    },
    /// A multishot poll of the waker's eventfd, for kernels whose read of a non-blocking
    /// eventfd fails with EAGAIN instead of waiting; each completion drains it.
    WakerPoll {
        waker: Waker,
    },
    /// Puts socket `fd` into entry `index` of the ring's table of registered files, or
    /// clears the entry (`fd` -1). The kernel reads the fd from the op's own memory.
    FilesUpdate {
        index: u32,
        fd: Box<RawFd>,
    },
}

impl Op {
    /// The SQE that starts this op. Its pointers point into memory `self` owns. A send names
    /// its socket by `registered` (its entry in the ring's table of registered files) when
    /// given, else by the fd number.
    fn entry(&mut self, registered: Option<types::Fixed>) -> squeue::Entry {
        match self {
            Op::Accept {
                socket, multishot, ..
            } => {
                let fd = types::Fd(socket.as_raw_fd());
                let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
                if *multishot {
                    opcode::AcceptMulti::new(fd).flags(flags).build()
                } else {
                    // The peer address is read with getpeername afterwards, as for
                    // multishot accepts, which cannot return it.
                    opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(flags)
                        .build()
                }
            }
            Op::ListenerPoll { socket, .. } => {
                opcode::PollAdd::new(types::Fd(socket.as_raw_fd()), libc::POLLIN as u32)
                    .multi(true)
                    .build()
            }
            Op::Recv { conn, mode } => recv_entry(conn.fd, mode),
            Op::Send { conn, buf } => {
                let msg = &*buf.msg;
                match registered {
                    Some(index) => opcode::SendMsg::new(index, msg),
                    None => opcode::SendMsg::new(types::Fd(conn.fd), msg),
                }
                // MSG_NOSIGNAL: a send to a reset connection fails with EPIPE instead of
                // raising SIGPIPE.
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
            }
            Op::SendFrame { conn, frame } => {
                // The length fits: a frame is at most `outbox::MAX_FRAME` (u32) bytes.
                let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                match registered {
                    Some(index) => opcode::Send::new(index, frame.as_ptr(), len),
                    None => opcode::Send::new(types::Fd(conn.fd), frame.as_ptr(), len),
                }
                .flags(libc::MSG_NOSIGNAL)
                .build()
            }
            Op::FilesUpdate { index, fd } => {
                // The index fits: the table has at most `MAX_REGISTERED` entries.
                let offset = i32::try_from(*index).unwrap_or(i32::MAX);
                opcode::FilesUpdate::new(&raw const **fd, 1)
                    .offset(offset)
                    .build()
            }
            Op::WakerPoll { waker } => {
                opcode::PollAdd::new(types::Fd(waker.raw_fd()), libc::POLLIN as u32)
                    .multi(true)
                    .build()
            }
            Op::WakerRead { waker, value } => {
                opcode::Read::new(types::Fd(waker.raw_fd()), (&raw mut **value).cast(), 8).build()
            }
        }
    }
}

/// The SQE of a recv into `mode`'s buffer from socket `fd`. For `Owned` it points into the
/// buffer, which the caller must own until the op's final completion; the others point at
/// no memory (the kernel picks a buffer of the provided-buffer ring).
pub(super) fn recv_entry(fd: RawFd, mode: &mut RecvMode) -> squeue::Entry {
    let fd = types::Fd(fd);
    match mode {
        RecvMode::Multishot { group } => opcode::RecvMulti::new(fd, *group).build(),
        RecvMode::Select { group, len } => opcode::Recv::new(fd, std::ptr::null_mut(), *len)
            .buf_group(*group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT),
        RecvMode::Owned(buf) => {
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            opcode::Recv::new(fd, buf.as_mut_ptr(), len).build()
        }
    }
}

/// The user_data of an op, in one of two forms told apart by the top bit:
///
/// - a slab op: slot key (low 32 bits) | the op's sequence number (bits 32..63, top bit
///   clear). A key is reused once its op finished; the sequence number keeps a late cancel
///   from hitting the op that reused the key. Sequence numbers run from 1 to 2^31 - 1:
///   never 0, so an id is never 0 and `Option<OpId>` fits in 8 bytes (two per connection
///   slot), and never with the top bit, so no slab id is a connection's recv or
///   [`CANCEL_USER_DATA`].
/// - a connection's recv kept in its slot ([`OpId::conn_recv`]): [`CONN_RECV_TAG`] |
///   generation (bits 32..63, below 2^31) | connection key (low 32 bits, below
///   `u32::MAX`, so that the all-ones [`CANCEL_USER_DATA`] is never one).
///
/// A connection's recv has the same id each time it is re-armed (the previous one had its
/// final completion first). So a cancel that lands late, after the recv it was meant for
/// finished, can hit only a later recv of the same connection (a connection under a reused
/// key has another generation): that recv then ends with ECANCELED and is re-armed, as
/// after a pause, which costs one SQE and loses no input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OpId(NonZeroU64);

/// Multiplying by this shifts a sequence number into the high 32 bits.
const SEQ_SHIFT: NonZeroU64 = NonZeroU64::new(1 << 32).unwrap();
/// The top bit: set in the ids of connections' recvs, clear in slab ids.
const CONN_RECV_TAG: u64 = 1 << 63;
/// Connection generations run from 0 to this - 1 (31 bits, below the tag).
pub(super) const GENERATIONS: u32 = 1 << 31;

/// The generation after `generation`, wrapping at [`GENERATIONS`].
pub(super) fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) % GENERATIONS
}

impl OpId {
    fn new(key: usize, seq: NonZeroU32) -> OpId {
        // Cannot saturate: a u32 times 2^32 fits in a u64.
        OpId(NonZeroU64::from(seq).saturating_mul(SEQ_SHIFT) | key as u64)
    }

    /// The id of connection `key`'s recv in generation `generation` (below
    /// [`GENERATIONS`]), kept in the connection's slot rather than the slab; `None` if the
    /// key does not fit (a key of `u32::MAX` or more: the reactor then uses the slab).
    pub(super) fn conn_recv(key: usize, generation: u32) -> Option<OpId> {
        let key = u32::try_from(key).ok().filter(|k| *k < u32::MAX)?;
        debug_assert!(generation < GENERATIONS);
        let generation = u64::from(generation % GENERATIONS);
        NonZeroU64::new(CONN_RECV_TAG | generation << 32 | u64::from(key)).map(OpId)
    }

    /// The connection key and generation, if this is a connection's recv kept in its slot.
    pub(super) fn as_conn_recv(self) -> Option<(usize, u32)> {
        let data = self.0.get();
        if data & CONN_RECV_TAG == 0 {
            return None;
        }
        let generation = ((data & !CONN_RECV_TAG) >> 32) as u32;
        Some(((data & u64::from(u32::MAX)) as usize, generation))
    }

    /// The op a completion's user_data names; `None` for 0, which no op has.
    pub(super) fn from_user_data(user_data: u64) -> Option<OpId> {
        NonZeroU64::new(user_data).map(OpId)
    }

    pub(super) fn user_data(self) -> u64 {
        self.0.get()
    }

    fn key(self) -> usize {
        (self.0.get() & u64::from(u32::MAX)) as usize
    }
}

/// user_data of cancel requests: owns nothing, its completion is ignored.
pub(super) const CANCEL_USER_DATA: u64 = u64::MAX;

/// The sequence number after `seq`, wrapping from 2^31 - 1 to 1 (see [`OpId`]).
fn next_seq(seq: NonZeroU32) -> NonZeroU32 {
    seq.checked_add(1)
        .filter(|s| s.get() < 1 << 31)
        .unwrap_or(NonZeroU32::MIN)
}

struct Slot {
    seq: NonZeroU32,
    op: Op,
}

/// The ops in flight.
pub(super) struct Ops {
    slots: Slab<Slot>,
    next_seq: NonZeroU32,
}

impl Default for Ops {
    fn default() -> Ops {
        Ops {
            slots: Slab::new(),
            next_seq: NonZeroU32::MIN,
        }
    }
}

impl Ops {
    /// Room for `n` more ops without growing.
    pub(super) fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
    }

    /// Stores `op` and returns its id with the SQE that starts it. The SQE is valid for as
    /// long as the op stays in the slab.
    pub(super) fn start(&mut self, op: Op) -> (OpId, squeue::Entry) {
        self.start_on(op, None)
    }

    /// Like `start`, for a send that names its socket by its entry in the ring's table of
    /// registered files, if `registered` is given (see [`Op::entry`]).
    pub(super) fn start_on(
        &mut self,
        op: Op,
        registered: Option<types::Fixed>,
    ) -> (OpId, squeue::Entry) {
        let seq = self.next_seq;
        self.next_seq = next_seq(seq);
        let entry = self.slots.vacant_entry();
        let id = OpId::new(entry.key(), seq);
        let slot = entry.insert(Slot { seq, op });
        let sqe = slot.op.entry(registered).user_data(id.user_data());
        (id, sqe)
    }

    /// The op a completion belongs to, if it is still in flight. A connection's recv kept
    /// in its slot finds nothing: its id has the tag bit, which no slab id has.
    pub(super) fn get_mut(&mut self, id: OpId) -> Option<&mut Op> {
        self.slots
            .get_mut(id.key())
            .filter(|s| OpId::new(id.key(), s.seq) == id)
            .map(|s| &mut s.op)
    }

    /// Removes the op after its final completion (no IORING_CQE_F_MORE): only then may what
    /// it owns be freed or reused.
    pub(super) fn finish(&mut self, id: OpId) -> Option<Op> {
        self.get_mut(id)?;
        Some(self.slots.remove(id.key()).op)
    }

    pub(super) fn ids(&self) -> Vec<OpId> {
        self.slots
            .iter()
            .map(|(key, s)| OpId::new(key, s.seq))
            .collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a filled buffer's message covers, in order.
    fn message(buf: &SendBuf) -> Vec<u8> {
        assert_eq!(buf.msg.msg_iov, buf.iov.as_ptr().cast_mut());
        assert_eq!(buf.msg.msg_iovlen, buf.iov.len());
        buf.iov
            .iter()
            // SAFETY: test only; every iovec points into memory `buf` owns, as `fill` says.
            .flat_map(|iov| unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            })
            .copied()
            .collect()
    }

    #[test]
    fn a_send_stops_taking_frames_past_its_byte_bound() {
        let big: Arc<[u8]> = vec![b'B'; SEND_BYTES_MAX / 2 + 1].into();
        let frames = [big.clone(), big.clone(), big.clone()];
        let mut buf = SendBuf::empty();
        let len = buf.fill(frames.iter().map(|f| (f, 0)));
        // The second frame starts below the bound and is taken whole; the third is not.
        assert_eq!(len, 2 * big.len());
        assert_eq!(buf.iov.len(), 2);
    }

    #[test]
    fn short_frames_are_copied_into_runs_and_long_ones_referenced() {
        let long: Arc<[u8]> = vec![b'L'; COPY_FRAME_MAX + 1].into();
        let frames: Vec<Arc<[u8]>> = vec![
            b"ab".as_slice().into(),
            b"cd".as_slice().into(),
            long.clone(),
            b"ef".as_slice().into(),
            b"".as_slice().into(),
            b"gh".as_slice().into(),
        ];
        let mut buf = SendBuf::empty();
        // The first frame was half sent already.
        let pending = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (f, usize::from(i == 0)));
        let len = buf.fill(pending);
        let mut want = b"bcd".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(b"efgh");
        assert_eq!(len, want.len());
        assert_eq!(message(&buf), want);
        assert_eq!(buf.iov.len(), 3, "two copied runs around the long frame");
        assert_eq!(buf.frames.len(), 1, "only the long frame is referenced");
        assert_eq!(
            buf.copied.capacity(),
            7,
            "the copies' buffer is sized exactly"
        );
        assert_eq!(Arc::strong_count(&long), 3);
        buf.recycle();
        assert_eq!(
            Arc::strong_count(&long),
            2,
            "recycling lets go of the frame"
        );
        assert!(buf.worth_keeping());
    }

    #[test]
    fn a_send_copies_at_most_its_copy_budget() {
        let frame: Arc<[u8]> = vec![b'x'; COPY_FRAME_MAX].into();
        let count = COPY_BYTES_MAX / COPY_FRAME_MAX + 3;
        let mut buf = SendBuf::empty();
        let len = buf.fill(std::iter::repeat_n((&frame, 0), count));
        assert_eq!(len, count * COPY_FRAME_MAX);
        assert_eq!(message(&buf).len(), len);
        assert_eq!(buf.copied.len(), COPY_BYTES_MAX);
        assert_eq!(
            buf.frames.len(),
            3,
            "past the budget, frames are referenced"
        );
        assert!(!buf.worth_keeping(), "a burst's large buffer is not kept");
    }

    #[test]
    fn op_ids_are_never_zero_nor_the_cancel_user_data() {
        let last = NonZeroU32::new((1 << 31) - 1).unwrap();
        assert_eq!(
            next_seq(last),
            NonZeroU32::MIN,
            "wraps to 1, never reaching the tag bit"
        );
        assert_eq!(next_seq(NonZeroU32::MIN).get(), 2);
        let key = u32::MAX as usize;
        assert_ne!(OpId::new(key, last).user_data(), CANCEL_USER_DATA);
        for (key, seq) in [(0, NonZeroU32::MIN), (key, last), (7, NonZeroU32::MIN)] {
            let id = OpId::new(key, seq);
            assert_ne!(id.user_data(), 0);
            assert_eq!(id.key(), key);
            assert_eq!(OpId::from_user_data(id.user_data()), Some(id));
        }
        assert_eq!(OpId::from_user_data(0), None);
        assert_eq!(std::mem::size_of::<Option<OpId>>(), 8);
    }

    #[test]
    fn a_connections_recv_id_is_never_a_slab_id_nor_the_cancel_user_data() {
        let top = GENERATIONS - 1;
        assert_eq!(
            next_generation(top),
            0,
            "generations wrap below the tag bit"
        );
        assert_eq!(next_generation(0), 1);
        let last_key = u32::MAX as usize - 1;
        for (key, generation) in [(0, 0), (7, 1), (last_key, top), (0, top), (last_key, 0)] {
            let id = OpId::conn_recv(key, generation).unwrap();
            assert_eq!(id.as_conn_recv(), Some((key, generation)));
            assert_ne!(id.user_data(), CANCEL_USER_DATA);
            assert_eq!(OpId::from_user_data(id.user_data()), Some(id));
        }
        assert_ne!(OpId::conn_recv(3, 4), OpId::conn_recv(3, 5));
        assert_ne!(OpId::conn_recv(3, 4), OpId::conn_recv(4, 4));
        assert_eq!(OpId::conn_recv(u32::MAX as usize, 0), None);
        assert_eq!(OpId::conn_recv(u32::MAX as usize + 1, 0), None);
        // Slab ids, whatever their key and sequence number, are never connections' recvs.
        let seq = NonZeroU32::new((1 << 31) - 1).unwrap();
        for key in [0, 7, u32::MAX as usize] {
            assert_eq!(OpId::new(key, seq).as_conn_recv(), None);
            assert_eq!(OpId::new(key, NonZeroU32::MIN).as_conn_recv(), None);
        }
        // And the slab finds nothing under a connection's recv id, even at its key.
        let mut ops = Ops::default();
        let (slab_id, _) = ops.start(Op::WakerPoll {
            waker: Waker::new().unwrap(),
        });
        let recv = OpId::conn_recv(slab_id.key(), 1).unwrap();
        assert!(ops.get_mut(recv).is_none());
        assert!(ops.finish(recv).is_none());
        assert!(ops.finish(slab_id).is_some());
    }

    #[test]
    fn a_finished_key_is_reused_under_a_new_id() {
        let mut ops = Ops::default();
        let op = || Op::WakerPoll {
            waker: Waker::new().unwrap(),
        };
        let (first, _) = ops.start(op());
        assert!(ops.finish(first).is_some());
        let (second, _) = ops.start(op());
        assert_eq!(first.key(), second.key());
        assert_ne!(first, second);
        assert!(
            ops.get_mut(first).is_none(),
            "a late completion finds nothing"
        );
        assert!(ops.finish(first).is_none());
        assert!(ops.finish(second).is_some());
    }
}
