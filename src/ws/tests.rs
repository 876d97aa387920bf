//! State-machine tests of `Connection` with byte vectors and explicit time.

use std::time::{Duration, Instant};

use super::connection::{CONTROL_FRAMES_PER_INPUT, INFLATE_RATIO};
use super::frame::{FrameHeader, encode_frame};
use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const LIMITS: Limits = Limits {
    max_message: 1024,
    handshake_timeout: Duration::from_secs(10),
    close_timeout: Duration::from_secs(2),
};
const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A client frame with explicit FIN and opcode bits, masked with `KEY`.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mut rest = encode_frame(Opcode::Binary, &[payload], Some(KEY));
    rest.remove(0);
    out.extend(rest);
    out
}

fn text(payload: &str) -> Vec<u8> {
    frame(true, 0x1, payload.as_bytes())
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(true, 0x8, &payload)
}

/// A connection past the handshake, with the 101 and the Request event drained.
pub(super) fn open() -> (Connection, Instant) {
    let now = Instant::now();
    let mut conn = Connection::new(LIMITS, now);
    conn.handle_input(UPGRADE);
    assert!(matches!(conn.poll_event(), Some(Event::Request(_))));
    conn.accept(&[]).unwrap();
    let response = conn.poll_output().unwrap();
    assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(
        std::str::from_utf8(&response)
            .unwrap()
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")
    );
    (conn, now)
}

/// Takes events and output in the order the connection produced them, as the shard does.
fn drain(conn: &mut Connection) -> (Vec<Event>, Vec<Vec<u8>>) {
    let (mut events, mut outputs) = (Vec::new(), Vec::new());
    loop {
        while let Some(frame) = conn.poll_output() {
            outputs.push(frame.to_vec());
        }
        match conn.poll_event() {
            Some(event) => events.push(event),
            None => return (events, outputs),
        }
    }
}

fn events(conn: &mut Connection) -> Vec<Event> {
    drain(conn).0
}

fn outputs(conn: &mut Connection) -> Vec<Vec<u8>> {
    drain(conn).1
}

