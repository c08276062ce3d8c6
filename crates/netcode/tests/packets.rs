//! Packet codec: round trips for every packet type, exact wire layout of the prefix and
//! sequence, AAD binding of the prefix, size rules.

use tickwire_netcode::packet::{self, Packet, PacketType};
use tickwire_netcode::*;

const PID: u64 = 0xDEAD_BEEF_0000_0001;
const KEY: Key = [9; 32];

fn round_trip(p: &Packet<'_>, seq: u64) -> Vec<u8> {
    let mut out = [0u8; MAX_PACKET_BYTES];
    let n = packet::encode(p, seq, PID, &KEY, &mut out).expect("encodes");
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    let d = packet::decode(&out[..n], PID, &KEY, &mut scratch).expect("decodes");
    assert_eq!(&d.packet, p);
    if p.packet_type() != PacketType::ConnectionRequest {
        assert_eq!(d.sequence, seq);
    }
    out[..n].to_vec()
}

#[test]
fn every_packet_type_round_trips() {
    let private = [0x33u8; CONNECT_TOKEN_PRIVATE_BYTES];
    let token = [0x44u8; 300];
    let payload = [0x55u8; 700];
    let cases: Vec<(Packet<'_>, usize)> = vec![
        (
            Packet::Request {
                protocol_id: PID,
                expire_unix_secs: 123,
                nonce: [1; 24],
                private_data: &private,
            },
            1078,
        ),
        (Packet::Denied, 1 + 1 + 16),
        (
            Packet::Challenge {
                challenge_sequence: 77,
                token: &token,
            },
            1 + 1 + 308 + 16,
        ),
        (
            Packet::Response {
                challenge_sequence: 77,
                token: &token,
            },
            1 + 1 + 308 + 16,
        ),
        (
            Packet::KeepAlive {
                client_index: 3,
                max_clients: 64,
            },
            1 + 1 + 8 + 16,
        ),
        (
            Packet::KeepAlive {
                client_index: 0,
                max_clients: 0,
            },
            1 + 1 + 8 + 16,
        ),
        (Packet::Payload(&payload), 1 + 1 + 700 + 16),
        (Packet::Payload(&payload[..1]), 1 + 1 + 1 + 16),
        (Packet::Disconnect, 1 + 1 + 16),
    ];
    for (p, len) in &cases {
        let bytes = round_trip(p, 200);
        assert_eq!(bytes.len(), *len, "{p:?}");
    }
    let big = [7u8; MAX_PAYLOAD_BYTES];
    assert_eq!(
        round_trip(&Packet::Payload(&big), u64::MAX).len(),
        1 + 8 + 1200 + 16
    );
}

#[test]
fn request_layout() {
    let private: [u8; CONNECT_TOKEN_PRIVATE_BYTES] = std::array::from_fn(|i| i as u8);
    let b = round_trip(
        &Packet::Request {
            protocol_id: PID,
            expire_unix_secs: 0x0102,
            nonce: [0xAA; 24],
            private_data: &private,
        },
        0,
    );
    assert_eq!(b[0], 0);
    assert_eq!(&b[1..14], b"NETCODE 1.02\0");
    assert_eq!(&b[14..22], &PID.to_le_bytes());
    assert_eq!(&b[22..30], &0x0102u64.to_le_bytes());
    assert_eq!(&b[30..54], &[0xAA; 24]);
    assert_eq!(&b[54..], &private[..]);
}

#[test]
fn sequence_encoding() {
    assert_eq!(packet::sequence_bytes(0), 1);
    assert_eq!(packet::sequence_bytes(0xFF), 1);
    assert_eq!(packet::sequence_bytes(0x100), 2);
    assert_eq!(packet::sequence_bytes(1000), 2);
    assert_eq!(packet::sequence_bytes(1 << 63), 8);
    assert_eq!(packet::sequence_bytes(u64::MAX), 8);
    // The standard's example: sequence 1000 -> 2 bytes E8 03.
    let b = round_trip(&Packet::Payload(b"x"), 1000);
    assert_eq!(b[0], 0x25);
    assert_eq!(&b[1..3], &[0xE8, 0x03]);
    let b = round_trip(
        &Packet::KeepAlive {
            client_index: 1,
            max_clients: 2,
        },
        0,
    );
    assert_eq!(&b[..2], &[0x14, 0x00]);
    let b = round_trip(&Packet::Disconnect, 1 << 63);
    assert_eq!(b[0], 0x86);
    assert_eq!(&b[1..9], &(1u64 << 63).to_le_bytes());
    for seq in [0u64, 1, 255, 256, 65535, 65536, 1 << 40, u64::MAX - 1] {
        let b = round_trip(&Packet::Denied, seq);
        let n = (b[0] >> 4) as usize;
        assert!((1..=8).contains(&n));
        assert_eq!(b.len(), 1 + n + 16);
    }
}

