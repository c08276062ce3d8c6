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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use tickwire_core::{ByeReason, DenyReason, DropReason, GameServer, Now, ServerStats};

use crate::admin::Health;
use crate::metrics as m;
use crate::net::{CloseWhy, Net};

/// Test hook: names a file whose existence stalls the tick loop.
pub const STALL_FILE_ENV: &str = "TICKWIRE_TEST_STALL_FILE";

/// Everything the loop needs, built and validated by `main`.
pub struct RunParams {
    /// The transports: the opened backend (after model choice and fallback) with the bound
    /// UDP game socket and, when stream transports are on, the TCP listener.
    pub(crate) net: Net,
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
    players_udp: Gauge,
    players_tcp: Gauge,
    players_ws: Gauge,
    tcp: TransportMetrics,
    ws: TransportMetrics,
    stream_accepted: Counter,
    stream_open: Gauge,
    stream_shed: Counter,
    stream_queued: Gauge,
}

/// Packet and byte counters of one stream transport.
struct TransportMetrics {
    packets_in: Counter,
    packets_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl TransportMetrics {
    fn new(transport: &'static str) -> Self {
        TransportMetrics {
            packets_in: counter!(m::PACKETS_RECEIVED, "transport" => transport),
            packets_out: counter!(m::PACKETS_SENT, "transport" => transport),
            bytes_in: counter!(m::BYTES_RECEIVED, "transport" => transport),
            bytes_out: counter!(m::BYTES_SENT, "transport" => transport),
        }
    }

    fn export(&self, now: &crate::net::TransportCounts, prev: &crate::net::TransportCounts) {
        self.packets_in.increment(now.packets_in - prev.packets_in);
        self.packets_out
            .increment(now.packets_out - prev.packets_out);
        self.bytes_in.increment(now.bytes_in - prev.bytes_in);
        self.bytes_out.increment(now.bytes_out - prev.bytes_out);
    }
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
            players_udp: gauge!(m::PLAYERS_BY_TRANSPORT, "transport" => m::TRANSPORT_UDP),
            players_tcp: gauge!(m::PLAYERS_BY_TRANSPORT, "transport" => m::TRANSPORT_TCP),
            players_ws: gauge!(m::PLAYERS_BY_TRANSPORT, "transport" => m::TRANSPORT_WS),
            tcp: TransportMetrics::new(m::TRANSPORT_TCP),
            ws: TransportMetrics::new(m::TRANSPORT_WS),
            stream_accepted: counter!(m::STREAM_ACCEPTED),
            stream_open: gauge!(m::STREAM_OPEN),
            stream_shed: counter!(m::STREAM_ACCEPTS_SHED),
            stream_queued: gauge!(m::STREAM_SEND_QUEUED_BYTES),
        }
    }
}

