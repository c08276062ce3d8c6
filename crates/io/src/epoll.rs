//! The Linux epoll backend.
//!
//! UDP sockets are registered level-triggered with their [`SocketId`] as the epoll token; TCP
//! listeners (same id space) and stream connections edge-triggered (`EPOLLET`), a connection's
//! token carrying a tag bit, its slot index and the low 30 bits of the slot's generation (so an
//! edge left over from a closed connection never reaches the one that reused its slot); an
//! eventfd registered with the token `u64::MAX` is the waker.
//!
//! One poll waits once (`epoll_pwait2` with a nanosecond timeout; `epoll_wait` with the timeout
//! rounded up to whole milliseconds on kernels older than 5.11, decided once on the first
//! `ENOSYS`), puts what became readable on the backend's ready list, and serves that list round
//! robin until the `max_events` budget is spent: one turn is one `recvmmsg` batch for a UDP
//! socket, one `accept4` for a listener, one `read` into the shared stream buffer for a
//! connection. A socket or connection that did not answer `EAGAIN` yet stays on the list, ahead
//! of whatever the next wait adds; while the list holds anything the next poll does not block.
//! Edges are therefore never lost to the budget, and one flooded socket cannot take a whole
//! poll from the others. A poll that only did internal work (writes on `EPOLLOUT`, shed
//! connections, edges of closed connections) waits again instead of returning empty-handed
//! before its deadline.
//!
//! Streams: [`Backend::send_stream`] appends to the connection's bounded [`SendBuf`];
//! [`Backend::flush`] writes every connection with new bytes (`send` with
//! `MSG_NOSIGNAL | MSG_DONTWAIT`) until the kernel answers `EAGAIN`, and what it leaves is
//! written when the connection's `EPOLLOUT` edge comes, inside a later poll. A write error
//! closes the connection and its `Closed` event is delivered first by the next poll. A
//! listener that meets `EMFILE`/`ENFILE` sheds the head of its backlog through the backend's
//! reserve descriptor ([`Reserve`]), or keeps that connection when the reserve reopens beside
//! it (descriptors were freed meanwhile); if even that fails it pauses until the next poll.
//!
//! Flush groups the send slab by socket and hands each group to `sendmmsg` in batches of up to
//! 1024 datagrams, each with its own peer address.
//!
//! All receive and send metadata (`mmsghdr`, `iovec`, `sockaddr_storage` arrays) and the stream
//! read buffer are allocated when the backend opens; the pointers inside are rewritten before
//! every call, so nothing is allocated per poll or per flush. Per connection there is its
//! table slot and its send buffer (which grows as it fills); the ready list keeps room for
//! every socket and connection, reserved when they are added.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::raw::{c_int, c_uint};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conns::{ConnTable, SendBuf};
use crate::slab::{self, TxEntry, TxSlab};
use crate::sys::{self, Reserve, Shed};
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, CloseReason, Config, ConnId, Event,
    FlushReport, IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

/// The epoll token of the waker's eventfd. Socket tokens are `u32` ids; connection tokens have
/// [`CONN_TAG`] set and bit 62 clear; so none of them collide.
const WAKER_TOKEN: u64 = u64::MAX;
/// Tag of a connection's token: `CONN_TAG | (generation & GEN_MASK) << 32 | index`.
const CONN_TAG: u64 = 1 << 63;
/// The generation bits a connection's token carries.
const GEN_MASK: u32 = (1 << 30) - 1;
/// Most datagrams one `recvmmsg` call takes.
const RECV_BATCH_MAX: usize = 256;
/// Most datagrams one `sendmmsg` call hands over.
const SEND_BATCH_MAX: usize = 1024;
/// Most epoll events fetched by one wait.
const EVENTS_MAX: usize = 65_536;

const UDP_EVENTS: u32 = libc::EPOLLIN as u32;
const LISTENER_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;
const CONN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// A connection's readiness that a read answers: bytes, the peer's FIN, or the socket error.
const READ_READY: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// A connection's readiness that a write answers.
const WRITE_READY: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;

fn conn_token(id: ConnId) -> u64 {
    CONN_TAG | (u64::from(id.generation & GEN_MASK) << 32) | u64::from(id.index)
}

/// How the wait is done; found out on the first poll and kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaitMode {
    /// `epoll_pwait2` (Linux 5.11+): nanosecond timeout.
    Pwait2,
    /// `epoll_wait` with the timeout rounded up to whole milliseconds.
    Millis,
}

/// The kernel's `struct __kernel_timespec` (64-bit seconds on every architecture), which is
/// what `epoll_pwait2` takes.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// One entry of the socket set: a UDP socket or a TCP listener.
struct Socket {
    kind: Kind,
    /// On the ready list.
    ready: bool,
}

