//! A client for the Agones SDK sidecar, over its REST gateway on
//! `127.0.0.1:$AGONES_SDK_HTTP_PORT` (default 9358).
//!
//! Routes used (Agones SDK REST API; bodies are JSON):
//!
//! | call | route | body |
//! |---|---|---|
//! | Ready | `POST /ready` | `{}` |
//! | Health | `POST /health` | `{}` |
//! | Shutdown | `POST /shutdown` | `{}` |
//! | UpdateCounter (Beta, CountsAndLists) | `PATCH /v1beta1/counters/{name}` | `{"count":"N"}` (int64 as a string, protobuf JSON) |
//!
//! Every request runs on one background thread (`agones`), never on the tick loop: the
//! loop's calls ([`Agones::ready`], [`Agones::set_players`], [`Agones::shutdown`]) only store
//! atomics and `try_send` on a one-slot wake-up channel, so they never block. Everything is
//! bounded: each request has short connect/read/write timeouts and a response size cap,
//! retries back off (250 ms doubling to 5 s), Shutdown is given up after a few seconds, and
//! [`Agones::stop`] waits a bounded time for the thread.
//!
//! Behaviour, as the sidecar expects it:
//! * Ready is retried until it succeeds: the sidecar may start after the server.
//! * Health is pinged every `health_interval`, but only while `is_live()` returns true, so a
//!   stuck tick loop stops the pings and the GameServer's health check marks it Unhealthy.
//! * The `players` Counter is set to the latest value given to [`Agones::set_players`]
//!   whenever it changed (latest wins; intermediate values may be skipped). Connection errors
//!   and 5xx answers are retried; a 4xx (no such Counter, count above capacity, feature gate
//!   off) is logged and that value dropped until the count changes again.
//! * Shutdown is sent last (after one final attempt at a pending Counter update), retried a
//!   few times within a bounded budget, and then the thread exits.
//!
//! The logic is a sans-IO state machine, [`Sdk`]: given the clock, what the loop asked for
//! ([`Wants`]) and the answers so far, it says which request to make next ([`Next::Send`]) or
//! until when to sleep ([`Next::Sleep`]). The `agones` thread only feeds it `Instant::now()`
//! and real answers; tests (tests/agones.rs) drive it on virtual time with scripted answers.
//!
//! Self-contained on purpose (std + tracing only): liveness comes in as a closure rather than
//! the admin module's `Health`, so the module can be tested on its own.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{find, parse_response_head};

/// Stack of the SDK thread (it builds small requests and parses small JSON answers on the
/// heap; the std default is 2 MiB of address space).
const SDK_THREAD_STACK_BYTES: usize = 256 * 1024;

/// The environment variable Agones sets to the sidecar's REST port.
pub const PORT_ENV: &str = "AGONES_SDK_HTTP_PORT";
/// The sidecar's REST port when [`PORT_ENV`] is unset.
pub const DEFAULT_PORT: u16 = 9358;
/// The Counter kept equal to the connected players (GameServer `spec.counters.players`).
pub const DEFAULT_COUNTER: &str = "players";

/// First retry delay (Ready, Counter, Shutdown); doubles after each failure.
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most Shutdown attempts.
const SHUTDOWN_ATTEMPTS: u32 = 5;
/// Shutdown retries stop once this much time has passed since it was asked for.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);
/// TCP connect timeout (the sidecar is on loopback: it answers at once or not at all).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read and write timeout of one request.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest response read; the rest is ignored.
const MAX_RESPONSE: usize = 64 * 1024;
/// How long [`Agones::stop`] waits for the thread: the Shutdown budget plus one request.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// `players` value meaning "never set".
const UNSET: u64 = u64::MAX;
/// Log a repeated failure at `warn` once per this many attempts (the others at `debug`).
const WARN_EVERY: u32 = 10;

/// Where and how to talk to the sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgonesOptions {
    /// The sidecar's REST port on 127.0.0.1.
    pub port: u16,
    /// Time between Health pings (`agones.health_interval_secs`).
    pub health_interval: Duration,
    /// The Counter set to the player count (`"players"`).
    pub counter: String,
}

