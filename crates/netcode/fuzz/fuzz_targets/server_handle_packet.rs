//! Fuzz `Server::handle_packet`: a server with one connected client (known keys) and one
//! pending handshake receives a sequence of fuzzer-chosen datagrams, raw or sealed with the
//! client's real key so the post-decryption paths are reached too. Replies must never be
//! larger than the datagram they answer.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::packet::{self, Packet};
use tickwire_netcode::*;

const PID: u64 = 0x7465_7374;
const PRIVATE_KEY: Key = [1; 32];
const C2S: Key = [2; 32];
const S2C: Key = [3; 32];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn token(client_id: u64) -> [u8; CONNECT_TOKEN_BYTES] {
    build_connect_token(
        &TokenParams {
            protocol_id: PID,
            client_id,
            create_unix_secs: 1000,
            expire_secs: 60,
            timeout_secs: 5,
            server_addrs: &[addr(40000)],
            user_data: [0; USER_DATA_BYTES],
            private_key: &PRIVATE_KEY,
        },
        [client_id as u8; 24],
        C2S,
        S2C,
    )
    .expect("token")
}

fn now(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        unix_secs: 1000 + ms / 1000,
    }
}

/// Server with client 1 connected from port 50000 and client 2 pending from port 50001.
fn setup() -> Server {
    let mut server = Server::new(ServerConfig {
        protocol_id: PID,
        private_key: PRIVATE_KEY,
        max_clients: 4,
        public_addrs: vec![addr(40000)],
    });
    let mut client = Client::new(&token(1), now(0)).expect("client");
    for step in 0..20 {
        let t = now(step * 10);
        let mut to_server = Vec::new();
        client.update(t, &mut |_, b| to_server.push(b.to_vec()), &mut |_| {});
        for p in to_server {
            let mut to_client = Vec::new();
            server.handle_packet(
                t,
                addr(50000).into(),
                &p,
                &mut |_, b| to_client.push(b.to_vec()),
                &mut |_| {},
            );
            for q in to_client {
                let mut back = Vec::new();
                client.handle_packet(
                    t,
                    addr(40000),
                    &q,
                    &mut |_, b| back.push(b.to_vec()),
                    &mut |_| {},
                );
                for r in back {
                    server.handle_packet(t, addr(50000).into(), &r, &mut |_, _| {}, &mut |_| {});
                }
            }
        }
        if client.state() == ClientState::Connected {
            break;
        }
    }
    let p = ConnectTokenPublic::read(&token(2)).expect("token");
    let mut req = [0u8; MAX_PACKET_BYTES];
    let n = packet::encode(
        &Packet::Request {
            protocol_id: PID,
            expire_unix_secs: p.expire_unix_secs,
            nonce: p.nonce,
            private_data: &p.private_data,
        },
        0,
        PID,
        &C2S,
        &mut req,
    )
    .expect("request");
    server.handle_packet(
        now(200),
        addr(50001).into(),
        &req[..n],
        &mut |_, _| {},
        &mut |_| {},
    );
    server
}

fuzz_target!(|data: &[u8]| {
    let mut server = setup();
    let mut rest = data;
    let mut t = 300u64;
    while rest.len() >= 3 {
        let mode = rest[0];
        // The same three addresses on the datagram link or on one stream link: sessions key on both.
        let from = tickwire_netcode::Peer {
            addr: addr(50000 + (rest[1] % 3) as u16),
            link: u64::from((rest[1] >> 4) & 1),
        };
        let len = (rest[2] as usize * 8).min(rest.len() - 3);
        let chunk = &rest[3..3 + len];
        rest = &rest[3 + len..];
        t += (mode >> 4) as u64 * 50;
        let mut buf = [0u8; MAX_PACKET_BYTES];
        let seq = u64::from(mode) * 977;
        let sealed = match mode & 0x0F {
            1 => packet::encode(
                &Packet::Payload(&chunk[..chunk.len().min(1200)]),
                seq,
                PID,
                &C2S,
                &mut buf,
            )
            .ok(),
            2 => packet::encode(
                &Packet::KeepAlive {
                    client_index: len as u32,
                    max_clients: 0,
                },
                seq,
                PID,
                &C2S,
                &mut buf,
            )
            .ok(),
            3 => packet::encode(&Packet::Disconnect, seq, PID, &C2S, &mut buf).ok(),
            4 if chunk.len() >= 300 => {
                let mut tok = [0u8; 300];
                tok.copy_from_slice(&chunk[..300]);
                packet::encode(
                    &Packet::Response {
                        challenge_sequence: seq,
                        token: &tok,
                    },
                    seq,
                    PID,
                    &C2S,
                    &mut buf,
                )
                .ok()
            }
            _ => None,
        };
        let bytes: &[u8] = match sealed {
            Some(n) => &buf[..n],
            None => chunk,
        };
        let limit = bytes.len();
        server.handle_packet(
            now(t),
            from,
            bytes,
            &mut |_, reply| assert!(reply.len() <= limit, "amplification"),
            &mut |_| {},
        );
        if mode & 0x80 != 0 {
            server.update(now(t), &mut |_, _| {}, &mut |_| {});
        }
        let _ = server.send_payload(now(t), 0, chunk, &mut |_, _| {});
    }
    assert!(server.connected_clients() <= server.max_clients());
});
