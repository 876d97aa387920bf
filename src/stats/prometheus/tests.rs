//! The rendering against a golden text, and every rendering through a small checker of the
//! exposition syntax, so that a scraper would take what the golden text holds.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::stats::{CounterValues, SectionMetric, ThreadReport};

/// Where the golden text lives; `WSCHAT_BLESS=1 cargo test --lib stats::prometheus` rewrites
/// it from the current rendering (then review its diff and run the tests again).
const GOLDEN_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/stats/prometheus/golden.prom"
);
const GOLDEN: &str = include_str!("golden.prom");

fn report_with(role: &'static str, pattern: &'static str) -> Report {
    let loop0 = CounterValues {
        accepted: 3,
        active: 2,
        frames_in: 7,
        frames_out: 10,
        members: 1,
        wakeups: 40,
        ..CounterValues::default()
    };
    let worker = CounterValues {
        accepted: 4,
        queue_depth: 5,
        work_items: 9,
        ..CounterValues::default()
    };
    let mut totals = CounterValues::default();
    totals.add(&loop0);
    totals.add(&worker);
    Report {
        pattern,
        io: "uring",
        uptime_secs: 12.5,
        totals,
        threads: vec![
            ThreadReport {
                id: 0,
                role: "loop",
                counters: loop0,
            },
            ThreadReport {
                id: 1,
                role,
                counters: worker,
            },
        ],
        cluster: None,
        cluster_metrics: vec![
            SectionMetric {
                name: "cluster_info",
                kind: Kind::Gauge,
                help: "The node's id and its Redis.",
                labels: vec![("node", "n1".into()), ("redis", "redis://h:6379/0".into())],
                value: 1,
            },
            SectionMetric {
                name: "cluster_who_refused",
                kind: Kind::Counter,
                help: "/who answered from this node alone.",
                labels: Vec::new(),
                value: 2,
            },
        ],
    }
}

fn report() -> Report {
    report_with("worker", "work-queue")
}

#[test]
fn renders_the_golden_text() {
    let text = report().to_prometheus();
    if std::env::var_os("WSCHAT_BLESS").is_some() {
        std::fs::write(GOLDEN_PATH, &text).expect("write the golden text");
    }
    if let Some((n, (got, want))) = text
        .lines()
        .zip(GOLDEN.lines())
        .enumerate()
        .find(|(_, (got, want))| got != want)
    {
        panic!(
            "line {} differs from {GOLDEN_PATH}:\n got: {got}\nwant: {want}\n\
             (if the change is meant, WSCHAT_BLESS=1 rewrites the file: review its diff)",
            n + 1
        );
    }
    let (got, want) = (text.lines().count(), GOLDEN.lines().count());
    assert_eq!(
        got, want,
        "{got} lines, {GOLDEN_PATH} has {want} (WSCHAT_BLESS=1 rewrites it: review its diff)"
    );
    assert_eq!(text, GOLDEN, "the same lines, different line ends");
}

#[test]
fn the_rendering_is_valid_exposition_text() {
    let samples = check_exposition(&report().to_prometheus()).unwrap();
    // info, uptime, one series per thread for each field, then the cluster section's.
    assert_eq!(samples.len(), 2 + 2 * FIELDS.len() + 2);
    check_exposition(GOLDEN).unwrap();
}

#[test]
fn every_field_has_a_help_text_and_a_valid_name() {
    for field in FIELDS {
        assert!(
            !field.doc.trim().is_empty(),
            "{} has no doc comment",
            field.name
        );
        check_name(&metric_name(field)).unwrap();
    }
}

#[test]
fn names_say_the_kind() {
    let text = report().to_prometheus();
    assert!(
        text.contains("# TYPE wschat_accepted_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE wschat_active gauge\n"), "{text}");
    assert!(text.contains("# TYPE wschat_queue_depth gauge\n"), "{text}");
    assert!(text.contains("wschat_info{pattern=\"work-queue\",io=\"uring\"} 1\n"));
    assert!(text.contains("wschat_uptime_seconds 12.5\n"));
    assert!(text.contains("wschat_frames_out_total{thread=\"0\",role=\"loop\"} 10\n"));
    assert!(text.contains("# TYPE wschat_cluster_who_refused_total counter\n"));
    assert!(text.contains("wschat_cluster_info{node=\"n1\",redis=\"redis://h:6379/0\"} 1\n"));
    for field in FIELDS {
        let name = metric_name(field);
        assert_eq!(
            name.ends_with("_total"),
            field.kind == Kind::Counter,
            "{name}: only counters end in _total"
        );
    }
}

/// No totals series: the threads' series sum to the report's totals, which is what a
/// `sum(...)` in Prometheus shows.
#[test]
fn the_threads_sum_to_the_totals() {
    let report = report();
    let samples = check_exposition(&report.to_prometheus()).unwrap();
    for (field, total) in FIELDS.iter().zip(report.totals.values()) {
        let name = metric_name(field);
        let series: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        assert_eq!(series.len(), report.threads.len(), "{name}");
        assert!(series.iter().all(|s| s.labels.len() == 2), "{name}");
        let sum: f64 = series.iter().map(|s| s.value).sum();
        assert_eq!(sum, total as f64, "{name}");
    }
}

#[test]
fn label_values_are_escaped() {
    let role = "a \"quoted\" \\ role\nover two lines";
    let text = report_with(role, "back\\slash").to_prometheus();
    let samples = check_exposition(&text).unwrap();
    assert!(
        text.contains("role=\"a \\\"quoted\\\" \\\\ role\\nover two lines\""),
        "{text}"
    );
    let roles: HashSet<&str> = samples
        .iter()
        .flat_map(|s| &s.labels)
        .filter(|(label, _)| label == "role")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(roles, HashSet::from(["loop", role]));
    let info = samples.iter().find(|s| s.name == "wschat_info").unwrap();
    assert_eq!(info.labels[0], ("pattern".into(), "back\\slash".into()));
}

