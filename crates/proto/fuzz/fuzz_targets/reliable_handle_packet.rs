//! Fuzz `tickwire_proto::reliable::Channel::handle_packet`: the input is a sequence of packet
//! bodies, each prefixed by its length (u16 little-endian, clamped to what is left), fed to one
//! channel that has a message in flight (so hostile acks have something to hit). It must never
//! panic, keep its memory bounds, deliver only messages within the size limit, and still
//! produce packets afterwards. A small configuration lets the fuzzer reach reassembly quickly.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickwire_proto::reliable::{Channel, ChannelConfig, MAX_BODY_BYTES};

fuzz_target!(|data: &[u8]| {
    let cfg = ChannelConfig {
        max_message_bytes: 1024,
        fragment_bytes: 64,
        window: 8,
        max_pending_bytes: 4096,
        ..ChannelConfig::default()
    };
    let max_message = cfg.max_message_bytes;
    let mut ch = Channel::new(cfg.clone());
    ch.send(&[0xAA; 300]).expect("fits");
    let mut buf = [0u8; MAX_BODY_BYTES];
    let mut now = Duration::ZERO;
    while ch.poll_packet(now, &mut buf).is_some() {}

    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let _ = ch.handle_packet(now, body, &mut |m| assert!(m.len() <= max_message));
        assert!(ch.pending_bytes() <= cfg.max_pending_bytes);
        assert!(ch.in_flight() <= cfg.window as usize);
        now += Duration::from_millis(50);
        let mut packets = 0;
        while let Some(n) = ch.poll_packet(now, &mut buf) {
            assert!(n <= MAX_BODY_BYTES);
            packets += 1;
            assert!(packets <= 64, "poll_packet must run dry");
        }
    }
});
