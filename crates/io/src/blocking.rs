//! The portable blocking backend: std sockets only, no `unsafe`, every platform.
//!
//! # Datagrams
//!
//! Each bound socket gets one helper thread doing blocking `recv_from` with a 50 ms read
//! timeout (so it notices shutdown), copying each datagram into one bounded receive queue
//! shared by all sockets (a preallocated ring under a `Mutex`, with a `Condvar`). When the ring
//! is full the datagram is dropped and counted in [`IoStats::recv_errors`]. `poll` waits on the
//! condvar until the deadline, data or the waker, then moves up to `max_events` events out of
//! the queues (a small preallocated batch at a time, so the helpers are never blocked while the
//! caller's callback runs) and lends them to the callback.
//!
//! std's `recv_from` does not report truncation, so the helpers read into `max_datagram + 1`
//! bytes: a datagram that fills them was longer than `max_datagram` and is dropped and counted.
//! Flush calls `send_to` from the caller's thread; the sockets carry a short write timeout so a
//! full kernel buffer fails the datagram instead of stalling the tick.
//!
//! # Streams
//!
//! Threads are this model's cost, so it serves at most [`MAX_CONNECTIONS`] (512) connections:
//! the limit is `min(Config::max_connections, 512)`, for accepting and for
//! [`Backend::connect`] alike. Each listener has an accept thread; each connection a reader
//! thread and a writer thread sharing its one socket (no descriptor is duplicated):
//!
//! * The **accept thread** accepts on the listener set non-blocking, and parks for at most
//!   10 ms when there is nothing to accept, so dropping the backend (which unparks it) stops it
//!   at once. Unblocking a blocking accept by connecting to the listener instead can stall or
//!   fail (a full backlog, local firewall rules), which would leave the thread and its listener
//!   behind. The cost: an idle listener wakes 100 times a second, and a connection arriving on
//!   an idle listener waits up to 10 ms. Beyond the limit a connection is closed at once
//!   ([`IoStats::accepts_over_limit`]). Admitted connections go into the stream queue, and the
//!   poll that takes one registers it (connection table slot, the two threads spawned) and
//!   delivers [`Event::Accepted`]: thread spawns and their buffers are the per-connection
//!   allocations this model adds, paid in the poll, at most `max_events` per poll. On unix,
//!   `EMFILE` and `ENFILE` are met with the reserve descriptor the select and epoll backends
//!   use (closed to accept and close the pending connection, then reopened;
//!   [`IoStats::accepts_shed`]; the connection is kept when the reserve reopens beside it).
//!   When that finds nothing pending the thread parks 10 ms: Linux answers `EMFILE` before it
//!   looks at the backlog, so an accept loop would spin for as long as descriptors are short.
//! * The **reader thread** does blocking reads of up to `stream_read_bytes` into its own
//!   buffer and copies each read into the shared stream queue, which is bounded in bytes
//!   (`max(4 * stream_read_bytes, 256 KiB)`) and in reads (4096). When it is full the reader
//!   waits, the kernel's receive buffer fills and TCP flow control slows the peer: stream bytes
//!   are never dropped. A read of 0 bytes or an error becomes the connection's one
//!   [`Event::Closed`], queued behind its last bytes.
//! * The **writer thread** writes from the connection's [`SendBuf`] (shared under a mutex,
//!   waited on with a condvar). [`Backend::send_stream`] only appends; [`Backend::flush`]
//!   makes what is queued so far writable and wakes the writer ([`FlushReport::stream_bytes`]
//!   counts the bytes handed to the writers). The writer copies at most 16 KiB of the
//!   writable bytes, releases the lock, writes that chunk in blocking mode and records how far
//!   it got; the caller's thread takes the written bytes out of the buffer at its next `poll`
//!   or `flush`, so [`Backend::send_capacity`] and [`Backend::stream_queued`] only change
//!   inside the caller's own calls, as with the readiness backends. A slow reader only ever
//!   blocks its own writer, never the caller's loop (which only takes the lock for a copy).
//!   Writes could not instead be non-blocking on a second handle: `O_NONBLOCK` belongs to the
//!   open file description that every handle of the socket shares, so the reader's blocking
//!   reads would turn into `EAGAIN` spins. The socket carries a 50 ms write timeout
//!   (`SO_SNDTIMEO` concerns writes only; a timed-out write reports what it wrote) so that a
//!   writer blocked on a slow reader notices a close. Not on Windows: Winsock leaves a socket
//!   whose send timed out in an undefined state, so there the timeout is 10 s and fails the
//!   connection (a peer that takes nothing for 10 s is treated as gone). A write error ends
//!   the writer; it shuts the socket down, and the reader reports `Closed` with the write's
//!   error, behind the bytes it had read.
//!
//! Closing: [`Backend::close`] (and dropping the backend) marks the connection closed, takes
//! it out of the table and of [`Backend::stream_queued`], and wakes both threads; nothing they
//! do afterwards produces an event. The writer, once its current write ends (at most 50 ms
//! later; on Windows, 10 s), switches the socket to non-blocking (the reader is leaving too), makes one write
//! attempt of what is still queued, and shuts the socket down with `Shutdown::Both`, which
//! makes the reader's blocked read return; the descriptor is closed when both threads have
//! ended. Dropping the backend shuts every connection down itself and joins every thread
//! (finished threads of connections closed earlier are reaped by later polls). On platforms
//! other than unix the reader also carries a 250 ms read timeout, in case a shutdown does not
//! wake a blocked read there.
//!
//! Memory per connection: its send buffer (up to `stream_send_bytes`), the reader's buffer
//! (`stream_read_bytes`), the writer's chunk (up to 16 KiB) and two 128 KiB thread stacks
//! (reserved, touched lazily); the stream queue is shared and bounded as above.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::conns::{ConnTable, SendBuf};
use crate::slab::{self, TxSlab};
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, CloseReason, Config, ConnId, Event,
    FlushReport, IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

