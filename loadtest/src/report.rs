//! The figures of one run: the RTT histogram the event loop fills, the final [`Report`], its
//! JSON form (`--json PATH`) and the human summary printed on stdout.
//!
//! [`LatencyHistogram`] is log-linear over microseconds (exact below 64 us, then 64 buckets per
//! power of two, so any percentile is within 1/64 = 1.6% of the true sample), a fixed array
//! allocated once: recording is two shifts and an increment, and memory does not grow with the
//! number of samples (1,500 bots x 60 s x 62.5 Hz = 5.6 M samples cost the same 30 KiB as one).
//!
//! The JSON is written by hand (a dozen fields; no serde needed). Non-finite or unknown numbers
//! are written as `null`.

use std::fmt::Write as _;

/// Sub-bucket bits: 2^6 = 64 buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed to cover every `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

/// Bucket of a value.
fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = ((v >> shift) & (SUB - 1)) as usize;
    (((shift + 1) as usize) << SUB_BITS) | sub
}

/// Smallest value and width of bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < SUB as usize {
        return (i as u64, 1);
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let sub = (i as u64) & (SUB - 1);
    ((SUB + sub) << shift, 1u64 << shift)
}

/// A fixed-size log-linear histogram of durations in microseconds. See the module docs.
#[derive(Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    total: u64,
    min_us: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (allocates its fixed bucket array).
    pub fn new() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }

    /// Records one value in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.counts[bucket_of(us)] += 1;
        self.total += 1;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value recorded, exactly.
    pub fn max_us(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max_us)
    }

    /// The `q` quantile (0..=1): the middle of the bucket holding the sample of rank
    /// `ceil(q * count)`, clamped to the exact minimum and maximum (the top rank is the exact
    /// maximum). `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return Some(self.max_us);
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bucket_range(i);
                let mid = lo + (width - 1) / 2;
                return Some(mid.clamp(self.min_us, self.max_us));
            }
        }
        Some(self.max_us)
    }
}

/// Round-trip figures in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rtt {
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Largest sample.
    pub max_ms: Option<f64>,
    /// Number of samples.
    pub samples: u64,
}

impl Rtt {
    /// Summarises a histogram.
    pub fn from_histogram(h: &LatencyHistogram) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Rtt {
            p50_ms: h.quantile_us(0.50).map(ms),
            p99_ms: h.quantile_us(0.99).map(ms),
            max_ms: h.max_us().map(ms),
            samples: h.count(),
        }
    }
}

/// Figures scraped from the server's `/metrics` (each `None` when the metric was missing).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerFigures {
    /// `delta(process_cpu_seconds_total) / wall` over the window.
    pub cpu_cores: Option<f64>,
    /// p99 of `tick_duration_ms` over the window.
    pub tick_ms_p99: Option<f64>,
    /// p99 of `tick_lateness_ms` over the window.
    pub tick_lateness_ms_p99: Option<f64>,
}

/// The game the bots played, and what kept bots from playing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GameFigures {
    /// The game the server's first welcome named (`None`: no welcome arrived).
    pub server: Option<String>,
    /// `--game`, if given.
    pub requested: Option<String>,
    /// Reliable game events (`GameEvent::Message`) received by all bots over the whole run,
    /// connect phase included (games send what a player needs, such as the level, at join).
    pub events_received: u64,
    /// Bots whose welcome named another game than `--game`.
    pub mismatch: u32,
    /// Bots whose welcome named a game this binary has no bot for.
    pub unknown: u32,
    /// Bots whose welcome's game has other encodings (version, input size, entity fields) than
    /// this binary's version of it.
    pub incompatible: u32,
    /// The first of those errors, in words.
    pub first_error: Option<String>,
}

impl GameFigures {
    /// Bots that did not play their welcome's game.
    pub fn refused(&self) -> u32 {
        self.mismatch + self.unknown + self.incompatible
    }
}

