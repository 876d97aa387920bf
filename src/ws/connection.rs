//! The server side of one WebSocket connection as a pure state machine.
//!
//! ```text
//!  Handshaking --head--> AwaitingDecision --accept()--> Open --close()--> Closing
//!       |                      |  respond()/reject()      |  peer Close,       | peer Close,
//!       |                      v                          |  protocol error    | timeout
//!       +---- timeout -----> Closed <---------------------+--------------------+
//! ```
//!
//! Bytes and time go in (`handle_input`, `handle_eof`, `handle_timeout`); events, output
//! frames and a deadline come out (`poll_event`, `poll_output`, `poll_timeout`).
//!
//! Events and output come out in the order they were produced: `poll_output` only returns
//! frames that precede the next event, and `poll_event` only returns an event once the output
//! before it was taken. So after every input, alternate: take all output, then one event
//! (answering a `Request` with `accept`, `respond` or `reject`, and queueing any replies the
//! event causes), and repeat until both are empty; then re-read `poll_timeout`. A reply to a
//! message thus goes out after the output that preceded the message (the 101) and before the
//! output that followed it (our Close). `accepts_messages` says whether application frames
//! may still be queued. When `finish()` returns `Some`, the session is over and the transport
//! should be shut down as it says. No syscall, no clock, no panic on any input.
//!
//! What a peer can make this connection do is bounded here, where the bytes are parsed: a
//! read holding more than `CONTROL_FRAMES_PER_INPUT` control frames, or compressed input that
//! inflates past its credit (`INFLATE_RATIO`), fails the connection with 1008 (`flooded`).
//! `close` drops the messages parsed but not yet taken, so a connection closed for what it did
//! goes on doing nothing. An owner that hands messages to another thread can ask for one
//! message at a time (`hold_after_message`, `resume_input`): the input behind it waits
//! unparsed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::close::{CloseCode, parse_close_payload};
use super::deflate::{Agreed, ExtensionOffer, InflateError, Inflater, negotiate};
use super::error::{HandshakeError, ProtocolError};
use super::frame::{
    FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, Opcode, SharedFrame, server_frame,
};
use super::handshake::{
    MAX_REQUEST_HEAD, Request, error_response, find_head_end, parse_request_with_extensions,
    switching_protocols,
};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Control frames (ping, pong, close) that one `handle_input` call, one read of the socket,
/// may carry. A browser sends none and a heartbeat client one per interval; a read holding
/// more is a flood, whose pongs would cost us as much memory as it costs the peer bandwidth.
/// Over it the connection fails with 1008 (`ProtocolError::ControlFlood`).
pub const CONTROL_FRAMES_PER_INPUT: u32 = 32;

/// permessage-deflate: bytes a connection may inflate per compressed payload byte it sends,
/// beyond a burst of one `max_message`. Chat text inflates 1.5-4x, repetitive text a few
/// dozen times; a bomb inflates about 1,000x, and every member who did not agree to deflate
/// is sent the inflated message. Over budget the connection fails with 1008
/// (`ProtocolError::InflateFlood`).
pub const INFLATE_RATIO: u64 = 64;

/// The largest `Limits::max_message` a connection keeps (it stores the limit in 4 bytes):
/// 1 GiB, so that a frame of a whole message plus its header and a chat prefix still fits
/// the 4-byte offsets of an outbox. The server's configuration rejects more.
pub const MAX_MESSAGE_LIMIT: usize = 1 << 30;

/// `max_message` as a connection keeps it: at most `MAX_MESSAGE_LIMIT`.
fn clamp_max_message(max_message: usize) -> u32 {
    u32::try_from(max_message.min(MAX_MESSAGE_LIMIT)).unwrap_or(u32::MAX)
}

/// Per-connection limits, from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (sum of its fragments' payloads); larger closes with 1009.
    pub max_message: usize,
    /// Time from accept to a complete request head.
    pub handshake_timeout: Duration,
    /// Time we wait for the peer's Close after sending ours.
    pub close_timeout: Duration,
}

/// The kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

/// A complete, validated message (text is valid UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub data: Vec<u8>,
}

