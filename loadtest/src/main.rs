//! tickwire-loadtest: a swarm of headless bots speaking the real Tickwire protocol (netcode
//! handshake with real connect tokens, encrypted inputs, snapshots) over UDP, TCP or WebSocket
//! (`--transport`), from one thread over one io backend holding every bot's socket or
//! connection, with a human summary and an optional JSON report.
//!
//! `main` only parses the command line, runs [`swarm::run`], prints the summary, writes the
//! JSON and maps the outcome to the exit status: 0 pass, 1 a check failed (a bot could not
//! connect, could not play the server's game, or delivery below `--min-delivery`), 2 usage or
//! setup error (an unknown `--game` included).
#![forbid(unsafe_code)]

mod args;
mod play;
mod report;
mod scrape;
mod swarm;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

fn main() -> ExitCode {
    let args = args::Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tickwire-loadtest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the test; `Ok(passed)`.
fn run(args: &args::Args) -> anyhow::Result<bool> {
    let report = swarm::run(args)?;
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
    }
    Ok(report.passed())
}
