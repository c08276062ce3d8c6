//! Metric names, descriptions and the Prometheus recorder (no HTTP listener of its own: the
//! admin server in [`crate::admin`] serves [`render`]).
//!
//! Startup (only when `metrics.bind` is not `off`):
//! ```ignore
//! let handle = metrics::install()?;      // global recorder + describe_all()
//! // register handles (metrics::counter!(metrics::TICKS), ...) after install
//! let admin = admin::spawn(bind, handle, health)?;
//! ```
//! Handles registered before [`install`] (or with metrics off) are no-ops, which is what the loop
//! wants when metrics are disabled. Names carry their unit last (`_ms`, `_bytes`, `_total`), and
//! labels are low-cardinality only (`backend`, `transport`, `reason`).
//!
//! Process metrics (`process_*`) are not kept in the recorder: they are read from `/proc/self` on
//! each scrape and appended to the exposition text (Linux only; elsewhere they are omitted).

use std::fmt::{self, Write as _};

use metrics::Unit;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Counter, label `backend`: I/O events handled (datagrams plus wake-ups).
pub const IO_EVENTS_PROCESSED: &str = "io_events_processed_total";
/// Histogram (ms), label `backend`: time blocked in the I/O wait.
pub const IO_WAIT_DURATION_MS: &str = "io_wait_duration_ms";
/// Counter, label `backend`: datagrams the kernel refused or the send queue had no room for.
pub const IO_SEND_FAILED: &str = "io_send_failed_total";
/// Histogram (ms): time from tick start to tick end (simulation + snapshots + flush).
pub const TICK_DURATION_MS: &str = "tick_duration_ms";
/// Histogram (ms): how late a tick started relative to its deadline.
pub const TICK_LATENESS_MS: &str = "tick_lateness_ms";
/// Counter: tick deadlines skipped because a tick overran (skip-ahead policy).
pub const TICK_OVERRUNS: &str = "tick_overruns_total";
/// Counter: ticks executed.
pub const TICKS: &str = "ticks_total";
/// Gauge: clients currently connected.
pub const PLAYERS_CONNECTED: &str = "players_connected";
/// Gauge: `server.max_players`.
pub const PLAYERS_MAX: &str = "players_max";
/// Counter, label `transport`: datagrams received.
pub const PACKETS_RECEIVED: &str = "packets_received_total";
/// Counter, label `transport`: datagrams sent.
pub const PACKETS_SENT: &str = "packets_sent_total";
/// Counter, label `transport`: payload bytes received.
pub const BYTES_RECEIVED: &str = "bytes_received_total";
/// Counter, label `transport`: payload bytes sent.
pub const BYTES_SENT: &str = "bytes_sent_total";
/// Counter, label `reason`: received packets dropped.
pub const PACKETS_DROPPED: &str = "packets_dropped_total";
/// Counter: clients that completed the handshake.
pub const CONNECTS: &str = "connects_total";
/// Counter, label `reason`: connection requests denied.
pub const CONNECTS_DENIED: &str = "connects_denied_total";
/// Counter: clients disconnected.
pub const DISCONNECTS: &str = "disconnects_total";
/// Counter (bytes): total snapshot payload bytes sent. Mean snapshot size =
/// `snapshot_bytes_total / snapshots_sent_total` (a per-snapshot histogram would cost a sample
/// per client per tick).
pub const SNAPSHOT_BYTES_TOTAL: &str = "snapshot_bytes_total";
/// Counter: snapshots sent (one per connected client per tick).
/// Counter: A2S server queries answered (challenges and full replies).
pub const QUERIES_ANSWERED: &str = "a2s_queries_answered_total";
/// Counter: snapshots sent to clients.
pub const SNAPSHOTS_SENT: &str = "snapshots_sent_total";
/// Counter: reliable game events for players, label `result` (`queued`, `too_large`,
/// `backlog`: the client fell too far behind).
pub const GAME_EVENTS: &str = "game_events_total";
/// Counter: reliable messages from players handed to the game.
pub const GAME_MESSAGES_RECEIVED: &str = "game_messages_received_total";
/// Counter: packets from an address whose session just ended cleanly (the redundant
/// disconnect copies); not drops.
pub const LATE_AFTER_DISCONNECT: &str = "packets_late_after_disconnect_total";
/// Gauge (always 1), labels `version`, `backend`.
pub const BUILD_INFO: &str = "build_info";

