//! `report`: results JSON files to markdown tables and hand-written SVG plots.
//!
//! Owns: presentation only. Every number comes from the JSON (percentiles are re-read from
//! the stored histograms), so a report can be regenerated from `results/` at any time.
//! Must never: hide the correctness columns (delivered/expected, order, loader-bound).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::connect::ConnectCounters;
use crate::load::LoadCounters;
use crate::results::{RunResult, load};

/// A run and the name its row and plot line carry.
pub struct Row {
    pub name: String,
    pub run: RunResult,
}

/// Expands directories into the `*.json` files below them, sorted.
pub fn collect_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut stack = vec![input.clone()];
            while let Some(dir) = stack.pop() {
                for entry in
                    std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
                {
                    let path = entry?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|e| e == "json") {
                        files.push(path);
                    }
                }
            }
        } else {
            files.push(input.clone());
        }
    }
    files.sort();
    Ok(files)
}

pub fn load_rows(files: &[PathBuf]) -> anyhow::Result<Vec<Row>> {
    files
        .iter()
        .map(|f| {
            let run = load(f)?;
            Ok(Row {
                name: row_name(f, &run),
                run,
            })
        })
        .collect()
}

/// The labels joined (`pattern=reuseport io=epoll`), or the file stem without labels.
fn row_name(path: &Path, run: &RunResult) -> String {
    if run.labels.is_empty() {
        return path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
    }
    run.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn group_key(run: &RunResult, group_by: Option<&str>) -> String {
    match group_by {
        Some(key) => format!(
            "{key} = {}",
            run.labels.get(key).map_or("(none)", String::as_str)
        ),
        None => String::new(),
    }
}

/// Which messages a message-load run sent: `text` or `binary`. Files written before text
/// messages existed do not say, and every run then sent binary ones.
fn messages_of(run: &RunResult) -> &str {
    run.config
        .get("messages")
        .and_then(|m| m.as_str())
        .unwrap_or("binary")
}

fn fmt_rate(v: Option<&f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// The markdown report: one table per kind (and per group when `group_by` is given).
pub fn markdown(rows: &[Row], group_by: Option<&str>) -> String {
    let mut groups: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for row in rows {
        groups
            .entry((row.run.kind.clone(), group_key(&row.run, group_by)))
            .or_default()
            .push(row);
    }
    let mut out = String::new();
    for ((kind, group), rows) in groups {
        let title = if group.is_empty() {
            kind.clone()
        } else {
            format!("{kind}, {group}")
        };
        let _ = writeln!(out, "### {title}\n");
        if kind == "connect" {
            let _ = writeln!(
                out,
                "| run | conns | handshakes/s | connect p50 µs | connect p99 µs | upgrade p50 µs | upgrade p99 µs | failed | loader-bound |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
            for r in rows {
                let counters = ConnectCounters::from_map(&r.run.counters);
                let c = r.run.histograms.get("connect_us").map(|h| h.percentiles);
                let u = r.run.histograms.get("upgrade_us").map(|h| h.percentiles);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    counters.attempted,
                    fmt_rate(r.run.rates.get("handshakes_per_s")),
                    c.map_or(0, |p| p.p50),
                    c.map_or(0, |p| p.p99),
                    u.map_or(0, |p| p.p50),
                    u.map_or(0, |p| p.p99),
                    counters.failed,
                    if r.run.loader.loader_bound {
                        "**yes**"
                    } else {
                        "no"
                    },
                );
            }
        } else {
            let _ = writeln!(
                out,
                "| run | conns | messages | sent/s | delivered/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | delivered/expected | out of order | dup | loader-bound | kept up | server µs/delivery |"
            );
            let _ = writeln!(
                out,
                "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
            );
            for r in rows {
                let p = r
                    .run
                    .histograms
                    .get("latency_us")
                    .map(|h| h.percentiles)
                    .unwrap_or_default();
                let c = LoadCounters::from_map(&r.run.counters);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}{} | {} | {} | {} | {} | {} |",
                    r.name,
                    c.conns,
                    messages_of(&r.run),
                    fmt_rate(r.run.rates.get("sent_per_s")),
                    fmt_rate(r.run.rates.get("delivered_per_s")),
                    p.p50,
                    p.p90,
                    p.p99,
                    p.p99_9,
                    p.max,
                    c.received,
                    c.expected,
                    if r.run.correct == Some(false) {
                        " ✗"
                    } else {
                        ""
                    },
                    c.out_of_order,
                    c.duplicates,
                    match (r.run.loader.loader_bound, &r.run.verdicts) {
                        (true, _) => "**yes**",
                        (false, Some(v)) if v.loader_late => "**late**",
                        _ => "no",
                    },
                    // Files from before the verdict existed say nothing either way.
                    match &r.run.verdicts {
                        Some(v) if v.kept_up => "yes",
                        Some(_) => "**no**",
                        None => "-",
                    },
                    r.run
                        .server
                        .as_ref()
                        .and_then(|s| s.cpu_us_per_delivery)
                        .map_or("-".into(), |v| format!("{v:.2}")),
                );
            }
        }
        let _ = writeln!(out);
    }
    out
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Latency by percentile, one line per run: x is the number of nines (0 = p0, 1 = p90,
/// 2 = p99, ...), y is log10 of latency in µs: the HdrHistogram percentile plot.
pub fn latency_svg(rows: &[Row]) -> anyhow::Result<String> {
    const W: f64 = 760.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 200.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 50.0;
    const MAX_NINES: f64 = 5.0;
    let mut lines = Vec::new();
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for row in rows {
        let Some(stored) = row.run.histograms.get("latency_us") else {
            continue;
        };
        let h = stored.to_histogram()?;
        if h.is_empty() {
            continue;
        }
        let mut points = Vec::new();
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let nines = if q >= 1.0 {
                MAX_NINES
            } else {
                (-(1.0 - q).log10()).min(MAX_NINES)
            };
            let y = (v.value_iterated_to().max(1) as f64).log10();
            lo = lo.min(y);
            hi = hi.max(y);
            points.push((nines, y));
        }
        lines.push((row.name.clone(), points));
    }
    if lines.is_empty() {
        lo = 0.0;
        hi = 1.0;
    }
    let lo = lo.floor();
    let hi = hi.ceil().max(lo + 1.0);
    let px = |nines: f64| LEFT + nines / MAX_NINES * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (hi - y) / (hi - lo) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">Latency by percentile (µs, log scale)</text>"#,
        (W - RIGHT + LEFT) / 2.0
    );
    for (i, label) in ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"]
        .iter()
        .enumerate()
    {
        let x = px(i as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let y = py(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            10f64.powf(decade) as u64
        );
        decade += 1.0;
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            W - RIGHT + 10.0,
            ly,
            W - RIGHT + 26.0,
            ly + 5.0,
            esc(name)
        );
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

/// Deliveries per second (handshakes per second for connect runs) as horizontal bars.
pub fn throughput_svg(rows: &[Row]) -> String {
    const W: f64 = 760.0;
    const LEFT: f64 = 260.0;
    const BAR: f64 = 18.0;
    const GAP: f64 = 6.0;
    const TOP: f64 = 30.0;
    let values: Vec<(String, f64, bool)> = rows
        .iter()
        .map(|r| {
            let rate = r
                .run
                .rates
                .get("delivered_per_s")
                .or_else(|| r.run.rates.get("handshakes_per_s"))
                .copied()
                .unwrap_or(0.0);
            (
                format!("{} ({})", r.name, r.run.kind),
                rate,
                r.run.loader.loader_bound,
            )
        })
        .collect();
    let max = values.iter().map(|v| v.1).fold(1.0, f64::max);
    let h = TOP + values.len() as f64 * (BAR + GAP) + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">Throughput (deliveries/s; handshakes/s for connect; hatched = loader-bound)</text>"#,
        W / 2.0
    );
    for (i, (name, rate, bound)) in values.iter().enumerate() {
        let y = TOP + i as f64 * (BAR + GAP);
        let width = rate / max * (W - LEFT - 90.0);
        let color = PALETTE[i % PALETTE.len()];
        let opacity = if *bound { "0.35" } else { "1" };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{LEFT}" y="{y}" width="{width:.1}" height="{BAR}" fill="{color}" fill-opacity="{opacity}"/><text x="{}" y="{}">{rate:.0}</text>"#,
            LEFT - 6.0,
            y + 13.0,
            esc(name),
            LEFT + width + 4.0,
            y + 13.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample_run;

    fn rows() -> Vec<Row> {
        vec![
            Row {
                name: "pattern=single-thread".into(),
                run: sample_run("single-thread", &[50, 60, 70, 5_000], 4),
            },
            Row {
                name: "pattern=reuseport".into(),
                run: sample_run("reuseport", &[40, 45], 2),
            },
        ]
    }

    #[test]
    fn markdown_groups_and_shows_correctness_columns() {
        let md = markdown(&rows(), Some("pattern"));
        assert!(md.contains("### chat, pattern = reuseport"));
        assert!(md.contains("### chat, pattern = single-thread"));
        assert!(md.contains("delivered/expected"));
        assert!(md.contains("loader-bound"));
        assert_eq!(md.matches("| pattern=").count(), 2);
    }

    #[test]
    fn messages_column_says_text_or_binary() {
        let mut rows = rows();
        rows[0].run.config = serde_json::json!({"conns": 2, "messages": "text"});
        let md = markdown(&rows, None);
        assert!(md.contains("| messages |"));
        assert_eq!(md.matches("| text |").count(), 1);
        // The other file predates the field: it sent binary.
        assert_eq!(md.matches("| binary |").count(), 1);
    }

    #[test]
    fn kept_up_column_is_blank_for_old_files_and_flags_a_lagging_server() {
        let mut rows = rows();
        let md = markdown(&rows, None);
        assert!(md.contains("| kept up |"));
        // Files from before the verdicts: neither yes nor no.
        assert_eq!(md.matches("| no | - |").count(), 2);
        rows[0].run.verdicts = Some(crate::results::Verdicts {
            kept_up: false,
            kept_up_bound_s: 0.1,
            last_arrival_after_end_s: Some(2.0),
            loader_late: true,
            loader_late_p99_us: 1_000,
            send_lag_p99_us: Some(5_000),
        });
        let md = markdown(&rows, None);
        assert!(md.contains("| **late** | **no** |"));
    }

    #[test]
    fn svgs_are_well_formed_enough() {
        let svg = latency_svg(&rows()).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        let bars = throughput_svg(&rows());
        assert_eq!(bars.matches("fill-opacity").count(), 2);
        assert!(latency_svg(&[]).unwrap().contains("</svg>"));
    }
}
