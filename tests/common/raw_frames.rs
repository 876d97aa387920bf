//! Raw WebSocket frames: client frames built by hand (masked or not, any length encoding,
//! reserved bits, bad opcodes) and server frames read back and checked.
//!
//! Owns: [`Frame`] (what a test sends), [`RawFrame`] (what the server sent) and the helpers
//! that expect a message, a close code or the end of the connection. Must never: read
//! without a bound, or accept a masked server frame.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;

// WebSocket opcodes.
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// How the payload length is encoded in a hand-built frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LenEnc {
    /// The shortest encoding (what a correct client sends).
    Minimal,
    /// Force the 16-bit extended length (126).
    Ext16,
    /// Force the 64-bit extended length (127).
    Ext64,
    /// 64-bit extended length with this exact value, whatever the payload.
    Raw64(u64),
}

/// A hand-built WebSocket frame (client to server: masked unless told not to).
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: LenEnc,
    pub payload: Vec<u8>,
}

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

impl Frame {
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(MASK),
            len: LenEnc::Minimal,
            payload: payload.into(),
        }
    }
    pub fn text(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_TEXT, payload)
    }
    pub fn binary(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_BINARY, payload)
    }
    pub fn cont(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_CONT, payload)
    }
    pub fn ping(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(OP_PING, payload)
    }
    /// Close frame with a status code and a (raw bytes) reason.
    pub fn close(code: u16, reason: &[u8]) -> Frame {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        Frame::new(OP_CLOSE, p)
    }
    pub fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }
    pub fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }
    pub fn unmasked(mut self) -> Frame {
        self.mask = None;
        self
    }
    pub fn len_enc(mut self, len: LenEnc) -> Frame {
        self.len = len;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push(((self.fin as u8) << 7) | ((self.rsv & 0x7) << 4) | (self.opcode & 0xF));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let n = self.payload.len();
        let enc = match self.len {
            LenEnc::Minimal if n <= 125 => None,
            LenEnc::Minimal if n <= 0xFFFF => Some(LenEnc::Ext16),
            LenEnc::Minimal => Some(LenEnc::Ext64),
            other => Some(other),
        };
        match enc {
            None => out.push(mask_bit | n as u8),
            Some(LenEnc::Ext16) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            Some(LenEnc::Ext64) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
            Some(LenEnc::Raw64(v)) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Some(LenEnc::Minimal) => unreachable!(),
        }
        match self.mask {
            Some(m) => {
                out.extend_from_slice(&m);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// Writes frames back to back (one write call, so they may share a segment).
pub fn send_frames(s: &mut TcpStream, frames: &[Frame]) {
    let mut bytes = Vec::new();
    for f in frames {
        bytes.extend_from_slice(&f.encode());
    }
    s.write_all(&bytes).expect("write frames");
}

/// A frame as received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Close code of a close frame (None for an empty payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE);
        assert_ne!(self.payload.len(), 1, "server sent a 1-byte close payload");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one server frame; server frames must be unmasked. Any byte stream will do (a
/// TcpStream, a buffered or TLS stream over one).
pub fn read_frame(s: &mut impl Read) -> io::Result<RawFrame> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let fin = h[0] & 0x80 != 0;
    let rsv = (h[0] >> 4) & 0x7;
    let opcode = h[0] & 0xF;
    if h[1] & 0x80 != 0 {
        return Err(io::Error::other("server sent a masked frame"));
    }
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as u64
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => n as u64,
    };
    if len > 64 * 1024 * 1024 {
        return Err(io::Error::other(format!(
            "server frame length {len} is absurd"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    Ok(RawFrame {
        fin,
        rsv,
        opcode,
        payload,
    })
}

/// Reads one complete data message (handling fragmentation, skipping pongs).
/// Returns (opcode, payload).
pub fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut opcode = None;
    let mut data = Vec::new();
    for _ in 0..100_000 {
        let f = read_frame(s).expect("read frame");
        match f.opcode {
            OP_PING | OP_PONG => continue,
            OP_CLOSE => panic!("expected a data message, got close {:?}", f.close_code()),
            OP_CONT => {
                assert!(
                    opcode.is_some(),
                    "server sent a continuation without a start"
                );
                data.extend_from_slice(&f.payload);
            }
            op => {
                assert!(
                    opcode.is_none(),
                    "server started a new message mid-fragment"
                );
                opcode = Some(op);
                data.extend_from_slice(&f.payload);
            }
        }
        if f.fin {
            return (opcode.unwrap(), data);
        }
    }
    panic!("message with too many fragments");
}

/// Reads frames until a close frame arrives (skipping others) and returns its
/// code. Then answers with a close frame of our own (ignoring write errors)
/// and checks that the server closes the TCP connection.
pub fn expect_close(s: &mut TcpStream) -> Option<u16> {
    let code = read_close(s);
    let mut reply = Frame::new(OP_CLOSE, Vec::new()).encode();
    if let Some(c) = code {
        reply = Frame::close(c, b"").encode();
    }
    let _ = s.write_all(&reply);
    expect_eof(s);
    code
}

/// Reads frames until a close frame; returns its code. Panics on EOF/error.
pub fn read_close(s: &mut TcpStream) -> Option<u16> {
    let mut skipped = 0usize;
    loop {
        match read_frame(s) {
            Ok(f) if f.opcode == OP_CLOSE => return f.close_code(),
            Ok(f) => {
                skipped += 1;
                assert!(
                    skipped < 100_000,
                    "no close frame, only other frames (last {:?})",
                    f.opcode
                );
            }
            Err(e) => panic!("expected a close frame, got {e} (after {skipped} other frames)"),
        }
    }
}

/// Asserts the close code the server sends, then that it closes TCP.
pub fn assert_close_code(s: &mut TcpStream, expected: u16, what: &str) {
    let code = expect_close(s);
    assert_eq!(code, Some(expected), "{what}: wrong close code");
}

/// Reads until the peer closes the connection (EOF or reset). Data before
/// that is discarded. Panics on timeout.
pub fn expect_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return;
            }
            Err(e) => panic!("expected the server to close the connection, got {e}"),
        }
    }
}
