//! The accept loop both backends run on a listener they were woken for (epoll always;
//! io_uring for a listener every loop shares, `AcceptWakeup::All`): accept until the queue is
//! empty, a resource error, or the budget, reporting each connection as an [`Event`].
//!
//! Owns: the accept budget per wake-up and how a burst ended. Must never: decide what an
//! accept error means (`net::AcceptError` does), count wake-ups (each backend counts in its
//! own terms), or pause a listener itself (the caller does, on `Burst::Failed`).

use std::net::TcpListener;

use super::{Event, ListenerId};
use crate::net::{AcceptError, accept_nonblocking};

/// Accepts per listener per wake-up: enough to empty a burst in one go, small enough that a
/// connect storm cannot starve the connections already being served.
const ACCEPTS_PER_WAKEUP: usize = 64;

/// How an accept burst ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Burst {
    /// EAGAIN: the accept queue is empty.
    Drained { accepted: usize },
    /// The budget ran out with connections perhaps still queued: come back without an edge.
    Budget,
    /// Out of descriptors or memory, or the listener broke: reported as
    /// [`Event::AcceptFailed`]; the caller pauses the listener.
    Failed,
}

/// Accepts from `listener` until EAGAIN, an error that stops accepting, or
/// `ACCEPTS_PER_WAKEUP` connections, reporting each as an event.
pub(super) fn accept_burst(
    listener: &TcpListener,
    id: ListenerId,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Burst {
    for accepted in 0..ACCEPTS_PER_WAKEUP {
        match accept_nonblocking(listener) {
            Ok((stream, peer)) => on_event(Event::Accepted {
                listener: id,
                stream,
                peer,
            }),
            Err(error) => match AcceptError::of(&error) {
                AcceptError::WouldBlock => return Burst::Drained { accepted },
                AcceptError::Transient => {}
                AcceptError::OutOfResources | AcceptError::Listener => {
                    on_event(Event::AcceptFailed {
                        listener: id,
                        error,
                    });
                    return Burst::Failed;
                }
            },
        }
    }
    Burst::Budget
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::RwLockReadGuard;

    use super::*;

    /// Keeps the tests that count this process's descriptors out while we open sockets.
    fn hold_descriptors() -> RwLockReadGuard<'static, ()> {
        crate::io::DESCRIPTORS
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn listener() -> TcpListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    }

    /// What one burst reported: the connections accepted (with their peers) and the number
    /// of failures.
    fn burst(listener: &TcpListener) -> (Burst, Vec<(TcpStream, SocketAddr)>, usize) {
        let (mut accepted, mut failed) = (Vec::new(), 0);
        let end = accept_burst(listener, ListenerId(3), &mut |event| match event {
            Event::Accepted {
                listener,
                stream,
                peer,
            } => {
                assert_eq!(listener, ListenerId(3));
                accepted.push((stream, peer));
            }
            Event::AcceptFailed { .. } => failed += 1,
            other => panic!("unexpected {other:?}"),
        });
        (end, accepted, failed)
    }

    /// Waits until `listener`'s accept queue holds `n` connections: a connect can return
    /// before the kernel has queued the connection on the listening side, when that work
    /// was deferred to a softirq thread. For a listening socket, /proc/net/tcp's rx_queue
    /// column is the accept queue's length.
    fn wait_queued(listener: &TcpListener, n: usize) {
        let port = listener.local_addr().unwrap().port();
        let local = format!("0100007F:{port:04X}");
        let queued = || {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
            table.lines().find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (_, rx) = f.get(4)?.split_once(':')?;
                (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
                    .then(|| usize::from_str_radix(rx, 16).ok())?
            })
        };
        for _ in 0..10_000 {
            if queued() == Some(n) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the accept queue never held {n}: {:?}", queued());
    }

    /// The file status flags of one of our descriptors, from /proc (octal, as open(2)'s).
    fn fd_flags(fd: i32) -> u32 {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let flags = info
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .unwrap();
        u32::from_str_radix(flags.trim(), 8).unwrap()
    }

    #[test]
    fn accepted_sockets_are_nonblocking_and_close_on_exec_with_their_peer() {
        let _fds = hold_descriptors();
        let listener = listener();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        wait_queued(&listener, 1);
        let (end, mut accepted, failed) = burst(&listener);
        assert_eq!(
            (end, accepted.len(), failed),
            (Burst::Drained { accepted: 1 }, 1, 0)
        );
        let (mut stream, peer) = accepted.pop().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let flags = fd_flags(stream.as_raw_fd());
        assert_ne!(flags & libc::O_NONBLOCK as u32, 0, "flags {flags:o}");
        assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "flags {flags:o}");
        let error = stream.read(&mut [0; 1]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_burst_drains_the_queue_then_stops_at_the_budget() {
        let _fds = hold_descriptors();
        let listener = listener();
        let addr = listener.local_addr().unwrap();
        let counts =
            |(end, accepted, failed): (Burst, Vec<_>, usize)| (end, accepted.len(), failed);
        assert_eq!(
            counts(burst(&listener)),
            (Burst::Drained { accepted: 0 }, 0, 0)
        );
        let mut clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        wait_queued(&listener, 3);
        assert_eq!(
            counts(burst(&listener)),
            (Burst::Drained { accepted: 3 }, 3, 0)
        );
        let more = ACCEPTS_PER_WAKEUP + 1;
        clients.extend((0..more).map(|_| TcpStream::connect(addr).unwrap()));
        wait_queued(&listener, more);
        assert_eq!(
            counts(burst(&listener)),
            (Burst::Budget, ACCEPTS_PER_WAKEUP, 0)
        );
        assert_eq!(
            counts(burst(&listener)),
            (Burst::Drained { accepted: 1 }, 1, 0)
        );
    }
}
