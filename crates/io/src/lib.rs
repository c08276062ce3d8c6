//! tickwire-io: every socket, every wait and every I/O buffer of the Tickwire server.
//!
//! This is the only crate of the workspace that uses `unsafe`; everything above it is sans-IO.
//! It offers one small, completion-shaped contract, [`Backend`], and one implementation per OS
//! readiness/completion model, each in its own `cfg`-gated module (the layout mio uses):
//!
//! | model | module | platforms |
//! |---|---|---|
//! | [`Model::IoUring`] | `io_uring` | Linux 6.0+ (multishot recvmsg, provided buffer rings) |
//! | [`Model::Epoll`] | `epoll` | Linux |
//! | [`Model::Kqueue`] | `kqueue` | macOS and FreeBSD, 64-bit (type-checked for those targets, not run in CI: see [kqueue](#kqueue)) |
//! | [`Model::Select`] | `select` | every unix (descriptors below `FD_SETSIZE` only) |
//! | [`Model::Blocking`] | `blocking` | everywhere (pure std; threads: one per UDP socket and listener, two per connection; at most 512 connections) |
//! | [`Model::Iocp`] | `iocp` | Windows (overlapped Winsock operations on one completion port: `WSARecvFrom`/`WSASendTo`, `AcceptEx`, `WSARecv`/`WSASend`) |
//!
//! A model that does not exist on the platform is refused by [`open`] with
//! [`OpenError::Unsupported`], whose reason names the models this platform has.
//!
//! # The contract
//!
//! * [`Backend::bind`] opens a non-blocking UDP socket and returns its [`SocketId`] (its index in
//!   the backend's socket set). One backend can hold thousands of sockets (the load tester binds
//!   one per bot); the per-socket cost of a poll is O(1) for epoll and kqueue.
//! * [`Backend::poll`] blocks until there is something to deliver (a datagram, a connection,
//!   stream bytes, a closed connection), the [`Waker`] fires, or the deadline passes (a deadline
//!   in the past is a non-blocking check), then hands up to [`Config::max_events`] [`Event`]s to
//!   the callback without blocking again. The `&[u8]` lent to the callback points into a
//!   backend-owned buffer allocated when the backend was opened and is valid for that call only:
//!   nothing is allocated per poll. [`PollReport::events`] counts events plus wake-ups,
//!   [`PollReport::datagrams`] datagrams only; [`PollReport::waited`] is the time spent inside
//!   the wait syscall.
//! * A datagram longer than [`Config::max_datagram`] is truncated by the kernel; the backend
//!   detects that, drops it and counts it in [`IoStats::truncated`]. It is never delivered.
//! * [`Backend::send`] copies a datagram into a preallocated slab of [`Config::send_queue`] slots
//!   ([`SendError::QueueFull`] beyond it, counted); [`Backend::flush`] hands the whole slab to the
//!   kernel in batches (`sendmmsg` per socket on Linux) and empties it. Datagrams the kernel
//!   refuses (`EAGAIN`/`ENOBUFS`) are dropped and counted, never retried: game traffic is
//!   latest-wins.
//!
//! ## Streams
//!
//! TCP is served by the same backends with the same semantics (`tests/streams.rs` checks them
//! for every model):
//!
//! * [`Backend::listen`] opens a non-blocking listener (`SO_REUSEADDR`, backlog 1024) under a new
//!   [`SocketId`] from the UDP sockets' id space. Each connection it accepts is non-blocking, has
//!   `TCP_NODELAY`, and arrives as [`Event::Accepted`] with its [`ConnId`] (counted in
//!   [`IoStats::accepted`]). [`Backend::connect`] opens the same kind of connection from this
//!   side, with no event. Beyond [`Config::max_connections`] open connections an accepted one
//!   is closed at once (no event, [`IoStats::accepts_over_limit`]) and `connect` fails.
//! * Bytes arrive as [`Event::Stream`]: in order, at arbitrary boundaries (framing is the
//!   caller's), at most [`Config::stream_read_bytes`] per event, lent from one backend-owned
//!   buffer. Every event counts against the `max_events` budget; what a poll's budget leaves is
//!   delivered first by the next poll, which then does not wait.
//! * A connection that ends on its own gets exactly one [`Event::Closed`]:
//!   [`CloseReason::Eof`] when the peer closed its side (the backend then closes the
//!   connection), [`CloseReason::Error`] on a reset or another read or write error (a write
//!   error met by [`Backend::flush`] is reported by the next poll). From then on the handle is
//!   stale: [`Backend::send_stream`] answers [`SendError::Closed`], [`Backend::send_capacity`]
//!   `None`, no event names it, and it never reaches the connection that reuses its slot.
//! * [`Backend::send_stream`] appends to the connection's send buffer, bounded by
//!   [`Config::stream_send_bytes`] and all or nothing ([`SendError::Full`], counted in
//!   [`IoStats::stream_send_full`]): memory does not grow with a slow reader, and the caller
//!   decides what to do about one from [`Backend::send_capacity`]. Nothing is written before
//!   [`Backend::flush`], which hands every connection's new bytes to the kernel without
//!   blocking ([`FlushReport::stream_bytes`]); what the kernel does not take is written during
//!   later polls as the socket drains, with no event. [`Backend::stream_queued`] is everything
//!   still queued (the kernel's own socket buffers are not in it).
//! * [`Backend::close`] tries one non-blocking write of what is queued, then closes the socket;
//!   the handle is stale at once and no [`Event::Closed`] follows.
//! * Running out of descriptors never makes a busy loop: a listener whose accept fails with
//!   `EMFILE`/`ENFILE` sheds the pending connections through a reserve descriptor (accepted
//!   and closed at once, [`IoStats::accepts_shed`]), or stops accepting until the next poll.
//! * Writes never raise `SIGPIPE`; dropping the backend closes every socket and connection.
//!
//! # io_uring
//!
//! The io_uring backend keeps the same contract with completions instead of readiness: one
//! multishot `recvmsg` per socket on a provided buffer ring (each datagram is one CQE; the
//! buffer lent to the callback is the ring buffer the kernel filled, given back right after the
//! call), one `sendmsg` SQE per queued datagram, and an eventfd poll as the waker. What differs:
//!
//! * [`Backend::flush`] only queues the `sendmsg` SQEs; the next [`Backend::poll`] submits them
//!   in the same `io_uring_enter` that waits for the deadline (one syscall per poll, none per
//!   datagram). Dropping the backend submits them too. So a caller that flushes and never polls
//!   again must poll once (`poll(Instant::now(), ..)` does not block). [`FlushReport::sent`]
//!   counts datagrams handed to the ring; the kernel's refusals (`MSG_DONTWAIT`: a full socket
//!   buffer fails the datagram, it is not retried) land in [`IoStats::send_errors`] when their
//!   completions are reaped, so [`FlushReport::failed`] counts only datagrams the submission
//!   queue could not take at all (the kernel refusing new requests).
//! * Back-pressure is never an error: a full submission queue is handed to the kernel (and what
//!   still does not fit waits for a later poll or flush), and completions that did not fit the
//!   completion queue (kept by the kernel, `IORING_FEAT_NODROP`) are taken by the same poll;
//!   the multishot requests they ended are re-armed. The completion queue is sized from
//!   [`Config::max_connections`] among others.
//! * A send slot is reused only once its completion came back; [`Backend::send`] on a full slab
//!   submits and reaps first, so "flush, then send" finds room as with the other backends.
//! * Budget: a poll delivers at most [`Config::max_events`] datagrams; completions beyond it
//!   keep their buffers and are delivered first by the next poll, without waiting. When the
//!   buffer ring runs dry the kernel ends a socket's multishot receive (`ENOBUFS`); it is
//!   re-armed as soon as buffers are back, and the datagrams wait in the socket buffer
//!   meanwhile, as they would under epoll.
//! * [`open`] probes first ([`probe_io_uring`]: a tiny ring must receive its own loopback
//!   datagram), and [`Model::Auto`] falls back to epoll when the probe fails. `EPERM` (container
//!   seccomp profiles, `kernel.io_uring_disabled`) and `ENOSYS` come back as one-line errors that
//!   name the cause and the fix. Extra knobs (SQPOLL, thread affinity) are in
//!   [`IoUringOptions`] for [`open_io_uring`].
//! * With `IORING_SETUP_SINGLE_ISSUER` (the default when the kernel has it) the backend belongs
//!   to the thread that first polls or flushes it; moving it to another thread after that makes
//!   its calls fail (`EEXIST`). Set [`IoUringOptions::single_issuer`] to false to move it freely.
//!
//! Streams, on the same ring:
//!
//! * One multishot accept per listener and one multishot `recv` per connection, on a second
//!   provided buffer ring (made by the first [`Backend::listen`] or [`Backend::connect`]) of a
//!   buffer of [`Config::stream_read_bytes`] per connection ([`Config::max_connections`], at
//!   most 32768 buffers and, while more than 16, at most 32 MiB reserved; only the pages the
//!   kernel writes become resident). The bytes of an [`Event::Stream`] are the ring buffer the
//!   kernel filled, lent for the call and given back right after it. A ring run dry ends a
//!   connection's receive until buffers are back: the connections waiting are re-armed in
//!   order, as many per poll pass as there are free buffers, so each gets its turn.
//! * Sends: at most one `send` per connection on the ring, reading from a buffer that
//!   [`Backend::send_stream`] never appends to (it appends to a second one; the two swap when
//!   the first is empty, without copying), so the bytes under a request never move. Both count
//!   towards [`Config::stream_send_bytes`], each allocates as it fills. [`Backend::flush`]
//!   releases what is queued ([`FlushReport::stream_bytes`]) and queues the requests; the next
//!   poll submits them. A short write queues the rest; what the socket does not take yet is
//!   sent as it drains, during later polls.
//! * [`Backend::close`] makes the handle stale at once and shuts the socket down (the peer sees
//!   the close), cancels its requests and closes the descriptor once their last completions
//!   are back (in a later poll, or at drop): a descriptor number is never reused under a
//!   request. Completions carry the connection's generation, so one arriving after its
//!   connection closed is dropped (its buffer returned), also when the slot was reused.
//! * Descriptor exhaustion at accept: the reserve descriptor sheds the waiting connections
//!   ([`IoStats::accepts_shed`]), and that listener's accept is re-armed only by the next poll.
//!   [`Config::max_connections`] is capped at 2^24 (the slot index has 24 bits of `user_data`).
//!
//! # Level-triggered datagrams, edge-triggered streams
//!
//! The epoll backend registers UDP sockets level-triggered and takes at most `max_events`
//! events per poll. A burst larger than that budget simply stays readable: the next wait
//! reports the socket again and the next poll takes the rest, and the tick loop gets control
//! back between the two. Edge-triggered epoll only reports a socket again after new data
//! arrives, so a drain that stops early strands what is left until the next packet happens to
//! arrive, and a drain that does not stop lets one flooded socket starve the tick.
//!
//! Listeners and connections are registered edge-triggered (`EPOLLET`): a connection's
//! readiness toggles with every chunk, and `EPOLLOUT` is only wanted while bytes wait, which
//! level triggering would turn into a wake-up per poll for every idle writable connection. The
//! stranding problem is solved inside the backend instead: whatever became ready goes on a
//! ready list, served round robin (one read, one accept or one `recvmmsg` batch per turn) until
//! the budget is spent; an entry leaves the list only when it answers `EAGAIN`, and a poll that
//! starts with a non-empty list does not wait. `select` is level-triggered by nature; the
//! blocking backend keeps a bounded queue.
//!
//! # kqueue
//!
//! The kqueue backend (macOS, FreeBSD) is the epoll backend's design with kqueue's filters:
//! UDP sockets on a level-triggered `EVFILT_READ`, listeners and connections on `EVFILT_READ`
//! with `EV_CLEAR`, the same ready list and budget. What differs:
//!
//! * A connection's `EVFILT_WRITE` is registered only while bytes wait that the kernel did not
//!   take, as a one-shot armed by the flush (or the write) that left them: BSD kernels report
//!   a registered write filter on every ACK that frees buffer space, which for busy
//!   connections would be a wake-up per ACK.
//! * Registrations of new connections and write arming go to the kernel in the `kevent` call
//!   that waits (no syscall of their own); a refused one closes its connection
//!   ([`CloseReason::Error`], reported by that poll). UDP sockets and listeners are registered
//!   at once, so [`Backend::bind`] and [`Backend::listen`] report the error.
//! * No `recvmmsg`/`sendmmsg` on macOS: one `recvmsg` per datagram into one backend-owned
//!   buffer of [`Config::max_datagram`] bytes (each datagram is lent to the callback before the
//!   next is received), one `sendto` per queued datagram at [`Backend::flush`], in queueing
//!   order; a refused one is dropped and counted like any other.
//! * The waker is an `EVFILT_USER` event triggered with `NOTE_TRIGGER`; the wait takes a
//!   `timespec`, so deadlines are kept below the millisecond as with `epoll_pwait2`.
//!
//! This machine's CI cannot run it: `scripts/portability.sh` type-checks the crate, tests
//! included, for `x86_64-apple-darwin`, `aarch64-apple-darwin` and `x86_64-unknown-freebsd`
//! (docs/operations.md says what that does and does not prove).
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tickwire_io::{on_datagrams, open, Config, Model};
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
//!     io.poll(deadline, &mut on_datagrams(|id, _peer, bytes| got.push((id, bytes.to_vec())))).unwrap();
//! }
//! assert_eq!(got, vec![(b, b"ping".to_vec())]);
//! ```
//!
//! # select and blocking
//!
//! The portable models keep the same contract, streams included, with these differences (the
//! modules' own docs have the details):
//!
//! * `select` can only watch descriptors below `FD_SETSIZE` (1024 on Linux).
//!   [`Backend::bind`], [`Backend::listen`] and [`Backend::connect`] fail with `InvalidInput`
//!   for a higher one, and a connection accepted with one is closed at once and counted in
//!   [`IoStats::accepts_refused`] (this crate has no logger: the server logs the counters).
//!   Connections holding bytes the kernel did not take at the flush are in the write set and
//!   written during polls. Ready sockets, listeners and connections share the budget in one
//!   rotating order; after a poll whose budget ran out, the next starts right after the
//!   descriptor it was cut on.
//! * `blocking` spends threads instead of a wait: one per UDP socket, one per listener (it
//!   accepts on a non-blocking listener and parks up to 10 ms when there is nothing to accept,
//!   so a connection may wait that long), and a reader and a writer per connection. Threads
//!   are its cost, so it serves at most 512 connections: its limit is
//!   `min(`[`Config::max_connections`]`, 512)`. Its connections' sockets are blocking (the
//!   threads do the waiting). [`Backend::flush`] hands new bytes to the writers rather than to
//!   the kernel ([`FlushReport::stream_bytes`] counts those); what the writers wrote leaves
//!   [`Backend::stream_queued`] and frees [`Backend::send_capacity`] at the next poll or flush.
//!   Reads wait in one bounded queue; while it is full the readers stop reading and TCP flow
//!   control slows the peers. [`Backend::close`]'s one write attempt is made by the writer,
//!   within 50 ms (10 s on Windows), and the socket is closed once both threads have ended;
//!   dropping the backend joins every thread.
//!
//! # IOCP
//!
//! The Windows backend keeps the contract on a completion port (the module's docs have the
//! details):
//!
//! * Every operation owns its memory in one allocation made when the socket is bound or the
//!   backend opened: an `OVERLAPPED`, its buffer and its peer address. The kernel owns it from
//!   the call until its completion is dequeued; nothing touches, reuses or frees it meanwhile,
//!   and dropping the backend cancels every operation (`CancelIoEx`) and waits for their
//!   completions (at most a second; what never comes back is leaked, not freed).
//! * Each UDP socket keeps four overlapped `WSARecvFrom`s pending into its own buffers; the
//!   buffer lent to the callback is the one the kernel filled, re-armed right after the call.
//!   More datagrams wait in the socket buffer. A datagram longer than the buffer completes
//!   with `WSAEMSGSIZE` and is counted in [`IoStats::truncated`]. `SIO_UDP_CONNRESET` is off.
//! * [`Backend::send`] copies into one of `send_queue` send operations; [`Backend::flush`]
//!   starts an overlapped `WSASendTo` for each ([`FlushReport::sent`] counts those Winsock
//!   accepted; one that fails later lands in [`IoStats::send_errors`] when its completion is
//!   dequeued). A send operation is free again once its completion is dequeued; `send` on a
//!   full set dequeues without waiting first, so "flush, then send" finds room as elsewhere.
//! * Budget: completions are dequeued in batches (`GetQueuedCompletionStatusEx`); those that
//!   would deliver beyond [`Config::max_events`] are kept, in order, for the next poll, which
//!   delivers them first without waiting.
//! * The wait's timeout is whole milliseconds, rounded up, and a wait that ends early waits
//!   again: a poll never returns before its deadline, and is late by up to the system timer's
//!   resolution, which the backend sets to 1 ms (`timeBeginPeriod(1)`) while it is open.
//! * The waker posts one completion packet (never more than one queued).
//! * Streams: each listener keeps eight `AcceptEx` calls pending (fresh sockets, the
//!   `AcceptEx` pointer from the listener's provider); each connection one overlapped
//!   zero-byte `WSARecv` (it completes when bytes are there, without holding a buffer: an idle
//!   connection pins no read buffer), then one non-blocking read into the shared stream buffer
//!   per [`Event::Stream`]. Sends are one overlapped `WSASend` at a time per connection, from a
//!   buffer [`Backend::send_stream`] never appends to (it appends to a second; they swap when
//!   the first is empty), both within [`Config::stream_send_bytes`], as for io_uring.
//!   [`Backend::close`] (like an `Eof`/`Error` end) cancels what is pending, shuts the sending
//!   side down and keeps socket, operations and in-flight bytes until their completions are
//!   back. Listeners get a backlog of 1024 and no `SO_REUSEADDR` (on Windows it would let
//!   another socket take the port).
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
mod conns;
#[cfg(target_os = "linux")]
mod epoll;
#[cfg(windows)]
mod iocp;
#[cfg(all(
    any(target_os = "macos", target_os = "freebsd"),
    target_pointer_width = "64"
))]
mod kqueue;
#[cfg(unix)]
mod select;
mod slab;
#[cfg(target_os = "linux")]
#[path = "io_uring.rs"]
mod uring;
#[cfg(windows)]
mod win;

