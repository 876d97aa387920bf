//! The frame header codec (RFC 6455 5.2), for both roles.
//!
//! Parsing is two steps: `FrameHeader::parse` checks the bytes and returns a validated header
//! (or `Ok(None)` when the header is not complete yet, consuming nothing); the payload is then
//! streamed by the caller. Encoding writes a whole frame into one buffer so that it can be
//! shared by every receiver.

use std::sync::Arc;

use super::error::ProtocolError;
use super::mask::apply_mask;

/// Byte 0: FIN, RSV1-3, opcode. Byte 1: MASK, 7-bit length.
const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
/// RSV1: set on the first frame of a compressed message once permessage-deflate is agreed.
pub const RSV1_BIT: u8 = 0x40;
const OPCODE_BITS: u8 = 0x0f;
const MASK_BIT: u8 = 0x80;
const LEN7_BITS: u8 = 0x7f;
/// 7-bit length values that announce an extended length field.
const LEN7_IS_16BIT: u8 = 126;
const LEN7_IS_64BIT: u8 = 127;
const MASK_KEY_LEN: usize = 4;

/// The longest header: 2 fixed bytes, 8 length bytes, 4 masking-key bytes.
pub const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most 125 payload bytes (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (RFC 6455 5.2; 0x3-0x7 and 0xB-0xF are reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// Close, Ping and Pong: short, never fragmented, allowed between fragments.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1, which permessage-deflate (RFC 7692 6) uses to mark the first frame of a
    /// compressed message. Whether it is allowed on this frame is the connection's call:
    /// it depends on what was agreed and on where the frame falls in its message.
    pub rsv1: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses the header at the start of `buf`. Returns the header and its length in bytes,
    /// or `Ok(None)` if `buf` does not hold the whole header yet.
    ///
    /// Checks everything a header alone can violate: reserved bits (for a connection without
    /// extensions), reserved opcodes, control frame length and fragmentation, minimal length
    /// encoding and the 64-bit length's most significant bit. Whether a mask is required
    /// depends on the role and is checked by the caller.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        // Checked first, so that a frame breaking it fails with its first byte.
        if buf.first().is_some_and(|b0| b0 & RSV_BITS != 0) {
            return Err(ProtocolError::ReservedBits);
        }
        FrameHeader::parse_with_rsv1(buf)
    }

    /// Like `parse`, but lets RSV1 through (in [`FrameHeader::rsv1`]): with permessage-deflate
    /// agreed, the caller decides where it is allowed. RSV2 and RSV3 are still errors.
    pub fn parse_with_rsv1(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        if b0 & RSV_BITS & !RSV1_BIT != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let rsv1 = b0 & RSV1_BIT != 0;
        let opcode = Opcode::from_bits(b0 & OPCODE_BITS)
            .ok_or(ProtocolError::ReservedOpcode(b0 & OPCODE_BITS))?;
        let fin = b0 & FIN_BIT != 0;
        let masked = b1 & MASK_BIT != 0;
        let len7 = b1 & LEN7_BITS;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        let (payload_len, len_bytes) = match len7 {
            LEN7_IS_16BIT => {
                let Some(&[hi, lo]) = rest.first_chunk::<2>() else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([hi, lo]);
                if len < u16::from(LEN7_IS_16BIT) {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (u64::from(len), 2)
            }
            LEN7_IS_64BIT => {
                let Some(bytes) = rest.first_chunk::<8>() else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(*bytes);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthMsbSet);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 8)
            }
            short => (u64::from(short), 0),
        };
        let mut header_len = 2 + len_bytes;
        let mask = if masked {
            let Some(key) = rest[len_bytes..].first_chunk::<MASK_KEY_LEN>() else {
                return Ok(None);
            };
            header_len += MASK_KEY_LEN;
            Some(*key)
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv1,
                opcode,
                mask,
                payload_len,
            },
            header_len,
        )))
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let fin = if self.fin { FIN_BIT } else { 0 };
        let rsv1 = if self.rsv1 { RSV1_BIT } else { 0 };
        out.push(fin | rsv1 | self.opcode as u8);
        let mask = if self.mask.is_some() { MASK_BIT } else { 0 };
        match self.payload_len {
            len @ 0..=125 => out.push(mask | len as u8),
            len @ 126..=0xffff => {
                out.push(mask | LEN7_IS_16BIT);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(mask | LEN7_IS_64BIT);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
    }

    /// The encoded size of a header for this payload length.
    pub fn encoded_len(payload_len: usize, masked: bool) -> usize {
        let len_bytes = match payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + len_bytes + if masked { MASK_KEY_LEN } else { 0 }
    }
}