/// Most connections this model serves at once: each costs two threads. The limit in force is
/// `min(Config::max_connections, MAX_CONNECTIONS)`.
pub(crate) const MAX_CONNECTIONS: usize = 512;

/// How often a helper thread looks at the stop flag while its socket is idle.
const RECV_TIMEOUT: Duration = Duration::from_millis(50);
/// Longest a `send_to` may block on a full kernel buffer before the datagram is dropped.
const SEND_TIMEOUT: Duration = Duration::from_millis(5);
/// Receive ring size: `4 * max_events`, clamped to this range.
const RX_QUEUE_MIN: usize = 1024;
const RX_QUEUE_MAX: usize = 16_384;
/// Datagrams (or stream queue entries) moved out of a queue per lock.
const TAKE_BATCH_MAX: usize = 64;
/// Helper thread stack: the receive buffer lives on the heap.
const HELPER_STACK_BYTES: usize = 256 * 1024;
/// Stack of the accept, reader and writer threads (their buffers live on the heap).
const STREAM_STACK_BYTES: usize = 128 * 1024;
/// Longest an accept thread parks between attempts when there is nothing to accept.
const ACCEPT_PARK: Duration = Duration::from_millis(10);
/// Write timeout of every connection: how often a writer blocked on a slow reader looks at
/// whether the connection was closed.
#[cfg(unix)]
const WRITE_TICK: Duration = Duration::from_millis(50);
/// Winsock leaves a socket whose send timed out in an undefined state (part of the data may
/// have gone, uncounted), so there a write timeout fails the connection: it must be long.
#[cfg(not(unix))]
const WRITE_TICK: Duration = Duration::from_secs(10);
/// Read timeout of every connection where a shutdown may not wake a blocked read.
#[cfg(not(unix))]
const READ_TICK: Duration = Duration::from_millis(250);
/// Most bytes a writer copies out of its send buffer per write.
const WRITE_CHUNK_MAX: usize = 16 * 1024;
/// The stream queue holds at least this many bytes (and at least 4 reads).
const STREAM_QUEUE_MIN_BYTES: usize = 256 * 1024;
/// Most reads waiting in the stream queue.
const STREAM_QUEUE_READS: usize = 4096;

/// The connection limit of this model for `cfg`.
pub(crate) fn connection_limit(cfg: &Config) -> usize {
    cfg.max_connections.min(MAX_CONNECTIONS)
}

pub(crate) struct Blocking {
    shared: Arc<Shared>,
    /// UDP sockets and listeners, indexed by [`SocketId`].
    sockets: Vec<Socket>,
    helpers: Vec<JoinHandle<()>>,
    accepters: Vec<JoinHandle<()>>,
    conns: ConnTable<Conn>,
    /// Threads of closed connections, not joined yet.
    retired: Vec<JoinHandle<()>>,
    max_events: usize,
    max_datagram: usize,
    #[cfg_attr(not(any(unix, windows)), allow(dead_code))]
    socket_buffer_bytes: usize,
    stream_read_bytes: usize,
    stream_send_bytes: usize,
    /// `SO_SNDBUF` for stream sockets (unix and Windows; std has no portable setter).
    #[cfg_attr(not(any(unix, windows)), allow(dead_code))]
    socket_send_bytes: usize,
    /// Datagrams taken out of the ring, lent to the callback.
    batch_bytes: Box<[u8]>,
    batch: Vec<Meta>,
    /// Stream queue entries taken out, and the bytes of their reads.
    taken: Vec<Taken>,
    stage: Box<[u8]>,
    tx: TxSlab,
    /// Bytes appended by `send_stream` since the last flush.
    unflushed: usize,
    /// Bytes in every connection's send buffer together.
    queued: usize,
    /// Counters kept by the caller's thread (the threads' counters live in the ring).
    stats: IoStats,
}

enum Socket {
    Udp(UdpSocket),
    /// A listener (its accept thread owns the socket).
    Listener(SocketAddr),
}