/// Identifies one socket of a backend: its index in the backend's socket set, in bind order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// An I/O model: which OS mechanism a backend uses to wait for and move datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// The best model this platform build offers (Linux: io_uring when its probe passes, else
    /// epoll; macOS and FreeBSD: kqueue, else select; other unix: select; Windows: iocp, else
    /// blocking; else blocking).
    Auto,
    /// Linux epoll: UDP sockets level-triggered with `recvmmsg`/`sendmmsg`, listeners and
    /// stream connections edge-triggered.
    Epoll,
    /// Linux io_uring (6.0+): multishot `recvmsg` on a provided buffer ring, `sendmsg` SQEs
    /// submitted with the poll's wait.
    IoUring,
    /// macOS/FreeBSD kqueue (64-bit targets): UDP sockets level-triggered, listeners and
    /// stream connections `EV_CLEAR`, an `EVFILT_USER` waker. [`OpenError::Unsupported`]
    /// elsewhere.
    Kqueue,
    /// Windows I/O completion ports: overlapped `WSARecvFrom` (several pending per socket)
    /// and `WSASendTo`, completions dequeued in batches.
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
    /// kernel may cap it). Stream sockets keep the kernel's defaults.
    pub socket_buffer_bytes: usize,
    /// Bound of each stream connection's send buffer in bytes (default 64 KiB): bytes queued by
    /// [`Backend::send_stream`] and not yet taken by the kernel. A send that does not fit is
    /// refused whole ([`SendError::Full`]); memory never grows with a slow reader. The buffer is
    /// allocated as it fills, not up front. Must be at least 1.
    pub stream_send_bytes: usize,
    /// Most bytes one [`Event::Stream`] lends (the size of the backend's stream read buffer,
    /// default 16 KiB). Must be at least 1.
    pub stream_read_bytes: usize,
    /// `SO_SNDBUF` requested for every stream socket (default 64 KiB; the kernel doubles it
    /// for its bookkeeping; 0 leaves the kernel's default and its autotuning, which on Linux
    /// lets one connection hold up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default). This
    /// bounds the kernel memory a slow reader can pin, and with [`Config::stream_send_bytes`]
    /// how far behind a client may fall before its sends are refused.
    pub stream_socket_send_bytes: usize,
    /// Most stream connections open at once, accepted and connected together (default 10,000).
    /// A connection accepted beyond it is closed at once and counted in
    /// [`IoStats::accepts_over_limit`]; [`Backend::connect`] beyond it fails.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_events: 1024,
            max_datagram: 1500,
            send_queue: 4096,
            socket_buffer_bytes: 4 * 1024 * 1024,
            stream_send_bytes: 64 * 1024,
            stream_read_bytes: 16 * 1024,
            stream_socket_send_bytes: 64 * 1024,
            max_connections: 10_000,
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
        } else if self.stream_send_bytes == 0 {
            "stream_send_bytes"
        } else if self.stream_read_bytes == 0 {
            "stream_read_bytes"
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
    /// Events of every kind handed to the callback plus wake-ups consumed (feeds
    /// `io_events_processed`).
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
    /// Stream bytes handed to the kernel (completion backends: handed to the ring).
    pub stream_bytes: usize,
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
    /// The stream connection's send buffer lacks room for the whole send (counted in
    /// [`IoStats::stream_send_full`]). Nothing was queued; see [`Backend::send_capacity`].
    Full,
    /// The [`ConnId`] names no open connection: it was closed (by either side) or was never
    /// returned by this backend. A stale handle never reaches the connection that reused its
    /// slot.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::QueueFull => "send queue full until the next flush",
            SendError::TooLarge => "datagram longer than max_datagram",
            SendError::UnknownSocket => "unknown socket id",
            SendError::Full => "stream send buffer full",
            SendError::Closed => "connection closed",
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
    /// Stream connections accepted on listeners (and handed up as [`Event::Accepted`]).
    pub accepted: u64,
    /// Connections accepted beyond [`Config::max_connections`] and closed at once.
    pub accepts_over_limit: u64,
    /// Connections shed because the process or system ran out of descriptors
    /// (`EMFILE`/`ENFILE`): accepted with a reserve descriptor and closed at once, or left in
    /// the backlog while accepting paused. Never a busy loop.
    pub accepts_shed: u64,
    /// Connections refused because their descriptor cannot be waited on (select:
    /// `fd >= FD_SETSIZE`), closed at once.
    pub accepts_refused: u64,
    /// Other accept errors.
    pub accept_errors: u64,
    /// Calls to [`Backend::send_stream`] refused with [`SendError::Full`].
    pub stream_send_full: u64,
}

