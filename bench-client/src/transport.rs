//! The byte stream under the WebSocket client: the TCP socket itself (`ws://`), or a rustls
//! client session on it (`wss://`), driven sans-IO from the loaders' own mio loops.
//!
//! Owns: the client TLS configuration (whom to trust), each connection's TLS state, and the
//! moves between socket bytes and plaintext (`read_tls`/`process_new_packets`/`reader` in,
//! `writer`/`write_tls` out). Must never: block, panic on what the peer sends (a TLS failure
//! is an `io::Error` that [`is_tls_error`] recognises, counted by the caller), or add work
//! to a plain connection (one enum match per call, then the same syscall as before).

use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

/// Which server certificates a `wss://` client accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Any certificate (`--insecure`), e.g. the server's `--tls-self-signed` one. The
    /// handshake signature is still checked against the presented certificate, so the
    /// server does all the work of a real handshake; only the chain is not.
    AnyCertificate,
    /// Certificates that chain to one in this PEM file (`--ca FILE`).
    CaFile(std::path::PathBuf),
}

/// The TLS side of every `wss://` connection of a run: configuration and server name.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// `host` is the URL's host without the port (an IP address or a DNS name).
    pub fn new(trust: &Trust, host: &str) -> anyhow::Result<TlsClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let mut config = match trust {
            Trust::AnyCertificate => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
            Trust::CaFile(path) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("reading {}", path.display()))?;
                anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
                for cert in certs {
                    roots
                        .add(cert)
                        .with_context(|| format!("a certificate in {}", path.display()))?;
                }
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .context("building the certificate verifier")?;
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            }
        };
        // Every loader connection stands for a different user, and a storm measures full
        // handshakes: a shared session cache would turn all but the first into resumptions.
        config.resumption = Resumption::disabled();
        // The upgrade is HTTP/1.1, which is also all the server offers.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = match bare.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(bare.to_string())
                .with_context(|| format!("{host} is not a valid TLS server name"))?,
        };
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    fn session(&self) -> io::Result<ClientConnection> {
        ClientConnection::new(self.config.clone(), self.name.clone()).map_err(tls_error)
    }
}

/// `--insecure`: accepts whatever certificate the server shows, but still verifies that the
/// handshake was signed with its key (with the provider's algorithms), as a browser would.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A rustls failure as an `io::Error` that [`is_tls_error`] recognises.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Whether `err` came from TLS (a bad record, a certificate refused, an alert received).
pub fn is_tls_error(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<rustls::Error>())
}

/// One connection's stream.
pub enum Transport {
    Plain(TcpStream),
    /// Boxed: a rustls session is large, and plain connections should not pay its size.
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    tcp: TcpStream,
    tls: ClientConnection,
    /// close_notify arrived: the next read reports the end of the stream.
    peer_closed: bool,
}

impl Transport {
    /// Wraps a connecting socket; with `tls`, the ClientHello is queued at once and leaves on
    /// the first `write` or `flush`.
    pub fn new(tcp: TcpStream, tls: Option<&TlsClient>) -> io::Result<Transport> {
        Ok(match tls {
            None => Transport::Plain(tcp),
            Some(client) => Transport::Tls(Box::new(TlsStream {
                tcp,
                tls: client.session()?,
                peer_closed: false,
            })),
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(s) => &s.tcp,
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(s) => &mut s.tcp,
        }
    }

    /// The TLS handshake is still going (never for a plain stream).
    pub fn handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.tls.is_handshaking(),
        }
    }

    /// One read from the socket into `scratch`; the plaintext it carried goes to `deliver`
    /// (for a plain stream: the bytes read, in one call). Like `Read::read`: `Ok(0)` is the end
    /// of the stream (FIN, or TLS close_notify), `WouldBlock` means nothing now. `Ok(n > 0)`
    /// counts socket bytes, so it may come with no plaintext (a partial record, a handshake
    /// message).
    #[inline]
    pub fn read_with(
        &mut self,
        scratch: &mut [u8],
        deliver: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => {
                let mut deliver = deliver;
                let n = tcp.read(scratch)?;
                if n > 0 {
                    deliver(&scratch[..n]);
                }
                Ok(n)
            }
            Transport::Tls(s) => s.read_with(scratch, deliver),
        }
    }

    /// Like `Write::write` for plaintext. With TLS, records rustls still holds go first: if
    /// the socket cannot take them, `WouldBlock`, and `buf` stays with the caller (so the
    /// backlog of a slow connection stays in the caller's queue, as for a plain one).
    #[inline]
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    /// Sends the records rustls holds (handshake messages, sealed data, alerts); `WouldBlock`
    /// if some must wait for the next WRITABLE edge. Nothing to do for a plain stream.
    #[inline]
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(s) => s.send_records(),
        }
    }

    /// Queues close_notify and tries once to send it, so the server sees a clean TLS close
    /// rather than a truncation; best effort (the socket is closed next either way).
    pub fn close_notify(&mut self) {
        if let Transport::Tls(s) = self {
            s.tls.send_close_notify();
            let _ = s.send_records();
        }
    }
}

