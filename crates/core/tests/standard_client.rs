//! A standard netcode.io 1.02 client of another implementation (the `renetcode` crate) plays
//! the arena, with every game message written and read by hand from docs/protocol.md, not
//! through `tickwire-proto`: the welcome, the level event on the reliable channel (and its ack),
//! inputs and snapshots.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use renetcode::{ClientAuthentication, NetcodeClient};
use tickwire_core::{ChannelConfig, CoreConfig, GameServer, Now};
use tickwire_game::GameConfig;
use tickwire_netcode::{build_connect_token, TokenParams, USER_DATA_BYTES};

const PID: u64 = 0x0123_4567_89AB_CDEF;
const KEY: [u8; 32] = [0x42; 32];
const UNIX: u64 = 1_700_000_000;

fn server_addr() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn client_addr() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn now_at(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        unix_secs: UNIX + ms / 1000,
    }
}

/// docs/protocol.md: bincode `standard()` varints.
struct R<'a>(&'a [u8], usize);
impl R<'_> {
    fn u8(&mut self) -> u8 {
        self.1 += 1;
        self.0[self.1 - 1]
    }
    fn uv(&mut self) -> u64 {
        match self.u8() {
            b @ 0..=250 => b as u64,
            251 => {
                let v = u16::from_le_bytes([self.0[self.1], self.0[self.1 + 1]]);
                self.1 += 2;
                v as u64
            }
            252 => {
                let v = u32::from_le_bytes(self.0[self.1..self.1 + 4].try_into().unwrap());
                self.1 += 4;
                v as u64
            }
            m => panic!("marker {m}"),
        }
    }
    fn iv(&mut self) -> i64 {
        let z = self.uv();
        ((z >> 1) as i64) ^ -((z & 1) as i64)
    }
    fn le_u32(&mut self) -> u32 {
        self.1 += 4;
        u32::from_le_bytes(self.0[self.1 - 4..self.1].try_into().unwrap())
    }
    fn le_u16(&mut self) -> u16 {
        self.1 += 2;
        u16::from_le_bytes([self.0[self.1 - 2], self.0[self.1 - 1]])
    }
    fn done(&self) -> bool {
        self.1 == self.0.len()
    }
}

