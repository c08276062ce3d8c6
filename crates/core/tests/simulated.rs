//! A server and N clients in one process on simulated time: no sockets, no clock.
//!
//! A seeded virtual network delays every datagram by 5..=30 ms and loses 5% of them. The test
//! checks that every client joins, moves, sees the others move, and that every snapshot's
//! last-applied input is one the client sent, advancing in order, each applied exactly once.
//! Running the same seed twice gives the same world, tick for tick.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tickwire_client::{GameClient, GameEvent, Now};
use tickwire_core::{CoreConfig, GameServer};
use tickwire_netcode::{build_connect_token, TokenParams, USER_DATA_BYTES};
use tickwire_sim::WorldConfig;

const PROTOCOL_ID: u64 = 0x7469_636b_7769_7265;
const KEY: [u8; 32] = [7; 32];
const TICK_MS: u64 = 16;
const UNIX_START: u64 = 1_700_000_000;

/// splitmix64: small, seeded, good enough for a network model.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// In-flight datagrams, delivered in order of (arrival ms, send order).
struct Network {
    rng: Rng,
    loss_percent: u64,
    in_flight: BTreeMap<(u64, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    sent: u64,
}

impl Network {
    fn send(&mut self, now_ms: u64, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.sent += 1;
        if self.rng.below(100) < self.loss_percent {
            return;
        }
        let arrival = now_ms + 5 + self.rng.below(26);
        self.in_flight
            .insert((arrival, self.sent), (from, to, bytes.to_vec()));
    }
    fn due(&mut self, now_ms: u64) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let later = self.in_flight.split_off(&(now_ms + 1, 0));
        std::mem::replace(&mut self.in_flight, later)
            .into_values()
            .collect()
    }
}

fn now(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        unix_secs: UNIX_START + ms / 1000,
    }
}

/// First and latest position of an entity.
type Track = ((i32, i32), (i32, i32));

struct Bot {
    addr: SocketAddr,
    client: GameClient,
    /// seq -> (move_x, move_y) of every input sent.
    sent: HashMap<u32, (i8, i8)>,
    last_seq_sent: u32,
    last_applied_seen: u32,
    snapshots: u32,
    you: Option<u32>,
    /// First and latest position seen of every other entity.
    others: HashMap<u32, Track>,
    direction: (i8, i8),
}

struct Outcome {
    world_hashes: Vec<u64>,
    inputs_sent: u64,
    inputs_applied: u64,
}

