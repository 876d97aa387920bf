//! wschat: a WebSocket chat server whose execution pattern (how threads listen, accept,
//! read and process) is chosen at run time, built to be read and measured.
//!
//! # Architecture map (data flows down, dependencies point down)
//! ```text
//!   main.rs     Args -> Config -> patterns::run -> exit code
//!   cli.rs      flags and WSCHAT_* variables      config.rs  the validated effective Config
//!   patterns/   one file per pattern: threads, listeners, how sockets and work travel
//!   shard/      one event loop: reactor events -> ws -> chat -> outboxes -> flush
//!   cluster/    --cluster: the Redis pub/sub link: RESP codec and event format (pure), the
//!               session (sans-IO: bytes and time in), the broker thread that drives it
//!   peer.rs     how a loop and whoever shares its rooms reach each other (the other loops,
//!               the broker): shard/ and cluster/ both use it and never each other
//!   chat/       rooms, names, notices, commands, fan-out plan (pure)
//!   ws/         RFC 6455: handshake, frames, masking, UTF-8, close, state machine (pure)
//!   io/         reactors (epoll, uring), outbox, waker, signals, rlimits: all the unsafe code
//!   net/        listeners (backlog, SO_REUSEPORT), accept4 and accept-error triage, socket
//!               options; below io/, which accepts through it
//!   stats.rs    per-thread counters, /stats JSON, /metrics text, interval lines
//! ```
//!
//! # Architecture invariants
//! - **Dependencies point down**: every `crate::` path from one layer to another is an arrow
//!   of the table in `scripts/check-layers.sh` (DESIGN.md's layers), tests included.
//! - **ws/ and chat/ never do I/O**: no syscalls, no clock, no threads; bytes and time in,
//!   events and bytes out. `scripts/check-layers.sh` greps for violations.
//! - **All unsafe is in io/**: the crate denies `unsafe_code`; only `io` allows it, and every
//!   block carries a `// SAFETY:` comment (clippy `undocumented_unsafe_blocks` is denied).
//! - **A pattern file never touches protocol or chat state**: it wires threads and sockets
//!   to shards; one protocol implementation serves every pattern and backend.
//! - **A frame is encoded once** per message and shared by reference by every receiver.
//! - **Output is corked per loop iteration**: one writev per dirty connection per iteration,
//!   never a write inside the fan-out loop.
//! - **A shard never waits for another node**: the Redis link lives on the broker thread;
//!   shards hand it batches through its inbox and get remote events through theirs.
//! - **The loop does not know who its peers are**: the other loops and the broker are
//!   [`peer::Peer`]s; there is no `if cluster` in `shard/`.
//! - **What a loop hands another is bounded**: a peer holding too many of a loop's room
//!   deliveries makes it stop reading their senders (`shard/fanout.rs`).
//! - **Nothing on an input path panics**: bad input becomes an HTTP status or a close code.

#![deny(unsafe_code)]

pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod io;
pub mod net;
pub mod patterns;
pub mod peer;
pub mod shard;
pub mod stats;
pub mod tls;
pub mod ws;
