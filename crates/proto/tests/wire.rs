//! Golden-byte, round-trip and hostile-input tests for the game wire format.
//!
//! The arena's inputs (3 bytes: move_x i8, move_y i8, buttons u8) and snapshots (two fields:
//! x, y) keep the bytes of protocol version 1: the goldens below are unchanged from it.

use tickwire_proto::*;

/// The arena's frame size and field count.
const ARENA_INPUT: usize = 3;
const ARENA_FIELDS: usize = 2;

fn input_bytes(ack_tick: u32, first_seq: u32, flat: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; MAX_PAYLOAD_BYTES];
    let n = encode_input(ack_tick, first_seq, ARENA_INPUT, flat, &mut buf).expect("encode");
    buf[..n].to_vec()
}

const GOLDEN_INPUT: [u8; 13] = [
    0x00, // type 0 = Input
    0xFB, 0x2C, 0x01, // ack_tick 300: marker 251 + u16 LE
    0x02, // 2 frames
    0x29, 0xFB, 0x7F, 0x01, // seq 41, move_x -5 (raw i8), move_y 127, buttons 1
    0x2A, 0x00, 0x81, 0x00, // seq 42, move_x 0, move_y -127, buttons 0
];
const GOLDEN_FRAMES: [u8; 6] = [0xFB, 0x7F, 0x01, 0x00, 0x81, 0x00];

fn golden_snapshot() -> Snapshot {
    let mut s = Snapshot {
        tick: 70_000,
        last_input_seq: 42,
        you: 3,
        fields_per_entity: ARENA_FIELDS,
        ..Snapshot::default()
    };
    s.push(3, &[1000, -1]);
    s.push(250, &[-70_000, i32::MAX]);
    s
}

const GOLDEN_SNAPSHOT: [u8; 25] = [
    0x01, // type 1 = Snapshot
    0xFC, 0x70, 0x11, 0x01, 0x00, // tick 70000: marker 252 + u32 LE
    0x2A, // last_input_seq 42
    0x03, // you 3
    0x02, // 2 entities
    0x03, 0xFB, 0xD0, 0x07, 0x01, // id 3, x 1000 (zigzag 2000), y -1 (zigzag 1)
    0xFA, // id 250 (largest single-byte value)
    0xFC, 0xDF, 0x22, 0x02, 0x00, // x -70000 (zigzag 139999)
    0xFC, 0xFE, 0xFF, 0xFF, 0xFF, // y i32::MAX (zigzag 4294967294)
];

fn golden_welcome() -> Welcome {
    Welcome {
        player_id: 7,
        tick_ms: 16,
        tick: 1234,
        protocol_version: 2,
        game: "arena".into(),
        game_version: 1,
        input_bytes: 3,
        entity_fields: 2,
    }
}

const GOLDEN_WELCOME: [u8; 16] = [
    0x00, // type 0 = Welcome
    0x07, // player_id 7
    0x10, // tick_ms 16
    0xFB, 0xD2, 0x04, // tick 1234
    0x02, // protocol_version 2
    0x05, b'a', b'r', b'e', b'n', b'a', // game "arena" (length, UTF-8)
    0x01, // game_version 1
    0x03, // input_bytes 3
    0x02, // entity_fields 2
];

fn server(bytes: &[u8]) -> ServerMessage<'_> {
    decode_server(bytes).expect("decode")
}

fn snapshot_of(bytes: &[u8], fields: usize) -> Result<Snapshot, DecodeError> {
    match decode_server(bytes)? {
        ServerMessage::Snapshot(s) => s.decode(fields),
        other => panic!("not a snapshot: {other:?}"),
    }
}

#[test]
fn golden_input_bytes() {
    assert_eq!(input_bytes(300, 41, &GOLDEN_FRAMES), GOLDEN_INPUT);
    let ClientMessage::Input(inputs) = decode_client(&GOLDEN_INPUT, ARENA_INPUT).unwrap() else {
        panic!("not an input");
    };
    assert_eq!(inputs.ack_tick, 300);
    let frames: Vec<(u32, &[u8])> = inputs.frames().collect();
    assert_eq!(
        frames,
        vec![(41, &GOLDEN_FRAMES[..3]), (42, &GOLDEN_FRAMES[3..])]
    );
}

