//! Incremental UTF-8 validation across frames and reads.
//!
//! A text message may be split anywhere: between fragments and between TCP reads, even inside
//! a multi-byte character. The validator keeps at most three bytes of an unfinished character
//! and fails as soon as the bytes seen so far cannot be the prefix of valid UTF-8 (Autobahn
//! 6.4.x checks this "fail fast" behaviour).

use simdutf8::compat::from_utf8;

/// Validation state of one text message.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a character whose remaining bytes have not arrived yet.
    pending: [u8; 4],
    pending_len: usize,
}

/// The bytes seen so far are not the prefix of any valid UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Validates the next chunk of the message.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        // Finish the character left open by the previous chunk, one byte at a time (at most 3).
        while self.pending_len > 0 {
            let Some((&byte, rest)) = chunk.split_first() else {
                return Ok(());
            };
            self.pending[self.pending_len] = byte;
            self.pending_len += 1;
            chunk = rest;
            match from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {}
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match from_utf8(chunk) {
            Ok(_) => Ok(()),
            // `error_len() == None`: the chunk ends inside a character that may still be
            // completed; at most 3 such bytes exist.
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Checks that the message did not end inside a character.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], split: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        v.feed(&bytes[..split])?;
        v.feed(&bytes[split..])?;
        v.finish()
    }

    #[test]
    fn valid_text_split_at_every_point() {
        let text = "κόσμε Hello-µ@ßöäüàá-UTF-8!! 🎉".as_bytes();
        for split in 0..=text.len() {
            assert_eq!(validate_split(text, split), Ok(()), "split {split}");
        }
    }

    #[test]
    fn byte_by_byte_matches_std() {
        let cases: [&[u8]; 6] = [
            "κόσμε".as_bytes(),
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
            ],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xc0, 0xaf],
            &[0xe0, 0x80, 0xaf],
            &[0xf0, 0x9f, 0x8e, 0x89],
        ];
        for bytes in cases {
            let mut v = Utf8Validator::default();
            let result = bytes
                .iter()
                .try_for_each(|b| v.feed(std::slice::from_ref(b)))
                .and_then(|()| v.finish());
            assert_eq!(
                result.is_ok(),
                std::str::from_utf8(bytes).is_ok(),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn fails_fast_on_the_first_impossible_byte() {
        // 0xf4 0x90 would encode a code point above U+10FFFF: invalid before the end.
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[b'a', 0xf4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn surrogates_are_rejected_across_a_split() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xed]), Ok(()));
        assert_eq!(v.feed(&[0xa0, 0x80]), Err(InvalidUtf8));
    }

    #[test]
    fn unfinished_character_at_the_end_is_invalid() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[b'o', b'k', 0xe2, 0x82]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }
}
