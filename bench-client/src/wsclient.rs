//! The client side of RFC 6455, sans-IO, on top of the server's codec (`wschat::ws`).
//!
//! Owns: the upgrade request and the check of its 101 response, masking outgoing frames,
//! and reassembling incoming (unmasked, possibly fragmented) server messages.
//! Must never: touch a socket or the clock, or panic on anything the server sends: a
//! malformed frame is a `ClientError`, which the loop counts and turns into a close.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use wschat::ws::ProtocolError;
use wschat::ws::frame::{FrameHeader, Opcode, encode_frame};
use wschat::ws::handshake::{accept_key, find_head_end};
use wschat::ws::mask::apply_mask;

/// The largest response head we buffer before giving up on the handshake.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Headers parsed in the 101 response.
const MAX_RESPONSE_HEADERS: usize = 32;

/// Why an upgrade failed, as the connect report counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The server answered with another status (e.g. 503 when over --max-conns).
    Status(u16),
    /// 101 without the right Sec-WebSocket-Accept, or an unparsable head.
    BadResponse,
}

/// What the server sent that a client must not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    Header(ProtocolError),
    /// Server-to-client frames are never masked (RFC 6455 5.1).
    MaskedFrame,
    /// A continuation without a started message, or a new message inside one.
    BadFragmentation,
    /// A message over the reader's limit.
    TooBig,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Header(e) => write!(f, "bad frame header: {e}"),
            ClientError::MaskedFrame => f.write_str("masked server frame"),
            ClientError::BadFragmentation => f.write_str("bad fragmentation"),
            ClientError::TooBig => f.write_str("message too big"),
        }
    }
}

/// A fresh `Sec-WebSocket-Key` from 16 random bytes.
pub fn new_key(random: [u8; 16]) -> String {
    BASE64.encode(random)
}

/// The upgrade request for `path_and_query` on `host` (`host:port`).
pub fn upgrade_request(host: &str, path_and_query: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Looks for a complete response head in `buf`. `Ok(None)`: not complete yet.
/// `Ok(Some(len))`: a valid 101 for `key`, whose head is `len` bytes (frames may follow).
pub fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeFailure> {
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
    Ok(Some(head_len))
}

/// Appends one masked client frame carrying `payload` to `out` (no intermediate buffer:
/// the payload is masked in place at the end of `out`).
pub fn push_masked_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], key: [u8; 4]) {
    FrameHeader {
        fin: true,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    }
    .encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

/// A masked Close frame with `code` (the reply to the server's Close, or our own).
pub fn close_frame(code: u16, key: [u8; 4]) -> Vec<u8> {
    encode_frame(Opcode::Close, &[&code.to_be_bytes()], Some(key))
}

/// The close code carried by a Close payload (1005 "no status" when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 1005,
    }
}

/// One complete incoming message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// Text, Binary, Close, Ping or Pong (never Continuation: fragments are reassembled).
    pub opcode: Opcode,
    pub payload: &'a [u8],
}

/// Reassembles server messages from the bytes the socket delivered.
///
/// Call order: `buffer_mut()`-style appends via `handle_input`, then `poll_message` until
/// `Ok(None)`; a returned error is final for this connection.
#[derive(Debug)]
pub struct MessageReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed; compacted on the next `handle_input`.
    consumed: usize,
    /// The message being reassembled from fragments: its opcode and payload so far.
    fragments: Option<(Opcode, Vec<u8>)>,
    /// The completed fragmented message handed out by the last `poll_message`.
    assembled: Vec<u8>,
    max_message: usize,
}