/// What the application must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A valid request head arrived: answer with `accept` (upgrades only), `respond` or
    /// `reject` before feeding more input.
    Request(Request),
    /// The request was invalid; an error response is already queued.
    HandshakeFailed(HandshakeError),
    /// No complete request head within the handshake timeout; the transport should go.
    HandshakeTimedOut,
    Message(Message),
    /// The WebSocket session ended (emitted once, only for sessions that were open).
    /// `by_peer` is false when we initiated it (an error of the peer's, or `close`).
    Closed {
        code: CloseCode,
        by_peer: bool,
    },
}

/// How to end the transport once the session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Send what is queued, then shut down (our FIN first, RFC 6455 7.1.1).
    AfterFlush,
    /// Drop the transport now: the peer stopped responding or is gone.
    Now,
}

#[derive(Debug)]
enum Phase {
    /// The two phases before the upgrade are boxed: what they hold (a head being read, the
    /// request's key and offers) is gone once the connection is open, so an open or idle
    /// connection carries only the small variants' size (64 bytes less per connection).
    Handshaking(Box<HeadReader>),
    AwaitingDecision(Box<Decision>),
    Open,
    Closing {
        deadline: Instant,
    },
    Closed(Finish),
}

#[derive(Debug)]
struct HeadReader {
    head: Vec<u8>,
    /// How far `head` was searched for its end.
    scanned: usize,
    deadline: Instant,
}

#[derive(Debug)]
struct Decision {
    key: Option<String>,
    /// The upgrade's `Sec-WebSocket-Extensions` offers, for `accept_with_deflate`.
    extensions: Vec<ExtensionOffer>,
    /// Input that came after the request head.
    rest: Vec<u8>,
    deadline: Instant,
}

/// Where the frame reader is within the current frame.
#[derive(Debug)]
enum Reader {
    Header {
        buf: [u8; MAX_HEADER_LEN],
        len: usize,
    },
    Payload {
        header: FrameHeader,
        received: u64,
    },
}

impl Reader {
    fn new() -> Reader {
        Reader::Header {
            buf: [0; MAX_HEADER_LEN],
            len: 0,
        }
    }
}

/// Where the reader is in the current frame, and a control frame's payload so far.
#[derive(Debug)]
struct PartialFrame {
    reader: Reader,
    /// Payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
}

impl PartialFrame {
    fn new() -> PartialFrame {
        PartialFrame {
            reader: Reader::new(),
            control: Vec::new(),
        }
    }

    /// Between two frames: nothing to keep.
    fn at_boundary(&self) -> bool {
        matches!(self.reader, Reader::Header { len: 0, .. })
    }
}

#[derive(Debug)]
struct PartialMessage {
    kind: MessageKind,
    /// The message as the application gets it (inflated, for a compressed one).
    data: Vec<u8>,
    utf8: Utf8Validator,
    /// Set for a compressed message (RSV1 on its first frame): a fresh inflate context,
    /// dropped with the message.
    inflate: Option<Box<Inflating>>,
}

/// A compressed message in progress.
#[derive(Debug)]
struct Inflating {
    inflater: Inflater,
    /// Compressed payload bytes announced so far (bounded like a message, with slack for
    /// deflate's stored-block overhead on incompressible data).
    wire_len: u64,
    /// The current chunk, unmasked (at most one read's worth).
    scratch: Vec<u8>,
}

/// One server-side WebSocket connection (see the module docs for the call order).
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    /// The frame the last input ended inside, if it did: kept between reads only then
    /// (boxed, 56 bytes an idle connection does not need); while input is parsed it lives
    /// on the stack (`read_frames`).
    partial: Option<Box<PartialFrame>>,
    /// Boxed: an idle connection has none, and its 56 bytes were an eighth of one.
    message: Option<Box<PartialMessage>>,
    /// Events and output frames in the order they were produced.
    queue: Queue,
    /// Application frames may be queued: the upgrade is done and our Close not yet taken.
    accepts_messages: bool,
    /// From the `Limits` (the handshake timeout is used at once): the two kept, not a copy
    /// of all three, since every connection holds them. 4 bytes: a larger limit is clamped
    /// (`MAX_MESSAGE_LIMIT`).
    max_message: u32,
    /// In milliseconds (4 bytes where a `Duration` takes 16).
    close_timeout_ms: u32,
    /// Since `take_frames_received`, which the owner calls after every input.
    frames_received: u32,
    /// permessage-deflate, when agreed at the upgrade.
    deflate: Option<Agreed>,
    /// Control frames parsed from the current input (see `CONTROL_FRAMES_PER_INPUT`).
    control_frames_in_input: u32,
    /// Bytes this connection may still inflate: starts at `max_message`, grows by
    /// `INFLATE_RATIO` per compressed byte received, never above `max_message` (so 4 bytes).
    inflate_credit: u32,
    /// Set by `hold_after_message`: input stops being parsed after each complete message
    /// until `resume_input`.
    one_message_at_a_time: bool,
    /// Input received while held, unparsed (see `hold_after_message`); boxed, since an
    /// idle connection has none.
    held: Option<Box<Held>>,
    /// A complete data message or control frame arrived since `take_heard`.
    heard: bool,
    /// We failed the connection for going over an input budget (`ProtocolError::is_flood`).
    flooded: bool,
}

