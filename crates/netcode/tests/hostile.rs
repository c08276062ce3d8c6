//! Hostile input: every malformed, forged, replayed or misdirected packet is dropped and
//! counted under the right `DropReason`; nothing panics; no reply is larger than its request.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tickwire_netcode::packet::{self, Packet};
use tickwire_netcode::*;

/// Feeds one datagram to the server; returns its replies and events.
fn feed(s: &mut Server, now: Now, from: SocketAddr, bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<SEv>) {
    let mut out = Vec::new();
    let mut evs = Vec::new();
    s.handle_packet(
        now,
        from.into(),
        bytes,
        &mut |to, b| {
            assert_eq!(to, from.into(), "replies go to the sender");
            assert!(
                b.len() <= bytes.len(),
                "reply {} > request {}",
                b.len(),
                bytes.len()
            );
            out.push(b.to_vec());
        },
        &mut |e| evs.push(own_server_event(e)),
    );
    (out, evs)
}

fn enc(p: &Packet<'_>, seq: u64, key: &Key) -> Vec<u8> {
    let mut out = [0u8; MAX_PACKET_BYTES];
    let n = packet::encode(p, seq, PROTOCOL_ID, key, &mut out).expect("encodes");
    out[..n].to_vec()
}

fn request_from_token(t: &[u8]) -> Vec<u8> {
    let p = ConnectTokenPublic::read(t).expect("token");
    enc(
        &Packet::Request {
            protocol_id: p.protocol_id,
            expire_unix_secs: p.expire_unix_secs,
            nonce: p.nonce,
            private_data: &p.private_data,
        },
        0,
        &[0; 32],
    )
}

/// Asserts that feeding `bytes` drops exactly one packet under `r` and nothing else happens.
fn expect_drop(s: &mut Server, now: Now, from: SocketAddr, bytes: &[u8], r: DropReason) {
    let before = s.stats().clone();
    let (out, evs) = feed(s, now, from, bytes);
    assert!(out.is_empty(), "no reply to a dropped packet ({r:?})");
    assert!(evs.is_empty(), "no event for a dropped packet ({r:?})");
    let after = s.stats();
    assert_eq!(
        after.drops[r.index()],
        before.drops[r.index()] + 1,
        "expected {r:?}, got {after:?}"
    );
    assert_eq!(after.total_drops(), before.total_drops() + 1, "only {r:?}");
}

fn fresh_server() -> Server {
    Server::new(server_config(4))
}

#[test]
fn truncated_oversized_and_bad_prefixes() {
    let mut s = fresh_server();
    let now = start_now();
    let from = client_addr(0);
    expect_drop(&mut s, now, from, &[], DropReason::TooSmall);
    expect_drop(&mut s, now, from, &[0x15; 10], DropReason::TooSmall);
    expect_drop(&mut s, now, from, &[0x15; 17], DropReason::TooSmall);
    expect_drop(&mut s, now, from, &[0x86; 20], DropReason::TooSmall);
    expect_drop(
        &mut s,
        now,
        from,
        &[0x15; MAX_PACKET_BYTES + 1],
        DropReason::TooLarge,
    );
    expect_drop(&mut s, now, from, &[0; 5000], DropReason::TooLarge);
    expect_drop(
        &mut s,
        now,
        from,
        &[0x15; 1 + 1 + 1300 + 16],
        DropReason::TooLarge,
    );
    for n in [0u8, 9, 10, 11, 12, 13, 14, 15] {
        expect_drop(
            &mut s,
            now,
            from,
            &[(n << 4) | 4; 40],
            DropReason::BadPrefix,
        );
    }
    for t in 7u8..=15 {
        expect_drop(&mut s, now, from, &[0x10 | t; 40], DropReason::UnknownType);
    }
    expect_drop(&mut s, now, from, &[0x10; 40], DropReason::BadPrefix);
    expect_drop(&mut s, now, from, &[0x14; 19], DropReason::Malformed);
    expect_drop(&mut s, now, from, &[0x15; 18], DropReason::Malformed);
    // Server-only-receives rule: challenge and denied are never accepted by a server.
    expect_drop(
        &mut s,
        now,
        from,
        &[0x12; 1 + 1 + 308 + 16],
        DropReason::UnexpectedType,
    );
    expect_drop(&mut s, now, from, &[0x11; 18], DropReason::UnexpectedType);
    // Well-formed encrypted packets from nobody we know.
    let ka = enc(
        &Packet::KeepAlive {
            client_index: 0,
            max_clients: 0,
        },
        0,
        &C2S_KEY,
    );
    expect_drop(&mut s, now, from, &ka, DropReason::UnknownAddress);
    expect_drop(
        &mut s,
        now,
        from,
        &enc(&Packet::Payload(b"hi"), 1, &C2S_KEY),
        DropReason::UnknownAddress,
    );
    let tok = [0u8; 300];
    let resp = enc(
        &Packet::Response {
            challenge_sequence: 0,
            token: &tok,
        },
        2,
        &C2S_KEY,
    );
    expect_drop(&mut s, now, from, &resp, DropReason::UnknownAddress);
    assert_eq!(s.stats().packets_out, 0);
}

