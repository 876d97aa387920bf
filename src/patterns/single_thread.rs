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
//! No locks on the message path, no hand-offs, no cross-thread wake-ups: the baseline every
//! other pattern is measured against. It uses one core, however many the machine has.

use std::sync::Arc;

use super::{NewReactor, Threads, announce, listen, registry, serve, start_helpers};
use super::{start_shards, wakers};
use crate::config::Config;
use crate::io::AcceptWakeup;
use crate::io::signals::TerminationSignals;
use crate::shard::Hub;

pub fn run<R: NewReactor>(config: Arc<Config>, signals: TerminationSignals) -> anyhow::Result<()> {
    let listener = listen(&config, config.addr, false)?;
    let bound = listener.local_addr()?;
    let registry = registry(&config);
    let wakers = wakers(1)?;
    let hub = Hub::new(&wakers, config.max_conns);

    let mut threads = Threads::new(&config);
    let setup = serve::<R>(listener, AcceptWakeup::Sole);
    start_shards(&mut threads, &hub, &wakers, "loop", &registry, [setup])?;

    let _helpers = start_helpers(&config, signals, hub.inboxes().to_vec(), registry)?;
    announce(&config, bound, "1 (1 loop)");
    threads.join()
}
