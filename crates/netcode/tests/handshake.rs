//! In-memory server + client: handshake, payloads, keep-alive confirmation, timeouts,
//! disconnects, denial, multiple server addresses.

mod common;

use std::time::Duration;

use common::*;
use tickwire_netcode::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn handshake_completes() {
    let mut p = Pair::new(4);
    let c = p.connect_one(77);
    assert_eq!(p.peers[c].client.client_index(), Some(0));
    assert_eq!(p.peers[c].client.max_clients(), Some(4));
    assert_eq!(p.server.connected_clients(), 1);
    assert_eq!(p.server.max_clients(), 4);
    assert!(p.server.is_connected(0));
    assert_eq!(p.server.client_id(0), Some(77));
    assert_eq!(p.server.client_peer(0), Some(client_addr(0).into()));
    assert_eq!(
        p.server_events,
        vec![SEv::Connected {
            client: 0,
            client_id: 77,
            addr: client_addr(0),
            user_data: user_data(77).to_vec()
        }]
    );
    assert_eq!(
        p.peers[c].events,
        vec![
            CEv::State(ClientState::SendingChallengeResponse),
            CEv::Connected {
                client_index: 0,
                max_clients: 4
            },
            CEv::State(ClientState::Connected),
        ]
    );
    assert_eq!(p.server.stats().connects, 1);
    assert_eq!(p.server.stats().total_drops(), 0, "{:?}", p.server.stats());
    // Every reply was smaller than the 1078-byte request it answered.
    assert!(p.server_sent.iter().all(|(_, n)| *n < 1078));
}

