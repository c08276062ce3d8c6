//! tickwire-io: every socket, every wait and every I/O buffer of the Tickwire server.
//!
//! This is the only crate of the workspace that uses `unsafe`; everything above it is sans-IO.
//! It offers one small, completion-shaped contract, [`Backend`], and one implementation per OS
//! readiness/completion model, each in its own `cfg`-gated module (the layout mio uses):
//!
//! | model | module | platforms |
//! |---|---|---|
//! | [`Model::Epoll`] | `epoll` | Linux |
//! | [`Model::Select`] | `select` | every unix |
//! | [`Model::Blocking`] | `blocking` | everywhere (pure std, one helper thread per socket) |
//! | [`Model::IoUring`], [`Model::Kqueue`], [`Model::Iocp`] | not yet | [`open`] answers [`OpenError::Unsupported`] |
//!
//! # The contract
//!
//! * [`Backend::bind`] opens a non-blocking UDP socket and returns its [`SocketId`] (its index in
//!   the backend's socket set). One backend can hold thousands of sockets (the load tester binds
//!   one per bot); the per-socket cost of a poll is O(1) for epoll.
//! * [`Backend::poll`] blocks until a datagram is readable on any socket, the [`Waker`] fires, or
//!   the deadline passes (a deadline in the past is a non-blocking check), then hands up to
//!   [`Config::max_events`] datagrams to the callback without blocking again. The `&[u8]` lent to
//!   the callback points into a backend-owned buffer allocated when the backend was opened and is
//!   valid for that call only: nothing is allocated per poll. [`PollReport::events`] counts
//!   datagrams plus wake-ups; [`PollReport::waited`] is the time spent inside the wait syscall.
//! * A datagram longer than [`Config::max_datagram`] is truncated by the kernel; the backend
//!   detects that, drops it and counts it in [`IoStats::truncated`]. It is never delivered.
//! * [`Backend::send`] copies a datagram into a preallocated slab of [`Config::send_queue`] slots
//!   ([`SendError::QueueFull`] beyond it, counted); [`Backend::flush`] hands the whole slab to the
//!   kernel in batches (`sendmmsg` per socket on Linux) and empties it. Datagrams the kernel
//!   refuses (`EAGAIN`/`ENOBUFS`) are dropped and counted, never retried: game traffic is
//!   latest-wins.
//!
//! # Why level-triggered
//!
//! The epoll backend registers every socket level-triggered and takes at most `max_events`
//! datagrams per poll. A burst larger than that budget simply stays readable: the next poll
//! reports the socket again and takes the rest, and the tick loop gets control back between the
//! two. Edge-triggered epoll only reports a socket again after new data arrives, so it would force
//! a drain-until-`EAGAIN` on every wake, which lets one flooded socket starve the tick (or, if the
//! drain stops early, strands datagrams until the next packet happens to arrive). Level
//! triggering also makes the kernel rotate ready sockets, so a budget cut is fair across sockets.
//! `select` is level-triggered by nature; the blocking backend keeps a bounded queue.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tickwire_io::{open, Config, Model};
//!
//! let mut io = open(Model::Auto, &Config::default()).expect("open");
//! let a = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
//! let b = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
//! let b_addr = io.local_addr(b).unwrap();
//! io.send(a, b_addr, b"ping").unwrap();
//! io.flush().unwrap();
//! let mut got = Vec::new();
//! let deadline = Instant::now() + Duration::from_secs(5);
//! while got.is_empty() && Instant::now() < deadline {
//!     io.poll(deadline, &mut |id, _peer, bytes| got.push((id, bytes.to_vec()))).unwrap();
//! }
//! assert_eq!(got, vec![(b, b"ping".to_vec())]);
//! ```
//!
//! # Test hook
//!
//! When the environment variable `TICKWIRE_IO_FORCE_FAIL` holds a comma-separated list of model
//! names (`"epoll,select"`), [`open`] refuses those models with [`OpenError::Io`] carrying
//! [`io::ErrorKind::PermissionDenied`]. It exists so that the server's fallback path can be tested
//! on a machine where every backend works; it is read on every call to [`open`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(unix)]
#[macro_use]
mod sys;

mod blocking;
#[cfg(target_os = "linux")]
mod epoll;
#[cfg(unix)]
mod select;
mod slab;

