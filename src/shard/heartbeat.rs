//! Heartbeat deadlines for every open connection of a shard, kept in a timing wheel.
//!
//! Each open connection has one entry: when to look at it next (its ping or idle deadline,
//! computed from when a complete frame last arrived). An entry costs O(1) to add and O(1)
//! when its slot comes round; a connection that was heard from meanwhile is not touched on
//! every frame, it is simply put back with its new deadline when its old one comes round
//! (at most one move per connection per interval). That keeps heartbeats O(1) per
//! connection per interval at any number of connections, where a heap would pay a log on
//! every frame and a scan would pay for every connection on every tick.
//!
//! The wheel is coarse on purpose: a deadline fires up to one tick late, and a tick is a
//! 32nd of the shortest interval (at least 1 ms). Deadlines beyond the wheel's horizon wait
//! in the last slot and are re-filed when it comes round.
//!
//! Owns: the wheel, one (key, serial) entry per open connection filed by its next deadline;
//! what a due connection gets (a ping, a close, a new deadline) is decided in timers.rs.
//! Must never: read the clock (time is passed in), or touch a connection.

use std::time::{Duration, Instant};

use crate::io::ConnId;

/// Slots per wheel; with ticks of a 32nd of the interval, the horizon is two intervals.
const SLOTS: usize = 64;
const TICKS_PER_INTERVAL: u32 = 32;

/// A connection's key and serial, 8 bytes (every open connection has one): an entry for a
/// connection that was replaced is ignored. A newer connection under the same key with the
/// same (wrapping, 32-bit) serial would need four billion connections to come and go
/// meanwhile, and even then it would only be looked at early: the check reads its real
/// times.
pub type Entry = (u32, u32);

/// The entry of connection `id` whose serial is `serial`.
pub fn entry(id: ConnId, serial: u32) -> Entry {
    // A key never reaches u32::MAX (keys are below --max-conns); if one did, its entry
    // would name no connection and be ignored.
    (u32::try_from(id).unwrap_or(u32::MAX), serial)
}

#[derive(Debug)]
pub struct HeartbeatWheel {
    tick: Duration,
    origin: Instant,
    /// The first tick not yet expired.
    next_tick: u64,
    slots: Vec<Vec<Entry>>,
    len: usize,
}

