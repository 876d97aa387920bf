//! Property checks over the pure protocol layer, written once and run three ways: by the
//! cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly), by the stable replay of the
//! committed corpus (`tests/fuzz_corpus.rs`) and by proptest (`ws/tests.rs`).
//!
//! Each `check_*` function takes arbitrary bytes and panics only through its own assertions:
//! a panic anywhere else (an index out of bounds in a parser, an overflow) is itself a bug the
//! fuzzer reports. Time is passed in (`now`), as everywhere in `ws/`; nothing here reads the
//! clock or depends on its value.
//!
//! Input layout shared by the checks that split their input (see [`Plan`](crate::ws::fuzzing::Plan)):
//! byte 0 holds the number of chunk-size bytes (bits 0-2) and per-check flags (bits 3-7);
//! then come the chunk sizes; the rest is the subject. Putting the split plan in the input
//! lets the fuzzer search split points and content together, and makes every finding
//! replayable from one file.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::close::{CloseCode, parse_close_payload};
use super::connection::{Connection, Event, Finish, Limits, MessageKind};
use super::error::HandshakeError;
use super::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, Opcode, encode_frame};
use super::handshake::{
    MAX_REQUEST_HEAD, Request, accept_key, error_response, find_head_end, parse_request,
};
use super::utf8::Utf8Validator;

/// A valid upgrade head (the RFC 6455 1.3 sample key) put in front of fuzzed frames.
pub const UPGRADE_HEAD: &[u8] = b"GET /chat HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Masking key of the Close frames built by `check_close_payload` (any key will do; a fixed
/// one keeps findings replayable).
const CLIENT_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The answer to a plain (non-upgrade) request; its content does not matter.
const PLAIN_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// How an input is cut into reads, decoded from its first bytes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Chunk lengths, used in turn until the subject is consumed. A 0 is an empty read,
    /// which must change nothing.
    sizes: Vec<usize>,
    /// Bits 3-7 of byte 0, for the check to interpret.
    pub flags: u8,
}

impl Plan {
    /// Splits `data` into the plan and the subject. Empty input gives byte-at-a-time reads of
    /// nothing; no chunk-size bytes also means byte-at-a-time (the harshest split).
    pub fn decode(data: &[u8]) -> (Plan, &[u8]) {
        let Some((&first, rest)) = data.split_first() else {
            return (
                Plan {
                    sizes: vec![1],
                    flags: 0,
                },
                data,
            );
        };
        let n = usize::from(first & 0x07).min(rest.len());
        let (size_bytes, subject) = rest.split_at(n);
        let mut sizes: Vec<usize> = size_bytes.iter().map(|&b| usize::from(b)).collect();
        // All-zero sizes would never make progress.
        if sizes.iter().all(|&s| s == 0) {
            sizes.push(1);
        }
        (
            Plan {
                sizes,
                flags: first >> 3,
            },
            subject,
        )
    }

    /// The subject cut into chunks (empty chunks included).
    pub fn chunks<'a>(&self, subject: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = subject;
        for &size in self.sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            out.push(chunk);
            rest = tail;
        }
        out
    }
}

/// Everything a connection produced, in the order the application saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Output(Vec<u8>),
    Event(Event),
}

/// How the simulated application answers a connection's events.
#[derive(Debug, Clone, Copy)]
struct App {
    /// Call `close(GOING_AWAY)` right after accepting the upgrade, so that the frames that
    /// follow are read in the Closing state. (Closing later, say after the n-th message, would
    /// make the result depend on how much input the connection had already consumed: a real
    /// difference between splits, not a bug.)
    close_on_upgrade: bool,
}

