//! A2S server queries: the challenge handshake, replies checked byte by byte against the
//! published format (Valve Developer Community "Server queries", and what python-a2s parses),
//! truncation to one 1400-byte packet, and garbage never answered and never panicking.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use tickwire_core::a2s::{
    is_a2s, parse_request, A2sError, A2sInfo, A2sPlayer, A2sRequest, A2sResponder, A2sSource,
    QueryKind, CHALLENGE_BUCKET_SECS, MAX_REPLY_BYTES, MAX_STRING_BYTES,
};

const INFO_REQ: &[u8] = b"\xFF\xFF\xFF\xFFTSource Engine Query\0";
const SECRET: u64 = 0x0123_4567_89AB_CDEF;

fn peer() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(203, 0, 113, 7), 27005))
}

/// A test source that counts how often it is asked.
struct Src {
    players: Vec<(String, i32, f32)>,
    rules: Vec<(String, String)>,
    info_calls: Cell<u32>,
    player_calls: Cell<u32>,
    rule_calls: Cell<u32>,
}

impl Src {
    fn new() -> Self {
        Src {
            players: vec![
                ("alice".into(), 12, 61.5),
                ("bob".into(), -3, 0.25),
                ("\u{e9}ve".into(), 0, 3600.0),
            ],
            rules: vec![
                ("tick_ms".into(), "33".into()),
                ("mp_friendlyfire".into(), "0".into()),
            ],
            info_calls: Cell::new(0),
            player_calls: Cell::new(0),
            rule_calls: Cell::new(0),
        }
    }

    fn calls(&self) -> (u32, u32, u32) {
        (
            self.info_calls.get(),
            self.player_calls.get(),
            self.rule_calls.get(),
        )
    }
}

impl A2sSource for Src {
    fn info(&self) -> A2sInfo<'_> {
        self.info_calls.set(self.info_calls.get() + 1);
        A2sInfo {
            name: "Tickwire #1",
            map: "arena",
            folder: "tickwire",
            game: "arena",
            players: 3,
            max_players: 64,
            bots: 1,
            version: "0.1.0",
            port: 40000,
        }
    }

    fn for_each_player(&self, f: &mut dyn FnMut(A2sPlayer<'_>)) {
        self.player_calls.set(self.player_calls.get() + 1);
        for (name, score, duration_secs) in &self.players {
            f(A2sPlayer {
                name,
                score: *score,
                duration_secs: *duration_secs,
            });
        }
    }

    fn for_each_rule(&self, f: &mut dyn FnMut(&str, &str)) {
        self.rule_calls.set(self.rule_calls.get() + 1);
        for (name, value) in &self.rules {
            f(name, value);
        }
    }
}

/// Reads a reply the way a client does; every read asserts there are enough bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.pos + n <= self.buf.len(), "reply ends early");
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn i16(&mut self) -> i16 {
        i16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn f32(&mut self) -> f32 {
        f32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn cstr(&mut self) -> &'a str {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .expect("string terminated");
        self.pos += nul + 1;
        std::str::from_utf8(&rest[..nul]).expect("utf-8")
    }
    fn header(&mut self) {
        assert_eq!(self.take(4), &[0xFF; 4], "simple header");
    }
    fn done(&self) {
        assert_eq!(self.pos, self.buf.len(), "trailing bytes in reply");
    }
}

/// Sends `req`, expects S2C_CHALLENGE (exactly 9 bytes) and returns the challenge.
fn expect_challenge(r: &A2sResponder, now: u64, req: &[u8], src: &Src) -> u32 {
    let mut out = [0u8; MAX_REPLY_BYTES];
    let n = r
        .handle(now, peer(), req, src, &mut out)
        .unwrap()
        .expect("a reply");
    assert_eq!(n, 9, "S2C_CHALLENGE is 9 bytes");
    assert_eq!(&out[..5], &[0xFF, 0xFF, 0xFF, 0xFF, 0x41]);
    let c = u32::from_le_bytes(out[5..9].try_into().unwrap());
    assert_eq!(c, r.challenge(now, peer()));
    assert!(
        n <= req.len(),
        "challenge reply never larger than the request"
    );
    c
}