/// Gauge, label `transport`: connected players by transport (`udp`, `tcp`, `ws`).
pub const PLAYERS_BY_TRANSPORT: &str = "players_by_transport";
/// Counter: stream connections (TCP and WebSocket) accepted on the game port.
pub const STREAM_ACCEPTED: &str = "stream_connections_accepted_total";
/// Counter, label `reason`: stream connections closed (see docs/operations.md for reasons).
pub const STREAM_CLOSED: &str = "stream_connections_closed_total";
/// Gauge: stream connections open.
pub const STREAM_OPEN: &str = "stream_connections_open";
/// Counter: times the listener shed a connection because the process ran out of descriptors
/// (EMFILE/ENFILE): accepted with the reserve descriptor and closed, never a busy loop.
pub const STREAM_ACCEPTS_SHED: &str = "stream_accepts_shed_total";
/// Gauge (bytes): bytes queued in stream connections' send buffers, not yet taken by the
/// kernel.
pub const STREAM_SEND_QUEUED_BYTES: &str = "stream_send_queued_bytes";

/// Transport label: UDP datagrams.
pub const TRANSPORT_UDP: &str = "udp";
/// Transport label: length-prefixed netcode packets over TCP.
pub const TRANSPORT_TCP: &str = "tcp";
/// Transport label: netcode packets as WebSocket binary messages.
pub const TRANSPORT_WS: &str = "ws";

/// Buckets (ms) for `io_wait_duration_ms`: sub-millisecond resolution up to a tick, then coarse.
pub const IO_WAIT_BUCKETS_MS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0, 1000.0,
];
/// Buckets (ms) for `tick_duration_ms` and `tick_lateness_ms`.
pub const TICK_BUCKETS_MS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0,
];

/// The recorder could not be installed.
#[derive(Debug)]
pub enum MetricsError {
    /// A bucket list was rejected by the exporter.
    Build(metrics_exporter_prometheus::BuildError),
    /// Another global recorder is already installed in this process.
    AlreadyInstalled,
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::Build(e) => write!(f, "cannot build the Prometheus recorder: {e}"),
            MetricsError::AlreadyInstalled => {
                f.write_str("a metrics recorder is already installed")
            }
        }
    }
}

impl std::error::Error for MetricsError {}

/// Builds a recorder with the histogram buckets above (no listener, no global install).
/// Tests use this with `metrics::with_local_recorder`.
pub fn build_recorder() -> Result<PrometheusRecorder, MetricsError> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(IO_WAIT_DURATION_MS.into()),
            IO_WAIT_BUCKETS_MS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(TICK_DURATION_MS.into()), TICK_BUCKETS_MS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(TICK_LATENESS_MS.into()), TICK_BUCKETS_MS)
        })
        .map_err(MetricsError::Build)?;
    Ok(builder.build_recorder())
}

/// Builds the recorder, installs it as the process-global recorder, registers every
/// description ([`describe_all`]) and returns the handle to render from. Call once, early.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = build_recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    describe_all();
    Ok(handle)
}