/// Secondary counters, reported under `"diagnostics"` in the JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// Send slots skipped because the loop fell more than a tick behind its open-loop
    /// schedule (non-zero means the load generator did not keep up).
    pub schedule_slips: u64,
    /// Inputs sent during the window.
    pub inputs_sent: u64,
    /// Snapshots older than one already seen (dropped by the client), during the window.
    pub snapshots_stale: u64,
    /// Snapshots that arrived before the bot's welcome (not decodable; dropped by the
    /// client), during the window.
    pub snapshots_early: u64,
    /// Send slots during the window at which a connected bot sent nothing because its welcome
    /// had not arrived yet (it cannot know the game's input size before).
    pub inputs_awaiting_welcome: u64,
    /// Packets our side could not queue (datagram slab, stream send buffer) or the kernel
    /// refused.
    pub send_failures: u64,
    /// Stream transports: packets netcode sent on a WebSocket before the server answered its
    /// upgrade, dropped (netcode's handshake resends cover them). A few per bot at connect.
    pub stream_not_ready: u64,
    /// Stream transports: sends refused because a connection's bounded send buffer was full
    /// (the io backend's count; also in `send_failures`).
    pub stream_send_full: u64,
    /// Stream transports: connections that ended, by reason (`stream_closed_eof`: the server
    /// closed it; `stream_error_<kind>`; `stream_<violation>`: the framing broke), over the
    /// whole run.
    pub stream_closes: Vec<(String, u32)>,
    /// Replies produced while receiving that did not fit the outbox (dropped).
    pub outbox_dropped: u64,
    /// Datagrams the io backend dropped as truncated.
    pub io_truncated: u64,
    /// Receive errors of the io backend (for example ICMP port unreachable).
    pub io_recv_errors: u64,
    /// Bye messages received from the server (all reasons).
    pub byes: u64,
}

/// Everything one run measured. Built by the swarm, printed by `main`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// `--server`.
    pub server: String,
    /// `--clients`.
    pub clients_requested: u32,
    /// Bots connected when the window started (the ones whose snapshots are expected).
    pub clients_connected: u32,
    /// Why bots failed to connect: `(reason, count)`, for example `("connection_timed_out", 3)`.
    pub connect_failures: Vec<(String, u32)>,
    /// Why bots connected at the window start lost their connection during it:
    /// `(client state, count)`, for example `("connection_timed_out", 2)`.
    pub connection_losses: Vec<(String, u32)>,
    /// `--duration`, in seconds.
    pub duration_s: f64,
    /// The measured window, in seconds (what `snapshots_expected` is computed over).
    pub window_s: f64,
    /// Server tick length from the welcome (16 when no welcome arrived).
    pub tick_ms: u32,
    /// Sum over connected bots of window / tick.
    pub snapshots_expected: f64,
    /// Snapshots received inside the window.
    pub snapshots_received: u64,
    /// Round trips (input sent -> first snapshot acknowledging it).
    pub rtt: Rtt,
    /// Mean snapshot payload bytes inside the window (`None` without snapshots).
    pub snapshot_bytes_mean: Option<f64>,
    /// The io model that actually ran (`epoll`, ...).
    pub io_model: String,
    /// `--transport`: `udp`, `tcp` or `ws`.
    pub transport: String,
    /// CPU cores this process used over the window (`/proc/self/stat`; `None` elsewhere).
    pub loadtest_cpu_cores: Option<f64>,
    /// Server figures, present with `--metrics`.
    pub server_metrics: Option<ServerFigures>,
    /// `--min-delivery`.
    pub min_delivery: f64,
    /// The game and its errors.
    pub game: GameFigures,
    /// Secondary counters.
    pub diagnostics: Diagnostics,
}

impl Report {
    /// `snapshots_received / snapshots_expected` (0 when nothing was expected). Not clamped:
    /// duplicated or extra snapshots can push it above 1.
    pub fn delivery_ratio(&self) -> f64 {
        if self.snapshots_expected > 0.0 {
            self.snapshots_received as f64 / self.snapshots_expected
        } else {
            0.0
        }
    }

    /// Bots that never connected.
    pub fn clients_failed(&self) -> u32 {
        self.clients_requested
            .saturating_sub(self.clients_connected)
    }

    /// Bots connected at the window start whose connection ended during it.
    pub fn clients_lost(&self) -> u32 {
        self.connection_losses.iter().map(|(_, n)| n).sum()
    }

