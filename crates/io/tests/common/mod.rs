//! Helpers shared by the io test binaries: every behaviour test runs once per model this
//! platform build can open.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tickwire_io::{available_models, open, Backend, Config, Model, SocketId};

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
        io.poll(deadline, &mut |id, peer, bytes| {
            got.push((id, peer, bytes.to_vec()))
        })
        .unwrap();
    }
    got
}
