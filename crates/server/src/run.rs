//! The tick loop: the thin I/O shell around [`tickwire_core::GameServer`].
//!
//! ```text
//! deadline(k) = t0 + k * tick
//! while now < deadline: poll I/O until min(deadline, now + timeout); answer handshakes
//! at the deadline:      server.tick(); flush every snapshot in one batch
//! ```
//! Tick k starts at `t0 + k * tick`, so there is no drift. When a tick ends after the next
//! deadline has already passed, the missed deadlines are counted as overruns and the loop
//! skips ahead to the next deadline in the future (docs/architecture.md says why).
//!
//! Stopping: on SIGTERM/SIGINT with a drain grace, the server stops accepting players (they
//! are denied, counted as `draining`), sends connected clients `Bye { Draining }`, and keeps
//! ticking until they have all left or the grace has passed. Then (or at once, without a grace)
//! every client gets `Bye { ServerShutdown }` and netcode's disconnect packets.
//!
//! This is the only place that reads the clock; the core gets it as [`Now`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use tickwire_core::{ByeReason, DenyReason, DropReason, GameServer, Now, ServerStats};
use tickwire_io::{on_datagrams, Backend, SocketId};

use crate::admin::Health;
use crate::metrics as m;

/// Test hook: names a file whose existence stalls the tick loop.
pub const STALL_FILE_ENV: &str = "TICKWIRE_TEST_STALL_FILE";

/// Everything the loop needs, built and validated by `main`.
pub struct RunParams {
    /// The opened backend (after model choice and fallback).
    pub backend: Box<dyn Backend>,
    /// The bound game socket inside `backend`.
    pub sock: SocketId,
    /// The server, built from the config.
    pub server: GameServer,
    /// The fixed tick.
    pub tick: Duration,
    /// The longest single I/O wait.
    pub timeout: Duration,
    /// Most datagrams taken from one poll (`io.max_events`).
    pub max_events: usize,
    /// Set by SIGTERM/SIGINT: drain (when `drain_grace` > 0), tell clients, and return.
    pub shutdown: Arc<AtomicBool>,
    /// How long a drain waits for players to leave; zero stops at once.
    pub drain_grace: Duration,
    /// Shared with the admin endpoint.
    pub health: Arc<Health>,
    /// The Agones SDK client (`agones.enabled`): told the player count after every tick, and
    /// Shutdown once every client has been told.
    pub agones: Option<crate::agones::Agones>,
}

/// What a finished run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSummary {
    /// Ticks executed.
    pub ticks: u64,
    /// Deadlines missed and skipped.
    pub overruns: u64,
}

/// Handles to every metric the loop updates, registered once (no per-event lookups).
struct LoopMetrics {
    io_events: Counter,
    io_wait_ms: Histogram,
    ticks: Counter,
    tick_duration_ms: Histogram,
    tick_lateness_ms: Histogram,
    tick_overruns: Counter,
    players: Gauge,
    packets_in: Counter,
    packets_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    connects: Counter,
    disconnects: Counter,
    drops: Vec<Counter>,
    denies: Vec<Counter>,
    snapshots: Counter,
    snapshot_bytes: Counter,
    io_send_failed: Counter,
    io_truncated: Counter,
    inputs_overflowed: Counter,
    payloads_malformed: Counter,
    queries_answered: Counter,
    queries_dropped: Counter,
    queries_rate_limited: Counter,
    events_queued: Counter,
    events_too_large: Counter,
    events_backlog: Counter,
    messages_received: Counter,
    late_after_disconnect: Counter,
}