    /// Why the run failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let failed = self.clients_failed();
        if failed > 0 {
            let reasons: Vec<String> = self
                .connect_failures
                .iter()
                .map(|(r, n)| format!("{r} x{n}"))
                .collect();
            out.push(format!(
                "{failed} of {} clients could not connect ({})",
                self.clients_requested,
                if reasons.is_empty() {
                    "no reason recorded".to_string()
                } else {
                    reasons.join(", ")
                }
            ));
        }
        if self.connect_failures.iter().any(|(r, _)| {
            r.contains("sending_connection_request") || r.contains("request_timed_out")
        }) {
            out.push(
                "the server never answered some connection requests: check --server, \
                 --key-file and --protocol-id against the server's"
                    .to_string(),
            );
        }
        if self.connect_failures.iter().any(|(r, _)| {
            r.starts_with("stream_connect_failed") || r == "connect_timeout_websocket_upgrade"
        }) {
            out.push(format!(
                "some --transport {} connections failed: the server must listen for streams \
                 on --server's port number (TCP; server.max_connections > 0)",
                self.transport
            ));
        }
        let g = &self.game;
        if g.refused() > 0 {
            let mut kinds = Vec::new();
            for (kind, n) in [
                ("game_mismatch", g.mismatch),
                ("game_unknown", g.unknown),
                ("game_incompatible", g.incompatible),
            ] {
                if n > 0 {
                    kinds.push(format!("{kind} x{n}"));
                }
            }
            out.push(format!(
                "{} clients could not play the server's game ({}); first: {}",
                g.refused(),
                kinds.join(", "),
                g.first_error.as_deref().unwrap_or("no reason recorded")
            ));
        }
        let ratio = self.delivery_ratio();
        if self.clients_connected > 0 && ratio < self.min_delivery {
            out.push(format!(
                "delivery ratio {ratio:.4} is below --min-delivery {}",
                self.min_delivery
            ));
        }
        out
    }

    /// Whether every bot connected and delivery met the minimum.
    pub fn passed(&self) -> bool {
        self.failures().is_empty() && self.clients_connected > 0
    }

    /// The `--json` report (one object, trailing newline).
    pub fn to_json(&self) -> String {
        let mut j = String::with_capacity(1024);
        j.push_str("{\n");
        field(
            &mut j,
            "clients_requested",
            &self.clients_requested.to_string(),
        );
        field(
            &mut j,
            "clients_connected",
            &self.clients_connected.to_string(),
        );
        field(&mut j, "clients_failed", &self.clients_failed().to_string());
        field(&mut j, "clients_lost", &self.clients_lost().to_string());
        field(&mut j, "duration_s", &num(Some(self.duration_s)));
        field(&mut j, "window_s", &num(Some(round(self.window_s, 3))));
        field(&mut j, "tick_ms", &self.tick_ms.to_string());
        let g = &self.game;
        field(&mut j, "game", &opt_string(g.server.as_deref()));
        field(
            &mut j,
            "game_requested",
            &opt_string(g.requested.as_deref()),
        );
        field(&mut j, "events_received", &g.events_received.to_string());
        field(&mut j, "game_mismatch", &g.mismatch.to_string());
        field(&mut j, "game_unknown", &g.unknown.to_string());
        field(&mut j, "game_incompatible", &g.incompatible.to_string());
        field(&mut j, "game_error", &opt_string(g.first_error.as_deref()));
        field(
            &mut j,
            "snapshots_expected",
            &format!("{}", self.snapshots_expected.round() as u64),
        );
        field(
            &mut j,
            "snapshots_received",
            &self.snapshots_received.to_string(),
        );
        field(
            &mut j,
            "delivery_ratio",
            &num(Some(round(self.delivery_ratio(), 6))),
        );
        field(&mut j, "min_delivery", &num(Some(self.min_delivery)));
        let r = &self.rtt;
        field(
            &mut j,
            "rtt_ms",
            &format!(
                "{{\"p50\": {}, \"p99\": {}, \"max\": {}, \"samples\": {}}}",
                num(r.p50_ms),
                num(r.p99_ms),
                num(r.max_ms),
                r.samples
            ),
        );
        field(
            &mut j,
            "snapshot_bytes_mean",
            &num(self.snapshot_bytes_mean.map(|b| round(b, 2))),
        );
        field(&mut j, "transport", &string(&self.transport));
        field(&mut j, "io_model", &string(&self.io_model));
        field(
            &mut j,
            "loadtest_cpu_cores",
            &num(self.loadtest_cpu_cores.map(|c| round(c, 4))),
        );
        if let Some(s) = &self.server_metrics {
            field(
                &mut j,
                "server_cpu_cores",
                &num(s.cpu_cores.map(|c| round(c, 4))),
            );
            field(
                &mut j,
                "tick_ms_p99",
                &num(s.tick_ms_p99.map(|c| round(c, 4))),
            );
            field(
                &mut j,
                "tick_lateness_ms_p99",
                &num(s.tick_lateness_ms_p99.map(|c| round(c, 4))),
            );
        }
        field(&mut j, "connect_failures", &counts(&self.connect_failures));
        field(
            &mut j,
            "connection_losses",
            &counts(&self.connection_losses),
        );
        let d = &self.diagnostics;
        field(
            &mut j,
            "diagnostics",
            &format!(
                "{{\"schedule_slips\": {}, \"inputs_sent\": {}, \"snapshots_stale\": {}, \
                 \"snapshots_early\": {}, \"inputs_awaiting_welcome\": {}, \
                 \"send_failures\": {}, \"outbox_dropped\": {}, \"io_truncated\": {}, \
                 \"io_recv_errors\": {}, \"byes\": {}, \"stream_not_ready\": {}, \
                 \"stream_send_full\": {}, \"stream_closes\": {}}}",
                d.schedule_slips,
                d.inputs_sent,
                d.snapshots_stale,
                d.snapshots_early,
                d.inputs_awaiting_welcome,
                d.send_failures,
                d.outbox_dropped,
                d.io_truncated,
                d.io_recv_errors,
                d.byes,
                d.stream_not_ready,
                d.stream_send_full,
                counts(&d.stream_closes)
            ),
        );
        let failures: Vec<String> = self.failures().iter().map(|f| string(f)).collect();
        field(&mut j, "failures", &format!("[{}]", failures.join(", ")));
        j.push_str(&format!("  \"passed\": {}\n}}\n", self.passed()));
        j
    }

    /// The human summary for stdout.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.2}{unit}"),
            None => "n/a".to_string(),
        };
        let _ = writeln!(
            s,
            "tickwire-loadtest: {} bots -> {} over {} (io {}), window {:.1} s of {} s, tick {} ms",
            self.clients_requested,
            self.server,
            self.transport,
            self.io_model,
            self.window_s,
            self.duration_s,
            self.tick_ms
        );
        let lost: Vec<String> = self
            .connection_losses
            .iter()
            .map(|(r, n)| format!("{r} x{n}"))
            .collect();
        let _ = writeln!(
            s,
            "  clients     {}/{} connected, {} lost during the window{}",
            self.clients_connected,
            self.clients_requested,
            self.clients_lost(),
            if lost.is_empty() {
                String::new()
            } else {
                format!(" ({})", lost.join(", "))
            }
        );
        if !self.diagnostics.stream_closes.is_empty() {
            let closes: Vec<String> = self
                .diagnostics
                .stream_closes
                .iter()
                .map(|(r, n)| format!("{r} x{n}"))
                .collect();
            let _ = writeln!(s, "  streams     ended: {}", closes.join(", "));
        }
        let g = &self.game;
        let _ = writeln!(
            s,
            "  game        {}{}, {} events received{}",
            g.server
                .as_deref()
                .unwrap_or("unknown (no welcome arrived)"),
            match &g.requested {
                Some(r) => format!(" (--game {r})"),
                None => " (from the server's welcome)".to_string(),
            },
            g.events_received,
            if g.refused() > 0 {
                format!(", {} clients could not play it", g.refused())
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "  snapshots   {} received / {:.0} expected: delivery {:.4} (minimum {})",
            self.snapshots_received,
            self.snapshots_expected,
            self.delivery_ratio(),
            self.min_delivery
        );
        let _ = writeln!(
            s,
            "  rtt         p50 {}  p99 {}  max {}  ({} samples; input send -> first snapshot \
             acking it, includes up to one tick of server queueing)",
            opt(self.rtt.p50_ms, " ms"),
            opt(self.rtt.p99_ms, " ms"),
            opt(self.rtt.max_ms, " ms"),
            self.rtt.samples
        );
        let _ = writeln!(
            s,
            "  snapshot    {} mean payload",
            opt(self.snapshot_bytes_mean, " B")
        );
        let _ = writeln!(
            s,
            "  loadtest    {} cores, {} inputs sent, {} schedule slips",
            opt(self.loadtest_cpu_cores, ""),
            self.diagnostics.inputs_sent,
            self.diagnostics.schedule_slips
        );
        if let Some(m) = &self.server_metrics {
            let _ = writeln!(
                s,
                "  server      {} cores, tick p99 {}, tick lateness p99 {}",
                opt(m.cpu_cores, ""),
                opt(m.tick_ms_p99, " ms"),
                opt(m.tick_lateness_ms_p99, " ms")
            );
        }
        if self.diagnostics.schedule_slips > 0 {
            let _ = writeln!(
                s,
                "  warning     the load tester fell more than a tick behind its send schedule \
                 {} times: it was short of CPU, so these figures are not the server's alone",
                self.diagnostics.schedule_slips
            );
        }
        let failures = self.failures();
        if self.passed() {
            let _ = writeln!(s, "  result      PASS");
        } else if failures.is_empty() {
            let _ = writeln!(s, "  result      FAIL: no client connected");
        } else {
            let _ = writeln!(s, "  result      FAIL: {}", failures.join("; "));
        }
        s
    }
}