/// Feeds `chunks` to a new connection, draining after each read the way the shard does
/// (all output, then one event), accepting upgrades and answering plain requests. Ends with
/// EOF and the close timeout. Returns the trace and how the transport is finished.
fn drive(
    chunks: &[&[u8]],
    limits: Limits,
    app: App,
    now: Instant,
) -> (Vec<Step>, Option<Finish>, u64) {
    let mut conn = Connection::new(limits, now);
    let mut trace = Vec::new();
    let mut frames = 0;
    let drain = |conn: &mut Connection, trace: &mut Vec<Step>| {
        loop {
            while let Some(out) = conn.poll_output() {
                trace.push(Step::Output(out.to_vec()));
            }
            let Some(event) = conn.poll_event() else {
                break;
            };
            match &event {
                Event::Request(req) if req.upgrade.is_some() => {
                    assert!(
                        conn.accept(&[]).is_ok(),
                        "an upgrade request must be acceptable"
                    );
                    if app.close_on_upgrade {
                        conn.close(CloseCode::GOING_AWAY, now);
                    }
                }
                Event::Request(_) => conn.respond(PLAIN_RESPONSE.to_vec()),
                _ => {}
            }
            trace.push(Step::Event(event));
        }
    };
    for chunk in chunks {
        conn.handle_input(chunk);
        drain(&mut conn, &mut trace);
        // After the drain: `accept` reads the frames that came with the head.
        frames += conn.take_frames_received();
    }
    conn.handle_eof();
    drain(&mut conn, &mut trace);
    // Past every deadline: a connection left waiting for the peer's Close must give up.
    conn.handle_timeout(now + limits.handshake_timeout + limits.close_timeout);
    drain(&mut conn, &mut trace);
    assert!(
        conn.finish().is_some(),
        "after EOF and every deadline the session must be over"
    );
    (trace, conn.finish(), frames)
}

/// The request head and the frame decoder, incremental: `UPGRADE_HEAD` followed by the
/// subject, fed once whole and once cut by the plan, must produce the same outputs, events,
/// frame count and finish. The trace must also make sense: the 101 first, then only
/// well-formed unmasked server frames; every Close we send carries a sendable code (or none,
/// echoing an empty Close); nothing after our Close; `Closed` at most once; text messages are
/// UTF-8 and no message exceeds the limit.
///
/// Flags: bits 0-1 pick `max_message` (small limits reach 1009 with short inputs); bit 2
/// makes the application close (1001) as soon as it accepts, the head then arriving in a
/// read of its own so that every frame is read in the Closing state.
pub fn check_frames(data: &[u8], now: Instant) {
    const MAX_MESSAGE: [usize; 4] = [0, 16, 1024, 1 << 20];
    let (plan, subject) = Plan::decode(data);
    let limits = Limits {
        max_message: MAX_MESSAGE[usize::from(plan.flags & 0x3)],
        handshake_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(2),
    };
    let app = App {
        close_on_upgrade: plan.flags & 0x4 != 0,
    };
    let (whole, split) = if app.close_on_upgrade {
        let split: Vec<&[u8]> = [UPGRADE_HEAD]
            .into_iter()
            .chain(plan.chunks(subject))
            .collect();
        (
            drive(&[UPGRADE_HEAD, subject], limits, app, now),
            drive(&split, limits, app, now),
        )
    } else {
        let stream = [UPGRADE_HEAD, subject].concat();
        (
            drive(&[&stream], limits, app, now),
            drive(&plan.chunks(&stream), limits, app, now),
        )
    };
    assert_eq!(whole, split, "a different split gave a different result");
    check_trace(&whole.0, limits);
}

