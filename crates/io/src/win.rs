//! Winsock helpers shared by the Windows builds of the backends (raw `windows-sys` FFI; the
//! Windows counterpart of the socket-option half of `sys.rs`).

use std::ffi::c_void;
use std::io;
use std::mem;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
};
use std::os::windows::io::{AsRawSocket, FromRawSocket, IntoRawSocket, RawSocket};
use std::ptr;
use std::sync::Once;

use windows_sys::Win32::Networking::WinSock as ws;

/// The calling thread's last Winsock error.
pub(crate) fn last_error() -> io::Error {
    // SAFETY: no arguments; reads the calling thread's error code.
    io::Error::from_raw_os_error(unsafe { ws::WSAGetLastError() })
}

/// Sets an `int` socket option.
pub(crate) fn set_int_option(s: RawSocket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is an i32 that outlives the call and its size is passed with it.
    let rc = unsafe {
        ws::setsockopt(
            s as ws::SOCKET,
            level,
            name,
            &value as *const i32 as *const u8,
            mem::size_of::<i32>() as i32,
        )
    };
    if rc == ws::SOCKET_ERROR {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// `SO_RCVBUF` and `SO_SNDBUF` (best effort, as on unix).
pub(crate) fn set_buffer_sizes(s: RawSocket, bytes: usize) {
    let value = bytes.min(i32::MAX as usize) as i32;
    for opt in [ws::SO_RCVBUF, ws::SO_SNDBUF] {
        let _ = set_int_option(s, ws::SOL_SOCKET, opt, value);
    }
}

/// `SO_SNDBUF` of a stream socket (best effort; 0 keeps the default).
pub(crate) fn set_send_buffer(s: RawSocket, bytes: usize) {
    if bytes > 0 {
        let value = bytes.min(i32::MAX as usize) as i32;
        let _ = set_int_option(s, ws::SOL_SOCKET, ws::SO_SNDBUF, value);
    }
}

/// Writes `addr` as a Winsock address into `storage`; returns its length.
pub(crate) fn socket_addr_to_raw(addr: &SocketAddr, storage: &mut ws::SOCKADDR_STORAGE) -> i32 {
    // SAFETY: all-zero bytes are a valid SOCKADDR_STORAGE.
    *storage = unsafe { mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: all-zero bytes are a valid SOCKADDR_IN.
            let mut sin: ws::SOCKADDR_IN = unsafe { mem::zeroed() };
            sin.sin_family = ws::AF_INET;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.S_un.S_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: SOCKADDR_STORAGE is larger than SOCKADDR_IN and suitably aligned.
            unsafe { ptr::write(storage as *mut _ as *mut ws::SOCKADDR_IN, sin) };
            mem::size_of::<ws::SOCKADDR_IN>() as i32
        }
        SocketAddr::V6(a) => {
            // SAFETY: all-zero bytes are a valid SOCKADDR_IN6.
            let mut sin6: ws::SOCKADDR_IN6 = unsafe { mem::zeroed() };
            sin6.sin6_family = ws::AF_INET6;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.u.Byte = a.ip().octets();
            sin6.Anonymous.sin6_scope_id = a.scope_id();
            // SAFETY: SOCKADDR_STORAGE is larger than SOCKADDR_IN6 and suitably aligned.
            unsafe { ptr::write(storage as *mut _ as *mut ws::SOCKADDR_IN6, sin6) };
            mem::size_of::<ws::SOCKADDR_IN6>() as i32
        }
    }
}

/// Reads a Winsock address of `len` bytes; `None` for another family or a short length.
pub(crate) fn raw_to_socket_addr(storage: &ws::SOCKADDR_STORAGE, len: i32) -> Option<SocketAddr> {
    let len = usize::try_from(len).ok()?;
    match storage.ss_family {
        ws::AF_INET if len >= mem::size_of::<ws::SOCKADDR_IN>() => {
            // SAFETY: the family says the storage holds a SOCKADDR_IN, which it can contain.
            let sin = unsafe { &*(storage as *const _ as *const ws::SOCKADDR_IN) };
            // SAFETY: every variant of the address union is plain bytes.
            let ip = Ipv4Addr::from(unsafe { sin.sin_addr.S_un.S_addr }.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        ws::AF_INET6 if len >= mem::size_of::<ws::SOCKADDR_IN6>() => {
            // SAFETY: the family says the storage holds a SOCKADDR_IN6, which it can contain.
            let sin6 = unsafe { &*(storage as *const _ as *const ws::SOCKADDR_IN6) };
            // SAFETY: every variant of these unions is plain bytes.
            let (bytes, scope) = unsafe { (sin6.sin6_addr.u.Byte, sin6.Anonymous.sin6_scope_id) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(bytes),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// Turns off `SIO_UDP_CONNRESET`: otherwise an ICMP "port unreachable" caused by one of our
/// sends fails the socket's next receive with `WSAECONNRESET`, one client's closed port
/// disturbing everyone's traffic. Best effort (Wine may not know the ioctl).
pub(crate) fn udp_connreset_off(s: RawSocket) {
    let off: i32 = 0;
    let mut returned = 0u32;
    // SAFETY: `off` is a readable BOOL and `returned` a writable u32, both outliving the
    // (synchronous: no OVERLAPPED) call; no output buffer.
    let _ = unsafe {
        ws::WSAIoctl(
            s as ws::SOCKET,
            ws::SIO_UDP_CONNRESET,
            &off as *const i32 as *const c_void,
            mem::size_of::<i32>() as u32,
            ptr::null_mut(),
            0,
            &mut returned,
            ptr::null_mut(),
            None,
        )
    };
}

/// Winsock's `WSAStartup`, once per process (std does it before its own first socket; this
/// crate makes some sockets itself). Never undone: std does not either.
fn startup() {
    static START: Once = Once::new();
    START.call_once(|| {
        // SAFETY: WSADATA is plain data that `data` can hold; it outlives the call.
        let mut data: ws::WSADATA = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let _ = unsafe { ws::WSAStartup(0x202, &mut data) };
    });
}

/// A new overlapped, non-inheritable TCP socket of `addr`'s family, unbound (what `AcceptEx`
/// wants as its accept socket).
pub(crate) fn tcp_socket(addr: &SocketAddr) -> io::Result<TcpStream> {
    startup();
    let family = match addr {
        SocketAddr::V4(_) => ws::AF_INET,
        SocketAddr::V6(_) => ws::AF_INET6,
    };
    // SAFETY: no pointers; a null protocol info is allowed.
    let s = unsafe {
        ws::WSASocketW(
            i32::from(family),
            ws::SOCK_STREAM,
            ws::IPPROTO_TCP,
            ptr::null(),
            0,
            ws::WSA_FLAG_OVERLAPPED | ws::WSA_FLAG_NO_HANDLE_INHERIT,
        )
    };
    if s == ws::INVALID_SOCKET {
        return Err(last_error());
    }
    // SAFETY: `s` was just created and is owned by nothing else.
    Ok(unsafe { TcpStream::from_raw_socket(s as RawSocket) })
}

/// Backlog of every TCP listener.
pub(crate) const LISTEN_BACKLOG: i32 = 1024;

/// A TCP listener on `addr` with a backlog of [`LISTEN_BACKLOG`] (std's is 128). No
/// `SO_REUSEADDR`: on Windows it would let another socket bind the same port (std does not set
/// it either).
pub(crate) fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = tcp_socket(&addr)?;
    let raw = socket.as_raw_socket() as ws::SOCKET;
    // SAFETY: all-zero bytes are a valid SOCKADDR_STORAGE.
    let mut storage: ws::SOCKADDR_STORAGE = unsafe { mem::zeroed() };
    let len = socket_addr_to_raw(&addr, &mut storage);
    // SAFETY: `storage` holds an address of `len` bytes and outlives the call.
    if unsafe { ws::bind(raw, &storage as *const _ as *const ws::SOCKADDR, len) } != 0 {
        return Err(last_error());
    }
    // SAFETY: no pointers.
    if unsafe { ws::listen(raw, LISTEN_BACKLOG) } != 0 {
        return Err(last_error());
    }
    // SAFETY: the socket's ownership moves from `socket` (forgotten) to the listener.
    Ok(unsafe { TcpListener::from_raw_socket(socket.into_raw_socket()) })
}

/// The `AcceptEx` extension function of a listening socket's provider.
pub(crate) type AcceptEx = unsafe extern "system" fn(
    ws::SOCKET,
    ws::SOCKET,
    *mut c_void,
    u32,
    u32,
    u32,
    *mut u32,
    *mut windows_sys::Win32::System::IO::OVERLAPPED,
) -> i32;

/// Asks the listener's provider for `AcceptEx` (`SIO_GET_EXTENSION_FUNCTION_POINTER`).
pub(crate) fn accept_ex(listener: &TcpListener) -> io::Result<AcceptEx> {
    let guid = ws::WSAID_ACCEPTEX;
    let mut f: ws::LPFN_ACCEPTEX = None;
    let mut returned = 0u32;
    // SAFETY: `guid` is readable and `f` writable for the sizes passed; synchronous call.
    let rc = unsafe {
        ws::WSAIoctl(
            listener.as_raw_socket() as ws::SOCKET,
            ws::SIO_GET_EXTENSION_FUNCTION_POINTER,
            &guid as *const _ as *const c_void,
            mem::size_of_val(&guid) as u32,
            &mut f as *mut _ as *mut c_void,
            mem::size_of::<ws::LPFN_ACCEPTEX>() as u32,
            &mut returned,
            ptr::null_mut(),
            None,
        )
    };
    if rc != 0 {
        return Err(last_error());
    }
    f.ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no AcceptEx"))
}

/// `SO_UPDATE_ACCEPT_CONTEXT`: gives a socket accepted by `AcceptEx` its listener's
/// properties, without which `getpeername` and `shutdown` fail on it.
pub(crate) fn update_accept_context(
    accepted: &TcpStream,
    listener: &TcpListener,
) -> io::Result<()> {
    let l = listener.as_raw_socket() as ws::SOCKET;
    // SAFETY: `l` is a SOCKET that outlives the call, and its size is passed with it.
    let rc = unsafe {
        ws::setsockopt(
            accepted.as_raw_socket() as ws::SOCKET,
            ws::SOL_SOCKET,
            ws::SO_UPDATE_ACCEPT_CONTEXT,
            &l as *const ws::SOCKET as *const u8,
            mem::size_of::<ws::SOCKET>() as i32,
        )
    };
    if rc != 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}