/// `{"reason": count, ...}`.
fn counts(list: &[(String, u32)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(r, n)| format!("{}: {n}", string(r)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn field(j: &mut String, key: &str, value: &str) {
    let _ = writeln!(j, "  \"{key}\": {value},");
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// A JSON number, or `null` for `None` and non-finite values.
fn num(v: Option<f64>) -> String {
    match v {
        // Rust prints f64 without exponents ("3", "0.25"): valid JSON numbers.
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".to_string(),
    }
}

/// A JSON string literal, or `null`.
fn opt_string(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), string)
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (lo, width) = bucket_range(i);
            assert_eq!(lo, next, "bucket {i}");
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(lo + (width - 1)), i);
            next = lo.wrapping_add(width);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_within_relative_error() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.quantile_us(0.5), None);
        assert_eq!(h.max_us(), None);
        // 1..=100_000 us, uniform.
        for us in 1..=100_000u64 {
            h.record_us(us);
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.max_us(), Some(100_000));
        for (q, exact) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile_us(q).unwrap() as f64;
            assert!(
                (got - exact).abs() / exact <= 1.0 / 64.0,
                "q={q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile_us(0.0), Some(1));
        assert_eq!(h.quantile_us(1.0), Some(100_000));
    }

    #[test]
    fn small_values_are_exact_and_clamped() {
        let mut h = LatencyHistogram::new();
        for us in [10, 10, 10, 20, 5000] {
            h.record_us(us);
        }
        h.record_us(30);
        assert_eq!(h.quantile_us(0.5), Some(10));
        assert_eq!(h.quantile_us(0.6), Some(20));
        assert_eq!(h.quantile_us(1.0), Some(5000));
        let mut one = LatencyHistogram::new();
        one.record_us(123_456);
        // The bucket midpoint is clamped to the only sample.
        assert_eq!(one.quantile_us(0.5), Some(123_456));
        let rtt = Rtt::from_histogram(&one);
        assert_eq!(rtt.p50_ms, Some(123.456));
        assert_eq!(rtt.samples, 1);
    }

    fn sample_report() -> Report {
        Report {
            server: "127.0.0.1:7777".into(),
            clients_requested: 10,
            clients_connected: 10,
            connect_failures: Vec::new(),
            connection_losses: Vec::new(),
            duration_s: 2.0,
            window_s: 2.0004,
            tick_ms: 16,
            snapshots_expected: 1250.0,
            snapshots_received: 1240,
            rtt: Rtt {
                p50_ms: Some(9.5),
                p99_ms: Some(17.25),
                max_ms: Some(30.0),
                samples: 1200,
            },
            snapshot_bytes_mean: Some(612.345),
            io_model: "epoll".into(),
            transport: "udp".into(),
            loadtest_cpu_cores: Some(0.12345),
            server_metrics: None,
            min_delivery: 0.95,
            game: GameFigures {
                server: Some("arena".into()),
                requested: None,
                events_received: 10,
                ..GameFigures::default()
            },
            diagnostics: Diagnostics::default(),
        }
    }

    /// Finds `"key": value` in the flat JSON text and returns `value` up to the next `,` or
    /// newline at the top level (enough for these flat reports).
    fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
        let line = json
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{key}\":")))?;
        let v = line.split_once(':')?.1.trim();
        Some(v.strip_suffix(',').unwrap_or(v))
    }

    #[test]
    fn json_shape() {
        let r = sample_report();
        assert!(r.passed());
        let json = r.to_json();
        assert!(json.starts_with("{\n") && json.ends_with("}\n"), "{json}");
        for (key, want) in [
            ("clients_requested", "10"),
            ("clients_connected", "10"),
            ("duration_s", "2"),
            ("window_s", "2"),
            ("snapshots_expected", "1250"),
            ("snapshots_received", "1240"),
            ("delivery_ratio", "0.992"),
            ("snapshot_bytes_mean", "612.35"),
            ("io_model", "\"epoll\""),
            ("transport", "\"udp\""),
            ("loadtest_cpu_cores", "0.1235"),
            ("game", "\"arena\""),
            ("game_requested", "null"),
            ("events_received", "10"),
            ("game_mismatch", "0"),
            ("game_unknown", "0"),
            ("game_incompatible", "0"),
            ("game_error", "null"),
            ("clients_lost", "0"),
            ("failures", "[]"),
            ("passed", "true"),
        ] {
            assert_eq!(json_value(&json, key), Some(want), "{key} in {json}");
        }
        assert_eq!(
            json_value(&json, "rtt_ms"),
            Some("{\"p50\": 9.5, \"p99\": 17.25, \"max\": 30, \"samples\": 1200}")
        );
        assert!(!r.summary().contains("warning"));
        assert!(
            r.summary()
                .contains("game        arena (from the server's welcome), 10 events received\n"),
            "{}",
            r.summary()
        );
        let d = json_value(&json, "diagnostics").unwrap();
        assert!(
            d.contains("\"snapshots_early\": 0") && d.contains("\"inputs_awaiting_welcome\": 0"),
            "{d}"
        );
        let mut slipped = r.clone();
        slipped.diagnostics.schedule_slips = 3;
        assert!(slipped
            .summary()
            .contains("behind its send schedule 3 times"));
        assert!(slipped.passed(), "slips warn, they do not fail the run");
        // Server figures only with --metrics.
        assert_eq!(json_value(&json, "server_cpu_cores"), None);
        let mut with = r.clone();
        with.server_metrics = Some(ServerFigures {
            cpu_cores: Some(0.5),
            tick_ms_p99: Some(1.25),
            tick_lateness_ms_p99: None,
        });
        let json = with.to_json();
        assert_eq!(json_value(&json, "server_cpu_cores"), Some("0.5"));
        assert_eq!(json_value(&json, "tick_ms_p99"), Some("1.25"));
        assert_eq!(json_value(&json, "tick_lateness_ms_p99"), Some("null"));
        // Balanced braces and quotes: a cheap well-formedness check.
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json.matches('"').count() % 2, 0);
    }

    #[test]
    fn failures_name_the_cause() {
        let mut r = sample_report();
        r.clients_connected = 7;
        r.connect_failures = vec![("connection_denied".into(), 2), ("timed_out".into(), 1)];
        r.snapshots_received = 100;
        assert!(!r.passed());
        let f = r.failures();
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(
            f[0].contains("3 of 10") && f[0].contains("connection_denied x2"),
            "{f:?}"
        );
        assert!(f[1].contains("below --min-delivery 0.95"), "{f:?}");
        let json = r.to_json();
        assert_eq!(json_value(&json, "passed"), Some("false"));
        assert_eq!(json_value(&json, "clients_failed"), Some("3"));
        assert_eq!(
            json_value(&json, "connect_failures"),
            Some("{\"connection_denied\": 2, \"timed_out\": 1}")
        );
        r.connection_losses = vec![("connection_timed_out".into(), 4)];
        let json = r.to_json();
        assert_eq!(json_value(&json, "clients_lost"), Some("4"));
        assert_eq!(
            json_value(&json, "connection_losses"),
            Some("{\"connection_timed_out\": 4}")
        );
        assert!(r
            .summary()
            .contains("4 lost during the window (connection_timed_out x4)"));
        assert!(r
            .summary()
            .contains("FAIL: 3 of 10 clients could not connect"));
        // Bots stuck sending connection requests: a hint at the usual causes.
        let mut silent = sample_report();
        silent.clients_connected = 0;
        silent.connect_failures = vec![("connect_timeout_sending_connection_request".into(), 10)];
        let f = silent.failures();
        assert!(f.iter().any(|l| l.contains("--protocol-id")), "{f:?}");
        // Nothing expected: ratio 0, no NaN anywhere.
        let mut none = sample_report();
        none.clients_connected = 0;
        none.snapshots_expected = 0.0;
        none.snapshots_received = 0;
        none.rtt = Rtt::default();
        none.snapshot_bytes_mean = None;
        assert_eq!(none.delivery_ratio(), 0.0);
        assert!(!none.passed());
        let json = none.to_json();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
        assert_eq!(
            json_value(&json, "rtt_ms"),
            Some("{\"p50\": null, \"p99\": null, \"max\": null, \"samples\": 0}")
        );
    }

    #[test]
    fn game_errors_fail_the_run() {
        let mut r = sample_report();
        r.game.requested = Some("arena".into());
        r.game.server = Some("tag".into());
        r.game.mismatch = 10;
        r.game.first_error =
            Some("the server plays \"tag\", but --game asked for \"arena\"".into());
        assert!(!r.passed());
        let f = r.failures();
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].contains("10 clients could not play the server's game (game_mismatch x10)")
                && f[0].contains("--game asked for \"arena\""),
            "{f:?}"
        );
        let json = r.to_json();
        assert_eq!(json_value(&json, "game"), Some("\"tag\""));
        assert_eq!(json_value(&json, "game_requested"), Some("\"arena\""));
        assert_eq!(json_value(&json, "game_mismatch"), Some("10"));
        assert_eq!(
            json_value(&json, "game_error"),
            Some("\"the server plays \\\"tag\\\", but --game asked for \\\"arena\\\"\"")
        );
        assert_eq!(json_value(&json, "passed"), Some("false"));
        let summary = r.summary();
        assert!(
            summary.contains(
                "game        tag (--game arena), 10 events received, 10 clients could not play it"
            ),
            "{summary}"
        );
        // No welcome at all: the game is unknown, not an error of its own.
        let mut none = sample_report();
        none.game = GameFigures::default();
        assert!(none.passed());
        assert_eq!(json_value(&none.to_json(), "game"), Some("null"));
        assert!(none.summary().contains("unknown (no welcome arrived)"));
        // Unknown and incompatible games are listed with their counts.
        let mut mixed = sample_report();
        mixed.game.unknown = 2;
        mixed.game.incompatible = 1;
        let f = mixed.failures();
        assert!(
            f[0].contains("3 clients") && f[0].contains("game_unknown x2, game_incompatible x1"),
            "{f:?}"
        );
    }

    #[test]
    fn stream_transports_are_reported() {
        let mut r = sample_report();
        r.transport = "ws".into();
        r.clients_connected = 9;
        r.connect_failures = vec![(
            "stream_connect_failed: Connection refused (os error 111)".into(),
            1,
        )];
        r.connection_losses = vec![("stream_closed_eof".into(), 2)];
        r.diagnostics.stream_not_ready = 10;
        r.diagnostics.stream_send_full = 3;
        r.diagnostics.stream_closes = vec![
            ("stream_closed_eof".into(), 2),
            ("stream_peer_close".into(), 1),
        ];
        let json = r.to_json();
        assert_eq!(json_value(&json, "transport"), Some("\"ws\""));
        assert_eq!(json_value(&json, "clients_lost"), Some("2"));
        let d = json_value(&json, "diagnostics").unwrap();
        assert!(
            d.contains("\"stream_not_ready\": 10")
                && d.contains("\"stream_send_full\": 3")
                && d.contains(
                    "\"stream_closes\": {\"stream_closed_eof\": 2, \"stream_peer_close\": 1}}"
                ),
            "{d}"
        );
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        let summary = r.summary();
        assert!(
            summary.contains("bots -> 127.0.0.1:7777 over ws (io epoll)"),
            "{summary}"
        );
        assert!(
            summary.contains("streams     ended: stream_closed_eof x2, stream_peer_close x1"),
            "{summary}"
        );
        assert!(
            summary.contains("2 lost during the window (stream_closed_eof x2)"),
            "{summary}"
        );
        let f = r.failures();
        assert!(
            f.iter()
                .any(|l| l.contains("--transport ws") && l.contains("max_connections")),
            "{f:?}"
        );
        // UDP runs say nothing about streams.
        let udp = sample_report();
        assert!(!udp.summary().contains("streams"));
        assert!(json_value(&udp.to_json(), "diagnostics")
            .unwrap()
            .contains("\"stream_closes\": {}"));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(num(Some(f64::NAN)), "null");
        assert_eq!(num(Some(f64::INFINITY)), "null");
        assert_eq!(num(Some(0.1)), "0.1");
    }
}
