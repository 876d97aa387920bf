//! The opening handshake: status codes for malformed or refused upgrades,
//! tolerated header variants, names and rooms in the URL, --max-conns,
//! oversized heads and --handshake-timeout.

use std::io::Write;

use crate::common::*;

/// Sends an upgrade request made of `request_line` and `headers` (Host is
/// added first unless `with_host` is false) and returns the response.
fn upgrade(server: &Server, request_line: &str, headers: &[&str], with_host: bool) -> HttpResponse {
    let host = format!("Host: {}", server.addr());
    let mut all: Vec<&str> = Vec::new();
    if with_host {
        all.push(&host);
    }
    all.extend_from_slice(headers);
    server.http_raw(&request_head(request_line, &all))
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const V13: &str = "Sec-WebSocket-Version: 13";

fn assert_101(resp: &HttpResponse, what: &str) {
    assert_eq!(resp.status, 101, "{what}: {resp:?}");
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some(SAMPLE_ACCEPT),
        "{what}: {resp:?}"
    );
}

wstest!(handshake_tungstenite_paths_accepted, |s| {
    let server = s.server();
    for path in [
        "/",
        "/chat",
        "/chat/lobby",
        "/chat/a-B_9.z",
        "/echo",
        "/chat/x?name=bob",
    ] {
        let mut ws = server.connect(path);
        let _ = ws.close(None);
    }
    let room64 = "r".repeat(64);
    drop(server.connect(&format!("/chat/{room64}")));
    server.assert_still_serving();
});

wstest!(handshake_header_variants_accepted, |s| {
    let server = s.server();
    let variants: &[&[&str]] = &[
        &["Upgrade: websocket", "Connection: Upgrade", KEY, V13],
        &["Upgrade: WebSocket", "Connection: upgrade", KEY, V13],
        &["Upgrade: WEBSOCKET", "Connection: UPGRADE", KEY, V13],
        &[
            "Upgrade: websocket",
            "Connection: keep-alive, Upgrade",
            KEY,
            V13,
        ],
        &[
            "Upgrade: websocket",
            "Connection: Upgrade, keep-alive",
            KEY,
            V13,
        ],
        &[
            "Upgrade: websocket",
            "Connection: keep-alive,upgrade",
            KEY,
            V13,
        ],
        &[
            "upgrade: websocket",
            "connection: Upgrade",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version: 13",
        ],
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            V13,
            "Origin: http://example.com",
            "User-Agent: test",
        ],
    ];
    for headers in variants {
        let resp = upgrade(&server, "GET /echo HTTP/1.1", headers, true);
        assert_101(&resp, &format!("{headers:?}"));
    }
    server.assert_still_serving();
});

wstest!(handshake_101_then_websocket_works, |s| {
    let server = s.server();
    let mut raw = server.raw_ws("/echo");
    send_frames(&mut raw, &[Frame::text("raw hello")]);
    assert_eq!(read_message(&mut raw), (OP_TEXT, b"raw hello".to_vec()));
    send_frames(&mut raw, &[Frame::close(1000, b"")]);
    assert_eq!(read_close(&mut raw), Some(1000));
    expect_eof(&mut raw);
});

wstest!(handshake_missing_host_400, |s| {
    let server = s.server();
    let resp = upgrade(
        &server,
        "GET /echo HTTP/1.1",
        &["Upgrade: websocket", "Connection: Upgrade", KEY, V13],
        false,
    );
    assert_eq!(resp.status, 400, "{resp:?}");
    server.assert_still_serving();
});

wstest!(handshake_not_http11_rejected, |s| {
    let server = s.server();
    // HTTP/1.0 cannot upgrade; the contract only says HTTP/1.1 is required,
    // so accept the two sensible refusals.
    let resp = upgrade(
        &server,
        "GET /echo HTTP/1.0",
        &["Upgrade: websocket", "Connection: Upgrade", KEY, V13],
        true,
    );
    assert!(
        matches!(resp.status, 400 | 505),
        "HTTP/1.0 upgrade: {resp:?}"
    );
    server.assert_still_serving();
});

