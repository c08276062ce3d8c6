//! Connect token golden bytes (offsets per the netcode.io 1.02 layout), private part
//! encryption checked against an independent hand-built plaintext, and read errors.

use std::net::SocketAddr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use tickwire_netcode::token::CONNECT_TOKEN_NONCE_BYTES;
use tickwire_netcode::*;

const PROTOCOL_ID: u64 = 0x1122_3344_5566_7788;
const CLIENT_ID: u64 = 0x0102_0304_0506_0708;
const CREATE: u64 = 1_700_000_000;
const EXPIRE_SECS: u64 = 45;
const TIMEOUT: i32 = 15;
const PRIVATE_KEY: Key = [0x42; 32];
const C2S: Key = [0x11; 32];
const S2C: Key = [0x22; 32];

fn nonce() -> [u8; CONNECT_TOKEN_NONCE_BYTES] {
    std::array::from_fn(|i| i as u8)
}

fn user_data() -> [u8; USER_DATA_BYTES] {
    std::array::from_fn(|i| (i as u8) ^ 0x5A)
}

fn addrs() -> [SocketAddr; 2] {
    [
        "127.0.0.1:40000".parse().unwrap(),
        "[2001:db8::1]:40001".parse().unwrap(),
    ]
}

fn build(addrs: &[SocketAddr]) -> Result<[u8; CONNECT_TOKEN_BYTES], TokenError> {
    build_connect_token(
        &TokenParams {
            protocol_id: PROTOCOL_ID,
            client_id: CLIENT_ID,
            create_unix_secs: CREATE,
            expire_secs: EXPIRE_SECS,
            timeout_secs: TIMEOUT,
            server_addrs: addrs,
            user_data: user_data(),
            private_key: &PRIVATE_KEY,
        },
        nonce(),
        C2S,
        S2C,
    )
}

/// The address block exactly as the standard writes it.
fn address_bytes() -> Vec<u8> {
    let mut v = vec![1, 127, 0, 0, 1, 0x40, 0x9C]; // IPv4, 40000 = 0x9C40 LE
    v.push(2); // IPv6: eight u16 LE segments then port
    v.extend_from_slice(&[
        0x01, 0x20, 0xB8, 0x0D, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ]);
    v.extend_from_slice(&[0x41, 0x9C]);
    v
}

#[test]
fn golden_public_layout() {
    let t = build(&addrs()).expect("builds");
    assert_eq!(t.len(), 2048);
    assert_eq!(&t[0..13], b"NETCODE 1.02\0");
    assert_eq!(
        &t[13..21],
        &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
    );
    assert_eq!(&t[21..29], &CREATE.to_le_bytes());
    assert_eq!(&t[29..37], &(CREATE + EXPIRE_SECS).to_le_bytes());
    assert_eq!(&t[37..61], &nonce());
    // 61..1085 is the encrypted private part (checked below).
    assert_eq!(&t[1085..1089], &[15, 0, 0, 0]);
    assert_eq!(&t[1089..1093], &[2, 0, 0, 0]);
    let a = address_bytes();
    assert_eq!(a.len(), 7 + 19);
    assert_eq!(&t[1093..1093 + a.len()], &a[..]);
    let k = 1093 + a.len();
    assert_eq!(&t[k..k + 32], &C2S);
    assert_eq!(&t[k + 32..k + 64], &S2C);
    assert!(t[k + 64..].iter().all(|&b| b == 0), "zero padding to 2048");
}