/// The close code of an unmasked server Close frame.
fn close_code_of(frame: &[u8]) -> Option<u16> {
    let (header, len) = FrameHeader::parse(frame).unwrap().unwrap();
    assert_eq!(header.opcode, Opcode::Close);
    frame
        .get(len..len + 2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
}

fn assert_failed_with(conn: &mut Connection, code: u16) {
    let (events, out) = drain(conn);
    assert_eq!(out.len(), 1, "one Close frame");
    assert_eq!(close_code_of(&out[0]), Some(code));
    assert!(events.contains(&Event::Closed {
        code: CloseCode(code),
        by_peer: false
    }));
    assert_eq!(conn.finish(), Some(Finish::AfterFlush));
}

fn message(kind: MessageKind, data: &[u8]) -> Event {
    Event::Message(Message {
        kind,
        data: data.to_vec(),
    })
}

#[test]
fn text_message_after_handshake() {
    let (mut conn, _) = open();
    conn.handle_input(&text("Hello"));
    assert_eq!(events(&mut conn), [message(MessageKind::Text, b"Hello")]);
    assert!(conn.is_open());
}

#[test]
fn frames_pipelined_behind_the_request_are_kept() {
    let now = Instant::now();
    let mut conn = Connection::new(LIMITS, now);
    let mut bytes = UPGRADE.to_vec();
    bytes.extend(text("early"));
    conn.handle_input(&bytes);
    assert!(matches!(conn.poll_event(), Some(Event::Request(_))));
    conn.accept(&[]).unwrap();
    assert_eq!(events(&mut conn), [message(MessageKind::Text, b"early")]);
}

#[test]
fn every_split_of_the_input_gives_the_same_events() {
    let mut stream = UPGRADE.to_vec();
    stream.extend(frame(false, 0x1, "κό".as_bytes()));
    stream.extend(frame(true, 0x9, b"ping!"));
    stream.extend(frame(true, 0x0, "σμε".as_bytes()));
    stream.extend(frame(true, 0x2, &[0u8; 300]));
    for split in 0..stream.len() {
        let mut conn = Connection::new(LIMITS, Instant::now());
        let (mut got, mut out) = (Vec::new(), Vec::new());
        for part in [&stream[..split], &stream[split..]] {
            conn.handle_input(part);
            loop {
                while let Some(frame) = conn.poll_output() {
                    out.push(frame.to_vec());
                }
                match conn.poll_event() {
                    Some(Event::Request(_)) => conn.accept(&[]).unwrap(),
                    Some(event) => got.push(event),
                    None => break,
                }
            }
        }
        assert_eq!(
            got,
            [
                message(MessageKind::Text, "κόσμε".as_bytes()),
                message(MessageKind::Binary, &[0u8; 300])
            ],
            "split at {split}"
        );
        assert_eq!(out.len(), 2, "101 and the pong");
        assert_eq!(out[1], [0x8a, 0x05, b'p', b'i', b'n', b'g', b'!']);
    }
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let (mut conn, _) = open();
    conn.handle_input(&frame(true, 0x9, b"Hello"));
    assert_eq!(
        outputs(&mut conn),
        [vec![0x8a, 0x05, b'H', b'e', b'l', b'l', b'o']]
    );
    assert!(events(&mut conn).is_empty());
}

#[test]
fn unmasked_frame_closes_with_1002() {
    let (mut conn, _) = open();
    conn.handle_input(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_failed_with(&mut conn, 1002);
}

#[test]
fn header_violations_close_with_1002() {
    let cases: Vec<Vec<u8>> = vec![
        frame(true, 0x41, b""),                        // RSV2
        frame(true, 0x3, b""),                         // reserved opcode
        frame(false, 0x9, b""),                        // fragmented ping
        frame(true, 0x9, &[0; 126]),                   // long ping
        frame(true, 0x0, b"x"),                        // continuation without a message
        [frame(false, 0x1, b"a"), text("b")].concat(), // new message inside a fragmented one
    ];
    for bytes in cases {
        let (mut conn, _) = open();
        conn.handle_input(&bytes);
        assert_failed_with(&mut conn, 1002);
    }
}

#[test]
fn invalid_utf8_fails_fast_across_fragments() {
    let (mut conn, _) = open();
    // First fragment ends in the lead byte of a 3-byte sequence; the second continues it
    // with an ASCII byte: invalid before the message is finished.
    conn.handle_input(&frame(false, 0x1, &[b'o', b'k', 0xe2]));
    assert!(events(&mut conn).is_empty());
    conn.handle_input(&frame(false, 0x0, b"x"));
    assert_failed_with(&mut conn, 1007);
}

#[test]
fn invalid_utf8_in_the_first_fragment_fails_before_the_message_ends() {
    let (mut conn, _) = open();
    conn.handle_input(&frame(false, 0x1, &[0xce, 0xba, 0xff]));
    assert_failed_with(&mut conn, 1007);
}

#[test]
fn message_ending_inside_a_character_is_invalid() {
    let (mut conn, _) = open();
    conn.handle_input(&frame(true, 0x1, &[b'a', 0xe2, 0x82]));
    assert_failed_with(&mut conn, 1007);
}

#[test]
fn oversized_message_fails_at_the_header() {
    let (mut conn, _) = open();
    // Only the header of a 2000-byte frame: the limit is known before the payload arrives.
    let header = &frame(true, 0x2, &[0; 2000])[..8];
    conn.handle_input(header);
    assert_failed_with(&mut conn, 1009);
}

#[test]
fn oversized_fragmented_message_fails() {
    let (mut conn, _) = open();
    conn.handle_input(&frame(false, 0x2, &[0; 600]));
    conn.handle_input(&frame(true, 0x0, &[0; 600]));
    assert_failed_with(&mut conn, 1009);
}

#[test]
fn peer_close_is_echoed_and_ends_the_session() {
    let (mut conn, _) = open();
    conn.handle_input(&close_frame(1000, b"bye"));
    let (events_seen, out) = drain(&mut conn);
    assert_eq!(out, [vec![0x88, 0x02, 0x03, 0xe8]]);
    assert_eq!(
        events_seen,
        [Event::Closed {
            code: CloseCode::NORMAL,
            by_peer: true
        }]
    );
    assert_eq!(conn.finish(), Some(Finish::AfterFlush));
    // Nothing after the Close is processed.
    conn.handle_input(&text("late"));
    assert!(events(&mut conn).is_empty());
}

#[test]
fn empty_close_gets_an_empty_close() {
    let (mut conn, _) = open();
    conn.handle_input(&frame(true, 0x8, b""));
    let (events_seen, out) = drain(&mut conn);
    assert_eq!(out, [vec![0x88, 0x00]]);
    assert_eq!(
        events_seen,
        [Event::Closed {
            code: CloseCode::NO_STATUS,
            by_peer: true
        }]
    );
}

#[test]
fn bad_close_payloads() {
    for (bytes, code) in [
        (frame(true, 0x8, &[0x03]), 1002),
        (close_frame(1005, b""), 1002),
        (close_frame(999, b""), 1002),
        (close_frame(5000, b""), 1002),
        (close_frame(1000, &[0xff]), 1007),
    ] {
        let (mut conn, _) = open();
        conn.handle_input(&bytes);
        assert_failed_with(&mut conn, code);
    }
}

#[test]
fn our_close_waits_for_the_peer_then_times_out() {
    let (mut conn, now) = open();
    conn.close(CloseCode::GOING_AWAY, now);
    let (events_seen, out) = drain(&mut conn);
    assert_eq!(close_code_of(&out[0]), Some(1001));
    assert_eq!(
        events_seen,
        [Event::Closed {
            code: CloseCode::GOING_AWAY,
            by_peer: false
        }]
    );
    assert!(!conn.is_open());
    assert_eq!(conn.poll_timeout(), Some(now + LIMITS.close_timeout));
    // Data after our Close is discarded, not delivered.
    conn.handle_input(&text("ignored"));
    assert!(events(&mut conn).is_empty());
    conn.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(conn.finish(), None);
    conn.handle_timeout(now + LIMITS.close_timeout);
    assert_eq!(conn.finish(), Some(Finish::Now));
}

#[test]
fn our_close_completes_on_the_peer_close() {
    let (mut conn, now) = open();
    conn.close(CloseCode::POLICY_VIOLATION, now);
    drain(&mut conn);
    conn.handle_input(&close_frame(1008, b""));
    let (events_seen, out) = drain(&mut conn);
    assert!(out.is_empty(), "no second Close");
    assert!(events_seen.is_empty(), "Closed was reported once");
    assert_eq!(conn.finish(), Some(Finish::AfterFlush));
}

#[test]
fn handshake_times_out() {
    let now = Instant::now();
    let mut conn = Connection::new(LIMITS, now);
    conn.handle_input(b"GET / HTTP/1.1\r\n");
    assert_eq!(conn.poll_timeout(), Some(now + LIMITS.handshake_timeout));
    conn.handle_timeout(now + LIMITS.handshake_timeout);
    assert_eq!(events(&mut conn), [Event::HandshakeTimedOut]);
    assert_eq!(conn.finish(), Some(Finish::Now));
}

#[test]
fn oversized_head_gets_431() {
    let mut conn = Connection::new(LIMITS, Instant::now());
    conn.handle_input(b"GET / HTTP/1.1\r\n");
    let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
    for _ in 0..9 {
        conn.handle_input(filler.as_bytes());
    }
    let (events_seen, out) = drain(&mut conn);
    assert!(out[0].starts_with(b"HTTP/1.1 431 "));
    assert!(matches!(events_seen[..], [Event::HandshakeFailed(_)]));
    assert_eq!(conn.finish(), Some(Finish::AfterFlush));
}

#[test]
fn eof_while_open_is_abnormal() {
    let (mut conn, _) = open();
    conn.handle_input(&frame(false, 0x1, b"half"));
    conn.handle_eof();
    assert_eq!(
        events(&mut conn),
        [Event::Closed {
            code: CloseCode::ABNORMAL,
            by_peer: true
        }]
    );
    // Replies already queued may still reach a peer that only half-closed.
    assert_eq!(conn.finish(), Some(Finish::AfterFlush));
}

#[test]
fn plain_request_is_answered_and_closed() {
    let mut conn = Connection::new(LIMITS, Instant::now());
    conn.handle_input(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    let Some(Event::Request(req)) = conn.poll_event() else {
        panic!("no request")
    };
    assert!(req.upgrade.is_none());
    assert!(
        conn.accept(&[]).is_err(),
        "a plain request cannot be upgraded"
    );
    conn.respond(b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
    assert_eq!(outputs(&mut conn).len(), 1);
    assert_eq!(conn.finish(), Some(Finish::AfterFlush));
}

#[test]
fn a_reply_to_a_message_fits_between_the_101_and_our_close() {
    // Request, a message and a Close in one read: the application's reply to the message
    // must follow the 101 and precede the Close echo.
    let mut conn = Connection::new(LIMITS, Instant::now());
    let mut bytes = UPGRADE.to_vec();
    bytes.extend(text("echo me"));
    bytes.extend(close_frame(1000, b""));
    conn.handle_input(&bytes);
    let mut wire: Vec<Vec<u8>> = Vec::new();
    loop {
        while let Some(frame) = conn.poll_output() {
            wire.push(frame.to_vec());
        }
        match conn.poll_event() {
            Some(Event::Request(_)) => conn.accept(&[]).unwrap(),
            Some(Event::Message(m)) => {
                assert!(conn.accepts_messages(), "the Close has not been taken yet");
                wire.push(m.data);
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(wire[0].starts_with(b"HTTP/1.1 101"));
    assert_eq!(wire[1], b"echo me");
    assert_eq!(close_code_of(&wire[2]), Some(1000));
    assert!(!conn.accepts_messages(), "nothing may follow the Close");
}

#[test]
fn oversized_head_arriving_whole_gets_431() {
    // Regression: the limit was only checked while the head was still incomplete.
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let mut conn = Connection::new(LIMITS, Instant::now());
    conn.handle_input(head.as_bytes());
    let (events_seen, out) = drain(&mut conn);
    assert!(out[0].starts_with(b"HTTP/1.1 431 "));
    assert!(matches!(events_seen[..], [Event::HandshakeFailed(_)]));
}

#[test]
fn a_heartbeat_ping_goes_out_only_while_open_and_its_pong_counts_as_a_frame() {
    let (mut conn, now) = open();
    conn.take_frames_received();
    conn.ping(b"hb");
    let ping = conn.poll_output().expect("the ping");
    assert_eq!(&ping[..], &[0x89, 2, b'h', b'b']);
    conn.handle_input(&frame(true, 0xA, b"hb"));
    assert_eq!(
        conn.take_frames_received(),
        1,
        "the pong is a received frame"
    );
    assert_eq!(conn.poll_event(), None, "a pong is not an event");
    conn.close(CloseCode::GOING_AWAY, now);
    while conn.poll_output().is_some() {}
    conn.ping(b"late");
    assert!(conn.poll_output().is_none(), "no ping after our Close");
}

/// Property tests (proptest, stable Rust, part of `cargo test`): the cases above pin known
/// byte vectors; these draw random frames, splits, masking keys and text, and shrink any
/// failure to a minimal case. The fuzz targets (fuzz/, nightly) run the same kind of checks
/// from `ws::fuzzing` on mutated bytes.
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::ws::frame::MAX_CONTROL_PAYLOAD;
    use crate::ws::fuzzing;
    use crate::ws::mask::apply_mask;
    use crate::ws::utf8::Utf8Validator;

    const OPCODES: [Opcode; 6] = [
        Opcode::Continuation,
        Opcode::Text,
        Opcode::Binary,
        Opcode::Close,
        Opcode::Ping,
        Opcode::Pong,
    ];

    /// Where the encoding of the length changes (RFC 6455 5.2), and the largest legal length.
    const LENGTH_BOUNDARIES: [u64; 8] = [0, 125, 126, 127, 0xfffe, 0xffff, 0x1_0000, u64::MAX >> 1];

    /// Payload lengths from each length class (7, 16 and 63 bits) and their boundaries.
    fn payload_len() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..=125,
            126u64..=0xffff,
            0x1_0000u64..=u64::MAX >> 1,
            prop::sample::select(LENGTH_BOUNDARIES.to_vec()),
        ]
    }

    /// The byte-at-a-time definition of masking (RFC 6455 5.3), the reference for the fast path.
    fn mask_reference(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset.wrapping_add(i)) % 4];
        }
    }

    /// A masked client frame with any FIN, opcode and key (the helpers above fix the key).
    fn client_frame(fin: bool, opcode: Opcode, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin,
            rsv1: false,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], key, 0);
        out
    }

    /// Cuts `data` at the (sorted) positions `cuts` picks; empty pieces are allowed.
    fn cut<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for p in points {
            pieces.push(&data[start..p]);
            start = p;
        }
        pieces.push(&data[start..]);
        pieces
    }

    /// A client message: text or binary, cut into fragments, with pings between fragments.
    #[derive(Debug, Clone)]
    struct ClientMessage {
        kind: MessageKind,
        data: Vec<u8>,
        cuts: Vec<Index>,
        /// (after which fragment, payload)
        pings: Vec<(Index, Vec<u8>)>,
        key: [u8; 4],
    }

    fn client_message() -> impl Strategy<Value = ClientMessage> {
        let data = prop_oneof![
            // Any char, so 2-, 3- and 4-byte sequences get cut between fragments.
            vec(any::<char>(), 0..40)
                .prop_map(|cs| (MessageKind::Text, String::from_iter(cs).into_bytes())),
            vec(any::<u8>(), 0..300).prop_map(|b| (MessageKind::Binary, b)),
        ];
        (
            data,
            vec(any::<Index>(), 0..4),
            vec((any::<Index>(), vec(any::<u8>(), 0..20)), 0..3),
            any::<[u8; 4]>(),
        )
            .prop_map(|((kind, data), cuts, pings, key)| ClientMessage {
                kind,
                data,
                cuts,
                pings,
                key,
            })
    }

    /// The wire bytes of `messages`, the events they must give and the pongs they must get.
    fn encode_messages(messages: &[ClientMessage]) -> (Vec<u8>, Vec<Event>, Vec<Vec<u8>>) {
        let (mut wire, mut events, mut pongs) = (Vec::new(), Vec::new(), Vec::new());
        for m in messages {
            let fragments = cut(&m.data, &m.cuts);
            let mut ping_at: Vec<(usize, &[u8])> = m
                .pings
                .iter()
                .map(|(i, p)| (i.index(fragments.len()), &p[..]))
                .collect();
            ping_at.sort_by_key(|(i, _)| *i);
            for (n, fragment) in fragments.iter().enumerate() {
                let opcode = match (n, m.kind) {
                    (0, MessageKind::Text) => Opcode::Text,
                    (0, MessageKind::Binary) => Opcode::Binary,
                    _ => Opcode::Continuation,
                };
                let fin = n + 1 == fragments.len();
                wire.extend(client_frame(fin, opcode, m.key, fragment));
                for (_, ping) in ping_at.iter().filter(|(at, _)| *at == n) {
                    wire.extend(client_frame(true, Opcode::Ping, m.key, ping));
                    pongs.push(encode_frame(Opcode::Pong, &[ping], None));
                }
            }
            events.push(message(m.kind, &m.data));
        }
        (wire, events, pongs)
    }

    proptest! {
        #[test]
        fn frame_header_encode_parse_round_trip(
            opcode in prop::sample::select(OPCODES.to_vec()),
            fin: bool,
            rsv1: bool,
            len in payload_len(),
            mask: Option<[u8; 4]>,
        ) {
            // Control frames are final and short by definition (RFC 6455 5.5).
            let (fin, len) = if opcode.is_control() {
                (true, len % (MAX_CONTROL_PAYLOAD as u64 + 1))
            } else {
                (fin, len)
            };
            let header = FrameHeader { fin, rsv1, opcode, mask, payload_len: len };
            let mut bytes = Vec::new();
            header.encode(&mut bytes);
            prop_assert_eq!(bytes.len(), FrameHeader::encoded_len(len as usize, mask.is_some()));
            let whole = Ok(Some((header, bytes.len())));
            prop_assert_eq!(FrameHeader::parse_with_rsv1(&bytes), whole);
            // Without an extension, RSV1 is an error from the first byte on.
            let strict = if rsv1 { Err(ProtocolError::ReservedBits) } else { whole };
            prop_assert_eq!(FrameHeader::parse(&bytes), strict);
            for cut in 0..bytes.len() {
                prop_assert_eq!(FrameHeader::parse_with_rsv1(&bytes[..cut]), Ok(None), "cut {}", cut);
            }
            // What follows the header (the payload) is not the parser's business.
            bytes.extend_from_slice(&[0xff; 4]);
            prop_assert_eq!(
                FrameHeader::parse_with_rsv1(&bytes),
                Ok(Some((header, bytes.len() - 4)))
            );
        }

        #[test]
        fn encode_frame_from_parts_unmasks_to_the_payload(
            payload in vec(any::<u8>(), 0..600),
            cuts in vec(any::<Index>(), 0..4),
            mask: Option<[u8; 4]>,
        ) {
            let parts = cut(&payload, &cuts);
            let frame = encode_frame(Opcode::Binary, &parts, mask);
            let (header, header_len) = FrameHeader::parse(&frame).unwrap().unwrap();
            prop_assert_eq!(header.mask, mask);
            prop_assert_eq!(header.payload_len as usize, payload.len());
            let mut body = frame[header_len..].to_vec();
            if let Some(key) = mask {
                apply_mask(&mut body, key, 0);
            }
            prop_assert_eq!(body, payload);
        }

        #[test]
        fn client_messages_give_the_same_events_whole_and_in_random_reads(
            messages in vec(client_message(), 1..5),
            reads in vec(1usize..80, 1..6),
        ) {
            let (wire, want_events, want_pongs) = encode_messages(&messages);
            let (mut whole, _) = open();
            whole.handle_input(&wire);
            let (events_whole, out_whole) = drain(&mut whole);
            prop_assert_eq!(&events_whole, &want_events);
            prop_assert_eq!(&out_whole, &want_pongs);

            let (mut split, _) = open();
            let (mut events_split, mut out_split) = (Vec::new(), Vec::new());
            let mut rest = &wire[..];
            for &n in reads.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (read, tail) = rest.split_at(n.min(rest.len()));
                split.handle_input(read);
                let (e, o) = drain(&mut split);
                events_split.extend(e);
                out_split.extend(o);
                rest = tail;
            }
            prop_assert_eq!(events_split, events_whole);
            prop_assert_eq!(out_split, out_whole);
            prop_assert!(split.is_open());
        }

        /// mask.rs checks every length below 300, alignment and offset with one key and fixed
        /// bytes; this adds random keys, contents, longer buffers and offsets of any size.
        #[test]
        fn fast_masking_matches_the_byte_loop(
            bytes in vec(any::<u8>(), 0..1100),
            start in 0usize..16,
            key: [u8; 4],
            offset: usize,
        ) {
            let start = start.min(bytes.len());
            let mut fast = bytes.clone();
            let mut slow = bytes.clone();
            apply_mask(&mut fast[start..], key, offset);
            mask_reference(&mut slow[start..], key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn masking_in_random_pieces_equals_masking_whole(
            bytes in vec(any::<u8>(), 0..600),
            cuts in vec(any::<Index>(), 0..5),
            key: [u8; 4],
        ) {
            let mut whole = bytes.clone();
            apply_mask(&mut whole, key, 0);
            let mut pieces = Vec::new();
            let mut offset = 0;
            for piece in cut(&bytes, &cuts) {
                let mut piece = piece.to_vec();
                apply_mask(&mut piece, key, offset);
                offset += piece.len();
                pieces.extend(piece);
            }
            prop_assert_eq!(pieces, whole);
        }

        #[test]
        fn valid_utf8_is_accepted_split_at_every_byte(chars in vec(any::<char>(), 0..40)) {
            let text = String::from_iter(chars).into_bytes();
            for split in 0..=text.len() {
                let mut v = Utf8Validator::default();
                prop_assert!(v.feed(&text[..split]).is_ok(), "split {}", split);
                prop_assert!(v.feed(&text[split..]).is_ok(), "split {}", split);
                prop_assert!(v.finish().is_ok(), "split {}", split);
            }
            let mut v = Utf8Validator::default();
            for b in &text {
                prop_assert!(v.feed(std::slice::from_ref(b)).is_ok());
            }
            prop_assert!(v.finish().is_ok());
        }

        /// One byte of valid text replaced: rejected exactly when std rejects it, failing on the
        /// read that makes the text impossible (`fuzzing::check_utf8`'s oracle), for every
        /// read size up to 8 bytes.
        #[test]
        fn mutated_utf8_is_rejected_exactly_when_std_rejects_it(
            chars in vec(any::<char>(), 1..30),
            at: Index,
            byte: u8,
        ) {
            let mut text = String::from_iter(chars).into_bytes();
            let i = at.index(text.len());
            text[i] = byte;
            for read in 1u8..=8 {
                // Plan: one chunk-size byte, `read`; see `fuzzing::Plan`.
                let input = [&[1u8, read][..], &text].concat();
                fuzzing::check_utf8(&input);
            }
            // Two reads at every split, against std directly.
            for split in 0..=text.len() {
                let mut v = Utf8Validator::default();
                let ok = v.feed(&text[..split]).is_ok()
                    && v.feed(&text[split..]).is_ok()
                    && v.finish().is_ok();
                prop_assert_eq!(ok, std::str::from_utf8(&text).is_ok(), "split {}", split);
            }
        }

        /// The fuzz targets' frame check on random streams of valid messages with one byte
        /// possibly corrupted, so that stable CI exercises it beyond the committed corpus.
        #[test]
        fn fuzz_frame_check_holds_on_random_streams(
            messages in vec(client_message(), 0..4),
            plan in vec(any::<u8>(), 1..8),
            corrupt: Option<(Index, u8)>,
        ) {
            let (mut wire, _, _) = encode_messages(&messages);
            if let Some((at, byte)) = corrupt
                && !wire.is_empty()
            {
                let i = at.index(wire.len());
                wire[i] = byte;
            }
            // Byte 0: how many of the following plan bytes are chunk sizes, and the flags.
            let input = [&plan[..], &wire].concat();
            fuzzing::check_frames(&input, Instant::now());
        }
    }
}

