//! The layouts every loader message carries: a text message (the default, what a browser's
//! chat client sends) or a binary one (`--binary`). Both carry the same three fields: the
//! stamp (CLOCK_MONOTONIC ns: the scheduled send time in open loop, the actual send time in
//! closed loop), the sender's global connection index and its per-sender sequence number.
//!
//! Binary, sent as a WebSocket Binary message (the server forwards binary verbatim):
//! ```text
//! offset 0  magic  b"WSB1"
//! offset 4  stamp  u64 LE
//! offset 12 sender u32 LE
//! offset 16 seq    u64 LE
//! offset 24 ...    padding up to --payload bytes (--fill): zeros, or chat-like text
//! ```
//! Text, sent as a WebSocket Text message, all ASCII (so valid UTF-8):
//! ```text
//! offset 0  '#'    the marker; never in the base64url alphabet nor in the padding words
//! offset 1  27 chars: the 20 bytes stamp u64 LE, sender u32 LE, seq u64 LE in base64url
//!                  (RFC 4648 section 5, unpadded)
//! offset 28 ...    " " and chat-like words up to --payload bytes
//! ```
//! For example (stamp 123456789012345 ns, sender 17, seq 99, 64 bytes; the words are cut
//! where the length ends):
//! ```text
//! #ed8NhkhwAAARAAAAYwAAAAAAAAA or yes of question done about deplo
//! ```
//! A chat server delivers it to the others as `"b17 says: #ed8N..."`, so the receiver finds
//! the header by its marker, searching from the end (the padding never holds one, so the last
//! marker is the header's, whatever the name holds), and accepts what precedes it when that
//! is empty (an echo endpoint, or a server that does not prefix) or ends in `" says: "`;
//! text with no marker there is someone else's (a notice). The header is fixed-width so that
//! every message is exactly --payload bytes; base64url rather than decimal or hex fields keeps
//! it at 28 bytes (fixed-width decimal would take 51, hex 41), so `ping`'s default 32-byte
//! message is still one and `chat`'s 64-byte one is mostly words.
//!
//! The padding only matters with permessage-deflate for binary: zeros compress to almost
//! nothing, so a compression benchmark pads with text that compresses about as well as chat
//! lines do (words drawn from a small vocabulary; each message a different stretch of it).
//! Text messages are always padded with those words.
//!
//! Owns: encoding and checked decoding. Must never panic on a short or foreign payload.

use std::sync::LazyLock;

pub const MAGIC: [u8; 4] = *b"WSB1";
const STAMP_AT: usize = 4;
const SENDER_AT: usize = 12;
const SEQ_AT: usize = 16;
/// The smallest binary payload that holds the header fields.
pub const MIN_PAYLOAD: usize = 24;
/// Marks the start of a text header.
const TEXT_MARKER: u8 = b'#';
/// The header fields as base64url: 20 bytes, 160 bits, 27 characters of 6 bits.
const TEXT_FIELDS_LEN: usize = 27;
/// The smallest text payload: the marker and the encoded fields.
pub const MIN_TEXT_PAYLOAD: usize = 1 + TEXT_FIELDS_LEN;
/// What a chat server puts between the sender's name and the text it forwards.
const SAYS: &[u8] = b" says: ";

/// Which WebSocket message type the loader sends: what the results' config calls `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Messages {
    /// Text messages (the text layout), the path browsers take through a chat server.
    Text,
    /// Binary messages (the binary layout), forwarded verbatim.
    Binary,
}

impl Messages {
    /// The name the results' config records.
    pub fn name(self) -> &'static str {
        match self {
            Messages::Text => "text",
            Messages::Binary => "binary",
        }
    }

    /// The smallest `--payload` that holds the header.
    pub fn min_payload(self) -> usize {
        match self {
            Messages::Text => MIN_TEXT_PAYLOAD,
            Messages::Binary => MIN_PAYLOAD,
        }
    }
}

