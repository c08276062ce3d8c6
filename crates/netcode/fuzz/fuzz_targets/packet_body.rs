//! Fuzz the packet body parser that runs after decryption (`fuzzing::parse_packet_body`: the
//! header's per-type size check, then the body parser), for every packet type. Whatever parses
//! must encode, seal, decode (through the AEAD) and parse back to the same packet.
//!
//! Input layout: the first byte picks the type (`% 7`), the next 8 the sequence, the rest is
//! the decrypted body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::fuzzing;
use tickwire_netcode::packet::{self, sequence_bytes};
use tickwire_netcode::MAX_PACKET_BYTES;

const PID: u64 = 0x7465_7374;
const KEY: [u8; 32] = [5; 32];

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let kind = fuzzing::packet_type(data[0] % 7).expect("0..=6 are packet types");
    let sequence = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let body = &data[9..];
    let Ok(p) = fuzzing::parse_packet_body(kind, body) else {
        return;
    };
    assert_eq!(p.packet_type(), kind);
    let mut out = [0u8; MAX_PACKET_BYTES];
    let n = packet::encode(&p, sequence, PID, &KEY, &mut out).expect("a parsed body encodes");
    assert_eq!(n, 1 + sequence_bytes(sequence) + body.len() + 16);
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    let d = packet::decode(&out[..n], PID, &KEY, &mut scratch).expect("and decodes");
    assert_eq!(d.sequence, sequence);
    assert_eq!(d.packet, p);
    // Any other key fails the tag.
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    assert!(packet::decode(&out[..n], PID, &[6; 32], &mut scratch).is_err());
});
