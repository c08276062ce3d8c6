//! StreamConn: sniffing, TCP framing, the WebSocket handshake and frames, limits, hostile
//! input.

mod common;

use common::*;
use tickwire_stream::{
    websocket_accept, FrameError, Limits, StreamConn, Transport, Violation, MAX_PACKET_CAP,
};

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("ASCII reply")
}

/// A request accepted with the RFC key; returns the connection and the 101 it answered.
fn upgraded() -> (StreamConn, Out) {
    let (conn, out) = server(&request(""));
    assert_eq!(out.result, None);
    assert!(conn.is_established());
    (conn, out)
}

// ---------------------------------------------------------------------------------------
// Sniffing and TCP framing

#[test]
fn nothing_received_means_no_transport() {
    let (conn, out) = server(&[]);
    assert_eq!(conn.transport(), None);
    assert!(!conn.is_established());
    assert!(out.packets.is_empty() && out.reply.is_empty());
    let mut buf = [0u8; 64];
    assert_eq!(conn.frame_into(b"x", &mut buf), 0);
    assert_eq!(
        conn.encode(b"x", &mut Vec::new()),
        Err(FrameError::NotEstablished)
    );
}

#[test]
fn tcp_many_packets_in_one_chunk() {
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for i in 0..200u32 {
        let p: Vec<u8> = (0..(i * 7) % 1401).map(|j| (i + j) as u8).collect();
        stream.extend(tcp(&p));
        want.push(p);
    }
    let (conn, out) = server(&stream);
    assert_eq!(out.result, None);
    assert_eq!(conn.transport(), Some(Transport::Tcp));
    assert!(conn.is_established());
    assert_eq!(out.packets, want);
    assert!(out.reply.is_empty());
    assert_eq!(conn.buffered(), 0);

    let (conn, out) = server_bytewise(&stream);
    assert_eq!(out.result, None);
    assert_eq!(out.packets, want);
    assert!(conn.buffer_capacity() <= 1400);
}

#[test]
fn tcp_first_byte_g_is_still_tcp_unless_followed_by_e() {
    // Length 0x0147 = 327: low byte 'G'.
    let p = vec![5u8; 0x147];
    let (conn, out) = server(&tcp(&p));
    assert_eq!(conn.transport(), Some(Transport::Tcp));
    assert_eq!(out.packets, vec![p.clone()]);
    // The same, with the 'G' alone in the first read.
    let (conn, out) = server_bytewise(&tcp(&p));
    assert_eq!(conn.transport(), Some(Transport::Tcp));
    assert_eq!(out.packets, vec![p]);
}

#[test]
fn tcp_frame_over_max_packet_is_refused_at_the_prefix() {
    let (conn, out) = server(&[0x79, 0x05]); // 1401
    assert_eq!(out.result, Some(Violation::OversizedFrame));
    assert!(out.reply.is_empty(), "TCP has no close message");
    assert_eq!(conn.violation(), Some(Violation::OversizedFrame));
    assert_eq!(conn.transport(), Some(Transport::Tcp));
    assert!(!conn.is_established());
    // Exactly the maximum is fine.
    let (_, out) = server(&tcp(&[1u8; 1400]));
    assert_eq!(out.result, None);
    assert_eq!(out.packets.len(), 1);
    // A larger configured limit.
    let mut conn = StreamConn::new(Limits {
        max_packet: 4000,
        ..Limits::default()
    });
    let mut out = Out::default();
    feed(&mut conn, &tcp(&[2u8; 4000]), &mut out).unwrap();
    assert_eq!(out.packets, vec![vec![2u8; 4000]]);
}

#[test]
fn max_packet_is_capped_below_the_ge_prefix() {
    let conn = StreamConn::new(Limits {
        max_packet: 60_000,
        max_handshake: 1,
    });
    assert_eq!(conn.limits().max_packet, MAX_PACKET_CAP);
    assert_eq!(MAX_PACKET_CAP, usize::from(u16::from_le_bytes(*b"GE")) - 1);
    assert_eq!(conn.limits().max_handshake, tickwire_stream::MIN_HANDSHAKE);
}

#[test]
fn garbage_is_tcp_with_an_oversized_length() {
    // "POST ..." reads as a length far over the limit.
    let (_, out) = server(b"POST / HTTP/1.1\r\n\r\n");
    assert_eq!(out.result, Some(Violation::OversizedFrame));
    // A TLS record header `16 03` reads as a 790-byte frame: a garbage packet for netcode
    // to drop, not a framing violation.
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    hello.resize(790 + 2, 0);
    let (_, out) = server(&hello);
    assert_eq!(out.result, None);
    assert_eq!(out.packets.len(), 1);
    assert_eq!(out.packets[0].len(), 790);
}

