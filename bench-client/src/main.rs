//! bench-client: the wschat load generator.
//!
//! ```text
//!   main.rs      flags -> validated configs -> run -> results document -> exit code
//!   cli.rs       clap flags of every subcommand
//!   load/        chat / saturate / ping: the phases (main thread), the loader threads'
//!                mio loops and their traffic, the outcome and its verdict
//!   connect.rs   the handshake storm
//!   counters.rs  typed counter sets (one field list: struct, sum, results names)
//!   schedule.rs  open-loop timetables (due times fixed in advance)
//!   track.rs     per-sender sequence accounting (lost, out of order, duplicate)
//!   payload.rs   the text and binary message layouts (stamp, sender, sequence)
//!   handshake.rs the client's upgrade: request, 101 check (pure), the one read loop
//!   wsclient.rs  client side of RFC 6455 framing on the server's own codec (pure)
//!   histo.rs     HdrHistogram configuration, V2/base64, .hgrm
//!   results.rs   the JSON schema, summary, merge        report.rs  markdown + SVG
//!   clock.rs     CLOCK_MONOTONIC ns, timerfd deadlines   cpu.rs     rusage, /proc, rlimit
//!   net.rs       URLs, non-blocking connect from a chosen source address
//!   transport.rs the stream under the client: plain TCP, or rustls on it (wss://), sans-IO
//! ```
//! Invariants: latency is always measured from a message's *scheduled* time (open loop) or
//! its actual send time (closed loop), never from when a loop got round to it; every
//! delivery is classified exactly once; nothing the server sends can panic the loader; all
//! `unsafe` is the getrusage call in cpu.rs and the IP_BIND_ADDRESS_NO_PORT setsockopt in
//! net.rs.
//!
//! Exit codes: 0 ok, 1 run error, 2 usage error.

#![deny(unsafe_code)]

mod cli;
mod clock;
mod connect;
mod counters;
mod cpu;
mod handshake;
mod histo;
mod load;
mod net;
mod payload;
mod report;
mod results;
mod rng;
mod schedule;
mod track;
mod transport;
mod wsclient;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use hdrhistogram::Histogram;

use crate::cli::{Args, Command, LoadArgs, OutputArgs};
use crate::histo::StoredHistogram;
use crate::load::{Drive, LoadConfig, Target};
use crate::payload::{Fill, Messages};
use crate::results::{LoaderCpu, RunResult, SCHEMA, ServerCpu};

/// Reports a usage problem the way clap does, and exits 2.
fn usage_error(message: String) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

fn parse_labels(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => (k.to_string(), v.to_string()),
            _ => usage_error(format!("--label {l}: expected KEY=VALUE")),
        })
        .collect()
}

fn seed(output: &OutputArgs) -> u64 {
    output
        .seed
        .unwrap_or_else(|| clock::now_ns() ^ u64::from(std::process::id()) << 32)
}

fn check_rate(rate: f64, conns: u64) {
    if !rate.is_finite() || rate <= 0.0 {
        usage_error(format!("--rate {rate}: must be a positive number"));
    }
    // Each connection's period is conns/rate; below a microsecond the timetable is
    // meaningless (and the loader could never keep it).
    if conns as f64 / rate < 1e-6 {
        usage_error(format!(
            "--rate {rate} over {conns} connections is above 1e6 messages/s per connection"
        ));
    }
}

fn check_payload(payload: usize, messages: Messages) {
    if payload < messages.min_payload() {
        usage_error(format!(
            "--payload {payload}: at least {} bytes for {} messages (stamp, sender, sequence)",
            messages.min_payload(),
            messages.name(),
        ));
    }
}

/// The message type and padding `--binary` and `--fill` ask for: text messages are always
/// padded with words, so `--fill zeros` without `--binary` is a usage error rather than a
/// flag quietly ignored.
fn messages(args: &cli::MessageArgs) -> (Messages, Fill) {
    match (args.binary, args.fill) {
        (true, fill) => (Messages::Binary, fill.unwrap_or(Fill::Zeros)),
        (false, None | Some(Fill::Text)) => (Messages::Text, Fill::Text),
        (false, Some(Fill::Zeros)) => usage_error(
            "--fill zeros needs --binary: text messages are padded with words".to_string(),
        ),
    }
}

