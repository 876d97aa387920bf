//! `acceptor-readers`: one acceptor thread owns the listener and accepts; each connection is
//! handed to one of N reader loops, which reads, processes and writes it from then on
//! (memcached's dispatcher and worker threads). Engineering notes and numbers:
//! patterns/acceptor-readers.md.
//!
//! ```text
//!   clients ──> [ listen socket, accept queue ]
//!                          │ accept4
//!                   ┌──────v──────┐
//!                   │  acceptor   │  picks a reader (--assign round-robin | least-conns)
//!                   └──┬───────┬──┘  one Adopt batch + at most one eventfd write per
//!        inbox + wake  │       │     reader per wake-up
//!                 ┌────v───┐ ┌─v──────┐
//!                 │reader 0│ │reader 1│  read, process, write their connections
//!                 └────┬───┘ └───┬────┘
//!                      └─ room deliveries: one inbox batch per peer per iteration
//! ```
//! Accepting never competes with serving, and the acceptor decides placement, so it can
//! balance by load. The price: one more thread, and a hand-off (a lock, a wake-up) per
//! accepted connection, which shows in a connect storm.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::Context as _;

use super::{NewReactor, Threads, announce, listen, registry, start_helpers};
use super::{start_shards, wakers};
use crate::cli::Assign;
use crate::config::Config;
use crate::io::signals::TerminationSignals;
use crate::shard::{Acceptor, Hub, Inbox, Shard};
use crate::stats::ThreadStats;

pub fn run<R: NewReactor>(config: Arc<Config>, signals: TerminationSignals) -> anyhow::Result<()> {
    let n = config.threads;
    let listener = listen(&config, config.addr, false)?;
    let bound = listener.local_addr()?;
    let registry = registry(&config);
    let mut wakers = wakers(n + 1)?;
    let acceptor_waker = wakers.pop().context("no waker for the acceptor")?;
    let hub = Hub::new(&wakers, config.max_conns);

    let mut threads = Threads::new(&config);
    let no_listener = |_: &mut Shard<R>| Ok(());
    let readers = start_shards(
        &mut threads,
        &hub,
        &wakers,
        "reader",
        &registry,
        vec![no_listener; n],
    )?;

    let acceptor_inbox = Arc::new(Inbox::new(acceptor_waker.clone()));
    let (inbox, hub_for_acceptor) = (acceptor_inbox.clone(), hub.clone());
    let stats = registry.add_thread("acceptor");
    let mut placement = Placement::new(config.assign, readers);
    let delay = config.accept_delay;
    threads.start_loop("acceptor".into(), &acceptor_waker, move |io: R| {
        let assign = Box::new(move || placement.pick());
        let mut acceptor = Acceptor::new(io, inbox, hub_for_acceptor, assign, stats, delay);
        acceptor
            .add_listener(listener)
            .context("registering the listener")?;
        Ok(acceptor)
    })?;

    let mut stop = hub.inboxes().to_vec();
    stop.push(acceptor_inbox);
    let _helpers = start_helpers(&config, signals, stop, registry)?;
    announce(
        &config,
        bound,
        &format!("{} (1 acceptor, {n} readers)", n + 1),
    );
    threads.join()
}

/// Where the acceptor sends each new connection.
struct Placement {
    policy: Assign,
    next: usize,
    readers: Vec<Arc<ThreadStats>>,
    /// Connections handed to each reader so far.
    handed: Vec<u64>,
}

impl Placement {
    fn new(policy: Assign, readers: Vec<Arc<ThreadStats>>) -> Placement {
        let handed = vec![0; readers.len()];
        Placement {
            policy,
            next: 0,
            readers,
            handed,
        }
    }

    fn pick(&mut self) -> usize {
        let n = self.readers.len();
        let reader = match self.policy {
            Assign::RoundRobin => {
                let reader = self.next;
                self.next = (self.next + 1) % n;
                reader
            }
            Assign::LeastConns => (0..n).min_by_key(|&i| self.load(i)).unwrap_or(0),
        };
        self.handed[reader] += 1;
        reader
    }

    /// Connections reader `i` holds, counting those handed to it that it has not yet
    /// adopted (during a connect storm the reader's own count lags behind).
    fn load(&self, i: usize) -> u64 {
        let counters = &self.readers[i].counters;
        let in_transit = self.handed[i].saturating_sub(counters.adopted.load(Relaxed));
        counters.active.load(Relaxed) + in_transit
    }
}