/// Input waiting, unparsed, until the message before it has been dealt with.
#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    /// The transport ended after these bytes.
    eof: bool,
}

/// Events and output frames in order, held only while there are some: an idle connection
/// otherwise kept the four slots its handshake needed (400 bytes, most of an idle
/// connection's memory: results/memory/2026-12-06), and the queue's header is 8 bytes here
/// where a `VecDeque` takes 32. The price is two allocations per read that produces
/// something, next to the ones a message costs anyway.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // the extra allocation is the price of the small header
struct Queue(Option<Box<VecDeque<Item>>>);

impl Queue {
    fn front(&self) -> Option<&Item> {
        self.0.as_ref()?.front()
    }

    fn back(&self) -> Option<&Item> {
        self.0.as_ref()?.back()
    }

    fn push_back(&mut self, item: Item) {
        self.0.get_or_insert_default().push_back(item);
    }

    /// Takes the front item; the buffer goes once the queue is drained.
    fn pop_front(&mut self) -> Option<Item> {
        let items = self.0.as_mut()?;
        let item = items.pop_front();
        if items.is_empty() {
            self.0 = None;
        }
        item
    }

    fn retain(&mut self, keep: impl FnMut(&Item) -> bool) {
        if let Some(items) = &mut self.0 {
            items.retain(keep);
            if items.is_empty() {
                self.0 = None;
            }
        }
    }
}

#[derive(Debug)]
enum Item {
    Event(Event),
    /// `last`: our Close frame (or a final HTTP response): nothing may follow it.
    Output {
        frame: SharedFrame,
        last: bool,
    },
}

impl Connection {
    /// A connection whose transport was just accepted at `now`.
    pub fn new(limits: Limits, now: Instant) -> Connection {
        Connection {
            phase: Phase::Handshaking(Box::new(HeadReader {
                head: Vec::new(),
                scanned: 0,
                deadline: now + limits.handshake_timeout,
            })),
            partial: None,
            message: None,
            queue: Queue::default(),
            accepts_messages: false,
            max_message: clamp_max_message(limits.max_message),
            close_timeout_ms: u32::try_from(limits.close_timeout.as_millis()).unwrap_or(u32::MAX),
            frames_received: 0,
            deflate: None,
            control_frames_in_input: 0,
            inflate_credit: clamp_max_message(limits.max_message),
            one_message_at_a_time: false,
            held: None,
            heard: false,
            flooded: false,
        }
    }

    /// From now on, parsing stops after each complete data message and the input behind it
    /// is held, unparsed, until `resume_input`: for an owner that hands each message to
    /// another thread and must not queue more than one per connection (a bomb of small
    /// compressed messages would otherwise be inflated whole from one read).
    pub fn hold_after_message(&mut self) {
        self.one_message_at_a_time = true;
    }

    /// Whether an event is next, once the output before it was taken (`poll_event` would
    /// return one).
    pub fn has_event(&self) -> bool {
        matches!(self.queue.front(), Some(Item::Event(_)))
    }

    /// Whether input is held, unparsed (see `hold_after_message`).
    pub fn has_held_input(&self) -> bool {
        self.held.is_some()
    }

    /// Parses the input held since the last message (see `hold_after_message`), up to the
    /// next message; nothing while that message has not been taken by `poll_event`.
    pub fn resume_input(&mut self) {
        if matches!(self.queue.back(), Some(Item::Event(Event::Message(_)))) {
            return;
        }
        let Some(held) = self.held.take() else {
            return;
        };
        self.control_frames_in_input = 0;
        self.read_frames(&held.bytes);
        match &mut self.held {
            // Held again: the end of input stays behind the bytes before it.
            Some(again) => again.eof |= held.eof,
            None if held.eof => self.handle_eof(),
            None => {}
        }
    }

