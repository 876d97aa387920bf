//! permessage-deflate (RFC 7692, `--deflate`): negotiation outcomes, compressed chat between
//! members, and the ways a compressed message can be wrong.
//!
//! Frames are built and read by hand; compression and inflation in the tests go through
//! flate2's streaming `write::DeflateEncoder` / `read::DeflateDecoder`, not through the
//! server's own code.

use std::io::{Read, Write};
use std::net::TcpStream;

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

use crate::common::*;

const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Raw deflate with a sync flush, its `00 00 ff ff` tail removed (RFC 7692 7.2.1).
fn compress(data: &[u8]) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.flush().unwrap();
    let mut out = enc.get_ref().clone();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    // The stream has no end marker: reading stops with an error once the input runs out,
    // after everything was produced.
    let mut dec = DeflateDecoder::new(&input[..]);
    let mut buf = [0u8; 4096];
    loop {
        match dec.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// A raw upgrade offering `offer` (none when empty); returns the 101's
/// `Sec-WebSocket-Extensions`, or `Err(status)`.
fn upgrade(server: &Server, path: &str, offer: &str) -> Result<(TcpStream, Option<String>), u16> {
    let mut s = server.tcp();
    let ext = format!("Sec-WebSocket-Extensions: {offer}");
    let extra: &[&str] = if offer.is_empty() { &[] } else { &[&ext] };
    s.write_all(&upgrade_head(server.addr(), path, extra))
        .unwrap();
    let resp = read_http_head(&mut s).expect("response head");
    if resp.status != 101 {
        return Err(resp.status);
    }
    let header = resp.header("sec-websocket-extensions").map(String::from);
    Ok((s, header))
}

fn deflate_ws(server: &Server, path: &str, offer: &str) -> TcpStream {
    let (s, header) = upgrade(server, path, offer).expect("101");
    assert!(header.is_some_and(|h| h.starts_with(AGREED)), "{offer}");
    s
}

/// The next data message, inflated if it was compressed: (compressed, opcode, payload).
fn read_any(s: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    let first = read_frame(s).expect("frame");
    assert!(first.opcode != OP_CLOSE, "close {:?}", first.close_code());
    let compressed = first.rsv == 0b100;
    assert!(first.rsv == 0 || compressed, "rsv {}", first.rsv);
    let mut payload = first.payload;
    let mut fin = first.fin;
    while !fin {
        let f = read_frame(s).expect("continuation");
        assert_eq!((f.opcode, f.rsv), (OP_CONT, 0));
        payload.extend_from_slice(&f.payload);
        fin = f.fin;
    }
    if compressed {
        payload = inflate(&payload);
    }
    (compressed, first.opcode, payload)
}

fn read_text_any(s: &mut TcpStream) -> (bool, String) {
    let (compressed, opcode, payload) = read_any(s);
    assert_eq!(opcode, OP_TEXT);
    (compressed, String::from_utf8(payload).unwrap())
}

fn compressed_frame(opcode: u8, data: &[u8]) -> Frame {
    Frame::new(opcode, compress(data)).rsv(0b100)
}

wstest!(deflate_negotiation_outcomes, |s| {
    let server = s.server_with(&["--deflate"]);
    let header = |offer: &str| upgrade(&server, "/echo", offer).map(|(_, h)| h);
    assert_eq!(header("").unwrap(), None);
    assert_eq!(
        header("permessage-deflate; client_max_window_bits").unwrap(),
        Some(AGREED.to_string())
    );
    // The first acceptable offer wins; unknown extensions and declined offers are skipped.
    assert_eq!(
        header(
            "x-unknown; a=1, permessage-deflate; server_max_window_bits=8, \
             permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"
        )
        .unwrap(),
        Some(format!(
            "{AGREED}; server_max_window_bits=9; client_max_window_bits=12"
        ))
    );
    for declined in [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; mystery",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=16",
        "x-webkit-deflate-frame",
    ] {
        assert_eq!(header(declined).unwrap(), None, "{declined}");
    }
    // A header that breaks RFC 6455 9.1's grammar.
    for broken in ["permessage-deflate;", "permessage-deflate; a=\"b c\"", ",;"] {
        assert_eq!(header(broken), Err(400), "{broken}");
    }
    // Without --deflate every offer is declined.
    let plain = s.server();
    let (_, h) = upgrade(&plain, "/echo", "permessage-deflate").unwrap();
    assert_eq!(h, None);
});

wstest!(deflate_echo_fragmented_and_plain, |s| {
    let server = s.server_with(&["--deflate"]);
    let mut ws = deflate_ws(&server, "/echo", "permessage-deflate");
    let text = "fragmented and compressed, ".repeat(40);
    let z = compress(text.as_bytes());
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    send_frames(
        &mut ws,
        &[
            Frame::text(a.to_vec()).rsv(0b100).fin(false),
            Frame::ping(b"between".to_vec()),
            Frame::cont(b.to_vec()).fin(false),
            Frame::cont(c.to_vec()),
        ],
    );
    let pong = read_frame(&mut ws).unwrap();
    assert_eq!((pong.opcode, pong.rsv), (OP_PONG, 0));
    assert_eq!(read_text_any(&mut ws), (true, text.clone()));
    // An uncompressed message on the same connection, and a short one (sent back plain).
    send_frames(&mut ws, &[Frame::text(text.as_bytes().to_vec())]);
    assert_eq!(read_text_any(&mut ws), (true, text));
    send_frames(&mut ws, &[compressed_frame(OP_BINARY, b"hi")]);
    assert_eq!(read_any(&mut ws), (false, OP_BINARY, b"hi".to_vec()));
    send_frames(&mut ws, &[Frame::close(1000, b"")]);
    assert_close_code(&mut ws, 1000, "normal close");
});

wstest!(deflate_chat_between_members, |s| {
    let server = s.server_with(&["--deflate"]);
    let mut ann = deflate_ws(&server, "/chat/z?name=ann", "permessage-deflate");
    let mut bob = deflate_ws(
        &server,
        "/chat/z?name=bob",
        "permessage-deflate; server_max_window_bits=10",
    );
    assert_eq!(read_text_any(&mut ann).1, "bob just connected");
    let mut cy = server.connect("/chat/z?name=cy");
    assert_eq!(read_text_any(&mut ann).1, "cy just connected");
    assert_eq!(read_text_any(&mut bob).1, "cy just connected");

    let line = "a chat line long enough to be worth compressing, ".repeat(3);
    send_frames(&mut ann, &[compressed_frame(OP_TEXT, line.as_bytes())]);
    let expected = format!("ann says: {line}");
    assert_eq!(read_text_any(&mut bob), (true, expected.clone()));
    assert_eq!(recv_text(&mut cy), expected);

    // From a client without the extension to the two that have it (each window size).
    send_text(&mut cy, &line);
    let expected = format!("cy says: {line}");
    assert_eq!(read_text_any(&mut ann), (true, expected.clone()));
    assert_eq!(read_text_any(&mut bob), (true, expected));
});

wstest!(deflate_bomb_closes_with_1009, |s| {
    let server = s.server_with(&["--deflate", "--max-message", "65536"]);
    let mut ws = deflate_ws(&server, "/echo", "permessage-deflate");
    let bomb = compress(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    send_frames(&mut ws, &[Frame::binary(bomb).rsv(0b100)]);
    assert_close_code(&mut ws, 1009, "16 MiB inflated from a small frame");
    server.assert_still_serving();
});

wstest!(deflate_rsv1_misplaced_closes_with_1002, |s| {
    let server = s.server_with(&["--deflate"]);
    let mut ws = deflate_ws(&server, "/echo", "permessage-deflate");
    send_frames(
        &mut ws,
        &[
            Frame::text(b"a".to_vec()).fin(false),
            Frame::cont(compress(b"b")).rsv(0b100),
        ],
    );
    assert_close_code(&mut ws, 1002, "RSV1 on a continuation");
    let mut ws = deflate_ws(&server, "/echo", "permessage-deflate");
    send_frames(&mut ws, &[Frame::ping(b"p".to_vec()).rsv(0b100)]);
    assert_close_code(&mut ws, 1002, "RSV1 on a ping");
    // Without the extension agreed RSV1 is a reserved bit.
    let (mut ws, _) = upgrade(&server, "/echo", "").unwrap();
    send_frames(&mut ws, &[compressed_frame(OP_TEXT, b"Hello")]);
    assert_close_code(&mut ws, 1002, "RSV1 without the extension");
});

wstest!(deflate_invalid_utf8_after_inflation_closes_with_1007, |s| {
    let server = s.server_with(&["--deflate"]);
    let mut ws = deflate_ws(&server, "/echo", "permessage-deflate");
    send_frames(&mut ws, &[compressed_frame(OP_TEXT, b"valid, then \xff")]);
    assert_close_code(&mut ws, 1007, "invalid UTF-8 inside the compressed text");
});
