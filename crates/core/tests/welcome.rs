//! The welcome is resent until the client acknowledges a snapshot, and never more than
//! `WELCOME_MAX_SENDS` times.

use std::net::SocketAddr;
use std::time::Duration;

use tickwire_client::{GameClient, GameEvent, Now};
use tickwire_core::{CoreConfig, GameServer, WELCOME_MAX_SENDS};
use tickwire_netcode::{build_connect_token, TokenParams, USER_DATA_BYTES};
use tickwire_sim::WorldConfig;

const KEY: [u8; 32] = [5; 32];

fn now(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        unix_secs: 1_700_000_000 + ms / 1000,
    }
}

/// Runs one client for `ms` milliseconds; returns how many welcomes it received.
fn welcomes(send_inputs: bool, ms_total: u64) -> u32 {
    let server_addr: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut server = GameServer::new(CoreConfig {
        protocol_id: 1,
        private_key: KEY,
        max_players: 4,
        public_addrs: vec![server_addr],
        tick_ms: 16,
        world: WorldConfig::for_players(4, 1),
        snapshot_max_entities: 8,
        query: None,
    });
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
    let mut count = 0;
    for ms in 0..ms_total {
        let t = now(ms);
        let mut up = Vec::new();
        client.update(t, &mut |_, b| up.push(b.to_vec()), &mut |_| {});
        if send_inputs && ms % 16 == 8 && client.is_connected() {
            let _ = client.send_input(t, 0, 0, 0, &mut |_, b| up.push(b.to_vec()));
        }
        let mut down = Vec::new();
        for b in up {
            server.handle_datagram(t, client_addr, &b, &mut |_, r| down.push(r.to_vec()));
        }
        if ms % 16 == 0 {
            server.tick(t, &mut |_, r| down.push(r.to_vec()));
        }
        for b in down {
            client.handle_packet(t, server_addr, &b, &mut |_, _| {}, &mut |e| {
                if let GameEvent::Welcome(_) = e {
                    count += 1;
                }
            });
        }
    }
    assert!(client.is_connected());
    count
}

#[test]
fn silent_client_gets_a_bounded_number_of_welcomes() {
    assert_eq!(welcomes(false, 4000), WELCOME_MAX_SENDS);
}

#[test]
fn acknowledging_client_stops_the_resends() {
    let n = welcomes(true, 4000);
    assert!((1..=2).contains(&n), "{n} welcomes");
}
