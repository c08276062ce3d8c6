//! The raw batched floor of the broadcast-N benchmark (`/work/shared/BENCHMARKS.md`): the
//! cheapest way to do the workload with plain syscalls, against which the `tickwire-io` backends
//! and the real server are compared (`scripts/bench.sh`, docs/benchmarks.md).
//!
//! One IPv4 UDP socket, a fixed tick (deadline = start + k x tick). The loop sleeps to the
//! deadline, drains once with `recvmmsg(64, MSG_DONTWAIT)` until `EAGAIN` (learning clients from
//! the source address of their 32-byte inputs), then sends every known client one 600-byte
//! snapshot with `sendmmsg` in batches of 1024. No backend, no wake-ups between ticks, no
//! allocation per tick. Overruns skip ahead. It is an example of the io crate because that is
//! the only crate allowed `unsafe`.
//!
//! ```text
//! cargo run --release -p tickwire-io --example floor_server -- --clients-expected N \
//!     [--tick-ms 16] --bind 127.0.0.1:0 [--warmup-secs 3] --duration-secs S
//! ```
//!
//! Same interface as `broadcast-server` (`--model` is accepted and ignored): `listening ADDR` on
//! stderr once bound, one JSON line on stdout at the end with the window's figures.

use std::collections::HashSet;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::raw::{c_int, c_uint};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

const RECV_BATCH: usize = 64;
const SEND_BATCH: usize = 1024;
const SLOT_BYTES: usize = 1500;
const INPUT_BYTES: usize = 32;
const SNAPSHOT_BYTES: usize = 600;
const SOCKET_BUFFER_BYTES: c_int = 4 * 1024 * 1024;

struct Args {
    clients_expected: usize,
    tick_ms: u64,
    bind: SocketAddrV4,
    warmup_secs: f64,
    duration_secs: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        clients_expected: 1000,
        tick_ms: 16,
        bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        warmup_secs: 3.0,
        duration_secs: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--model" => {}
            "--clients-expected" => a.clients_expected = value.parse().map_err(|_| bad(()))?,
            "--tick-ms" => a.tick_ms = value.parse().map_err(|_| bad(()))?,
            "--bind" => a.bind = value.parse().map_err(|_| bad(()))?,
            "--warmup-secs" => a.warmup_secs = value.parse().map_err(|_| bad(()))?,
            "--duration-secs" => a.duration_secs = value.parse().map_err(|_| bad(()))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(a.duration_secs > 0.0 && a.duration_secs.is_finite()) {
        return Err("--duration-secs must be positive".into());
    }
    if !(1..=1000).contains(&a.tick_ms) {
        return Err("--tick-ms must be 1..=1000".into());
    }
    Ok(a)
}

/// 10 us buckets up to 100 ms, like `tickwire_bench::Histogram::for_ticks`.
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

impl Hist {
    const WIDTH_NS: u64 = 10_000;
    fn new() -> Hist {
        Hist {
            counts: vec![0; 10_000],
            total: 0,
            max_ns: 0,
        }
    }
    fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let i = ((ns / Self::WIDTH_NS) as usize).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }
    fn above_ms(&self, ms: u64) -> u64 {
        self.counts
            .iter()
            .skip((ms * 1_000_000 / Self::WIDTH_NS) as usize)
            .sum()
    }
    fn quantile_ms(&self, q: f64) -> String {
        if self.total == 0 {
            return "null".into();
        }
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = ((i as u64 + 1) * Self::WIDTH_NS).min(self.max_ns);
                return format!("{:.4}", upper as f64 / 1e6);
            }
        }
        format!("{:.4}", self.max_ns as f64 / 1e6)
    }
}

/// Receive side: 64 preallocated slots.
struct Rx {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
}

impl Rx {
    fn new() -> Rx {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_in: libc::sockaddr_in = unsafe { mem::zeroed() };
        let zero_msg: libc::mmsghdr = unsafe { mem::zeroed() };
        let mut rx = Rx {
            bufs: vec![0; RECV_BATCH * SLOT_BYTES],
            iovs: Vec::with_capacity(RECV_BATCH),
            names: vec![zero_in; RECV_BATCH],
            msgs: vec![zero_msg; RECV_BATCH],
        };
        for i in 0..RECV_BATCH {
            rx.iovs.push(libc::iovec {
                iov_base: rx.bufs[i * SLOT_BYTES..].as_mut_ptr() as *mut libc::c_void,
                iov_len: SLOT_BYTES,
            });
        }
        rx
    }