impl LoopMetrics {
    fn new(backend: &'static str, max_players: usize) -> Self {
        gauge!(m::PLAYERS_MAX).set(max_players as f64);
        gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "backend" => backend)
            .set(1.0);
        LoopMetrics {
            io_events: counter!(m::IO_EVENTS_PROCESSED, "backend" => backend),
            io_wait_ms: histogram!(m::IO_WAIT_DURATION_MS, "backend" => backend),
            ticks: counter!(m::TICKS),
            tick_duration_ms: histogram!(m::TICK_DURATION_MS),
            tick_lateness_ms: histogram!(m::TICK_LATENESS_MS),
            tick_overruns: counter!(m::TICK_OVERRUNS),
            players: gauge!(m::PLAYERS_CONNECTED),
            packets_in: counter!(m::PACKETS_RECEIVED, "transport" => m::TRANSPORT_UDP),
            packets_out: counter!(m::PACKETS_SENT, "transport" => m::TRANSPORT_UDP),
            bytes_in: counter!(m::BYTES_RECEIVED, "transport" => m::TRANSPORT_UDP),
            bytes_out: counter!(m::BYTES_SENT, "transport" => m::TRANSPORT_UDP),
            connects: counter!(m::CONNECTS),
            disconnects: counter!(m::DISCONNECTS),
            drops: DropReason::ALL
                .iter()
                .map(|r| counter!(m::PACKETS_DROPPED, "reason" => r.as_str()))
                .collect(),
            denies: DenyReason::ALL
                .iter()
                .map(|r| counter!(m::CONNECTS_DENIED, "reason" => r.as_str()))
                .collect(),
            snapshots: counter!(m::SNAPSHOTS_SENT),
            snapshot_bytes: counter!(m::SNAPSHOT_BYTES_TOTAL),
            io_send_failed: counter!(m::IO_SEND_FAILED),
            io_truncated: counter!(m::PACKETS_DROPPED, "reason" => "truncated"),
            inputs_overflowed: counter!(m::PACKETS_DROPPED, "reason" => "input_queue_full"),
            payloads_malformed: counter!(m::PACKETS_DROPPED, "reason" => "malformed_message"),
            queries_answered: counter!(m::QUERIES_ANSWERED),
            queries_dropped: counter!(m::PACKETS_DROPPED, "reason" => "bad_query"),
            queries_rate_limited: counter!(m::PACKETS_DROPPED, "reason" => "query_rate_limited"),
            events_queued: counter!(m::GAME_EVENTS, "result" => "queued"),
            events_too_large: counter!(m::GAME_EVENTS, "result" => "too_large"),
            events_backlog: counter!(m::GAME_EVENTS, "result" => "backlog"),
            messages_received: counter!(m::GAME_MESSAGES_RECEIVED),
            late_after_disconnect: counter!(m::LATE_AFTER_DISCONNECT),
        }
    }
}

/// Counters already exported, so each tick exports only the difference.
#[derive(Default)]
struct Exported {
    netcode: ServerStats,
    core: tickwire_core::CoreStats,
    io: tickwire_io::IoStats,
}

/// Replies produced while the backend is busy delivering datagrams (handshakes), queued here
/// and handed to the backend after `poll` returns. Bounded: beyond `MAX_ITEMS` replies in one
/// poll, the rest are dropped (the client resends its handshake).
struct Outbox {
    bytes: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
    dropped: u64,
}

impl Outbox {
    const MAX_ITEMS: usize = 4096;
    const MAX_BYTES: usize = 4096 * 1500;

    fn new() -> Self {
        Outbox {
            bytes: Vec::with_capacity(64 * 1024),
            items: Vec::with_capacity(256),
            dropped: 0,
        }
    }

    fn push(&mut self, to: SocketAddr, data: &[u8]) {
        if self.items.len() >= Self::MAX_ITEMS || self.bytes.len() + data.len() > Self::MAX_BYTES {
            self.dropped += 1;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.items.push((to, start, data.len()));
    }

    fn drain_into(&mut self, backend: &mut dyn Backend, sock: SocketId) -> u64 {
        let mut failed = 0;
        for &(to, start, len) in &self.items {
            if backend
                .send(sock, to, &self.bytes[start..start + len])
                .is_err()
            {
                failed += 1;
            }
        }
        self.items.clear();
        self.bytes.clear();
        failed
    }
}

/// Clock for the sans-IO core: monotonic since start, wall time derived from it (so a wall
/// clock step cannot move token expiry checks backwards mid-run).
struct Clock {
    start: Instant,
    unix_start: u64,
}

impl Clock {
    fn new() -> Self {
        let unix_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            unix_start,
        }
    }