#[test]
fn payloads_both_ways() {
    let mut p = Pair::new(2);
    let c = p.connect_one(1);
    p.client_send(c, b"hello server").expect("client send");
    p.deliver();
    assert_eq!(
        p.server_events.last(),
        Some(&SEv::Payload {
            client: 0,
            data: b"hello server".to_vec()
        })
    );
    p.server_send(0, b"hello client").expect("server send");
    p.deliver();
    assert_eq!(
        p.peers[c].events.last(),
        Some(&CEv::Payload(b"hello client".to_vec()))
    );

    let big = vec![0xAB; MAX_PAYLOAD_BYTES];
    p.client_send(c, &big).expect("1200 bytes ok");
    p.server_send(0, &big).expect("1200 bytes ok");
    p.deliver();
    assert_eq!(
        p.server_events.last(),
        Some(&SEv::Payload {
            client: 0,
            data: big.clone()
        })
    );
    assert_eq!(p.peers[c].events.last(), Some(&CEv::Payload(big.clone())));

    let too_big = vec![0; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(p.client_send(c, &too_big), Err(SendError::TooLarge));
    assert_eq!(p.server_send(0, &too_big), Err(SendError::TooLarge));
    assert_eq!(p.server_send(1, b"x"), Err(SendError::NotConnected));
    assert_eq!(p.server_send(99, b"x"), Err(SendError::NotConnected));
    assert_eq!(p.server.stats().total_drops(), 0);
}

#[test]
fn keep_alive_precedes_payloads_until_confirmed() {
    let mut p = Pair::new(2);
    let t = token(&TokenSpec::default());
    let c = p.add_client(&t);
    p.step_until(50, |p| p.server.connected_clients() == 1);
    // The client may be connected already (the server's keep-alive went out with Connected),
    // but the server has heard nothing since: unconfirmed, so a keep-alive rides along.
    assert_eq!(p.server_send(0, b"welcome"), Ok(2));
    p.deliver();
    assert_eq!(p.peers[c].client.state(), ClientState::Connected);
    assert!(p.peers[c]
        .events
        .contains(&CEv::Payload(b"welcome".to_vec())));
    // The client's keep-alive (10 Hz when idle) confirms it.
    p.step(ms(150));
    assert_eq!(p.server_send(0, b"snapshot"), Ok(1));
    p.deliver();
    assert_eq!(
        p.peers[c].events.last(),
        Some(&CEv::Payload(b"snapshot".to_vec()))
    );
}

#[test]
fn client_payload_confirms_too() {
    let mut p = Pair::new(2);
    let c = p.connect_one(5);
    p.client_send(c, b"input").expect("send");
    p.deliver();
    assert_eq!(p.server_send(0, b"snapshot"), Ok(1));
}

#[test]
fn lost_first_keep_alive_is_recovered() {
    let mut p = Pair::new(2);
    let t = token(&TokenSpec::default());
    let c = p.add_client(&t);
    // Lose the keep-alive the server sends when it accepts the response (26 bytes: prefix,
    // 1 sequence byte, client index, max clients, tag).
    p.drop_next_s2c_len = Some(26);
    p.step_until(50, |p| p.server.connected_clients() == 1);
    assert_eq!(p.drop_next_s2c_len, None, "the keep-alive was dropped");
    assert_eq!(
        p.peers[c].client.state(),
        ClientState::SendingChallengeResponse
    );
    // The client keeps resending responses (ignored: already connected); the server's
    // periodic keep-alive completes the handshake.
    p.step_until(50, |p| p.peers[0].client.state() == ClientState::Connected);
    assert!(p.drops(DropReason::AlreadyConnected) >= 1);
    assert_eq!(p.server_events.len(), 1);
}

#[test]
fn idle_connection_stays_up_with_keep_alives() {
    let mut p = Pair::new(2);
    let c = p.connect_one(3);
    for _ in 0..100 {
        p.step(ms(100)); // 10 s, timeout is 5 s
    }
    assert_eq!(p.peers[c].client.state(), ClientState::Connected);
    assert_eq!(p.server.connected_clients(), 1);
}

#[test]
fn timeout_disconnects_when_packets_stop() {
    let mut p = Pair::new(2);
    let c = p.connect_one(9);
    p.block_c2s = true;
    p.block_s2c = true;
    for _ in 0..49 {
        p.step(ms(100));
    }
    assert_eq!(p.server.connected_clients(), 1, "4.9 s < 5 s timeout");
    for _ in 0..3 {
        p.step(ms(100));
    }
    assert_eq!(p.server.connected_clients(), 0);
    assert_eq!(
        p.server_events.last(),
        Some(&SEv::Disconnected {
            client: 0,
            reason: DisconnectReason::TimedOut
        })
    );
    assert_eq!(p.peers[c].client.state(), ClientState::ConnectionTimedOut);
    assert!(p.peers[c].client.state().is_error());
    assert_eq!(p.server.stats().disconnects, 1);
}

#[test]
fn zero_timeout_disables_token_timeouts() {
    let mut p = Pair::new(2);
    // The server's own idle ceiling (DEFAULT_MAX_IDLE, 60 s) is raised out of the way here:
    // this test is about the token's timeout only (see idle.rs for the ceiling).
    p.server.set_max_idle(Duration::from_secs(3600));
    let t = token(&TokenSpec {
        timeout_secs: 0,
        ..TokenSpec::default()
    });
    let c = p.add_client(&t);
    p.step_until(50, |p| p.peers[0].client.state() == ClientState::Connected);
    p.block_c2s = true;
    p.block_s2c = true;
    p.step(Duration::from_secs(60));
    p.step(Duration::from_secs(60));
    assert_eq!(p.server.connected_clients(), 1);
    assert_eq!(p.peers[c].client.state(), ClientState::Connected);
}

#[test]
fn client_disconnect_is_seen_by_server() {
    let mut p = Pair::new(2);
    let c = p.connect_one(4);
    let mut out = Vec::new();
    p.peers[c]
        .client
        .disconnect(&mut |to, b| out.push((to, b.to_vec())));
    assert_eq!(out.len(), 10, "10 redundant disconnect packets");
    assert_eq!(p.peers[c].client.state(), ClientState::Disconnected);
    for (_, b) in out {
        p.server_inbox.push_back((client_addr(c), b));
    }
    p.deliver();
    assert_eq!(
        p.server_events.last(),
        Some(&SEv::Disconnected {
            client: 0,
            reason: DisconnectReason::ClientDisconnected
        })
    );
    assert_eq!(
        p.server_events.len(),
        2,
        "one Disconnected despite 10 packets"
    );
    assert_eq!(p.server.connected_clients(), 0);
    // The 9 redundant packets after the first are late, not drops (ordinary churn must not
    // move the drop rate).
    assert_eq!(p.drops(DropReason::UnknownAddress), 0);
    assert_eq!(p.server.stats().total_drops(), 0);
    assert_eq!(p.server.stats().late_after_disconnect, 9);
}

#[test]
fn server_disconnect_is_seen_by_client() {
    let mut p = Pair::new(2);
    let c = p.connect_one(4);
    let mut out = Vec::new();
    p.server
        .disconnect(0, &mut |to, b| out.push((to, b.to_vec())));
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|(to, _)| to.addr == client_addr(c)));
    assert_eq!(p.server.connected_clients(), 0);
    for (_, b) in out {
        p.peers[c].inbox.push_back((server_addr(), b));
    }
    p.deliver();
    assert_eq!(p.peers[c].client.state(), ClientState::Disconnected);
    assert_eq!(
        p.peers[c].events.last(),
        Some(&CEv::State(ClientState::Disconnected))
    );
    // No event for a deliberate server disconnect.
    assert_eq!(p.server_events.len(), 1);
}

#[test]
fn disconnect_all_frees_every_slot_and_slot_is_reused() {
    let mut p = Pair::new(3);
    p.connect_one(1);
    p.connect_one(2);
    assert_eq!(p.server.connected_clients(), 2);
    p.server.disconnect_all(&mut |_, _| {});
    assert_eq!(p.server.connected_clients(), 0);
    assert_eq!(p.server.stats().disconnects, 2);
    let c = p.connect_one(3);
    assert_eq!(p.peers[c].client.client_index(), Some(0));
}

