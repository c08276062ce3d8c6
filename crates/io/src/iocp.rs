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
//! it meanwhile (`in_flight`). Freeing waits for the packet, also at teardown: dropping the
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

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::windows::io::AsRawSocket;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{self as wf, HANDLE};
use windows_sys::Win32::Media::{timeBeginPeriod, timeEndPeriod};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::System::IO as wio;

use crate::win;
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, Config, ConnId, Event, FlushReport,
    IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

/// Completion key of every socket.
const SOCKET_KEY: usize = 0;
/// Completion key of the waker's packets.
const WAKE_KEY: usize = 1;
/// Overlapped receives kept pending per UDP socket.
pub(crate) const RECVS_PER_SOCKET: usize = 4;
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
}

/// One overlapped operation and everything the kernel reads or writes for it.
#[repr(C)]
struct Op {
    /// First, so that a completion's `OVERLAPPED` pointer is the `Op`'s.
    ov: wio::OVERLAPPED,
    kind: OpKind,
    /// Between the call that started it and the dequeue of its completion.
    in_flight: bool,
    owner: u32,
    slot: u32,
    /// The socket it runs on (for `WSAGetOverlappedResult`).
    socket: ws::SOCKET,
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
            in_flight: false,
            owner,
            slot,
            socket,
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
        // SAFETY: both made by `Box::into_raw` in `new`; the caller guarantees the rest.
        unsafe {
            let op = Box::from_raw(self.0);
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(op.buf, op.cap)));
        }
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

enum Sock {
    Udp(UdpSock),
}

impl Sock {
    fn raw(&self) -> ws::SOCKET {
        match self {
            Sock::Udp(u) => u.socket.as_raw_socket() as ws::SOCKET,
        }
    }
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
            (*p).in_flight = true;
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
                unsafe { (*p).in_flight = false };
                self.in_flight -= 1;
                self.stats.recv_errors += 1;
                self.rearm.push(op);
            }
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
        for i in 0..n {
            let e = self.entries[i];
            if e.lpCompletionKey == SOCKET_KEY && !e.lpOverlapped.is_null() {
                // SAFETY: the kernel is done with the operation: the backend owns it again.
                unsafe { (*(e.lpOverlapped as *mut Op)).in_flight = false };
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
        // SAFETY: the operation is back: the backend owns it (nothing else touches it until
        // it is started again below).
        let kind = unsafe { (*p).kind };
        match kind {
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
        for s in &self.sockets {
            // SAFETY: the socket is open; a null OVERLAPPED cancels all its operations.
            unsafe { wio::CancelIoEx(s.raw() as HANDLE, ptr::null()) };
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
                (*p).in_flight = true;
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
                unsafe { (*p).in_flight = false };
                report.failed += 1;
                self.tx_free.push(slot);
            }
        }
        self.tx_queued = queued;
        self.stats.send_errors += report.failed as u64;
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
        let mut budget = self.max_events;
        let (mut delivered, mut woke) = (0, false);
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

    fn listen(&mut self, _addr: SocketAddr) -> io::Result<SocketId> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the iocp backend's stream half is not built yet",
        ))
    }

    fn connect(&mut self, _addr: SocketAddr, _timeout: Duration) -> io::Result<ConnId> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the iocp backend's stream half is not built yet",
        ))
    }

    fn send_stream(&mut self, _conn: ConnId, _data: &[u8]) -> Result<(), SendError> {
        Err(SendError::Closed)
    }

    fn send_capacity(&self, _conn: ConnId) -> Option<usize> {
        None
    }

    fn stream_queued(&self) -> usize {
        0
    }

    fn connections(&self) -> usize {
        0
    }

    fn close(&mut self, _conn: ConnId) {}

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