impl AgonesOptions {
    /// Port from [`PORT_ENV`] (or [`DEFAULT_PORT`]), Counter [`DEFAULT_COUNTER`].
    pub fn from_env(health_interval: Duration) -> Self {
        let value = std::env::var(PORT_ENV).ok();
        let port = port_from(value.as_deref());
        if let Some(v) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            if v.trim().parse::<u16>().ok() != Some(port) {
                tracing::warn!(
                    "{PORT_ENV} = {v:?} is not a port number; using {DEFAULT_PORT} for the \
                     Agones SDK"
                );
            }
        }
        AgonesOptions {
            port,
            health_interval,
            counter: DEFAULT_COUNTER.to_owned(),
        }
    }
}

/// The sidecar port named by `value` (the content of [`PORT_ENV`]): a non-zero u16, else
/// [`DEFAULT_PORT`].
pub fn port_from(value: Option<&str>) -> u16 {
    value
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|&p| p != 0)
        .unwrap_or(DEFAULT_PORT)
}

/// State shared between the handle and the thread. Written by the tick loop with atomics only.
struct Shared {
    /// Incremented by each [`Agones::ready`]; the thread sends Ready until it has caught up.
    ready_wanted: AtomicU64,
    /// Latest player count ([`UNSET`] before the first [`Agones::set_players`]).
    players: AtomicU64,
    /// [`Agones::shutdown`] was called.
    shutdown: AtomicBool,
    /// [`Agones::stop`] was called or the handle dropped: exit after the current request
    /// (a Shutdown in progress is finished first).
    stop: AtomicBool,
    /// The address clients reach this GameServer at (`status.address` and the `game` port of
    /// `GET /gameserver`), set once by the thread, taken once by the loop.
    advertised: std::sync::Mutex<Option<SocketAddr>>,
}