#[test]
fn golden_snapshot_bytes() {
    let mut buf = [0u8; 64];
    let n = encode_snapshot(&golden_snapshot(), &mut buf).unwrap();
    assert_eq!(&buf[..n], &GOLDEN_SNAPSHOT);
    assert_eq!(
        snapshot_of(&GOLDEN_SNAPSHOT, ARENA_FIELDS).unwrap(),
        golden_snapshot()
    );
    let ServerMessage::Snapshot(raw) = server(&GOLDEN_SNAPSHOT) else {
        panic!()
    };
    assert_eq!(raw.header().unwrap(), (70_000, 42, 3));
}

#[test]
fn header_and_entity_writers_match_encode_snapshot() {
    let snap = golden_snapshot();
    let mut buf = [0u8; 64];
    let mut at = write_snapshot_header(&mut buf, 70_000, 42, 3, 2).unwrap();
    for (id, f) in snap.entities() {
        write_snapshot_entity(&mut buf, &mut at, id, f).unwrap();
    }
    assert_eq!(&buf[..at], &GOLDEN_SNAPSHOT);
}

#[test]
fn golden_welcome_bytes() {
    let mut buf = [0u8; 64];
    let n = encode_welcome(&golden_welcome(), &mut buf).unwrap();
    assert_eq!(&buf[..n], &GOLDEN_WELCOME);
    assert_eq!(
        server(&GOLDEN_WELCOME),
        ServerMessage::Welcome(golden_welcome())
    );
}

#[test]
fn golden_bye_bytes() {
    let cases = [
        (ByeReason::ServerShutdown, [0x02, 0x00]),
        (ByeReason::Draining, [0x02, 0x01]),
        (ByeReason::Kicked, [0x02, 0x02]),
        (ByeReason::ServerFull, [0x02, 0x03]),
    ];
    let mut buf = [0u8; 8];
    for (reason, bytes) in cases {
        let n = encode_bye(reason, &mut buf).unwrap();
        assert_eq!(&buf[..n], &bytes);
        assert_eq!(server(&bytes), ServerMessage::Bye { reason });
    }
}

