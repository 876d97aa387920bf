//! The /echo endpoint through tungstenite.

use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::common::*;

wstest!(echo_text_and_binary_keep_opcode, |s| {
    let server = s.server();
    let mut ws = server.connect("/echo");
    send_text(&mut ws, "hello");
    assert_eq!(recv(&mut ws), Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3, 0, 255])).unwrap();
    assert_eq!(recv(&mut ws), Message::binary(vec![1u8, 2, 3, 0, 255]));
    // Text that looks like a command is still just echoed on /echo.
    send_text(&mut ws, "/who");
    assert_eq!(recv_text(&mut ws), "/who");
    send_text(&mut ws, "ünïcödé ✓ 😀");
    assert_eq!(recv_text(&mut ws), "ünïcödé ✓ 😀");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    assert_eq!(recv_close_code(&mut ws), Some(1000));
});

wstest!(echo_large_messages, |s| {
    let server = s.server();
    let mut ws = server.connect("/echo");
    let text: String = (0..100 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    send_text(&mut ws, &text);
    assert_eq!(recv_text(&mut ws), text);
    // Multi-byte characters in a 100 KiB message.
    let text2: String = "€uro ".repeat(100 * 1024 / 7);
    send_text(&mut ws, &text2);
    assert_eq!(recv_text(&mut ws), text2);
    let bin: Vec<u8> = (0..100 * 1024 + 3).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(bin.clone())).unwrap();
    assert_eq!(recv_binary(&mut ws), bin);
});

wstest!(echo_many_pipelined_messages, |s| {
    let server = s.server();
    let mut ws = server.connect("/echo");
    for i in 0..500 {
        ws.write(Message::text(format!("msg {i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..500 {
        assert_eq!(recv_text(&mut ws), format!("msg {i}"));
    }
});

wstest!(echo_ping_through_tungstenite, |s| {
    let server = s.server();
    let mut ws = server.connect("/echo");
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    let got = match ws.read().expect("read") {
        Message::Pong(p) => p.to_vec(),
        other => panic!("expected pong, got {other:?}"),
    };
    assert_eq!(got, b"are you there");
});

wstest!(echo_many_concurrent_clients, |s| {
    let server = s.server();
    let mut clients: Vec<Ws> = (0..20).map(|_| server.connect("/echo")).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        send_text(ws, &format!("client {i}"));
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(recv_text(ws), format!("client {i}"));
    }
});
