//! RESP2, the Redis wire protocol, sans-IO: commands out as bytes, replies in as values.
//!
//! Owns: the byte format of commands and replies, and what one reply may cost us to read.
//! Must never: do I/O, allocate or buffer beyond the [`Bounds`] its caller passes in,
//! redo work on bytes it has already parsed, or panic on what a server sends.
//!
//! Only what a client needs: it encodes commands (arrays of bulk strings) and decodes the
//! five reply types (simple string, error, integer, bulk string, array, with nulls). RESP3
//! is never negotiated (no `HELLO 3`), so push and map types cannot arrive; if one did, it is
//! a protocol error, as is anything else malformed.
//!
//! Decoding is in two steps like the frame parser (STYLE.md 4): [`Decoder::handle_input`]
//! appends bytes, [`Decoder::poll_value`] returns the next complete value, `Ok(None)` while
//! it is incomplete (no value is returned and the bytes stay buffered), or an error after
//! which the connection must be dropped.
//!
//! # Bounds
//! Whoever reads from Redis decides what a reply may cost ([`Bounds`]: the longest bulk
//! string, the most bytes one whole value may span), because only it knows what it asked
//! for: the broker derives the subscription connection's bounds from `--max-message`, so
//! that Redis input is bounded like a client's. [`MAX_ARRAY`], [`MAX_DEPTH`] and the header
//! line limit are fixed: no reply we ask for comes near them. A length over a bound is an
//! error as soon as its header is read, before its bytes are buffered.
//!
//! # Linear work
//! A value that arrives in pieces is parsed as it arrives and never from its start again:
//! complete elements of an open array are kept (a small stack of open arrays), the header
//! of a bulk string is read once, and the search for a header line's CRLF resumes where it
//! stopped. So every byte is examined a bounded number of times however the value is split
//! (the test `a_large_array_fed_bytewise_is_parsed_in_linear_work` counts them).

use std::fmt;

/// The most elements in one array, whatever the value bound (an array of empty bulk
/// strings costs 6 bytes an element on the wire and more in memory).
pub const MAX_ARRAY: usize = 1 << 20;
/// Nesting depth: replies we use are at most two levels deep.
pub const MAX_DEPTH: usize = 4;
/// The longest line (simple string, error, integer, length header).
const MAX_LINE: usize = 64 * 1024;

/// What one reply may cost: lengths beyond these are a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The longest bulk string.
    pub bulk: usize,
    /// The most bytes one value may span on the wire, everything nested in it included:
    /// what the decoder buffers at most before it returns the value or an error.
    pub value: usize,
}

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

/// The bytes [`encode_command`] appends for `args`, without encoding them.
pub fn command_len(args: &[&[u8]]) -> usize {
    fn digits(mut n: usize) -> usize {
        let mut d = 1;
        while n >= 10 {
            n /= 10;
            d += 1;
        }
        d
    }
    let items: usize = args
        .iter()
        .map(|a| 1 + digits(a.len()) + 2 + a.len() + 2)
        .sum();
    1 + digits(args.len()) + 2 + items
}

/// Incremental reply decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    bounds: Bounds,
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as values: the start of the value in progress.
    consumed: usize,
    /// How far the value in progress is parsed: what lies in `consumed..cursor` is held in
    /// `open` (complete elements) or described by `bulk` (a header read).
    cursor: usize,
    /// Bytes from `cursor` already searched for the CRLF of a header line not yet complete.
    searched: usize,
    /// The length of the bulk string whose header ends at `cursor` (its body is awaited).
    bulk: Option<usize>,
    /// The arrays being filled, outermost first: elements so far, elements still to come.
    open: Vec<(Vec<Value>, usize)>,
    /// Bytes examined since creation (searched for CRLF, copied out of a bulk string), plus
    /// one per item parsed: the measure of work the linearity test checks.
    examined: u64,
}

/// One element parsed at the cursor.
enum Item {
    Value(Value),
    /// The header of an array of this many (> 0) elements.
    Open(usize),
}

impl Decoder {
    pub fn new(bounds: Bounds) -> Decoder {
        Decoder {
            bounds,
            buf: Vec::new(),
            consumed: 0,
            cursor: 0,
            searched: 0,
            bulk: None,
            open: Vec::new(),
            examined: 0,
        }
    }