    fn at(&self, instant: Instant) -> Now {
        let mono = instant.saturating_duration_since(self.start);
        Now {
            mono,
            unix_secs: self.unix_start + mono.as_secs(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the server until `shutdown` is set, then tells every client and returns.
pub fn run(params: RunParams) -> anyhow::Result<RunSummary> {
    let RunParams {
        mut backend,
        sock,
        mut server,
        tick,
        timeout,
        max_events,
        shutdown,
        drain_grace,
        health,
        agones,
    } = params;
    let backend_name = backend.model().as_str();
    health.set_backend(backend_name);

    let metrics = LoopMetrics::new(backend_name, server.max_players());
    let mut exported = Exported::default();
    let mut outbox = Outbox::new();
    let clock = Clock::new();
    let mut summary = RunSummary::default();
    let t0 = Instant::now();
    let half_tick = tick / 2;
    let tick_ns = (tick.as_nanos() as u64).max(1);
    let tick_at = |k: u64| Duration::from_nanos(tick_ns.saturating_mul(k));
    let mut k: u64 = 1;
    health.set_accepting(true);

    // Test hook: while the file named by TICKWIRE_TEST_STALL_FILE exists, the loop stalls (so
    // tests can see /healthz turn unhealthy and Agones health pings stop). One stat a tick,
    // only when the variable is set.
    let stall_file = std::env::var_os(STALL_FILE_ENV).map(std::path::PathBuf::from);
    // When to stop: a stop signal starts the drain (or stops at once without a grace).
    let mut drain = Drain::new(drain_grace);
    'ticking: loop {
        loop {
            let step = drain.step(
                Instant::now(),
                shutdown.load(Ordering::Relaxed),
                server.players(),
            );
            match step {
                DrainStep::Run => break,
                DrainStep::Begin => {
                    tracing::info!(
                        players = server.players(),
                        grace_secs = drain_grace.as_secs_f64(),
                        "draining: new players are denied; waiting for connected players to leave"
                    );
                    health.set_accepting(false);
                    server.set_accepting(false);
                    let backend_ref = backend.as_mut();
                    server.broadcast_bye(
                        clock.at(Instant::now()),
                        ByeReason::Draining,
                        &mut |to, bytes| {
                            let _ = backend_ref.send(sock, to, bytes);
                        },
                    );
                    backend.flush()?;
                    // Decide again at once: with nobody connected the drain is already over.
                }
                DrainStep::Finish(why) => {
                    if why != Finish::NoGrace {
                        tracing::info!(
                            players = server.players(),
                            reason = why.as_str(),
                            "drain finished"
                        );
                    }
                    break 'ticking;
                }
            }
        }
        if let Some(path) = &stall_file {
            while path.exists() && !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let deadline = t0 + tick_at(k);
        // Between ticks: sleep to the next drain point, then take everything queued. Inputs
        // only matter at the tick, so the loop does not wake for every datagram: it drains at
        // most every `timeout` and at least twice a tick (half-way, so handshakes are answered
        // within half a tick, and at the deadline). The kernel's socket buffer holds what
        // arrives meanwhile (see docs/operations.md on net.core.rmem_max).
        let woke = loop {
            let now = Instant::now();
            if drain.interrupts_wait(shutdown.load(Ordering::Relaxed)) {
                break now;
            }
            let until = deadline.min(now + timeout.min(half_tick));
            let slept = until > now;
            if slept {
                std::thread::sleep(until - now);
            }
            let woke = Instant::now();
            // Only real waits are samples: with io.timeout_ms = 0 the loop never sleeps, and a
            // sample per spin would flood the histogram between upkeeps.
            if slept {
                metrics.io_wait_ms.record(ms(woke - now));
            }
            let events = service(
                backend.as_mut(),
                sock,
                &mut server,
                &mut outbox,
                &clock,
                &metrics,
                max_events,
            )?;
            tracing::debug!(
                events_count = events,
                wait_time_ms = ms(woke - now),
                "io wait"
            );
            if woke >= deadline {
                break woke;
            }
        };
        if drain.interrupts_wait(shutdown.load(Ordering::Relaxed)) {
            continue;
        }

        // The tick. It starts when the loop wakes for the deadline; reading the inputs that
        // arrived since the half-tick drain is its first step (above), so lateness is how late
        // the loop woke, and the tick's duration runs from that wake-up.
        let started = woke;
        metrics
            .tick_lateness_ms
            .record(ms(started.saturating_duration_since(deadline)));
        let mut refused = 0u64;
        {
            let backend = backend.as_mut();
            server.tick(clock.at(started), &mut |to, bytes| {
                if backend.send(sock, to, bytes).is_err() {
                    refused += 1;
                }
            });
        }
        let flush = backend.flush()?;
        // Hand the batch to the kernel now (completion backends submit on poll) and answer
        // whatever arrived during the tick.
        service(
            backend.as_mut(),
            sock,
            &mut server,
            &mut outbox,
            &clock,
            &metrics,
            max_events,
        )?;
        let finished = Instant::now();
        metrics.tick_duration_ms.record(ms(finished - started));
        metrics.ticks.increment(1);
        metrics
            .io_send_failed
            .increment(refused + flush.failed as u64);
        summary.ticks += 1;
        health.tick_completed(finished);
        health.set_players(server.players() as u64);
        if let Some(agones) = &agones {
            agones.set_players(server.players() as u64);
            if let Some(addr) = agones.take_advertised() {
                if !server.add_public_addr(addr) {
                    tracing::warn!(%addr, "too many public addresses; not accepted in tokens");
                }
            }
        }
        export(
            &metrics,
            &mut exported,
            &server,
            backend.as_ref(),
            &mut outbox,
        );
        log_refused(&mut server);

        // Next deadline; skip ahead past any we already missed.
        k += 1;
        let next = t0 + tick_at(k);
        if finished > next {
            let skipped = ((finished - next).as_nanos() / u128::from(tick_ns)) as u64 + 1;
            k += skipped;
            summary.overruns += skipped;
            metrics.tick_overruns.increment(skipped);
            tracing::debug!(skipped, "tick overrun: skipping ahead");
        }
    }

    tracing::info!("shutting down: telling {} clients", server.players());
    health.set_accepting(false);
    if server.players() > 0 {
        // Bye first, the disconnect packets two ticks later: a standard netcode client drops
        // its receive queue when the disconnect arrives, so a Bye sent in the same instant
        // would often never reach the game.
        let backend_ref = backend.as_mut();
        server.broadcast_bye(
            clock.at(Instant::now()),
            ByeReason::ServerShutdown,
            &mut |to, bytes| {
                let _ = backend_ref.send(sock, to, bytes);
            },
        );
        backend.flush()?;
        // Send it now, then take what clients sent meanwhile once more before disconnecting.
        for pause in [Duration::ZERO, 2 * tick] {
            std::thread::sleep(pause);
            service(
                backend.as_mut(),
                sock,
                &mut server,
                &mut outbox,
                &clock,
                &metrics,
                max_events,
            )?;
        }
    }
    let backend_ref = backend.as_mut();
    server.shutdown(&mut |to, bytes| {
        let _ = backend_ref.send(sock, to, bytes);
    });
    backend.flush()?;
    if let Some(rec) = server.stop_recording() {
        match rec.error() {
            Some(e) => tracing::error!(error = %e, "recording failed part-way; it ends early"),
            None => tracing::info!(
                bytes = rec.bytes(),
                ticks = rec.steps(),
                "recording complete"
            ),
        }
    }
    export(
        &metrics,
        &mut exported,
        &server,
        backend.as_ref(),
        &mut outbox,
    );
    if let Some(agones) = agones {
        // Last: Shutdown makes Agones delete the pod (and send SIGTERM again).
        agones.set_players(0);
        agones.shutdown();
        agones.stop();
    }
    Ok(summary)
}

/// Why a run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Stop asked for without a drain grace: stop at once.
    NoGrace,
    /// Draining, and the last player left.
    Empty,
    /// Draining, and the grace ran out with players still connected.
    GraceExpired,
}

impl Finish {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finish::NoGrace => "no_grace",
            Finish::Empty => "everyone_left",
            Finish::GraceExpired => "grace_expired",
        }
    }
}

/// What the loop does next, as [`Drain::step`] decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DrainStep {
    /// Keep ticking.
    Run,
    /// Start draining now: deny new players, tell the connected ones (then ask again).
    Begin,
    /// Leave the loop: tell every client and return.
    Finish(Finish),
}