fn check_trace(trace: &[Step], limits: Limits) {
    let [
        Step::Event(Event::Request(request)),
        Step::Output(response),
        rest @ ..,
    ] = trace
    else {
        panic!("the fixed upgrade head must give a Request and the 101 first: {trace:?}");
    };
    assert!(request.upgrade.is_some());
    assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    let mut our_close: Option<Option<CloseCode>> = None;
    let mut closed_events = 0;
    for step in rest {
        match step {
            Step::Output(out) => {
                assert!(our_close.is_none(), "output after our Close: {out:x?}");
                let (header, header_len) = FrameHeader::parse(out)
                    .expect("our frame parses")
                    .expect("our frame is complete");
                assert_eq!(
                    header_len as u64 + header.payload_len,
                    out.len() as u64,
                    "one output, one frame"
                );
                assert!(
                    header.fin && header.mask.is_none(),
                    "server frames: FIN, unmasked"
                );
                let payload = &out[header_len..];
                match header.opcode {
                    Opcode::Pong => assert!(payload.len() <= MAX_CONTROL_PAYLOAD),
                    Opcode::Close => {
                        let parsed = parse_close_payload(payload)
                            .expect("our Close payload is one we would accept");
                        if let Some(code) = parsed.code {
                            assert!(code.is_sendable(), "we sent close code {}", code.0);
                        }
                        our_close = Some(parsed.code);
                    }
                    other => panic!("unexpected server frame {other:?}"),
                }
            }
            Step::Event(Event::Message(m)) => {
                assert!(our_close.is_none(), "message delivered after our Close");
                assert!(m.data.len() <= limits.max_message, "message over the limit");
                if m.kind == MessageKind::Text {
                    assert!(
                        std::str::from_utf8(&m.data).is_ok(),
                        "invalid UTF-8 delivered"
                    );
                }
            }
            Step::Event(Event::Closed { code, by_peer }) => {
                closed_events += 1;
                // When we end the session, our Close frame (queued just before) says why.
                if !by_peer {
                    assert_eq!(our_close, Some(Some(*code)), "Closed event vs our Close");
                }
            }
            Step::Event(e) => panic!("unexpected event after the upgrade: {e:?}"),
        }
    }
    assert!(closed_events <= 1, "Closed reported {closed_events} times");
}

/// The request head: `find_head_end` agrees with a plain search however far it has already
/// looked; a connection fed the subject whole and cut by the plan behaves the same and as
/// `find_head_end` + `parse_request` say (head-size limit included); a parsed request holds
/// its invariants; every response we would send parses as HTTP with the right status.
///
/// Flag bit 0 pads the head with a header line so that its end lands within 8 bytes before
/// and 7 after `MAX_REQUEST_HEAD` (bits 1-4 choose where), so the limit is exercised with
/// short fuzz inputs.
pub fn check_handshake(data: &[u8], now: Instant) {
    let (plan, subject) = Plan::decode(data);
    let padded;
    let head = if plan.flags & 1 != 0 {
        padded = pad_to_limit(subject, usize::from(plan.flags >> 1));
        &padded[..]
    } else {
        subject
    };

    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    assert_eq!(find_head_end(head, 0), end);
    // The caller resumes from how far it looked without finding the end; sample those points
    // (all of them would be quadratic on 8 KiB heads, and slow the fuzzer a hundredfold).
    let chunk_ends = plan
        .chunks(head)
        .into_iter()
        .scan(0, |pos, c| {
            *pos += c.len();
            Some(*pos)
        })
        .take(64);
    let near_end = end.map_or(0..0, |e| e.saturating_sub(8)..e);
    for from in (0..head.len().min(32)).chain(near_end).chain(chunk_ends) {
        if end.is_none_or(|e| from < e) {
            assert_eq!(find_head_end(head, from), end, "resumed at {from}");
        }
    }

    let limits = Limits {
        max_message: 1024,
        handshake_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(2),
    };
    let app = App {
        close_on_upgrade: false,
    };
    let whole = drive(&[head], limits, app, now);
    let split = drive(&plan.chunks(head), limits, app, now);
    assert_eq!(whole, split, "a different split gave a different result");

    let first_event = whole.0.iter().find_map(|s| match s {
        Step::Event(e) => Some(e),
        Step::Output(_) => None,
    });
    let first_output = whole.0.iter().find_map(|s| match s {
        Step::Output(o) => Some(o),
        Step::Event(_) => None,
    });
    match end {
        Some(e) if e <= MAX_REQUEST_HEAD => match parse_request(&head[..e]) {
            Ok(request) => {
                assert_eq!(first_event, Some(&Event::Request(request.clone())));
                check_request(&request);
                let response = first_output.expect("a response to the request");
                if let Some(upgrade) = &request.upgrade {
                    let accept = format!("Sec-WebSocket-Accept: {}\r\n", accept_key(&upgrade.key));
                    assert!(contains(response, accept.as_bytes()), "101 with our accept");
                    assert_eq!(response_status(response), Some(101));
                } else {
                    assert_eq!(response, PLAIN_RESPONSE);
                }
            }
            Err(err) => {
                assert_eq!(first_event, Some(&Event::HandshakeFailed(err.clone())));
                check_error(&err, first_output);
            }
        },
        _ if head.len() > MAX_REQUEST_HEAD => {
            let err = HandshakeError::HeadTooLarge {
                limit: MAX_REQUEST_HEAD,
            };
            assert_eq!(first_event, Some(&Event::HandshakeFailed(err.clone())));
            check_error(&err, first_output);
        }
        _ => assert!(
            first_output.is_none() && matches!(first_event, None | Some(Event::HandshakeTimedOut)),
            "an incomplete head got {:?}",
            whole.0
        ),
    }
}

