//! https:// and wss://: the same chat over TLS, for every pattern and backend. The tests make
//! their own certificate (rcgen), start the server with it, and speak TLS with rustls as a
//! client that trusts exactly that certificate; tungstenite runs on top of that stream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::*;

pub(crate) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A certificate for 127.0.0.1 written as PEM files, and a client config trusting it
/// (hostile.rs uses it too).
pub(crate) struct TestCert {
    dir: PathBuf,
    pub(crate) client: Arc<ClientConfig>,
}

impl TestCert {
    pub(crate) fn new() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "wschat-tls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(made.cert.der().to_vec()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestCert {
            dir,
            client: Arc::new(client),
        }
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.dir.join("cert.pem").display().to_string(),
            "--tls-key".into(),
            self.dir.join("key.pem").display().to_string(),
        ]
    }

    pub(crate) fn server(&self, s: &Setup, extra: &[&str]) -> Server {
        let flags = self.flags();
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        s.server_with(&all)
    }

    /// A TLS stream to the server (the handshake completes on first use).
    pub(crate) fn tls(&self, server: &Server) -> TlsStream {
        let tcp = server.tcp();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = ClientConnection::new(self.client.clone(), name).unwrap();
        StreamOwned::new(conn, tcp)
    }

    /// A WebSocket over TLS (wss://) that must be accepted.
    fn wss(&self, server: &Server, path: &str) -> tungstenite::WebSocket<TlsStream> {
        // tungstenite does no TLS itself here: the URL only names the resource.
        let url = format!("ws://{}{}", server.addr(), path);
        match tungstenite::client(url.as_str(), self.tls(server)) {
            Ok((ws, _)) => ws,
            Err(e) => panic!("wss handshake to {path}: {e:?}"),
        }
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(ws: &mut tungstenite::WebSocket<TlsStream>) -> String {
    loop {
        match ws.read().expect("read over TLS") {
            tungstenite::Message::Text(t) => return t.as_str().to_owned(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

wstest!(chat_and_echo_over_wss, |s| {
    let cert = TestCert::new();
    let server = cert.server(s, &[]);
    let mut ann = cert.wss(&server, "/chat/secure?name=ann");
    let mut bob = cert.wss(&server, "/chat/secure?name=bob");
    assert_eq!(text(&mut ann), "bob just connected");
    bob.send(tungstenite::Message::text("over TLS")).unwrap();
    assert_eq!(text(&mut ann), "bob says: over TLS");
    // A message bigger than one TLS record (16 KiB) arrives whole.
    let big = "z".repeat(100_000);
    ann.send(tungstenite::Message::text(big.clone())).unwrap();
    assert_eq!(text(&mut bob), format!("ann says: {big}"));
    let mut echo = cert.wss(&server, "/echo");
    echo.send(tungstenite::Message::binary(vec![1, 2, 3]))
        .unwrap();
    match echo.read().unwrap() {
        tungstenite::Message::Binary(b) => assert_eq!(&b[..], &[1, 2, 3]),
        other => panic!("{other:?}"),
    }
    echo.close(None).unwrap();
    loop {
        match echo.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(server.stats_tls(&cert)["totals"]["tls_errors"].as_u64() == Some(0));
});

wstest!(https_serves_the_page_and_stats, |s| {
    let cert = TestCert::new();
    let server = cert.server(s, &[]);
    let mut tls = cert.tls(&server);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
    assert!(text.contains("<html"), "{text:.300}");
});

wstest!(a_plain_client_on_a_tls_port_is_cut_and_others_go_on, |s| {
    let cert = TestCert::new();
    let server = cert.server(s, &[]);
    let mut plain = server.tcp();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // An alert, then the end of the connection; never an HTTP answer.
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut ws = cert.wss(&server, "/echo");
    ws.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(text(&mut ws), "still here");
    assert!(server.stats_tls(&cert)["totals"]["tls_errors"].as_u64() >= Some(1));
});

wstest!(a_silent_tls_client_meets_the_handshake_timeout, |s| {
    let cert = TestCert::new();
    let server = cert.server(s, &["--handshake-timeout", "300ms"]);
    let mut silent = server.tcp();
    expect_eof(&mut silent);
    let mut ws = cert.wss(&server, "/echo");
    ws.send(tungstenite::Message::text("served")).unwrap();
    assert_eq!(text(&mut ws), "served");
});

wstest!(shutdown_closes_wss_clients_with_1001, |s| {
    let cert = TestCert::new();
    let mut server = cert.server(s, &[]);
    let mut ws = cert.wss(&server, "/chat/bye?name=ann");
    ws.send(tungstenite::Message::text("/who")).unwrap();
    assert_eq!(text(&mut ws), "Members of bye: ann");
    server.sigterm();
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("no close frame over TLS: {e}"),
        }
    };
    assert_eq!(code, Some(1001));
    let _ = ws.flush();
    assert_eq!(server.wait_exit().code(), Some(0));
});

impl Server {
    /// `GET /stats` over TLS.
    fn stats_tls(&self, cert: &TestCert) -> serde_json::Value {
        let mut tls = cert.tls(self);
        tls.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:.300}"))
    }
}
