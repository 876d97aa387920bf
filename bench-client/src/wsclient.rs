//! The client side of RFC 6455, sans-IO, on top of the server's codec (`wschat::ws`).
//!
//! Owns: masking and optionally compressing outgoing messages, and reassembling and
//! inflating incoming (unmasked, possibly fragmented) server messages on the terms the
//! upgrade agreed (the upgrade itself is handshake.rs).
//! Must never: touch a socket or the clock, or panic on anything the server sends: a
//! malformed frame is a `ClientError`, which the loop counts and turns into a close.

use std::fmt;

use wschat::ws::ProtocolError;
use wschat::ws::deflate::{Compressor, InflateError, Inflater};
use wschat::ws::frame::{FrameHeader, Opcode, RSV1_BIT, encode_frame};
use wschat::ws::mask::apply_mask;

use crate::handshake::DeflateTerms;

/// What the server sent that a client must not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    Header(ProtocolError),
    /// Server-to-client frames are never masked (RFC 6455 5.1).
    MaskedFrame,
    /// A continuation without a started message, or a new message inside one.
    BadFragmentation,
    /// A message over the reader's limit (after inflating, for a compressed one).
    TooBig,
    /// A compressed message that is not a valid deflate stream.
    BadDeflate,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Header(e) => write!(f, "bad frame header: {e}"),
            ClientError::MaskedFrame => f.write_str("masked server frame"),
            ClientError::BadFragmentation => f.write_str("bad fragmentation"),
            ClientError::TooBig => f.write_str("message too big"),
            ClientError::BadDeflate => f.write_str("invalid compressed message"),
        }
    }
}