/// The stop decision, sans I/O: a pure function of the clock, whether a stop was asked for,
/// and the players still connected. The loop feeds it `Instant::now()`; unit tests feed it a
/// virtual clock.
#[derive(Debug)]
pub(crate) struct Drain {
    grace: Duration,
    /// Set when the drain starts: the instant it must end by.
    until: Option<Instant>,
}

impl Drain {
    pub(crate) fn new(grace: Duration) -> Self {
        Drain { grace, until: None }
    }

    /// The step at `now`.
    pub(crate) fn step(&mut self, now: Instant, stop_asked: bool, players: usize) -> DrainStep {
        match self.until {
            None if !stop_asked => DrainStep::Run,
            None if self.grace.is_zero() => DrainStep::Finish(Finish::NoGrace),
            None => {
                self.until = Some(now + self.grace);
                DrainStep::Begin
            }
            Some(_) if players == 0 => DrainStep::Finish(Finish::Empty),
            Some(until) if now >= until => DrainStep::Finish(Finish::GraceExpired),
            Some(_) => DrainStep::Run,
        }
    }

    /// Whether a wait between ticks should end early: a stop was asked for and no drain is
    /// running yet (so [`Drain::step`] has something to decide).
    pub(crate) fn interrupts_wait(&self, stop_asked: bool) -> bool {
        self.until.is_none() && stop_asked
    }
}

