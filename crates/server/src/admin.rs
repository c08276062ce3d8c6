//! The admin HTTP endpoint on `metrics.bind`: a small HTTP/1.1 server on a std `TcpListener`
//! that never touches the tick loop except through [`Health`]'s atomics.
//!
//! * `GET /metrics` -> 200, Prometheus text format 0.0.4 ([`crate::metrics::render`]).
//! * `GET /healthz` -> 200 `ok` while the loop ticked within the last second, else 503 (liveness).
//! * `GET /readyz`  -> 200 `ok` while the server accepts new clients, else 503 (readiness).
//! * `GET /play`, `GET /play/<file>` -> the browser client; `GET /token` -> a connect token
//!   with `--dev-tokens` (loopback peers only), else 404. See [`crate::web`].
//! * anything else -> 404 (405 for methods other than GET/HEAD).
//!
//! Connections are served concurrently, one small thread each (bounded thread-per-connection,
//! std only): an accept thread hands each connection to a thread of its own with a
//! [`HELPER_STACK_BYTES`] stack, so an idle or slow client only ever holds its own thread and
//! never delays `/healthz`, `/readyz` or `/metrics` for anyone else. Bounds:
//!
//! * at most [`MAX_CONNECTIONS`] connections at once; beyond it a new connection gets an
//!   immediate `503` and is closed (counted, `reason="busy"`);
//! * request heads are capped at [`MAX_REQUEST_BYTES`] (`431`, `reason="too_large"`);
//! * the whole request must arrive within [`IO_TIMEOUT`] of the accept (else closed,
//!   `reason="timeout"`), and each write times out after it too;
//! * every response closes the connection.
//!
//! The drops are exported as `admin_connections_dropped_total{reason}`, the connections being
//! served as `admin_connections_open`. A second thread runs the recorder's upkeep every 5 s so
//! histogram samples are drained even when nobody scrapes.
//!
//! ```ignore
//! let health = Arc::new(admin::Health::new());
//! let admin = admin::spawn_with(bind, handle, Arc::clone(&health), opts)?;   // logs local_addr()
//! // in the loop, once per tick:
//! health.tick_completed(finished);
//! health.set_accepting(connected < max_players);
//! // drop(admin) stops the accept and upkeep threads; connection threads end by their deadline.
//! ```

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::http::{parse_request, Request};
use crate::web::{self, DevTokens};

/// Largest request accepted (request line plus headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Deadline for a whole request (from the accept) and timeout of each write, per connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Most connections served at once; beyond it a new connection is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Stack of every admin thread (accept, upkeep, one per connection): they parse a request
/// head and render text on the heap, so a small stack keeps the address space the endpoint
/// reserves to a few MiB even with [`MAX_CONNECTIONS`] open (std's default is 2 MiB).
pub const HELPER_STACK_BYTES: usize = 256 * 1024;
/// Counter of connections the endpoint closed without a normal answer, by `reason`.
pub const CONNECTIONS_DROPPED: &str = "admin_connections_dropped_total";
/// Gauge of connections being served.
pub const CONNECTIONS_OPEN: &str = "admin_connections_open";
/// `/healthz` fails when the last tick is older than this.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(1);
/// How often the upkeep thread drains histogram samples.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Liveness and readiness, written by the tick loop, read by the admin thread.
#[derive(Debug)]
pub struct Health {
    start: Instant,
    /// Nanoseconds since `start` of the last tick (0 = not ticked yet: measured from `start`).
    last_tick_nanos: AtomicU64,
    accepting: AtomicBool,
    stale_after: Duration,
    /// Ticks completed (for the SIGUSR1 summary).
    ticks: AtomicU64,
    /// Players connected after the last tick (for the SIGUSR1 summary).
    players: AtomicU64,
    /// The I/O backend in use, once known.
    backend: OnceLock<&'static str>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Not accepting yet; live for [`DEFAULT_STALE_AFTER`] from now even before the first tick.
    pub fn new() -> Self {
        Health::with_stale_after(DEFAULT_STALE_AFTER)
    }

    /// As [`Health::new`] with another staleness limit.
    pub fn with_stale_after(stale_after: Duration) -> Self {
        Health {
            start: Instant::now(),
            last_tick_nanos: AtomicU64::new(0),
            accepting: AtomicBool::new(false),
            stale_after,
            ticks: AtomicU64::new(0),
            players: AtomicU64::new(0),
            backend: OnceLock::new(),
        }
    }