/// Handle to the Agones SDK thread. Its methods never block (except [`Agones::stop`]).
pub struct Agones {
    shared: Arc<Shared>,
    wake: SyncSender<()>,
    done: Option<Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Agones {
    /// Starts the background thread. `is_live` is polled (on that thread) before every Health
    /// ping: pings are sent only while it returns true, so a stuck tick loop makes the sidecar
    /// mark the GameServer Unhealthy.
    pub fn start(opts: AgonesOptions, is_live: Box<dyn Fn() -> bool + Send>) -> Agones {
        let shared = Arc::new(Shared {
            ready_wanted: AtomicU64::new(0),
            players: AtomicU64::new(UNSET),
            shutdown: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            advertised: std::sync::Mutex::new(None),
        });
        let (wake, woken) = mpsc::sync_channel(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        tracing::info!(
            sdk = %format_args!("127.0.0.1:{}", opts.port),
            health_interval_ms = opts.health_interval.as_millis() as u64,
            counter = %opts.counter,
            "agones: SDK client started"
        );
        let worker = Worker::new(opts, is_live, Arc::clone(&shared), woken);
        let thread = std::thread::Builder::new()
            .name("agones".to_owned())
            .stack_size(SDK_THREAD_STACK_BYTES)
            .spawn(move || {
                worker.run();
                let _ = done_tx.try_send(());
            });
        let (thread, done) = match thread {
            Ok(t) => (Some(t), Some(done)),
            Err(e) => {
                tracing::error!(error = %e, "agones: cannot start the SDK thread; Agones is off");
                (None, None)
            }
        };
        Agones {
            shared,
            wake,
            done,
            thread,
        }
    }

    /// The GameServer's allocated address, once `GET /gameserver` told it (returned once).
    pub fn take_advertised(&self) -> Option<SocketAddr> {
        self.shared.advertised.try_lock().ok()?.take()
    }

    /// Asks for `POST /ready`, retried with backoff (250 ms doubling to 5 s) until it succeeds.
    /// Calling it again (e.g. to go back to Ready after an allocation) sends Ready again.
    pub fn ready(&self) {
        self.shared.ready_wanted.fetch_add(1, Ordering::Relaxed);
        self.poke();
    }

    /// Records the player count; the thread sets the Counter to it when it changed (latest
    /// wins). Cheap enough to call every tick: a store, and a wake-up only on change.
    pub fn set_players(&self, n: u64) {
        let n = n.min(i64::MAX as u64);
        if self.shared.players.swap(n, Ordering::Relaxed) != n {
            self.poke();
        }
    }

    /// Asks for `POST /shutdown` (after a final attempt at a pending Counter update), retried
    /// a few times within a bounded budget; then the thread exits. Health pings stop.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        self.poke();
    }

    /// Stops the thread and waits for it (bounded: a Shutdown in progress may take a few
    /// seconds; beyond that the thread is left to finish on its own, with a warning).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.poke();
        let (Some(done), Some(thread)) = (self.done.take(), self.thread.take()) else {
            return;
        };
        match done.recv_timeout(STOP_WAIT) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
            }
            Err(RecvTimeoutError::Timeout) => tracing::warn!(
                waited_ms = STOP_WAIT.as_millis() as u64,
                "agones: SDK thread still busy; not waiting for it"
            ),
        }
    }

    /// Wakes the thread without blocking (a pending wake-up is enough).
    fn poke(&self) {
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

impl Drop for Agones {
    fn drop(&mut self) {
        // Dropped without stop(): let the thread end on its own; never block here.
        self.shared.stop.store(true, Ordering::Relaxed);
        self.poke();
    }
}

/// Retry schedule of one kind of request.
#[derive(Debug)]
struct Retry {
    /// Earliest next attempt.
    at: Instant,
    /// Delay after the next failure.
    delay: Duration,
    /// Failures in a row.
    failures: u32,
}

impl Retry {
    fn new(now: Instant) -> Self {
        Retry {
            at: now,
            delay: BACKOFF_START,
            failures: 0,
        }
    }

    fn failed(&mut self, now: Instant) {
        self.failures += 1;
        self.at = now + self.delay;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    fn succeeded(&mut self, now: Instant) {
        *self = Retry::new(now);
    }

    /// Whether this failure is worth a `warn` (the first, then one in [`WARN_EVERY`]).
    fn loud(&self) -> bool {
        self.failures % WARN_EVERY == 1
    }
}

/// One request to the sidecar, as the state machine asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `POST /ready`.
    Ready,
    /// `POST /health`.
    Health,
    /// `PATCH /v1beta1/counters/{name}` with this count.
    Counter(u64),
    /// `GET /gameserver` (the allocated address).
    GameServer,
    /// `POST /shutdown`.
    Shutdown,
}

/// What the tick loop asked for, as the thread reads it from [`Shared`] before every step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// How many times Ready was asked for ([`Agones::ready`] calls).
    pub ready: u64,
    /// The latest player count, if one was given.
    pub players: Option<u64>,
    /// [`Agones::shutdown`] was called.
    pub shutdown: bool,
    /// [`Agones::stop`] was called or the handle is gone.
    pub stop: bool,
}

/// The state machine's next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Make this request now and hand its answer to [`Sdk::answer`].
    Send(Call),
    /// Nothing is due before this instant (a change in [`Wants`] may make something due
    /// sooner: ask again then).
    Sleep(Instant),
    /// Done: the thread exits.
    Exit,
}

/// The answer to one request: `Ok((status, body))`, or why no HTTP answer came.
pub type Answer = Result<(u16, Vec<u8>), String>;

/// The Shutdown phase, entered once [`Wants::shutdown`] is seen.
#[derive(Debug)]
struct Finishing {
    /// When the Shutdown was first seen (the budget runs from here).
    start: Instant,
    /// The one final Counter attempt was made (or none was pending).
    counter_done: bool,
    /// Shutdown attempts made.
    attempts: u32,
    /// Earliest next Shutdown attempt.
    at: Instant,
    /// Delay after the next failure.
    delay: Duration,
    /// Shutdown succeeded or was given up: exit.
    done: bool,
}

