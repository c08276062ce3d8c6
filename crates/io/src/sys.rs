//! Unix helpers shared by the epoll, select and io_uring backends (and the blocking one on unix): the `syscall!` macro, conversions
//! between [`SocketAddr`] and `sockaddr_storage`, UDP socket creation, and the stream helpers
//! (TCP listeners, non-blocking close-on-exec accepts, the reserve descriptor that lets a
//! backend shed connections on `EMFILE`, sends that never raise `SIGPIPE`).

use std::fs::File;
use std::io;
use std::mem;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream, UdpSocket,
};
use std::os::raw::c_int;
use std::os::unix::io::{FromRawFd, RawFd};

/// Calls a libc function and turns its `-1` return into `io::Error::last_os_error()` (mio's
/// macro). Every call site carries a `// SAFETY:` comment for the pointers it passes.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)? ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: the caller vouches for the arguments (see the comment at each call site);
        // the function itself is a plain libc call with no other preconditions.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Writes `addr` into `storage` as a `sockaddr_in`/`sockaddr_in6` and returns its length.
pub(crate) fn socket_addr_to_raw(
    addr: &SocketAddr,
    storage: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is a plain C struct for which all-zero bytes are valid.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            #[cfg(any(
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "dragonfly",
                target_os = "openbsd",
                target_os = "netbsd"
            ))]
            {
                sin.sin_len = mem::size_of::<libc::sockaddr_in>() as u8;
            }
            // SAFETY: sockaddr_storage is at least as large and as aligned as any sockaddr type,
            // and `storage` is a valid exclusive reference.
            unsafe {
                (storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in).write(sin)
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is a plain C struct for which all-zero bytes are valid.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            #[cfg(any(
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "dragonfly",
                target_os = "openbsd",
                target_os = "netbsd"
            ))]
            {
                sin6.sin6_len = mem::size_of::<libc::sockaddr_in6>() as u8;
            }
            // SAFETY: as above, sockaddr_storage can hold a sockaddr_in6.
            unsafe {
                (storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6).write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the address the kernel wrote into `storage` (`len` bytes). `None` for a family other
/// than IPv4/IPv6 or a short length.
pub(crate) fn raw_to_socket_addr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which fits in (and is no
            // more aligned than) sockaddr_storage.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6 (see above).
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6)
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An all-zero `sockaddr_storage`, for preallocated address arrays.
pub(crate) fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes are valid.
    unsafe { mem::zeroed() }
}

/// Creates a non-blocking, close-on-exec UDP socket bound to `addr`, with `SO_RCVBUF` and
/// `SO_SNDBUF` requested at `buffer_bytes` (best effort). The returned std socket owns the fd.
pub(crate) fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let fd = new_socket(domain_of(&addr), libc::SOCK_DGRAM)?;
    // SAFETY: `fd` was just created and nothing else owns it; from here on it is closed by the
    // socket's drop, also on the error path below.
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    set_buffer_sizes(fd, buffer_bytes);
    bind_addr(fd, &addr)?;
    Ok(socket)
}

/// The address family of `addr`.
fn domain_of(addr: &SocketAddr) -> c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// Binds `fd` to `addr`.
fn bind_addr(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let mut storage = zeroed_storage();
    let len = socket_addr_to_raw(addr, &mut storage);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes and outlives the call.
    syscall!(bind(
        fd,
        &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
        len
    ))?;
    Ok(())
}

/// A new non-blocking, close-on-exec socket of `domain` and `ty` (`SOCK_DGRAM`, `SOCK_STREAM`),
/// with both flags given to `socket` itself where it takes them. The caller owns the fd.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos"
))]
fn new_socket(domain: c_int, ty: c_int) -> io::Result<RawFd> {
    let ty = ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: no pointers are passed.
    syscall!(socket(domain, ty, 0))
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos"
)))]
fn new_socket(domain: c_int, ty: c_int) -> io::Result<RawFd> {
    // SAFETY: no pointers are passed.
    let fd = syscall!(socket(domain, ty, 0))?;
    cloexec_nonblocking(fd)
}

/// Makes `fd`, just created or accepted by the caller, close-on-exec and non-blocking; on an
/// error it is closed. Where `socket` and `accept4` cannot set both flags themselves.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos"
)))]
fn cloexec_nonblocking(fd: RawFd) -> io::Result<RawFd> {
    let set = || -> io::Result<()> {
        // SAFETY: no pointers are passed.
        syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
        // SAFETY: no pointers are passed.
        let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
        // SAFETY: no pointers are passed.
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        Ok(())
    };
    match set() {
        Ok(()) => Ok(fd),
        Err(e) => {
            // SAFETY: `fd` is the caller's new descriptor, which it does not use after an error.
            unsafe { libc::close(fd) };
            Err(e)
        }
    }
}

/// Sets an integer socket option (`SOL_SOCKET`/`IPPROTO_TCP` options).
fn set_int_option(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: `value` is a c_int that outlives the call and its size is passed with it.
    syscall!(setsockopt(
        fd,
        level,
        name,
        &value as *const c_int as *const libc::c_void,
        mem::size_of::<c_int>() as libc::socklen_t
    ))?;
    Ok(())
}

