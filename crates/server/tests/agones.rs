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

use agones::{Agones, AgonesOptions, Call as AgonesCall, Next, Sdk, Wants};

/// Hang guard for the real-socket tests: the longest wait for something the client should do
/// (retries back off up to 5 s; a loaded machine may be much slower). Never a measurement.
const PATIENCE: Duration = Duration::from_secs(120);

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
                            let _ = serve_one(stream, &mut failing, &calls);
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

/// Reads one request, records it, then answers it (recorded first: a client holding its
/// answer always finds its call in the record).
fn serve_one(
    mut stream: TcpStream,
    failing: &mut HashMap<String, usize>,
    calls: &Mutex<Vec<Call>>,
) -> Option<()> {
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
    calls.lock().unwrap().push(Call {
        method,
        path,
        content_type,
        body,
        status,
    });
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    Some(())
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

// ---------------------------------------------------------------------------------------
// The logic on virtual time: `agones::Sdk` is fed a clock that only moves when it says it
// sleeps, and scripted answers. Every assertion is about the exact calls and their (virtual)
// instants; nothing here sleeps or reads the real clock beyond one `Instant::now()` origin.
// ---------------------------------------------------------------------------------------

/// The state machine driven by a virtual clock and a scripted sidecar.
struct Sim {
    sdk: Sdk,
    t0: Instant,
    now: Instant,
    wants: Wants,
    live: bool,
    /// Answer this many of each call's first attempts with a 503.
    fail: HashMap<&'static str, usize>,
    /// Every call answered with this error instead (no sidecar at all).
    unreachable: bool,
    /// Counter updates answered 404 (no such Counter).
    refuse_counter: bool,
    /// Every call: virtual ms since t0, the call, the status answered (0: no answer).
    log: Vec<(u64, AgonesCall, u16)>,
    advertised: Vec<(u64, SocketAddr)>,
    exited_at: Option<u64>,
}

fn kind(call: &AgonesCall) -> &'static str {
    match call {
        AgonesCall::Ready => "ready",
        AgonesCall::Health => "health",
        AgonesCall::Counter(_) => "counter",
        AgonesCall::GameServer => "gameserver",
        AgonesCall::Shutdown => "shutdown",
    }
}

