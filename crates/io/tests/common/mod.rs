//! Helpers shared by the io test binaries: every behaviour test runs once per model this
//! platform build can open.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tickwire_io::{available_models, on_datagrams, open, Backend, Config, Model, SocketId};

/// A received datagram, copied out of the backend's buffer.
pub type Got = (SocketId, SocketAddr, Vec<u8>);

/// Narrows the models under test to a comma-separated list of model names
/// (`TICKWIRE_IO_TEST_MODELS=iocp`), each of which must be available here. Unset or empty:
/// every available model.
pub const TEST_MODELS_ENV: &str = "TICKWIRE_IO_TEST_MODELS";

/// The concrete models to test: every available one (`Auto` is only an alias), or those
/// [`TEST_MODELS_ENV`] names.
pub fn models() -> Vec<Model> {
    let models: Vec<Model> = available_models()
        .into_iter()
        .filter(|m| *m != Model::Auto)
        .collect();
    assert!(models.contains(&Model::Blocking), "{:?}", models);
    let list = std::env::var(TEST_MODELS_ENV).unwrap_or_default();
    if list.trim().is_empty() {
        return models;
    }
    let wanted: Vec<Model> = list
        .split(',')
        .map(|name| {
            name.parse()
                .unwrap_or_else(|e| panic!("{}: {}", TEST_MODELS_ENV, e))
        })
        .collect();
    for m in &wanted {
        assert!(
            models.contains(m),
            "{} names {}, which is not available here ({:?})",
            TEST_MODELS_ENV,
            m,
            models
        );
    }
    models.into_iter().filter(|m| wanted.contains(m)).collect()
}

pub fn open_model(model: Model, cfg: &Config) -> Box<dyn Backend> {
    match open(model, cfg) {
        Ok(io) => {
            assert_eq!(io.model(), model);
            io
        }
        Err(e) => panic!("open {}: {}", model, e),
    }
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Polls until `want` datagrams arrived or `within` passed; returns what arrived.
pub fn recv_n(io: &mut dyn Backend, want: usize, within: Duration) -> Vec<Got> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < end {
        let deadline = (Instant::now() + Duration::from_millis(100)).min(end);
        io.poll(
            deadline,
            &mut on_datagrams(|id, peer, bytes| got.push((id, peer, bytes.to_vec()))),
        )
        .unwrap();
    }
    got
}

/// After a flush, makes sure the datagrams left: io_uring submits flushed sends with the next
/// poll's io_uring_enter, so a caller that does not poll that backend again polls once without
/// blocking. (A no-op wait for the other backends.) Nothing is expected to arrive.
pub fn push_out(io: &mut dyn Backend) {
    io.poll(
        Instant::now(),
        &mut on_datagrams(|_, _, _| panic!("unexpected datagram")),
    )
    .unwrap();
}

/// `recv_from` on a std socket with a read timeout, retried on EINTR: tearing down an io_uring
/// ring makes the kernel interrupt the thread's next blocking call once.
pub fn recv_from_retrying(socket: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    loop {
        match socket.recv_from(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.unwrap(),
        }
    }
}

/// Linux: the open descriptors, counted in /proc/self/fd.
#[cfg(target_os = "linux")]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Windows: the process's open handles (sockets are handles too). Under Wine, whose
/// `GetProcessHandleCount` answers 0, the Wine process's own Unix descriptors instead
/// (`Z:` is `/`): every socket and thread of the Windows program holds one there.
#[cfg(windows)]
pub fn open_fds() -> usize {
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessHandleCount};
    let mut count = 0u32;
    // SAFETY: `count` is a writable u32 that outlives the call; the pseudo-handle of the
    // current process needs no closing.
    let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut count) };
    assert_ne!(
        ok,
        0,
        "GetProcessHandleCount: {}",
        io::Error::last_os_error()
    );
    if count > 0 {
        return count as usize;
    }
    std::fs::read_dir(WINE_FDS)
        .expect("no handle count: GetProcessHandleCount answers 0 and Z:\\proc is not there")
        .count()
}

#[cfg(windows)]
const WINE_FDS: &str = "Z:\\proc\\self\\fd";

/// How far [`open_fds`] may move with no leak: 0, except under Wine, whose own descriptor
/// caches move the Unix count by up to about 20 (measured: 200 connections opened and closed
/// leave it 10 above or 18 below where it was). There the leak checks catch a leaked socket
/// per connection, not a single leaked handle.
pub fn fd_noise() -> usize {
    #[cfg(windows)]
    if under_wine() {
        return 32;
    }
    0
}

/// Fails unless the descriptor count came back to `before` (within [`fd_noise`]).
pub fn assert_no_fd_leak(model: Model, before: usize, after: usize) {
    let noise = fd_noise();
    assert!(
        after <= before + noise && before <= after + noise,
        "{}: {} fds leaked (noise allowed: {})",
        model,
        after as isize - before as isize,
        noise
    );
}

/// Whether this Windows program runs under Wine (its ntdll exports `wine_get_version`).
#[cfg(windows)]
pub fn under_wine() -> bool {
    use std::os::raw::c_void;
    #[link(name = "kernel32")]
    extern "system" {
        fn GetModuleHandleA(name: *const u8) -> *mut c_void;
        fn GetProcAddress(module: *mut c_void, name: *const u8) -> *mut c_void;
    }
    // SAFETY: both names are NUL-terminated; ntdll is loaded in every process and its handle
    // needs no release.
    unsafe {
        let ntdll = GetModuleHandleA(b"ntdll.dll\0".as_ptr());
        !ntdll.is_null() && !GetProcAddress(ntdll, b"wine_get_version\0".as_ptr()).is_null()
    }
}
