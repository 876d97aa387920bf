//! A provided-buffer ring: receive buffers the kernel picks from, so that a connection
//! waiting for input holds no buffer of its own.
//!
//! Owns: the ring of buffer descriptors shared with the kernel and the buffer memory, both
//! raw allocations that never move. A buffer belongs to the kernel while its descriptor is
//! in the ring, and to us from the completion that names it until [`BufRing::recycle`].
//! Must never: hand out a buffer the kernel may be writing, or free the memory while the
//! ring is registered with a live io_uring (the reactor drops its ring first).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The kernel requires the descriptor ring to be page-aligned.
const RING_ALIGN: usize = 4096;

pub(super) struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    memory: NonNull<u8>,
    memory_layout: Layout,
    count: u16,
    buf_size: usize,
    /// Our copy of the tail: descriptors published so far (wrapping).
    tail: u16,
}

// SAFETY: the ring owns both allocations outright; the raw pointers are never shared with
// another thread (the kernel side belongs to the owning reactor's ring, which moves with it).
unsafe impl Send for BufRing {}

impl BufRing {
    /// `count` buffers of `buf_size` bytes, all handed to the kernel. `count` must be a power
    /// of two (the kernel masks ring indexes).
    pub(super) fn new(count: u16, buf_size: usize) -> io::Result<BufRing> {
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        if !count.is_power_of_two() || buf_size == 0 || buf_size > u32::MAX as usize {
            return Err(invalid());
        }
        let entries_layout =
            Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), RING_ALIGN)
                .map_err(|_| invalid())?;
        let memory_layout =
            Layout::from_size_align(usize::from(count) * buf_size, 64).map_err(|_| invalid())?;
        // SAFETY: both layouts have a non-zero size (count >= 1, buf_size >= 1).
        let (entries, memory) =
            unsafe { (alloc_zeroed(entries_layout), alloc_zeroed(memory_layout)) };
        let (Some(entries), Some(memory)) = (NonNull::new(entries), NonNull::new(memory)) else {
            // SAFETY: each pointer that is non-null came from alloc_zeroed with its layout.
            unsafe {
                if !entries.is_null() {
                    dealloc(entries, entries_layout);
                }
                if !memory.is_null() {
                    dealloc(memory, memory_layout);
                }
            }
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut ring = BufRing {
            entries: entries.cast(),
            entries_layout,
            memory,
            memory_layout,
            count,
            buf_size,
            tail: 0,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// Registers the ring as buffer group `group` of `ring`.
    pub(super) fn register(&self, ring: &IoUring, group: u16) -> io::Result<()> {
        // SAFETY: the descriptor memory is page-aligned, holds `count` entries, and stays
        // allocated until `self` is dropped, which the owner does only after the ring that
        // registered it (the reactor's field order, the probe's explicit drops).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                group,
                0,
            )
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion has just handed to us.
    /// `None` if the completion names a buffer or length we never provided.
    pub(super) fn filled(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.count || len > self.buf_size {
            return None;
        }
        // SAFETY: buffer `bid` lies inside the allocation; the kernel filled it and gave it
        // back with the completion, and it is not published again until `recycle(bid)`,
        // which needs `&mut self` and so cannot happen while this borrow lives.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.memory.as_ptr().add(usize::from(bid) * self.buf_size),
                len,
            )
        })
    }

    /// Hands buffer `bid` back to the kernel.
    pub(super) fn recycle(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, so the entry is inside the descriptor allocation; the
        // kernel reads only entries between its head and the published tail, and this one
        // is beyond the tail until the store below.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(index);
            entry.set_addr(self.memory.as_ptr().add(usize::from(bid) * self.buf_size) as u64);
            entry.set_len(self.buf_size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lies in the first descriptor, inside the allocation, and is
        // only ever accessed atomically (by us here, by the kernel with acquire loads).
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    pub(super) fn buf_size(&self) -> usize {
        self.buf_size
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both pointers came from alloc_zeroed with these layouts; the owner has
        // dropped (or leaked) the io_uring that could still use them.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            dealloc(self.memory.as_ptr(), self.memory_layout);
        }
    }
}
