//! The Linux io_uring backend (kernel 6.0+: multishot `recvmsg` on a provided buffer ring;
//! multishot accept and recv for streams).
//!
//! # Receive
//!
//! Every bound socket has one multishot `IORING_OP_RECVMSG` armed on one provided buffer ring
//! (buffer group [`BGID`]). Each buffer holds the kernel's `io_uring_recvmsg_out` header, a
//! `sockaddr_storage` for the source address and `max_datagram` payload bytes; the ring has
//! `next_power_of_two(max(4 * max_events, 1024))` buffers (at most 32768), enough for several
//! polls' worth of backlog. Each datagram is one CQE; it is parsed with `RecvMsgOut::parse`,
//! handed to the callback (or dropped and counted when `MSG_TRUNC` says it was longer than
//! `max_datagram`) and its buffer goes straight back to the ring. A CQE without `F_MORE` (the
//! ring ran out of buffers, a CQ overflow, an error) ends that socket's multishot receive; it is
//! re-armed at the end of the poll once buffers are free again. Datagrams that arrive meanwhile
//! wait in the socket buffer, exactly as under epoll.
//!
//! A poll delivers at most `max_events` datagrams. Every CQE is reaped on every pass (so send
//! slots and wake-ups are never stuck behind receive completions); receive CQEs beyond the
//! budget are kept, with their buffers, in a backlog that the next poll delivers first, without
//! waiting. See [Back-pressure](#back-pressure) for a full CQ or SQ.
//!
//! # Send
//!
//! `send` copies into a slot of a preallocated slab (`send_queue` slots, each with its own
//! `msghdr`, `iovec` and `sockaddr_storage`). `flush` turns every queued slot into one
//! `IORING_OP_SENDMSG` SQE (with `MSG_DONTWAIT`: a full socket buffer fails the datagram,
//! which is dropped and counted, never retried) and **does not enter the kernel**: the next
//! [`Backend::poll`] submits them in the same `io_uring_enter` that waits for the deadline, so a
//! tick costs one syscall for all its sends and its wait. A slot is reused only after its CQE
//! came back. Consequences for callers:
//!
//! * [`FlushReport::sent`] counts datagrams handed to the ring; the kernel's refusals are counted
//!   in [`IoStats::send_errors`] when their CQEs are reaped. `FlushReport::failed` counts only
//!   datagrams the SQ could not take at all (see [Back-pressure](#back-pressure)), also in
//!   `send_errors`.
//! * A caller that flushes and then never polls must poll once (`poll(Instant::now(), ..)` does
//!   not block) to push the datagrams out; dropping the backend also submits them. The server's
//!   tick loop always polls after a flush.
//! * When `send` finds every slot taken and some are on the ring, it submits and reaps the ring
//!   first (one syscall), so "flush, then send again" works as with the other backends.
//! * With [`IoUringOptions::sqpoll`] the kernel's SQ thread picks the SQEs up by itself; `flush`
//!   wakes it if it sleeps.
//!
//! # Streams
//!
//! * **Accept.** Every listener has one multishot `IORING_OP_ACCEPT` (accepted sockets
//!   `SOCK_NONBLOCK | SOCK_CLOEXEC`). Each CQE carries a new descriptor, handled as an event
//!   (so under the budget, in order): over `max_connections` it is closed at once and counted,
//!   else it gets `TCP_NODELAY`, its peer address (`getpeername`) and a slot, and
//!   `Event::Accepted` goes up. A CQE without `F_MORE` re-arms the accept (at once after a
//!   success, at the next poll after an error).
//! * **Descriptor exhaustion.** `EMFILE`/`ENFILE` ends the multishot accept. The backend
//!   closes its reserve descriptor (`/dev/null`, opened by the first `listen`), accepts and
//!   closes what waits in that listener's backlog (up to 64), reopens the reserve, counts
//!   `accepts_shed`, and **pauses** the listener: its accept is re-armed by the next poll, not
//!   before, so a persistent failure costs one attempt per poll, never a loop. Without a reserve
//!   the waiting connection is left in the backlog (counted once per pause).
//! * **Receive.** Every connection has one multishot `IORING_OP_RECV` on a second provided
//!   buffer ring (group [`BGID_STREAM`], made by the first `listen`/`connect`) of one buffer of
//!   `stream_read_bytes` per connection: `next_power_of_two(max(max_connections, max_events))`,
//!   16 to 32768, halved while the ring would reserve more than 32 MiB (with the default
//!   16 KiB: 2048 buffers for more than 2048 connections). The memory is an anonymous mapping,
//!   so only the pages the kernel writes become resident. Each CQE is one `Event::Stream`
//!   lending the buffer the kernel filled; it goes back to the ring right after the callback.
//!   `res == 0` is `Closed { Eof }`, another error `Closed { Error }`.
//! * **Ring run dry.** When every buffer is taken (events beyond the budget keep theirs in the
//!   backlog), a receive whose socket gets bytes ends with `ENOBUFS`, its bytes waiting in the
//!   socket. It joins the back of a FIFO re-arm queue; each pass of `poll` re-arms from its front
//!   at most as many connections as the ring has free buffers. Each of them had bytes waiting,
//!   so each takes a buffer at once: re-arming more would only end the rest again with
//!   `ENOBUFS`. (Re-arming the whole queue whenever any buffer came back cost thousands of
//!   wasted re-arms and completions per poll at 8000 connections and, worse, left connections
//!   unread for seconds while others were read over and over: their clients' handshake retries
//!   piled up, the server spent its time on stale ones and stopped answering.) In order, every
//!   waiting connection gets its turn within `queue length / ring size` passes.
//! * **Send.** At most one `IORING_OP_SEND` (`MSG_NOSIGNAL`) per connection is on the ring.
//!   Each connection has two `SendBuf`s: `send_stream` appends to `queue`; the kernel reads
//!   from `flight`, which nothing appends to, so the bytes under a SEND never move (no copy:
//!   when `flight` is empty the two swap). `flush` releases what is queued
//!   (`FlushReport::stream_bytes`) and queues a SEND for each connection without one; a short
//!   write queues the rest from where the kernel stopped, and when a SEND completes, bytes a
//!   flush released meanwhile follow (bytes queued after the last flush wait for the next).
//!   `stream_queued`/`send_capacity` count both buffers (at most `stream_send_bytes` bytes per
//!   connection; each buffer allocates as it fills, so up to twice that is allocated). Like the
//!   datagram sends, SENDs are submitted by the next poll's `io_uring_enter`; a failed SEND
//!   closes the connection with `Closed { Error }`.
//! * **Stale completions.** The `user_data` of a connection's requests carries its kind, slot
//!   index (24 bits: `max_connections` is capped at 2^24) and generation. A CQE whose generation
//!   no longer matches the slot belongs to a closed connection: its buffer goes back to the
//!   ring and no event is delivered, also when a new connection took the slot meanwhile.
//! * **Close.** `close` (and the backend on `Eof`/`Error`) takes the connection out of the table
//!   at once (the handle is stale). With no request of it left, the descriptor closes there.
//!   Otherwise (a receive armed, a SEND on the ring) it is shut down (`SHUT_RDWR`: the peer sees
//!   the end at once and the requests end by themselves), each request is cancelled by its
//!   `user_data` (`IORING_OP_ASYNC_CANCEL`), and descriptor plus in-flight buffer wait in a
//!   zombie until the requests' last CQEs: a descriptor number is never closed (and reused)
//!   under a request or an SQE still in the SQ that names it. `close` first tries one
//!   non-blocking write of what is queued, unless a SEND is on the ring (those bytes must not
//!   overtake it; they are dropped).
//! * `connect` is std's `TcpStream::connect_timeout` (blocking), then non-blocking, `TCP_NODELAY`
//!   and registered like an accepted connection.
//!
//! # Back-pressure
//!
//! * **Full SQ.** An SQE that does not fit hands the SQ to the kernel first (`io_uring_enter`
//!   without waiting; under SQPOLL, waking the SQ thread and waiting for room with
//!   `IORING_ENTER_SQ_WAIT`). If it still does not fit (the kernel refused for now), nothing
//!   fails: a receive or accept stays on its re-arm list, a SEND on the flush list, a datagram
//!   is dropped and counted (`send_errors`, `FlushReport::failed`), a cancel is skipped (the
//!   shutdown ends the request anyway), the waker is armed by the next poll. `poll`, `flush`,
//!   `bind`, `listen` and `connect` never fail for a full SQ: an error out of `poll` would end
//!   the caller's loop over what is only back-pressure.
//! * **Full CQ.** The CQ holds every CQE that can be posted between two reaps: one per buffer
//!   of both rings, per send slot, two per connection (its receive's last CQE, its send's),
//!   and 1024 more (accepts, cancels, the waker), up to the kernel's 65536. Beyond that the
//!   kernel keeps the CQEs (`IORING_FEAT_NODROP`) and flags the SQ (`IORING_SQ_CQ_OVERFLOW`);
//!   they move into the CQ only on an enter with `GETEVENTS`, so `poll` enters (without
//!   waiting) and reaps again while the flag is up (at most 64 extra passes; the next poll goes
//!   on, without waiting). Multishot requests that the overflow ended (a last CQE without
//!   `F_MORE`) are re-armed like any other.
//!
//! # Wake-ups
//!
//! The waker is an eventfd with a multishot `IORING_OP_POLL_ADD` on the ring; a wake CQE makes
//! the wait return, the eventfd is drained and counted as one event per poll.
//!
//! # Ring flags and threads
//!
//! The ring is set up with `SUBMIT_ALL | CLAMP` and the best of `COOP_TASKRUN`,
//! `SINGLE_ISSUER`, `DEFER_TASKRUN` the kernel accepts (dropped in that reverse order on
//! `EINVAL`). `SINGLE_ISSUER` ties the ring to one thread; the ring is created disabled
//! (`R_DISABLED`) and enabled by the first thread that submits, so a backend may be opened on
//! one thread and handed to another before its first `poll`/`flush`, but not moved again
//! afterwards (the kernel then answers `EEXIST`, reported as such). Callers that need to move it
//! set [`IoUringOptions::single_issuer`] to false.
//!
//! # Teardown
//!
//! Drop submits whatever is queued, cancels every request (`IORING_ASYNC_CANCEL_ANY`) and reaps
//! until every request has posted its final CQE (at most one second); only then is the memory
//! the kernel writes into freed. If that cannot be confirmed (the ring refused, or it took too
//! long), the buffers (and the stream send buffers a SEND may still read) are leaked rather
//! than freed under the kernel. Every descriptor is closed either way: sockets, listeners,
//! connections, zombies, accepted descriptors still waiting in the backlog, the reserve.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::mem::{self, ManuallyDrop};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::io_uring::{cqueue, opcode, squeue, types, EnterFlags, IoUring};

use crate::conns::{ConnTable, SendBuf};
use crate::epoll::EventFd;
use crate::sys;
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, CloseReason, Config, ConnId, Event,
    FlushReport, IoStats, IoUringFlags, IoUringOptions, Model, PollReport, SendError, SocketId,
    Waker,
};

/// The provided-buffer group of the datagram receive ring (one ring per backend).
const BGID: u16 = 0;
/// The provided-buffer group of the stream receive ring (created by the first `listen` or
/// `connect`).
const BGID_STREAM: u16 = 1;
/// `user_data` layout: the kind in the top byte; below it a socket id or send slot in the low
/// 32 bits, or, for the stream kinds, a connection's slot index in bits 32..56 and its
/// generation in the low 32 bits (so a CQE that outlives its connection is recognised).
const KIND_MASK: u64 = 0xff << 56;
const KIND_RECV: u64 = 1 << 56;
const KIND_SEND: u64 = 2 << 56;
const KIND_WAKE: u64 = 3 << 56;
const KIND_CANCEL: u64 = 4 << 56;
/// A listener's multishot accept (low 32 bits: its socket id).
const KIND_ACCEPT: u64 = 5 << 56;
/// A connection's multishot receive.
const KIND_SRECV: u64 = 6 << 56;
/// A connection's send (at most one per connection on the ring).
const KIND_SSEND: u64 = 7 << 56;
/// Connection slot indexes must fit the 24 bits `user_data` has for them: `max_connections`
/// is capped at this (slots are reused, so the index stays below the peak number open).
const CONN_INDEX_LIMIT: usize = 1 << 24;
/// Bounds of the stream buffer ring's size (in buffers of `stream_read_bytes`).
const STREAM_BUFS_MIN: usize = 16;
const STREAM_BUFS_MAX: usize = BUF_RING_MAX;
/// The stream buffer ring is halved (down to `STREAM_BUFS_MIN`) until it fits in this. The
/// memory is reserved, not touched: a buffer's pages become resident once the kernel writes
/// into them, so small reads (game traffic) make about a page per buffer resident.
const STREAM_RING_BYTES: usize = 32 << 20;
/// Most pending connections one descriptor-exhaustion episode sheds with the reserve.
const SHED_MAX: usize = 64;
/// Most buffers one provided buffer ring can hold.
const BUF_RING_MAX: usize = 32_768;
/// Largest SQ the kernel accepts (`IORING_MAX_ENTRIES`).
const SQ_MAX: usize = 32_768;
/// Largest CQ the kernel accepts (`IORING_MAX_CQ_ENTRIES`).
const CQ_MAX: usize = 65_536;
/// Size of the kernel's `struct io_uring_recvmsg_out`, which starts every receive buffer.
const RECVMSG_OUT: usize = 16;
/// The poll callback.
type OnEvent<'a> = dyn FnMut(Event<'_>) + 'a;

