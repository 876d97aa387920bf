//! The client's opening handshake (RFC 6455 4.1), the one every subcommand uses: the
//! upgrade request, and the check of the server's response head (status 101, the
//! Sec-WebSocket-Accept of our key, the permessage-deflate terms it chose).
//!
//! Owns: [`ClientHandshake`], which is sans-IO (bytes in through `handle_input`, the verdict
//! out of `poll_response`), and [`read_response`], the one read loop that feeds it from a
//! connection's [`Transport`] for both the message loaders (load) and the storm (connect).
//! Must never: panic on anything the server sends (a bad head is a failure the caller
//! counts), buffer more than [`MAX_RESPONSE_HEAD`] bytes of head, block, or read the clock
//! (the callers time the upgrade).

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use wschat::ws::deflate::{EXTENSION_NAME, parse_extensions, window_bits};
use wschat::ws::handshake::{accept_key, find_head_end};

use crate::net::ConnectError;
use crate::transport::Transport;

/// The largest response head we buffer before giving up on the handshake.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Headers parsed in the 101 response.
const MAX_RESPONSE_HEADERS: usize = 32;

/// Why an upgrade failed (counted as a [`ConnectError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The server answered with another status (e.g. 503 when over --max-conns).
    Status(u16),
    /// 101 without the right Sec-WebSocket-Accept, an unparsable head, or an extension we
    /// did not offer or whose parameters break RFC 7692.
    BadResponse,
}

/// What `--deflate` offers: what Chromium offers (the server picks both windows and whether
/// it keeps its context; the client's window left to the server).
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// permessage-deflate as the server's 101 agreed it (RFC 7692 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateTerms {
    /// The server compresses every message with a fresh context: our inflater is reset
    /// after each message. Without it the inflater keeps the server's window across messages.
    pub server_no_context_takeover: bool,
    /// The window of the server's frames (what our inflater needs).
    pub server_window_bits: u8,
    /// The largest window we may compress with. We always compress with a fresh context,
    /// which every agreement allows.
    pub client_window_bits: u8,
}

/// A valid 101: the length of its head (frames may follow it) and what it agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Upgraded {
    head_len: usize,
    deflate: Option<DeflateTerms>,
}

impl From<HandshakeFailure> for ConnectError {
    fn from(failure: HandshakeFailure) -> ConnectError {
        match failure {
            HandshakeFailure::Status(_) => ConnectError::Rejected,
            HandshakeFailure::BadResponse => ConnectError::BadResponse,
        }
    }
}

/// One connection's upgrade, from the request to the verdict on the response.
///
/// Call order: [`ClientHandshake::start`] gives the request to send; then `handle_input`
/// with the bytes that arrive and `poll_response` after each, until it returns
/// `Ok(Some(_))` or an error, either of which ends the handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    key: String,
    offered_deflate: bool,
    /// The response so far (its head, and whatever followed it in the same reads).
    received: Vec<u8>,
}

/// A connection the server upgraded.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub deflate: Option<DeflateTerms>,
    /// What came after the head in the same reads: frames the server sent right after its
    /// 101 (a join notice, say), for the message reader.
    pub after_head: Vec<u8>,
}

impl ClientHandshake {
    /// A handshake for `path_and_query` on `host` (`host:port`) with a key made of
    /// `random`, offering permessage-deflate when `offer_deflate`; returns it and the
    /// request to send.
    pub fn start(
        random: [u8; 16],
        host: &str,
        path_and_query: &str,
        offer_deflate: bool,
    ) -> (ClientHandshake, Vec<u8>) {
        let key = new_key(random);
        let request = upgrade_request(host, path_and_query, &key, offer_deflate);
        let handshake = ClientHandshake {
            key,
            offered_deflate: offer_deflate,
            received: Vec::new(),
        };
        (handshake, request)
    }

