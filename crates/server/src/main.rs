//! tickwire: the dedicated server binary. Parses the command line and dispatches:
//! `serve` (the tick loop), `token` (mint a connect token), `check-config`.
#![forbid(unsafe_code)]

// Until `serve` and `token` are wired (run.rs), parts of these modules have no caller yet.
#[allow(dead_code)]
mod admin;
#[allow(dead_code)]
mod cli;
#[allow(dead_code)]
mod config;
#[allow(dead_code)]
mod keyfile;
#[allow(dead_code)]
mod logging;
#[allow(dead_code)]
mod metrics;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::CheckConfig(args) => check_config(&args),
        cli::Command::Serve(_) | cli::Command::Token(_) => {
            eprintln!("tickwire: not wired yet");
            ExitCode::from(2)
        }
    }
}

/// `tickwire check-config`: validate, print the effective config on stdout, exit 1 on any error.
fn check_config(args: &cli::ServeArgs) -> ExitCode {
    let cfg = match config::load(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("tickwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &cfg.warnings {
        eprintln!("tickwire: warning: {w}");
    }
    match keyfile::check(&cfg.auth.key_file) {
        Ok(keyfile::KeyFileStatus::Present) => {}
        Ok(keyfile::KeyFileStatus::Missing) => eprintln!(
            "tickwire: note: key file {} does not exist yet; `serve` will create it",
            cfg.auth.key_file.display()
        ),
        Err(e) => {
            eprintln!("tickwire: invalid configuration: auth.key_file: {e}");
            return ExitCode::FAILURE;
        }
    }
    match &cfg.file {
        Some(p) => println!("# effective configuration (file: {})", p.display()),
        None => println!("# effective configuration (no config file: defaults)"),
    }
    print!("{cfg}");
    ExitCode::SUCCESS
}