#[test]
fn golden_private_part_matches_hand_built_encryption() {
    let t = build(&addrs()).expect("builds");
    // Plaintext per the standard: client id, timeout, addresses, keys, user data, zero pad.
    let mut plain = Vec::new();
    plain.extend_from_slice(&CLIENT_ID.to_le_bytes());
    plain.extend_from_slice(&TIMEOUT.to_le_bytes());
    plain.extend_from_slice(&2u32.to_le_bytes());
    plain.extend_from_slice(&address_bytes());
    plain.extend_from_slice(&C2S);
    plain.extend_from_slice(&S2C);
    plain.extend_from_slice(&user_data());
    plain.resize(1008, 0);
    let mut aad = Vec::new();
    aad.extend_from_slice(b"NETCODE 1.02\0");
    aad.extend_from_slice(&PROTOCOL_ID.to_le_bytes());
    aad.extend_from_slice(&(CREATE + EXPIRE_SECS).to_le_bytes());
    assert_eq!(aad.len(), 29);
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&PRIVATE_KEY));
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce()),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .expect("encrypt");
    assert_eq!(sealed.len(), 1024);
    assert_eq!(&t[61..1085], &sealed[..]);
    // Pinned bytes (regression guard): first ciphertext bytes and the tag.
    assert_eq!(hex(&t[61..69]), GOLDEN_CT_PREFIX);
    assert_eq!(hex(&t[1069..1085]), GOLDEN_TAG);
}

const GOLDEN_CT_PREFIX: &str = "84fb82e2c3a2c5c1";
const GOLDEN_TAG: &str = "f67c5fb9b633034406fae8d205ae1de4";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn read_and_decrypt_round_trip() {
    let t = build(&addrs()).expect("builds");
    let p = ConnectTokenPublic::read(&t).expect("reads");
    assert_eq!(p.protocol_id, PROTOCOL_ID);
    assert_eq!(p.create_unix_secs, CREATE);
    assert_eq!(p.expire_unix_secs, CREATE + EXPIRE_SECS);
    assert_eq!(p.nonce, nonce());
    assert_eq!(&p.private_data[..], &t[61..1085]);
    assert_eq!(p.timeout_secs, TIMEOUT);
    assert_eq!(p.server_addrs, addrs().to_vec());
    assert_eq!(p.client_to_server_key, C2S);
    assert_eq!(p.server_to_client_key, S2C);

    let private = ConnectTokenPrivate::decrypt(&p, &PRIVATE_KEY).expect("private decrypts");
    assert_eq!(private.client_id, CLIENT_ID);
    assert_eq!(private.timeout_secs, TIMEOUT);
    assert_eq!(private.server_addrs(), &addrs()[..]);
    assert_eq!(private.client_to_server_key, C2S);
    assert_eq!(private.server_to_client_key, S2C);
    assert_eq!(private.user_data, user_data());

    assert_eq!(
        ConnectTokenPrivate::decrypt(&p, &[0x43; 32]),
        Err(TokenError::DecryptFailed)
    );
    let mut tampered = p.clone();
    tampered.expire_unix_secs += 1; // AAD covers the expire timestamp
    assert_eq!(
        ConnectTokenPrivate::decrypt(&tampered, &PRIVATE_KEY),
        Err(TokenError::DecryptFailed)
    );
}

#[test]
fn negative_timeout_round_trips() {
    let a = addrs();
    let t = build_connect_token(
        &TokenParams {
            protocol_id: 1,
            client_id: 2,
            create_unix_secs: 10,
            expire_secs: 20,
            timeout_secs: -1,
            server_addrs: &a[..1],
            user_data: [0; USER_DATA_BYTES],
            private_key: &PRIVATE_KEY,
        },
        nonce(),
        C2S,
        S2C,
    )
    .expect("builds");
    assert_eq!(&t[1085..1089], &[0xFF; 4]);
    assert_eq!(
        ConnectTokenPublic::read(&t).expect("reads").timeout_secs,
        -1
    );
}

