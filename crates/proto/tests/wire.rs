//! Golden-byte, round-trip and hostile-input tests for the game wire format.

use tickwire_proto::*;

fn enc_client(msg: &ClientMessage) -> Vec<u8> {
    let mut buf = [0u8; MAX_PAYLOAD_BYTES];
    let n = encode_client(msg, &mut buf).expect("encode");
    buf[..n].to_vec()
}

fn enc_server(msg: &ServerMessage) -> Vec<u8> {
    let mut buf = [0u8; MAX_PAYLOAD_BYTES];
    let n = encode_server(msg, &mut buf).expect("encode");
    buf[..n].to_vec()
}

fn golden_input() -> ClientMessage {
    ClientMessage::Input {
        ack_tick: 300,
        frames: vec![
            InputFrame {
                seq: 41,
                move_x: -5,
                move_y: 127,
                buttons: BUTTON_BOOST,
            },
            InputFrame {
                seq: 42,
                move_x: 0,
                move_y: -127,
                buttons: 0,
            },
        ],
    }
}

const GOLDEN_INPUT: [u8; 13] = [
    0x00, // variant 0 = Input
    0xFB, 0x2C, 0x01, // ack_tick 300: marker 251 + u16 LE
    0x02, // 2 frames
    0x29, 0xFB, 0x7F, 0x01, // seq 41, move_x -5 (raw i8), move_y 127, buttons 1
    0x2A, 0x00, 0x81, 0x00, // seq 42, move_x 0, move_y -127, buttons 0
];

fn golden_snapshot() -> Snapshot {
    Snapshot {
        tick: 70_000,
        last_input_seq: 42,
        you: 3,
        entities: vec![
            EntityState {
                id: 3,
                x: 1000,
                y: -1,
            },
            EntityState {
                id: 250,
                x: -70_000,
                y: i32::MAX,
            },
        ],
    }
}

const GOLDEN_SNAPSHOT: [u8; 25] = [
    0x01, // variant 1 = Snapshot
    0xFC, 0x70, 0x11, 0x01, 0x00, // tick 70000: marker 252 + u32 LE
    0x2A, // last_input_seq 42
    0x03, // you 3
    0x02, // 2 entities
    0x03, 0xFB, 0xD0, 0x07, 0x01, // id 3, x 1000 (zigzag 2000), y -1 (zigzag 1)
    0xFA, // id 250 (largest single-byte value)
    0xFC, 0xDF, 0x22, 0x02, 0x00, // x -70000 (zigzag 139999)
    0xFC, 0xFE, 0xFF, 0xFF, 0xFF, // y i32::MAX (zigzag 4294967294)
];

fn golden_welcome() -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        player_id: 7,
        tick_ms: 16,
        tick: 1234,
        arena_width: 271_530,
        arena_height: 271_530,
    })
}

const GOLDEN_WELCOME: [u8; 16] = [
    0x00, // variant 0 = Welcome
    0x07, // player_id 7
    0x10, // tick_ms 16
    0xFB, 0xD2, 0x04, // tick 1234
    0xFC, 0x54, 0x49, 0x08, 0x00, // arena_width 271530 (zigzag 543060)
    0xFC, 0x54, 0x49, 0x08, 0x00, // arena_height
];

#[test]
fn golden_input_bytes() {
    assert_eq!(enc_client(&golden_input()), GOLDEN_INPUT);
    assert_eq!(decode_client(&GOLDEN_INPUT).unwrap(), golden_input());
}

#[test]
fn golden_snapshot_bytes() {
    let msg = ServerMessage::Snapshot(golden_snapshot());
    assert_eq!(enc_server(&msg), GOLDEN_SNAPSHOT);
    let mut buf = [0u8; 64];
    let n = encode_snapshot(&golden_snapshot(), &mut buf).unwrap();
    assert_eq!(&buf[..n], &GOLDEN_SNAPSHOT);
    assert_eq!(decode_server(&GOLDEN_SNAPSHOT).unwrap(), msg);
}

#[test]
fn golden_welcome_bytes() {
    assert_eq!(enc_server(&golden_welcome()), GOLDEN_WELCOME);
    assert_eq!(decode_server(&GOLDEN_WELCOME).unwrap(), golden_welcome());
}

