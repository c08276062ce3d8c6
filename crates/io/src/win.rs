//! Winsock helpers shared by the Windows builds of the backends (raw `windows-sys` FFI; the
//! Windows counterpart of the socket-option half of `sys.rs`).

use std::io;
use std::mem;
use std::os::windows::io::RawSocket;

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
