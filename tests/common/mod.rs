//! Shared helpers for the black-box integration tests.
//!
//! Everything here talks to the real `wschat` binary over loopback TCP, one concern a file:
//!
//! ```text
//!   server.rs      Setup (the test matrix's combination) and Server: start the binary,
//!                  kill it on drop, signals, its output
//!   client.rs      tungstenite as an independent client: connect, receive, join rooms
//!   stats.rs       GET /stats and its totals, polled until a counter gets somewhere
//!   raw_http.rs    hand-built HTTP heads and the responses read back byte by byte
//!   raw_frames.rs  hand-built WebSocket frames and the server's frames read back
//!   macros.rs      wstest!: one test body for every (pattern, io) combination
//! ```
//! Every item the tests use is re-exported here, so a test needs `use crate::common::*`.
//!
//! Every read and write has a timeout ([`IO_TIMEOUT`]); those are liveness
//! bounds so that a broken server fails a test instead of hanging it, never
//! performance thresholds.
#![allow(dead_code)]

#[macro_use]
pub mod macros;

mod client;
mod raw_frames;
mod raw_http;
mod server;
mod stats;

use std::time::Duration;

pub use client::*;
pub use raw_frames::*;
pub use raw_http::*;
pub use server::*;

/// Liveness bound for every socket read/write in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Liveness bound for the server to print its start-up line (debug builds).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Liveness bound for the server to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The RFC 6455 sample key and its accept value.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