/// A stream connection of a backend: its slot index and the slot's generation, bumped every
/// time the slot is reused, so a handle kept past its connection's close is refused
/// ([`SendError::Closed`]) and never reaches the connection that took the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The slot in the backend's connection table.
    pub index: u32,
    /// The slot's generation when this connection took it.
    pub generation: u32,
}

impl ConnId {
    /// The handle as one `u64` (generation in the high half), for layers that key on an
    /// opaque integer.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The inverse of [`ConnId::to_u64`].
    pub fn from_u64(v: u64) -> ConnId {
        ConnId {
            index: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {}.{}", self.index, self.generation)
    }
}

/// Why a stream connection ended on its own (a connection closed with [`Backend::close`]
/// produces no event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side (read returned 0).
    Eof,
    /// The connection failed (reset by the peer, or another error on read or write).
    Error(io::ErrorKind),
}

/// What [`Backend::poll`] hands to its callback. Borrowed bytes point into a backend-owned
/// buffer and are valid for that call only.
#[derive(Debug)]
pub enum Event<'a> {
    /// A datagram arrived on a UDP socket.
    Datagram {
        /// The socket it arrived on.
        socket: SocketId,
        /// Who sent it.
        from: SocketAddr,
        /// Its bytes.
        data: &'a [u8],
    },
    /// A listener accepted a connection; it is registered and ready to read and write.
    Accepted {
        /// The listener that accepted it.
        listener: SocketId,
        /// The new connection.
        conn: ConnId,
        /// The remote address.
        from: SocketAddr,
    },
    /// Bytes arrived on a stream connection: in order, at arbitrary boundaries (framing is the
    /// caller's). At most [`Config::stream_read_bytes`] per event.
    Stream {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: &'a [u8],
    },
    /// A connection ended on its own: the peer closed it or it failed. Its handle is stale
    /// from now on; no further event names it.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
}