    pub fn handle_input(&mut self, bytes: &[u8]) {
        // Drop what was returned before growing, so the buffer holds at most one partial
        // value plus the new bytes. Offsets into the value in progress move with it; each
        // byte is moved at most once per value returned before it, so this stays linear.
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.cursor -= self.consumed;
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete value, `Ok(None)` if more bytes are needed.
    pub fn poll_value(&mut self) -> Result<Option<Value>, RespError> {
        loop {
            let Some(item) = self.next_item()? else {
                if self.buf.len() - self.consumed > self.bounds.value {
                    return Err(RespError::TooLong);
                }
                return Ok(None);
            };
            self.examined += 1;
            if self.cursor - self.consumed > self.bounds.value {
                return Err(RespError::TooLong);
            }
            let mut value = match item {
                Item::Value(value) => value,
                Item::Open(count) => {
                    // Never trust the count for an allocation: grow as elements arrive.
                    self.open.push((Vec::with_capacity(count.min(64)), count));
                    continue;
                }
            };
            // Put the value in its array, closing every array it completes.
            loop {
                let Some((mut items, left)) = self.open.pop() else {
                    self.consumed = self.cursor;
                    return Ok(Some(value));
                };
                items.push(value);
                if left > 1 {
                    self.open.push((items, left - 1));
                    break;
                }
                value = Value::Array(Some(items));
            }
        }
    }

    /// Forgets everything (a new connection).
    pub fn reset(&mut self) {
        *self = Decoder::new(self.bounds);
    }

    /// Bytes received and not yet returned as values.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The work done so far (see the field `examined`), for tests.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// The element at the cursor, `None` while incomplete; moves the cursor past it.
    fn next_item(&mut self) -> Result<Option<Item>, RespError> {
        if self.bulk.is_some() {
            return self.bulk_body();
        }
        if self.open.len() > MAX_DEPTH {
            return Err(RespError::TooDeep);
        }
        let start = self.cursor;
        let Some(&kind) = self.buf.get(start) else {
            return Ok(None);
        };
        if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
            return Err(RespError::UnknownType(kind));
        }
        let Some(cr) = self.find_crlf()? else {
            return Ok(None);
        };
        let line = &self.buf[start + 1..cr];
        let item = match kind {
            b'+' => Item::Value(Value::Simple(line.to_vec())),
            b'-' => Item::Value(Value::Error(line.to_vec())),
            b':' => Item::Value(Value::Integer(integer(line)?)),
            b'$' => match length(line, self.bounds.bulk)? {
                None => Item::Value(Value::Bulk(None)),
                Some(len) => {
                    // Refused before its bytes are buffered.
                    let value_end = (cr + 2 - self.consumed)
                        .saturating_add(len)
                        .saturating_add(2);
                    if value_end > self.bounds.value {
                        return Err(RespError::TooLong);
                    }
                    self.cursor = cr + 2;
                    self.bulk = Some(len);
                    return self.bulk_body();
                }
            },
            _ => match length(line, MAX_ARRAY)? {
                None => Item::Value(Value::Array(None)),
                Some(0) => Item::Value(Value::Array(Some(Vec::new()))),
                Some(count) => Item::Open(count),
            },
        };
        self.cursor = cr + 2;
        Ok(Some(item))
    }

    /// The body of the bulk string whose header was read, once all of it has arrived.
    fn bulk_body(&mut self) -> Result<Option<Item>, RespError> {
        let Some(len) = self.bulk else {
            return Ok(None);
        };
        // len <= bounds.bulk and the value bound held, so the body fits in memory.
        let end = self.cursor + len;
        if self.buf.len() < end + 2 {
            return Ok(None);
        }
        self.examined += (len + 2) as u64;
        if &self.buf[end..end + 2] != b"\r\n" {
            return Err(RespError::MissingCrlf);
        }
        let body = self.buf[self.cursor..end].to_vec();
        self.cursor = end + 2;
        self.bulk = None;
        Ok(Some(Item::Value(Value::Bulk(Some(body)))))
    }