impl MessageReader {
    pub fn new(max_message: usize) -> MessageReader {
        MessageReader {
            buf: Vec::new(),
            consumed: 0,
            fragments: None,
            assembled: Vec::new(),
            max_message,
        }
    }

    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet parsed into a message.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.consumed
    }

    pub fn poll_message(&mut self) -> Result<Option<Incoming<'_>>, ClientError> {
        loop {
            let rest = &self.buf[self.consumed..];
            let Some((header, header_len)) =
                FrameHeader::parse(rest).map_err(ClientError::Header)?
            else {
                return Ok(None);
            };
            if header.mask.is_some() {
                return Err(ClientError::MaskedFrame);
            }
            let len = usize::try_from(header.payload_len).map_err(|_| ClientError::TooBig)?;
            if len > self.max_message {
                return Err(ClientError::TooBig);
            }
            if rest.len() - header_len < len {
                return Ok(None);
            }
            let start = self.consumed + header_len;
            self.consumed = start + len;
            let payload = start..start + len;
            if header.opcode.is_control() {
                return Ok(Some(Incoming {
                    opcode: header.opcode,
                    payload: &self.buf[payload],
                }));
            }
            match (header.opcode, header.fin, self.fragments.take()) {
                (Opcode::Continuation, _, None) => return Err(ClientError::BadFragmentation),
                (Opcode::Text | Opcode::Binary, _, Some(_)) => {
                    return Err(ClientError::BadFragmentation);
                }
                (opcode, true, None) => {
                    return Ok(Some(Incoming {
                        opcode,
                        payload: &self.buf[payload],
                    }));
                }
                (opcode, false, None) => {
                    self.fragments = Some((opcode, self.buf[payload].to_vec()));
                }
                (_, fin, Some((opcode, mut so_far))) => {
                    if so_far.len() + len > self.max_message {
                        return Err(ClientError::TooBig);
                    }
                    so_far.extend_from_slice(&self.buf[payload]);
                    if fin {
                        self.assembled = so_far;
                        return Ok(Some(Incoming {
                            opcode,
                            payload: &self.assembled,
                        }));
                    }
                    self.fragments = Some((opcode, so_far));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wschat::ws::frame::server_frame;

    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accepts_a_correct_101_and_reports_the_head_length() {
        let mut resp = wschat::ws::handshake::switching_protocols(SAMPLE_KEY, &[]);
        let head_len = resp.len();
        resp.extend_from_slice(&server_frame(Opcode::Text, &[b"hi"]));
        for cut in 0..head_len {
            assert_eq!(check_response(&resp[..cut], SAMPLE_KEY), Ok(None));
        }
        assert_eq!(check_response(&resp, SAMPLE_KEY), Ok(Some(head_len)));
    }

    #[test]
    fn rejects_wrong_status_and_wrong_accept() {
        let resp = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            check_response(resp, SAMPLE_KEY),
            Err(HandshakeFailure::Status(503))
        );
        let resp = wschat::ws::handshake::switching_protocols("AAAAAAAAAAAAAAAAAAAAAA==", &[]);
        assert_eq!(
            check_response(&resp, SAMPLE_KEY),
            Err(HandshakeFailure::BadResponse)
        );
        assert_eq!(
            check_response(&[b'x'; MAX_RESPONSE_HEAD + 1], SAMPLE_KEY),
            Err(HandshakeFailure::BadResponse)
        );
    }

    #[test]
    fn request_is_accepted_by_the_servers_parser() {
        let req = upgrade_request("127.0.0.1:1", "/chat/room-1?name=b1", SAMPLE_KEY);
        let parsed = wschat::ws::handshake::parse_request(&req).unwrap();
        assert_eq!(parsed.path, "/chat/room-1");
        assert_eq!(parsed.upgrade.unwrap().key, SAMPLE_KEY);
    }

    #[test]
    fn masked_frames_unmask_to_the_payload() {
        let mut out = vec![];
        push_masked_frame(&mut out, Opcode::Binary, b"payload", [9, 8, 7, 6]);
        assert_eq!(
            out,
            encode_frame(Opcode::Binary, &[b"payload"], Some([9, 8, 7, 6]))
        );
    }

    #[test]
    fn messages_arrive_whole_in_any_split() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&server_frame(Opcode::Binary, &[&[1u8; 300]]));
        stream.extend_from_slice(&server_frame(Opcode::Ping, &[b"p"]));
        stream.extend_from_slice(&encode_frame_nofin(Opcode::Text, b"he"));
        stream.extend_from_slice(&server_frame(Opcode::Pong, &[]));
        stream.extend_from_slice(&server_frame(Opcode::Continuation, &[b"llo"]));
        for split in 0..stream.len() {
            let mut reader = MessageReader::new(1 << 20);
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                reader.handle_input(part);
                while let Some(m) = reader.poll_message().unwrap() {
                    got.push((m.opcode, m.payload.to_vec()));
                }
            }
            assert_eq!(
                got,
                vec![
                    (Opcode::Binary, vec![1u8; 300]),
                    (Opcode::Ping, b"p".to_vec()),
                    (Opcode::Pong, vec![]),
                    (Opcode::Text, b"hello".to_vec()),
                ],
                "split {split}"
            );
            assert_eq!(reader.pending(), 0);
        }
    }

    fn encode_frame_nofin(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut f = encode_frame(opcode, &[payload], None);
        f[0] &= 0x7f;
        f
    }

    #[test]
    fn malformed_server_frames_are_errors_not_panics() {
        let cases: Vec<(Vec<u8>, ClientError)> = vec![
            (
                encode_frame(Opcode::Text, &[b"x"], Some([1, 2, 3, 4])),
                ClientError::MaskedFrame,
            ),
            (
                server_frame(Opcode::Continuation, &[b"x"]).to_vec(),
                ClientError::BadFragmentation,
            ),
            (
                vec![0xc2, 0x00],
                ClientError::Header(ProtocolError::ReservedBits),
            ),
            (
                server_frame(Opcode::Binary, &[&[0u8; 65]]).to_vec(),
                ClientError::TooBig,
            ),
        ];
        for (bytes, err) in cases {
            let mut reader = MessageReader::new(64);
            reader.handle_input(&bytes);
            assert_eq!(reader.poll_message().unwrap_err(), err);
        }
        // Every prefix of garbage is either incomplete or an error; never a panic.
        let garbage: Vec<u8> = (0..=255u8).rev().collect();
        for start in 0..garbage.len() {
            let mut reader = MessageReader::new(1 << 20);
            reader.handle_input(&garbage[start..]);
            while let Ok(Some(_)) = reader.poll_message() {}
        }
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(&[0x03, 0xf0, b'x']), 1008);
        assert_eq!(close_code(&[]), 1005);
        let f = close_frame(1000, [0, 0, 0, 0]);
        assert_eq!(f, vec![0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    }
}
