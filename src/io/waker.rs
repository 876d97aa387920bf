//! Cross-thread wake-up: an eventfd that a reactor keeps registered.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use super::sys::syscall;

/// Interrupts a reactor's `poll` from any thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    /// A new non-blocking eventfd, to be handed to the reactor it will wake.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers.
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd: Arc::new(fd) })
    }

    /// Makes the owning reactor's `poll` return with `Event::Wake`.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. EAGAIN (counter at its
        // maximum) means a wake-up is already pending, so the result can be ignored.
        let _ = syscall!(write(self.fd.as_raw_fd(), (&raw const one).cast(), 8));
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Resets the counter so that the next `wake` is a new edge; true if a `wake` was
    /// pending (a reactor that does not wait on the fd, a test's, asks this way).
    pub(crate) fn drain(&self) -> bool {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        syscall!(read(self.fd.as_raw_fd(), (&raw mut value).cast(), 8)).is_ok()
    }
}