/// Encodes one whole frame whose payload is the concatenation of `parts`, masked with `mask`
/// when given (client role). Concatenating here lets a chat message be framed as
/// `name`, `" says: "`, `text` with one allocation and no intermediate string.
pub fn encode_frame(opcode: Opcode, parts: &[&[u8]], mask: Option<[u8; 4]>) -> Vec<u8> {
    encode_whole_frame(false, opcode, parts, mask)
}

/// Encodes one whole unmasked (server) frame carrying a compressed message: RSV1 set, the
/// payload as permessage-deflate made it (RFC 7692 7.2.1).
pub fn encode_compressed_frame(opcode: Opcode, compressed: &[u8]) -> Vec<u8> {
    encode_whole_frame(true, opcode, &[compressed], None)
}

fn encode_whole_frame(
    rsv1: bool,
    opcode: Opcode,
    parts: &[&[u8]],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let header = FrameHeader {
        fin: true,
        rsv1,
        opcode,
        mask,
        payload_len: payload_len as u64,
    };
    let mut out =
        Vec::with_capacity(FrameHeader::encoded_len(payload_len, mask.is_some()) + payload_len);
    header.encode(&mut out);
    let payload_start = out.len();
    for part in parts {
        out.extend_from_slice(part);
    }
    if let Some(key) = mask {
        apply_mask(&mut out[payload_start..], key, 0);
    }
    out
}

/// An encoded frame shared by reference between every receiver and thread.
pub type SharedFrame = Arc<[u8]>;

