//! Fuzz the private connect token reader behind XChaCha20-Poly1305
//! (`fuzzing::parse_private_token`: what the server parses from a connection request once the
//! tag verifies). Never a panic; whatever parses has 1..=32 addresses and, rebuilt into a
//! connect token with the real builder, reads and decrypts back to the same fields. Sealing
//! the fuzzer's plaintext as a request's private data decrypts back to the same parse too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::fuzzing::{self, PRIVATE_PLAIN_BYTES};
use tickwire_netcode::token::MAX_SERVER_ADDRESSES;
use tickwire_netcode::*;

const PID: u64 = 0x7465_7374;
const KEY: Key = [1; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = fuzzing::parse_private_token(data) else {
        return;
    };
    let n = tok.server_addrs().len();
    assert!((1..=MAX_SERVER_ADDRESSES).contains(&n));
    assert_eq!(n, tok.num_server_addrs);

    // The builder writes what the reader read.
    let params = TokenParams {
        protocol_id: PID,
        client_id: tok.client_id,
        create_unix_secs: 1000,
        expire_secs: 60,
        timeout_secs: tok.timeout_secs,
        server_addrs: tok.server_addrs(),
        user_data: tok.user_data,
        private_key: &KEY,
    };
    let bytes = build_connect_token(
        &params,
        [7; 24],
        tok.client_to_server_key,
        tok.server_to_client_key,
    )
    .expect("a parsed private token rebuilds");
    let public = ConnectTokenPublic::read(&bytes).expect("a built token reads");
    assert_eq!(public.server_addrs, tok.server_addrs());
    assert_eq!(public.timeout_secs, tok.timeout_secs);
    assert_eq!(public.client_to_server_key, tok.client_to_server_key);
    assert_eq!(public.server_to_client_key, tok.server_to_client_key);
    let again = ConnectTokenPrivate::decrypt(&public, &KEY).expect("and decrypts");
    assert_eq!(again, tok);

    // The fuzzer's own plaintext (zero padded), sealed as a request's private data.
    if data.len() <= PRIVATE_PLAIN_BYTES {
        let mut plain = [0u8; PRIVATE_PLAIN_BYTES];
        plain[..data.len()].copy_from_slice(data);
        let nonce = [3; 24];
        let mut sealed = fuzzing::seal_private_token(&plain, PID, 2000, &nonce, &KEY);
        let opened = ConnectTokenPrivate::decrypt_in_place(&mut sealed, PID, 2000, &nonce, &KEY)
            .expect("sealed plaintext opens");
        assert_eq!(opened, tok);
        let mut sealed = fuzzing::seal_private_token(&plain, PID, 2000, &nonce, &KEY);
        assert!(
            ConnectTokenPrivate::decrypt_in_place(&mut sealed, PID, 2001, &nonce, &KEY).is_err(),
            "the expire timestamp is authenticated"
        );
    }
});
