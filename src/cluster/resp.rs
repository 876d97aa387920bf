//! RESP2, the Redis wire protocol, sans-IO: commands out as bytes, replies in as values.
//!
//! Only what a client needs: it encodes commands (arrays of bulk strings) and decodes the
//! five reply types (simple string, error, integer, bulk string, array, with nulls). RESP3
//! is never negotiated (no `HELLO 3`), so push and map types cannot arrive; if one did, it is
//! a protocol error, as is anything else malformed.
//!
//! Decoding is in two steps like the frame parser (STYLE.md 4): [`Decoder::handle_input`]
//! appends bytes, [`Decoder::poll_value`] returns the next complete value, `Ok(None)` while
//! it is incomplete (consuming nothing), or an error after which the connection must be
//! dropped. Lengths are bounded ([`MAX_BULK`], [`MAX_ARRAY`], [`MAX_DEPTH`]) so that a broken
//! or hostile server cannot make us allocate without limit or recurse deeply. Never panics.

use std::fmt;

/// The longest bulk string accepted: a published event is at most `--max-message` (1 MiB by
/// default) plus a small header, so 64 MiB leaves room and still bounds what a bad server
/// can make us buffer.
pub const MAX_BULK: usize = 64 << 20;
/// The most elements in one array (HGETALL of a room with many nodes stays far below).
pub const MAX_ARRAY: usize = 1 << 20;
/// Nesting depth: replies we use are at most two levels deep.
pub const MAX_DEPTH: usize = 4;
/// The longest line (simple string, error, integer, length header).
const MAX_LINE: usize = 64 * 1024;

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    /// `None` is the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array (`*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(Some(b)) | Value::Simple(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// The server sent something that is not RESP2 (or over our limits): drop the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    UnknownType(u8),
    BadLength,
    BadInteger,
    TooLong,
    TooDeep,
    /// A bulk string not followed by CRLF.
    MissingCrlf,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::BadLength => f.write_str("bad RESP length"),
            RespError::BadInteger => f.write_str("bad RESP integer"),
            RespError::TooLong => f.write_str("RESP value over the client's limits"),
            RespError::TooDeep => f.write_str("RESP value nested too deeply"),
            RespError::MissingCrlf => f.write_str("RESP bulk string without CRLF"),
        }
    }
}

impl std::error::Error for RespError {}

/// Appends `args` as one command (an array of bulk strings) to `out`.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Incremental reply decoder for one connection.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as values.
    consumed: usize,
}

impl Decoder {
    pub fn handle_input(&mut self, bytes: &[u8]) {
        // Drop what was consumed before growing, so the buffer holds at most one partial
        // value plus the new bytes.
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete value, `Ok(None)` if more bytes are needed.
    pub fn poll_value(&mut self) -> Result<Option<Value>, RespError> {
        let input = &self.buf[self.consumed..];
        match parse(input, 0)? {
            Some((value, used)) => {
                self.consumed += used;
                Ok(Some(value))
            }
            None => Ok(None),
        }
    }

    /// Forgets everything (a new connection).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.consumed = 0;
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }
}