    /// Feeds bytes received from the transport.
    pub fn handle_input(&mut self, data: &[u8]) {
        if let Some(held) = &mut self.held {
            // Bounded by the owner: it stops reading a connection whose message is out.
            held.bytes.extend_from_slice(data);
            return;
        }
        self.control_frames_in_input = 0;
        match &mut self.phase {
            Phase::Handshaking(reader) => {
                let HeadReader {
                    head,
                    scanned,
                    deadline,
                } = &mut **reader;
                let deadline = *deadline;
                head.extend_from_slice(data);
                match find_head_end(head, *scanned) {
                    // The limit holds however the head arrived, in one read or many.
                    Some(end) if end <= MAX_REQUEST_HEAD => {
                        let rest = head.split_off(end);
                        let head = std::mem::take(head);
                        self.on_request_head(&head, rest, deadline);
                    }
                    Some(_) => {
                        self.reject(&HandshakeError::HeadTooLarge {
                            limit: MAX_REQUEST_HEAD,
                        });
                    }
                    None if head.len() > MAX_REQUEST_HEAD => {
                        self.reject(&HandshakeError::HeadTooLarge {
                            limit: MAX_REQUEST_HEAD,
                        });
                    }
                    None => *scanned = head.len(),
                }
            }
            Phase::AwaitingDecision(decision) => {
                let rest = &mut decision.rest;
                // Input before the decision (the caller skipped draining events): keep it,
                // bounded like a request head.
                if rest.len() + data.len() > MAX_REQUEST_HEAD {
                    self.phase = Phase::Closed(Finish::Now);
                } else {
                    rest.extend_from_slice(data);
                }
            }
            Phase::Open | Phase::Closing { .. } => self.read_frames(data),
            Phase::Closed(_) => {}
        }
    }

    /// The peer finished sending (read returned 0) or the transport failed.
    pub fn handle_eof(&mut self) {
        if let Some(held) = &mut self.held {
            held.eof = true; // after the held input is parsed
            return;
        }
        match self.phase {
            // What is queued (replies to its last messages) still goes out: the peer may only
            // have half-closed, and a peer that is really gone makes the send fail at once.
            Phase::Open => {
                self.event(Event::Closed {
                    code: CloseCode::ABNORMAL,
                    by_peer: true,
                });
                self.phase = Phase::Closed(Finish::AfterFlush);
            }
            // A queued response or Close still goes out: the peer may only have half-closed.
            Phase::Closed(_) => {}
            Phase::Handshaking(_) | Phase::AwaitingDecision(_) | Phase::Closing { .. } => {
                self.phase = Phase::Closed(Finish::Now);
            }
        }
    }

