//! The admin endpoint's request-head parser and the response-head parser used by the Agones
//! client and `tickwire healthcheck`: any bytes, never a panic.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/http.rs"]
mod http;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = http::parse_request(data) {
        assert!(!req.method.is_empty());
        assert!(!req.path.contains('?'));
    }
    let end = http::find(data, b"\r\n\r\n").unwrap_or(data.len());
    let _ = http::parse_response_head(&data[..end]);
});
