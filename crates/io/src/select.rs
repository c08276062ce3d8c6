//! The POSIX `select(2)` backend, for every unix.
//!
//! Each poll builds one `fd_set` from the bound sockets plus the waker, waits in `select` with a
//! microsecond `timeval` (rounded up, so the wait never ends before the deadline), then reads the
//! ready sockets one `recvmsg` at a time until each answers `EAGAIN` or the `max_events` budget
//! is spent. `select` is level-triggered: what the budget leaves stays readable for the next
//! poll. The first ready socket served rotates from poll to poll.
//!
//! `select` cannot watch an fd `>= FD_SETSIZE` (writing one into an `fd_set` is out of bounds),
//! so [`Backend::bind`] refuses such a socket with `InvalidInput` and nothing larger is ever
//! put into a set. The waker is a non-blocking Unix datagram socket pair. Flush is one `sendto`
//! per datagram, in queueing order.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::raw::c_int;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::slab::{self, TxSlab};
use crate::sys;
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, Config, ConnId, Event, FlushReport,
    IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

pub(crate) struct Select {
    sockets: Vec<UdpSocket>,
    waker: Arc<PairWaker>,
    /// Highest fd in the set (sockets and waker), for select's `nfds`.
    max_fd: RawFd,
    max_events: usize,
    buffer_bytes: usize,
    rx_buf: Box<[u8]>,
    rx_addr: libc::sockaddr_storage,
    tx: TxSlab,
    stats: IoStats,
    /// Where the next poll starts serving the sockets.
    rotate: usize,
}

impl Select {
    pub(crate) fn open(cfg: &Config) -> io::Result<Select> {
        let waker = Arc::new(PairWaker::new()?);
        let max_fd = waker.rx.as_raw_fd();
        check_fd(max_fd)?;
        Ok(Select {
            sockets: Vec::new(),
            waker,
            max_fd,
            max_events: cfg.max_events,
            buffer_bytes: cfg.socket_buffer_bytes,
            rx_buf: vec![0u8; cfg.max_datagram].into_boxed_slice(),
            rx_addr: sys::zeroed_storage(),
            tx: TxSlab::new(cfg),
            stats: IoStats::default(),
            rotate: 0,
        })
    }

    /// Waits until something in the set is readable or `deadline` passes; returns the set.
    fn wait(&mut self, deadline: Instant, waited: &mut Duration) -> io::Result<libc::fd_set> {
        loop {
            // SAFETY: fd_set is a plain C struct; all-zero bytes are a valid (empty) set.
            let mut readfds: libc::fd_set = unsafe { mem::zeroed() };
            // SAFETY: every fd put in the set is below FD_SETSIZE: bind and open check it.
            unsafe {
                libc::FD_ZERO(&mut readfds);
                libc::FD_SET(self.waker.rx.as_raw_fd(), &mut readfds);
                for socket in &self.sockets {
                    libc::FD_SET(socket.as_raw_fd(), &mut readfds);
                }
            }
            let left = time_left(deadline);
            let mut tv = timeval(left);
            let start = Instant::now();
            // SAFETY: `readfds` and `tv` are valid and outlive the call; the other sets are
            // null, which select allows.
            let res = syscall!(select(
                self.max_fd + 1,
                &mut readfds,
                ptr::null_mut(),
                ptr::null_mut(),
                &mut tv
            ));
            *waited += start.elapsed();
            match res {
                Ok(0) if !left.is_zero() && Instant::now() < deadline => continue,
                Ok(_) => return Ok(readfds),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        // SAFETY: as above, all-zero is the empty set.
                        return Ok(unsafe { mem::zeroed() });
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
}

impl Backend for Select {
    fn model(&self) -> Model {
        Model::Select
    }

    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let id = next_socket_id(self.sockets.len())?;
        let socket = sys::bind_udp(addr, self.buffer_bytes)?;
        let fd = socket.as_raw_fd();
        check_fd(fd)?; // on error `socket` is dropped and closed here
        self.max_fd = self.max_fd.max(fd);
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
        let mut addr = sys::zeroed_storage();
        for entry in self.tx.entries() {
            let fd = self.sockets[entry.socket as usize].as_raw_fd();
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
        let readfds = self.wait(deadline, &mut report.waited)?;
        // SAFETY: the waker fd is below FD_SETSIZE (checked at open).
        if unsafe { libc::FD_ISSET(self.waker.rx.as_raw_fd(), &readfds) } {
            self.waker.drain();
            report.events += 1;
        }
        let count = self.sockets.len();
        if count == 0 {
            return Ok(report);
        }
        let first = self.rotate % count;
        self.rotate = self.rotate.wrapping_add(1);
        let mut budget = self.max_events;
        for k in 0..count {
            if budget == 0 {
                break;
            }
            let index = (first + k) % count;
            let fd = self.sockets[index].as_raw_fd();
            // SAFETY: every socket fd is below FD_SETSIZE (checked at bind).
            if !unsafe { libc::FD_ISSET(fd, &readfds) } {
                continue;
            }
            while budget > 0 {
                let (len, flags, addr_len) = match self.recv_one(fd) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.stats.recv_errors += 1;
                        break;
                    }
                };
                budget -= 1;
                if flags & libc::MSG_TRUNC != 0 {
                    self.stats.truncated += 1;
                    continue;
                }
                match sys::raw_to_socket_addr(&self.rx_addr, addr_len) {
                    Some(peer) => {
                        let len = len.min(self.rx_buf.len());
                        on_datagram(SocketId(index as u32), peer, &self.rx_buf[..len]);
                        report.datagrams += 1;
                    }
                    None => self.stats.recv_errors += 1,
                }
            }
        }
        report.events += report.datagrams;
        Ok(report)
    }

    fn listen(&mut self, _addr: SocketAddr) -> io::Result<SocketId> {
        Err(crate::streams_not_built(Model::Select))
    }

    fn connect(&mut self, _addr: SocketAddr, _timeout: Duration) -> io::Result<ConnId> {
        Err(crate::streams_not_built(Model::Select))
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