/// One value at the start of `input` and the bytes it took, or `None` if incomplete.
fn parse(input: &[u8], depth: usize) -> Result<Option<(Value, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::TooDeep);
    }
    let Some((&kind, _)) = input.split_first() else {
        return Ok(None);
    };
    let Some((line, after_line)) = line(input)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Value::Simple(line.to_vec()), after_line))),
        b'-' => Ok(Some((Value::Error(line.to_vec()), after_line))),
        b':' => Ok(Some((Value::Integer(integer(line)?), after_line))),
        b'$' => {
            let Some(len) = length(line, MAX_BULK)? else {
                return Ok(Some((Value::Bulk(None), after_line)));
            };
            let Some(end) = after_line.checked_add(len) else {
                return Err(RespError::TooLong);
            };
            let Some(rest) = input.get(after_line..) else {
                return Ok(None);
            };
            if rest.len() < len + 2 {
                return Ok(None);
            }
            if &input[end..end + 2] != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            Ok(Some((
                Value::Bulk(Some(input[after_line..end].to_vec())),
                end + 2,
            )))
        }
        b'*' => {
            let Some(count) = length(line, MAX_ARRAY)? else {
                return Ok(Some((Value::Array(None), after_line)));
            };
            // Never trust the count for an allocation: grow as elements arrive.
            let mut items = Vec::with_capacity(count.min(64));
            let mut at = after_line;
            for _ in 0..count {
                let Some(rest) = input.get(at..) else {
                    return Ok(None);
                };
                match parse(rest, depth + 1)? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// The header line after the type byte, without CRLF, and the offset just past the CRLF.
fn line(input: &[u8]) -> Result<Option<(&[u8], usize)>, RespError> {
    let window = &input[1..input.len().min(MAX_LINE + 3)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(pos) => Ok(Some((&window[..pos], 1 + pos + 2))),
        None if input.len() > MAX_LINE + 2 => Err(RespError::TooLong),
        None => Ok(None),
    }
}

fn integer(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(RespError::BadInteger)
}

/// A length header: `None` for -1 (null), else a count up to `max`.
fn length(line: &[u8], max: usize) -> Result<Option<usize>, RespError> {
    let n = integer(line).map_err(|_| RespError::BadLength)?;
    match n {
        -1 => Ok(None),
        n if n < 0 => Err(RespError::BadLength),
        n if n as u64 > max as u64 => Err(RespError::TooLong),
        n => Ok(Some(n as usize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, RespError> {
        let mut d = Decoder::default();
        d.handle_input(bytes);
        let mut out = Vec::new();
        while let Some(v) = d.poll_value()? {
            out.push(v);
        }
        assert_eq!(d.buffered(), 0, "trailing bytes");
        Ok(out)
    }

    fn bulk(b: &[u8]) -> Value {
        Value::Bulk(Some(b.to_vec()))
    }

    #[test]
    fn encodes_a_command_as_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&[b"PUBLISH", b"room", b"hi\r\n"], &mut out);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$4\r\nhi\r\n\r\n".to_vec()
        );
        let mut empty = Vec::new();
        encode_command(&[b"PING", b""], &mut empty);
        assert_eq!(empty, b"*2\r\n$4\r\nPING\r\n$0\r\n\r\n".to_vec());
    }

    #[test]
    fn decodes_every_reply_type() {
        assert_eq!(
            decode_all(b"+OK\r\n-ERR no\r\n:42\r\n:-7\r\n$3\r\nfoo\r\n$-1\r\n$0\r\n\r\n*-1\r\n")
                .unwrap(),
            vec![
                Value::Simple(b"OK".to_vec()),
                Value::Error(b"ERR no".to_vec()),
                Value::Integer(42),
                Value::Integer(-7),
                bulk(b"foo"),
                Value::Bulk(None),
                bulk(b""),
                Value::Array(None),
            ]
        );
    }

    #[test]
    fn decodes_a_pubsub_message_with_binary_payload() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$5\r\na\r\n\0b\r\n";
        assert_eq!(
            decode_all(msg).unwrap(),
            vec![Value::Array(Some(vec![
                bulk(b"message"),
                bulk(b"chan"),
                bulk(b"a\r\n\0b")
            ]))]
        );
    }

    #[test]
    fn every_split_point_yields_the_same_values() {
        let bytes: &[u8] =
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nr1\r\n:1\r\n+PONG\r\n*2\r\n*1\r\n:1\r\n$1\r\nx\r\n";
        let whole = decode_all(bytes).unwrap();
        for split in 0..=bytes.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            d.handle_input(&bytes[..split]);
            while let Some(v) = d.poll_value().unwrap() {
                got.push(v);
            }
            d.handle_input(&bytes[split..]);
            while let Some(v) = d.poll_value().unwrap() {
                got.push(v);
            }
            assert_eq!(got, whole, "split at {split}");
        }
        // One byte at a time.
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in bytes {
            d.handle_input(std::slice::from_ref(b));
            while let Some(v) = d.poll_value().unwrap() {
                got.push(v);
            }
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn incomplete_input_consumes_nothing() {
        let mut d = Decoder::default();
        d.handle_input(b"$5\r\nhel");
        assert_eq!(d.poll_value(), Ok(None));
        assert_eq!(d.buffered(), 7);
        d.handle_input(b"lo\r\n");
        assert_eq!(d.poll_value(), Ok(Some(bulk(b"hello"))));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for (bytes, want) in [
            (&b"?x\r\n"[..], RespError::UnknownType(b'?')),
            (b":12a\r\n", RespError::BadInteger),
            (b"$-2\r\n", RespError::BadLength),
            (b"$abc\r\n", RespError::BadLength),
            (b"$3\r\nfooXY", RespError::MissingCrlf),
            (b"$99999999999\r\n", RespError::TooLong),
            (b"*99999999999\r\n", RespError::TooLong),
            (
                b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
                RespError::TooDeep,
            ),
            (b":99999999999999999999\r\n", RespError::BadInteger),
            (b"%1\r\n", RespError::UnknownType(b'%')),
        ] {
            assert_eq!(
                decode_all(bytes),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut d = Decoder::default();
        d.handle_input(&vec![b'+'; MAX_LINE + 10]);
        assert_eq!(d.poll_value(), Err(RespError::TooLong));
    }

    proptest::proptest! {
        /// Whatever the server sends, in whatever pieces: values, Ok(None) or an error,
        /// never a panic.
        #[test]
        fn arbitrary_input_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            split in 0usize..512,
        ) {
            let mut d = Decoder::default();
            let split = split.min(bytes.len());
            for piece in [&bytes[..split], &bytes[split..]] {
                d.handle_input(piece);
                while let Ok(Some(_)) = d.poll_value() {}
            }
        }
    }

    #[test]
    fn a_huge_declared_array_allocates_nothing_up_front() {
        let mut d = Decoder::default();
        d.handle_input(b"*1000000\r\n:1\r\n");
        assert_eq!(d.poll_value(), Ok(None));
    }
}