#[test]
fn golden_reliable_and_empty() {
    assert_eq!(
        decode_client(&[0x01, 0xAA, 0xBB], 3).unwrap(),
        ClientMessage::Reliable(&[0xAA, 0xBB])
    );
    assert_eq!(server(&[0x03, 0xCC]), ServerMessage::Reliable(&[0xCC]));
    assert_eq!(input_bytes(0, 1, &[]), [0x00, 0x00, 0x00]);
    let mut buf = [0u8; 8];
    let empty = Snapshot {
        fields_per_entity: 2,
        ..Snapshot::default()
    };
    let n = encode_snapshot(&empty, &mut buf).unwrap();
    assert_eq!(&buf[..n], [0x01, 0x00, 0x00, 0x00, 0x00]);
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
fn max_snapshot_entities_values() {
    // 1 (type) + 3 * 5 (header varints) + 1 (count) + 78 * 15 = 1187 <= 1200; 79 -> 1202.
    assert_eq!(max_snapshot_entities(2), 78);
    assert_eq!(max_snapshot_entities(4), 47);
    assert_eq!(max_snapshot_entities(0), 236);
    for f in 0..=MAX_ENTITY_FIELDS {
        let n = max_snapshot_entities(f);
        assert!(SNAPSHOT_HEADER_MAX_BYTES + n * entity_max_bytes(f) <= MAX_PAYLOAD_BYTES);
        assert!(n >= 1);
    }
}

fn extreme_snapshot(n: usize, fields: usize, v: i32) -> Snapshot {
    let mut s = Snapshot {
        tick: u32::MAX,
        last_input_seq: u32::MAX,
        you: u32::MAX,
        fields_per_entity: fields,
        ..Snapshot::default()
    };
    for i in 0..n {
        s.push(u32::MAX - i as u32, &vec![v; fields]);
    }
    s
}

#[test]
fn worst_case_snapshot_fits_and_round_trips() {
    for fields in [0, 2, 4, MAX_ENTITY_FIELDS] {
        for v in [i32::MIN, i32::MAX] {
            let max = max_snapshot_entities(fields);
            let snap = extreme_snapshot(max, fields, v);
            let mut buf = [0u8; MAX_PAYLOAD_BYTES];
            let n = encode_snapshot(&snap, &mut buf).expect("worst case must fit");
            assert_eq!(snapshot_of(&buf[..n], fields).unwrap(), snap);
            let over = extreme_snapshot(max + 1, fields, v);
            assert_eq!(
                encode_snapshot(&over, &mut [0u8; 4096]),
                Err(EncodeError::TooManyEntities { count: max + 1 })
            );
        }
    }
}

#[test]
fn encode_refusals() {
    let mut buf = [0u8; 4096];
    let mut tiny = [0u8; 10];
    assert_eq!(
        encode_snapshot(&golden_snapshot(), &mut tiny),
        Err(EncodeError::TooLarge)
    );
    assert_eq!(
        encode_input(0, 0, 3, &[0u8; 27], &mut buf),
        Err(EncodeError::TooManyFrames { count: 9 })
    );
    assert_eq!(
        encode_input(0, 0, 3, &[0u8; 4], &mut buf),
        Err(EncodeError::BadInputSize { len: 3 })
    );
    assert_eq!(
        encode_input(0, 0, 0, &[], &mut buf),
        Err(EncodeError::BadInputSize { len: 0 })
    );
    let mut w = golden_welcome();
    w.game = "x".repeat(MAX_GAME_NAME + 1);
    assert_eq!(encode_welcome(&w, &mut buf), Err(EncodeError::BadWelcome));
    let mut w = golden_welcome();
    w.entity_fields = MAX_ENTITY_FIELDS as u8 + 1;
    assert_eq!(encode_welcome(&w, &mut buf), Err(EncodeError::BadWelcome));
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

/// The hand-written varints are bincode 2's `standard()` encodings.
#[test]
fn hand_codec_matches_bincode() {
    let cfg = bincode::config::standard();
    let mut rng = Rng(5);
    let check_u32 = |v: u32| {
        let mut a = [0u8; 8];
        let mut at = 0;
        varint::put_u32(&mut a, &mut at, v).unwrap();
        let b = bincode::encode_to_vec(v, cfg).unwrap();
        assert_eq!(&a[..at], &b[..], "u32 {v}");
        assert_eq!(varint::Reader::new(&b).u32().unwrap(), v);
    };
    for v in [0, 1, 250, 251, 252, 65535, 65536, u32::MAX] {
        check_u32(v);
    }
    for _ in 0..5000 {
        let shift = rng.next() % 32;
        check_u32((rng.next() as u32) >> shift);
    }
    for _ in 0..5000 {
        let shift = rng.next() % 32;
        let v = (rng.next() as i32) >> shift;
        let mut a = [0u8; 8];
        let mut at = 0;
        varint::put_i32(&mut a, &mut at, v).unwrap();
        let b = bincode::encode_to_vec(v, cfg).unwrap();
        assert_eq!(&a[..at], &b[..], "i32 {v}");
        assert_eq!(varint::Reader::new(&b).i32().unwrap(), v);
    }
}

#[test]
fn round_trip_random_messages() {
    let mut rng = Rng(7);
    let mut buf = [0u8; MAX_PAYLOAD_BYTES];
    for _ in 0..2000 {
        let size = 1 + (rng.next() % MAX_INPUT_BYTES as u64) as usize;
        let nframes = (rng.next() % (MAX_INPUT_FRAMES as u64 + 1)) as usize;
        let flat: Vec<u8> = (0..nframes * size).map(|_| rng.next() as u8).collect();
        let (ack, first) = (rng.next() as u32, rng.next() as u32);
        let n = encode_input(ack, first, size, &flat, &mut buf).unwrap();
        let ClientMessage::Input(inputs) = decode_client(&buf[..n], size).unwrap() else {
            panic!()
        };
        assert_eq!((inputs.ack_tick, inputs.len()), (ack, nframes));
        let got: Vec<u8> = inputs.frames().flat_map(|(_, f)| f.to_vec()).collect();
        assert_eq!(got, flat);
        for (i, (seq, _)) in inputs.frames().enumerate() {
            assert_eq!(seq, first.wrapping_add(i as u32));
        }

        let fields = (rng.next() % (MAX_ENTITY_FIELDS as u64 + 1)) as usize;
        let nent = (rng.next() % (max_snapshot_entities(fields) as u64 + 1)) as usize;
        let mut snap = Snapshot {
            tick: rng.next() as u32,
            last_input_seq: rng.next() as u32,
            you: rng.next() as u32,
            fields_per_entity: fields,
            ..Snapshot::default()
        };
        for _ in 0..nent {
            let f: Vec<i32> = (0..fields).map(|_| rng.next() as i32).collect();
            snap.push(rng.next() as u32, &f);
        }
        let n = encode_snapshot(&snap, &mut buf).unwrap();
        assert_eq!(snapshot_of(&buf[..n], fields).unwrap(), snap);

        let w = Welcome {
            player_id: rng.next() as u32,
            tick_ms: rng.next() as u16,
            tick: rng.next() as u32,
            protocol_version: rng.next() as u16,
            game: "g".repeat((rng.next() % 33) as usize),
            game_version: rng.next() as u16,
            input_bytes: 1 + (rng.next() % 32) as u8,
            entity_fields: (rng.next() % 17) as u8,
        };
        let n = encode_welcome(&w, &mut buf).unwrap();
        assert_eq!(server(&buf[..n]), ServerMessage::Welcome(w));
    }
}

#[test]
fn seq_wraps_consecutively() {
    let bytes = input_bytes(1, u32::MAX, &[0; 6]);
    let ClientMessage::Input(inputs) = decode_client(&bytes, 3).unwrap() else {
        panic!()
    };
    let seqs: Vec<u32> = inputs.frames().map(|(s, _)| s).collect();
    assert_eq!(seqs, vec![u32::MAX, 0]);
}

#[test]
fn hostile_truncated() {
    assert_eq!(decode_client(&[], 3), Err(DecodeError::Truncated));
    assert_eq!(decode_server(&[]), Err(DecodeError::Truncated));
    for len in 1..GOLDEN_INPUT.len() {
        assert_eq!(
            decode_client(&GOLDEN_INPUT[..len], 3),
            Err(DecodeError::Truncated),
            "len {len}"
        );
    }
    for len in 1..GOLDEN_SNAPSHOT.len() {
        assert_eq!(
            snapshot_of(&GOLDEN_SNAPSHOT[..len], 2),
            Err(DecodeError::Truncated),
            "len {len}"
        );
    }
    for len in 1..GOLDEN_WELCOME.len() {
        assert!(decode_server(&GOLDEN_WELCOME[..len]).is_err());
    }
}

#[test]
fn hostile_wrong_sizes() {
    // The golden input read with another game's frame size.
    assert!(decode_client(&GOLDEN_INPUT, 2).is_err());
    assert!(decode_client(&GOLDEN_INPUT, 4).is_err());
    // The golden snapshot read with another field count.
    assert!(snapshot_of(&GOLDEN_SNAPSHOT, 3).is_err());
    assert_eq!(
        snapshot_of(&GOLDEN_SNAPSHOT, MAX_ENTITY_FIELDS + 1),
        Err(DecodeError::Malformed)
    );
    // A welcome out of bounds (input_bytes 0).
    let mut w = GOLDEN_WELCOME;
    w[14] = 0;
    assert_eq!(decode_server(&w), Err(DecodeError::Malformed));
}

#[test]
fn hostile_trailing_bytes() {
    let mut bytes = GOLDEN_INPUT.to_vec();
    bytes.push(0);
    assert_eq!(
        decode_client(&bytes, 3),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
    let mut bytes = GOLDEN_SNAPSHOT.to_vec();
    bytes.extend_from_slice(&[0xDE, 0xAD, 0xBE]);
    assert_eq!(
        snapshot_of(&bytes, 2),
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
        decode_client(&bytes, 3),
        Err(DecodeError::TooLong {
            len: MAX_PAYLOAD_BYTES + 1
        })
    );
    assert!(decode_server(&bytes).is_err());
}

#[test]
fn hostile_huge_counts() {
    // Input with a frame count of u64::MAX (marker 253 + u64 LE).
    let mut bytes = vec![0x00, 0x00, 0xFD];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(decode_client(&bytes, 3), Err(DecodeError::TooManyFrames));
    // Snapshot with an entity count of 2^32 - 1 (marker 252 + u32 LE).
    let mut bytes = vec![0x01, 0x00, 0x00, 0x00, 0xFC];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 30]);
    assert_eq!(snapshot_of(&bytes, 2), Err(DecodeError::TooManyEntities));
    // One entity over the bound, even with the data present, is refused.
    let mut bytes = vec![0x01, 0x00, 0x00, 0x00, 79];
    bytes.extend(std::iter::repeat_n(0u8, 3 * 79));
    assert_eq!(snapshot_of(&bytes, 2), Err(DecodeError::TooManyEntities));
}

#[test]
fn hostile_too_many_frames() {
    let mut bytes = vec![0x00, 0x05, 0x09];
    for seq in 0..9u8 {
        bytes.extend_from_slice(&[seq, 0, 0, 0]);
    }
    assert_eq!(decode_client(&bytes, 3), Err(DecodeError::TooManyFrames));
}

#[test]
fn hostile_non_consecutive_frames() {
    let mut bytes = GOLDEN_INPUT;
    bytes[9] = 0x2B; // second seq 43 instead of 42
    assert_eq!(
        decode_client(&bytes, 3),
        Err(DecodeError::NonConsecutiveFrames)
    );
    let mut bytes = GOLDEN_INPUT;
    bytes[9] = 0x29; // duplicate seq
    assert_eq!(
        decode_client(&bytes, 3),
        Err(DecodeError::NonConsecutiveFrames)
    );
}

#[test]
fn hostile_unknown_type() {
    assert_eq!(
        decode_client(&[0x02, 0x00, 0x00], 3),
        Err(DecodeError::UnknownMessage { tag: 2 })
    );
    assert_eq!(
        decode_server(&[0x04, 0x00]),
        Err(DecodeError::UnknownMessage { tag: 4 })
    );
    assert_eq!(
        decode_server(&[0xFB, 0x00, 0x00, 0x00]),
        Err(DecodeError::UnknownMessage { tag: 0xFB })
    );
    // Unknown ByeReason.
    assert_eq!(decode_server(&[0x02, 0x04]), Err(DecodeError::Malformed));
    // Invalid varint marker (255 is reserved).
    assert!(decode_server(&[0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert_eq!(snapshot_of(&[0x01, 0xFF], 2), Err(DecodeError::Malformed));
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(99);
    let mut buf = vec![0u8; MAX_PAYLOAD_BYTES + 8];
    let seeds: [&[u8]; 3] = [&GOLDEN_INPUT, &GOLDEN_SNAPSHOT, &GOLDEN_WELCOME];
    let mut snap = Snapshot::default();
    let mut try_all = |bytes: &[u8], rng: &mut Rng| {
        let size = 1 + (rng.next() % 32) as usize;
        let _ = decode_client(bytes, size);
        if let Ok(ServerMessage::Snapshot(s)) = decode_server(bytes) {
            let _ = s.decode_into((rng.next() % 18) as usize, &mut snap);
        }
    };
    for i in 0..20_000 {
        let len = (rng.next() % buf.len() as u64) as usize;
        if i % 2 == 0 {
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            try_all(&buf[..len], &mut rng);
        } else {
            let seed = seeds[i % 3];
            let len = seed.len();
            buf[..len].copy_from_slice(seed);
            for _ in 0..1 + rng.next() % 3 {
                let at = (rng.next() % len as u64) as usize;
                buf[at] = rng.next() as u8;
            }
            try_all(&buf[..len], &mut rng);
        }
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
