//! The select backend refuses sockets whose fd is >= FD_SETSIZE instead of writing past the
//! end of an `fd_set`. Its own test binary: it pushes the process's fd numbers up, which would
//! disturb any select test running beside it.
#![cfg(unix)]

mod common;

use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

use common::{localhost, open_model};
use tickwire_io::{on_datagrams, Config, Model};

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
    let mut io = open_model(Model::Select, &Config::default());
    let low = io.bind(localhost()).unwrap();
    let low_addr = io.local_addr(low).unwrap();

    raise_nofile_limit(libc::FD_SETSIZE as u64 + 200);
    let mut files = Vec::new();
    for _ in 0..libc::FD_SETSIZE + 76 {
        files.push(File::open("/dev/null").expect("open /dev/null (RLIMIT_NOFILE too low?)"));
    }

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

    // With the low fds free again, select binds again.
    drop(files);
    io.bind(localhost()).unwrap();
}
