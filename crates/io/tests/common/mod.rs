//! Helpers shared by the io test binaries: every behaviour test runs once per model this
//! platform build can open.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tickwire_io::{available_models, on_datagrams, open, Backend, Config, Model, SocketId};

/// A received datagram, copied out of the backend's buffer.
pub type Got = (SocketId, SocketAddr, Vec<u8>);

/// The concrete models to test (every available one; `Auto` is only an alias).
pub fn models() -> Vec<Model> {
    let models: Vec<Model> = available_models()
        .into_iter()
        .filter(|m| *m != Model::Auto)
        .collect();
    assert!(models.contains(&Model::Blocking), "{:?}", models);
    models
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
