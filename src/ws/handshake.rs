//! The HTTP/1.1 side: the request head, the upgrade checks of RFC 6455 4.2.1, the 101
//! response, and plain responses (pages, errors).
//!
//! A request is a WebSocket upgrade attempt when it carries an `Upgrade` header; it is then
//! held to every rule of 4.2.1 and gets a status with a reason when it breaks one. Requests
//! without `Upgrade` are plain HTTP, answered once and closed (`Connection: close`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use super::deflate::{ExtensionOffer, parse_extensions};
use super::error::HandshakeError;

/// The largest request head we buffer (431 beyond it).
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Headers parsed per request (431 beyond it).
pub const MAX_HEADERS: usize = 64;
/// RFC 6455 1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const KEY_BYTES: usize = 16;

/// A parsed and validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path without the query, e.g. `/chat/lobby`.
    pub path: String,
    /// The raw query after `?`, if any (still percent-encoded).
    pub query: Option<String>,
    /// `Some` when the request asks for a WebSocket upgrade (and passed every check).
    pub upgrade: Option<Upgrade>,
}

/// The parts of a valid upgrade request the server needs afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Key`, already checked to be base64 of 16 bytes.
    pub key: String,
    /// `Origin`, when the client sent one (browsers always do).
    pub origin: Option<String>,
}

/// Finds the end of a request head (`\r\n\r\n`) in `buf`, scanning from `from` (the caller
/// remembers how far it looked, so a head trickling in byte by byte is scanned once).
/// Returns the head length including the blank line.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|pos| start + pos + 4)
}

/// Parses and validates a complete request head.
pub fn parse_request(head: &[u8]) -> Result<Request, HandshakeError> {
    parse_request_with_extensions(head).map(|(request, _)| request)
}

/// Like `parse_request`, and also returns every `Sec-WebSocket-Extensions` offer of an
/// upgrade, in order (syntax-checked: a broken list is a 400; which offer is taken, if any,
/// is decided at `Connection::accept_with_deflate`).
pub fn parse_request_with_extensions(
    head: &[u8],
) -> Result<(Request, Vec<ExtensionOffer>), HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HandshakeError::Malformed("incomplete request head".into()));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders { limit: MAX_HEADERS });
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    }
    // Complete guarantees method, path and version are present.
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    let http11 = req.version == Some(1);
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed(method.to_string()));
    }
    if http11 && header("Host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    let Some(upgrade) = header("Upgrade") else {
        let request = Request {
            path,
            query,
            upgrade: None,
        };
        return Ok((request, Vec::new()));
    };
    if !http11 {
        return Err(HandshakeError::NotHttp11);
    }
    if !has_token(upgrade, "websocket") {
        return Err(HandshakeError::UpgradeNotWebSocket);
    }
    if !header("Connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if header("Sec-WebSocket-Version").map(trim_ows) != Some(b"13".as_slice()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = header("Sec-WebSocket-Key")
        .map(trim_ows)
        .filter(|k| BASE64.decode(k).is_ok_and(|raw| raw.len() == KEY_BYTES))
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or(HandshakeError::InvalidKey)?;
    let origin = header("Origin").map(|v| String::from_utf8_lossy(trim_ows(v)).into_owned());
    // The header may be repeated; its values form one list (RFC 6455 9.1).
    let extension_values: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|h| h.value)
        .collect();
    let extensions =
        parse_extensions(&extension_values).map_err(|_| HandshakeError::InvalidExtensions)?;
    let request = Request {
        path,
        query,
        upgrade: Some(Upgrade {
            key: key.to_string(),
            origin,
        }),
    };
    Ok((request, extensions))
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
}

/// Strips optional whitespace (spaces and tabs) around a header value or list element.
fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 4.2.2).
pub fn accept_key(key: &str) -> String {
    String::from_utf8_lossy(&accept_key_bytes(key)).into_owned()
}

/// `Sec-WebSocket-Accept` for `key` as bytes: base64 of a SHA-1 digest is always 28.
fn accept_key_bytes(key: &str) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    let mut out = [0u8; 28];
    // 20 bytes encode to exactly 28, so the buffer always fits.
    let _ = BASE64.encode_slice(sha.finalize(), &mut out);
    out
}

