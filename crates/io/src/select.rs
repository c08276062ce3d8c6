//! The POSIX `select(2)` backend, for every unix.
//!
//! Each poll builds two `fd_set`s: the read set holds the waker, the UDP sockets, the TCP
//! listeners and every stream connection; the write set holds the connections that still have
//! bytes queued that the kernel did not take at the last flush. It waits in `select` with a
//! microsecond `timeval` (rounded up, so the wait never ends before the deadline), then:
//!
//! 1. writes the queued bytes of every writable connection (until `EAGAIN` or empty; no event);
//! 2. delivers the [`Event::Closed`] of connections a write failed on since the last poll;
//! 3. serves the ready sockets, listeners and connections in one rotating order, all sharing the
//!    `max_events` budget: UDP sockets one `recvmsg` per datagram until `EAGAIN`, listeners one
//!    `accept` per connection until `EAGAIN`, connections one `read` per [`Event::Stream`] into
//!    the one shared read buffer until a short read or `EAGAIN`.
//!
//! `select` is level-triggered: what the budget leaves stays readable, so the next poll's
//! `select` returns at once and takes the rest. When the budget runs out, the next poll starts
//! serving right after the descriptor it was cut on, so one flooded socket or connection cannot
//! take the whole budget poll after poll; otherwise the first descriptor served moves on by one
//! per poll. Every accepted socket costs one unit of the budget, also one closed at once, so a
//! connection storm cannot hold a poll either.
//!
//! `select` cannot watch an fd `>= FD_SETSIZE` (writing one into an `fd_set` is out of bounds),
//! so nothing larger is ever put into a set: [`Backend::bind`], [`Backend::listen`] and
//! [`Backend::connect`] fail with `InvalidInput` (naming `FD_SETSIZE`) when the new socket's fd
//! is that high (connect's connection is made first, then closed), and a listener's connection
//! accepted with such an fd is closed at once and counted in [`IoStats::accepts_refused`]. The
//! io crate has no logger: the server logs that counter (and the other accept counters).
//!
//! Accepting: std's `accept` (close-on-exec; `accept4` on Linux), then `O_NONBLOCK` and
//! `TCP_NODELAY`. Beyond [`Config::max_connections`] a connection is closed at once and counted
//! in [`IoStats::accepts_over_limit`]. On `EMFILE`/`ENFILE` the backend closes its reserve
//! descriptor (`/dev/null`, opened with the backend; [`sys::Reserve`], shared with epoll and
//! blocking), accepts the pending connection with the freed descriptor, closes it, reopens the
//! reserve and counts [`IoStats::accepts_shed`] (when the reserve reopens while the connection
//! still holds its descriptor, descriptors were freed meanwhile and the connection is kept
//! instead). If the reserve cannot be reopened, the listeners leave the read set (counted once
//! as shed), so no poll spins on a listener it cannot accept from; every later poll tries to
//! reopen the reserve first and puts them back once it succeeds.
//!
//! Writes are std's `TcpStream::write`, which is `send(MSG_NOSIGNAL)` on Linux and the BSDs; on
//! Apple platforms the listeners get `SO_NOSIGPIPE` (inherited by accepted sockets) and std
//! sets it on the sockets it connects. So a write to a reset peer is an `EPIPE` error that
//! closes the connection, never a `SIGPIPE`.
//!
//! The waker is a non-blocking Unix datagram socket pair. Flush is one `sendto` per datagram,
//! in queueing order, then the connections' queued bytes.

use std::io::{self, Read, Write};
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::raw::c_int;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conns::{ConnTable, SendBuf};
use crate::slab::{self, TxSlab};
use crate::sys::{self, Reserve, Shed};
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, CloseReason, Config, ConnId, Event,
    FlushReport, IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

