//! `work-queue`: one I/O loop listens, accepts, reads and parses, and owns the connections
//! and the rooms; each complete chat message goes as a work item onto one bounded queue,
//! from which worker threads take it, do the CPU part (interpret the command, `--work-us`,
//! encode the outgoing frame once), and return the result through the I/O loop's inbox; the
//! loop applies it and fans out (RAMCloud's dispatch and worker threads). Engineering notes
//! and numbers: patterns/work-queue.md.
//!
//! ```text
//!   clients ──> [ listen socket ] ──> ┌──────── I/O loop ────────┐
//!                                     │ accept, read, ws parse   │ owns connections, rooms
//!                                     │ apply results, fan out,  │
//!                                     │ one writev per dirty conn│
//!                                     └──┬───────────────────^───┘
//!                   bounded MPMC queue   │ WorkItem          │ WorkDone via inbox
//!                   (--queue-depth)   ┌──v───────┐ ┌────────┴─┐  (one eventfd write per
//!                                     │ worker 0 │ │ worker 1 │   batch, never blocks)
//!                                     └──────────┘ └──────────┘
//! ```
//! Wins when processing a message costs much more than moving it (`--work-us`), since the
//! CPU work spreads over the workers while one thread keeps the sockets; loses when it does
//! not, since each message then costs two hand-offs and a wake-up for no gain. Per-sender
//! order and backpressure: shard/work.rs.

use std::sync::Arc;

use anyhow::Context as _;

use super::{NewReactor, Threads, announce, listen, registry, start_helpers};
use super::{start_shards, wakers};
use crate::config::Config;
use crate::io::AcceptWakeup;
use crate::io::signals::TerminationSignals;
use crate::shard::work::{WorkQueue, run_worker};
use crate::shard::{Hub, Shard};

pub fn run<R: NewReactor>(config: Arc<Config>, signals: TerminationSignals) -> anyhow::Result<()> {
    let listener = listen(&config, config.addr, false)?;
    let bound = listener.local_addr()?;
    let registry = registry(&config);
    let wakers = wakers(1)?;
    let hub = Hub::new(&wakers, config.max_conns);
    let (queue, items) = WorkQueue::bounded(config.queue_depth);

    let mut threads = Threads::new(&config);
    let io_loop = move |shard: &mut Shard<R>| {
        shard
            .add_listener(listener, AcceptWakeup::Sole)
            .context("registering the listener")?;
        shard.offload(queue);
        Ok(())
    };
    start_shards(&mut threads, &hub, &wakers, "io", &registry, [io_loop])?;
    // Workers stop when the I/O loop ends and drops the queue's sending end.
    for w in 0..config.workers {
        let (items, results) = (items.clone(), hub.inbox(0).clone());
        let (cost, stats) = (config.work_cost, registry.add_thread("worker"));
        threads.start(format!("worker-{w}"), move || {
            run_worker(items, results, cost, stats);
            Ok(())
        })?;
    }
    drop(items);

    let _helpers = start_helpers(&config, signals, hub.inboxes().to_vec(), registry)?;
    let workers = config.workers;
    announce(
        &config,
        bound,
        &format!("{} (1 io, {workers} workers)", workers + 1),
    );
    threads.join()
}