fn with_challenge(base: &[u8], c: u32) -> Vec<u8> {
    let mut v = base.to_vec();
    v.extend_from_slice(&c.to_le_bytes());
    v
}

fn player_req(c: u32) -> Vec<u8> {
    with_challenge(b"\xFF\xFF\xFF\xFFU", c)
}

fn rules_req(c: u32) -> Vec<u8> {
    with_challenge(b"\xFF\xFF\xFF\xFFV", c)
}

fn reply(r: &A2sResponder, now: u64, req: &[u8], src: &dyn A2sSource) -> Vec<u8> {
    let mut out = [0u8; 2048];
    let n = r
        .handle(now, peer(), req, src, &mut out)
        .unwrap()
        .expect("a reply");
    assert!(n <= MAX_REPLY_BYTES);
    out[..n].to_vec()
}

#[test]
fn demultiplexing() {
    assert!(is_a2s(INFO_REQ));
    assert!(is_a2s(&[0xFF; 4]));
    assert!(!is_a2s(&[0xFF; 3]));
    assert!(!is_a2s(&[0xFE, 0xFF, 0xFF, 0xFF, 0x54]));
    assert!(!is_a2s(&[0x00, 0xFF, 0xFF, 0xFF]));
    assert!(!is_a2s(&[]));
}

#[test]
fn parse_requests() {
    assert_eq!(
        parse_request(INFO_REQ),
        Ok(A2sRequest {
            kind: QueryKind::Info,
            challenge: None
        })
    );
    assert_eq!(
        parse_request(&with_challenge(INFO_REQ, 0xAABBCCDD)),
        Ok(A2sRequest {
            kind: QueryKind::Info,
            challenge: Some(0xAABBCCDD)
        })
    );
    assert_eq!(
        parse_request(&player_req(u32::MAX)),
        Ok(A2sRequest {
            kind: QueryKind::Players,
            challenge: Some(u32::MAX)
        })
    );
    assert_eq!(
        parse_request(&rules_req(7)),
        Ok(A2sRequest {
            kind: QueryKind::Rules,
            challenge: Some(7)
        })
    );
}

#[test]
fn info_handshake_and_reply_fields() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let now = 1_000;

    // First request: no challenge -> 9 bytes, and the source is not consulted.
    let c = expect_challenge(&r, now, INFO_REQ, &src);
    assert_ne!(c, 0);
    assert_ne!(c, u32::MAX);
    assert_eq!(src.calls(), (0, 0, 0));

    let out = reply(&r, now + 1, &with_challenge(INFO_REQ, c), &src);
    assert_eq!(src.calls(), (1, 0, 0));
    let mut rd = Reader::new(&out);
    rd.header();
    assert_eq!(rd.u8(), 0x49, "S2A_INFO");
    assert_eq!(rd.u8(), 17, "protocol");
    assert_eq!(rd.cstr(), "Tickwire #1");
    assert_eq!(rd.cstr(), "arena");
    assert_eq!(rd.cstr(), "tickwire");
    assert_eq!(rd.cstr(), "arena", "game: the game's name");
    assert_eq!(rd.u16(), 0, "app id");
    assert_eq!(rd.u8(), 3, "players");
    assert_eq!(rd.u8(), 64, "max players");
    assert_eq!(rd.u8(), 1, "bots");
    assert_eq!(rd.u8(), b'd', "dedicated");
    let env = rd.u8();
    let expected_env = if cfg!(target_os = "windows") {
        b'w'
    } else if cfg!(target_os = "macos") {
        b'm'
    } else {
        b'l'
    };
    assert_eq!(env, expected_env, "environment");
    assert_eq!(rd.u8(), 0, "visibility");
    assert_eq!(rd.u8(), 0, "vac");
    assert_eq!(rd.cstr(), "0.1.0");
    assert_eq!(rd.u8(), 0x80, "EDF: port only");
    assert_eq!(rd.u16(), 40000, "port");
    rd.done();

    // The exact bytes, for the record.
    let mut golden = b"\xFF\xFF\xFF\xFF\x49\x11Tickwire #1\0arena\0tickwire\0arena\0".to_vec();
    golden.extend_from_slice(&[0x00, 0x00, 3, 64, 1, b'd', expected_env, 0, 0]);
    golden.extend_from_slice(b"0.1.0\0\x80");
    golden.extend_from_slice(&40000u16.to_le_bytes());
    assert_eq!(out, golden);
}

