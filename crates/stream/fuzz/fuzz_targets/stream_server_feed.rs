//! Fuzz `tickwire_stream::StreamConn::feed`: any bytes, split anywhere, never a panic, never
//! more memory than the limits allow, and the same outcome however the bytes are split.
//!
//! Input layout: byte 0 picks the limits (bit 0: a small `max_packet` of 200; bit 1: a small
//! `max_handshake` of 300), bytes 1..5 are chunk lengths used in turn (0 = the rest at once),
//! the rest is what the peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_stream::{Limits, StreamConn, Violation};

/// Headers, pongs, close frames and the HTTP answers are at most this much larger than the
/// bytes that caused them (the 101 with the subprotocol is the largest).
const REPLY_SLACK: usize = 256;

struct Run {
    packets: Vec<Vec<u8>>,
    reply: Vec<u8>,
    result: Result<(), Violation>,
}

fn run(limits: Limits, data: &[u8], splits: &[u8]) -> Run {
    let mut conn = StreamConn::new(limits);
    let limits = conn.limits();
    let bound = limits.max_packet.max(limits.max_handshake);
    let mut out = Run {
        packets: Vec::new(),
        reply: Vec::new(),
        result: Ok(()),
    };
    let mut rest = data;
    let mut fed = 0;
    let mut i = 0;
    while !rest.is_empty() {
        let n = match splits.get(i % splits.len().max(1)) {
            Some(&0) | None => rest.len(),
            Some(&n) => usize::from(n).min(rest.len()),
        };
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        fed += chunk.len();
        let packets = &mut out.packets;
        let r = conn.feed(chunk, &mut out.reply, &mut |p| {
            assert!(p.len() <= limits.max_packet);
            packets.push(p.to_vec());
        });
        assert!(
            conn.buffer_capacity() <= bound,
            "capacity {}",
            conn.buffer_capacity()
        );
        assert!(conn.buffered() <= bound + 14 + 125);
        assert!(out.reply.len() <= fed + REPLY_SLACK);
        if let Err(v) = r {
            assert_eq!(conn.violation(), Some(v));
            assert!(!conn.is_established());
            assert!(conn.transport().is_some());
            // Closed for good: the same answer, nothing read, nothing replied.
            let before = out.reply.len();
            assert_eq!(
                conn.feed(tail, &mut out.reply, &mut |_| panic!("packet after close")),
                Err(v)
            );
            assert_eq!(out.reply.len(), before);
            out.result = Err(v);
            return out;
        }
    }
    if conn.is_established() {
        // The two ways of framing the server's packets agree.
        let packet = &data[..data.len().min(limits.max_packet)];
        let mut framed = Vec::new();
        let n = conn.encode(packet, &mut framed).expect("established");
        let mut slot = vec![0u8; n];
        assert_eq!(conn.frame_into(packet, &mut slot), n);
        assert_eq!(slot, framed);
        assert_eq!(conn.framed_len(packet.len()), Ok(n));
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&cfg, rest)) = input.split_first() else {
        return;
    };
    let (splits, data) = rest.split_at(rest.len().min(4));
    let limits = Limits {
        max_packet: if cfg & 1 != 0 { 200 } else { 1400 },
        max_handshake: if cfg & 2 != 0 { 300 } else { 4096 },
    };
    let split = run(limits, data, splits);
    let whole = run(limits, data, &[]);
    assert_eq!(split.result, whole.result);
    assert_eq!(split.packets, whole.packets);
    assert_eq!(split.reply, whole.reply);
});
