//! The admin HTTP endpoint on `metrics.bind`: a tiny HTTP/1.1 server on a std `TcpListener`, in
//! its own thread, that never touches the tick loop except through [`Health`]'s atomics.
//!
//! * `GET /metrics` -> 200, Prometheus text format 0.0.4 ([`crate::metrics::render`]).
//! * `GET /healthz` -> 200 `ok` while the loop ticked within the last second, else 503 (liveness).
//! * `GET /readyz`  -> 200 `ok` while the server accepts new clients, else 503 (readiness).
//! * anything else -> 404 (405 for methods other than GET/HEAD).
//!
//! One connection at a time, handled inline: requests are capped at 8 KiB, the request must arrive
//! within 2 s and each write times out after 2 s, and every response closes the connection. A second thread runs the recorder's
//! upkeep every 5 s so histogram samples are drained even when nobody scrapes.
//!
//! ```ignore
//! let health = Arc::new(admin::Health::new());
//! let admin = admin::spawn(bind, handle, Arc::clone(&health))?;   // logs admin.local_addr()
//! // in the loop, once per tick:
//! health.tick_completed(finished);
//! health.set_accepting(connected < max_players);
//! // drop(admin) stops both threads.
//! ```

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::http::{parse_request, Request};

/// Largest request accepted (request line plus headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Read and write timeout per connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
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
    accept_thread: Option<JoinHandle<()>>,
    upkeep_thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// The bound address (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops and joins the threads (also done on drop).
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
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

/// Binds `bind` (TCP) and serves `/metrics`, `/healthz`, `/readyz` from a background thread.
pub fn spawn(
    bind: SocketAddr,
    handle: PrometheusHandle,
    health: Arc<Health>,
) -> io::Result<AdminServer> {
    let listener = TcpListener::bind(bind)?;
    let local_addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));

    let upkeep_handle = handle.clone();
    let upkeep_stop = Arc::clone(&stop);
    let upkeep_thread = thread::Builder::new()
        .name("tickwire-upkeep".into())
        .spawn(move || {
            while !upkeep_stop.load(Ordering::SeqCst) {
                thread::park_timeout(UPKEEP_INTERVAL);
                upkeep_handle.run_upkeep();
            }
        })?;

    let accept_stop = Arc::clone(&stop);
    let accept_thread = thread::Builder::new()
        .name("tickwire-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    break;
                }
                match conn {
                    Ok(stream) => {
                        if let Err(e) = serve_connection(stream, &handle, &health) {
                            tracing::debug!(error = %e, "admin connection failed");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "admin accept failed");
                        // Avoid a hot loop on persistent errors (e.g. EMFILE).
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
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
        accept_thread: Some(accept_thread),
        upkeep_thread: Some(upkeep_thread),
    })
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
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }
}

/// Routes one request (exposed for tests).
pub fn respond(req: Option<&Request<'_>>, handle: &PrometheusHandle, health: &Health) -> Response {
    let Some(req) = req else {
        return Response::text(400, "bad request\n");
    };
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    match req.path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: crate::metrics::render(handle),
        },
        "/healthz" => {
            let age = health.tick_age(Instant::now());
            if health.is_live(Instant::now()) {
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
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn serve_connection(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    health: &Health,
) -> io::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // One deadline for the whole request, so a client trickling bytes cannot hold the thread.
    let deadline = Instant::now() + IO_TIMEOUT;
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
    let resp = if complete {
        respond(req.as_ref(), handle, health)
    } else {
        Response::text(431, "request too large\n")
    };
    let head_only = req.as_ref().is_some_and(|r| r.method == "HEAD");
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
        let health = Arc::new(Health::new()); // 1 s limit
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