/// One non-blocking pass over the backend: deliver what is queued, send the replies.
/// Returns the I/O events handled.
fn service(
    backend: &mut dyn Backend,
    sock: SocketId,
    server: &mut GameServer,
    outbox: &mut Outbox,
    clock: &Clock,
    metrics: &LoopMetrics,
    max_events: usize,
) -> io::Result<usize> {
    let events = drain(backend, server, outbox, clock, max_events)?;
    metrics.io_events.increment(events as u64);
    if !outbox.items.is_empty() {
        let failed = outbox.drain_into(backend, sock);
        metrics.io_send_failed.increment(failed);
        backend.flush()?;
    }
    Ok(events)
}

/// Takes every datagram queued on the backend without blocking, in polls of up to
/// `max_events`; stops when a poll comes back short (the queue is empty) or after
/// `MAX_DRAIN_POLLS` polls, leaving the rest for the next drain. Returns the events handled.
fn drain(
    backend: &mut dyn Backend,
    server: &mut GameServer,
    outbox: &mut Outbox,
    clock: &Clock,
    max_events: usize,
) -> io::Result<usize> {
    const MAX_DRAIN_POLLS: usize = 16;
    let mut events = 0;
    let past = Instant::now();
    for _ in 0..MAX_DRAIN_POLLS {
        let now = clock.at(Instant::now());
        let report = backend.poll(
            past,
            &mut on_datagrams(|_sock, peer, bytes| {
                server.handle_datagram(now, peer, bytes, &mut |to, reply| outbox.push(to, reply));
            }),
        )?;
        events += report.events;
        if report.datagrams < max_events {
            break;
        }
    }
    Ok(events)
}

