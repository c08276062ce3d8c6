//! The Agones SDK client against a stand-in sidecar: a std HTTP server on 127.0.0.1:0 that
//! serves the SDK's REST routes, records every call, and can answer 503 to the first few
//! calls of a route (the sidecar starting after the server) or 404 (no such Counter).
//!
//! The module is compiled straight from `src/agones.rs` (with `src/http.rs`): std and tracing only.

#[allow(dead_code)]
#[path = "../src/agones.rs"]
mod agones;
#[allow(dead_code)]
#[path = "../src/http.rs"]
mod http;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agones::{Agones, AgonesOptions};

/// Longest wait for something the client should do (retries back off up to 5 s).
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    method: String,
    path: String,
    content_type: Option<String>,
    body: String,
    status: u16,
}

/// The stand-in sidecar.
struct Sidecar {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sidecar {
    /// Serves the SDK routes; the first `fail[path]` calls to `path` get a 503.
    fn start(fail: &[(&str, usize)]) -> Sidecar {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut failing: HashMap<String, usize> =
            fail.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect();
        let thread = {
            let calls = Arc::clone(&calls);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(call) = serve_one(stream, &mut failing) {
                                calls.lock().unwrap().push(call);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        Sidecar {
            addr,
            calls,
            stop,
            thread: Some(thread),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, f: impl Fn(&Call) -> bool) -> usize {
        self.calls().iter().filter(|c| f(c)).count()
    }

    /// Waits (bounded) until some recorded call satisfies `f`.
    fn wait_for(&self, what: &str, f: impl Fn(&[Call]) -> bool) {
        let start = Instant::now();
        loop {
            let calls = self.calls();
            if f(&calls) {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; calls:\n{calls:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn options(&self, health_interval: Duration) -> AgonesOptions {
        AgonesOptions {
            port: self.addr.port(),
            health_interval,
            counter: "players".to_owned(),
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request, answers it, returns what was asked.
fn serve_one(mut stream: TcpStream, failing: &mut HashMap<String, usize>) -> Option<Call> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(buf.len() < 16 * 1024, "request head too large");
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    assert_eq!(request_line.next(), Some("HTTP/1.1"), "{head}");
    let mut length = 0usize;
    let mut content_type = None;
    for line in lines {
        let (k, v) = line.split_once(':').expect("header line");
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().expect("Content-Length"),
            "content-type" => content_type = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(body).expect("UTF-8 body");

    let known = matches!(
        (method.as_str(), path.as_str()),
        ("POST", "/ready")
            | ("POST", "/health")
            | ("POST", "/shutdown")
            | ("GET", "/gameserver")
            | ("PATCH", "/v1beta1/counters/players")
    );
    let (status, reply) = match failing.get_mut(&path) {
        Some(n) if *n > 0 => {
            *n -= 1;
            (503, "{\"error\":\"not ready yet\"}".to_owned())
        }
        _ if !known => (404, "{\"code\":5,\"message\":\"not found\"}".to_owned()),
        _ if path.starts_with("/v1beta1/counters/") => (
            200,
            format!(
                "{{\"name\":\"players\",\"count\":{},\"capacity\":\"128\"}}",
                body.trim_start_matches("{\"count\":").trim_end_matches('}')
            ),
        ),
        _ if path == "/gameserver" => (200, GAMESERVER_JSON.to_owned()),
        _ => (200, "{}".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    Some(Call {
        method,
        path,
        content_type,
        body,
        status,
    })
}

fn is(call: &Call, method: &str, path: &str, status: u16) -> bool {
    call.method == method && call.path == path && call.status == status
}

fn counter_ok(calls: &[Call], count: u64) -> bool {
    let body = format!("{{\"count\":\"{count}\"}}");
    calls
        .iter()
        .any(|c| is(c, "PATCH", "/v1beta1/counters/players", 200) && c.body == body)
}

fn healths(s: &Sidecar) -> usize {
    s.count(|c| is(c, "POST", "/health", 200))
}

#[test]
fn lifecycle_against_a_sidecar_that_starts_late() {
    // The sidecar is not ready for the first 3 Ready calls and the first 2 Counter updates.
    let sidecar = Sidecar::start(&[("/ready", 3), ("/v1beta1/counters/players", 2)]);
    let live = Arc::new(AtomicBool::new(true));
    let agones = {
        let live = Arc::clone(&live);
        Agones::start(
            sidecar.options(Duration::from_millis(50)),
            Box::new(move || live.load(Ordering::Relaxed)),
        )
    };
    agones.set_players(3);
    agones.ready();

    // Ready arrives after the retries, and is not sent again once it succeeded.
    sidecar.wait_for("Ready", |c| c.iter().any(|c| is(c, "POST", "/ready", 200)));
    let ready: Vec<u16> = sidecar
        .calls()
        .iter()
        .filter(|c| c.path == "/ready")
        .map(|c| c.status)
        .collect();
    assert_eq!(ready, [503, 503, 503, 200]);

    // The Counter carries the player count (after its own retries).
    sidecar.wait_for("players = 3", |c| counter_ok(c, 3));

    // Health pings while live ...
    sidecar.wait_for("3 Health pings", |c| {
        c.iter().filter(|c| is(c, "POST", "/health", 200)).count() >= 3
    });
    // ... none while the tick loop is stuck (one already in flight may still land) ...
    live.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let paused = healths(&sidecar);
    // ... while the Counter still follows the players.
    agones.set_players(5);
    sidecar.wait_for("players = 5", |c| counter_ok(c, 5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(healths(&sidecar), paused, "Health pings while not live");
    // Pings resume with the loop.
    live.store(true, Ordering::Relaxed);
    sidecar.wait_for("Health pings resuming", |c| {
        c.iter().filter(|c| is(c, "POST", "/health", 200)).count() > paused
    });

    // Latest value wins.
    for n in [7, 8, 9] {
        agones.set_players(n);
    }
    sidecar.wait_for("players = 9", |c| counter_ok(c, 9));

    // A last count, then Shutdown: sent last, and nothing after it.
    agones.set_players(0);
    agones.shutdown();
    agones.stop();
    let calls = sidecar.calls();
    let last = calls.last().expect("calls");
    assert!(is(last, "POST", "/shutdown", 200), "{calls:#?}");
    assert_eq!(calls.iter().filter(|c| c.path == "/shutdown").count(), 1);
    assert!(
        counter_ok(&calls, 0),
        "final count before Shutdown: {calls:#?}"
    );
    assert_eq!(calls.iter().filter(|c| c.path == "/ready").count(), 4);

    // Every call is JSON with the documented bodies (the GET has no body).
    for c in &calls {
        if (c.method.as_str(), c.path.as_str()) == ("GET", "/gameserver") {
            continue;
        }
        assert_eq!(c.content_type.as_deref(), Some("application/json"), "{c:?}");
        match c.path.as_str() {
            "/ready" | "/health" | "/shutdown" => {
                assert_eq!((c.method.as_str(), c.body.as_str()), ("POST", "{}"));
            }
            "/v1beta1/counters/players" => {
                assert_eq!(c.method, "PATCH");
                assert!(c.body.starts_with("{\"count\":\""), "{c:?}");
            }
            other => panic!("unexpected route {other}"),
        }
    }
}

#[test]
fn unchanged_player_count_is_sent_once() {
    let sidecar = Sidecar::start(&[]);
    let agones = Agones::start(sidecar.options(Duration::from_secs(60)), Box::new(|| true));
    for _ in 0..10_000 {
        agones.set_players(2);
    }
    sidecar.wait_for("players = 2", |c| counter_ok(c, 2));
    std::thread::sleep(Duration::from_millis(200));
    agones.shutdown();
    agones.stop();
    let calls = sidecar.calls();
    let patches = calls.iter().filter(|c| c.method == "PATCH").count();
    assert_eq!(patches, 1, "{calls:#?}");
    assert!(is(calls.last().unwrap(), "POST", "/shutdown", 200));
}

#[test]
fn no_health_pings_while_not_live_but_ready_still_goes_out() {
    let sidecar = Sidecar::start(&[]);
    let agones = Agones::start(
        sidecar.options(Duration::from_millis(20)),
        Box::new(|| false),
    );
    agones.ready();
    sidecar.wait_for("Ready", |c| c.iter().any(|c| is(c, "POST", "/ready", 200)));
    std::thread::sleep(Duration::from_millis(200));
    agones.stop();
    let calls = sidecar.calls();
    assert_eq!(calls.iter().filter(|c| c.path == "/health").count(), 0);
    assert_eq!(calls.iter().filter(|c| c.path == "/shutdown").count(), 0);
}

#[test]
fn refused_counter_update_waits_for_the_next_change() {
    // The GameServer has no Counter named `rooms`: the sidecar answers 404.
    let sidecar = Sidecar::start(&[]);
    let opts = AgonesOptions {
        counter: "rooms".to_owned(),
        ..sidecar.options(Duration::from_secs(60))
    };
    let agones = Agones::start(opts, Box::new(|| true));
    agones.set_players(1);
    let refused = |c: &Call| is(c, "PATCH", "/v1beta1/counters/rooms", 404);
    sidecar.wait_for("one refused update", |c| c.iter().any(refused));
    // Past the first backoff step: no retry of the same value.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(sidecar.count(refused), 1);
    agones.set_players(2);
    sidecar.wait_for("the next value", |c| {
        c.iter().filter(|c| refused(c)).count() == 2
    });
    assert!(sidecar
        .calls()
        .iter()
        .any(|c| c.body == "{\"count\":\"2\"}"));
    agones.stop();
}

#[test]
fn shutdown_and_stop_are_bounded_without_a_sidecar() {
    // A port nobody listens on: every request is refused.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let agones = Agones::start(
        AgonesOptions {
            port,
            health_interval: Duration::from_millis(20),
            counter: "players".to_owned(),
        },
        Box::new(|| true),
    );
    agones.ready();
    agones.set_players(4);
    std::thread::sleep(Duration::from_millis(100));
    agones.shutdown();
    let start = Instant::now();
    agones.stop();
    // Shutdown gives up within its budget (5 s) plus one request; generous bound.
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        start.elapsed()
    );
}

#[test]
fn dropping_the_handle_ends_the_thread_quietly() {
    let sidecar = Sidecar::start(&[]);
    let agones = Agones::start(
        sidecar.options(Duration::from_millis(20)),
        Box::new(|| true),
    );
    sidecar.wait_for("a Health ping", |c| c.iter().any(|c| c.path == "/health"));
    drop(agones);
    // The thread stops pinging soon after.
    std::thread::sleep(Duration::from_millis(200));
    let after = healths(&sidecar);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(healths(&sidecar), after);
}

/// What the SDK's REST gateway answers for `GET /gameserver` (trimmed): the allocated node
/// address and host ports.
const GAMESERVER_JSON: &str = r#"{"object_meta":{"name":"tickwire-x7k2p","namespace":"default"},"spec":{"health":{"period_seconds":5}},"status":{"state":"Ready","address":"10.0.0.7","ports":[{"name":"metrics","port":9464},{"name":"game","port":7345}],"players":null}}"#;

#[test]
fn gameserver_address_is_parsed() {
    use agones::gameserver_address;
    assert_eq!(
        gameserver_address(GAMESERVER_JSON, "game"),
        Some("10.0.0.7:7345".parse().unwrap())
    );
    // No port of that name: the first port.
    assert_eq!(
        gameserver_address(GAMESERVER_JSON, "other"),
        Some("10.0.0.7:9464".parse().unwrap())
    );
    // Ports as strings, spaces, IPv6.
    let v6 =
        r#"{"status": {"address": "2001:db8::5", "ports": [ {"name": "game", "port": "7001"} ]}}"#;
    assert_eq!(
        gameserver_address(v6, "game"),
        Some("[2001:db8::5]:7001".parse().unwrap())
    );
    for bad in [
        "{}",
        r#"{"status":{}}"#,
        r#"{"status":{"address":"","ports":[]}}"#,
        r#"{"status":{"address":"10.0.0.1","ports":[{"name":"game","port":0}]}}"#,
        "garbage",
        r#"{"status":{"address":"10.0.0.1","ports":[{"name":"game","port":99999}]}}"#,
    ] {
        assert_eq!(gameserver_address(bad, "game"), None, "{bad}");
    }
}

#[test]
fn gameserver_reader_survives_truncation_and_mutation() {
    let json = GAMESERVER_JSON.as_bytes();
    for cut in 0..=json.len() {
        let text = String::from_utf8_lossy(&json[..cut]);
        let _ = agones::gameserver_address(&text, "game");
    }
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bytes = json.to_vec();
        let at = (state as usize) % bytes.len();
        bytes[at] = (state >> 32) as u8;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(addr) = agones::gameserver_address(&text, "game") {
            assert_ne!(addr.port(), 0);
        }
        let _ = http::parse_response_head(&bytes);
        let _ = http::parse_request(&bytes);
    }
}

#[test]
fn allocated_address_is_learned_after_ready() {
    let sidecar = Sidecar::start(&[]);
    let agones = Agones::start(
        sidecar.options(Duration::from_millis(100)),
        Box::new(|| true),
    );
    agones.ready();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut addr = None;
    while addr.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        addr = agones.take_advertised();
    }
    assert_eq!(addr, Some("10.0.0.7:7345".parse().unwrap()));
    assert_eq!(agones.take_advertised(), None, "handed over once");
    agones.stop();
}
