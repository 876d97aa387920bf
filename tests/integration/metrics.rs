//! `GET /metrics`: the /stats counters as Prometheus text, one series per thread.

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
