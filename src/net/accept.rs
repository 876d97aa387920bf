//! Taking one connection off a listener's accept queue, and what a failed accept means.
//!
//! Owns: the flags every accepted socket gets (non-blocking and close-on-exec, set by
//! accept4 itself) and the triage of accept(2) errors into "queue empty", "one connection
//! lost, go on" and "stop accepting for now". Must never: loop, count, or decide how long
//! to pause; the reactors (`io/`) own the accept loop and its budget, the shard the pause.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::SockRef;

/// Accepts one connection from `listener` with accept4(2), NONBLOCK|CLOEXEC set in the same
/// call (plain accept would need two more system calls, and a fork in between could leak
/// the descriptor). Returns the peer's address, or `0.0.0.0:0` when the kernel gives none
/// (a connection reset while it waited in the queue).
pub fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (socket, addr) =
        SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let peer = addr
        .as_socket()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok((socket.into(), peer))
}

/// What an accept(2) error says about the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// EAGAIN: the accept queue is empty. Not a failure; wait for the next readiness.
    WouldBlock,
    /// One connection died in the queue, or a signal interrupted the call (accept(2),
    /// "Error handling": Linux passes pending network errors of the new socket on as accept
    /// errors). The next connection may be fine: accept on.
    Transient,
    /// The process or the system ran out of descriptors (EMFILE, ENFILE) or of memory
    /// (ENOBUFS, ENOMEM). Accepting again at once would fail again and spin: pause.
    OutOfResources,
    /// Anything else (EBADF, EINVAL, ENOTSOCK, ...): the listener itself is unusable.
    /// Handled like `OutOfResources` (pause and report), for the same reason.
    Listener,
}

impl AcceptError {
    /// Sorts an error returned by accept(2) or accept4(2) (or an io_uring accept).
    pub fn of(error: &io::Error) -> AcceptError {
        if error.kind() == io::ErrorKind::WouldBlock {
            return AcceptError::WouldBlock;
        }
        match error.raw_os_error() {
            Some(
                libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH,
            ) => AcceptError::Transient,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptError::OutOfResources
            }
            _ => AcceptError::Listener,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_what_they_say_about_the_listener() {
        let cases = [
            (libc::EAGAIN, AcceptError::WouldBlock),
            (libc::ECONNABORTED, AcceptError::Transient),
            (libc::EINTR, AcceptError::Transient),
            (libc::EPROTO, AcceptError::Transient),
            (libc::EPERM, AcceptError::Transient),
            (libc::ENETUNREACH, AcceptError::Transient),
            (libc::EMFILE, AcceptError::OutOfResources),
            (libc::ENFILE, AcceptError::OutOfResources),
            (libc::ENOBUFS, AcceptError::OutOfResources),
            (libc::ENOMEM, AcceptError::OutOfResources),
            (libc::EBADF, AcceptError::Listener),
            (libc::EINVAL, AcceptError::Listener),
            (libc::ENOTSOCK, AcceptError::Listener),
        ];
        for (errno, expected) in cases {
            let error = io::Error::from_raw_os_error(errno);
            assert_eq!(AcceptError::of(&error), expected, "{error}");
        }
        let synthetic = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(AcceptError::of(&synthetic), AcceptError::WouldBlock);
    }
}