#[test]
fn golden_bye_bytes() {
    let cases = [
        (ByeReason::ServerShutdown, [0x02, 0x00]),
        (ByeReason::Draining, [0x02, 0x01]),
        (ByeReason::Kicked, [0x02, 0x02]),
        (ByeReason::ServerFull, [0x02, 0x03]),
    ];
    for (reason, bytes) in cases {
        let msg = ServerMessage::Bye { reason };
        assert_eq!(enc_server(&msg), bytes);
        assert_eq!(decode_server(&bytes).unwrap(), msg);
    }
}

#[test]
fn golden_empty_input_and_snapshot() {
    let ack = ClientMessage::Input {
        ack_tick: 0,
        frames: vec![],
    };
    assert_eq!(enc_client(&ack), [0x00, 0x00, 0x00]);
    let snap = ServerMessage::Snapshot(Snapshot::default());
    assert_eq!(enc_server(&snap), [0x01, 0x00, 0x00, 0x00, 0x00]);
}

#[test]
fn bye_reason_names() {
    assert_eq!(ByeReason::ServerShutdown.as_str(), "server_shutdown");
    assert_eq!(ByeReason::Draining.as_str(), "draining");
    assert_eq!(ByeReason::Kicked.as_str(), "kicked");
    assert_eq!(ByeReason::ServerFull.as_str(), "server_full");
    assert_eq!(ByeReason::Kicked.to_string(), "kicked");
}

#[test]
fn max_snapshot_entities_value() {
    // 1 (variant) + 3 * 5 (header varints) + 1 (count) + 78 * 15 = 1187 <= 1200; 79 -> 1202.
    assert_eq!(MAX_SNAPSHOT_ENTITIES, 78);
    assert!(snapshot_max_encoded_bytes(MAX_SNAPSHOT_ENTITIES) <= MAX_PAYLOAD_BYTES);
    assert!(snapshot_max_encoded_bytes(MAX_SNAPSHOT_ENTITIES + 1) > MAX_PAYLOAD_BYTES);
}

fn extreme_snapshot(n: usize, x: i32) -> Snapshot {
    Snapshot {
        tick: u32::MAX,
        last_input_seq: u32::MAX,
        you: u32::MAX,
        entities: (0..n)
            .map(|i| EntityState {
                id: u32::MAX - i as u32,
                x,
                y: x,
            })
            .collect(),
    }
}

#[test]
fn worst_case_snapshot_fits_and_round_trips() {
    // i32::MIN and i32::MAX both zigzag to 5-byte varints; u32::MAX is 5 bytes too.
    for x in [i32::MIN, i32::MAX] {
        let snap = extreme_snapshot(MAX_SNAPSHOT_ENTITIES, x);
        let mut buf = [0u8; MAX_PAYLOAD_BYTES];
        let n = encode_snapshot(&snap, &mut buf).expect("worst case must fit");
        assert_eq!(n, snapshot_max_encoded_bytes(MAX_SNAPSHOT_ENTITIES));
        assert_eq!(
            decode_server(&buf[..n]).unwrap(),
            ServerMessage::Snapshot(snap)
        );
    }
    // Smallest-value entities decode too (the decode limit counts memory, not wire bytes).
    let small = Snapshot {
        entities: vec![EntityState { id: 0, x: 0, y: 0 }; MAX_SNAPSHOT_ENTITIES],
        ..Snapshot::default()
    };
    let bytes = enc_server(&ServerMessage::Snapshot(small.clone()));
    assert_eq!(
        decode_server(&bytes).unwrap(),
        ServerMessage::Snapshot(small)
    );
}

#[test]
fn encode_refusals() {
    let snap = extreme_snapshot(MAX_SNAPSHOT_ENTITIES + 1, 0);
    let mut buf = [0u8; 4096];
    assert_eq!(
        encode_snapshot(&snap, &mut buf),
        Err(EncodeError::TooManyEntities {
            count: MAX_SNAPSHOT_ENTITIES + 1
        })
    );
    // A buffer that is too small.
    let mut tiny = [0u8; 10];
    assert_eq!(
        encode_server(&ServerMessage::Snapshot(golden_snapshot()), &mut tiny),
        Err(EncodeError::TooLarge)
    );
    let frames: Vec<InputFrame> = (0..9)
        .map(|seq| InputFrame {
            seq,
            ..InputFrame::default()
        })
        .collect();
    assert_eq!(
        encode_client(
            &ClientMessage::Input {
                ack_tick: 0,
                frames
            },
            &mut buf
        ),
        Err(EncodeError::TooManyFrames { count: 9 })
    );
    let gap = vec![
        InputFrame {
            seq: 1,
            ..InputFrame::default()
        },
        InputFrame {
            seq: 3,
            ..InputFrame::default()
        },
    ];
    assert_eq!(
        encode_client(
            &ClientMessage::Input {
                ack_tick: 0,
                frames: gap
            },
            &mut buf
        ),
        Err(EncodeError::NonConsecutiveFrames)
    );
}

