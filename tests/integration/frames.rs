//! The WebSocket framing layer, driven with hand-built frames on /echo:
//! protocol errors (1002), invalid UTF-8 (1007), oversized messages (1009),
//! the closing handshake, ping/pong and fragmentation.
//!
//! Every bad-input test ends by checking that a fresh client is still served.

use std::io::Write;
use std::thread;

use crate::common::*;

/// Opens a raw /echo connection, sends `frames`, and asserts the close code.
fn bad_frames(server: &Server, frames: &[Frame], code: u16, what: &str) {
    let mut s = server.raw_ws("/echo");
    send_frames(&mut s, frames);
    assert_close_code(&mut s, code, what);
}

wstest!(frames_unmasked_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::text("hi").unmasked()],
        1002,
        "unmasked text",
    );
    bad_frames(
        &server,
        &[Frame::ping("p").unmasked()],
        1002,
        "unmasked ping",
    );
    server.assert_still_serving();
});

wstest!(frames_rsv_bits_1002, |s| {
    let server = s.server();
    for rsv in [0b100, 0b010, 0b001, 0b111] {
        bad_frames(
            &server,
            &[Frame::text("hi").rsv(rsv)],
            1002,
            &format!("rsv {rsv:03b}"),
        );
    }
    server.assert_still_serving();
});

wstest!(frames_reserved_opcodes_1002, |s| {
    let server = s.server();
    for op in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        bad_frames(
            &server,
            &[Frame::new(op, "x")],
            1002,
            &format!("opcode {op:#x}"),
        );
    }
    server.assert_still_serving();
});

wstest!(frames_control_too_long_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::ping(vec![b'p'; 126])],
        1002,
        "126-byte ping",
    );
    bad_frames(
        &server,
        &[Frame::new(OP_PONG, vec![b'p'; 200])],
        1002,
        "200-byte pong",
    );
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(&[b'r'; 124]);
    bad_frames(
        &server,
        &[Frame::new(OP_CLOSE, close)],
        1002,
        "126-byte close",
    );
    server.assert_still_serving();
});

wstest!(frames_fragmented_control_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::ping("p").fin(false)],
        1002,
        "ping with FIN=0",
    );
    bad_frames(
        &server,
        &[Frame::close(1000, b"").fin(false)],
        1002,
        "close with FIN=0",
    );
    server.assert_still_serving();
});

wstest!(frames_continuation_without_start_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::cont("orphan")],
        1002,
        "lone final continuation",
    );
    bad_frames(
        &server,
        &[Frame::cont("orphan").fin(false)],
        1002,
        "lone continuation FIN=0",
    );
    // A complete message, then a stray continuation.
    let mut st = server.raw_ws("/echo");
    send_frames(&mut st, &[Frame::text("whole")]);
    assert_eq!(read_message(&mut st), (OP_TEXT, b"whole".to_vec()));
    send_frames(&mut st, &[Frame::cont("stray")]);
    assert_close_code(&mut st, 1002, "continuation after a complete message");
    server.assert_still_serving();
});

wstest!(frames_new_data_frame_mid_message_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::text("a").fin(false), Frame::text("b")],
        1002,
        "text inside fragmented text",
    );
    bad_frames(
        &server,
        &[Frame::binary("a").fin(false), Frame::text("b")],
        1002,
        "text inside fragmented binary",
    );
    bad_frames(
        &server,
        &[
            Frame::text("a").fin(false),
            Frame::cont("b").fin(false),
            Frame::binary("c").fin(false),
        ],
        1002,
        "binary inside fragmented text",
    );
    server.assert_still_serving();
});

wstest!(frames_non_minimal_length_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::text(vec![b'a'; 100]).len_enc(LenEnc::Ext16)],
        1002,
        "16-bit length 100",
    );
    bad_frames(
        &server,
        &[Frame::text(vec![b'a'; 100]).len_enc(LenEnc::Ext64)],
        1002,
        "64-bit length 100",
    );
    bad_frames(
        &server,
        &[Frame::text(vec![b'a'; 1000]).len_enc(LenEnc::Ext64)],
        1002,
        "64-bit length 1000",
    );
    bad_frames(
        &server,
        &[Frame::text(Vec::new()).len_enc(LenEnc::Ext16)],
        1002,
        "16-bit length 0",
    );
    server.assert_still_serving();
});

wstest!(frames_length_msb_set_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::binary(Vec::new()).len_enc(LenEnc::Raw64(0x8000_0000_0000_0010))],
        1002,
        "64-bit length with MSB set",
    );
    bad_frames(
        &server,
        &[Frame::binary(Vec::new()).len_enc(LenEnc::Raw64(u64::MAX))],
        1002,
        "64-bit length u64::MAX",
    );
    server.assert_still_serving();
});