#[test]
fn players_handshake_and_reply_fields() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let now = 50;
    // -1 (what the VDC page says) and 0 (what python-a2s sends first) both mean "no challenge".
    let c = expect_challenge(&r, now, &player_req(u32::MAX), &src);
    assert_eq!(expect_challenge(&r, now, &player_req(0), &src), c);
    assert_eq!(src.calls(), (0, 0, 0));

    let out = reply(&r, now, &player_req(c), &src);
    assert_eq!(src.calls(), (0, 1, 0));
    let mut rd = Reader::new(&out);
    rd.header();
    assert_eq!(rd.u8(), 0x44, "S2A_PLAYER");
    assert_eq!(rd.u8(), 3, "count");
    for (i, (name, score, dur)) in src.players.iter().enumerate() {
        assert_eq!(rd.u8() as usize, i, "index");
        assert_eq!(rd.cstr(), name);
        assert_eq!(rd.i32(), *score);
        assert_eq!(rd.f32(), *dur);
    }
    rd.done();
    let mut golden = b"\xFF\xFF\xFF\xFF\x44\x03".to_vec();
    golden.extend_from_slice(b"\x00alice\0");
    golden.extend_from_slice(&12i32.to_le_bytes());
    golden.extend_from_slice(&61.5f32.to_le_bytes());
    golden.extend_from_slice(b"\x01bob\0");
    golden.extend_from_slice(&(-3i32).to_le_bytes());
    golden.extend_from_slice(&0.25f32.to_le_bytes());
    golden.extend_from_slice(b"\x02\xC3\xA9ve\0");
    golden.extend_from_slice(&0i32.to_le_bytes());
    golden.extend_from_slice(&3600f32.to_le_bytes());
    assert_eq!(out, golden);
}

#[test]
fn rules_handshake_and_reply_fields() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let now = 7_777;
    let c = expect_challenge(&r, now, &rules_req(u32::MAX), &src);
    assert_eq!(src.calls(), (0, 0, 0));
    let out = reply(&r, now, &rules_req(c), &src);
    assert_eq!(src.calls(), (0, 0, 1));
    let mut rd = Reader::new(&out);
    rd.header();
    assert_eq!(rd.u8(), 0x45, "S2A_RULES");
    assert_eq!(rd.i16(), 2, "count");
    assert_eq!(rd.cstr(), "tick_ms");
    assert_eq!(rd.cstr(), "33");
    assert_eq!(rd.cstr(), "mp_friendlyfire");
    assert_eq!(rd.cstr(), "0");
    rd.done();
    assert_eq!(
        out,
        b"\xFF\xFF\xFF\xFF\x45\x02\x00tick_ms\x0033\x00mp_friendlyfire\x000\x00"
    );
}

