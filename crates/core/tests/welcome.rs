//! The welcome is resent until the client acknowledges a snapshot, and never more than
//! `WELCOME_MAX_SENDS` times. It is first sent at the first tick after the join (when the
//! player's entity is known) and tells the game, its encodings and the player's entity.

use std::net::SocketAddr;
use std::time::Duration;

use tickwire_client::{GameClient, GameEvent, Now, Welcome};
use tickwire_core::{ChannelConfig, CoreConfig, Game, GameServer, WELCOME_MAX_SENDS};
use tickwire_netcode::{build_connect_token, TokenParams, USER_DATA_BYTES};

const KEY: [u8; 32] = [5; 32];

fn now(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        unix_secs: 1_700_000_000 + ms / 1000,
    }
}

fn arena(seed: u64, max_players: usize) -> Box<dyn Game> {
    Box::new(
        tickwire_arena::Arena::new(&tickwire_game::GameConfig::new(seed, max_players, 16)).unwrap(),
    )
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    welcomes: u32,
    first_welcome: Option<Welcome>,
    /// The server's tick count when the first welcome arrived.
    first_welcome_server_tick: Option<u32>,
    /// The server's tick count when the player joined (between ticks).
    joined_server_tick: Option<u32>,
    /// The player's entity on the server, as the first welcome arrived.
    entity: Option<u32>,
    /// Reliable game events (the arena's level comes at join).
    messages: Vec<Vec<u8>>,
}

/// Runs one client for `ms` milliseconds; returns what it saw.
fn run(send_inputs: bool, ms_total: u64) -> Seen {
    let server_addr: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut server = GameServer::new(
        CoreConfig {
            protocol_id: 1,
            private_key: KEY,
            max_players: 4,
            public_addrs: vec![server_addr],
            tick_ms: 16,
            snapshot_max_entities: 8,
            channel: ChannelConfig::default(),
            query: None,
        },
        arena(1, 4),
    );
    let token = build_connect_token(
        &TokenParams {
            protocol_id: 1,
            client_id: 9,
            create_unix_secs: 1_700_000_000,
            expire_secs: 60,
            timeout_secs: 10,
            server_addrs: &[server_addr],
            user_data: [0; USER_DATA_BYTES],
            private_key: &KEY,
        },
        [3; 24],
        [4; 32],
        [6; 32],
    )
    .unwrap();
    let mut client = GameClient::new(&token, now(0)).unwrap();
    let idle = tickwire_arena::encode_input(0, 0, 0);
    let mut seen = Seen::default();
    for ms in 0..ms_total {
        let t = now(ms);
        let mut up = Vec::new();
        client.update(t, &mut |_, b| up.push(b.to_vec()), &mut |_| {});
        if send_inputs && ms % 16 == 8 && client.is_connected() {
            let _ = client.send_input(t, &idle, &mut |_, b| up.push(b.to_vec()));
        }
        let mut down = Vec::new();
        for b in up {
            server.handle_packet(t, client_addr, &b, &mut |_, r| down.push(r.to_vec()));
        }
        if server.players() == 1 && seen.joined_server_tick.is_none() {
            seen.joined_server_tick = Some(server.current_tick());
        }
        if ms % 16 == 0 {
            server.tick(t, &mut |_, r| down.push(r.to_vec()));
        }
        let server_tick = server.current_tick();
        let entity = server.player_entity(0);
        for b in down {
            client.handle_packet(t, server_addr, &b, &mut |_, _| {}, &mut |e| match e {
                GameEvent::Welcome(w) => {
                    seen.welcomes += 1;
                    if seen.first_welcome.is_none() {
                        seen.first_welcome = Some(w);
                        seen.first_welcome_server_tick = Some(server_tick);
                        seen.entity = entity;
                    }
                }
                GameEvent::Message(m) => seen.messages.push(m),
                _ => {}
            });
        }
    }
    assert!(client.is_connected());
    seen
}

#[test]
fn silent_client_gets_a_bounded_number_of_welcomes() {
    assert_eq!(run(false, 4000).welcomes, WELCOME_MAX_SENDS);
}

#[test]
fn acknowledging_client_stops_the_resends() {
    let n = run(true, 4000).welcomes;
    assert!((1..=2).contains(&n), "{n} welcomes");
}

#[test]
fn first_welcome_comes_at_the_first_tick_after_the_join_and_describes_the_game() {
    let seen = run(true, 500);
    let joined = seen.joined_server_tick.expect("joined");
    let at = seen.first_welcome_server_tick.expect("welcomed");
    assert_eq!(at, joined + 1, "the first tick after the join");
    let w = seen.first_welcome.unwrap();
    assert_eq!(w.game, tickwire_arena::NAME);
    assert_eq!(w.game_version, tickwire_arena::VERSION);
    assert_eq!(w.input_bytes as usize, tickwire_arena::INPUT_BYTES);
    assert_eq!(w.entity_fields as usize, tickwire_arena::ENTITY_FIELDS);
    assert_eq!(w.tick_ms, 16);
    assert_eq!(w.tick, at);
    assert_eq!(w.protocol_version, tickwire_proto::PROTOCOL_VERSION);
    assert_eq!(Some(w.player_id), seen.entity, "the player's own entity");
    // The arena sends its level, reliably, at join: exactly once.
    assert_eq!(seen.messages.len(), 1, "{:?}", seen.messages);
    assert_eq!(seen.messages[0][0], tickwire_arena::EVENT_LEVEL);
    assert!(tickwire_arena::decode_level(&seen.messages[0]).is_some());
}
