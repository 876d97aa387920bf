//! Validated member and room names.
//!
//! The alphabets are narrow on purpose: no `:` or leading/trailing space in a name means no
//! member can make a message look like a server notice or another member's line.

use std::fmt;
use std::sync::Arc;

use crate::ws::HandshakeError;

const MAX_NAME_CHARS: usize = 32;
const MAX_ROOM_CHARS: usize = 64;

/// A member's display name: 1..=32 letters, digits, spaces, `_`, `.`, `-`, not starting or
/// ending with a space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(Arc<str>);

/// Why a name was refused (shown to the user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name has 1 to {MAX_NAME_CHARS} characters")]
    Length,
    #[error("a name may hold only letters, digits, spaces, '_', '.' and '-'")]
    Character,
    #[error("a name may not start or end with a space")]
    OuterSpace,
}

impl Name {
    pub fn parse(s: &str) -> Result<Name, NameError> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(NameError::Length);
        }
        if !s
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '.' | '-'))
        {
            return Err(NameError::Character);
        }
        if s.starts_with(' ') || s.ends_with(' ') {
            return Err(NameError::OuterSpace);
        }
        Ok(Name(s.into()))
    }

    /// The name given to a member who chose none: `User <client port>`.
    pub fn default_for_port(port: u16) -> Name {
        Name(format!("User {port}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room name: 1..=64 characters of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    pub fn parse(s: &str) -> Result<RoomName, HandshakeError> {
        let valid = (1..=MAX_ROOM_CHARS).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(RoomName(s.into()))
        } else {
            Err(HandshakeError::InvalidRoom(format!(
                "{s:?}: 1 to {MAX_ROOM_CHARS} characters of A-Z a-z 0-9 _ . -"
            )))
        }
    }

    /// The room joined through `/` and `/chat`.
    pub fn lobby() -> RoomName {
        RoomName("lobby".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "Ann Lee", "x_y.z-1", "Zoë", &"n".repeat(32)] {
            assert!(Name::parse(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(Name::parse(""), Err(NameError::Length));
        assert_eq!(Name::parse(&"n".repeat(33)), Err(NameError::Length));
        assert_eq!(Name::parse("bob says: hi"), Err(NameError::Character));
        assert_eq!(Name::parse("tab\there"), Err(NameError::Character));
        assert_eq!(Name::parse(" bob"), Err(NameError::OuterSpace));
        assert_eq!(Name::parse("bob "), Err(NameError::OuterSpace));
        assert_eq!(Name::default_for_port(5123).as_str(), "User 5123");
    }

    #[test]
    fn rooms() {
        for ok in ["lobby", "a", "room-1.b_c", &"r".repeat(64)] {
            assert!(RoomName::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a b", "ü", "a/b", &"r".repeat(65)] {
            assert_eq!(RoomName::parse(bad).unwrap_err().status(), 400, "{bad:?}");
        }
    }
}
