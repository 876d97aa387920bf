//! `single-thread`: one event loop listens, accepts, reads, processes and writes.
//! Engineering notes and numbers: patterns/single-thread.md.
//!
//! ```text
//!   clients ──> [ listen socket, accept queue ]
//!                          │ accept4 (until EAGAIN or budget)
//!                          v
//!               ┌──────── loop thread ─────────┐
//!               │ epoll_wait                   │
//!               │ read -> ws -> chat -> outbox │  every connection and every room
//!               │ one writev per dirty conn    │  live on this one thread
//!               └──────────────────────────────┘
//! ```
//! No locks, no hand-offs, no cross-thread wake-ups: the baseline every other pattern is
//! measured against. It uses one core, however many the machine has.

use std::sync::Arc;

use anyhow::Context as _;

use super::{NewReactor, announce, registry, start_helpers};
use crate::config::Config;
use crate::io::AcceptWakeup;
use crate::io::signals::TerminationSignals;
use crate::net;
use crate::shard::Shard;

pub fn run<R: NewReactor>(config: Arc<Config>, signals: TerminationSignals) -> anyhow::Result<()> {
    let listener = net::bind_listener(config.addr, &config.backlog, false)
        .with_context(|| format!("binding {}", config.addr))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let registry = registry(&config);
    let reactor = R::open(&config).context("creating the event loop")?;
    let mut shard = Shard::new(
        reactor,
        config.clone(),
        registry.add_thread("loop"),
        registry.clone(),
    );
    shard
        .add_listener(listener, AcceptWakeup::Exclusive)
        .context("registering the listener")?;
    let _helpers = start_helpers(&config, signals, vec![shard.inbox()], registry)?;
    announce(&config, bound, "1 (1 loop)");
    shard.run().context("event loop failed")
}