#[test]
fn control_frames_beyond_the_budget_of_one_read_fail_with_1008() {
    let ping = frame(true, 0x9, b"p");
    let (mut conn, _) = open();
    // The budget holds per read: two reads of exactly the budget are answered in full.
    for _ in 0..2 {
        conn.handle_input(&ping.repeat(CONTROL_FRAMES_PER_INPUT as usize));
        assert_eq!(outputs(&mut conn).len(), CONTROL_FRAMES_PER_INPUT as usize);
    }
    conn.handle_input(&ping.repeat(CONTROL_FRAMES_PER_INPUT as usize + 1));
    let (events, out) = drain(&mut conn);
    assert_eq!(
        out.len(),
        CONTROL_FRAMES_PER_INPUT as usize + 1,
        "pongs, then Close"
    );
    assert_eq!(close_code_of(out.last().unwrap()), Some(1008));
    assert!(events.contains(&Event::Closed {
        code: CloseCode::POLICY_VIOLATION,
        by_peer: false
    }));
    assert!(conn.flooded());
}

#[test]
fn our_close_drops_the_messages_not_yet_taken() {
    let (mut conn, now) = open();
    let input = [text("one"), text("two"), text("three")].concat();
    conn.handle_input(&input);
    assert_eq!(conn.poll_event(), Some(message(MessageKind::Text, b"one")));
    conn.close(CloseCode::POLICY_VIOLATION, now);
    let (events, out) = drain(&mut conn);
    assert_eq!(
        events,
        [Event::Closed {
            code: CloseCode::POLICY_VIOLATION,
            by_peer: false
        }]
    );
    assert_eq!(out.len(), 1);
    assert_eq!(close_code_of(&out[0]), Some(1008));
}