impl TlsStream {
    fn read_with(
        &mut self,
        scratch: &mut [u8],
        mut deliver: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        if self.peer_closed {
            return Ok(0);
        }
        // One syscall for up to `scratch` bytes (rustls reading the socket itself would
        // make one per 4 KiB), then rustls takes them from the slice.
        let n = self.tcp.read(scratch)?;
        if n == 0 {
            return Ok(0);
        }
        let mut input = &scratch[..n];
        while !input.is_empty() {
            match self.tls.read_tls(&mut input) {
                // close_notify already processed: rustls takes nothing more.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // rustls queued an alert telling the server why; try to send it.
                    let _ = self.send_records();
                    return Err(tls_error(e));
                }
            };
            self.peer_closed |= state.peer_has_closed();
            // Drained after every record batch: rustls refuses more input while 16 KiB of
            // plaintext wait.
            let mut reader = self.tls.reader();
            while let Ok(chunk) = reader.fill_buf() {
                if chunk.is_empty() {
                    break;
                }
                let len = chunk.len();
                deliver(chunk);
                reader.consume(len);
            }
        }
        // Processing may have produced records to send: the handshake's next flight (and the
        // plaintext queued behind it), or an answer to a key update.
        match self.send_records() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_records()?;
        let taken = self.tls.writer().write(buf)?;
        if taken == 0 && !buf.is_empty() {
            // rustls's buffer is full (only possible before the handshake ends, with more
            // than 64 KiB queued): the caller keeps its bytes and retries.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.send_records() {
            Ok(()) => Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(taken),
            Err(e) => Err(e),
        }
    }

    fn send_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.tcp)? == 0 {
                // The socket took nothing without saying WouldBlock: do not spin.
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};

    /// A certificate for 127.0.0.1 and its server configuration.
    fn test_server(names: &[&str]) -> (Arc<ServerConfig>, String) {
        let made = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .unwrap();
        (Arc::new(config), made.cert.pem())
    }

    /// A blocking rustls server on another thread: completes the handshake, answers each
    /// chunk it receives with `reply(chunk)`, and stops at close_notify or EOF. Returns the
    /// address and the handle (whose result is the plaintext received).
    fn spawn_server(
        config: Arc<ServerConfig>,
        reply: fn(&[u8]) -> Vec<u8>,
    ) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        let answer = reply(&buf[..n]);
                        if tls.write_all(&answer).is_err() {
                            break;
                        }
                    }
                }
            }
            got
        });
        (addr, handle)
    }

    fn connect(addr: std::net::SocketAddr, client: &TlsClient) -> (Poll, Transport) {
        let poll = Poll::new().unwrap();
        let tcp = crate::net::start_connect(addr, None).unwrap();
        let mut transport = Transport::new(tcp, Some(client)).unwrap();
        poll.registry()
            .register(
                transport.tcp_mut(),
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        (poll, transport)
    }

    /// Drives `transport` like the loaders do (edge-triggered events, flush on WRITABLE,
    /// read until WouldBlock) until `done(received)` or an error.
    fn drive(
        poll: &mut Poll,
        transport: &mut Transport,
        mut to_send: Vec<u8>,
        done: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Vec<u8>> {
        let mut events = Events::with_capacity(8);
        let mut received = Vec::new();
        let mut scratch = vec![0u8; 1000]; // small: records and reads split differently
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&received) {
            assert!(Instant::now() < deadline, "no progress");
            poll.poll(&mut events, Some(Duration::from_millis(50)))?;
            if !crate::net::connect_finished(transport.tcp())? {
                continue;
            }
            while !to_send.is_empty() {
                match transport.write(&to_send) {
                    Ok(n) => {
                        to_send.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            match transport.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            loop {
                match transport.read_with(&mut scratch, |b| received.extend_from_slice(b)) {
                    Ok(0) => return Ok(received),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(received)
    }

    #[test]
    fn request_before_the_handshake_ends_then_a_large_answer() {
        let (config, _) = test_server(&["127.0.0.1"]);
        // 100 KB back for every chunk: several records, more than one read of `scratch`.
        let (addr, server) = spawn_server(config, |_| vec![7u8; 100_000]);
        let client = TlsClient::new(&Trust::AnyCertificate, "127.0.0.1").unwrap();
        let (mut poll, mut transport) = connect(addr, &client);
        assert!(transport.handshaking());
        // Written before the handshake has even started: rustls holds it until it can seal.
        let got = drive(&mut poll, &mut transport, b"hello".to_vec(), |r| {
            r.len() >= 100_000
        })
        .unwrap();
        assert!(!transport.handshaking());
        assert_eq!(got, vec![7u8; 100_000]);
        transport.close_notify();
        assert_eq!(server.join().unwrap(), b"hello");
    }

    #[test]
    fn ca_file_trusts_its_certificate_and_only_for_its_names() {
        let (config, pem) = test_server(&["127.0.0.1"]);
        let dir = std::env::temp_dir().join(format!("bench-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, pem).unwrap();

        let (addr, server) = spawn_server(config.clone(), |chunk| chunk.to_vec());
        let client = TlsClient::new(&Trust::CaFile(ca.clone()), "127.0.0.1").unwrap();
        let (mut poll, mut transport) = connect(addr, &client);
        let got = drive(&mut poll, &mut transport, b"ping".to_vec(), |r| {
            r.len() >= 4
        })
        .unwrap();
        assert_eq!(got, b"ping");
        transport.close_notify();
        assert_eq!(server.join().unwrap(), b"ping");

        // The same certificate presented for a name it does not carry: a TLS error, no panic.
        let (addr, server) = spawn_server(config, |chunk| chunk.to_vec());
        let client = TlsClient::new(&Trust::CaFile(ca), "localhost").unwrap();
        let (mut poll, mut transport) = connect(addr, &client);
        let err = drive(&mut poll, &mut transport, b"x".to_vec(), |_| false).unwrap_err();
        assert!(is_tls_error(&err), "{err}");
        drop(transport);
        assert_eq!(server.join().unwrap(), b"");
    }

    #[test]
    fn untrusted_certificate_is_a_tls_error() {
        let (config, _) = test_server(&["127.0.0.1"]);
        let (_, other_pem) = test_server(&["127.0.0.1"]);
        let dir = std::env::temp_dir().join(format!("bench-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("other.pem");
        std::fs::write(&ca, other_pem).unwrap();
        let (addr, server) = spawn_server(config, |chunk| chunk.to_vec());
        let client = TlsClient::new(&Trust::CaFile(ca), "127.0.0.1").unwrap();
        let (mut poll, mut transport) = connect(addr, &client);
        let err = drive(&mut poll, &mut transport, vec![], |_| false).unwrap_err();
        assert!(is_tls_error(&err), "{err}");
        drop(transport);
        let _ = server.join();
    }

    #[test]
    fn garbage_instead_of_tls_is_an_error_not_a_panic() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            // A plain-HTTP server's answer where a ServerHello should be.
            let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            // Open until the client closes: closing with its ClientHello unread would send
            // a reset, which the client could see instead of the answer. The timeout only
            // bounds a client that never closes.
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = sock.read_to_end(&mut Vec::new());
        });
        let client = TlsClient::new(&Trust::AnyCertificate, "127.0.0.1").unwrap();
        let (mut poll, mut transport) = connect(addr, &client);
        match drive(&mut poll, &mut transport, vec![], |_| false) {
            Err(e) => assert!(is_tls_error(&e), "{e}"),
            Ok(got) => assert!(got.is_empty()),
        }
        drop(transport);
        server.join().unwrap();
    }

    #[test]
    fn ca_file_errors_are_reported() {
        let missing = std::path::PathBuf::from("/nonexistent/ca.pem");
        assert!(TlsClient::new(&Trust::CaFile(missing), "127.0.0.1").is_err());
        let dir = std::env::temp_dir().join(format!("bench-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(TlsClient::new(&Trust::CaFile(empty), "127.0.0.1").is_err());
        assert!(TlsClient::new(&Trust::AnyCertificate, "[::1]").is_ok());
        assert!(TlsClient::new(&Trust::AnyCertificate, "bad name!").is_err());
    }

    #[test]
    fn plain_transport_reads_and_writes_unchanged() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = [0u8; 3];
            sock.read_exact(&mut buf).unwrap();
            sock.write_all(&buf).unwrap();
        });
        let mut poll = Poll::new().unwrap();
        let tcp = crate::net::start_connect(addr, None).unwrap();
        let mut transport = Transport::new(tcp, None).unwrap();
        poll.registry()
            .register(
                transport.tcp_mut(),
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        assert!(!transport.handshaking());
        let got = drive(&mut poll, &mut transport, b"abc".to_vec(), |r| r.len() >= 3).unwrap();
        assert_eq!(got, b"abc");
        server.join().unwrap();
    }
}