/// Why a text message is not a loader message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    /// No marker, or one not after nothing or `" says: "`: someone else's text (a notice,
    /// say), not one of ours gone wrong.
    NotOurs,
    /// The marker is there but fewer than 27 characters follow it.
    Truncated,
    /// The 27 characters are not canonical unpadded base64url.
    Encoding,
    /// The header is followed by something other than a space.
    Padding,
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextError::NotOurs => "not a loader message",
            TextError::Truncated => "text header cut short",
            TextError::Encoding => "text header is not base64url",
            TextError::Padding => "text header not followed by a space",
        })
    }
}

impl std::error::Error for TextError {}

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
        Fill::Text => pad_with_words(stamp, end, out),
    }
}

/// Appends the text message for `stamp`, padded with words to `len` bytes (at least
/// `MIN_TEXT_PAYLOAD`). All ASCII; it never starts with `/`, which a chat server would
/// take for a command.
pub fn encode_text(stamp: Stamp, len: usize, out: &mut Vec<u8>) {
    use base64::Engine as _;
    let start = out.len();
    let mut fields = [0u8; 20];
    fields[..8].copy_from_slice(&stamp.stamp_ns.to_le_bytes());
    fields[8..12].copy_from_slice(&stamp.sender.to_le_bytes());
    fields[12..].copy_from_slice(&stamp.seq.to_le_bytes());
    out.push(TEXT_MARKER);
    let mut encoded = [0u8; TEXT_FIELDS_LEN];
    // 20 bytes always encode to exactly 27 characters, so this cannot fail.
    let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(fields, &mut encoded);
    out.extend_from_slice(&encoded);
    let end = start + len.max(MIN_TEXT_PAYLOAD);
    if out.len() < end {
        out.push(b' ');
    }
    pad_with_words(stamp, end, out);
}

/// Appends a stretch of `TEXT` until `out` is `end` bytes long: a different stretch for
/// every (sender, seq), wrapping around.
fn pad_with_words(stamp: Stamp, end: usize, out: &mut Vec<u8>) {
    let text = &TEXT[..];
    // Wrapping: the same stretch as plain arithmetic for any sequence a run reaches, and no
    // overflow for the largest ones.
    let mut at = (u64::from(stamp.sender)
        .wrapping_mul(7_919)
        .wrapping_add(stamp.seq.wrapping_mul(104_729))
        % text.len() as u64) as usize;
    while out.len() < end {
        let take = (end - out.len()).min(text.len() - at);
        out.extend_from_slice(&text[at..at + take]);
        at = 0;
    }
}

