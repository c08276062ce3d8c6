//! A2S queries and netcode traffic share the game port: queries are answered (challenge
//! first, never larger than the request), and they never disturb netcode sessions.

use std::net::SocketAddr;
use std::time::Duration;

use tickwire_client::{GameClient, GameEvent, Now};
use tickwire_core::{ChannelConfig, CoreConfig, GameServer, QueryConfig};
use tickwire_netcode::{build_connect_token, TokenParams, USER_DATA_BYTES};

const KEY: [u8; 32] = [9; 32];
const PROTOCOL_ID: u64 = 77;

fn now(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        unix_secs: 1_700_000_000 + ms / 1000,
    }
}

fn server(addr: SocketAddr, query: bool) -> GameServer {
    let arena = tickwire_arena::Arena::new(&tickwire_game::GameConfig::new(3, 8, 16)).unwrap();
    GameServer::new(
        CoreConfig {
            protocol_id: PROTOCOL_ID,
            private_key: KEY,
            max_players: 8,
            public_addrs: vec![addr],
            tick_ms: 16,
            snapshot_max_entities: 16,
            channel: ChannelConfig::default(),
            query: query.then(|| QueryConfig {
                name: "test server".into(),
                port: addr.port(),
                secret: 42,
                // The server binary adds the seed; extra rules follow the built-in ones.
                rules: vec![("seed".into(), "3".into()), ("mode".into(), "ffa".into())],
            }),
        },
        Box::new(arena),
    )
}

const INFO: &[u8] = b"\xFF\xFF\xFF\xFFTSource Engine Query\0";
const PLAYER: &[u8] = b"\xFF\xFF\xFF\xFFU\xFF\xFF\xFF\xFF";
const RULES: &[u8] = b"\xFF\xFF\xFF\xFFV\xFF\xFF\xFF\xFF";

fn token(server_addr: SocketAddr, client_id: u64) -> Vec<u8> {
    build_connect_token(
        &TokenParams {
            protocol_id: PROTOCOL_ID,
            client_id,
            create_unix_secs: 1_700_000_000,
            expire_secs: 60,
            timeout_secs: 5,
            server_addrs: &[server_addr],
            user_data: [0; USER_DATA_BYTES],
            private_key: &KEY,
        },
        [1; 24],
        [2; 32],
        [3; 32],
    )
    .unwrap()
    .to_vec()
}

/// Asks `req` (whose last four bytes are the challenge field, or INFO without one), answers
/// the challenge and returns the full reply.
fn ask(server: &mut GameServer, t: Now, from: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut replies = Vec::new();
    server.handle_packet(t, from, req, &mut |_, b| replies.push(b.to_vec()));
    assert_eq!(replies.len(), 1);
    let challenge = replies.pop().unwrap();
    assert_eq!(challenge.len(), 9);
    assert_eq!(&challenge[..5], b"\xFF\xFF\xFF\xFFA");
    let mut full = if req == INFO {
        req.to_vec()
    } else {
        req[..5].to_vec()
    };
    full.extend_from_slice(&challenge[5..9]);
    server.handle_packet(t, from, &full, &mut |_, b| replies.push(b.to_vec()));
    assert_eq!(replies.len(), 1);
    replies.pop().unwrap()
}

#[test]
fn a2s_and_netcode_share_the_port() {
    let server_addr: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let querier: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let mut server = server(server_addr, true);
    let mut client = GameClient::new(&token(server_addr, 1), now(0)).unwrap();
    let mut snapshots = 0;
    let mut info_reply = None;
    for ms in 0..2000u64 {
        let t = now(ms);
        let mut to_server = Vec::new();
        client.update(t, &mut |_, b| to_server.push(b.to_vec()), &mut |_| {});
        if ms % 16 == 0 && client.is_connected() {
            let frame = tickwire_arena::encode_input(10, 0, 0);
            let _ = client.send_input(t, &frame, &mut |_, b| to_server.push(b.to_vec()));
        }
        // A query every 50 ms, interleaved with the session's packets.
        if ms % 50 == 0 {
            let mut replies = Vec::new();
            server.handle_packet(t, querier, INFO, &mut |to, b| {
                replies.push((to, b.to_vec()))
            });
            assert_eq!(replies.len(), 1);
            let (to, challenge) = &replies[0];
            assert_eq!(to.addr, querier);
            assert_eq!(challenge.len(), 9, "challenge reply");
            assert!(
                challenge.len() <= INFO.len(),
                "never larger than the request"
            );
            assert_eq!(&challenge[..5], b"\xFF\xFF\xFF\xFFA");
            let mut with_challenge = INFO.to_vec();
            with_challenge.extend_from_slice(&challenge[5..9]);
            replies.clear();
            server.handle_packet(t, querier, &with_challenge, &mut |to, b| {
                replies.push((to, b.to_vec()))
            });
            assert_eq!(replies.len(), 1);
            info_reply = Some(replies[0].1.clone());
        }
        let mut to_client = Vec::new();
        for b in to_server {
            server.handle_packet(t, client_addr, &b, &mut |_, r| to_client.push(r.to_vec()));
        }
        if ms % 16 == 0 {
            server.tick(t, &mut |_, r| to_client.push(r.to_vec()));
        }
        for b in to_client {
            client.handle_packet(t, server_addr, &b, &mut |_, _| {}, &mut |e| {
                if let GameEvent::Snapshot(_) = e {
                    snapshots += 1;
                }
            });
        }
    }
    assert!(client.is_connected());
    assert!(
        snapshots > 100,
        "the session kept going: {snapshots} snapshots"
    );
    let info = info_reply.unwrap();
    assert_eq!(info[4], b'I');
    let name_at = 6;
    assert!(info[name_at..].starts_with(b"test server\0"));
    // Then the map (the game's spec), the folder and the game (its name).
    let rest = &info[name_at + b"test server\0".len()..];
    assert!(
        rest.starts_with(b"arena\0tickwire\0arena\0"),
        "map, folder, game: {rest:?}"
    );
    // players byte follows name, map, folder, game (NUL-terminated) and the u16 app id.
    let mut i = name_at;
    for _ in 0..4 {
        i += info[i..].iter().position(|&b| b == 0).unwrap() + 1;
    }
    i += 2;
    assert_eq!(info[i], 1, "one player connected");
    assert_eq!(info[i + 1], 8, "max players");
    assert!(server.stats().queries_answered >= 80);
}