    /// Records that a tick completed now.
    #[cfg(test)]
    pub fn tick(&self) {
        self.tick_completed(Instant::now());
    }

    /// Records that a tick completed at `at` (the loop has the instant at hand).
    pub fn tick_completed(&self, at: Instant) {
        let nanos =
            u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.last_tick_nanos.store(nanos, Ordering::Relaxed);
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// Ticks completed so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Records the number of connected players (the loop sets it after every tick).
    pub fn set_players(&self, players: u64) {
        self.players.store(players, Ordering::Relaxed);
    }

    /// Players connected after the last tick.
    pub fn players(&self) -> u64 {
        self.players.load(Ordering::Relaxed)
    }

    /// Records the I/O backend in use (first call wins).
    pub fn set_backend(&self, backend: &'static str) {
        let _ = self.backend.set(backend);
    }

    /// The I/O backend in use, when known.
    pub fn backend(&self) -> Option<&'static str> {
        self.backend.get().copied()
    }

    /// Time since this `Health` was created (about the process uptime).
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    /// Sets whether new clients are being accepted (readiness).
    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    /// Whether new clients are being accepted.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// Time since the last tick (since creation if none yet), as seen at `now`.
    pub fn tick_age(&self, now: Instant) -> Duration {
        let last = self.start + Duration::from_nanos(self.last_tick_nanos.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Whether the loop ticked within the staleness limit, as seen at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        self.tick_age(now) <= self.stale_after
    }
}

/// A running admin server; dropping it stops the threads.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<AdminStats>,
    accept_thread: Option<JoinHandle<()>>,
    upkeep_thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// The bound address (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The connection counters.
    #[cfg(test)]
    pub fn stats(&self) -> &AdminStats {
        &self.stats
    }

    /// Stops and joins the threads (also done on drop).
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            tracing::debug!(
                busy = self.stats.busy(),
                timeout = self.stats.timed_out(),
                too_large = self.stats.too_large(),
                "admin endpoint stopping"
            );
        }
        if let Some(t) = self.upkeep_thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Some(t) = self.accept_thread.take() {
            // Wake the blocking accept with a throwaway connection. If that fails the thread
            // stays parked in accept; leave it detached rather than hang the caller.
            let wake = SocketAddr::new(
                loopback_if_unspecified(self.local_addr.ip()),
                self.local_addr.port(),
            );
            if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn loopback_if_unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Tunables of the admin server; [`AdminOptions::default`] is what `serve` uses without
/// `--dev-tokens`.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// Most connections served at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Per-connection request deadline and write timeout ([`IO_TIMEOUT`]).
    pub io_timeout: Duration,
    /// The `/token` minter (`--dev-tokens`); `None`: `/token` is a 404.
    pub dev_tokens: Option<Arc<DevTokens>>,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            max_connections: MAX_CONNECTIONS,
            io_timeout: IO_TIMEOUT,
            dev_tokens: None,
        }
    }
}

/// Connection counters of the admin endpoint, rendered after the recorder's output on
/// `/metrics` (they are counted by the endpoint itself, so they work with any recorder).
#[derive(Debug, Default)]
pub struct AdminStats {
    open: AtomicUsize,
    busy: AtomicU64,
    timeout: AtomicU64,
    too_large: AtomicU64,
}

impl AdminStats {
    /// Connections being served.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections refused because [`AdminOptions::max_connections`] were open (or no thread
    /// could be started for them).
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Connections closed because the request did not arrive within the deadline.
    pub fn timed_out(&self) -> u64 {
        self.timeout.load(Ordering::Relaxed)
    }