wstest!(handshake_non_get_rejected, |s| {
    let server = s.server();
    // A non-GET upgrade attempt: refused (400 as a bad upgrade or 405 as a
    // bad method; the contract does not say which).
    let resp = upgrade(
        &server,
        "POST /echo HTTP/1.1",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            V13,
            "Content-Length: 0",
        ],
        true,
    );
    assert!(matches!(resp.status, 400 | 405), "POST upgrade: {resp:?}");
    server.assert_still_serving();
});

wstest!(handshake_bad_upgrade_or_connection_400, |s| {
    let server = s.server();
    let cases: &[&[&str]] = &[
        // Upgrade present but not websocket.
        &["Upgrade: h2c", "Connection: Upgrade", KEY, V13],
        &["Upgrade: websockets", "Connection: Upgrade", KEY, V13],
        // Connection without the upgrade token.
        &["Upgrade: websocket", "Connection: keep-alive", KEY, V13],
        &["Upgrade: websocket", "Connection: upgraded", KEY, V13],
        // No Connection header at all.
        &["Upgrade: websocket", KEY, V13],
    ];
    for headers in cases {
        let resp = upgrade(&server, "GET /echo HTTP/1.1", headers, true);
        assert_eq!(resp.status, 400, "{headers:?}: {resp:?}");
    }
    server.assert_still_serving();
});

wstest!(handshake_upgrade_token_list_accepted, |s| {
    let server = s.server();
    let resp = upgrade(
        &server,
        "GET /echo HTTP/1.1",
        &["Upgrade: foo, websocket", "Connection: Upgrade", KEY, V13],
        true,
    );
    assert_101(&resp, "Upgrade: foo, websocket");
});

wstest!(handshake_bad_version_426, |s| {
    let server = s.server();
    let cases: &[&[&str]] = &[
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            "Sec-WebSocket-Version: 8",
        ],
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            "Sec-WebSocket-Version: 14",
        ],
        &["Upgrade: websocket", "Connection: Upgrade", KEY],
    ];
    for headers in cases {
        let resp = upgrade(&server, "GET /echo HTTP/1.1", headers, true);
        assert_eq!(resp.status, 426, "{headers:?}: {resp:?}");
        assert_eq!(
            resp.header("sec-websocket-version"),
            Some("13"),
            "{headers:?}: {resp:?}"
        );
    }
    server.assert_still_serving();
});

wstest!(handshake_bad_key_400, |s| {
    let server = s.server();
    let keys = [
        // base64 of 15 bytes
        Some("AAAAAAAAAAAAAAAAAAAA"),
        // base64 of 17 bytes
        Some("AAAAAAAAAAAAAAAAAAAAAAA="),
        // base64 of 32 bytes
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        // not base64 at all (24 chars, like a real key)
        Some("!!!!!!!!!!!!!!!!!!!!!!=="),
        Some(""),
        None,
    ];
    for key in keys {
        let key_header = key.map(|k| format!("Sec-WebSocket-Key: {k}"));
        let mut headers = vec!["Upgrade: websocket", "Connection: Upgrade", V13];
        if let Some(h) = &key_header {
            headers.push(h);
        }
        let resp = upgrade(&server, "GET /echo HTTP/1.1", &headers, true);
        assert_eq!(resp.status, 400, "key {key:?}: {resp:?}");
    }
    server.assert_still_serving();
});

wstest!(handshake_unknown_path_404, |s| {
    let server = s.server();
    for path in ["/nope", "/chatroom", "/echo/x", "/stats", "/metrics"] {
        assert_eq!(server.connect_status(path), 404, "upgrade on {path}");
    }
    server.assert_still_serving();
});

wstest!(handshake_bad_room_400, |s| {
    let server = s.server();
    let long = format!("/chat/{}", "r".repeat(65));
    for path in [
        "/chat/",
        "/chat/a%20b",
        "/chat/a$b",
        "/chat/%C3%A9",
        "/chat/a:b",
        long.as_str(),
    ] {
        assert_eq!(server.connect_status(path), 400, "upgrade on {path}");
    }
    server.assert_still_serving();
});

