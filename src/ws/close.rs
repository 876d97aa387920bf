//! Close codes (RFC 6455 7.4) and the Close frame payload.

use super::error::ProtocolError;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// Reported locally when a Close frame carried no code; never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Reported locally when the transport ended without a Close frame; never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);

    /// Whether an endpoint may put this code in a Close frame. 1000-1003 and 1007-1014 are
    /// defined or registered with IANA; 1004 is reserved, 1005/1006/1015 are local-only
    /// indications; 3000-3999 are registered for libraries and 4000-4999 private.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// The parsed payload of a Close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosePayload {
    /// `None` for an empty payload (reported as 1005 locally).
    pub code: Option<CloseCode>,
}

/// Validates a Close frame's payload: empty, or a sendable code followed by a UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<ClosePayload, ProtocolError> {
    match payload {
        [] => Ok(ClosePayload { code: None }),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            if simdutf8::basic::from_utf8(reason).is_err() {
                return Err(ProtocolError::InvalidCloseReason);
            }
            Ok(ClosePayload { code: Some(code) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payload_has_no_code() {
        assert_eq!(parse_close_payload(&[]), Ok(ClosePayload { code: None }));
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::CloseFrameTooShort)
        );
    }

    #[test]
    fn sendable_codes_are_accepted() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let p = code.to_be_bytes();
            assert_eq!(
                parse_close_payload(&p),
                Ok(ClosePayload {
                    code: Some(CloseCode(code))
                }),
                "code {code}"
            );
        }
    }

    #[test]
    fn reserved_and_local_codes_are_rejected() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let p = code.to_be_bytes();
            assert_eq!(
                parse_close_payload(&p),
                Err(ProtocolError::InvalidCloseCode(code)),
                "code {code}"
            );
        }
    }

    #[test]
    fn reason_must_be_utf8() {
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, b'o', b'k']),
            Ok(ClosePayload {
                code: Some(CloseCode::NORMAL)
            })
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, 0xce, 0xba, 0xff]),
            Err(ProtocolError::InvalidCloseReason)
        );
    }
}
