//! permessage-deflate (RFC 7692): the `Sec-WebSocket-Extensions` grammar, the negotiation,
//! and the compression of whole messages, in both directions.
//!
//! What we agree to, whatever the offer: `server_no_context_takeover` (every frame we send is
//! compressed with a fresh context, so that one compressed frame can be shared by every
//! receiver: the chat's encode-once fan-out survives compression) and
//! `client_no_context_takeover` (RFC 7692 7.1.1.2 lets a server include it in any response:
//! the client then compresses each message on its own, so we inflate each message with a
//! fresh context and an idle connection holds no inflate state at all).
//!
//! Windows. zlib cannot produce a raw deflate stream with a 256-byte window, so an offer with
//! `server_max_window_bits=8` is declined (the next offer is tried). Our frames use one of two
//! windows: 15 bits (the client left the window to us) or 9 bits, the smallest zlib can do,
//! for every client that asked for any smaller window (RFC 7692 7.1.2.1 lets us answer with a
//! smaller value than offered). So a chat message is compressed at most twice, however many
//! receivers asked for however many different windows; and short chat lines, whose
//! back-references never reach 512 bytes, lose nothing in the small window.
//!
//! Memory (measured with a counting allocator, zlib-rs 0.6). Inflating: 47.5 KB (the
//! inflate state and a 32 KiB window, whatever the window bits), allocated when a compressed
//! message starts and freed when it ends, so it is bounded by the connections that are in
//! the middle of a compressed message. Deflating: one [`Compressor`] per thread (the caller
//! owns it), 380 KB for the 15-bit window and 251 KB for the 9-bit one, each allocated on
//! first use and reset for every message. An idle connection holds no zlib state: 8 bytes
//! more than without deflate (the agreement).
//!
//! Pure computation: no syscall, no clock, no thread.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";
/// RFC 7692 7.2.1: a message's compressed data ends with these 4 octets, removed on the wire
/// and appended again before inflating.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The largest LZ77 window (32 KiB), the default when the offer names none.
const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window zlib can produce for raw deflate (it cannot do 8).
const SMALL_WINDOW_BITS: u8 = 9;
/// zlib's default level 6, what other implementations use.
const LEVEL: u32 = 6;

/// One extension named in `Sec-WebSocket-Extensions`, syntax-checked (RFC 6455 9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    pub name: String,
    /// Parameters in order; quoted-string values are unescaped.
    pub params: Vec<(String, Option<String>)>,
}

/// The header breaks RFC 6455 9.1's grammar (the handshake fails with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionSyntaxError;

