//! Whole-server behaviour: slow consumers and graceful shutdown.

use std::io::Write;

use tungstenite::Message;

use crate::common::*;

wstest!(slow_consumer_is_kicked_sender_unaffected, |s| {
    let server = s.server_with(&["--max-outbound", "65536"]);
    let mut m = join_room(&server, "slow", &["rcv", "snd"]);
    let mut snd = m.pop().unwrap();
    let mut rcv = m.pop().unwrap(); // never reads until the kick is seen

    let chunk = "x".repeat(16 * 1024);
    let mut kicked = false;
    // Bounded: at most 4000 x 16 KiB = 64 MiB; loopback socket buffers hold
    // a few MiB at most, so the receiver's output queue must overflow first.
    for i in 0..4000 {
        snd.write(Message::text(chunk.clone()))
            .unwrap_or_else(|e| panic!("send #{i}: {e}"));
        if i % 32 == 31 {
            snd.flush()
                .unwrap_or_else(|e| panic!("flush after #{i}: {e}"));
            if server.total("slow_consumer_kicks") >= 1 {
                kicked = true;
                break;
            }
        }
    }
    snd.flush().unwrap();
    if !kicked {
        // Fails the test if 4000 x 16 KiB to a non-reading client never got it kicked.
        server.wait_total_at_least("slow_consumer_kicks", 1);
    }

    // The sender is told the receiver left, and works normally.
    recv_text_until(&mut snd, 10, |t| t == "rcv disconnected");
    assert_next_is_who(&mut snd, "Members of slow: snd");
    send_text(&mut snd, "still here");
    // The /who reply comes after "still here" was handled (per-sender order), so "late"
    // joins after it, even where a worker handles messages (work-queue).
    assert_next_is_who(&mut snd, "Members of slow: snd");
    let mut late = server.connect("/chat/slow?name=late");
    assert_eq!(recv_text(&mut snd), "late just connected");
    send_text(&mut snd, "hello late");
    assert_eq!(recv_text(&mut late), "snd says: hello late");

    // If the slow receiver now reads, it gets buffered messages and then the
    // connection ends: with close 1008 if a close frame arrives at all.
    let mut end = None;
    for _ in 0..20_000 {
        match rcv.read() {
            Ok(Message::Text(_)) | Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(f)) => {
                end = Some(f.map(|f| u16::from(f.code)));
                break;
            }
            Ok(other) => panic!("slow receiver got unexpected {other:?}"),
            Err(_) => {
                end = Some(None);
                break;
            }
        }
    }
    match end {
        Some(Some(code)) => assert_eq!(code, 1008, "slow consumer close code"),
        Some(None) => {} // connection dropped before a close frame could be sent
        None => panic!("slow receiver's connection never ended"),
    }
    let stats = server.stats();
    assert!(
        stats["totals"]["slow_consumer_kicks"].as_u64().unwrap() >= 1,
        "{stats}"
    );
});

wstest!(shutdown_sigterm_closes_clients_1001_and_exits_0, |s| {
    let mut server = s.server();
    let mut chat = join_room(&server, "bye", &["a", "b"]);
    let mut echo = server.connect("/echo");
    send_text(&mut echo, "before");
    assert_eq!(recv_text(&mut echo), "before");
    // A raw client in the middle of a fragmented message.
    let mut raw = server.raw_ws("/echo");
    send_frames(&mut raw, &[Frame::text("half").fin(false)]);
    // A connection that has not finished its handshake.
    let mut half = server.tcp();
    half.write_all(b"GET /echo HTTP/1.1\r\n").unwrap();
    // Make sure the server has seen the raw fragment and the half head.
    server.assert_still_serving();

    server.sigterm();

    for (i, ws) in chat
        .iter_mut()
        .chain(std::iter::once(&mut echo))
        .enumerate()
    {
        assert_eq!(recv_close_code(ws), Some(1001), "client {i}");
        // Complete the closing handshake like a well-behaved client.
        let _ = ws.flush();
    }
    assert_eq!(read_close(&mut raw), Some(1001), "raw client");
    let _ = raw.write_all(&Frame::close(1001, b"").encode());
    expect_eof(&mut half);
    let status = server.wait_exit();
    assert!(
        status.success(),
        "server exit status after SIGTERM: {status:?}"
    );
    assert_eq!(status.code(), Some(0));
});

wstest!(shutdown_sigterm_with_no_clients_exits_0, |s| {
    let mut server = s.server();
    server.assert_still_serving();
    server.sigterm();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
});

wstest!(shutdown_completes_even_if_clients_never_answer_close, |s| {
    let mut server = s.server_with(&["--close-timeout", "500ms"]);
    // Raw clients that will read the close frame but never answer it.
    let mut raws: Vec<_> = (0..3).map(|_| server.raw_ws("/echo")).collect();
    server.assert_still_serving();
    server.sigterm();
    for r in raws.iter_mut() {
        assert_eq!(read_close(r), Some(1001));
    }
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    for r in raws.iter_mut() {
        expect_eof(r);
    }
});

wstest!(a_panicking_loop_takes_the_server_down_not_a_zombie, |s| {
    // `--test-panic-path` makes the loop that reads a request for that path panic: the
    // process must exit (70) and say which thread died, instead of serving on without it.
    let mut server = s.server_with(&["--test-panic-path", "/boom"]);
    let _member = server.connect("/chat/lobby?name=ghost");
    let mut raw = server.tcp();
    raw.write_all(&request_head("GET /boom HTTP/1.1", &["Host: x"]))
        .unwrap();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(70), "{status:?}\n{}", server.output());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.output().contains("panicked; exiting") {
        assert!(
            std::time::Instant::now() < deadline,
            "no exit message:\n{}",
            server.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
});