#[test]
fn empty_tcp_frames_are_delivered_as_empty_packets() {
    let (_, out) = server(&[0, 0, 1, 0, 9, 0, 0]);
    assert_eq!(out.result, None);
    assert_eq!(out.packets, vec![vec![], vec![9], vec![]]);
}

#[test]
fn after_a_violation_feed_reads_nothing_and_repeats_it() {
    let (mut conn, mut out) = server(&[0xff, 0xff]);
    assert_eq!(out.result, Some(Violation::OversizedFrame));
    out.result = None;
    assert_eq!(
        feed(&mut conn, &tcp(b"ok"), &mut out),
        Err(Violation::OversizedFrame)
    );
    assert!(out.packets.is_empty() && out.reply.is_empty());
    assert_eq!(conn.buffer_capacity(), 0, "buffers freed");
    assert_eq!(conn.encode(b"x", &mut Vec::new()), Err(FrameError::Closed));
}

#[test]
fn tcp_encode_and_frame_into() {
    let (conn, _) = server(&tcp(b"hi"));
    let mut out = vec![0xAA];
    assert_eq!(conn.encode(&[1, 2, 3], &mut out), Ok(5));
    assert_eq!(out, [0xAA, 3, 0, 1, 2, 3]);
    let big = vec![7u8; 1225];
    out.clear();
    conn.encode(&big, &mut out).unwrap();
    assert_eq!(&out[..2], &[0xc9, 0x04]);
    assert_eq!(conn.framed_len(1225), Ok(1227));

    let mut slot = [0u8; 8];
    assert_eq!(conn.frame_into(&[4, 5], &mut slot), 4);
    assert_eq!(&slot[..4], &[2, 0, 4, 5]);
    assert_eq!(
        conn.frame_into(&[0; 7], &mut slot),
        0,
        "9 bytes do not fit in 8"
    );
    assert_eq!(conn.encode(&[0; 1401], &mut out), Err(FrameError::TooLarge));
}

// ---------------------------------------------------------------------------------------
// WebSocket handshake

#[test]
fn rfc_6455_example_key() {
    assert_eq!(websocket_accept(RFC_KEY), RFC_ACCEPT);
    let (_, out) = upgraded();
    assert_eq!(
        text(&out.reply),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
}

#[test]
fn subprotocol_is_echoed_only_when_offered() {
    let (_, out) = server(&request("Sec-WebSocket-Protocol: tickwire.netcode\r\n"));
    assert_eq!(out.result, None);
    assert!(text(&out.reply).contains("\r\nSec-WebSocket-Protocol: tickwire.netcode\r\n"));

    let (_, out) = server(&request(
        "Sec-WebSocket-Protocol: chat, tickwire.netcode\r\n",
    ));
    assert!(text(&out.reply).contains("\r\nSec-WebSocket-Protocol: tickwire.netcode\r\n"));

    // Offered in a second header line.
    let (_, out) = server(&request(
        "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: tickwire.netcode\r\n",
    ));
    assert!(text(&out.reply).contains("Sec-WebSocket-Protocol: tickwire.netcode"));

    for other in ["chat, superchat", "Tickwire.Netcode", "tickwire.netcode2"] {
        let (conn, out) = server(&request(&format!("Sec-WebSocket-Protocol: {other}\r\n")));
        assert_eq!(out.result, None, "{other}");
        assert!(conn.is_established());
        assert!(
            !text(&out.reply).contains("Sec-WebSocket-Protocol"),
            "{other}"
        );
    }
}

#[test]
fn header_names_are_case_insensitive_and_lists_are_token_lists() {
    let req = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
         sec-websocket-key: {RFC_KEY}\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n"
    );
    let (conn, out) = server(req.as_bytes());
    assert_eq!(out.result, None);
    assert!(conn.is_established());
    assert!(text(&out.reply).contains(RFC_ACCEPT));
    // Bare LF line ends, extra whitespace.
    let req = format!(
        "GET / HTTP/1.1\nHost:x\nUpgrade:  websocket \nConnection:\tUpgrade\n\
         Sec-WebSocket-Key:   {RFC_KEY}\nSec-WebSocket-Version: 13\n\n"
    );
    let (_, out) = server(req.as_bytes());
    assert_eq!(out.result, None);
    assert!(text(&out.reply).starts_with("HTTP/1.1 101 "));
}