#[test]
fn prefix_and_sequence_are_authenticated() {
    let mut out = [0u8; MAX_PACKET_BYTES];
    let n = packet::encode(
        &Packet::KeepAlive {
            client_index: 1,
            max_clients: 2,
        },
        5,
        PID,
        &KEY,
        &mut out,
    )
    .expect("encodes");
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    // Retype a keep-alive as a payload (same body size is fine for payloads): AAD catches it.
    let mut b = out[..n].to_vec();
    b[0] = (b[0] & 0xF0) | PacketType::Payload as u8;
    assert_eq!(
        packet::decode(&b, PID, &KEY, &mut scratch).err(),
        Some(DropReason::DecryptFailed)
    );
    // Change the sequence (nonce).
    let mut b = out[..n].to_vec();
    b[1] ^= 1;
    assert_eq!(
        packet::decode(&b, PID, &KEY, &mut scratch).err(),
        Some(DropReason::DecryptFailed)
    );
    // Other protocol id (AAD) and other key.
    assert_eq!(
        packet::decode(&out[..n], PID + 1, &KEY, &mut scratch).err(),
        Some(DropReason::DecryptFailed)
    );
    assert_eq!(
        packet::decode(&out[..n], PID, &[8; 32], &mut scratch).err(),
        Some(DropReason::DecryptFailed)
    );
    // Tampered ciphertext and tag.
    for i in 2..n {
        let mut b = out[..n].to_vec();
        b[i] ^= 0x80;
        assert_eq!(
            packet::decode(&b, PID, &KEY, &mut scratch).err(),
            Some(DropReason::DecryptFailed)
        );
    }
}

#[test]
fn framing_rules() {
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    let dec = |b: &[u8], s: &mut [u8]| packet::decode(b, PID, &KEY, s).err();
    assert_eq!(dec(&[], &mut scratch), Some(DropReason::TooSmall));
    assert_eq!(dec(&[0x14; 17], &mut scratch), Some(DropReason::TooSmall));
    for n in [0u8, 9, 10, 15] {
        let mut b = [0u8; 40];
        b[0] = (n << 4) | 5;
        assert_eq!(
            dec(&b, &mut scratch),
            Some(DropReason::BadPrefix),
            "seq bytes {n}"
        );
    }
    for t in 7u8..16 {
        assert_eq!(
            dec(&[0x10 | t; 40], &mut scratch),
            Some(DropReason::UnknownType)
        );
    }
    // Type 0 with sequence bytes is not a request.
    assert_eq!(dec(&[0x10; 40], &mut scratch), Some(DropReason::BadPrefix));
    // 8 sequence bytes need 1 + 8 + 16 bytes at least.
    assert_eq!(dec(&[0x86; 24], &mut scratch), Some(DropReason::TooSmall));
    // Wrong body sizes.
    assert_eq!(dec(&[0x11; 19], &mut scratch), Some(DropReason::Malformed)); // denied + 1
    assert_eq!(
        dec(&[0x14; 1 + 1 + 7 + 16], &mut scratch),
        Some(DropReason::Malformed)
    );
    assert_eq!(
        dec(&[0x13; 1 + 1 + 307 + 16], &mut scratch),
        Some(DropReason::Malformed)
    );
    assert_eq!(dec(&[0x15; 18], &mut scratch), Some(DropReason::Malformed)); // empty payload
    assert_eq!(
        dec(&[0x15; 1 + 1 + 1201 + 16], &mut scratch),
        Some(DropReason::TooLarge)
    );
    assert_eq!(
        dec(&[0x15; MAX_PACKET_BYTES + 1], &mut scratch),
        Some(DropReason::TooLarge)
    );
    // Requests: exact length, version, protocol id.
    assert_eq!(
        dec(&[0u8; 1077], &mut scratch),
        Some(DropReason::BadRequest)
    );
    assert_eq!(
        dec(&[0u8; 1079], &mut scratch),
        Some(DropReason::BadRequest)
    );
    assert_eq!(
        dec(&[0u8; 1078], &mut scratch),
        Some(DropReason::BadRequest)
    );
}

#[test]
fn encode_refuses_bad_payloads_and_small_buffers() {
    let mut out = [0u8; MAX_PACKET_BYTES];
    assert!(packet::encode(&Packet::Payload(&[]), 0, PID, &KEY, &mut out).is_err());
    assert!(packet::encode(&Packet::Payload(&[0; 1201]), 0, PID, &KEY, &mut out).is_err());
    let mut small = [0u8; 20];
    assert_eq!(
        packet::encode(
            &Packet::KeepAlive {
                client_index: 0,
                max_clients: 0
            },
            0,
            PID,
            &KEY,
            &mut small
        ),
        Err(packet::EncodeError::BufferTooSmall)
    );
}
