//! A connection's unsent output: shared frames plus an offset into the first.
//!
//! Frames are reference-counted and shared with every other receiver of the same message;
//! the outbox never copies them. "Wants to write" is simply "not empty".

use std::collections::VecDeque;
use std::sync::Arc;

/// Unsent frames of one connection, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Arc<[u8]>>,
    /// Bytes of `frames[0]` already written.
    head_offset: usize,
    /// Unsent bytes in total (for the slow-consumer limit).
    queued: usize,
}

impl Outbox {
    pub fn push(&mut self, frame: Arc<[u8]>) {
        self.queued += frame.len();
        self.frames.push_back(frame);
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Unsent bytes.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// The unsent bytes as slices, oldest first (the first one starts at the write offset).
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.frames.iter().enumerate().map(|(i, f)| {
            if i == 0 {
                &f[self.head_offset..]
            } else {
                &f[..]
            }
        })
    }

    /// Marks `n` bytes as written; returns how many frames were completed.
    pub fn advance(&mut self, mut n: usize) -> usize {
        debug_assert!(n <= self.queued);
        self.queued -= n.min(self.queued);
        let mut completed = 0;
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.head_offset;
            if n < left {
                self.head_offset += n;
                break;
            }
            n -= left;
            self.frames.pop_front();
            self.head_offset = 0;
            completed += 1;
        }
        completed
    }

    /// Drops every frame not yet started; a partly written frame is kept so that the stream
    /// stays well-formed. Returns the number of frames dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        let keep = usize::from(self.head_offset > 0).min(self.frames.len());
        let dropped = self.frames.len() - keep;
        self.frames.truncate(keep);
        self.queued = self
            .frames
            .front()
            .map_or(0, |f| f.len() - self.head_offset);
        dropped
    }

    /// Drops everything (the transport is gone).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.head_offset = 0;
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Arc<[u8]> {
        bytes.into()
    }

    fn contents(outbox: &Outbox) -> Vec<u8> {
        outbox.slices().flatten().copied().collect()
    }

    #[test]
    fn advance_across_frames() {
        let mut o = Outbox::default();
        o.push(frame(b"abc"));
        o.push(frame(b"de"));
        o.push(frame(b"fgh"));
        assert_eq!(o.queued_bytes(), 8);
        assert_eq!(o.advance(2), 0);
        assert_eq!(contents(&o), b"cdefgh");
        assert_eq!(o.advance(3), 2);
        assert_eq!(contents(&o), b"fgh");
        assert_eq!(o.queued_bytes(), 3);
        assert_eq!(o.advance(3), 1);
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn drop_unstarted_keeps_the_frame_in_progress() {
        let mut o = Outbox::default();
        o.push(frame(b"abc"));
        o.push(frame(b"def"));
        o.advance(1);
        assert_eq!(o.drop_unstarted(), 1);
        assert_eq!(contents(&o), b"bc");
        assert_eq!(o.queued_bytes(), 2);

        let mut o = Outbox::default();
        o.push(frame(b"abc"));
        o.push(frame(b"def"));
        assert_eq!(o.drop_unstarted(), 2);
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }
}