#[test]
fn server_full_denies() {
    let mut p = Pair::new(1);
    p.connect_one(1);
    let t = token(&TokenSpec {
        client_id: 2,
        ..TokenSpec::default()
    });
    let c = p.add_client(&t);
    p.step_until(50, |p| {
        p.peers[1].client.state() == ClientState::ConnectionDenied
    });
    assert_eq!(
        p.peers[c].events.last(),
        Some(&CEv::State(ClientState::ConnectionDenied))
    );
    assert!(p.server.stats().denies[DenyReason::ServerFull.index()] >= 1);
    assert_eq!(p.server.connected_clients(), 1);
}

#[test]
fn not_accepting_denies() {
    let mut p = Pair::new(4);
    p.server.set_accepting(false);
    let t = token(&TokenSpec::default());
    p.add_client(&t);
    p.step_until(50, |p| {
        p.peers[0].client.state() == ClientState::ConnectionDenied
    });
    assert!(p.server.stats().denies[DenyReason::NotAccepting.index()] >= 1);
    p.server.set_accepting(true);
    let t = token(&TokenSpec {
        client_id: 2,
        ..TokenSpec::default()
    });
    p.add_client(&t);
    p.step_until(50, |p| p.peers[1].client.state() == ClientState::Connected);
}

#[test]
fn many_clients_get_distinct_slots() {
    let mut p = Pair::new(8);
    for id in 1..=8 {
        p.connect_one(id);
    }
    let mut slots: Vec<u32> = p
        .peers
        .iter()
        .filter_map(|c| c.client.client_index())
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..8).collect::<Vec<_>>());
    for (i, peer) in p.peers.iter().enumerate() {
        let slot = peer.client.client_index().map(|s| s as usize);
        assert_eq!(slot.and_then(|s| p.server.client_id(s)), Some(i as u64 + 1));
    }
}

#[test]
fn moves_to_next_server_address_on_timeout() {
    let mut p = Pair::new(2);
    let dead = addr("127.0.0.1:40001");
    let addrs = [dead, server_addr()];
    let t = token(&TokenSpec {
        addrs: &addrs,
        timeout_secs: 1,
        ..TokenSpec::default()
    });
    let c = p.add_client(&t);
    assert_eq!(p.peers[c].client.server_addr(), dead);
    p.step_until(300, |p| p.peers[0].client.state() == ClientState::Connected);
    assert_eq!(p.peers[c].client.server_addr(), server_addr());
}

#[test]
fn request_times_out_without_server() {
    let mut p = Pair::new(2);
    p.block_c2s = true;
    let t = token(&TokenSpec {
        timeout_secs: 1,
        ..TokenSpec::default()
    });
    let c = p.add_client(&t);
    p.step_until(150, |p| p.peers[0].client.state().is_error());
    assert_eq!(
        p.peers[c].client.state(),
        ClientState::ConnectionRequestTimedOut
    );
}

#[test]
fn connect_token_expires_on_client() {
    let mut p = Pair::new(2);
    p.block_c2s = true;
    let t = token(&TokenSpec {
        timeout_secs: 10,
        expire_secs: 2,
        ..TokenSpec::default()
    });
    let c = p.add_client(&t);
    p.step_until(300, |p| p.peers[0].client.state().is_error());
    assert_eq!(p.peers[c].client.state(), ClientState::ConnectTokenExpired);
}

#[test]
fn client_rejects_bad_tokens() {
    let now = start_now();
    assert!(matches!(
        Client::new(&[0u8; 100], now),
        Err(TokenError::WrongLength {
            expected: 2048,
            actual: 100
        })
    ));
    let mut t = token(&TokenSpec::default());
    t[0] = b'X';
    assert_eq!(Client::new(&t, now).err(), Some(TokenError::BadVersion));
}

#[test]
fn client_ignores_packets_from_other_addresses() {
    let mut p = Pair::new(2);
    let c = p.connect_one(1);
    // A valid server keep-alive, but from the wrong address, changes nothing.
    let mut buf = [0u8; MAX_PACKET_BYTES];
    let n = packet::encode(
        &packet::Packet::Disconnect,
        5000,
        PROTOCOL_ID,
        &S2C_KEY,
        &mut buf,
    )
    .expect("encode");
    p.peers[c]
        .inbox
        .push_back((addr("127.0.0.1:40009"), buf[..n].to_vec()));
    p.deliver();
    assert_eq!(p.peers[c].client.state(), ClientState::Connected);
    // From the right address it disconnects.
    p.peers[c]
        .inbox
        .push_back((server_addr(), buf[..n].to_vec()));
    p.deliver();
    assert_eq!(p.peers[c].client.state(), ClientState::Disconnected);
}