wstest!(frames_invalid_utf8_1007, |s| {
    let server = s.server();
    let cases: &[(&[u8], &str)] = &[
        (b"\xC3\x28", "bad continuation byte"),
        (b"abc\xFF", "0xFF"),
        (b"\xC0\xAF", "overlong encoding"),
        (b"\xED\xA0\x80", "UTF-16 surrogate"),
        (b"\xF4\x90\x80\x80", "above U+10FFFF"),
        (b"ab\xE2\x82", "truncated at the end of the message"),
        (b"\x80", "lone continuation byte"),
    ];
    for (payload, what) in cases {
        bad_frames(&server, &[Frame::text(payload.to_vec())], 1007, what);
    }
    server.assert_still_serving();
});

wstest!(frames_invalid_utf8_across_fragments_1007, |s| {
    let server = s.server();
    // Fragment 1 ends with the first byte of a 3-byte sequence, fragment 2
    // continues with a byte that is not a continuation byte.
    bad_frames(
        &server,
        &[
            Frame::text(b"ab\xE2".to_vec()).fin(false),
            Frame::cont(b"(cd".to_vec()),
        ],
        1007,
        "sequence broken across fragments",
    );
    // Incomplete sequence at the very end of a fragmented message.
    bad_frames(
        &server,
        &[
            Frame::text(b"ab\xE2".to_vec()).fin(false),
            Frame::cont(b"\x82".to_vec()),
        ],
        1007,
        "incomplete sequence at the end of the last fragment",
    );
    bad_frames(
        &server,
        &[
            Frame::text(b"ab\xE2".to_vec()).fin(false),
            Frame::cont(Vec::new()),
        ],
        1007,
        "incomplete sequence, empty final fragment",
    );
    server.assert_still_serving();
});

wstest!(frames_invalid_utf8_fail_fast_1007, |s| {
    let server = s.server();
    // Only the first fragment is sent: the server must not wait for the end
    // of the message to reject it.
    let mut st = server.raw_ws("/echo");
    send_frames(
        &mut st,
        &[Frame::text(b"ok so far \xFF".to_vec()).fin(false)],
    );
    assert_close_code(&mut st, 1007, "invalid first fragment");
    let mut st = server.raw_ws("/echo");
    send_frames(
        &mut st,
        &[
            Frame::text("fine".as_bytes()).fin(false),
            Frame::cont(b"\xC3\x28".to_vec()).fin(false),
        ],
    );
    assert_close_code(&mut st, 1007, "invalid middle fragment");
    server.assert_still_serving();
});

wstest!(frames_valid_utf8_split_across_fragments, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    // "ab€" with the euro sign (E2 82 AC) split 2 + 1.
    send_frames(
        &mut st,
        &[
            Frame::text(b"ab\xE2\x82".to_vec()).fin(false),
            Frame::cont(b"\xAC".to_vec()),
        ],
    );
    assert_eq!(read_message(&mut st), (OP_TEXT, "ab€".as_bytes().to_vec()));
    // "😀" (F0 9F 98 80) split into 1 + 2 + 1, with an empty fragment too.
    send_frames(
        &mut st,
        &[
            Frame::text(b"\xF0".to_vec()).fin(false),
            Frame::cont(b"\x9F\x98".to_vec()).fin(false),
            Frame::cont(Vec::new()).fin(false),
            Frame::cont(b"\x80!".to_vec()),
        ],
    );
    assert_eq!(read_message(&mut st), (OP_TEXT, "😀!".as_bytes().to_vec()));
    send_frames(&mut st, &[Frame::close(1000, b"")]);
    assert_eq!(read_close(&mut st), Some(1000));
});

wstest!(frames_fragmented_messages_reassembled, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    send_frames(
        &mut st,
        &[
            Frame::text("Hel").fin(false),
            Frame::cont("lo, ").fin(false),
            Frame::cont("world"),
        ],
    );
    assert_eq!(read_message(&mut st), (OP_TEXT, b"Hello, world".to_vec()));
    send_frames(
        &mut st,
        &[
            Frame::binary(vec![0u8, 1]).fin(false),
            Frame::cont(vec![2u8, 255]),
        ],
    );
    assert_eq!(read_message(&mut st), (OP_BINARY, vec![0u8, 1, 2, 255]));
    // Empty messages.
    send_frames(&mut st, &[Frame::text(Vec::new())]);
    assert_eq!(read_message(&mut st), (OP_TEXT, Vec::new()));
    send_frames(&mut st, &[Frame::binary(Vec::new())]);
    assert_eq!(read_message(&mut st), (OP_BINARY, Vec::new()));
});

