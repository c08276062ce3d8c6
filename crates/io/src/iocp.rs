//! The Windows I/O completion port backend.
//!
//! One completion port per backend; every socket is associated with it (completion key 0), and
//! the waker posts packets with its own key. Every operation is an [`Op`]: an `OVERLAPPED`
//! followed by what the operation needs (its buffer, the peer address, the `WSABUF`), in one
//! heap allocation made when the socket is bound (or the backend opened), never per poll. The
//! completion's `OVERLAPPED` pointer is the `Op`'s address, which says what completed.
//!
//! # Buffer ownership
//!
//! From the call that starts an operation until its completion packet is dequeued, the kernel
//! owns the `Op` (its buffer, address and length fields): nothing reads, moves, reuses or frees
//! it meanwhile. An operation is started again or freed only once its completion was also
//! *handled* (`busy`), not merely dequeued: a completion kept in the backlog for the next
//! poll still names it. Freeing waits for the packet, also at teardown: dropping the
//! backend cancels everything (`CancelIoEx` per socket) and dequeues until every operation has
//! come back (at most [`TEARDOWN_PATIENCE`]); if some never do, their memory is leaked rather
//! than freed under the kernel. A completion of a failed call is never waited for: a call that
//! fails at once with an error queues no packet (NT queues one when the operation pended or
//! finished with success or a warning, such as the `STATUS_BUFFER_OVERFLOW` of a truncated
//! datagram, so `WSAEMSGSIZE` at once still counts as in flight).
//!
//! # Datagrams
//!
//! Each bound socket keeps [`RECVS_PER_SOCKET`] overlapped `WSARecvFrom`s pending, each into its
//! own `max_datagram` buffer; a completion lends that buffer to the callback and re-arms the
//! receive right after. Windows completes a socket's receives in the order they were posted, one
//! datagram each, and queues their packets in completion order, so datagrams are delivered in
//! arrival order. What arrives while every receive of a socket is complete and not yet dequeued
//! waits in the socket buffer (`SO_RCVBUF`), as under epoll. A datagram longer than the buffer
//! completes with `WSAEMSGSIZE` (its rest discarded by Winsock): counted in `truncated`, not
//! delivered. `SIO_UDP_CONNRESET` is turned off, so an ICMP "port unreachable" does not fail a
//! receive.
//!
//! Sends: `send` copies the datagram into one of `send_queue` send operations (each with its
//! own `max_datagram` buffer and peer address); `flush` starts an overlapped `WSASendTo` for each
//! queued one, in order. A send operation is reused once its completion was dequeued (by a
//! poll, or by `send` itself when every operation is taken: it dequeues without waiting, and
//! keeps other completions for the next poll). [`FlushReport::sent`] counts the sends Winsock
//! accepted; one that fails later is counted in `send_errors` when its completion is dequeued.
//!
//! # Streams
//!
//! * **Accept.** Every listener keeps [`ACCEPTS_PER_LISTENER`] `AcceptEx` calls pending (the
//!   function pointer comes from the listener's provider, `SIO_GET_EXTENSION_FUNCTION_POINTER`),
//!   each with a fresh overlapped socket and a 288-byte address buffer owned by its operation.
//!   A completion is handled as an event (so under the budget): the accepted socket gets
//!   `SO_UPDATE_ACCEPT_CONTEXT`, then beyond `max_connections` it is closed at once
//!   (`accepts_over_limit`), else it is registered and `Event::Accepted` goes up; the accept is
//!   started again with a new socket. When a socket cannot be made (`WSAENOBUFS`,
//!   `WSAEMFILE`), the accept waits for the next poll (counted in `accept_errors`): connections
//!   wait in the listener's backlog (1024) meanwhile, and nothing spins.
//! * **Receive.** Each connection keeps one overlapped `WSARecv` of **zero bytes** pending: it
//!   completes when bytes (or the peer's FIN, or an error) are there, without holding a buffer,
//!   so an idle connection costs two small operations rather than a `stream_read_bytes` buffer
//!   each. Its completion reads once, non-blocking, into the backend's one stream buffer
//!   (`stream_read_bytes`), delivers that as `Event::Stream` and starts the zero-byte receive
//!   again (which completes at once while bytes remain). A read of 0 bytes is `Closed { Eof }`,
//!   an error `Closed { Error }`.
//! * **Send.** At most one overlapped `WSASend` per connection, reading from a buffer that
//!   `send_stream` never appends to (`flight`; `send_stream` appends to `queue`, and the two
//!   swap, without a copy, when `flight` is empty), so the bytes under a send never move.
//!   Both count towards `stream_send_bytes`. `flush` releases what is queued
//!   ([`FlushReport::stream_bytes`]) and starts a send for each connection without one; a
//!   completion consumes what was written and starts the next send with what is released
//!   (bytes queued after the last flush wait for the next). Windows completes a send once the
//!   bytes are buffered, so a slow reader leaves it pending and the buffers full. A send that
//!   fails at once closes the connection, reported by the next poll; one that fails later is
//!   reported when its completion is handled.
//! * **Close.** `close` (and the backend on `Eof`/`Error`) makes the handle stale at once. With
//!   no send pending, it makes one non-blocking write of what is queued (with one pending,
//!   those bytes must not overtake it: they are dropped). Then the socket's remaining
//!   operations are cancelled (`CancelIoEx`), its sending side shut down (the peer sees the
//!   close at once), and the socket and the operations wait in a zombie until their last
//!   completions: the socket is closed, and its memory freed, only then. Completions carry the
//!   connection's slot and generation, so one arriving for a closed connection never reaches
//!   the connection that reuses its slot.
//! * `connect` is std's `TcpStream::connect_timeout` (blocking), then non-blocking,
//!   `TCP_NODELAY`, `SO_SNDBUF` and associated with the port like an accepted connection.
//!
//! # Polls, budget and deadline
//!
//! `poll` dequeues with `GetQueuedCompletionStatusEx`, up to a batch of [`ENTRIES_MAX`] entries
//! at a time. Send completions and wake-ups are handled whatever the budget; completions that
//! may deliver an event are handled while the `max_events` budget lasts, and kept in order in a
//! backlog beyond it, delivered first by the next poll (which then does not wait). After it
//! delivered something, a poll keeps dequeuing without waiting (re-armed receives complete at
//! once while the socket buffer holds datagrams) until the budget is spent or the port is empty.
//! A poll that only dequeued internal work waits again, until its deadline.
//!
//! The wait's timeout is in milliseconds: the time left is rounded up, and a wait that ends
//! before the deadline anyway (Windows may end a wait up to a timer tick early) waits again for
//! the rest, so a poll never returns before its deadline. How late it returns is the system
//! timer's resolution: the backend asks for 1 ms with `timeBeginPeriod(1)` while it is open
//! (since Windows 10 2004 this concerns this process only), otherwise Windows' default is
//! 15.6 ms.
//!
//! # Wake-ups
//!
//! [`Waker::wake`](crate::Waker::wake) posts one packet with the waker's key
//! (`PostQueuedCompletionStatus`) unless one is already queued (a flag the poll clears when it
//! dequeues it), so several wakes before a poll are one wake-up. The port handle is shared with
//! the wakers and closed when the backend and the last waker are gone.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::mem;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::windows::io::AsRawSocket;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{self as wf, HANDLE};
use windows_sys::Win32::Media::{timeBeginPeriod, timeEndPeriod};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::System::IO as wio;

