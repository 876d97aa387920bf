//! `GET /stats`: the server's counters as the tests read them.
//!
//! Owns: fetching and parsing /stats, reading one of its totals, and polling until a total
//! reaches a value. Must never: poll without a deadline, or let a deadline pass quietly.

use std::thread;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;
use super::server::Server;

impl Server {
    /// `GET /stats`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let resp = self.get("/stats");
        assert_eq!(resp.status, 200, "GET /stats: {resp:?}");
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
            panic!(
                "/stats is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&resp.body)
            )
        })
    }

    /// `totals.<counter>` from /stats.
    pub fn total(&self, counter: &str) -> u64 {
        let stats = self.stats();
        stats["totals"][counter]
            .as_u64()
            .unwrap_or_else(|| panic!("totals.{counter} missing or not an integer: {stats}"))
    }

    /// Polls /stats until `totals.<counter>` >= `min` and returns the value seen; panics,
    /// naming the counter, the last value and `min`, if that has not happened within
    /// [`IO_TIMEOUT`] (a liveness bound: a counter that never gets there is a failure, not
    /// something for the caller to notice or miss).
    pub fn wait_total_at_least(&self, counter: &str, min: u64) -> u64 {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let v = self.total(counter);
            if v >= min {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "totals.{counter} is {v} after {IO_TIMEOUT:?} of polling; expected at least {min}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}