pub(crate) struct Select {
    /// UDP sockets and TCP listeners, indexed by [`SocketId`].
    sockets: Vec<Socket>,
    conns: ConnTable<Conn>,
    /// One more than the highest connection slot index ever used: connection slots are
    /// positions `sockets.len()..sockets.len() + conn_slots` of the serving order.
    conn_slots: usize,
    waker: Arc<PairWaker>,
    max_events: usize,
    buffer_bytes: usize,
    rx_buf: Box<[u8]>,
    rx_addr: libc::sockaddr_storage,
    tx: TxSlab,
    stats: IoStats,
    /// Where the next poll starts serving (a position in the serving order).
    rotate: usize,
    /// The shared stream read buffer (`stream_read_bytes`).
    stream_buf: Box<[u8]>,
    stream_send_bytes: usize,
    /// `SO_SNDBUF` for stream sockets.
    socket_send_bytes: usize,
    max_connections: usize,
    /// Bytes queued in every connection's send buffer together.
    queued: usize,
    /// Connections a write failed on (already closed), for the next poll's `Closed` events.
    failed: Vec<(ConnId, CloseReason)>,
    /// The reserve descriptor given up to shed a connection on `EMFILE`; while it cannot be
    /// reopened, listeners are not watched.
    reserve: Reserve,
}

enum Socket {
    Udp(UdpSocket),
    Listener(TcpListener),
}

impl Socket {
    fn fd(&self) -> RawFd {
        match self {
            Socket::Udp(s) => s.as_raw_fd(),
            Socket::Listener(l) => l.as_raw_fd(),
        }
    }
}

struct Conn {
    stream: TcpStream,
    send: SendBuf,
}

/// The read and write sets of one wait.
struct FdSets {
    read: libc::fd_set,
    write: libc::fd_set,
}

impl FdSets {
    fn empty() -> FdSets {
        // SAFETY: fd_set is a plain C struct; all-zero bytes are a valid (empty) set.
        let mut sets: FdSets = unsafe { mem::zeroed() };
        // SAFETY: both sets are valid, exclusively borrowed fd_sets.
        unsafe {
            libc::FD_ZERO(&mut sets.read);
            libc::FD_ZERO(&mut sets.write);
        }
        sets
    }

    /// Whether `fd` is in the read set. `fd` must be below FD_SETSIZE.
    fn readable(&self, fd: RawFd) -> bool {
        debug_assert!(fd >= 0 && (fd as usize) < libc::FD_SETSIZE);
        // SAFETY: every fd this backend holds is below FD_SETSIZE (checked when it was added).
        unsafe { libc::FD_ISSET(fd, &self.read) }
    }

    /// Whether `fd` is in the write set. `fd` must be below FD_SETSIZE.
    fn writable(&self, fd: RawFd) -> bool {
        debug_assert!(fd >= 0 && (fd as usize) < libc::FD_SETSIZE);
        // SAFETY: as in `readable`.
        unsafe { libc::FD_ISSET(fd, &self.write) }
    }
}

impl Select {
    pub(crate) fn open(cfg: &Config) -> io::Result<Select> {
        let waker = Arc::new(PairWaker::new()?);
        check_fd(waker.rx.as_raw_fd())?;
        Ok(Select {
            sockets: Vec::new(),
            conns: ConnTable::new(),
            conn_slots: 0,
            waker,
            max_events: cfg.max_events,
            buffer_bytes: cfg.socket_buffer_bytes,
            rx_buf: vec![0u8; cfg.max_datagram].into_boxed_slice(),
            rx_addr: sys::zeroed_storage(),
            tx: TxSlab::new(cfg),
            stats: IoStats::default(),
            rotate: 0,
            stream_buf: vec![0u8; cfg.stream_read_bytes].into_boxed_slice(),
            stream_send_bytes: cfg.stream_send_bytes,
            socket_send_bytes: cfg.stream_socket_send_bytes,
            max_connections: cfg.max_connections,
            queued: 0,
            failed: Vec::new(),
            reserve: Reserve::open()?,
        })
    }

    /// Whether listeners may be watched: the reserve descriptor is held (reopened if it was
    /// given up and could not be reopened then).
    fn accepting(&mut self) -> bool {
        self.reserve.held()
    }