#[test]
fn encode_snapshot_matches_encode_server() {
    let snap = extreme_snapshot(40, -123_456);
    let mut a = [0u8; MAX_PAYLOAD_BYTES];
    let mut b = [0u8; MAX_PAYLOAD_BYTES];
    let na = encode_snapshot(&snap, &mut a).unwrap();
    let nb = encode_server(&ServerMessage::Snapshot(snap.clone()), &mut b).unwrap();
    assert_eq!(a[..na], b[..nb]);
}

/// splitmix64, for deterministic pseudo-random test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn round_trip_random_messages() {
    let mut rng = Rng(7);
    let mut buf = [0u8; MAX_PAYLOAD_BYTES];
    for _ in 0..2000 {
        let nframes = (rng.next() % (MAX_INPUT_FRAMES as u64 + 1)) as usize;
        let first = rng.next() as u32;
        let frames = (0..nframes)
            .map(|i| {
                let r = rng.next();
                InputFrame {
                    seq: first.wrapping_add(i as u32),
                    move_x: r as i8,
                    move_y: (r >> 8) as i8,
                    buttons: (r >> 16) as u8,
                }
            })
            .collect();
        let msg = ClientMessage::Input {
            ack_tick: rng.next() as u32,
            frames,
        };
        let n = encode_client(&msg, &mut buf).unwrap();
        assert_eq!(decode_client(&buf[..n]).unwrap(), msg);

        let nent = (rng.next() % (MAX_SNAPSHOT_ENTITIES as u64 + 1)) as usize;
        let snap = Snapshot {
            tick: rng.next() as u32,
            last_input_seq: rng.next() as u32,
            you: rng.next() as u32,
            entities: (0..nent)
                .map(|_| EntityState {
                    id: rng.next() as u32,
                    x: rng.next() as i32,
                    y: rng.next() as i32,
                })
                .collect(),
        };
        let msg = ServerMessage::Snapshot(snap);
        let n = encode_server(&msg, &mut buf).unwrap();
        assert_eq!(decode_server(&buf[..n]).unwrap(), msg);

        let msg = ServerMessage::Welcome(Welcome {
            player_id: rng.next() as u32,
            tick_ms: rng.next() as u16,
            tick: rng.next() as u32,
            arena_width: rng.next() as i32,
            arena_height: rng.next() as i32,
        });
        let n = encode_server(&msg, &mut buf).unwrap();
        assert_eq!(decode_server(&buf[..n]).unwrap(), msg);
    }
}

#[test]
fn seq_wraps_consecutively() {
    let msg = ClientMessage::Input {
        ack_tick: 1,
        frames: vec![
            InputFrame {
                seq: u32::MAX,
                ..InputFrame::default()
            },
            InputFrame {
                seq: 0,
                ..InputFrame::default()
            },
        ],
    };
    let bytes = enc_client(&msg);
    assert_eq!(decode_client(&bytes).unwrap(), msg);
}