/// Appends one masked client frame carrying `payload` to `out` (no intermediate buffer:
/// the payload is masked in place at the end of `out`).
pub fn push_masked_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], key: [u8; 4]) {
    FrameHeader {
        fin: true,
        rsv1: false,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    }
    .encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

/// Appends one masked data message. With `deflate` (our compressor and the agreed client
/// window) the payload is compressed with a fresh context and sent with RSV1 when that makes
/// it smaller, as the server does; zlib cannot write an 8-bit window, so a server that asked
/// for one gets plain frames (always allowed). Returns the payload bytes put on the wire.
pub fn push_message(
    out: &mut Vec<u8>,
    opcode: Opcode,
    payload: &[u8],
    key: [u8; 4],
    deflate: Option<(&mut Compressor, u8)>,
) -> usize {
    if let Some((compressor, bits)) = deflate.filter(|(_, bits)| *bits >= 9) {
        let compressed = compressor.compress(payload, bits);
        if compressed.len() < payload.len() {
            let first = out.len();
            push_masked_frame(out, opcode, &compressed, key);
            out[first] |= RSV1_BIT;
            return compressed.len();
        }
    }
    push_masked_frame(out, opcode, payload, key);
    payload.len()
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
    /// The message as the application sees it (inflated, for a compressed one).
    pub payload: &'a [u8],
    /// Payload bytes the frames carried (the compressed size, for a compressed message).
    pub wire_len: usize,
    pub compressed: bool,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragments {
    opcode: Opcode,
    compressed: bool,
    so_far: Vec<u8>,
}

/// Inflates one whole compressed message with `inflater`, appending to `out`.
fn inflate_whole(
    inflater: &mut Inflater,
    data: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), ClientError> {
    inflater
        .inflate(data, out, limit)
        .and_then(|()| inflater.finish(out, limit))
        .map_err(|e| match e {
            InflateError::TooBig => ClientError::TooBig,
            InflateError::Corrupt => ClientError::BadDeflate,
        })
}

/// Messages compressed with a fresh context, inflated once per loader thread.
///
/// The server compresses a chat message once and sends the same bytes to every member of the
/// room; bytes compressed with a fresh context (`server_no_context_takeover`) inflate to the
/// same message whichever connection they arrived on. So each distinct compressed payload is
/// inflated once per thread and looked up by its whole byte string after that (no hash
/// shortcut: different bytes are inflated on their own). A browser inflates every copy; the
/// loader is the instrument, and inflating 49 copies of each message made it the bottleneck
/// before the server (measured: 88 % of the loader's core at 2000 msg/s in rooms of 50).
#[derive(Debug, Default)]
pub struct InflateMemo {
    /// One fresh-context inflater, reset after each message (a 15-bit window reads any).
    inflater: Option<Inflater>,
    inflated: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// Compressed messages inflated (the rest were found in the memo).
    pub inflations: u64,
}

impl InflateMemo {
    /// Distinct messages remembered; the memo starts over when full (a chat message's copies
    /// arrive within milliseconds of each other).
    const CAPACITY: usize = 4096;

    fn inflate(&mut self, data: &[u8], limit: usize) -> Result<&[u8], ClientError> {
        if !self.inflated.contains_key(data) {
            let inflater = self.inflater.get_or_insert_with(|| Inflater::new(15));
            let mut out = Vec::new();
            let result = inflate_whole(inflater, data, &mut out, limit);
            inflater.reset();
            result?;
            self.inflations += 1;
            if self.inflated.len() >= Self::CAPACITY {
                self.inflated.clear();
            }
            self.inflated.insert(data.to_vec(), out);
        }
        let message = &self.inflated[data];
        if message.len() > limit {
            return Err(ClientError::TooBig);
        }
        Ok(message)
    }
}

/// The inflating side of an agreed permessage-deflate.
#[derive(Debug)]
struct InflateSide {
    terms: DeflateTerms,
    /// Only when the server keeps its context across messages (not ours): this
    /// connection's own inflater (47.5 KB), holding the server's window between messages.
    takeover: Option<Inflater>,
}

impl InflateSide {
    /// The message in a whole compressed payload: from the thread's memo, or inflated into
    /// `own` (cleared first) with this connection's context.
    fn inflate<'a>(
        &mut self,
        data: &[u8],
        own: &'a mut Vec<u8>,
        memo: &'a mut InflateMemo,
        limit: usize,
    ) -> Result<&'a [u8], ClientError> {
        if self.terms.server_no_context_takeover {
            return memo.inflate(data, limit);
        }
        let bits = self.terms.server_window_bits;
        let inflater = self.takeover.get_or_insert_with(|| Inflater::new(bits));
        own.clear();
        inflate_whole(inflater, data, own, limit)?;
        Ok(own)
    }
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
    /// The message being reassembled from fragments.
    fragments: Option<Fragments>,
    /// The completed fragmented or inflated message handed out by the last `poll_message`.
    assembled: Vec<u8>,
    max_message: usize,
    /// permessage-deflate, once the 101 agreed to it.
    deflate: Option<InflateSide>,
}

impl MessageReader {
    pub fn new(max_message: usize) -> MessageReader {
        MessageReader {
            buf: Vec::new(),
            consumed: 0,
            fragments: None,
            assembled: Vec::new(),
            max_message,
            deflate: None,
        }
    }

    /// From now on, messages may arrive compressed on these terms (RSV1 on their first frame).
    pub fn use_deflate(&mut self, terms: DeflateTerms) {
        self.deflate = Some(InflateSide {
            terms,
            takeover: None,
        });
    }