/// Counters already exported, so each tick exports only the difference.
#[derive(Default)]
struct Exported {
    netcode: ServerStats,
    core: tickwire_core::CoreStats,
    io: tickwire_io::IoStats,
    net: crate::net::NetStats,
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
        mut net,
        mut server,
        tick,
        timeout,
        max_events,
        shutdown,
        drain_grace,
        health,
        agones,
    } = params;
    let backend_name = net.backend().model().as_str();
    health.set_backend(backend_name);

    let metrics = LoopMetrics::new(backend_name, server.max_players());
    let mut exported = Exported::default();
    let clock = Clock::new();
    let at = |i: Instant| clock.at(i);
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
                    server.broadcast_bye(
                        clock.at(Instant::now()),
                        ByeReason::Draining,
                        &mut |to, bytes| {
                            net.send(to, bytes);
                        },
                    );
                    net.backend_mut().flush()?;
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
        // Between ticks: wait in the backend until something arrives or the next drain
        // point, then take everything queued. Inputs only matter at the tick, so the loop
        // does not handle every datagram as it comes: an arrival ends the wait, what arrived is
        // handled, and the rest of the interval is slept (coalescing), so the loop wakes at
        // most twice per drain point however busy the port is. It drains at most every
        // `timeout` and at least twice a tick (half-way, so handshakes are answered within
        // half a tick, and at the deadline). The kernel's socket buffers hold what arrives
        // meanwhile (see docs/operations.md on net.core.rmem_max).
        let woke = loop {
            let now = Instant::now();
            if drain.interrupts_wait(shutdown.load(Ordering::Relaxed)) {
                break now;
            }
            let until = deadline.min(now + timeout.min(half_tick));
            let mut wait_events = 0;
            if until > now {
                let (waited, events) = net.wait(until, &mut server, &at)?;
                if events > 0 {
                    // Answer what woke us (handshakes) now rather than at the drain point.
                    net.backend_mut().flush()?;
                }
                // Only real waits are samples: with io.timeout_ms = 0 the loop never waits,
                // and a sample per spin would flood the histogram between upkeeps.
                metrics.io_wait_ms.record(ms(waited));
                wait_events = events;
                metrics.io_events.increment(events as u64);
                let rest = until.saturating_duration_since(Instant::now());
                if !rest.is_zero() && !drain.interrupts_wait(shutdown.load(Ordering::Relaxed)) {
                    std::thread::sleep(rest);
                }
            }
            let woke = Instant::now();
            let events = service(&mut net, &mut server, &at, &metrics, max_events)?;
            tracing::debug!(
                events_count = events + wait_events,
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
        server.tick(clock.at(started), &mut |to, bytes| {
            net.send(to, bytes);
        });
        net.upkeep(&mut server, clock.at(started));
        let flush = net.backend_mut().flush()?;
        // Hand the batch to the kernel now (completion backends submit on poll) and answer
        // whatever arrived during the tick.
        service(&mut net, &mut server, &at, &metrics, max_events)?;
        let finished = Instant::now();
        metrics.tick_duration_ms.record(ms(finished - started));
        metrics.ticks.increment(1);
        metrics.io_send_failed.increment(flush.failed as u64);
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
        export(&metrics, &mut exported, &server, &mut net);
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
        server.broadcast_bye(
            clock.at(Instant::now()),
            ByeReason::ServerShutdown,
            &mut |to, bytes| {
                net.send(to, bytes);
            },
        );
        net.backend_mut().flush()?;
        // Send it now, then take what clients sent meanwhile once more before disconnecting.
        for pause in [Duration::ZERO, 2 * tick] {
            std::thread::sleep(pause);
            service(&mut net, &mut server, &at, &metrics, max_events)?;
        }
    }
    server.shutdown(&mut |to, bytes| {
        net.send(to, bytes);
    });
    net.backend_mut().flush()?;
    // Streams: what was just queued (the disconnect packets) is written as the connections
    // close, as far as the kernel takes it at once.
    net.close_all(&mut server, clock.at(Instant::now()));
    // io_uring submits on poll: hand the last sends and closes to the kernel.
    net.backend_mut().poll(Instant::now(), &mut |_| {})?;
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
    export(&metrics, &mut exported, &server, &mut net);
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
fn service(
    net: &mut Net,
    server: &mut GameServer,
    at: &dyn Fn(Instant) -> Now,
    metrics: &LoopMetrics,
    max_events: usize,
) -> io::Result<usize> {
    let events = net.drain(server, at, max_events)?;
    metrics.io_events.increment(events as u64);
    net.backend_mut().flush()?;
    Ok(events)
}

/// Exports what changed since the last call (counters only ever go up).
fn export(m: &LoopMetrics, prev: &mut Exported, server: &GameServer, net: &mut Net) {
    let n = server.netcode_stats();
    let p = &prev.netcode;
    let p_late = p.late_after_disconnect;
    // netcode counts packets of every transport; the stream transports count their own, and
    // UDP is the rest.
    let ns = *net.stats();
    let (t, w, pt, pw) = (ns.tcp, ns.ws, prev.net.tcp, prev.net.ws);
    let streams_now = |f: fn(&crate::net::TransportCounts) -> u64| f(&t) + f(&w);
    let streams_prev = |f: fn(&crate::net::TransportCounts) -> u64| f(&pt) + f(&pw);
    m.packets_in.increment(
        (n.packets_in - p.packets_in)
            .saturating_sub(streams_now(|c| c.packets_in) - streams_prev(|c| c.packets_in)),
    );
    m.packets_out.increment(
        (n.packets_out - p.packets_out)
            .saturating_sub(streams_now(|c| c.packets_out) - streams_prev(|c| c.packets_out)),
    );
    m.bytes_in.increment(
        (n.bytes_in - p.bytes_in)
            .saturating_sub(streams_now(|c| c.bytes_in) - streams_prev(|c| c.bytes_in)),
    );
    m.bytes_out.increment(
        (n.bytes_out - p.bytes_out)
            .saturating_sub(streams_now(|c| c.bytes_out) - streams_prev(|c| c.bytes_out)),
    );
    m.tcp.export(&t, &pt);
    m.ws.export(&w, &pw);
    m.stream_accepted.increment(ns.accepted - prev.net.accepted);
    m.io_send_failed.increment(
        (ns.send_failed - prev.net.send_failed) + (ns.outbox_dropped - prev.net.outbox_dropped),
    );
    prev.net = ns;
    net.take_closed(&mut |why: CloseWhy, count| {
        counter!(m::STREAM_CLOSED, "reason" => why.as_str()).increment(count);
    });
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
        .increment(c.sends_failed - prev.core.sends_failed);
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
    prev.core = *c;

    let backend = net.backend();
    let io = backend.stats();
    m.io_truncated.increment(io.truncated - prev.io.truncated);
    m.stream_shed
        .increment(io.accepts_shed - prev.io.accepts_shed);
    // Closed by the backend before the loop saw them: over the limit, or a descriptor select
    // cannot wait on.
    for (reason, now, before) in [
        (
            "over_limit",
            io.accepts_over_limit,
            prev.io.accepts_over_limit,
        ),
        ("fd_too_high", io.accepts_refused, prev.io.accepts_refused),
        ("shed", io.accepts_shed, prev.io.accepts_shed),
    ] {
        if now > before {
            counter!(m::STREAM_CLOSED, "reason" => reason).increment(now - before);
        }
    }
    m.stream_queued.set(backend.stream_queued() as f64);
    prev.io = io;

    let census = net.census();
    m.players.set(server.players() as f64);
    m.players_tcp.set(census.tcp_players as f64);
    m.players_ws.set(census.ws_players as f64);
    m.players_udp.set(
        server
            .players()
            .saturating_sub(census.tcp_players + census.ws_players) as f64,
    );
    m.stream_open.set(census.open as f64);
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