/// Exports what changed since the last call (counters only ever go up).
fn export(
    m: &LoopMetrics,
    prev: &mut Exported,
    server: &GameServer,
    backend: &dyn Backend,
    outbox: &mut Outbox,
) {
    let n = server.netcode_stats();
    let p = &prev.netcode;
    let p_late = p.late_after_disconnect;
    m.packets_in.increment(n.packets_in - p.packets_in);
    m.packets_out.increment(n.packets_out - p.packets_out);
    m.bytes_in.increment(n.bytes_in - p.bytes_in);
    m.bytes_out.increment(n.bytes_out - p.bytes_out);
    m.connects.increment(n.connects - p.connects);
    m.disconnects.increment(n.disconnects - p.disconnects);
    for (i, c) in m.drops.iter().enumerate() {
        c.increment(n.drops[i] - p.drops[i]);
    }
    for (i, c) in m.denies.iter().enumerate() {
        c.increment(n.denies[i] - p.denies[i]);
    }
    prev.netcode = n.clone();

    let c = server.stats();
    m.snapshots
        .increment(c.snapshots_sent - prev.core.snapshots_sent);
    m.snapshot_bytes
        .increment(c.snapshot_bytes - prev.core.snapshot_bytes);
    m.inputs_overflowed
        .increment(c.inputs_overflowed - prev.core.inputs_overflowed);
    m.payloads_malformed
        .increment(c.payloads_malformed - prev.core.payloads_malformed);
    m.io_send_failed
        .increment(c.sends_failed - prev.core.sends_failed + outbox.dropped);
    m.queries_answered
        .increment(c.queries_answered - prev.core.queries_answered);
    let limited = c.queries_rate_limited - prev.core.queries_rate_limited;
    m.queries_rate_limited.increment(limited);
    m.queries_dropped
        .increment(c.queries_dropped - prev.core.queries_dropped - limited);
    // A2S traffic shares the game port: count it in the packet and byte totals too.
    let queries_in = (c.queries_answered + c.queries_dropped)
        - (prev.core.queries_answered + prev.core.queries_dropped);
    m.packets_in.increment(queries_in);
    m.bytes_in
        .increment(c.query_bytes_in - prev.core.query_bytes_in);
    m.packets_out
        .increment(c.queries_answered - prev.core.queries_answered);
    m.bytes_out
        .increment(c.query_bytes_out - prev.core.query_bytes_out);
    m.events_queued
        .increment(c.events_queued - prev.core.events_queued);
    m.events_too_large
        .increment(c.events_too_large - prev.core.events_too_large);
    m.events_backlog
        .increment(c.events_backlog - prev.core.events_backlog);
    m.messages_received
        .increment(c.messages_received - prev.core.messages_received);
    m.late_after_disconnect
        .increment(n.late_after_disconnect - p_late);
    outbox.dropped = 0;
    prev.core = *c;

    let io = backend.stats();
    m.io_truncated.increment(io.truncated - prev.io.truncated);
    prev.io = io;

    m.players.set(server.players() as f64);
}

