//! Command-line flags (clap derive) for every subcommand.
//!
//! Owns: flag names, defaults and help text: the scriptable surface that scripts/bench.sh
//! drives. Must never: do work; `main.rs` validates and turns flags into run configs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::payload::Fill;

#[derive(Debug, Parser)]
#[command(
    name = "bench-client",
    version,
    about = "Load generator for wschat: coordinated-omission-free latency, exact delivery accounting",
    after_help = "Exit codes: 0 ok, 1 run error (or --require-correct failed), 2 usage error."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open-loop chat fan-out at a fixed total message rate; latency from each message's
    /// scheduled send time to its arrival at every other member of its room. Sends text
    /// messages (what browsers send) unless --binary.
    Chat(ChatArgs),
    /// Closed-loop maximum throughput: each connection keeps --window messages undelivered.
    /// Text messages unless --binary.
    Saturate(SaturateArgs),
    /// Handshake storm: handshakes/s, connect() and upgrade latency, errors by kind.
    Connect(ConnectArgs),
    /// Open-loop round-trip latency of small messages on an echo endpoint. Text messages
    /// (echoed as sent, no prefix) unless --binary.
    Ping(PingArgs),
    /// Render results JSON files (or folders of them) as markdown tables and SVG plots.
    Report(ReportArgs),
    /// Add histograms and counters of several runs (e.g. one per load machine).
    Merge(MergeArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// What every measuring subcommand writes, and how it is labelled.
#[derive(Debug, Clone, ClapArgs)]
pub struct OutputArgs {
    /// Write the results document (config, counters, percentiles, V2 histograms) here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the latency percentile distribution in HdrHistogram .hgrm text here (ms).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// A label stored in the JSON for `report` to group by, e.g. --label pattern=reuseport.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also measure this process's CPU (the server's). chat/saturate/ping: over the
    /// accounting interval, from the start of the measured window to the last arrival of a
    /// measured delivery (never before the window's end), the same interval delivered_per_s
    /// counts arrivals over, so cpu_us_per_delivery covers the work the deliveries cost
    /// even when the server falls behind; connect: over the whole storm.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Loader threads (event loops); connections are spread across them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// Seed for send phases and keys (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Whom a `wss://` URL trusts (ignored for `ws://`).
#[derive(Debug, Clone, ClapArgs)]
pub struct TlsArgs {
    /// wss://: accept any server certificate (e.g. the server's --tls-self-signed one). The
    /// handshake is still a full one, signature included; only the chain is not checked.
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// wss://: trust server certificates that chain to a certificate in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// WebSocket extensions to offer in the upgrade (every subcommand that connects).
#[derive(Debug, Clone, ClapArgs)]
pub struct ExtensionArgs {
    /// Offer permessage-deflate (RFC 7692) as Chromium does ("permessage-deflate;
    /// client_max_window_bits"). Where the server agrees, messages we send are compressed when
    /// that makes them smaller and compressed messages we receive are inflated (each distinct
    /// one once per loader thread, where a browser inflates every copy); the results count
    /// messages and bytes both ways.
    #[arg(long)]
    pub deflate: bool,
}

/// Which messages the load sends (chat, saturate, ping).
#[derive(Debug, Clone, ClapArgs)]
pub struct MessageArgs {
    /// Send binary messages (a 24-byte binary header: magic, stamp, sender, sequence; then
    /// --fill), which a chat server forwards verbatim. The default is text messages, what a
    /// browser's chat client sends: `#` and 27 base64url characters carrying the stamp,
    /// sender and sequence, then chat-like words up to --payload, e.g.
    /// `#ed8NhkhwAAARAAAAYwAAAAAAAAA or yes of question done about deplo`; a chat server
    /// delivers them as `"<name> says: #ed8N..."` (UTF-8 validated, prefixed, a frame per
    /// receiver), an echo endpoint as sent.
    #[arg(long)]
    pub binary: bool,
    /// --binary only: what pads each message after its 24-byte header: `zeros` (the
    /// default), or `text` (chat-like words, compressing about as well as chat does: use it
    /// with --deflate). Text messages are always padded with words.
    #[arg(long, value_enum)]
    pub fill: Option<Fill>,
}

/// Flags shared by the message-load subcommands.
#[derive(Debug, Clone, ClapArgs)]
pub struct LoadArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,
    /// Measured interval (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Sending before the measured interval; not recorded in the latency histogram.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub warmup: Duration,
    /// After sending stops, how long to wait for outstanding deliveries before calling
    /// them lost.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub drain: Duration,
    /// Message size in bytes as sent (text: at least 28, the header; --binary: at least 24).
    /// A chat server's `"<name> says: "` makes each text delivery longer than this.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    #[command(flatten)]
    pub messages: MessageArgs,
    /// Per-connection limit for connect + upgrade.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Handshakes in flight at once while opening the connections.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_concurrency: u64,
    /// Spread client sockets over source addresses 127.0.0.1..=127.0.0.N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: u8,
    /// Exit 1 unless every delivery is accounted for (received == expected, no loss,
    /// no reordering, no duplicates).
    #[arg(long)]
    pub require_correct: bool,
    /// Skewed sender mix (chat; saturate ignores it): every K-th connection (id % K == 0) is
    /// hot and sends --hot-weight times as often as the others; the total rate is unchanged.
    /// 0: every connection sends rate/conns.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub hot_every: u64,
    /// How many times more often a hot connection sends (see --hot-every).
    #[arg(long, default_value_t = 10.0, value_name = "W")]
    pub hot_weight: f64,
    #[command(flatten)]
    pub extensions: ExtensionArgs,
}

/// What `chat` and `saturate` share: connections spread over rooms, and how the run goes.
#[derive(Debug, Clone, ClapArgs)]
pub struct RoomLoadArgs {
    /// Server base URL (ws:// or wss://); rooms are /chat/<room-prefix><i>.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// Rooms; connection i joins room i % rooms.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub rooms: u64,
    #[arg(long, default_value = "room-")]
    pub room_prefix: String,
    /// How long to wait for join notices to settle before sending.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub settle_timeout: Duration,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct ChatArgs {
    /// Messages per second in total, across all connections.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[command(flatten)]
    pub room: RoomLoadArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct SaturateArgs {
    /// Messages each connection keeps in flight (sent but not yet delivered to every other
    /// member of its room).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub window: u64,
    #[command(flatten)]
    pub room: RoomLoadArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct PingArgs {
    /// The echo endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Round trips per second in total.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Connections (each sends rate/conns per second).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub drain: Duration,
    /// Message size in bytes (text: at least 28; --binary: at least 24). The echo endpoint
    /// returns each message as sent, with no prefix.
    #[arg(long, default_value_t = 32)]
    pub payload: usize,
    #[command(flatten)]
    pub messages: MessageArgs,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    #[arg(long)]
    pub require_correct: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub extensions: ExtensionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct ConnectArgs {
    /// Where to upgrade; /echo joins no room, so the storm causes no notice traffic.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Handshakes to attempt in total.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub conns: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Per-attempt limit for connect + upgrade (then counted as connect_timeout).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub timeout: Duration,
    /// Limit for the whole storm.
    #[arg(long, default_value = "300s", value_parser = duration)]
    pub time_limit: Duration,
    /// Keep every connection open until the end (concurrency) instead of closing each
    /// right after its upgrade (churn).
    #[arg(long)]
    pub hold: bool,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: u8,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub extensions: ExtensionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct ReportArgs {
    /// Results files, or folders searched for *.json.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// One table per value of this label (e.g. pattern).
    #[arg(long, value_name = "KEY")]
    pub group_by: Option<String>,
    /// Write report.md, latency.svg and throughput.svg here instead of markdown to stdout.
    #[arg(long, short, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct MergeArgs {
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// The merged results document.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write the merged latency distribution as .hgrm.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
}
