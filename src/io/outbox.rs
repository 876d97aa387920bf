//! A connection's unsent output: shared frames plus an offset into the first.
//!
//! Frames are reference-counted and shared with every other receiver of the same message;
//! the outbox never copies them. "Wants to write" is simply "not empty".
//!
//! A completion-based reactor (io_uring) hands the front bytes to the kernel and learns only
//! later how many were sent; until then those bytes are *in flight*: they stay at the front
//! (so the outbox is not empty and the shard holds its FIN), [`Outbox::drop_unstarted`] keeps
//! every frame they touch, and [`Outbox::complete_in_flight`] settles them. The reactor's
//! operation holds its own references to the frames, so dropping them here never frees
//! memory the kernel is reading.

use std::collections::VecDeque;
use std::sync::Arc;

/// Unsent frames of one connection, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: Frames,
    /// Unsent bytes in total (for the slow-consumer limit).
    queued: usize,
    /// Bytes of `frames[0]` already written. 4 bytes, as is `in_flight` (8 bytes less for
    /// every connection): a frame is at most `MAX_FRAME` bytes.
    head_offset: u32,
    /// Bytes at the front handed to the kernel and not yet confirmed (always <= `queued`);
    /// a completion reactor hands at most `MAX_FRAME` bytes at a time.
    in_flight: u32,
}

/// The longest frame an outbox takes, and the most bytes in flight at once: the server's
/// frames are bounded far below it (a message of at most 1 GiB, `ws::MAX_MESSAGE_LIMIT`,
/// plus its header and a chat prefix).
pub const MAX_FRAME: usize = u32::MAX as usize;

/// The frames of an outbox: the first held inline, the others in a queue that exists only
/// while there are two or more, boxed so that an outbox without it is small. Most flushes
/// carry one frame per receiver, so an outbox then allocates nothing, and an idle one holds
/// no buffer (an emptied queue kept 80 bytes per idle connection: results/memory/2026-12-06)
/// and a 8-byte header where a `VecDeque`'s is 32.
#[derive(Debug, Default)]
struct Frames {
    /// `None` only when the outbox is empty (then `rest` is `None` too).
    first: Option<Arc<[u8]>>,
    /// `None` when it would be empty. Boxed on purpose (the extra allocation is the price of
    /// the small header).
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Arc<[u8]>>>>,
}

impl Frames {
    fn push_back(&mut self, frame: Arc<[u8]>) {
        match self.first {
            None => self.first = Some(frame),
            Some(_) => self.rest.get_or_insert_default().push_back(frame),
        }
    }

    fn front(&self) -> Option<&Arc<[u8]>> {
        self.first.as_ref()
    }

    fn pop_front(&mut self) -> Option<Arc<[u8]>> {
        let front = self.first.take();
        if let Some(rest) = &mut self.rest {
            self.first = rest.pop_front();
            if rest.is_empty() {
                self.rest = None;
            }
        }
        front
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<[u8]>> + Clone {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn truncate(&mut self, len: usize) {
        match len {
            0 => self.clear(),
            _ => {
                if let Some(rest) = &mut self.rest {
                    rest.truncate(len - 1);
                    if rest.is_empty() {
                        self.rest = None;
                    }
                }
            }
        }
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest = None;
    }
}

impl Outbox {
    pub fn push(&mut self, frame: Arc<[u8]>) {
        debug_assert!(frame.len() <= MAX_FRAME);
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
                &f[self.head_offset as usize..]
            } else {
                &f[..]
            }
        })
    }

    /// The unsent frames, oldest first, each with the offset its unsent bytes start at.
    pub fn pending(&self) -> impl Iterator<Item = (&Arc<[u8]>, usize)> + Clone {
        self.frames
            .iter()
            .enumerate()
            .map(|(i, f)| (f, if i == 0 { self.head_offset as usize } else { 0 }))
    }

    /// Bytes at the front handed to the kernel and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.in_flight as usize
    }

    /// Records that the first `n` unsent bytes (at most `MAX_FRAME`) were handed to the
    /// kernel.
    pub fn set_in_flight(&mut self, n: usize) {
        debug_assert!(n <= MAX_FRAME);
        self.in_flight = to_u32(n.min(self.queued));
    }

    /// Settles the bytes in flight, of which the kernel reports `sent` as sent: those leave
    /// the outbox, the rest become plain unsent bytes again. Returns (bytes, frames)
    /// completed. After [`Outbox::clear`] nothing is in flight, so a late report is a no-op.
    pub fn complete_in_flight(&mut self, sent: usize) -> (usize, usize) {
        let sent = sent.min(self.in_flight());
        self.in_flight = 0;
        (sent, self.advance(sent))
    }

    /// Marks `n` bytes as written; returns how many frames were completed.
    pub fn advance(&mut self, mut n: usize) -> usize {
        debug_assert!(n <= self.queued);
        n = n.min(self.queued);
        self.queued -= n;
        self.in_flight = to_u32(self.in_flight().saturating_sub(n));
        let mut completed = 0;
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.head_offset as usize;
            if n < left {
                self.head_offset += to_u32(n);
                break;
            }
            n -= left;
            self.frames.pop_front();
            self.head_offset = 0;
            completed += 1;
        }
        completed
    }

    /// Drops every frame not yet started; a frame partly written or in flight is kept so
    /// that the stream stays well-formed. Returns the number of frames dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        // Bytes of the kept frames, counted from the start of the first: everything written
        // or in flight must stay covered.
        let started = self.head_offset as usize + self.in_flight();
        let mut start = 0;
        let keep = self
            .frames
            .iter()
            .take_while(|f| {
                let touched = start < started;
                start += f.len();
                touched
            })
            .count();
        let dropped = self.frames.len() - keep;
        self.frames.truncate(keep);
        // A non-zero head offset means the first frame was started, so it is kept.
        let kept: usize = self.frames.iter().map(|f| f.len()).sum();
        self.queued = kept - (self.head_offset as usize).min(kept);
        dropped
    }

    /// Drops everything (the transport is gone), including the record of bytes in flight.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.head_offset = 0;
        self.queued = 0;
        self.in_flight = 0;
    }
}