fn uv(out: &mut Vec<u8>, v: u32) {
    if v < 251 {
        out.push(v as u8);
    } else if v <= 0xFFFF {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else {
        out.push(252);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[test]
fn renetcode_client_plays_the_arena_from_the_protocol_doc() {
    let game = tickwire_arena::Arena::new(&GameConfig::new(9, 8, 16)).unwrap();
    let mut server = GameServer::new(
        CoreConfig {
            protocol_id: PID,
            private_key: KEY,
            max_players: 8,
            public_addrs: vec![server_addr()],
            tick_ms: 16,
            snapshot_max_entities: 48,
            channel: ChannelConfig::default(),
            query: None,
        },
        Box::new(game),
    );
    let token = build_connect_token(
        &TokenParams {
            protocol_id: PID,
            client_id: 5,
            create_unix_secs: UNIX,
            expire_secs: 60,
            timeout_secs: 5,
            server_addrs: &[server_addr()],
            user_data: [0; USER_DATA_BYTES],
            private_key: &KEY,
        },
        [1; 24],
        [2; 32],
        [3; 32],
    )
    .unwrap();
    // renetcode's token bytes are the client id, then the standard token.
    let mut bytes = 5u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&token);
    let token = renetcode::ConnectToken::read(&mut Cursor::new(bytes)).unwrap();
    let mut client = NetcodeClient::new(
        Duration::ZERO,
        ClientAuthentication::Secure {
            connect_token: token,
        },
    )
    .unwrap();

    let mut welcome: Option<(u32, String, u8, u8)> = None;
    let mut level: Option<Vec<u8>> = None;
    let mut reliable_next = 0u32; // the next fragment sequence we expect
    let mut ack_owed = false;
    let mut seq = 0u32;
    let mut newest_tick = 0u32;
    let mut positions: Vec<(i64, i64)> = Vec::new();
    let mut last_applied = 0u32;
    let mut snapshots = 0;
    for ms in (16u64..8000).step_by(16) {
        let now = now_at(ms);
        let mut down: Vec<Vec<u8>> = Vec::new();
        let mut up: Vec<Vec<u8>> = Vec::new();
        if let Some((p, _)) = client.update(Duration::from_millis(16)) {
            up.push(p.to_vec());
        }
        if client.is_connected() {
            if let Some((_, _, in_bytes, _)) = &welcome {
                // Input: 00, ack_tick, 1 frame: seq, move_x 127, move_y 0, buttons 0.
                assert_eq!(*in_bytes, 3);
                seq += 1;
                let mut m = vec![0x00];
                uv(&mut m, newest_tick);
                m.push(1);
                uv(&mut m, seq);
                m.extend_from_slice(&[127, 0, 0]);
                up.push(client.generate_payload_packet(&m).unwrap().1.to_vec());
            }
            if ack_owed {
                // Reliable, pure ack: 01, ack_next u32, ack_bits u64.
                let mut m = vec![0x01];
                m.extend_from_slice(&reliable_next.to_le_bytes());
                m.extend_from_slice(&0u64.to_le_bytes());
                up.push(client.generate_payload_packet(&m).unwrap().1.to_vec());
                ack_owed = false;
            }
        }
        for p in up {
            server.handle_packet(now, client_addr(), &p, &mut |_, b| down.push(b.to_vec()));
        }
        server.tick(now, &mut |_, b| down.push(b.to_vec()));
        for mut b in down {
            let Some(payload) = client.process_packet(&mut b) else {
                continue;
            };
            let mut r = R(payload, 0);
            match r.u8() {
                0 => {
                    // Welcome: player_id, tick_ms u16, tick, protocol_version u16, game (len,
                    // UTF-8), game_version u16, input_bytes u8, entity_fields u8.
                    let player = r.uv() as u32;
                    assert_eq!(r.uv(), 16, "tick_ms");
                    let _tick = r.uv();
                    assert_eq!(r.uv(), 2, "protocol version");
                    let len = r.uv() as usize;
                    let name = String::from_utf8(r.0[r.1..r.1 + len].to_vec()).unwrap();
                    r.1 += len;
                    let _game_version = r.uv();
                    let (ib, ef) = (r.u8(), r.u8());
                    assert!(r.done());
                    welcome = Some((player, name, ib, ef));
                }
                1 => {
                    // Snapshot: tick, last_input_seq, you, count, then id + x + y per entity.
                    let Some((_, _, _, fields)) = &welcome else {
                        continue; // not decodable before a welcome: dropped, not acked
                    };
                    assert_eq!(*fields, 2);
                    let tick = r.uv() as u32;
                    last_applied = r.uv() as u32;
                    let you = r.uv() as u32;
                    let count = r.uv();
                    let mut mine = None;
                    for _ in 0..count {
                        let id = r.uv() as u32;
                        let (x, y) = (r.iv(), r.iv());
                        if id == you {
                            mine = Some((x, y));
                        }
                    }
                    assert!(r.done());
                    if tick > newest_tick {
                        newest_tick = tick;
                        snapshots += 1;
                        positions.push(mine.expect("you is in the snapshot"));
                    }
                }
                3 => {
                    // Reliable: ack_next u32, ack_bits u64, then fragments
                    // (seq u32, index u16, count u16, len u16, payload).
                    let _their_ack = r.le_u32();
                    r.1 += 8;
                    while !r.done() {
                        let fseq = r.le_u32();
                        let (index, count, len) = (r.le_u16(), r.le_u16(), r.le_u16() as usize);
                        let data = r.0[r.1..r.1 + len].to_vec();
                        r.1 += len;
                        if fseq == reliable_next {
                            // The arena's level fits one fragment.
                            assert_eq!((index, count), (0, 1));
                            level.get_or_insert(data);
                            reliable_next += 1;
                        }
                        ack_owed = true;
                    }
                }
                2 => panic!("unexpected bye"),
                t => panic!("unknown message type {t}"),
            }
        }
    }
    let (player, game, _, _) = welcome.expect("welcome");
    assert_eq!(game, "arena");
    assert!(snapshots > 300, "{snapshots} snapshots");
    assert!(last_applied > 300, "inputs applied up to {last_applied}");
    // Moving right: x grew.
    let (first, last) = (positions[0], *positions.last().unwrap());
    assert!(last.0 > first.0 + 1000, "{first:?} -> {last:?}");
    // The level: 01, width, height, radius, speeds, wall count, walls (i32 LE each).
    let level = level.expect("level event");
    let mut r = R(&level, 0);
    assert_eq!(r.u8(), 1);
    let width = r.le_u32() as i32;
    assert!(width > 0);
    r.1 += 16;
    let walls = r.le_u16() as usize;
    assert_eq!(level.len(), 23 + 16 * walls);
    assert_eq!(walls, tickwire_arena::DEFAULT_OBSTACLES.min(walls));
    // The ack was understood: the server has nothing left in flight for us.
    assert_eq!(server.stats().reliable_malformed, 0);
    assert_eq!(server.stats().payloads_malformed, 0);
    let _ = player;
}