/// Receive CQEs in one reap that suggest the socket has more ready (see `poll`).
const BURST_RUN: usize = 16;
/// Most non-blocking enters one pass of `poll` adds to take bursts and CQ overflow; what is
/// left is taken by the next poll, which then does not wait.
const MAX_EXTRA_PASSES: usize = 64;
/// How long drop waits for the kernel to finish every request.
const TEARDOWN: Duration = Duration::from_secs(1);
/// How long the probe waits for its own datagram.
const PROBE_PATIENCE: Duration = Duration::from_millis(200);

/// The ring flag sets tried, best first.
fn flag_candidates(opts: &IoUringOptions) -> Vec<IoUringFlags> {
    let all = [
        (true, true, true),
        (true, true, false),
        (true, false, false),
        (false, false, false),
    ];
    all.iter()
        .filter(|(_, single, defer)| opts.single_issuer || (!single && !defer))
        // DEFER_TASKRUN and SQPOLL exclude each other.
        .filter(|(_, _, defer)| !(opts.sqpoll && *defer))
        .map(|&(coop, single, defer)| IoUringFlags {
            coop_taskrun: coop,
            single_issuer: single,
            defer_taskrun: defer,
            sqpoll: opts.sqpoll,
        })
        .collect()
}

/// Turns the errors of `io_uring_setup` that mean "io_uring is not allowed here" into one line
/// naming the likely cause and the fix.
pub(crate) fn setup_error(err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let cause = match sysctl.as_str() {
                "2" => "sysctl kernel.io_uring_disabled=2 turns io_uring off for everyone; \
                        set it to 0"
                    .to_owned(),
                "1" => "sysctl kernel.io_uring_disabled=1 allows io_uring only to root and \
                        the kernel.io_uring_group group, or the container's seccomp profile \
                        blocks it; set the sysctl to 0 or allow the io_uring syscalls"
                    .to_owned(),
                _ => "blocked by the container's seccomp profile (Docker 25+ and containerd 2.0 \
                      deny io_uring by default); run with a seccomp profile that allows \
                      io_uring_setup, io_uring_enter and io_uring_register"
                    .to_owned(),
            };
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "io_uring unavailable: io_uring_setup returned EPERM ({}), or use \
                     --io-model epoll",
                    cause
                ),
            )
        }
        Some(libc::ENOSYS) => io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring unavailable: io_uring_setup returned ENOSYS (kernel older than 5.1, built \
             without CONFIG_IO_URING, or a seccomp filter answering ENOSYS); this backend needs \
             Linux 6.0+, use --io-model epoll",
        ),
        _ => err,
    }
}

/// Wraps an error of a later setup step with what it was doing.
fn step_error(step: &str, err: io::Error) -> io::Error {
    let hint = match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
            " (kernel too old: the io_uring backend needs Linux 6.0+ for multishot recvmsg on \
             provided buffer rings; use --io-model epoll)"
        }
        _ => "",
    };
    io::Error::new(err.kind(), format!("io_uring {}: {}{}", step, err, hint))
}

/// The kernel's `struct io_uring_buf`; `resv` of entry 0 is the ring's tail.
#[repr(C)]
struct RingBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// A zeroed, page-aligned anonymous mapping the kernel reads or writes; unmapped explicitly
/// (or leaked). Its pages become resident only once written: a buffer ring sized for every
/// connection costs memory as the kernel fills its buffers, not when it is made (the global
/// allocator zeroes a large over-aligned block by writing it, which would make all of it
/// resident at once).
struct RawMem {
    ptr: *mut u8,
    len: usize,
}

impl RawMem {
    fn new(size: usize) -> io::Result<RawMem> {
        let len = size.max(1);
        // SAFETY: a fresh private anonymous mapping; no existing memory is named.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "cannot map {} bytes of io_uring buffers: {}",
                    len,
                    io::Error::last_os_error()
                ),
            ));
        }
        Ok(RawMem {
            ptr: ptr as *mut u8,
            len,
        })
    }
}

impl Drop for RawMem {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, unmapped once; nothing points into it any
        // more (the kernel's requests ended, see `Drop for IoUringBackend`).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// The provided buffer ring: `entries` buffers of `stride` bytes and the ring of their
/// descriptors the kernel consumes.
struct BufRing {
    ring: RawMem,
    bufs: RawMem,
    entries: usize,
    stride: usize,
    /// Our producer index (published with a release store by `commit`).
    tail: u16,
    /// Buffers the kernel filled that we have not returned yet.
    out: usize,
}

impl BufRing {
    fn new(entries: usize, stride: usize) -> io::Result<BufRing> {
        let mut ring = BufRing {
            ring: RawMem::new(entries * mem::size_of::<RingBuf>())?,
            bufs: RawMem::new(entries * stride)?,
            entries,
            stride,
            tail: 0,
            out: 0,
        };
        for bid in 0..entries {
            ring.give(bid as u16);
        }
        ring.commit();
        Ok(ring)
    }

    /// Puts buffer `bid` back at the tail (visible to the kernel after `commit`).
    fn give(&mut self, bid: u16) {
        let index = usize::from(self.tail) & (self.entries - 1);
        // SAFETY: `index < entries`, the ring's length; the kernel does not read this entry
        // until the tail is published past it. Only the three fields we own are written (the
        // `resv` of entry 0 is the tail, which `commit` writes atomically).
        unsafe {
            let entry = (self.ring.ptr as *mut RingBuf).add(index);
            ptr::addr_of_mut!((*entry).addr)
                .write(self.bufs.ptr.add(usize::from(bid) * self.stride) as u64);
            ptr::addr_of_mut!((*entry).len).write(self.stride as u32);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the tail to the kernel.
    fn commit(&self) {
        // SAFETY: the tail is the u16 at byte 14 of the page-aligned ring, 2-byte aligned, and
        // shared with the kernel only through atomic accesses.
        let tail = unsafe { &*(self.ring.ptr.add(14) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The `len` bytes the kernel wrote into buffer `bid`.
    fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid).min(self.entries - 1);
        // SAFETY: the buffer lies inside `bufs`; the kernel handed it to us with this CQE and
        // does not write it again until we `give` it back.
        unsafe {
            std::slice::from_raw_parts(self.bufs.ptr.add(bid * self.stride), len.min(self.stride))
        }
    }
}

/// The send slab: one slot per queued datagram, with the `msghdr`, `iovec` and address the
/// SENDMSG SQE points at. A slot is free, queued (until `flush`) or on the ring (until its CQE).
struct TxSlots {
    slot_bytes: usize,
    bytes: Box<[u8]>,
    iovecs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::msghdr]>,
    socket: Box<[u32]>,
    free: Vec<u32>,
    queued: Vec<u32>,
    on_ring: usize,
}

impl TxSlots {
    fn new(slots: usize, slot_bytes: usize) -> TxSlots {
        TxSlots {
            slot_bytes,
            bytes: vec![0u8; slots * slot_bytes].into_boxed_slice(),
            iovecs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ]
            .into_boxed_slice(),
            addrs: vec![sys::zeroed_storage(); slots].into_boxed_slice(),
            msgs: (0..slots).map(|_| zeroed_msghdr()).collect(),
            socket: vec![0u32; slots].into_boxed_slice(),
            free: (0..slots as u32).rev().collect(),
            queued: Vec::with_capacity(slots),
            on_ring: 0,
        }
    }

    /// Fills slot `slot` and wires its msghdr (pointers into this slab's boxed arrays, which
    /// never move).
    fn fill(&mut self, slot: u32, socket: u32, peer: &SocketAddr, data: &[u8]) {
        let i = slot as usize;
        let start = i * self.slot_bytes;
        self.bytes[start..start + data.len()].copy_from_slice(data);
        self.socket[i] = socket;
        let namelen = sys::socket_addr_to_raw(peer, &mut self.addrs[i]);
        // SAFETY: `start + data.len() <= bytes.len()` (checked by the slice above).
        self.iovecs[i].iov_base = unsafe { self.bytes.as_mut_ptr().add(start) } as *mut _;
        self.iovecs[i].iov_len = data.len();
        let iov = &mut self.iovecs[i] as *mut libc::iovec;
        let addr = &mut self.addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
        let msg = &mut self.msgs[i];
        msg.msg_iov = iov;
        msg.msg_iovlen = 1;
        msg.msg_name = addr;
        msg.msg_namelen = namelen;
        msg.msg_flags = 0;
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct; all-zero bytes (null pointers, zero lengths) are a
    // valid value.
    unsafe { mem::zeroed() }
}

/// Everything the kernel may read or write while a request is on the ring. Freed only once
/// every request has posted its last CQE (see `Drop for IoUringBackend`). (The stream send
/// buffers the kernel reads live in their connections, see [`Conn::flight`].)
struct KernelMem {
    bufs: BufRing,
    tx: TxSlots,
    /// The msghdr of every multishot receive: only `msg_namelen` is used (no control data).
    rx_msg: Box<libc::msghdr>,
    /// The stream receive ring (buffer group [`BGID_STREAM`]), made by the first `listen` or
    /// `connect`.
    sbufs: Option<BufRing>,
}

/// One entry of the socket set: datagram sockets and listeners share the id space.
enum Sock {
    Udp(UdpSocket),
    Listener(Listener),
}

impl Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Udp(s) => s.as_raw_fd(),
            Sock::Listener(l) => l.socket.as_raw_fd(),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Sock::Udp(s) => s.local_addr(),
            Sock::Listener(l) => l.socket.local_addr(),
        }
    }
}

struct Listener {
    socket: TcpListener,
    /// Accepting failed (descriptors ran out, or another error): the multishot accept is
    /// re-armed by the next poll, not before, so a persistent failure cannot spin.
    paused: bool,
}

/// A stream connection.
///
/// Send buffering is double: `send_stream` appends to `queue`; a send takes its bytes from
/// `flight`, which nothing appends to, so the bytes the kernel reads never move. When a send
/// is due and `flight` is empty, the two swap (no copy; both keep their allocations). Together
/// they hold at most `stream_send_bytes` bytes.
struct Conn {
    stream: TcpStream,
    queue: SendBuf,
    /// Bytes handed (or about to be handed) to the kernel: the SEND on the ring points at
    /// `flight.pending()[..sending]`. Its heap buffer outlives that SEND: a connection closed
    /// with a send on the ring keeps it in a [`Zombie`] until the CQE.
    flight: SendBuf,
    /// Length of the SEND on the ring (0: none).
    sending: usize,
    /// Bytes at the front of `flight ++ queue` that `flush` released for writing (including
    /// `sending`); what follows waits for the next flush.
    released: usize,
    /// A multishot receive is on the ring (or in the SQ).
    recv_armed: bool,
    /// In the backend's list of connections with bytes queued since the last flush.
    dirty: bool,
    /// A send failed: nothing more is sent; closed when that CQE is delivered.
    failed: bool,
}

impl Conn {
    fn new(stream: TcpStream, cap: usize) -> Conn {
        Conn {
            stream,
            queue: SendBuf::new(cap),
            flight: SendBuf::new(cap),
            sending: 0,
            released: 0,
            recv_armed: false,
            dirty: false,
            failed: false,
        }
    }

    fn queued(&self) -> usize {
        self.flight.len() + self.queue.len()
    }
}

/// A closed connection whose requests have not all posted their last CQE: its descriptor
/// stays open (so the number cannot be reused under a request, or under an SQE still in the
/// SQ) and its in-flight send buffer stays allocated until `pending` reaches 0.
struct Zombie {
    _stream: TcpStream,
    flight: SendBuf,
    pending: u8,
}

