//! Fuzz the client behind its AEAD: every datagram from the "server" is sealed with the real
//! server-to-client key around a fuzzer-chosen plaintext (denied, challenge with any sequence
//! and token, keep-alive with any index and slot count, payload, disconnect), with any packet
//! sequence, from either of the token's two server addresses or a stranger; raw datagrams,
//! `update` and `send_payload` calls interleave as time advances.
//!
//! Checked: no panic; the response the client sends echoes the challenge it accepted; it
//! connects only from `SendingChallengeResponse` and reports the keep-alive's index and slot
//! count; payload events carry the sealed bytes and only arrive while connected; error states
//! are final; every datagram it sends goes to its current server address and fits a packet.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::packet::{self, Packet};
use tickwire_netcode::*;

const PID: u64 = 0x7465_7374;
const C2S: Key = [2; 32];
const S2C: Key = [3; 32];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads the input front to back; past its end every read is zero.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        let mut a = [0u8; 4];
        let b = self.bytes(4);
        a[..b.len()].copy_from_slice(b);
        u32::from_le_bytes(a)
    }
    fn u64(&mut self) -> u64 {
        let mut a = [0u8; 8];
        let b = self.bytes(8);
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    }
}

#[derive(Debug)]
enum Ev {
    Connected(u32, u32),
    Payload(Vec<u8>),
    State(ClientState),
}

fuzz_target!(|data: &[u8]| {
    let token = build_connect_token(
        &TokenParams {
            protocol_id: PID,
            client_id: 1,
            create_unix_secs: 1000,
            expire_secs: 30,
            timeout_secs: 3,
            server_addrs: &[addr(40000), addr(40001)],
            user_data: [0; USER_DATA_BYTES],
            private_key: &[1; 32],
        },
        [9; 24],
        C2S,
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
    let mut input = Input(data);
    let mut ms = 0u64;
    let mut sequence = 0u64;
    while !input.0.is_empty() {
        let op = input.u8();
        let sel = input.u8();
        let from = addr(40000 + u16::from(sel % 3));
        if sel & 0x80 != 0 {
            sequence = input.u64();
        }
        ms += u64::from(op >> 4) * 61;
        let now = Now {
            mono: Duration::from_millis(ms),
            unix_secs: 1000 + ms / 1000,
        };
        let mut token_buf = [0u8; 300];
        let p = match op & 0x07 {
            0 => Some(Packet::Denied),
            1 => {
                let challenge_sequence = input.u64();
                let len = usize::from(input.u8()) * 2;
                let b = input.bytes(len);
                let b = &b[..b.len().min(300)];
                token_buf[..b.len()].copy_from_slice(b);
                Some(Packet::Challenge {
                    challenge_sequence,
                    token: &token_buf,
                })
            }
            2 => Some(Packet::KeepAlive {
                client_index: input.u32(),
                max_clients: input.u32(),
            }),
            3 => {
                let len = (usize::from(input.u8()) * 5).clamp(1, MAX_PAYLOAD_BYTES);
                let b = input.bytes(len);
                (!b.is_empty()).then_some(Packet::Payload(b))
            }
            4 => Some(Packet::Disconnect),
            5 => {
                let len = usize::from(input.u8()) * 8;
                let b = input.bytes(len);
                deliver(&mut client, now, from, b, None);
                None
            }
            6 => {
                let before = client.state();
                let mut sent_to = Vec::new();
                client.update(
                    now,
                    &mut |to, b| {
                        assert!(b.len() <= MAX_PACKET_BYTES);
                        sent_to.push(to);
                    },
                    &mut |_| {},
                );
                // (A timed-out handshake moves on to the next address before sending.)
                assert!(sent_to.iter().all(|&to| to == client.server_addr()));
                if before.is_error() {
                    assert_eq!(client.state(), before, "error states are final");
                }
                None
            }
            _ => {
                let len = usize::from(input.u8()) * 5;
                let b = input.bytes(len);
                let connected = client.state() == ClientState::Connected;
                let r =
                    client.send_payload(now, b, &mut |_, d| assert!(d.len() <= MAX_PACKET_BYTES));
                assert_eq!(r.is_ok(), connected && b.len() <= MAX_PAYLOAD_BYTES);
                None
            }
        };
        if let Some(p) = p {
            let mut buf = [0u8; MAX_PACKET_BYTES];
            let n = packet::encode(&p, sequence, PID, &S2C, &mut buf).expect("encodes");
            sequence = sequence.wrapping_add(1);
            deliver(&mut client, now, from, &buf[..n], Some(p));
        }
    }
});

/// One datagram to the client, `sent` being its plaintext if the harness sealed it.
fn deliver(
    client: &mut Client,
    now: Now,
    from: SocketAddr,
    bytes: &[u8],
    sent: Option<Packet<'_>>,
) {
    let before = client.state();
    let server = client.server_addr();
    let mut out = Vec::new();
    let mut events = Vec::new();
    client.handle_packet(
        now,
        from,
        bytes,
        &mut |to, b| {
            assert_eq!(to, server);
            assert!(b.len() <= MAX_PACKET_BYTES);
            out.push(b.to_vec());
        },
        &mut |e| {
            events.push(match e {
                ClientEvent::Connected {
                    client_index,
                    max_clients,
                } => Ev::Connected(client_index, max_clients),
                ClientEvent::Payload(d) => Ev::Payload(d.to_vec()),
                ClientEvent::StateChanged(s) => Ev::State(s),
            })
        },
    );
    let after = client.state();
    if before.is_error() || before == ClientState::Disconnected {
        assert_eq!(after, before, "an inactive client ignores packets");
        assert!(events.is_empty() && out.is_empty());
    }
    if from != server {
        assert_eq!(after, before, "packets from elsewhere are ignored");
        assert!(events.is_empty() && out.is_empty());
    }
    for e in &events {
        match e {
            Ev::Connected(index, max) => {
                assert_eq!(before, ClientState::SendingChallengeResponse);
                let Some(Packet::KeepAlive {
                    client_index,
                    max_clients,
                }) = sent
                else {
                    panic!("connected without a keep-alive: {sent:?}");
                };
                assert_eq!((*index, *max), (client_index, max_clients));
                assert_eq!(client.client_index(), Some(client_index));
                assert_eq!(client.max_clients(), Some(max_clients));
            }
            Ev::Payload(d) => {
                assert_eq!(before, ClientState::Connected);
                assert_eq!(sent, Some(Packet::Payload(d)));
            }
            Ev::State(s) => assert_eq!(*s, after),
        }
    }
    // A challenge it took is echoed at once, sealed with the client-to-server key.
    if let Some(Packet::Challenge {
        challenge_sequence,
        token,
    }) = sent
    {
        if after == ClientState::SendingChallengeResponse && before != after {
            assert_eq!(out.len(), 1);
            let mut scratch = [0u8; MAX_PACKET_BYTES];
            let d = packet::decode(&out[0], PID, &C2S, &mut scratch).expect("response opens");
            assert_eq!(
                d.packet,
                Packet::Response {
                    challenge_sequence,
                    token
                }
            );
        }
    }
}