    /// Requests refused because their head exceeded [`MAX_REQUEST_BYTES`].
    pub fn too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }

    /// Appends the Prometheus text of these counters to `out`.
    pub fn write_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP {CONNECTIONS_DROPPED} Admin endpoint connections closed without a normal \
             answer: busy (connection limit reached), timeout (request not received in time), \
             too_large (request head over {MAX_REQUEST_BYTES} bytes)"
        );
        let _ = writeln!(out, "# TYPE {CONNECTIONS_DROPPED} counter");
        for (reason, n) in [
            ("busy", self.busy()),
            ("timeout", self.timed_out()),
            ("too_large", self.too_large()),
        ] {
            let _ = writeln!(out, "{CONNECTIONS_DROPPED}{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP {CONNECTIONS_OPEN} Admin endpoint connections being served"
        );
        let _ = writeln!(out, "# TYPE {CONNECTIONS_OPEN} gauge");
        let _ = writeln!(out, "{CONNECTIONS_OPEN} {}", self.open());
    }
}

/// Binds `bind` (TCP) and serves `/metrics`, `/healthz`, `/readyz` and `/play` from background
/// threads, with [`AdminOptions::default`] (no dev tokens).
#[cfg(test)]
pub fn spawn(
    bind: SocketAddr,
    handle: PrometheusHandle,
    health: Arc<Health>,
) -> io::Result<AdminServer> {
    spawn_with(bind, handle, health, AdminOptions::default())
}

/// [`spawn`] with explicit options.
pub fn spawn_with(
    bind: SocketAddr,
    handle: PrometheusHandle,
    health: Arc<Health>,
    opts: AdminOptions,
) -> io::Result<AdminServer> {
    let listener = TcpListener::bind(bind)?;
    let local_addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(AdminStats::default());

    let upkeep_handle = handle.clone();
    let upkeep_stop = Arc::clone(&stop);
    let upkeep_thread = thread::Builder::new()
        .name("tickwire-upkeep".into())
        .stack_size(HELPER_STACK_BYTES)
        .spawn(move || {
            while !upkeep_stop.load(Ordering::SeqCst) {
                thread::park_timeout(UPKEEP_INTERVAL);
                upkeep_handle.run_upkeep();
            }
        })?;

    let accept_stop = Arc::clone(&stop);
    let accept_stats = Arc::clone(&stats);
    let accept_thread = thread::Builder::new()
        .name("tickwire-admin".into())
        .stack_size(HELPER_STACK_BYTES)
        .spawn(move || {
            let shared = Arc::new(Shared {
                handle,
                health,
                stats: accept_stats,
                opts,
            });
            accept_loop(&listener, &accept_stop, &shared);
        });
    let accept_thread = match accept_thread {
        Ok(t) => t,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            upkeep_thread.thread().unpark();
            let _ = upkeep_thread.join();
            return Err(e);
        }
    };
    Ok(AdminServer {
        local_addr,
        stop,
        stats,
        accept_thread: Some(accept_thread),
        upkeep_thread: Some(upkeep_thread),
    })
}

/// What every connection thread needs.
struct Shared {
    handle: PrometheusHandle,
    health: Arc<Health>,
    stats: Arc<AdminStats>,
    opts: AdminOptions,
}

/// Decrements the open-connection count when a connection thread ends (even by panic).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.stats.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                // Avoid a hot loop on persistent errors (e.g. EMFILE).
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        // Take a slot, or refuse at once: the accept thread never waits on a client.
        let taken = shared
            .stats
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < shared.opts.max_connections).then_some(open + 1)
            })
            .is_ok();
        if !taken {
            refuse_busy(stream, &shared.stats);
            continue;
        }
        let slot = Slot(Arc::clone(shared));
        // The stream is moved into the closure; if the spawn fails the closure (and with it
        // the stream and the slot) is dropped, which closes the connection and frees the slot.
        let spawned = thread::Builder::new()
            .name("tickwire-admin-conn".into())
            .stack_size(HELPER_STACK_BYTES)
            .spawn(move || {
                let shared = &slot.0;
                match serve_connection(stream, shared) {
                    Ok(()) => {}
                    Err(e) => {
                        if matches!(
                            e.kind(),
                            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                        ) {
                            shared.stats.timeout.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(error = %e, "admin connection failed");
                    }
                }
                drop(slot);
            });
        if let Err(e) = spawned {
            shared.stats.busy.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "admin: cannot start a connection thread");
        }
    }
}