/// `user_data` of a connection's request of kind `kind`.
fn conn_ud(kind: u64, id: ConnId) -> u64 {
    kind | (u64::from(id.index) << 32) | u64::from(id.generation)
}

/// The connection a stream `user_data` names.
fn ud_conn(ud: u64) -> ConnId {
    ConnId {
        index: ((ud >> 32) as u32) & 0x00ff_ffff,
        generation: ud as u32,
    }
}

/// The error a negative CQE result stands for.
fn cqe_error(res: i32) -> io::ErrorKind {
    if res == 0 {
        io::ErrorKind::WriteZero
    } else {
        io::Error::from_raw_os_error(-res).kind()
    }
}

pub(crate) struct IoUringBackend {
    ring: IoUring,
    mem: ManuallyDrop<KernelMem>,
    flags: IoUringFlags,
    /// The ring was created disabled (`SINGLE_ISSUER`): enabled by the first submit.
    disabled: bool,
    waker: Arc<EventFd>,
    wake_armed: bool,
    sockets: Vec<Sock>,
    /// Whether each socket has a multishot receive on the ring (or queued in the SQ).
    armed: Vec<bool>,
    armed_count: usize,
    /// Sockets whose receive ended and waits for buffers to be re-armed.
    rearm: Vec<u32>,
    /// Receive CQEs reaped beyond a poll's budget (each holds its buffer), delivered first.
    backlog: VecDeque<cqueue::Entry>,
    /// CQEs copied out of the CQ for processing.
    scratch: Vec<cqueue::Entry>,
    /// A wake CQE was reaped outside `poll` (by `send`'s reclaim); reported by the next poll.
    pending_wake: bool,
    /// SENDMSG SQEs in the SQ, not submitted yet: each will post one CQE at once, so a wait
    /// that submits them asks for that many CQEs plus one.
    sq_sends: usize,
    /// Multishot receives ended by an empty buffer ring (`ENOBUFS`), for tests.
    ring_exhausted: u64,
    max_events: usize,
    buffer_bytes: usize,
    stats: IoStats,
    /// Open stream connections.
    conns: ConnTable<Conn>,
    /// Closed connections waiting for their last CQEs.
    zombies: HashMap<ConnId, Zombie>,
    /// Connections with bytes queued since the last flush.
    dirty: Vec<ConnId>,
    /// Connections whose multishot receive ended (`ENOBUFS`, ...) and waits to be re-armed.
    stream_rearm: VecDeque<ConnId>,
    /// Listeners whose multishot accept ended and waits to be re-armed (paused ones by the
    /// next poll).
    accept_rearm: Vec<u32>,
    /// The descriptor given up to shed connections when descriptors run out (`/dev/null`,
    /// opened by the first `listen`).
    reserve: Option<File>,
    listeners: usize,
    /// Stream requests (accepts are counted in `armed_count`) whose last CQE is not reaped.
    stream_requests: usize,
    /// Bytes in every connection's buffers together.
    stream_queued: usize,
    stream_send_bytes: usize,
    stream_read_bytes: usize,
    /// Buffers of the stream receive ring.
    stream_bufs: usize,
    max_connections: usize,
    /// `SO_SNDBUF` for stream sockets.
    socket_send_bytes: usize,
    /// Drop is tearing the ring down: no new request is queued.
    closing: bool,
    /// Stream receives ended by an empty stream buffer ring, for tests.
    stream_ring_exhausted: u64,
    /// Sends the kernel took only part of, for tests.
    short_writes: u64,
    /// Stream receives put on the ring (first arms and re-arms), for tests.
    stream_arms: u64,
    /// Reaps that found CQEs kept outside the full CQ, for tests.
    cq_overflows: u64,
    /// SQEs the SQ refused even after handing its contents to the kernel, for tests.
    sq_full: u64,
}

// SAFETY: the raw pointers inside `KernelMem` only point into its own heap allocations, and the
// backend is used through `&mut` by one thread at a time. (The kernel's thread affinity under
// SINGLE_ISSUER is a runtime property reported as EEXIST, not a memory-safety one.)
unsafe impl Send for IoUringBackend {}

impl IoUringBackend {
    pub(crate) fn open(cfg: &Config, opts: &IoUringOptions) -> io::Result<IoUringBackend> {
        IoUringBackend::open_sized(cfg, opts, RingSizes::new(cfg))
    }