#[test]
fn wrong_expired_and_foreign_challenges_get_a_challenge_again() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let t0 = 10 * CHALLENGE_BUCKET_SECS; // start of a bucket
    let c = r.challenge(t0, peer());

    // Wrong value.
    for req in [
        with_challenge(INFO_REQ, c ^ 1),
        player_req(c.wrapping_add(1)),
        rules_req(!c),
    ] {
        assert_eq!(expect_challenge(&r, t0, &req, &src), c);
    }
    // Another address (same IP, other port; other IP) must earn its own challenge.
    let other_port = SocketAddr::from((Ipv4Addr::new(203, 0, 113, 7), 27006));
    let other_ip = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 27005));
    let mut out = [0u8; MAX_REPLY_BYTES];
    for p in [other_port, other_ip] {
        let n = r
            .handle(t0, p, &player_req(c), &src, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(n, 9);
        assert_eq!(out[4], 0x41);
        assert_ne!(u32::from_le_bytes(out[5..9].try_into().unwrap()), c);
    }
    // Another secret (a restarted server) does not accept it either.
    let restarted = A2sResponder::new(SECRET ^ 0xFFFF);
    let n = restarted
        .handle(t0, peer(), &player_req(c), &src, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(n, 9);
    assert_eq!(src.calls(), (0, 0, 0));

    // Still valid through the next bucket (30..60 s of life) ...
    assert!(r.is_valid_challenge(t0 + CHALLENGE_BUCKET_SECS - 1, peer(), c));
    assert!(r.is_valid_challenge(t0 + 2 * CHALLENGE_BUCKET_SECS - 1, peer(), c));
    assert_eq!(
        reply(&r, t0 + 2 * CHALLENGE_BUCKET_SECS - 1, &player_req(c), &src)[4],
        0x44
    );
    // ... and expired after that: a fresh (different) challenge is handed out.
    let late = t0 + 2 * CHALLENGE_BUCKET_SECS;
    assert!(!r.is_valid_challenge(late, peer(), c));
    let fresh = expect_challenge(&r, late, &with_challenge(INFO_REQ, c), &src);
    assert_ne!(fresh, c);
    assert_eq!(
        reply(&r, late, &with_challenge(INFO_REQ, fresh), &src)[4],
        0x49
    );
}

#[test]
fn challenges_are_deterministic_and_never_sentinels() {
    let a = A2sResponder::new(SECRET);
    let b = A2sResponder::new(SECRET);
    let mut rng = Rng(99);
    for _ in 0..2_000 {
        let ip = Ipv4Addr::from(rng.next() as u32);
        let p = SocketAddr::from((ip, rng.next() as u16));
        let now = rng.next() % 1_000_000_000;
        let c = a.challenge(now, p);
        assert_eq!(c, b.challenge(now, p));
        assert!(c != 0 && c != u32::MAX);
        assert!(a.is_valid_challenge(now, p, c));
    }
    // Works at time zero too (no previous bucket).
    assert!(a.is_valid_challenge(0, peer(), a.challenge(0, peer())));
    // IPv6 peers work.
    let v6: SocketAddr = "[2001:db8::1]:27015".parse().unwrap();
    assert!(a.is_valid_challenge(5, v6, a.challenge(5, v6)));
}

/// Many players with long names: the reply is cut to one packet, the count byte matches the
/// entries written, and they are the first ones in the source's order.
#[test]
fn long_player_list_is_truncated_to_one_packet() {
    let r = A2sResponder::new(SECRET);
    let mut src = Src::new();
    src.players = (0..200)
        .map(|i| (format!("player-{i:03}-{}", "x".repeat(40)), i, i as f32))
        .collect();
    let c = r.challenge(0, peer());
    let out = reply(&r, 0, &player_req(c), &src);
    assert!(out.len() <= MAX_REPLY_BYTES);
    let mut rd = Reader::new(&out);
    rd.header();
    assert_eq!(rd.u8(), 0x44);
    let count = rd.u8() as usize;
    // Each entry: 1 + (51 + 1) + 4 + 4 = 61 bytes; 6 bytes of header -> 22 entries fit.
    assert_eq!(count, (MAX_REPLY_BYTES - 6) / 61);
    for i in 0..count {
        assert_eq!(rd.u8() as usize, i);
        assert_eq!(rd.cstr(), src.players[i].0);
        assert_eq!(rd.i32(), i as i32);
        assert_eq!(rd.f32(), i as f32);
    }
    rd.done();
    assert!(
        out.len() + 61 > MAX_REPLY_BYTES,
        "no room was left for another"
    );

    // Many short names: capped at 255 entries by the count byte only if they fit; they don't.
    src.players = (0..1000).map(|i| (String::new(), i, 0.0)).collect();
    let out = reply(&r, 0, &player_req(c), &src);
    assert_eq!(out[5] as usize, (MAX_REPLY_BYTES - 6) / 10);
    assert_eq!(out.len(), 6 + out[5] as usize * 10);
}

#[test]
fn long_rules_are_truncated_to_one_packet() {
    let r = A2sResponder::new(SECRET);
    let mut src = Src::new();
    src.rules = (0..500)
        .map(|i| (format!("rule_{i:04}"), "v".repeat(20)))
        .collect();
    let c = r.challenge(0, peer());
    let out = reply(&r, 0, &rules_req(c), &src);
    assert!(out.len() <= MAX_REPLY_BYTES);
    let mut rd = Reader::new(&out);
    rd.header();
    assert_eq!(rd.u8(), 0x45);
    let count = rd.i16() as usize;
    // Each rule: 10 + 21 = 31 bytes after a 7-byte header.
    assert_eq!(count, (MAX_REPLY_BYTES - 7) / 31);
    for i in 0..count {
        assert_eq!(rd.cstr(), src.rules[i].0);
        assert_eq!(rd.cstr(), src.rules[i].1);
    }
    rd.done();
}

/// Oversized and NUL-containing strings are cut so the reply stays parseable and in one packet.
#[test]
fn strings_are_cut_to_fit() {
    struct Huge(String);
    impl A2sSource for Huge {
        fn info(&self) -> A2sInfo<'_> {
            A2sInfo {
                name: &self.0,
                map: &self.0,
                folder: &self.0,
                game: &self.0,
                players: 0,
                max_players: 0,
                bots: 0,
                version: "bad\0version",
                port: 1,
            }
        }
        fn for_each_player(&self, f: &mut dyn FnMut(A2sPlayer<'_>)) {
            f(A2sPlayer {
                name: &self.0,
                score: 1,
                duration_secs: 1.0,
            });
        }
        fn for_each_rule(&self, _f: &mut dyn FnMut(&str, &str)) {}
    }
    // 'é' is two bytes, so MAX_STRING_BYTES (odd) falls inside a char.
    let src = Huge("\u{e9}".repeat(2_000));
    let r = A2sResponder::new(SECRET);
    let c = r.challenge(0, peer());
    let out = reply(&r, 0, &with_challenge(INFO_REQ, c), &src);
    assert!(out.len() <= MAX_REPLY_BYTES);
    let mut rd = Reader::new(&out);
    rd.header();
    assert_eq!(rd.u8(), 0x49);
    assert_eq!(rd.u8(), 17);
    let cut = "\u{e9}".repeat(MAX_STRING_BYTES / 2);
    for _ in 0..4 {
        assert_eq!(rd.cstr(), cut);
    }
    rd.take(9);
    assert_eq!(rd.cstr(), "bad");
    assert_eq!(rd.u8(), 0x80);
    assert_eq!(rd.u16(), 1);
    rd.done();

    let out = reply(&r, 0, &player_req(c), &src);
    assert_eq!(out[5], 1);
    let mut rd = Reader::new(&out[6..]);
    assert_eq!(rd.u8(), 0);
    assert_eq!(rd.cstr(), cut);
}

#[test]
fn small_output_buffer_sends_nothing_rather_than_a_broken_reply() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let mut tiny = [0u8; 8];
    assert_eq!(r.handle(0, peer(), INFO_REQ, &src, &mut tiny), Ok(None));
    let c = r.challenge(0, peer());
    let mut small = [0u8; 20];
    assert_eq!(
        r.handle(0, peer(), &with_challenge(INFO_REQ, c), &src, &mut small),
        Ok(None)
    );
    // A player list in a small buffer is cut, not dropped: header (6) + "alice" entry (15).
    let mut small = [0u8; 25];
    let n = r
        .handle(0, peer(), &player_req(c), &src, &mut small)
        .unwrap()
        .unwrap();
    assert_eq!(&small[..6], b"\xFF\xFF\xFF\xFF\x44\x01");
    assert_eq!(n, 6 + 1 + 6 + 8);
}