/// Requests `SO_RCVBUF` and `SO_SNDBUF` of `bytes`; errors are ignored (the kernel caps the
/// value at `net.core.rmem_max`/`wmem_max` anyway).
pub(crate) fn set_buffer_sizes(fd: RawFd, bytes: usize) {
    let value = bytes.min(c_int::MAX as usize) as c_int;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let _ = set_int_option(fd, libc::SOL_SOCKET, opt, value);
    }
}

/// True for the errors that mean "the kernel has no room right now": the datagram is dropped.
// Used by the Linux backends (epoll) only.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn is_would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock || err.raw_os_error() == Some(libc::ENOBUFS)
}

/// Backlog of every TCP listener.
pub(crate) const LISTEN_BACKLOG: c_int = 1024;

/// Creates a non-blocking, close-on-exec TCP listener on `addr` (`SO_REUSEADDR`, backlog
/// [`LISTEN_BACKLOG`]; std's `TcpListener::bind` uses 128). On Apple platforms it carries
/// `SO_NOSIGPIPE`, which the sockets it accepts inherit (so std's writes on them, as the select
/// and blocking backends make, cannot raise `SIGPIPE` either). The returned std listener owns
/// the fd.
pub(crate) fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = new_socket(domain_of(&addr), libc::SOCK_STREAM)?;
    // SAFETY: `fd` was just created and nothing else owns it; from here on it is closed by the
    // listener's drop, also on the error paths below.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1)?;
    bind_addr(fd, &addr)?;
    // SAFETY: no pointers are passed.
    syscall!(listen(fd, LISTEN_BACKLOG))?;
    Ok(listener)
}

/// Accepts one pending connection of a non-blocking listener. The new socket is non-blocking
/// and close-on-exec from the start (`accept4` with `SOCK_NONBLOCK | SOCK_CLOEXEC` where it
/// exists) and gets [`prepare_stream`]. Errors are `accept`'s (`WouldBlock` when nothing is
/// pending, `EMFILE`/`ENFILE` when descriptors ran out: see [`Reserve`]).
pub(crate) fn accept_stream(listener: RawFd) -> io::Result<(TcpStream, SocketAddr)> {
    let mut storage = zeroed_storage();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let fd = accept_raw(listener, &mut storage, &mut len)?;
    // SAFETY: `fd` was just accepted and nothing else owns it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let from = raw_to_socket_addr(&storage, len).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "accepted a connection of an unknown address family",
        )
    })?;
    prepare_stream(fd);
    Ok((stream, from))
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos"
))]
fn accept_raw(
    listener: RawFd,
    storage: &mut libc::sockaddr_storage,
    len: &mut libc::socklen_t,
) -> io::Result<RawFd> {
    // SAFETY: `storage` is a writable sockaddr_storage of the size in `len`; both outlive the
    // call.
    syscall!(accept4(
        listener,
        storage as *mut libc::sockaddr_storage as *mut libc::sockaddr,
        len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    ))
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos"
)))]
fn accept_raw(
    listener: RawFd,
    storage: &mut libc::sockaddr_storage,
    len: &mut libc::socklen_t,
) -> io::Result<RawFd> {
    // SAFETY: as above.
    let fd = syscall!(accept(
        listener,
        storage as *mut libc::sockaddr_storage as *mut libc::sockaddr,
        len
    ))?;
    cloexec_nonblocking(fd)
}

/// What every stream socket gets, accepted or connected: `TCP_NODELAY` (and, where sends
/// cannot say `MSG_NOSIGNAL`, `SO_NOSIGPIPE`). Best effort: a socket the peer already reset
/// may refuse options, and its first read reports that.
pub(crate) fn prepare_stream(fd: RawFd) {
    let _ = set_nodelay(fd);
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    let _ = set_int_option(fd, libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1);
}

/// Sets `SO_SNDBUF` on a stream socket (`0`: leaves the kernel's default). Best effort.
pub(crate) fn set_send_buffer(fd: RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let value = bytes.min(c_int::MAX as usize) as c_int;
    let _ = set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, value);
}

/// Sets `TCP_NODELAY`: game traffic is small and latency-bound.
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
const SEND_FLAGS: c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(any(target_os = "macos", target_os = "ios"))]
const SEND_FLAGS: c_int = libc::MSG_DONTWAIT; // SO_NOSIGPIPE is set by prepare_stream