#[test]
fn hostile_truncated() {
    assert_eq!(decode_client(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode_server(&[]), Err(DecodeError::Truncated));
    for len in 1..GOLDEN_INPUT.len() {
        assert_eq!(
            decode_client(&GOLDEN_INPUT[..len]),
            Err(DecodeError::Truncated),
            "len {len}"
        );
    }
    for len in 1..GOLDEN_SNAPSHOT.len() {
        assert_eq!(
            decode_server(&GOLDEN_SNAPSHOT[..len]),
            Err(DecodeError::Truncated),
            "len {len}"
        );
    }
    for len in 1..GOLDEN_WELCOME.len() {
        assert!(decode_server(&GOLDEN_WELCOME[..len]).is_err());
    }
}

#[test]
fn hostile_trailing_bytes() {
    let mut bytes = GOLDEN_INPUT.to_vec();
    bytes.push(0);
    assert_eq!(
        decode_client(&bytes),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
    let mut bytes = GOLDEN_SNAPSHOT.to_vec();
    bytes.extend_from_slice(&[0xDE, 0xAD, 0xBE]);
    assert_eq!(
        decode_server(&bytes),
        Err(DecodeError::TrailingBytes { extra: 3 })
    );
    assert_eq!(
        decode_server(&[0x02, 0x01, 0x00]),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn hostile_too_long() {
    let bytes = vec![0u8; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(
        decode_client(&bytes),
        Err(DecodeError::TooLong {
            len: MAX_PAYLOAD_BYTES + 1
        })
    );
    assert!(decode_server(&bytes).is_err());
}

#[test]
fn hostile_huge_vec_length() {
    // Input with a frame count of u64::MAX (marker 253 + u64 LE).
    let mut bytes = vec![0x00, 0x00, 0xFD];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(decode_client(&bytes), Err(DecodeError::TooManyFrames));
    // Snapshot with an entity count of 2^32 - 1 (marker 252 + u32 LE).
    let mut bytes = vec![0x01, 0x00, 0x00, 0x00, 0xFC];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 30]);
    assert_eq!(decode_server(&bytes), Err(DecodeError::TooManyEntities));
    // One entity over the bound, even with the data present, is refused.
    let mut bytes = vec![0x01, 0x00, 0x00, 0x00, MAX_SNAPSHOT_ENTITIES as u8 + 1];
    bytes.extend(std::iter::repeat_n(0u8, 3 * (MAX_SNAPSHOT_ENTITIES + 1)));
    assert_eq!(decode_server(&bytes), Err(DecodeError::TooManyEntities));
}

#[test]
fn hostile_too_many_frames() {
    // 9 consecutive frames, correctly encoded.
    let mut bytes = vec![0x00, 0x05, 0x09];
    for seq in 0..9u8 {
        bytes.extend_from_slice(&[seq, 0, 0, 0]);
    }
    assert_eq!(decode_client(&bytes), Err(DecodeError::TooManyFrames));
}

#[test]
fn hostile_non_consecutive_frames() {
    let mut bytes = GOLDEN_INPUT;
    bytes[9] = 0x2B; // second seq 43 instead of 42
    assert_eq!(
        decode_client(&bytes),
        Err(DecodeError::NonConsecutiveFrames)
    );
    let mut bytes = GOLDEN_INPUT;
    bytes[9] = 0x29; // duplicate seq
    assert_eq!(
        decode_client(&bytes),
        Err(DecodeError::NonConsecutiveFrames)
    );
}

#[test]
fn hostile_unknown_variant() {
    assert_eq!(
        decode_client(&[0x01, 0x00, 0x00]),
        Err(DecodeError::UnknownMessage { tag: 1 })
    );
    assert_eq!(
        decode_server(&[0x03, 0x00]),
        Err(DecodeError::UnknownMessage { tag: 3 })
    );
    // Non-canonical top-level index (251 + u16 0) is refused.
    assert_eq!(
        decode_server(&[0xFB, 0x00, 0x00, 0x00]),
        Err(DecodeError::UnknownMessage { tag: 0xFB })
    );
    // Unknown ByeReason.
    assert_eq!(decode_server(&[0x02, 0x04]), Err(DecodeError::Malformed));
    // Invalid varint marker (255 is reserved).
    assert!(decode_server(&[0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(99);
    let mut buf = vec![0u8; MAX_PAYLOAD_BYTES + 8];
    let seeds: [&[u8]; 3] = [&GOLDEN_INPUT, &GOLDEN_SNAPSHOT, &GOLDEN_WELCOME];
    for i in 0..20_000 {
        let len = (rng.next() % buf.len() as u64) as usize;
        if i % 2 == 0 {
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
        } else {
            // Mutate a valid message: better coverage of deep paths.
            let seed = seeds[i % 3];
            let len = seed.len();
            buf[..len].copy_from_slice(seed);
            let flips = 1 + rng.next() % 3;
            for _ in 0..flips {
                let at = (rng.next() % len as u64) as usize;
                buf[at] = rng.next() as u8;
            }
            let _ = decode_client(&buf[..len]);
            let _ = decode_server(&buf[..len]);
            continue;
        }
        let _ = decode_client(&buf[..len]);
        let _ = decode_server(&buf[..len]);
    }
}

#[test]
fn errors_display() {
    assert_eq!(DecodeError::Truncated.to_string(), "message truncated");
    assert_eq!(DecodeError::TooManyFrames.as_str(), "too_many_frames");
    assert!(EncodeError::TooLarge.to_string().contains("1200"));
    let e: &dyn std::error::Error = &DecodeError::Malformed;
    assert_eq!(e.to_string(), "malformed message");
}
