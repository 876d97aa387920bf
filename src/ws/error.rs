//! What the peer sees when its input is wrong, decided in one place.
//!
//! `ProtocolError::close_code` and `HandshakeError::status` are the only mappings from a
//! failure to a wire code; everything else returns these typed errors. Tests assert the codes,
//! never the message text.

use thiserror::Error;

use super::close::CloseCode;

/// A violation of RFC 6455 framing or message rules by the peer. The connection is failed with
/// the close code that `close_code` returns.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("compressed message is not a valid deflate stream")]
    InvalidCompressedData,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("client frame is not masked")]
    UnmaskedFrame,
    #[error("server frame is masked")]
    MaskedFrame,
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    #[error("payload length not encoded in the minimal number of bytes")]
    NonMinimalLength,
    #[error("64-bit payload length with the most significant bit set")]
    LengthMsbSet,
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("message larger than the limit of {limit} bytes")]
    MessageTooBig { limit: usize },
    #[error("close frame with a one-byte payload")]
    CloseFrameTooShort,
    #[error("close code {0} is not allowed on the wire")]
    InvalidCloseCode(u16),
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    #[error("more than {limit} control frames in one read")]
    ControlFlood { limit: u32 },
    #[error("compressed input inflates beyond its budget")]
    InflateFlood,
}

impl ProtocolError {
    /// Whether this is a budget overrun (a flood) rather than a malformed frame or message.
    pub fn is_flood(self) -> bool {
        matches!(
            self,
            ProtocolError::ControlFlood { .. } | ProtocolError::InflateFlood
        )
    }

    /// The close code sent to the peer when failing the connection for this error.
    pub fn close_code(self) -> CloseCode {
        match self {
            // As for bad UTF-8: the payload does not fit the message's type (compressed).
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCloseReason
            | ProtocolError::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            // Well-formed, but more than a client needs: a budget the server enforces.
            ProtocolError::ControlFlood { .. } | ProtocolError::InflateFlood => {
                CloseCode::POLICY_VIOLATION
            }
            ProtocolError::ReservedBits
            | ProtocolError::ReservedOpcode(_)
            | ProtocolError::UnmaskedFrame
            | ProtocolError::MaskedFrame
            | ProtocolError::ControlFrameTooLong
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::NonMinimalLength
            | ProtocolError::LengthMsbSet
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::CloseFrameTooShort
            | ProtocolError::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why an HTTP request did not become a WebSocket connection (or a page). The response carries
/// `status()` and the error's text as a reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("request head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("more than {limit} request headers")]
    TooManyHeaders { limit: usize },
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("method {0} not allowed (only GET)")]
    MethodNotAllowed(String),
    #[error("a WebSocket upgrade needs HTTP/1.1")]
    NotHttp11,
    #[error("missing Host header")]
    MissingHost,
    #[error("Upgrade header does not name websocket")]
    UpgradeNotWebSocket,
    #[error("Connection header lacks the upgrade token")]
    MissingConnectionUpgrade,
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    UnsupportedVersion,
    #[error("Sec-WebSocket-Key must be the base64 encoding of 16 bytes")]
    InvalidKey,
    #[error("Sec-WebSocket-Extensions breaks the extension-list syntax of RFC 6455 9.1")]
    InvalidExtensions,
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("invalid room name: {0}")]
    InvalidRoom(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("server is at its connection limit")]
    OverCapacity,
    #[error("origin {0} is not allowed (see --allowed-origin)")]
    ForbiddenOrigin(String),
}

impl HandshakeError {
    /// The HTTP status of the error response.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 431,
            HandshakeError::MethodNotAllowed(_) => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::NotFound(_) => 404,
            HandshakeError::OverCapacity => 503,
            HandshakeError::ForbiddenOrigin(_) => 403,
            HandshakeError::Malformed(_)
            | HandshakeError::NotHttp11
            | HandshakeError::MissingHost
            | HandshakeError::UpgradeNotWebSocket
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::InvalidKey
            | HandshakeError::InvalidExtensions
            | HandshakeError::InvalidRoom(_)
            | HandshakeError::InvalidName(_) => 400,
        }
    }

    /// Headers the status requires besides the usual ones (RFC 6455 4.4: a 426 names the
    /// versions we speak; RFC 9110: a 405 names the allowed methods).
    pub fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            HandshakeError::MethodNotAllowed(_) => &[("Allow", "GET")],
            _ => &[],
        }
    }
}
