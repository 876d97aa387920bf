//! Plain HTTP routes: the chat page, /stats, 404 and 405.

use crate::common::*;

wstest!(http_get_root_serves_html_page, |s| {
    let server = s.server();
    let resp = server.get("/");
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = resp.body_text().to_ascii_lowercase();
    assert!(
        body.contains("<html"),
        "GET / body is not an HTML page: {body:?}"
    );
});

wstest!(http_unknown_path_is_404, |s| {
    let server = s.server();
    for path in [
        "/nope",
        "/index.html",
        "/stats/x",
        "/metrics/x",
        "/chat",
        "/chat/lobby",
        "/echo",
    ] {
        let resp = server.get(path);
        assert_eq!(resp.status, 404, "plain GET {path}: {resp:?}");
    }
    server.assert_still_serving();
});

wstest!(http_non_get_is_405, |s| {
    let server = s.server();
    let addr = server.addr();
    for (method, path) in [
        ("POST", "/"),
        ("PUT", "/stats"),
        ("DELETE", "/"),
        ("HEAD", "/stats"),
    ] {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut stream = server.tcp();
        std::io::Write::write_all(&mut stream, req.as_bytes()).unwrap();
        // Only the head: a HEAD response has no body whatever its Content-Length.
        let resp = read_http_head(&mut stream).expect("response head");
        assert_eq!(resp.status, 405, "{method} {path}: {resp:?}");
    }
    server.assert_still_serving();
});

wstest!(http_stats_json_shape, |s| {
    let server = s.server();
    let stats = server.stats();
    assert_eq!(stats["pattern"].as_str(), Some(s.pattern), "{stats}");
    assert_eq!(stats["io"].as_str(), Some(s.io), "{stats}");
    assert!(stats["uptime_secs"].is_number(), "uptime_secs: {stats}");
    assert!(stats["uptime_secs"].as_f64().unwrap() >= 0.0, "{stats}");
    const COUNTERS: [&str; 8] = [
        "accepted",
        "active",
        "frames_in",
        "frames_out",
        "bytes_in",
        "bytes_out",
        "slow_consumer_kicks",
        "rejected_over_capacity",
    ];
    for c in COUNTERS {
        assert!(
            stats["totals"][c].is_u64(),
            "totals.{c} missing or not an unsigned integer: {stats}"
        );
    }
    let threads = stats["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("threads is not an array: {stats}"));
    assert!(!threads.is_empty(), "no threads in stats: {stats}");
    for t in threads {
        assert!(t["role"].is_string(), "thread without role: {t}");
        for c in COUNTERS {
            assert!(t[c].is_u64(), "thread counter {c} missing: {t}");
        }
    }
});

wstest!(http_stats_counts_traffic, |s| {
    let server = s.server();
    let mut ws = server.connect("/echo");
    for i in 0..5 {
        let m = format!("message {i}");
        send_text(&mut ws, &m);
        assert_eq!(recv_text(&mut ws), m);
    }
    // Counters may be published asynchronously: poll (bounded).
    server.wait_total_at_least("frames_in", 5);
    server.wait_total_at_least("frames_out", 5);
    server.wait_total_at_least("bytes_in", 5 * 9);
    server.wait_total_at_least("bytes_out", 5 * 9);
    server.wait_total_at_least("accepted", 1);
    // The echo client is still connected.
    server.wait_total_at_least("active", 1);
    let stats = server.stats();
    assert_eq!(
        stats["totals"]["slow_consumer_kicks"].as_u64(),
        Some(0),
        "{stats}"
    );
    assert_eq!(
        stats["totals"]["rejected_over_capacity"].as_u64(),
        Some(0),
        "{stats}"
    );
});