/// Registers description and unit of every metric with the current recorder.
pub fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        GAME_EVENTS,
        Unit::Count,
        "Reliable game events for players, by result (queued, too_large, backlog)"
    );
    describe_counter!(
        GAME_MESSAGES_RECEIVED,
        Unit::Count,
        "Reliable messages from players handed to the game"
    );
    describe_counter!(
        LATE_AFTER_DISCONNECT,
        Unit::Count,
        "Packets from an address whose session just ended cleanly (redundant disconnect copies)"
    );
    describe_gauge!(
        PLAYERS_BY_TRANSPORT,
        Unit::Count,
        "Connected players by transport (udp, tcp, ws)"
    );
    describe_counter!(
        STREAM_ACCEPTED,
        Unit::Count,
        "Stream connections (TCP and WebSocket) accepted on the game port"
    );
    describe_counter!(
        STREAM_CLOSED,
        Unit::Count,
        "Stream connections closed, by reason"
    );
    describe_gauge!(STREAM_OPEN, Unit::Count, "Stream connections open");
    describe_counter!(
        STREAM_ACCEPTS_SHED,
        Unit::Count,
        "Connections shed at accept because the process ran out of file descriptors"
    );
    describe_gauge!(
        STREAM_SEND_QUEUED_BYTES,
        Unit::Bytes,
        "Bytes queued in stream connections' send buffers, not yet taken by the kernel"
    );
    describe_counter!(
        IO_EVENTS_PROCESSED,
        Unit::Count,
        "I/O events handled (datagrams and wake-ups), by backend"
    );
    describe_histogram!(
        IO_WAIT_DURATION_MS,
        Unit::Milliseconds,
        "Time spent blocked waiting for I/O, by backend"
    );
    describe_counter!(
        IO_SEND_FAILED,
        Unit::Count,
        "Datagrams dropped on send (queue full or refused by the kernel)"
    );
    describe_histogram!(
        TICK_DURATION_MS,
        Unit::Milliseconds,
        "Time to run one tick: inputs, world step, snapshots, flush"
    );
    describe_histogram!(
        TICK_LATENESS_MS,
        Unit::Milliseconds,
        "How late each tick started after its deadline"
    );
    describe_counter!(
        TICK_OVERRUNS,
        Unit::Count,
        "Tick deadlines skipped because a tick ran past the next deadline"
    );
    describe_counter!(TICKS, Unit::Count, "Ticks executed");
    describe_gauge!(
        PLAYERS_CONNECTED,
        Unit::Count,
        "Clients currently connected"
    );
    describe_gauge!(
        PLAYERS_MAX,
        Unit::Count,
        "Configured maximum of connected clients (server.max_players)"
    );
    describe_counter!(
        PACKETS_RECEIVED,
        Unit::Count,
        "Datagrams received, by transport"
    );
    describe_counter!(PACKETS_SENT, Unit::Count, "Datagrams sent, by transport");
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "Datagram bytes received, by transport"
    );
    describe_counter!(BYTES_SENT, Unit::Bytes, "Datagram bytes sent, by transport");
    describe_counter!(
        PACKETS_DROPPED,
        Unit::Count,
        "Received packets dropped, by reason"
    );
    describe_counter!(
        CONNECTS,
        Unit::Count,
        "Clients that completed the connection handshake"
    );
    describe_counter!(
        CONNECTS_DENIED,
        Unit::Count,
        "Connection requests denied, by reason"
    );
    describe_counter!(
        DISCONNECTS,
        Unit::Count,
        "Clients disconnected (timed out, left, or told by the server)"
    );
    describe_counter!(
        SNAPSHOT_BYTES_TOTAL,
        Unit::Bytes,
        "Snapshot payload bytes sent"
    );
    describe_counter!(
        QUERIES_ANSWERED,
        Unit::Count,
        "A2S server queries answered (challenge or full reply)"
    );
    describe_counter!(SNAPSHOTS_SENT, Unit::Count, "Snapshots sent to clients");
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; labels carry the server version and the I/O backend in use"
    );
}

/// The full `/metrics` body: the recorder's exposition text plus the process metrics.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if let Some(p) = ProcessStats::read() {
        p.write_prometheus(&mut out);
    }
    out
}

/// Process statistics read from `/proc` (Linux).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Soft limit on open file descriptors, when known.
    pub max_fds: Option<u64>,
}

/// `/proc` reports CPU times in USER_HZ ticks, which Linux fixes at 100 for user space on every
/// mainstream architecture (`sysconf(_SC_CLK_TCK)`, unavailable here without `unsafe`).
const USER_HZ: f64 = 100.0;

/// The fields of `/proc/self/stat` this module uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFields {
    /// utime, in clock ticks.
    pub utime: u64,
    /// stime, in clock ticks.
    pub stime: u64,
    /// starttime, in clock ticks since boot.
    pub starttime: u64,
    /// vsize, bytes.
    pub vsize: u64,
    /// rss, pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat` (the command name in parentheses may contain spaces and `)`).
pub fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the command: field 3 (state) is index 0.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let get = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: get(14)?,
        stime: get(15)?,
        starttime: get(22)?,
        vsize: get(23)?,
        rss_pages: get(24)?,
    })
}