/// The SDK client's logic, sans I/O: given the clock, what the loop wants and the answers so
/// far, it says which request to make next and until when to sleep. No socket, no clock read,
/// no sleep: the `agones` thread ([`Agones::start`]) feeds it `Instant::now()` and real
/// answers; tests feed it a virtual clock and scripted answers.
#[derive(Debug)]
pub struct Sdk {
    counter: String,
    counter_path: String,
    health_interval: Duration,
    /// Ready requests already satisfied.
    ready_done: u64,
    /// The Ready count a Ready in flight would satisfy.
    ready_sending: u64,
    /// `GET /gameserver` gave the allocated address (or the attempts ran out).
    address_done: bool,
    address_retry: Retry,
    ready_retry: Retry,
    /// The count the Counter holds (or that was refused with a 4xx), if any.
    counter_sent: Option<u64>,
    counter_retry: Retry,
    next_health: Instant,
    health_failures: u32,
    /// Whether the last liveness check said live (to log transitions once).
    was_live: bool,
    finishing: Option<Finishing>,
}

/// The outcome of one request.
enum Outcome {
    /// 2xx.
    Ok,
    /// Worth retrying: no connection, timeout, 5xx, garbage.
    Retry(String),
    /// A 4xx: retrying the same request will not help.
    Refused(String),
}

impl Sdk {
    /// A client that starts at `now`: the first Health ping is due at once.
    pub fn new(health_interval: Duration, counter: &str, now: Instant) -> Self {
        Sdk {
            counter: counter.to_owned(),
            counter_path: format!("/v1beta1/counters/{}", percent_encode(counter)),
            // A zero interval would spin; the config allows 1..=60 s anyway.
            health_interval: health_interval.max(Duration::from_millis(10)),
            ready_done: 0,
            ready_sending: 0,
            address_done: false,
            address_retry: Retry::new(now),
            ready_retry: Retry::new(now),
            counter_sent: None,
            counter_retry: Retry::new(now),
            next_health: now,
            health_failures: 0,
            was_live: true,
            finishing: None,
        }
    }

    /// Method, path and body of `call`.
    pub fn request(&self, call: &Call) -> (&'static str, String, String) {
        match call {
            Call::Ready => ("POST", "/ready".to_owned(), "{}".to_owned()),
            Call::Health => ("POST", "/health".to_owned(), "{}".to_owned()),
            Call::Shutdown => ("POST", "/shutdown".to_owned(), "{}".to_owned()),
            Call::GameServer => ("GET", "/gameserver".to_owned(), String::new()),
            Call::Counter(n) => (
                "PATCH",
                self.counter_path.clone(),
                format!("{{\"count\":\"{n}\"}}"),
            ),
        }
    }

    /// The next step at `now`. `is_live` is asked only when a Health ping is due: pings go out
    /// only while it says true.
    pub fn next(&mut self, now: Instant, wants: &Wants, is_live: &dyn Fn() -> bool) -> Next {
        if wants.shutdown && self.finishing.is_none() {
            self.finishing = Some(Finishing {
                start: now,
                counter_done: false,
                attempts: 0,
                at: now,
                delay: BACKOFF_START,
                done: false,
            });
        }
        let pending = self.counter_pending(wants);
        if let Some(f) = &mut self.finishing {
            // Shutdown: one last Counter update if one is pending, then `POST /shutdown`,
            // bounded. A stop does not cut it short: it is the last word.
            if f.done {
                return Next::Exit;
            }
            if !f.counter_done {
                f.counter_done = true;
                if let Some(n) = pending {
                    return Next::Send(Call::Counter(n));
                }
            }
            return if now < f.at {
                Next::Sleep(f.at)
            } else {
                Next::Send(Call::Shutdown)
            };
        }
        if wants.stop {
            return Next::Exit;
        }
        if wants.ready > self.ready_done && now >= self.ready_retry.at {
            self.ready_sending = wants.ready;
            return Next::Send(Call::Ready);
        }
        if self.address_pending() && now >= self.address_retry.at {
            return Next::Send(Call::GameServer);
        }
        if let Some(n) = self.counter_pending(wants) {
            if now >= self.counter_retry.at {
                return Next::Send(Call::Counter(n));
            }
        }
        while now >= self.next_health {
            // Keep the cadence anchored to the schedule, but never run catch-up pings.
            self.next_health += self.health_interval;
            if self.next_health <= now {
                self.next_health = now + self.health_interval;
            }
            let live = is_live();
            if live != self.was_live {
                if live {
                    tracing::info!("agones: tick loop advancing again; Health pings resume");
                } else {
                    tracing::warn!("agones: tick loop stalled; Health pings paused");
                }
                self.was_live = live;
            }
            if live {
                return Next::Send(Call::Health);
            }
        }
        // Sleep until the next thing is due (a call from the loop may wake the thread sooner).
        let mut due = self.next_health;
        if wants.ready > self.ready_done {
            due = due.min(self.ready_retry.at);
        }
        if self.address_pending() {
            due = due.min(self.address_retry.at);
        }
        if self.counter_pending(wants).is_some() {
            due = due.min(self.counter_retry.at);
        }
        Next::Sleep(due)
    }