/// The 101 response completing the handshake, with the server's `extra_headers` (names and
/// values the server chose, never the peer; `Sec-WebSocket-Extensions` among them when an
/// extension was agreed). No subprotocol is ever agreed. Built by appending into one buffer
/// of the right size: every connection pays for this once, and `format!` machinery cost as
/// much as the rest of the response (callgrind, 1,450 of 16,800 instructions a handshake).
pub fn switching_protocols(key: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    let extra: usize = extra_headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(HEAD.len() + 28 + 4 + extra);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(&accept_key_bytes(key));
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra_headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A complete plain HTTP response that closes the connection afterwards.
pub fn http_response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The error response for a failed handshake: its status, required headers and the reason.
pub fn error_response(err: &HandshakeError) -> Vec<u8> {
    let body = format!("{} {}\n{err}\n", err.status(), reason_phrase(err.status()));
    http_response(
        err.status(),
        err.extra_headers(),
        "text/plain; charset=utf-8",
        body.as_bytes(),
    )
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade_head(extra: &str) -> String {
        format!(
            "GET /chat?name=ann HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn rfc_sample_key_accept_value() {
        // RFC 6455 1.3.
        assert_eq!(accept_key(SAMPLE_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn the_101_carries_the_servers_extra_headers_before_the_blank_line() {
        let response = switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", &[("X-Wschat-Thread", "3")]);
        let text = String::from_utf8(response).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\nX-Wschat-Thread: 3\r\n\r\n"), "{text}");
    }

    #[test]
    fn valid_upgrade() {
        let req = parse_request(upgrade_head("Origin: http://example.com\r\n").as_bytes()).unwrap();
        assert_eq!(req.path, "/chat");
        assert_eq!(req.query.as_deref(), Some("name=ann"));
        let up = req.upgrade.unwrap();
        assert_eq!(up.key, SAMPLE_KEY);
        assert_eq!(up.origin.as_deref(), Some("http://example.com"));
    }

    #[test]
    fn header_tokens_are_lists_and_case_insensitive() {
        let head = upgrade_head("")
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive,  UPGRADE ");
        assert!(parse_request(head.as_bytes()).unwrap().upgrade.is_some());
    }

    #[test]
    fn plain_request_has_no_upgrade() {
        let req = parse_request(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(req.path, "/stats");
        assert!(req.upgrade.is_none());
        // HTTP/1.0 may omit Host.
        assert!(parse_request(b"GET / HTTP/1.0\r\n\r\n").is_ok());
    }

    #[test]
    fn upgrade_violations_map_to_statuses() {
        let base = upgrade_head("");
        let cases: Vec<(String, u16)> = vec![
            (base.replace("GET", "POST"), 405),
            (base.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (base.replace("Host: server.example.com\r\n", ""), 400),
            (base.replace("Upgrade: websocket", "Upgrade: h2c"), 400),
            (
                base.replace("Connection: Upgrade", "Connection: keep-alive"),
                400,
            ),
            (
                base.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                426,
            ),
            (base.replace("Sec-WebSocket-Version: 13\r\n", ""), 426),
            (base.replace(SAMPLE_KEY, "dG9vIHNob3J0"), 400),
            (base.replace(SAMPLE_KEY, "!!!not base64!!!!!!!!!!="), 400),
            (
                base.replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), ""),
                400,
            ),
            ("GET / HTTP/1.1\r\nHost x\r\n\r\n".to_string(), 400),
        ];
        for (head, status) in cases {
            let err = parse_request(head.as_bytes()).unwrap_err();
            assert_eq!(err.status(), status, "{head:?} -> {err}");
        }
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS {
            head.push_str(&format!("X-{i}: y\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(parse_request(head.as_bytes()).unwrap_err().status(), 431);
    }

    #[test]
    fn head_end_is_found_across_chunks() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nextra";
        assert_eq!(find_head_end(head, 0), Some(head.len() - 5));
        for seen in 0..head.len() - 5 {
            assert_eq!(
                find_head_end(head, seen),
                Some(head.len() - 5),
                "from {seen}"
            );
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
    }

    #[test]
    fn version_error_names_the_supported_version() {
        let resp = error_response(&HandshakeError::UnsupportedVersion);
        let text = String::from_utf8(resp).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }
}