    /// The permessage-deflate terms of this connection, once agreed.
    pub fn deflate(&self) -> Option<DeflateTerms> {
        self.deflate.as_ref().map(|side| side.terms)
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

    /// The next complete message, if any; compressed ones are inflated (through `memo`, the
    /// thread's, when the server compresses each message with a fresh context).
    pub fn poll_message<'a>(
        &'a mut self,
        memo: &'a mut InflateMemo,
    ) -> Result<Option<Incoming<'a>>, ClientError> {
        loop {
            let rest = &self.buf[self.consumed..];
            let parsed = if self.deflate.is_some() {
                FrameHeader::parse_with_rsv1(rest)
            } else {
                FrameHeader::parse(rest)
            };
            let Some((header, header_len)) = parsed.map_err(ClientError::Header)? else {
                return Ok(None);
            };
            let rsv1 = header.rsv1;
            if header.mask.is_some() {
                return Err(ClientError::MaskedFrame);
            }
            // RSV1 marks the first frame of a compressed data message, and nothing else
            // (RFC 7692 6.1).
            if rsv1 && (header.opcode.is_control() || header.opcode == Opcode::Continuation) {
                return Err(ClientError::Header(ProtocolError::ReservedBits));
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
                    wire_len: len,
                    compressed: false,
                }));
            }
            match (header.opcode, header.fin, self.fragments.take()) {
                (Opcode::Continuation, _, None) => return Err(ClientError::BadFragmentation),
                (Opcode::Text | Opcode::Binary, _, Some(_)) => {
                    return Err(ClientError::BadFragmentation);
                }
                (opcode, true, None) => {
                    let data = &self.buf[payload];
                    let message = match (&mut self.deflate, rsv1) {
                        (Some(side), true) => {
                            side.inflate(data, &mut self.assembled, memo, self.max_message)?
                        }
                        _ => data,
                    };
                    return Ok(Some(Incoming {
                        opcode,
                        payload: message,
                        wire_len: len,
                        compressed: rsv1,
                    }));
                }
                (opcode, false, None) => {
                    self.fragments = Some(Fragments {
                        opcode,
                        compressed: rsv1,
                        so_far: self.buf[payload].to_vec(),
                    });
                }
                (_, fin, Some(mut fragments)) => {
                    // For a compressed message this bounds the compressed size; the inflated
                    // size is bounded when it is inflated.
                    if fragments.so_far.len() + len > self.max_message {
                        return Err(ClientError::TooBig);
                    }
                    fragments.so_far.extend_from_slice(&self.buf[payload]);
                    if !fin {
                        self.fragments = Some(fragments);
                        continue;
                    }
                    let Fragments {
                        opcode,
                        compressed,
                        so_far,
                    } = fragments;
                    let wire_len = so_far.len();
                    let message = match (&mut self.deflate, compressed) {
                        (Some(side), true) => {
                            side.inflate(&so_far, &mut self.assembled, memo, self.max_message)?
                        }
                        _ => {
                            self.assembled = so_far;
                            &self.assembled[..]
                        }
                    };
                    return Ok(Some(Incoming {
                        opcode,
                        payload: message,
                        wire_len,
                        compressed,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wschat::ws::frame::server_frame;

    const NO_TAKEOVER: DeflateTerms = DeflateTerms {
        server_no_context_takeover: true,
        server_window_bits: 15,
        client_window_bits: 15,
    };

    /// A server frame carrying `payload` compressed by the server's own code path.
    fn compressed_server_frame(payload: &[u8]) -> Vec<u8> {
        let message = wschat::ws::OutMessage::from(server_frame(Opcode::Text, &[payload]));
        let agreed = wschat::ws::deflate::Agreed {
            server_window_bits: 15,
            client_window_bits: 15,
        };
        let frame = message.for_receiver(Some(agreed), &mut Compressor::default());
        assert_ne!(frame[0] & RSV1_BIT, 0, "the sample must compress");
        frame.to_vec()
    }

    #[test]
    fn compressed_messages_are_inflated_in_any_split() {
        let text = "the quick brown fox jumps over the lazy dog; ".repeat(8);
        let frame = compressed_server_frame(text.as_bytes());
        let mut stream = frame.clone();
        stream.extend_from_slice(&server_frame(Opcode::Text, &[b"plain"]));
        stream.extend_from_slice(&frame);
        for split in 0..stream.len() {
            let mut reader = MessageReader::new(1 << 20);
            reader.use_deflate(NO_TAKEOVER);
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                reader.handle_input(part);
                while let Some(m) = reader.poll_message(&mut InflateMemo::default()).unwrap() {
                    got.push((m.payload.to_vec(), m.compressed, m.wire_len));
                }
            }
            let wire = frame.len() - 2;
            assert_eq!(
                got,
                vec![
                    (text.clone().into_bytes(), true, wire),
                    (b"plain".to_vec(), false, 5),
                    (text.clone().into_bytes(), true, wire),
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn a_threads_readers_inflate_each_distinct_message_once() {
        let a = compressed_server_frame(
            "first message, first message, first message!"
                .repeat(3)
                .as_bytes(),
        );
        let b = compressed_server_frame(
            "second message, second message, second one"
                .repeat(3)
                .as_bytes(),
        );
        let mut memo = InflateMemo::default();
        let mut readers: Vec<MessageReader> = (0..3)
            .map(|_| {
                let mut r = MessageReader::new(1 << 20);
                r.use_deflate(NO_TAKEOVER);
                r
            })
            .collect();
        for reader in &mut readers {
            reader.handle_input(&a);
            reader.handle_input(&b);
            let first = reader
                .poll_message(&mut memo)
                .unwrap()
                .unwrap()
                .payload
                .to_vec();
            let second = reader
                .poll_message(&mut memo)
                .unwrap()
                .unwrap()
                .payload
                .to_vec();
            assert!(first.starts_with(b"first") && second.starts_with(b"second"));
        }
        assert_eq!(memo.inflations, 2);
        // A reader with a smaller limit does not get a remembered message over it.
        let mut small = MessageReader::new(64);
        small.use_deflate(NO_TAKEOVER);
        small.handle_input(&a);
        assert_eq!(
            small.poll_message(&mut memo).unwrap_err(),
            ClientError::TooBig
        );
    }

    #[test]
    fn a_fragmented_compressed_message_is_inflated_once_whole() {
        let text = "fragmented and compressed, ".repeat(10);
        let frame = compressed_server_frame(text.as_bytes());
        let data = &frame[2..];
        let (a, b) = data.split_at(data.len() / 2);
        let mut first = encode_frame_nofin(Opcode::Text, a);
        first[0] |= RSV1_BIT;
        let mut stream = first;
        stream.extend_from_slice(&server_frame(Opcode::Ping, &[b"between"]));
        stream.extend_from_slice(&server_frame(Opcode::Continuation, &[b]));
        let mut reader = MessageReader::new(1 << 20);
        reader.use_deflate(NO_TAKEOVER);
        reader.handle_input(&stream);
        assert_eq!(
            reader
                .poll_message(&mut InflateMemo::default())
                .unwrap()
                .unwrap()
                .opcode,
            Opcode::Ping
        );
        let mut memo = InflateMemo::default();
        let m = reader.poll_message(&mut memo).unwrap().unwrap();
        assert_eq!(
            (m.payload, m.compressed, m.wire_len),
            (text.as_bytes(), true, data.len())
        );
    }

    /// Without server_no_context_takeover the server may refer back to earlier messages:
    /// the inflater keeps its window (zlib's sync flush per message, trailer removed).
    #[test]
    fn context_takeover_keeps_the_window_across_messages() {
        use flate2::{Compress, Compression, FlushCompress};
        let mut deflate = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let line = b"a line that repeats itself exactly, twice over the wire";
        let mut stream = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::with_capacity(256);
            deflate
                .compress_vec(line, &mut out, FlushCompress::Sync)
                .unwrap();
            out.truncate(out.len() - 4);
            sizes.push(out.len());
            let mut frame = server_frame(Opcode::Binary, &[&out]).to_vec();
            frame[0] |= RSV1_BIT;
            stream.extend_from_slice(&frame);
        }
        assert!(
            sizes[1] < sizes[0] / 2,
            "the second refers to the first: {sizes:?}"
        );
        let mut reader = MessageReader::new(1 << 20);
        reader.use_deflate(DeflateTerms {
            server_no_context_takeover: false,
            ..NO_TAKEOVER
        });
        reader.handle_input(&stream);
        for _ in 0..2 {
            assert_eq!(
                reader
                    .poll_message(&mut InflateMemo::default())
                    .unwrap()
                    .unwrap()
                    .payload,
                line
            );
        }
    }

    #[test]
    fn bad_compressed_input_is_an_error_not_a_panic() {
        let bomb = compressed_server_frame(&[b'a'; 100_000]);
        let mut reader = MessageReader::new(65_536);
        reader.use_deflate(NO_TAKEOVER);
        reader.handle_input(&bomb);
        assert_eq!(
            reader
                .poll_message(&mut InflateMemo::default())
                .unwrap_err(),
            ClientError::TooBig
        );

        let mut corrupt = server_frame(Opcode::Text, &[&[0xff; 20]]).to_vec();
        corrupt[0] |= RSV1_BIT;
        let mut reader = MessageReader::new(1 << 20);
        reader.use_deflate(NO_TAKEOVER);
        reader.handle_input(&corrupt);
        assert_eq!(
            reader
                .poll_message(&mut InflateMemo::default())
                .unwrap_err(),
            ClientError::BadDeflate
        );

        let reserved = ClientError::Header(ProtocolError::ReservedBits);
        // RSV1 without an agreement, on a control frame, on a continuation.
        let mut reader = MessageReader::new(1 << 20);
        reader.handle_input(&compressed_server_frame(&[b'a'; 100]));
        assert_eq!(
            reader
                .poll_message(&mut InflateMemo::default())
                .unwrap_err(),
            reserved
        );
        for frame in [
            server_frame(Opcode::Ping, &[b"p"]).to_vec(),
            [
                encode_frame_nofin(Opcode::Text, b"a"),
                server_frame(Opcode::Continuation, &[b"b"]).to_vec(),
            ]
            .concat(),
        ] {
            let mut frame = frame;
            let last = if frame.len() > 3 && frame[0] & 0x0f == 1 {
                3
            } else {
                0
            };
            frame[last] |= RSV1_BIT;
            let mut reader = MessageReader::new(1 << 20);
            reader.use_deflate(NO_TAKEOVER);
            reader.handle_input(&frame);
            assert_eq!(
                reader
                    .poll_message(&mut InflateMemo::default())
                    .unwrap_err(),
                reserved
            );
        }
    }

    #[test]
    fn outgoing_messages_compress_when_it_pays() {
        let mut compressor = Compressor::default();
        let text = "hello hello hello hello hello hello hello hello".repeat(4);
        for (bits, payload, compressed) in [
            (15, text.as_bytes(), true),
            (9, text.as_bytes(), true),
            (8, text.as_bytes(), false),
            (15, &b"short"[..], false),
        ] {
            let mut out = Vec::new();
            let key = [1, 2, 3, 4];
            let wire = push_message(
                &mut out,
                Opcode::Text,
                payload,
                key,
                Some((&mut compressor, bits)),
            );
            let (header, header_len) = FrameHeader::parse_with_rsv1(&out).unwrap().unwrap();
            assert_eq!(header.rsv1, compressed, "bits {bits} len {}", payload.len());
            assert_eq!(header.payload_len as usize, wire);
            let mut data = out[header_len..].to_vec();
            apply_mask(&mut data, key, 0);
            if compressed {
                assert!(wire < payload.len());
                let mut inflater = Inflater::new(bits);
                let mut plain = Vec::new();
                inflater.inflate(&data, &mut plain, 1 << 20).unwrap();
                inflater.finish(&mut plain, 1 << 20).unwrap();
                data = plain;
            }
            assert_eq!(data, payload);
        }
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
                while let Some(m) = reader.poll_message(&mut InflateMemo::default()).unwrap() {
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
            assert_eq!(
                reader
                    .poll_message(&mut InflateMemo::default())
                    .unwrap_err(),
                err
            );
        }
        // Every prefix of garbage is either incomplete or an error; never a panic.
        let garbage: Vec<u8> = (0..=255u8).rev().collect();
        for start in 0..garbage.len() {
            let mut reader = MessageReader::new(1 << 20);
            reader.handle_input(&garbage[start..]);
            while let Ok(Some(_)) = reader.poll_message(&mut InflateMemo::default()) {}
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