/// Parses a text message as it arrives: ours as sent (an echo), or after a chat server's
/// `"<name> says: "` prefix of any length. `Err(TextError::NotOurs)` is someone else's text;
/// the other errors are one of ours damaged.
pub fn decode_text(text: &[u8]) -> Result<Stamp, TextError> {
    use base64::Engine as _;
    let at = text
        .iter()
        .rposition(|&b| b == TEXT_MARKER)
        .ok_or(TextError::NotOurs)?;
    let prefix = &text[..at];
    if !(prefix.is_empty() || prefix.ends_with(SAYS)) {
        return Err(TextError::NotOurs);
    }
    let header = &text[at + 1..];
    let encoded = header.get(..TEXT_FIELDS_LEN).ok_or(TextError::Truncated)?;
    match header.get(TEXT_FIELDS_LEN) {
        None | Some(b' ') => {}
        Some(_) => return Err(TextError::Padding),
    }
    let mut fields = [0u8; 20];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(encoded, &mut fields)
        .map_err(|_| TextError::Encoding)?;
    if n != fields.len() {
        return Err(TextError::Encoding);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&fields[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut sender = [0u8; 4];
    sender.copy_from_slice(&fields[8..12]);
    Ok(Stamp {
        stamp_ns: u64_at(0),
        sender: u32::from_le_bytes(sender),
        seq: u64_at(12),
    })
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

    fn stamps() -> [Stamp; 4] {
        [
            Stamp {
                stamp_ns: 0x0102_0304_0506_0708,
                sender: 77,
                seq: 99,
            },
            Stamp {
                stamp_ns: 0,
                sender: 0,
                seq: 0,
            },
            Stamp {
                stamp_ns: u64::MAX,
                sender: u32::MAX,
                seq: u64::MAX,
            },
            Stamp {
                stamp_ns: 123_456_789_012_345,
                sender: 4_999,
                seq: 1 << 40,
            },
        ]
    }

    #[test]
    fn text_round_trip_length_and_alphabet() {
        for s in stamps() {
            for len in [0, MIN_TEXT_PAYLOAD, MIN_TEXT_PAYLOAD + 1, 64, 1000, 200_000] {
                let mut out = vec![b'x'];
                encode_text(s, len, &mut out);
                let text = &out[1..];
                assert_eq!(text.len(), len.max(MIN_TEXT_PAYLOAD));
                assert_eq!(decode_text(text), Ok(s));
                assert_eq!(text[0], TEXT_MARKER);
                assert!(std::str::from_utf8(text).is_ok());
                assert!(
                    text[1..MIN_TEXT_PAYLOAD]
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                );
                let padding = &text[MIN_TEXT_PAYLOAD..];
                assert!(padding.iter().all(|&b| b == b' ' || b.is_ascii_lowercase()));
                if !padding.is_empty() {
                    assert_eq!(padding[0], b' ');
                }
            }
        }
    }

    #[test]
    fn text_decodes_after_a_says_prefix_of_any_name_length() {
        let s = stamps()[0];
        let mut sent = Vec::new();
        encode_text(s, 64, &mut sent);
        for name_len in 0..=140 {
            // Names may hold anything a server allows, the marker included.
            let name: String = "b#7é".chars().cycle().take(name_len).collect();
            let mut got = format!("{name} says: ").into_bytes();
            got.extend_from_slice(&sent);
            assert_eq!(decode_text(&got), Ok(s), "name {name:?}");
        }
    }

    #[test]
    fn text_from_others_is_not_ours_and_damage_is_a_typed_error() {
        for other in [
            &b""[..],
            b"b3 just connected",
            b"b3 disconnected",
            b"error: unknown command /x (commands: /nick <name>, /who)",
            b"ann says: #hashtag",
            b"ann: #AAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let expected = if other == b"ann says: #hashtag" {
                Err(TextError::Truncated)
            } else {
                Err(TextError::NotOurs)
            };
            assert_eq!(
                decode_text(other),
                expected,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        let mut sent = Vec::new();
        encode_text(stamps()[3], 40, &mut sent);
        // Every cut inside the header is truncated, never a panic.
        for cut in 0..MIN_TEXT_PAYLOAD {
            let want = if cut == 0 {
                TextError::NotOurs
            } else {
                TextError::Truncated
            };
            assert_eq!(decode_text(&sent[..cut]), Err(want), "cut {cut}");
        }
        let mut bad = sent.clone();
        bad[5] = b'+';
        assert_eq!(decode_text(&bad), Err(TextError::Encoding));
        let mut bad = sent.clone();
        bad[MIN_TEXT_PAYLOAD] = b'x';
        assert_eq!(decode_text(&bad), Err(TextError::Padding));
        // The 27th character carries 4 bits: its last 2 must be zero (canonical only).
        let mut bad = sent.clone();
        let last = MIN_TEXT_PAYLOAD - 1;
        bad[last] = if bad[last] == b'B' { b'C' } else { b'B' };
        assert_eq!(decode_text(&bad), Err(TextError::Encoding));
        // Arbitrary bytes after "says: #": a typed error or a stamp, never a panic.
        let mut rng = crate::rng::SplitMix64::new(9);
        for _ in 0..10_000 {
            let len = rng.below(40) as usize;
            let mut text = b"x says: #".to_vec();
            text.extend((0..len).map(|_| rng.below(256) as u8));
            let _ = decode_text(&text);
        }
    }

    #[test]
    fn example_in_the_module_docs_is_what_encode_text_writes() {
        let s = Stamp {
            stamp_ns: 123_456_789_012_345,
            sender: 17,
            seq: 99,
        };
        let mut out = Vec::new();
        encode_text(s, 64, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, EXAMPLE);
        assert_eq!(decode_text(format!("b17 says: {text}").as_bytes()), Ok(s));
    }

    /// The example in the module docs (stamp 123456789012345 ns, sender 17, seq 99, 64 bytes).
    const EXAMPLE: &str = "#ed8NhkhwAAARAAAAYwAAAAAAAAA or yes of question done about deplo";
}
