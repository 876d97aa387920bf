//! RFC 6455 WebSocket, sans-IO: the upgrade handshake, the frame codec, masking, incremental
//! UTF-8 validation, close codes, the per-connection state machine, and permessage-deflate
//! (RFC 7692).
//!
//! Owns: every rule of the protocol and what the peer is told when it breaks one.
//! Must never: make a syscall, read the clock (time is passed in), spawn a thread, hold a
//! socket, or panic on any input. `scripts/check-layers.sh` enforces the first three.

pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
/// Property checks for the fuzz targets and tests; not part of the API (feature `fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod mask;
pub mod out_message;
pub mod utf8;

pub use close::CloseCode;
pub use connection::{Connection, Event, Finish, Limits, MAX_MESSAGE_LIMIT, Message, MessageKind};
pub use error::{HandshakeError, ProtocolError};
pub use frame::{Opcode, SharedFrame};
pub use handshake::{Request, Upgrade};
pub use out_message::OutMessage;

#[cfg(test)]
mod tests;
