//! Test helpers: a WebSocket frame builder written from RFC 6455 §5.2 independently of the
//! crate's encoder, requests, and a feed wrapper that collects what comes out.
#![allow(dead_code)]

use tickwire_stream::{ClientConn, StreamConn, Violation};

/// The RFC 6455 §1.3 example key and its accept value.
pub const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The RFC's key decoded.
pub const RFC_KEY_BYTES: [u8; 16] = *b"the sample nonce";

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: `b0` is FIN/RSV/opcode as sent; `mask` masks the payload.
pub fn frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![b0];
    let m = if mask.is_some() { 0x80u8 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n < 65536 {
        out.push(m | 126);
        out.push((n >> 8) as u8);
        out.push(n as u8);
    } else {
        out.push(m | 127);
        for shift in (0..8).rev() {
            out.push((n as u64 >> (shift * 8)) as u8);
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked final binary frame, as a client sends.
pub fn binary(payload: &[u8]) -> Vec<u8> {
    frame(0x82, payload, Some(MASK))
}

/// A TCP frame.
pub fn tcp(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A browser-like upgrade request with the RFC key, plus `extra` header lines.
pub fn request(extra: &str) -> Vec<u8> {
    format!(
        "GET /play?x=1 HTTP/1.1\r\nHost: game.example:7777\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\nOrigin: https://anything.example\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

pub fn response_101(subprotocol: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {RFC_ACCEPT}\r\n"
    );
    if subprotocol {
        r.push_str("Sec-WebSocket-Protocol: tickwire.netcode\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// What one or more feeds produced.
#[derive(Debug, Default)]
pub struct Out {
    pub packets: Vec<Vec<u8>>,
    pub reply: Vec<u8>,
    pub result: Option<Violation>,
}

pub fn feed(conn: &mut StreamConn, data: &[u8], out: &mut Out) -> Result<(), Violation> {
    let packets = &mut out.packets;
    let r = conn.feed(data, &mut out.reply, &mut |p| packets.push(p.to_vec()));
    if let Err(v) = r {
        out.result = Some(v);
    }
    r
}

/// Feeds `data` to a new server connection in one call.
pub fn server(data: &[u8]) -> (StreamConn, Out) {
    let mut conn = StreamConn::new(Default::default());
    let mut out = Out::default();
    let _ = feed(&mut conn, data, &mut out);
    (conn, out)
}

/// Feeds `data` one byte at a time, stopping at the first violation.
pub fn server_bytewise(data: &[u8]) -> (StreamConn, Out) {
    let mut conn = StreamConn::new(Default::default());
    let mut out = Out::default();
    for b in data {
        if feed(&mut conn, std::slice::from_ref(b), &mut out).is_err() {
            break;
        }
    }
    (conn, out)
}

pub fn client_feed(conn: &mut ClientConn, data: &[u8], out: &mut Out) -> Result<(), Violation> {
    let packets = &mut out.packets;
    let r = conn.feed(data, &mut out.reply, &mut |p| packets.push(p.to_vec()));
    if let Err(v) = r {
        out.result = Some(v);
    }
    r
}

/// Unmasks one masked frame with a short (<126) payload: (b0, payload).
pub fn unmask_short(f: &[u8]) -> (u8, Vec<u8>) {
    assert_eq!(f[1] & 0x80, 0x80, "masked");
    let n = usize::from(f[1] & 0x7f);
    assert!(n < 126);
    let k = &f[2..6];
    assert_eq!(f.len(), 6 + n, "one frame");
    (
        f[0],
        f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ k[i % 4])
            .collect(),
    )
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