fn load_config(
    url: &str,
    tls: &cli::TlsArgs,
    target: Target,
    drive: Drive,
    load: &LoadArgs,
    settle_timeout: Duration,
    output: &OutputArgs,
) -> anyhow::Result<LoadConfig> {
    let (messages, fill) = messages(&load.messages);
    check_payload(load.payload, messages);
    if !(load.hot_weight.is_finite() && load.hot_weight > 0.0) {
        usage_error(format!("--hot-weight {}: must be > 0", load.hot_weight));
    }
    let url = self::url(url);
    Ok(LoadConfig {
        tls: tls_client(&url, tls),
        url,
        target,
        drive,
        conns: load.conns as usize,
        threads: (output.threads as usize).min(load.conns as usize).max(1),
        payload: load.payload,
        messages,
        fill,
        deflate: load.extensions.deflate,
        warmup: load.warmup,
        duration: load.duration,
        drain: load.drain,
        connect_timeout: load.connect_timeout,
        connect_concurrency: load.connect_concurrency as usize,
        settle_timeout,
        source_ips: load.source_ips,
        seed: seed(output),
        progress: !output.quiet,
        server_pid: output.server_pid,
        hot_every: load.hot_every as usize,
        hot_weight: load.hot_weight,
    })
}

/// Builds the results document of a message-load run.
fn load_result(
    kind: &str,
    config: serde_json::Value,
    outcome: &load::LoadOutcome,
    threads: usize,
    output: &OutputArgs,
) -> anyhow::Result<RunResult> {
    let mut histograms = BTreeMap::new();
    histograms.insert(
        "latency_us".to_string(),
        StoredHistogram::from_histogram(&outcome.latency)?,
    );
    histograms.insert(
        "open_us".to_string(),
        StoredHistogram::from_histogram(&outcome.connect)?,
    );
    if !outcome.send_lag.is_empty() {
        histograms.insert(
            "send_lag_us".to_string(),
            StoredHistogram::from_histogram(&outcome.send_lag)?,
        );
    }
    let deliveries = outcome.counters.received_measured;
    Ok(RunResult {
        schema: SCHEMA.into(),
        kind: kind.into(),
        labels: parse_labels(&output.labels),
        started_unix_s: results::now_unix_s(),
        command: std::env::args().collect(),
        config,
        measured_s: outcome.measured.as_secs_f64(),
        counters: outcome.counters.to_map(),
        close_codes: outcome.close_codes.clone(),
        rates: outcome.rates.clone(),
        histograms,
        correct: Some(outcome.correct),
        loader: LoaderCpu::new(outcome.loader_cpu, outcome.measured, threads),
        server: match (output.server_pid, &outcome.server_cpu) {
            (Some(pid), Some(cpu)) => Some(ServerCpu::new(
                pid,
                Some(load::INTERVAL_NAME),
                cpu,
                deliveries,
            )),
            _ => None,
        },
        verdicts: Some(outcome.verdicts.clone()),
        interval: Some(results::Interval {
            name: load::INTERVAL_NAME.into(),
            seconds: outcome.interval.as_secs_f64(),
        }),
        runs: 1,
        merged_from: vec![],
    })
}

/// Prints the summary and writes --json / --hgrm.
fn emit(run: &RunResult, hgrm_source: &Histogram<u64>, output: &OutputArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    results::print_summary(run, &mut stdout.lock())?;
    if let Some(path) = &output.json {
        results::save(run, path)?;
    }
    if let Some(path) = &output.hgrm {
        write_hgrm_file(hgrm_source, path)?;
    }
    Ok(())
}

fn write_hgrm_file(hist: &Histogram<u64>, path: &std::path::Path) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    histo::write_hgrm(hist, &mut file)?;
    std::io::Write::flush(&mut file)?;
    Ok(())
}