#[test]
fn connection_request_checks_in_order() {
    let mut s = fresh_server();
    let now = start_now();
    let from = client_addr(0);
    let good = request_from_token(&token(&TokenSpec::default()));
    assert_eq!(good.len(), 1078);

    expect_drop(&mut s, now, from, &good[..1077], DropReason::BadRequest);
    let mut long = good.clone();
    long.push(0);
    expect_drop(&mut s, now, from, &long, DropReason::BadRequest);
    let mut bad_version = good.clone();
    bad_version[12] = b'0';
    expect_drop(&mut s, now, from, &bad_version, DropReason::BadRequest);
    let other_pid = request_from_token(&token(&TokenSpec {
        protocol_id: 7,
        ..TokenSpec::default()
    }));
    expect_drop(&mut s, now, from, &other_pid, DropReason::BadRequest);

    let expired = request_from_token(&token(&TokenSpec {
        create: UNIX_START - 100,
        expire_secs: 30,
        ..TokenSpec::default()
    }));
    expect_drop(&mut s, now, from, &expired, DropReason::TokenExpired);
    let expires_now = request_from_token(&token(&TokenSpec {
        create: UNIX_START - 30,
        expire_secs: 30,
        ..TokenSpec::default()
    }));
    expect_drop(&mut s, now, from, &expires_now, DropReason::TokenExpired);

    let wrong_key = request_from_token(&token(&TokenSpec {
        key: [0x43; 32],
        ..TokenSpec::default()
    }));
    expect_drop(&mut s, now, from, &wrong_key, DropReason::TokenInvalid);
    let mut tampered = good.clone();
    tampered[600] ^= 1;
    expect_drop(&mut s, now, from, &tampered, DropReason::TokenInvalid);
    let mut later_expiry = good.clone(); // expire timestamp is in the AAD
    later_expiry[22] ^= 1;
    expect_drop(&mut s, now, from, &later_expiry, DropReason::TokenInvalid);

    let other = [addr("10.0.0.1:40000"), addr("127.0.0.1:40001")];
    let wrong_server = request_from_token(&token(&TokenSpec {
        addrs: &other,
        ..TokenSpec::default()
    }));
    expect_drop(
        &mut s,
        now,
        from,
        &wrong_server,
        DropReason::TokenWrongServer,
    );

    // The good request gets a challenge: 1 + 8 (global sequence 1<<63) + 308 + 16 = 333 bytes.
    let (out, evs) = feed(&mut s, now, from, &good);
    assert!(evs.is_empty());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 333);
    assert_eq!(out[0][0], 0x82);
    assert_eq!(s.stats().total_drops(), 10);
}

#[test]
fn unspecified_public_address_matches_port() {
    let mut cfg = server_config(2);
    cfg.public_addrs = vec![addr("0.0.0.0:40000")];
    let mut s = Server::new(cfg);
    let now = start_now();
    let good = request_from_token(&token(&TokenSpec::default()));
    assert_eq!(feed(&mut s, now, client_addr(0), &good).0.len(), 1);
    let other_port = [addr("127.0.0.1:40001")];
    let r = request_from_token(&token(&TokenSpec {
        addrs: &other_port,
        client_id: 2,
        ..TokenSpec::default()
    }));
    expect_drop(
        &mut s,
        now,
        client_addr(1),
        &r,
        DropReason::TokenWrongServer,
    );
}