    /// Takes the answer to `call` (made at [`Sdk::next`]'s say), received at `now`. Returns
    /// the GameServer's allocated address when this answer told it.
    pub fn answer(&mut self, now: Instant, call: &Call, answer: Answer) -> Option<SocketAddr> {
        let (method, path, _) = self.request(call);
        let outcome = match &answer {
            Ok((status, _)) if (200..300).contains(status) => Outcome::Ok,
            Ok((status, _)) if (400..500).contains(status) => {
                Outcome::Refused(format!("{method} {path}: HTTP {status}"))
            }
            Ok((status, _)) => Outcome::Retry(format!("{method} {path}: HTTP {status}")),
            Err(e) => Outcome::Retry(format!("{method} {path}: {e}")),
        };
        match call {
            Call::Ready => self.ready_answer(now, outcome),
            Call::Counter(n) => self.counter_answer(now, *n, outcome),
            Call::Health => self.health_answer(outcome),
            Call::Shutdown => self.shutdown_answer(now, outcome),
            Call::GameServer => return self.address_answer(now, answer),
        }
        None
    }

    /// After Ready, `GET /gameserver` is asked until it answers an address (or gives up).
    fn address_pending(&self) -> bool {
        self.ready_done > 0 && !self.address_done
    }

    /// The count to send, if it differs from what the Counter holds.
    fn counter_pending(&self, wants: &Wants) -> Option<u64> {
        wants.players.filter(|&n| self.counter_sent != Some(n))
    }