/// Identifies one socket of a backend: its index in the backend's socket set, in bind order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// An I/O model: which OS mechanism a backend uses to wait for and move datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// The best model this platform build offers (Linux: epoll; other unix: select; else blocking).
    Auto,
    /// Linux epoll, level-triggered, `recvmmsg`/`sendmmsg`.
    Epoll,
    /// Linux io_uring (not implemented yet: [`OpenError::Unsupported`]).
    IoUring,
    /// BSD/macOS kqueue (not implemented yet: [`OpenError::Unsupported`]).
    Kqueue,
    /// Windows I/O completion ports (not implemented yet: [`OpenError::Unsupported`]).
    Iocp,
    /// POSIX `select(2)`; refuses sockets whose fd is `>= FD_SETSIZE`.
    Select,
    /// Portable std sockets, one helper thread per socket feeding a bounded queue.
    Blocking,
}

impl Model {
    /// Every model, in declaration order.
    pub const ALL: [Model; 7] = [
        Model::Auto,
        Model::Epoll,
        Model::IoUring,
        Model::Kqueue,
        Model::Iocp,
        Model::Select,
        Model::Blocking,
    ];

    /// The model's name as used in config files and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Model::Auto => "auto",
            Model::Epoll => "epoll",
            Model::IoUring => "io_uring",
            Model::Kqueue => "kqueue",
            Model::Iocp => "iocp",
            Model::Select => "select",
            Model::Blocking => "blocking",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Model {
    type Err = ParseModelError;

    /// Parses one of the names of [`Model::as_str`] (ASCII case-insensitive, surrounding
    /// whitespace ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Model::ALL
            .iter()
            .copied()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseModelError {
                input: s.to_owned(),
            })
    }
}

/// The string given to [`Model::from_str`] names no model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseModelError {
    input: String,
}

impl ParseModelError {
    /// The string that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown io model {:?}; expected one of: ", self.input)?;
        for (i, m) in Model::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(m.as_str())?;
        }
        Ok(())
    }
}

impl Error for ParseModelError {}

/// Sizes of everything a backend allocates when it is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most datagrams one [`Backend::poll`] delivers (default 1024). Must be at least 1.
    pub max_events: usize,
    /// Size of each receive and send slot in bytes (default 1500). Longer datagrams are
    /// dropped and counted on receive and refused on send. Must be at least 1.
    pub max_datagram: usize,
    /// Number of send slots (default 4096); [`Backend::send`] beyond it answers
    /// [`SendError::QueueFull`]. Must be at least 1.
    pub send_queue: usize,
    /// `SO_RCVBUF`/`SO_SNDBUF` requested for every socket (default 4 MiB, best effort: the
    /// kernel may cap it).
    pub socket_buffer_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_events: 1024,
            max_datagram: 1500,
            send_queue: 4096,
            socket_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Config {
    fn validate(&self) -> io::Result<()> {
        let zero = if self.max_events == 0 {
            "max_events"
        } else if self.max_datagram == 0 {
            "max_datagram"
        } else if self.send_queue == 0 {
            "send_queue"
        } else {
            return Ok(());
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("io config {} must be at least 1", zero),
        ))
    }
}

/// What one [`Backend::poll`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Datagrams handed to the callback.
    pub datagrams: usize,
    /// Datagrams plus wake-ups consumed (feeds `io_events_processed`).
    pub events: usize,
    /// Time spent blocked inside the wait syscall (feeds `io_wait_duration_ms`).
    pub waited: Duration,
}

/// What one [`Backend::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams dropped because the kernel refused them (also counted in
    /// [`IoStats::send_errors`]).
    pub failed: usize,
}

/// Why [`Backend::send`] refused a datagram. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Every send slot is taken until the next [`Backend::flush`] (counted in
    /// [`IoStats::send_queue_full`]).
    QueueFull,
    /// The datagram is longer than [`Config::max_datagram`].
    TooLarge,
    /// The [`SocketId`] was not returned by this backend's [`Backend::bind`].
    UnknownSocket,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::QueueFull => "send queue full until the next flush",
            SendError::TooLarge => "datagram longer than max_datagram",
            SendError::UnknownSocket => "unknown socket id",
        })
    }
}

impl Error for SendError {}

/// Counters a backend keeps since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Received datagrams longer than [`Config::max_datagram`], dropped.
    pub truncated: u64,
    /// Receive errors (and, for the blocking backend, datagrams dropped because its bounded
    /// receive queue was full).
    pub recv_errors: u64,
    /// Datagrams the kernel refused on flush, dropped.
    pub send_errors: u64,
    /// Calls to [`Backend::send`] refused with [`SendError::QueueFull`].
    pub send_queue_full: u64,
}

