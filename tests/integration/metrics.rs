//! `GET /metrics`: the /stats counters as Prometheus text, one series per thread; and the
//! sample Grafana dashboard that reads them.

use crate::common::Setup;

/// The sum over every series of `name` (what Prometheus' `sum(name)` shows), after checking
/// that each sample line of `text` is `name{labels} number`.
fn sum_of(text: &str, name: &str) -> f64 {
    let mut sum = 0.0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a value that is not a number: {line:?}"));
        let metric = series.split('{').next().unwrap_or(series);
        if metric == name {
            sum += value;
        }
    }
    sum
}

wstest!(http_metrics_are_prometheus_text_and_move, |s| {
    let server = s.server();
    let first = server.get("/metrics");
    assert_eq!(first.status, 200, "{first:?}");
    let content_type = first.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Content-Type: {content_type:?}"
    );
    let text = first.body_text();
    let info = format!(
        "wschat_info{{pattern=\"{}\",io=\"{}\"}} 1\n",
        s.pattern, s.io
    );
    assert!(text.contains(&info), "no {info:?} in:\n{text}");
    assert!(
        text.contains("# TYPE wschat_accepted_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE wschat_active gauge\n"), "{text}");
    assert!(
        text.contains("# TYPE wschat_uptime_seconds gauge\n"),
        "{text}"
    );
    // One series per thread of /stats, labelled with its id and role; no totals series.
    let threads = server.stats()["threads"].as_array().unwrap().clone();
    for t in &threads {
        let labels = format!(
            "{{thread=\"{}\",role=\"{}\"}}",
            t["id"],
            t["role"].as_str().unwrap()
        );
        assert!(
            text.contains(&format!("wschat_accepted_total{labels} ")),
            "no series for thread {t} in:\n{text}"
        );
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("wschat_accepted_total{"))
        .count();
    assert_eq!(series, threads.len(), "{text}");

    // Each scrape is a connection, counted when accepted, before it is answered: the second
    // scrape sees at least its own on top of the first's.
    let before = sum_of(&text, "wschat_accepted_total");
    assert!(before >= 1.0, "the first scrape's own connection: {text}");
    let second = server.get("/metrics");
    assert_eq!(second.status, 200, "{second:?}");
    let after = sum_of(&second.body_text(), "wschat_accepted_total");
    assert!(
        after > before,
        "accepted did not move: {before} then {after}"
    );
});

/// The sample dashboard (deploy/grafana/wschat.json) is JSON that Grafana can import with any
/// Prometheus data source, and names only metrics the server exports: a renamed counter
/// fails here, not in someone's empty panel.
#[test]
fn the_grafana_dashboard_names_only_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/wschat.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus data source variable: {variables:?}"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut named = Vec::new();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            named.extend(
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("wschat_"))
                    .map(String::from),
            );
        }
    }
    assert!(!named.is_empty(), "no wschat_ metric in any panel");

    let server = Setup::new("single-thread", "epoll", &[]).server();
    let scrape = server.get("/metrics").body_text();
    for name in named {
        assert!(
            scrape.contains(&format!("# TYPE {name} ")),
            "the dashboard names {name}, which /metrics does not export:\n{scrape}"
        );
    }
}