#[test]
fn malformed_requests_are_errors() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let mut out = [0u8; MAX_REPLY_BYTES];
    let c = r.challenge(0, peer());
    let cases: Vec<(Vec<u8>, A2sError)> = vec![
        (vec![], A2sError::TooShort { len: 0 }),
        (vec![0xFF; 4], A2sError::TooShort { len: 4 }),
        (vec![0x01, 0xFF, 0xFF, 0xFF, 0x54], A2sError::NotA2s),
        (vec![0xFE, 0xFF, 0xFF, 0xFF], A2sError::NotA2s),
        (
            b"\xFF\xFF\xFF\xFFW\xFF\xFF\xFF\xFF".to_vec(),
            A2sError::UnknownType(0x57),
        ),
        (b"\xFF\xFF\xFF\xFFi".to_vec(), A2sError::UnknownType(b'i')),
        (
            b"\xFF\xFF\xFF\xFFTSource Engine Query".to_vec(),
            A2sError::Malformed(QueryKind::Info),
        ),
        (
            b"\xFF\xFF\xFF\xFFTSource Engine Querx\0".to_vec(),
            A2sError::Malformed(QueryKind::Info),
        ),
        (
            [INFO_REQ, &[1, 2, 3]].concat(),
            A2sError::Malformed(QueryKind::Info),
        ),
        (
            [&with_challenge(INFO_REQ, c)[..], &[0]].concat(),
            A2sError::Malformed(QueryKind::Info),
        ),
        (
            [INFO_REQ, &[0u8; 1175]].concat(),
            A2sError::Malformed(QueryKind::Info),
        ),
        (
            b"\xFF\xFF\xFF\xFFU".to_vec(),
            A2sError::Malformed(QueryKind::Players),
        ),
        (
            player_req(c)[..8].to_vec(),
            A2sError::Malformed(QueryKind::Players),
        ),
        (
            [&player_req(c)[..], &[0]].concat(),
            A2sError::Malformed(QueryKind::Players),
        ),
        (
            rules_req(c)[..7].to_vec(),
            A2sError::Malformed(QueryKind::Rules),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(
            r.handle(0, peer(), &req, &src, &mut out),
            Err(want),
            "{req:02X?}"
        );
        assert!(!want.to_string().is_empty());
    }
    // Every proper prefix of a valid request is an error.
    for full in [with_challenge(INFO_REQ, c), player_req(c), rules_req(c)] {
        for len in 0..full.len() {
            if full.len() == 29 && len == INFO_REQ.len() {
                continue; // INFO without its challenge is itself a valid request
            }
            assert!(r.handle(0, peer(), &full[..len], &src, &mut out).is_err());
        }
    }
    assert_eq!(src.calls(), (0, 0, 0));
    let e: Box<dyn std::error::Error> = Box::new(A2sError::NotA2s);
    assert!(e.to_string().contains("FF FF FF FF"));
}