    fn ready_answer(&mut self, now: Instant, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {
                self.ready_done = self.ready_sending;
                tracing::info!(
                    attempts = self.ready_retry.failures + 1,
                    "agones: Ready (the GameServer can be allocated)"
                );
                self.ready_retry.succeeded(now);
            }
            Outcome::Retry(why) | Outcome::Refused(why) => {
                self.ready_retry.failed(now);
                let retry_ms = self
                    .ready_retry
                    .at
                    .saturating_duration_since(now)
                    .as_millis() as u64;
                if self.ready_retry.loud() {
                    tracing::warn!(
                        error = %why,
                        attempts = self.ready_retry.failures,
                        retry_in_ms = retry_ms,
                        "agones: Ready failed (is the SDK sidecar up?); retrying"
                    );
                } else {
                    tracing::debug!(error = %why, attempts = self.ready_retry.failures,
                        "agones: Ready failed; retrying");
                }
            }
        }
    }

    fn counter_answer(&mut self, now: Instant, n: u64, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {
                tracing::debug!(counter = %self.counter, count = n, "agones: Counter set");
                self.counter_sent = Some(n);
                self.counter_retry.succeeded(now);
            }
            Outcome::Refused(why) => {
                tracing::warn!(
                    counter = %self.counter,
                    count = n,
                    error = %why,
                    "agones: Counter update refused (does the GameServer declare \
                     spec.counters.{}, with room for this count, and is the CountsAndLists \
                     feature on?); trying again when the count changes",
                    self.counter
                );
                self.counter_sent = Some(n);
                self.counter_retry.succeeded(now);
            }
            Outcome::Retry(why) => {
                self.counter_retry.failed(now);
                if self.counter_retry.loud() {
                    tracing::warn!(counter = %self.counter, count = n, error = %why,
                        attempts = self.counter_retry.failures,
                        "agones: Counter update failed; retrying");
                } else {
                    tracing::debug!(error = %why, "agones: Counter update failed; retrying");
                }
            }
        }
    }

    fn health_answer(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {
                if self.health_failures > 0 {
                    tracing::info!(
                        failed = self.health_failures,
                        "agones: Health pings reach the sidecar again"
                    );
                }
                self.health_failures = 0;
            }
            Outcome::Retry(why) | Outcome::Refused(why) => {
                self.health_failures += 1;
                if self.health_failures % WARN_EVERY == 1 {
                    tracing::warn!(error = %why, failed = self.health_failures,
                        "agones: Health ping failed");
                } else {
                    tracing::debug!(error = %why, "agones: Health ping failed");
                }
            }
        }
    }

    fn shutdown_answer(&mut self, now: Instant, outcome: Outcome) {
        let Some(f) = &mut self.finishing else {
            return;
        };
        f.attempts += 1;
        match outcome {
            Outcome::Ok => {
                tracing::info!(attempts = f.attempts, "agones: Shutdown sent");
                f.done = true;
            }
            Outcome::Retry(why) | Outcome::Refused(why) => {
                let spent = now.saturating_duration_since(f.start);
                if f.attempts >= SHUTDOWN_ATTEMPTS || spent + f.delay > SHUTDOWN_BUDGET {
                    tracing::warn!(error = %why, attempts = f.attempts,
                        "agones: Shutdown failed; giving up");
                    f.done = true;
                    return;
                }
                tracing::debug!(error = %why, attempts = f.attempts,
                    "agones: Shutdown failed; retrying");
                f.at = now + f.delay;
                f.delay = (f.delay * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// `GET /gameserver`: the address clients are given (node IP and allocated host port), so
    /// tokens naming it are accepted. Retried a few times.
    fn address_answer(&mut self, now: Instant, answer: Answer) -> Option<SocketAddr> {
        const MAX_ATTEMPTS: u32 = 8;
        match answer {
            Ok((status, body)) if (200..300).contains(&status) => {
                match gameserver_address(&String::from_utf8_lossy(&body), GAME_PORT_NAME) {
                    Some(addr) => {
                        tracing::info!(address = %addr, "agones: GameServer address (accepted in connect tokens)");
                        self.address_done = true;
                        return Some(addr);
                    }
                    None => tracing::debug!("agones: GameServer has no address yet"),
                }
            }
            Ok((status, _)) => tracing::debug!(status, "agones: GET /gameserver failed"),
            Err(e) => tracing::debug!(error = %e, "agones: GET /gameserver failed"),
        }
        self.address_retry.failed(now);
        if self.address_retry.failures >= MAX_ATTEMPTS {
            tracing::warn!(
                "agones: no address from GET /gameserver; tokens must name server.public_addr"
            );
            self.address_done = true;
        }
        None
    }
}

/// The thread: reads what the loop wants, runs [`Sdk`] on the real clock, makes the requests
/// it asks for, and sleeps on the wake-up channel in between.
struct Worker {
    addr: SocketAddr,
    sdk: Sdk,
    is_live: Box<dyn Fn() -> bool + Send>,
    shared: Arc<Shared>,
    woken: Receiver<()>,
}

impl Worker {
    fn new(
        opts: AgonesOptions,
        is_live: Box<dyn Fn() -> bool + Send>,
        shared: Arc<Shared>,
        woken: Receiver<()>,
    ) -> Self {
        Worker {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, opts.port)),
            sdk: Sdk::new(opts.health_interval, &opts.counter, Instant::now()),
            is_live,
            shared,
            woken,
        }
    }

    fn wants(&self, handle_gone: bool) -> Wants {
        let players = self.shared.players.load(Ordering::Relaxed);
        Wants {
            ready: self.shared.ready_wanted.load(Ordering::Relaxed),
            players: (players != UNSET).then_some(players),
            shutdown: self.shared.shutdown.load(Ordering::Relaxed),
            stop: handle_gone || self.shared.stop.load(Ordering::Relaxed),
        }
    }

    fn run(mut self) {
        // The handle is gone (dropped): nothing more will be asked; wake-ups cannot come.
        let mut handle_gone = false;
        loop {
            let wants = self.wants(handle_gone);
            match self.sdk.next(Instant::now(), &wants, &*self.is_live) {
                Next::Exit => return,
                Next::Send(call) => {
                    let (method, path, body) = self.sdk.request(&call);
                    let answer = http(self.addr, method, &path, &body).map_err(|e| e.to_string());
                    if let Some(addr) = self.sdk.answer(Instant::now(), &call, answer) {
                        if let Ok(mut slot) = self.shared.advertised.lock() {
                            *slot = Some(addr);
                        }
                    }
                }
                Next::Sleep(until) => {
                    let wait = until.saturating_duration_since(Instant::now());
                    if handle_gone {
                        std::thread::sleep(wait);
                    } else if let Err(RecvTimeoutError::Disconnected) =
                        self.woken.recv_timeout(wait)
                    {
                        handle_gone = true;
                    }
                }
            }
        }
    }
}

/// Sends one request and returns the response status and body (up to [`MAX_RESPONSE`]).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method != "GET" {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    stream.flush()?;

    // Read the head, then as much of the body as Content-Length says (or to EOF).
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let (head_end, status, length) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let (status, length) = parse_response_head(&buf[..end]).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response head")
            })?;
            break (end + 4, status, length);
        }
        if buf.len() > MAX_RESPONSE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP response head too large",
            ));
        }
    };
    let want = length.map_or(MAX_RESPONSE, |l| l.min(MAX_RESPONSE));
    let mut body = buf.split_off(head_end);
    while body.len() < want {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n.min(want - body.len())]),
            // The status is known; a slow or cut body does not change it.
            Err(_) => break,
        }
    }
    body.truncate(want);
    Ok((status, body))
}

