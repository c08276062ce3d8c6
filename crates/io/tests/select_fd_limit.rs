//! The select backend refuses sockets whose fd is >= FD_SETSIZE instead of writing past the
//! end of an `fd_set`. Its own test binary: it pushes the process's fd numbers up, which would
//! disturb any select test running beside it (and its two tests take turns).
#![cfg(unix)]

mod common;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{localhost, open_model};
use tickwire_io::{on_datagrams, Backend, Config, ConnId, Event, Model};

/// Hang guard, never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

/// Both tests push the fd numbers up: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens files until the next descriptor is well above FD_SETSIZE.
fn push_fds_up() -> Vec<File> {
    raise_nofile_limit(libc::FD_SETSIZE as u64 + 200);
    let mut files = Vec::new();
    for _ in 0..libc::FD_SETSIZE + 76 {
        files.push(File::open("/dev/null").expect("open /dev/null (RLIMIT_NOFILE too low?)"));
    }
    files
}

/// Raises the soft open-files limit to what this test needs, if the hard limit allows it.
fn raise_nofile_limit(want: u64) {
    // SAFETY: `lim` is a valid rlimit that outlives both calls.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as u64) < want {
            lim.rlim_cur = (want as libc::rlim_t).min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn select_refuses_fds_at_or_above_fd_setsize() {
    let _serial = serial();
    let mut io = open_model(Model::Select, &Config::default());
    let low = io.bind(localhost()).unwrap();
    let low_addr = io.local_addr(low).unwrap();

    let files = push_fds_up();

    let err = io.bind(localhost()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("FD_SETSIZE"), "{}", err);

    // The backend still works with the sockets it has.
    io.send(low, low_addr, b"still here").unwrap();
    assert_eq!(io.flush().unwrap().sent, 1);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(60); // hang guard
    while got.is_empty() && Instant::now() < end {
        io.poll(end, &mut on_datagrams(|_, _, b| got.push(b.to_vec())))
            .unwrap();
    }
    assert_eq!(got, vec![b"still here".to_vec()]);

    // Other models take high fds in their stride.
    let mut blocking = open_model(Model::Blocking, &Config::default());
    blocking.bind(localhost()).unwrap();
    #[cfg(target_os = "linux")]
    {
        let mut epoll = open_model(Model::Epoll, &Config::default());
        epoll.bind(localhost()).unwrap();
    }
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    {
        let mut kqueue = open_model(Model::Kqueue, &Config::default());
        kqueue.bind(localhost()).unwrap();
    }

    // With the low fds free again, select binds again.
    drop(files);
    io.bind(localhost()).unwrap();
}

/// Polls until an `Accepted` from `client` arrives; returns its connection.
fn accepted(io: &mut dyn Backend, client: &TcpStream) -> ConnId {
    let me = client.local_addr().unwrap();
    let mut conn = None;
    let end = Instant::now() + PATIENCE; // hang guard
    while conn.is_none() {
        assert!(Instant::now() < end, "hung waiting for the connection");
        io.poll(end, &mut |event| {
            if let Event::Accepted { conn: c, from, .. } = event {
                assert_eq!(from, me, "an unexpected connection was accepted");
                conn = Some(c);
            }
        })
        .unwrap();
    }
    conn.unwrap()
}

#[test]
fn select_refuses_stream_fds_at_or_above_fd_setsize() {
    let _serial = serial();
    let mut io = open_model(Model::Select, &Config::default());
    let listener = io.listen(localhost()).unwrap();
    let addr = io.local_addr(listener).unwrap();
    let mut low_client = TcpStream::connect(addr).unwrap();
    let low = accepted(&mut *io, &low_client);

    let files = push_fds_up();

    // A listener or a connection of our own whose fd is that high is refused with an error.
    let err = io.listen(localhost()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("FD_SETSIZE"), "{}", err);
    let elsewhere = TcpListener::bind(localhost()).unwrap();
    let err = io
        .connect(elsewhere.local_addr().unwrap(), PATIENCE)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("FD_SETSIZE"), "{}", err);
    assert_eq!(io.connections(), 1);

    // A connection the listener accepts with such an fd is closed at once and counted: no
    // event, and its client reads the end.
    let mut high_client = TcpStream::connect(addr).unwrap();
    high_client.set_read_timeout(Some(PATIENCE)).unwrap();
    let end = Instant::now() + PATIENCE;
    while io.stats().accepts_refused == 0 {
        assert!(Instant::now() < end, "hung waiting for the refusal");
        io.poll(Instant::now() + Duration::from_millis(5), &mut |event| {
            panic!("unexpected event {:?}", event)
        })
        .unwrap();
    }
    let mut buf = [0u8; 8];
    match high_client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("the refused client read {:?}", other),
    }
    let stats = io.stats();
    assert_eq!(
        (stats.accepts_refused, stats.accepted),
        (1, 1),
        "{:?}",
        stats
    );
    assert_eq!(io.connections(), 1);

    // The connection it had still works.
    low_client.write_all(b"low").unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + PATIENCE;
    while got.len() < 3 {
        assert!(Instant::now() < end, "hung waiting for the bytes");
        io.poll(end, &mut |event| match event {
            Event::Stream { conn, data } if conn == low => got.extend_from_slice(data),
            other => panic!("unexpected event {:?}", other),
        })
        .unwrap();
    }
    assert_eq!(got, b"low");

    // With the low fds free again, connections are accepted again.
    drop(files);
    let again = TcpStream::connect(addr).unwrap();
    accepted(&mut *io, &again);
    assert_eq!(io.connections(), 2);
    assert_eq!(io.stats().accepts_refused, 1);
}
