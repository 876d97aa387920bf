//! The loader's clock and its sub-millisecond wake-up timer.
//!
//! Owns: reading CLOCK_MONOTONIC as nanoseconds, and a timerfd armed at an absolute
//! CLOCK_MONOTONIC deadline. Every timestamp in a payload, every schedule and every latency is
//! in this one clock: all senders and receivers live in this process, so arrival minus
//! scheduled time is meaningful without any clock synchronisation.
//! Must never: mix in wall-clock time (it jumps), or round deadlines to milliseconds.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{
    ClockId, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, clock_gettime,
    timerfd_create, timerfd_settime,
};

pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Nanoseconds of CLOCK_MONOTONIC (a vDSO read, no syscall).
pub fn now_ns() -> u64 {
    let ts = clock_gettime(ClockId::Monotonic);
    // CLOCK_MONOTONIC never goes negative; u64 nanoseconds last 584 years of uptime.
    (ts.tv_sec as u64) * NANOS_PER_SEC + ts.tv_nsec as u64
}

/// A one-shot timerfd that an event loop registers once and re-arms at each new deadline.
///
/// Why not the poll timeout: `epoll_wait` takes whole milliseconds (mio rounds up), so an
/// open-loop send due in 300 µs would go out up to 1 ms late and the server would be
/// charged for the loader's sleep. A timerfd fires at the nanosecond deadline (plus the
/// kernel's timer slack, about 50 µs).
pub struct DeadlineTimer {
    fd: OwnedFd,
    armed_at: Option<u64>,
}

impl DeadlineTimer {
    pub fn new() -> io::Result<DeadlineTimer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        Ok(DeadlineTimer { fd, armed_at: None })
    }

    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.fd.as_raw_fd()),
            token,
            Interest::READABLE,
        )
    }

    /// Arms the timer to fire at `deadline_ns` (CLOCK_MONOTONIC); a deadline already in the
    /// past fires at once. Re-arming at the same deadline costs no syscall.
    pub fn arm(&mut self, deadline_ns: u64) -> io::Result<()> {
        if self.armed_at == Some(deadline_ns) {
            return Ok(());
        }
        // An all-zero it_value disarms a timerfd, so deadline 0 becomes 1 ns.
        let deadline_ns = deadline_ns.max(1);
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: (deadline_ns / NANOS_PER_SEC) as i64,
                tv_nsec: (deadline_ns % NANOS_PER_SEC) as i64,
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::ABSTIME, &spec)?;
        self.armed_at = Some(deadline_ns);
        Ok(())
    }

    /// Consumes the expiry count after the timer fired, so the next expiry is a new edge.
    pub fn acknowledge(&mut self) {
        let mut expirations = [0u8; 8];
        // EAGAIN (a spurious wake-up) is fine: nothing to consume.
        let _ = rustix::io::read(&self.fd, &mut expirations);
        self.armed_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }

    #[test]
    fn timer_fires_for_a_past_deadline() {
        let mut poll = mio::Poll::new().unwrap();
        let mut timer = DeadlineTimer::new().unwrap();
        timer.register(poll.registry(), Token(7)).unwrap();
        timer.arm(now_ns().saturating_sub(1)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == Token(7)));
        timer.acknowledge();
    }
}