/// xorshift64*: a small deterministic PRNG for the garbage tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Seeded garbage, garbage behind a valid header and bit-flipped valid requests: never a panic,
/// never a reply larger than the request unless the request proved its address, and a reply is
/// only ever one of the four known shapes.
#[test]
fn garbage_never_panics_and_never_amplifies() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let mut rng = Rng(0x5EED);
    let mut out = [0u8; MAX_REPLY_BYTES];
    let now = 123_456;
    let c = r.challenge(now, peer());
    let templates = [
        INFO_REQ.to_vec(),
        with_challenge(INFO_REQ, c),
        player_req(u32::MAX),
        player_req(c),
        rules_req(0),
        rules_req(c),
    ];
    let mut answered = 0;
    for i in 0..30_000 {
        let req: Vec<u8> = match i % 3 {
            0 => {
                let len = (rng.next() % 64) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            }
            1 => {
                let len = (rng.next() % 40) as usize;
                let mut v = vec![0xFF; 4];
                v.extend((0..len).map(|_| rng.next() as u8));
                if len > 0 {
                    v[4] = [0x54, 0x55, 0x56][(rng.next() % 3) as usize];
                }
                v
            }
            _ => {
                let mut v = templates[(rng.next() % 6) as usize].clone();
                let flips = 1 + rng.next() % 3;
                for _ in 0..flips {
                    let at = (rng.next() as usize) % v.len();
                    v[at] ^= 1 << (rng.next() % 8);
                }
                if rng.next() % 4 == 0 {
                    let cut = (rng.next() as usize) % (v.len() + 1);
                    v.truncate(cut);
                }
                v
            }
        };
        match r.handle(now, peer(), &req, &src, &mut out) {
            Err(_) => {}
            Ok(None) => panic!("full-size buffer always gets a reply"),
            Ok(Some(n)) => {
                answered += 1;
                assert!(n <= MAX_REPLY_BYTES);
                assert_eq!(&out[..4], &[0xFF; 4]);
                let parsed = parse_request(&req).expect("only well-formed requests are answered");
                if out[4] == 0x41 {
                    assert_eq!(n, 9);
                    assert!(n <= req.len());
                } else {
                    assert_eq!(
                        parsed.challenge,
                        Some(c),
                        "full reply only after the challenge"
                    );
                }
            }
        }
    }
    assert!(
        answered > 0,
        "the bit-flip cases include some valid requests"
    );
}