    /// `open` with the ring sizes given (tests shrink them to provoke exhaustion and overflow).
    fn open_sized(
        cfg: &Config,
        opts: &IoUringOptions,
        sizes: RingSizes,
    ) -> io::Result<IoUringBackend> {
        let RingSizes {
            buf_entries,
            sq_entries,
            cq_entries,
            stream_bufs,
        } = sizes;
        let stride = round_up(
            RECVMSG_OUT + mem::size_of::<libc::sockaddr_storage>() + cfg.max_datagram,
            64,
        );

        let mut last = None;
        let mut built = None;
        for flags in flag_candidates(opts) {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq_entries as u32)
                .setup_clamp()
                .setup_submit_all();
            if flags.coop_taskrun {
                b.setup_coop_taskrun();
            }
            if flags.single_issuer {
                b.setup_single_issuer().setup_r_disabled();
            }
            if flags.defer_taskrun {
                b.setup_defer_taskrun();
            }
            if flags.sqpoll {
                b.setup_sqpoll(opts.sqpoll_idle.as_millis().min(u32::MAX as u128) as u32);
            }
            match b.build(sq_entries as u32) {
                Ok(ring) => {
                    built = Some((ring, flags));
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(setup_error(e)),
            }
        }
        let (ring, flags) = match built {
            Some(b) => b,
            None => {
                return Err(step_error(
                    "setup",
                    last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
                ))
            }
        };

        let bufs = BufRing::new(buf_entries, stride)?;
        // SAFETY: the ring memory is page aligned, `buf_entries` long, and lives in
        // `KernelMem`, which is freed only after every request ended (see Drop).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring.ptr as u64,
                buf_entries as u16,
                BGID,
                0,
            )
        }
        .map_err(|e| step_error("register_buf_ring", e))?;
        let mut rx_msg = Box::new(zeroed_msghdr());
        rx_msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

        let mut backend = IoUringBackend {
            ring,
            mem: ManuallyDrop::new(KernelMem {
                bufs,
                tx: TxSlots::new(cfg.send_queue, cfg.max_datagram),
                rx_msg,
                sbufs: None,
            }),
            flags,
            disabled: flags.single_issuer,
            waker: Arc::new(EventFd::new()?),
            wake_armed: false,
            sockets: Vec::new(),
            armed: Vec::new(),
            armed_count: 0,
            rearm: Vec::new(),
            backlog: VecDeque::with_capacity(buf_entries + 64),
            scratch: Vec::with_capacity(cq_entries),
            pending_wake: false,
            sq_sends: 0,
            ring_exhausted: 0,
            max_events: cfg.max_events,
            buffer_bytes: cfg.socket_buffer_bytes,
            stats: IoStats::default(),
            conns: ConnTable::new(),
            zombies: HashMap::new(),
            dirty: Vec::new(),
            stream_rearm: VecDeque::new(),
            accept_rearm: Vec::new(),
            reserve: None,
            listeners: 0,
            stream_requests: 0,
            stream_queued: 0,
            stream_send_bytes: cfg.stream_send_bytes,
            stream_read_bytes: cfg.stream_read_bytes.min(u32::MAX as usize),
            stream_bufs,
            max_connections: cfg.max_connections.min(CONN_INDEX_LIMIT),
            socket_send_bytes: cfg.stream_socket_send_bytes,
            closing: false,
            stream_ring_exhausted: 0,
            short_writes: 0,
            stream_arms: 0,
            cq_overflows: 0,
            sq_full: 0,
        };
        backend.arm_wake();
        Ok(backend)
    }

    /// Queues one SQE. A full SQ is handed to the kernel first (`make_room`). False when it
    /// stays full (the kernel refused the submission for now: `EAGAIN`, `EBUSY`, or an SQPOLL
    /// thread that does not take it): the caller keeps the request for later (a re-arm list,
    /// the flush list) or gives it up (cancels). Never an error: an error out of `poll` would
    /// end the caller's loop over what is only back-pressure.
    fn push(&mut self, sqe: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: every pointer an SQE of this backend carries points into `self.mem` or
            // into the heap buffer of a connection's `flight`, both of which outlive the
            // request (a closed connection's `flight` moves to a `Zombie` until the CQE; Drop
            // waits for the last CQE or leaks them).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return true;
            }
            if !self.make_room() {
                break;
            }
        }
        self.sq_full += 1;
        false
    }

    /// Hands the SQEs of a full SQ to the kernel without waiting for completions (under
    /// SQPOLL: wakes the SQ thread if it sleeps and waits until it has taken some). Their CQEs
    /// are reaped by the caller's next reap. True when the SQ has room now.
    fn make_room(&mut self) -> bool {
        if self.enable().is_err() {
            return false;
        }
        let done = if self.flags.sqpoll {
            self.ring
                .submit()
                .and_then(|_| self.ring.submitter().squeue_wait())
        } else {
            let to_submit = self.ring.submission().len() as u32;
            // SAFETY: no argument pointer is passed.
            unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(to_submit, 0, 0, None)
            }
        };
        if self.ring.submission().is_empty() {
            self.sq_sends = 0;
        }
        done.is_ok() && !self.ring.submission().is_full()
    }

    /// Arms the waker's multishot poll (re-tried by the next poll if the SQ refuses it).
    fn arm_wake(&mut self) {
        let sqe = opcode::PollAdd::new(types::Fd(self.waker.fd.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(KIND_WAKE);
        self.wake_armed = self.push(&sqe);
    }

    /// Arms socket `id`'s multishot receive, or lists it for re-arming if the SQ refuses.
    fn arm_recv(&mut self, id: u32) {
        let fd = self.sockets[id as usize].as_raw_fd();
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.mem.rx_msg, BGID)
            .build()
            .user_data(KIND_RECV | u64::from(id));
        if self.push(&sqe) {
            self.armed[id as usize] = true;
            self.armed_count += 1;
        } else {
            self.rearm.push(id);
        }
    }

    /// Arms listener `id`'s multishot accept (accepted sockets non-blocking, close-on-exec),
    /// or lists it for re-arming if the SQ refuses.
    fn arm_accept(&mut self, id: u32) {
        let fd = self.sockets[id as usize].as_raw_fd();
        let sqe = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(KIND_ACCEPT | u64::from(id));
        if self.push(&sqe) {
            self.armed[id as usize] = true;
            self.armed_count += 1;
        } else {
            self.accept_rearm.push(id);
        }
    }

    /// Arms connection `id`'s multishot receive on the stream buffer ring. False when the SQ
    /// refused it (the caller keeps it on the re-arm queue).
    fn arm_stream_recv(&mut self, id: ConnId) -> bool {
        let fd = match self.conns.get(id) {
            Some(c) => c.stream.as_raw_fd(),
            None => return true,
        };
        let sqe = opcode::RecvMulti::new(types::Fd(fd), BGID_STREAM)
            .build()
            .user_data(conn_ud(KIND_SRECV, id));
        if !self.push(&sqe) {
            return false;
        }
        self.stream_arms += 1;
        if let Some(c) = self.conns.get_mut(id) {
            c.recv_armed = true;
        }
        self.stream_requests += 1;
        true
    }

    /// Makes and registers the stream buffer ring if it does not exist yet.
    fn ensure_stream_ring(&mut self) -> io::Result<()> {
        if self.mem.sbufs.is_some() {
            return Ok(());
        }
        let bufs = BufRing::new(self.stream_bufs, self.stream_read_bytes)?;
        // SAFETY: the ring memory is page aligned, `stream_bufs` (a power of two <= 32768) long,
        // and lives in `KernelMem`, which is freed only after every request ended (see Drop).
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                bufs.ring.ptr as u64,
                self.stream_bufs as u16,
                BGID_STREAM,
                0,
            )
        }
        .map_err(|e| step_error("register stream buf_ring", e))?;
        self.backlog.reserve(self.stream_bufs);
        self.mem.sbufs = Some(bufs);
        Ok(())
    }

    /// Adds a connected, non-blocking stream and arms its receive (at the back of the re-arm
    /// queue if the SQ refuses it).
    fn register(&mut self, stream: TcpStream) -> ConnId {
        let id = self.conns.insert(Conn::new(stream, self.stream_send_bytes));
        if !self.arm_stream_recv(id) {
            self.stream_rearm.push_back(id);
        }
        id
    }

    /// Puts a SEND for connection `id` on the ring if bytes are released for it and none is on
    /// the ring yet. If the SQ refuses it, the connection goes back on the flush list (the
    /// next flush retries; the bytes stay queued).
    fn start_send(&mut self, id: ConnId) {
        if self.closing {
            return;
        }
        let (fd, buf, len) = match self.conns.get_mut(id) {
            Some(c) if !c.failed && c.sending == 0 && c.released > 0 => {
                if c.flight.is_empty() {
                    mem::swap(&mut c.flight, &mut c.queue);
                }
                let len = c.released.min(c.flight.len()).min(u32::MAX as usize);
                if len == 0 {
                    return;
                }
                (c.stream.as_raw_fd(), c.flight.pending().as_ptr(), len)
            }
            _ => return,
        };
        let sqe = opcode::Send::new(types::Fd(fd), buf, len as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(conn_ud(KIND_SSEND, id));
        if !self.push(&sqe) {
            self.mark_dirty(id);
            return;
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.sending = len;
        }
        self.stream_requests += 1;
    }

    /// Puts connection `id` back on the flush list (its send could not be queued).
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// The stream half of `flush`: releases every byte queued so far and puts a SEND on the
    /// ring for each connection that has none there yet (the others send the released bytes
    /// when their current SEND completes).
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
            self.start_send(id); // if the SQ refuses it, back on the (new) list
        }
        // Keep the list's allocation; what failed stays on it.
        dirty.clear();
        mem::swap(&mut self.dirty, &mut dirty);
        self.dirty.append(&mut dirty);
    }

    /// Disposes of a connection already taken out of the table: closes its descriptor now if
    /// no request of it is left, else shuts it down (the peer sees the close at once, and the
    /// requests end by themselves), cancels the requests and keeps descriptor and in-flight
    /// buffer in a zombie until their last CQEs.
    fn bury(&mut self, id: ConnId, c: Conn) {
        self.stream_queued -= c.queued();
        let pending = u8::from(c.recv_armed) + u8::from(c.sending > 0);
        if pending == 0 {
            return; // dropping `c` closes the descriptor
        }
        let _ = c.stream.shutdown(Shutdown::Both);
        if !self.closing {
            for (live, kind) in [(c.recv_armed, KIND_SRECV), (c.sending > 0, KIND_SSEND)] {
                if live {
                    // Matched by user_data, not by descriptor; if the SQ refuses it, the
                    // shutdown above still ends the request.
                    let cancel = opcode::AsyncCancel::new(conn_ud(kind, id))
                        .build()
                        .user_data(KIND_CANCEL);
                    self.push(&cancel);
                }
            }
        }
        self.zombies.insert(
            id,
            Zombie {
                _stream: c.stream,
                flight: c.flight,
                pending,
            },
        );
    }

    /// The last CQE of one request of a closed connection came back.
    fn zombie_done(&mut self, id: ConnId) {
        let done = match self.zombies.get_mut(&id) {
            Some(z) => {
                z.pending = z.pending.saturating_sub(1);
                z.pending == 0
            }
            None => false,
        };
        if done {
            self.zombies.remove(&id); // closes the descriptor, frees the buffer
        }
    }

    /// Takes a connection out, disposes of it and tells the callback why it ended.
    fn close_with(&mut self, id: ConnId, reason: CloseReason, on_event: &mut OnEvent<'_>) {
        if let Some(c) = self.conns.remove(id) {
            self.bury(id, c);
            on_event(Event::Closed { conn: id, reason });
        }
    }

    /// Listener `id`'s accept failed for want of descriptors (`EMFILE`/`ENFILE`): gives up the
    /// reserve descriptor, accepts and closes what waits in the listener's backlog (at most
    /// `SHED_MAX`), takes the reserve again. Without a reserve, the waiting connection stays in
    /// the backlog (counted once). Either way the listener pauses until the next poll.
    fn shed(&mut self, id: u32) {
        let listener = match self.sockets.get_mut(id as usize) {
            Some(Sock::Listener(l)) => l,
            _ => return,
        };
        listener.paused = true;
        let mut shed = 0;
        if self.reserve.take().is_some() {
            for _ in 0..SHED_MAX {
                match listener.socket.accept() {
                    Ok((stream, _)) => {
                        drop(stream);
                        shed += 1;
                    }
                    Err(e) => {
                        if shed == 0 && sys::is_out_of_fds(&e) {
                            shed = 1; // someone else took the descriptor: left waiting
                        }
                        break;
                    }
                }
            }
            self.reserve = File::open("/dev/null").ok();
        } else {
            shed = 1;
        }
        self.stats.accepts_shed += shed;
    }

    /// Re-arms the receives that ended, as far as the buffer rings have buffers for them, and
    /// the accepts that ended (paused listeners only when `poll_start`). What the SQ refuses
    /// stays listed for the next call.
    fn push_rearms(&mut self, poll_start: bool) {
        // Datagram receives (a few sockets), unless every buffer is waiting in the backlog
        // (then after the next poll).
        if self.mem.bufs.out < self.mem.bufs.entries && !self.rearm.is_empty() {
            for id in mem::take(&mut self.rearm) {
                if !self.armed[id as usize] {
                    self.arm_recv(id); // refused: back on `rearm`
                }
            }
        }
        // Stream receives (up to one per connection), oldest first, at most one per free
        // buffer. A receive on this queue ended with bytes waiting (mostly `ENOBUFS`), so it
        // takes a buffer as soon as it is armed: arming more than there are buffers would only
        // end the rest at once again, and re-arming the whole queue whenever a buffer came
        // back turned into a storm of thousands of re-arms and ENOBUFS completions per poll
        // that starved connections for seconds. In order, so every connection gets its turn.
        if let Some(b) = &self.mem.sbufs {
            let mut room = b.entries - b.out;
            while room > 0 {
                let id = match self.stream_rearm.pop_front() {
                    Some(id) => id,
                    None => break,
                };
                if !matches!(self.conns.get(id), Some(c) if !c.recv_armed && !c.failed) {
                    continue; // closed meanwhile, or armed again already
                }
                if !self.arm_stream_recv(id) {
                    self.stream_rearm.push_front(id);
                    break;
                }
                room -= 1;
            }
        }
        if !self.accept_rearm.is_empty() {
            for id in mem::take(&mut self.accept_rearm) {
                if let Some(Sock::Listener(l)) = self.sockets.get_mut(id as usize) {
                    if l.paused && !poll_start {
                        self.accept_rearm.push(id);
                        continue;
                    }
                    l.paused = false;
                }
                if !self.armed[id as usize] {
                    self.arm_accept(id); // refused: back on `accept_rearm`
                }
            }
        }
    }

    /// Enables a ring created disabled (`SINGLE_ISSUER`): the calling thread becomes the one
    /// that submits.
    fn enable(&mut self) -> io::Result<()> {
        if self.disabled {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(|e| step_error("enable ring", e))?;
            self.disabled = false;
        }
        Ok(())
    }

    /// The kernel holds CQEs that did not fit the CQ (`IORING_FEAT_NODROP`); the next enter
    /// with GETEVENTS moves them in.
    fn cq_overflowed(&mut self) -> bool {
        self.ring.submission().cq_overflow()
    }

    /// One `io_uring_enter`: submits every queued SQE and, with a deadline, waits until one
    /// CQE is there or the deadline passes; without, only reaps (GETEVENTS runs deferred task
    /// work). The time inside is added to `waited`.
    fn enter(&mut self, deadline: Option<Instant>, waited: &mut Duration) -> io::Result<()> {
        self.enable()?;
        loop {
            let left = deadline.map(time_left).unwrap_or(Duration::ZERO);
            let start = Instant::now();
            let res = if left.is_zero() {
                let to_submit = self.ring.submission().len() as u32;
                let mut flags = EnterFlags::GETEVENTS;
                if self.flags.sqpoll && self.ring.submission().need_wakeup() {
                    flags |= EnterFlags::SQ_WAKEUP; // else the SQEs wait for the next flush
                }
                // SAFETY: no argument pointer is passed.
                unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(to_submit, 0, flags.bits(), None)
                }
            } else {
                let ts = types::Timespec::from(left);
                let args = types::SubmitArgs::new().timespec(&ts);
                let want = if self.flags.sqpoll {
                    1
                } else {
                    1 + self.sq_sends
                };
                self.ring.submitter().submit_with_args(want, &args)
            };
            *waited += start.elapsed();
            if self.ring.submission().is_empty() {
                self.sq_sends = 0;
            }
            match res {
                Ok(_) => {
                    // An enter that submitted something reports the count, not the wait's
                    // ETIME/EINTR: keep waiting if nothing came and time is left.
                    if left.is_zero() || !self.ring.completion().is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::ETIME) | Some(libc::EINTR) => {}
                        // CQ overflow not flushed yet, or no memory for it: reap what is there.
                        Some(libc::EBUSY) | Some(libc::EAGAIN) => return Ok(()),
                        Some(libc::EEXIST) => return Err(io::Error::new(
                            io::ErrorKind::Other,
                            "io_uring ring used from a second thread (IORING_SETUP_SINGLE_ISSUER \
                             ties it to the thread that first polled or flushed it)",
                        )),
                        _ => return Err(e),
                    }
                }
            }
            match deadline {
                Some(d) if Instant::now() < d => {}
                _ => return Ok(()),
            }
        }
    }

    /// Copies every CQE out of the CQ and handles it: sends free their slot (stream sends
    /// move their connection's buffer on, and queue what is left), wake-ups are flagged,
    /// ended multishot requests are listed for re-arming, CQEs of closed connections give
    /// their buffer back. CQEs that make an event go to the callback while `budget` lasts
    /// (and the backlog is empty), else to the backlog. Returns the receive CQEs seen.
    fn reap(
        &mut self,
        budget: &mut usize,
        report: &mut PollReport,
        woke: &mut bool,
        mut on_event: Option<&mut OnEvent<'_>>,
    ) -> usize {
        let mut received = 0;
        if self.cq_overflowed() {
            self.cq_overflows += 1;
        }
        self.scratch.clear();
        self.scratch.extend(self.ring.completion());
        for i in 0..self.scratch.len() {
            let cqe = self.scratch[i].clone();
            let ud = cqe.user_data();
            let res = cqe.result();
            let flags = cqe.flags();
            let mut event = false;
            match ud & KIND_MASK {
                KIND_RECV => {
                    let id = ud as u32;
                    if !cqueue::more(flags) {
                        if let Some(armed) = self.armed.get_mut(id as usize) {
                            if *armed {
                                *armed = false;
                                self.armed_count -= 1;
                            }
                            self.rearm.push(id);
                        }
                    }
                    if cqueue::buffer_select(flags).is_some() {
                        self.mem.bufs.out += 1;
                        received += 1;
                        event = true;
                    } else if res == -libc::ENOBUFS {
                        self.ring_exhausted += 1;
                    } else if res < 0 && res != -libc::ECANCELED {
                        self.stats.recv_errors += 1;
                    }
                }
                KIND_SEND => {
                    let tx = &mut self.mem.tx;
                    tx.free.push(ud as u32);
                    tx.on_ring -= 1;
                    if res < 0 {
                        self.stats.send_errors += 1;
                    }
                }
                KIND_WAKE => {
                    if res >= 0 {
                        self.waker.drain();
                        *woke = true;
                    }
                    if !cqueue::more(flags) {
                        self.wake_armed = false;
                    }
                }
                KIND_ACCEPT => event = self.reap_accept(ud as u32, res, flags),
                KIND_SRECV => {
                    if cqueue::buffer_select(flags).is_some() {
                        received += 1;
                    }
                    event = self.reap_stream_recv(ud_conn(ud), res, flags);
                }
                KIND_SSEND => event = self.reap_stream_send(ud_conn(ud), res),
                _ => {} // cancel requests
            }
            if event {
                match on_event.as_mut() {
                    Some(cb) if *budget > 0 && self.backlog.is_empty() => {
                        *budget -= 1;
                        self.deliver(&cqe, &mut **cb, report);
                    }
                    _ => self.backlog.push_back(cqe),
                }
            }
        }
        self.scratch.clear();
        self.commit_bufs();
        received
    }

    /// An accept CQE: true when it carries a new connection (an event to deliver).
    fn reap_accept(&mut self, id: u32, res: i32, flags: u32) -> bool {
        let more = cqueue::more(flags);
        if !more {
            if let Some(armed) = self.armed.get_mut(id as usize) {
                if *armed {
                    *armed = false;
                    self.armed_count -= 1;
                }
                self.accept_rearm.push(id);
            }
        }
        if res >= 0 {
            return true;
        }
        if res == -libc::ECANCELED || self.closing {
            return false;
        }
        if res == -libc::EMFILE || res == -libc::ENFILE {
            self.shed(id);
        } else {
            self.stats.accept_errors += 1;
            if let Some(Sock::Listener(l)) = self.sockets.get_mut(id as usize) {
                l.paused = true; // an error that repeats must not spin: next poll
            }
        }
        if more {
            // Still armed (kernels end it on errors today): cancel it, the final CQE
            // pauses it.
            let cancel = opcode::AsyncCancel::new(KIND_ACCEPT | u64::from(id))
                .build()
                .user_data(KIND_CANCEL);
            self.push(&cancel);
        }
        false
    }

    /// A stream receive CQE: true when it makes an event (bytes, end of stream, error) for a
    /// live connection. A CQE of a closed connection gives its buffer back at once.
    fn reap_stream_recv(&mut self, id: ConnId, res: i32, flags: u32) -> bool {
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            if let Some(b) = self.mem.sbufs.as_mut() {
                b.out += 1;
            }
        }
        let last = !cqueue::more(flags);
        if last {
            self.stream_requests -= 1;
        }
        let live = match self.conns.get_mut(id) {
            Some(c) => {
                if last {
                    c.recv_armed = false;
                }
                true
            }
            None => false,
        };
        if !live {
            if last {
                self.zombie_done(id);
            }
            if let Some(bid) = bid {
                self.give_stream_buf(bid);
            }
            return false;
        }
        if res == -libc::ENOBUFS {
            self.stream_ring_exhausted += 1;
        }
        let ended = res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED);
        if last && !ended {
            // Out of buffers, or ended for another reason (CQ overflow): the connection is
            // fine, its bytes wait in the socket; re-armed once buffers are back.
            self.stream_rearm.push_back(id);
        }
        if ended || (res > 0 && bid.is_some()) {
            return true;
        }
        if let Some(bid) = bid {
            self.give_stream_buf(bid);
        }
        false
    }

    /// A stream send CQE: moves the connection's buffer on and queues what is left (a short
    /// write) or what was released meanwhile; true when the send failed (an event: the
    /// connection closes with the error when it is delivered).
    fn reap_stream_send(&mut self, id: ConnId, res: i32) -> bool {
        self.stream_requests -= 1;
        let c = match self.conns.get_mut(id) {
            Some(c) => c,
            None => {
                self.zombie_done(id);
                return false;
            }
        };
        let sent = mem::replace(&mut c.sending, 0);
        if res < 0 || (res == 0 && sent > 0) {
            c.failed = true;
            return !self.closing;
        }
        let n = (res as usize).min(sent);
        c.flight.consume(n);
        c.released -= n;
        self.stream_queued -= n;
        if n < sent {
            self.short_writes += 1;
        }
        self.start_send(id);
        false
    }

    fn give_stream_buf(&mut self, bid: u16) {
        if let Some(b) = self.mem.sbufs.as_mut() {
            b.give(bid);
            b.out -= 1;
        }
    }

    /// Publishes the buffers given back to both rings.
    fn commit_bufs(&self) {
        self.mem.bufs.commit();
        if let Some(b) = &self.mem.sbufs {
            b.commit();
        }
    }

    /// Hands one event CQE to the callback, counting it in `report`; an event of a connection
    /// closed meanwhile is dropped. Any buffer the CQE holds goes back to its ring.
    fn deliver(
        &mut self,
        cqe: &cqueue::Entry,
        on_event: &mut OnEvent<'_>,
        report: &mut PollReport,
    ) {
        let ud = cqe.user_data();
        let res = cqe.result();
        match ud & KIND_MASK {
            KIND_RECV => {
                let delivered = usize::from(self.deliver_datagram(cqe, on_event));
                report.datagrams += delivered;
                report.events += delivered;
            }
            KIND_ACCEPT => {
                report.events += usize::from(self.deliver_accept(ud as u32, res, on_event));
            }
            KIND_SRECV => {
                let id = ud_conn(ud);
                let bid = cqueue::buffer_select(cqe.flags());
                if self.conns.get(id).is_some() {
                    if res > 0 {
                        if let (Some(bid), Some(b)) = (bid, self.mem.sbufs.as_ref()) {
                            on_event(Event::Stream {
                                conn: id,
                                data: b.filled(bid, res as usize),
                            });
                            report.events += 1;
                        }
                    } else {
                        let reason = if res == 0 {
                            CloseReason::Eof
                        } else {
                            CloseReason::Error(cqe_error(res))
                        };
                        self.close_with(id, reason, on_event);
                        report.events += 1;
                    }
                }
                if let Some(bid) = bid {
                    self.give_stream_buf(bid);
                }
            }
            KIND_SSEND => {
                let id = ud_conn(ud);
                if self.conns.get(id).is_some() {
                    self.close_with(id, CloseReason::Error(cqe_error(res)), on_event);
                    report.events += 1;
                }
            }
            _ => {}
        }
    }

    /// Registers an accepted descriptor and announces it, or closes it at once (over
    /// `max_connections`, or the peer already gone). True when an event was delivered.
    fn deliver_accept(&mut self, listener: u32, fd: i32, on_event: &mut OnEvent<'_>) -> bool {
        // SAFETY: the kernel installed `fd` for this accept CQE, which is handled once; nothing
        // else owns it. From here on it is closed when `stream` drops, on every path.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        if self.conns.len() >= self.max_connections {
            self.stats.accepts_over_limit += 1;
            return false;
        }
        let from = match stream.peer_addr() {
            Ok(from) => from,
            Err(_) => {
                self.stats.accept_errors += 1;
                return false;
            }
        };
        let _ = stream.set_nodelay(true);
        crate::sys::set_send_buffer(stream.as_raw_fd(), self.socket_send_bytes);
        let conn = self.register(stream);
        self.stats.accepted += 1;
        on_event(Event::Accepted {
            listener: SocketId(listener),
            conn,
            from,
        });
        true
    }

    /// Hands one datagram receive CQE (which carries a buffer) to the callback, or drops and
    /// counts it; gives the buffer back. Returns whether the callback was called.
    fn deliver_datagram(&mut self, cqe: &cqueue::Entry, on_event: &mut OnEvent<'_>) -> bool {
        let bid = match cqueue::buffer_select(cqe.flags()) {
            Some(bid) => bid,
            None => return false,
        };
        let mem = &mut *self.mem;
        let mut delivered = false;
        let len = cqe.result().max(0) as usize;
        match types::RecvMsgOut::parse(mem.bufs.filled(bid, len), &mem.rx_msg) {
            Err(()) => self.stats.recv_errors += 1,
            Ok(out) if out.is_payload_truncated() => self.stats.truncated += 1,
            Ok(out) => {
                let name = out.name_data();
                let mut storage = sys::zeroed_storage();
                let n = name.len().min(mem::size_of::<libc::sockaddr_storage>());
                // SAFETY: `n` bytes fit in `storage`; source and destination do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(
                        name.as_ptr(),
                        &mut storage as *mut libc::sockaddr_storage as *mut u8,
                        n,
                    )
                };
                match sys::raw_to_socket_addr(&storage, n as libc::socklen_t) {
                    Some(from) if !out.is_name_data_truncated() => {
                        on_event(Event::Datagram {
                            socket: SocketId(cqe.user_data() as u32),
                            from,
                            data: out.payload_data(),
                        });
                        delivered = true;
                    }
                    _ => self.stats.recv_errors += 1,
                }
            }
        }
        mem.bufs.give(bid);
        mem.bufs.out -= 1;
        delivered
    }

    /// Requests whose last CQE has not been reaped yet (SQEs still in the SQ included).
    fn live_requests(&self) -> usize {
        self.armed_count + usize::from(self.wake_armed) + self.mem.tx.on_ring + self.stream_requests
    }

    /// Submits everything, cancels every request and reaps until none is left. True when the
    /// kernel no longer holds any request (the memory can be freed).
    fn teardown(&mut self) -> bool {
        self.closing = true;
        if self.disabled && self.sq_sends == 0 {
            return true; // never enabled and nothing to send: nothing was ever submitted
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(KIND_CANCEL);
        if !self.push(&cancel) {
            return false;
        }
        self.rearm.clear();
        self.stream_rearm.clear();
        self.accept_rearm.clear();
        let end = Instant::now() + TEARDOWN;
        let mut first = true;
        while first || (self.live_requests() > 0 && Instant::now() < end) {
            let mut waited = Duration::ZERO;
            let deadline = if first { None } else { Some(end) };
            first = false;
            if self.enter(deadline, &mut waited).is_err() {
                return false;
            }
            let (mut budget, mut report, mut woke) = (0, PollReport::default(), false);
            self.reap(&mut budget, &mut report, &mut woke, None);
        }
        self.live_requests() == 0
    }

    /// When `send` finds no free slot: submit whatever flushed SQEs wait in the SQ and reap the
    /// CQEs of the sends (event CQEs go to the backlog).
    fn reclaim(&mut self) {
        if self.mem.tx.on_ring == 0 {
            return;
        }
        let mut waited = Duration::ZERO;
        if self.enter(None, &mut waited).is_ok() {
            let (mut budget, mut report, mut woke) = (0, PollReport::default(), false);
            self.reap(&mut budget, &mut report, &mut woke, None);
            self.pending_wake |= woke;
        }
    }
}

