//! TLS for `https://` and `wss://`, sans-IO: certificates at start-up, and one rustls session
//! per connection that turns received bytes into plaintext and plaintext into records. The
//! shard puts a session between the reactor and the WebSocket layer of each connection when
//! TLS is on; the patterns, the protocol and the reactors do not know.
//!
//! Owns: the certificate and key (from PEM files, or made at start with rcgen), the rustls
//! configuration, and each connection's TLS state. Must never: touch a socket (bytes come
//! in and go out through the shard), or read a file after start-up.
//!
//! Records are made when a connection's previous records have all left (see the shard), so a
//! slow reader's backlog stays plaintext, where frames not yet started can still be dropped.
//! A record, once made, must be sent: TLS numbers its records, and a gap breaks the stream.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use thiserror::Error;

/// Why TLS could not be set up at start-up.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    #[error("reading the certificate chain {path}: {source}")]
    Certificate {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("reading the private key {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server's TLS configuration, shared by every connection.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
    /// For the start-up line: where the certificate came from.
    pub source: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("source", &self.source)
            .finish()
    }
}

impl TlsConfig {
    /// From a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsSetupError> {
        let cert_name = cert.display().to_string();
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsSetupError::Certificate {
                path: cert_name.clone(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsSetupError::NoCertificate(cert_name));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::Key {
            path: key.display().to_string(),
            source,
        })?;
        TlsConfig::new(chain, key, format!("certificate {cert_name}"))
    }

    /// A certificate for 127.0.0.1 and localhost, made now.
    pub fn self_signed() -> Result<TlsConfig, TlsSetupError> {
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])?;
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .map_err(|e| TlsSetupError::SelfSigned(rcgen::Error::PemError(e.to_string())))?;
        TlsConfig::new(
            vec![made.cert.der().clone()],
            key,
            "self-signed for 127.0.0.1, localhost".to_string(),
        )
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        source: String,
    ) -> Result<TlsConfig, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // WebSocket upgrades are HTTP/1.1; a browser offering h2 must not get it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            config: Arc::new(config),
            source,
        })
    }

    /// The TLS state of a connection just accepted.
    pub fn session(&self) -> Result<TlsSession, TlsError> {
        ServerConnection::new(self.config.clone())
            .map(|conn| TlsSession { conn })
            .map_err(TlsError::Protocol)
    }
}

/// Why a connection's TLS failed (the peer gets an alert when there is one to send).
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Protocol(#[from] rustls::Error),
    #[error("TLS: {0}")]
    Io(#[from] io::Error),
}

/// What one batch of received bytes brought.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The peer sent close_notify: nothing more will come (like a FIN).
    pub peer_closed: bool,
}

/// One connection's TLS state.
pub struct TlsSession {
    conn: ServerConnection,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl TlsSession {
    /// Decrypts `bytes` from the peer, appending the plaintext to `plaintext`. On an error
    /// the alert for the peer is queued (see [`TlsSession::take_records`]).
    pub fn receive(
        &mut self,
        mut bytes: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        let mut received = Received::default();
        while !bytes.is_empty() {
            if self.conn.read_tls(&mut bytes)? == 0 {
                break;
            }
            let state = self.conn.process_new_packets()?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = plaintext.len();
                plaintext.resize(start + ready, 0);
                self.conn.reader().read_exact(&mut plaintext[start..])?;
            }
            received.peer_closed |= state.peer_has_closed();
        }
        Ok(received)
    }

    /// Seals as much of `plaintext` into records as rustls takes now (it holds at most
    /// 64 KiB of records not yet taken); returns the bytes taken. The rest must be offered
    /// again once the records have been taken.
    pub fn seal(&mut self, plaintext: &[u8]) -> usize {
        self.conn.writer().write(plaintext).unwrap_or(0)
    }

    /// Queues close_notify: the peer learns that nothing more will come.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Records are waiting to be taken.
    pub fn has_records(&self) -> bool {
        self.conn.wants_write()
    }

    /// Moves every record ready to go (handshake messages, sealed data, alerts) into `out`.
    /// Returns whether anything was added.
    pub fn take_records(&mut self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break; // writing into a Vec cannot fail; stop rather than spin if it did
            }
        }
        out.len() > before
    }
}