impl Sim {
    fn new(health_ms: u64, fail: &[(&'static str, usize)]) -> Sim {
        let t0 = Instant::now();
        Sim {
            sdk: Sdk::new(Duration::from_millis(health_ms), "players", t0),
            t0,
            now: t0,
            wants: Wants::default(),
            live: true,
            fail: fail.iter().copied().collect(),
            unreachable: false,
            refuse_counter: false,
            log: Vec::new(),
            advertised: Vec::new(),
            exited_at: None,
        }
    }

    fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    fn answer_for(&mut self, call: &AgonesCall) -> agones::Answer {
        if self.unreachable {
            return Err("Connection refused (os error 111)".to_owned());
        }
        if let Some(n) = self.fail.get_mut(kind(call)).filter(|n| **n > 0) {
            *n -= 1;
            return Ok((503, b"{}".to_vec()));
        }
        match call {
            AgonesCall::Counter(_) if self.refuse_counter => Ok((404, b"{}".to_vec())),
            AgonesCall::GameServer => Ok((200, GAMESERVER_JSON.as_bytes().to_vec())),
            _ => Ok((200, b"{}".to_vec())),
        }
    }

    /// Runs every step due before `t0 + ms` (virtual), then sets the clock to it.
    fn run_until(&mut self, ms: u64) {
        let end = self.t0 + Duration::from_millis(ms);
        for _ in 0..100_000 {
            let live = self.live;
            match self.sdk.next(self.now, &self.wants, &|| live) {
                Next::Send(call) => {
                    let answer = self.answer_for(&call);
                    let status = answer.as_ref().map_or(0, |a| a.0);
                    self.log.push((self.ms(), call.clone(), status));
                    if let Some(addr) = self.sdk.answer(self.now, &call, answer) {
                        self.advertised.push((self.ms(), addr));
                    }
                }
                Next::Sleep(until) => {
                    assert!(until > self.now, "asked to sleep until the past");
                    if until >= end {
                        self.now = self.now.max(end);
                        return;
                    }
                    self.now = until;
                }
                Next::Exit => {
                    self.exited_at = Some(self.ms());
                    return;
                }
            }
        }
        panic!(
            "no sleep in 100000 steps: {:?}",
            &self.log[self.log.len() - 20..]
        );
    }

    /// The calls other than Health pings.
    fn non_health(&self) -> Vec<(u64, AgonesCall, u16)> {
        let log = self.log.iter().filter(|c| c.1 != AgonesCall::Health);
        log.cloned().collect()
    }

    /// The instants of the Health pings in `from..to` (ms).
    fn health_at(&self, from: u64, to: u64) -> Vec<u64> {
        let pings = self.log.iter().filter(|c| c.1 == AgonesCall::Health);
        pings
            .map(|c| c.0)
            .filter(|t| (from..to).contains(t))
            .collect()
    }
}

fn every(from: u64, to: u64, step: u64) -> Vec<u64> {
    (from..to).step_by(step as usize).collect()
}

/// The whole lifecycle against a sidecar that starts late, call by call on virtual time:
/// Ready and the Counter retried with backoff (250 ms doubling), the address asked right after
/// Ready, Health every interval while live and none while the loop is stalled (while the Counter
/// still follows the players), latest count wins, a last count then Shutdown, then exit.
#[test]
fn lifecycle_on_virtual_time_exact_calls() {
    use AgonesCall::*;
    // The sidecar is not ready for the first 3 Ready calls and the first 2 Counter updates.
    let mut sim = Sim::new(50, &[("ready", 3), ("counter", 2)]);
    sim.wants.players = Some(3);
    sim.wants.ready = 1;
    sim.run_until(2000);
    assert_eq!(
        sim.non_health(),
        [
            (0, Ready, 503),
            (0, Counter(3), 503),
            (250, Ready, 503),
            (250, Counter(3), 503),
            (750, Ready, 503),
            (750, Counter(3), 200),
            (1750, Ready, 200),
            (1750, GameServer, 200),
        ]
    );
    assert_eq!(sim.advertised, [(1750, "10.0.0.7:7345".parse().unwrap())]);
    assert_eq!(sim.health_at(0, 2000), every(0, 2000, 50));

    // The tick loop stalls at 2000: no Health ping while not live, but the Counter follows.
    sim.live = false;
    sim.wants.players = Some(5);
    sim.run_until(2500);
    assert_eq!(sim.health_at(2000, 2500), Vec::<u64>::new());
    assert_eq!(sim.non_health().last(), Some(&(2000, Counter(5), 200)));
    // Pings resume with the loop, on the same cadence.
    sim.live = true;
    sim.run_until(2700);
    assert_eq!(sim.health_at(2500, 2700), every(2500, 2700, 50));

    // Latest value wins: 7 and 8 are never sent.
    for n in [7, 8, 9] {
        sim.wants.players = Some(n);
    }
    sim.run_until(2710);
    assert_eq!(sim.non_health().last(), Some(&(2700, Counter(9), 200)));

    // A last count, then Shutdown: sent last, once, and the machine exits.
    sim.wants.players = Some(0);
    sim.wants.shutdown = true;
    sim.wants.stop = true;
    sim.run_until(60_000);
    let n = sim.log.len();
    assert_eq!(
        sim.log[n - 3..],
        [
            (2700, Health, 200),
            (2710, Counter(0), 200),
            (2710, Shutdown, 200)
        ]
    );
    assert_eq!(sim.exited_at, Some(2710));
    let readies = sim.log.iter().filter(|c| c.1 == Ready).count();
    assert_eq!(readies, 4, "Ready is not sent again once it succeeded");
}

#[test]
fn unchanged_player_count_is_sent_once_on_virtual_time() {
    let mut sim = Sim::new(60_000, &[]);
    sim.wants.players = Some(2);
    for t in (0..600_000).step_by(16) {
        sim.run_until(t); // the loop re-stating the same count every tick
        sim.wants.players = Some(2);
    }
    let patches: Vec<_> = sim.non_health();
    assert_eq!(patches, [(0, AgonesCall::Counter(2), 200)]);
}

#[test]
fn no_health_pings_while_not_live_but_ready_still_goes_out_on_virtual_time() {
    let mut sim = Sim::new(20, &[]);
    sim.live = false;
    sim.wants.ready = 1;
    sim.run_until(10_000);
    assert_eq!(sim.health_at(0, 10_000), Vec::<u64>::new());
    assert_eq!(
        sim.non_health(),
        [
            (0, AgonesCall::Ready, 200),
            (0, AgonesCall::GameServer, 200)
        ]
    );
    // A stop without Shutdown: exits, and sends no Shutdown.
    sim.wants.stop = true;
    sim.run_until(20_000);
    assert_eq!(sim.exited_at, Some(10_000));
    assert!(sim.log.iter().all(|c| c.1 != AgonesCall::Shutdown));
}

#[test]
fn refused_counter_update_waits_for_the_next_change_on_virtual_time() {
    let mut sim = Sim::new(60_000, &[]);
    sim.refuse_counter = true;
    sim.wants.players = Some(1);
    // A 404 is not retried: not within a minute of virtual time, past every backoff step.
    sim.run_until(60_000);
    assert_eq!(sim.non_health(), [(0, AgonesCall::Counter(1), 404)]);
    sim.wants.players = Some(2);
    sim.run_until(120_000);
    assert_eq!(
        sim.non_health(),
        [
            (0, AgonesCall::Counter(1), 404),
            (60_000, AgonesCall::Counter(2), 404)
        ]
    );
}

/// Without a sidecar, Shutdown is tried 5 times with backoff (0, 250, 750, 1750, 3750 ms after
/// it was asked for, after one last Counter attempt) and then given up: the thread exits 3.75 s
/// after the Shutdown, well within its 5 s budget. A stop does not cut it short.
#[test]
fn shutdown_is_bounded_without_a_sidecar_on_virtual_time() {
    let mut sim = Sim::new(20, &[]);
    sim.unreachable = true;
    sim.wants.ready = 1;
    sim.wants.players = Some(4);
    sim.run_until(100);
    sim.wants.shutdown = true;
    sim.wants.stop = true;
    sim.run_until(60_000);
    let after: Vec<_> = sim.log.iter().filter(|c| c.0 >= 100).cloned().collect();
    use AgonesCall::*;
    assert_eq!(
        after,
        [
            (100, Counter(4), 0),
            (100, Shutdown, 0),
            (350, Shutdown, 0),
            (850, Shutdown, 0),
            (1850, Shutdown, 0),
            (3850, Shutdown, 0),
        ]
    );
    assert_eq!(sim.exited_at, Some(3850));
}

/// A Shutdown answered after a few 503s stops the retries at once.
#[test]
fn shutdown_retries_until_answered_on_virtual_time() {
    let mut sim = Sim::new(60_000, &[("shutdown", 2)]);
    sim.run_until(10);
    sim.wants.shutdown = true;
    sim.run_until(60_000);
    let shutdowns: Vec<_> = sim.non_health();
    use AgonesCall::*;
    assert_eq!(
        shutdowns,
        [
            (10, Shutdown, 503),
            (260, Shutdown, 503),
            (760, Shutdown, 200)
        ]
    );
    assert_eq!(sim.exited_at, Some(760));
}

/// Ready again (after an allocation) is sent again; backoff restarts after a success.
#[test]
fn ready_again_is_sent_again_on_virtual_time() {
    let mut sim = Sim::new(60_000, &[]);
    sim.wants.ready = 1;
    sim.run_until(1000);
    sim.wants.ready = 2;
    sim.run_until(2000);
    let readies: Vec<u64> = sim
        .log
        .iter()
        .filter(|c| c.1 == AgonesCall::Ready)
        .map(|c| c.0)
        .collect();
    assert_eq!(readies, [0, 1000]);
    // The address is asked once: after the first Ready.
    let gets = sim.log.iter().filter(|c| c.1 == AgonesCall::GameServer);
    assert_eq!(gets.count(), 1);
}

// ---------------------------------------------------------------------------------------
// The thread over real sockets against the stand-in sidecar: order and eventual outcomes only,
// with a hang guard; never "did not happen within X ms" (the virtual-time tests prove those).
// ---------------------------------------------------------------------------------------

#[test]
fn lifecycle_against_a_sidecar_that_starts_late() {
    // The sidecar is not ready for the first 3 Ready calls and the first 2 Counter updates.
    let sidecar = Sidecar::start(&[("/ready", 3), ("/v1beta1/counters/players", 2)]);
    let agones = Agones::start(
        sidecar.options(Duration::from_millis(50)),
        Box::new(|| true),
    );
    agones.set_players(3);
    agones.ready();

    // Ready arrives after the retries (in that order).
    sidecar.wait_for("Ready", |c| c.iter().any(|c| is(c, "POST", "/ready", 200)));
    sidecar.wait_for("players = 3", |c| counter_ok(c, 3));
    sidecar.wait_for("a Health ping", |c| {
        c.iter().any(|c| is(c, "POST", "/health", 200))
    });
    // Latest value wins (intermediate values may or may not be sent).
    for n in [7, 8, 9] {
        agones.set_players(n);
    }
    sidecar.wait_for("players = 9", |c| counter_ok(c, 9));

    // A last count, then Shutdown: sent last, and nothing after it.
    agones.set_players(0);
    agones.shutdown();
    agones.stop();
    sidecar.wait_for("Shutdown", |c| c.iter().any(|c| c.path == "/shutdown"));
    let calls = sidecar.calls();
    // (A request whose answer the client did not read in time is retried, so counts of calls
    // are asserted on virtual time, not here.)
    let last = calls.last().expect("calls");
    assert!(is(last, "POST", "/shutdown", 200), "{calls:#?}");
    assert!(
        counter_ok(&calls, 0),
        "final count before Shutdown: {calls:#?}"
    );
    let ready: Vec<u16> = calls
        .iter()
        .filter(|c| c.path == "/ready")
        .map(|c| c.status)
        .collect();
    assert_eq!(ready[..4], [503, 503, 503, 200], "{calls:#?}");

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

/// Runs `f` on its own thread; panics if it has not returned within the hang guard.
fn returns_within_guard(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|e| panic!("{what} did not return: {e}"));
}

#[test]
fn shutdown_and_stop_return_without_a_sidecar() {
    // A port nobody listens on: every request is refused. How long the retries take is
    // proved on virtual time (shutdown_is_bounded_without_a_sidecar_on_virtual_time); here,
    // only that the real thread gets through them and stop() returns.
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
    agones.shutdown();
    returns_within_guard("stop()", move || agones.stop());
}

#[test]
fn dropping_the_handle_ends_the_thread_quietly() {
    let sidecar = Sidecar::start(&[]);
    // The liveness closure lives on the thread: its sender is dropped when the thread ends.
    let (alive_tx, thread_gone) = std::sync::mpsc::channel::<()>();
    let agones = Agones::start(
        sidecar.options(Duration::from_millis(20)),
        Box::new(move || {
            let _ = &alive_tx;
            true
        }),
    );
    sidecar.wait_for("a Health ping", |c| c.iter().any(|c| c.path == "/health"));
    drop(agones);
    assert_eq!(
        thread_gone.recv_timeout(PATIENCE),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
        "the SDK thread ends once the handle is dropped"
    );
    let calls = sidecar.calls();
    assert!(calls.iter().all(|c| c.path != "/shutdown"), "{calls:#?}");
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
    let deadline = Instant::now() + PATIENCE;
    let mut addr = None;
    while addr.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        addr = agones.take_advertised();
    }
    assert_eq!(addr, Some("10.0.0.7:7345".parse().unwrap()));
    assert_eq!(agones.take_advertised(), None, "handed over once");
    agones.stop();
}