    /// Bytes the server sent (in any pieces).
    pub fn handle_input(&mut self, bytes: &[u8]) {
        self.received.extend_from_slice(bytes);
    }

    /// The verdict on the response so far: `Ok(None)` while its head is incomplete.
    pub fn poll_response(&mut self) -> Result<Option<Opened>, HandshakeFailure> {
        let Some(upgraded) = check_response(&self.received, &self.key, self.offered_deflate)?
        else {
            return Ok(None);
        };
        Ok(Some(Opened {
            deflate: upgraded.deflate,
            after_head: self.received.split_off(upgraded.head_len),
        }))
    }
}

/// Where reading the response got to.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseState {
    /// The socket has nothing more for now and the head is not complete: wait for the next
    /// readable event.
    Incomplete,
    Opened(Opened),
    Failed(ConnectError),
}

/// Reads from `stream` (through `scratch`) into `handshake` until its response is decided
/// or the socket has nothing more; the end of the stream before a whole head is a reset.
pub fn read_response(
    stream: &mut Transport,
    scratch: &mut [u8],
    handshake: &mut ClientHandshake,
) -> ResponseState {
    loop {
        match stream.read_with(scratch, |bytes| handshake.handle_input(bytes)) {
            Ok(0) => return ResponseState::Failed(ConnectError::Reset),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ResponseState::Incomplete,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return ResponseState::Failed(ConnectError::from_io(&e)),
        }
        match handshake.poll_response() {
            Ok(None) => {}
            Ok(Some(opened)) => return ResponseState::Opened(opened),
            Err(failure) => return ResponseState::Failed(failure.into()),
        }
    }
}

/// A fresh `Sec-WebSocket-Key` from 16 random bytes.
fn new_key(random: [u8; 16]) -> String {
    BASE64.encode(random)
}

/// The upgrade request for `path_and_query` on `host` (`host:port`), offering
/// permessage-deflate ([`DEFLATE_OFFER`]) when `offer_deflate`.
fn upgrade_request(host: &str, path_and_query: &str, key: &str, offer_deflate: bool) -> Vec<u8> {
    let extensions = if offer_deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         {extensions}\r\n"
    )
    .into_bytes()
}

/// Looks for a complete response head in `buf`. `Ok(None)`: not complete yet.
/// `Ok(Some(upgraded))`: a valid 101 for `key` (and for what we offered: `offered_deflate`).
fn check_response(
    buf: &[u8],
    key: &str,
    offered_deflate: bool,
) -> Result<Option<Upgraded>, HandshakeFailure> {
    let Some(head_len) = find_head_end(buf, 0) else {
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(HandshakeFailure::BadResponse);
        }
        return Ok(None);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HandshakeFailure::BadResponse),
    }
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeFailure::Status(status));
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Accept"))
        .map(|h| h.value);
    if accept != Some(accept_key(key).as_bytes()) {
        return Err(HandshakeFailure::BadResponse);
    }
    let extensions: Vec<&[u8]> = response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|h| h.value)
        .collect();
    let deflate =
        deflate_terms(&extensions, offered_deflate).ok_or(HandshakeFailure::BadResponse)?;
    Ok(Some(Upgraded { head_len, deflate }))
}

