//! Fuzz `ConnectTokenPublic::read` and the private-part decrypt on whatever it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::{ConnectTokenPrivate, ConnectTokenPublic};

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = ConnectTokenPublic::read(data) {
        assert!(!token.server_addrs.is_empty() && token.server_addrs.len() <= 32);
        assert!(token.create_unix_secs <= token.expire_unix_secs);
        let _ = ConnectTokenPrivate::decrypt(&token, &[0x42; 32]);
    }
});
