//! The kqueue backend (macOS and FreeBSD, 64-bit).
//!
//! The model is epoll's (see `epoll.rs` and the crate docs), with kqueue's filters:
//!
//! * UDP sockets: `EVFILT_READ` level-triggered with their [`SocketId`] as `udata`, so a burst
//!   larger than the budget stays readable and is reported again by the next wait.
//! * TCP listeners: `EVFILT_READ` with `EV_CLEAR` (edge), `udata` their [`SocketId`].
//! * Stream connections: `EVFILT_READ` with `EV_CLEAR`, and `EVFILT_WRITE` only while bytes
//!   wait that the kernel did not take (`EV_ADD | EV_ONESHOT`, armed again after every write
//!   that leaves some). A BSD socket's write filter fires on every ACK that frees buffer space,
//!   so a write filter left registered would wake the wait once per ACK of every busy
//!   connection; Linux's `EPOLLOUT` edge only comes after a writer filled the buffer, which is
//!   what arming on demand gives here. Their `udata` is a tag bit, the slot's generation (30
//!   bits) and the slot index, as epoll's token: an event of a connection closed since never
//!   reaches the connection that reused its slot.
//! * The waker: an `EVFILT_USER` event (ident 0, `EV_CLEAR`), triggered with `NOTE_TRIGGER`.
//!   Several wakes before a wait are one wake-up. The kqueue descriptor is shared (`Arc`) with
//!   every [`Waker`], so waking after the backend was dropped is harmless.
//!
//! Registrations of connections (accepted or connected) and write arming are not syscalls of
//! their own: they are queued on a change list and handed to the kernel by the `kevent` call
//! that waits, at most one event list's length per call (so that every failed change has room
//! for its `EV_ERROR` entry; the rest go with the next call, which then does not block). A
//! failed change closes its connection, reported as [`CloseReason::Error`]. A connection
//! closed before its changes went out takes them off the list, so a change never reaches a
//! descriptor number reused by another socket. UDP sockets and listeners are registered at
//! once by [`Backend::bind`] and [`Backend::listen`], which report the error themselves.
//! Closing a descriptor removes its kqueue registrations, so nothing is deleted explicitly
//! (and a kqueue is not inherited by `fork`).
//!
//! One poll waits once (`kevent` with a nanosecond `timespec`), puts what became readable on
//! the ready list and serves it round robin until the `max_events` budget is spent, exactly as
//! epoll does: one turn is up to 256 datagrams of a UDP socket (one `recvmsg` each: macOS has
//! no `recvmmsg`), one accept for a listener, one `read` for a connection. What did not answer
//! `EAGAIN` yet stays on the list and makes the next poll skip its wait. Listeners out of
//! descriptors shed through the reserve descriptor ([`Reserve`]) or pause until the next poll.
//!
//! Buffers, all owned by the backend and allocated when it opens: one receive buffer of
//! `max_datagram` bytes (each datagram is received into it and lent to the callback before the
//! next `recvmsg`), its source address, the stream read buffer (`stream_read_bytes`), the event
//! list and the send slab. Flush sends each queued datagram with its own `sendto`, in queueing
//! order; a refused one is dropped and counted. The change list and the ready list keep room
//! for every socket and connection, reserved when they are added, so polls do not allocate.
//!
//! This module is type-checked for `x86_64-apple-darwin`, `aarch64-apple-darwin` and
//! `x86_64-unknown-freebsd` by `scripts/portability.sh`; it has not been run (see
//! docs/operations.md).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::raw::c_int;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

