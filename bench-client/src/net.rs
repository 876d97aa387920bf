//! Client sockets: URL parsing, non-blocking connect from a chosen source address, and the
//! classification and counting of connect errors.
//!
//! Owns: everything between a `ws://` or `wss://` URL and a connecting mio `TcpStream` (TLS
//! itself is transport.rs).
//! Must never: block (connect returns at once; completion is a WRITABLE event).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};
use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::counters::counter_set;

/// A parsed `ws://host:port/path` or `wss://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `host:port` as sent in the Host header.
    pub host: String,
    /// The host alone: the name a `wss://` server's certificate must carry.
    pub hostname: String,
    pub addr: SocketAddr,
    /// The path (and query) part, `/` when absent.
    pub path: String,
    /// `wss://`: TLS between the socket and the WebSocket client.
    pub tls: bool,
}

pub fn parse_url(url: &str) -> anyhow::Result<WsUrl> {
    let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("ws://") {
        (rest, false, 80)
    } else if let Some(rest) = url.strip_prefix("wss://") {
        (rest, true, 443)
    } else {
        bail!("{url}: only ws:// and wss:// URLs are supported");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (hostname, with_port) = match authority
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
    {
        Some((name, _)) => (name.to_string(), authority.to_string()),
        None => (authority.to_string(), format!("{authority}:{default_port}")),
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} resolves to nothing"))?;
    Ok(WsUrl {
        host: with_port,
        hostname,
        addr,
        path: path.to_string(),
        tls,
    })
}

/// The source address of connection `index` when spreading over `source_ips` loopback
/// addresses (127.0.0.1 ..= 127.0.0.N): each (source, destination) pair has its own
/// ~28k ephemeral ports (see [`start_connect`]), so churn tests are not capped by one
/// pair's port range.
pub fn source_ip(index: usize, source_ips: u8) -> Option<Ipv4Addr> {
    (source_ips > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (index % source_ips as usize) as u8))
}

/// Starts a non-blocking connect (TCP_NODELAY set: the loader's messages are small and
/// Nagle would hold them back), optionally bound to `source` first.
///
/// A source address is bound with IP_BIND_ADDRESS_NO_PORT, so that the port is chosen by
/// connect(), for the whole 4-tuple: a plain bind(ip, 0) must pick a port free for every
/// destination, cannot reuse one in TIME_WAIT, and searches longer the more there are (the
/// third 50,000-handshake storm in a row fell to 685 handshakes/s, the loader's CPU per
/// handshake 85x its usual).
pub fn start_connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        bind_source(&socket, ip)?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Binds `socket` to `ip` and leaves its port for connect() to choose.
fn bind_source(socket: &Socket, ip: Ipv4Addr) -> io::Result<()> {
    bind_address_no_port(socket)?;
    socket.bind(&SockAddr::from(SocketAddr::new(ip.into(), 0)))
}

/// Sets IP_BIND_ADDRESS_NO_PORT (Linux 4.2+), which neither socket2 nor rustix wraps.
#[allow(unsafe_code)]
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the fd is an open socket owned by `socket` for the whole call; the option
    // value points to a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a connecting stream is now connected (`Ok(true)`), still connecting
/// (`Ok(false)`: a spurious event), or failed.
pub fn connect_finished(stream: &TcpStream) -> io::Result<bool> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why a connect or upgrade failed: each kind is a counter of [`ConnectErrors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    Refused,
    Reset,
    Timeout,
    /// EADDRNOTAVAIL: no ephemeral port left for this (source, destination) pair.
    NoPort,
    /// The server answered the upgrade with a status other than 101.
    Rejected,
    /// A 101 with a wrong accept key or an unparsable head.
    BadResponse,
    /// wss://: the TLS handshake failed (certificate refused, alert, not TLS at all).
    Tls,
    Other,
}

impl ConnectError {
    pub fn from_io(err: &io::Error) -> ConnectError {
        use io::ErrorKind as K;
        if crate::transport::is_tls_error(err) {
            return ConnectError::Tls;
        }
        match err.kind() {
            K::ConnectionRefused => ConnectError::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                ConnectError::Reset
            }
            K::TimedOut => ConnectError::Timeout,
            K::AddrNotAvailable => ConnectError::NoPort,
            _ => ConnectError::Other,
        }
    }
}

counter_set! {
    /// Failed connects and upgrades by kind, in the results of every run that connects
    /// (each kind listed, zero or not, so that every results file has the same counters).
    pub struct ConnectErrors {
        connect_refused,
        connect_reset,
        connect_timeout,
        connect_no_port,
        connect_rejected,
        connect_bad_response,
        connect_tls_error,
        connect_other_error,
    }
}

impl ConnectErrors {
    /// Counts one failure of kind `why`.
    pub fn count(&mut self, why: ConnectError) {
        let counter = match why {
            ConnectError::Refused => &mut self.connect_refused,
            ConnectError::Reset => &mut self.connect_reset,
            ConnectError::Timeout => &mut self.connect_timeout,
            ConnectError::NoPort => &mut self.connect_no_port,
            ConnectError::Rejected => &mut self.connect_rejected,
            ConnectError::BadResponse => &mut self.connect_bad_response,
            ConnectError::Tls => &mut self.connect_tls_error,
            ConnectError::Other => &mut self.connect_other_error,
        };
        *counter += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("ws://127.0.0.1:8080/echo").unwrap();
        assert_eq!(u.host, "127.0.0.1:8080");
        assert_eq!(u.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(u.path, "/echo");
        assert_eq!(u.hostname, "127.0.0.1");
        assert!(!u.tls);
        assert_eq!(parse_url("ws://127.0.0.1:9").unwrap().path, "/");
        let s = parse_url("wss://localhost:9/chat/a?name=b").unwrap();
        assert!(s.tls);
        assert_eq!(s.hostname, "localhost");
        assert_eq!(s.host, "localhost:9");
        assert_eq!(s.path, "/chat/a?name=b");
        let s = parse_url("wss://127.0.0.1").unwrap();
        assert_eq!((s.host.as_str(), s.addr.port()), ("127.0.0.1:443", 443));
        assert!(parse_url("http://127.0.0.1:9").is_err());
        assert!(parse_url("https://127.0.0.1:9").is_err());
    }

    #[test]
    fn source_ips_rotate_over_loopback() {
        assert_eq!(source_ip(5, 0), None);
        assert_eq!(source_ip(5, 1), None);
        assert_eq!(source_ip(0, 3), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source_ip(5, 3), Some(Ipv4Addr::new(127, 0, 0, 3)));
    }

    #[test]
    fn a_source_address_is_bound_without_a_port() {
        // The port is left to connect(), which picks it for the whole 4-tuple.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        bind_source(&socket, Ipv4Addr::new(127, 0, 0, 2)).unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(local, SocketAddr::from(([127, 0, 0, 2], 0)));
    }

    #[test]
    fn refused_connect_is_classified() {
        // Bind then drop a listener to find a port that nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = start_connect(addr, None).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let mut stream = stream;
        poll.registry()
            .register(&mut stream, mio::Token(0), mio::Interest::WRITABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(100)))
                .unwrap();
            match connect_finished(&stream) {
                Ok(false) if std::time::Instant::now() < deadline => continue,
                Err(e) => {
                    assert_eq!(ConnectError::from_io(&e), ConnectError::Refused);
                    break;
                }
                other => panic!("expected refusal, got {other:?}"),
            }
        }
    }
}