wstest!(handshake_bad_name_400, |s| {
    let server = s.server();
    let long = format!("/chat?name={}", "n".repeat(33));
    for path in [
        "/chat?name=",
        "/chat?name=+bob",
        "/chat?name=bob+",
        "/chat?name=%20bob",
        "/chat?name=bob%20",
        "/chat?name=b%21b",
        "/chat?name=a%2Fb",
        "/chat?name=%00",
        "/chat?name=%zz",
        "/chat/room?name=%3Cb%3E",
        long.as_str(),
    ] {
        assert_eq!(server.connect_status(path), 400, "upgrade on {path}");
    }
    server.assert_still_serving();
});

wstest!(handshake_name_percent_decoding, |s| {
    let server = s.server();
    let mut watcher = server.connect("/chat/names?name=watcher");
    let name32 = "n".repeat(32);
    for (query, name) in [
        ("Bob+Smith", "Bob Smith"),
        ("Bob%20Smith", "Bob Smith"),
        ("a_b.c-d", "a_b.c-d"),
        ("%41lice", "Alice"),
        ("x", "x"),
        (name32.as_str(), name32.as_str()),
    ] {
        let mut ws = server.connect(&format!("/chat/names?name={query}"));
        assert_eq!(
            recv_text(&mut watcher),
            format!("{name} just connected"),
            "query {query}"
        );
        ws.close(None).unwrap();
        let _ = ws.flush();
        assert_eq!(
            recv_text(&mut watcher),
            format!("{name} disconnected"),
            "query {query}"
        );
    }
});

wstest!(handshake_default_name_is_source_port, |s| {
    let server = s.server();
    let mut alice = server.connect("/chat/defaults?name=alice");
    let anon = server.connect("/chat/defaults");
    let port = anon.get_ref().local_addr().unwrap().port();
    assert_eq!(recv_text(&mut alice), format!("User {port} just connected"));
    assert_next_is_who(
        &mut alice,
        &format!("Members of defaults: alice, User {port}"),
    );
});

wstest!(handshake_oversized_head_431, |s| {
    let server = s.server();
    let filler = format!("X-Filler: {}", "a".repeat(9000));
    let resp = upgrade(
        &server,
        "GET /echo HTTP/1.1",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            V13,
            &filler,
        ],
        true,
    );
    assert_eq!(resp.status, 431, "{resp:?}");
    // Many medium headers adding up to more than 8 KiB.
    let many: Vec<String> = (0..20)
        .map(|i| format!("X-H{i}: {}", "b".repeat(450)))
        .collect();
    let mut headers: Vec<&str> = vec!["Upgrade: websocket", "Connection: Upgrade", KEY, V13];
    headers.extend(many.iter().map(String::as_str));
    let resp = upgrade(&server, "GET /echo HTTP/1.1", &headers, true);
    assert_eq!(resp.status, 431, "{resp:?}");
    // Also for a plain request.
    let resp = upgrade(&server, "GET / HTTP/1.1", &[&filler], true);
    assert_eq!(resp.status, 431, "{resp:?}");
    server.assert_still_serving();
});

wstest!(handshake_head_just_under_limit_ok, |s| {
    let server = s.server();
    // A ~6 KiB head is fine.
    let filler = format!("X-Filler: {}", "a".repeat(6000));
    let resp = upgrade(
        &server,
        "GET /echo HTTP/1.1",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            V13,
            &filler,
        ],
        true,
    );
    assert_101(&resp, "6 KiB head");
});