    /// Advances time: handshake and close deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        if !matches!(self.phase, Phase::Closing { .. }) {
            self.event(Event::HandshakeTimedOut);
        }
        self.phase = Phase::Closed(Finish::Now);
    }

    /// The next event, once every output produced before it was taken.
    pub fn poll_event(&mut self) -> Option<Event> {
        match self.queue.front() {
            Some(Item::Event(_)) => match self.queue.pop_front() {
                Some(Item::Event(event)) => Some(event),
                _ => None,
            },
            _ => None,
        }
    }

    /// The next frame (or HTTP response) to send, if it precedes the next event.
    pub fn poll_output(&mut self) -> Option<SharedFrame> {
        match self.queue.front() {
            Some(Item::Output { .. }) => match self.queue.pop_front() {
                Some(Item::Output { frame, last }) => {
                    if last {
                        self.accepts_messages = false;
                    }
                    Some(frame)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether an application frame queued now would be well placed: the upgrade is done
    /// and our Close has not been taken by `poll_output` yet.
    pub fn accepts_messages(&self) -> bool {
        self.accepts_messages
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Handshaking(reader) => Some(reader.deadline),
            Phase::AwaitingDecision(decision) => Some(decision.deadline),
            Phase::Closing { deadline } => Some(*deadline),
            Phase::Open | Phase::Closed(_) => None,
        }
    }

    /// Completes the upgrade requested by the last `Event::Request`; the 101 carries
    /// `extra_headers` (the server's own, e.g. which thread serves the connection).
    /// No extension is agreed.
    pub fn accept(&mut self, extra_headers: &[(&str, &str)]) -> Result<(), HandshakeError> {
        self.accept_with_deflate(extra_headers, false)
    }

    /// Like `accept`; with `deflate`, the first acceptable permessage-deflate offer is
    /// taken (see `deflate::negotiate`) and named in the 101. Declined offers are not an
    /// error: the 101 then names no extension.
    pub fn accept_with_deflate(
        &mut self,
        extra_headers: &[(&str, &str)],
        deflate: bool,
    ) -> Result<(), HandshakeError> {
        let Phase::AwaitingDecision(decision) = &mut self.phase else {
            return Err(HandshakeError::UpgradeNotWebSocket);
        };
        let Decision {
            key: Some(key),
            extensions,
            rest,
            ..
        } = &mut **decision
        else {
            return Err(HandshakeError::UpgradeNotWebSocket);
        };
        let rest = std::mem::take(rest);
        let agreed = if deflate { negotiate(extensions) } else { None };
        let mut headers = extra_headers.to_vec();
        if let Some((_, value)) = &agreed {
            headers.push(("Sec-WebSocket-Extensions", value));
        }
        let response = switching_protocols(key, &headers).into();
        self.deflate = agreed.as_ref().map(|(a, _)| *a);
        self.output(response, false);
        self.accepts_messages = true;
        self.phase = Phase::Open;
        self.read_frames(&rest);
        Ok(())
    }

    /// Answers the request with a complete HTTP response and ends the connection after it.
    pub fn respond(&mut self, response: Vec<u8>) {
        self.output(response.into(), true);
        self.phase = Phase::Closed(Finish::AfterFlush);
    }

    /// Answers the request with the error's status and reason.
    pub fn reject(&mut self, err: &HandshakeError) {
        self.respond(error_response(err));
        self.event(Event::HandshakeFailed(err.clone()));
    }

    /// Starts the closing handshake with `code` (1001 at shutdown, 1008 for a slow consumer).
    /// Before the upgrade there is no session to close: the transport is dropped.
    pub fn close(&mut self, code: CloseCode, now: Instant) {
        match self.phase {
            Phase::Open => {
                // The peer's input not yet taken is dropped, not processed: a connection
                // closed for what it did must not go on acting.
                self.queue
                    .retain(|item| !matches!(item, Item::Event(Event::Message(_))));
                let eof = self.held.take().is_some_and(|held| held.eof);
                self.queue_close(Some(code));
                self.event(Event::Closed {
                    code,
                    by_peer: false,
                });
                self.phase = Phase::Closing {
                    deadline: now + Duration::from_millis(self.close_timeout_ms.into()),
                };
                if eof {
                    self.handle_eof();
                }
            }
            Phase::Handshaking(_) | Phase::AwaitingDecision(_) => {
                self.phase = Phase::Closed(Finish::Now);
            }
            Phase::Closing { .. } | Phase::Closed(_) => {}
        }
    }

    /// Queues a ping carrying `payload` (at most 125 bytes; longer is cut) if the session is
    /// open: a heartbeat. The peer answers with a pong, which counts as a received frame.
    pub fn ping(&mut self, payload: &[u8]) {
        if matches!(self.phase, Phase::Open) {
            let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
            self.output(server_frame(Opcode::Ping, &[payload]), false);
        }
    }

    /// What permessage-deflate agreement the upgrade made, if any: which frames this
    /// connection may be sent (see `OutMessage::for_receiver`).
    pub fn deflate(&self) -> Option<Agreed> {
        self.deflate
    }

    /// The largest message this connection accepts, in bytes.
    fn max_message(&self) -> usize {
        self.max_message as usize
    }

    /// Whether application messages may be sent (the upgrade is done and no Close was sent).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// `Some` once the session is over.
    pub fn finish(&self) -> Option<Finish> {
        match self.phase {
            Phase::Closed(finish) => Some(finish),
            _ => None,
        }
    }

    /// Frames received since the last call (for statistics).
    pub fn take_frames_received(&mut self) -> u64 {
        std::mem::take(&mut self.frames_received).into()
    }

    /// Whether a complete data message or a control frame arrived since the last call: the
    /// peer's sign of life. A fragment without FIN is not one (a message trickled in pieces
    /// must not keep a connection alive forever; see `message_in_progress`).
    pub fn take_heard(&mut self) -> bool {
        std::mem::take(&mut self.heard)
    }

    /// Whether part of a data message has arrived and its last frame has not: the owner
    /// bounds how long a message may stay open.
    pub fn message_in_progress(&self) -> bool {
        self.message.is_some()
    }

    /// Whether we failed the connection for going over an input budget (for counters).
    pub fn flooded(&self) -> bool {
        self.flooded
    }

    fn on_request_head(&mut self, head: &[u8], rest: Vec<u8>, deadline: Instant) {
        match parse_request_with_extensions(head) {
            Ok((request, extensions)) => {
                let key = request.upgrade.as_ref().map(|u| u.key.clone());
                self.phase = Phase::AwaitingDecision(Box::new(Decision {
                    key,
                    extensions,
                    rest,
                    deadline,
                }));
                self.event(Event::Request(request));
            }
            Err(err) => self.reject(&err),
        }
    }

    fn read_frames(&mut self, data: &[u8]) {
        let mut frame = self.partial.take().map_or_else(PartialFrame::new, |f| *f);
        self.parse_frames(&mut frame, data);
        if !frame.at_boundary() {
            self.partial = Some(Box::new(frame));
        }
    }

    fn parse_frames(&mut self, frame: &mut PartialFrame, mut data: &[u8]) {
        while !data.is_empty() && matches!(self.phase, Phase::Open | Phase::Closing { .. }) {
            if self.one_message_at_a_time
                && matches!(self.queue.back(), Some(Item::Event(Event::Message(_))))
            {
                self.held = Some(Box::new(Held {
                    bytes: data.to_vec(),
                    eof: false,
                }));
                return;
            }
            let step = match &mut frame.reader {
                Reader::Header { buf, len } => {
                    let take = (MAX_HEADER_LEN - *len).min(data.len());
                    buf[*len..*len + take].copy_from_slice(&data[..take]);
                    match FrameHeader::parse_with_rsv1(&buf[..*len + take]) {
                        Ok(None) => {
                            *len += take;
                            data = &data[take..];
                            Ok(())
                        }
                        Ok(Some((header, header_len))) => {
                            data = &data[header_len - *len..];
                            self.frames_received = self.frames_received.saturating_add(1);
                            self.on_frame_start(frame, header)
                        }
                        Err(e) => Err(e),
                    }
                }
                Reader::Payload { header, received } => {
                    let header = *header;
                    let offset = *received;
                    let take = (header.payload_len - offset).min(data.len() as u64) as usize;
                    let (chunk, rest) = data.split_at(take);
                    data = rest;
                    *received += take as u64;
                    let done = *received == header.payload_len;
                    let control = &mut frame.control;
                    self.on_payload(control, &header, offset, chunk)
                        .and_then(|()| {
                            if done {
                                self.on_frame_end(frame, header)
                            } else {
                                Ok(())
                            }
                        })
                }
            };
            if let Err(err) = step {
                self.fail(err);
            }
        }
    }

    fn on_frame_start(
        &mut self,
        frame: &mut PartialFrame,
        header: FrameHeader,
    ) -> Result<(), ProtocolError> {
        // RSV1 marks a compressed message: only with deflate agreed, and only on a message's
        // first frame (RFC 7692 6.1): never on a control frame or a continuation.
        if header.rsv1
            && (self.deflate.is_none() || !matches!(header.opcode, Opcode::Text | Opcode::Binary))
        {
            return Err(ProtocolError::ReservedBits);
        }
        if header.mask.is_none() {
            return Err(ProtocolError::UnmaskedFrame);
        }
        if header.opcode.is_control() {
            self.control_frames_in_input += 1;
            if self.control_frames_in_input > CONTROL_FRAMES_PER_INPUT {
                return Err(ProtocolError::ControlFlood {
                    limit: CONTROL_FRAMES_PER_INPUT,
                });
            }
        }
        frame.reader = Reader::Payload {
            header,
            received: 0,
        };
        if header.opcode.is_control() {
            frame.control.clear();
        } else {
            let kind = match (header.opcode, &self.message) {
                (Opcode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (Opcode::Continuation, Some(m)) => m.kind,
                (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
                (Opcode::Text, None) => MessageKind::Text,
                _ => MessageKind::Binary,
            };
            let client_window = self.deflate.map(|a| a.client_window_bits);
            let message = self.message.get_or_insert_with(|| {
                Box::new(PartialMessage {
                    kind,
                    data: Vec::new(),
                    utf8: Utf8Validator::default(),
                    inflate: client_window.filter(|_| header.rsv1).map(|bits| {
                        Box::new(Inflating {
                            inflater: Inflater::new(bits),
                            wire_len: 0,
                            scratch: Vec::new(),
                        })
                    }),
                })
            });
            let limit = u64::from(self.max_message);
            let too_big = ProtocolError::MessageTooBig {
                limit: self.max_message as usize,
            };
            match &mut message.inflate {
                Some(inflating) => {
                    // The inflated size is checked as it grows; the compressed size only
                    // needs a bound (incompressible data grows by 5 bytes per 64 KiB).
                    inflating.wire_len = inflating.wire_len.saturating_add(header.payload_len);
                    if inflating.wire_len > limit + limit / 1024 + 1024 {
                        return Err(too_big);
                    }
                }
                None => {
                    let total = (message.data.len() as u64).saturating_add(header.payload_len);
                    if total > limit {
                        return Err(too_big);
                    }
                    // Bounded by max_message (checked above): the peer cannot make us
                    // reserve more.
                    message.data.reserve(header.payload_len as usize);
                }
            }
        }
        if header.payload_len == 0 {
            self.on_frame_end(frame, header)?;
        }
        Ok(())
    }

    fn on_payload(
        &mut self,
        control: &mut Vec<u8>,
        header: &FrameHeader,
        offset: u64,
        chunk: &[u8],
    ) -> Result<(), ProtocolError> {
        let key = header.mask.unwrap_or_default();
        let limit = self.max_message();
        let (target, start) = if header.opcode.is_control() {
            let start = control.len();
            (control, start)
        } else if let Some(message) = &mut self.message {
            let start = message.data.len();
            match &mut message.inflate {
                Some(inflating) => {
                    let scratch = &mut inflating.scratch;
                    scratch.clear();
                    scratch.extend_from_slice(chunk);
                    apply_mask(scratch, key, (offset % 4) as usize);
                    let grown = u64::from(self.inflate_credit)
                        .saturating_add(INFLATE_RATIO.saturating_mul(chunk.len() as u64))
                        .min(u64::from(self.max_message));
                    self.inflate_credit = u32::try_from(grown).unwrap_or(self.max_message);
                    let credit = &mut self.inflate_credit;
                    inflate_within(credit, limit, &mut message.data, |out, cap| {
                        inflating.inflater.inflate(scratch, out, cap)
                    })?;
                    return message.validate_from(start);
                }
                None => (&mut message.data, start),
            }
        } else {
            return Ok(());
        };
        target.extend_from_slice(chunk);
        apply_mask(&mut target[start..], key, (offset % 4) as usize);
        match &mut self.message {
            Some(message) if !header.opcode.is_control() => message.validate_from(start),
            _ => Ok(()),
        }
    }

    fn on_frame_end(
        &mut self,
        frame: &mut PartialFrame,
        header: FrameHeader,
    ) -> Result<(), ProtocolError> {
        frame.reader = Reader::new();
        if header.opcode.is_control() {
            self.heard = true;
        }
        match header.opcode {
            Opcode::Ping => {
                if self.is_open() {
                    let pong = server_frame(Opcode::Pong, &[&frame.control]);
                    self.output(pong, false);
                }
                // A ping's payload is not kept between pings (heartbeats would leave every
                // idle connection holding one).
                frame.control = Vec::new();
            }
            Opcode::Pong => frame.control = Vec::new(),
            Opcode::Close => self.on_peer_close(&frame.control)?,
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if header.fin
                    && let Some(mut message) = self.message.take()
                {
                    if let Some(mut inflating) = message.inflate.take() {
                        let limit = self.max_message();
                        let start = message.data.len();
                        let credit = &mut self.inflate_credit;
                        inflate_within(credit, limit, &mut message.data, |out, cap| {
                            inflating.inflater.finish(out, cap)
                        })?;
                        message.validate_from(start)?;
                    }
                    message
                        .utf8
                        .finish()
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                    self.heard = true;
                    if self.is_open() {
                        self.event(Event::Message(Message {
                            kind: message.kind,
                            data: message.data,
                        }));
                    }
                }
            }
        }
        Ok(())
    }

    fn on_peer_close(&mut self, control: &[u8]) -> Result<(), ProtocolError> {
        let payload = parse_close_payload(control)?;
        if self.is_open() {
            self.queue_close(payload.code);
            self.event(Event::Closed {
                code: payload.code.unwrap_or(CloseCode::NO_STATUS),
                by_peer: true,
            });
        }
        self.message = None;
        self.phase = Phase::Closed(Finish::AfterFlush);
        Ok(())
    }

    /// Fails the connection (RFC 6455 7.1.7): Close with the error's code, then end.
    fn fail(&mut self, err: ProtocolError) {
        self.flooded = err.is_flood();
        if self.is_open() {
            let code = err.close_code();
            self.queue_close(Some(code));
            self.event(Event::Closed {
                code,
                by_peer: false,
            });
        }
        self.message = None;
        self.phase = Phase::Closed(Finish::AfterFlush);
    }

    fn queue_close(&mut self, code: Option<CloseCode>) {
        let payload = code.map(|c| c.0.to_be_bytes());
        let frame = server_frame(
            Opcode::Close,
            &[payload.as_ref().map_or(&[][..], |p| &p[..])],
        );
        self.output(frame, true);
    }

    fn output(&mut self, frame: SharedFrame, last: bool) {
        self.queue.push_back(Item::Output { frame, last });
    }

    fn event(&mut self, event: Event) {
        self.queue.push_back(Item::Event(event));
    }
}

impl PartialMessage {
    /// Fail fast: validates what arrived from `start` on, not only the finished message.
    fn validate_from(&mut self, start: usize) -> Result<(), ProtocolError> {
        if self.kind == MessageKind::Text {
            self.utf8
                .feed(&self.data[start..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }
}

/// Runs one inflate step into `out` (the message so far) within both the message limit and
/// the connection's inflate credit, and charges what it produced to the credit.
fn inflate_within(
    credit: &mut u32,
    limit: usize,
    out: &mut Vec<u8>,
    step: impl FnOnce(&mut Vec<u8>, usize) -> Result<(), InflateError>,
) -> Result<(), ProtocolError> {
    let before = out.len();
    let allowed = before.saturating_add(usize::try_from(*credit).unwrap_or(usize::MAX));
    let cap = limit.min(allowed);
    match step(out, cap) {
        Ok(()) => {
            let inflated = u32::try_from(out.len() - before).unwrap_or(u32::MAX);
            *credit = credit.saturating_sub(inflated);
            Ok(())
        }
        Err(InflateError::TooBig) if cap < limit => Err(ProtocolError::InflateFlood),
        Err(err) => Err(inflate_error(err, limit)),
    }
}

fn inflate_error(err: InflateError, limit: usize) -> ProtocolError {
    match err {
        InflateError::TooBig => ProtocolError::MessageTooBig { limit },
        InflateError::Corrupt => ProtocolError::InvalidCompressedData,
    }
}

#[cfg(test)]
mod idle_state {
    use super::*;

    /// A masked text frame (all-zero mask: the payload reads as itself).
    fn text(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    /// Every connection holds one, idle or not (see the README's Memory section).
    #[test]
    fn a_connection_is_80_bytes() {
        assert_eq!(std::mem::size_of::<Connection>(), 80);
    }

    #[test]
    fn frame_state_is_kept_only_while_input_ends_inside_a_frame() {
        let (mut conn, _) = crate::ws::tests::open();
        conn.handle_input(&text(b"whole"));
        assert!(
            conn.partial.is_none(),
            "a whole frame leaves nothing behind"
        );
        let split = text(b"split");
        for (i, part) in [&split[..1], &split[1..8], &split[8..]]
            .into_iter()
            .enumerate()
        {
            assert!(conn.partial.is_none() == (i == 0), "before part {i}");
            conn.handle_input(part);
        }
        assert!(conn.partial.is_none(), "the frame was finished");
        let messages: Vec<Vec<u8>> = std::iter::from_fn(|| conn.poll_event())
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.data),
                _ => None,
            })
            .collect();
        assert_eq!(messages, [b"whole".to_vec(), b"split".to_vec()]);
    }
}