/// One send of `buf` on a stream socket that never blocks and never raises `SIGPIPE`
/// (`MSG_NOSIGNAL | MSG_DONTWAIT`). Returns how many bytes the kernel took; `WouldBlock` when
/// it took none; `Interrupted` is retried.
pub(crate) fn send_stream_bytes(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
        match syscall!(send(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            SEND_FLAGS
        )) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// True for `accept`'s "out of descriptors" errors (`EMFILE`, `ENFILE`).
pub(crate) fn is_out_of_fds(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// One descriptor kept open (on `/dev/null`) for the moment the process runs out: closing it
/// frees exactly one slot, enough to accept the connection at the head of the backlog and
/// close it at once, so that a listener under `EMFILE` sheds its backlog instead of staying
/// ready forever (the busy loop level-triggered waits fall into) or stranding it (edges).
/// `Reserve::default()` is one not held yet: [`Reserve::held`] and [`Reserve::shed`] open it.
#[derive(Default)]
pub(crate) struct Reserve {
    file: Option<File>,
}

/// What [`Reserve::shed`] did. Only [`Shed::Nothing`] means the backlog is empty.
#[derive(Debug)]
pub(crate) enum Shed {
    /// One pending connection was accepted into the reserve's slot and closed.
    One,
    /// The reserve reopened while the connection accepted into its slot was still open:
    /// descriptors were freed meanwhile, so the connection is kept, as [`accept_stream`]
    /// returns it (the caller hands it up as a normal accept).
    Kept(TcpStream, SocketAddr),
    /// Nothing was pending (Linux answers `EMFILE` before it looks at the backlog).
    Nothing,
    /// The accept with the freed descriptor failed otherwise (the connection was aborted, or
    /// another thread took the descriptor first); the reserve is held again. Connections may
    /// still be pending: the caller stops accepting for now.
    Failed,
    /// No reserve: it was gone and could not be reopened, or it was given up and could not be
    /// taken back. Descriptors are short; the caller stops accepting until [`Reserve::held`].
    NoReserve,
}

impl Reserve {
    /// Opens the reserve, or fails.
    pub(crate) fn open() -> io::Result<Reserve> {
        Ok(Reserve {
            file: Some(open_null()?),
        })
    }

    /// Whether the reserve is held, reopening it first if it is gone (descriptors may be free
    /// again).
    pub(crate) fn held(&mut self) -> bool {
        if self.file.is_none() {
            self.file = open_null().ok();
        }
        self.file.is_some()
    }

    /// For an accept on `listener` that failed with `EMFILE`/`ENFILE`: frees the reserve's
    /// slot, accepts the connection at the head of the backlog into it and reopens the reserve.
    /// If the reserve reopens while the connection still holds the slot, descriptors are free
    /// again and the connection is kept; otherwise it is closed (shed) and the reserve reopened
    /// in its place.
    pub(crate) fn shed(&mut self, listener: RawFd) -> Shed {
        if !self.held() {
            return Shed::NoReserve;
        }
        self.file = None; // closes it: one free slot
        let accepted = loop {
            match accept_stream(listener) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.file = open_null().ok();
        match accepted {
            Ok((stream, from)) if self.file.is_some() => Shed::Kept(stream, from),
            Ok((stream, _)) => {
                drop(stream);
                self.file = open_null().ok();
                Shed::One
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Shed::Nothing,
            Err(_) if self.file.is_some() => Shed::Failed,
            Err(_) => Shed::NoReserve,
        }
    }
}

/// The reserve's descriptor.
fn open_null() -> io::Result<File> {
    File::open("/dev/null")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn sockaddr_round_trip() {
        let addrs: [SocketAddr; 4] = [
            "127.0.0.1:7777".parse().unwrap(),
            "0.0.0.0:0".parse().unwrap(),
            "[::1]:65535".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 0, 3)),
        ];
        for addr in addrs {
            let mut storage = zeroed_storage();
            let len = socket_addr_to_raw(&addr, &mut storage);
            assert_eq!(raw_to_socket_addr(&storage, len), Some(addr));
            assert_eq!(raw_to_socket_addr(&storage, len - 1), None);
        }
        assert_eq!(raw_to_socket_addr(&zeroed_storage(), 128), None);
    }

    #[test]
    fn bound_socket_is_nonblocking_and_cloexec() {
        let s = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert_ne!(s.local_addr().unwrap().port(), 0);
        let fd = s.as_raw_fd();
        // SAFETY: no pointers are passed.
        let fl = syscall!(fcntl(fd, libc::F_GETFL)).unwrap();
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        // SAFETY: no pointers are passed.
        let fdfl = syscall!(fcntl(fd, libc::F_GETFD)).unwrap();
        assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
        let mut buf = [0u8; 4];
        let err = s.recv_from(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    /// Descriptors are not short here, so the reserve always reopens: a pending connection
    /// is kept, not shed (the race where descriptors were freed right before a shed).
    #[test]
    fn a_shed_with_descriptors_free_keeps_the_connection() {
        let listener = listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut reserve = Reserve::open().unwrap();
        assert!(reserve.held());
        assert!(matches!(reserve.shed(listener.as_raw_fd()), Shed::Nothing));
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (stream, from) = loop {
            match reserve.shed(listener.as_raw_fd()) {
                Shed::Kept(stream, from) => break (stream, from),
                Shed::Nothing => {
                    assert!(std::time::Instant::now() < deadline, "never pending");
                    std::thread::yield_now();
                }
                other => panic!("{:?}", other),
            }
        };
        assert_eq!(from, client.local_addr().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), from);
        assert!(reserve.held());
    }
}