enum Kind {
    Udp(UdpSocket),
    Listener(TcpListener),
}

impl Socket {
    fn fd(&self) -> RawFd {
        match &self.kind {
            Kind::Udp(s) => s.as_raw_fd(),
            Kind::Listener(l) => l.as_raw_fd(),
        }
    }
}

/// One stream connection.
struct Conn {
    stream: TcpStream,
    send: SendBuf,
    /// On the ready list: readable and not read to `EAGAIN` yet.
    ready: bool,
    /// On the flush list: bytes were queued since the last flush.
    to_flush: bool,
}

/// An entry of the ready list.
#[derive(Clone, Copy, Debug)]
enum Ready {
    Socket(u32),
    Conn(ConnId),
}

/// What serving one ready-list entry did.
struct Turn {
    /// Budget used: datagrams taken, connections accepted (handed up or not), reads.
    used: usize,
    /// Events handed to the callback.
    events: usize,
    /// Not drained yet: back onto the list.
    again: bool,
}

impl Turn {
    const DRAINED: Turn = Turn {
        used: 0,
        events: 0,
        again: false,
    };
    /// One accepted connection not handed up (shed, or refused), more may follow.
    const ONE_MORE: Turn = Turn {
        used: 1,
        events: 0,
        again: true,
    };
}

pub(crate) struct Epoll {
    epfd: OwnedFd,
    waker: Arc<EventFd>,
    sockets: Vec<Socket>,
    conns: ConnTable<Conn>,
    events: Box<[libc::epoll_event]>,
    max_events: usize,
    max_connections: usize,
    /// `SO_SNDBUF` for stream sockets.
    socket_send_bytes: usize,
    stream_send_bytes: usize,
    buffer_bytes: usize,
    rx: RecvBatch,
    tx: TxSlab,
    tx_batch: SendBatch,
    /// The shared stream read buffer (`stream_read_bytes`).
    read_buf: Box<[u8]>,
    /// Sockets and connections with something to take, served round robin; what a poll's
    /// budget leaves stays here, ahead of what the next wait adds.
    ready: VecDeque<Ready>,
    /// Connections that failed outside the serving loop (write errors): the next poll delivers
    /// their `Closed` first.
    closing: VecDeque<(ConnId, io::ErrorKind)>,
    /// Connections with bytes queued since the last flush.
    to_flush: Vec<ConnId>,
    /// Listeners that stopped accepting (out of descriptors) until the next poll.
    paused: Vec<u32>,
    /// Bytes in every connection's send buffer together.
    queued_bytes: usize,
    reserve: Reserve,
    stats: IoStats,
    wait_mode: WaitMode,
}