#[test]
fn held_input_is_parsed_one_message_at_a_time() {
    let (mut conn, _) = open();
    conn.hold_after_message();
    conn.handle_input(&[text("one"), text("two")].concat());
    conn.handle_input(&[text("three"), frame(true, 0x9, b"p")].concat());
    conn.handle_eof();
    assert_eq!(events(&mut conn), [message(MessageKind::Text, b"one")]);
    conn.resume_input();
    assert_eq!(events(&mut conn), [message(MessageKind::Text, b"two")]);
    conn.resume_input();
    assert_eq!(events(&mut conn), [message(MessageKind::Text, b"three")]);
    // Behind the last message: the ping is answered, then the end of input is seen.
    conn.resume_input();
    let (taken, out) = drain(&mut conn);
    assert_eq!(out.len(), 1, "the pong");
    assert_eq!(
        taken,
        [Event::Closed {
            code: CloseCode::ABNORMAL,
            by_peer: true
        }]
    );
}

#[test]
fn a_fragment_is_not_a_sign_of_life_but_a_whole_message_or_a_ping_is() {
    let (mut conn, _) = open();
    conn.handle_input(&frame(false, 0x1, b"par"));
    assert!(!conn.take_heard());
    assert!(conn.message_in_progress());
    conn.handle_input(&frame(true, 0x9, b""));
    assert!(conn.take_heard());
    conn.handle_input(&frame(true, 0x0, b"t"));
    assert!(conn.take_heard());
    assert!(!conn.message_in_progress());
}

