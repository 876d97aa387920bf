//! Black-box tests: the real `bench-client` binary against the real `wschat` server binary
//! on an ephemeral 127.0.0.1 port. Every run is bounded in count and time; no assertion is a
//! timing threshold (latencies are only checked to exist), only exact accounting.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_bench-client");
/// No single bench-client run in these tests may take longer than this.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The server binary from the same target directory and profile as this test; built with
/// `cargo build -p wschat --bin wschat` if `cargo test` did not build it (it does under
/// `cargo test --workspace`, which CI runs).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps");
    let server = profile_dir.join(format!("wschat{}", std::env::consts::EXE_SUFFIX));
    if !server.exists() {
        let target_dir = profile_dir.parent().expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "wschat", "--bin", "wschat", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for the server");
        assert!(status.success(), "building the wschat server failed");
    }
    server
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// With extra server flags (e.g. --tls-self-signed).
    fn start_with(extra: &[&str]) -> Server {
        let mut child = Command::new(server_binary())
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting wschat");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the start-up line");
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in start-up line {line:?}"))
            .to_string();
        Server { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs bench-client with `args`, bounded by RUN_LIMIT; returns the exit code and stdout.
fn bench(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(BENCH)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting bench-client");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for bench-client") {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
            }
            return (status.code().unwrap_or(-1), out);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("bench-client {args:?} ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bench-client-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn counter(run: &Value, name: &str) -> u64 {
    run["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} missing in {}", run["counters"]))
}