/// The terms in the response's extension headers: `Some(None)` for no extension,
/// `None` for a response a client must fail (RFC 6455 4.1, RFC 7692 5 and 7.1): an
/// extension we did not offer, more than one, or an unknown, repeated or invalid parameter.
fn deflate_terms(values: &[&[u8]], offered: bool) -> Option<Option<DeflateTerms>> {
    let accepted = parse_extensions(values).ok()?;
    let offer = match accepted.as_slice() {
        [] => return Some(None),
        [one] if offered && one.name.eq_ignore_ascii_case(EXTENSION_NAME) => one,
        _ => return None,
    };
    let mut terms = DeflateTerms {
        server_no_context_takeover: false,
        server_window_bits: 15,
        client_window_bits: 15,
    };
    let mut seen = Vec::new();
    for (name, value) in &offer.params {
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => terms.server_no_context_takeover = true,
            // We compress every message with a fresh context anyway.
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => terms.server_window_bits = window_bits(v)?,
            ("client_max_window_bits", Some(v)) => terms.client_window_bits = window_bits(v)?,
            _ => return None,
        }
        seen.push(name);
    }
    Some(Some(terms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use wschat::ws::frame::{Opcode, server_frame};

    /// RFC 6455's sample: the key "the sample nonce" makes, and the accept value for it.
    const SAMPLE_NONCE: [u8; 16] = *b"the sample nonce";
    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const VALID_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    const WRONG_ACCEPT: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
    const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";

    fn sample_handshake() -> ClientHandshake {
        let (handshake, request) =
            ClientHandshake::start(SAMPLE_NONCE, "127.0.0.1:1", "/echo", false);
        assert!(request.ends_with(b"\r\n\r\n"));
        assert_eq!(handshake.key, SAMPLE_KEY);
        handshake
    }

    /// The verdict on `response` handed over in one piece.
    fn verdict(response: &[u8]) -> Result<Option<Opened>, HandshakeFailure> {
        let mut handshake = sample_handshake();
        handshake.handle_input(response);
        handshake.poll_response()
    }

    #[test]
    fn a_valid_101_opens_in_any_split_and_keeps_what_follows_it() {
        let frame = server_frame(Opcode::Text, &[b"hi"]);
        let stream = [VALID_101, &frame[..]].concat();
        for split in 0..stream.len() {
            let mut handshake = sample_handshake();
            handshake.handle_input(&stream[..split]);
            let first = handshake.poll_response();
            if split < VALID_101.len() {
                assert_eq!(first, Ok(None), "split {split}");
                handshake.handle_input(&stream[split..]);
                let opened = handshake.poll_response();
                assert_eq!(
                    opened,
                    Ok(Some(Opened {
                        deflate: None,
                        after_head: frame.to_vec(),
                    })),
                    "split {split}"
                );
            } else {
                let opened = first.unwrap().unwrap();
                assert_eq!(opened.after_head, &stream[VALID_101.len()..split]);
            }
        }
    }

    #[test]
    fn a_wrong_accept_is_a_bad_response() {
        assert_eq!(verdict(WRONG_ACCEPT), Err(HandshakeFailure::BadResponse));
        assert_eq!(
            ConnectError::from(HandshakeFailure::BadResponse),
            ConnectError::BadResponse
        );
    }

    #[test]
    fn another_status_is_a_rejection() {
        assert_eq!(verdict(OVER_CAPACITY), Err(HandshakeFailure::Status(503)));
        assert_eq!(
            ConnectError::from(HandshakeFailure::Status(503)),
            ConnectError::Rejected
        );
        // A 200 is not an upgrade either, even with the right accept value.
        let ok = [b"HTTP/1.1 200 OK\r\n".as_slice(), &VALID_101[34..]].concat();
        assert_eq!(verdict(&ok), Err(HandshakeFailure::Status(200)));
    }

    #[test]
    fn a_truncated_head_waits_and_an_endless_one_fails() {
        for cut in 0..VALID_101.len() {
            assert_eq!(verdict(&VALID_101[..cut]), Ok(None), "cut {cut}");
        }
        let mut endless = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        while endless.len() <= MAX_RESPONSE_HEAD {
            endless.extend_from_slice(b"X-Filler: 0123456789abcdef\r\n");
        }
        assert_eq!(verdict(&endless), Err(HandshakeFailure::BadResponse));
        assert_eq!(verdict(b"\r\n\r\n"), Err(HandshakeFailure::BadResponse));
    }

    /// `read_response` over a real socket: the server side writes `response`, then closes.
    /// The client's socket is left blocking, so every read waits for bytes or the end:
    /// no timing is involved.
    fn read_from_socket(response: &[u8]) -> ResponseState {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(response).unwrap();
        drop(server);
        let mut stream = Transport::new(mio::net::TcpStream::from_std(client), None).unwrap();
        let mut handshake = sample_handshake();
        read_response(&mut stream, &mut [0; 7], &mut handshake)
    }

    #[test]
    fn read_response_turns_every_verdict_into_a_state() {
        assert_eq!(
            read_from_socket(VALID_101),
            ResponseState::Opened(Opened {
                deflate: None,
                after_head: Vec::new(),
            })
        );
        let failed = |response| match read_from_socket(response) {
            ResponseState::Failed(why) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(failed(WRONG_ACCEPT), ConnectError::BadResponse);
        assert_eq!(failed(OVER_CAPACITY), ConnectError::Rejected);
        assert_eq!(failed(&VALID_101[..40]), ConnectError::Reset);
    }

    #[test]
    fn request_is_accepted_by_the_servers_parser() {
        let req = upgrade_request("127.0.0.1:1", "/chat/room-1?name=b1", SAMPLE_KEY, false);
        let parsed = wschat::ws::handshake::parse_request(&req).unwrap();
        assert_eq!(parsed.path, "/chat/room-1");
        assert_eq!(parsed.upgrade.unwrap().key, SAMPLE_KEY);
    }

    /// The server's sans-IO connection answers our offer; we read its terms back.
    #[test]
    fn the_servers_answer_to_our_offer_is_understood() {
        for offer in [false, true] {
            let req = upgrade_request("127.0.0.1:1", "/echo", SAMPLE_KEY, offer);
            let limits = wschat::ws::Limits {
                max_message: 1 << 20,
                handshake_timeout: std::time::Duration::from_secs(5),
                close_timeout: std::time::Duration::from_secs(5),
            };
            let mut server = wschat::ws::Connection::new(limits, std::time::Instant::now());
            server.handle_input(&req);
            while server.poll_event().is_some() {}
            server.accept_with_deflate(&[], true).unwrap();
            let mut resp = Vec::new();
            while let Some(frame) = server.poll_output() {
                resp.extend_from_slice(&frame);
            }
            let upgraded = check_response(&resp, SAMPLE_KEY, offer).unwrap().unwrap();
            assert_eq!(upgraded.head_len, resp.len());
            let want = offer.then_some(DeflateTerms {
                server_no_context_takeover: true,
                server_window_bits: 15,
                client_window_bits: 15,
            });
            assert_eq!(upgraded.deflate, want, "offer {offer}");
        }
    }

    fn response_with(extensions: &str) -> Vec<u8> {
        wschat::ws::handshake::switching_protocols(
            SAMPLE_KEY,
            &[("Sec-WebSocket-Extensions", extensions)],
        )
    }

    #[test]
    fn deflate_terms_follow_the_response() {
        let terms = |ext: &str| {
            check_response(&response_with(ext), SAMPLE_KEY, true).map(|u| u.unwrap().deflate)
        };
        assert_eq!(
            terms("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"),
            Ok(Some(DeflateTerms {
                server_no_context_takeover: false,
                server_window_bits: 10,
                client_window_bits: 9,
            }))
        );
        assert_eq!(
            terms("Permessage-Deflate;Client_No_Context_Takeover"),
            Ok(Some(DeflateTerms {
                server_no_context_takeover: false,
                server_window_bits: 15,
                client_window_bits: 15,
            }))
        );
        // A client must fail the connection on anything it did not offer or cannot read.
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; ;",
        ] {
            assert_eq!(terms(bad), Err(HandshakeFailure::BadResponse), "{bad}");
        }
        assert_eq!(
            check_response(&response_with("permessage-deflate"), SAMPLE_KEY, false),
            Err(HandshakeFailure::BadResponse),
            "not offered"
        );
    }
}