    /// Waits until something in the sets is ready or `deadline` passes (at once when closed
    /// events are pending); returns the sets.
    fn wait(&mut self, deadline: Instant, waited: &mut Duration) -> io::Result<FdSets> {
        let accepting = self.accepting();
        loop {
            let mut sets = FdSets::empty();
            let waker_fd = self.waker.rx.as_raw_fd();
            let mut max_fd = waker_fd;
            // SAFETY (all FD_SET calls below): every fd put in a set is below FD_SETSIZE: open,
            // bind, listen, accept and connect check it, and nothing else enters the sets.
            unsafe { libc::FD_SET(waker_fd, &mut sets.read) };
            for socket in &self.sockets {
                if let Socket::Listener(_) = socket {
                    if !accepting {
                        continue;
                    }
                }
                let fd = socket.fd();
                max_fd = max_fd.max(fd);
                // SAFETY: see above.
                unsafe { libc::FD_SET(fd, &mut sets.read) };
            }
            for (_, conn) in self.conns.iter_mut() {
                let fd = conn.stream.as_raw_fd();
                max_fd = max_fd.max(fd);
                // SAFETY: see above.
                unsafe { libc::FD_SET(fd, &mut sets.read) };
                if !conn.send.is_empty() {
                    // SAFETY: see above.
                    unsafe { libc::FD_SET(fd, &mut sets.write) };
                }
            }
            let left = if self.failed.is_empty() {
                time_left(deadline)
            } else {
                Duration::ZERO
            };
            let mut tv = timeval(left);
            let start = Instant::now();
            // SAFETY: both sets and `tv` are valid and outlive the call; the except set is null,
            // which select allows.
            let res = syscall!(select(
                max_fd + 1,
                &mut sets.read,
                &mut sets.write,
                ptr::null_mut(),
                &mut tv
            ));
            *waited += start.elapsed();
            match res {
                Ok(0) if !left.is_zero() && Instant::now() < deadline => continue,
                Ok(_) => return Ok(sets),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Ok(FdSets::empty());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One non-blocking `recvmsg` into the receive buffer: (length, msg_flags, address length).
    fn recv_one(&mut self, fd: RawFd) -> io::Result<(usize, c_int, libc::socklen_t)> {
        let mut iov = libc::iovec {
            iov_base: self.rx_buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: self.rx_buf.len(),
        };
        // SAFETY: msghdr is a plain C struct; all-zero bytes are a valid value.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_name = &mut self.rx_addr as *mut libc::sockaddr_storage as *mut libc::c_void;
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        // SAFETY: `hdr` points at `iov` (the receive buffer, of the length given) and at the
        // address storage; all outlive the call.
        let n = syscall!(recvmsg(fd, &mut hdr, 0))?;
        Ok((n as usize, hdr.msg_flags, hdr.msg_namelen))
    }

    /// Receives datagrams on UDP socket `index` until `EAGAIN` or the budget is spent.
    fn serve_udp(
        &mut self,
        index: usize,
        budget: &mut usize,
        report: &mut PollReport,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        let fd = self.sockets[index].fd();
        while *budget > 0 {
            let (len, flags, addr_len) = match self.recv_one(fd) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.stats.recv_errors += 1;
                    break;
                }
            };
            *budget -= 1;
            if flags & libc::MSG_TRUNC != 0 {
                self.stats.truncated += 1;
                continue;
            }
            match sys::raw_to_socket_addr(&self.rx_addr, addr_len) {
                Some(from) => {
                    let len = len.min(self.rx_buf.len());
                    on_event(Event::Datagram {
                        socket: SocketId(index as u32),
                        from,
                        data: &self.rx_buf[..len],
                    });
                    report.datagrams += 1;
                    report.events += 1;
                }
                None => self.stats.recv_errors += 1,
            }
        }
    }

    /// Accepts on listener `index` until `EAGAIN` or the budget is spent. Every accepted
    /// socket costs one unit of the budget, also one closed at once.
    fn serve_listener(
        &mut self,
        index: usize,
        budget: &mut usize,
        report: &mut PollReport,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        let listener = match &self.sockets[index] {
            Socket::Listener(l) => l,
            Socket::Udp(_) => return,
        };
        while *budget > 0 {
            let (stream, from) = match listener.accept() {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if sys::is_out_of_fds(&e) => match self.reserve.shed(listener.as_raw_fd()) {
                    Shed::Kept(stream, from) => (stream, from),
                    Shed::One => {
                        *budget -= 1;
                        self.stats.accepts_shed += 1;
                        continue;
                    }
                    // Level-triggered: what is still pending is tried again by the next poll.
                    Shed::Nothing | Shed::Failed => break,
                    Shed::NoReserve => {
                        // Until a later poll reopens the reserve, the listeners are not watched.
                        self.stats.accepts_shed += 1;
                        break;
                    }
                },
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                    *budget -= 1;
                    self.stats.accept_errors += 1;
                    continue;
                }
                Err(_) => {
                    self.stats.accept_errors += 1;
                    break;
                }
            };
            *budget -= 1;
            // Each refusal below closes `stream` as it goes out of scope.
            if check_fd(stream.as_raw_fd()).is_err() {
                self.stats.accepts_refused += 1;
                continue;
            }
            if self.conns.len() >= self.max_connections {
                self.stats.accepts_over_limit += 1;
                continue;
            }
            if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
                self.stats.accept_errors += 1;
                continue;
            }
            sys::set_send_buffer(stream.as_raw_fd(), self.socket_send_bytes);
            let conn = insert_conn(
                &mut self.conns,
                &mut self.conn_slots,
                stream,
                self.stream_send_bytes,
            );
            self.stats.accepted += 1;
            on_event(Event::Accepted {
                listener: SocketId(index as u32),
                conn,
                from,
            });
            report.events += 1;
        }
    }

    /// Reads connection slot `index` until a short read, `EAGAIN`, its end or the budget.
    fn serve_conn(
        &mut self,
        index: u32,
        budget: &mut usize,
        report: &mut PollReport,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        while *budget > 0 {
            let (conn, entry) = match self.conns.at_mut(index) {
                Some(found) => found,
                None => return,
            };
            let reason = match (&entry.stream).read(&mut self.stream_buf) {
                Ok(0) => CloseReason::Eof,
                Ok(n) => {
                    *budget -= 1;
                    on_event(Event::Stream {
                        conn,
                        data: &self.stream_buf[..n],
                    });
                    report.events += 1;
                    if n < self.stream_buf.len() {
                        return;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => CloseReason::Error(e.kind()),
            };
            *budget -= 1;
            self.remove_conn(conn);
            on_event(Event::Closed { conn, reason });
            report.events += 1;
            return;
        }
    }

    /// Takes a connection out of the table (closing its socket) and out of the queued total.
    fn remove_conn(&mut self, conn: ConnId) -> Option<Conn> {
        let entry = self.conns.remove(conn)?;
        self.queued -= entry.send.len();
        Some(entry)
    }

    /// Writes the queued bytes of connection slot `index` until `EAGAIN` or empty; a write
    /// error closes it and queues its `Closed` event. Returns the bytes written.
    fn write_conn(&mut self, index: u32) -> usize {
        let (conn, entry) = match self.conns.at_mut(index) {
            Some(found) => found,
            None => return 0,
        };
        let (written, error) = write_queued(entry);
        self.queued -= written;
        if let Some(e) = error {
            self.remove_conn(conn);
            self.failed.push((conn, CloseReason::Error(e.kind())));
        }
        written
    }
}

/// Inserts a connection and keeps the slot high-water mark.
fn insert_conn(
    conns: &mut ConnTable<Conn>,
    conn_slots: &mut usize,
    stream: TcpStream,
    send_bytes: usize,
) -> ConnId {
    let conn = conns.insert(Conn {
        stream,
        send: SendBuf::new(send_bytes),
    });
    *conn_slots = (*conn_slots).max(conn.index as usize + 1);
    conn
}

/// Writes a connection's queued bytes until `EAGAIN` or empty: (bytes written, the error that
/// ended the writing if any).
fn write_queued(conn: &mut Conn) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while !conn.send.is_empty() {
        match (&conn.stream).write(conn.send.pending()) {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                conn.send.consume(n);
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

impl Backend for Select {
    fn model(&self) -> Model {
        Model::Select
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = sys::bind_udp(addr, self.buffer_bytes)?;
        check_fd(socket.as_raw_fd())?; // on error `socket` is dropped and closed here
        self.sockets.push(Socket::Udp(socket));
        Ok(id)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        match self.sockets.get(id.0 as usize) {
            Some(Socket::Udp(s)) => s.local_addr(),
            Some(Socket::Listener(l)) => l.local_addr(),
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
        let mut addr = sys::zeroed_storage();
        for entry in self.tx.entries() {
            let fd = self.sockets[entry.socket as usize].fd();
            let data = self.tx.data(entry);
            let len = sys::socket_addr_to_raw(&entry.peer, &mut addr);
            loop {
                // SAFETY: `data` and `addr` (of `len` bytes) are valid and outlive the call.
                let res = syscall!(sendto(
                    fd,
                    data.as_ptr() as *const libc::c_void,
                    data.len(),
                    0,
                    &addr as *const libc::sockaddr_storage as *const libc::sockaddr,
                    len
                ));
                match res {
                    Ok(_) => report.sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => report.failed += 1,
                }
                break;
            }
        }
        self.stats.send_errors += report.failed as u64;
        self.tx.clear();
        if self.queued > 0 {
            for index in 0..self.conn_slots as u32 {
                report.stream_bytes += self.write_conn(index);
            }
        }
        Ok(report)
    }

    fn poll(
        &mut self,
        deadline: Instant,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<PollReport> {
        let mut report = PollReport::default();
        let sets = self.wait(deadline, &mut report.waited)?;
        if sets.readable(self.waker.rx.as_raw_fd()) {
            self.waker.drain();
            report.events += 1;
        }

        // Queued bytes first: writing needs no budget and frees send buffer room.
        for index in 0..self.conn_slots as u32 {
            let writable = match self.conns.at_mut(index) {
                Some((_, conn)) => !conn.send.is_empty() && sets.writable(conn.stream.as_raw_fd()),
                None => false,
            };
            if writable {
                self.write_conn(index);
            }
        }

        let mut budget = self.max_events;
        let closed_now = self.failed.len().min(budget);
        for (conn, reason) in self.failed.drain(..closed_now) {
            on_event(Event::Closed { conn, reason });
        }
        report.events += closed_now;
        budget -= closed_now;

        // One serving order: sockets and listeners by id, then connection slots. A connection
        // accepted during this pass may reuse the fd of one closed earlier in it and so look
        // ready: the read then answers EAGAIN, which is harmless.
        let sockets = self.sockets.len();
        let total = sockets + self.conn_slots;
        if total == 0 || budget == 0 {
            return Ok(report);
        }
        let first = self.rotate % total;
        let mut next = first + 1;
        for k in 0..total {
            if budget == 0 {
                break;
            }
            let position = (first + k) % total;
            next = position + 1;
            if position < sockets {
                let fd = self.sockets[position].fd();
                if !sets.readable(fd) {
                    continue;
                }
                match self.sockets[position] {
                    Socket::Udp(_) => self.serve_udp(position, &mut budget, &mut report, on_event),
                    Socket::Listener(_) => {
                        self.serve_listener(position, &mut budget, &mut report, on_event)
                    }
                }
            } else {
                let index = (position - sockets) as u32;
                let ready = match self.conns.at_mut(index) {
                    Some((_, conn)) => sets.readable(conn.stream.as_raw_fd()),
                    None => false,
                };
                if ready {
                    self.serve_conn(index, &mut budget, &mut report, on_event);
                }
            }
        }
        // Cut short: start after the descriptor the budget ran out on. Otherwise move on by one.
        self.rotate = if budget == 0 { next } else { first + 1 };
        Ok(report)
    }

    fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let listener = sys::listen_tcp(addr)?;
        check_fd(listener.as_raw_fd())?; // on error `listener` is dropped and closed here
        self.sockets.push(Socket::Listener(listener));
        Ok(id)
    }

    fn connect(&mut self, addr: SocketAddr, timeout: Duration) -> io::Result<ConnId> {
        if self.conns.len() >= self.max_connections {
            return Err(too_many_connections(self.max_connections));
        }
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        check_fd(stream.as_raw_fd())?; // on error `stream` is dropped and closed here
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        sys::set_send_buffer(stream.as_raw_fd(), self.socket_send_bytes);
        Ok(insert_conn(
            &mut self.conns,
            &mut self.conn_slots,
            stream,
            self.stream_send_bytes,
        ))
    }

    fn send_stream(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        let entry = self.conns.get_mut(conn).ok_or(SendError::Closed)?;
        match entry.send.push(data) {
            Ok(()) => {
                self.queued += data.len();
                Ok(())
            }
            Err(e) => {
                self.stats.stream_send_full += 1;
                Err(e)
            }
        }
    }

    fn send_capacity(&self, conn: ConnId) -> Option<usize> {
        self.conns.get(conn).map(|c| c.send.capacity_left())
    }

    fn stream_queued(&self) -> usize {
        self.queued
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn close(&mut self, conn: ConnId) {
        match self.remove_conn(conn) {
            Some(entry) => {
                if !entry.send.is_empty() {
                    // One attempt, never waited for; the socket is closed as `entry` drops.
                    let _ = (&entry.stream).write(entry.send.pending());
                }
            }
            // Closed by a failed write and its event not delivered yet: now it never is.
            None => self.failed.retain(|(c, _)| *c != conn),
        }
    }

    fn waker(&self) -> Waker {
        Waker::new(self.waker.clone())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

/// The error of [`Backend::connect`] at the connection limit.
fn too_many_connections(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::Other,
        format!(
            "io backend already holds its maximum of {} connections",
            limit
        ),
    )
}

/// Refuses an fd that `select` cannot watch.
fn check_fd(fd: RawFd) -> io::Result<()> {
    if fd < 0 || fd as usize >= libc::FD_SETSIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "select io model: fd {} is not below FD_SETSIZE ({}); use the epoll or blocking \
                 model for this many open files",
                fd,
                libc::FD_SETSIZE
            ),
        ));
    }
    Ok(())
}

/// `left` as a timeval, rounded up to the next microsecond.
fn timeval(left: Duration) -> libc::timeval {
    let micros = (left.as_nanos() + 999) / 1000;
    let secs = (micros / 1_000_000).min(libc::time_t::MAX as u128);
    // SAFETY: timeval is a plain C struct; all-zero bytes are a valid value.
    let mut tv: libc::timeval = unsafe { mem::zeroed() };
    tv.tv_sec = secs as libc::time_t;
    tv.tv_usec = (micros % 1_000_000) as libc::suseconds_t;
    tv
}

/// The waker: a non-blocking Unix datagram socket pair. One byte written makes `rx` readable.
struct PairWaker {
    tx: UnixDatagram,
    rx: UnixDatagram,
}

impl PairWaker {
    fn new() -> io::Result<PairWaker> {
        let (tx, rx) = UnixDatagram::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(PairWaker { tx, rx })
    }

    fn drain(&self) {
        let mut buf = [0u8; 16];
        while self.rx.recv(&mut buf).is_ok() {}
    }
}

impl Wake for PairWaker {
    fn wake(&self) -> io::Result<()> {
        match self.tx.send(&[1]) {
            Ok(_) => Ok(()),
            // The pair is full of unread wake-ups: one is pending already.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use std::collections::HashMap;

    /// Hang guard, never a measurement.
    const PATIENCE: Duration = Duration::from_secs(60);

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// What the polls delivered: accepted connections by peer address, bytes and closes.
    #[derive(Default)]
    struct Seen {
        accepted: HashMap<SocketAddr, ConnId>,
        bytes: HashMap<ConnId, Vec<u8>>,
        closed: Vec<(ConnId, CloseReason)>,
    }

    fn poll_once(io: &mut Select, seen: &mut Seen, deadline: Instant) -> PollReport {
        io.poll(deadline, &mut |event| match event {
            Event::Accepted { conn, from, .. } => {
                seen.accepted.insert(from, conn);
            }
            Event::Stream { conn, data } => {
                seen.bytes.entry(conn).or_default().extend_from_slice(data)
            }
            Event::Closed { conn, reason } => seen.closed.push((conn, reason)),
            Event::Datagram { .. } => {}
        })
        .unwrap()
    }

    /// A std client, and its connection as the backend accepted it.
    fn accept_client(io: &mut Select, seen: &mut Seen, addr: SocketAddr) -> (TcpStream, ConnId) {
        let client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let me = client.local_addr().unwrap();
        let end = Instant::now() + PATIENCE;
        while !seen.accepted.contains_key(&me) {
            assert!(Instant::now() < end, "hung waiting for the connection");
            poll_once(io, seen, end);
        }
        (client, seen.accepted[&me])
    }

    /// Makes the client's close send a RST.
    fn reset_on_close(s: &TcpStream) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `linger` is a valid struct linger that outlives the call, and its size is
        // passed with it.
        syscall!(setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            mem::size_of::<libc::linger>() as libc::socklen_t
        ))
        .unwrap();
    }

    /// Bytes readable now on the backend's socket of `conn`.
    fn readable_bytes(io: &mut Select, conn: ConnId) -> usize {
        let fd = io.conns.get(conn).unwrap().stream.as_raw_fd();
        let mut n: c_int = 0;
        // SAFETY: FIONREAD writes one c_int into `n`, which outlives the call.
        syscall!(ioctl(fd, libc::FIONREAD, &mut n as *mut c_int)).unwrap();
        n as usize
    }

    #[test]
    fn a_budget_cut_moves_on_to_the_next_connection() {
        let cfg = Config {
            max_events: 4,
            stream_read_bytes: 1024,
            ..Config::default()
        };
        let mut io = Select::open(&cfg).unwrap();
        let listener = io.listen(localhost()).unwrap();
        let addr = io.local_addr(listener).unwrap();
        let mut seen = Seen::default();
        // The flood takes the lower slot, so it comes first in the serving order.
        let (mut flood, flood_conn) = accept_client(&mut io, &mut seen, addr);
        let (mut quiet, quiet_conn) = accept_client(&mut io, &mut seen, addr);
        assert!(flood_conn.index < quiet_conn.index);

        // Two bytes from the quiet client, and from the flood more than four polls' budget
        // (4 reads of 1 KiB each), readable before the first poll.
        quiet.write_all(b"hi").unwrap();
        flood.write_all(&[7u8; 64 * 1024]).unwrap();
        let end = Instant::now() + PATIENCE;
        while readable_bytes(&mut io, quiet_conn) < 2 || readable_bytes(&mut io, flood_conn) < 16384
        {
            assert!(Instant::now() < end, "hung waiting for the bytes to arrive");
            std::thread::yield_now();
        }

        // The first poll starts at the listener (not ready), then the flood, which the budget
        // runs out on; the second starts right after the flood, at the quiet connection.
        io.rotate = 0;
        for _ in 0..2 {
            let report = poll_once(&mut io, &mut seen, Instant::now() + PATIENCE);
            assert!(report.events <= cfg.max_events);
        }
        assert_eq!(
            seen.bytes.get(&quiet_conn).map(|b| b.as_slice()),
            Some(&b"hi"[..]),
            "the flood kept the budget for two polls"
        );
        assert!(seen.bytes[&flood_conn].len() >= 4096);
    }

    #[test]
    fn a_failed_flush_is_closed_by_the_next_poll_unless_the_caller_closes_first() {
        let mut io = Select::open(&Config::default()).unwrap();
        let listener = io.listen(localhost()).unwrap();
        let addr = io.local_addr(listener).unwrap();
        let mut seen = Seen::default();

        // Writes into a reset connection until a flush fails (no poll meanwhile, so only the
        // flush can notice).
        let fail_a_flush = |io: &mut Select, seen: &mut Seen| {
            let (client, conn) = accept_client(io, seen, addr);
            reset_on_close(&client);
            drop(client);
            let end = Instant::now() + PATIENCE;
            while io.connections() > 0 {
                assert!(Instant::now() < end, "no flush ever failed");
                io.send_stream(conn, b"x").unwrap();
                io.flush().unwrap();
            }
            assert_eq!(io.send_stream(conn, b"x"), Err(SendError::Closed));
            assert_eq!(io.send_capacity(conn), None);
            assert_eq!(io.stream_queued(), 0);
            conn
        };

        // The next poll delivers the Closed at once, then never again.
        let a = fail_a_flush(&mut io, &mut seen);
        let deadline = Instant::now() + PATIENCE;
        let report = poll_once(&mut io, &mut seen, deadline);
        assert!(
            Instant::now() < deadline,
            "the poll sat on a pending Closed"
        );
        assert_eq!(report.events, 1);
        assert!(
            matches!(seen.closed[..], [(c, CloseReason::Error(_))] if c == a),
            "{:?}",
            seen.closed
        );
        poll_once(&mut io, &mut seen, Instant::now());
        assert_eq!(seen.closed.len(), 1);

        // Closed by the caller before that poll: no event.
        let b = fail_a_flush(&mut io, &mut seen);
        io.close(b);
        poll_once(&mut io, &mut seen, Instant::now());
        assert_eq!(seen.closed.len(), 1, "{:?}", seen.closed);
        assert!(io.failed.is_empty());
    }

    #[test]
    fn timeval_rounds_up() {
        let tv = timeval(Duration::from_nanos(1));
        assert_eq!((tv.tv_sec, tv.tv_usec), (0, 1));
        let tv = timeval(Duration::new(2, 999_999_001));
        assert_eq!((tv.tv_sec, tv.tv_usec), (3, 0));
        let tv = timeval(Duration::ZERO);
        assert_eq!((tv.tv_sec, tv.tv_usec), (0, 0));
    }
}
