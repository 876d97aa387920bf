//! The results document (`--json`), the end-of-run summary, and `merge`.
//!
//! Owns: the JSON schema, which scripts and `report` depend on. Fields are only ever added;
//! renaming or removing one bumps `schema`. Maps are ordered (BTreeMap) so that the same run
//! always serialises to the same text.
//! Must never: average percentiles across runs: `merge` adds histograms and re-reads them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cpu::{CpuTime, ProcessCpu, ThreadCpu};
use crate::histo::StoredHistogram;

pub const SCHEMA: &str = "wschat-bench/1";
/// A run is loader-bound when the loader's CPU per loader thread exceeds this share of a core.
pub const LOADER_BOUND_BUSY: f64 = 0.9;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: String,
    /// chat | saturate | ping | connect
    pub kind: String,
    /// `--label key=value`: what the report groups by (pattern, io, machine, ...).
    pub labels: BTreeMap<String, String>,
    pub started_unix_s: u64,
    pub command: Vec<String>,
    /// The effective configuration of the subcommand.
    pub config: serde_json::Value,
    /// Length of the measured interval, seconds.
    pub measured_s: f64,
    pub counters: BTreeMap<String, u64>,
    /// Close codes received from the server (`"1008": 3`).
    pub close_codes: BTreeMap<String, u64>,
    /// Derived rates and phase times: sent_per_s, delivered_per_s, handshakes_per_s, ...
    pub rates: BTreeMap<String, f64>,
    /// `latency_us` (chat, saturate, ping), `open_us` (time to an open WebSocket), and for
    /// connect `connect_us` / `upgrade_us`.
    pub histograms: BTreeMap<String, StoredHistogram>,
    /// Every delivery accounted for (received == expected, no loss, no reordering, no
    /// duplicates); `null` where not applicable (connect).
    pub correct: Option<bool>,
    pub loader: LoaderCpu,
    pub server: Option<ServerCpu>,
    /// Whether the server kept up and the loader kept its timetable (chat, saturate, ping;
    /// absent from connect runs and from files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdicts: Option<Verdicts>,
    /// The interval `delivered_per_s` and the server's CPU are measured over (chat,
    /// saturate, ping; absent from connect runs and from older files, where both were over
    /// `measured_s` and deliveries were counted by stamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// How many runs this document adds up (1 unless merged).
    pub runs: u32,
    /// The files a merged document came from.
    #[serde(default)]
    pub merged_from: Vec<String>,
}

/// The accounting interval of a load run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// `measure_start..last_measured_arrival`: from the start of the measured window to the
    /// last arrival of a measured delivery (never before the window's end).
    pub name: String,
    pub seconds: f64,
}

/// Verdicts a load run is judged by besides `correct`. The bounds are stored with them so
/// that a results file says what it was judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    /// The last measured delivery arrived at most `kept_up_bound_s` after the end of the
    /// measured window (or nothing was owed). False: the server fell behind and was still
    /// delivering the window's messages afterwards.
    pub kept_up: bool,
    /// max(0.1 s, 10 % of --duration).
    pub kept_up_bound_s: f64,
    /// The last measured arrival minus the end of the window, seconds (negative: before
    /// it); null when no measured delivery arrived.
    pub last_arrival_after_end_s: Option<f64>,
    /// The loader's send lag p99 exceeded `loader_late_p99_us`: it did not keep its own
    /// timetable, and the latency includes its lateness (`loader_bound` is its CPU only).
    pub loader_late: bool,
    pub loader_late_p99_us: u64,
    /// p99 of send_lag_us; null for closed loop (no timetable).
    pub send_lag_p99_us: Option<u64>,
}

