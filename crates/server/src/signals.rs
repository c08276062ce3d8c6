//! What `serve` does on each Unix signal (docs/operations.md, "Signals"):
//!
//! | signal | effect |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT | stop: drain (with a grace), tell clients, exit 0; a second one exits at once (status 1) |
//! | SIGHUP | logged; nothing is reloaded (configuration reload is not supported: restart to apply changes) |
//! | SIGUSR1 | logs a one-line state summary: players, ticks, backend, uptime, readiness, last tick age |
//! | SIGUSR2 | logged and ignored |
//!
//! The stop itself is the `shutdown` flag `main` registers with `signal_hook::flag` (checked by
//! the tick loop). This module owns a small thread that waits on every one of the signals above
//! (through signal-hook's self-pipe, so nothing but a pipe write runs in the handler) and logs
//! each as it arrives, so no signal the server handles passes without a log line, and none of
//! HUP/USR1/USR2 (whose default action is to terminate the process) can kill it.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};

use crate::admin::{Health, HELPER_STACK_BYTES};

/// The signals that ask the server to stop (`main` registers them on the shutdown flag).
pub const STOP_SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGQUIT];

/// Every signal this module logs.
const LOGGED: [i32; 6] = [SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGQUIT];

/// The signal-logging thread; dropping it stops the thread (the handlers stay installed, so
/// HUP/USR1/USR2 stay harmless until the process exits).
pub struct SignalLogger {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SignalLogger {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs the handlers and starts the thread that logs each signal; `health` supplies the
/// SIGUSR1 summary.
pub fn spawn(health: Arc<Health>) -> io::Result<SignalLogger> {
    let mut signals = Signals::new(LOGGED)?;
    let handle = signals.handle();
    let thread = thread::Builder::new()
        .name("tickwire-signals".into())
        .stack_size(HELPER_STACK_BYTES)
        .spawn(move || loop {
            for sig in signals.wait() {
                log_signal(sig, &health);
            }
            if signals.is_closed() {
                // Closed (the server is exiting): log what arrived before the close but was
                // not read yet, so a stop signal's line is never lost to the race with the
                // loop's own shutdown (`forever()` would drop it).
                for sig in signals.pending() {
                    log_signal(sig, &health);
                }
                break;
            }
        })?;
    Ok(SignalLogger {
        handle,
        thread: Some(thread),
    })
}

/// The conventional name of a signal this module handles.
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        SIGTERM => "SIGTERM",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

fn log_signal(sig: i32, health: &Health) {
    let signal = name(sig);
    match sig {
        SIGHUP => tracing::warn!(
            signal,
            "{signal}: configuration reload is not supported; nothing changed (restart the \
             server to apply a new configuration)"
        ),
        SIGUSR1 => {
            let now = Instant::now();
            tracing::info!(
                signal,
                players = health.players(),
                ticks = health.ticks(),
                backend = health.backend().unwrap_or("starting"),
                uptime_secs = health.uptime(now).as_secs(),
                accepting = health.is_accepting(),
                last_tick_ms_ago = health.tick_age(now).as_millis() as u64,
                "{signal}: state summary"
            );
        }
        SIGUSR2 => tracing::info!(signal, "{signal}: no action is assigned; ignored"),
        _ => tracing::info!(
            signal,
            "{signal}: stopping (clients are told; a second stop signal exits at once)"
        ),
    }
}