/// Tag of a connection's `udata`: `CONN_TAG | (generation & GEN_MASK) << 32 | index`. Socket
/// tokens are `u32` ids, so they never have it.
const CONN_TAG: usize = 1 << 63;
/// The generation bits a connection's token carries.
const GEN_MASK: u32 = (1 << 30) - 1;
/// The ident of the waker's `EVFILT_USER` event.
const WAKER_IDENT: usize = 0;
/// Most datagrams one turn of a UDP socket takes.
const RECV_TURN_MAX: usize = 256;
/// Most events fetched by one wait.
const EVENTS_MAX: usize = 65_536;
/// Longest single wait; a later deadline is reached by waiting again (a huge `timespec` can
/// overflow the kernel's conversion to its clock).
const WAIT_MAX: Duration = Duration::from_secs(86_400);

fn conn_token(id: ConnId) -> usize {
    CONN_TAG | (((id.generation & GEN_MASK) as usize) << 32) | id.index as usize
}

/// A `kevent` change or event. The struct differs per OS (FreeBSD 12+ has `ext`, `data` is
/// `i64` there and `isize` on macOS), so it is built from zero and every field is cast.
fn kev(ident: usize, filter: i16, flags: u16, fflags: u32, udata: usize) -> libc::kevent {
    // SAFETY: kevent is a plain C struct; all-zero bytes (a null udata) are a valid value.
    let mut k: libc::kevent = unsafe { mem::zeroed() };
    k.ident = ident as _;
    k.filter = filter as _;
    k.flags = flags as _;
    k.fflags = fflags as _;
    k.udata = udata as _;
    k
}

/// The `udata` of an event, as the token it was registered with.
fn token_of(ev: &libc::kevent) -> usize {
    ev.udata as usize
}

/// The change that registers a stream connection's reads (edge-triggered).
fn conn_read_change(fd: RawFd, token: usize) -> libc::kevent {
    kev(
        fd as usize,
        libc::EVFILT_READ,
        libc::EV_ADD | libc::EV_CLEAR,
        0,
        token,
    )
}

/// The change that asks for one writable event of a stream connection.
fn conn_write_change(fd: RawFd, token: usize) -> libc::kevent {
    kev(
        fd as usize,
        libc::EVFILT_WRITE,
        libc::EV_ADD | libc::EV_ONESHOT,
        0,
        token,
    )
}

/// The live connection a token names: `None` for a connection closed since (also when its
/// slot was reused).
fn conn_of(conns: &mut ConnTable<Conn>, token: usize) -> Option<(ConnId, &mut Conn)> {
    let generation = (token >> 32) as u32 & GEN_MASK;
    let (id, conn) = conns.at_mut(token as u32)?;
    if id.generation & GEN_MASK != generation {
        return None; // an event of the connection that had this slot before
    }
    Some((id, conn))
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
    /// A one-shot `EVFILT_WRITE` is queued or registered and has not fired yet.
    write_armed: bool,
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
}

/// The kqueue descriptor, shared with every [`Waker`].
pub(crate) struct Kq {
    fd: OwnedFd,
}