impl HeartbeatWheel {
    /// A wheel for deadlines at least `interval` apart (the shortest heartbeat interval).
    pub fn new(interval: Duration, now: Instant) -> HeartbeatWheel {
        HeartbeatWheel {
            tick: (interval / TICKS_PER_INTERVAL).max(Duration::from_millis(1)),
            origin: now,
            next_tick: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    /// Files `entry` to expire at `at` (rounded up to a tick; at the latest at the horizon).
    pub fn insert(&mut self, at: Instant, entry: Entry) {
        let tick = self
            .tick_at_or_after(at)
            .clamp(self.next_tick, self.next_tick + SLOTS as u64 - 1);
        self.slots[(tick % SLOTS as u64) as usize].push(entry);
        self.len += 1;
    }

    /// When the next non-empty slot comes round, if any entry is filed.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        (self.next_tick..self.next_tick + SLOTS as u64)
            .find(|t| !self.slots[(t % SLOTS as u64) as usize].is_empty())
            .map(|t| self.origin + self.tick * t as u32)
    }

    /// Moves the entries whose tick has come by `now` into `due`, until `due` holds `max`:
    /// the rest stay filed, in their slot, and `next_deadline` (passed already) brings the
    /// loop back at once for them. A clump of connections that came in together is pinged
    /// a budget at a time, so one iteration neither stalls on it nor has thousands of sends
    /// in flight at once (each holding memory until it completes).
    pub fn expire(&mut self, now: Instant, due: &mut Vec<Entry>, max: usize) {
        let now_tick =
            now.saturating_duration_since(self.origin).as_nanos() / self.tick.as_nanos().max(1);
        let now_tick = now_tick as u64;
        // A long stall passes every slot once, not once per missed round.
        let last = now_tick.min(self.next_tick + SLOTS as u64 - 1);
        while self.len > 0 && self.next_tick <= last {
            let room = max.saturating_sub(due.len());
            let slot = &mut self.slots[(self.next_tick % SLOTS as u64) as usize];
            if slot.len() > room {
                due.extend(slot.drain(slot.len() - room..));
                self.len -= room;
                return;
            }
            // Taken, not drained: a slot keeps no buffer between rounds (a slot that once
            // held a clump of entries would otherwise keep its size for good: about 100
            // bytes per connection after a round of heartbeats, results/memory/2026-12-06).
            let slot = std::mem::take(slot);
            self.len -= slot.len();
            due.extend(slot);
            self.next_tick += 1;
        }
        self.next_tick = self.next_tick.max(now_tick + 1);
    }

    fn tick_at_or_after(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        since.div_ceil(self.tick.as_nanos().max(1)) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn entries_expire_at_their_tick_not_before() {
        let t0 = Instant::now();
        let mut wheel = HeartbeatWheel::new(320 * MS, t0); // 10 ms ticks
        wheel.insert(t0 + 25 * MS, (1, 0));
        wheel.insert(t0 + 95 * MS, (2, 0));
        assert_eq!(wheel.next_deadline(), Some(t0 + 30 * MS));
        let mut due = Vec::new();
        wheel.expire(t0 + 29 * MS, &mut due, usize::MAX);
        assert!(due.is_empty());
        wheel.expire(t0 + 30 * MS, &mut due, usize::MAX);
        assert_eq!(due, [(1, 0)]);
        assert_eq!(wheel.next_deadline(), Some(t0 + 100 * MS));
        wheel.expire(t0 + 500 * MS, &mut due, usize::MAX);
        assert_eq!(due, [(1, 0), (2, 0)]);
        assert!(wheel.is_empty() && wheel.next_deadline().is_none());
    }

    #[test]
    fn a_deadline_past_the_horizon_waits_in_the_last_slot() {
        let t0 = Instant::now();
        let mut wheel = HeartbeatWheel::new(320 * MS, t0);
        wheel.insert(t0 + 10_000 * MS, (7, 3));
        let mut due = Vec::new();
        wheel.expire(t0 + 630 * MS, &mut due, usize::MAX);
        assert_eq!(due, [(7, 3)], "comes round at the horizon, to be re-filed");
    }

    #[test]
    fn a_deadline_in_the_past_fires_at_the_next_expiry() {
        let t0 = Instant::now();
        let mut wheel = HeartbeatWheel::new(320 * MS, t0);
        let mut due = Vec::new();
        wheel.expire(t0 + 1000 * MS, &mut due, usize::MAX);
        wheel.insert(t0, (4, 0));
        wheel.expire(t0 + 1010 * MS, &mut due, usize::MAX);
        assert_eq!(due, [(4, 0)]);
    }

    #[test]
    fn a_clump_expires_a_budget_at_a_time_and_stays_due_meanwhile() {
        let t0 = Instant::now();
        let mut wheel = HeartbeatWheel::new(320 * MS, t0); // 10 ms ticks
        for key in 0..5 {
            wheel.insert(t0 + 10 * MS, (key, 0));
        }
        wheel.insert(t0 + 20 * MS, (9, 0));
        let mut taken = Vec::new();
        for expected in [2, 2, 2] {
            let mut due = Vec::new();
            wheel.expire(t0 + 25 * MS, &mut due, 2);
            assert_eq!(due.len(), expected);
            taken.extend(due);
            // Whatever is left is due already: the loop comes back without waiting.
            if !wheel.is_empty() {
                assert!(wheel.next_deadline().unwrap() <= t0 + 25 * MS);
            }
        }
        taken.sort_unstable();
        assert_eq!(taken, [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (9, 0)]);
        assert!(wheel.is_empty());
        // Filed afterwards, an entry waits for its own tick as before.
        wheel.insert(t0 + 60 * MS, (5, 0));
        let mut due = Vec::new();
        wheel.expire(t0 + 55 * MS, &mut due, 2);
        assert!(due.is_empty());
        wheel.expire(t0 + 60 * MS, &mut due, 2);
        assert_eq!(due, [(5, 0)]);
    }
}