#[test]
fn token_reused_from_another_address() {
    let mut s = fresh_server();
    let now = start_now();
    let req = request_from_token(&token(&TokenSpec::default()));
    assert_eq!(feed(&mut s, now, client_addr(0), &req).0.len(), 1);
    // Resends from the same address are fine.
    assert_eq!(feed(&mut s, now, client_addr(0), &req).0.len(), 1);
    expect_drop(&mut s, now, client_addr(1), &req, DropReason::TokenReused);
}

/// Runs the handshake by hand from `from`; returns the decrypted challenge.
fn get_challenge(s: &mut Server, now: Now, from: SocketAddr, client_id: u64) -> (u64, [u8; 300]) {
    let req = request_from_token(&token(&TokenSpec {
        client_id,
        ..TokenSpec::default()
    }));
    let (out, _) = feed(s, now, from, &req);
    assert_eq!(out.len(), 1);
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    let d =
        packet::decode(&out[0], PROTOCOL_ID, &S2C_KEY, &mut scratch).expect("challenge decrypts");
    assert!(d.sequence >= 1 << 63, "global sequence");
    match d.packet {
        Packet::Challenge {
            challenge_sequence,
            token,
        } => (challenge_sequence, *token),
        other => panic!("expected challenge, got {other:?}"),
    }
}

#[test]
fn challenge_response_forgery() {
    let mut s = fresh_server();
    let now = start_now();
    let from = client_addr(0);
    let (cseq, ctok) = get_challenge(&mut s, now, from, 1);
    assert_eq!(cseq, 0);

    // A keep-alive from a pending (not yet connected) address.
    let ka = enc(
        &Packet::KeepAlive {
            client_index: 0,
            max_clients: 0,
        },
        0,
        &C2S_KEY,
    );
    expect_drop(&mut s, now, from, &ka, DropReason::UnexpectedType);
    // Response under the wrong key.
    let wrong = enc(
        &Packet::Response {
            challenge_sequence: cseq,
            token: &ctok,
        },
        0,
        &S2C_KEY,
    );
    expect_drop(&mut s, now, from, &wrong, DropReason::DecryptFailed);
    // Valid packet, tampered challenge token / wrong challenge sequence.
    let mut bad_tok = ctok;
    bad_tok[17] ^= 4;
    let r = enc(
        &Packet::Response {
            challenge_sequence: cseq,
            token: &bad_tok,
        },
        1,
        &C2S_KEY,
    );
    expect_drop(&mut s, now, from, &r, DropReason::ChallengeInvalid);
    let r = enc(
        &Packet::Response {
            challenge_sequence: cseq + 1,
            token: &ctok,
        },
        2,
        &C2S_KEY,
    );
    expect_drop(&mut s, now, from, &r, DropReason::ChallengeInvalid);
    // The right response from another address (no pending mapping there).
    let good = enc(
        &Packet::Response {
            challenge_sequence: cseq,
            token: &ctok,
        },
        3,
        &C2S_KEY,
    );
    expect_drop(
        &mut s,
        now,
        client_addr(5),
        &good,
        DropReason::UnknownAddress,
    );

    // The genuine response connects and is answered with a 26-byte keep-alive.
    let (out, evs) = feed(&mut s, now, from, &good);
    assert_eq!(
        evs,
        vec![SEv::Connected {
            client: 0,
            client_id: 1,
            addr: from,
            user_data: user_data(1).to_vec()
        }]
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 26);
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    let d = packet::decode(&out[0], PROTOCOL_ID, &S2C_KEY, &mut scratch).expect("keep-alive");
    assert_eq!(d.sequence, 0);
    assert_eq!(
        d.packet,
        Packet::KeepAlive {
            client_index: 0,
            max_clients: 4
        }
    );
    // Resent response once connected: ignored.
    expect_drop(&mut s, now, from, &good, DropReason::AlreadyConnected);
    // A request from the connected address, or for the connected client id elsewhere.
    let req = request_from_token(&token(&TokenSpec {
        client_id: 1,
        ..TokenSpec::default()
    }));
    expect_drop(&mut s, now, from, &req, DropReason::AlreadyConnected);
    let req2 = request_from_token(&token(&TokenSpec {
        client_id: 2,
        ..TokenSpec::default()
    }));
    expect_drop(&mut s, now, from, &req2, DropReason::AlreadyConnected);
}

