//! Black-box integration tests for the `wschat` binary.
//!
//! One test binary (so the whole suite shares one link and runs its tests in
//! parallel); every behaviour test is written once with `wstest!` and runs for
//! every (pattern, io) combination listed in `tests/common/macros.rs`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod chat;
mod cluster;
mod deflate;
mod echo;
mod frames;
mod handshake;
mod hardening;
mod hostile;
mod http;
mod lifecycle;
mod metrics;
mod patterns;
mod proxies;
mod threads;
mod tls;
