//! The `wschat` binary: flags -> effective configuration -> the chosen pattern.

use std::process::ExitCode;

use clap::Parser as _;
use wschat::cli::Args;
use wschat::config::Config;

/// The exit status when any thread panicked (EX_SOFTWARE).
const PANIC_EXIT: i32 = 70;

fn main() -> ExitCode {
    exit_on_any_panic();
    let args = Args::parse();
    let result = Config::from_args(args)
        .map_err(anyhow::Error::from)
        .and_then(wschat::patterns::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wschat: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A panic in any thread (an event loop, a worker, the broker) ends the process with a
/// message naming the thread, after the usual panic report. A loop cannot be restarted in
/// place (its sockets, members and inbox die with it), and a server that kept running
/// without it would serve ghosts: its members still listed by `/who`, its inbox growing with
/// every room batch, an acceptor still handing it sockets. A supervisor (systemd, a container
/// runtime) restarts the process.
fn exit_on_any_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        eprintln!(
            "wschat: thread {} panicked; exiting (status {PANIC_EXIT}): its connections \
             cannot be served",
            thread.name().unwrap_or("main")
        );
        std::process::exit(PANIC_EXIT);
    }));
}