impl Verdicts {
    /// The verdicts of runs made simultaneously: kept up only if every run did, late if any
    /// loader was, the latest arrival and the worst lag.
    fn merge(&self, other: &Verdicts) -> Verdicts {
        let later = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Verdicts {
            kept_up: self.kept_up && other.kept_up,
            kept_up_bound_s: self.kept_up_bound_s.max(other.kept_up_bound_s),
            last_arrival_after_end_s: later(
                self.last_arrival_after_end_s,
                other.last_arrival_after_end_s,
            ),
            loader_late: self.loader_late || other.loader_late,
            loader_late_p99_us: self.loader_late_p99_us,
            send_lag_p99_us: match (self.send_lag_p99_us, other.send_lag_p99_us) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoaderCpu {
    pub threads: usize,
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    /// Process CPU time / wall time / loader threads.
    pub busy_per_thread: f64,
    /// busy_per_thread > 0.9: the loader, not the server, may have been the limit.
    pub loader_bound: bool,
}

impl LoaderCpu {
    pub fn new(cpu: CpuTime, wall: std::time::Duration, threads: usize) -> LoaderCpu {
        let busy = crate::cpu::busy_per_thread(cpu, wall, threads);
        LoaderCpu {
            threads,
            wall_s: wall.as_secs_f64(),
            user_s: cpu.user_us as f64 / 1e6,
            sys_s: cpu.sys_us as f64 / 1e6,
            busy_per_thread: busy,
            loader_bound: busy > LOADER_BOUND_BUSY,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerCpu {
    pub pid: u32,
    /// The interval this CPU was measured over: the accounting interval's name; absent in
    /// older files (the measured window) and for connect (the storm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    pub user_s: f64,
    pub sys_s: f64,
    /// Server CPU (user+sys) per delivery, µs: over `interval` for chat, saturate and ping
    /// (measured deliveries, all of which arrived inside it).
    pub cpu_us_per_delivery: Option<f64>,
    pub threads: Vec<ThreadCpu>,
}

impl ServerCpu {
    pub fn new(pid: u32, interval: Option<&str>, cpu: &ProcessCpu, deliveries: u64) -> ServerCpu {
        ServerCpu {
            pid,
            interval: interval.map(str::to_string),
            user_s: cpu.total.user_us as f64 / 1e6,
            sys_s: cpu.total.sys_us as f64 / 1e6,
            cpu_us_per_delivery: (deliveries > 0)
                .then(|| cpu.total.total_us() as f64 / deliveries as f64),
            threads: cpu.threads.clone(),
        }
    }
}

pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn load(path: &Path) -> anyhow::Result<RunResult> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let run: RunResult =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(
        run.schema == SCHEMA,
        "{}: schema {} (expected {SCHEMA})",
        path.display(),
        run.schema
    );
    Ok(run)
}

pub fn save(run: &RunResult, path: &Path) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(run)?;
    text.push('\n');
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Adds runs: counters, close codes and histograms are summed (percentiles re-read from the
/// summed histograms); rates are summed too, which is right for simultaneous runs from
/// several load machines against one server. Labels kept are those all runs agree on.
pub fn merge(runs: &[RunResult], sources: Vec<String>) -> anyhow::Result<RunResult> {
    let (first, rest) = runs.split_first().context("nothing to merge")?;
    let mut out = first.clone();
    let mut hists = BTreeMap::new();
    for (name, h) in &first.histograms {
        hists.insert(name.clone(), h.to_histogram()?);
    }
    for run in rest {
        anyhow::ensure!(
            run.kind == out.kind,
            "cannot merge a {} run into a {} run",
            run.kind,
            out.kind
        );
        for (k, v) in &run.counters {
            *out.counters.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &run.close_codes {
            *out.close_codes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &run.rates {
            *out.rates.entry(k.clone()).or_default() += v;
        }
        for (name, h) in &run.histograms {
            let h = h.to_histogram()?;
            match hists.get_mut(name) {
                Some(sum) => sum
                    .add(&h)
                    .map_err(|e| anyhow::anyhow!("adding {name}: {e:?}"))?,
                None => {
                    hists.insert(name.clone(), h);
                }
            }
        }
        out.labels.retain(|k, v| run.labels.get(k) == Some(v));
        out.correct = match (out.correct, run.correct) {
            (Some(a), Some(b)) => Some(a && b),
            (a, b) => a.or(b),
        };
        out.measured_s = out.measured_s.max(run.measured_s);
        out.loader.loader_bound |= run.loader.loader_bound;
        out.loader.busy_per_thread = out.loader.busy_per_thread.max(run.loader.busy_per_thread);
        out.loader.threads += run.loader.threads;
        out.loader.user_s += run.loader.user_s;
        out.loader.sys_s += run.loader.sys_s;
        out.verdicts = match (&out.verdicts, &run.verdicts) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            // A run from before verdicts existed: nothing to say for the sum.
            _ => None,
        };
        out.interval = match (&out.interval, &run.interval) {
            (Some(a), Some(b)) if a.name == b.name => Some(Interval {
                name: a.name.clone(),
                seconds: a.seconds.max(b.seconds),
            }),
            _ => None,
        };
        out.runs += run.runs;
        out.started_unix_s = out.started_unix_s.min(run.started_unix_s);
    }
    out.histograms = hists
        .iter()
        .map(|(k, h)| Ok((k.clone(), StoredHistogram::from_histogram(h)?)))
        .collect::<anyhow::Result<_>>()?;
    // Server CPU cannot be added across machines meaningfully unless it is the same server:
    // keep it only when every run measured the same pid.
    if !runs
        .iter()
        .all(|r| r.server.as_ref().map(|s| s.pid) == first.server.as_ref().map(|s| s.pid))
    {
        out.server = None;
    }
    out.merged_from = sources;
    Ok(out)
}

/// The end-of-run summary on stdout: percentile table, counters, rates, honesty notes.
pub fn print_summary(run: &RunResult, out: &mut impl Write) -> std::io::Result<()> {
    match run.config.get("messages").and_then(|m| m.as_str()) {
        Some(messages) => writeln!(
            out,
            "{} run, {messages} messages, {:.3}s measured",
            run.kind, run.measured_s
        )?,
        None => writeln!(out, "{} run, {:.3}s measured", run.kind, run.measured_s)?,
    }
    if let Some(i) = &run.interval {
        writeln!(
            out,
            "rates and server CPU over {:.3}s ({})",
            i.seconds, i.name
        )?;
    }
    for (name, h) in &run.histograms {
        let p = &h.percentiles;
        writeln!(out, "\n{name} ({} samples)", p.count)?;
        writeln!(
            out,
            "  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "p50", "p90", "p99", "p99.9", "p99.99", "max"
        )?;
        writeln!(
            out,
            "  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            p.p50, p.p90, p.p99, p.p99_9, p.p99_99, p.max
        )?;
    }
    writeln!(out, "\ncounters")?;
    for (k, v) in &run.counters {
        writeln!(out, "  {k:<24} {v}")?;
    }
    if !run.close_codes.is_empty() {
        writeln!(out, "close codes")?;
        for (k, v) in &run.close_codes {
            writeln!(out, "  {k:<24} {v}")?;
        }
    }
    writeln!(out, "rates")?;
    for (k, v) in &run.rates {
        writeln!(out, "  {k:<24} {v:.3}")?;
    }
    if let Some(correct) = run.correct {
        writeln!(
            out,
            "deliveries: {}",
            if correct {
                "all accounted for"
            } else {
                "NOT all accounted for (see lost, holes, out_of_order, duplicates, misrouted, \
                 disconnects_during_run)"
            }
        )?;
    }
    if let Some(v) = &run.verdicts {
        let after = match v.last_arrival_after_end_s {
            None => "none arrived".to_string(),
            Some(s) if s < 0.0 => format!("{:.3}s before the window's end", -s),
            Some(s) => format!("{s:.3}s after the window's end"),
        };
        writeln!(
            out,
            "server: {} (last measured delivery {after}; bound {:.3}s)",
            if v.kept_up {
                "kept up with the window"
            } else {
                "FELL BEHIND the window"
            },
            v.kept_up_bound_s
        )?;
        if v.loader_late {
            writeln!(
                out,
                "loader: LATE, send lag p99 {} us over {} us: latency includes the loader's own \
                 lateness",
                v.send_lag_p99_us.unwrap_or(0),
                v.loader_late_p99_us
            )?;
        }
    }
    let l = &run.loader;
    writeln!(
        out,
        "loader: {:.1}% of a core per thread ({} threads, user {:.3}s sys {:.3}s){}",
        l.busy_per_thread * 100.0,
        l.threads,
        l.user_s,
        l.sys_s,
        if l.loader_bound {
            " -- LOADER-BOUND: the loader may have been the bottleneck"
        } else {
            ""
        }
    )?;
    if let Some(s) = &run.server {
        write!(
            out,
            "server pid {}: user {:.3}s sys {:.3}s",
            s.pid, s.user_s, s.sys_s
        )?;
        if let Some(per) = s.cpu_us_per_delivery {
            write!(out, ", {per:.2} us CPU per delivery")?;
        }
        writeln!(out)?;
        for t in &s.threads {
            writeln!(
                out,
                "  {:>8} {:<16} user {:.3}s sys {:.3}s",
                t.tid,
                t.name,
                t.user_us as f64 / 1e6,
                t.sys_us as f64 / 1e6
            )?;
        }
    }
    Ok(())
}

/// The percentiles of a stored histogram, recomputed.
#[cfg(test)]
pub fn recomputed(h: &StoredHistogram) -> anyhow::Result<crate::histo::Percentiles> {
    Ok(crate::histo::percentiles(&h.to_histogram()?))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::histo::{new_histogram, record_ns};

    pub fn sample_run(label: &str, latencies_us: &[u64], delivered: u64) -> RunResult {
        let mut h = new_histogram();
        for us in latencies_us {
            record_ns(&mut h, us * 1_000);
        }
        RunResult {
            schema: SCHEMA.into(),
            kind: "chat".into(),
            labels: [("pattern".to_string(), label.to_string())].into(),
            started_unix_s: 1,
            command: vec!["bench-client".into(), "chat".into()],
            config: serde_json::json!({"conns": 2}),
            measured_s: 1.0,
            counters: [("received".to_string(), delivered)].into(),
            close_codes: BTreeMap::new(),
            rates: [("delivered_per_s".to_string(), delivered as f64)].into(),
            histograms: [(
                "latency_us".to_string(),
                StoredHistogram::from_histogram(&h).unwrap(),
            )]
            .into(),
            correct: Some(true),
            loader: LoaderCpu::new(CpuTime::default(), std::time::Duration::from_secs(1), 1),
            server: None,
            verdicts: None,
            interval: None,
            runs: 1,
            merged_from: vec![],
        }
    }

    #[test]
    fn json_round_trip() {
        let run = sample_run("single-thread", &[10, 20, 30], 3);
        let text = serde_json::to_string_pretty(&run).unwrap();
        let back: RunResult = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);
        assert_eq!(
            back.histograms["latency_us"].to_histogram().unwrap(),
            run.histograms["latency_us"].to_histogram().unwrap()
        );
    }

    #[test]
    fn merge_adds_histograms_and_counters_never_averages() {
        let fast = sample_run("a", &[100; 90], 90);
        let slow = sample_run("a", &[10_000; 10], 10);
        let merged = merge(&[fast, slow], vec!["x".into(), "y".into()]).unwrap();
        assert_eq!(merged.counters["received"], 100);
        assert_eq!(merged.runs, 2);
        let p = merged.histograms["latency_us"].percentiles;
        assert_eq!(p.count, 100);
        assert!((99..=100).contains(&p.p50));
        assert!(p.p99 >= 9_990);
        assert_eq!(recomputed(&merged.histograms["latency_us"]).unwrap(), p);
        assert_eq!(merged.labels["pattern"], "a");
    }

    #[test]
    fn merge_rejects_different_kinds_and_drops_disagreeing_labels() {
        let a = sample_run("a", &[1], 1);
        let mut b = sample_run("b", &[1], 1);
        let merged = merge(&[a.clone(), b.clone()], vec![]).unwrap();
        assert!(!merged.labels.contains_key("pattern"));
        b.kind = "ping".into();
        assert!(merge(&[a, b], vec![]).is_err());
    }

    #[test]
    fn verdicts_round_trip_and_old_files_without_them_still_load_and_merge() {
        let old = sample_run("a", &[10], 1);
        let old_text = serde_json::to_string(&old).unwrap();
        assert!(!old_text.contains("verdicts"));
        let mut new = sample_run("a", &[20], 1);
        let verdicts = Verdicts {
            kept_up: false,
            kept_up_bound_s: 0.1,
            last_arrival_after_end_s: Some(0.5),
            loader_late: false,
            loader_late_p99_us: 1_000,
            send_lag_p99_us: Some(80),
        };
        new.verdicts = Some(verdicts.clone());
        let back: RunResult = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back.verdicts, Some(verdicts.clone()));
        let old_back: RunResult = serde_json::from_str(&old_text).unwrap();
        assert_eq!(old_back.verdicts, None);
        assert_eq!(
            merge(&[new.clone(), old_back], vec![]).unwrap().verdicts,
            None
        );
        let mut kept = new.clone();
        kept.verdicts = Some(Verdicts {
            kept_up: true,
            last_arrival_after_end_s: Some(0.01),
            loader_late: true,
            send_lag_p99_us: Some(2_000),
            ..verdicts
        });
        let merged = merge(&[new, kept], vec![]).unwrap().verdicts.unwrap();
        assert!(!merged.kept_up && merged.loader_late);
        assert_eq!(merged.last_arrival_after_end_s, Some(0.5));
        assert_eq!(merged.send_lag_p99_us, Some(2_000));
    }

    #[test]
    fn loader_bound_threshold() {
        let busy = CpuTime {
            user_us: 1_900_000,
            sys_us: 0,
        };
        assert!(LoaderCpu::new(busy, std::time::Duration::from_secs(1), 2).loader_bound);
        assert!(!LoaderCpu::new(busy, std::time::Duration::from_secs(1), 3).loader_bound);
    }
}
