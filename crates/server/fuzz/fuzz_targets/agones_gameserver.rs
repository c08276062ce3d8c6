//! The Agones client's reader of the sidecar's `GET /gameserver` JSON: any text, never a
//! panic, and any address it returns has a non-zero port.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/agones.rs"]
mod agones;
#[allow(dead_code)]
#[path = "../../src/http.rs"]
mod http;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(addr) = agones::gameserver_address(&text, "game") {
        assert_ne!(addr.port(), 0);
    }
});
