//! Fuzz `tickwire_stream::ClientConn::feed` (a server's bytes as the client reads them): never
//! a panic, memory within the limits, the same outcome however the bytes are split.
//!
//! Input layout: byte 0: bit 0 = TCP framing (else a WebSocket whose key is the RFC 6455
//! example's), bit 1 = put a valid `101` for that key in front of the data (so the fuzzer
//! starts past the handshake), bit 2 = a small `max_packet` of 200; bytes 1..5 are chunk
//! lengths used in turn (0 = the rest at once); the rest is what the server sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_stream::{ClientConn, Limits, Transport, Violation};

const KEY: [u8; 16] = *b"the sample nonce";
const OK_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

struct Run {
    packets: Vec<Vec<u8>>,
    reply: Vec<u8>,
    result: Result<(), Violation>,
    status: Option<u16>,
}

fn conn(tcp: bool, limits: Limits) -> ClientConn {
    let mut n = 0u32;
    let source = move || {
        n = n.wrapping_add(0x9e37_79b9);
        n.to_le_bytes()
    };
    if tcp {
        ClientConn::tcp(limits).with_mask_source(source)
    } else {
        ClientConn::websocket(KEY, limits).with_mask_source(source)
    }
}

fn run(tcp: bool, limits: Limits, data: &[u8], splits: &[u8]) -> Run {
    let mut c = conn(tcp, limits);
    let limits = c.limits();
    let bound = limits.max_packet.max(limits.max_handshake);
    let mut out = Run {
        packets: Vec::new(),
        reply: Vec::new(),
        result: Ok(()),
        status: None,
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
        let r = c.feed(chunk, &mut out.reply, &mut |p| {
            assert!(p.len() <= limits.max_packet);
            packets.push(p.to_vec());
        });
        assert!(
            c.buffer_capacity() <= bound,
            "capacity {}",
            c.buffer_capacity()
        );
        assert!(c.buffered() <= bound + 14 + 125);
        // A masked pong is 4 bytes longer than the ping it answers (an empty ping: 2 bytes
        // in, 6 out), plus at most one 8-byte close frame.
        assert!(out.reply.len() <= 3 * fed + 8);
        if let Err(v) = r {
            assert_eq!(c.violation(), Some(v));
            assert!(!c.is_established());
            let before = out.reply.len();
            assert_eq!(
                c.feed(tail, &mut out.reply, &mut |_| panic!("packet after close")),
                Err(v)
            );
            assert_eq!(out.reply.len(), before);
            out.result = Err(v);
            break;
        }
    }
    out.status = c.http_status();
    if tcp {
        assert_eq!(c.transport(), Transport::Tcp);
    }
    if c.is_established() {
        let packet = &data[..data.len().min(limits.max_packet)];
        let mut framed = Vec::new();
        c.encode(packet, &mut framed).expect("established");
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&cfg, rest)) = input.split_first() else {
        return;
    };
    let (splits, body) = rest.split_at(rest.len().min(4));
    let tcp = cfg & 1 != 0;
    let mut data = Vec::new();
    if cfg & 2 != 0 {
        data.extend_from_slice(OK_101);
    }
    data.extend_from_slice(body);
    let limits = Limits {
        max_packet: if cfg & 4 != 0 { 200 } else { 1400 },
        max_handshake: 4096,
    };
    let split = run(tcp, limits, &data, splits);
    let whole = run(tcp, limits, &data, &[]);
    assert_eq!(split.result, whole.result);
    assert_eq!(split.packets, whole.packets);
    assert_eq!(split.status, whole.status);
    // Both runs draw masking keys from the same sequence, in the same order.
    assert_eq!(split.reply, whole.reply);
});