/// The sizes of the rings a backend sets up, computed from its [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingSizes {
    /// Buffers of the datagram receive ring.
    buf_entries: usize,
    sq_entries: usize,
    cq_entries: usize,
    /// Buffers of the stream receive ring.
    stream_bufs: usize,
}

impl RingSizes {
    fn new(cfg: &Config) -> RingSizes {
        let buf_entries = (cfg.max_events.saturating_mul(4))
            .max(1024)
            .checked_next_power_of_two()
            .unwrap_or(BUF_RING_MAX)
            .min(BUF_RING_MAX);
        let sq_entries = cfg
            .send_queue
            .saturating_add(64)
            .checked_next_power_of_two()
            .unwrap_or(SQ_MAX)
            .clamp(64, SQ_MAX);
        let stream_bufs = stream_buf_count(cfg);
        // Every CQE that can be posted between two reaps: one per buffer of either ring (each
        // data CQE holds one), per send slot, and per connection its receive's last CQE and
        // its send's; the rest (accepts, cancels, the waker) in the spare 1024. Beyond
        // CQ_MAX the kernel keeps the overflow (IORING_FEAT_NODROP) and `poll` takes it.
        let cq_entries = buf_entries
            .saturating_add(stream_bufs)
            .saturating_add(cfg.send_queue)
            .saturating_add(cfg.max_connections.min(CONN_INDEX_LIMIT).saturating_mul(2))
            .saturating_add(1024)
            .checked_next_power_of_two()
            .unwrap_or(CQ_MAX)
            .min(CQ_MAX);
        RingSizes {
            buf_entries,
            sq_entries,
            cq_entries,
            stream_bufs,
        }
    }
}

/// Buffers of the stream receive ring: one per connection (`max_connections`, and at least a
/// poll's budget), a power of two from 16 to 32768, fewer when that would take more than
/// `STREAM_RING_BYTES` together (but never fewer than 16).
fn stream_buf_count(cfg: &Config) -> usize {
    let mut n = cfg
        .max_connections
        .max(cfg.max_events)
        .checked_next_power_of_two()
        .unwrap_or(STREAM_BUFS_MAX)
        .clamp(STREAM_BUFS_MIN, STREAM_BUFS_MAX);
    while n > STREAM_BUFS_MIN && n.saturating_mul(cfg.stream_read_bytes) > STREAM_RING_BYTES {
        n /= 2;
    }
    n
}

fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) / to * to
}

impl Backend for IoUringBackend {
    fn model(&self) -> Model {
        Model::IoUring
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = sys::bind_udp(addr, self.buffer_bytes)?;
        self.sockets.push(Sock::Udp(socket));
        self.armed.push(false);
        self.arm_recv(id.0); // if the SQ refuses it, armed by the next poll
        Ok(id)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        self.sockets
            .get(id.0 as usize)
            .ok_or_else(|| unknown_socket(id))?
            .local_addr()
    }

