//! What a load run produced and how it is judged: the counters, the outcome handed to
//! `results`, and the verdict (lost deliveries, correctness, rates).
//!
//! Owns: the load counter set (its field names are the results file's counter names), the
//! derived counters (`lost`, `unexpected`, ...), the rule that makes a run correct and the
//! verdicts beside it (`kept_up`, `loader_late`) with their bounds.
//! Must never: leave a lost delivery out of the latency percentiles (it is recorded at
//! the time we waited for it), or call a run correct with a delivery unaccounted for.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::loader::LoaderReport;
use crate::counters::counter_set;
use crate::cpu::{CpuTime, ProcessCpu};
use crate::histo::percentiles;
use crate::net::ConnectErrors;
use crate::results::Verdicts;

/// The accounting interval, as the results name it: from the start of the measured window
/// to the last arrival of a measured delivery (never before the window's end). Server CPU,
/// `cpu_us_per_delivery` and `delivered_per_s` are all over it.
pub const INTERVAL_NAME: &str = "measure_start..last_measured_arrival";

/// `kept_up`: the last measured delivery must arrive within this long after the end of the
/// measured window, or within `KEPT_UP_SHARE` of the window's length if that is longer. A
/// server that keeps up delivers the last messages of the window about one latency after
/// it; one that has fallen behind is still working through its backlog.
pub const KEPT_UP_MIN_BOUND: Duration = Duration::from_millis(100);
pub const KEPT_UP_SHARE: f64 = 0.1;
/// `loader_late`: the loader's own send lag (actual send minus due time) at p99 above this,
/// µs. The loader then did not keep its own timetable, and latency includes its lateness.
/// On this VM class a sleeping thread wakes 50-100 µs late typically, so 1 ms at p99 is a
/// loader that was busy, not one that slept a little long.
pub const LOADER_LATE_P99_US: u64 = 1_000;

counter_set! {
    /// What a load run counted. Each loader thread counts its own connections and
    /// deliveries; the main thread adds the threads' sets and derives the run's totals
    /// (`conns`, `lost`, `unexpected`, ...), which are zero in a thread's set.
    pub struct LoadCounters {
        /// Connections the run asked for (derived).
        conns,
        /// Connections that completed their upgrade.
        opened,
        /// Connections that failed to open (the kinds are in `connect_errors`).
        connect_failed,
        /// 101s that agreed to permessage-deflate.
        deflate_agreed,
        /// "<name> just connected" notices received.
        join_notices,
        /// Join notices the open members should receive: n(n-1)/2 per room of n (derived).
        join_notices_expected,
        /// Messages sent, and of them those due in the measured interval.
        sent,
        sent_measured,
        /// Deliveries the messages sent should make (receivers present when sent).
        expected,
        expected_measured,
        /// Deliveries received once each (duplicates are not), and of them those of
        /// messages due in the measured interval.
        received,
        received_measured,
        /// expected - received, in all and of the measured messages (derived).
        lost,
        lost_measured,
        /// received - expected, when more arrived than expected (derived).
        unexpected,
        /// Sequence numbers skipped by a later arrival and never filled: the lost
        /// deliveries that left a gap (the rest is a tail that never arrived at all).
        holes,
        /// Deliveries that arrived after a later one from the same sender.
        out_of_order,
        /// Deliveries that arrived a second time (not counted as received).
        duplicates,
        /// Binary messages that are not our payload layout.
        malformed,
        /// Payloads from a sender this run does not have (or, on echo, another sender).
        foreign,
        /// Deliveries of a message from a member of another room: the server sent it to a
        /// room its sender is not in (not counted as received).
        misrouted,
        /// Connections closed for a frame a client must not accept.
        protocol_errors,
        /// Connections whose TLS failed after the upgrade.
        tls_errors,
        /// Open connections that closed, whoever closed them.
        disconnects,
        /// Of them, those closed from the first message due to the end of the drain.
        disconnects_during_run,
        /// Payload and frame-payload bytes sent (they differ where compressed), and the
        /// messages sent compressed.
        payload_bytes_sent,
        wire_bytes_sent,
        compressed_sent,
        /// The same for what was received (text deliveries through a chat server include
        /// its `"<name> says: "` prefix).
        payload_bytes_received,
        wire_bytes_received,
        compressed_received,
        /// Compressed messages actually inflated: each distinct one once per thread.
        inflations,
    }
    nonzero_only {
        /// Text messages other than join notices (leave notices, replies): results files
        /// have only ever listed it when something arrived.
        other_text,
    }
    nested {
        connect_errors: ConnectErrors,
    }
}