/// One I/O backend: a set of UDP sockets, TCP listeners and stream connections, the wait, the
/// receive buffers, the send slab, the per-connection send buffers and a waker. See the crate
/// docs for the contract.
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

    /// Waits until something is ready, the waker fires or `deadline` passes, then calls
    /// `on_event` for up to [`Config::max_events`] events without blocking again. What the
    /// budget leaves is delivered first by the next poll.
    fn poll(
        &mut self,
        deadline: Instant,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<PollReport>;

    /// Opens a non-blocking TCP listener on `addr` (`SO_REUSEADDR`, backlog 1024) and adds it
    /// to the set under a new [`SocketId`]; its connections arrive as [`Event::Accepted`].
    /// [`Backend::local_addr`] answers for it too.
    fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketId>;

    /// Connects to `addr` (blocking for at most `timeout`: meant for clients, load tools and
    /// tests, not for the server's loop), then registers the connection like an accepted one.
    /// No [`Event::Accepted`] is delivered for it.
    fn connect(&mut self, addr: SocketAddr, timeout: Duration) -> io::Result<ConnId>;

    /// Appends `data` to the connection's bounded send buffer, to be written by the next
    /// [`Backend::flush`] (and, for what the kernel did not take, as soon as the socket is
    /// writable again). All or nothing: [`SendError::Full`] when it does not fit,
    /// [`SendError::Closed`] for a stale handle.
    fn send_stream(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError>;

    /// Free room in the connection's send buffer, or `None` for a stale handle.
    fn send_capacity(&self, conn: ConnId) -> Option<usize>;

    /// Bytes queued in every connection's send buffer together (not yet taken by the kernel).
    fn stream_queued(&self) -> usize;

    /// Stream connections open now.
    fn connections(&self) -> usize;

    /// Closes a connection: what is queued is written if the kernel takes it at once (best
    /// effort, never waited for), then the socket is closed. The handle is stale at once and
    /// no [`Event::Closed`] follows. Closing a stale handle does nothing.
    fn close(&mut self, conn: ConnId);

    /// A handle that makes a current or the next [`Backend::poll`] return early.
    fn waker(&self) -> Waker;

    /// The counters so far.
    fn stats(&self) -> IoStats;
}

/// Adapts a datagram-only callback to [`Backend::poll`]: other events are ignored.
///
/// ```
/// # use std::time::Instant;
/// # use tickwire_io::{on_datagrams, open, Config, Model};
/// let mut io = open(Model::Auto, &Config::default()).unwrap();
/// io.poll(Instant::now(), &mut on_datagrams(|socket, from, data| {
///     println!("{:?} from {}: {} bytes", socket, from, data.len());
/// }))
/// .unwrap();
/// ```
pub fn on_datagrams<F: FnMut(SocketId, SocketAddr, &[u8])>(mut f: F) -> impl FnMut(Event<'_>) {
    move |event| {
        if let Event::Datagram { socket, from, data } = event {
            f(socket, from, data)
        }
    }
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

/// Options of the io_uring backend that [`Config`] does not carry (see
/// [`open_io_uring`]). `Default` is what [`open`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoUringOptions {
    /// Ask for `IORING_SETUP_SQPOLL`: a kernel thread polls the submission queue, so flushes
    /// need no syscall while it is awake. It burns a CPU while busy; off by default.
    pub sqpoll: bool,
    /// How long the SQ thread spins idle before it sleeps (with `sqpoll`).
    pub sqpoll_idle: Duration,
    /// Allow `IORING_SETUP_SINGLE_ISSUER` (and with it `DEFER_TASKRUN`): faster, but ties the
    /// backend to the thread that first polls or flushes it. Default true.
    pub single_issuer: bool,
}

impl Default for IoUringOptions {
    fn default() -> Self {
        IoUringOptions {
            sqpoll: false,
            sqpoll_idle: Duration::from_millis(1000),
            single_issuer: true,
        }
    }
}

/// The setup flags an io_uring ring actually got (returned by [`probe_io_uring`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoUringFlags {
    /// `IORING_SETUP_COOP_TASKRUN` (5.19).
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_SQPOLL` (opt-in).
    pub sqpoll: bool,
}

impl fmt::Display for IoUringFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SUBMIT_ALL")?;
        for (on, name) in [
            (self.coop_taskrun, "COOP_TASKRUN"),
            (self.single_issuer, "SINGLE_ISSUER"),
            (self.defer_taskrun, "DEFER_TASKRUN"),
            (self.sqpoll, "SQPOLL"),
        ] {
            if on {
                write!(f, "|{}", name)?;
            }
        }
        Ok(())
    }
}

/// The environment variable of the forced-failure test hook (see the crate docs).
pub const FORCE_FAIL_ENV: &str = "TICKWIRE_IO_FORCE_FAIL";

/// Whether this build has the kqueue backend (the `cfg` of the `kqueue` module): macOS and
/// FreeBSD, where it is type-checked. Its connection tokens need 64-bit `udata`. The other
/// BSDs differ (NetBSD's `kevent` fields, OpenBSD's late `EVFILT_USER`) and keep select.
const KQUEUE_BUILT: bool = cfg!(all(
    any(target_os = "macos", target_os = "freebsd"),
    target_pointer_width = "64"
));

/// The models [`Model::Auto`] tries, best first; the first that opens wins.
fn auto_candidates() -> &'static [Model] {
    if cfg!(target_os = "linux") {
        &[Model::IoUring, Model::Epoll]
    } else if KQUEUE_BUILT {
        &[Model::Kqueue, Model::Select]
    } else if cfg!(unix) {
        &[Model::Select]
    } else if cfg!(windows) {
        &[Model::Iocp, Model::Blocking]
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
        #[cfg(all(
            any(target_os = "macos", target_os = "freebsd"),
            target_pointer_width = "64"
        ))]
        Model::Kqueue => kqueue::Kqueue::open(cfg)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err),
        #[cfg(unix)]
        Model::Select => select::Select::open(cfg)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err),
        Model::Blocking => blocking::Blocking::open(cfg)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err),
        #[cfg(windows)]
        Model::Iocp => iocp::Iocp::open(cfg)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err),
        Model::IoUring => open_io_uring(cfg, &IoUringOptions::default()),
        _ => Err(OpenError::Unsupported {
            model,
            reason: unsupported_reason(model),
        }),
    }
}

// The models this platform build has, best first (what `available_models` can list), as a
// literal for the reasons below. One arm per platform family; they exclude each other.
#[cfg(target_os = "linux")]
macro_rules! platform_models {
    () => {
        "io_uring (when the kernel allows it), epoll, select, blocking"
    };
}
#[cfg(all(
    any(target_os = "macos", target_os = "freebsd"),
    target_pointer_width = "64"
))]
macro_rules! platform_models {
    () => {
        "kqueue, select, blocking"
    };
}
#[cfg(all(
    unix,
    not(target_os = "linux"),
    not(all(
        any(target_os = "macos", target_os = "freebsd"),
        target_pointer_width = "64"
    ))
))]
macro_rules! platform_models {
    () => {
        "select, blocking"
    };
}
#[cfg(windows)]
macro_rules! platform_models {
    () => {
        "iocp, blocking"
    };
}
#[cfg(not(any(unix, windows)))]
macro_rules! platform_models {
    () => {
        "blocking"
    };
}

/// Why `model` cannot be opened on this platform build, naming the models it has (one line,
/// for logs and error messages).
fn unsupported_reason(model: Model) -> &'static str {
    match model {
        Model::IoUring => concat!(
            "io_uring exists only on Linux; this platform has ",
            platform_models!()
        ),
        Model::Kqueue if cfg!(any(target_os = "macos", target_os = "freebsd")) => concat!(
            "the kqueue backend is built for 64-bit targets only; this platform has ",
            platform_models!()
        ),
        Model::Kqueue => concat!(
            "the kqueue backend is built for macOS and FreeBSD only; this platform has ",
            platform_models!()
        ),
        Model::Iocp => concat!(
            "iocp exists only on Windows; this platform has ",
            platform_models!()
        ),
        Model::Epoll => concat!(
            "epoll exists only on Linux; this platform has ",
            platform_models!()
        ),
        Model::Select => concat!(
            "select is only built for unix; this platform has ",
            platform_models!()
        ),
        Model::Auto | Model::Blocking => "not available in this build",
    }
}

/// Opens the io_uring backend with extra options. Like [`open`]`(Model::IoUring, cfg)` (which
/// uses `IoUringOptions::default()`): the `TICKWIRE_IO_FORCE_FAIL` hook, then
/// [`probe_io_uring`]'s check with these options, then the real ring.
pub fn open_io_uring(cfg: &Config, opts: &IoUringOptions) -> Result<Box<dyn Backend>, OpenError> {
    let model = Model::IoUring;
    forced_failure(model)?;
    cfg.validate()
        .map_err(|error| OpenError::Io { model, error })?;
    #[cfg(target_os = "linux")]
    {
        let io_err = |error| OpenError::Io { model, error };
        if *opts == IoUringOptions::default() {
            cached_probe().map_err(io_err)?;
        } else {
            uring::probe(opts).map_err(io_err)?;
        }
        uring::IoUringBackend::open(cfg, opts)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(io_err)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = opts;
        Err(OpenError::Unsupported {
            model,
            reason: unsupported_reason(model),
        })
    }
}

/// Checks that io_uring really works here: sets up a small ring with the default
/// [`IoUringOptions`], sends one datagram through it to its own loopback socket and waits (at
/// most 200 ms) for the multishot receive to deliver it. Returns the setup flags the ring got,
/// or why io_uring is unusable (the reason [`Model::Auto`] fell back to epoll, for the log).
/// Honours `TICKWIRE_IO_FORCE_FAIL` like [`open`]. The probe itself runs once per process;
/// later calls answer from its result.
pub fn probe_io_uring() -> Result<IoUringFlags, OpenError> {
    let model = Model::IoUring;
    forced_failure(model)?;
    #[cfg(target_os = "linux")]
    {
        cached_probe().map_err(|error| OpenError::Io { model, error })
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(OpenError::Unsupported {
            model,
            reason: unsupported_reason(model),
        })
    }
}

/// The probe with default options runs once per process: every ring set up and torn down costs
/// the calling thread an interruption (the kernel's ring-exit task work), and the answer does
/// not change.
#[cfg(target_os = "linux")]
fn cached_probe() -> io::Result<IoUringFlags> {
    static PROBE: std::sync::Mutex<Option<Result<IoUringFlags, (io::ErrorKind, String)>>> =
        std::sync::Mutex::new(None);
    let mut slot = PROBE.lock().unwrap_or_else(|e| e.into_inner());
    let result = slot.get_or_insert_with(|| {
        uring::probe(&IoUringOptions::default()).map_err(|e| (e.kind(), e.to_string()))
    });
    match result {
        Ok(flags) => Ok(*flags),
        Err((kind, text)) => Err(io::Error::new(*kind, text.clone())),
    }
}

/// The concrete models [`open`] can open on this platform build, best first (Linux: io_uring
/// when [`probe_io_uring`] passes, epoll, select, blocking; macOS and FreeBSD: kqueue, select,
/// blocking; Windows: iocp, blocking). [`Model::Auto`] is always accepted by [`open`] and is not
/// listed.
pub fn available_models() -> Vec<Model> {
    let mut models = Vec::with_capacity(4);
    if cfg!(target_os = "linux") && probe_io_uring().is_ok() {
        models.push(Model::IoUring);
    }
    if cfg!(target_os = "linux") {
        models.push(Model::Epoll);
    }
    if KQUEUE_BUILT {
        models.push(Model::Kqueue);
    }
    if cfg!(unix) {
        models.push(Model::Select);
    }
    if cfg!(windows) {
        models.push(Model::Iocp);
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
        let forced = format!("forced failure ({} contains {})", FORCE_FAIL_ENV, model);
        // io_uring fails the way a container's seccomp profile makes it fail (EPERM), so the
        // hook exercises the same explanation a user would read.
        #[cfg(target_os = "linux")]
        let error = if model == Model::IoUring {
            let eperm = uring::setup_error(io::Error::from_raw_os_error(libc::EPERM));
            io::Error::new(eperm.kind(), format!("{}; {}", eperm, forced))
        } else {
            io::Error::new(io::ErrorKind::PermissionDenied, forced)
        };
        #[cfg(not(target_os = "linux"))]
        let error = io::Error::new(io::ErrorKind::PermissionDenied, forced);
        return Err(OpenError::Io { model, error });
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

/// Raises this process's open-file limit (`RLIMIT_NOFILE`) from its soft to its hard limit:
/// every stream connection is a descriptor. Returns the soft limit before and after. Unix
/// only; elsewhere it answers [`io::ErrorKind::Unsupported`].
// rlim_t is u64 on Linux and macOS but i64 on FreeBSD: the casts are not all no-ops.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
        let before = lim.rlim_cur as u64;
        if lim.rlim_cur >= lim.rlim_max {
            return Ok((before, before));
        }
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit that outlives the call.
        match syscall!(setrlimit(libc::RLIMIT_NOFILE, &want)) {
            Ok(_) => Ok((before, lim.rlim_max as u64)),
            // macOS refuses a soft limit above OPEN_MAX even when the hard limit is higher.
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "setrlimit(RLIMIT_NOFILE, {}) failed: {} (limit stays {})",
                    lim.rlim_max, e, before
                ),
            )),
        }
    }
    #[cfg(not(unix))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the open-file limit is a unix notion",
        ))
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
        let mut unsupported = Vec::new();
        if !KQUEUE_BUILT {
            unsupported.push(Model::Kqueue);
        }
        if !cfg!(target_os = "linux") {
            unsupported.push(Model::IoUring);
            unsupported.push(Model::Epoll);
        }
        if !cfg!(windows) {
            unsupported.push(Model::Iocp);
        }
        let available = available_models();
        for m in unsupported {
            match open(m, &Config::default()) {
                Err(OpenError::Unsupported { model, reason }) => {
                    assert_eq!(model, m);
                    assert!(!reason.is_empty());
                    // The reason names the models this platform has.
                    for a in &available {
                        assert!(reason.contains(a.as_str()), "{}: {}", m, reason);
                    }
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
    fn auto_opens_the_first_candidate_that_works() {
        let io = open(Model::Auto, &Config::default()).unwrap();
        let expected = if cfg!(target_os = "linux") {
            match probe_io_uring() {
                Ok(flags) => {
                    eprintln!("io_uring ring flags: {}", flags);
                    Model::IoUring
                }
                Err(e) => {
                    eprintln!("io_uring probe failed: {}", e);
                    Model::Epoll
                }
            }
        } else {
            auto_candidates()[0]
        };
        assert_eq!(io.model(), expected);
    }
}