/// Encodes an unmasked (server) frame once, ready to be queued on any number of connections.
pub fn server_frame(opcode: Opcode, parts: &[&[u8]]) -> SharedFrame {
    encode_frame(opcode, parts, None).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        FrameHeader::parse(buf)
    }

    // RFC 6455 5.7 examples.
    #[test]
    fn rfc_single_frame_unmasked_hello() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, len) = parse_all(&bytes).unwrap().unwrap();
        assert_eq!(len, 2);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv1: false,
                opcode: Opcode::Text,
                mask: None,
                payload_len: 5
            }
        );
        assert_eq!(encode_frame(Opcode::Text, &[b"Hello"], None), bytes);
    }

    #[test]
    fn rfc_single_frame_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, len) = parse_all(&bytes).unwrap().unwrap();
        assert_eq!(len, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(
            encode_frame(
                Opcode::Text,
                &[b"Hel", b"lo"],
                Some([0x37, 0xfa, 0x21, 0x3d])
            ),
            bytes
        );
    }

    #[test]
    fn rfc_fragmented_unmasked_text() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let second = [0x80, 0x02, 0x6c, 0x6f];
        let (h1, _) = parse_all(&first).unwrap().unwrap();
        let (h2, _) = parse_all(&second).unwrap().unwrap();
        assert!(!h1.fin && h1.opcode == Opcode::Text && h1.payload_len == 3);
        assert!(h2.fin && h2.opcode == Opcode::Continuation && h2.payload_len == 2);
    }

    #[test]
    fn rfc_ping_and_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(parse_all(&ping).unwrap().unwrap().0.opcode, Opcode::Ping);
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, _) = parse_all(&pong).unwrap().unwrap();
        assert_eq!(h.opcode, Opcode::Pong);
        assert!(h.mask.is_some());
    }

    #[test]
    fn rfc_256_byte_and_64_kib_binary() {
        let h256 = [0x82, 0x7e, 0x01, 0x00];
        let (h, len) = parse_all(&h256).unwrap().unwrap();
        assert_eq!((h.payload_len, len), (256, 4));
        let h64k = [0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        let (h, len) = parse_all(&h64k).unwrap().unwrap();
        assert_eq!((h.payload_len, len), (65536, 10));
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, h64k);
    }

    // RFC 7692 7.2.3.1: "Hello" as one compressed message, RSV1 on its only frame.
    #[test]
    fn rfc7692_compressed_hello_sets_rsv1_both_ways() {
        let bytes = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let expected = FrameHeader {
            fin: true,
            rsv1: true,
            opcode: Opcode::Text,
            mask: None,
            payload_len: 7,
        };
        assert_eq!(
            FrameHeader::parse_with_rsv1(&bytes),
            Ok(Some((expected, 2)))
        );
        assert_eq!(encode_compressed_frame(Opcode::Text, &bytes[2..]), bytes);
        // Without an extension RSV1 is an error, found on the first byte.
        assert_eq!(parse_all(&bytes[..1]), Err(ProtocolError::ReservedBits));
    }

    // RFC 7692 7.2.3.1: the same message in two fragments; RSV1 only on the first.
    #[test]
    fn rfc7692_fragmented_compressed_hello_has_rsv1_on_the_first_frame_only() {
        let first = [0x41, 0x03, 0xf2, 0x48, 0xcd];
        let second = [0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00];
        for (bytes, fin, rsv1, opcode) in [
            (&first[..], false, true, Opcode::Text),
            (&second[..], true, false, Opcode::Continuation),
        ] {
            let header = FrameHeader {
                fin,
                rsv1,
                opcode,
                mask: None,
                payload_len: bytes.len() as u64 - 2,
            };
            assert_eq!(FrameHeader::parse_with_rsv1(bytes), Ok(Some((header, 2))));
            let mut out = Vec::new();
            header.encode(&mut out);
            assert_eq!(out, bytes[..2], "{bytes:x?}");
        }
    }

    #[test]
    fn rsv1_on_a_masked_frame_and_rsv2_rsv3_never() {
        let masked = [0xc2, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4];
        let header = FrameHeader {
            fin: true,
            rsv1: true,
            opcode: Opcode::Binary,
            mask: Some([1, 2, 3, 4]),
            payload_len: 256,
        };
        assert_eq!(FrameHeader::parse_with_rsv1(&masked), Ok(Some((header, 8))));
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(out, masked);
        for b0 in [0xa1, 0x91, 0xe1, 0xf1] {
            assert_eq!(
                FrameHeader::parse_with_rsv1(&[b0, 0x00]),
                Err(ProtocolError::ReservedBits),
                "{b0:#x}"
            );
        }
    }

    #[test]
    fn incomplete_headers_consume_nothing() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(parse_all(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(parse_all(&full).unwrap().unwrap().1, 14);
    }

    #[test]
    fn header_violations() {
        let cases: [(&[u8], ProtocolError); 8] = [
            (&[0xc1, 0x80], ProtocolError::ReservedBits),
            (&[0x83, 0x80], ProtocolError::ReservedOpcode(3)),
            (&[0x8b, 0x80], ProtocolError::ReservedOpcode(0xb)),
            (&[0x09, 0x80], ProtocolError::FragmentedControlFrame),
            (
                &[0x89, 0xfe, 0x00, 0x7e],
                ProtocolError::ControlFrameTooLong,
            ),
            (&[0x82, 0xfe, 0x00, 0x64], ProtocolError::NonMinimalLength),
            (
                &[0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
                ProtocolError::NonMinimalLength,
            ),
            (
                &[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],
                ProtocolError::LengthMsbSet,
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(parse_all(bytes), Err(err), "{bytes:x?}");
        }
    }

    #[test]
    fn encode_parse_round_trip_at_length_boundaries() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![7u8; len];
            for mask in [None, Some([1, 2, 3, 4])] {
                let frame = encode_frame(Opcode::Binary, &[&payload], mask);
                let (h, hlen) = parse_all(&frame).unwrap().unwrap();
                assert_eq!(h.payload_len as usize, len);
                assert_eq!(hlen, FrameHeader::encoded_len(len, mask.is_some()));
                assert_eq!(frame.len(), hlen + len);
            }
        }
    }
}
