//! `multi-accept`: N loops share one listening socket (one accept queue); each registers it,
//! accepts for itself and serves what it accepted. Engineering notes and numbers:
//! patterns/multi-accept.md.
//!
//! ```text
//!                    clients
//!                       │
//!          [ one listen socket, one accept queue ]
//!          │  a connection arrives: --accept-wakeup exclusive wakes one waiting loop,
//!          │  all wakes every loop (the thundering herd: all but one find nothing)
//!      ┌───v───┐    ┌───v───┐    ┌───v───┐
//!      │loop 0 │    │loop 1 │    │loop 2 │     accept4 until EAGAIN, then read, process,
//!      └───┬───┘    └───┬───┘    └───┬───┘     write their own connections
//!          └── room deliveries: one inbox batch per peer per iteration ──┘
//! ```
//! Whoever is idle takes the next connection, so load follows who has time, not a hash. With
//! `all`, each arrival costs every sleeping loop a wake-up; the stats show it as futile
//! accepts and, better, as voluntary context switches per accepted connection.

use std::sync::Arc;

use anyhow::Context as _;

use super::{NewReactor, Threads, announce, listen, registry, serve, start_helpers};
use super::{start_shards, wakers};
use crate::config::Config;
use crate::io::signals::TerminationSignals;
use crate::shard::Hub;

pub fn run<R: NewReactor>(config: Arc<Config>, signals: TerminationSignals) -> anyhow::Result<()> {
    let n = config.threads;
    let listener = listen(&config, config.addr, false)?;
    let bound = listener.local_addr()?;
    // One socket, one descriptor per loop (dup): each loop registers and closes its own.
    let handles = (0..n)
        .map(|_| listener.try_clone().context("duplicating the listener"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(listener);
    let registry = registry(&config);
    let wakers = wakers(n)?;
    let hub = Hub::new(&wakers, config.max_conns);

    let mut threads = Threads::new(&config);
    let setups = handles
        .into_iter()
        .map(|handle| serve::<R>(handle, config.accept_wakeup));
    start_shards(&mut threads, &hub, &wakers, "loop", &registry, setups)?;

    let _helpers = start_helpers(&config, signals, hub.inboxes().to_vec(), registry)?;
    announce(&config, bound, &format!("{n} ({n} loops)"));
    threads.join()
}
