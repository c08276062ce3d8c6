//! Interop against an independent netcode.io 1.02 implementation (the `renetcode` crate):
//! its client connects to our `Server`, our `Client` connects to its server, and tokens
//! cross-read. renetcode's token bytes are `client_id (u64) + standard token`, unpadded.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use renetcode::{ClientAuthentication, NetcodeClient, NetcodeServer, ServerResult};
use tickwire_netcode::*;

const PID: u64 = 0x0123_4567_89AB_CDEF;
const PRIVATE_KEY: Key = [0x77; 32];
const UNIX: u64 = 1_700_000_000;

fn server_addr() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn client_addr() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn our_token(client_id: u64) -> [u8; CONNECT_TOKEN_BYTES] {
    let ud: [u8; USER_DATA_BYTES] = std::array::from_fn(|i| i as u8);
    build_connect_token(
        &TokenParams {
            protocol_id: PID,
            client_id,
            create_unix_secs: UNIX,
            expire_secs: 60,
            timeout_secs: 5,
            server_addrs: &[server_addr()],
            user_data: ud,
            private_key: &PRIVATE_KEY,
        },
        [0x33; 24],
        [0xC2; 32],
        [0x5C; 32],
    )
    .expect("token")
}

/// Standard token -> renetcode token (client id prefix; trailing padding is ignored).
fn to_renet(client_id: u64, token: &[u8]) -> renetcode::ConnectToken {
    let mut bytes = client_id.to_le_bytes().to_vec();
    bytes.extend_from_slice(token);
    renetcode::ConnectToken::read(&mut Cursor::new(bytes)).expect("renetcode reads our token")
}

fn now_at(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        unix_secs: UNIX + ms / 1000,
    }
}

#[test]
fn renetcode_reads_our_token() {
    let t = our_token(42);
    let r = to_renet(42, &t);
    assert_eq!(r.protocol_id, PID);
    assert_eq!(r.create_timestamp, UNIX);
    assert_eq!(r.expire_timestamp, UNIX + 60);
    assert_eq!(r.xnonce, [0x33; 24]);
    assert_eq!(r.timeout_seconds, 5);
    assert_eq!(r.server_addresses[0], Some(server_addr()));
    assert_eq!(r.server_addresses[1], None);
    assert_eq!(r.client_to_server_key, [0xC2; 32]);
    assert_eq!(r.server_to_client_key, [0x5C; 32]);
    assert_eq!(&r.private_data[..], &t[61..1085]);
}

#[test]
fn we_read_and_decrypt_renetcode_tokens() {
    let addrs = vec![server_addr(), "[::1]:40001".parse().unwrap()];
    let r = renetcode::ConnectToken::generate(
        Duration::from_secs(UNIX),
        PID,
        30,
        99,
        7,
        addrs.clone(),
        Some(&[0xEE; USER_DATA_BYTES]),
        &PRIVATE_KEY,
    )
    .expect("renetcode generates");
    let mut bytes = Vec::new();
    r.write(&mut bytes).expect("write");
    let mut standard = bytes[8..].to_vec();
    standard.resize(CONNECT_TOKEN_BYTES, 0);
    let p = ConnectTokenPublic::read(&standard).expect("we read renetcode's token");
    // Known renetcode deviation: it writes an IPv6 address as 16 octets in network order,
    // while the standard and netcode.c write eight u16 segments little-endian. We follow
    // the reference, so renetcode's [::1] reads back as [::100]. IPv4 is identical.
    let renet_v6: SocketAddr = "[::100]:40001".parse().unwrap();
    assert_eq!(p.server_addrs, vec![server_addr(), renet_v6]);
    assert_eq!(p.timeout_secs, 7);
    assert_eq!(p.expire_unix_secs, UNIX + 30);
    let private = ConnectTokenPrivate::decrypt(&p, &PRIVATE_KEY).expect("private decrypts");
    assert_eq!(private.client_id, 99);
    assert_eq!(private.user_data, [0xEE; USER_DATA_BYTES]);
    assert_eq!(private.client_to_server_key, r.client_to_server_key);
    assert_eq!(private.server_addrs(), &[server_addr(), renet_v6][..]);
}