impl Epoll {
    pub(crate) fn open(cfg: &Config) -> io::Result<Epoll> {
        // SAFETY: no pointers are passed.
        let epfd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `epfd` was just created and nothing else owns it.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let waker = Arc::new(EventFd::new()?);
        let events_len = cfg.max_events.saturating_add(1).min(EVENTS_MAX);
        let io = Epoll {
            epfd,
            waker,
            sockets: Vec::new(),
            conns: ConnTable::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; events_len].into_boxed_slice(),
            max_events: cfg.max_events,
            max_connections: cfg.max_connections,
            socket_send_bytes: cfg.stream_socket_send_bytes,
            stream_send_bytes: cfg.stream_send_bytes,
            buffer_bytes: cfg.socket_buffer_bytes,
            rx: RecvBatch::new(cfg.max_events.min(RECV_BATCH_MAX), cfg.max_datagram),
            tx: TxSlab::new(cfg),
            tx_batch: SendBatch::new(cfg.send_queue.min(SEND_BATCH_MAX)),
            read_buf: vec![0u8; cfg.stream_read_bytes].into_boxed_slice(),
            ready: VecDeque::new(),
            closing: VecDeque::new(),
            to_flush: Vec::new(),
            paused: Vec::new(),
            queued_bytes: 0,
            // Best effort: a later shed retries.
            reserve: Reserve::open().unwrap_or_default(),
            stats: IoStats::default(),
            wait_mode: WaitMode::Pwait2,
        };
        io.ctl(
            libc::EPOLL_CTL_ADD,
            io.waker.fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKER_TOKEN,
        )?;
        Ok(io)
    }

    fn ctl(&self, op: c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event that outlives the call.
        syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev))?;
        Ok(())
    }

    /// Keeps room on the lists for every socket and connection, so that polls never grow them.
    fn reserve_lists(&mut self) {
        let items = self.sockets.len() + self.conns.len();
        if self.ready.capacity() < items {
            self.ready.reserve(items - self.ready.len());
        }
        let conns = self.conns.len();
        if self.closing.capacity() < conns {
            self.closing.reserve(conns - self.closing.len());
        }
        if self.to_flush.capacity() < conns {
            self.to_flush.reserve(conns - self.to_flush.len());
        }
    }

    fn add_socket(&mut self, kind: Kind, events: u32) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = Socket { kind, ready: false };
        self.ctl(libc::EPOLL_CTL_ADD, socket.fd(), events, u64::from(id.0))?;
        self.sockets.push(socket);
        self.reserve_lists();
        Ok(id)
    }

    /// Registers a connected, non-blocking, prepared stream.
    fn add_conn(&mut self, stream: TcpStream) -> io::Result<ConnId> {
        let fd = stream.as_raw_fd();
        let id = self.conns.insert(Conn {
            stream,
            send: SendBuf::new(self.stream_send_bytes),
            ready: false,
            to_flush: false,
        });
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, fd, CONN_EVENTS, conn_token(id)) {
            self.conns.remove(id); // closes it
            return Err(e);
        }
        self.reserve_lists();
        Ok(id)
    }

    /// Takes a connection out of the table and the epoll set; dropping it closes the socket.
    fn remove_conn(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(id)?;
        self.queued_bytes -= conn.send.len();
        // Explicitly, not by the close: a copy of the descriptor in a forked child would keep
        // the registration alive.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, conn.stream.as_raw_fd(), 0, 0);
        Some(conn)
    }

    /// A connection failed outside the serving loop: closed now, reported by the next poll.
    fn fail_conn(&mut self, id: ConnId, kind: io::ErrorKind) {
        if self.remove_conn(id).is_some() {
            self.closing.push_back((id, kind));
        }
    }

    fn mark_socket_ready(&mut self, id: u32) {
        if let Some(socket) = self.sockets.get_mut(id as usize) {
            if !socket.ready {
                socket.ready = true;
                self.ready.push_back(Ready::Socket(id));
            }
        }
    }

    /// Takes in what one wait reported: the waker (returns true if it fired), readiness onto
    /// the ready list, and pending writes on connections that became writable.
    fn intake(&mut self, n: usize) -> bool {
        let mut woke = false;
        for i in 0..n {
            // Copy the fields out: epoll_event is packed on x86_64.
            let (flags, token) = (self.events[i].events, self.events[i].u64);
            if token == WAKER_TOKEN {
                self.waker.drain();
                woke = true;
            } else if token & CONN_TAG != 0 {
                self.conn_edge(token, flags);
            } else {
                self.mark_socket_ready(token as u32);
            }
        }
        woke
    }

    fn conn_edge(&mut self, token: u64, flags: u32) {
        let generation = (token >> 32) as u32 & GEN_MASK;
        let (id, conn) = match self.conns.at_mut(token as u32) {
            Some(found) => found,
            None => return,
        };
        if id.generation & GEN_MASK != generation {
            return; // an edge of the connection that had this slot before
        }
        if flags & WRITE_READY != 0 && !conn.send.is_empty() {
            let (_, error) = write_pending(conn, &mut self.queued_bytes);
            if let Some(e) = error {
                self.fail_conn(id, e.kind());
                return;
            }
        }
        if flags & READ_READY != 0 && !conn.ready {
            conn.ready = true;
            self.ready.push_back(Ready::Conn(id));
        }
    }

    /// Delivers pending `Closed` events, then serves the ready list round robin until it is
    /// empty or the budget is spent. Returns the events delivered.
    fn serve(&mut self, on_event: &mut dyn FnMut(Event<'_>), report: &mut PollReport) -> usize {
        let mut budget = self.max_events;
        let mut delivered = 0;
        while budget > 0 {
            let (conn, kind) = match self.closing.pop_front() {
                Some(closed) => closed,
                None => break,
            };
            on_event(Event::Closed {
                conn,
                reason: CloseReason::Error(kind),
            });
            budget -= 1;
            delivered += 1;
        }
        while budget > 0 {
            let item = match self.ready.pop_front() {
                Some(item) => item,
                None => break,
            };
            let turn = match item {
                Ready::Socket(id) => self.serve_socket(id, budget, on_event, report),
                Ready::Conn(id) => self.serve_conn(id, on_event),
            };
            budget -= turn.used.min(budget);
            delivered += turn.events;
            if turn.again {
                self.ready.push_back(item);
            }
        }
        delivered
    }

    fn serve_socket(
        &mut self,
        id: u32,
        budget: usize,
        on_event: &mut dyn FnMut(Event<'_>),
        report: &mut PollReport,
    ) -> Turn {
        let socket = &self.sockets[id as usize];
        let fd = socket.fd();
        let turn = match socket.kind {
            Kind::Udp(_) => {
                // One recvmmsg batch per turn.
                let want = budget.min(self.rx.slots());
                let (taken, delivered) = self.rx.receive_from(
                    fd,
                    SocketId(id),
                    want,
                    &mut self.stats,
                    &mut |socket, from, data| on_event(Event::Datagram { socket, from, data }),
                );
                report.datagrams += delivered;
                Turn {
                    used: taken,
                    events: delivered,
                    again: taken == want,
                }
            }
            Kind::Listener(_) => self.accept_one(id, fd, on_event),
        };
        if !turn.again {
            self.sockets[id as usize].ready = false;
        }
        turn
    }

    /// One accept on a ready listener.
    fn accept_one(&mut self, id: u32, fd: RawFd, on_event: &mut dyn FnMut(Event<'_>)) -> Turn {
        let (stream, from) = match self.accept_or_shed(id, fd) {
            Ok(accepted) => accepted,
            Err(turn) => return turn,
        };
        if self.conns.len() >= self.max_connections {
            drop(stream);
            self.stats.accepts_over_limit += 1;
            return Turn::ONE_MORE;
        }
        sys::set_send_buffer(stream.as_raw_fd(), self.socket_send_bytes);
        match self.add_conn(stream) {
            Ok(conn) => {
                self.stats.accepted += 1;
                on_event(Event::Accepted {
                    listener: SocketId(id),
                    conn,
                    from,
                });
                Turn {
                    used: 1,
                    events: 1,
                    again: true,
                }
            }
            Err(_) => {
                self.stats.accept_errors += 1;
                Turn::ONE_MORE
            }
        }
    }

    /// Accepts one connection on listener `id`; when there is none to hand up, the turn that
    /// was instead (drained, a connection shed or refused, or the listener paused).
    fn accept_or_shed(&mut self, id: u32, fd: RawFd) -> Result<(TcpStream, SocketAddr), Turn> {
        let error = loop {
            match sys::accept_stream(fd) {
                Ok(accepted) => return Ok(accepted),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break e,
            }
        };
        if error.kind() == io::ErrorKind::WouldBlock {
            return Err(Turn::DRAINED);
        }
        if sys::is_out_of_fds(&error) {
            match self.reserve.shed(fd) {
                Shed::Kept(stream, from) => return Ok((stream, from)),
                Shed::One => {
                    self.stats.accepts_shed += 1;
                    return Err(Turn::ONE_MORE);
                }
                Shed::Nothing => return Err(Turn::DRAINED),
                Shed::Failed | Shed::NoReserve => self.stats.accepts_shed += 1,
            }
        } else {
            self.stats.accept_errors += 1;
            // Errors that concern one connection only (it was aborted, or a firewall
            // refused it): go on with the next. Anything else may persist: pause.
            if matches!(
                error.raw_os_error(),
                Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EPERM)
            ) {
                return Err(Turn::ONE_MORE);
            }
        }
        // Stop accepting until the next poll (the listener's backlog keeps its edge-less
        // connections meanwhile): never a busy loop.
        if !self.paused.contains(&id) {
            self.paused.push(id);
        }
        Err(Turn {
            used: 1,
            events: 0,
            again: false,
        })
    }

    /// One read on a ready connection.
    fn serve_conn(&mut self, id: ConnId, on_event: &mut dyn FnMut(Event<'_>)) -> Turn {
        let conn = match self.conns.get_mut(id) {
            Some(conn) => conn,
            None => return Turn::DRAINED, // closed since it was listed
        };
        let result = loop {
            match (&conn.stream).read(&mut self.read_buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let reason = match result {
            Ok(0) => CloseReason::Eof,
            Ok(n) => {
                on_event(Event::Stream {
                    conn: id,
                    data: &self.read_buf[..n],
                });
                return Turn {
                    used: 1,
                    events: 1,
                    again: true,
                };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.ready = false;
                return Turn::DRAINED;
            }
            Err(e) => CloseReason::Error(e.kind()),
        };
        self.remove_conn(id);
        on_event(Event::Closed { conn: id, reason });
        Turn {
            used: 1,
            events: 1,
            again: false,
        }
    }

    /// Waits for events until `deadline`; returns how many entries of `self.events` are set.
    fn wait(&mut self, deadline: Instant, waited: &mut Duration) -> io::Result<usize> {
        loop {
            let left = time_left(deadline);
            let start = Instant::now();
            let res = match self.wait_mode {
                WaitMode::Pwait2 => self.wait_pwait2(left),
                WaitMode::Millis => self.wait_millis(left),
            };
            *waited += start.elapsed();
            match res {
                // A timeout that came before the deadline (never expected, but cheap to
                // honour): wait for the rest.
                Ok(0) if !left.is_zero() && Instant::now() < deadline => continue,
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Ok(0);
                    }
                }
                Err(e)
                    if self.wait_mode == WaitMode::Pwait2
                        && matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) =>
                {
                    // Kernel before 5.11, or a seccomp filter that does not know the call.
                    self.wait_mode = WaitMode::Millis;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn wait_pwait2(&mut self, left: Duration) -> io::Result<usize> {
        let ts = KernelTimespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        // SAFETY: `events` is valid for `events.len()` entries, `ts` is a valid
        // __kernel_timespec that outlives the call, and a null sigmask means "keep the mask"
        // (its size argument is then ignored).
        let n = syscall!(syscall(
            libc::SYS_epoll_pwait2,
            self.epfd.as_raw_fd(),
            self.events.as_mut_ptr(),
            self.events.len() as c_int,
            &ts as *const KernelTimespec,
            ptr::null::<libc::sigset_t>(),
            0usize
        ))?;
        Ok(n as usize)
    }

    fn wait_millis(&mut self, left: Duration) -> io::Result<usize> {
        // Round up so that the wait never ends before the deadline.
        let ms = (left.as_nanos() + 999_999) / 1_000_000;
        let ms = ms.min(c_int::MAX as u128) as c_int;
        // SAFETY: `events` is valid for `events.len()` entries.
        let n = syscall!(epoll_wait(
            self.epfd.as_raw_fd(),
            self.events.as_mut_ptr(),
            self.events.len() as c_int,
            ms
        ))?;
        Ok(n as usize)
    }
}

/// Writes what `conn` has queued until it is empty or the kernel takes no more. Returns the
/// bytes written and the error that ended the connection, if one did.
fn write_pending(conn: &mut Conn, queued_bytes: &mut usize) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while !conn.send.is_empty() {
        match sys::send_stream_bytes(conn.stream.as_raw_fd(), conn.send.pending()) {
            Ok(0) => break, // not expected with bytes pending; never loop on it
            Ok(n) => {
                conn.send.consume(n);
                *queued_bytes -= n;
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

impl Backend for Epoll {
    fn model(&self) -> Model {
        Model::Epoll
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let socket = sys::bind_udp(addr, self.buffer_bytes)?;
        self.add_socket(Kind::Udp(socket), UDP_EVENTS)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        match self.sockets.get(id.0 as usize).map(|s| &s.kind) {
            Some(Kind::Udp(s)) => s.local_addr(),
            Some(Kind::Listener(l)) => l.local_addr(),
            None => Err(unknown_socket(id)),
        }
    }

    fn send(&mut self, id: SocketId, peer: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        if let Some(Socket {
            kind: Kind::Listener(_),
            ..
        }) = self.sockets.get(id.0 as usize)
        {
            return Err(SendError::UnknownSocket); // not a datagram socket
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
        self.tx.sort_by_socket();
        let entries = self.tx.entries();
        let mut start = 0;
        while start < entries.len() {
            let socket = entries[start].socket;
            let mut end = start + 1;
            while end < entries.len()
                && entries[end].socket == socket
                && end - start < self.tx_batch.capacity()
            {
                end += 1;
            }
            let fd = self.sockets[socket as usize].fd();
            self.tx_batch
                .send(fd, &self.tx, &entries[start..end], &mut report);
            start = end;
        }
        self.stats.send_errors += report.failed as u64;
        self.tx.clear();

        // Streams: every connection with new bytes, until the kernel takes no more; the rest
        // waits for the connection's EPOLLOUT edge.
        let mut list = mem::take(&mut self.to_flush);
        for id in list.drain(..) {
            let conn = match self.conns.get_mut(id) {
                Some(conn) => conn,
                None => continue,
            };
            conn.to_flush = false;
            let (written, error) = write_pending(conn, &mut self.queued_bytes);
            report.stream_bytes += written;
            if let Some(e) = error {
                self.fail_conn(id, e.kind());
            }
        }
        self.to_flush = list;
        Ok(report)
    }

    fn poll(
        &mut self,
        deadline: Instant,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<PollReport> {
        let mut report = PollReport::default();
        // Listeners paused by descriptor exhaustion try again, once per poll.
        while let Some(id) = self.paused.pop() {
            self.mark_socket_ready(id);
        }
        loop {
            // Work already listed (a budget cut, a failed write) is served without waiting.
            let busy = !self.ready.is_empty() || !self.closing.is_empty();
            let until = if busy { Instant::now() } else { deadline };
            let n = self.wait(until, &mut report.waited)?;
            let woke = self.intake(n);
            if woke {
                report.events += 1;
            }
            let delivered = self.serve(on_event, &mut report);
            report.events += delivered;
            // Only internal work (writes, shed connections, stale edges): wait again.
            if delivered > 0 || woke || Instant::now() >= deadline {
                return Ok(report);
            }
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let listener = sys::listen_tcp(addr)?;
        self.add_socket(Kind::Listener(listener), LISTENER_EVENTS)
    }

    fn connect(&mut self, addr: SocketAddr, timeout: Duration) -> io::Result<ConnId> {
        if self.conns.len() >= self.max_connections {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                format!(
                    "max_connections ({}) connections are open",
                    self.max_connections
                ),
            ));
        }
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nonblocking(true)?;
        sys::prepare_stream(stream.as_raw_fd());
        sys::set_send_buffer(stream.as_raw_fd(), self.socket_send_bytes);
        self.add_conn(stream)
    }

    fn send_stream(&mut self, id: ConnId, data: &[u8]) -> Result<(), SendError> {
        let conn = self.conns.get_mut(id).ok_or(SendError::Closed)?;
        if let Err(e) = conn.send.push(data) {
            if e == SendError::Full {
                self.stats.stream_send_full += 1;
            }
            return Err(e);
        }
        self.queued_bytes += data.len();
        if !conn.to_flush && !data.is_empty() {
            conn.to_flush = true;
            self.to_flush.push(id);
        }
        Ok(())
    }

    fn send_capacity(&self, id: ConnId) -> Option<usize> {
        self.conns.get(id).map(|c| c.send.capacity_left())
    }

    fn stream_queued(&self) -> usize {
        self.queued_bytes
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn close(&mut self, id: ConnId) {
        if let Some(conn) = self.remove_conn(id) {
            if !conn.send.is_empty() {
                // One try, never waited for.
                let _ = sys::send_stream_bytes(conn.stream.as_raw_fd(), conn.send.pending());
            }
        } else {
            // Failed by a write but not reported yet: the caller closed it first.
            self.closing.retain(|c| c.0 != id);
        }
    }

    fn waker(&self) -> Waker {
        Waker::new(self.waker.clone())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

/// The waker: an eventfd in the epoll set. Shared with every [`Waker`] clone, so its fd is
/// closed when the backend and the last waker are gone.
pub(crate) struct EventFd {
    pub(crate) fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: no pointers are passed.
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Resets the counter so the eventfd stops being readable.
    pub(crate) fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: `value` is 8 writable bytes that outlive the call. EAGAIN (already drained)
        // is fine.
        let _ = syscall!(read(
            self.fd.as_raw_fd(),
            &mut value as *mut u64 as *mut libc::c_void,
            mem::size_of::<u64>()
        ));
    }
}

impl Wake for EventFd {
    fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: `one` is 8 readable bytes that outlive the call.
        match syscall!(write(
            self.fd.as_raw_fd(),
            &one as *const u64 as *const libc::c_void,
            mem::size_of::<u64>()
        )) {
            Ok(_) => Ok(()),
            // The counter is saturated: a wake-up is already pending.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Preallocated `recvmmsg` state: `slots` receive buffers of `slot_bytes`, with their iovecs,
/// source addresses and message headers.
struct RecvBatch {
    slot_bytes: usize,
    bufs: Box<[u8]>,
    iovecs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside `iovecs` and `msgs` only ever point into this batch's own
// heap buffers (they are rewritten before every call), and the batch is used by one thread at
// a time through `&mut`.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    fn new(slots: usize, slot_bytes: usize) -> RecvBatch {
        RecvBatch {
            slot_bytes,
            bufs: vec![0u8; slots * slot_bytes].into_boxed_slice(),
            iovecs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ]
            .into_boxed_slice(),
            addrs: vec![sys::zeroed_storage(); slots].into_boxed_slice(),
            msgs: (0..slots).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    /// How many datagrams one `recvmmsg` can take.
    fn slots(&self) -> usize {
        self.msgs.len()
    }

    /// One `recvmmsg` of up to `want` datagrams (at most the batch size) without blocking.
    fn recv(&mut self, fd: RawFd, want: usize) -> io::Result<usize> {
        let want = want.min(self.msgs.len());
        let bufs = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovecs[..want].iter_mut().enumerate() {
            // SAFETY: slot `i < slots` lies inside `bufs` (slots * slot_bytes bytes).
            iov.iov_base = unsafe { bufs.add(i * self.slot_bytes) } as *mut libc::c_void;
            iov.iov_len = self.slot_bytes;
        }
        let iovecs = self.iovecs.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        for (i, msg) in self.msgs[..want].iter_mut().enumerate() {
            let hdr = &mut msg.msg_hdr;
            // SAFETY: `i < want <= slots`, the length of `iovecs` and `addrs`.
            hdr.msg_iov = unsafe { iovecs.add(i) };
            hdr.msg_iovlen = 1;
            // SAFETY: as above.
            hdr.msg_name = unsafe { addrs.add(i) } as *mut libc::c_void;
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: the first `want` headers point at valid, exclusively owned iovecs, buffers and
        // address slots of the sizes written into them; no timeout pointer.
        let n = syscall!(recvmmsg(
            fd,
            self.msgs.as_mut_ptr(),
            want as c_uint,
            libc::MSG_DONTWAIT as _,
            ptr::null_mut()
        ))?;
        Ok(n as usize)
    }

    /// Receives from one ready socket until `budget` datagrams were taken or it has no more.
    /// Returns (datagrams taken from the kernel, datagrams delivered): truncated datagrams and
    /// unreadable source addresses are taken, counted in `stats` and not delivered.
    fn receive_from(
        &mut self,
        fd: RawFd,
        id: SocketId,
        mut budget: usize,
        stats: &mut IoStats,
        on_datagram: &mut dyn FnMut(SocketId, SocketAddr, &[u8]),
    ) -> (usize, usize) {
        let (mut taken, mut delivered) = (0, 0);
        while budget > 0 {
            let want = budget.min(self.msgs.len());
            let n = match self.recv(fd, want) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    stats.recv_errors += 1;
                    break;
                }
            };
            for i in 0..n {
                let msg = &self.msgs[i];
                if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    stats.truncated += 1;
                    continue;
                }
                match sys::raw_to_socket_addr(&self.addrs[i], msg.msg_hdr.msg_namelen) {
                    Some(peer) => {
                        let start = i * self.slot_bytes;
                        let len = (msg.msg_len as usize).min(self.slot_bytes);
                        on_datagram(id, peer, &self.bufs[start..start + len]);
                        delivered += 1;
                    }
                    None => stats.recv_errors += 1,
                }
            }
            taken += n;
            budget -= n;
            if n < want {
                break; // the socket is drained (for now)
            }
        }
        (taken, delivered)
    }
}

/// Preallocated `sendmmsg` state for one batch.
struct SendBatch {
    iovecs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside are rewritten before every call and only point into this
// batch or into the send slab borrowed for that call; the batch is used through `&mut`.
unsafe impl Send for SendBatch {}

impl SendBatch {
    fn new(capacity: usize) -> SendBatch {
        SendBatch {
            iovecs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                capacity
            ]
            .into_boxed_slice(),
            addrs: vec![sys::zeroed_storage(); capacity].into_boxed_slice(),
            msgs: (0..capacity).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Sends `batch` (at most `capacity` datagrams of one socket) with `sendmmsg`. A datagram
    /// the kernel rejects for itself is skipped; `EAGAIN`/`ENOBUFS` drops the rest of the batch.
    fn send(&mut self, fd: RawFd, slab: &TxSlab, batch: &[TxEntry], report: &mut FlushReport) {
        let n = batch.len().min(self.capacity());
        for (i, entry) in batch[..n].iter().enumerate() {
            let data = slab.data(entry);
            // The kernel only reads through this pointer.
            self.iovecs[i].iov_base = data.as_ptr() as *mut libc::c_void;
            self.iovecs[i].iov_len = data.len();
            self.msgs[i].msg_hdr.msg_namelen =
                sys::socket_addr_to_raw(&entry.peer, &mut self.addrs[i]);
        }
        let iovecs = self.iovecs.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        for (i, msg) in self.msgs[..n].iter_mut().enumerate() {
            let hdr = &mut msg.msg_hdr;
            // SAFETY: `i < n <= capacity`, the length of `iovecs` and `addrs`.
            hdr.msg_iov = unsafe { iovecs.add(i) };
            hdr.msg_iovlen = 1;
            // SAFETY: as above.
            hdr.msg_name = unsafe { addrs.add(i) } as *mut libc::c_void;
            hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        let mut i = 0;
        while i < n {
            // SAFETY: headers `i..n` point at valid iovecs (into `slab`, borrowed for this call)
            // and addresses of the lengths written into them.
            let res = syscall!(sendmmsg(
                fd,
                unsafe { self.msgs.as_mut_ptr().add(i) },
                (n - i) as c_uint,
                0
            ));
            match res {
                Ok(m) if m > 0 => {
                    report.sent += m as usize;
                    i += m as usize;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if sys::is_would_block(&e) => {
                    report.failed += n - i;
                    break;
                }
                // This datagram is refused for itself (bad address family, too big for the
                // route, ...): skip it and go on with the next.
                Ok(_) | Err(_) => {
                    report.failed += 1;
                    i += 1;
                }
            }
        }
    }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct; all-zero bytes (null pointers, zero lengths) are a
    // valid value.
    unsafe { mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The millisecond fallback (kernels without epoll_pwait2) still honours deadlines and
    /// delivers datagrams.
    #[test]
    fn millis_fallback_waits_and_receives() {
        let mut io = Epoll::open(&Config::default()).unwrap();
        io.wait_mode = WaitMode::Millis;
        let a = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a_addr = io.local_addr(a).unwrap();

        let deadline = Instant::now() + Duration::from_millis(15);
        let report = io
            .poll(deadline, &mut crate::on_datagrams(|_, _, _| panic!("idle")))
            .unwrap();
        assert!(Instant::now() >= deadline);
        assert_eq!(report.events, 0);

        io.send(a, a_addr, b"self").unwrap();
        assert_eq!(io.flush().unwrap().sent, 1);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60); // hang guard
        while got.is_empty() && Instant::now() < deadline {
            io.poll(
                deadline,
                &mut crate::on_datagrams(|_, peer, b| got.push((peer, b.to_vec()))),
            )
            .unwrap();
        }
        assert_eq!(got, vec![(a_addr, b"self".to_vec())]);
        assert_eq!(io.wait_mode, WaitMode::Millis);
    }

    /// A datagram the kernel refuses (IPv6 peer from an IPv4 socket) fails alone; the ones
    /// after it are still sent.
    #[test]
    fn flush_skips_a_refused_datagram() {
        let mut io = Epoll::open(&Config::default()).unwrap();
        let a = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a_addr = io.local_addr(a).unwrap();
        io.send(a, a_addr, b"1").unwrap();
        io.send(a, "[::1]:9".parse().unwrap(), b"bad").unwrap();
        io.send(a, a_addr, b"2").unwrap();
        let report = io.flush().unwrap();
        assert_eq!(
            report,
            FlushReport {
                sent: 2,
                failed: 1,
                stream_bytes: 0
            }
        );
        assert_eq!(io.stats().send_errors, 1);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60); // hang guard
        while got.len() < 2 && Instant::now() < deadline {
            io.poll(
                deadline,
                &mut crate::on_datagrams(|_, _, b| got.push(b.to_vec())),
            )
            .unwrap();
        }
        assert_eq!(got, vec![b"1".to_vec(), b"2".to_vec()]);
    }

    #[test]
    fn tokens_never_collide() {
        for (index, generation) in [(0, 0), (u32::MAX, u32::MAX), (7, GEN_MASK), (1, 1 << 30)] {
            let token = conn_token(ConnId { index, generation });
            assert_ne!(token, WAKER_TOKEN);
            assert_ne!(token & CONN_TAG, 0);
            assert_eq!(token as u32, index);
        }
        assert_eq!(u64::from(u32::MAX) & CONN_TAG, 0); // socket ids
    }

    /// An edge reported for a connection that was closed since (its slot already reused) does
    /// not reach the connection in the slot now.
    #[test]
    fn an_old_connections_edge_does_not_reach_its_slots_successor() {
        let mut io = Epoll::open(&Config::default()).unwrap();
        let l = io.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = io.local_addr(l).unwrap();
        let old = io.connect(addr, Duration::from_secs(60)).unwrap();
        io.close(old);
        let new = io.connect(addr, Duration::from_secs(60)).unwrap();
        assert_eq!(new.index, old.index);
        assert!(io.ready.is_empty());
        io.conn_edge(conn_token(old), libc::EPOLLIN as u32);
        assert!(io.ready.is_empty());
        io.conn_edge(conn_token(new), libc::EPOLLIN as u32);
        assert_eq!(io.ready.len(), 1);
    }

    /// A write failure is reported by the next poll (which does not wait for it), unless the
    /// caller closes the connection first.
    #[test]
    fn a_failed_write_is_reported_once_unless_closed_first() {
        let mut io = Epoll::open(&Config::default()).unwrap();
        let l = io.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = io.local_addr(l).unwrap();
        let a = io.connect(addr, Duration::from_secs(60)).unwrap();
        let b = io.connect(addr, Duration::from_secs(60)).unwrap();
        io.send_stream(a, b"queued").unwrap();
        io.fail_conn(a, io::ErrorKind::BrokenPipe);
        io.fail_conn(b, io::ErrorKind::BrokenPipe);
        assert_eq!((io.connections(), io.stream_queued()), (0, 0));
        assert_eq!(io.send_stream(a, b"x"), Err(SendError::Closed));
        io.close(b);
        let mut closed = Vec::new();
        // The hour-long deadline is never reached: the pending Closed ends the poll at once.
        let report = io
            .poll(Instant::now() + Duration::from_secs(3600), &mut |e| {
                if let Event::Closed { conn, reason } = e {
                    closed.push((conn, reason));
                }
            })
            .unwrap();
        assert_eq!(
            closed,
            vec![(a, CloseReason::Error(io::ErrorKind::BrokenPipe))]
        );
        assert!(report.events >= 1);
    }
}
