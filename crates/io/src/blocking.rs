//! The portable blocking backend: std sockets only, no `unsafe`, every platform.
//!
//! Each bound socket gets one helper thread doing blocking `recv_from` with a 50 ms read
//! timeout (so it notices shutdown), copying each datagram into one bounded receive queue
//! shared by all sockets (a preallocated ring under a `Mutex`, with a `Condvar`). When the ring
//! is full the datagram is dropped and counted in [`IoStats::recv_errors`]. `poll` waits on the
//! condvar until the deadline, data or the waker, then moves up to `max_events` datagrams out of
//! the ring (a small preallocated batch at a time, so the helpers are never blocked while the
//! caller's callback runs) and lends them to the callback.
//!
//! std's `recv_from` does not report truncation, so the helpers read into `max_datagram + 1`
//! bytes: a datagram that fills them was longer than `max_datagram` and is dropped and counted.
//! Flush calls `send_to` from the caller's thread; the sockets carry a short write timeout so a
//! full kernel buffer fails the datagram instead of stalling the tick. Dropping the backend
//! stops and joins the helpers, which close their socket handles.

#![forbid(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::slab::{self, TxSlab};
use crate::{
    next_socket_id, time_left, unknown_socket, Backend, Config, ConnId, Event, FlushReport,
    IoStats, Model, PollReport, SendError, SocketId, Wake, Waker,
};

/// How often a helper thread looks at the stop flag while its socket is idle.
const RECV_TIMEOUT: Duration = Duration::from_millis(50);
/// Longest a `send_to` may block on a full kernel buffer before the datagram is dropped.
const SEND_TIMEOUT: Duration = Duration::from_millis(5);
/// Receive ring size: `4 * max_events`, clamped to this range.
const RX_QUEUE_MIN: usize = 1024;
const RX_QUEUE_MAX: usize = 16_384;
/// Datagrams moved out of the ring per lock.
const TAKE_BATCH_MAX: usize = 64;
/// Helper thread stack: the receive buffer lives on the heap.
const HELPER_STACK_BYTES: usize = 256 * 1024;

pub(crate) struct Blocking {
    shared: Arc<Shared>,
    sockets: Vec<UdpSocket>,
    helpers: Vec<JoinHandle<()>>,
    max_events: usize,
    max_datagram: usize,
    #[cfg_attr(not(unix), allow(dead_code))]
    socket_buffer_bytes: usize,
    /// Datagrams taken out of the ring, lent to the callback.
    batch_bytes: Box<[u8]>,
    batch: Vec<Meta>,
    tx: TxSlab,
    /// Send-side counters (the receive-side ones live in the ring).
    stats: IoStats,
}

impl Blocking {
    pub(crate) fn open(cfg: &Config) -> io::Result<Blocking> {
        let slots = cfg
            .max_events
            .saturating_mul(4)
            .clamp(RX_QUEUE_MIN, RX_QUEUE_MAX);
        let batch = cfg.max_events.min(TAKE_BATCH_MAX);
        Ok(Blocking {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring::new(slots, cfg.max_datagram)),
                ready: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
            sockets: Vec::new(),
            helpers: Vec::new(),
            max_events: cfg.max_events,
            max_datagram: cfg.max_datagram,
            socket_buffer_bytes: cfg.socket_buffer_bytes,
            batch_bytes: vec![0u8; batch * cfg.max_datagram].into_boxed_slice(),
            batch: Vec::with_capacity(batch),
            tx: TxSlab::new(cfg),
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
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        let reader = socket.try_clone()?;
        reader.set_read_timeout(Some(RECV_TIMEOUT))?;
        let shared = self.shared.clone();
        let max_datagram = self.max_datagram;
        let helper = thread::Builder::new()
            .name(format!("tickwire-io-rx-{}", id.0))
            .stack_size(HELPER_STACK_BYTES)
            .spawn(move || receive_loop(&shared, &reader, id, max_datagram))?;
        self.sockets.push(socket);
        self.helpers.push(helper);
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
        for entry in self.tx.entries() {
            let socket = &self.sockets[entry.socket as usize];
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
        {
            let mut ring = self.shared.lock();
            while ring.len == 0 && !ring.woken {
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
        while report.datagrams < self.max_events {
            let n = self.take(self.max_events - report.datagrams);
            if n == 0 {
                break;
            }
            for (k, meta) in self.batch.iter().enumerate() {
                let start = k * self.max_datagram;
                on_datagram(
                    SocketId(meta.socket),
                    meta.peer,
                    &self.batch_bytes[start..start + meta.len],
                );
            }
            report.datagrams += n;
        }
        report.events += report.datagrams;
        Ok(report)
    }

    fn listen(&mut self, _addr: SocketAddr) -> io::Result<SocketId> {
        Err(crate::streams_not_built(Model::Blocking))
    }

    fn connect(&mut self, _addr: SocketAddr, _timeout: Duration) -> io::Result<ConnId> {
        Err(crate::streams_not_built(Model::Blocking))
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
        Waker::new(self.shared.clone())
    }

    fn stats(&self) -> IoStats {
        let ring = self.shared.lock();
        IoStats {
            truncated: ring.truncated,
            recv_errors: ring.recv_errors,
            ..self.stats
        }
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for helper in self.helpers.drain(..) {
            // A helper that panicked has nothing left to clean up.
            let _ = helper.join();
        }
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

/// State shared by the backend, its helper threads and its wakers.
struct Shared {
    ring: Mutex<Ring>,
    ready: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // The ring stays consistent even if a holder panicked: every update is a few plain
        // field writes after the bounds checks.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// The bounded receive queue: a ring of preallocated slots, plus the receive-side counters.
struct Ring {
    slot_bytes: usize,
    bytes: Box<[u8]>,
    meta: Box<[Meta]>,
    head: usize,
    len: usize,
    woken: bool,
    truncated: u64,
    recv_errors: u64,
}

impl Ring {
    fn new(slots: usize, slot_bytes: usize) -> Ring {
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
        }
    }
}
