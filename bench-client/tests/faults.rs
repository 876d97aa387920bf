//! End-to-end: `bench-client chat` against a fake server that misbehaves in one way per test
//! (tests/fake_server/), and once honestly. Each test checks that the results document names
//! the fault: the counter or verdict for it is non-zero and the run is not `correct`. Every
//! test runs twice, with text messages (the default; the fake server prefixes them as wschat
//! does) and with `--binary`, since the two are decoded by different code. Every
//! run is short and bounded; no assertion is a timing threshold (the stall is made far longer
//! than any bound it is checked against).

mod fake_server;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_server::{FakeServer, Fault};
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_bench-client");
/// No bench-client run in these tests may take longer than this.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// 8 connections in 2 rooms of 4 at 200 msg/s for 1 s: each connection sends exactly 25
/// messages (period 40 ms), 200 in all, each expected at the 3 other members of its room.
const MESSAGES: u64 = 200;
const FANOUT: u64 = 3;

/// Which messages a run sends: `text` (bench-client's default) or `binary` (`--binary`).
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Binary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Binary => "binary",
        }
    }
}

/// Expands one test body, `fn $name(kind: Kind)`, into a test per message kind.
macro_rules! for_text_and_binary {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn text() {
                    super::$name(super::Kind::Text);
                }
                #[test]
                fn binary() {
                    super::$name(super::Kind::Binary);
                }
            }
        )*
    };
}

for_text_and_binary!(
    honest_server_every_delivery_accounted_for,
    dropped_messages_are_lost_and_leave_holes,
    duplicated_messages_are_counted_once_and_named,
    reordered_messages_are_out_of_order_not_lost,
    misrouted_messages_are_named_and_not_counted_as_received,
    a_stall_past_the_window_is_not_kept_up_though_nothing_is_lost,
    a_connection_dropped_during_the_window_makes_the_run_incorrect,
);

/// Runs one chat run against `server` and returns its results document.
fn chat_run(server: &FakeServer, name: &str, drain: &str, kind: Kind) -> Value {
    let dir = std::env::temp_dir().join(format!("bench-client-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json: PathBuf = dir.join(format!("{name}-{}.json", kind.name()));
    let url = format!("ws://{}", server.addr);
    // The fake server is this test process.
    let pid = std::process::id().to_string();
    let mut child = Command::new(BENCH)
        .args([
            "chat",
            "--url",
            &url,
            "--conns",
            "8",
            "--rooms",
            "2",
            "--rate",
            "200",
            "--warmup",
            "0s",
            "--duration",
            "1s",
            "--drain",
            drain,
            "--settle-timeout",
            "10s",
            "--seed",
            "7",
            "-q",
            "--server-pid",
            &pid,
            "--json",
        ])
        .arg(&json)
        .args(match kind {
            Kind::Text => &[][..],
            Kind::Binary => &["--binary"][..],
        })
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting bench-client");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for bench-client") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("bench-client ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "bench-client exited with {status}");
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("results file"))
        .expect("results JSON");
    assert_eq!(run["config"]["messages"].as_str(), Some(kind.name()));
    run
}

fn counter(run: &Value, name: &str) -> u64 {
    run["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} missing in {}", run["counters"]))
}

fn correct(run: &Value) -> bool {
    run["correct"].as_bool().expect("correct is a bool")
}