#[test]
fn any_origin_and_any_path_are_accepted() {
    let req = format!(
        "GET /some/where?q=1 HTTP/1.1\r\nHost: x\r\nOrigin: null\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (conn, _) = server(req.as_bytes());
    assert!(conn.is_established());
}

#[test]
fn plain_get_and_other_versions_get_426() {
    let (conn, out) = server(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(out.result, Some(Violation::BadHandshake));
    let reply = text(&out.reply);
    assert!(reply.starts_with("HTTP/1.1 426 "), "{reply}");
    assert!(reply.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    assert!(reply.contains("\r\nUpgrade: websocket\r\n"));
    assert!(reply.ends_with("\r\n\r\n"));
    assert_eq!(conn.transport(), Some(Transport::WebSocket));
    assert!(!conn.is_established());

    let req = text(&request("")).replace("Version: 13", "Version: 8");
    let (_, out) = server(req.as_bytes());
    assert_eq!(out.result, Some(Violation::BadHandshake));
    assert!(text(&out.reply).starts_with("HTTP/1.1 426 "));
    assert!(text(&out.reply).contains("Sec-WebSocket-Version: 13"));

    let req = text(&request("")).replace("Sec-WebSocket-Version: 13\r\n", "");
    let (_, out) = server(req.as_bytes());
    assert!(text(&out.reply).starts_with("HTTP/1.1 426 "));

    let req = text(&request("")).replace("Connection: Upgrade", "Connection: keep-alive");
    let (_, out) = server(req.as_bytes());
    assert!(text(&out.reply).starts_with("HTTP/1.1 426 "));
}

#[test]
fn malformed_requests_get_400() {
    let good = text(&request("")).to_string();
    let cases = [
        good.replace("HTTP/1.1\r\n", "HTTP/1.0\r\n"),
        good.replace("GET /play?x=1", "GET  /play"),
        good.replace("GET /play?x=1", "GET play"),
        good.replace("GET ", "GETS "),
        good.replace("Host: game.example:7777\r\n", ""),
        good.replace("Host: game.example:7777\r\n", "Host: a\r\nHost: b\r\n"),
        good.replace(RFC_KEY, "dGhlIHNhbXBsZSBub25jZQ"),
        good.replace(RFC_KEY, "dGhlIHNhbXBsZSBub25jZSE="),
        good.replace(RFC_KEY, "!!!!!!!!!!!!!!!!!!!!!!=="),
        good.replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), ""),
        good.replace(
            &format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"),
            &format!("Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Key: {RFC_KEY}\r\n"),
        ),
        good.replace("Origin:", "Origin :"),
        good.replace("Origin: https", " Origin: https"),
        good.replace("\r\n\r\n", "\r\nContent-Length: 5\r\n\r\n"),
        good.replace("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "GE\r\n\r\n".to_string(),
        "GEt / HTTP/1.1\r\n\r\n".to_string(),
    ];
    for case in &cases {
        let (conn, out) = server(case.as_bytes());
        assert_eq!(out.result, Some(Violation::BadHandshake), "{case:?}");
        assert!(text(&out.reply).starts_with("HTTP/1.1 400 "), "{case:?}");
        assert!(!conn.is_established());
    }
    // Content-Length: 0 is harmless.
    let (conn, _) = server(
        good.replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    assert!(conn.is_established());
}

#[test]
fn a_head_without_end_is_cut_at_max_handshake() {
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    while req.len() < 10_000 {
        req.extend_from_slice(b"X-Filler: 0123456789\r\n");
    }
    let (conn, out) = server(&req);
    assert_eq!(out.result, Some(Violation::HandshakeTooLarge));
    assert!(text(&out.reply).starts_with("HTTP/1.1 431 "));
    assert_eq!(conn.buffer_capacity(), 0);

    let mut conn = StreamConn::new(Limits::default());
    let mut out = Out::default();
    let mut max_cap = 0;
    for b in &req {
        if feed(&mut conn, std::slice::from_ref(b), &mut out).is_err() {
            break;
        }
        max_cap = max_cap.max(conn.buffer_capacity());
    }
    assert_eq!(out.result, Some(Violation::HandshakeTooLarge));
    assert!(max_cap <= 4096, "{max_cap}");

    // A request of exactly max_handshake bytes is fine.
    let base = request("");
    let pad = 4096 - base.len() - "X: \r\n".len();
    let req = request(&format!("X: {}\r\n", "a".repeat(pad)));
    assert_eq!(req.len(), 4096);
    let (conn, out) = server(&req);
    assert_eq!(out.result, None);
    assert!(conn.is_established());
}

#[test]
fn handshake_byte_at_a_time_then_frames() {
    let mut data = request("Sec-WebSocket-Protocol: tickwire.netcode\r\n");
    data.extend(binary(b"one"));
    data.extend(frame(0x89, b"ping!", Some(MASK)));
    data.extend(binary(&[9u8; 300]));
    let (conn, out) = server_bytewise(&data);
    assert_eq!(out.result, None);
    assert!(conn.is_established());
    assert_eq!(conn.transport(), Some(Transport::WebSocket));
    assert_eq!(out.packets, vec![b"one".to_vec(), vec![9u8; 300]]);
    let (one_shot_conn, one_shot) = server(&data);
    assert_eq!(one_shot.packets, out.packets);
    assert_eq!(one_shot.reply, out.reply);
    assert!(one_shot_conn.is_established());
    // The 101, then the pong.
    let reply = out.reply;
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(text(&reply[..end]).starts_with("HTTP/1.1 101 "));
    assert_eq!(&reply[end..], &frame(0x8a, b"ping!", None)[..]);
}

// ---------------------------------------------------------------------------------------
// WebSocket frames

/// Feeds frames to an upgraded connection; returns the output after the 101.
fn ws(data: &[u8]) -> (StreamConn, Out) {
    let (mut conn, mut out) = upgraded();
    out.reply.clear();
    let _ = feed(&mut conn, data, &mut out);
    (conn, out)
}

#[test]
fn rfc_examples_masked_binary_and_ping() {
    // RFC 6455 §5.7: "Hello", masked with 37 fa 21 3d (there as text; here binary and ping).
    let hello = [
        0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (_, out) = ws(&hello);
    assert_eq!(out.packets, vec![b"Hello".to_vec()]);
    let mut ping = hello;
    ping[0] = 0x89;
    let (_, out) = ws(&ping);
    assert!(out.packets.is_empty());
    // §5.7's unmasked pong.
    assert_eq!(out.reply, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
}

#[test]
fn many_packets_in_one_chunk_and_every_length_encoding() {
    let sizes = [0usize, 1, 125, 126, 127, 1000, 1400];
    let mut data = Vec::new();
    for &n in &sizes {
        data.extend(binary(&vec![n as u8; n]));
    }
    // A 64-bit length with a small value (not minimal, but legal to read).
    let mut long = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 3];
    long.extend_from_slice(&MASK);
    long.extend([1 ^ MASK[0], 2 ^ MASK[1], 3 ^ MASK[2]]);
    data.extend(&long);
    let (conn, out) = ws(&data);
    assert_eq!(out.result, None);
    let mut want: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![n as u8; n]).collect();
    want.push(vec![1, 2, 3]);
    assert_eq!(out.packets, want);
    assert!(out.reply.is_empty());
    assert_eq!(conn.buffered(), 0);

    // Every split point of a frame gives the same packet.
    let f = binary(&[3u8; 200]);
    for cut in 0..=f.len() {
        let (mut conn, mut out) = upgraded();
        feed(&mut conn, &f[..cut], &mut out).unwrap();
        feed(&mut conn, &f[cut..], &mut out).unwrap();
        assert_eq!(out.packets, vec![vec![3u8; 200]], "cut {cut}");
    }
}

#[test]
fn fragmented_messages_reassemble_with_pings_between() {
    let mut data = frame(0x02, b"ab", Some(MASK)); // binary, no FIN
    data.extend(frame(0x89, b"p", Some([1, 2, 3, 4]))); // ping in between
    data.extend(frame(0x00, b"", Some(MASK))); // empty continuation
    data.extend(frame(0x00, b"cd", Some([9, 9, 9, 9])));
    data.extend(frame(0x8a, b"unsolicited pong", Some(MASK)));
    data.extend(frame(0x80, b"e", Some(MASK))); // final continuation
    data.extend(binary(b"next"));
    let (_, out) = ws(&data);
    assert_eq!(out.result, None);
    assert_eq!(out.packets, vec![b"abcde".to_vec(), b"next".to_vec()]);
    assert_eq!(out.reply, frame(0x8a, b"p", None));
    // Byte at a time.
    let (mut conn, mut out) = upgraded();
    out.reply.clear();
    for b in &data {
        feed(&mut conn, std::slice::from_ref(b), &mut out).unwrap();
    }
    assert_eq!(out.packets, vec![b"abcde".to_vec(), b"next".to_vec()]);
}

#[test]
fn fragments_over_max_packet_close_1009() {
    let mut data = frame(0x02, &[0u8; 1000], Some(MASK));
    data.extend(frame(0x80, &[0u8; 401], Some(MASK)));
    let (conn, out) = ws(&data);
    assert_eq!(out.result, Some(Violation::OversizedFrame));
    assert_eq!(out.reply, [0x88, 0x02, 0x03, 0xf1]);
    assert!(out.packets.is_empty());
    assert_eq!(conn.violation(), Some(Violation::OversizedFrame));
    // Exactly max_packet over fragments is fine.
    let mut data = frame(0x02, &[0u8; 1000], Some(MASK));
    data.extend(frame(0x80, &[0u8; 400], Some(MASK)));
    let (_, out) = ws(&data);
    assert_eq!(out.result, None);
    assert_eq!(out.packets[0].len(), 1400);
}

#[test]
fn oversized_frame_is_refused_at_its_header() {
    // Only the header: the 1401 payload bytes never need to arrive.
    let f = binary(&[0u8; 1401]);
    let (conn, out) = ws(&f[..8]);
    assert_eq!(out.result, Some(Violation::OversizedFrame));
    assert_eq!(out.reply, [0x88, 0x02, 0x03, 0xf1]);
    assert_eq!(conn.buffer_capacity(), 0);
    // A 64-bit length of 2^62.
    let mut h = vec![0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(&MASK);
    let (_, out) = ws(&h);
    assert_eq!(out.result, Some(Violation::OversizedFrame));
    // A 64-bit length with the top bit set is malformed.
    h[2] = 0x80;
    let (_, out) = ws(&h);
    assert_eq!(out.result, Some(Violation::BadFrame));
}

#[test]
fn unmasked_client_frames_close_1002() {
    let (_, out) = ws(&frame(0x82, b"hi", None));
    assert_eq!(out.result, Some(Violation::UnmaskedFrame));
    assert_eq!(out.reply, [0x88, 0x02, 0x03, 0xea]);
    assert!(out.packets.is_empty());
}

#[test]
fn text_frames_close_1003() {
    let (_, out) = ws(&frame(0x81, b"hello", Some(MASK)));
    assert_eq!(out.result, Some(Violation::TextFrame));
    assert_eq!(out.reply, [0x88, 0x02, 0x03, 0xeb]);
}

#[test]
fn malformed_frames_close_1002() {
    let cases: Vec<Vec<u8>> = vec![
        frame(0xc2, b"x", Some(MASK)), // RSV1 (no compression negotiated)
        frame(0xa2, b"x", Some(MASK)), // RSV2
        frame(0x92, b"x", Some(MASK)), // RSV3
        frame(0x83, b"x", Some(MASK)), // reserved data opcode
        frame(0x8b, b"x", Some(MASK)), // reserved control opcode
        frame(0x80, b"x", Some(MASK)), // continuation with nothing open
        frame(0x09, b"x", Some(MASK)), // fragmented ping
        frame(0x89, &[0u8; 126], Some(MASK)), // ping over 125
        [frame(0x02, b"a", Some(MASK)), binary(b"b")].concat(), // new message inside one
    ];
    for case in cases {
        let (_, out) = ws(&case);
        assert_eq!(out.result, Some(Violation::BadFrame), "{case:02x?}");
        assert_eq!(out.reply, [0x88, 0x02, 0x03, 0xea], "{case:02x?}");
        assert!(out.packets.is_empty());
    }
}

#[test]
fn ping_of_125_bytes_is_answered() {
    let payload: Vec<u8> = (0..125).collect();
    let (_, out) = ws(&frame(0x89, &payload, Some([0xde, 0xad, 0xbe, 0xef])));
    assert_eq!(out.result, None);
    assert_eq!(out.reply, frame(0x8a, &payload, None));
    // An empty ping gets an empty pong.
    let (_, out) = ws(&frame(0x89, b"", Some(MASK)));
    assert_eq!(out.reply, [0x8a, 0x00]);
}

#[test]
fn close_is_echoed() {
    let (conn, out) = ws(&frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e'], Some(MASK)));
    assert_eq!(out.result, Some(Violation::PeerClose));
    assert_eq!(out.reply, [0x88, 0x02, 0x03, 0xe8]);
    assert_eq!(conn.violation(), Some(Violation::PeerClose));
    assert_eq!(conn.encode(b"x", &mut Vec::new()), Err(FrameError::Closed));

    let (_, out) = ws(&frame(0x88, &[], Some(MASK)));
    assert_eq!(out.result, Some(Violation::PeerClose));
    assert_eq!(out.reply, [0x88, 0x00]);

    // Application codes are echoed; reserved ones and a 1-byte payload answer 1002.
    let (_, out) = ws(&frame(0x88, &4000u16.to_be_bytes(), Some(MASK)));
    assert_eq!(out.reply, [0x88, 0x02, 0x0f, 0xa0]);
    for bad in [&1005u16.to_be_bytes()[..], &999u16.to_be_bytes(), &[0x03]] {
        let (_, out) = ws(&frame(0x88, bad, Some(MASK)));
        assert_eq!(out.result, Some(Violation::PeerClose));
        assert_eq!(out.reply, [0x88, 0x02, 0x03, 0xea], "{bad:?}");
    }
    // Packets before the close in the same chunk are delivered; nothing after it.
    let mut data = binary(b"last");
    data.extend(frame(0x88, &[0x03, 0xe8], Some(MASK)));
    data.extend(binary(b"never"));
    let (_, out) = ws(&data);
    assert_eq!(out.packets, vec![b"last".to_vec()]);
}

#[test]
fn empty_binary_message_is_an_empty_packet() {
    let (_, out) = ws(&binary(b""));
    assert_eq!(out.result, None);
    assert_eq!(out.packets, vec![Vec::<u8>::new()]);
}

#[test]
fn websocket_encode_and_frame_into_are_unmasked_binary_frames() {
    let (mut conn, _) = upgraded();
    let mut out = Vec::new();
    assert_eq!(conn.encode(b"Hello", &mut out), Ok(7));
    assert_eq!(out, frame(0x82, b"Hello", None));
    let big = vec![1u8; 1225];
    out.clear();
    assert_eq!(conn.encode(&big, &mut out), Ok(1229));
    assert_eq!(out, frame(0x82, &big, None));
    assert_eq!(conn.framed_len(1225), Ok(1229));
    assert_eq!(conn.framed_len(125), Ok(127));

    let mut slot = [0u8; 1229];
    assert_eq!(conn.frame_into(&big, &mut slot), 1229);
    assert_eq!(&slot[..], &out[..]);
    assert_eq!(conn.frame_into(&big, &mut slot[..1228]), 0);

    out.clear();
    conn.close(tickwire_stream::close_code::GOING_AWAY, &mut out);
    assert_eq!(out, [0x88, 0x02, 0x03, 0xe9]);
    assert_eq!(conn.encode(b"x", &mut out), Err(FrameError::Closed));
    // Once closed by us, incoming bytes are ignored without a violation.
    let mut o = Out::default();
    assert_eq!(feed(&mut conn, &binary(b"late"), &mut o), Ok(()));
    assert!(o.packets.is_empty());
}

#[test]
fn not_established_during_the_handshake() {
    let req = request("");
    let (conn, out) = server(&req[..req.len() - 2]);
    assert_eq!(out.result, None);
    assert_eq!(conn.transport(), Some(Transport::WebSocket));
    assert!(!conn.is_established());
    assert_eq!(
        conn.encode(b"x", &mut Vec::new()),
        Err(FrameError::NotEstablished)
    );
}

// ---------------------------------------------------------------------------------------
// Hostile input, bounded memory

#[test]
fn random_input_never_panics_and_stays_bounded() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let prefixes: [&[u8]; 3] = [b"", &request(""), &[0x10, 0x00]];
    for round in 0..3000 {
        let mut data = prefixes[round % 3].to_vec();
        let n = rng.below(3000);
        for _ in 0..n {
            // Bias toward header-ish bytes so frames get parsed.
            let b = match rng.below(4) {
                0 => 0x82,
                1 => 0x80 | rng.below(128) as u8,
                _ => rng.next() as u8,
            };
            data.push(b);
        }
        let mut conn = StreamConn::new(Limits::default());
        let mut reply = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let cut = rng.below(rest.len()) + 1;
            let r = conn.feed(&rest[..cut], &mut reply, &mut |p| assert!(p.len() <= 1400));
            assert!(conn.buffer_capacity() <= 4096);
            assert!(conn.buffered() <= 4096 + 14 + 125);
            rest = &rest[cut..];
            if r.is_err() {
                break;
            }
        }
    }
}