/// Answers `503` without waiting (best effort: one non-blocking write) and closes.
fn refuse_busy(mut stream: TcpStream, stats: &AdminStats) {
    stats.busy.fetch_add(1, Ordering::Relaxed);
    let body = "busy: too many admin connections\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write(msg.as_bytes());
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A response: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type value.
    pub content_type: &'static str,
    /// Body (omitted on the wire for HEAD).
    pub body: String,
    /// Cache-Control value, if any.
    pub cache_control: Option<&'static str>,
}

impl Response {
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            cache_control: None,
        }
    }
}

/// Routes one request from `peer` (exposed for tests), as seen at `now` (liveness depends on
/// it). `dev_tokens`: the `/token` minter, when `--dev-tokens` is on.
pub fn respond(
    req: Option<&Request<'_>>,
    peer: Option<IpAddr>,
    handle: &PrometheusHandle,
    health: &Health,
    dev_tokens: Option<&DevTokens>,
    now: Instant,
) -> Response {
    let Some(req) = req else {
        return Response::text(400, "bad request\n");
    };
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    if let Some(resp) = web::play(req.path) {
        return resp;
    }
    match req.path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: crate::metrics::render(handle),
            cache_control: None,
        },
        "/token" => web::token(dev_tokens, peer),
        "/healthz" => {
            let age = health.tick_age(now);
            if health.is_live(now) {
                Response::text(200, "ok\n")
            } else {
                Response::text(
                    503,
                    &format!("stale: last tick {} ms ago\n", age.as_millis()),
                )
            }
        }
        "/readyz" => {
            if health.is_accepting() {
                Response::text(200, "ok\n")
            } else {
                Response::text(503, "not accepting clients\n")
            }
        }
        _ => Response::text(404, "not found\n"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let timeout = shared.opts.io_timeout;
    stream.set_write_timeout(Some(timeout))?;
    // One deadline for the whole request, so a client trickling bytes cannot hold the thread.
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let complete = loop {
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if len == buf.len() {
            break false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request not received in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => break len > 0, // peer closed: answer what we have (or nothing)
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if len == 0 {
        return Ok(());
    }
    let req = parse_request(&buf[..len]);
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let resp = if complete {
        let mut resp = respond(
            req.as_ref(),
            peer,
            &shared.handle,
            &shared.health,
            shared.opts.dev_tokens.as_deref(),
            Instant::now(),
        );
        if resp.status == 200 && req.as_ref().is_some_and(|r| r.path == "/metrics") {
            shared.stats.write_prometheus(&mut resp.body);
        }
        resp
    } else {
        shared.stats.too_large.fetch_add(1, Ordering::Relaxed);
        Response::text(431, "request too large\n")
    };
    let head_only = req.as_ref().is_some_and(|r| r.method == "HEAD");
    let cache = resp
        .cache_control
        .map(|c| format!("Cache-Control: {c}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{cache}\
         Connection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(resp.body.as_bytes())?;
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, raw: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn request(addr: SocketAddr, path: &str) -> (u16, String) {
        get(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }

    fn local_handle() -> (
        metrics_exporter_prometheus::PrometheusRecorder,
        PrometheusHandle,
    ) {
        let recorder = crate::metrics::build_recorder().unwrap();
        let handle = recorder.handle();
        (recorder, handle)
    }

    #[test]
    fn serves_metrics_with_histogram_buckets() {
        let (recorder, handle) = local_handle();
        metrics::with_local_recorder(&recorder, || {
            crate::metrics::describe_all();
            metrics::histogram!(crate::metrics::IO_WAIT_DURATION_MS, "backend" => "select")
                .record(3.0);
        });
        let health = Arc::new(Health::new());
        let admin = spawn("127.0.0.1:0".parse().unwrap(), handle, health).unwrap();
        let (status, body) = request(admin.local_addr(), "/metrics?x=1");
        assert_eq!(status, 200);
        assert!(
            body.contains("io_wait_duration_ms_bucket{backend=\"select\",le=\"4\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("io_wait_duration_ms_bucket{backend=\"select\",le=\"2\"} 0"),
            "{body}"
        );
        #[cfg(target_os = "linux")]
        assert!(
            body.contains("# TYPE process_cpu_seconds_total counter"),
            "{body}"
        );
        admin.shutdown();
    }

    #[test]
    fn health_and_readiness() {
        let (_recorder, handle) = local_handle();
        let health = Arc::new(Health::with_stale_after(Duration::from_millis(1)));
        let admin = spawn("127.0.0.1:0".parse().unwrap(), handle, Arc::clone(&health)).unwrap();
        let addr = admin.local_addr();

        // Not ticked for longer than the limit: stale.
        thread::sleep(Duration::from_millis(20));
        let (status, body) = request(addr, "/healthz");
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("stale"));
        assert_eq!(request(addr, "/readyz").0, 503);

        health.set_accepting(true);
        assert_eq!(request(addr, "/readyz"), (200, "ok\n".to_owned()));
        assert_eq!(request(addr, "/nope").0, 404);
        assert_eq!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(get(addr, "garbage\r\n\r\n").0, 400);
        let (status, body) = get(addr, "HEAD /readyz HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, ""));
        drop(admin);
    }

    #[test]
    fn healthz_ok_after_a_fresh_tick() {
        let (_recorder, handle) = local_handle();
        // A limit no loaded machine reaches between the tick and the request (the boundary
        // itself is proved on virtual time in healthz_on_virtual_time).
        let health = Arc::new(Health::with_stale_after(Duration::from_secs(3600)));
        let admin = spawn("127.0.0.1:0".parse().unwrap(), handle, Arc::clone(&health)).unwrap();
        health.tick();
        assert_eq!(
            request(admin.local_addr(), "/healthz"),
            (200, "ok\n".to_owned())
        );
    }

    #[test]
    fn oversized_request_is_refused() {
        let (_recorder, handle) = local_handle();
        let admin = spawn(
            "127.0.0.1:0".parse().unwrap(),
            handle,
            Arc::new(Health::new()),
        )
        .unwrap();
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES)
        );
        let mut s = TcpStream::connect(admin.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may close before reading everything; a write error is fine.
        let _ = s.write_all(big.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
        // Still serving afterwards.
        assert_eq!(request(admin.local_addr(), "/nope").0, 404);
        if !out.is_empty() {
            assert_eq!(admin.stats().too_large(), 1);
        }
    }

    /// Polls `cond` until it holds; panics after a generous hang guard.
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn still_open(s: &TcpStream) -> bool {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let open = matches!(s.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        open
    }

    #[test]
    fn idle_connections_do_not_delay_other_requests() {
        let (_recorder, handle) = local_handle();
        let health = Arc::new(Health::with_stale_after(Duration::from_secs(3600)));
        // A request deadline far beyond the test: the idle connections stay open throughout,
        // so an answer below can only come from a server that serves them concurrently.
        let opts = AdminOptions {
            io_timeout: Duration::from_secs(600),
            ..AdminOptions::default()
        };
        let admin = spawn_with("127.0.0.1:0".parse().unwrap(), handle, health, opts).unwrap();
        let addr = admin.local_addr();
        let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        wait_for("8 idle connections accepted", || admin.stats().open() == 8);

        assert_eq!(request(addr, "/healthz"), (200, "ok\n".to_owned()));
        assert_eq!(request(addr, "/readyz").0, 503);
        // A connection thread counts itself open until it ends, a moment after its answer:
        // wait for those two, so the scrape below sees the idle ones and itself only.
        wait_for("answered connections released", || {
            admin.stats().open() == 8
        });
        let (status, body) = request(addr, "/metrics");
        assert_eq!(status, 200);
        // The 8 idle ones plus the scrape itself.
        assert!(body.contains("\nadmin_connections_open 9\n"), "{body}");
        assert!(
            body.contains("admin_connections_dropped_total{reason=\"busy\"} 0"),
            "{body}"
        );
        for s in &idle {
            assert!(still_open(s), "an idle connection was closed");
        }
        wait_for("the scrape released", || admin.stats().open() == 8);
        drop(idle);
        wait_for("idle connections released", || admin.stats().open() == 0);
    }

    #[test]
    fn connections_beyond_the_limit_get_503_at_once() {
        let (_recorder, handle) = local_handle();
        let health = Arc::new(Health::with_stale_after(Duration::from_secs(3600)));
        let opts = AdminOptions {
            max_connections: 2,
            io_timeout: Duration::from_secs(600),
            dev_tokens: None,
        };
        let admin = spawn_with("127.0.0.1:0".parse().unwrap(), handle, health, opts).unwrap();
        let addr = admin.local_addr();
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        wait_for("2 idle connections accepted", || admin.stats().open() == 2);

        let (status, body) = request(addr, "/healthz");
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("busy"), "{body}");
        assert_eq!(admin.stats().busy(), 1);
        for s in &idle {
            assert!(still_open(s));
        }

        // Closing them frees the slots.
        drop(idle);
        wait_for("slots freed", || admin.stats().open() == 0);
        assert_eq!(request(addr, "/healthz"), (200, "ok\n".to_owned()));
        let (_, body) = request(addr, "/metrics");
        assert!(
            body.contains("admin_connections_dropped_total{reason=\"busy\"} 1\n"),
            "{body}"
        );
    }

    #[test]
    fn silent_connections_are_closed_at_the_deadline_and_counted() {
        let (_recorder, handle) = local_handle();
        let opts = AdminOptions {
            io_timeout: Duration::from_millis(100),
            ..AdminOptions::default()
        };
        let admin = spawn_with(
            "127.0.0.1:0".parse().unwrap(),
            handle,
            Arc::new(Health::new()),
            opts,
        )
        .unwrap();
        let mut s = TcpStream::connect(admin.local_addr()).unwrap();
        // Hang guard only: the server closes it after 100 ms.
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.is_empty(), "{out:?}");
        wait_for("timeout counted", || admin.stats().timed_out() == 1);
        wait_for("slot freed", || admin.stats().open() == 0);
        assert_eq!(admin.stats().busy(), 0);
    }

    #[test]
    fn health_logic() {
        let h = Health::with_stale_after(Duration::from_millis(100));
        let t0 = Instant::now();
        h.tick_completed(t0);
        assert!(h.is_live(t0 + Duration::from_millis(50)));
        assert!(!h.is_live(t0 + Duration::from_millis(150)));
        assert!(!h.is_accepting());
    }

    /// `/healthz` and `/readyz` as a function of (now, last tick, accepting), on virtual time.
    #[test]
    fn healthz_on_virtual_time() {
        let (_recorder, handle) = local_handle();
        let h = Health::with_stale_after(Duration::from_secs(1));
        let t0 = h.start;
        let get = |path: &str, at_ms: u64| {
            let req = Request {
                method: "GET",
                path,
            };
            let r = respond(
                Some(&req),
                None,
                &handle,
                &h,
                None,
                t0 + Duration::from_millis(at_ms),
            );
            (r.status, r.body)
        };
        // Live for the limit from creation, even before the first tick; then stale.
        assert_eq!(get("/healthz", 0), (200, "ok\n".to_owned()));
        assert_eq!(get("/healthz", 1000), (200, "ok\n".to_owned()));
        assert_eq!(
            get("/healthz", 1001),
            (503, "stale: last tick 1001 ms ago\n".to_owned())
        );
        // A tick makes it live again for the limit, measured from that tick.
        h.tick_completed(t0 + Duration::from_millis(5000));
        assert_eq!(get("/healthz", 5000).0, 200);
        assert_eq!(get("/healthz", 6000).0, 200);
        assert_eq!(get("/healthz", 6001).0, 503);
        // A tick's instant never counts backwards (an older instant is age 0 at `now`).
        assert_eq!(h.tick_age(t0 + Duration::from_millis(4000)), Duration::ZERO);
        // Readiness follows `accepting` alone (a draining server is live but not ready).
        assert_eq!(get("/readyz", 5000).0, 503);
        h.set_accepting(true);
        assert_eq!(get("/readyz", 5000), (200, "ok\n".to_owned()));
        assert_eq!(get("/readyz", 60_000).0, 200);
        h.set_accepting(false);
        assert_eq!(get("/readyz", 5000).0, 503);
        assert_eq!(get("/healthz", 5500).0, 200, "live while draining");
    }

    #[test]
    fn request_line_parsing() {
        let r = parse_request(b"GET /metrics?a=b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Request {
                method: "GET",
                path: "/metrics"
            }
        );
        assert!(parse_request(b"GET /metrics\r\n\r\n").is_none());
        assert!(parse_request(b"GET  /x HTTP/1.1\r\n").is_none());
        assert!(parse_request(&[0xff, 0xfe, b' ']).is_none());
        assert!(parse_request(b"").is_none());
    }
}