/// Streams `frames` on a writer thread (the server may stop reading and close
/// early, so write errors are ignored) and asserts the close code.
fn bad_big_frames(server: &Server, frames: Vec<Frame>, code: u16, what: &str) {
    let mut st = server.raw_ws("/echo");
    let mut w = st.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for f in frames {
            if w.write_all(&f.encode()).is_err() {
                break;
            }
        }
    });
    let got = read_close(&mut st);
    assert_eq!(got, Some(code), "{what}: wrong close code");
    expect_eof(&mut st);
    writer.join().unwrap();
}

wstest!(frames_message_too_big_1009, |s| {
    let server = s.server();
    let two_mib = 2 * 1024 * 1024;
    bad_big_frames(
        &server,
        vec![Frame::binary(vec![7u8; two_mib])],
        1009,
        "2 MiB binary frame",
    );
    bad_big_frames(
        &server,
        vec![Frame::text(vec![b'x'; two_mib])],
        1009,
        "2 MiB text frame",
    );
    let fragments: Vec<Frame> = (0..8)
        .map(|i| {
            let f = if i == 0 {
                Frame::text(vec![b'y'; two_mib / 8])
            } else {
                Frame::cont(vec![b'y'; two_mib / 8])
            };
            f.fin(i == 7)
        })
        .collect();
    bad_big_frames(&server, fragments, 1009, "2 MiB text in 8 fragments");
    server.assert_still_serving();
});

wstest!(frames_message_under_limit_ok, |s| {
    let server = s.server();
    let mut ws = server.connect("/echo");
    let payload: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(tungstenite::Message::binary(payload.clone()))
        .unwrap();
    assert_eq!(recv_binary(&mut ws), payload);
});

wstest!(frames_max_message_flag, |s| {
    let server = s.server_with(&["--max-message", "1000"]);
    let mut st = server.raw_ws("/echo");
    send_frames(&mut st, &[Frame::text(vec![b'a'; 1000])]);
    assert_eq!(read_message(&mut st), (OP_TEXT, vec![b'a'; 1000]));
    send_frames(&mut st, &[Frame::text(vec![b'a'; 1001])]);
    assert_close_code(&mut st, 1009, "1001 bytes over --max-message 1000");
    let mut st = server.raw_ws("/echo");
    send_frames(
        &mut st,
        &[
            Frame::text(vec![b'a'; 600]).fin(false),
            Frame::cont(vec![b'a'; 600]),
        ],
    );
    assert_close_code(
        &mut st,
        1009,
        "2 x 600-byte fragments over --max-message 1000",
    );
    server.assert_still_serving();
});

wstest!(frames_close_one_byte_payload_1002, |s| {
    let server = s.server();
    bad_frames(
        &server,
        &[Frame::new(OP_CLOSE, vec![0x03])],
        1002,
        "1-byte close payload",
    );
    server.assert_still_serving();
});

wstest!(frames_close_invalid_code_1002, |s| {
    let server = s.server();
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        bad_frames(
            &server,
            &[Frame::close(code, b"")],
            1002,
            &format!("close code {code}"),
        );
    }
    server.assert_still_serving();
});

wstest!(frames_close_invalid_utf8_reason_1007, |s| {
    let server = s.server();
    for code in [1000u16, 1001, 3000, 4999] {
        bad_frames(
            &server,
            &[Frame::close(code, b"bad \xFF reason")],
            1007,
            &format!("close {code} with bad reason"),
        );
    }
    server.assert_still_serving();
});

wstest!(frames_close_echoes_code, |s| {
    let server = s.server();
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999,
    ] {
        let mut st = server.raw_ws("/echo");
        send_frames(&mut st, &[Frame::close(code, "bye ✓".as_bytes())]);
        assert_eq!(read_close(&mut st), Some(code), "reply to close {code}");
        expect_eof(&mut st);
    }
    server.assert_still_serving();
});

wstest!(frames_close_empty_echoes_empty, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    send_frames(&mut st, &[Frame::new(OP_CLOSE, Vec::new())]);
    let mut reply = None;
    for _ in 0..10 {
        let f = read_frame(&mut st).expect("close reply");
        if f.opcode == OP_CLOSE {
            reply = Some(f);
            break;
        }
    }
    let reply = reply.expect("no close reply");
    assert!(
        reply.payload.is_empty(),
        "empty close answered with payload {:?}",
        reply.payload
    );
    expect_eof(&mut st);
    server.assert_still_serving();
});

