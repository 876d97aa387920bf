//! What keeps the server honest under hostile or broken peers: heartbeats, idle and
//! slowloris clients, origins, vanishing peers, and shutdown limits. Short flag values stand
//! in for the defaults; no assertion depends on how fast the machine is.

use std::io::Write;
use std::time::Duration;

use crate::common::*;

wstest!(a_quiet_client_is_pinged_and_a_silent_one_closed_1001, |s| {
    let server = s.server_with(&["--ping-interval", "200ms", "--idle-timeout", "600ms"]);
    let mut raw = server.raw_ws("/echo");
    let ping = read_frame(&mut raw).expect("a heartbeat ping");
    assert_eq!(ping.opcode, OP_PING, "{ping:?}");
    // Never answer it: the idle timeout closes with 1001, then the TCP connection ends.
    assert_eq!(read_close(&mut raw), Some(1001));
    let _ = raw.write_all(&Frame::close(1001, b"").encode());
    expect_eof(&mut raw);
    assert!(server.total("pings_sent") >= 1);
    assert!(server.total("idle_closes") >= 1);
    server.assert_still_serving();
});

wstest!(pongs_keep_a_client_alive_past_the_idle_timeout, |s| {
    let server = s.server_with(&["--ping-interval", "100ms", "--idle-timeout", "400ms"]);
    let mut raw = server.raw_ws("/echo");
    // Answer three pings: by then the connection has lived well past one idle timeout, and
    // it is alive because its pongs count as frames.
    for _ in 0..3 {
        let ping = read_frame(&mut raw).expect("a heartbeat ping");
        assert_eq!(ping.opcode, OP_PING);
        send_frames(&mut raw, &[Frame::new(OP_PONG, ping.payload)]);
    }
    send_frames(&mut raw, &[Frame::text("alive")]);
    loop {
        let frame = read_frame(&mut raw).expect("the echo");
        if frame.opcode == OP_TEXT {
            assert_eq!(frame.payload, b"alive");
            break;
        }
        assert_eq!(frame.opcode, OP_PING, "{frame:?}");
        send_frames(&mut raw, &[Frame::new(OP_PONG, frame.payload)]);
    }
    assert_eq!(server.total("idle_closes"), 0);
});

wstest!(
    a_frame_trickled_slower_than_the_idle_timeout_does_not_keep_it_alive,
    |s| {
        let server = s.server_with(&["--ping-interval", "0s", "--idle-timeout", "500ms"]);
        let mut raw = server.raw_ws("/echo");
        // A 100-byte text frame, one byte every 50 ms: bytes keep coming, frames never do.
        let bytes = Frame::text(vec![b'x'; 100]).encode();
        let mut closed = false;
        for byte in bytes.chunks(1) {
            if raw.write_all(byte).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            if server.total("idle_closes") >= 1 {
                closed = true;
                break;
            }
        }
        assert!(closed, "a trickled frame kept the connection alive for 5 s");
        assert_eq!(read_close(&mut raw), Some(1001));
    }
);

wstest!(
    a_head_trickled_byte_by_byte_hits_the_handshake_timeout,
    |s| {
        let server = s.server_with(&["--handshake-timeout", "500ms"]);
        let mut slow = server.tcp();
        let head = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Pad: ";
        let mut dropped = false;
        for byte in head.iter().chain(std::iter::repeat(&b'a')).take(200) {
            if slow.write_all(&[*byte]).is_err() {
                dropped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            if server.total("handshake_timeouts") >= 1 {
                dropped = true;
                break;
            }
        }
        assert!(dropped, "a slowloris head kept its slot for 10 s");
        expect_eof(&mut slow);
        server.assert_still_serving();
    }
);

wstest!(an_origin_outside_the_allowed_list_gets_403, |s| {
    let server = s.server_with(&["--allowed-origin", "https://chat.example"]);
    let upgrade = |origin: &str| {
        let head = request_head(
            "GET /chat HTTP/1.1",
            &[
                "Host: x",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
                origin,
            ],
        );
        server.http_raw(&head).status
    };
    assert_eq!(upgrade("Origin: https://evil.example"), 403);
    assert_eq!(upgrade("Origin: https://chat.example"), 101);
    // Not a browser (no Origin): not refused for it.
    server.assert_still_serving();
});

wstest!(
    a_peer_that_resets_mid_write_leaves_once_and_others_go_on,
    |s| {
        let server = s.server();
        let mut m = join_room(&server, "rst", &["stay", "gone"]);
        let gone = m.pop().unwrap();
        let mut stay = m.pop().unwrap();
        // Queue a lot of output for "gone", then reset it (SO_LINGER 0 makes close send RST).
        for i in 0..200 {
            send_text(&mut stay, &format!("{i} {}", "y".repeat(8000)));
        }
        let tcp = gone.into_inner();
        socket2::SockRef::from(&tcp)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(tcp);
        assert_eq!(recv_text(&mut stay), "gone disconnected");
        assert_next_is_who(&mut stay, "Members of rst: stay");
    }
);

wstest!(a_half_closed_client_still_gets_its_replies, |s| {
    let server = s.server();
    let mut raw = server.raw_ws("/echo");
    send_frames(&mut raw, &[Frame::text("last words")]);
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let frame = read_frame(&mut raw).expect("the echo after our FIN");
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (OP_TEXT, &b"last words"[..])
    );
    expect_eof(&mut raw);
    server.assert_still_serving();
});

