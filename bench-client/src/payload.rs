//! The binary message layout every loader message carries, sent as a WebSocket Binary
//! message (the server forwards binary verbatim, so receivers can parse it back).
//!
//! ```text
//! offset 0  magic  b"WSB1"
//! offset 4  stamp  u64 LE  CLOCK_MONOTONIC ns: the scheduled send time (open loop) or the
//!                          actual send time (closed loop)
//! offset 12 sender u32 LE  global connection index of the sender
//! offset 16 seq    u64 LE  per-sender sequence number, from 0
//! offset 24 ...    zero padding up to --payload bytes
//! ```
//! Owns: encoding and checked decoding. Must never panic on a short or foreign payload.

pub const MAGIC: [u8; 4] = *b"WSB1";
const STAMP_AT: usize = 4;
const SENDER_AT: usize = 12;
const SEQ_AT: usize = 16;
/// The smallest payload that holds the header fields.
pub const MIN_PAYLOAD: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub stamp_ns: u64,
    pub sender: u32,
    pub seq: u64,
}

/// Appends the payload for `stamp`, padded with zeros to `len` (at least `MIN_PAYLOAD`).
pub fn encode(stamp: Stamp, len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&stamp.stamp_ns.to_le_bytes());
    out.extend_from_slice(&stamp.sender.to_le_bytes());
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    out.resize(start + len.max(MIN_PAYLOAD), 0);
}

/// Parses a payload; `None` when it is not one of ours.
pub fn decode(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < MIN_PAYLOAD || payload[..4] != MAGIC {
        return None;
    }
    let u64_at = |at: usize| {
        payload
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let sender = payload
        .get(SENDER_AT..SENDER_AT + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)?;
    Some(Stamp {
        stamp_ns: u64_at(STAMP_AT)?,
        sender,
        seq: u64_at(SEQ_AT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let s = Stamp {
            stamp_ns: 0x0102_0304_0506_0708,
            sender: 77,
            seq: 99,
        };
        for len in [0, 24, 25, 1000] {
            let mut out = vec![0xAA];
            encode(s, len, &mut out);
            assert_eq!(out.len(), 1 + len.max(MIN_PAYLOAD));
            assert_eq!(decode(&out[1..]), Some(s));
        }
    }

    #[test]
    fn foreign_or_short_payloads_are_rejected() {
        let mut out = Vec::new();
        encode(
            Stamp {
                stamp_ns: 1,
                sender: 2,
                seq: 3,
            },
            24,
            &mut out,
        );
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), None);
        }
        out[0] = b'X';
        assert_eq!(decode(&out), None);
    }
}