wstest!(handshake_max_conns_503, |s| {
    let server = s.server_with(&["--max-conns", "2"]);
    let mut a = server.connect("/echo");
    let mut b = server.connect("/echo");
    send_text(&mut a, "a");
    assert_eq!(recv_text(&mut a), "a");
    send_text(&mut b, "b");
    assert_eq!(recv_text(&mut b), "b");
    assert_eq!(
        server.connect_status("/echo"),
        503,
        "third connection over --max-conns 2"
    );
    // The two admitted clients are unaffected.
    send_text(&mut a, "a2");
    assert_eq!(recv_text(&mut a), "a2");
    // Free a slot; the server notices asynchronously, so retry (bounded).
    b.close(None).unwrap();
    let _ = b.flush();
    let _ = recv_close_code(&mut b);
    drop(b);
    let mut c = None;
    for _ in 0..100 {
        match server.try_connect("/echo") {
            Ok(ws) => {
                c = Some(ws);
                break;
            }
            Err(503) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(other) => panic!("unexpected status {other}"),
        }
    }
    let mut c = c.expect("a freed slot is never reused");
    send_text(&mut c, "c");
    assert_eq!(recv_text(&mut c), "c");
    drop(c);
    drop(a);
    // /stats is itself a connection: retry while the server is at capacity.
    let mut rejected = None;
    for _ in 0..100 {
        let resp = server.get("/stats");
        if resp.status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("stats JSON");
            rejected = v["totals"]["rejected_over_capacity"].as_u64();
            break;
        }
        assert_eq!(resp.status, 503, "{resp:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        rejected.expect("stats never served") >= 1,
        "rejected_over_capacity not counted"
    );
});

wstest!(handshake_timeout_disconnects_slow_client, |s| {
    let server = s.server_with(&["--handshake-timeout", "1s"]);
    let mut slow = server.tcp();
    slow.write_all(
        format!(
            "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .unwrap();
    // While the slow client dawdles, others are served.
    server.assert_still_serving();
    // The server hangs up (an error response before that is allowed).
    expect_eof(&mut slow);
    server.assert_still_serving();
});

wstest!(handshake_timeout_humantime_ms, |s| {
    let server = s.server_with(&["--handshake-timeout", "500ms"]);
    let mut slow = server.tcp();
    slow.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    expect_eof(&mut slow);
    server.assert_still_serving();
});

wstest!(handshake_oversized_head_without_end_431, |s| {
    let server = s.server();
    // More than 8 KiB of head and still no blank line: refused without
    // waiting for the end.
    let mut st = server.tcp();
    let mut head = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        server.addr()
    );
    for i in 0..40 {
        head.push_str(&format!("X-H{i}: {}\r\n", "c".repeat(240)));
    }
    let _ = st.write_all(head.as_bytes());
    let resp = read_http_head(&mut st).expect("response to an endless head");
    assert_eq!(resp.status, 431, "{resp:?}");
    server.assert_still_serving();
});

wstest!(handshake_request_trickled_byte_by_byte, |s| {
    let server = s.server();
    let mut st = server.tcp();
    let req = request_head(
        "GET /echo HTTP/1.1",
        &[
            &format!("Host: {}", server.addr()),
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            V13,
        ],
    );
    for b in &req {
        st.write_all(std::slice::from_ref(b)).unwrap();
    }
    let resp = read_http_head(&mut st).expect("101");
    assert_101(&resp, "trickled request");
    send_frames(&mut st, &[Frame::text("after trickle")]);
    assert_eq!(read_message(&mut st), (OP_TEXT, b"after trickle".to_vec()));
});

wstest!(handshake_frames_pipelined_with_request, |s| {
    let server = s.server();
    let mut st = server.tcp();
    // The client does not wait for the 101: the request head and the first
    // frames arrive in one write.
    let mut bytes = request_head(
        "GET /echo HTTP/1.1",
        &[
            &format!("Host: {}", server.addr()),
            "Upgrade: websocket",
            "Connection: Upgrade",
            KEY,
            V13,
        ],
    );
    bytes.extend_from_slice(&Frame::text("early 1").encode());
    bytes.extend_from_slice(&Frame::binary(vec![1u8, 2, 3]).encode());
    st.write_all(&bytes).unwrap();
    let resp = read_http_head(&mut st).expect("101");
    assert_101(&resp, "pipelined request");
    assert_eq!(read_message(&mut st), (OP_TEXT, b"early 1".to_vec()));
    assert_eq!(read_message(&mut st), (OP_BINARY, vec![1u8, 2, 3]));
});