/// What python-a2s does on the wire, replayed in-process: INFO -> challenge -> INFO+challenge,
/// then PLAYER/RULES starting with challenge 0.
#[test]
fn python_a2s_sequence() {
    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let now = 42;
    let c = expect_challenge(&r, now, INFO_REQ, &src);
    assert_eq!(reply(&r, now, &with_challenge(INFO_REQ, c), &src)[4], 0x49);
    let c = expect_challenge(&r, now, &player_req(0), &src);
    assert_eq!(reply(&r, now, &player_req(c), &src)[4], 0x44);
    let c = expect_challenge(&r, now, &rules_req(0), &src);
    assert_eq!(reply(&r, now, &rules_req(c), &src)[4], 0x45);
}

/// Serves A2S on a loopback socket and runs the real python-a2s client against it.
/// Needs `pip install python-a2s`; run with
/// `PYTHON=python3 cargo test -p tickwire-core --test a2s -- --ignored python_a2s_client`.
#[test]
#[ignore = "needs python3 with python-a2s installed"]
fn python_a2s_client() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        r#"
import a2s
addr = ("127.0.0.1", {port})
i = a2s.info(addr)
print(i.protocol, i.server_name, i.map_name, i.folder, i.game, i.player_count, i.max_players,
      i.bot_count, i.server_type, i.platform, i.password_protected, i.vac_enabled, i.version,
      hex(i.edf), i.port, sep="|")
for p in a2s.players(addr):
    print("P", p.index, p.name, p.score, p.duration, sep="|")
for k, v in a2s.rules(addr).items():
    print("R", k, v, sep="|")
"#
    );
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");

    let r = A2sResponder::new(SECRET);
    let src = Src::new();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 2048];
    let mut out = [0u8; MAX_REPLY_BYTES];
    let mut replies = 0;
    // python-a2s makes 6 round trips; serve until it has had them or 20 s pass.
    while replies < 6 && start.elapsed() < Duration::from_secs(20) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break; // python gave up (or is missing a2s): report its stderr below
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if !is_a2s(&buf[..n]) {
            continue;
        }
        let now = start.elapsed().as_secs();
        if let Ok(Some(len)) = r.handle(now, from, &buf[..n], &src, &mut out) {
            sock.send_to(&out[..len], from).unwrap();
            replies += 1;
        }
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let env = if cfg!(target_os = "windows") {
        "w"
    } else if cfg!(target_os = "macos") {
        "m"
    } else {
        "l"
    };
    let expected = format!(
        "17|Tickwire #1|arena|tickwire|arena|3|64|1|d|{env}|False|False|0.1.0|0x80|40000\n\
         P|0|alice|12|61.5\nP|1|bob|-3|0.25\nP|2|\u{e9}ve|0|3600.0\n\
         R|tick_ms|33\nR|mp_friendlyfire|0\n"
    );
    assert_eq!(stdout, expected);
}
