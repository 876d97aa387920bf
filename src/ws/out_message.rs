//! The outgoing message shared by every receiver: the plain frame, encoded once, and its
//! permessage-deflate variants, each compressed at most once, by the first receiver that
//! needs it, on whatever thread that receiver lives.
//!
//! Owns: which frame a receiver gets (plain or compressed, by what it agreed to) and when a
//! message is not worth compressing. Must never: compress a message twice for one window,
//! copy a frame per receiver, or compress a control frame (RFC 7692 6.1). Pure computation:
//! no syscall, no clock, no thread.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use super::deflate::{Agreed, Compressor, window_class};
use super::frame::{FrameHeader, Opcode, SharedFrame, encode_compressed_frame};

/// Payloads shorter than this are sent uncompressed without trying. Measured (zlib-rs, level
/// 6, 15-bit window): a 12-byte line became 14 bytes, a 51-byte one 53, a 117-byte one 97
/// (83 %), a 1060-byte log excerpt 115 (11 %); each compression cost 4-10 µs, most of it
/// resetting the 128 KiB hash table, whatever the length. Below 64 bytes there is nothing to
/// win for that cost.
const MIN_COMPRESS_LEN: usize = 64;

/// One outgoing message. A clone shares the plain frame and the compressed variants (one
/// per window size), so every receiver and thread works on the same bytes.
#[derive(Debug, Clone)]
pub struct OutMessage(Arc<Variants>);

#[derive(Debug)]
struct Variants {
    plain: SharedFrame,
    /// `None` once computed means "not worth it": the plain frame is sent instead.
    deflated: [OnceLock<Option<SharedFrame>>; 2],
}

impl From<SharedFrame> for OutMessage {
    fn from(plain: SharedFrame) -> OutMessage {
        OutMessage(Arc::new(Variants {
            plain,
            deflated: [OnceLock::new(), OnceLock::new()],
        }))
    }
}

/// The plain frame's bytes.
impl Deref for OutMessage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.plain
    }
}

impl OutMessage {
    /// The plain (uncompressed) frame.
    pub fn plain(&self) -> &SharedFrame {
        &self.0.plain
    }

    /// The frame for a receiver that agreed to `deflate` (or to nothing): the compressed
    /// variant when it is smaller, else the plain frame. Control frames are never compressed.
    pub fn for_receiver(
        &self,
        deflate: Option<Agreed>,
        compressor: &mut Compressor,
    ) -> SharedFrame {
        let Some(agreed) = deflate else {
            return self.0.plain.clone();
        };
        let variant = self.0.deflated[window_class(agreed.server_window_bits)]
            .get_or_init(|| deflated_frame(&self.0.plain, agreed.server_window_bits, compressor));
        variant.as_ref().unwrap_or(&self.0.plain).clone()
    }
}

/// The compressed form of an unfragmented plain data frame, if it is smaller.
fn deflated_frame(
    plain: &[u8],
    window_bits: u8,
    compressor: &mut Compressor,
) -> Option<SharedFrame> {
    let (header, header_len) = FrameHeader::parse(plain).ok().flatten()?;
    if header.opcode.is_control() || header.opcode == Opcode::Continuation || !header.fin {
        return None;
    }
    let payload = plain.get(header_len..)?;
    if payload.len() < MIN_COMPRESS_LEN {
        return None;
    }
    let compressed = compressor.compress(payload, window_bits);
    let frame = encode_compressed_frame(header.opcode, &compressed);
    (frame.len() < plain.len()).then(|| frame.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{RSV1_BIT, encode_frame};

    #[test]
    fn one_compressed_variant_per_window_shared_by_all() {
        let plain = encode_frame(Opcode::Text, &[&[b'a'; 300]], None);
        let message = OutMessage::from(SharedFrame::from(plain));
        let mut c = Compressor::default();
        let wide = Some(Agreed {
            server_window_bits: 15,
            client_window_bits: 15,
        });
        let a = message.for_receiver(wide, &mut c);
        let b = message.for_receiver(wide, &mut c);
        assert!(Arc::ptr_eq(&a, &b), "encoded once");
        assert_eq!(a[0], 0x80 | RSV1_BIT | 0x1);
        assert!(a.len() < 20);
        assert!(Arc::ptr_eq(
            &message.for_receiver(None, &mut c),
            message.plain()
        ));
        // Too short to gain: the plain frame.
        let short = OutMessage::from(SharedFrame::from(encode_frame(
            Opcode::Text,
            &[b"hi"],
            None,
        )));
        assert!(Arc::ptr_eq(
            &short.for_receiver(wide, &mut c),
            short.plain()
        ));
        // Control frames never.
        let ping = OutMessage::from(SharedFrame::from(encode_frame(
            Opcode::Ping,
            &[&[b'a'; 100]],
            None,
        )));
        assert!(Arc::ptr_eq(&ping.for_receiver(wide, &mut c), ping.plain()));
    }
}
