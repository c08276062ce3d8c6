//! The Linux io_uring backend (kernel 6.0+: multishot `recvmsg` on a provided buffer ring).
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
//! waiting. The completion queue is sized for every buffer plus every send slot, so it does not
//! overflow in normal operation; if it does (`IORING_FEAT_NODROP` keeps the CQEs), the
//! terminated multishot receives are re-armed like any other.
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
//!   in [`IoStats::send_errors`] when their CQEs are reaped (`FlushReport::failed` stays 0).
//! * A caller that flushes and then never polls must poll once (`poll(Instant::now(), ..)` does
//!   not block) to push the datagrams out; dropping the backend also submits them. The server's
//!   tick loop always polls after a flush.
//! * When `send` finds every slot taken and some are on the ring, it submits and reaps the ring
//!   first (one syscall), so "flush, then send again" works as with the other backends.
//! * With [`IoUringOptions::sqpoll`] the kernel's SQ thread picks the SQEs up by itself; `flush`
//!   wakes it if it sleeps.
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
//! long), the buffers are leaked rather than freed under the kernel.

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::io;
use std::mem::{self, ManuallyDrop};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::epoll::EventFd;
use crate::sys;
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, Config, ConnId, Event, FlushReport,
    IoStats, IoUringFlags, IoUringOptions, Model, PollReport, SendError, SocketId, Waker,
};

/// The provided-buffer group of the receive ring (one ring per backend).
const BGID: u16 = 0;
/// `user_data` layout: the kind in the top byte, a socket id or send slot in the low 32 bits.
const KIND_MASK: u64 = 0xff << 56;
const KIND_RECV: u64 = 1 << 56;
const KIND_SEND: u64 = 2 << 56;
const KIND_WAKE: u64 = 3 << 56;
const KIND_CANCEL: u64 = 4 << 56;
/// Most buffers one provided buffer ring can hold.
const BUF_RING_MAX: usize = 32_768;
/// Largest SQ the kernel accepts (`IORING_MAX_ENTRIES`).
const SQ_MAX: usize = 32_768;
/// Largest CQ the kernel accepts (`IORING_MAX_CQ_ENTRIES`).
const CQ_MAX: usize = 65_536;
/// Size of the kernel's `struct io_uring_recvmsg_out`, which starts every receive buffer.
const RECVMSG_OUT: usize = 16;
/// The poll callback.
type OnDatagram<'a> = dyn FnMut(SocketId, SocketAddr, &[u8]) + 'a;

/// Receive CQEs in one reap that suggest the socket has more ready (see `poll`).
const BURST_RUN: usize = 16;
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

/// A raw, zeroed heap allocation the kernel reads or writes; freed explicitly (or leaked).
struct RawMem {
    ptr: *mut u8,
    layout: Layout,
}

impl RawMem {
    fn new(size: usize, align: usize) -> io::Result<RawMem> {
        let layout = Layout::from_size_align(size.max(1), align)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad buffer layout"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate io_uring buffers",
            ));
        }
        Ok(RawMem { ptr, layout })
    }
}