/// permessage-deflate (RFC 7692) through the state machine: negotiation at `accept`, RSV1
/// rules, inflation with the message limit and UTF-8 on the inflated bytes.
mod deflate {
    use super::*;
    use crate::ws::deflate::Compressor;
    use crate::ws::frame::RSV1_BIT;

    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn upgrade_offering(extensions: &str) -> Vec<u8> {
        let head = std::str::from_utf8(UPGRADE).unwrap();
        head.replacen(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"),
            1,
        )
        .into_bytes()
    }

    /// Upgrades with `offer`; returns the connection and the 101's extension header, if any.
    fn open_offering(offer: &str, deflate: bool) -> (Connection, Option<String>) {
        let mut conn = Connection::new(LIMITS, Instant::now());
        conn.handle_input(&upgrade_offering(offer));
        assert!(matches!(conn.poll_event(), Some(Event::Request(_))));
        conn.accept_with_deflate(&[], deflate).unwrap();
        let response = String::from_utf8(conn.poll_output().unwrap().to_vec()).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
        let header = response
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .map(String::from);
        (conn, header)
    }

    fn open_deflate() -> Connection {
        let (conn, header) = open_offering("permessage-deflate", true);
        assert!(header.is_some());
        conn
    }

    /// A masked client frame with RSV1 set as asked.
    fn rsv_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = frame(fin, opcode, payload);
        if rsv1 {
            f[0] |= RSV1_BIT;
        }
        f
    }

    fn compressed_text(data: &[u8]) -> Vec<u8> {
        rsv_frame(true, true, 0x1, &Compressor::default().compress(data, 15))
    }

    #[test]
    fn the_101_names_the_agreed_extension_only_with_deflate_on() {
        let (conn, header) = open_offering("permessage-deflate; client_max_window_bits", true);
        assert_eq!(
            header.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert!(conn.deflate().is_some());
        let (conn, header) = open_offering("permessage-deflate", false);
        assert_eq!(header, None);
        assert_eq!(conn.deflate(), None);
        // Every offer declined: a 101 without the header.
        let (conn, header) = open_offering("permessage-deflate; server_max_window_bits=8", true);
        assert_eq!((header, conn.deflate()), (None, None));
    }

    #[test]
    fn broken_extension_syntax_is_400() {
        let mut conn = Connection::new(LIMITS, Instant::now());
        conn.handle_input(&upgrade_offering("permessage-deflate; ="));
        let (events, out) = drain(&mut conn);
        assert!(matches!(
            events[..],
            [Event::HandshakeFailed(HandshakeError::InvalidExtensions)]
        ));
        assert!(out[0].starts_with(b"HTTP/1.1 400 "));
    }

    #[test]
    fn rfc_hello_is_inflated_whole_and_split_anywhere() {
        let wire = rsv_frame(true, true, 0x1, &HELLO);
        for cut in 0..=wire.len() {
            let mut conn = open_deflate();
            conn.handle_input(&wire[..cut]);
            conn.handle_input(&wire[cut..]);
            assert_eq!(
                events(&mut conn),
                [message(MessageKind::Text, b"Hello")],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn fragmented_compressed_message_with_a_ping_between() {
        let data = "compressed across fragments ".repeat(20);
        let z = Compressor::default().compress(data.as_bytes(), 15);
        let (a, b) = z.split_at(z.len() / 2);
        let mut conn = open_deflate();
        conn.handle_input(&rsv_frame(false, true, 0x1, a));
        conn.handle_input(&frame(true, 0x9, b"p"));
        conn.handle_input(&rsv_frame(false, false, 0x0, &[]));
        conn.handle_input(&rsv_frame(true, false, 0x0, b));
        let (got, out) = drain(&mut conn);
        assert_eq!(got, [message(MessageKind::Text, data.as_bytes())]);
        assert_eq!(out, [vec![0x8a, 0x01, b'p']]);
        // Uncompressed messages still work on the same connection.
        conn.handle_input(&text("plain"));
        assert_eq!(events(&mut conn), [message(MessageKind::Text, b"plain")]);
        // An empty compressed message.
        conn.handle_input(&rsv_frame(true, true, 0x2, &[]));
        assert_eq!(events(&mut conn), [message(MessageKind::Binary, b"")]);
    }

    #[test]
    fn rsv1_on_a_continuation_or_control_frame_or_without_deflate_is_1002() {
        let mut conn = open_deflate();
        conn.handle_input(&rsv_frame(false, false, 0x1, b"a"));
        conn.handle_input(&rsv_frame(true, true, 0x0, b"b"));
        assert_failed_with(&mut conn, 1002);
        let mut conn = open_deflate();
        conn.handle_input(&rsv_frame(true, true, 0x9, b""));
        assert_failed_with(&mut conn, 1002);
        let (mut conn, _) = open();
        conn.handle_input(&rsv_frame(true, true, 0x1, &HELLO));
        assert_failed_with(&mut conn, 1002);
    }

    #[test]
    fn a_decompression_bomb_closes_with_1009() {
        let zeros = vec![0u8; 64 * LIMITS.max_message];
        let mut conn = open_deflate();
        let wire = rsv_frame(true, true, 0x2, &Compressor::default().compress(&zeros, 15));
        assert!(wire.len() < LIMITS.max_message);
        conn.handle_input(&wire);
        assert_failed_with(&mut conn, 1009);
        // Exactly the limit inflated is fine.
        let mut conn = open_deflate();
        let z = Compressor::default().compress(&zeros[..LIMITS.max_message], 15);
        conn.handle_input(&rsv_frame(true, true, 0x2, &z));
        assert_eq!(
            events(&mut conn),
            [message(MessageKind::Binary, &zeros[..LIMITS.max_message])]
        );
    }

    #[test]
    fn a_stream_of_bombs_runs_out_of_inflate_credit_and_gets_1008() {
        // Each message inflates to the limit from a dozen bytes: far past INFLATE_RATIO, so
        // the burst of one max_message drains and the connection fails with a policy close.
        let zeros = vec![0u8; LIMITS.max_message];
        let compressed = Compressor::default().compress(&zeros, 15);
        assert!((compressed.len() as u64) * INFLATE_RATIO < LIMITS.max_message as u64);
        let bomb = rsv_frame(true, true, 0x2, &compressed);
        let mut conn = open_deflate();
        let mut delivered = 0;
        for _ in 0..64 {
            conn.handle_input(&bomb);
            if conn.flooded() {
                break;
            }
            delivered += events(&mut conn).len();
        }
        assert!(conn.flooded(), "64 bombs and still inflating");
        assert!(delivered >= 1, "the first bomb fits the burst");
        assert_failed_with(&mut conn, 1008);
    }

    #[test]
    fn text_that_compresses_like_text_never_runs_out_of_credit() {
        let line = b"the quick brown fox jumps over the lazy dog, again and again; ".repeat(8);
        let wire = compressed_text(&line);
        let mut conn = open_deflate();
        for _ in 0..1000 {
            conn.handle_input(&wire);
            assert_eq!(events(&mut conn), [message(MessageKind::Text, &line)]);
        }
    }

    #[test]
    fn invalid_utf8_after_inflation_is_1007_and_garbage_is_1007() {
        let mut conn = open_deflate();
        conn.handle_input(&compressed_text(&[b'a', 0xff, b'b']));
        assert_failed_with(&mut conn, 1007);
        // Ending inside a character is only seen once the trailer is inflated.
        let mut conn = open_deflate();
        conn.handle_input(&compressed_text(&[b'a', 0xe2, 0x82]));
        assert_failed_with(&mut conn, 1007);
        let mut conn = open_deflate();
        conn.handle_input(&rsv_frame(true, true, 0x2, &[0xff, 0xff, 0xff]));
        assert_failed_with(&mut conn, 1007);
    }
}
