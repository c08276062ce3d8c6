//! The Linux epoll backend.
//!
//! Every socket is registered level-triggered with its [`SocketId`] as the epoll token; an
//! eventfd registered with the token `u64::MAX` is the waker. One poll is one wait
//! (`epoll_pwait2` with a nanosecond timeout; `epoll_wait` with the timeout rounded up to whole
//! milliseconds on kernels older than 5.11, decided once on the first `ENOSYS`) followed by
//! `recvmmsg` calls on the ready sockets until the `max_events` budget is spent or each socket
//! answers `EAGAIN`. What the budget leaves unread stays readable and is reported again by the
//! next wait. The first ready socket served rotates from poll to poll so that one flooded
//! socket cannot take the whole budget every time.
//!
//! Flush groups the send slab by socket and hands each group to `sendmmsg` in batches of up to
//! 1024 datagrams, each with its own peer address.
//!
//! All receive and send metadata (`mmsghdr`, `iovec`, `sockaddr_storage` arrays) is allocated
//! when the backend opens; the pointers inside are rewritten before every call, so nothing is
//! allocated per poll or per flush.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::raw::{c_int, c_uint};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::slab::{self, TxEntry, TxSlab};
use crate::sys;
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, Config, ConnId, Event, FlushReport,
    IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

/// The epoll token of the waker's eventfd; socket tokens are `u32` ids, so they never collide.
const WAKER_TOKEN: u64 = u64::MAX;
/// Most datagrams one `recvmmsg` call takes.
const RECV_BATCH_MAX: usize = 256;
/// Most datagrams one `sendmmsg` call hands over.
const SEND_BATCH_MAX: usize = 1024;
/// Most epoll events fetched by one wait.
const EVENTS_MAX: usize = 65_536;

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

pub(crate) struct Epoll {
    epfd: OwnedFd,
    waker: Arc<EventFd>,
    sockets: Vec<UdpSocket>,
    events: Box<[libc::epoll_event]>,
    max_events: usize,
    buffer_bytes: usize,
    rx: RecvBatch,
    tx: TxSlab,
    tx_batch: SendBatch,
    stats: IoStats,
    wait_mode: WaitMode,
    /// Where the next poll starts serving the ready list.
    rotate: usize,
}

impl Epoll {
    pub(crate) fn open(cfg: &Config) -> io::Result<Epoll> {
        // SAFETY: no pointers are passed.
        let epfd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `epfd` was just created and nothing else owns it.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let waker = Arc::new(EventFd::new()?);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKER_TOKEN,
        };
        // SAFETY: `ev` is a valid epoll_event that outlives the call.
        syscall!(epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            waker.fd.as_raw_fd(),
            &mut ev
        ))?;
        let events_len = cfg.max_events.saturating_add(1).min(EVENTS_MAX);
        Ok(Epoll {
            epfd,
            waker,
            sockets: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; events_len].into_boxed_slice(),
            max_events: cfg.max_events,
            buffer_bytes: cfg.socket_buffer_bytes,
            rx: RecvBatch::new(cfg.max_events.min(RECV_BATCH_MAX), cfg.max_datagram),
            tx: TxSlab::new(cfg),
            tx_batch: SendBatch::new(cfg.send_queue.min(SEND_BATCH_MAX)),
            stats: IoStats::default(),
            wait_mode: WaitMode::Pwait2,
            rotate: 0,
        })
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

impl Backend for Epoll {
    fn model(&self) -> Model {
        Model::Epoll
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = sys::bind_udp(addr, self.buffer_bytes)?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(id.0),
        };
        // SAFETY: `ev` is a valid epoll_event that outlives the call.
        syscall!(epoll_ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            socket.as_raw_fd(),
            &mut ev
        ))?;
        self.sockets.push(socket);
        Ok(id)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        self.sockets
            .get(id.0 as usize)
            .ok_or_else(|| unknown_socket(id))?
            .local_addr()
    }

    fn send(&mut self, id: SocketId, peer: SocketAddr, data: &[u8]) -> Result<(), SendError> {
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
            let fd = self.sockets[socket as usize].as_raw_fd();
            self.tx_batch
                .send(fd, &self.tx, &entries[start..end], &mut report);
            start = end;
        }
        self.stats.send_errors += report.failed as u64;
        self.tx.clear();
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
        let ready = self.wait(deadline, &mut report.waited)?;
        if ready == 0 {
            return Ok(report);
        }
        let first = self.rotate % ready;
        self.rotate = self.rotate.wrapping_add(1);
        let mut budget = self.max_events;
        for i in 0..ready {
            // Copy the token out: epoll_event is packed on x86_64.
            let token = self.events[(first + i) % ready].u64;
            if token == WAKER_TOKEN {
                self.waker.drain();
                report.events += 1;
                continue;
            }
            if budget == 0 {
                continue; // still readable: the next wait reports it again
            }
            let socket = match self.sockets.get(token as usize) {
                Some(socket) => socket,
                None => continue,
            };
            let (taken, delivered) = self.rx.receive_from(
                socket.as_raw_fd(),
                SocketId(token as u32),
                budget,
                &mut self.stats,
                on_datagram,
            );
            budget -= taken;
            report.datagrams += delivered;
        }
        report.events += report.datagrams;
        Ok(report)
    }

    fn listen(&mut self, _addr: SocketAddr) -> io::Result<SocketId> {
        Err(crate::streams_not_built(Model::Epoll))
    }

    fn connect(&mut self, _addr: SocketAddr, _timeout: Duration) -> io::Result<ConnId> {
        Err(crate::streams_not_built(Model::Epoll))
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
}