/// A server with client id 1 connected from `client_addr(0)` in slot 0.
fn connected_server(now: Now) -> Server {
    let mut s = fresh_server();
    let (cseq, ctok) = get_challenge(&mut s, now, client_addr(0), 1);
    let r = enc(
        &Packet::Response {
            challenge_sequence: cseq,
            token: &ctok,
        },
        0,
        &C2S_KEY,
    );
    let (_, evs) = feed(&mut s, now, client_addr(0), &r);
    assert_eq!(evs.len(), 1);
    s
}

#[test]
fn connected_client_packets() {
    let now = start_now();
    let mut s = connected_server(now);
    let from = client_addr(0);

    // Keep-alive with client index 0 / max clients 0, and with nonsense values: accepted.
    let ka = enc(
        &Packet::KeepAlive {
            client_index: 0,
            max_clients: 0,
        },
        1,
        &C2S_KEY,
    );
    let (out, evs) = feed(&mut s, now, from, &ka);
    assert!(out.is_empty() && evs.is_empty());
    let ka2 = enc(
        &Packet::KeepAlive {
            client_index: 999,
            max_clients: 7,
        },
        2,
        &C2S_KEY,
    );
    feed(&mut s, now, from, &ka2);
    assert_eq!(s.stats().total_drops(), 0);

    let p = enc(&Packet::Payload(b"input"), 10, &C2S_KEY);
    let (_, evs) = feed(&mut s, now, from, &p);
    assert_eq!(
        evs,
        vec![SEv::Payload {
            client: 0,
            data: b"input".to_vec()
        }]
    );
    // The same packet again: replayed.
    expect_drop(&mut s, now, from, &p, DropReason::Replayed);
    expect_drop(&mut s, now, from, &ka, DropReason::Replayed);
    // Far ahead, then something older than the window.
    let ahead = enc(&Packet::Payload(b"a"), 1000, &C2S_KEY);
    assert_eq!(feed(&mut s, now, from, &ahead).1.len(), 1);
    let old = enc(&Packet::Payload(b"o"), 700, &C2S_KEY);
    expect_drop(&mut s, now, from, &old, DropReason::Replayed);
    let in_window = enc(&Packet::Payload(b"w"), 900, &C2S_KEY);
    assert_eq!(feed(&mut s, now, from, &in_window).1.len(), 1);

    // Tampered ciphertext and wrong key.
    let mut t = enc(&Packet::Payload(b"evil"), 1001, &C2S_KEY);
    t[3] ^= 0xFF;
    expect_drop(&mut s, now, from, &t, DropReason::DecryptFailed);
    let wrong = enc(&Packet::Payload(b"evil"), 1002, &S2C_KEY);
    expect_drop(&mut s, now, from, &wrong, DropReason::DecryptFailed);
    // A forged packet does not burn its sequence: the genuine one still gets through.
    let genuine = enc(&Packet::Payload(b"good"), 1001, &C2S_KEY);
    assert_eq!(feed(&mut s, now, from, &genuine).1.len(), 1);

    // A 1300-byte payload, validly encrypted: dropped as too large before any work.
    let big = vec![1u8; 1300];
    let mut buf = vec![0u8; 1 + 2 + 1300 + 16];
    buf[0] = 0x25;
    buf[1..3].copy_from_slice(&2000u16.to_le_bytes());
    buf[3..1303].copy_from_slice(&big);
    expect_drop(&mut s, now, from, &buf, DropReason::TooLarge);

    // Disconnect packet type with a body: malformed.
    expect_drop(&mut s, now, from, &[0x16; 19], DropReason::Malformed);
    assert!(s.is_connected(0));

    // Genuine disconnect.
    let d = enc(&Packet::Disconnect, 3000, &C2S_KEY);
    let (_, evs) = feed(&mut s, now, from, &d);
    assert_eq!(
        evs,
        vec![SEv::Disconnected {
            client: 0,
            reason: DisconnectReason::ClientDisconnected
        }]
    );
    // The same packet again right away: a late redundant disconnect, counted but not a drop.
    let before = s.stats().clone();
    let (out, evs) = feed(&mut s, now, from, &d);
    assert!(out.is_empty() && evs.is_empty());
    assert_eq!(s.stats().total_drops(), before.total_drops());
    assert_eq!(
        s.stats().late_after_disconnect,
        before.late_after_disconnect + 1
    );
    // Once the window has passed, it is an unknown address again.
    let later = Now {
        mono: now.mono + server::RECENT_DISCONNECT_WINDOW,
        unix_secs: now.unix_secs + 5,
    };
    expect_drop(&mut s, later, from, &d, DropReason::UnknownAddress);
    assert_eq!(s.connected_clients(), 0);
}