    /// `recvmmsg` until `EAGAIN`; calls `on` with each datagram's length and source.
    fn drain(&mut self, fd: c_int, on: &mut dyn FnMut(usize, SocketAddrV4)) -> u64 {
        let mut errors = 0;
        loop {
            for i in 0..RECV_BATCH {
                let h = &mut self.msgs[i].msg_hdr;
                h.msg_name = &mut self.names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
                h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            // SAFETY: `msgs` holds RECV_BATCH headers whose name and iovec pointers point into
            // `names` and `iovs`/`bufs`, all owned by `self` and alive for the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    RECV_BATCH as c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    errors += 1;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return errors;
            }
            for i in 0..n as usize {
                let len = self.msgs[i].msg_len as usize;
                if self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    continue;
                }
                let name = &self.names[i];
                let ip = Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr));
                on(len, SocketAddrV4::new(ip, u16::from_be(name.sin_port)));
            }
        }
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in; the fields that matter are set below.
    let mut s: libc::sockaddr_in = unsafe { mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

/// `sendmmsg` of `snapshot` to every address, in batches of 1024. Returns (sent, failed).
fn broadcast(
    fd: c_int,
    peers: &mut [libc::sockaddr_in],
    snapshot: &mut [u8],
    msgs: &mut [libc::mmsghdr],
) -> (u64, u64) {
    let mut iov = libc::iovec {
        iov_base: snapshot.as_mut_ptr() as *mut libc::c_void,
        iov_len: snapshot.len(),
    };
    let (mut sent, mut failed) = (0u64, 0u64);
    for chunk in peers.chunks_mut(SEND_BATCH) {
        for (m, peer) in msgs.iter_mut().zip(chunk.iter_mut()) {
            m.msg_hdr.msg_name = peer as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut off = 0;
        while off < chunk.len() {
            // SAFETY: msgs[off..chunk.len()] were filled above with pointers to `chunk` and
            // `iov` (which points at `snapshot`), all alive for the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[off..].as_mut_ptr(),
                    (chunk.len() - off) as c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                // Refused (EAGAIN/ENOBUFS...): latest-wins traffic, drop the rest of the batch.
                failed += (chunk.len() - off) as u64;
                break;
            }
            off += r as usize;
            sent += r as u64;
        }
    }
    (sent, failed)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("floor_server: {e}");
            std::process::exit(2);
        }
    };
    let sock = UdpSocket::bind(args.bind).expect("bind");
    let fd = sock.as_raw_fd();
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: the value pointer and length describe one c_int that outlives the call.
        let _ = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &SOCKET_BUFFER_BYTES as *const c_int as *const libc::c_void,
                mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
    }
    eprintln!("listening {}", sock.local_addr().expect("local_addr"));

    let mut rx = Rx::new();
    // SAFETY: all-zero is a valid mmsghdr.
    let mut tx_msgs = vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; SEND_BATCH];
    let mut snapshot = vec![0x5au8; SNAPSHOT_BYTES];
    let mut seen: HashSet<SocketAddrV4> = HashSet::with_capacity(args.clients_expected * 2);
    let mut peers: Vec<libc::sockaddr_in> = Vec::with_capacity(args.clients_expected);
    let (mut inputs, mut other, mut recv_errors) = (0u64, 0u64, 0u64);
    let (mut sent, mut failed) = (0u64, 0u64);
    let (mut ticks, mut overruns) = (0u64, 0u64);
    let mut tick_hist = Hist::new();
    let mut late_hist = Hist::new();

    let tick_ns = args.tick_ms * 1_000_000;
    let t0 = Instant::now();
    let warm_end = t0 + Duration::from_secs_f64(args.warmup_secs.max(0.0));
    let end = t0 + Duration::from_secs_f64(args.duration_secs);
    let mut warm = args.warmup_secs <= 0.0;
    let mut k: u64 = 1;
    loop {
        let deadline = t0 + Duration::from_nanos(tick_ns * k);
        if deadline > end {
            break;
        }
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        let woke = Instant::now();
        if !warm && woke >= warm_end {
            warm = true;
            inputs = 0;
            other = 0;
            recv_errors = 0;
            sent = 0;
            failed = 0;
            ticks = 0;
            overruns = 0;
            tick_hist = Hist::new();
            late_hist = Hist::new();
        }
        recv_errors += rx.drain(fd, &mut |len, peer| {
            if len == INPUT_BYTES {
                inputs += 1;
                if seen.insert(peer) {
                    peers.push(sockaddr_in(peer));
                }
            } else {
                other += 1;
            }
        });
        let (s, f) = broadcast(fd, &mut peers, &mut snapshot, &mut tx_msgs);
        sent += s;
        failed += f;
        let finished = Instant::now();
        late_hist.record(woke.saturating_duration_since(deadline));
        tick_hist.record(finished - woke);
        ticks += 1;
        k += 1;
        let next = t0 + Duration::from_nanos(tick_ns * k);
        if finished > next {
            let skipped = ((finished - next).as_nanos() / u128::from(tick_ns)) as u64 + 1;
            k += skipped;
            overruns += skipped;
        }
    }
    let window_s = end
        .min(Instant::now())
        .saturating_duration_since(warm_end)
        .as_secs_f64();
    println!(
        "{{\"server\":\"floor\",\"clients_known\":{},\"window_s\":{:.3},\"ticks\":{},\
         \"late_ticks\":{},\"overruns\":{},\"tick_ms_p50\":{},\"tick_ms_p99\":{},\
         \"tick_ms_max\":{:.4},\"lateness_ms_p50\":{},\"lateness_ms_p99\":{},\
         \"lateness_ms_max\":{:.4},\"inputs\":{},\"other_datagrams\":{},\"snapshots_queued\":{},\
         \"send_refused\":0,\"flush_failed\":{},\"io_send_errors\":{},\"io_recv_errors\":{}}}",
        peers.len(),
        window_s,
        ticks,
        late_hist.above_ms(1),
        overruns,
        tick_hist.quantile_ms(0.5),
        tick_hist.quantile_ms(0.99),
        tick_hist.max_ns as f64 / 1e6,
        late_hist.quantile_ms(0.5),
        late_hist.quantile_ms(0.99),
        late_hist.max_ns as f64 / 1e6,
        inputs,
        other,
        sent + failed,
        failed,
        failed,
        recv_errors,
    );
}
