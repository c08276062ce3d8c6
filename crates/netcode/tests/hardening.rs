//! Regression tests for the hostile-probe findings: a departed client's handshake replayed from
//! its old address must not resurrect the session; a "no timeout" token must not hold a slot
//! forever; a clean leave must not count drops. All on virtual time.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tickwire_netcode::packet::{self, Packet};
use tickwire_netcode::server::{DEFAULT_MAX_IDLE, RECENT_DISCONNECT_WINDOW};
use tickwire_netcode::*;

/// Feeds one datagram to the server; returns its replies and events.
fn feed(s: &mut Server, now: Now, from: SocketAddr, bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<SEv>) {
    let mut out = Vec::new();
    let mut evs = Vec::new();
    s.handle_packet(
        now,
        from.into(),
        bytes,
        &mut |_, b| out.push(b.to_vec()),
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

fn at(start: Now, secs_later: u64) -> Now {
    Now {
        mono: start.mono + Duration::from_secs(secs_later),
        unix_secs: start.unix_secs + secs_later,
    }
}

/// What a passive attacker captured of one handshake: the request and the response.
struct Captured {
    request: Vec<u8>,
    response: Vec<u8>,
}

/// Connects `client_id` from `from` by hand with `tok`; returns the captured handshake.
fn handshake(s: &mut Server, now: Now, from: SocketAddr, tok: &[u8]) -> Captured {
    let request = request_from_token(tok);
    let (out, _) = feed(s, now, from, &request);
    assert_eq!(out.len(), 1, "challenge");
    let mut scratch = [0u8; MAX_PACKET_BYTES];
    let d = packet::decode(&out[0], PROTOCOL_ID, &S2C_KEY, &mut scratch).expect("challenge");
    let Packet::Challenge {
        challenge_sequence,
        token,
    } = d.packet
    else {
        panic!("expected a challenge, got {:?}", d.packet);
    };
    let response = enc(
        &Packet::Response {
            challenge_sequence,
            token,
        },
        0,
        &C2S_KEY,
    );
    let (out, evs) = feed(s, now, from, &response);
    assert_eq!(out.len(), 1, "keep-alive");
    assert!(matches!(evs[..], [SEv::Connected { .. }]), "{evs:?}");
    Captured { request, response }
}

/// Replays the captured handshake 11 times (22 packets, as the probe did) at `now`; asserts
/// nothing is sent and no session comes back.
fn replay(s: &mut Server, now: Now, from: SocketAddr, c: &Captured) {
    for _ in 0..11 {
        for p in [&c.request, &c.response] {
            let (out, evs) = feed(s, now, from, p);
            assert!(out.is_empty(), "nothing is sent to a replayed handshake");
            assert!(
                evs.is_empty(),
                "no session from a replayed handshake: {evs:?}"
            );
        }
    }
    assert_eq!(s.connected_clients(), 0);
}

#[test]
fn replayed_handshake_does_not_resurrect_a_departed_session() {
    let start = start_now();
    let mut s = Server::new(server_config(4));
    let from = client_addr(0);
    let tok = token(&TokenSpec {
        expire_secs: 120,
        ..TokenSpec::default()
    });
    let captured = handshake(&mut s, start, from, &tok);

    // The client leaves cleanly (its first disconnect packet ends the session).
    let d = enc(&Packet::Disconnect, 1, &C2S_KEY);
    let (_, evs) = feed(&mut s, at(start, 1), from, &d);
    assert_eq!(
        evs,
        vec![SEv::Disconnected {
            client: 0,
            reason: DisconnectReason::ClientDisconnected
        }]
    );

    // Replayed right away and long after (token still valid both times).
    replay(&mut s, at(start, 2), from, &captured);
    replay(&mut s, at(start, 60), from, &captured);
    assert_eq!(s.stats().dropped(DropReason::TokenRetired), 22);
    assert_eq!(s.stats().connects, 1);

    // The same client with a fresh token (new MAC) reconnects at once, from the same address.
    let fresh = token(&TokenSpec {
        create: UNIX_START + 60,
        expire_secs: 120,
        ..TokenSpec::default()
    });
    handshake(&mut s, at(start, 61), from, &fresh);
    assert_eq!(s.connected_clients(), 1);
    assert_eq!(s.stats().connects, 2);

    // Once the spent token has expired it is refused as expired, as any other.
    s.disconnect(0, &mut |_, _| {});
    let (out, _) = feed(&mut s, at(start, 200), from, &captured.request);
    assert!(out.is_empty());
    assert_eq!(s.stats().dropped(DropReason::TokenExpired), 1);
}

#[test]
fn replayed_handshake_after_timeout_or_kick_is_refused() {
    let start = start_now();
    let mut s = Server::new(server_config(4));
    let tok = token(&TokenSpec {
        client_id: 7,
        expire_secs: 300,
        timeout_secs: 5,
        ..TokenSpec::default()
    });
    let captured = handshake(&mut s, start, client_addr(1), &tok);
    let mut evs = Vec::new();
    s.update(at(start, 6), &mut |_, _| {}, &mut |e| {
        evs.push(own_server_event(e))
    });
    assert_eq!(
        evs,
        vec![SEv::Disconnected {
            client: 0,
            reason: DisconnectReason::TimedOut
        }]
    );
    replay(&mut s, at(start, 7), client_addr(1), &captured);

    // Kicked by the server: same story.
    let tok2 = token(&TokenSpec {
        client_id: 8,
        expire_secs: 300,
        ..TokenSpec::default()
    });
    let captured2 = handshake(&mut s, at(start, 8), client_addr(2), &tok2);
    s.disconnect(0, &mut |_, _| {});
    replay(&mut s, at(start, 9), client_addr(2), &captured2);
    replay(&mut s, at(start, 100), client_addr(2), &captured2);
    assert_eq!(s.stats().dropped(DropReason::TokenRetired), 33);
    assert_eq!(s.stats().connects, 2);
}

#[test]
fn no_timeout_token_is_capped_by_max_idle() {
    let mut p = Pair::new(2);
    assert_eq!(p.server.max_idle(), DEFAULT_MAX_IDLE);
    let t = token(&TokenSpec {
        timeout_secs: -1,
        expire_secs: 3600,
        ..TokenSpec::default()
    });
    let c = p.add_client(&t);
    p.step_until(50, |p| p.peers[c].client.state() == ClientState::Connected);
    // The client vanishes.
    p.block_c2s = true;
    p.block_s2c = true;
    let last_heard = p.now.mono;
    p.step(DEFAULT_MAX_IDLE - Duration::from_secs(1));
    assert_eq!(p.server.connected_clients(), 1, "not yet idle for max_idle");
    p.step(Duration::from_secs(1));
    assert!(p.now.mono >= last_heard + DEFAULT_MAX_IDLE);
    assert_eq!(p.server.connected_clients(), 0, "slot freed after max_idle");
    assert_eq!(
        p.server_events.last(),
        Some(&SEv::Disconnected {
            client: 0,
            reason: DisconnectReason::TimedOut
        })
    );
}

#[test]
fn max_idle_is_configurable_and_caps_long_token_timeouts() {
    let mut p = Pair::new(2);
    p.server.set_max_idle(Duration::from_secs(10));
    assert_eq!(p.server.max_idle(), Duration::from_secs(10));
    let t = token(&TokenSpec {
        timeout_secs: 300,
        expire_secs: 3600,
        ..TokenSpec::default()
    });
    let c = p.add_client(&t);
    p.step_until(50, |p| p.peers[c].client.state() == ClientState::Connected);
    // Still talking: never idle, stays connected well past max_idle.
    for _ in 0..30 {
        p.step(Duration::from_secs(1));
    }
    assert_eq!(p.server.connected_clients(), 1);
    p.block_c2s = true;
    p.step(Duration::from_secs(9));
    assert_eq!(p.server.connected_clients(), 1);
    p.step(Duration::from_secs(1));
    assert_eq!(p.server.connected_clients(), 0);
    // A ceiling below MIN_MAX_IDLE is raised to it.
    p.server.set_max_idle(Duration::ZERO);
    assert_eq!(p.server.max_idle(), server::MIN_MAX_IDLE);
}

#[test]
fn no_timeout_pending_handshake_expires_at_max_idle() {
    let start = start_now();
    let mut s = Server::new(server_config(2));
    let from = client_addr(0);
    let tok = token(&TokenSpec {
        timeout_secs: -1,
        expire_secs: 3600,
        ..TokenSpec::default()
    });
    let (out, _) = feed(&mut s, start, from, &request_from_token(&tok));
    assert_eq!(out.len(), 1);
    s.update(at(start, 60), &mut |_, _| {}, &mut |_| {});
    // The pending entry is gone: a keep-alive from there is an unknown address now.
    let ka = enc(
        &Packet::KeepAlive {
            client_index: 0,
            max_clients: 0,
        },
        0,
        &C2S_KEY,
    );
    feed(&mut s, at(start, 60), from, &ka);
    assert_eq!(s.stats().dropped(DropReason::UnknownAddress), 1);
}

#[test]
fn clean_leaves_count_no_drops() {
    let mut p = Pair::new(4);
    for round in 0..3u64 {
        let c = p.connect_one(10 + round);
        for _ in 0..5 {
            p.step(Duration::from_millis(100));
        }
        let mut out = Vec::new();
        p.peers[c]
            .client
            .disconnect(&mut |to, b| out.push((to, b.to_vec())));
        assert_eq!(out.len(), 10);
        for (_, b) in out {
            p.server_inbox.push_back((client_addr(c), b));
        }
        p.deliver();
        p.step(Duration::from_millis(100));
    }
    assert_eq!(p.server.connected_clients(), 0);
    assert_eq!(p.drops(DropReason::UnknownAddress), 0);
    assert_eq!(p.server.stats().total_drops(), 0);
    assert_eq!(p.server.stats().late_after_disconnect, 27);
    assert_eq!(p.server.stats().disconnects, 3);
}

#[test]
fn packets_in_flight_after_a_server_disconnect_are_late_not_drops() {
    let mut p = Pair::new(2);
    let c = p.connect_one(3);
    // The server kicks the client; the client sends a payload before it hears of it.
    p.server.disconnect(0, &mut |_, _| {});
    p.client_send(c, b"still here")
        .expect("client thinks it is connected");
    p.deliver();
    assert_eq!(p.server.stats().late_after_disconnect, 1);
    assert_eq!(p.server.stats().total_drops(), 0);

    // After the window, packets from that address are unknown again.
    let late_ka = enc(
        &Packet::KeepAlive {
            client_index: 0,
            max_clients: 0,
        },
        500,
        &C2S_KEY,
    );
    let later = Now {
        mono: p.now.mono + RECENT_DISCONNECT_WINDOW,
        unix_secs: p.now.unix_secs + RECENT_DISCONNECT_WINDOW.as_secs(),
    };
    feed(&mut p.server, later, client_addr(c), &late_ka);
    assert_eq!(p.drops(DropReason::UnknownAddress), 1);
}

#[test]
fn timed_out_sessions_are_not_treated_as_late() {
    let mut p = Pair::new(2);
    let c = p.connect_one(3);
    p.block_c2s = true;
    p.step(Duration::from_secs(6));
    assert_eq!(p.server.connected_clients(), 0);
    p.block_c2s = false;
    let ka = enc(
        &Packet::KeepAlive {
            client_index: 0,
            max_clients: 0,
        },
        9000,
        &C2S_KEY,
    );
    let now = p.now;
    feed(&mut p.server, now, client_addr(c), &ka);
    assert_eq!(p.server.stats().late_after_disconnect, 0);
    assert_eq!(p.drops(DropReason::UnknownAddress), 1);
}
