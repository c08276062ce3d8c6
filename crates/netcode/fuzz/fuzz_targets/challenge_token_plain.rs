//! Fuzz the challenge token reader behind ChaCha20-Poly1305 (`fuzzing::parse_challenge_token`:
//! what the server reads from a connection response once the token's tag verifies). The
//! fuzzer's plaintext is zero padded to 284 bytes; the parse must agree with the bytes, and the
//! sealed token must equal the canonical one (client id, user data, zero padding) exactly when
//! the padding is zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::fuzzing::{self, CHALLENGE_PLAIN_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut plain = [0u8; CHALLENGE_PLAIN_BYTES];
    let n = data.len().min(CHALLENGE_PLAIN_BYTES);
    plain[..n].copy_from_slice(&data[..n]);
    let (client_id, user_data) = fuzzing::parse_challenge_token(&plain);
    assert_eq!(client_id.to_le_bytes(), plain[..8]);
    assert_eq!(user_data[..], plain[8..264]);
    let sequence = client_id.rotate_left(7);
    let sealed = fuzzing::seal_challenge_token(&plain, sequence, &[9; 32]);
    let mut padded = [0u8; CHALLENGE_PLAIN_BYTES];
    padded[..8].copy_from_slice(&client_id.to_le_bytes());
    padded[8..264].copy_from_slice(&user_data);
    let canonical = fuzzing::seal_challenge_token(&padded, sequence, &[9; 32]);
    assert_eq!(sealed == canonical, plain[264..].iter().all(|&b| b == 0));
});