    fn send(&mut self, id: SocketId, peer: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        match self.sockets.get(id.0 as usize) {
            Some(Sock::Udp(_)) => {}
            _ => return Err(SendError::UnknownSocket), // unknown, or a listener
        }
        if data.len() > self.mem.tx.slot_bytes {
            return Err(SendError::TooLarge);
        }
        if self.mem.tx.free.is_empty() {
            self.reclaim();
        }
        let slot = match self.mem.tx.free.pop() {
            Some(slot) => slot,
            None => {
                self.stats.send_queue_full += 1;
                return Err(SendError::QueueFull);
            }
        };
        let tx = &mut self.mem.tx;
        tx.fill(slot, id.0, &peer, data);
        tx.queued.push(slot);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<FlushReport> {
        let mut report = FlushReport::default();
        let mut i = 0;
        while i < self.mem.tx.queued.len() {
            let slot = self.mem.tx.queued[i];
            let fd = self.sockets[self.mem.tx.socket[slot as usize] as usize].as_raw_fd();
            let msg = &self.mem.tx.msgs[slot as usize] as *const libc::msghdr;
            let sqe = opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(KIND_SEND | u64::from(slot));
            if !self.push(&sqe) {
                // The SQ refuses even after a submit (the kernel is short of requests): the
                // rest is dropped and counted like datagrams the kernel refuses.
                let tx = &mut self.mem.tx;
                let rest = tx.queued.len() - i;
                while tx.queued.len() > i {
                    let slot = tx.queued.pop().expect("len > i");
                    tx.free.push(slot);
                }
                report.failed += rest;
                self.stats.send_errors += rest as u64;
                break;
            }
            self.mem.tx.on_ring += 1;
            self.sq_sends += 1;
            report.sent += 1;
            i += 1;
        }
        self.mem.tx.queued.clear();
        self.flush_streams(&mut report);
        if self.flags.sqpoll && (report.sent > 0 || report.stream_bytes > 0) {
            // Wakes the SQ thread only if it sleeps (no syscall otherwise).
            self.ring.submit()?;
        }
        Ok(report)
    }

    fn poll(
        &mut self,
        deadline: Instant,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<PollReport> {
        let mut report = PollReport::default();
        if !self.wake_armed {
            self.arm_wake();
        }
        if self.reserve.is_none() && self.listeners > 0 {
            self.reserve = File::open("/dev/null").ok();
        }
        self.push_rearms(true);
        let mut budget = self.max_events;
        let mut woke = mem::replace(&mut self.pending_wake, false);
        while budget > 0 {
            let cqe = match self.backlog.pop_front() {
                Some(cqe) => cqe,
                None => break,
            };
            budget -= 1;
            self.deliver(&cqe, &mut *on_event, &mut report);
        }
        self.commit_bufs();
        loop {
            let have = woke || budget < self.max_events || !self.backlog.is_empty();
            let overflowed = self.cq_overflowed();
            if !have && !overflowed && self.ring.completion().is_empty() {
                // The one enter of a poll: submits the tick's sends and re-arms, then waits.
                self.enter(Some(deadline), &mut report.waited)?;
            } else if overflowed || !self.ring.submission().is_empty() {
                self.enter(None, &mut report.waited)?;
            }
            let mut received = self.reap(&mut budget, &mut report, &mut woke, Some(&mut *on_event));
            // Without blocking, take what is known to wait: CQEs the kernel kept when the CQ
            // was full (the enter moves them in; the multishot requests the overflow ended
            // are re-armed below), and, while the budget lasts, the rest of a full run of a
            // multishot receive (it takes at most 32 datagrams per run of its task work, so
            // the socket likely holds more; one enter per >= 16 datagrams).
            let mut passes = 0;
            while passes < MAX_EXTRA_PASSES
                && (self.cq_overflowed() || (budget > 0 && received >= BURST_RUN))
            {
                passes += 1;
                self.enter(None, &mut report.waited)?;
                received = self.reap(&mut budget, &mut report, &mut woke, Some(&mut *on_event));
            }
            if !self.wake_armed {
                self.arm_wake();
            }
            self.push_rearms(false);
            // Only send completions came back (or nothing): wait on until the deadline.
            if woke || budget < self.max_events || Instant::now() >= deadline {
                break;
            }
        }
        report.events += usize::from(woke);
        Ok(report)
    }

    fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        self.ensure_stream_ring()?;
        let socket = sys::listen_tcp(addr)?;
        if self.reserve.is_none() {
            // Best effort: without it, descriptor exhaustion pauses the listener instead.
            self.reserve = File::open("/dev/null").ok();
        }
        self.sockets.push(Sock::Listener(Listener {
            socket,
            paused: false,
        }));
        self.armed.push(false);
        self.arm_accept(id.0); // if the SQ refuses it, armed by the next poll
        self.listeners += 1;
        Ok(id)
    }

    fn connect(&mut self, addr: SocketAddr, timeout: Duration) -> io::Result<ConnId> {
        if self.conns.len() >= self.max_connections {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                format!(
                    "max_connections ({}) stream connections are open",
                    self.max_connections
                ),
            ));
        }
        self.ensure_stream_ring()?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        crate::sys::set_send_buffer(stream.as_raw_fd(), self.socket_send_bytes);
        Ok(self.register(stream))
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
        if !c.dirty && !data.is_empty() {
            c.dirty = true;
            self.dirty.push(conn);
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
            None => return,
        };
        if c.sending == 0 && !c.failed {
            // One non-blocking try at what is queued (std's write is send(MSG_NOSIGNAL)). With
            // a send on the ring it is skipped: these bytes must not overtake that one.
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

impl Drop for IoUringBackend {
    fn drop(&mut self) {
        let clean = self.teardown();
        // Accepted descriptors still waiting in the backlog are closed.
        for cqe in self.backlog.drain(..) {
            if cqe.user_data() & KIND_MASK == KIND_ACCEPT && cqe.result() >= 0 {
                // SAFETY: the kernel installed this descriptor for this CQE, which was never
                // delivered: nothing else owns it.
                drop(unsafe { TcpStream::from_raw_fd(cqe.result()) });
            }
        }
        if clean {
            // SAFETY: no request is left on the ring, so the kernel no longer reads or writes
            // this memory; it is dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.mem) }
        } else {
            // `mem` is leaked on purpose: the kernel may still use it. So are the send buffers
            // a SEND may still read; the descriptors (fields dropped after this) close.
            for (_, c) in self.conns.iter_mut() {
                if c.sending > 0 {
                    mem::forget(mem::replace(&mut c.flight, SendBuf::new(1)));
                }
            }
            for z in self.zombies.values_mut() {
                mem::forget(mem::replace(&mut z.flight, SendBuf::new(1)));
            }
        }
    }
}

/// Opens a tiny ring and checks that it really receives: one datagram sent by the ring to its
/// own loopback socket must come back as a multishot receive CQE within `PROBE_PATIENCE`.
pub(crate) fn probe(opts: &IoUringOptions) -> io::Result<IoUringFlags> {
    let cfg = Config {
        max_events: 4,
        max_datagram: 64,
        send_queue: 2,
        socket_buffer_bytes: 64 * 1024,
        ..Config::default()
    };
    let mut io = IoUringBackend::open(&cfg, opts)?;
    let id = io
        .bind("127.0.0.1:0".parse().expect("literal address"))
        .map_err(|e| step_error("probe bind 127.0.0.1", e))?;
    let addr = io.local_addr(id)?;
    io.send(id, addr, b"tickwire-probe")
        .map_err(|e| io::Error::new(io::ErrorKind::Other, e.to_string()))?;
    io.flush().map_err(|e| step_error("probe flush", e))?;
    let end = Instant::now() + PROBE_PATIENCE;
    let mut ok = false;
    while !ok && Instant::now() < end {
        io.poll(end, &mut |event| {
            if let Event::Datagram { socket, from, data } = event {
                ok |= socket == id && from == addr && data == b"tickwire-probe";
            }
        })
        .map_err(|e| step_error("probe poll", e))?;
    }
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "io_uring probe: a loopback datagram sent through the ring did not come back \
                 within {} ms (flags {}, {} send errors, {} receive errors)",
                PROBE_PATIENCE.as_millis(),
                io.flags,
                io.stats.send_errors,
                io.stats.recv_errors
            ),
        ));
    }
    Ok(io.flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn open_or_skip(cfg: &Config) -> Option<IoUringBackend> {
        if let Err(e) = probe(&IoUringOptions::default()) {
            eprintln!("io_uring unavailable here, skipped: {}", e);
            return None;
        }
        Some(IoUringBackend::open(cfg, &IoUringOptions::default()).unwrap())
    }

    fn recv_all(io: &mut IoUringBackend, want: usize) -> Vec<Vec<u8>> {
        let end = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < end {
            io.poll(
                Instant::now() + Duration::from_millis(50),
                &mut crate::on_datagrams(|_, _, b| got.push(b.to_vec())),
            )
            .unwrap();
        }
        got
    }

    #[test]
    fn flag_candidates_degrade_in_order() {
        let c = flag_candidates(&IoUringOptions::default());
        assert_eq!(c.len(), 4);
        assert!(c[0].coop_taskrun && c[0].single_issuer && c[0].defer_taskrun);
        assert!(!c[3].coop_taskrun && !c[3].single_issuer && !c[3].defer_taskrun);
        let sq = flag_candidates(&IoUringOptions {
            sqpoll: true,
            ..IoUringOptions::default()
        });
        assert!(sq.iter().all(|f| f.sqpoll && !f.defer_taskrun));
        let multi = flag_candidates(&IoUringOptions {
            single_issuer: false,
            ..IoUringOptions::default()
        });
        assert!(multi.iter().all(|f| !f.single_issuer && !f.defer_taskrun));
        assert_eq!(
            c[0].to_string(),
            "SUBMIT_ALL|COOP_TASKRUN|SINGLE_ISSUER|DEFER_TASKRUN"
        );
    }

    /// The stream ring and the CQ grow with max_connections: one buffer per connection while
    /// the ring reserves at most 32 MiB, a CQ with room for every connection's last CQEs.
    #[test]
    fn ring_sizes_follow_max_connections() {
        let server = Config {
            max_connections: 8064,
            send_queue: 8192,
            ..Config::default()
        };
        let sizes = RingSizes::new(&server);
        assert_eq!(sizes.stream_bufs, 2048, "32 MiB of 16 KiB buffers");
        assert_eq!(sizes.cq_entries, 32768);
        assert!(sizes.cq_entries >= 4096 + 2048 + 8192 + 2 * 8064 + 1024);
        let small = Config {
            max_connections: 1000,
            stream_read_bytes: 4096,
            ..Config::default()
        };
        let sizes = RingSizes::new(&small);
        assert_eq!(sizes.stream_bufs, 1024);
        assert!(sizes.cq_entries >= 4096 + 1024 + 4096 + 2 * 1000 + 1024);
        let huge_reads = Config {
            stream_read_bytes: 16 << 20,
            ..Config::default()
        };
        assert_eq!(RingSizes::new(&huge_reads).stream_bufs, STREAM_BUFS_MIN);
    }

    #[test]
    fn setup_errors_name_cause_and_fix() {
        let eperm = setup_error(io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(eperm.contains("EPERM"), "{}", eperm);
        assert!(eperm.contains("--io-model epoll"), "{}", eperm);
        assert!(!eperm.contains('\n'));
        let enosys = setup_error(io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(enosys.kind(), io::ErrorKind::Unsupported);
        assert!(enosys.to_string().contains("ENOSYS"));
    }

    /// More datagrams than the buffer ring holds: polls with a small budget let completions
    /// (and their buffers) pile up in the backlog until the ring runs dry; the multishot
    /// receive ends with ENOBUFS, is re-armed once buffers are back, and nothing the socket
    /// buffer held is lost. Sent in rounds so that the socket buffer (default rmem_max) is
    /// never asked to hold more than ~256 small datagrams. Without DEFER_TASKRUN, so that the
    /// kernel receives while the test sends (with it, it receives only inside `poll`).
    #[test]
    fn exhausted_buffer_ring_is_rearmed_without_loss() {
        const ROUNDS: u32 = 40;
        const PER_ROUND: u32 = 64;
        let cfg = Config {
            max_events: 32, // ring of 1024 buffers
            socket_buffer_bytes: 8 * 1024 * 1024,
            ..Config::default()
        };
        if open_or_skip(&cfg).is_none() {
            return;
        }
        let opts = IoUringOptions {
            single_issuer: false,
            ..IoUringOptions::default()
        };
        let mut io = IoUringBackend::open(&cfg, &opts).unwrap();
        assert_eq!(io.mem.bufs.entries, 1024);
        let id = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = io.local_addr(id).unwrap();
        io.poll(Instant::now(), &mut crate::on_datagrams(|_, _, _| {}))
            .unwrap(); // arms the receive
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut seqs = Vec::new();
        let take = |io: &mut IoUringBackend, seqs: &mut Vec<u32>| {
            let report = io
                .poll(
                    Instant::now() + Duration::from_millis(20),
                    &mut crate::on_datagrams(|_, _, b| {
                        seqs.push(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    }),
                )
                .unwrap();
            assert!(report.datagrams <= 32);
        };
        for round in 0..ROUNDS {
            for seq in round * PER_ROUND..(round + 1) * PER_ROUND {
                sender.send_to(&seq.to_le_bytes(), addr).unwrap();
            }
            take(&mut io, &mut seqs);
        }
        let total = ROUNDS * PER_ROUND;
        let end = Instant::now() + Duration::from_secs(60); // hang guard
        while seqs.len() < total as usize && Instant::now() < end {
            take(&mut io, &mut seqs);
        }
        assert_eq!(seqs, (0..total).collect::<Vec<u32>>());
        assert!(io.ring_exhausted >= 1, "the buffer ring never ran dry");
        // Later datagrams still arrive: the receive is armed again.
        sender.send_to(b"later", addr).unwrap();
        assert_eq!(recv_all(&mut io, 1), vec![b"later".to_vec()]);
        assert_eq!(io.armed_count, 1);
        assert_eq!(io.stats().recv_errors, 0);
        assert_eq!(io.mem.bufs.out, 0);
    }

    /// `send` with every slot on the ring submits and reaps them instead of refusing.
    #[test]
    fn send_reclaims_slots_on_the_ring() {
        let cfg = Config {
            send_queue: 2,
            ..Config::default()
        };
        let mut io = match open_or_skip(&cfg) {
            Some(io) => io,
            None => return,
        };
        let id = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = io.local_addr(id).unwrap();
        for round in 0..5u8 {
            io.send(id, addr, &[round, 0]).unwrap();
            io.send(id, addr, &[round, 1]).unwrap();
            assert_eq!(io.flush().unwrap().sent, 2);
        }
        assert_eq!(io.stats().send_queue_full, 0);
        let got = recv_all(&mut io, 10);
        assert_eq!(got.len(), 10);
        assert_eq!(io.mem.tx.free.len(), 2);
    }

    /// Dropping with datagrams flushed but never polled still sends them.
    #[test]
    fn drop_submits_what_was_flushed() {
        let mut io = match open_or_skip(&Config::default()) {
            Some(io) => io,
            None => return,
        };
        let id = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        io.send(id, probe.local_addr().unwrap(), b"bye").unwrap();
        io.flush().unwrap();
        drop(io);
        let mut buf = [0u8; 8];
        // Tearing the ring down may queue task work that interrupts this thread's next
        // blocking call once (EINTR); std does not retry recv with a timeout.
        let n = loop {
            match probe.recv_from(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.unwrap().0,
            }
        };
        assert_eq!(&buf[..n], b"bye");
    }

    /// A datagram the kernel refuses (IPv6 peer from an IPv4 socket) is counted when its CQE
    /// is reaped; the others go out.
    #[test]
    fn refused_send_is_counted_on_completion() {
        let mut io = match open_or_skip(&Config::default()) {
            Some(io) => io,
            None => return,
        };
        let a = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a_addr = io.local_addr(a).unwrap();
        io.send(a, a_addr, b"1").unwrap();
        io.send(a, "[::1]:9".parse().unwrap(), b"bad").unwrap();
        io.send(a, a_addr, b"2").unwrap();
        assert_eq!(io.flush().unwrap().sent, 3);
        let got = recv_all(&mut io, 2);
        assert_eq!(got, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(io.stats().send_errors, 1);
    }

    /// An event copied out of the callback.
    #[derive(Debug, PartialEq)]
    enum Ev {
        Accepted(SocketId, ConnId),
        Stream(ConnId, Vec<u8>),
        Closed(ConnId, CloseReason),
        Datagram,
    }

    /// Polls (50 ms at a time) until `done` says so or the hang guard (60 s) runs out; returns
    /// every event seen.
    fn poll_until(
        io: &mut IoUringBackend,
        mut done: impl FnMut(&IoUringBackend, &[Ev]) -> bool,
    ) -> Vec<Ev> {
        let end = Instant::now() + Duration::from_secs(60);
        let mut evs = Vec::new();
        while !done(io, &evs) {
            assert!(Instant::now() < end, "hang guard: {:?}", evs);
            io.poll(Instant::now() + Duration::from_millis(50), &mut |e| {
                evs.push(match e {
                    Event::Accepted { listener, conn, .. } => Ev::Accepted(listener, conn),
                    Event::Stream { conn, data } => Ev::Stream(conn, data.to_vec()),
                    Event::Closed { conn, reason } => Ev::Closed(conn, reason),
                    Event::Datagram { .. } => Ev::Datagram,
                })
            })
            .unwrap();
        }
        evs
    }

    /// Bytes of `conn` in `evs`, in order.
    fn stream_bytes(evs: &[Ev], conn: ConnId) -> Vec<u8> {
        let mut out = Vec::new();
        for e in evs {
            if let Ev::Stream(c, d) = e {
                if *c == conn {
                    out.extend_from_slice(d);
                }
            }
        }
        out
    }

    /// Listens, connects a std client and polls until the backend accepted it.
    fn accept_one(io: &mut IoUringBackend) -> (SocketId, TcpStream, ConnId) {
        let listener = io.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = io.local_addr(listener).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (l, conn) = accept_next(io);
        assert_eq!(l, listener);
        (listener, client, conn)
    }

    fn accept_next(io: &mut IoUringBackend) -> (SocketId, ConnId) {
        let evs = poll_until(io, |_, evs| {
            evs.iter().any(|e| matches!(e, Ev::Accepted(..)))
        });
        match evs.iter().find(|e| matches!(e, Ev::Accepted(..))) {
            Some(Ev::Accepted(l, c)) => (*l, *c),
            _ => unreachable!(),
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Accept, bytes both ways, the peer's close: the basic path with the io_uring
    /// bookkeeping checked after each step, with every ring setup (task work run by `poll`
    /// only, or whenever the kernel likes; SQEs submitted by `poll` or picked up by SQPOLL).
    #[test]
    fn stream_round_trip_and_peer_close() {
        if open_or_skip(&Config::default()).is_none() {
            return;
        }
        let setups = [
            IoUringOptions::default(),
            IoUringOptions {
                single_issuer: false,
                ..IoUringOptions::default()
            },
            IoUringOptions {
                sqpoll: true,
                sqpoll_idle: Duration::from_millis(10),
                ..IoUringOptions::default()
            },
        ];
        for opts in &setups {
            match IoUringBackend::open(&Config::default(), opts) {
                Ok(io) => round_trip_and_peer_close(io),
                Err(e) => eprintln!("{:?} unavailable here, skipped: {}", opts, e),
            }
        }
    }

    fn round_trip_and_peer_close(mut io: IoUringBackend) {
        let (listener, mut client, conn) = accept_one(&mut io);
        assert_eq!(
            io.send(listener, "127.0.0.1:9".parse().unwrap(), b"x"),
            Err(SendError::UnknownSocket)
        );
        assert_eq!(io.connections(), 1);
        client.write_all(b"hello").unwrap();
        let evs = poll_until(&mut io, |_, evs| stream_bytes(evs, conn).len() >= 5);
        assert_eq!(stream_bytes(&evs, conn), b"hello");
        io.send_stream(conn, b"world").unwrap();
        assert_eq!(io.stream_queued(), 5);
        assert_eq!(io.flush().unwrap().stream_bytes, 5);
        assert_eq!(io.flush().unwrap().stream_bytes, 0);
        let got = read_polling(&mut io, &mut client, 5);
        assert_eq!(got, b"world");
        // The bytes can reach the client before a poll reaps their send's completion (under
        // SQPOLL the kernel thread submits on its own schedule, late on a loaded machine), and
        // only that completion takes them out of the queue.
        let evs = poll_until(&mut io, |io, _| io.stream_queued() == 0);
        assert!(evs.is_empty(), "{:?}", evs);
        assert_eq!(
            io.send_capacity(conn),
            Some(Config::default().stream_send_bytes)
        );
        drop(client);
        let evs = poll_until(&mut io, |_, evs| !evs.is_empty());
        assert_eq!(evs, vec![Ev::Closed(conn, CloseReason::Eof)]);
        assert_eq!(io.connections(), 0);
        assert_eq!(io.send_stream(conn, b"x"), Err(SendError::Closed));
        assert_eq!(io.send_capacity(conn), None);
        assert_eq!(io.stream_requests, 0);
        assert!(io.zombies.is_empty());
        assert_eq!(io.mem.sbufs.as_ref().unwrap().out, 0);
    }

    /// Reads from a non-blocking `client` until `want` bytes came, polling `io` (which must
    /// deliver no event) while the client has nothing.
    fn read_polling(io: &mut IoUringBackend, client: &mut TcpStream, want: usize) -> Vec<u8> {
        client.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let end = Instant::now() + Duration::from_secs(60);
        while got.len() < want {
            assert!(
                Instant::now() < end,
                "hang guard: {} of {} bytes",
                got.len(),
                want
            );
            match client.read(&mut buf) {
                Ok(0) => panic!("eof after {} bytes", got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    io.poll(Instant::now() + Duration::from_millis(10), &mut |e| {
                        panic!("unexpected {:?}", e)
                    })
                    .unwrap();
                }
                Err(e) => panic!("{}", e),
            }
        }
        got
    }

    /// Submits what is queued and reaps every CQE without delivering: event CQEs go to the
    /// backlog.
    fn reap_to_backlog(io: &mut IoUringBackend) {
        let mut waited = Duration::ZERO;
        io.enter(None, &mut waited).unwrap();
        let (mut budget, mut report, mut woke) = (0, PollReport::default(), false);
        io.reap(&mut budget, &mut report, &mut woke, None);
    }

    /// A receive CQE kept in the backlog when its connection is closed is dropped (its buffer
    /// goes back), and the late final CQE of the closed connection's receive is recognised by
    /// its generation although a new connection took the slot meanwhile: the new connection
    /// sees only its own bytes, and no Closed.
    #[test]
    fn stale_cqes_after_close_never_reach_the_slot_reuser() {
        let cfg = Config {
            max_events: 1,
            ..Config::default()
        };
        let mut io = match open_or_skip(&cfg) {
            Some(io) => io,
            None => return,
        };
        let (listener, mut c1, a) = accept_one(&mut io);
        let addr = io.local_addr(listener).unwrap();
        c1.write_all(b"stale").unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while !io
            .backlog
            .iter()
            .any(|cqe| cqe.user_data() == conn_ud(KIND_SRECV, a))
        {
            assert!(Instant::now() < end, "hang guard");
            reap_to_backlog(&mut io);
        }
        assert_eq!(io.mem.sbufs.as_ref().unwrap().out, 1);
        io.close(a);
        assert_eq!(io.connections(), 0);
        assert_eq!(io.send_stream(a, b"x"), Err(SendError::Closed));
        assert_eq!(io.zombies.len(), 1, "the receive is still armed");
        let _c2 = {
            let mut c2 = TcpStream::connect(addr).unwrap();
            let (_, b) = accept_next(&mut io);
            assert_eq!(b.index, a.index);
            assert_ne!(b.generation, a.generation);
            c2.write_all(b"fresh").unwrap();
            let evs = poll_until(&mut io, |_, evs| stream_bytes(evs, b).len() >= 5);
            assert_eq!(stream_bytes(&evs, b), b"fresh");
            for e in &evs {
                assert!(!matches!(e, Ev::Closed(..)), "{:?}", evs);
                assert!(!matches!(e, Ev::Stream(c, _) if *c == a), "{:?}", evs);
            }
            let evs = poll_until(&mut io, |io, _| io.zombies.is_empty());
            assert!(evs.is_empty(), "{:?}", evs);
            c2
        };
    }

    /// A stream buffer ring of 16 buffers of 16 bytes runs dry under 16 KiB sent at once:
    /// the connection's multishot receive ends with ENOBUFS, is re-armed once buffers are
    /// back, and every byte arrives, in order, at most 16 per event.
    #[test]
    fn exhausted_stream_ring_is_rearmed_without_loss() {
        let cfg = Config {
            max_events: 4,
            stream_read_bytes: 16,
            max_connections: 1,
            ..Config::default()
        };
        let mut io = match open_or_skip(&cfg) {
            Some(io) => io,
            None => return,
        };
        assert_eq!(io.stream_bufs, 16);
        let (_, mut client, conn) = accept_one(&mut io);
        let data = pattern(16 * 1024);
        client.write_all(&data).unwrap();
        let evs = poll_until(&mut io, |_, evs| {
            stream_bytes(evs, conn).len() >= data.len()
        });
        assert_eq!(stream_bytes(&evs, conn), data);
        for e in &evs {
            match e {
                Ev::Stream(c, d) => assert!(*c == conn && !d.is_empty() && d.len() <= 16),
                other => panic!("unexpected {:?}", other),
            }
        }
        assert!(
            io.stream_ring_exhausted >= 1,
            "the stream ring never ran dry"
        );
        assert_eq!(io.mem.sbufs.as_ref().unwrap().out, 0);
        // Still armed: later bytes arrive too.
        client.write_all(b"later").unwrap();
        let evs = poll_until(&mut io, |_, evs| stream_bytes(evs, conn).len() >= 5);
        assert_eq!(stream_bytes(&evs, conn), b"later");
        assert!(io.conns.get(conn).unwrap().recv_armed);
    }

    /// A backend with 512 KiB send buffers and one accepted connection whose kernel buffers,
    /// on both ends, are shrunk to 16 KiB (much smaller makes TCP crawl on zero-window probes),
    /// so that a large send goes out in short writes. `None`: io_uring is unavailable here.
    fn accept_one_with_tiny_buffers() -> Option<(IoUringBackend, TcpStream, ConnId)> {
        let cfg = Config {
            stream_send_bytes: 512 * 1024,
            ..Config::default()
        };
        let mut io = open_or_skip(&cfg)?;
        let (_, client, conn) = accept_one(&mut io);
        sys::set_buffer_sizes(client.as_raw_fd(), 16 * 1024);
        sys::set_buffer_sizes(io.conns.get(conn).unwrap().stream.as_raw_fd(), 16 * 1024);
        Some((io, client, conn))
    }

    /// With tiny socket buffers the kernel takes a 256 KiB send in pieces: each short write
    /// queues the rest from where it stopped (the in-flight buffer never moves while bytes
    /// are appended behind it), and the reader gets every byte in order.
    #[test]
    fn short_writes_requeue_the_rest() {
        let (mut io, mut client, conn) = match accept_one_with_tiny_buffers() {
            Some(x) => x,
            None => return,
        };
        let data = pattern(256 * 1024);
        io.send_stream(conn, &data[..128 * 1024]).unwrap();
        assert_eq!(io.flush().unwrap().stream_bytes, 128 * 1024);
        // Appended while the first half is on the ring; released by a flush meanwhile, it
        // follows as soon as the first half is out.
        io.send_stream(conn, &data[128 * 1024..]).unwrap();
        assert_eq!(io.stream_queued(), data.len());
        assert_eq!(io.send_capacity(conn), Some(256 * 1024));
        assert_eq!(io.flush().unwrap().stream_bytes, 128 * 1024);
        let got = read_polling(&mut io, &mut client, data.len());
        assert!(got == data, "bytes differ");
        assert!(io.short_writes >= 1, "no short write happened");
        let evs = poll_until(&mut io, |io, _| io.stream_queued() == 0);
        assert!(evs.is_empty(), "{:?}", evs);
        assert_eq!(io.send_capacity(conn), Some(512 * 1024));
        assert_eq!(io.stream_requests, 1, "only the receive is on the ring");
    }

    /// Closing a connection whose send waits on the ring (the peer does not read): no event,
    /// the handle is stale at once, the peer sees the end of the stream, and descriptor and
    /// in-flight buffer are kept until the cancelled requests' last CQEs.
    #[test]
    fn close_with_a_send_on_the_ring_waits_for_its_cqe() {
        let (mut io, mut client, conn) = match accept_one_with_tiny_buffers() {
            Some(x) => x,
            None => return,
        };
        io.send_stream(conn, &pattern(256 * 1024)).unwrap();
        io.flush().unwrap();
        let evs = poll_until(&mut io, |io, _| io.short_writes >= 1);
        assert!(evs.is_empty(), "{:?}", evs);
        assert!(io.conns.get(conn).unwrap().sending > 0);
        io.close(conn);
        assert_eq!(io.send_capacity(conn), None);
        assert_eq!(io.stream_queued(), 0);
        assert_eq!(io.zombies.len(), 1);
        assert_eq!(io.zombies[&conn].pending, 2, "receive and send");
        let evs = poll_until(&mut io, |io, _| io.zombies.is_empty());
        assert!(evs.is_empty(), "{:?}", evs);
        assert_eq!(io.stream_requests, 0);
        // The peer reads what got through, then the end of the stream.
        client
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{}", e),
            }
        }
    }

    /// Beyond max_connections an accepted connection is closed at once and counted; connect
    /// fails.
    #[test]
    fn max_connections_is_enforced() {
        let cfg = Config {
            max_connections: 1,
            ..Config::default()
        };
        let mut io = match open_or_skip(&cfg) {
            Some(io) => io,
            None => return,
        };
        let (listener, _c1, _) = accept_one(&mut io);
        let addr = io.local_addr(listener).unwrap();
        let mut c2 = TcpStream::connect(addr).unwrap();
        let evs = poll_until(&mut io, |io, _| io.stats.accepts_over_limit == 1);
        assert!(evs.is_empty(), "{:?}", evs);
        c2.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 4];
        match c2.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("{:?}", other),
        }
        assert!(io.connect(addr, Duration::from_secs(60)).is_err());
        assert_eq!(io.connections(), 1);
        assert_eq!(io.stats().accepted, 1);
    }

    /// Rings far too small for the load: a stream buffer ring of 16 buffers of 64 bytes, an SQ
    /// of 64 entries, a CQ of 128; CONNS connections armed at once.
    fn open_tiny(opts: &IoUringOptions) -> io::Result<IoUringBackend> {
        let cfg = Config {
            max_events: 64,
            stream_read_bytes: 64,
            max_connections: TINY_CONNS,
            ..Config::default()
        };
        let sizes = RingSizes {
            buf_entries: 64,
            sq_entries: 64,
            cq_entries: 128,
            stream_bufs: 16,
        };
        IoUringBackend::open_sized(&cfg, opts, sizes)
    }

    const TINY_CONNS: usize = 1500;

    /// The scale failure in miniature. TINY_CONNS connections (the server of the bug had
    /// thousands) all send at once, ROUNDS times, into rings far too small for them (see
    /// `open_tiny`): the stream ring runs dry at every poll (ENOBUFS ends most receives), the
    /// CQ overflows (multishot requests end on overflow too), the SQ fills while re-arms and
    /// sends are queued. Every byte must arrive, in order, no poll may fail, and the work must
    /// stay proportional to what is delivered: re-arming every waiting connection whenever a
    /// buffer came back (what the server was doing at 8000 connections) would arm about
    /// TINY_CONNS receives per poll for a handful of buffers, and starve some connections
    /// for seconds. With every ring setup (task work run by `poll` only, or whenever the kernel
    /// likes; SQEs submitted by `poll` or picked up by SQPOLL).
    #[test]
    fn many_connections_overwhelm_tiny_rings_without_loss() {
        if open_or_skip(&Config::default()).is_none() {
            return;
        }
        let setups = [
            IoUringOptions::default(),
            IoUringOptions {
                single_issuer: false,
                ..IoUringOptions::default()
            },
            IoUringOptions {
                sqpoll: true,
                sqpoll_idle: Duration::from_millis(10),
                ..IoUringOptions::default()
            },
        ];
        for opts in &setups {
            match open_tiny(opts) {
                Ok(io) => overwhelm_tiny_rings(io, opts),
                Err(e) => eprintln!("{:?} unavailable here, skipped: {}", opts, e),
            }
        }
    }

    /// What `overwhelm_tiny_rings` received: bytes by connection, events, polls.
    struct Tally {
        got: HashMap<ConnId, Vec<u8>>,
        events: u64,
        polls: u64,
        end: Instant,
    }

    impl Tally {
        fn poll(&mut self, io: &mut IoUringBackend, opts: &IoUringOptions) {
            assert!(Instant::now() < self.end, "hang guard ({:?})", opts);
            self.polls += 1;
            let Tally { got, events, .. } = self;
            io.poll(
                Instant::now() + Duration::from_millis(5),
                &mut |e| match e {
                    Event::Accepted { conn, .. } => {
                        got.insert(conn, Vec::new());
                    }
                    Event::Stream { conn, data } => {
                        *events += 1;
                        got.get_mut(&conn)
                            .expect("bytes of an accepted connection")
                            .extend_from_slice(data);
                    }
                    other => panic!("unexpected {:?} ({:?})", other, opts),
                },
            )
            .unwrap_or_else(|e| panic!("poll failed ({:?}): {}", opts, e));
        }
    }

    fn overwhelm_tiny_rings(mut io: IoUringBackend, opts: &IoUringOptions) {
        const ROUNDS: usize = 4;
        const MSG: usize = 40;
        // Client `c`'s message of round `r`: its number, the round, then a pattern.
        let message = |c: usize, r: usize| -> Vec<u8> {
            let mut m = Vec::with_capacity(MSG);
            m.extend_from_slice(&(c as u32).to_le_bytes());
            m.extend_from_slice(&(r as u32).to_le_bytes());
            m.extend((8..MSG).map(|i| (c * 31 + r * 7 + i) as u8));
            m
        };
        let listener = io.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = io.local_addr(listener).unwrap();
        let mut t = Tally {
            got: HashMap::new(),
            events: 0,
            polls: 0,
            end: Instant::now() + Duration::from_secs(120), // hang guard
        };
        // Connect in batches the listen backlog holds, accepting as we go.
        let mut clients = Vec::with_capacity(TINY_CONNS);
        while clients.len() < TINY_CONNS {
            for _ in 0..100.min(TINY_CONNS - clients.len()) {
                clients.push(TcpStream::connect(addr).unwrap());
            }
            while t.got.len() < clients.len() {
                t.poll(&mut io, opts);
            }
        }
        let arms_before = io.stream_arms;
        // Everyone sends at once, round after round, with one poll between rounds.
        for r in 0..ROUNDS {
            for (c, client) in clients.iter_mut().enumerate() {
                client.write_all(&message(c, r)).unwrap();
            }
            t.poll(&mut io, opts);
        }
        let want = TINY_CONNS * ROUNDS * MSG;
        while t.got.values().map(Vec::len).sum::<usize>() < want {
            t.poll(&mut io, opts);
        }
        for bytes in t.got.values() {
            assert_eq!(bytes.len(), ROUNDS * MSG, "{:?}", opts);
            let c = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            let expected: Vec<u8> = (0..ROUNDS).flat_map(|r| message(c, r)).collect();
            assert!(
                *bytes == expected,
                "connection of client {} ({:?})",
                c,
                opts
            );
        }
        let arms = io.stream_arms - arms_before;
        eprintln!(
            "{:?}: {} events in {} polls, {} receives ended by ENOBUFS, {} arms, {} reaps \
             behind a CQ overflow, {} SQEs refused",
            opts, t.events, t.polls, io.stream_ring_exhausted, arms, io.cq_overflows, io.sq_full
        );
        assert!(
            io.stream_ring_exhausted > 0,
            "the stream ring never ran dry"
        );
        assert_eq!(io.ring.completion().overflow(), 0, "CQEs were dropped");
        // A round's bytes end each armed receive at most once (16 buffers serve 16 of them),
        // and a re-arm either gets bytes (an event) or loses its buffer to a receive still
        // armed and ends once more: about one arm per connection and round plus one per event.
        // Re-arming the whole queue whenever a buffer came back made it ~50 per event.
        assert!(
            arms <= (TINY_CONNS * (ROUNDS + 1)) as u64 + t.events,
            "{} arms for {} events ({:?})",
            arms,
            t.events,
            opts
        );
        // Still armed and accounted for: one more byte each still arrives.
        for client in clients.iter_mut() {
            client.write_all(b"!").unwrap();
        }
        while t.got.values().map(Vec::len).sum::<usize>() < want + TINY_CONNS {
            t.poll(&mut io, opts);
        }
        assert_eq!(io.mem.sbufs.as_ref().unwrap().out, 0);
    }
}