fn run(seed: u64, clients: usize, ticks: u64) -> Outcome {
    let server_addr: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let mut server = GameServer::new(CoreConfig {
        protocol_id: PROTOCOL_ID,
        private_key: KEY,
        max_players: 64,
        public_addrs: vec![server_addr],
        tick_ms: TICK_MS as u16,
        world: WorldConfig::for_players(64, seed),
        snapshot_max_entities: 48,
        query: None,
    });
    let mut rng = Rng(seed);
    let mut net = Network {
        rng: Rng(seed ^ 0xA5A5),
        loss_percent: 5,
        in_flight: BTreeMap::new(),
        sent: 0,
    };
    let mut bots: Vec<Bot> = (0..clients)
        .map(|i| {
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&rng.next().to_le_bytes());
            let token = build_connect_token(
                &TokenParams {
                    protocol_id: PROTOCOL_ID,
                    client_id: 1000 + i as u64,
                    create_unix_secs: UNIX_START,
                    expire_secs: 3600,
                    timeout_secs: 5,
                    server_addrs: &[server_addr],
                    user_data: [0; USER_DATA_BYTES],
                    private_key: &KEY,
                },
                nonce,
                [i as u8 + 1; 32],
                [i as u8 + 101; 32],
            )
            .expect("token");
            let angle = i as f64 * std::f64::consts::TAU / clients as f64;
            Bot {
                addr: SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)),
                client: GameClient::new(&token, now(0)).expect("client"),
                sent: HashMap::new(),
                last_seq_sent: 0,
                last_applied_seen: 0,
                snapshots: 0,
                you: None,
                others: HashMap::new(),
                direction: ((angle.cos() * 100.0) as i8, (angle.sin() * 100.0) as i8),
            }
        })
        .collect();

    let total_ms = ticks * TICK_MS;
    let quiet_from_ms = total_ms - 20 * TICK_MS; // the last 20 ticks lose nothing
    let mut world_hashes = Vec::new();
    for ms in 0..=total_ms {
        if ms == quiet_from_ms {
            net.loss_percent = 0;
        }
        let t = now(ms);
        for (from, to, bytes) in net.due(ms) {
            if to == server_addr {
                let mut out = Vec::new();
                server
                    .handle_datagram(t, from, &bytes, &mut |peer, b| out.push((peer, b.to_vec())));
                for (peer, b) in out {
                    net.send(ms, server_addr, peer, &b);
                }
            } else if let Some(bot) = bots.iter_mut().find(|b| b.addr == to) {
                let mut out = Vec::new();
                let mut events = Vec::new();
                bot.client.handle_packet(
                    t,
                    from,
                    &bytes,
                    &mut |peer, b| out.push((peer, b.to_vec())),
                    &mut |e| events.push(e),
                );
                for (peer, b) in out {
                    net.send(ms, bot.addr, peer, &b);
                }
                for event in events {
                    observe(bot, event);
                }
            }
        }
        // Clients: upkeep every ms, one input per tick at a per-client phase (unsynchronised),
        // except during the last 10 ticks so every input sent can land before the end.
        let inputs_until_ms = total_ms - 10 * TICK_MS;
        for (i, bot) in bots.iter_mut().enumerate() {
            let mut out = Vec::new();
            bot.client
                .update(t, &mut |peer, b| out.push((peer, b.to_vec())), &mut |_| {});
            if ms % TICK_MS == (i as u64 * 3) % TICK_MS
                && ms < inputs_until_ms
                && bot.client.is_connected()
            {
                let (mx, my) = bot.direction;
                if let Ok(seq) = bot
                    .client
                    .send_input(t, mx, my, 0, &mut |peer, b| out.push((peer, b.to_vec())))
                {
                    bot.sent.insert(seq, (mx, my));
                    bot.last_seq_sent = seq;
                }
            }
            for (peer, b) in out {
                net.send(ms, bot.addr, peer, &b);
            }
        }
        if ms % TICK_MS == 0 && ms > 0 {
            let mut out = Vec::new();
            server.tick(t, &mut |peer, b| out.push((peer, b.to_vec())));
            for (peer, b) in out {
                net.send(ms, server_addr, peer, &b);
            }
            world_hashes.push(server.world().state_hash());
        }
    }

    assert_eq!(
        server.players(),
        clients,
        "every client is connected at the end"
    );
    let mut inputs_sent = 0;
    for (i, bot) in bots.iter().enumerate() {
        assert!(bot.client.is_connected(), "bot {i} connected");
        assert!(
            bot.snapshots > ticks as u32 / 2,
            "bot {i} got {} snapshots",
            bot.snapshots
        );
        assert!(bot.last_seq_sent > 100, "bot {i} sent inputs");
        assert_eq!(
            bot.last_applied_seen, bot.last_seq_sent,
            "bot {i}: the last snapshot acknowledges the last input sent"
        );
        let me = bot.you.expect("snapshot names our entity");
        let moved_others = bot
            .others
            .iter()
            .filter(|(id, (first, last))| **id != me && first != last)
            .count();
        assert!(
            moved_others >= clients - 1,
            "bot {i} saw {moved_others} of {} others move",
            clients - 1
        );
        inputs_sent += bot.sent.len() as u64;
    }
    Outcome {
        world_hashes,
        inputs_sent,
        inputs_applied: server.stats().inputs_applied,
    }
}

fn observe(bot: &mut Bot, event: GameEvent) {
    let GameEvent::Snapshot(snap) = event else {
        return;
    };
    bot.snapshots += 1;
    bot.you = Some(snap.you);
    // The last-applied input is one we sent, and never goes backwards.
    if snap.last_input_seq != 0 {
        assert!(
            bot.sent.contains_key(&snap.last_input_seq),
            "server applied seq {} we never sent",
            snap.last_input_seq
        );
    }
    assert!(snap.last_input_seq >= bot.last_applied_seen);
    bot.last_applied_seen = snap.last_input_seq;
    for e in &snap.entities {
        bot.others
            .entry(e.id)
            .and_modify(|(_, last)| *last = (e.x, e.y))
            .or_insert(((e.x, e.y), (e.x, e.y)));
    }
}

#[test]
fn clients_join_move_and_see_each_other_under_loss() {
    let clients = 12;
    let out = run(42, clients, 400);
    // Exactly once: every input sent was applied once, none twice (redundant copies ignored).
    assert_eq!(out.inputs_applied, out.inputs_sent);
}

#[test]
fn same_seed_same_world() {
    let a = run(7, 6, 200);
    let b = run(7, 6, 200);
    assert_eq!(a.world_hashes, b.world_hashes);
    let c = run(8, 6, 200);
    assert_ne!(
        a.world_hashes, c.world_hashes,
        "a different seed plays differently"
    );
}