/// A byte count below `MAX_FRAME` (an offset into a frame, bytes in flight) as stored.
fn to_u32(n: usize) -> u32 {
    debug_assert!(n <= MAX_FRAME);
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection holds one.
    #[test]
    fn an_outbox_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Outbox>(), 40);
    }

    #[test]
    fn an_emptied_outbox_holds_no_buffer() {
        let mut outbox = Outbox::default();
        outbox.push(frame(b"one"));
        assert!(outbox.frames.rest.is_none(), "one frame needs no queue");
        for f in [&b"two"[..], b"three", b"four"] {
            outbox.push(frame(f));
        }
        assert_eq!(
            outbox.slices().collect::<Vec<_>>(),
            [&b"one"[..], b"two", b"three", b"four"]
        );
        assert_eq!(outbox.advance(3 + 3 + 5), 3);
        assert_eq!(outbox.slices().collect::<Vec<_>>(), [&b"four"[..]]);
        assert!(
            outbox.frames.rest.is_none(),
            "the burst's queue is given back"
        );
        outbox.push(frame(b"five"));
        assert_eq!(outbox.drop_unstarted(), 2);
        assert!(outbox.is_empty() && outbox.frames.rest.is_none());
    }

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

    #[test]
    fn drop_unstarted_keeps_every_frame_in_flight() {
        let mut o = Outbox::default();
        for f in [&b"abc"[..], b"de", b"fgh", b"ij"] {
            o.push(frame(f));
        }
        o.advance(1);
        // The kernel has "bcdef" (reaching one byte into "fgh"); "ij" is unstarted.
        o.set_in_flight(5);
        assert_eq!(o.drop_unstarted(), 1);
        assert_eq!(contents(&o), b"bcdefgh");
        assert_eq!(o.queued_bytes(), 7);
        assert_eq!(o.in_flight(), 5);
        // A short completion: 3 of the 5 went out; the rest is unsent again.
        assert_eq!(o.complete_in_flight(3), (3, 1));
        assert_eq!(contents(&o), b"efgh");
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.complete_in_flight(4), (0, 0), "nothing was in flight");
    }

    #[test]
    fn in_flight_ending_on_a_frame_boundary() {
        let mut o = Outbox::default();
        for f in [&b"abc"[..], b"de", b"fgh"] {
            o.push(frame(f));
        }
        o.set_in_flight(5);
        assert_eq!(o.drop_unstarted(), 1);
        assert_eq!(contents(&o), b"abcde");
        assert_eq!(o.complete_in_flight(5), (5, 2));
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn clear_forgets_bytes_in_flight() {
        let mut o = Outbox::default();
        o.push(frame(b"abcdef"));
        o.set_in_flight(6);
        o.clear();
        o.push(frame(b"xyz"));
        // The late completion of the cleared send must not eat the new frame.
        assert_eq!(o.complete_in_flight(6), (0, 0));
        assert_eq!(contents(&o), b"xyz");
        assert_eq!(o.queued_bytes(), 3);
    }

    #[test]
    fn in_flight_never_exceeds_queued() {
        let mut o = Outbox::default();
        o.push(frame(b"ab"));
        o.set_in_flight(10);
        assert_eq!(o.in_flight(), 2);
        assert_eq!(o.complete_in_flight(100), (2, 1));
        assert!(o.is_empty());
    }

    #[test]
    fn pending_starts_at_the_write_offset() {
        let mut o = Outbox::default();
        o.push(frame(b"abc"));
        o.push(frame(b"de"));
        o.advance(2);
        let offsets: Vec<usize> = o.pending().map(|(_, off)| off).collect();
        assert_eq!(offsets, [2, 0]);
    }
}