use crate::conns::{ConnTable, SendBuf};
use crate::win;
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, CloseReason, Config, ConnId, Event,
    FlushReport, IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

/// Completion key of every socket.
const SOCKET_KEY: usize = 0;
/// Completion key of the waker's packets.
const WAKE_KEY: usize = 1;
/// Overlapped receives kept pending per UDP socket.
pub(crate) const RECVS_PER_SOCKET: usize = 4;
/// `AcceptEx` calls kept pending per listener.
pub(crate) const ACCEPTS_PER_LISTENER: usize = 8;
/// Size of an `AcceptEx` address buffer: room for both addresses, 16 bytes more each.
const ACCEPT_ADDRS_BYTES: usize = 2 * (mem::size_of::<ws::SOCKADDR_STORAGE>() + 16);
/// Most entries one `GetQueuedCompletionStatusEx` dequeues.
const ENTRIES_MAX: usize = 4096;
/// Longest the backend's drop waits for cancelled operations to come back.
const TEARDOWN_PATIENCE: Duration = Duration::from_secs(1);

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    /// A `WSARecvFrom` of a UDP socket (`owner`: the socket's index).
    RecvFrom,
    /// A `WSASendTo` (`owner`: the socket's index; `slot`: the send operation's index).
    SendTo,
    /// An `AcceptEx` (`owner`: the listener's index; `accept_socket`: the socket it fills).
    Accept,
    /// A connection's zero-byte `WSARecv` (`owner`, `slot`: its slot index and generation).
    Read,
    /// A connection's `WSASend` (`owner`, `slot`: as for `Read`).
    Write,
}

/// One overlapped operation and everything the kernel reads or writes for it.
#[repr(C)]
struct Op {
    /// First, so that a completion's `OVERLAPPED` pointer is the `Op`'s.
    ov: wio::OVERLAPPED,
    kind: OpKind,
    /// Between the call that started it and the handling of its completion (which may wait
    /// in the backlog after the kernel is done): only then may it be started again or freed.
    busy: bool,
    owner: u32,
    slot: u32,
    /// The socket it runs on (for `WSAGetOverlappedResult`).
    socket: ws::SOCKET,
    /// `Accept`: the socket `AcceptEx` connects (owned by the operation until taken).
    accept_socket: ws::SOCKET,
    wsabuf: ws::WSABUF,
    flags: u32,
    addr: ws::SOCKADDR_STORAGE,
    addr_len: i32,
    /// Bytes of `buf` to send.
    len: usize,
    /// The operation's buffer (`cap` bytes, from a `Box<[u8]>` freed with the operation).
    buf: *mut u8,
    cap: usize,
}

/// An [`Op`] on the heap, owned by the backend through this pointer (see the module docs for
/// when the kernel owns it instead).
#[derive(Clone, Copy, PartialEq, Eq)]
struct OpPtr(*mut Op);

impl OpPtr {
    fn new(kind: OpKind, owner: u32, slot: u32, socket: ws::SOCKET, buf_bytes: usize) -> OpPtr {
        let op = Box::new(Op {
            // SAFETY: all-zero bytes are a valid OVERLAPPED, WSABUF and SOCKADDR_STORAGE.
            ov: unsafe { mem::zeroed() },
            kind,
            busy: false,
            owner,
            slot,
            socket,
            accept_socket: ws::INVALID_SOCKET,
            wsabuf: ws::WSABUF {
                len: 0,
                buf: ptr::null_mut(),
            },
            flags: 0,
            // SAFETY: as above.
            addr: unsafe { mem::zeroed() },
            addr_len: 0,
            len: 0,
            buf: Box::into_raw(vec![0u8; buf_bytes].into_boxed_slice()) as *mut u8,
            cap: buf_bytes,
        });
        OpPtr(Box::into_raw(op))
    }

    /// Frees the operation.
    ///
    /// # Safety
    /// It is not in flight, and no other copy of the pointer is used afterwards.
    unsafe fn free(self) {
        // SAFETY: both made by `Box::into_raw` in `new`; the caller guarantees the rest. An
        // accept socket still held is closed with it.
        unsafe {
            let op = Box::from_raw(self.0);
            if op.accept_socket != ws::INVALID_SOCKET {
                ws::closesocket(op.accept_socket);
            }
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(op.buf, op.cap)));
        }
    }
}

impl OpPtr {
    /// The connection a `Read` or `Write` operation belongs to.
    ///
    /// # Safety
    /// The operation is not in flight.
    unsafe fn conn(self) -> ConnId {
        // SAFETY: the caller guarantees the backend owns the operation.
        unsafe {
            ConnId {
                index: (*self.0).owner,
                generation: (*self.0).slot,
            }
        }
    }

    /// Whether the operation was started and its completion not handled yet.
    fn busy(self) -> bool {
        // SAFETY: `busy` is only written by the backend's thread, never by the kernel.
        unsafe { (*self.0).busy }
    }
}

/// The completion port handle, shared by the backend and its wakers.
struct Port(HANDLE);

// SAFETY: a completion port handle may be used from any thread.
unsafe impl Send for Port {}
// SAFETY: as above; the handle is only read.
unsafe impl Sync for Port {}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the handle is open and owned by this value.
        unsafe { wf::CloseHandle(self.0) };
    }
}

/// The waker: one packet on the port at most.
struct IocpWaker {
    port: Arc<Port>,
    /// A wake packet is queued and not dequeued yet.
    queued: AtomicBool,
}