#[test]
fn chat_accounts_for_every_delivery_then_merge_and_report() {
    let server = Server::start();
    let json = temp_path("chat.json");
    let hgrm = temp_path("chat.hgrm");
    let url = format!("ws://{}", server.addr);
    let pid = server.pid().to_string();
    // 20 connections, 2 rooms of 10, 250 msg/s for 2 s: each connection sends exactly
    // 25 messages (period 80 ms, due times phase + n*80 ms < 2 s), 500 in total, each
    // reaching the 9 other members of its room.
    let (code, stdout) = bench(&[
        "chat",
        "--url",
        &url,
        "--conns",
        "20",
        "--rooms",
        "2",
        "--rate",
        "250",
        "--warmup",
        "0s",
        "--duration",
        "2s",
        "--drain",
        "10s",
        "--threads",
        "2",
        "--payload",
        "100",
        "--server-pid",
        &pid,
        "--require-correct",
        "--quiet",
        "--label",
        "pattern=single-thread",
        "--json",
        json.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let run = read_json(&json);
    assert_eq!(run["schema"], "wschat-bench/1");
    assert_eq!(run["kind"], "chat");
    assert_eq!(run["labels"]["pattern"], "single-thread");
    assert_eq!(counter(&run, "opened"), 20);
    assert_eq!(counter(&run, "join_notices"), 2 * 45);
    // 500 sends are scheduled in the 2 s window; a loader starved of CPU (a busy machine)
    // sends fewer and says so, so the count is bounded, and the accounting is exact.
    let sent = counter(&run, "sent");
    assert!(sent > 0 && sent <= 500, "{sent} sent");
    assert_eq!(counter(&run, "expected"), sent * 9);
    assert_eq!(counter(&run, "received"), sent * 9);
    for zero in [
        "lost",
        "out_of_order",
        "duplicates",
        "malformed",
        "foreign",
        "disconnects",
    ] {
        assert_eq!(counter(&run, zero), 0, "{zero}");
    }
    assert_eq!(run["correct"], true);
    assert_eq!(
        run["histograms"]["latency_us"]["percentiles"]["count"],
        500 * 9
    );
    assert!(
        run["server"]["threads"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        std::fs::read_to_string(&hgrm)
            .unwrap()
            .contains("Total count")
    );
    assert!(stdout.contains("all accounted for"));

    // merge of a run with itself doubles counters and histogram counts.
    let merged = temp_path("merged.json");
    let (code, _) = bench(&[
        "merge",
        json.to_str().unwrap(),
        json.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let m = read_json(&merged);
    assert_eq!(counter(&m, "received"), 2 * 500 * 9);
    assert_eq!(
        m["histograms"]["latency_us"]["percentiles"]["count"],
        2 * 500 * 9
    );
    assert_eq!(m["runs"], 2);

    let report_dir = temp_path("report");
    let (code, _) = bench(&[
        "report",
        json.to_str().unwrap(),
        "--group-by",
        "pattern",
        "-o",
        report_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("pattern = single-thread"), "{md}");
    assert!(md.contains("4500/4500"), "{md}");
    assert!(
        std::fs::read_to_string(report_dir.join("latency.svg"))
            .unwrap()
            .contains("<polyline")
    );
}

#[test]
fn ping_and_connect_succeed() {
    let server = Server::start();
    let json = temp_path("ping.json");
    let url = format!("ws://{}/echo", server.addr);
    let (code, stdout) = bench(&[
        "ping",
        "--url",
        &url,
        "--conns",
        "2",
        "--rate",
        "200",
        "--warmup",
        "0s",
        "--duration",
        "1s",
        "--require-correct",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let run = read_json(&json);
    // 200 scheduled in the 1 s window (fewer if the loader is starved of CPU); every one
    // sent comes back.
    let sent = counter(&run, "sent");
    assert!(sent > 0 && sent <= 200, "{sent} sent");
    assert_eq!(counter(&run, "received"), sent);
    assert_eq!(run["correct"], true);

    let json = temp_path("connect.json");
    let (code, stdout) = bench(&[
        "connect",
        "--url",
        &url,
        "--conns",
        "300",
        "--concurrency",
        "30",
        "--threads",
        "2",
        "--source-ips",
        "3",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let run = read_json(&json);
    assert_eq!(counter(&run, "attempted"), 300);
    assert_eq!(counter(&run, "handshakes"), 300);
    assert_eq!(counter(&run, "failed"), 0);
    assert_eq!(run["histograms"]["connect_us"]["percentiles"]["count"], 300);
    assert_eq!(run["histograms"]["upgrade_us"]["percentiles"]["count"], 300);
}

#[test]
fn saturate_keeps_its_window_and_accounts_exactly() {
    let server = Server::start();
    let url = format!("ws://{}", server.addr);
    // Text messages (the default) take the server's text path, "<name> says: " and all;
    // --binary ones are forwarded verbatim. Both must be accounted for exactly.
    for kind in ["text", "binary"] {
        let json = temp_path(&format!("saturate-{kind}.json"));
        let mut args = vec![
            "saturate",
            "--url",
            &url,
            "--conns",
            "12",
            "--rooms",
            "3",
            "--window",
            "4",
            "--warmup",
            "0s",
            "--duration",
            "1s",
            "--require-correct",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ];
        if kind == "binary" {
            args.push("--binary");
        }
        let (code, stdout) = bench(&args);
        assert_eq!(code, 0, "{stdout}");
        let run = read_json(&json);
        assert_eq!(run["config"]["messages"], kind);
        assert!(counter(&run, "sent") > 0);
        assert_eq!(counter(&run, "received"), counter(&run, "expected"));
        assert_eq!(counter(&run, "expected"), counter(&run, "sent") * 3);
        assert_eq!(counter(&run, "malformed"), 0);
    }
}

#[test]
fn exit_codes_for_usage_and_run_errors() {
    assert_eq!(bench(&["chat", "--rate", "0"]).0, 2);
    assert_eq!(bench(&["chat", "--payload", "3"]).0, 2);
    // Text messages need 28 bytes for their header, binary ones 24; text ones are always
    // padded with words, so --fill zeros needs --binary.
    assert_eq!(bench(&["chat", "--payload", "27"]).0, 2);
    assert_eq!(bench(&["ping", "--payload", "27"]).0, 2);
    assert_eq!(bench(&["chat", "--fill", "zeros"]).0, 2);
    assert_eq!(bench(&["chat", "--label", "novalue"]).0, 2);
    assert_eq!(bench(&["no-such-subcommand"]).0, 2);
    // Nobody listens on a port we just released: every connect is refused -> run error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/echo");
    assert_eq!(
        bench(&["ping", "--url", &url, "--quiet", "--duration", "1s"]).0,
        1
    );
    assert_eq!(
        bench(&["connect", "--url", &url, "--conns", "3", "--quiet"]).0,
        1
    );
}

/// A certificate and key for 127.0.0.1 as PEM files (for --tls-cert/--tls-key and --ca).
fn test_certificate(dir_name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = temp_path(&format!("{dir_name}-cert.pem"));
    let key = temp_path(&format!("{dir_name}-key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// GET `path` over https from a server whose certificate is `ca`: the server's own view
/// (its /stats) after a wss:// run.
fn https_get(addr: &str, ca: &Path, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    // The server may close without close_notify once the body is out: keep what came.
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn wss_chat_and_connect_with_a_trusted_certificate_account_exactly() {
    let (cert, key) = test_certificate("wss");
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let ca = cert.to_str().unwrap();
    let json = temp_path("wss-chat.json");
    let url = format!("wss://{}", server.addr);
    let pid = server.pid().to_string();
    // 12 connections, 2 rooms of 6, 120 msg/s for 1 s: each connection sends exactly 10
    // messages (period 100 ms), 120 in total, each reaching the 5 other members of its room.
    let (code, stdout) = bench(&[
        "chat",
        "--url",
        &url,
        "--ca",
        ca,
        "--conns",
        "12",
        "--rooms",
        "2",
        "--rate",
        "120",
        "--warmup",
        "0s",
        "--duration",
        "1s",
        "--drain",
        "10s",
        "--threads",
        "2",
        "--server-pid",
        &pid,
        "--require-correct",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let run = read_json(&json);
    assert_eq!(run["config"]["tls"], true);
    assert_eq!(counter(&run, "opened"), 12);
    assert_eq!(counter(&run, "join_notices"), 2 * 15);
    assert_eq!(counter(&run, "sent"), 120);
    assert_eq!(counter(&run, "expected"), 120 * 5);
    assert_eq!(counter(&run, "received"), 120 * 5);
    for zero in [
        "lost",
        "out_of_order",
        "duplicates",
        "malformed",
        "foreign",
        "disconnects",
        "tls_errors",
        "connect_tls_error",
    ] {
        assert_eq!(counter(&run, zero), 0, "{zero}");
    }
    assert_eq!(run["correct"], true);
    assert_eq!(
        run["histograms"]["latency_us"]["percentiles"]["count"],
        120 * 5
    );

    let json = temp_path("wss-connect.json");
    let (code, stdout) = bench(&[
        "connect",
        "--url",
        &format!("{url}/echo"),
        "--ca",
        ca,
        "--conns",
        "100",
        "--concurrency",
        "10",
        "--threads",
        "2",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let run = read_json(&json);
    assert_eq!(counter(&run, "attempted"), 100);
    assert_eq!(counter(&run, "handshakes"), 100);
    assert_eq!(counter(&run, "failed"), 0);
    for hist in ["connect_us", "tls_us", "upgrade_us"] {
        assert_eq!(
            run["histograms"][hist]["percentiles"]["count"], 100,
            "{hist}"
        );
    }
    // The server saw every one of those sessions end cleanly (the loader sends close_notify).
    let stats = https_get(&server.addr, &cert, "/stats");
    assert!(stats.contains("\"tls_errors\": 0"), "{stats}");
}

#[test]
fn wss_ping_against_self_signed_with_insecure_and_tls_failures_are_counted() {
    let server = Server::start_with(&["--tls-self-signed"]);
    let url = format!("wss://{}/echo", server.addr);
    let json = temp_path("wss-ping.json");
    let (code, stdout) = bench(&[
        "ping",
        "--url",
        &url,
        "--insecure",
        "--rate",
        "100",
        "--warmup",
        "0s",
        "--duration",
        "1s",
        "--require-correct",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let run = read_json(&json);
    assert_eq!(counter(&run, "received"), 100);

    // A certificate nobody trusts: every handshake is a counted TLS failure (exit 1).
    let (other_ca, _) = test_certificate("other");
    let json = temp_path("wss-untrusted.json");
    let (code, _) = bench(&[
        "connect",
        "--url",
        &url,
        "--ca",
        other_ca.to_str().unwrap(),
        "--conns",
        "5",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let run = read_json(&json);
    assert_eq!(counter(&run, "connect_tls_error"), 5);
    assert_eq!(counter(&run, "failed"), 5);

    // wss:// to a plain server: the 400 it answers the ClientHello with is no TLS.
    let plain = Server::start();
    let (code, _) = bench(&[
        "connect",
        "--url",
        &format!("wss://{}/echo", plain.addr),
        "--insecure",
        "--conns",
        "3",
        "--timeout",
        "5s",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(counter(&read_json(&json), "handshakes"), 0);

    // wss:// without saying whom to trust is a usage error.
    assert_eq!(bench(&["connect", "--url", &url, "--conns", "1"]).0, 2);
}

/// `--deflate` against a server with and without it: compression both ways where agreed,
/// plain frames where not, and exact accounting either way.
#[test]
fn deflate_compresses_both_ways_where_agreed_and_accounts_exactly() {
    for server_deflate in [true, false] {
        let server = if server_deflate {
            Server::start_with(&["--deflate"])
        } else {
            Server::start()
        };
        let json = temp_path(&format!("deflate-{server_deflate}.json"));
        let url = format!("ws://{}", server.addr);
        // 20 connections, 2 rooms of 10, 250 msg/s for 2 s: every connection is scheduled to
        // send 25 (period 80 ms), 500 messages, 9 deliveries each.
        let (code, stdout) = bench(&[
            "chat",
            "--url",
            &url,
            "--conns",
            "20",
            "--rooms",
            "2",
            "--rate",
            "250",
            "--warmup",
            "0s",
            "--duration",
            "2s",
            "--drain",
            "10s",
            "--payload",
            "300",
            "--fill",
            "text",
            "--deflate",
            "--require-correct",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stdout}");
        let run = read_json(&json);
        let (sent, received) = (counter(&run, "sent"), counter(&run, "received"));
        // 500 scheduled; fewer if the loader is starved of CPU (see above).
        assert!(sent > 0 && sent <= 500, "{sent} sent");
        assert_eq!(received, sent * 9);
        assert_eq!(counter(&run, "payload_bytes_sent"), sent * 300);
        // Text messages reach the others as "b<id> says: <text>": 9 bytes more from b0..b9,
        // 10 from b10..b19.
        let said = |bytes: u64| (received * 309..=received * 310).contains(&bytes);
        let payload_received = counter(&run, "payload_bytes_received");
        assert!(said(payload_received), "{payload_received}");
        let wire_sent = counter(&run, "wire_bytes_sent");
        let wire_received = counter(&run, "wire_bytes_received");
        if server_deflate {
            assert_eq!(counter(&run, "deflate_agreed"), 20);
            // 300 bytes of chat-like text always shrink, in both directions.
            assert_eq!(counter(&run, "compressed_sent"), sent);
            assert_eq!(counter(&run, "compressed_received"), received);
            // One loader thread: each message inflated once, not once per receiver.
            assert_eq!(counter(&run, "inflations"), sent);
            assert!(wire_sent < sent * 300, "{wire_sent}");
            assert!(wire_received < received * 300, "{wire_received}");
        } else {
            assert_eq!(counter(&run, "deflate_agreed"), 0);
            assert_eq!(counter(&run, "compressed_sent"), 0);
            assert_eq!(counter(&run, "compressed_received"), 0);
            assert_eq!(wire_sent, sent * 300);
            assert_eq!(wire_received, payload_received);
        }

        let echo = format!("ws://{}/echo", server.addr);
        let json = temp_path(&format!("deflate-ping-{server_deflate}.json"));
        let (code, stdout) = bench(&[
            "ping",
            "--url",
            &echo,
            "--conns",
            "2",
            "--rate",
            "100",
            "--warmup",
            "0s",
            "--duration",
            "1s",
            "--payload",
            "200",
            "--fill",
            "text",
            "--deflate",
            "--require-correct",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stdout}");
        let run = read_json(&json);
        // How many of the 100 scheduled pings fit in the 1 s window depends on how much CPU
        // the loader got (a starved loader sends fewer, and says so); what is checked is the
        // accounting: every ping sent came back, compressed exactly where agreed.
        let received = counter(&run, "received");
        assert!(
            received > 0 && received <= 100,
            "{received} pings came back"
        );
        assert_eq!(received, counter(&run, "sent"));
        let compressed = if server_deflate { received } else { 0 };
        assert_eq!(counter(&run, "compressed_received"), compressed);

        let json = temp_path(&format!("deflate-connect-{server_deflate}.json"));
        let (code, stdout) = bench(&[
            "connect",
            "--url",
            &echo,
            "--conns",
            "50",
            "--concurrency",
            "10",
            "--deflate",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stdout}");
        let run = read_json(&json);
        assert_eq!(counter(&run, "handshakes"), 50);
        let agreed = if server_deflate { 50 } else { 0 };
        assert_eq!(counter(&run, "deflate_agreed"), agreed);
    }
}