    /// Where the CR of the header line at the cursor is, `None` until its CRLF arrived.
    /// Resumes the search where the previous call stopped.
    fn find_crlf(&mut self) -> Result<Option<usize>, RespError> {
        let start = self.cursor;
        let line_end = self.buf.len().min(start + MAX_LINE + 3);
        // Skip the type byte; a CR seen last time may have been the end of the bytes.
        let from = start + self.searched.max(1);
        let window = self.buf.get(from..line_end).unwrap_or(&[]);
        if let Some(pos) = window.windows(2).position(|w| w == b"\r\n") {
            self.examined += (pos + 2) as u64;
            self.searched = 0;
            return Ok(Some(from + pos));
        }
        self.examined += window.len() as u64;
        if self.buf.len() - start > MAX_LINE + 2 {
            return Err(RespError::TooLong);
        }
        self.searched = (line_end - start).saturating_sub(1).max(1);
        Ok(None)
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

    /// Roomy bounds for tests that are not about bounds.
    const BOUNDS: Bounds = Bounds {
        bulk: 1 << 20,
        value: 4 << 20,
    };

    fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, RespError> {
        let mut d = Decoder::new(BOUNDS);
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
        // command_len predicts the encoding's length without making it.
        let long = vec![b'x'; 12345];
        let many: Vec<&[u8]> = vec![b"HSET"; 11];
        let cases: [&[&[u8]]; 4] = [&[], &[b"PING"], &[b"A", b"", &long], &many];
        for args in cases {
            let mut out = Vec::new();
            encode_command(args, &mut out);
            assert_eq!(command_len(args), out.len());
        }
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
            let mut d = Decoder::new(BOUNDS);
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
        let mut d = Decoder::new(BOUNDS);
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
        let mut d = Decoder::new(BOUNDS);
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
        let mut d = Decoder::new(BOUNDS);
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
            let mut d = Decoder::new(BOUNDS);
            let split = split.min(bytes.len());
            for piece in [&bytes[..split], &bytes[split..]] {
                d.handle_input(piece);
                while let Ok(Some(_)) = d.poll_value() {}
            }
        }
    }

    #[test]
    fn a_huge_declared_array_allocates_nothing_up_front() {
        let mut d = Decoder::new(BOUNDS);
        d.handle_input(b"*1000000\r\n:1\r\n");
        assert_eq!(d.poll_value(), Ok(None));
    }

    #[test]
    fn lengths_over_the_bounds_passed_in_are_refused_before_buffering() {
        let tight = Bounds { bulk: 8, value: 64 };
        // A bulk string at the bound passes; one byte more is refused at its header.
        let mut d = Decoder::new(tight);
        d.handle_input(b"$8\r\n12345678\r\n");
        assert_eq!(d.poll_value(), Ok(Some(bulk(b"12345678"))));
        d.handle_input(b"$9\r\n");
        assert_eq!(d.poll_value(), Err(RespError::TooLong));
        // A bulk string that would take its value over the value bound (60 bytes so far,
        // then 14 more): refused at its header.
        let mut d = Decoder::new(tight);
        d.handle_input(&[b"*9\r\n".to_vec(), b"$8\r\n12345678\r\n".repeat(4)].concat());
        assert_eq!(d.poll_value(), Ok(None));
        d.handle_input(b"$8\r\n");
        assert_eq!(d.poll_value(), Err(RespError::TooLong));
        // An incomplete value that already spans more than the bound.
        let mut d = Decoder::new(tight);
        d.handle_input(&[b":1\r\n".repeat(17), b"*100\r\n".to_vec()].concat());
        for _ in 0..17 {
            assert_eq!(d.poll_value(), Ok(Some(Value::Integer(1))));
        }
        assert_eq!(d.poll_value(), Ok(None));
        d.handle_input(&b":1\r\n".repeat(15));
        assert_eq!(d.poll_value(), Err(RespError::TooLong));
        // A complete value over the bound, arriving in one piece, is refused too.
        let mut d = Decoder::new(tight);
        d.handle_input(&[b"*20\r\n".to_vec(), b":1\r\n".repeat(20)].concat());
        assert_eq!(d.poll_value(), Err(RespError::TooLong));
    }