wstest!(a_second_sigterm_exits_at_once, |s| {
    let mut server = s.server_with(&["--close-timeout", "30s", "--shutdown-timeout", "60s"]);
    // A client that never answers our Close would hold the shutdown for 30 s...
    let mut raw = server.raw_ws("/echo");
    server.assert_still_serving();
    server.sigterm();
    assert_eq!(read_close(&mut raw), Some(1001));
    // ...unless the operator asks again.
    server.sigterm();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(1), "{status:?}");
});

wstest!(
    the_shutdown_timeout_bounds_a_shutdown_that_clients_stall,
    |s| {
        let mut server = s.server_with(&["--close-timeout", "30s", "--shutdown-timeout", "300ms"]);
        let mut raw = server.raw_ws("/echo");
        server.assert_still_serving();
        server.sigterm();
        assert_eq!(read_close(&mut raw), Some(1001));
        let status = server.wait_exit();
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
);

wstest!(emfile_pauses_accepting_then_recovers, |s| {
    // 100 descriptors: --max-conns becomes 36, and connections that never send a request
    // head (each holding a descriptor until the handshake timeout) exhaust the rest.
    let server = Server::start_with_fd_limit(*s, 100, &[]);
    let mut before = server.connect("/echo");
    let squatters: Vec<_> = (0..150).map(|_| server.tcp()).collect();
    // Wait (bounded) until the server has run out: it says so on stderr at the first pause.
    // (/stats cannot be asked now: it would need a descriptor.)
    for _ in 0..200 {
        if server.output().contains("accept paused") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.output().contains("accept paused"),
        "150 idle clients never exhausted 100 descriptors: {}",
        server.output()
    );
    // Existing connections are still served while accept fails with EMFILE.
    for i in 0..20 {
        send_text(&mut before, &format!("ping {i}"));
        assert_eq!(recv_text(&mut before), format!("ping {i}"));
    }
    drop(squatters);
    // Once descriptors are free again, accepting resumes by itself. Squatters still in an
    // accept queue (reuseport has two, each paused on its own) are accepted, seen closed and
    // dropped first; until then the server may be at --max-conns and answer 503. Settled
    // means every connection ever made has been accepted (the squatters, `before`, and each
    // /stats request so far, this one included) and only ours are left: a loop can answer
    // /stats while the other's queue still holds squatters that would take every slot.
    let mut settled = None;
    for requests in 1..=200 {
        let response = server.get("/stats");
        if response.status == 200 {
            let stats: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
            let totals = &stats["totals"];
            let all_accepted = totals["accepted"].as_u64() >= Some(1 + 150 + requests);
            // Ours: `before` and this /stats request.
            if all_accepted && totals["active"].as_u64().is_some_and(|a| a <= 2) {
                settled = Some(stats);
                break;
            }
        } else {
            assert_eq!(response.status, 503, "{response:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = settled.expect("the server never accepted again, or kept the squatters");
    assert!(
        stats["totals"]["accept_pauses"].as_u64() >= Some(1),
        "{stats}"
    );
    server.assert_still_serving();
});