/// A connection as the backend holds it.
struct Conn {
    link: Arc<Link>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

/// What a connection's backend entry, reader and writer share.
struct Link {
    stream: TcpStream,
    out: Mutex<Out>,
    /// The writer waits on it for flushed bytes or the close.
    more: Condvar,
    /// Set when the backend closed the connection (or is dropped): the threads end quietly.
    closed: AtomicBool,
}

/// A connection's send side. `written <= flushed <= buf.len()`.
struct Out {
    buf: SendBuf,
    /// Bytes at the front of `buf` made writable by a flush.
    flushed: usize,
    /// Bytes at the front of `buf` the writer has written; the caller's thread takes them out
    /// of `buf` (and of `stream_queued`) at its next poll or flush.
    written: usize,
    /// The backend closed the connection: the writer makes its last attempt and ends.
    closed: bool,
    /// The write error that ended the writer.
    error: Option<io::ErrorKind>,
}

impl Link {
    fn out(&self) -> MutexGuard<'_, Out> {
        // `Out` stays consistent even if a holder panicked: its updates are plain field writes.
        self.out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A stream queue entry taken out by the poll (the bytes of `Data` are in `stage`).
enum Taken {
    Data {
        conn: ConnId,
        start: usize,
        len: usize,
    },
    Accepted {
        listener: SocketId,
        stream: TcpStream,
        from: SocketAddr,
    },
    Ended {
        conn: ConnId,
        reason: CloseReason,
    },
}

impl Blocking {
    pub(crate) fn open(cfg: &Config) -> io::Result<Blocking> {
        let slots = cfg
            .max_events
            .saturating_mul(4)
            .clamp(RX_QUEUE_MIN, RX_QUEUE_MAX);
        let batch = cfg.max_events.min(TAKE_BATCH_MAX);
        let stream_queue_bytes = cfg
            .stream_read_bytes
            .saturating_mul(4)
            .max(STREAM_QUEUE_MIN_BYTES);
        let limit = connection_limit(cfg);
        Ok(Blocking {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring::new(slots, cfg.max_datagram, stream_queue_bytes)),
                ready: Condvar::new(),
                room: Condvar::new(),
                stop: AtomicBool::new(false),
                open: AtomicUsize::new(0),
                limit,
                progress: AtomicBool::new(false),
                #[cfg(unix)]
                reserve: Mutex::new(crate::sys::Reserve::open()?),
            }),
            sockets: Vec::new(),
            helpers: Vec::new(),
            accepters: Vec::new(),
            conns: ConnTable::new(),
            retired: Vec::new(),
            max_events: cfg.max_events,
            max_datagram: cfg.max_datagram,
            socket_buffer_bytes: cfg.socket_buffer_bytes,
            stream_read_bytes: cfg.stream_read_bytes,
            stream_send_bytes: cfg.stream_send_bytes,
            socket_send_bytes: cfg.stream_socket_send_bytes,
            batch_bytes: vec![0u8; batch * cfg.max_datagram].into_boxed_slice(),
            batch: Vec::with_capacity(batch),
            taken: Vec::with_capacity(TAKE_BATCH_MAX),
            stage: vec![0u8; cfg.stream_read_bytes.max(64 * 1024)].into_boxed_slice(),
            tx: TxSlab::new(cfg),
            unflushed: 0,
            queued: 0,
            stats: IoStats::default(),
        })
    }

    /// Moves up to `limit` datagrams from the ring into the local batch.
    fn take(&mut self, limit: usize) -> usize {
        self.batch.clear();
        let slot_bytes = self.max_datagram;
        let mut ring = self.shared.lock();
        let n = ring.len.min(limit).min(self.batch_bytes.len() / slot_bytes);
        for k in 0..n {
            let meta = ring.meta[ring.head];
            let from = ring.head * slot_bytes;
            let to = k * slot_bytes;
            self.batch_bytes[to..to + meta.len].copy_from_slice(&ring.bytes[from..from + meta.len]);
            self.batch.push(meta);
            ring.head = (ring.head + 1) % ring.meta.len();
            ring.len -= 1;
        }
        n
    }

    /// Moves up to `limit` stream queue entries into `taken` (reads' bytes into `stage`).
    fn take_streams(&mut self, limit: usize) -> usize {
        self.taken.clear();
        let mut staged = 0;
        let mut ring = self.shared.lock();
        while self.taken.len() < limit {
            if let Some(Entry::Data { len, .. }) = ring.streams.entries.front() {
                if staged + len > self.stage.len() {
                    break;
                }
            }
            let entry = match ring.streams.entries.pop_front() {
                Some(entry) => entry,
                None => break,
            };
            self.taken.push(match entry {
                Entry::Data { conn, len } => {
                    ring.streams
                        .pop_bytes(&mut self.stage[staged..staged + len]);
                    staged += len;
                    Taken::Data {
                        conn,
                        start: staged - len,
                        len,
                    }
                }
                Entry::Accepted {
                    listener,
                    stream,
                    from,
                } => Taken::Accepted {
                    listener,
                    stream,
                    from,
                },
                Entry::Ended { conn, reason } => Taken::Ended { conn, reason },
            });
        }
        drop(ring);
        if staged > 0 {
            self.shared.room.notify_all();
        }
        self.taken.len()
    }

    /// Takes what the writers wrote out of the send buffers and of `stream_queued` (on the
    /// caller's thread, so both only change inside `poll` and `flush`).
    fn sync_written(&mut self) {
        if !self.shared.progress.swap(false, Ordering::AcqRel) {
            return;
        }
        for (_, conn) in self.conns.iter_mut() {
            let mut out = conn.link.out();
            let written = out.written;
            if written > 0 {
                out.buf.consume(written);
                out.flushed -= written;
                out.written = 0;
                self.queued -= written;
            }
        }
    }

    /// Registers a connected socket: table slot, reader and writer. On failure the socket is
    /// closed and its admission undone.
    fn register(&mut self, stream: TcpStream) -> io::Result<ConnId> {
        let setup = stream
            .set_nonblocking(false) // accepted sockets inherit O_NONBLOCK on some platforms
            .and_then(|()| stream.set_nodelay(true))
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TICK)));
        #[cfg(unix)]
        crate::sys::set_send_buffer(
            std::os::unix::io::AsRawFd::as_raw_fd(&stream),
            self.socket_send_bytes,
        );
        #[cfg(windows)]
        crate::win::set_send_buffer(
            std::os::windows::io::AsRawSocket::as_raw_socket(&stream),
            self.socket_send_bytes,
        );
        #[cfg(not(unix))]
        let setup = setup.and_then(|()| stream.set_read_timeout(Some(READ_TICK)));
        if let Err(e) = setup {
            self.shared.open.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        let link = Arc::new(Link {
            stream,
            out: Mutex::new(Out {
                buf: SendBuf::new(self.stream_send_bytes),
                flushed: 0,
                written: 0,
                closed: false,
                error: None,
            }),
            more: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let conn = self.conns.insert(Conn {
            link: link.clone(),
            reader: None,
            writer: None,
        });
        let (shared, read_link, read_bytes) =
            (self.shared.clone(), link.clone(), self.stream_read_bytes);
        let reader = thread::Builder::new()
            .name(format!("tickwire-io-rd-{}", conn.index))
            .stack_size(STREAM_STACK_BYTES)
            .spawn(move || read_loop(&shared, &read_link, conn, read_bytes));
        let spawned = reader.and_then(|reader| {
            if let Some(entry) = self.conns.get_mut(conn) {
                entry.reader = Some(reader);
            }
            let (shared, write_link) = (self.shared.clone(), link.clone());
            let chunk = self.stream_send_bytes.min(WRITE_CHUNK_MAX);
            thread::Builder::new()
                .name(format!("tickwire-io-wr-{}", conn.index))
                .stack_size(STREAM_STACK_BYTES)
                .spawn(move || write_loop(&shared, &write_link, chunk))
        });
        match spawned {
            Ok(writer) => {
                if let Some(entry) = self.conns.get_mut(conn) {
                    entry.writer = Some(writer);
                }
                Ok(conn)
            }
            Err(e) => {
                self.close(conn);
                Err(e)
            }
        }
    }

    /// Ends a connection taken out of the table: no event, threads told to end, its bytes out
    /// of `stream_queued`, its admission undone.
    fn retire(&mut self, conn: Conn) {
        conn.link.closed.store(true, Ordering::Release);
        {
            let mut out = conn.link.out();
            out.closed = true;
            self.queued -= out.buf.len();
        }
        conn.link.more.notify_all();
        if conn.writer.is_none() {
            // No writer to shut the socket down after its last write attempt.
            let _ = conn.link.stream.shutdown(Shutdown::Both);
        }
        // A reader waiting for room in the stream queue: taking the lock after setting
        // `closed` means it either sees the flag or is already waiting for this notification.
        drop(self.shared.lock());
        self.shared.room.notify_all();
        self.retired.extend(conn.reader);
        self.retired.extend(conn.writer);
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Handles one taken stream queue entry; returns whether it produced an event.
    fn deliver(&mut self, taken: Taken, on_event: &mut dyn FnMut(Event<'_>)) -> bool {
        match taken {
            Taken::Data { conn, start, len } => {
                // Bytes read before the caller closed the connection are dropped with it.
                if self.conns.get(conn).is_none() {
                    return false;
                }
                on_event(Event::Stream {
                    conn,
                    data: &self.stage[start..start + len],
                });
                true
            }
            Taken::Accepted {
                listener,
                stream,
                from,
            } => match self.register(stream) {
                Ok(conn) => {
                    self.stats.accepted += 1;
                    on_event(Event::Accepted {
                        listener,
                        conn,
                        from,
                    });
                    true
                }
                Err(_) => {
                    self.stats.accept_errors += 1;
                    false
                }
            },
            Taken::Ended { conn, reason } => match self.conns.remove(conn) {
                Some(entry) => {
                    self.retire(entry);
                    on_event(Event::Closed { conn, reason });
                    true
                }
                // Closed by the caller meanwhile: no event.
                None => false,
            },
        }
    }
}

impl Backend for Blocking {
    fn model(&self) -> Model {
        Model::Blocking
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = UdpSocket::bind(addr)?;
        #[cfg(unix)]
        crate::sys::set_buffer_sizes(
            std::os::unix::io::AsRawFd::as_raw_fd(&socket),
            self.socket_buffer_bytes,
        );
        #[cfg(windows)]
        crate::win::set_buffer_sizes(
            std::os::windows::io::AsRawSocket::as_raw_socket(&socket),
            self.socket_buffer_bytes,
        );
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        let reader = socket.try_clone()?;
        reader.set_read_timeout(Some(RECV_TIMEOUT))?;
        let shared = self.shared.clone();
        let max_datagram = self.max_datagram;
        let helper = thread::Builder::new()
            .name(format!("tickwire-io-rx-{}", id.0))
            .stack_size(HELPER_STACK_BYTES)
            .spawn(move || receive_loop(&shared, &reader, id, max_datagram))?;
        self.sockets.push(Socket::Udp(socket));
        self.helpers.push(helper);
        Ok(id)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        match self.sockets.get(id.0 as usize) {
            Some(Socket::Udp(socket)) => socket.local_addr(),
            Some(Socket::Listener(addr)) => Ok(*addr),
            None => Err(unknown_socket(id)),
        }
    }

    fn send(&mut self, id: SocketId, peer: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        match self.sockets.get(id.0 as usize) {
            Some(Socket::Udp(_)) => {}
            _ => return Err(SendError::UnknownSocket),
        }
        slab::queue(
            &mut self.tx,
            self.sockets.len(),
            id,
            peer,
            data,
            &mut self.stats,
        )
    }

    fn flush(&mut self) -> io::Result<FlushReport> {
        let mut report = FlushReport::default();
        for entry in self.tx.entries() {
            let socket = match &self.sockets[entry.socket as usize] {
                Socket::Udp(socket) => socket,
                Socket::Listener(_) => continue, // `send` refuses listener ids
            };
            let data = self.tx.data(entry);
            loop {
                match socket.send_to(data, entry.peer) {
                    Ok(_) => report.sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => report.failed += 1,
                }
                break;
            }
        }
        self.stats.send_errors += report.failed as u64;
        self.tx.clear();
        self.sync_written();
        if self.unflushed > 0 {
            for (_, conn) in self.conns.iter_mut() {
                let mut out = conn.link.out();
                let fresh = out.buf.len() - out.flushed;
                if fresh > 0 {
                    out.flushed += fresh;
                    drop(out);
                    conn.link.more.notify_one();
                    report.stream_bytes += fresh;
                }
            }
            self.unflushed = 0;
        }
        Ok(report)
    }

    fn poll(
        &mut self,
        deadline: Instant,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<PollReport> {
        let mut report = PollReport::default();
        {
            let mut ring = self.shared.lock();
            while ring.len == 0 && ring.streams.entries.is_empty() && !ring.woken {
                let left = time_left(deadline);
                if left.is_zero() {
                    break;
                }
                let start = Instant::now();
                ring = match self.shared.ready.wait_timeout(ring, left) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                report.waited += start.elapsed();
            }
            if ring.woken {
                ring.woken = false;
                report.events += 1;
            }
        }
        self.sync_written();
        if !self.retired.is_empty() {
            // Dropping the handle of a finished thread releases it.
            self.retired.retain(|thread| !thread.is_finished());
        }
        // Datagrams and stream entries in turns of at most a batch each, within the budget.
        let mut budget = self.max_events;
        while budget > 0 {
            let n = self.take(budget);
            for (k, meta) in self.batch.iter().enumerate() {
                let start = k * self.max_datagram;
                on_event(Event::Datagram {
                    socket: SocketId(meta.socket),
                    from: meta.peer,
                    data: &self.batch_bytes[start..start + meta.len],
                });
            }
            report.datagrams += n;
            budget -= n;
            let m = self.take_streams(budget.min(TAKE_BATCH_MAX));
            let mut taken = mem::take(&mut self.taken);
            for item in taken.drain(..) {
                if self.deliver(item, on_event) {
                    report.events += 1;
                    budget -= 1;
                }
            }
            self.taken = taken;
            if n == 0 && m == 0 {
                break;
            }
        }
        report.events += report.datagrams;
        Ok(report)
    }

    fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        #[cfg(unix)]
        let listener = crate::sys::listen_tcp(addr)?; // SO_REUSEADDR, backlog 1024
        #[cfg(not(unix))]
        let listener = {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            listener
        };
        let local = listener.local_addr()?;
        let shared = self.shared.clone();
        let accepter = thread::Builder::new()
            .name(format!("tickwire-io-accept-{}", id.0))
            .stack_size(STREAM_STACK_BYTES)
            .spawn(move || accept_loop(&shared, &listener, id))?;
        self.sockets.push(Socket::Listener(local));
        self.accepters.push(accepter);
        Ok(id)
    }

    fn connect(&mut self, addr: SocketAddr, timeout: Duration) -> io::Result<ConnId> {
        if !self.shared.admit() {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                format!(
                    "blocking io backend already holds its maximum of {} connections",
                    self.shared.limit
                ),
            ));
        }
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => self.register(stream),
            Err(e) => {
                self.shared.open.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    fn send_stream(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        let entry = self.conns.get(conn).ok_or(SendError::Closed)?;
        let mut out = entry.link.out();
        if out.error.is_some() {
            // The writer failed; the Closed event is on its way.
            return Err(SendError::Closed);
        }
        match out.buf.push(data) {
            Ok(()) => {
                self.queued += data.len();
                self.unflushed += data.len();
                Ok(())
            }
            Err(e) => {
                self.stats.stream_send_full += 1;
                Err(e)
            }
        }
    }

    fn send_capacity(&self, conn: ConnId) -> Option<usize> {
        let out = self.conns.get(conn)?.link.out();
        match out.error {
            Some(_) => None,
            None => Some(out.buf.capacity_left()),
        }
    }

    fn stream_queued(&self) -> usize {
        self.queued
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(entry) = self.conns.remove(conn) {
            self.retire(entry);
        }
    }

    fn waker(&self) -> Waker {
        Waker::new(self.shared.clone())
    }

    fn stats(&self) -> IoStats {
        let ring = self.shared.lock();
        IoStats {
            truncated: ring.truncated,
            recv_errors: ring.recv_errors,
            accepts_over_limit: ring.accepts_over_limit,
            accepts_shed: ring.accepts_shed,
            accept_errors: ring.accept_errors + self.stats.accept_errors,
            ..self.stats
        }
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for accepter in &self.accepters {
            accepter.thread().unpark();
        }
        let mut ids = Vec::with_capacity(self.conns.len());
        self.conns.ids_into(&mut ids);
        for id in ids {
            if let Some(conn) = self.conns.remove(id) {
                // Wakes a read or a write blocked on the socket now rather than at the next
                // write tick.
                let _ = conn.link.stream.shutdown(Shutdown::Both);
                self.retire(conn);
            }
        }
        let threads = self
            .helpers
            .drain(..)
            .chain(self.accepters.drain(..))
            .chain(self.retired.drain(..));
        for thread in threads {
            // A thread that panicked has nothing left to clean up.
            let _ = thread.join();
        }
        // Connections accepted but never registered: close them now, not when the last waker
        // goes.
        self.shared.lock().streams.entries.clear();
    }
}

/// A helper thread: blocking receives into the shared ring until the stop flag is set.
fn receive_loop(shared: &Shared, socket: &UdpSocket, id: SocketId, max_datagram: usize) {
    // One byte more than a slot: a datagram that fills it was truncated.
    let mut buf = vec![0u8; max_datagram + 1];
    while !shared.stop.load(Ordering::Acquire) {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => shared.push(id, peer, &buf[..len]),
            Err(e) if is_timeout(&e) => {}
            Err(e) if is_truncation(&e) => shared.lock().truncated += 1,
            Err(_) => {
                shared.lock().recv_errors += 1;
                // Do not spin on an error that repeats.
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// An accept thread: accepts on its non-blocking listener until the stop flag is set, parking
/// (woken early by the backend's drop) when there is nothing to accept.
fn accept_loop(shared: &Shared, listener: &TcpListener, id: SocketId) {
    while !shared.stop.load(Ordering::Acquire) {
        let (stream, from) = match listener.accept() {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::park_timeout(ACCEPT_PARK);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                shared.lock().accept_errors += 1;
                continue;
            }
            Err(e) => match accept_failed(shared, listener, &e) {
                AfterError::Accept(stream, from) => (stream, from),
                AfterError::Retry => continue,
                AfterError::Park => {
                    thread::park_timeout(ACCEPT_PARK);
                    continue;
                }
            },
        };
        if !shared.admit() {
            shared.lock().accepts_over_limit += 1;
            continue; // `stream` is closed here
        }
        let mut ring = shared.lock();
        ring.streams.entries.push_back(Entry::Accepted {
            listener: id,
            stream,
            from,
        });
        drop(ring);
        shared.ready.notify_one();
    }
}

/// What the accept thread does after an accept error.
#[cfg_attr(not(unix), allow(dead_code))] // only unix has the reserve descriptor
enum AfterError {
    /// Accept this connection (the reserve descriptor found descriptors free again).
    Accept(TcpStream, SocketAddr),
    /// Accept again at once (a connection was shed; more may be pending).
    Retry,
    /// Park first: `EMFILE` comes back at once for as long as descriptors are short, pending
    /// connections or not (Linux answers it before it looks at the backlog), and other errors
    /// may repeat too.
    Park,
}

/// An accept error other than "nothing pending": on unix, `EMFILE`/`ENFILE` go through the
/// reserve descriptor; the rest are counted.
fn accept_failed(shared: &Shared, listener: &TcpListener, e: &io::Error) -> AfterError {
    #[cfg(unix)]
    {
        use crate::sys::Shed;
        use std::os::unix::io::AsRawFd;
        if crate::sys::is_out_of_fds(e) {
            let mut reserve = shared
                .reserve
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let held = reserve.held();
            return match reserve.shed(listener.as_raw_fd()) {
                Shed::Kept(stream, from) => AfterError::Accept(stream, from),
                Shed::One => {
                    shared.lock().accepts_shed += 1;
                    AfterError::Retry
                }
                Shed::NoReserve => {
                    // Counted when the pause begins, not at every attempt during it.
                    if held {
                        shared.lock().accepts_shed += 1;
                    }
                    AfterError::Park
                }
                Shed::Nothing | Shed::Failed => AfterError::Park,
            };
        }
    }
    let _ = (listener, e);
    shared.lock().accept_errors += 1;
    AfterError::Park
}

/// A connection's reader: blocking reads into the stream queue until the peer closes, an
/// error, or the backend closes the connection.
fn read_loop(shared: &Shared, link: &Link, conn: ConnId, read_bytes: usize) {
    let mut buf = vec![0u8; read_bytes];
    let reason = loop {
        match (&link.stream).read(&mut buf) {
            Ok(0) => break CloseReason::Eof,
            Ok(n) => {
                if !shared.push_read(link, conn, &buf[..n]) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // The read timeout (not unix), or the writer's last non-blocking attempt.
                if link.closed.load(Ordering::Acquire) || shared.stop.load(Ordering::Acquire) {
                    return;
                }
                #[cfg(unix)]
                thread::sleep(Duration::from_millis(1)); // not expected: never spin
            }
            Err(e) => break CloseReason::Error(e.kind()),
        }
    };
    if link.closed.load(Ordering::Acquire) {
        return;
    }
    // The writer shut the socket down after a write error: that error is the reason.
    let reason = match link.out().error {
        Some(kind) => CloseReason::Error(kind),
        None => reason,
    };
    let mut ring = shared.lock();
    ring.streams
        .entries
        .push_back(Entry::Ended { conn, reason });
    drop(ring);
    shared.ready.notify_one();
}

/// A connection's writer: writes flushed bytes in chunks until a write fails or the backend
/// closes the connection.
fn write_loop(shared: &Shared, link: &Link, chunk_max: usize) {
    let mut chunk = vec![0u8; chunk_max];
    'chunks: loop {
        let n = {
            let mut out = link.out();
            while out.written == out.flushed && !out.closed {
                out = link
                    .more
                    .wait(out)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if out.closed {
                break 'chunks;
            }
            let from = out.written;
            let n = (out.flushed - from).min(chunk.len());
            chunk[..n].copy_from_slice(&out.buf.pending()[from..from + n]);
            n
        };
        let mut done = 0;
        while done < n {
            match (&link.stream).write(&chunk[done..n]) {
                Ok(0) => return write_failed(link, io::ErrorKind::WriteZero),
                Ok(k) => {
                    done += k;
                    link.out().written += k;
                    shared.progress.store(true, Ordering::Release);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // The write tick: a slow reader. Winsock does not say how much of a timed
                    // out send went out, so there the connection cannot go on.
                    if cfg!(not(unix)) {
                        return write_failed(link, e.kind());
                    }
                    // Give up the chunk if the backend closed.
                    if link.closed.load(Ordering::Acquire) {
                        break 'chunks;
                    }
                }
                Err(e) => return write_failed(link, e.kind()),
            }
        }
    }
    // Closed by the backend: one attempt, never waited for, at what is still queued; then the
    // shutdown that ends the reader's blocked read. The reader is leaving, so switching the
    // shared socket to non-blocking is harmless.
    if link.stream.set_nonblocking(true).is_ok() {
        let out = link.out();
        let rest = &out.buf.pending()[out.written..];
        if !rest.is_empty() {
            let _ = (&link.stream).write(rest);
        }
    }
    let _ = link.stream.shutdown(Shutdown::Both);
}

/// Records the write error and shuts the socket down: the reader then reports it.
fn write_failed(link: &Link, kind: io::ErrorKind) {
    link.out().error = Some(kind);
    let _ = link.stream.shutdown(Shutdown::Both);
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Windows reports a datagram longer than the buffer as WSAEMSGSIZE instead of truncating.
fn is_truncation(e: &io::Error) -> bool {
    cfg!(windows) && e.raw_os_error() == Some(10040)
}

/// State shared by the backend, its threads and its wakers.
struct Shared {
    ring: Mutex<Ring>,
    /// The poll waits on it.
    ready: Condvar,
    /// Readers wait on it for room in the stream queue.
    room: Condvar,
    stop: AtomicBool,
    /// Connections admitted: registered, or accepted and waiting in the stream queue.
    open: AtomicUsize,
    /// The connection limit.
    limit: usize,
    /// A writer wrote something since the caller's thread last looked.
    progress: AtomicBool,
    /// The descriptor given up to shed a connection on `EMFILE`.
    #[cfg(unix)]
    reserve: Mutex<crate::sys::Reserve>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // The ring stays consistent even if a holder panicked: every update is a few plain
        // field writes after the bounds checks.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more connection if the limit allows it.
    fn admit(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                if open < self.limit {
                    Some(open + 1)
                } else {
                    None
                }
            })
            .is_ok()
    }

    fn push(&self, id: SocketId, peer: SocketAddr, data: &[u8]) {
        let mut ring = self.lock();
        if data.len() > ring.slot_bytes {
            ring.truncated += 1;
            return;
        }
        let slots = ring.meta.len();
        if ring.len == slots {
            ring.recv_errors += 1;
            return;
        }
        let slot = (ring.head + ring.len) % slots;
        let start = slot * ring.slot_bytes;
        ring.bytes[start..start + data.len()].copy_from_slice(data);
        ring.meta[slot] = Meta {
            socket: id.0,
            peer,
            len: data.len(),
        };
        ring.len += 1;
        drop(ring);
        self.ready.notify_one();
    }

    /// Queues one read of a connection, waiting for room; false if the connection was closed
    /// or the backend dropped meanwhile (the bytes are dropped with it).
    fn push_read(&self, link: &Link, conn: ConnId, data: &[u8]) -> bool {
        let mut ring = self.lock();
        loop {
            if link.closed.load(Ordering::Acquire) || self.stop.load(Ordering::Acquire) {
                return false;
            }
            if ring.streams.has_room(data.len()) {
                break;
            }
            ring = self
                .room
                .wait(ring)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        ring.streams.push_read(conn, data);
        drop(ring);
        self.ready.notify_one();
        true
    }
}

impl Wake for Shared {
    fn wake(&self) -> io::Result<()> {
        self.lock().woken = true;
        self.ready.notify_one();
        Ok(())
    }
}

/// Where a queued datagram came from and how long it is.
#[derive(Clone, Copy)]
struct Meta {
    socket: u32,
    peer: SocketAddr,
    len: usize,
}

/// The bounded receive queues: a ring of preallocated datagram slots, the stream queue, and
/// the counters the threads keep.
struct Ring {
    slot_bytes: usize,
    bytes: Box<[u8]>,
    meta: Box<[Meta]>,
    head: usize,
    len: usize,
    woken: bool,
    truncated: u64,
    recv_errors: u64,
    streams: StreamQueue,
    accepts_over_limit: u64,
    accepts_shed: u64,
    accept_errors: u64,
}

impl Ring {
    fn new(slots: usize, slot_bytes: usize, stream_bytes: usize) -> Ring {
        let empty = Meta {
            socket: 0,
            peer: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            len: 0,
        };
        Ring {
            slot_bytes,
            bytes: vec![0u8; slots * slot_bytes].into_boxed_slice(),
            meta: vec![empty; slots].into_boxed_slice(),
            head: 0,
            len: 0,
            woken: false,
            truncated: 0,
            recv_errors: 0,
            streams: StreamQueue::new(stream_bytes),
            accepts_over_limit: 0,
            accepts_shed: 0,
            accept_errors: 0,
        }
    }
}

/// One entry of the stream queue.
enum Entry {
    /// A read of `len` bytes, at the front of the byte ring when the entry is.
    Data { conn: ConnId, len: usize },
    /// An admitted connection, registered by the poll that takes it.
    Accepted {
        listener: SocketId,
        stream: TcpStream,
        from: SocketAddr,
    },
    /// The connection's reader ended on its own.
    Ended { conn: ConnId, reason: CloseReason },
}

/// The stream queue: entries in arrival order, the reads' bytes in a preallocated byte ring.
/// Reads are bounded in bytes and in number; `Accepted` and `Ended` entries are not (the
/// connection limit bounds them: one each per connection).
struct StreamQueue {
    bytes: Box<[u8]>,
    head: usize,
    len: usize,
    entries: VecDeque<Entry>,
    reads: usize,
}

impl StreamQueue {
    fn new(bytes: usize) -> StreamQueue {
        StreamQueue {
            bytes: vec![0u8; bytes].into_boxed_slice(),
            head: 0,
            len: 0,
            entries: VecDeque::with_capacity(STREAM_QUEUE_READS),
            reads: 0,
        }
    }

    fn has_room(&self, n: usize) -> bool {
        self.len + n <= self.bytes.len() && self.reads < STREAM_QUEUE_READS
    }

    /// Appends a read (the caller checked `has_room`).
    fn push_read(&mut self, conn: ConnId, data: &[u8]) {
        let cap = self.bytes.len();
        let tail = (self.head + self.len) % cap;
        let first = data.len().min(cap - tail);
        self.bytes[tail..tail + first].copy_from_slice(&data[..first]);
        self.bytes[..data.len() - first].copy_from_slice(&data[first..]);
        self.len += data.len();
        self.reads += 1;
        self.entries.push_back(Entry::Data {
            conn,
            len: data.len(),
        });
    }

    /// Moves the front read's bytes (its entry was just popped) into `out`.
    fn pop_bytes(&mut self, out: &mut [u8]) {
        let cap = self.bytes.len();
        let first = out.len().min(cap - self.head);
        out[..first].copy_from_slice(&self.bytes[self.head..self.head + first]);
        let rest = out.len() - first;
        out[first..].copy_from_slice(&self.bytes[..rest]);
        self.head = (self.head + out.len()) % cap;
        self.len -= out.len();
        self.reads -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;

    /// Hang guard, never a measurement.
    const PATIENCE: Duration = Duration::from_secs(60);

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Polls until an `Accepted` from `client` arrives; returns its connection.
    fn accepted(io: &mut Blocking, client: &TcpStream) -> ConnId {
        let me = client.local_addr().unwrap();
        let mut conn = None;
        let end = Instant::now() + PATIENCE;
        while conn.is_none() {
            assert!(Instant::now() < end, "hung waiting for the connection");
            io.poll(end, &mut |event| match event {
                Event::Accepted { conn: c, from, .. } if from == me => conn = Some(c),
                other => panic!("unexpected event {:?}", other),
            })
            .unwrap();
        }
        conn.unwrap()
    }

    /// Byte `i` of the test streams: they repeat a 4 KiB chunk whose bytes differ from their
    /// neighbours', so a lost or repeated write shows.
    fn pattern_at(i: usize) -> u8 {
        (i % 4096 % 251) as u8
    }

    /// Queues, flushes and polls until the send buffer has stayed full for a while: by then
    /// the kernel's buffers are full too, very probably, and the writer blocked in a write
    /// (best effort; the tests' assertions do not depend on it). Returns the bytes queued.
    /// Reads until the end of the stream (or a reset), checking that the bytes are a prefix of
    /// the [`pattern_at`] stream; returns how many there were.
    fn read_pattern_to_end(client: &mut TcpStream) -> usize {
        let mut got = 0;
        let mut buf = [0u8; 64 * 1024];
        loop {
            match client.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => {
                    assert!(
                        buf[..n]
                            .iter()
                            .enumerate()
                            .all(|(k, b)| *b == pattern_at(got + k)),
                        "corrupted at {}",
                        got
                    );
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("client read: {}", e),
            }
        }
    }

    fn fill_until_the_writer_blocks(io: &mut Blocking, conn: ConnId) -> usize {
        const LIMIT: usize = 256 << 20;
        let chunk: Vec<u8> = (0..4096).map(pattern_at).collect();
        let mut queued = 0;
        let mut full_polls = 0;
        while full_polls < 50 && queued < LIMIT {
            let room = io.send_capacity(conn).expect("connection open");
            if room == 0 {
                full_polls += 1;
            } else {
                full_polls = 0;
            }
            let mut room = room;
            while room > 0 {
                let n = room.min(chunk.len() - queued % chunk.len());
                let start = queued % chunk.len();
                io.send_stream(conn, &chunk[start..start + n]).unwrap();
                queued += n;
                room -= n;
            }
            io.flush().unwrap();
            io.poll(Instant::now() + Duration::from_millis(1), &mut |event| {
                panic!("unexpected event {:?}", event)
            })
            .unwrap();
        }
        queued
    }

    #[test]
    fn the_connection_limit_is_at_most_512() {
        assert_eq!(connection_limit(&Config::default()), MAX_CONNECTIONS);
        assert_eq!(MAX_CONNECTIONS, 512);
        let cfg = Config {
            max_connections: 3,
            ..Config::default()
        };
        assert_eq!(connection_limit(&cfg), 3);
        let mut io = Blocking::open(&Config {
            max_connections: 1_000_000,
            ..Config::default()
        })
        .unwrap();
        assert_eq!(io.shared.limit, 512);
        // connect() counts against the same limit.
        io.shared.open.store(512, Ordering::Release);
        let other = TcpListener::bind(localhost()).unwrap();
        let err = io
            .connect(other.local_addr().unwrap(), PATIENCE)
            .unwrap_err();
        assert!(err.to_string().contains("512"), "{}", err);
        io.shared.open.store(0, Ordering::Release);
        io.connect(other.local_addr().unwrap(), PATIENCE).unwrap();
        assert_eq!(io.connections(), 1);
    }

    #[test]
    fn every_thread_ends_when_the_backend_is_dropped() {
        let cfg = Config {
            stream_read_bytes: 1024,
            stream_send_bytes: 16 * 1024,
            ..Config::default()
        };
        let mut io = Blocking::open(&cfg).unwrap();
        io.bind(localhost()).unwrap();
        let listener = io.listen(localhost()).unwrap();
        let addr = io.local_addr(listener).unwrap();

        // An idle connection: its reader blocked in a read, its writer waiting for bytes.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(PATIENCE)).unwrap();
        accepted(&mut io, &idle);

        // A connection that floods us while we do not poll: its reader fills the stream queue
        // and waits for room; and that never reads: its writer blocks on the full socket.
        let mut busy = TcpStream::connect(addr).unwrap();
        busy.set_read_timeout(Some(PATIENCE)).unwrap();
        let conn = accepted(&mut io, &busy);
        let queued = fill_until_the_writer_blocks(&mut io, conn);
        busy.set_nonblocking(true).unwrap();
        let flood = vec![1u8; 64 * 1024];
        let mut flooded = 0;
        loop {
            match busy.write(&flood) {
                Ok(n) => flooded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("flood: {}", e),
            }
        }
        busy.set_nonblocking(false).unwrap();
        assert!(flooded > STREAM_QUEUE_MIN_BYTES, "{}", flooded);

        // Every thread holds the shared state: once it is gone, every thread has ended.
        let shared: Weak<Shared> = Arc::downgrade(&io.shared);
        drop(io);
        assert!(shared.upgrade().is_none(), "a thread outlived the backend");

        // Both clients read the end (after what the writer had handed to the kernel).
        for (client, most) in [(&mut idle, 0), (&mut busy, queued)] {
            let got = read_pattern_to_end(client);
            assert!(got <= most, "{} of {}", got, most);
        }
    }

    #[test]
    fn close_ends_both_threads_even_with_the_writer_blocked() {
        let cfg = Config {
            stream_send_bytes: 16 * 1024,
            ..Config::default()
        };
        let mut io = Blocking::open(&cfg).unwrap();
        let listener = io.listen(localhost()).unwrap();
        let addr = io.local_addr(listener).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let conn = accepted(&mut io, &client);
        let queued = fill_until_the_writer_blocks(&mut io, conn);

        let link: Weak<Link> = Arc::downgrade(&io.conns.get(conn).unwrap().link);
        io.close(conn);
        assert_eq!(io.connections(), 0);
        assert_eq!(io.stream_queued(), 0);
        assert_eq!(io.send_capacity(conn), None);
        assert_eq!(io.send_stream(conn, b"x"), Err(SendError::Closed));

        // The threads end on their own (the writer at its next write tick); polls reap them.
        let end = Instant::now() + PATIENCE;
        while link.upgrade().is_some() || !io.retired.is_empty() {
            assert!(Instant::now() < end, "the connection's threads never ended");
            io.poll(Instant::now() + Duration::from_millis(5), &mut |event| {
                panic!("unexpected event {:?}", event)
            })
            .unwrap();
        }

        // The client reads a prefix of what was queued, then the end.
        let got = read_pattern_to_end(&mut client);
        assert!(got <= queued, "{} of {}", got, queued);
    }
}