impl Kq {
    fn new() -> io::Result<Kq> {
        // SAFETY: no pointers are passed.
        let fd = syscall!(kqueue())?;
        // SAFETY: `fd` was just created and nothing else owns it.
        let kq = Kq {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        // SAFETY: no pointers are passed.
        syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
        Ok(kq)
    }

    /// Applies `changes` now, without waiting for events; the first failure is the error.
    fn apply(&self, changes: &[libc::kevent]) -> io::Result<()> {
        // SAFETY: `changes` is valid for `changes.len()` entries; no event list, no timeout
        // (which, with no event list, returns at once).
        syscall!(kevent(
            self.fd.as_raw_fd(),
            changes.as_ptr(),
            changes.len() as _,
            ptr::null_mut(),
            0,
            ptr::null()
        ))?;
        Ok(())
    }
}

impl Wake for Kq {
    fn wake(&self) -> io::Result<()> {
        let trigger = kev(WAKER_IDENT, libc::EVFILT_USER, 0, libc::NOTE_TRIGGER, 0);
        self.apply(&[trigger])
    }
}

/// The kernel-facing lists: changes waiting for the next `kevent` call and the event list it
/// fills.
struct Lists {
    changes: Vec<libc::kevent>,
    events: Box<[libc::kevent]>,
}

// SAFETY: the only pointers inside are the `udata` fields, which hold tokens (integers) and
// are never dereferenced.
unsafe impl Send for Lists {}

pub(crate) struct Kqueue {
    kq: Arc<Kq>,
    lists: Lists,
    sockets: Vec<Socket>,
    conns: ConnTable<Conn>,
    max_events: usize,
    max_connections: usize,
    /// `SO_SNDBUF` for stream sockets.
    socket_send_bytes: usize,
    stream_send_bytes: usize,
    buffer_bytes: usize,
    /// The datagram receive buffer (`max_datagram`) and the source address of its datagram.
    rx_buf: Box<[u8]>,
    rx_addr: libc::sockaddr_storage,
    tx: TxSlab,
    /// The shared stream read buffer (`stream_read_bytes`).
    read_buf: Box<[u8]>,
    /// Sockets and connections with something to take, served round robin; what a poll's
    /// budget leaves stays here, ahead of what the next wait adds.
    ready: VecDeque<Ready>,
    /// Connections that failed outside the serving loop (write errors, failed registrations):
    /// the next poll delivers their `Closed` first.
    closing: VecDeque<(ConnId, io::ErrorKind)>,
    /// Connections with bytes queued since the last flush.
    to_flush: Vec<ConnId>,
    /// Listeners that stopped accepting (out of descriptors) until the next poll.
    paused: Vec<u32>,
    /// Bytes in every connection's send buffer together.
    queued_bytes: usize,
    reserve: Reserve,
    stats: IoStats,
}

impl Kqueue {
    pub(crate) fn open(cfg: &Config) -> io::Result<Kqueue> {
        let kq = Arc::new(Kq::new()?);
        kq.apply(&[kev(
            WAKER_IDENT,
            libc::EVFILT_USER,
            libc::EV_ADD | libc::EV_CLEAR,
            0,
            0,
        )])?;
        let events_len = cfg.max_events.saturating_add(1).min(EVENTS_MAX);
        Ok(Kqueue {
            kq,
            lists: Lists {
                changes: Vec::new(),
                events: (0..events_len).map(|_| kev(0, 0, 0, 0, 0)).collect(),
            },
            sockets: Vec::new(),
            conns: ConnTable::new(),
            max_events: cfg.max_events,
            max_connections: cfg.max_connections,
            socket_send_bytes: cfg.stream_socket_send_bytes,
            stream_send_bytes: cfg.stream_send_bytes,
            buffer_bytes: cfg.socket_buffer_bytes,
            rx_buf: vec![0u8; cfg.max_datagram].into_boxed_slice(),
            rx_addr: sys::zeroed_storage(),
            tx: TxSlab::new(cfg),
            read_buf: vec![0u8; cfg.stream_read_bytes].into_boxed_slice(),
            ready: VecDeque::new(),
            closing: VecDeque::new(),
            to_flush: Vec::new(),
            paused: Vec::new(),
            queued_bytes: 0,
            reserve: Reserve::open().unwrap_or_default(),
            stats: IoStats::default(),
        })
    }

    /// Keeps room on the lists for every socket and connection, so that polls never grow them.
    /// A connection has at most two changes waiting: its registration and one write arming.
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
        let changes = &mut self.lists.changes;
        if changes.capacity() < 2 * conns {
            changes.reserve(2 * conns - changes.len());
        }
    }

