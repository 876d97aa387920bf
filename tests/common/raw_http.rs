//! Raw HTTP: request heads built by hand (bad ones included) and responses read back byte
//! by byte, so that a test sees exactly what the server sent.
//!
//! Owns: [`HttpResponse`], the raw upgrade ([`Server::raw_ws`], RFC 6455's sample key) and
//! plain requests on [`Server`]. Must never: consume a byte past a response head (what
//! follows a 101 is the WebSocket stream), or read without a bound.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::server::Server;
use super::{SAMPLE_ACCEPT, SAMPLE_KEY};

impl Server {
    /// Raw WebSocket handshake (RFC sample key) on a plain TcpStream; checks
    /// the 101 and its accept value and returns the stream positioned right
    /// after the response head.
    pub fn raw_ws(&self, path: &str) -> TcpStream {
        let mut s = self.tcp();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.addr()
        );
        s.write_all(req.as_bytes()).unwrap();
        let resp = read_http_head(&mut s).expect("read 101 response head");
        assert_eq!(resp.status, 101, "raw handshake to {path}: {resp:?}");
        assert_eq!(
            resp.header("sec-websocket-accept"),
            Some(SAMPLE_ACCEPT),
            "{resp:?}"
        );
        s
    }

    /// Sends a raw HTTP request and reads the response (head, plus body by
    /// Content-Length or until EOF).
    pub fn http_raw(&self, request: &[u8]) -> HttpResponse {
        let mut s = self.tcp();
        // The server may answer (and close) before it read everything, e.g.
        // 431 for an oversized head: a failed write is not a test failure.
        let _ = s.write_all(request);
        let mut resp = read_http_head(&mut s)
            .unwrap_or_else(|e| panic!("no HTTP response to {:?}: {e}", preview(request)));
        read_http_body(&mut s, &mut resp);
        resp
    }

    /// `GET path` as a plain (non-upgrade) HTTP/1.1 request.
    pub fn get(&self, path: &str) -> HttpResponse {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr()
        );
        self.http_raw(req.as_bytes())
    }
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    if b.len() > 200 {
        format!("{s}...({} bytes)", b.len())
    } else {
        s
    }
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed). Any byte
/// stream will do: a TcpStream, or a TLS stream over one.
pub fn read_http_head(s: &mut impl Read) -> io::Result<HttpResponse> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("response head too large"));
        }
        match s.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("EOF after {:?}", String::from_utf8_lossy(&head)),
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{e} after {:?}", String::from_utf8_lossy(&head)),
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::other(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(HttpResponse {
        status,
        status_line,
        headers,
        body: Vec::new(),
    })
}

/// Reads the body: Content-Length bytes if given, else until EOF/reset (bounded
/// by the read timeout). A reset after a complete head is tolerated.
pub fn read_http_body(s: &mut TcpStream, resp: &mut HttpResponse) {
    if (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304 {
        return; // no body; for 101 what follows is the WebSocket stream
    }
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)
            .unwrap_or_else(|e| panic!("reading {len}-byte body of {}: {e}", resp.status_line));
        resp.body = body;
    } else {
        let mut body = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading body of {}: {e}", resp.status_line),
            }
        }
        resp.body = body;
    }
}

/// A handshake request head built from header lines (each without CRLF).
/// The head of a WebSocket upgrade of `path` (RFC 6455's sample key) with `extra` headers.
pub fn upgrade_head(addr: SocketAddr, path: &str, extra: &[&str]) -> Vec<u8> {
    let host = format!("Host: {addr}");
    let key = format!("Sec-WebSocket-Key: {SAMPLE_KEY}");
    let mut headers = vec![
        host.as_str(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        key.as_str(),
        "Sec-WebSocket-Version: 13",
    ];
    headers.extend_from_slice(extra);
    request_head(&format!("GET {path} HTTP/1.1"), &headers)
}

pub fn request_head(request_line: &str, headers: &[&str]) -> Vec<u8> {
    let mut s = String::new();
    s.push_str(request_line);
    s.push_str("\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}