#[test]
fn help_text_is_escaped() {
    let mut out = String::new();
    header(&mut out, "x", "a \\ b\nc \"d\"", Kind::Gauge);
    assert_eq!(out, "# HELP x a \\\\ b\\nc \"d\"\n# TYPE x gauge\n");
}

/// The checker has teeth: each of these breaks one rule of the format.
#[test]
fn the_checker_rejects_broken_text() {
    let broken = [
        ("x 1\n", "sample before its TYPE"),
        ("# TYPE x gauge\n# TYPE x gauge\nx 1\n", "two TYPE lines"),
        (
            "# TYPE x gauge\nx 1\n# TYPE x counter\n",
            "TYPE after samples",
        ),
        ("# TYPE x nonsense\nx 1\n", "unknown type"),
        ("# TYPE x gauge\nx\n", "no value"),
        ("# TYPE x gauge\nx one\n", "value not a number"),
        ("# TYPE x gauge\nx 1 2 3\n", "too many fields"),
        ("# TYPE x-y gauge\nx-y 1\n", "bad metric name"),
        (
            "# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",
            "same series twice",
        ),
        ("# TYPE x gauge\nx{a=\"b\"c\"} 1\n", "unescaped quote"),
        ("# TYPE x gauge\nx{a=\"\\t\"} 1\n", "unknown escape"),
        ("# TYPE x gauge\nx{a=\"1\"\n", "unterminated labels"),
        ("# TYPE x gauge\nx{a=1} 1\n", "unquoted label value"),
        ("# TYPE x gauge\nx{1a=\"1\"} 1\n", "bad label name"),
        ("# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n", "repeated label"),
        (
            "# TYPE x gauge\n# TYPE y gauge\nx 1\ny 1\nx{a=\"1\"} 1\n",
            "a family's samples apart",
        ),
        (
            "# HELP x a \\t b\n# TYPE x gauge\nx 1\n",
            "bad escape in HELP",
        ),
        ("# TYPE x gauge\nx 1", "no final line feed"),
    ];
    for (text, why) in broken {
        assert!(
            check_exposition(text).is_err(),
            "accepted ({why}): {text:?}"
        );
    }
    let fine = "# HELP x x's help\n# TYPE x gauge\nx{a=\"\\\"\"} +Inf\nx -1.5e3 1700000000\n\n";
    check_exposition(fine).unwrap();
}

/// One parsed sample line.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Checks `text` against the text exposition format 0.0.4 as far as this server uses it:
/// every line ends with a line feed; `# HELP` and `# TYPE` name a valid metric, HELP escapes
/// only `\\` and `\n`, TYPE is a known type, comes at most once and before the metric's
/// samples; every sample is `name{label="value",...} number [timestamp]` with valid names,
/// escaped values and no label twice, its metric was typed, no series appears twice, and a
/// metric's lines are not split by another's. Returns the samples.
fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line has no line feed".into());
    }
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut sampled: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    // A metric's lines (HELP, TYPE, samples) are together: once another's start, it is over.
    let mut enter = |name: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() == Some(name) {
            return Ok(());
        }
        if finished.contains(name) {
            return Err(format!("the lines of {name} are not together"));
        }
        if let Some(previous) = current.take() {
            finished.insert(previous);
        }
        *current = Some(name.to_string());
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), help) => {
                    check_name(name).map_err(at)?;
                    check_help(help.unwrap_or("")).map_err(at)?;
                    if !helped.insert(name.to_string()) {
                        return Err(at("a second HELP".into()));
                    }
                    enter(name, &mut current).map_err(at)?;
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    check_name(name).map_err(at)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if sampled.contains(name) {
                        return Err(at("TYPE after the metric's samples".into()));
                    }
                    if typed.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("a second TYPE".into()));
                    }
                    enter(name, &mut current).map_err(at)?;
                }
                (Some("TYPE"), ..) => return Err(at("TYPE without name and type".into())),
                _ => {} // any other comment
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        // Counters and gauges (all this server emits) are typed under the sample's own name.
        if !typed.contains_key(&sample.name) {
            return Err(at("a sample without a TYPE line before it".into()));
        }
        enter(&sample.name, &mut current).map_err(at)?;
        sampled.insert(sample.name.clone());
        let mut labels = sample.labels.clone();
        labels.sort();
        if !series.insert(format!("{}{labels:?}", sample.name)) {
            return Err(at("the same series twice".into()));
        }
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value after the name".to_string())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without '='")?;
            let label = &rest[..eq];
            check_label_name(label)?;
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("a label value not in quotes")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("an unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("a bad escape in a label value: {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            rest = &rest[end + 1..];
            if labels.iter().any(|(l, _)| l == label) {
                return Err(format!("label {label} twice"));
            }
            labels.push((label.to_string(), value));
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("expected ',' or '}' after a label".into());
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or(""))?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("timestamp {timestamp:?} is not an integer"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A Go `ParseFloat` number as the format takes it: decimal, or `+Inf`, `-Inf`, `NaN`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    // Rust's parser also takes "inf" and "nan", which the format does not.
    if text.is_empty() || !text.chars().all(|c| "0123456789.eE+-".contains(c)) {
        return Err(format!("value {text:?} is not a number"));
    }
    text.parse()
        .map_err(|_| format!("value {text:?} is not a number"))
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__") {
        Ok(())
    } else {
        Err(format!("{name:?} is not a label name"))
    }
}

/// HELP text escapes only `\\` and `\n`.
fn check_help(help: &str) -> Result<(), String> {
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
            return Err("a bad escape in HELP text".into());
        }
    }
    Ok(())
}
