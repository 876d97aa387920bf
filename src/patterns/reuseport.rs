//! `reuseport`: N loops, each with its own SO_REUSEPORT listening socket, so each has its own
//! accept queue; the kernel spreads arriving connections over the sockets by a hash of the
//! 4-tuple. Engineering notes and numbers: patterns/reuseport.md.
//!
//! ```text
//!                    clients
//!                       │  SYN: hash(src ip, src port, dst ip, dst port) picks a socket
//!          ┌────────────┼────────────┐
//!          v            v            v
//!   [listen+queue] [listen+queue] [listen+queue]   one socket and accept queue per loop
//!          │            │            │
//!      ┌───v───┐    ┌───v───┐    ┌───v───┐
//!      │loop 0 │    │loop 1 │    │loop 2 │         accept, read, process, write
//!      └───┬───┘    └───┬───┘    └───┬───┘         their own connections
//!          └── room deliveries: one inbox batch per peer per iteration ──┘
//! ```
//! Nothing is shared on the accept path: no loop is woken for another's connection. The
//! price: the hash ignores load, so one loop can get more (or busier) connections than the
//! others, and a loop that stalls leaves its own queue waiting.

use std::sync::Arc;

use super::{NewReactor, Threads, announce, listen, registry, serve, start_helpers};
use super::{start_shards, wakers};
use crate::config::Config;
use crate::io::AcceptWakeup;
use crate::io::signals::TerminationSignals;
use crate::shard::Hub;

pub fn run<R: NewReactor>(config: Arc<Config>, signals: TerminationSignals) -> anyhow::Result<()> {
    let n = config.threads;
    // With port 0 the first socket gets a port, and the others join it there.
    let first = listen(&config, config.addr, true)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..n {
        listeners.push(listen(&config, bound, true)?);
    }
    let registry = registry(&config);
    let wakers = wakers(n)?;
    let hub = Hub::new(&wakers, config.max_conns);

    let mut threads = Threads::new(&config);
    let setups = listeners
        .into_iter()
        .map(|listener| serve::<R>(listener, AcceptWakeup::Sole));
    start_shards(&mut threads, &hub, &wakers, "loop", &registry, setups)?;

    let _helpers = start_helpers(&config, signals, hub.inboxes().to_vec(), registry)?;
    announce(&config, bound, &format!("{n} ({n} loops)"));
    threads.join()
}