/// Finds `name value` in a `/proc` text file (`/proc/stat` `btime`, `/proc/self/status`
/// `VmRSS:`), returning the first number after the name.
fn field_after(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Parses the "Max open files" soft limit from `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ProcessStats {
    /// Reads the current process's statistics; `None` off Linux or when `/proc` is unavailable.
    pub fn read() -> Option<ProcessStats> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let btime = field_after(&std::fs::read_to_string("/proc/stat").ok()?, "btime ")?;
        // statm field 2 is resident pages; the page size is not knowable without sysconf, so the
        // byte count comes from /proc/self/status VmRSS (kB), which the kernel computes exactly.
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| field_after(&s, "VmRSS:"))
            .map_or(stat.rss_pages * 4096, |kb| kb * 1024);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| parse_max_fds(&s));
        Some(ProcessStats {
            cpu_seconds: (stat.utime + stat.stime) as f64 / USER_HZ,
            resident_bytes,
            virtual_bytes: stat.vsize,
            start_time_seconds: btime as f64 + stat.starttime as f64 / USER_HZ,
            open_fds,
            max_fds,
        })
    }

    /// Appends the statistics in Prometheus text format, with `# HELP` and `# TYPE` lines.
    pub fn write_prometheus(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: &dyn fmt::Display| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            &self.cpu_seconds,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &self.resident_bytes,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            &self.virtual_bytes,
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            &self.start_time_seconds,
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            &self.open_fds,
        );
        if let Some(max) = self.max_fds {
            metric(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                &max,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_have_real_buckets() {
        let recorder = build_recorder().unwrap();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            let io_wait = metrics::histogram!(IO_WAIT_DURATION_MS, "backend" => "epoll");
            io_wait.record(0.3);
            io_wait.record(20.0);
            metrics::histogram!(TICK_DURATION_MS).record(1.5);
            metrics::histogram!(TICK_LATENESS_MS).record(0.02);
            metrics::counter!(IO_EVENTS_PROCESSED, "backend" => "epoll").increment(3);
            metrics::counter!(PACKETS_DROPPED, "reason" => "malformed").increment(2);
            metrics::gauge!(BUILD_INFO, "version" => "0.1.0", "backend" => "epoll").set(1.0);
        });
        let text = handle.render();
        assert!(
            text.contains("# TYPE io_wait_duration_ms histogram"),
            "{text}"
        );
        assert!(
            text.contains("io_wait_duration_ms_bucket{backend=\"epoll\",le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("io_wait_duration_ms_bucket{backend=\"epoll\",le=\"24\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("io_wait_duration_ms_count{backend=\"epoll\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tick_duration_ms_bucket{le=\"2\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tick_lateness_ms_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("io_events_processed_total{backend=\"epoll\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("packets_dropped_total{reason=\"malformed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# HELP io_wait_duration_ms Time spent blocked"),
            "{text}"
        );
        assert!(text.contains("build_info{version=\""), "{text}");
        assert!(!text.contains("quantile"), "no summaries: {text}");
    }

    #[test]
    fn errors_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<MetricsError>();
        send_sync::<crate::config::ConfigError>();
        send_sync::<crate::keyfile::KeyFileError>();
    }

    #[test]
    fn parses_proc_stat_with_awkward_comm() {
        // Fields 3.. of a real line, with a command name containing spaces and ')'.
        let line = "1234 (tick wire) x) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 150 0 0 20 0 3 0 98765 123456789 2048 18446744073709551615";
        let f = parse_stat(line).unwrap();
        assert_eq!(
            f,
            StatFields {
                utime: 250,
                stime: 150,
                starttime: 98765,
                vsize: 123456789,
                rss_pages: 2048
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_limits_and_fields() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            field_after("cpu 1 2\nbtime 1700000000\n", "btime "),
            Some(1_700_000_000)
        );
        assert_eq!(field_after("VmRSS:\t   5120 kB\n", "VmRSS:"), Some(5120));
    }

    #[test]
    fn process_metrics_text_format() {
        let mut out = String::new();
        ProcessStats {
            cpu_seconds: 1.5,
            open_fds: 7,
            max_fds: Some(1024),
            ..Default::default()
        }
        .write_prometheus(&mut out);
        assert!(out
            .contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"));
        assert!(out.contains("process_open_fds 7\n"));
        assert!(out.contains("process_max_fds 1024\n"));
        #[cfg(target_os = "linux")]
        {
            let p = ProcessStats::read().expect("/proc available on Linux");
            assert!(p.resident_bytes > 0 && p.open_fds > 0 && p.start_time_seconds > 1.0e9);
        }
    }
}