fn run_load(
    kind: &str,
    cfg: LoadConfig,
    config_json: serde_json::Value,
    output: &OutputArgs,
    require_correct: bool,
) -> anyhow::Result<ExitCode> {
    let threads = cfg.threads;
    let outcome = load::run(cfg)?;
    let run = load_result(kind, config_json, &outcome, threads, output)?;
    emit(&run, &outcome.latency, output)?;
    if require_correct && !outcome.correct {
        eprintln!("bench-client: not every delivery was accounted for (--require-correct)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Usage problems are reported before anything connects (exit 2, not a failed run).
fn validate(args: &Args) {
    let output = match &args.command {
        Command::Chat(a) => &a.room.output,
        Command::Saturate(a) => &a.room.output,
        Command::Ping(a) => &a.output,
        Command::Connect(a) => &a.output,
        Command::Report(_) | Command::Merge(_) => return,
    };
    parse_labels(&output.labels);
}

fn url(raw: &str) -> net::WsUrl {
    net::parse_url(raw).unwrap_or_else(|e| usage_error(format!("--url {raw}: {e:#}")))
}

/// The TLS client of a `wss://` run (None for `ws://`); a missing trust choice or an
/// unreadable --ca file is a usage error, reported before anything connects.
fn tls_client(url: &net::WsUrl, args: &cli::TlsArgs) -> Option<transport::TlsClient> {
    if !url.tls {
        return None;
    }
    // No public root certificates are built in: the servers under test are ours.
    let trust = match (&args.ca, args.insecure) {
        (Some(path), _) => transport::Trust::CaFile(path.clone()),
        (None, true) => transport::Trust::AnyCertificate,
        (None, false) => usage_error(
            "wss:// needs --insecure (accept any certificate) or --ca FILE (trust this PEM \
             certificate)"
                .into(),
        ),
    };
    Some(
        transport::TlsClient::new(&trust, &url.hostname)
            .unwrap_or_else(|e| usage_error(format!("TLS: {e:#}"))),
    )
}

/// `chat` and `saturate`: connections in rooms, driven open- or closed-loop; `extra` holds
/// the drive's own settings for the results' `config`.
fn run_rooms(
    kind: &str,
    a: &cli::RoomLoadArgs,
    drive: Drive,
    extra: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    if a.rooms > a.load.conns {
        usage_error(format!(
            "--rooms {} exceeds --conns {}",
            a.rooms, a.load.conns
        ));
    }
    let fd_cap = cpu::raise_fd_limit();
    let cfg = load_config(
        &a.url,
        &a.tls,
        Target::Chat {
            rooms: a.rooms as usize,
            room_prefix: a.room_prefix.clone(),
        },
        drive,
        &a.load,
        a.settle_timeout,
        &a.output,
    )?;
    let mut json = serde_json::json!({
        "url": a.url, "conns": a.load.conns, "rooms": a.rooms,
        "duration_s": a.load.duration.as_secs_f64(), "warmup_s": a.load.warmup.as_secs_f64(),
        "drain_s": a.load.drain.as_secs_f64(), "payload": a.load.payload,
        "messages": cfg.messages.name(), "fill": cfg.fill.name(),
        "deflate_offered": cfg.deflate,
        "threads": cfg.threads, "source_ips": a.load.source_ips, "seed": cfg.seed,
        "tls": cfg.tls.is_some(),
        "fd_limit": fd_cap,
    });
    if let (Some(json), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
        json.extend(extra);
    }
    run_load(kind, cfg, json, &a.output, a.load.require_correct)
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    validate(&args);
    match args.command {
        Command::Chat(a) => {
            check_rate(a.rate, a.room.load.conns);
            let load = &a.room.load;
            let extra = serde_json::json!({
                "rate": a.rate, "hot_every": load.hot_every, "hot_weight": load.hot_weight,
            });
            run_rooms("chat", &a.room, Drive::OpenLoop { rate: a.rate }, extra)
        }
        Command::Saturate(a) => {
            let extra = serde_json::json!({ "window": a.window });
            run_rooms(
                "saturate",
                &a.room,
                Drive::ClosedLoop { window: a.window },
                extra,
            )
        }
        Command::Ping(a) => {
            check_rate(a.rate, a.conns);
            let load = LoadArgs {
                conns: a.conns,
                duration: a.duration,
                warmup: a.warmup,
                drain: a.drain,
                payload: a.payload,
                messages: a.messages.clone(),
                connect_timeout: a.connect_timeout,
                connect_concurrency: 256,
                source_ips: 1,
                require_correct: a.require_correct,
                hot_every: 0,
                hot_weight: 10.0,
                extensions: a.extensions.clone(),
            };
            let cfg = load_config(
                &a.url,
                &a.tls,
                Target::Echo,
                Drive::OpenLoop { rate: a.rate },
                &load,
                Duration::ZERO,
                &a.output,
            )?;
            let json = serde_json::json!({
                "url": a.url, "conns": a.conns, "rate": a.rate,
                "duration_s": a.duration.as_secs_f64(), "warmup_s": a.warmup.as_secs_f64(),
                "drain_s": a.drain.as_secs_f64(), "payload": a.payload,
                "messages": cfg.messages.name(), "fill": cfg.fill.name(),
                "deflate_offered": cfg.deflate,
                "threads": cfg.threads, "seed": cfg.seed, "tls": cfg.tls.is_some(),
            });
            run_load("ping", cfg, json, &a.output, a.require_correct)
        }
        Command::Connect(a) => run_connect(a),
        Command::Report(a) => {
            let files = report::collect_files(&a.inputs)?;
            anyhow::ensure!(!files.is_empty(), "no results files found");
            let rows = report::load_rows(&files)?;
            let md = report::markdown(&rows, a.group_by.as_deref());
            match &a.out_dir {
                None => print!("{md}"),
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    let md = format!(
                        "{md}![latency by percentile](latency.svg)\n\n![throughput](throughput.svg)\n"
                    );
                    std::fs::write(dir.join("report.md"), md)?;
                    std::fs::write(dir.join("latency.svg"), report::latency_svg(&rows)?)?;
                    std::fs::write(dir.join("throughput.svg"), report::throughput_svg(&rows))?;
                    eprintln!(
                        "wrote {}/report.md, latency.svg, throughput.svg",
                        dir.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge(a) => {
            let runs = a
                .inputs
                .iter()
                .map(|p| results::load(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let sources = a.inputs.iter().map(|p| p.display().to_string()).collect();
            let merged = results::merge(&runs, sources)?;
            results::save(&merged, &a.output)?;
            if let Some(path) = &a.hgrm {
                let hist = match merged.histograms.get("latency_us") {
                    Some(h) => h.to_histogram()?,
                    None => histo::new_histogram(),
                };
                write_hgrm_file(&hist, path)?;
            }
            results::print_summary(&merged, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_connect(a: cli::ConnectArgs) -> anyhow::Result<ExitCode> {
    let fd_cap = cpu::raise_fd_limit();
    // The kernel counts every socket plus the loader's own few descriptors against the limit.
    const FD_RESERVE: u64 = 32;
    let cap = fd_cap.saturating_sub(FD_RESERVE);
    eprintln!("fd limit {fd_cap}: at most about {cap} concurrent connections per process");
    if a.hold && a.conns > cap {
        eprintln!("warning: --hold with --conns {} exceeds that cap", a.conns);
    }
    let threads = (a.output.threads as usize).min(a.conns as usize).max(1);
    let url = url(&a.url);
    let tls = url.tls;
    let cfg = connect::ConnectConfig {
        tls: tls_client(&url, &a.tls),
        url,
        conns: a.conns as usize,
        concurrency: a.concurrency as usize,
        threads,
        timeout: a.timeout,
        time_limit: a.time_limit,
        hold: a.hold,
        source_ips: a.source_ips,
        seed: seed(&a.output),
        deflate: a.extensions.deflate,
    };
    let cpu_before = cpu::self_cpu();
    let server_before = a.output.server_pid.and_then(cpu::process_cpu);
    let outcome = connect::run(cfg)?;
    let loader_cpu = cpu::self_cpu().since(cpu_before);
    let server = match (
        a.output.server_pid,
        server_before,
        a.output.server_pid.and_then(cpu::process_cpu),
    ) {
        (Some(pid), Some(before), Some(after)) => Some(ServerCpu::new(
            pid,
            None,
            &cpu::process_cpu_delta(&before, &after),
            0,
        )),
        _ => None,
    };
    let handshakes = outcome.counters.handshakes;
    let wall_s = outcome.wall.as_secs_f64().max(1e-9);
    let mut rates = BTreeMap::new();
    rates.insert("handshakes_per_s".to_string(), handshakes as f64 / wall_s);
    rates.insert("wall_s".to_string(), wall_s);
    let mut histograms = BTreeMap::new();
    histograms.insert(
        "connect_us".to_string(),
        StoredHistogram::from_histogram(&outcome.connect)?,
    );
    histograms.insert(
        "upgrade_us".to_string(),
        StoredHistogram::from_histogram(&outcome.upgrade)?,
    );
    if tls {
        histograms.insert(
            "tls_us".to_string(),
            StoredHistogram::from_histogram(&outcome.tls)?,
        );
    }
    let run = RunResult {
        schema: SCHEMA.into(),
        kind: "connect".into(),
        labels: parse_labels(&a.output.labels),
        started_unix_s: results::now_unix_s(),
        command: std::env::args().collect(),
        config: serde_json::json!({
            "url": a.url, "conns": a.conns, "concurrency": a.concurrency,
            "timeout_s": a.timeout.as_secs_f64(), "hold": a.hold, "source_ips": a.source_ips,
            "threads": threads, "fd_limit": fd_cap, "tls": tls,
        }),
        measured_s: wall_s,
        counters: outcome.counters.to_map(),
        close_codes: BTreeMap::new(),
        rates,
        histograms,
        correct: None,
        loader: LoaderCpu::new(loader_cpu, outcome.wall, threads),
        server,
        verdicts: None,
        interval: None,
        runs: 1,
        merged_from: vec![],
    };
    // The .hgrm of a connect run is the upgrade latency (the WebSocket part of the storm).
    emit(&run, &outcome.upgrade, &a.output)?;
    Ok(if handshakes == 0 {
        eprintln!("bench-client: no handshake succeeded");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench-client: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