wstest!(frames_close_after_messages, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    send_frames(
        &mut st,
        &[
            Frame::text("one"),
            Frame::text("two"),
            Frame::close(1000, b"done"),
        ],
    );
    assert_eq!(read_message(&mut st), (OP_TEXT, b"one".to_vec()));
    assert_eq!(read_message(&mut st), (OP_TEXT, b"two".to_vec()));
    assert_eq!(read_close(&mut st), Some(1000));
    expect_eof(&mut st);
});

wstest!(frames_close_timeout_when_client_never_answers, |s| {
    let server = s.server_with(&["--close-timeout", "500ms"]);
    let mut st = server.raw_ws("/echo");
    send_frames(&mut st, &[Frame::text("hi").unmasked()]);
    // Do not answer the server's close: it must still hang up on its own.
    assert_eq!(read_close(&mut st), Some(1002));
    expect_eof(&mut st);
    server.assert_still_serving();
});

wstest!(frames_ping_gets_pong, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    for payload in [b"hello".to_vec(), Vec::new(), vec![0xABu8; 125]] {
        send_frames(&mut st, &[Frame::ping(payload.clone())]);
        let f = read_frame(&mut st).expect("pong");
        assert_eq!(f.opcode, OP_PONG, "{f:?}");
        assert!(f.fin);
        assert_eq!(f.payload, payload);
    }
    // An unsolicited pong is ignored.
    send_frames(
        &mut st,
        &[
            Frame::new(OP_PONG, "unsolicited"),
            Frame::text("after pong"),
        ],
    );
    assert_eq!(read_message(&mut st), (OP_TEXT, b"after pong".to_vec()));
});

wstest!(frames_ping_inside_fragmented_message, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    send_frames(
        &mut st,
        &[
            Frame::text("Hel").fin(false),
            Frame::ping("mid"),
            Frame::cont("lo").fin(false),
            Frame::ping("mid2"),
            Frame::cont("!"),
        ],
    );
    let mut pongs = Vec::new();
    let mut text = None;
    let mut data = Vec::new();
    for _ in 0..20 {
        let f = read_frame(&mut st).expect("frame");
        match f.opcode {
            OP_PONG => pongs.push(f.payload),
            OP_TEXT | OP_CONT => {
                data.extend_from_slice(&f.payload);
                if f.fin {
                    text = Some(std::mem::take(&mut data));
                }
            }
            other => panic!("unexpected opcode {other:#x}"),
        }
        if pongs.len() == 2 && text.is_some() {
            break;
        }
    }
    assert_eq!(pongs, vec![b"mid".to_vec(), b"mid2".to_vec()]);
    assert_eq!(text.as_deref(), Some(&b"Hello!"[..]));
});

wstest!(frames_byte_by_byte_delivery, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    // One frame dribbled a byte per write, to exercise partial reads.
    let bytes = Frame::text("dribbled €").encode();
    for b in bytes {
        st.write_all(&[b]).unwrap();
        st.flush().unwrap();
    }
    assert_eq!(
        read_message(&mut st),
        (OP_TEXT, "dribbled €".as_bytes().to_vec())
    );
    // Many frames in one write.
    let frames: Vec<Frame> = (0..50).map(|i| Frame::text(format!("m{i}"))).collect();
    send_frames(&mut st, &frames);
    for i in 0..50 {
        assert_eq!(
            read_message(&mut st),
            (OP_TEXT, format!("m{i}").into_bytes())
        );
    }
});

wstest!(frames_length_encoding_boundaries, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
        send_frames(&mut st, &[Frame::binary(payload.clone())]);
        let (op, got) = read_message(&mut st);
        assert_eq!(op, OP_BINARY, "len {len}");
        assert!(
            got == payload,
            "len {len}: echoed {} bytes, differs",
            got.len()
        );
    }
});

wstest!(frames_any_mask_key, |s| {
    let server = s.server();
    let mut st = server.raw_ws("/echo");
    for mask in [
        [0u8, 0, 0, 0],
        [0xFF; 4],
        [1, 2, 3, 4],
        [0x80, 0, 0x7F, 0xAA],
    ] {
        let mut f = Frame::text("masked differently");
        f.mask = Some(mask);
        send_frames(&mut st, &[f]);
        assert_eq!(
            read_message(&mut st),
            (OP_TEXT, b"masked differently".to_vec()),
            "mask {mask:?}"
        );
    }
});
