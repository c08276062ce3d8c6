//! io_uring: when descriptors run out, a listener's multishot accept fails with `EMFILE`; the
//! backend sheds the waiting connection with its reserve descriptor (the client sees the
//! close), pauses that listener until the next poll instead of spinning, and accepts again
//! once descriptors are back. Its own test binary with one test: it lowers RLIMIT_NOFILE for
//! the whole process.
#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{localhost, open_model};
use tickwire_io::{available_models, Backend, Config, Event, Model};

fn nofile() -> libc::rlimit {
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim
    }
}

fn set_nofile(lim: &libc::rlimit) {
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) }, 0);
}

/// Polls (50 ms at a time, 60 s hang guard) until `done`; returns the Accepted events seen.
fn poll_until(io: &mut dyn Backend, mut done: impl FnMut(&dyn Backend, usize) -> bool) -> usize {
    let end = Instant::now() + Duration::from_secs(60);
    let mut accepted = 0;
    while !done(io, accepted) {
        assert!(Instant::now() < end, "hang guard: {:?}", io.stats());
        io.poll(Instant::now() + Duration::from_millis(50), &mut |e| {
            if let Event::Accepted { .. } = e {
                accepted += 1;
            }
        })
        .unwrap();
    }
    accepted
}

#[test]
fn accept_sheds_on_emfile_and_recovers() {
    if !available_models().contains(&Model::IoUring) {
        eprintln!("io_uring unavailable here, skipped");
        return;
    }
    let saved = nofile();
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as libc::rlim_t;
    // The multishot accept reads the limit when it is armed: lower it first.
    set_nofile(&libc::rlimit {
        rlim_cur: (open_now + 64).min(saved.rlim_cur),
        rlim_max: saved.rlim_max,
    });
    let mut io = open_model(Model::IoUring, &Config::default());
    let listener = io.listen(localhost()).unwrap();
    let addr = io.local_addr(listener).unwrap();
    io.poll(Instant::now(), &mut |e| panic!("{:?}", e)).unwrap(); // arms the accept

    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("{}", e),
        }
    }
    fillers.pop(); // one descriptor for the client
    let mut client = TcpStream::connect(addr).unwrap();

    let accepted = poll_until(&mut *io, |io, _| io.stats().accepts_shed >= 1);
    assert_eq!(accepted, 0);
    assert_eq!(io.connections(), 0);
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 8];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => panic!("the shed client should see the close: {:?}", other),
        }
    }
    drop(client);

    // Descriptors are back: the next poll re-arms the accept.
    drop(fillers);
    let _again = TcpStream::connect(addr).unwrap();
    let accepted = poll_until(&mut *io, |_, accepted| accepted == 1);
    assert_eq!(accepted, 1);
    assert_eq!(io.connections(), 1);
    assert_eq!(io.stats().accepted, 1);
    drop(io);
    set_nofile(&saved);
}
