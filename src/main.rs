//! The `wschat` binary: flags -> effective configuration -> the chosen pattern.

use std::process::ExitCode;

use clap::Parser as _;
use wschat::cli::Args;
use wschat::config::Config;

fn main() -> ExitCode {
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
