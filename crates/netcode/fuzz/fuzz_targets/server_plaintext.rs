//! Fuzz the server behind its AEAD: a server with a known challenge key receives, from four
//! peer addresses, connection requests whose private connect token plaintext is the fuzzer's
//! (sealed by the harness with the server's private key), responses echoing the real challenge
//! or carrying a fuzzer-chosen challenge token plaintext (sealed with the challenge key),
//! keep-alives, payloads and disconnects sealed with the keys from the fuzzer's token, raw
//! datagrams, and update / send / disconnect / accept calls, as time advances.
//!
//! Checked: no panic; every reply goes to the sender and is no larger than the datagram it
//! answers; events match what was sent (a payload event carries the bytes the peer sealed, from
//! a connected peer); the slot table stays consistent (connected count, distinct client ids and
//! addresses).
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickwire_netcode::fuzzing::{self, CHALLENGE_PLAIN_BYTES, PRIVATE_PLAIN_BYTES};
use tickwire_netcode::packet::{self, Packet};
use tickwire_netcode::*;

const PID: u64 = 0x7465_7374;
const PRIVATE_KEY: Key = [1; 32];
const CHALLENGE_KEY: Key = [4; 32];
const MAX_CLIENTS: usize = 3;
const PEERS: usize = 4;

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

#[derive(Default)]
struct Peer {
    c2s: Key,
    s2c: Key,
    sequence: u64,
    challenge: Option<(u64, [u8; 300])>,
}

fuzz_target!(|data: &[u8]| {
    let mut server = fuzzing::server_with_challenge_key(
        ServerConfig {
            protocol_id: PID,
            private_key: PRIVATE_KEY,
            max_clients: MAX_CLIENTS,
            public_addrs: vec![addr(40000)],
        },
        CHALLENGE_KEY,
    );
    let mut peers: [Peer; PEERS] = Default::default();
    let mut input = Input(data);
    let mut ms = 0u64;
    while !input.0.is_empty() {
        let op = input.u8();
        let who = usize::from(input.u8()) % PEERS;
        let from = addr(50000 + who as u16);
        ms += u64::from(op >> 4) * 97;
        let now = Now {
            mono: Duration::from_millis(ms),
            unix_secs: 1000 + ms / 1000,
        };
        let mut buf = [0u8; MAX_PACKET_BYTES];
        let challenge = peers[who].challenge;
        let peer = &mut peers[who];
        // (datagram, the payload it carries) to feed once the match is done.
        let mut datagram: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut offered: Option<(Key, Key)> = None;
        let sealed: Option<Packet<'_>> = match op & 0x0F {
            0 => {
                // Connection request with the fuzzer's private token plaintext.
                let expire = now.unix_secs + u64::from(input.u8());
                let nonce = [input.u8(); 24];
                let len = usize::from(input.u8()) * 4;
                let mut plain = [0u8; PRIVATE_PLAIN_BYTES];
                let b = input.bytes(len.min(PRIVATE_PLAIN_BYTES));
                plain[..b.len()].copy_from_slice(b);
                // The server takes these keys for this address only if it answers with a
                // challenge (see `feed`).
                offered = fuzzing::parse_private_token(&plain)
                    .ok()
                    .map(|t| (t.client_to_server_key, t.server_to_client_key));
                let private =
                    fuzzing::seal_private_token(&plain, PID, expire, &nonce, &PRIVATE_KEY);
                let n = packet::encode(
                    &Packet::Request {
                        protocol_id: PID,
                        expire_unix_secs: expire,
                        nonce,
                        private_data: &private,
                    },
                    0,
                    PID,
                    &[0; 32],
                    &mut buf,
                )
                .expect("request encodes");
                datagram = Some((buf[..n].to_vec(), Vec::new()));
                None
            }
            // Echo the real challenge (the honest handshake).
            1 => challenge
                .as_ref()
                .map(|(challenge_sequence, token)| Packet::Response {
                    challenge_sequence: *challenge_sequence,
                    token,
                }),
            2 => {
                // A response carrying the fuzzer's challenge token plaintext.
                let challenge_sequence = u64::from(input.u8());
                let len = usize::from(input.u8()) * 2;
                let mut plain = [0u8; CHALLENGE_PLAIN_BYTES];
                let b = input.bytes(len.min(CHALLENGE_PLAIN_BYTES));
                plain[..b.len()].copy_from_slice(b);
                let token =
                    fuzzing::seal_challenge_token(&plain, challenge_sequence, &CHALLENGE_KEY);
                let n = packet::encode(
                    &Packet::Response {
                        challenge_sequence,
                        token: &token,
                    },
                    peer.sequence,
                    PID,
                    &peer.c2s,
                    &mut buf,
                )
                .expect("response encodes");
                peer.sequence = peer.sequence.wrapping_add(1);
                datagram = Some((buf[..n].to_vec(), Vec::new()));
                None
            }
            3 => Some(Packet::KeepAlive {
                client_index: input.u32(),
                max_clients: input.u32(),
            }),
            4 => {
                let len = (usize::from(input.u8()) * 5).clamp(1, MAX_PAYLOAD_BYTES);
                let b = input.bytes(len);
                (!b.is_empty()).then_some(Packet::Payload(b))
            }
            5 => Some(Packet::Disconnect),
            6 => {
                let len = usize::from(input.u8()) * 8;
                datagram = Some((input.bytes(len).to_vec(), Vec::new()));
                None
            }
            7 => {
                server.update(
                    now,
                    &mut |_, b| assert!(b.len() <= MAX_PACKET_BYTES),
                    &mut |e| assert!(matches!(e, ServerEvent::Disconnected { .. }), "{e:?}"),
                );
                None
            }
            8 => {
                let len = usize::from(input.u8()) * 5;
                let b = input.bytes(len);
                let slot_addr = server.client_peer(who).map(|p| p.addr);
                let mut out = Vec::new();
                let r = server.send_payload(now, who, b, &mut |to, p| {
                    assert_eq!(Some(to.addr), slot_addr);
                    out.push(p.to_vec());
                });
                if let (Ok(()), Some(to)) = (r, slot_addr) {
                    // The last datagram is the payload, sealed with that peer's key.
                    let peer = &peers[usize::from(to.port() - 50000)];
                    if let Some(last) = out.last().filter(|_| !b.is_empty()) {
                        let mut scratch = [0u8; MAX_PACKET_BYTES];
                        let d = packet::decode(last, PID, &peer.s2c, &mut scratch)
                            .expect("the peer's key opens what the server sends it");
                        assert_eq!(d.packet, Packet::Payload(b));
                    }
                }
                None
            }
            9 => {
                server.set_accepting(!server.is_accepting());
                None
            }
            10 => {
                server.disconnect(who, &mut |_, b| assert!(b.len() <= MAX_PACKET_BYTES));
                None
            }
            11 => {
                // Jump the peer's sequence (replays, gaps, far future).
                peer.sequence = input.u64();
                None
            }
            _ => None,
        };
        if let Some(p) = sealed {
            let peer = &peers[who];
            let n = packet::encode(&p, peer.sequence, PID, &peer.c2s, &mut buf)
                .expect("packet encodes");
            let payload = match p {
                Packet::Payload(b) => b.to_vec(),
                _ => Vec::new(),
            };
            datagram = Some((buf[..n].to_vec(), payload));
            peers[who].sequence = peers[who].sequence.wrapping_add(1);
        }
        if let Some((bytes, payload)) = datagram {
            feed(
                &mut server,
                now,
                from,
                &bytes,
                &mut peers,
                who,
                &payload,
                offered,
            );
        }
        check(&server);
    }
});