/// Logs the newest game event the core refused (at most one line per export, so a game
/// flooding a slow client cannot flood the log; the counters have every one).
fn log_refused(server: &mut GameServer) {
    if let Some(r) = server.take_refused_event() {
        tracing::warn!(
            player = r.player,
            reason = r.error.as_str(),
            error = %r.error,
            "game event refused (counted in game_events_total)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives `drain` over virtual instants `t0 + at`: (at ms, stop asked, players) -> step.
    fn steps(drain: &mut Drain, t0: Instant, script: &[(u64, bool, usize)]) -> Vec<DrainStep> {
        script
            .iter()
            .map(|&(at, stop, players)| drain.step(t0 + ms(at), stop, players))
            .collect()
    }

    #[test]
    fn runs_until_a_stop_is_asked_for() {
        let t0 = Instant::now();
        let mut d = Drain::new(ms(2000));
        let got = steps(
            &mut d,
            t0,
            &[(0, false, 5), (16, false, 0), (3_600_000, false, 9)],
        );
        assert_eq!(got, [DrainStep::Run; 3]);
        assert!(!d.interrupts_wait(false));
        assert!(
            d.interrupts_wait(true),
            "a stop ends the wait between ticks"
        );
    }

    #[test]
    fn without_a_grace_a_stop_finishes_at_once() {
        let t0 = Instant::now();
        let mut d = Drain::new(Duration::ZERO);
        let got = steps(&mut d, t0, &[(0, false, 3), (10, true, 3)]);
        assert_eq!(got, [DrainStep::Run, DrainStep::Finish(Finish::NoGrace)]);
    }

    /// The grace (was: a process test asserting that at least 1.9 s of wall time passed
    /// between SIGTERM and exit with a 2 s grace): players are waited for exactly until the
    /// grace has passed, not a moment less.
    #[test]
    fn drain_waits_for_the_whole_grace_then_finishes() {
        let t0 = Instant::now();
        let mut d = Drain::new(ms(2000));
        let got = steps(
            &mut d,
            t0,
            &[
                (100, true, 5),  // SIGTERM at 100: drain until 2100
                (116, true, 5),  // ticking on, players told and still connected
                (1000, true, 4), // one left
                (2099, true, 4), // a tick before the end of the grace
                (2100, true, 4), // the grace is over
            ],
        );
        assert_eq!(
            got,
            [
                DrainStep::Begin,
                DrainStep::Run,
                DrainStep::Run,
                DrainStep::Run,
                DrainStep::Finish(Finish::GraceExpired)
            ]
        );
        assert!(
            !d.interrupts_wait(true),
            "a running drain does not cut waits short"
        );
    }

    /// Stopping early (was: a process test with a 30 s grace that had to exit within 5 s of
    /// the last player leaving): the first tick after the last player left ends the drain.
    #[test]
    fn drain_ends_when_the_last_player_leaves() {
        let t0 = Instant::now();
        let mut d = Drain::new(ms(30_000));
        let got = steps(&mut d, t0, &[(0, true, 3), (16, true, 1), (32, true, 0)]);
        assert_eq!(
            got,
            [
                DrainStep::Begin,
                DrainStep::Run,
                DrainStep::Finish(Finish::Empty)
            ]
        );
    }

    #[test]
    fn drain_with_nobody_connected_ends_at_once() {
        let t0 = Instant::now();
        let mut d = Drain::new(ms(30_000));
        // The loop asks again right after Begin (same instant).
        let got = steps(&mut d, t0, &[(5, true, 0), (5, true, 0)]);
        assert_eq!(got, [DrainStep::Begin, DrainStep::Finish(Finish::Empty)]);
    }

    #[test]
    fn a_drain_is_begun_once_and_its_deadline_never_moves() {
        let t0 = Instant::now();
        let mut d = Drain::new(ms(1000));
        assert_eq!(d.step(t0, true, 2), DrainStep::Begin);
        // The stop flag stays set; later steps never restart the drain or push the deadline.
        for at in [1, 500, 999] {
            assert_eq!(d.step(t0 + ms(at), true, 2), DrainStep::Run, "at {at}");
        }
        assert_eq!(
            d.step(t0 + ms(1000), true, 2),
            DrainStep::Finish(Finish::GraceExpired)
        );
    }
}
