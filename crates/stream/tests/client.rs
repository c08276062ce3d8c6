//! ClientConn and the upgrade request: against hand-written server bytes and against
//! StreamConn.

mod common;

use common::*;
use tickwire_stream::{
    random_ws_key, ws_client_request, ClientConn, FrameError, Limits, StreamConn, Transport,
    Violation,
};

fn ws_client() -> ClientConn {
    let mut n = 0u8;
    ClientConn::websocket(RFC_KEY_BYTES, Limits::default()).with_mask_source(move || {
        n = n.wrapping_add(1);
        [n, 0x11, 0x22, 0x33]
    })
}

/// A client that has read a 101.
fn upgraded() -> ClientConn {
    let mut c = ws_client();
    let mut out = Out::default();
    client_feed(&mut c, &response_101(true), &mut out).unwrap();
    assert!(c.is_established());
    c
}

#[test]
fn request_bytes() {
    let req = ws_client_request("127.0.0.1:7777", "/", RFC_KEY_BYTES);
    assert_eq!(
        std::str::from_utf8(&req).unwrap(),
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:7777\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: tickwire.netcode\r\n\r\n"
    );
    // No header injection, and an empty path is `/`.
    let req = ws_client_request("a\r\nX-Evil: 1", "", RFC_KEY_BYTES);
    let text = std::str::from_utf8(&req).unwrap();
    assert!(
        text.starts_with("GET / HTTP/1.1\r\nHost: aX-Evil:1\r\n"),
        "{text}"
    );
}

#[test]
fn random_keys_differ() {
    let a = random_ws_key().unwrap();
    let b = random_ws_key().unwrap();
    assert_ne!(a, b);
}

#[test]
fn client_and_server_handshake_and_exchange_packets() {
    let key = random_ws_key().unwrap();
    let mut client = ClientConn::websocket(key, Limits::default());
    let mut server = StreamConn::new(Limits::default());
    assert_eq!(client.transport(), Transport::WebSocket);
    assert!(!client.is_established());
    assert_eq!(
        client.encode(b"early", &mut Vec::new()),
        Err(FrameError::NotEstablished)
    );

    let mut s = Out::default();
    feed(
        &mut server,
        &ws_client_request("[::1]:7777", "/", key),
        &mut s,
    )
    .unwrap();
    assert!(server.is_established());
    // The 101 and the server's first packet in one chunk.
    server.encode(b"from server", &mut s.reply).unwrap();
    let mut c = Out::default();
    client_feed(&mut client, &s.reply, &mut c).unwrap();
    assert!(client.is_established());
    assert_eq!(client.http_status(), Some(101));
    assert_eq!(c.packets, vec![b"from server".to_vec()]);

    // Client packets are masked with fresh OS keys; the server reads them.
    let mut wire = Vec::new();
    for i in 0..50u8 {
        client
            .encode(&vec![i; usize::from(i) * 20], &mut wire)
            .unwrap();
    }
    let mut s = Out::default();
    for chunk in wire.chunks(7) {
        feed(&mut server, chunk, &mut s).unwrap();
    }
    let want: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; usize::from(i) * 20]).collect();
    assert_eq!(s.packets, want);
    assert!(s.reply.is_empty());
}

#[test]
fn tcp_client_and_server_exchange_packets() {
    let mut client = ClientConn::tcp(Limits::default());
    assert!(client.is_established());
    assert_eq!(client.transport(), Transport::Tcp);
    let mut server = StreamConn::new(Limits::default());
    let mut wire = Vec::new();
    client.encode(b"request", &mut wire).unwrap();
    assert_eq!(wire, tcp(b"request"));
    let mut s = Out::default();
    feed(&mut server, &wire, &mut s).unwrap();
    assert_eq!(s.packets, vec![b"request".to_vec()]);
    assert_eq!(server.transport(), Some(Transport::Tcp));

    let mut back = Vec::new();
    for p in [&b"a"[..], b"", &[7u8; 1400]] {
        server.encode(p, &mut back).unwrap();
    }
    let mut c = Out::default();
    for b in &back {
        client_feed(&mut client, std::slice::from_ref(b), &mut c).unwrap();
    }
    assert_eq!(c.packets, vec![b"a".to_vec(), vec![], vec![7u8; 1400]]);
    assert_eq!(
        client_feed(&mut client, &[0x79, 0x05], &mut c),
        Err(Violation::OversizedFrame)
    );
}

#[test]
fn response_byte_at_a_time_then_frames() {
    let mut data = response_101(false);
    data.extend(frame(0x82, b"one", None));
    data.extend(frame(0x02, b"tw", None));
    data.extend(frame(0x89, b"hb", None));
    data.extend(frame(0x80, b"o", None));
    let mut c = ws_client();
    let mut out = Out::default();
    for b in &data {
        client_feed(&mut c, std::slice::from_ref(b), &mut out).unwrap();
    }
    assert_eq!(out.packets, vec![b"one".to_vec(), b"two".to_vec()]);
    // The pong is masked (with the test's key source).
    assert_eq!(unmask_short(&out.reply), (0x8a, b"hb".to_vec()));
    assert_eq!(&out.reply[2..6], &[1, 0x11, 0x22, 0x33]);
}