/// One datagram to the server; replies are checked and challenges remembered for the peer.
/// `offered` are the keys of the request's token: the server holds them for this address once
/// it sends a challenge sealed with them.
#[allow(clippy::too_many_arguments)]
fn feed(
    server: &mut Server,
    now: Now,
    from: SocketAddr,
    bytes: &[u8],
    peers: &mut [Peer; PEERS],
    who: usize,
    payload: &[u8],
    offered: Option<(Key, Key)>,
) {
    let mut replies = Vec::new();
    let mut events = Vec::new();
    server.handle_packet(
        now,
        from.into(),
        bytes,
        &mut |to, b| {
            assert_eq!(to, from.into(), "replies go to the sender");
            assert!(
                b.len() <= bytes.len(),
                "amplification: {} > {}",
                b.len(),
                bytes.len()
            );
            replies.push(b.to_vec());
        },
        &mut |e| {
            events.push(match e {
                ServerEvent::Connected {
                    client,
                    client_id,
                    peer,
                    ..
                } => {
                    assert_eq!(peer, from.into());
                    (0, client, client_id)
                }
                ServerEvent::Payload { client, data } => {
                    assert_eq!(data, payload, "payload event carries the sealed bytes");
                    (1, client, 0)
                }
                ServerEvent::Disconnected { client, reason } => {
                    assert_eq!(reason, DisconnectReason::ClientDisconnected);
                    (2, client, 0)
                }
            })
        },
    );
    assert!(events.len() <= 1, "one datagram, at most one event");
    for (kind, client, client_id) in events {
        match kind {
            0 => {
                assert!(server.is_connected(client));
                assert_eq!(server.client_peer(client).map(|p| p.addr), Some(from));
                assert_eq!(server.client_id(client), Some(client_id));
            }
            1 => assert_eq!(server.client_peer(client).map(|p| p.addr), Some(from)),
            _ => assert!(!server.is_connected(client)),
        }
    }
    let peer = &mut peers[who];
    for r in replies {
        let mut scratch = [0u8; MAX_PACKET_BYTES];
        let Some((c2s, s2c)) = offered else {
            continue;
        };
        if let Ok(d) = packet::decode(&r, PID, &s2c, &mut scratch) {
            if let Packet::Challenge {
                challenge_sequence,
                token,
            } = d.packet
            {
                peer.c2s = c2s;
                peer.s2c = s2c;
                peer.challenge = Some((challenge_sequence, *token));
            }
        }
    }
}

fn check(server: &Server) {
    let slots: Vec<usize> = (0..server.max_clients())
        .filter(|&i| server.is_connected(i))
        .collect();
    assert_eq!(slots.len(), server.connected_clients());
    assert!(server.connected_clients() <= MAX_CLIENTS);
    for (k, &i) in slots.iter().enumerate() {
        for &j in &slots[k + 1..] {
            assert_ne!(
                server.client_id(i),
                server.client_id(j),
                "client ids are unique"
            );
            assert_ne!(
                server.client_peer(i).map(|p| p.addr),
                server.client_peer(j).map(|p| p.addr),
                "addresses are unique"
            );
        }
    }
}
