//! Logging setup: one `tracing` subscriber writing text or JSON lines to standard error.
//!
//! Called once from `main` after the configuration is loaded:
//! `logging::init(&cfg.log.level, cfg.log.format)`. `RUST_LOG`, when set and valid, overrides
//! `log.level` (so an operator can turn on `tickwire=debug` without touching the config file).

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// Every accepted spelling, in the order shown in error messages.
    pub const NAMES: &'static [&'static str] = &["text", "json"];
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}")),
        }
    }
}

/// Level names accepted on their own in `log.level`.
pub const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Checks that `level` is a valid filter: a level (`trace`, `debug`, `info`, `warn`, `error`,
/// `off`) or a full `EnvFilter` directive such as `info,tickwire=debug`.
pub fn validate_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    // EnvFilter reads a bare word as a target name ("inf" = everything from target `inf`), so a
    // misspelt level would silently log nothing: bare words must be level names.
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("{directive:?} is not a level"));
        }
    }
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Installs the global subscriber. `RUST_LOG` (when set and non-empty) takes precedence over
/// `level`; an invalid `RUST_LOG` falls back to `level` and says so in a warning. Calling it a
/// second time in one process is harmless (the first subscriber stays).
pub fn init(level: &str, format: LogFormat) {
    let mut rust_log_problem = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => f,
            Err(e) => {
                rust_log_problem = Some(format!("ignoring invalid RUST_LOG={v:?}: {e}"));
                EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
            }
        },
        _ => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    if installed.is_ok() {
        if let Some(problem) = rust_log_problem {
            tracing::warn!("{problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_round_trips() {
        for name in LogFormat::NAMES {
            let f: LogFormat = name.parse().unwrap();
            assert_eq!(f.to_string(), *name);
        }
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn levels_validate() {
        for ok in ["info", "debug", "off", "info,tickwire=debug", "warn"] {
            assert!(validate_level(ok).is_ok(), "{ok}");
        }
        for bad in ["", "  ", "info,tickwire=loud", "loud", "inf,tickwire=debug"] {
            assert!(validate_level(bad).is_err(), "{bad:?}");
        }
    }
}
