//! Fuzz `tickwire_proto::decode_server` (and snapshot decoding): must never panic, and whatever
//! decodes must re-encode and decode back to the same message.
//!
//! Input layout: the first byte picks the welcome's field count for snapshots
//! (`0..=MAX_ENTITY_FIELDS`), the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_proto::{
    decode_server, encode_bye, encode_snapshot, encode_welcome, tag, ServerMessage,
    MAX_ENTITY_FIELDS, MAX_PAYLOAD_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Some((&fields, payload)) = data.split_first() else {
        return;
    };
    let fields = usize::from(fields) % (MAX_ENTITY_FIELDS + 1);
    let Ok(msg) = decode_server(payload) else {
        return;
    };
    let mut buf = [0u8; MAX_PAYLOAD_BYTES];
    match &msg {
        ServerMessage::Welcome(w) => {
            let n = encode_welcome(w, &mut buf).expect("a decoded welcome re-encodes");
            assert_eq!(decode_server(&buf[..n]).as_ref(), Ok(&msg));
        }
        ServerMessage::Bye { reason } => {
            let n = encode_bye(*reason, &mut buf).expect("a decoded bye re-encodes");
            assert_eq!(decode_server(&buf[..n]).as_ref(), Ok(&msg));
        }
        ServerMessage::Snapshot(bytes) => {
            let Ok(snap) = bytes.decode(fields) else {
                return;
            };
            assert_eq!(bytes.header(), Ok((snap.tick, snap.last_input_seq, snap.you)));
            assert_eq!(snap.ids.len() * fields, snap.fields.len());
            let n = encode_snapshot(&snap, &mut buf).expect("a decoded snapshot re-encodes");
            let ServerMessage::Snapshot(again) = decode_server(&buf[..n]).unwrap() else {
                panic!("re-encoded snapshot decodes as another message");
            };
            assert_eq!(again.decode(fields).as_ref(), Ok(&snap));
        }
        ServerMessage::Reliable(body) => {
            buf[0] = tag::SERVER_RELIABLE;
            buf[1..1 + body.len()].copy_from_slice(body);
            let n = 1 + body.len();
            assert_eq!(decode_server(&buf[..n]).as_ref(), Ok(&msg));
        }
    }
});