#[test]
fn thirty_two_addresses_fit_and_thirty_three_do_not() {
    let many: Vec<SocketAddr> = (0..32)
        .map(|i| format!("[2001:db8::{i}]:{}", 1000 + i).parse().unwrap())
        .collect();
    let t = build(&many).expect("32 IPv6 addresses fit");
    assert_eq!(
        ConnectTokenPublic::read(&t).expect("reads").server_addrs,
        many
    );
    let mut too_many = many.clone();
    too_many.push(addrs()[0]);
    assert_eq!(
        build(&too_many).err(),
        Some(TokenError::BadAddressCount(33))
    );
    assert_eq!(build(&[]).err(), Some(TokenError::BadAddressCount(0)));
}

#[test]
fn read_errors() {
    let t = build(&addrs()).expect("builds");
    assert_eq!(
        ConnectTokenPublic::read(&t[..2047]).err(),
        Some(TokenError::WrongLength {
            expected: 2048,
            actual: 2047
        })
    );
    let mut bad = t;
    bad[11] = b'1'; // "NETCODE 1.01"
    assert_eq!(
        ConnectTokenPublic::read(&bad).err(),
        Some(TokenError::BadVersion)
    );
    let mut bad = t;
    bad[1089..1093].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        ConnectTokenPublic::read(&bad).err(),
        Some(TokenError::BadAddressCount(0))
    );
    let mut bad = t;
    bad[1089..1093].copy_from_slice(&33u32.to_le_bytes());
    assert_eq!(
        ConnectTokenPublic::read(&bad).err(),
        Some(TokenError::BadAddressCount(33))
    );
    let mut bad = t;
    bad[1093] = 0; // netcode 1.00's IPv4 type value is not valid in 1.02
    assert_eq!(
        ConnectTokenPublic::read(&bad).err(),
        Some(TokenError::BadAddressType(0))
    );
    let mut bad = t;
    bad[21..29].copy_from_slice(&(CREATE + EXPIRE_SECS + 1).to_le_bytes());
    assert_eq!(
        ConnectTokenPublic::read(&bad).err(),
        Some(TokenError::BadTimestamps)
    );
    for e in [
        TokenError::WrongLength {
            expected: 2048,
            actual: 1,
        },
        TokenError::BadVersion,
        TokenError::BadAddressCount(0),
        TokenError::BadAddressType(9),
        TokenError::Truncated,
        TokenError::BadTimestamps,
        TokenError::DecryptFailed,
    ] {
        assert!(!e.to_string().is_empty());
        let _: &dyn std::error::Error = &e;
    }
}

#[test]
fn generated_tokens_are_random_and_valid() {
    let a = addrs();
    let params = TokenParams {
        protocol_id: PROTOCOL_ID,
        client_id: 9,
        create_unix_secs: CREATE,
        expire_secs: 30,
        timeout_secs: 5,
        server_addrs: &a,
        user_data: user_data(),
        private_key: &PRIVATE_KEY,
    };
    let t1 = generate_connect_token(&params).expect("generates");
    let t2 = generate_connect_token(&params).expect("generates");
    let p1 = ConnectTokenPublic::read(&t1).expect("reads");
    let p2 = ConnectTokenPublic::read(&t2).expect("reads");
    assert_ne!(p1.nonce, p2.nonce);
    assert_ne!(p1.client_to_server_key, p2.client_to_server_key);
    assert_ne!(p1.server_to_client_key, p1.client_to_server_key);
    let k1 = ConnectTokenPrivate::decrypt(&p1, &PRIVATE_KEY).expect("decrypts");
    assert_eq!(k1.client_id, 9);
    assert_eq!(k1.client_to_server_key, p1.client_to_server_key);
    assert_ne!(random_key(), random_key());
}

#[test]
fn expire_overflow_is_an_error() {
    let a = addrs();
    let r = generate_connect_token(&TokenParams {
        protocol_id: 1,
        client_id: 1,
        create_unix_secs: u64::MAX - 1,
        expire_secs: 2,
        timeout_secs: 5,
        server_addrs: &a,
        user_data: [0; USER_DATA_BYTES],
        private_key: &PRIVATE_KEY,
    });
    assert_eq!(r.err(), Some(TokenError::BadTimestamps));
}