#[test]
fn renetcode_client_connects_to_our_server() {
    let mut server = Server::new(ServerConfig {
        protocol_id: PID,
        private_key: PRIVATE_KEY,
        max_clients: 8,
        public_addrs: vec![server_addr()],
    });
    let token = to_renet(7, &our_token(7));
    let mut client = NetcodeClient::new(
        Duration::ZERO,
        ClientAuthentication::Secure {
            connect_token: token,
        },
    )
    .expect("renetcode client");
    let mut ms = 0u64;
    let mut server_payloads: Vec<Vec<u8>> = Vec::new();
    let mut connected_events = 0;
    let mut client_payloads: Vec<Vec<u8>> = Vec::new();
    let dt = 20u64;
    for step in 0..200 {
        ms += dt;
        let now = now_at(ms);
        let mut to_client: Vec<Vec<u8>> = Vec::new();
        if let Some((packet, to)) = client.update(Duration::from_millis(dt)) {
            assert_eq!(to, server_addr());
            let packet = packet.to_vec();
            server.handle_packet(
                now,
                client_addr().into(),
                &packet,
                &mut |_, b| to_client.push(b.to_vec()),
                &mut |e| match e {
                    ServerEvent::Connected {
                        client_id,
                        user_data,
                        ..
                    } => {
                        assert_eq!(client_id, 7);
                        assert_eq!(user_data[5], 5);
                        connected_events += 1;
                    }
                    ServerEvent::Payload { data, .. } => server_payloads.push(data.to_vec()),
                    ServerEvent::Disconnected { .. } => panic!("unexpected disconnect"),
                },
            );
        }
        server.update(now, &mut |_, b| to_client.push(b.to_vec()), &mut |_| {});
        if client.is_connected() && step % 10 == 0 {
            server
                .send_payload(now, 0, format!("s{step}").as_bytes(), &mut |_, b| {
                    to_client.push(b.to_vec())
                })
                .expect("send to renetcode client");
            let (to, packet) = client
                .generate_payload_packet(format!("c{step}").as_bytes())
                .expect("payload packet");
            assert_eq!(to, server_addr());
            let packet = packet.to_vec();
            server.handle_packet(
                now,
                client_addr().into(),
                &packet,
                &mut |_, b| to_client.push(b.to_vec()),
                &mut |e| {
                    if let ServerEvent::Payload { data, .. } = e {
                        server_payloads.push(data.to_vec())
                    }
                },
            );
        }
        for mut b in to_client {
            if let Some(p) = client.process_packet(&mut b) {
                client_payloads.push(p.to_vec());
            }
        }
    }
    assert!(client.is_connected(), "renetcode client connected");
    assert_eq!(connected_events, 1);
    assert_eq!(server.connected_clients(), 1);
    assert!(server_payloads.len() >= 10, "{server_payloads:?}");
    assert!(client_payloads.len() >= 10, "{client_payloads:?}");
    assert_eq!(server.stats().total_drops(), 0, "{:?}", server.stats());

    // renetcode's disconnect packet is understood.
    let (_, packet) = client.disconnect().expect("disconnect packet");
    let packet = packet.to_vec();
    let mut reason = None;
    server.handle_packet(
        now_at(ms),
        client_addr().into(),
        &packet,
        &mut |_, _| {},
        &mut |e| {
            if let ServerEvent::Disconnected { reason: r, .. } = e {
                reason = Some(r)
            }
        },
    );
    assert_eq!(reason, Some(DisconnectReason::ClientDisconnected));
}

#[test]
fn our_client_connects_to_renetcode_server() {
    let mut server = NetcodeServer::new(renetcode::ServerConfig {
        current_time: Duration::from_secs(UNIX),
        max_clients: 4,
        protocol_id: PID,
        public_addresses: vec![server_addr()],
        authentication: renetcode::ServerAuthentication::Secure {
            private_key: PRIVATE_KEY,
        },
    });
    let mut client = Client::new(&our_token(11), now_at(0)).expect("client");
    let mut ms = 0;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut server_got: Vec<Vec<u8>> = Vec::new();
    let mut connected = false;
    for step in 0..200u64 {
        ms += 20;
        let now = now_at(ms);
        server.update(Duration::from_millis(20));
        let mut to_server: Vec<Vec<u8>> = Vec::new();
        client.update(now, &mut |_, b| to_server.push(b.to_vec()), &mut |e| {
            if let ClientEvent::Connected { .. } = e {
                connected = true
            }
        });
        if client.state() == ClientState::Connected && step % 10 == 0 {
            client
                .send_payload(now, format!("c{step}").as_bytes(), &mut |_, b| {
                    to_server.push(b.to_vec())
                })
                .expect("send");
            let (_, p) = server
                .generate_payload_packet(11, format!("s{step}").as_bytes())
                .expect("payload");
            let p = p.to_vec();
            client.handle_packet(
                now,
                server_addr(),
                &p,
                &mut |_, b| to_server.push(b.to_vec()),
                &mut |e| {
                    if let ClientEvent::Payload(d) = e {
                        got.push(d.to_vec())
                    }
                },
            );
        }
        let mut to_client: Vec<Vec<u8>> = Vec::new();
        for mut b in to_server {
            match server.process_packet(client_addr(), &mut b) {
                ServerResult::PacketToSend { payload, .. } => to_client.push(payload.to_vec()),
                ServerResult::ClientConnected {
                    payload, client_id, ..
                } => {
                    assert_eq!(client_id, 11);
                    to_client.push(payload.to_vec())
                }
                ServerResult::Payload { payload, .. } => server_got.push(payload.to_vec()),
                ServerResult::ClientDisconnected { .. } => panic!("unexpected disconnect"),
                ServerResult::None => {}
            }
        }
        for id in server.clients_id() {
            if let ServerResult::PacketToSend { payload, .. } = server.update_client(id) {
                to_client.push(payload.to_vec());
            }
        }
        for b in to_client {
            client.handle_packet(now, server_addr(), &b, &mut |_, _| {}, &mut |e| match e {
                ClientEvent::Connected {
                    client_index,
                    max_clients,
                } => {
                    assert_eq!((client_index, max_clients), (0, 4));
                    connected = true;
                }
                ClientEvent::Payload(d) => got.push(d.to_vec()),
                ClientEvent::StateChanged(s) => assert!(!s.is_error(), "{s:?}"),
            });
        }
    }
    assert!(connected);
    assert_eq!(client.state(), ClientState::Connected);
    assert!(got.len() >= 10, "{got:?}");
    assert!(server_got.len() >= 10, "{server_got:?}");
}
