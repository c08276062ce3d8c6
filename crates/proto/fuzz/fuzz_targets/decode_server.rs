//! Fuzz `tickwire_proto::decode_server`: must never panic, and whatever decodes must re-encode
//! and decode back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_proto::{decode_server, encode_server, MAX_PAYLOAD_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_server(data) {
        let mut buf = [0u8; MAX_PAYLOAD_BYTES];
        let n = encode_server(&msg, &mut buf).expect("a decoded message re-encodes");
        assert_eq!(decode_server(&buf[..n]).as_ref(), Ok(&msg));
    }
});
