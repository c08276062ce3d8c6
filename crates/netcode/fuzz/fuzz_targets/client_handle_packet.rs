//! Fuzz `Client::handle_packet` in every handshake state: raw datagrams and datagrams sealed
//! with the real server-to-client key (challenge, keep-alive, payload, denied, disconnect).
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::packet::{self, Packet};
use tickwire_netcode::*;

const PID: u64 = 0x7465_7374;
const S2C: Key = [3; 32];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fuzz_target!(|data: &[u8]| {
    let token = build_connect_token(
        &TokenParams {
            protocol_id: PID,
            client_id: 1,
            create_unix_secs: 1000,
            expire_secs: 60,
            timeout_secs: 5,
            server_addrs: &[addr(40000), addr(40001)],
            user_data: [0; USER_DATA_BYTES],
            private_key: &[1; 32],
        },
        [9; 24],
        [2; 32],
        S2C,
    )
    .expect("token");
    let mut client = Client::new(
        &token,
        Now {
            mono: Duration::ZERO,
            unix_secs: 1000,
        },
    )
    .expect("client");
    let mut rest = data;
    let mut ms = 0u64;
    while rest.len() >= 3 {
        let mode = rest[0];
        let from = addr(40000 + (rest[1] % 2) as u16);
        let len = (rest[2] as usize * 8).min(rest.len() - 3);
        let chunk = &rest[3..3 + len];
        rest = &rest[3 + len..];
        ms += (mode >> 4) as u64 * 40;
        let now = Now {
            mono: Duration::from_millis(ms),
            unix_secs: 1000 + ms / 1000,
        };
        let seq = u64::from(mode) * 31;
        let mut buf = [0u8; MAX_PACKET_BYTES];
        let sealed = match mode & 0x0F {
            1 => packet::encode(
                &Packet::Payload(&chunk[..chunk.len().min(1200)]),
                seq,
                PID,
                &S2C,
                &mut buf,
            )
            .ok(),
            2 => packet::encode(
                &Packet::KeepAlive {
                    client_index: 0,
                    max_clients: 4,
                },
                seq,
                PID,
                &S2C,
                &mut buf,
            )
            .ok(),
            3 => packet::encode(&Packet::Disconnect, seq, PID, &S2C, &mut buf).ok(),
            4 => packet::encode(&Packet::Denied, seq, PID, &S2C, &mut buf).ok(),
            5 => packet::encode(
                &Packet::Challenge {
                    challenge_sequence: seq,
                    token: &[7; 300],
                },
                seq,
                PID,
                &S2C,
                &mut buf,
            )
            .ok(),
            _ => None,
        };
        let bytes: &[u8] = match sealed {
            Some(n) => &buf[..n],
            None => chunk,
        };
        client.handle_packet(
            now,
            from,
            bytes,
            &mut |_, b| assert!(b.len() <= MAX_PACKET_BYTES),
            &mut |_| {},
        );
        client.update(
            now,
            &mut |_, b| assert!(b.len() <= MAX_PACKET_BYTES),
            &mut |_| {},
        );
        let _ = client.send_payload(now, chunk, &mut |_, _| {});
        let _ = client.state().is_error();
        let _ = client.server_addr();
    }
});