#[test]
fn pending_handshakes_expire() {
    let now = start_now();
    let mut s = fresh_server();
    let from = client_addr(0);
    let (cseq, ctok) = get_challenge(&mut s, now, from, 1);
    let later = Now {
        mono: now.mono + Duration::from_secs(6),
        unix_secs: now.unix_secs + 6,
    };
    s.update(later, &mut |_, _| panic!("nothing to send"), &mut |_| {
        panic!("no events")
    });
    let r = enc(
        &Packet::Response {
            challenge_sequence: cseq,
            token: &ctok,
        },
        0,
        &C2S_KEY,
    );
    expect_drop(&mut s, later, from, &r, DropReason::UnknownAddress);
}

/// Small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn seeded_random_garbage_never_panics() {
    let mut p = Pair::new(4);
    let c = p.connect_one(1);
    // A second client mid-handshake so the pending path is exercised too.
    let now = p.now;
    let (_, _) = get_challenge(&mut p.server, now, client_addr(9), 2);

    // Real packets to mutate.
    let mut seeds: Vec<Vec<u8>> = vec![
        request_from_token(&token(&TokenSpec {
            client_id: 3,
            ..TokenSpec::default()
        })),
        enc(&Packet::Payload(b"seed payload"), 500, &C2S_KEY),
        enc(
            &Packet::KeepAlive {
                client_index: 0,
                max_clients: 4,
            },
            501,
            &C2S_KEY,
        ),
        enc(&Packet::Disconnect, 502, &C2S_KEY),
        enc(
            &Packet::Response {
                challenge_sequence: 0,
                token: &[0; 300],
            },
            503,
            &C2S_KEY,
        ),
    ];
    seeds.push(enc(&Packet::Payload(b"to client"), 504, &S2C_KEY));
    let froms = [
        client_addr(0),
        client_addr(9),
        client_addr(7),
        addr("[::1]:5000"),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let iterations = 20_000;
    let mut fed = 0u64;
    let packets_before = p.server.stats().packets_in;
    for i in 0..iterations {
        let bytes: Vec<u8> = match rng.below(3) {
            0 => {
                let len = rng.below(1500);
                (0..len).map(|_| rng.next() as u8).collect()
            }
            1 => {
                let len = 1 + rng.below(1400);
                let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                b[0] = [0x00, 0x13, 0x14, 0x15, 0x16, 0x86, 0x25, 0x03][rng.below(8)];
                b
            }
            _ => {
                let seed = &seeds[rng.below(seeds.len())];
                let mut b = seed.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
                if rng.below(4) == 0 {
                    b.truncate(rng.below(b.len() + 1));
                }
                if b == *seed {
                    continue; // flips cancelled out: that is a genuine packet
                }
                b
            }
        };
        let from = froms[rng.below(froms.len())];
        let now = Now {
            mono: p.now.mono + Duration::from_micros(i),
            unix_secs: p.now.unix_secs,
        };
        let (_, evs) = feed(&mut p.server, now, from, &bytes);
        fed += 1;
        assert!(
            evs.iter().all(|e| !matches!(e, SEv::Disconnected { .. })),
            "garbage must not disconnect anyone: {evs:?}"
        );
        let mut sent = 0;
        p.peers[c].client.handle_packet(
            now,
            if rng.below(2) == 0 {
                server_addr()
            } else {
                from
            },
            &bytes,
            &mut |_, _| sent += 1,
            &mut |e| panic!("garbage produced a client event: {:?}", own_client_event(e)),
        );
        assert_eq!(sent, 0);
    }
    assert!(fed > iterations / 2);
    assert_eq!(p.server.stats().packets_in, packets_before + fed);
    assert_eq!(p.peers[c].client.state(), ClientState::Connected);
    assert!(p.server.is_connected(0));
}