    /// A large array fed one byte at a time: the old decoder re-parsed the value from its
    /// start on every byte (about n²/2 bytes examined, 6e9 here); this one examines each
    /// byte a bounded number of times.
    #[test]
    fn a_large_array_fed_bytewise_is_parsed_in_linear_work() {
        const N: usize = 10_000;
        let mut bytes = format!("*{N}\r\n").into_bytes();
        for i in 0..N {
            let item = format!("member-{i}");
            bytes.extend_from_slice(format!("${}\r\n{item}\r\n", item.len()).as_bytes());
        }
        let mut d = Decoder::new(BOUNDS);
        let mut got = None;
        for (i, b) in bytes.iter().enumerate() {
            d.handle_input(std::slice::from_ref(b));
            if let Some(v) = d.poll_value().unwrap() {
                assert_eq!(i, bytes.len() - 1, "complete only at the last byte");
                got = Some(v);
            }
        }
        let items = got.expect("the array").as_array().map(<[Value]>::to_vec);
        let items = items.expect("an array");
        assert_eq!(items.len(), N);
        assert_eq!(items[N - 1], bulk(format!("member-{}", N - 1).as_bytes()));
        let work = d.examined();
        let limit = 3 * bytes.len() as u64;
        assert!(
            work <= limit,
            "{work} bytes examined for {} bytes of input",
            bytes.len()
        );
        // And the same value in one piece costs about as much.
        let mut whole = Decoder::new(BOUNDS);
        whole.handle_input(&bytes);
        assert!(whole.poll_value().unwrap().is_some());
        assert!(
            work <= 2 * whole.examined(),
            "{work} vs {}",
            whole.examined()
        );
    }

    #[test]
    fn a_long_header_line_fed_bytewise_is_searched_once() {
        let mut bytes = vec![b'+'];
        bytes.extend(std::iter::repeat_n(b'x', 50_000));
        bytes.extend_from_slice(b"\r\n");
        let mut d = Decoder::new(BOUNDS);
        for b in &bytes[..bytes.len() - 1] {
            d.handle_input(std::slice::from_ref(b));
            assert_eq!(d.poll_value(), Ok(None));
        }
        d.handle_input(b"\n");
        assert_eq!(d.poll_value(), Ok(Some(Value::Simple(vec![b'x'; 50_000]))));
        assert!(d.examined() <= 2 * bytes.len() as u64, "{}", d.examined());
    }

    /// Any value, encoded, in any pieces: decoded to itself (the incremental parser
    /// against the encoding, a differential check of the stack of open arrays).
    fn encode_value(value: &Value, out: &mut Vec<u8>) {
        let header = |out: &mut Vec<u8>, kind: u8, n: &str| {
            out.push(kind);
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        match value {
            Value::Simple(s) => header(out, b'+', &String::from_utf8_lossy(s)),
            Value::Error(s) => header(out, b'-', &String::from_utf8_lossy(s)),
            Value::Integer(n) => header(out, b':', &n.to_string()),
            Value::Bulk(None) => header(out, b'$', "-1"),
            Value::Bulk(Some(b)) => {
                header(out, b'$', &b.len().to_string());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(None) => header(out, b'*', "-1"),
            Value::Array(Some(items)) => {
                header(out, b'*', &items.len().to_string());
                for item in items {
                    encode_value(item, out);
                }
            }
        }
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let word = || proptest::string::string_regex("[a-z0-9 ]{0,8}").unwrap();
        let leaf = prop_oneof![
            word().prop_map(|s| Value::Simple(s.into_bytes())),
            word().prop_map(|s| Value::Error(s.into_bytes())),
            any::<i64>().prop_map(Value::Integer),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| Value::Bulk(Some(b))),
            Just(Value::Bulk(None)),
            Just(Value::Array(None)),
        ];
        leaf.prop_recursive(MAX_DEPTH as u32, 48, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(|items| Value::Array(Some(items)))
        })
    }

    proptest::proptest! {
        #[test]
        fn values_round_trip_in_any_pieces(
            values in proptest::collection::vec(arb_value(), 1..5),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut bytes = Vec::new();
            for v in &values {
                encode_value(v, &mut bytes);
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut d = Decoder::new(BOUNDS);
            let mut got = Vec::new();
            for piece in cuts.windows(2) {
                d.handle_input(&bytes[piece[0]..piece[1]]);
                while let Some(v) = d.poll_value().unwrap() {
                    got.push(v);
                }
            }
            proptest::prop_assert_eq!(got, values);
            proptest::prop_assert_eq!(d.buffered(), 0);
        }
    }
}