/// What a load run measured; `results` turns it into the JSON document.
pub struct LoadOutcome {
    pub counters: LoadCounters,
    pub close_codes: BTreeMap<String, u64>,
    pub rates: BTreeMap<String, f64>,
    pub latency: Histogram<u64>,
    pub connect: Histogram<u64>,
    /// Open loop only (empty for closed loop): actual send time minus due time.
    pub send_lag: Histogram<u64>,
    pub measured: Duration,
    pub loader_cpu: CpuTime,
    /// Server CPU over `interval`, not over `measured`.
    pub server_cpu: Option<ProcessCpu>,
    /// The accounting interval (`INTERVAL_NAME`).
    pub interval: Duration,
    pub correct: bool,
    pub verdicts: Verdicts,
}

/// Everything the main thread gathered by the end of a run, before it is judged.
pub(super) struct RunRecord {
    /// The loader threads' reports, added.
    pub(super) threads: LoaderReport,
    pub(super) latency: Histogram<u64>,
    pub(super) conns: u64,
    pub(super) notices_expected: u64,
    /// --duration: what the rates are per.
    pub(super) duration: Duration,
    /// From the end of the measured interval to the end of the drain: how long a delivery
    /// still missing was waited for.
    pub(super) waited_ns: u64,
    pub(super) connect_time: Duration,
    pub(super) settle_time: Duration,
    pub(super) drain_time: Duration,
    pub(super) measured: Duration,
    pub(super) loader_cpu: CpuTime,
    /// Over `interval`.
    pub(super) server_cpu: Option<ProcessCpu>,
    /// The accounting interval (`INTERVAL_NAME`).
    pub(super) interval: Duration,
    /// CLOCK_MONOTONIC ns: the end of the measured window (nothing measured is due after it).
    pub(super) end_ns: u64,
}

impl LoadOutcome {
    /// Derives the run's totals from `record` and judges it.
    pub(super) fn judge(record: RunRecord) -> LoadOutcome {
        let RunRecord {
            threads,
            mut latency,
            ..
        } = record;
        let mut counters = threads.counters;
        // Whatever is still missing is lost; a lost delivery's latency is at least the time
        // we waited for it, so it is recorded at that (never left out of the percentiles).
        let c = &mut counters;
        c.conns = record.conns;
        c.join_notices_expected = record.notices_expected;
        c.lost = c.expected.saturating_sub(c.received);
        c.lost_measured = c.expected_measured.saturating_sub(c.received_measured);
        c.unexpected = c.received.saturating_sub(c.expected);
        // Open loop: the receivers still open at the end say which measured deliveries they
        // never got, each recorded from its due time to the end of the drain; whatever is
        // left (receivers that closed, closed loop) at the wait from the end of sending, a
        // lower bound of the same.
        let timed = threads.lost_wait.len().min(c.lost_measured);
        if timed > 0 {
            let _ = latency.add(&threads.lost_wait);
        }
        let untimed = c.lost_measured - timed;
        if untimed > 0 {
            latency.saturating_record_n(record.waited_ns / 1_000, untimed);
        }
        let close_codes = threads
            .close_codes
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let secs = record.duration.as_secs_f64().max(1e-9);
        let mut rates = BTreeMap::new();
        rates.insert("sent_per_s".into(), c.sent_measured as f64 / secs);
        // Deliveries by arrival: every measured delivery arrived inside the accounting
        // interval, so a server that lags delivers fewer per second, as it does. The
        // stamped rate (per --duration, whenever they arrived) is kept beside it: it stays
        // at the offered rate however far behind the server is.
        let interval_s = record.interval.as_secs_f64().max(1e-9);
        rates.insert(
            "delivered_per_s".into(),
            c.received_measured as f64 / interval_s,
        );
        rates.insert(
            "delivered_per_s_stamped".into(),
            c.received_measured as f64 / secs,
        );
        rates.insert("connect_s".into(), record.connect_time.as_secs_f64());
        rates.insert("settle_s".into(), record.settle_time.as_secs_f64());
        rates.insert("drain_s".into(), record.drain_time.as_secs_f64());
        let correct = c.lost == 0
            && c.received == c.expected
            && c.holes == 0
            && c.out_of_order == 0
            && c.duplicates == 0
            && c.malformed == 0
            && c.foreign == 0
            && c.misrouted == 0
            && c.disconnects_during_run == 0;
        let verdicts = verdicts(
            record.duration,
            record.end_ns,
            threads.last_arrival_ns,
            c.expected_measured,
            &threads.send_lag,
        );
        LoadOutcome {
            counters,
            close_codes,
            rates,
            latency,
            connect: threads.connect,
            send_lag: threads.send_lag,
            measured: record.measured,
            loader_cpu: record.loader_cpu,
            server_cpu: record.server_cpu,
            interval: record.interval,
            correct,
            verdicts,
        }
    }
}