    /// Adds a UDP socket (level-triggered) or a listener (`EV_CLEAR`), registered at once.
    fn add_socket(&mut self, kind: Kind) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = Socket { kind, ready: false };
        let flags = match socket.kind {
            Kind::Udp(_) => libc::EV_ADD,
            Kind::Listener(_) => libc::EV_ADD | libc::EV_CLEAR,
        };
        self.kq.apply(&[kev(
            socket.fd() as usize,
            libc::EVFILT_READ,
            flags,
            0,
            id.0 as usize,
        )])?;
        self.sockets.push(socket);
        self.reserve_lists();
        Ok(id)
    }

    /// Adds a connected, non-blocking, prepared stream; its registration goes out with the
    /// next wait.
    fn add_conn(&mut self, stream: TcpStream) -> ConnId {
        let fd = stream.as_raw_fd();
        let id = self.conns.insert(Conn {
            stream,
            send: SendBuf::new(self.stream_send_bytes),
            ready: false,
            to_flush: false,
            write_armed: false,
        });
        self.reserve_lists();
        self.lists
            .changes
            .push(conn_read_change(fd, conn_token(id)));
        id
    }

    /// Takes a connection out of the table and its waiting changes off the change list;
    /// dropping it closes the socket, which ends its kqueue registrations.
    fn remove_conn(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(id)?;
        self.queued_bytes -= conn.send.len();
        let token = conn_token(id);
        self.lists.changes.retain(|c| token_of(c) != token);
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

    /// Takes in what one wait reported: the waker (returns true if it fired), failed changes,
    /// readiness onto the ready list, and pending writes on connections that became writable.
    fn intake(&mut self, n: usize) -> bool {
        let mut woke = false;
        for i in 0..n {
            let ev = &self.lists.events[i];
            let (filter, flags, data, token) = (ev.filter, ev.flags, ev.data, token_of(ev));
            if filter == libc::EVFILT_USER {
                woke = true;
            } else if flags & libc::EV_ERROR != 0 {
                self.change_failed(token, data as i32);
            } else if token & CONN_TAG != 0 {
                self.conn_event(token, filter);
            } else {
                self.mark_socket_ready(token as u32);
            }
        }
        woke
    }

    /// A change of the list was refused (`errno` in the event's `data`): its connection is
    /// closed, reported by the next poll. (Sockets and listeners are registered at once, so
    /// their errors never come this way.)
    fn change_failed(&mut self, token: usize, errno: i32) {
        if token & CONN_TAG == 0 || errno == 0 {
            return;
        }
        let id = match conn_of(&mut self.conns, token) {
            Some((id, _)) => id,
            None => return,
        };
        self.fail_conn(id, io::Error::from_raw_os_error(errno).kind());
    }

    fn conn_event(&mut self, token: usize, filter: i16) {
        let (id, conn) = match conn_of(&mut self.conns, token) {
            Some(found) => found,
            None => return,
        };
        if filter == libc::EVFILT_WRITE {
            // The one-shot fired and is gone.
            conn.write_armed = false;
            if conn.send.is_empty() {
                return;
            }
            let (_, error) = write_pending(conn, &mut self.queued_bytes);
            if let Some(e) = error {
                self.fail_conn(id, e.kind());
                return;
            }
            if !conn.send.is_empty() {
                conn.write_armed = true;
                let fd = conn.stream.as_raw_fd();
                self.lists.changes.push(conn_write_change(fd, token));
            }
        } else if filter == libc::EVFILT_READ && !conn.ready {
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
                let turn = self.receive(id, fd, budget.min(RECV_TURN_MAX), on_event);
                report.datagrams += turn.events;
                turn
            }
            Kind::Listener(_) => self.accept_one(id, fd, on_event),
        };
        if !turn.again {
            self.sockets[id as usize].ready = false;
        }
        turn
    }

    /// Receives up to `want` datagrams from a ready UDP socket, one `recvmsg` each into the
    /// receive buffer, each lent to the callback before the next. Truncated datagrams and
    /// unreadable source addresses are taken, counted and not delivered.
    fn receive(
        &mut self,
        id: u32,
        fd: RawFd,
        want: usize,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Turn {
        let (mut taken, mut delivered) = (0, 0);
        while taken < want {
            let (len, flags, addr_len) = match recv_one(fd, &mut self.rx_buf, &mut self.rx_addr) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Turn {
                        used: taken,
                        events: delivered,
                        again: false,
                    }
                }
                Err(_) => {
                    self.stats.recv_errors += 1;
                    return Turn {
                        used: taken,
                        events: delivered,
                        again: false,
                    };
                }
            };
            taken += 1;
            if flags & libc::MSG_TRUNC != 0 {
                self.stats.truncated += 1;
                continue;
            }
            match sys::raw_to_socket_addr(&self.rx_addr, addr_len) {
                Some(from) => {
                    let len = len.min(self.rx_buf.len());
                    on_event(Event::Datagram {
                        socket: SocketId(id),
                        from,
                        data: &self.rx_buf[..len],
                    });
                    delivered += 1;
                }
                None => self.stats.recv_errors += 1,
            }
        }
        // Not drained yet: the socket's next turn takes more.
        Turn {
            used: taken,
            events: delivered,
            again: true,
        }
    }

    /// One accept on a ready listener.
    fn accept_one(&mut self, id: u32, fd: RawFd, on_event: &mut dyn FnMut(Event<'_>)) -> Turn {
        const ONE_MORE: Turn = Turn {
            used: 1,
            events: 0,
            again: true,
        };
        let (stream, from) = match self.accept_or_shed(id, fd) {
            Ok(accepted) => accepted,
            Err(turn) => return turn,
        };
        if self.conns.len() >= self.max_connections {
            drop(stream);
            self.stats.accepts_over_limit += 1;
            return ONE_MORE;
        }
        sys::set_send_buffer(stream.as_raw_fd(), self.socket_send_bytes);
        let conn = self.add_conn(stream);
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

    /// Accepts one connection on listener `id`; when there is none to hand up, the turn that
    /// was instead (drained, a connection shed or refused, or the listener paused).
    fn accept_or_shed(&mut self, id: u32, fd: RawFd) -> Result<(TcpStream, SocketAddr), Turn> {
        const ONE_MORE: Turn = Turn {
            used: 1,
            events: 0,
            again: true,
        };
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
                    return Err(ONE_MORE);
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
                return Err(ONE_MORE);
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

    /// Hands the waiting changes to the kernel and waits for events until `deadline`; returns
    /// how many entries of the event list are set. At most one event list's length of changes
    /// goes per call; when more wait, this call does not block (the caller's next wait sends
    /// the rest).
    fn wait(&mut self, deadline: Instant, waited: &mut Duration) -> io::Result<usize> {
        loop {
            let lists = &mut self.lists;
            let nchanges = lists.changes.len().min(lists.events.len());
            let more = nchanges < lists.changes.len();
            let left = if more {
                Duration::ZERO
            } else {
                time_left(deadline)
            };
            let ts = timespec(left);
            let start = Instant::now();
            // SAFETY: the first `nchanges` changes are valid kevents; the event list is valid
            // for `events.len()` writable entries; `ts` is a valid timespec. All outlive the
            // call.
            let res = syscall!(kevent(
                self.kq.fd.as_raw_fd(),
                lists.changes.as_ptr(),
                nchanges as _,
                lists.events.as_mut_ptr(),
                lists.events.len() as _,
                &ts
            ));
            *waited += start.elapsed();
            // The kernel applied the changes before it waited (also when the wait was
            // interrupted); a refused one came back as an EV_ERROR event, for which the event
            // list had room.
            lists.changes.drain(..nchanges);
            match res {
                // A timeout before the deadline (a wait longer than WAIT_MAX, or an early
                // wake-up): wait for the rest.
                Ok(0) if !left.is_zero() && Instant::now() < deadline => continue,
                Ok(n) => return Ok(n as usize),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the next wait must not block: work is listed, or changes wait beyond what one
    /// `kevent` call takes.
    fn busy(&self) -> bool {
        !self.ready.is_empty()
            || !self.closing.is_empty()
            || self.lists.changes.len() > self.lists.events.len()
    }
}

/// `left` as a `timespec` (at most [`WAIT_MAX`]), to the nanosecond.
fn timespec(left: Duration) -> libc::timespec {
    let left = left.min(WAIT_MAX);
    // SAFETY: timespec is a plain C struct; all-zero bytes are a valid value.
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    ts.tv_sec = left.as_secs() as libc::time_t;
    ts.tv_nsec = left.subsec_nanos() as _;
    ts
}

/// One non-blocking `recvmsg` into `buf`: (length, `msg_flags`, address length).
fn recv_one(
    fd: RawFd,
    buf: &mut [u8],
    addr: &mut libc::sockaddr_storage,
) -> io::Result<(usize, c_int, libc::socklen_t)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero bytes are a valid value.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_name = addr as *mut libc::sockaddr_storage as *mut libc::c_void;
    hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    // SAFETY: `hdr` points at `iov` (the buffer, of the length given) and at the address
    // storage; all outlive the call.
    let n = syscall!(recvmsg(fd, &mut hdr, 0))?;
    Ok((n as usize, hdr.msg_flags, hdr.msg_namelen))
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

impl Backend for Kqueue {
    fn model(&self) -> Model {
        Model::Kqueue
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let socket = sys::bind_udp(addr, self.buffer_bytes)?;
        self.add_socket(Kind::Udp(socket))
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
                    // Refused (no room, bad address, ...): dropped, never retried.
                    Err(_) => report.failed += 1,
                }
                break;
            }
        }
        self.stats.send_errors += report.failed as u64;
        self.tx.clear();

        // Streams: every connection with new bytes, until the kernel takes no more; the rest
        // waits for the connection's write event, armed here.
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
            } else if !conn.send.is_empty() && !conn.write_armed {
                conn.write_armed = true;
                let fd = conn.stream.as_raw_fd();
                self.lists
                    .changes
                    .push(conn_write_change(fd, conn_token(id)));
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
            let until = if self.busy() {
                Instant::now()
            } else {
                deadline
            };
            let n = self.wait(until, &mut report.waited)?;
            let woke = self.intake(n);
            if woke {
                report.events += 1;
            }
            let delivered = self.serve(on_event, &mut report);
            report.events += delivered;
            // Only internal work (writes, shed connections, stale events): wait again.
            if delivered > 0 || woke || Instant::now() >= deadline {
                return Ok(report);
            }
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let listener = sys::listen_tcp(addr)?;
        self.add_socket(Kind::Listener(listener))
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
        Ok(self.add_conn(stream))
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
            // Failed but not reported yet: the caller closed it first.
            self.closing.retain(|c| c.0 != id);
        }
    }

    fn waker(&self) -> Waker {
        Waker::new(self.kq.clone())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn tokens_never_collide() {
        for (index, generation) in [(0, 0), (u32::MAX, u32::MAX), (7, GEN_MASK), (1, 1 << 30)] {
            let token = conn_token(ConnId { index, generation });
            assert_ne!(token & CONN_TAG, 0);
            assert_eq!(token as u32, index);
            // The token survives the trip through udata.
            let ev = kev(3, libc::EVFILT_READ, libc::EV_ADD, 0, token);
            assert_eq!(token_of(&ev), token);
        }
        assert_eq!(u32::MAX as usize & CONN_TAG, 0); // socket ids
    }

    /// Deadlines below a millisecond are kept to the nanosecond, and a poll with nothing to
    /// do lasts until its deadline.
    #[test]
    fn sub_millisecond_deadlines() {
        let ts = timespec(Duration::from_micros(250));
        assert_eq!((ts.tv_sec as i64, ts.tv_nsec as i64), (0, 250_000));
        let ts = timespec(Duration::from_secs(1 << 40));
        assert_eq!(ts.tv_sec as u64, WAIT_MAX.as_secs());

        let mut io = Kqueue::open(&Config::default()).unwrap();
        io.bind(localhost()).unwrap();
        let deadline = Instant::now() + Duration::from_micros(300);
        let report = io
            .poll(deadline, &mut crate::on_datagrams(|_, _, _| panic!("idle")))
            .unwrap();
        assert!(Instant::now() >= deadline);
        assert_eq!(report.events, 0);
    }

    /// A datagram the kernel refuses (IPv6 peer from an IPv4 socket) fails alone; the ones
    /// after it are still sent.
    #[test]
    fn flush_skips_a_refused_datagram() {
        let mut io = Kqueue::open(&Config::default()).unwrap();
        let a = io.bind(localhost()).unwrap();
        let a_addr = io.local_addr(a).unwrap();
        io.send(a, a_addr, b"1").unwrap();
        io.send(a, "[::1]:9".parse().unwrap(), b"bad").unwrap();
        io.send(a, a_addr, b"2").unwrap();
        let report = io.flush().unwrap();
        assert_eq!((report.sent, report.failed), (2, 1));
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

    /// The waker ends a poll blocked far from its deadline, and several wakes are one.
    #[test]
    fn wakes_end_a_blocked_poll_once() {
        let mut io = Kqueue::open(&Config::default()).unwrap();
        let waker = io.waker();
        waker.wake().unwrap();
        waker.wake().unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        let report = io
            .poll(far, &mut crate::on_datagrams(|_, _, _| panic!("idle")))
            .unwrap();
        assert_eq!(report.events, 1);
        let report = io
            .poll(
                Instant::now() + Duration::from_millis(5),
                &mut crate::on_datagrams(|_, _, _| panic!("idle")),
            )
            .unwrap();
        assert_eq!(report.events, 0);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake().unwrap();
        });
        let report = io
            .poll(far, &mut crate::on_datagrams(|_, _, _| panic!("idle")))
            .unwrap();
        assert_eq!(report.events, 1);
        t.join().unwrap();
        // A waker outliving its backend wakes nobody, harmlessly.
        let waker = io.waker();
        drop(io);
        waker.wake().unwrap();
    }

    /// An event of a connection closed since (its slot already reused) does not reach the
    /// connection in the slot now, and the closed one's registration never goes out.
    #[test]
    fn an_old_connections_event_does_not_reach_its_slots_successor() {
        let mut io = Kqueue::open(&Config::default()).unwrap();
        let l = io.listen(localhost()).unwrap();
        let addr = io.local_addr(l).unwrap();
        let old = io.connect(addr, Duration::from_secs(60)).unwrap();
        assert_eq!(io.lists.changes.len(), 1);
        io.close(old);
        assert!(io.lists.changes.is_empty());
        let new = io.connect(addr, Duration::from_secs(60)).unwrap();
        assert_eq!(new.index, old.index);
        assert!(io.ready.is_empty());
        io.conn_event(conn_token(old), libc::EVFILT_READ);
        assert!(io.ready.is_empty());
        io.conn_event(conn_token(new), libc::EVFILT_READ);
        assert_eq!(io.ready.len(), 1);
    }

    /// Registrations beyond one event list's length go out over several `kevent` calls, none
    /// lost: with an event list of 2, 6 connections (6 changes) still all deliver their bytes.
    #[test]
    fn changes_beyond_the_event_list_go_out_in_chunks() {
        let cfg = Config {
            max_events: 1,
            ..Config::default()
        };
        let mut io = Kqueue::open(&cfg).unwrap();
        let server = std::net::TcpListener::bind(localhost()).unwrap();
        let server_addr = server.local_addr().unwrap();
        let mut conns = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..6 {
            conns.push(io.connect(server_addr, Duration::from_secs(60)).unwrap());
            let (mut peer, _) = server.accept().unwrap();
            std::io::Write::write_all(&mut peer, b"hi").unwrap();
            peers.push(peer);
        }
        assert!(io.lists.changes.len() > io.lists.events.len());
        let mut got = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60); // hang guard
        while got.len() < conns.len() && Instant::now() < deadline {
            io.poll(deadline, &mut |e| {
                if let Event::Stream { conn, data } = e {
                    assert_eq!(data, b"hi");
                    got.insert(conn);
                }
            })
            .unwrap();
        }
        assert_eq!(got.len(), conns.len());
        assert!(io.lists.changes.is_empty());
    }

    /// What a flush leaves queued is written once the socket drains, through the one-shot
    /// write event it armed; the write event is not armed while nothing waits.
    #[test]
    fn a_partial_flush_arms_one_write_event() {
        let mut io = Kqueue::open(&Config::default()).unwrap();
        let server = std::net::TcpListener::bind(localhost()).unwrap();
        let conn = io
            .connect(server.local_addr().unwrap(), Duration::from_secs(60))
            .unwrap();
        let (mut peer, _) = server.accept().unwrap();
        io.send_stream(conn, b"small").unwrap();
        io.flush().unwrap();
        assert!(!io.conns.get(conn).unwrap().write_armed);
        // Fill the kernel's buffers until a flush leaves bytes queued.
        let chunk = vec![7u8; 16 * 1024];
        let mut sent = 5;
        let end = Instant::now() + Duration::from_secs(60); // hang guard
        while io.stream_queued() == 0 && Instant::now() < end {
            if io.send_capacity(conn).unwrap() >= chunk.len() {
                io.send_stream(conn, &chunk).unwrap();
                sent += chunk.len();
            }
            io.flush().unwrap();
        }
        assert!(io.conns.get(conn).unwrap().write_armed);
        let armed = io
            .lists
            .changes
            .iter()
            .filter(|c| c.filter == libc::EVFILT_WRITE)
            .count();
        assert_eq!(armed, 1);
        // The peer reads everything; the backend's polls write the rest.
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            while total < sent {
                match std::io::Read::read(&mut peer, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        while io.stream_queued() > 0 && Instant::now() < end {
            io.poll(Instant::now() + Duration::from_millis(10), &mut |_| {})
                .unwrap();
        }
        assert_eq!(io.stream_queued(), 0);
        assert_eq!(reader.join().unwrap(), sent);
        assert!(!io.conns.get(conn).unwrap().write_armed);
    }

    /// A write failure is reported by the next poll (which does not wait for it), unless the
    /// caller closes the connection first.
    #[test]
    fn a_failed_write_is_reported_once_unless_closed_first() {
        let mut io = Kqueue::open(&Config::default()).unwrap();
        let l = io.listen(localhost()).unwrap();
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

    /// A refused change (here: a registration for a descriptor that is not open) closes its
    /// connection, reported as an error.
    #[test]
    fn a_refused_registration_closes_its_connection() {
        let mut io = Kqueue::open(&Config::default()).unwrap();
        let server = std::net::TcpListener::bind(localhost()).unwrap();
        let conn = io
            .connect(server.local_addr().unwrap(), Duration::from_secs(60))
            .unwrap();
        // Swap the waiting registration for one naming a closed descriptor.
        let closed_fd = {
            let s = UdpSocket::bind(localhost()).unwrap();
            s.as_raw_fd()
        };
        io.lists.changes.clear();
        io.lists
            .changes
            .push(conn_read_change(closed_fd, conn_token(conn)));
        let mut closed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60); // hang guard
        while closed.is_empty() && Instant::now() < deadline {
            io.poll(deadline, &mut |e| {
                if let Event::Closed { conn, reason } = e {
                    closed.push((conn, reason));
                }
            })
            .unwrap();
        }
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].0, conn);
        assert!(matches!(closed[0].1, CloseReason::Error(_)));
        assert_eq!(io.connections(), 0);
    }
}