/// One I/O backend: a set of UDP sockets, the wait, the receive buffers, the send slab and a
/// waker. See the crate docs for the contract.
pub trait Backend: Send {
    /// The concrete model (never [`Model::Auto`]).
    fn model(&self) -> Model;

    /// Opens a non-blocking UDP socket bound to `addr` and adds it to the set.
    /// `SO_RCVBUF`/`SO_SNDBUF` are set to [`Config::socket_buffer_bytes`] (best effort).
    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId>;

    /// The address a socket is bound to (with the real port after binding port 0).
    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr>;

    /// Copies `data` into the send slab, to be sent from socket `id` to `peer` by the next
    /// [`Backend::flush`].
    fn send(&mut self, id: SocketId, peer: SocketAddr, data: &[u8]) -> Result<(), SendError>;

    /// Hands every queued datagram to the kernel and empties the slab. Refused datagrams are
    /// counted in the report and in [`IoStats::send_errors`], not retried.
    fn flush(&mut self) -> io::Result<FlushReport>;

    /// Waits until a datagram is readable, the waker fires or `deadline` passes, then calls
    /// `on_datagram` for up to [`Config::max_events`] datagrams without blocking again.
    fn poll(
        &mut self,
        deadline: Instant,
        on_datagram: &mut dyn FnMut(SocketId, SocketAddr, &[u8]),
    ) -> io::Result<PollReport>;

    /// A handle that makes a current or the next [`Backend::poll`] return early.
    fn waker(&self) -> Waker;

    /// The counters so far.
    fn stats(&self) -> IoStats;
}

/// What a backend's waker does; implemented once per backend.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self) -> io::Result<()>;
}

/// Wakes a [`Backend::poll`] from any thread. Cheap to clone.
///
/// A waker keeps the backend's wake-up channel (an eventfd, a socket pair or a condvar) alive
/// while it exists, so waking after the backend was dropped is harmless (it wakes nobody).
#[derive(Clone)]
pub struct Waker {
    inner: Arc<dyn Wake>,
}

impl Waker {
    pub(crate) fn new(inner: Arc<dyn Wake>) -> Self {
        Waker { inner }
    }

    /// Makes the backend's current poll return, or the next one return at once if none is
    /// waiting. Several wakes before a poll are consumed as one wake-up.
    pub fn wake(&self) -> io::Result<()> {
        self.inner.wake()
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker").finish_non_exhaustive()
    }
}

/// Why [`open`] could not open a model.
#[derive(Debug)]
pub enum OpenError {
    /// The model does not exist on this platform build or is not implemented yet.
    Unsupported {
        /// The model asked for.
        model: Model,
        /// Why it is unavailable.
        reason: &'static str,
    },
    /// The model exists but setting it up failed (or was forced to fail by
    /// `TICKWIRE_IO_FORCE_FAIL`).
    Io {
        /// The model that failed.
        model: Model,
        /// The OS error.
        error: io::Error,
    },
}

impl OpenError {
    /// The model that could not be opened.
    pub fn model(&self) -> Model {
        match self {
            OpenError::Unsupported { model, .. } | OpenError::Io { model, .. } => *model,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Unsupported { model, reason } => {
                write!(f, "io model {} is not supported: {}", model, reason)
            }
            OpenError::Io { model, error } => {
                write!(f, "io model {} failed to open: {}", model, error)
            }
        }
    }
}

impl Error for OpenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            OpenError::Unsupported { .. } => None,
            OpenError::Io { error, .. } => Some(error),
        }
    }
}

/// The environment variable of the forced-failure test hook (see the crate docs).
pub const FORCE_FAIL_ENV: &str = "TICKWIRE_IO_FORCE_FAIL";

/// The models [`Model::Auto`] tries, best first; the first that opens wins.
fn auto_candidates() -> &'static [Model] {
    // io_uring goes first on Linux once its backend lands (see docs/architecture.md).
    if cfg!(target_os = "linux") {
        &[Model::Epoll]
    } else if cfg!(unix) {
        &[Model::Select]
    } else {
        &[Model::Blocking]
    }
}