/// `kept_up` and `loader_late`, from the window (`duration` ending at `end_ns`), the latest
/// arrival of a measured delivery (0: none) and the loader's send lag.
fn verdicts(
    duration: Duration,
    end_ns: u64,
    last_arrival_ns: u64,
    expected_measured: u64,
    send_lag: &Histogram<u64>,
) -> Verdicts {
    let bound = KEPT_UP_MIN_BOUND.max(duration.mul_f64(KEPT_UP_SHARE));
    let last_after_end_s =
        (last_arrival_ns > 0).then(|| (last_arrival_ns as f64 - end_ns as f64) / 1e9);
    let kept_up = match last_after_end_s {
        Some(after) => after <= bound.as_secs_f64(),
        // Nothing measured arrived: kept up only if nothing was owed.
        None => expected_measured == 0,
    };
    let send_lag_p99_us = (!send_lag.is_empty()).then(|| percentiles(send_lag).p99);
    Verdicts {
        kept_up,
        kept_up_bound_s: bound.as_secs_f64(),
        last_arrival_after_end_s: last_after_end_s,
        loader_late: send_lag_p99_us.is_some_and(|p99| p99 > LOADER_LATE_P99_US),
        loader_late_p99_us: LOADER_LATE_P99_US,
        send_lag_p99_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histo::{new_histogram, record_ns};

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn kept_up_bound_is_the_larger_of_100ms_and_a_tenth_of_the_window() {
        let lag = new_histogram();
        let end = 100 * SEC;
        let v = verdicts(Duration::from_secs(1), end, end + SEC / 20, 10, &lag);
        assert!(v.kept_up);
        assert_eq!(v.kept_up_bound_s, 0.1);
        let v = verdicts(Duration::from_secs(1), end, end + SEC / 5, 10, &lag);
        assert!(!v.kept_up);
        let v = verdicts(Duration::from_secs(10), end, end + SEC / 5, 10, &lag);
        assert!(v.kept_up);
        assert_eq!(v.kept_up_bound_s, 1.0);
        let v = verdicts(Duration::from_secs(1), end, end - SEC / 2, 10, &lag);
        assert_eq!(v.last_arrival_after_end_s, Some(-0.5));
        assert!(v.kept_up);
    }

    #[test]
    fn nothing_arrived_is_kept_up_only_if_nothing_was_owed() {
        let lag = new_histogram();
        assert!(verdicts(Duration::from_secs(1), SEC, 0, 0, &lag).kept_up);
        assert!(!verdicts(Duration::from_secs(1), SEC, 0, 5, &lag).kept_up);
    }

    #[test]
    fn loader_late_when_send_lag_p99_exceeds_the_threshold() {
        let mut lag = new_histogram();
        assert!(!verdicts(Duration::from_secs(1), SEC, 0, 0, &lag).loader_late);
        for _ in 0..98 {
            record_ns(&mut lag, 50_000);
        }
        let v = verdicts(Duration::from_secs(1), SEC, 0, 0, &lag);
        assert!(!v.loader_late);
        assert_eq!(v.send_lag_p99_us, Some(50));
        for _ in 0..2 {
            record_ns(&mut lag, 5_000_000);
        }
        assert!(verdicts(Duration::from_secs(1), SEC, 0, 0, &lag).loader_late);
    }
}