#[test]
fn queries_off_are_dropped_and_counted() {
    let addr: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let mut server = server(addr, false);
    let mut replies = 0;
    server.handle_packet(
        now(0),
        "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
        INFO,
        &mut |_, _| replies += 1,
    );
    assert_eq!(replies, 0);
    assert_eq!(server.stats().queries_dropped, 1);
    assert_eq!(
        server.netcode_stats().total_drops(),
        0,
        "not mistaken for netcode"
    );
}

/// Through the game server, byte by byte: INFO names the game's map and the game, PLAYER lists
/// connected players as `player-<slot>`, RULES has the built-in rules (the game among them)
/// before the configured ones (the seed the server adds).
#[test]
fn a2s_replies_describe_the_game_and_its_players() {
    let server_addr: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let querier: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let mut server = server(server_addr, true);
    let mut client = GameClient::new(&token(server_addr, 1), now(0)).unwrap();
    let mut ms = 0;
    while server.players() == 0 {
        assert!(ms < 1000, "the client never joined");
        let t = now(ms);
        let mut to_server = Vec::new();
        client.update(t, &mut |_, b| to_server.push(b.to_vec()), &mut |_| {});
        let mut to_client = Vec::new();
        for b in to_server {
            server.handle_packet(t, client_addr, &b, &mut |_, r| to_client.push(r.to_vec()));
        }
        if ms % 16 == 0 {
            server.tick(t, &mut |_, r| to_client.push(r.to_vec()));
        }
        for b in to_client {
            client.handle_packet(t, server_addr, &b, &mut |_, _| {}, &mut |_| {});
        }
        ms += 1;
    }
    let t = now(ms);
    server.tick(t, &mut |_, _| {});

    let info = ask(&mut server, t, querier, INFO);
    let mut golden = b"\xFF\xFF\xFF\xFFI\x11test server\0arena\0tickwire\0arena\0".to_vec();
    golden.extend_from_slice(&[0, 0, 1, 8, 0, b'd']);
    assert_eq!(&info[..golden.len()], &golden[..], "{info:02X?}");

    let players = ask(&mut server, t, querier, PLAYER);
    assert_eq!(&players[..6], b"\xFF\xFF\xFF\xFFD\x01", "one player");
    assert_eq!(&players[6..16], b"\x00player-0\0", "index 0, named by slot");
    assert_eq!(
        &players[16..20],
        &0i32.to_le_bytes(),
        "the arena keeps no score"
    );
    let secs = f32::from_le_bytes(players[20..24].try_into().unwrap());
    assert!((0.0..=1.0).contains(&secs), "connected for {secs} s");
    assert_eq!(players.len(), 24);

    let rules = ask(&mut server, t, querier, RULES);
    assert_eq!(&rules[..5], b"\xFF\xFF\xFF\xFFE");
    let count = i16::from_le_bytes(rules[5..7].try_into().unwrap());
    let strings: Vec<&str> = rules[7..]
        .split(|&b| b == 0)
        .map(|s| std::str::from_utf8(s).unwrap())
        .collect();
    assert_eq!(strings.last(), Some(&""), "NUL-terminated");
    let pairs: Vec<(&str, &str)> = strings[..strings.len() - 1]
        .chunks(2)
        .map(|kv| (kv[0], kv[1]))
        .collect();
    assert_eq!(pairs.len(), count as usize);
    assert_eq!(
        pairs,
        [
            ("version", env!("CARGO_PKG_VERSION")),
            ("game", "arena"),
            ("tick_ms", "16"),
            ("max_players", "8"),
            ("players", "1"),
            ("seed", "3"),
            ("mode", "ffa"),
        ]
    );
}
