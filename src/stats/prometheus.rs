//! `GET /metrics`: a [`Report`] in the Prometheus text exposition format, version 0.0.4
//! (`# HELP`, `# TYPE`, then `name{labels} value` lines).
//!
//! Owns: metric names, types, help text and labels, all derived from the one list of counters
//! ([`FIELDS`]), so that `/stats` and `/metrics` cannot disagree on what exists. Must never:
//! read a counter or the clock itself (it renders a report already taken, so it is a pure
//! function of it), or add a per-thread sum: Prometheus sums series itself, and a total
//! series beside the threads' would be counted twice by every `sum(...)`.

use std::fmt::{Display, Write as _};

use super::{FIELDS, Field, Kind, Report};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric name starts with it: the server's metrics stay together beside others'.
const PREFIX: &str = "wschat_";

impl Report {
    /// The report as Prometheus text: `wschat_info` and `wschat_uptime_seconds`, then one
    /// family per field of [`FIELDS`] with a series per thread, labelled with the thread's
    /// id (its index in `/stats`) and role, then the cluster section's numbers (with
    /// --cluster). Counters are named `wschat_<name>_total`, gauges `wschat_<name>`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "wschat_info",
            "The server's execution pattern and I/O backend (always 1).",
            Kind::Gauge,
        );
        sample(
            &mut out,
            "wschat_info",
            &[("pattern", self.pattern), ("io", self.io)],
            1,
        );
        header(
            &mut out,
            "wschat_uptime_seconds",
            "Seconds since the server started.",
            Kind::Gauge,
        );
        sample(&mut out, "wschat_uptime_seconds", &[], self.uptime_secs);

        // Each thread's values once, in the order of FIELDS, so every family below is a
        // column of this table.
        let threads: Vec<(String, &str, Vec<u64>)> = self
            .threads
            .iter()
            .map(|t| (t.id.to_string(), t.role, t.counters.values().collect()))
            .collect();
        for (column, field) in FIELDS.iter().enumerate() {
            let name = metric_name(field);
            header(&mut out, &name, field.doc.trim(), field.kind);
            for (id, role, values) in &threads {
                let value = values.get(column).copied().unwrap_or(0);
                sample(&mut out, &name, &[("thread", id), ("role", role)], value);
            }
        }
        for metric in &self.cluster_metrics {
            let name = metric_name(&Field {
                name: metric.name,
                kind: metric.kind,
                doc: metric.help,
            });
            header(&mut out, &name, metric.help, metric.kind);
            let labels: Vec<(&str, &str)> = metric
                .labels
                .iter()
                .map(|(label, value)| (*label, value.as_str()))
                .collect();
            sample(&mut out, &name, &labels, metric.value);
        }
        out
    }
}

/// `wschat_<field>_total` for a counter, `wschat_<field>` for a gauge (the suffix that
/// Prometheus' naming rules give a counter, and that `rate()` users expect).
fn metric_name(field: &Field) -> String {
    match field.kind {
        Kind::Counter => format!("{PREFIX}{}_total", field.name),
        Kind::Gauge => format!("{PREFIX}{}", field.name),
    }
}

/// The `# HELP` and `# TYPE` lines that open a family.
fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One `name{labels} value` line.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape(value, true));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Escapes help text (`\` and line feed) or a label value (also `"`), as the format
/// requires: one line per sample, whatever a doc comment or a role says.
fn escape(text: &str, label_value: bool) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if label_value => escaped.push_str("\\\""),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests;
