//! The binary message layout every loader message carries, sent as a WebSocket Binary
//! message (the server forwards binary verbatim, so receivers can parse it back).
//!
//! ```text
//! offset 0  magic  b"WSB1"
//! offset 4  stamp  u64 LE  CLOCK_MONOTONIC ns: the scheduled send time (open loop) or the
//!                          actual send time (closed loop)
//! offset 12 sender u32 LE  global connection index of the sender
//! offset 16 seq    u64 LE  per-sender sequence number, from 0
//! offset 24 ...    padding up to --payload bytes (--fill): zeros, or chat-like text
//! ```
//! The padding only matters with permessage-deflate: zeros compress to almost nothing, so a
//! compression benchmark pads with text that compresses about as well as chat lines do
//! (words drawn from a small vocabulary; each message a different stretch of it).
//!
//! Owns: encoding and checked decoding. Must never panic on a short or foreign payload.

use std::sync::LazyLock;

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

/// What pads a payload after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fill {
    /// Zero bytes (compress to almost nothing).
    Zeros,
    /// Chat-like text: lower-case words and spaces.
    Text,
}

impl Fill {
    /// The name of `--fill`, as the results' config records it.
    pub fn name(self) -> &'static str {
        match self {
            Fill::Zeros => "zeros",
            Fill::Text => "text",
        }
    }
}

/// Appends the payload for `stamp`, padded to `len` bytes (at least `MIN_PAYLOAD`).
pub fn encode(stamp: Stamp, len: usize, fill: Fill, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&stamp.stamp_ns.to_le_bytes());
    out.extend_from_slice(&stamp.sender.to_le_bytes());
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    let end = start + len.max(MIN_PAYLOAD);
    match fill {
        Fill::Zeros => out.resize(end, 0),
        Fill::Text => {
            // A different stretch of the text for every (sender, seq), wrapping around.
            let text = &TEXT[..];
            let mut at =
                (u64::from(stamp.sender) * 7_919 + stamp.seq * 104_729) as usize % text.len();
            while out.len() < end {
                let take = (end - out.len()).min(text.len() - at);
                out.extend_from_slice(&text[at..at + take]);
                at = 0;
            }
        }
    }
}

/// Words of everyday chat, the vocabulary of the text padding.
const WORDS: &[&str] = &[
    "the", "a", "to", "and", "of", "is", "it", "you", "that", "in", "for", "on", "we", "this",
    "with", "be", "not", "are", "have", "at", "so", "but", "can", "just", "do", "was", "what",
    "if", "me", "my", "will", "all", "one", "get", "about", "know", "there", "like", "think",
    "now", "out", "up", "time", "yes", "no", "ok", "thanks", "see", "good", "today", "build",
    "server", "test", "tomorrow", "meeting", "deploy", "works", "broken", "fixed", "again",
    "latency", "message", "room", "coffee", "lunch", "later", "sure", "maybe", "please", "look",
    "here", "check", "branch", "review", "merge", "before", "after", "issue", "morning", "week",
    "ready", "done", "still", "running", "numbers", "faster", "slower", "queue", "thread",
    "socket", "kernel", "network", "question", "answer", "people",
];

/// 64 KiB of words from `WORDS`, the same on every run (a fixed-seed generator).
static TEXT: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut rng = crate::rng::SplitMix64::new(0x5eed_7e47);
    let mut text = Vec::with_capacity(64 * 1024 + 16);
    while text.len() < 64 * 1024 {
        text.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        text.push(b' ');
    }
    text.truncate(64 * 1024);
    text
});

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
        for fill in [Fill::Zeros, Fill::Text] {
            for len in [0, 24, 25, 1000, 200_000] {
                let mut out = vec![0xAA];
                encode(s, len, fill, &mut out);
                assert_eq!(out.len(), 1 + len.max(MIN_PAYLOAD));
                assert_eq!(decode(&out[1..]), Some(s));
                let padding = &out[1 + MIN_PAYLOAD..];
                match fill {
                    Fill::Zeros => assert!(padding.iter().all(|&b| b == 0)),
                    Fill::Text => {
                        assert!(padding.iter().all(|&b| b == b' ' || b.is_ascii_lowercase()))
                    }
                }
            }
        }
    }

    #[test]
    fn text_padding_differs_between_messages() {
        let pad = |sender, seq| {
            let mut out = Vec::new();
            let stamp = Stamp {
                stamp_ns: 0,
                sender,
                seq,
            };
            encode(stamp, 200, Fill::Text, &mut out);
            out.split_off(MIN_PAYLOAD)
        };
        assert_ne!(pad(1, 1), pad(1, 2));
        assert_ne!(pad(1, 1), pad(2, 1));
        assert_eq!(pad(3, 4), pad(3, 4));
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
            Fill::Zeros,
            &mut out,
        );
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), None);
        }
        out[0] = b'X';
        assert_eq!(decode(&out), None);
    }
}
