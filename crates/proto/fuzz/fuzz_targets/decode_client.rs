//! Fuzz `tickwire_proto::decode_client`: must never panic, and whatever decodes must re-encode
//! (within the payload limit) and decode back to the same message.
//!
//! Input layout: the first byte picks the game's input frame size (`1..=MAX_INPUT_BYTES`), the
//! rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_proto::{
    decode_client, encode_input, tag, ClientMessage, MAX_INPUT_BYTES, MAX_PAYLOAD_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Some((&size, payload)) = data.split_first() else {
        return;
    };
    let input_bytes = 1 + usize::from(size) % MAX_INPUT_BYTES;
    let Ok(msg) = decode_client(payload, input_bytes) else {
        return;
    };
    let mut buf = [0u8; MAX_PAYLOAD_BYTES];
    let n = match msg {
        ClientMessage::Input(inputs) => {
            let mut flat = Vec::with_capacity(inputs.len() * input_bytes);
            for (i, (seq, frame)) in inputs.frames().enumerate() {
                assert_eq!(seq, inputs.first_seq.wrapping_add(i as u32));
                assert_eq!(frame.len(), input_bytes);
                flat.extend_from_slice(frame);
            }
            encode_input(inputs.ack_tick, inputs.first_seq, input_bytes, &flat, &mut buf)
                .expect("a decoded input message re-encodes")
        }
        ClientMessage::Reliable(body) => {
            buf[0] = tag::CLIENT_RELIABLE;
            buf[1..1 + body.len()].copy_from_slice(body);
            1 + body.len()
        }
    };
    assert_eq!(decode_client(&buf[..n], input_bytes), Ok(msg));
});