impl Drop for RawMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
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
        // SAFETY: sysconf has no memory preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as usize } else { 4096 };
        let mut ring = BufRing {
            ring: RawMem::new(entries * mem::size_of::<RingBuf>(), page)?,
            bufs: RawMem::new(entries * stride, 64)?,
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
/// every request has posted its last CQE (see `Drop for IoUringBackend`).
struct KernelMem {
    bufs: BufRing,
    tx: TxSlots,
    /// The msghdr of every multishot receive: only `msg_namelen` is used (no control data).
    rx_msg: Box<libc::msghdr>,
}

pub(crate) struct IoUringBackend {
    ring: IoUring,
    mem: ManuallyDrop<KernelMem>,
    flags: IoUringFlags,
    /// The ring was created disabled (`SINGLE_ISSUER`): enabled by the first submit.
    disabled: bool,
    waker: Arc<EventFd>,
    wake_armed: bool,
    sockets: Vec<UdpSocket>,
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
}

// SAFETY: the raw pointers inside `KernelMem` only point into its own heap allocations, and the
// backend is used through `&mut` by one thread at a time. (The kernel's thread affinity under
// SINGLE_ISSUER is a runtime property reported as EEXIST, not a memory-safety one.)
unsafe impl Send for IoUringBackend {}

impl IoUringBackend {
    pub(crate) fn open(cfg: &Config, opts: &IoUringOptions) -> io::Result<IoUringBackend> {
        let buf_entries = (cfg.max_events.saturating_mul(4))
            .max(1024)
            .checked_next_power_of_two()
            .unwrap_or(BUF_RING_MAX)
            .min(BUF_RING_MAX);
        let stride = round_up(
            RECVMSG_OUT + mem::size_of::<libc::sockaddr_storage>() + cfg.max_datagram,
            64,
        );
        let sq_entries = cfg
            .send_queue
            .saturating_add(64)
            .checked_next_power_of_two()
            .unwrap_or(SQ_MAX)
            .clamp(64, SQ_MAX);
        let cq_entries = buf_entries
            .saturating_add(cfg.send_queue)
            .saturating_add(1024)
            .checked_next_power_of_two()
            .unwrap_or(CQ_MAX)
            .min(CQ_MAX);

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
        };
        backend.arm_wake()?;
        Ok(backend)
    }

    /// Queues one SQE, submitting first if the SQ is full.
    fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        for _ in 0..3 {
            // SAFETY: every pointer an SQE of this backend carries points into `self.mem`,
            // which outlives the request (Drop waits for the last CQE or leaks it).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            let mut waited = Duration::ZERO;
            self.enter(None, &mut waited)?;
        }
        Err(io::Error::new(
            io::ErrorKind::Other,
            "io_uring submission queue stays full",
        ))
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(self.waker.fd.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(KIND_WAKE);
        self.push(sqe)?;
        self.wake_armed = true;
        Ok(())
    }

    fn arm_recv(&mut self, id: u32) -> io::Result<()> {
        let fd = self.sockets[id as usize].as_raw_fd();
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.mem.rx_msg, BGID)
            .build()
            .user_data(KIND_RECV | u64::from(id));
        self.push(sqe)?;
        self.armed[id as usize] = true;
        self.armed_count += 1;
        Ok(())
    }

    /// Re-arms the receives that ended, if the buffer ring has buffers for them.
    fn push_rearms(&mut self) -> io::Result<()> {
        if self.mem.bufs.out >= self.mem.bufs.entries {
            return Ok(()); // every buffer is waiting in the backlog: after the next poll
        }
        while let Some(id) = self.rearm.pop() {
            if !self.armed[id as usize] {
                if let Err(e) = self.arm_recv(id) {
                    self.rearm.push(id);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One `io_uring_enter`: submits every queued SQE and, with a deadline, waits until one
    /// CQE is there or the deadline passes; without, only reaps (GETEVENTS runs deferred task
    /// work). The time inside is added to `waited`.
    fn enter(&mut self, deadline: Option<Instant>, waited: &mut Duration) -> io::Result<()> {
        if self.disabled {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(|e| step_error("enable ring", e))?;
            self.disabled = false;
        }
        loop {
            let left = deadline.map(time_left).unwrap_or(Duration::ZERO);
            let start = Instant::now();
            let res = if left.is_zero() {
                let to_submit = self.ring.submission().len() as u32;
                // SAFETY: no argument pointer is passed.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        to_submit,
                        0,
                        libc_enter_getevents(),
                        None,
                    )
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

    /// Copies every CQE out of the CQ and handles it: sends free their slot, wake-ups are
    /// flagged, receive CQEs go to the callback while `budget` lasts (and the backlog is
    /// empty), else to the backlog.
    fn reap(
        &mut self,
        budget: &mut usize,
        report: &mut PollReport,
        woke: &mut bool,
        mut on_datagram: Option<&mut OnDatagram<'_>>,
    ) -> usize {
        let mut received = 0;
        self.scratch.clear();
        self.scratch.extend(self.ring.completion());
        for i in 0..self.scratch.len() {
            let cqe = self.scratch[i].clone();
            let ud = cqe.user_data();
            let res = cqe.result();
            let flags = cqe.flags();
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
                        match on_datagram.as_mut() {
                            Some(cb) if *budget > 0 && self.backlog.is_empty() => {
                                *budget -= 1;
                                if self.deliver(&cqe, &mut **cb) {
                                    report.datagrams += 1;
                                }
                            }
                            _ => self.backlog.push_back(cqe),
                        }
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
                _ => {} // cancel requests
            }
        }
        self.scratch.clear();
        self.mem.bufs.commit();
        received
    }

    /// Hands one receive CQE (which carries a buffer) to the callback, or drops and counts it;
    /// gives the buffer back. Returns whether the callback was called.
    fn deliver(
        &mut self,
        cqe: &cqueue::Entry,
        on_datagram: &mut dyn FnMut(SocketId, SocketAddr, &[u8]),
    ) -> bool {
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
                    Some(peer) if !out.is_name_data_truncated() => {
                        on_datagram(SocketId(cqe.user_data() as u32), peer, out.payload_data());
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
        self.armed_count + usize::from(self.wake_armed) + self.mem.tx.on_ring
    }

    /// Submits everything, cancels every request and reaps until none is left. True when the
    /// kernel no longer holds any request (the memory can be freed).
    fn teardown(&mut self) -> bool {
        if self.disabled && self.sq_sends == 0 {
            return true; // never enabled and nothing to send: nothing was ever submitted
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(KIND_CANCEL);
        if self.push(cancel).is_err() {
            return false;
        }
        self.rearm.clear();
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
    /// CQEs of the sends (receive CQEs go to the backlog).
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

fn libc_enter_getevents() -> u32 {
    ::io_uring::EnterFlags::GETEVENTS.bits()
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
        self.sockets.push(socket);
        self.armed.push(false);
        if let Err(e) = self.arm_recv(id.0) {
            self.sockets.pop();
            self.armed.pop();
            return Err(e);
        }
        Ok(id)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        self.sockets
            .get(id.0 as usize)
            .ok_or_else(|| unknown_socket(id))?
            .local_addr()
    }

    fn send(&mut self, id: SocketId, peer: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        if id.0 as usize >= self.sockets.len() {
            return Err(SendError::UnknownSocket);
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
            if let Err(e) = self.push(sqe) {
                // Whatever could not be queued goes back to the free list, unsent.
                let tx = &mut self.mem.tx;
                let rest: Vec<u32> = tx.queued.drain(i..).collect();
                tx.free.extend(rest);
                tx.queued.clear();
                return Err(e);
            }
            self.mem.tx.on_ring += 1;
            self.sq_sends += 1;
            report.sent += 1;
            i += 1;
        }
        self.mem.tx.queued.clear();
        if self.flags.sqpoll && report.sent > 0 {
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
        let on_datagram = &mut |socket: SocketId, from: SocketAddr, data: &[u8]| {
            on_event(Event::Datagram { socket, from, data })
        };
        let mut report = PollReport::default();
        if !self.wake_armed {
            self.arm_wake()?;
        }
        self.push_rearms()?;
        let mut budget = self.max_events;
        let mut woke = mem::replace(&mut self.pending_wake, false);
        while budget > 0 {
            let cqe = match self.backlog.pop_front() {
                Some(cqe) => cqe,
                None => break,
            };
            budget -= 1;
            if self.deliver(&cqe, on_datagram) {
                report.datagrams += 1;
            }
        }
        self.mem.bufs.commit();
        loop {
            let have = woke || budget < self.max_events || !self.backlog.is_empty();
            if !have && self.ring.completion().is_empty() {
                // The one enter of a poll: submits the tick's sends and re-arms, then waits.
                self.enter(Some(deadline), &mut report.waited)?;
            } else if !self.ring.submission().is_empty() {
                self.enter(None, &mut report.waited)?;
            }
            let mut received =
                self.reap(&mut budget, &mut report, &mut woke, Some(&mut *on_datagram));
            // A multishot receive takes at most 32 datagrams per run of its task work; a full
            // run means the socket likely holds more: take them now, without blocking, while
            // the budget lasts (one enter per >= 16 datagrams).
            while budget > 0 && received >= BURST_RUN {
                self.enter(None, &mut report.waited)?;
                received = self.reap(&mut budget, &mut report, &mut woke, Some(&mut *on_datagram));
            }
            if !self.wake_armed {
                self.arm_wake()?;
            }
            self.push_rearms()?;
            // Only send completions came back (or nothing): wait on until the deadline.
            if woke || budget < self.max_events || Instant::now() >= deadline {
                break;
            }
        }
        report.events = report.datagrams + usize::from(woke);
        Ok(report)
    }

    fn listen(&mut self, _addr: SocketAddr) -> io::Result<SocketId> {
        Err(crate::streams_not_built(Model::IoUring))
    }

    fn connect(&mut self, _addr: SocketAddr, _timeout: Duration) -> io::Result<ConnId> {
        Err(crate::streams_not_built(Model::IoUring))
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

impl Drop for IoUringBackend {
    fn drop(&mut self) {
        if self.teardown() {
            // SAFETY: no request is left on the ring, so the kernel no longer reads or writes
            // this memory; it is dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.mem) }
        }
        // Otherwise `mem` is leaked on purpose: the kernel may still use it.
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
}