/// The name of the GameServer port clients use (config/agones/gameserver.yaml).
pub const GAME_PORT_NAME: &str = "game";

/// `status.address` with the port named `port_name` (else the first port) from the SDK's
/// GameServer JSON. A small scanner rather than a JSON library: only these fields are read.
pub fn gameserver_address(json: &str, port_name: &str) -> Option<SocketAddr> {
    let status = &json[json.find("\"status\"")?..];
    let ip: std::net::IpAddr = string_field(status, "address")?.parse().ok()?;
    let ports = &status[status.find("\"ports\"")?..];
    let ports = &ports[..ports.find(']').unwrap_or(ports.len())];
    let mut first = None;
    for entry in ports.split('}') {
        let Some(port) = number_field(entry, "port") else {
            continue;
        };
        first.get_or_insert(port);
        if string_field(entry, "name") == Some(port_name) {
            return Some(SocketAddr::new(ip, port));
        }
    }
    first.map(|port| SocketAddr::new(ip, port))
}

/// The string value of `"key": "value"` in `text` (no escapes: addresses and names have none).
fn string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let after = &text[text.find(&format!("\"{key}\""))? + key.len() + 2..];
    let after = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(&after[..after.find('"')?])
}

/// The u16 value of `"key": 123` (or `"key": "123"`) in `text`.
fn number_field(text: &str, key: &str) -> Option<u16> {
    let after = &text[text.find(&format!("\"{key}\""))? + key.len() + 2..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let after = after.strip_prefix('"').unwrap_or(after);
    let end = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    after[..end].parse().ok().filter(|&p| p != 0)
}

/// Percent-encodes a path segment (Counter names are normally plain `[a-z0-9-]`).
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_values() {
        assert_eq!(port_from(None), DEFAULT_PORT);
        assert_eq!(port_from(Some("")), DEFAULT_PORT);
        assert_eq!(port_from(Some("0")), DEFAULT_PORT);
        assert_eq!(port_from(Some("http")), DEFAULT_PORT);
        assert_eq!(port_from(Some("70000")), DEFAULT_PORT);
        assert_eq!(port_from(Some(" 59358 ")), 59358);
    }

    #[test]
    fn heads_and_paths() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX: y"),
            Some((200, Some(12)))
        );
        assert_eq!(parse_response_head(b"HTTP/1.0 503 Busy"), Some((503, None)));
        assert_eq!(parse_response_head(b"SSH-2.0-x"), None);
        assert_eq!(parse_response_head(b"HTTP/1.1 abc"), None);
        assert_eq!(percent_encode("players"), "players");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