fn honest_server_every_delivery_accounted_for(kind: Kind) {
    let server = FakeServer::start(Fault::Honest);
    let run = chat_run(&server, "honest", "2s", kind);
    assert_eq!(counter(&run, "sent"), MESSAGES);
    assert_eq!(counter(&run, "expected"), MESSAGES * FANOUT);
    assert_eq!(counter(&run, "received"), MESSAGES * FANOUT);
    for name in [
        "lost",
        "holes",
        "out_of_order",
        "duplicates",
        "malformed",
        "foreign",
        "misrouted",
        "disconnects_during_run",
    ] {
        assert_eq!(counter(&run, name), 0, "{name}");
    }
    assert!(correct(&run));
    // Whether it kept up is a matter of timing on a shared machine, so only its presence
    // and its stated bound are checked here; the stall test checks the verdict itself.
    assert!(run["verdicts"]["kept_up"].is_boolean());
    assert_eq!(run["verdicts"]["kept_up_bound_s"].as_f64(), Some(0.1));
    // Rates and the server's CPU name the interval they are over.
    let interval = "measure_start..last_measured_arrival";
    assert_eq!(run["interval"]["name"].as_str(), Some(interval));
    assert!(run["interval"]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(run["server"]["interval"].as_str(), Some(interval));
    assert!(run["server"]["cpu_us_per_delivery"].is_number());
}

fn dropped_messages_are_lost_and_leave_holes(kind: Kind) {
    let server = FakeServer::start(Fault::Drop { every: 10 });
    let run = chat_run(&server, "drop", "2s", kind);
    assert_eq!(counter(&run, "lost"), MESSAGES / 10 * FANOUT);
    assert!(counter(&run, "holes") > 0);
    assert!(!correct(&run));
    // Every measured delivery is in the latency histogram, the lost ones too.
    let latency = &run["histograms"]["latency_us"]["percentiles"];
    assert_eq!(latency["count"].as_u64(), Some(MESSAGES * FANOUT));
    // A lost delivery is timed from its due time: the 10th message is among the first 10
    // due (within 80 ms of the window's start), so it was waited for at least the rest of
    // the 1 s window plus the 2 s drain, 2.9 s; timed from the end of sending it would be
    // the drain alone, 2 s.
    assert!(latency["max"].as_u64().unwrap() > 2_500_000);
}

fn duplicated_messages_are_counted_once_and_named(kind: Kind) {
    let server = FakeServer::start(Fault::Duplicate { every: 10 });
    let run = chat_run(&server, "duplicate", "2s", kind);
    assert_eq!(counter(&run, "duplicates"), MESSAGES / 10 * FANOUT);
    assert_eq!(counter(&run, "received"), MESSAGES * FANOUT);
    assert!(!correct(&run));
}

fn reordered_messages_are_out_of_order_not_lost(kind: Kind) {
    let server = FakeServer::start(Fault::Reorder { every: 10 });
    let run = chat_run(&server, "reorder", "2s", kind);
    assert!(counter(&run, "out_of_order") > 0);
    assert_eq!(counter(&run, "received"), counter(&run, "expected"));
    assert!(!correct(&run));
}

fn misrouted_messages_are_named_and_not_counted_as_received(kind: Kind) {
    let server = FakeServer::start(Fault::Misroute { every: 10 });
    let run = chat_run(&server, "misroute", "2s", kind);
    // Each misrouted message reaches the 4 members of the other room instead of the 3
    // others of its own.
    assert_eq!(counter(&run, "misrouted"), MESSAGES / 10 * 4);
    assert_eq!(counter(&run, "lost"), MESSAGES / 10 * FANOUT);
    assert!(!correct(&run));
}

fn a_stall_past_the_window_is_not_kept_up_though_nothing_is_lost(kind: Kind) {
    // Message 60 is due about 0.3 s into the 1 s window; forwarding then stops for 2 s, so
    // the last measured delivery arrives more than 1 s after the window's end, ten times
    // the 0.1 s bound, however slow the machine. The 4 s drain waits for all of it.
    let server = FakeServer::start(Fault::Stall {
        after: 60,
        pause: Duration::from_secs(2),
    });
    let run = chat_run(&server, "stall", "4s", kind);
    let verdicts = &run["verdicts"];
    assert_eq!(verdicts["kept_up"].as_bool(), Some(false));
    let after = verdicts["last_arrival_after_end_s"]
        .as_f64()
        .expect("a measured delivery arrived");
    assert!(after > verdicts["kept_up_bound_s"].as_f64().unwrap());
    // Late is not lost: every delivery is accounted for, so the stall is named by the
    // verdict, not by `correct`.
    assert_eq!(counter(&run, "lost"), 0);
    assert!(correct(&run));
    // The accounting interval runs to the last arrival: message 60 is due at least 0.26 s
    // into the window (8 senders, 40 ms apart each), so forwarding resumes at least 2.26 s
    // after the window's start. Deliveries per second by arrival therefore fall below the
    // rate by stamp, which stays at the offered 600/s.
    assert!(run["interval"]["seconds"].as_f64().unwrap() > 2.0);
    let rates = &run["rates"];
    assert_eq!(rates["delivered_per_s_stamped"].as_f64(), Some(600.0));
    assert!(rates["delivered_per_s"].as_f64().unwrap() < 600.0 / 2.0);
}

fn a_connection_dropped_during_the_window_makes_the_run_incorrect(kind: Kind) {
    // The dropped member is no longer expected to receive anything, so without this verdict
    // every remaining count would still add up.
    let server = FakeServer::start(Fault::Disconnect { after: 60 });
    let run = chat_run(&server, "disconnect", "2s", kind);
    assert_eq!(counter(&run, "disconnects_during_run"), 1);
    assert!(!correct(&run));
}