impl Wake for IocpWaker {
    fn wake(&self) -> io::Result<()> {
        if self.queued.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // SAFETY: the port is open (the Arc keeps it); a null OVERLAPPED is allowed.
        let ok = unsafe { wio::PostQueuedCompletionStatus(self.port.0, 0, WAKE_KEY, ptr::null()) };
        if ok == 0 {
            self.queued.store(false, Ordering::Release);
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A UDP socket and its receive operations.
struct UdpSock {
    socket: UdpSocket,
    recvs: Vec<OpPtr>,
}

/// A TCP listener and its `AcceptEx` operations.
struct ListenSock {
    socket: TcpListener,
    local: SocketAddr,
    accept_ex: win::AcceptEx,
    accepts: Vec<OpPtr>,
}

enum Sock {
    Udp(UdpSock),
    Listener(ListenSock),
}

impl Sock {
    fn raw(&self) -> ws::SOCKET {
        match self {
            Sock::Udp(u) => u.socket.as_raw_socket() as ws::SOCKET,
            Sock::Listener(l) => l.socket.as_raw_socket() as ws::SOCKET,
        }
    }
}

/// A stream connection. `send_stream` appends to `queue`; a `WSASend` reads from `flight`,
/// which nothing appends to (the two swap when `flight` is empty); both together hold at most
/// `stream_send_bytes`.
struct Conn {
    stream: TcpStream,
    read: OpPtr,
    write: OpPtr,
    queue: SendBuf,
    flight: SendBuf,
    /// Length of the `WSASend` in flight (0: none): `flight.pending()[..sending]`.
    sending: usize,
    /// Bytes at the front of `flight ++ queue` that `flush` released (including `sending`).
    released: usize,
    /// On the flush list.
    dirty: bool,
}

impl Conn {
    fn queued(&self) -> usize {
        self.flight.len() + self.queue.len()
    }
}

/// A closed connection whose operations have not all come back: its socket stays open and
/// its operations and in-flight send buffer allocated until then.
struct Zombie {
    stream: TcpStream,
    read: OpPtr,
    write: OpPtr,
    _flight: SendBuf,
}

pub(crate) struct Iocp {
    port: Arc<Port>,
    waker: Arc<IocpWaker>,
    sockets: Vec<Sock>,
    entries: Box<[wio::OVERLAPPED_ENTRY]>,
    /// Completions dequeued beyond a poll's budget (or by `send`), handled first by the next.
    backlog: VecDeque<wio::OVERLAPPED_ENTRY>,
    /// Receives whose start failed: started again by the next poll (never in a loop).
    rearm: Vec<OpPtr>,
    /// Send operations, their free list and the ones queued for the next flush (in order).
    tx: Vec<OpPtr>,
    tx_free: Vec<u32>,
    tx_queued: Vec<u32>,
    /// Operations in flight.
    in_flight: usize,
    max_events: usize,
    max_datagram: usize,
    buffer_bytes: usize,
    stats: IoStats,
    conns: ConnTable<Conn>,
    zombies: HashMap<ConnId, Zombie>,
    /// Connections that failed outside a poll (a send that failed at once): the next poll
    /// delivers their `Closed` first.
    closing: VecDeque<(ConnId, io::ErrorKind)>,
    /// Connections with bytes queued since the last flush.
    dirty: Vec<ConnId>,
    /// Accepts that could not be started: started again by the next poll.
    accept_rearm: Vec<OpPtr>,
    /// The shared stream read buffer (`stream_read_bytes`).
    read_buf: Box<[u8]>,
    /// Bytes in every connection's send buffers together.
    stream_queued: usize,
    stream_send_bytes: usize,
    max_connections: usize,
    /// `SO_SNDBUF` of stream sockets.
    socket_send_bytes: usize,
    /// `timeBeginPeriod(1)` succeeded: undone at drop.
    timer_period: bool,
}

// SAFETY: the raw pointers (operations, completion entries) point into allocations owned by
// this backend (or the kernel, for operations in flight, which any thread may complete); the
// backend is used through `&mut` by one thread at a time.
unsafe impl Send for Iocp {}

impl Iocp {
    pub(crate) fn open(cfg: &Config) -> io::Result<Iocp> {
        // SAFETY: creates a new port (no file handle, no existing port).
        let handle =
            unsafe { wio::CreateIoCompletionPort(wf::INVALID_HANDLE_VALUE, ptr::null_mut(), 0, 1) };
        if handle.is_null() {
            return Err(io::Error::last_os_error());
        }
        let port = Arc::new(Port(handle));
        let entries_len = cfg.max_events.saturating_add(64).min(ENTRIES_MAX);
        let tx: Vec<OpPtr> = (0..cfg.send_queue)
            .map(|slot| {
                OpPtr::new(
                    OpKind::SendTo,
                    0,
                    slot as u32,
                    ws::INVALID_SOCKET,
                    cfg.max_datagram,
                )
            })
            .collect();
        // SAFETY: no pointers; asks for a 1 ms system timer resolution for this process.
        let timer_period = unsafe { timeBeginPeriod(1) } == 0;
        Ok(Iocp {
            waker: Arc::new(IocpWaker {
                port: port.clone(),
                queued: AtomicBool::new(false),
            }),
            port,
            sockets: Vec::new(),
            entries: vec![empty_entry(); entries_len].into_boxed_slice(),
            backlog: VecDeque::with_capacity(entries_len),
            rearm: Vec::new(),
            tx_free: (0..cfg.send_queue as u32).rev().collect(),
            tx_queued: Vec::with_capacity(cfg.send_queue),
            tx,
            in_flight: 0,
            max_events: cfg.max_events,
            max_datagram: cfg.max_datagram,
            buffer_bytes: cfg.socket_buffer_bytes,
            stats: IoStats::default(),
            conns: ConnTable::new(),
            zombies: HashMap::new(),
            closing: VecDeque::new(),
            dirty: Vec::new(),
            accept_rearm: Vec::new(),
            read_buf: vec![0u8; cfg.stream_read_bytes].into_boxed_slice(),
            stream_queued: 0,
            stream_send_bytes: cfg.stream_send_bytes,
            max_connections: cfg.max_connections,
            socket_send_bytes: cfg.stream_socket_send_bytes,
            timer_period,
        })
    }

    /// Associates a socket with the port.
    fn associate(&self, s: ws::SOCKET) -> io::Result<()> {
        // SAFETY: `s` is an open socket and the port is open.
        let h = unsafe { wio::CreateIoCompletionPort(s as HANDLE, self.port.0, SOCKET_KEY, 0) };
        if h.is_null() {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Starts receive `op` (not in flight). A start that fails at once is retried by the next
    /// poll.
    fn start_recv(&mut self, op: OpPtr) {
        let p = op.0;
        // SAFETY: `op` is not in flight, so the backend owns it; every pointer handed to
        // WSARecvFrom points into the operation, which stays allocated until its completion is
        // dequeued.
        let rc = unsafe {
            (*p).ov = mem::zeroed();
            (*p).wsabuf = ws::WSABUF {
                len: (*p).cap.min(u32::MAX as usize) as u32,
                buf: (*p).buf,
            };
            (*p).flags = 0;
            (*p).addr_len = mem::size_of::<ws::SOCKADDR_STORAGE>() as i32;
            (*p).busy = true;
            ws::WSARecvFrom(
                (*p).socket,
                ptr::addr_of!((*p).wsabuf),
                1,
                ptr::null_mut(),
                ptr::addr_of_mut!((*p).flags),
                ptr::addr_of_mut!((*p).addr) as *mut ws::SOCKADDR,
                ptr::addr_of_mut!((*p).addr_len),
                ptr::addr_of_mut!((*p).ov),
                None,
            )
        };
        self.in_flight += 1;
        if rc == 0 {
            return;
        }
        let err = win::last_error();
        match err.raw_os_error() {
            // Pending, or a truncated datagram (a warning status): a packet will come.
            Some(ws::WSA_IO_PENDING) | Some(ws::WSAEMSGSIZE) => {}
            _ => {
                // SAFETY: the call failed at once: no packet will come, the backend owns it.
                unsafe { (*p).busy = false };
                self.in_flight -= 1;
                self.stats.recv_errors += 1;
                self.rearm.push(op);
            }
        }
    }

    /// Starts accept `op` of listener `id` (not in flight) with a new socket. When that fails
    /// at once the accept waits for the next poll.
    fn start_accept(&mut self, id: u32, op: OpPtr) {
        let (listen, local, accept_ex) = match self.sockets.get(id as usize) {
            Some(Sock::Listener(l)) => {
                (l.socket.as_raw_socket() as ws::SOCKET, l.local, l.accept_ex)
            }
            _ => return,
        };
        let socket = match win::tcp_socket(&local) {
            Ok(socket) => socket,
            Err(_) => {
                self.stats.accept_errors += 1;
                self.accept_rearm.push(op);
                return;
            }
        };
        let p = op.0;
        let mut received = 0u32;
        let addr_bytes = (ACCEPT_ADDRS_BYTES / 2) as u32;
        // SAFETY: `op` is not in flight: the backend owns it. Its buffer holds both addresses
        // (ACCEPT_ADDRS_BYTES) and, like the OVERLAPPED, stays allocated until the completion
        // is dequeued. The accept socket's ownership moves into the operation.
        let ok = unsafe {
            (*p).ov = mem::zeroed();
            (*p).accept_socket =
                std::os::windows::io::IntoRawSocket::into_raw_socket(socket) as ws::SOCKET;
            (*p).busy = true;
            accept_ex(
                listen,
                (*p).accept_socket,
                (*p).buf as *mut std::ffi::c_void,
                0,
                addr_bytes,
                addr_bytes,
                &mut received,
                ptr::addr_of_mut!((*p).ov),
            )
        };
        self.in_flight += 1;
        if ok != 0 || win::last_error().raw_os_error() == Some(ws::WSA_IO_PENDING) {
            return;
        }
        // Failed at once: no packet will come.
        // SAFETY: as above; the accept socket is closed here.
        unsafe {
            (*p).busy = false;
            ws::closesocket((*p).accept_socket);
            (*p).accept_socket = ws::INVALID_SOCKET;
        }
        self.in_flight -= 1;
        self.stats.accept_errors += 1;
        self.accept_rearm.push(op);
    }

    /// An accept came back: registers the connection (or closes it beyond the limit) and
    /// starts the accept again. Returns the events delivered.
    fn handle_accept(
        &mut self,
        op: OpPtr,
        status: i32,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> usize {
        let p = op.0;
        // SAFETY: the operation is back: the backend owns it and the socket it holds.
        let (id, raw) = unsafe {
            let raw = mem::replace(&mut (*p).accept_socket, ws::INVALID_SOCKET);
            ((*p).owner, raw)
        };
        let stream = if raw == ws::INVALID_SOCKET {
            None
        } else {
            // SAFETY: the operation owned this open socket; now `stream` does.
            Some(unsafe { std::os::windows::io::FromRawSocket::from_raw_socket(raw as u64) })
        };
        if status != 0 {
            // Cancelled: the listener is going away.
            if op_error(op).raw_os_error() == Some(wf::ERROR_OPERATION_ABORTED as i32) {
                return 0;
            }
            // The client gave up before it was accepted, or another error: counted, and this
            // accept starts again with the next poll (the others go on meanwhile), so an
            // error that repeats cannot spin.
            self.stats.accept_errors += 1;
            self.accept_rearm.push(op);
            return 0;
        }
        self.start_accept(id, op);
        let stream: TcpStream = match stream {
            Some(stream) => stream,
            None => return 0,
        };
        let listener = match self.sockets.get(id as usize) {
            Some(Sock::Listener(l)) => &l.socket,
            _ => return 0,
        };
        if win::update_accept_context(&stream, listener).is_err() {
            self.stats.accept_errors += 1;
            return 0;
        }
        if self.conns.len() >= self.max_connections {
            self.stats.accepts_over_limit += 1;
            return 0; // `stream` is closed here
        }
        let from = match stream.peer_addr() {
            Ok(from) => from,
            Err(_) => {
                self.stats.accept_errors += 1;
                return 0;
            }
        };
        match self.register(stream) {
            Ok(conn) => {
                self.stats.accepted += 1;
                on_event(Event::Accepted {
                    listener: SocketId(id),
                    conn,
                    from,
                });
                1
            }
            Err(_) => {
                self.stats.accept_errors += 1;
                0
            }
        }
    }

    /// Registers a connected stream: non-blocking (for the reads and the close's write),
    /// `TCP_NODELAY`, `SO_SNDBUF`, on the port, its zero-byte receive started.
    fn register(&mut self, stream: TcpStream) -> io::Result<ConnId> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let raw = stream.as_raw_socket();
        win::set_send_buffer(raw, self.socket_send_bytes);
        self.associate(raw as ws::SOCKET)?;
        let raw = raw as ws::SOCKET;
        let read = OpPtr::new(OpKind::Read, 0, 0, raw, 0);
        let write = OpPtr::new(OpKind::Write, 0, 0, raw, 0);
        let id = self.conns.insert(Conn {
            stream,
            read,
            write,
            queue: SendBuf::new(self.stream_send_bytes),
            flight: SendBuf::new(self.stream_send_bytes),
            sending: 0,
            released: 0,
            dirty: false,
        });
        for op in [read, write] {
            // SAFETY: just made, not in flight.
            unsafe {
                (*op.0).owner = id.index;
                (*op.0).slot = id.generation;
            }
        }
        if let Err(e) = self.start_read(id) {
            if let Some(c) = self.conns.remove(id) {
                self.bury(id, c);
            }
            return Err(e);
        }
        Ok(id)
    }

    /// Starts connection `id`'s zero-byte receive.
    fn start_read(&mut self, id: ConnId) -> io::Result<()> {
        let op = match self.conns.get(id) {
            Some(c) => c.read,
            None => return Ok(()),
        };
        let p = op.0;
        // SAFETY: the read operation is not in flight (it just came back, or is new): the
        // backend owns it; the WSABUF points at its (empty) buffer.
        let rc = unsafe {
            (*p).ov = mem::zeroed();
            (*p).wsabuf = ws::WSABUF {
                len: 0,
                buf: (*p).buf,
            };
            (*p).flags = 0;
            (*p).busy = true;
            ws::WSARecv(
                (*p).socket,
                ptr::addr_of!((*p).wsabuf),
                1,
                ptr::null_mut(),
                ptr::addr_of_mut!((*p).flags),
                ptr::addr_of_mut!((*p).ov),
                None,
            )
        };
        self.in_flight += 1;
        if rc == 0 {
            return Ok(());
        }
        let err = win::last_error();
        if err.raw_os_error() == Some(ws::WSA_IO_PENDING) {
            return Ok(());
        }
        // SAFETY: failed at once: no packet will come.
        unsafe { (*p).busy = false };
        self.in_flight -= 1;
        Err(err)
    }

    /// A connection's zero-byte receive came back: one non-blocking read into the stream
    /// buffer, delivered; or the connection's end. Returns the events delivered.
    fn handle_read(
        &mut self,
        op: OpPtr,
        status: i32,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> usize {
        // SAFETY: the operation is back: the backend owns it.
        let id = unsafe { op.conn() };
        if self.conns.get(id).is_none() {
            self.zombie_done(id);
            return 0;
        }
        if status != 0 {
            let kind = op_error(op).kind();
            return self.close_with(id, CloseReason::Error(kind), on_event);
        }
        let result = {
            let c = self.conns.get(id).expect("checked above");
            loop {
                match (&c.stream).read(&mut self.read_buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
        };
        match result {
            Ok(0) => self.close_with(id, CloseReason::Eof, on_event),
            Ok(n) => {
                on_event(Event::Stream {
                    conn: id,
                    data: &self.read_buf[..n],
                });
                if let Err(e) = self.start_read(id) {
                    self.fail_conn(id, e.kind());
                }
                1
            }
            // Nothing after all (not expected): wait for the next.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match self.start_read(id) {
                Ok(()) => 0,
                Err(e) => self.close_with(id, CloseReason::Error(e.kind()), on_event),
            },
            Err(e) => self.close_with(id, CloseReason::Error(e.kind()), on_event),
        }
    }

    /// Starts a `WSASend` for connection `id` if bytes are released for it and none is in
    /// flight. A send that fails at once fails the connection (reported by the next poll).
    fn start_send(&mut self, id: ConnId) {
        let (op, buf, len) = match self.conns.get_mut(id) {
            Some(c) if c.sending == 0 && c.released > 0 => {
                if c.flight.is_empty() {
                    mem::swap(&mut c.flight, &mut c.queue);
                }
                let len = c.released.min(c.flight.len()).min(u32::MAX as usize);
                if len == 0 {
                    return;
                }
                c.sending = len;
                (c.write, c.flight.pending().as_ptr(), len)
            }
            _ => return,
        };
        let p = op.0;
        // SAFETY: the write operation is not in flight (`sending` was 0): the backend owns it.
        // The WSABUF points into `flight`'s heap buffer, which nothing appends to, moves or
        // frees until this send's completion is dequeued (a closed connection keeps it in its
        // zombie).
        let rc = unsafe {
            (*p).ov = mem::zeroed();
            (*p).wsabuf = ws::WSABUF {
                len: len as u32,
                buf: buf as *mut u8,
            };
            (*p).busy = true;
            ws::WSASend(
                (*p).socket,
                ptr::addr_of!((*p).wsabuf),
                1,
                ptr::null_mut(),
                0,
                ptr::addr_of_mut!((*p).ov),
                None,
            )
        };
        self.in_flight += 1;
        if rc == 0 {
            return;
        }
        let err = win::last_error();
        if err.raw_os_error() == Some(ws::WSA_IO_PENDING) {
            return;
        }
        // SAFETY: failed at once: no packet will come.
        unsafe { (*p).busy = false };
        self.in_flight -= 1;
        if let Some(c) = self.conns.get_mut(id) {
            c.sending = 0;
        }
        self.fail_conn(id, err.kind());
    }

    /// A connection's send came back: what it wrote leaves the buffers, the next send starts.
    /// Returns the events delivered (a failure's `Closed`).
    fn handle_write(
        &mut self,
        op: OpPtr,
        status: i32,
        written: usize,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> usize {
        // SAFETY: the operation is back: the backend owns it.
        let id = unsafe { op.conn() };
        let c = match self.conns.get_mut(id) {
            Some(c) => c,
            None => {
                self.zombie_done(id);
                return 0;
            }
        };
        let sent = mem::replace(&mut c.sending, 0);
        if status != 0 || (written == 0 && sent > 0) {
            let kind = if status != 0 {
                op_error(op).kind()
            } else {
                io::ErrorKind::WriteZero
            };
            return self.close_with(id, CloseReason::Error(kind), on_event);
        }
        let n = written.min(sent);
        c.flight.consume(n);
        c.released -= n;
        self.stream_queued -= n;
        self.start_send(id);
        0
    }

    /// Puts connection `id` on the flush list.
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// The stream half of `flush`: releases what is queued and starts a send for every
    /// connection without one.
    fn flush_streams(&mut self, report: &mut FlushReport) {
        let mut dirty = mem::take(&mut self.dirty);
        for &id in &dirty {
            match self.conns.get_mut(id) {
                Some(c) => {
                    c.dirty = false;
                    let total = c.queued();
                    report.stream_bytes += total - c.released;
                    c.released = total;
                }
                None => continue,
            }
            self.start_send(id);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Disposes of a connection taken out of the table: with no operation in flight its
    /// socket closes now; otherwise they are cancelled, the sending side is shut down (the
    /// peer sees the close at once) and socket, operations and send buffer wait in a zombie
    /// until the last completion.
    fn bury(&mut self, id: ConnId, c: Conn) {
        self.stream_queued -= c.queued();
        if !c.read.busy() && !c.write.busy() {
            // SAFETY: neither is in flight, and the connection (the only other holder of the
            // pointers) is gone.
            unsafe {
                c.read.free();
                c.write.free();
            }
            return; // dropping `c` closes the socket
        }
        // SAFETY: the socket is open; a null OVERLAPPED cancels all its operations.
        unsafe { wio::CancelIoEx(c.stream.as_raw_socket() as HANDLE, ptr::null()) };
        let _ = c.stream.shutdown(Shutdown::Write);
        self.zombies.insert(
            id,
            Zombie {
                stream: c.stream,
                read: c.read,
                write: c.write,
                _flight: c.flight,
            },
        );
    }

    /// An operation of a closed connection came back: the zombie goes once both have.
    fn zombie_done(&mut self, id: ConnId) {
        let done = match self.zombies.get(&id) {
            Some(z) => !z.read.busy() && !z.write.busy(),
            None => false,
        };
        if done {
            if let Some(z) = self.zombies.remove(&id) {
                // SAFETY: neither operation is in flight, and the zombie (dropped here,
                // closing the socket) was the only holder of the pointers.
                unsafe {
                    z.read.free();
                    z.write.free();
                }
            }
        }
    }

    /// Takes a connection out, disposes of it and tells the callback why it ended.
    fn close_with(
        &mut self,
        id: ConnId,
        reason: CloseReason,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> usize {
        match self.conns.remove(id) {
            Some(c) => {
                self.bury(id, c);
                on_event(Event::Closed { conn: id, reason });
                1
            }
            None => 0,
        }
    }

    /// A connection failed outside the handling of its completions: closed now, reported by
    /// the next poll.
    fn fail_conn(&mut self, id: ConnId, kind: io::ErrorKind) {
        if let Some(c) = self.conns.remove(id) {
            self.bury(id, c);
            self.closing.push_back((id, kind));
        }
    }

    /// Dequeues up to a batch of completions, waiting at most `timeout_ms`; marks their
    /// operations as back. Returns how many entries of `self.entries` are set.
    fn dequeue(&mut self, timeout_ms: u32, waited: &mut Duration) -> io::Result<usize> {
        let mut n = 0u32;
        let start = Instant::now();
        // SAFETY: `entries` is valid for `entries.len()` entries, `n` is writable.
        let ok = unsafe {
            wio::GetQueuedCompletionStatusEx(
                self.port.0,
                self.entries.as_mut_ptr(),
                self.entries.len() as u32,
                &mut n,
                timeout_ms,
                0,
            )
        };
        if timeout_ms > 0 {
            *waited += start.elapsed();
        }
        if ok == 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(code) if code == wf::WAIT_TIMEOUT as i32 => Ok(0),
                _ => Err(err),
            };
        }
        let n = n as usize;
        for e in &self.entries[..n] {
            if e.lpCompletionKey == SOCKET_KEY && !e.lpOverlapped.is_null() {
                // The kernel is done with the operation (`busy` until it is handled).
                self.in_flight -= 1;
            }
        }
        Ok(n)
    }

    /// Whether handling `e` never delivers an event (so the budget does not apply).
    fn is_internal(e: &wio::OVERLAPPED_ENTRY) -> bool {
        if e.lpCompletionKey == WAKE_KEY || e.lpOverlapped.is_null() {
            return true;
        }
        // SAFETY: the operation is back (dequeued): the backend owns it.
        unsafe { (*(e.lpOverlapped as *mut Op)).kind == OpKind::SendTo }
    }

    /// Handles one dequeued completion. Returns (events delivered, woken).
    fn handle(
        &mut self,
        e: wio::OVERLAPPED_ENTRY,
        on_event: &mut dyn FnMut(Event<'_>),
        report: &mut PollReport,
    ) -> (usize, bool) {
        if e.lpCompletionKey == WAKE_KEY {
            self.waker.queued.store(false, Ordering::Release);
            return (0, true);
        }
        if e.lpOverlapped.is_null() {
            return (0, false);
        }
        let op = OpPtr(e.lpOverlapped as *mut Op);
        let p = op.0;
        let status = e.Internal as i32;
        // SAFETY: the operation is back (dequeued): the backend owns it; nothing else touches
        // it until it is started again or freed, which its handling here allows.
        let kind = unsafe {
            (*p).busy = false;
            (*p).kind
        };
        match kind {
            OpKind::Accept => (self.handle_accept(op, status, on_event), false),
            OpKind::Read => (self.handle_read(op, status, on_event), false),
            OpKind::Write => {
                let written = e.dwNumberOfBytesTransferred as usize;
                (self.handle_write(op, status, written, on_event), false)
            }
            OpKind::SendTo => {
                if status != 0 {
                    self.stats.send_errors += 1;
                }
                // SAFETY: as above.
                self.tx_free.push(unsafe { (*p).slot });
                (0, false)
            }
            OpKind::RecvFrom => {
                let mut delivered = 0;
                if status == 0 {
                    // SAFETY: as above; the kernel wrote `addr`, `addr_len` and the first
                    // `dwNumberOfBytesTransferred` bytes of `buf`.
                    let (socket, peer, data) = unsafe {
                        let n = (e.dwNumberOfBytesTransferred as usize).min((*p).cap);
                        (
                            SocketId((*p).owner),
                            win::raw_to_socket_addr(&(*p).addr, (*p).addr_len),
                            std::slice::from_raw_parts((*p).buf, n),
                        )
                    };
                    match peer {
                        Some(from) => {
                            on_event(Event::Datagram { socket, from, data });
                            report.datagrams += 1;
                            delivered = 1;
                        }
                        None => self.stats.recv_errors += 1,
                    }
                } else {
                    match op_error(op).raw_os_error() {
                        Some(code) if is_truncation(status, code) => self.stats.truncated += 1,
                        // Cancelled: the socket is going away; not started again.
                        Some(code) if code == wf::ERROR_OPERATION_ABORTED as i32 => {
                            return (0, false)
                        }
                        _ => {
                            // Another error: counted, and the receive restarts at the next
                            // poll, so an error that repeats cannot spin.
                            self.stats.recv_errors += 1;
                            self.rearm.push(op);
                            return (0, false);
                        }
                    }
                }
                self.start_recv(op);
                (delivered, false)
            }
        }
    }

    /// Dequeues without waiting to free send operations; other completions go to the backlog.
    fn reap_sends(&mut self) {
        let mut waited = Duration::ZERO;
        let n = match self.dequeue(0, &mut waited) {
            Ok(n) => n,
            Err(_) => return,
        };
        let mut ignored = PollReport::default();
        for i in 0..n {
            let e = self.entries[i];
            if Self::is_internal(&e) && e.lpCompletionKey != WAKE_KEY {
                self.handle(e, &mut |_| {}, &mut ignored);
            } else {
                self.backlog.push_back(e);
            }
        }
    }

    /// Cancels every operation and waits (at most [`TEARDOWN_PATIENCE`]) until all are back.
    /// True when none is left in flight.
    fn teardown(&mut self) -> bool {
        let conns = self.conns.iter_mut().map(|(_, c)| c.stream.as_raw_socket());
        let zombies = self.zombies.values().map(|z| z.stream.as_raw_socket());
        let sockets = self.sockets.iter().map(|s| s.raw() as u64);
        for raw in sockets.chain(conns).chain(zombies).collect::<Vec<u64>>() {
            // SAFETY: the socket is open; a null OVERLAPPED cancels all its operations.
            unsafe { wio::CancelIoEx(raw as HANDLE, ptr::null()) };
        }
        let end = Instant::now() + TEARDOWN_PATIENCE;
        let mut waited = Duration::ZERO;
        while self.in_flight > 0 {
            let left = time_left(end);
            if left.is_zero() {
                return false;
            }
            if self.dequeue(millis_rounded_up(left), &mut waited).is_err() {
                return false;
            }
        }
        true
    }
}

/// The Winsock error of a completed operation.
fn op_error(op: OpPtr) -> io::Error {
    let p = op.0;
    let (mut bytes, mut flags) = (0u32, 0u32);
    // SAFETY: the operation is back (its completion was dequeued); the call only reads its
    // OVERLAPPED and writes the two locals.
    let ok = unsafe {
        ws::WSAGetOverlappedResult(
            (*p).socket,
            ptr::addr_of!((*p).ov),
            &mut bytes,
            0,
            &mut flags,
        )
    };
    if ok != 0 {
        // Not expected (the status said failure): keep what the status was.
        // SAFETY: as above.
        return io::Error::from_raw_os_error(unsafe { (*p).ov.Internal } as i32);
    }
    win::last_error()
}

/// A datagram longer than the receive buffer: `STATUS_BUFFER_OVERFLOW`, which Winsock reports
/// as `WSAEMSGSIZE` (and Win32 as `ERROR_MORE_DATA`).
fn is_truncation(status: i32, code: i32) -> bool {
    status == wf::STATUS_BUFFER_OVERFLOW
        || code == ws::WSAEMSGSIZE
        || code == wf::ERROR_MORE_DATA as i32
}

fn empty_entry() -> wio::OVERLAPPED_ENTRY {
    wio::OVERLAPPED_ENTRY {
        lpCompletionKey: 0,
        lpOverlapped: ptr::null_mut(),
        Internal: 0,
        dwNumberOfBytesTransferred: 0,
    }
}

/// `d` in whole milliseconds, rounded up, below `INFINITE`.
fn millis_rounded_up(d: Duration) -> u32 {
    let ms = (d.as_nanos() + 999_999) / 1_000_000;
    ms.min(u128::from(u32::MAX - 1)) as u32
}

impl Backend for Iocp {
    fn model(&self) -> Model {
        Model::Iocp
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = UdpSocket::bind(addr)?;
        let raw = socket.as_raw_socket();
        win::set_buffer_sizes(raw, self.buffer_bytes);
        win::udp_connreset_off(raw);
        self.associate(raw as ws::SOCKET)?;
        let recvs: Vec<OpPtr> = (0..RECVS_PER_SOCKET)
            .map(|slot| {
                OpPtr::new(
                    OpKind::RecvFrom,
                    id.0,
                    slot as u32,
                    raw as ws::SOCKET,
                    self.max_datagram,
                )
            })
            .collect();
        self.sockets.push(Sock::Udp(UdpSock {
            socket,
            recvs: recvs.clone(),
        }));
        for op in recvs {
            self.start_recv(op);
        }
        Ok(id)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        match self.sockets.get(id.0 as usize) {
            Some(Sock::Udp(u)) => u.socket.local_addr(),
            Some(Sock::Listener(l)) => Ok(l.local),
            None => Err(unknown_socket(id)),
        }
    }

    fn send(&mut self, id: SocketId, peer: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        let socket = match self.sockets.get(id.0 as usize) {
            Some(s @ Sock::Udp(_)) => s.raw(),
            _ => return Err(SendError::UnknownSocket),
        };
        if data.len() > self.max_datagram {
            return Err(SendError::TooLarge);
        }
        if self.tx_free.is_empty() {
            self.reap_sends();
        }
        let slot = match self.tx_free.pop() {
            Some(slot) => slot,
            None => {
                self.stats.send_queue_full += 1;
                return Err(SendError::QueueFull);
            }
        };
        let p = self.tx[slot as usize].0;
        // SAFETY: a free send operation is not in flight: the backend owns it.
        unsafe {
            ptr::copy_nonoverlapping(data.as_ptr(), (*p).buf, data.len());
            (*p).len = data.len();
            (*p).owner = id.0;
            (*p).socket = socket;
            (*p).addr_len = win::socket_addr_to_raw(&peer, &mut (*p).addr);
        }
        self.tx_queued.push(slot);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<FlushReport> {
        let mut report = FlushReport::default();
        let mut queued = mem::take(&mut self.tx_queued);
        for slot in queued.drain(..) {
            let p = self.tx[slot as usize].0;
            // SAFETY: a queued send operation is not in flight: the backend owns it; every
            // pointer handed to WSASendTo points into it, and it stays allocated until its
            // completion is dequeued.
            let rc = unsafe {
                (*p).ov = mem::zeroed();
                (*p).wsabuf = ws::WSABUF {
                    len: (*p).len as u32,
                    buf: (*p).buf,
                };
                (*p).busy = true;
                ws::WSASendTo(
                    (*p).socket,
                    ptr::addr_of!((*p).wsabuf),
                    1,
                    ptr::null_mut(),
                    0,
                    ptr::addr_of!((*p).addr) as *const ws::SOCKADDR,
                    (*p).addr_len,
                    ptr::addr_of_mut!((*p).ov),
                    None,
                )
            };
            if rc == 0 || win::last_error().raw_os_error() == Some(ws::WSA_IO_PENDING) {
                self.in_flight += 1;
                report.sent += 1;
            } else {
                // Failed at once: no packet will come.
                // SAFETY: as above.
                unsafe { (*p).busy = false };
                report.failed += 1;
                self.tx_free.push(slot);
            }
        }
        self.tx_queued = queued;
        self.stats.send_errors += report.failed as u64;
        self.flush_streams(&mut report);
        Ok(report)
    }

    fn poll(
        &mut self,
        deadline: Instant,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<PollReport> {
        let mut report = PollReport::default();
        for op in mem::take(&mut self.rearm) {
            self.start_recv(op);
        }
        for op in mem::take(&mut self.accept_rearm) {
            // SAFETY: an accept waiting to be started is not in flight.
            let listener = unsafe { (*op.0).owner };
            self.start_accept(listener, op);
        }
        let mut budget = self.max_events;
        let (mut delivered, mut woke) = (0, false);
        while budget > 0 {
            let (conn, kind) = match self.closing.pop_front() {
                Some(closed) => closed,
                None => break,
            };
            on_event(Event::Closed {
                conn,
                reason: CloseReason::Error(kind),
            });
            delivered += 1;
            budget -= 1;
        }
        while budget > 0 {
            let e = match self.backlog.pop_front() {
                Some(e) => e,
                None => break,
            };
            let (n, w) = self.handle(e, on_event, &mut report);
            delivered += n;
            budget -= n.min(budget);
            woke |= w;
        }
        let mut wait = true;
        while budget > 0 {
            let timeout = if wait && delivered == 0 && !woke {
                millis_rounded_up(time_left(deadline))
            } else {
                0
            };
            let n = self.dequeue(timeout, &mut report.waited)?;
            for i in 0..n {
                let e = self.entries[i];
                if budget == 0 && !Self::is_internal(&e) {
                    self.backlog.push_back(e);
                    continue;
                }
                let (k, w) = self.handle(e, on_event, &mut report);
                delivered += k;
                budget -= k.min(budget);
                woke |= w;
            }
            if n == 0 {
                if delivered > 0 || woke || Instant::now() >= deadline {
                    break;
                }
                // The wait ended before the deadline with nothing: wait for the rest.
                wait = true;
                continue;
            }
            // Something delivered: take what else is ready without waiting. Only internal
            // work (sends, errors): wait again until the deadline.
            wait = delivered == 0 && !woke;
        }
        if woke {
            report.events += 1;
        }
        report.events += delivered;
        Ok(report)
    }

    fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = win::listen_tcp(addr)?;
        let local = socket.local_addr()?;
        let accept_ex = win::accept_ex(&socket)?;
        let raw = socket.as_raw_socket() as ws::SOCKET;
        self.associate(raw)?;
        let accepts: Vec<OpPtr> = (0..ACCEPTS_PER_LISTENER)
            .map(|slot| OpPtr::new(OpKind::Accept, id.0, slot as u32, raw, ACCEPT_ADDRS_BYTES))
            .collect();
        self.sockets.push(Sock::Listener(ListenSock {
            socket,
            local,
            accept_ex,
            accepts: accepts.clone(),
        }));
        for op in accepts {
            self.start_accept(id.0, op);
        }
        Ok(id)
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
        self.register(stream)
    }

    fn send_stream(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        let c = match self.conns.get_mut(conn) {
            Some(c) => c,
            None => return Err(SendError::Closed),
        };
        if data.len() > c.queue.capacity_left().saturating_sub(c.flight.len()) {
            self.stats.stream_send_full += 1;
            return Err(SendError::Full);
        }
        // Fits: `queue` alone has at least this much room.
        c.queue.push(data)?;
        self.stream_queued += data.len();
        if !data.is_empty() {
            self.mark_dirty(conn);
        }
        Ok(())
    }

    fn send_capacity(&self, conn: ConnId) -> Option<usize> {
        self.conns
            .get(conn)
            .map(|c| c.queue.capacity_left().saturating_sub(c.flight.len()))
    }

    fn stream_queued(&self) -> usize {
        self.stream_queued
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn close(&mut self, conn: ConnId) {
        let c = match self.conns.remove(conn) {
            Some(c) => c,
            None => {
                // Failed by a send but not reported yet: the caller closed it first.
                self.closing.retain(|closed| closed.0 != conn);
                return;
            }
        };
        if c.sending == 0 {
            // One non-blocking try at what is queued. With a send in flight it is skipped:
            // these bytes must not overtake that one.
            let mut stream = &c.stream;
            let first = c.flight.pending();
            let wrote_first = first.is_empty() || stream.write(first).ok() == Some(first.len());
            if wrote_first && !c.queue.is_empty() {
                let _ = stream.write(c.queue.pending());
            }
        }
        self.bury(conn, c);
    }

    fn waker(&self) -> Waker {
        Waker::new(self.waker.clone())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

impl Drop for Iocp {
    fn drop(&mut self) {
        let clean = self.teardown();
        let mut ops: Vec<OpPtr> = mem::take(&mut self.tx);
        for s in &mut self.sockets {
            match s {
                Sock::Udp(u) => ops.append(&mut u.recvs),
                Sock::Listener(l) => ops.append(&mut l.accepts),
            }
        }
        let mut ids = Vec::new();
        self.conns.ids_into(&mut ids);
        for id in ids {
            if let Some(c) = self.conns.remove(id) {
                ops.push(c.read);
                ops.push(c.write);
                // The connection's send buffers must outlive a send still in flight too.
                if !clean {
                    mem::forget(c.flight);
                }
            }
        }
        for (_, z) in self.zombies.drain() {
            ops.push(z.read);
            ops.push(z.write);
            if !clean {
                mem::forget(z._flight);
            }
        }
        if clean {
            for op in ops {
                // SAFETY: nothing is in flight any more, and these are the only copies used.
                unsafe { op.free() };
            }
        }
        // Otherwise the operations still in flight would be written by the kernel after a
        // free: their memory is leaked instead. Closing the sockets (dropping them) ends what
        // is left.
        if self.timer_period {
            // SAFETY: undoes this backend's own timeBeginPeriod(1).
            unsafe { timeEndPeriod(1) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Teardown cancels the pending receives and waits for every operation to come back
    /// before anything is freed; a waker outliving the backend is harmless.
    #[test]
    fn teardown_waits_for_every_operation() {
        let mut io = Iocp::open(&Config::default()).unwrap();
        let a = io.bind(localhost()).unwrap();
        io.bind(localhost()).unwrap();
        assert_eq!(io.in_flight, 2 * RECVS_PER_SOCKET);
        let to = io.local_addr(a).unwrap();
        for i in 0..5u8 {
            io.send(a, to, &[i]).unwrap();
        }
        assert_eq!(io.flush().unwrap().sent, 5);
        assert!(io.in_flight > 2 * RECVS_PER_SOCKET - 5);
        let waker = io.waker();
        assert!(
            io.teardown(),
            "operations still in flight: {}",
            io.in_flight
        );
        assert_eq!(io.in_flight, 0);
        drop(io);
        waker.wake().unwrap();
    }

    /// A wake-up queues one packet however often it is asked for, and the poll that dequeues
    /// it allows the next.
    #[test]
    fn one_wake_packet_at_a_time() {
        let mut io = Iocp::open(&Config::default()).unwrap();
        let waker = io.waker();
        for _ in 0..3 {
            waker.wake().unwrap();
        }
        let mut waited = Duration::ZERO;
        assert_eq!(io.dequeue(0, &mut waited).unwrap(), 1);
        assert_eq!(io.dequeue(0, &mut waited).unwrap(), 0);
        io.backlog.push_back(io.entries[0]);
        let report = io.poll(Instant::now(), &mut |_| {}).unwrap();
        assert_eq!(report.events, 1);
        waker.wake().unwrap();
        let report = io.poll(Instant::now(), &mut |_| {}).unwrap();
        assert_eq!(report.events, 1);
    }

    /// Polls (without expecting events) until `done` holds; a hang guard, not a measurement.
    fn poll_until(io: &mut Iocp, what: &str, mut done: impl FnMut(&Iocp) -> bool) {
        let end = Instant::now() + Duration::from_secs(60);
        while !done(io) {
            assert!(Instant::now() < end, "hung waiting for {}", what);
            io.poll(Instant::now() + Duration::from_millis(5), &mut |_| {})
                .unwrap();
        }
    }

    /// A connection closed with a send in flight keeps its socket, operations and send buffer
    /// in a zombie until the send's completion is back (the kernel may still read the buffer);
    /// then everything goes, and the peer sees the end.
    #[test]
    fn close_with_a_send_in_flight_waits_for_its_completion() {
        let cfg = Config {
            stream_send_bytes: 256 * 1024,
            stream_socket_send_bytes: 16 * 1024,
            ..Config::default()
        };
        let mut io = Iocp::open(&cfg).unwrap();
        let server = TcpListener::bind(localhost()).unwrap();
        let conn = io
            .connect(server.local_addr().unwrap(), Duration::from_secs(60))
            .unwrap();
        let (mut peer, _) = server.accept().unwrap();
        // The peer never reads: queue and flush until a send stays in flight.
        let chunk = vec![7u8; 64 * 1024];
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < end, "the kernel never filled up");
            let room = io.send_capacity(conn).unwrap();
            if room > 0 {
                io.send_stream(conn, &chunk[..room.min(chunk.len())])
                    .unwrap();
            }
            io.flush().unwrap();
            io.poll(Instant::now() + Duration::from_millis(20), &mut |_| {})
                .unwrap();
            let c = io.conns.get(conn).unwrap();
            if c.sending > 0 && io.send_capacity(conn) == Some(0) {
                break;
            }
        }
        io.close(conn);
        assert_eq!(io.zombies.len(), 1);
        assert_eq!((io.connections(), io.stream_queued()), (0, 0));
        // The peer drains; the cancelled (or finished) send comes back and the zombie goes.
        peer.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let end = Instant::now() + Duration::from_secs(60);
        let mut ended = false;
        while !ended || !io.zombies.is_empty() {
            assert!(Instant::now() < end, "the zombie never went");
            match peer.read(&mut buf) {
                Ok(0) => ended = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => ended = true,
            }
            io.poll(Instant::now() + Duration::from_millis(5), &mut |_| {})
                .unwrap();
        }
        assert_eq!(io.in_flight, 0);
    }

    /// Dropping a backend with live connections, a zombie and listeners waits for every
    /// operation (accepts, zero-byte receives, sends) to come back.
    #[test]
    fn teardown_with_streams_waits_for_every_operation() {
        let mut io = Iocp::open(&Config::default()).unwrap();
        let l = io.listen(localhost()).unwrap();
        let addr = io.local_addr(l).unwrap();
        let a = io.connect(addr, Duration::from_secs(60)).unwrap();
        let b = io.connect(addr, Duration::from_secs(60)).unwrap();
        poll_until(&mut io, "both accepted", |io| io.connections() == 4);
        io.send_stream(a, b"hello").unwrap();
        io.flush().unwrap();
        io.close(b);
        assert!(io.in_flight >= ACCEPTS_PER_LISTENER + 3);
        assert!(
            io.teardown(),
            "operations still in flight: {}",
            io.in_flight
        );
        assert_eq!(io.in_flight, 0);
    }

    /// A completion kept in the backlog still names its operation: closing its connection
    /// meanwhile keeps the operation (in a zombie) until that completion is handled.
    #[test]
    fn a_backlogged_completion_keeps_its_closed_connections_operation() {
        let cfg = Config {
            max_events: 1,
            ..Config::default()
        };
        let mut io = Iocp::open(&cfg).unwrap();
        let server = TcpListener::bind(localhost()).unwrap();
        let addr = server.local_addr().unwrap();
        let a = io.connect(addr, Duration::from_secs(60)).unwrap();
        let b = io.connect(addr, Duration::from_secs(60)).unwrap();
        let (mut pa, _) = server.accept().unwrap();
        let (mut pb, _) = server.accept().unwrap();
        pa.write_all(b"a").unwrap();
        pb.write_all(b"b").unwrap();
        // One event per poll: both reads come back, one waits in the backlog; its connection
        // is closed before that completion is handled.
        poll_until(&mut io, "a read in the backlog", |io| {
            !io.backlog.is_empty()
        });
        let kept = OpPtr(io.backlog[0].lpOverlapped as *mut Op);
        assert!(kept.busy());
        for id in [a, b] {
            io.close(id);
        }
        assert_eq!(io.connections(), 0);
        assert!(!io.zombies.is_empty());
        poll_until(&mut io, "the zombies to go", |io| io.zombies.is_empty());
        assert!(io.backlog.is_empty());
    }

    #[test]
    fn millis_round_up_below_infinite() {
        assert_eq!(millis_rounded_up(Duration::ZERO), 0);
        assert_eq!(millis_rounded_up(Duration::from_nanos(1)), 1);
        assert_eq!(millis_rounded_up(Duration::from_millis(20)), 20);
        assert_eq!(millis_rounded_up(Duration::from_micros(20_001)), 21);
        assert_eq!(
            millis_rounded_up(Duration::from_secs(u64::MAX)),
            u32::MAX - 1
        );
    }
}