/// Opens a backend of the given model. [`Model::Auto`] tries the platform's models best first
/// and returns the first that opens, or the error of the last one tried.
pub fn open(model: Model, cfg: &Config) -> Result<Box<dyn Backend>, OpenError> {
    forced_failure(model)?;
    if model == Model::Auto {
        let mut last = None;
        for &candidate in auto_candidates() {
            match open(candidate, cfg) {
                Ok(backend) => return Ok(backend),
                Err(e) => last = Some(e),
            }
        }
        return Err(last.unwrap_or(OpenError::Unsupported {
            model,
            reason: "no io model is available on this platform",
        }));
    }
    cfg.validate()
        .map_err(|error| OpenError::Io { model, error })?;
    let io_err = |error| OpenError::Io { model, error };
    match model {
        #[cfg(target_os = "linux")]
        Model::Epoll => epoll::Epoll::open(cfg)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err),
        #[cfg(unix)]
        Model::Select => select::Select::open(cfg)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err),
        Model::Blocking => blocking::Blocking::open(cfg)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err),
        _ => Err(OpenError::Unsupported {
            model,
            reason: unsupported_reason(model),
        }),
    }
}

fn unsupported_reason(model: Model) -> &'static str {
    match model {
        Model::IoUring if cfg!(target_os = "linux") => {
            "the io_uring backend is not implemented yet"
        }
        Model::IoUring => "io_uring exists only on Linux",
        Model::Kqueue if cfg!(any(target_os = "macos", target_os = "freebsd")) => {
            "the kqueue backend is not implemented yet"
        }
        Model::Kqueue => "kqueue exists only on BSD and macOS",
        Model::Iocp if cfg!(windows) => "the iocp backend is not implemented yet",
        Model::Iocp => "iocp exists only on Windows",
        Model::Epoll => "epoll exists only on Linux",
        Model::Select => "select is only built for unix",
        Model::Auto | Model::Blocking => "not available in this build",
    }
}

/// The concrete models [`open`] can open on this platform build (Linux: epoll, select,
/// blocking), best first. [`Model::Auto`] is always accepted by [`open`] and is not listed.
pub fn available_models() -> Vec<Model> {
    let mut models = Vec::with_capacity(3);
    if cfg!(target_os = "linux") {
        models.push(Model::Epoll);
    }
    if cfg!(unix) {
        models.push(Model::Select);
    }
    models.push(Model::Blocking);
    models
}

/// The `TICKWIRE_IO_FORCE_FAIL` test hook.
fn forced_failure(model: Model) -> Result<(), OpenError> {
    let list = match std::env::var(FORCE_FAIL_ENV) {
        Ok(list) => list,
        Err(_) => return Ok(()),
    };
    if list
        .split(',')
        .any(|name| name.trim().eq_ignore_ascii_case(model.as_str()))
    {
        return Err(OpenError::Io {
            model,
            error: io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("forced failure ({} contains {})", FORCE_FAIL_ENV, model),
            ),
        });
    }
    Ok(())
}

/// The error `local_addr` answers for an id this backend never returned.
pub(crate) fn unknown_socket(id: SocketId) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("unknown socket id {}", id.0),
    )
}

/// The next socket id for a backend holding `count` sockets.
pub(crate) fn next_socket_id(count: usize) -> io::Result<SocketId> {
    match u32::try_from(count) {
        Ok(id) if id < u32::MAX => Ok(SocketId(id)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many sockets in one io backend",
        )),
    }
}

/// Time left until `deadline`, zero if it has passed.
pub(crate) fn time_left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_round_trip() {
        for m in Model::ALL {
            assert_eq!(m.as_str().parse::<Model>().unwrap(), m);
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!(" EPOLL ".parse::<Model>().unwrap(), Model::Epoll);
    }

    #[test]
    fn parse_error_lists_allowed_values() {
        let err = "uring".parse::<Model>().unwrap_err();
        assert_eq!(err.input(), "uring");
        let text = err.to_string();
        for m in Model::ALL {
            assert!(text.contains(m.as_str()), "{}", text);
        }
    }

    #[test]
    fn unsupported_models_say_so() {
        for m in [Model::IoUring, Model::Kqueue, Model::Iocp] {
            match open(m, &Config::default()) {
                Err(OpenError::Unsupported { model, reason }) => {
                    assert_eq!(model, m);
                    assert!(!reason.is_empty());
                }
                Err(e) => panic!("{}: unexpected error {}", m, e),
                Ok(_) => panic!("{} opened", m),
            }
        }
    }

    #[test]
    fn zero_sizes_are_refused() {
        let cfg = Config {
            max_events: 0,
            ..Config::default()
        };
        for m in available_models() {
            match open(m, &cfg) {
                Err(OpenError::Io { error, .. }) => {
                    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
                    assert!(error.to_string().contains("max_events"));
                }
                _ => panic!("{} accepted max_events = 0", m),
            }
        }
    }

    #[test]
    fn auto_opens_the_first_candidate() {
        let io = open(Model::Auto, &Config::default()).unwrap();
        assert_eq!(io.model(), auto_candidates()[0]);
    }
}
