//! Fuzz `tickwire_proto::decode_client`: must never panic, and whatever decodes must re-encode
//! (within the payload limit) and decode back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_proto::{decode_client, encode_client, MAX_PAYLOAD_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_client(data) {
        let mut buf = [0u8; MAX_PAYLOAD_BYTES];
        let n = encode_client(&msg, &mut buf).expect("a decoded message re-encodes");
        assert_eq!(decode_client(&buf[..n]).as_ref(), Ok(&msg));
    }
});