/// Parses every `Sec-WebSocket-Extensions` value of a request, in order:
///
/// ```text
/// extension-list = 1#extension
/// extension      = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]   ; unescaped, still a token
/// ```
/// Empty list elements are allowed, as in every HTTP list (RFC 9110 5.6.1).
pub fn parse_extensions(values: &[&[u8]]) -> Result<Vec<ExtensionOffer>, ExtensionSyntaxError> {
    let mut offers = Vec::new();
    for value in values {
        let mut p = Cursor { s: value, i: 0 };
        loop {
            p.skip_ows();
            match p.peek() {
                None => break,
                Some(b',') => {
                    p.i += 1;
                    continue;
                }
                Some(_) => {}
            }
            let name = p.token()?;
            let mut params = Vec::new();
            loop {
                p.skip_ows();
                if p.peek() != Some(b';') {
                    break;
                }
                p.i += 1;
                p.skip_ows();
                let param = p.token()?;
                p.skip_ows();
                let value = if p.peek() == Some(b'=') {
                    p.i += 1;
                    p.skip_ows();
                    Some(if p.peek() == Some(b'"') {
                        p.quoted_token()?
                    } else {
                        p.token()?
                    })
                } else {
                    None
                };
                params.push((param, value));
            }
            match p.peek() {
                None | Some(b',') => offers.push(ExtensionOffer { name, params }),
                Some(_) => return Err(ExtensionSyntaxError),
            }
        }
    }
    Ok(offers)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Result<String, ExtensionSyntaxError> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        token_string(&self.s[start..self.i])
    }

    /// A quoted-string whose unescaped content must be a token (RFC 6455 9.1).
    fn quoted_token(&mut self) -> Result<String, ExtensionSyntaxError> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ExtensionSyntaxError),
                Some(b'"') => {
                    self.i += 1;
                    return token_string(&out);
                }
                Some(b'\\') => {
                    let escaped = self.s.get(self.i + 1).ok_or(ExtensionSyntaxError)?;
                    out.push(*escaped);
                    self.i += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

fn token_string(bytes: &[u8]) -> Result<String, ExtensionSyntaxError> {
    if bytes.is_empty() || !bytes.iter().copied().all(is_tchar) {
        return Err(ExtensionSyntaxError);
    }
    // tchars are ASCII.
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// RFC 9110 5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a connection agreed to: the windows each side compresses with. Both sides always
/// compress each message with a fresh context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The window of the frames we send: 15, or 9 when the client asked for less than 15.
    pub server_window_bits: u8,
    /// The largest window the client may use (what our inflater needs; at least 9, since an
    /// inflater with a larger window reads any smaller one).
    pub client_window_bits: u8,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response_header(&self, offered_client_bits: Option<u8>) -> String {
        let mut out =
            format!("{EXTENSION_NAME}; server_no_context_takeover; client_no_context_takeover");
        if self.server_window_bits < MAX_WINDOW_BITS {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        if let Some(bits) = offered_client_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// Takes the first acceptable `permessage-deflate` offer (RFC 7692 5): returns what was
/// agreed and the response header's value, or `None` when every offer is declined (the 101
/// then names no extension). An offer is declined for an unknown or repeated parameter, a
/// value where none belongs (or none where one is required), a window outside 8..=15 or
/// written with a leading zero, or `server_max_window_bits=8`, which zlib cannot honour.
pub fn negotiate(offers: &[ExtensionOffer]) -> Option<(Agreed, String)> {
    offers
        .iter()
        .filter(|o| o.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|offer| {
            let (agreed, client_bits) = accept_offer(offer)?;
            Some((agreed, agreed.response_header(client_bits)))
        })
}

/// The agreement for one offer, and the client window to echo in the response (when the
/// offer named one), or `None` to decline it.
fn accept_offer(offer: &ExtensionOffer) -> Option<(Agreed, Option<u8>)> {
    let mut seen = [false; 4];
    let mut server_bits = None;
    let mut client_bits = None;
    for (name, value) in &offer.params {
        let index = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ]
        .iter()
        .position(|known| name.eq_ignore_ascii_case(known))?;
        if std::mem::replace(&mut seen[index], true) {
            return None; // repeated
        }
        match (index, value) {
            (0 | 1, None) => {}
            (2, Some(v)) => server_bits = Some(window_bits(v)?),
            (3, None) => {}
            (3, Some(v)) => client_bits = Some(window_bits(v)?),
            _ => return None,
        }
    }
    let server_window_bits = match server_bits {
        None | Some(MAX_WINDOW_BITS) => MAX_WINDOW_BITS,
        Some(8) => return None,
        Some(_) => SMALL_WINDOW_BITS,
    };
    let agreed = Agreed {
        server_window_bits,
        client_window_bits: client_bits.map_or(MAX_WINDOW_BITS, |b| b.max(SMALL_WINDOW_BITS)),
    };
    Some((agreed, client_bits))
}

/// A window size: 8..=15 in decimal, no leading zero (RFC 7692 7.1.2). Public for clients,
/// which check the windows a server's response names.
pub fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The inflated message would exceed the limit (a decompression bomb, or just too big).
    TooBig,
    /// The payload is not a valid deflate stream.
    Corrupt,
}

/// Inflates one message (a fresh context: the client agreed to no context takeover).
/// Output never grows past `limit + 1` bytes, whatever the input.
pub struct Inflater {
    inner: Decompress,
    /// A block with BFINAL was read: the rest of the message is ignored (RFC 7692 7.2.3.4).
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// An inflater for a stream compressed with at most `2^window_bits` bytes of window
    /// (clamped to 9..=15; a larger inflate window reads any smaller one).
    pub fn new(window_bits: u8) -> Inflater {
        Inflater {
            inner: Decompress::new_with_window_bits(
                false,
                window_bits.clamp(SMALL_WINDOW_BITS, MAX_WINDOW_BITS),
            ),
            ended: false,
        }
    }

    /// Inflates the next part of the compressed payload, appending to `out`.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        // How much output to make room for per call: four times the input (typical ratios),
        // at least MIN_STEP, and at least what is already there (so that a large message
        // takes a logarithmic number of rounds); bounded by what the limit still allows
        // (plus one byte, to notice going over). The room is zero-filled before zlib writes
        // into it, so it is kept near what the message needs: a fixed 16 KiB made zeroing
        // the largest cost of inflating a chat line (measured with perf in bench-client).
        const MIN_STEP: usize = 1024;
        while !self.ended {
            let len = out.len();
            let room = (limit + 1).saturating_sub(len);
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            let want = room.min(MIN_STEP.max(input.len().saturating_mul(4)).max(len));
            out.resize(len + want, 0);
            let (in_before, out_before) = (self.inner.total_in(), self.inner.total_out());
            let status = self
                .inner
                .decompress(input, &mut out[len..], FlushDecompress::None);
            let consumed = (self.inner.total_in() - in_before) as usize;
            let produced = (self.inner.total_out() - out_before) as usize;
            out.truncate(len + produced);
            input = &input[consumed..];
            let status = status.map_err(|_| InflateError::Corrupt)?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            match status {
                Status::StreamEnd => self.ended = true,
                _ if produced < want && input.is_empty() => return Ok(()),
                _ if consumed == 0 && produced == 0 => return Err(InflateError::Corrupt),
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the message: inflates the trailer that the sender removed.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.inflate(&TRAILER, out, limit)
    }

    /// Forgets the message (for a context that is kept across messages; ours never is).
    pub fn reset(&mut self) {
        self.inner.reset(false);
        self.ended = false;
    }
}

/// Compresses messages for sending; one per thread, its zlib state allocated on first use
/// (one per window size) and reset for every message.
#[derive(Default)]
pub struct Compressor {
    /// `[15-bit window, 9-bit window]`.
    states: [Option<Box<Compress>>; 2],
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("allocated", &self.states.each_ref().map(|s| s.is_some()))
            .finish()
    }
}

/// Which of the two windows we compress with serves `window_bits`: 0 for 15 bits, 1 for the
/// 9-bit window that stands in for every smaller one. Indexes the compressor's states and
/// [`OutMessage`](super::OutMessage)'s compressed variants.
pub(super) fn window_class(window_bits: u8) -> usize {
    usize::from(window_bits < MAX_WINDOW_BITS)
}

impl Compressor {
    /// Compresses one message's payload with a fresh context (RFC 7692 7.2.1: the trailing
    /// `00 00 ff ff` of a sync flush removed). An empty payload gives `[0x00]`.
    pub fn compress(&mut self, payload: &[u8], window_bits: u8) -> Vec<u8> {
        let bits = if window_bits < MAX_WINDOW_BITS {
            SMALL_WINDOW_BITS
        } else {
            MAX_WINDOW_BITS
        };
        let state = self.states[window_class(bits)].get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::new(LEVEL),
                false,
                bits,
            ))
        });
        state.reset();
        // Incompressible data grows by ~5 bytes per 16 KiB block, plus the sync marker.
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 1024 + 16);
        let mut input = payload;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let in_before = state.total_in();
            // Compression of in-memory data cannot fail (the stream is never finished).
            let _ = state.compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(state.total_in() - in_before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(header: &str) -> Vec<ExtensionOffer> {
        parse_extensions(&[header.as_bytes()]).unwrap()
    }

    fn inflate_all(parts: &[&[u8]], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut inflater = Inflater::new(15);
        let mut out = Vec::new();
        for part in parts {
            inflater.inflate(part, &mut out, limit)?;
        }
        inflater.finish(&mut out, limit)?;
        Ok(out)
    }

    // RFC 7692 7.2.3.1: "Hello" in one compressed message.
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn rfc_7_2_3_1_hello_compresses_and_inflates() {
        assert_eq!(Compressor::default().compress(b"Hello", 15), HELLO);
        assert_eq!(inflate_all(&[&HELLO], 100).unwrap(), b"Hello");
        // Split at every point, as fragments or reads may split it.
        for cut in 0..=HELLO.len() {
            let (a, b) = HELLO.split_at(cut);
            assert_eq!(inflate_all(&[a, b], 100).unwrap(), b"Hello", "cut {cut}");
        }
    }

    #[test]
    fn rfc_7_2_3_2_no_context_takeover_repeats_the_same_bytes() {
        // Without context takeover the second "Hello" compresses exactly like the first.
        let mut c = Compressor::default();
        assert_eq!(c.compress(b"Hello", 15), HELLO);
        assert_eq!(c.compress(b"Hello", 15), HELLO);
    }

    #[test]
    fn rfc_7_2_3_2_sharing_the_window_needs_the_previous_message() {
        // With context takeover the second message is f2 00 11 00 00: it only decodes with
        // the first message's window (an inflater kept across messages), which is why we
        // agree to client_no_context_takeover and reset per message.
        let second = [0xf2, 0x00, 0x11, 0x00, 0x00];
        let mut kept = Inflater::new(15);
        let mut out = Vec::new();
        kept.inflate(&HELLO, &mut out, 100).unwrap();
        kept.finish(&mut out, 100).unwrap();
        out.clear();
        kept.inflate(&second, &mut out, 100).unwrap();
        kept.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        assert_eq!(inflate_all(&[&second], 100), Err(InflateError::Corrupt));
    }

    #[test]
    fn rfc_7_2_3_3_stored_block() {
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_all(&[&stored], 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_4_bfinal_block_and_what_follows_it() {
        // BFINAL set: the message ends there; the trailer (and an extra 0x00) are ignored.
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate_all(&[&bfinal], 100).unwrap(), b"Hello");
        assert_eq!(inflate_all(&[&bfinal[..7]], 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_5_two_blocks_in_one_message() {
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate_all(&[&two], 100).unwrap(), b"Hello");
    }

    #[test]
    fn empty_message_and_empty_blocks() {
        let empty = Compressor::default().compress(b"", 15);
        assert_eq!(empty, [0x00]);
        assert_eq!(inflate_all(&[&empty], 10).unwrap(), b"");
        // A compressed message with no payload at all: only the trailer, an empty block.
        assert_eq!(inflate_all(&[], 10).unwrap(), b"");
        // An empty stored block before the data.
        let mut with_empty = vec![0x00, 0x00, 0x00, 0xff, 0xff];
        with_empty.extend_from_slice(&HELLO);
        assert_eq!(inflate_all(&[&with_empty], 10).unwrap(), b"Hello");
    }

    #[test]
    fn round_trip_both_windows_and_sizes() {
        let mut c = Compressor::default();
        for len in [0usize, 1, 100, 511, 512, 513, 40_000, 200_000] {
            let data: Vec<u8> = (0..len)
                .map(|i| (i * 7 % 251) as u8 ^ (i / 300) as u8)
                .collect();
            for bits in [15, 9, 12] {
                let z = c.compress(&data, bits);
                let mut out = Vec::new();
                let mut inf = Inflater::new(if bits == 15 { 15 } else { 9 });
                inf.inflate(&z, &mut out, len).unwrap();
                inf.finish(&mut out, len).unwrap();
                assert_eq!(out, data, "len {len} bits {bits}");
            }
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        let z = Compressor::default().compress(&zeros, 15);
        assert!(z.len() < 2000, "{}", z.len());
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        assert_eq!(inf.inflate(&z, &mut out, 1000), Err(InflateError::TooBig));
        assert!(out.len() <= 1001);
        // Exactly at the limit is fine.
        assert_eq!(inflate_all(&[&z], 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        assert_eq!(
            inflate_all(&[&[0xff, 0xff, 0xff]], 100),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn extension_grammar() {
        let o = offers(
            "permessage-deflate; client_max_window_bits, x-foo;a=\"b\" ,, \
             permessage-deflate;server_max_window_bits=10",
        );
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].params, [("client_max_window_bits".into(), None)]);
        assert_eq!(o[1].name, "x-foo");
        assert_eq!(o[1].params, [("a".into(), Some("b".into()))]);
        assert_eq!(
            o[2].params,
            [("server_max_window_bits".into(), Some("10".into()))]
        );
        assert!(offers("").is_empty());
        for bad in [
            "permessage-deflate;",
            "permessage-deflate; =1",
            "permessage-deflate; a=",
            "permessage-deflate; a=\"b c\"",
            "permessage-deflate; a=\"unterminated",
            "permessage deflate",
            ";a",
            "permessage-deflate; a=1 b",
            "x/y",
        ] {
            assert_eq!(
                parse_extensions(&[bad.as_bytes()]),
                Err(ExtensionSyntaxError),
                "{bad}"
            );
        }
    }

    #[test]
    fn negotiation_takes_the_first_acceptable_offer() {
        let agree = |h: &str| negotiate(&offers(h)).map(|(_, header)| header);
        let base = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(agree("permessage-deflate").as_deref(), Some(base));
        assert_eq!(agree("x-foo, permessage-deflate").as_deref(), Some(base));
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits").as_deref(),
            Some(base)
        );
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits=10"),
            Some(format!("{base}; client_max_window_bits=10"))
        );
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=12"),
            Some(format!("{base}; server_max_window_bits=9"))
        );
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=\"15\"").as_deref(),
            Some(base)
        );
        // Declined, the next one taken.
        for declined in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; x=1",
        ] {
            assert_eq!(agree(declined), None, "{declined}");
            assert_eq!(
                agree(&format!(
                    "{declined}, permessage-deflate; client_max_window_bits=9"
                )),
                Some(format!("{base}; client_max_window_bits=9")),
                "{declined}"
            );
        }
        assert_eq!(agree("x-webkit-deflate-frame"), None);
    }
}
