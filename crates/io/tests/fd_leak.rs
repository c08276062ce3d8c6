//! Dropping a backend closes every fd it opened (Windows: every handle). Its own test binary,
//! with one test, so that no other test opens or closes fds while this one counts them.
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{localhost, models, open_fds, open_model, recv_n};
use tickwire_io::{on_datagrams, Config};

/// The fd count once it has been the same twice in a row (robust against a harness thread
/// opening something for a moment).
fn settled_fds() -> usize {
    let mut last = open_fds();
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(10));
        let now = open_fds();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn dropping_a_backend_closes_every_fd() {
    for model in models() {
        let before = settled_fds();
        {
            let mut io = open_model(model, &Config::default());
            // Enough sockets for a leak of them all to stand out of the count's noise.
            let sockets = 10 + 2 * common::fd_noise();
            let mut ids = Vec::new();
            for _ in 0..sockets {
                ids.push(io.bind(localhost()).unwrap());
            }
            assert!(open_fds() >= before + sockets, "{}", model);
            let to = io.local_addr(ids[sockets - 1]).unwrap();
            io.send(ids[0], to, b"bye").unwrap();
            io.flush().unwrap();
            assert_eq!(
                recv_n(&mut *io, 1, Duration::from_secs(60)).len(),
                1,
                "{}",
                model
            );
            let waker = io.waker();
            waker.wake().unwrap();
            drop(waker);
            io.poll(Instant::now(), &mut on_datagrams(|_, _, _| {}))
                .unwrap();
        }
        common::assert_no_fd_leak(model, before, settled_fds());
    }
}