/// Inserts `X-Pad: aaa...` after the first line (or in front, if there is none) so that the
/// head's end (or, without one, its length) is `MAX_REQUEST_HEAD - 8 + shift`.
fn pad_to_limit(subject: &[u8], shift: usize) -> Vec<u8> {
    const PAD_NAME: &[u8] = b"X-Pad: ";
    let target = MAX_REQUEST_HEAD - 8 + shift;
    let len = find_head_end(subject, 0).unwrap_or(subject.len());
    let at = subject
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(0, |p| p + 2);
    let Some(value_len) = target.checked_sub(len + PAD_NAME.len() + 2) else {
        return subject.to_vec();
    };
    let mut out = Vec::with_capacity(target.max(subject.len()) + 2);
    out.extend_from_slice(&subject[..at]);
    out.extend_from_slice(PAD_NAME);
    out.resize(out.len() + value_len, b'a');
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&subject[at..]);
    out
}

fn check_request(request: &Request) {
    assert!(
        !request.path.contains('?'),
        "the query is split off the path"
    );
    if let Some(upgrade) = &request.upgrade {
        let raw = BASE64.decode(&upgrade.key).expect("the key is base64");
        assert_eq!(raw.len(), 16, "the key encodes 16 bytes");
        assert_eq!(accept_key(&upgrade.key).len(), 28, "base64 of a SHA-1");
        if let Some(origin) = &upgrade.origin {
            assert_eq!(
                origin.trim_matches([' ', '\t']),
                origin,
                "origin is trimmed"
            );
        }
    }
}

/// The error response we queue must be well-formed HTTP with the error's status.
fn check_error(err: &HandshakeError, sent: Option<&Vec<u8>>) {
    assert!(matches!(err.status(), 400 | 405 | 426 | 431), "{err:?}");
    let response = error_response(err);
    assert_eq!(sent, Some(&response));
    assert_eq!(response_status(&response), Some(err.status()));
}

