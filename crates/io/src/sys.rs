//! Unix helpers shared by the epoll and select backends: the `syscall!` macro, conversions
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
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};

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
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let socket = new_udp_socket(domain)?;
    set_buffer_sizes(socket.as_raw_fd(), buffer_bytes);
    let mut storage = zeroed_storage();
    let len = socket_addr_to_raw(&addr, &mut storage);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes and outlives the call.
    syscall!(bind(
        socket.as_raw_fd(),
        &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
        len
    ))?;
    Ok(socket)
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
fn new_udp_socket(domain: c_int) -> io::Result<UdpSocket> {
    let ty = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: no pointers are passed.
    let fd = syscall!(socket(domain, ty, 0))?;
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { UdpSocket::from_raw_fd(fd) })
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
fn new_udp_socket(domain: c_int) -> io::Result<UdpSocket> {
    // SAFETY: no pointers are passed.
    let fd = syscall!(socket(domain, libc::SOCK_DGRAM, 0))?;
    // SAFETY: `fd` was just created and nothing else owns it; from here on it is closed by the
    // UdpSocket's drop, also on the error paths below.
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    // SAFETY: no pointers are passed.
    syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Requests `SO_RCVBUF` and `SO_SNDBUF` of `bytes`; errors are ignored (the kernel caps the
/// value at `net.core.rmem_max`/`wmem_max` anyway).
pub(crate) fn set_buffer_sizes(fd: RawFd, bytes: usize) {
    let value = bytes.min(c_int::MAX as usize) as c_int;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: `value` is a c_int that outlives the call and its size is passed with it.
        let _ = syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &value as *const c_int as *const libc::c_void,
            mem::size_of::<c_int>() as libc::socklen_t
        ));
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
/// [`LISTEN_BACKLOG`]). The returned std listener owns the fd.
pub(crate) fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let fd = new_stream_socket(domain)?;
    // SAFETY: `fd` was just created and nothing else owns it; from here on it is closed by the
    // listener's drop, also on the error paths below.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: c_int = 1;
    // SAFETY: `one` is a c_int that outlives the call and its size is passed with it.
    syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &one as *const c_int as *const libc::c_void,
        mem::size_of::<c_int>() as libc::socklen_t
    ))?;
    let mut storage = zeroed_storage();
    let len = socket_addr_to_raw(&addr, &mut storage);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes and outlives the call.
    syscall!(bind(
        fd,
        &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
        len
    ))?;
    // SAFETY: no pointers are passed.
    syscall!(listen(fd, LISTEN_BACKLOG))?;
    Ok(listener)
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
fn new_stream_socket(domain: c_int) -> io::Result<RawFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
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
fn new_stream_socket(domain: c_int) -> io::Result<RawFd> {
    // SAFETY: no pointers are passed.
    let fd = syscall!(socket(domain, libc::SOCK_STREAM, 0))?;
    if let Err(e) = set_cloexec_nonblocking(fd) {
        // SAFETY: `fd` was just created here and is not used after this.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
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
fn set_cloexec_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: no pointers are passed.
    syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
    // SAFETY: no pointers are passed.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    // SAFETY: no pointers are passed.
    syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    Ok(())
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
    if let Err(e) = set_cloexec_nonblocking(fd) {
        // SAFETY: `fd` was just accepted here and is not used after this.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

/// What every stream socket gets, accepted or connected: `TCP_NODELAY` (and, where sends
/// cannot say `MSG_NOSIGNAL`, `SO_NOSIGPIPE`). Best effort: a socket the peer already reset
/// may refuse options, and its first read reports that.
pub(crate) fn prepare_stream(fd: RawFd) {
    let _ = set_nodelay(fd);
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        let one: c_int = 1;
        // SAFETY: `one` is a c_int that outlives the call and its size is passed with it.
        let _ = syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            &one as *const c_int as *const libc::c_void,
            mem::size_of::<c_int>() as libc::socklen_t
        ));
    }
}

/// Sets `SO_SNDBUF` on a stream socket (`0`: leaves the kernel's default). Best effort.
pub(crate) fn set_send_buffer(fd: RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let value = bytes.min(c_int::MAX as usize) as c_int;
    // SAFETY: `value` is a c_int that outlives the call and its size is passed with it.
    let _ = syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        &value as *const c_int as *const libc::c_void,
        mem::size_of::<c_int>() as libc::socklen_t
    ));
}

/// Sets `TCP_NODELAY`: game traffic is small and latency-bound.
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: c_int = 1;
    // SAFETY: `one` is a c_int that outlives the call and its size is passed with it.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        &one as *const c_int as *const libc::c_void,
        mem::size_of::<c_int>() as libc::socklen_t
    ))?;
    Ok(())
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
pub(crate) struct Reserve {
    file: Option<File>,
}

/// What [`Reserve::shed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// One pending connection was accepted into the reserve's slot and closed.
    One,
    /// Nothing was pending any more.
    Nothing,
    /// No descriptor could be freed (the reserve is gone and cannot be reopened, or the slot
    /// was taken by another thread first): the caller stops accepting for now.
    Failed,
}

impl Reserve {
    /// Opens the reserve (it is retried later when this fails).
    pub(crate) fn new() -> Reserve {
        Reserve {
            file: File::open("/dev/null").ok(),
        }
    }

    /// Sheds one pending connection of `listener` through the reserve's slot, then takes the
    /// slot back.
    pub(crate) fn shed(&mut self, listener: RawFd) -> Shed {
        if self.file.is_none() {
            // Retry an earlier failure: descriptors may be free again.
            self.file = File::open("/dev/null").ok();
        }
        if self.file.take().is_none() {
            return Shed::Failed;
        }
        let result = match accept_stream(listener) {
            Ok((stream, _)) => {
                drop(stream);
                Shed::One
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Shed::Nothing,
            Err(_) => Shed::Failed,
        };
        self.file = File::open("/dev/null").ok();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