#[test]
fn refused_upgrades() {
    let good = String::from_utf8(response_101(true)).unwrap();
    let cases = [
        (
            good.replace(RFC_ACCEPT, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo"),
            Some(101),
        ),
        (good.replace("Sec-WebSocket-Accept", "X-Accept"), Some(101)),
        (good.replace("Upgrade: websocket\r\n", ""), Some(101)),
        (
            good.replace("Connection: Upgrade", "Connection: close"),
            Some(101),
        ),
        (good.replace("tickwire.netcode", "chat"), Some(101)),
        (
            good.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            ),
            Some(101),
        ),
        (
            "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string(),
            Some(426),
        ),
        ("HTTP/1.1 400 Bad Request\r\n\r\n".to_string(), Some(400)),
        ("SSH-2.0-OpenSSH\r\n\r\n".to_string(), None),
    ];
    for (resp, status) in cases {
        let mut c = ws_client();
        let mut out = Out::default();
        assert_eq!(
            client_feed(&mut c, resp.as_bytes(), &mut out),
            Err(Violation::BadHandshake),
            "{resp:?}"
        );
        assert_eq!(c.http_status(), status, "{resp:?}");
        assert!(!c.is_established());
        assert!(out.reply.is_empty());
        assert_eq!(c.encode(b"x", &mut Vec::new()), Err(FrameError::Closed));
    }
}

#[test]
fn response_head_over_max_handshake() {
    let mut c = ws_client();
    let mut out = Out::default();
    let junk = vec![b'x'; 5000];
    assert_eq!(
        client_feed(&mut c, &junk, &mut out),
        Err(Violation::HandshakeTooLarge)
    );
}

#[test]
fn masked_server_frames_are_refused() {
    let mut c = upgraded();
    let mut out = Out::default();
    assert_eq!(
        client_feed(&mut c, &frame(0x82, b"x", Some(MASK)), &mut out),
        Err(Violation::MaskedFrame)
    );
    assert_eq!(unmask_short(&out.reply), (0x88, vec![0x03, 0xea]));
}

#[test]
fn server_close_is_echoed_masked() {
    let mut c = upgraded();
    let mut out = Out::default();
    client_feed(&mut c, &frame(0x82, b"bye", None), &mut out).unwrap();
    assert_eq!(
        client_feed(&mut c, &frame(0x88, &[0x03, 0xe9], None), &mut out),
        Err(Violation::PeerClose)
    );
    assert_eq!(out.packets, vec![b"bye".to_vec()]);
    assert_eq!(unmask_short(&out.reply), (0x88, vec![0x03, 0xe9]));
    assert_eq!(c.violation(), Some(Violation::PeerClose));
}

#[test]
fn client_frames_violations() {
    let cases = [
        (frame(0x81, b"t", None), Violation::TextFrame, 1003u16),
        (frame(0xc2, b"x", None), Violation::BadFrame, 1002),
        (
            frame(0x82, &[0; 1401], None),
            Violation::OversizedFrame,
            1009,
        ),
    ];
    for (f, v, code) in cases {
        let mut c = upgraded();
        let mut out = Out::default();
        assert_eq!(client_feed(&mut c, &f, &mut out), Err(v));
        assert_eq!(
            unmask_short(&out.reply),
            (0x88, code.to_be_bytes().to_vec())
        );
    }
}

#[test]
fn client_encode_masks_with_the_given_source() {
    let mut c = upgraded();
    let mut out = Vec::new();
    assert_eq!(c.encode(b"Hello", &mut out), Ok(11));
    assert_eq!(out[0], 0x82);
    assert_eq!(unmask_short(&out), (0x82, b"Hello".to_vec()));
    assert_eq!(c.encode(&[0; 1401], &mut out), Err(FrameError::TooLarge));
    out.clear();
    c.close(1000, &mut out);
    assert_eq!(unmask_short(&out), (0x88, vec![0x03, 0xe8]));
    assert_eq!(c.encode(b"x", &mut out), Err(FrameError::Closed));
}

#[test]
fn random_server_bytes_never_panic() {
    let mut rng = Rng(12345);
    for round in 0..2000 {
        let mut data = if round % 2 == 0 {
            response_101(true)
        } else {
            Vec::new()
        };
        for _ in 0..rng.below(2000) {
            data.push(match rng.below(3) {
                0 => 0x82,
                _ => rng.next() as u8,
            });
        }
        let mut c = if round % 3 == 0 {
            ClientConn::tcp(Limits::default())
        } else {
            ws_client()
        };
        let mut reply = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let cut = rng.below(rest.len()) + 1;
            let r = c.feed(&rest[..cut], &mut reply, &mut |p| assert!(p.len() <= 1400));
            assert!(c.buffer_capacity() <= 4096);
            rest = &rest[cut..];
            if r.is_err() {
                break;
            }
        }
    }
}