/// The status of a complete HTTP response whose body matches its Content-Length.
fn response_status(response: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(response).ok()? else {
        return None;
    };
    let body_len = response.len() - head_len;
    if let Some(h) = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Length"))
    {
        let declared: usize = std::str::from_utf8(h.value).ok()?.parse().ok()?;
        assert_eq!(declared, body_len, "Content-Length");
    } else {
        assert_eq!(body_len, 0, "a body without Content-Length");
    }
    parsed.code
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether RFC 6455 7.4 (and the IANA registry) lets a peer send `code`. Written apart from
/// `CloseCode::is_sendable`, as a list of exclusions, so that the two can disagree.
fn rfc_allows(code: u16) -> bool {
    match code {
        // 1004 reserved; 1005, 1006 and 1015 only ever reported locally.
        1004 | 1005 | 1006 | 1015 => false,
        1000..=1014 => true,
        // 3000-3999 registered for libraries and frameworks, 4000-4999 private use.
        3000..=4999 => true,
        // Below 1000 unused, 1016-2999 reserved for future RFCs, 5000 and up undefined.
        _ => false,
    }
}

/// A Close payload: `parse_close_payload` agrees with an independent reading of RFC 6455
/// 5.5.1 and 7.4, and a connection that receives it (as a masked Close frame) echoes the
/// code, or fails with 1002 (bad code, one byte) or 1007 (reason not UTF-8), and reports it.
pub fn check_close_payload(data: &[u8], now: Instant) {
    let expected = match data {
        [] => Ok(None),
        [_] => Err(CloseCode::PROTOCOL_ERROR),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !rfc_allows(code) {
                Err(CloseCode::PROTOCOL_ERROR)
            } else if std::str::from_utf8(reason).is_err() {
                Err(CloseCode::INVALID_PAYLOAD)
            } else {
                Ok(Some(CloseCode(code)))
            }
        }
    };
    let parsed = parse_close_payload(data)
        .map(|p| p.code)
        .map_err(|e| e.close_code());
    assert_eq!(parsed, expected, "parse_close_payload({data:x?})");

    if data.len() > MAX_CONTROL_PAYLOAD {
        return;
    }
    let frame = encode_frame(Opcode::Close, &[data], Some(CLIENT_KEY));
    let limits = Limits {
        max_message: 1024,
        handshake_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(2),
    };
    let app = App {
        close_on_upgrade: false,
    };
    let (trace, finish, _) = drive(&[UPGRADE_HEAD, &frame], limits, app, now);
    let (sent_code, event) = match expected {
        Ok(code) => (
            code,
            Event::Closed {
                code: code.unwrap_or(CloseCode::NO_STATUS),
                by_peer: true,
            },
        ),
        Err(code) => (
            Some(code),
            Event::Closed {
                code,
                by_peer: false,
            },
        ),
    };
    let close_payload = sent_code.map_or(Vec::new(), |c| c.0.to_be_bytes().to_vec());
    let close = encode_frame(Opcode::Close, &[&close_payload], None);
    assert_eq!(&trace[2..], [Step::Output(close), Step::Event(event)]);
    assert_eq!(finish, Some(Finish::AfterFlush));
}

/// Incremental UTF-8 validation: the subject cut by the plan is accepted exactly when std
/// accepts it whole, and the validator fails fast: on the read holding the first byte after
/// which no valid text can begin this way, never earlier, never later.
pub fn check_utf8(data: &[u8]) {
    let (plan, subject) = Plan::decode(data);
    let std_result = std::str::from_utf8(subject);
    // Length of the shortest prefix that is not the start of any valid UTF-8 text.
    let fails_at = match std_result {
        Err(e) if e.error_len().is_some() => (e.valid_up_to() + 1..=subject.len())
            .find(|&k| std::str::from_utf8(&subject[..k]).is_err_and(|e| e.error_len().is_some())),
        _ => None,
    };
    let mut validator = Utf8Validator::default();
    let mut fed = 0;
    for chunk in plan.chunks(subject) {
        fed += chunk.len();
        let result = validator.feed(chunk);
        let should_fail = fails_at.is_some_and(|k| k <= fed);
        assert_eq!(
            result.is_err(),
            should_fail,
            "after {fed} bytes of {subject:x?} (std: {std_result:?})"
        );
        if should_fail {
            return;
        }
    }
    assert_eq!(
        validator.finish().is_ok(),
        std_result.is_ok(),
        "at the end of {subject:x?}"
    );
}
