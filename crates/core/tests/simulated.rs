//! A server and N clients in one process on simulated time: no sockets, no clock, for every
//! built-in game.
//!
//! A seeded virtual network delays every datagram by 5..=30 ms and loses a given share of
//! them. The tests check that every client joins, plays (the game's own bot), sees the others
//! move and leave, that every snapshot's last-applied input is one the client sent, advancing in
//! order, each applied exactly once; that reliable game events arrive complete and in order
//! under 20% loss (a 20 KB one included) and that an event over the limit is refused and
//! counted. Running the same seed twice gives the same game, tick for tick.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tickwire_client::{GameClient, GameEvent, Now};
use tickwire_core::{ChannelConfig, CoreConfig, GameServer};
use tickwire_game::{Bot as GameBot, GameConfig, GameEntry};
use tickwire_netcode::{build_connect_token, TokenParams, USER_DATA_BYTES};

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
    brain: Box<dyn GameBot>,
    /// Sequence numbers of every input sent.
    sent: HashMap<u32, Vec<u8>>,
    last_seq_sent: u32,
    last_applied_seen: u32,
    snapshots: u32,
    you: Option<u32>,
    /// Our own entity's fields in the newest snapshot.
    me: Option<Vec<i32>>,
    /// First and latest position seen of every entity.
    others: HashMap<u32, Track>,
    /// Reliable events received, in order.
    events: Vec<Vec<u8>>,
    /// Left on purpose (disconnected) at this tick.
    leaves_at: Option<u64>,
    left: bool,
}

struct Scenario {
    game: GameEntry,
    seed: u64,
    clients: usize,
    ticks: u64,
    loss_percent: u64,
    /// Bots that disconnect on purpose half-way.
    leavers: usize,
    /// Events the server sends to bot 0 at tick 60 (content checked at the end).
    extra_events: Vec<Vec<u8>>,
    /// Reliable messages bots[0] sends to the game at tick 60.
    client_messages: Vec<Vec<u8>>,
}

struct Outcome {
    hashes: Vec<u64>,
    inputs_sent: u64,
    inputs_applied: u64,
    bots: Vec<Bot>,
    server: GameServer,
}

/// Where an entity is, from its fields (the game's layout).
fn position(game: &str, fields: &[i32]) -> (i32, i32) {
    match game {
        "tag" => (fields[1], fields[2]),
        _ => (fields[0], fields[1]),
    }
}

fn run(sc: &Scenario) -> Outcome {
    let server_addr: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let mut cfg = GameConfig::new(sc.seed, 64, TICK_MS as u16);
    if sc.game.name == "tag" {
        // Few enough coins that every player is among each snapshot's nearest entities.
        cfg.options.push(("coins".into(), "8".into()));
    }
    let game = (sc.game.build)(&cfg).expect("game");
    let input_bytes = game.spec().input_bytes;
    let mut server = GameServer::new(
        CoreConfig {
            protocol_id: PROTOCOL_ID,
            private_key: KEY,
            max_players: 64,
            public_addrs: vec![server_addr],
            tick_ms: TICK_MS as u16,
            snapshot_max_entities: 48,
            channel: ChannelConfig::default(),
            query: None,
        },
        game,
    );
    let mut rng = Rng(sc.seed);
    let mut net = Network {
        rng: Rng(sc.seed ^ 0xA5A5),
        loss_percent: sc.loss_percent,
        in_flight: BTreeMap::new(),
        sent: 0,
    };
    let mut bots: Vec<Bot> = (0..sc.clients)
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
            Bot {
                addr: SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)),
                client: GameClient::new(&token, now(0)).expect("client"),
                brain: (sc.game.bot)(sc.seed ^ i as u64),
                sent: HashMap::new(),
                last_seq_sent: 0,
                last_applied_seen: 0,
                snapshots: 0,
                you: None,
                me: None,
                others: HashMap::new(),
                events: Vec::new(),
                leaves_at: (i >= sc.clients - sc.leavers).then_some(sc.ticks / 2),
                left: false,
            }
        })
        .collect();

    let total_ms = sc.ticks * TICK_MS;
    let quiet_from_ms = total_ms - 40 * TICK_MS; // the last 40 ticks lose nothing
    let mut hashes = Vec::new();
    let mut frame = vec![0u8; input_bytes];
    for ms in 0..=total_ms {
        if ms == quiet_from_ms {
            net.loss_percent = 0;
        }
        let t = now(ms);
        for (from, to, bytes) in net.due(ms) {
            if to == server_addr {
                let mut out = Vec::new();
                server.handle_packet(t, from, &bytes, &mut |peer, b| out.push((peer, b.to_vec())));
                for (peer, b) in out {
                    net.send(ms, server_addr, peer.addr, &b);
                }
            } else if let Some(bot) = bots.iter_mut().find(|b| b.addr == to && !b.left) {
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
                    observe(sc.game.name, bot, event);
                }
            }
        }
        // Clients: upkeep every ms, one input per tick at a per-client phase (unsynchronised),
        // except during the last 20 ticks so every input sent can land before the end.
        let inputs_until_ms = total_ms - 20 * TICK_MS;
        for (i, bot) in bots.iter_mut().enumerate() {
            if bot.left {
                continue;
            }
            let mut out = Vec::new();
            if i == 0 && ms == 60 * TICK_MS {
                for m in &sc.client_messages {
                    bot.client.send_message(m).expect("message queued");
                }
            }
            if bot.leaves_at.is_some_and(|tick| ms == tick * TICK_MS) {
                bot.client
                    .disconnect(&mut |peer, b| out.push((peer, b.to_vec())));
                bot.left = true;
            } else {
                bot.client
                    .update(t, &mut |peer, b| out.push((peer, b.to_vec())), &mut |_| {});
                if ms % TICK_MS == (i as u64 * 3) % TICK_MS
                    && ms < inputs_until_ms
                    && bot.client.welcome().is_some()
                {
                    bot.brain
                        .input((ms / TICK_MS) as u32, bot.me.as_deref(), &mut frame);
                    if let Ok(seq) = bot
                        .client
                        .send_input(t, &frame, &mut |peer, b| out.push((peer, b.to_vec())))
                    {
                        bot.sent.insert(seq, frame.clone());
                        bot.last_seq_sent = seq;
                    }
                }
            }
            for (peer, b) in out {
                net.send(ms, bot.addr, peer, &b);
            }
        }
        if ms % TICK_MS == 0 && ms > 0 {
            if ms / TICK_MS == 60 {
                for e in &sc.extra_events {
                    server
                        .send_event(0, e)
                        .expect("player 0 connected")
                        .expect("event queued");
                }
            }
            let mut out = Vec::new();
            server.tick(t, &mut |peer, b| out.push((peer, b.to_vec())));
            for (peer, b) in out {
                net.send(ms, server_addr, peer.addr, &b);
            }
            hashes.push(server.state_hash());
        }
    }

    let stayers = sc.clients - sc.leavers;
    assert_eq!(
        server.players(),
        stayers,
        "every staying client is connected"
    );
    let mut inputs_sent = 0;
    for (i, bot) in bots.iter().enumerate() {
        inputs_sent += bot.sent.len() as u64;
        if bot.left {
            continue;
        }
        assert!(bot.client.is_connected(), "bot {i} connected");
        assert!(
            bot.snapshots > sc.ticks as u32 / 2,
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
        // A random walk can pin one bot against a wall for a while: all but one must move.
        assert!(
            moved_others >= sc.clients - 2,
            "{} loss {}: bot {i} saw {moved_others} of {} others move",
            sc.game.name,
            sc.loss_percent,
            sc.clients - 1,
        );
    }
    Outcome {
        hashes,
        inputs_sent,
        inputs_applied: server.stats().inputs_applied,
        bots,
        server,
    }
}

fn observe(game: &str, bot: &mut Bot, event: GameEvent) {
    let snap = match event {
        GameEvent::Snapshot(snap) => snap,
        GameEvent::Message(m) => {
            bot.events.push(m);
            return;
        }
        _ => return,
    };
    bot.snapshots += 1;
    bot.you = Some(snap.you);
    bot.me = snap.find(snap.you).map(<[i32]>::to_vec);
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
    for (id, fields) in snap.entities() {
        let p = position(game, fields);
        bot.others
            .entry(id)
            .and_modify(|(_, last)| *last = p)
            .or_insert((p, p));
    }
}

fn scenario(game: GameEntry, seed: u64, loss_percent: u64) -> Scenario {
    Scenario {
        game,
        seed,
        clients: 12,
        ticks: 400,
        loss_percent,
        leavers: 2,
        extra_events: Vec::new(),
        client_messages: Vec::new(),
    }
}

fn games() -> Vec<GameEntry> {
    vec![tickwire_arena::entry(), tickwire_tag::entry()]
}

#[test]
fn every_game_plays_under_loss_inputs_exactly_once() {
    for game in games() {
        for loss in [5, 20] {
            let out = run(&scenario(game, 42, loss));
            // Exactly once: every input sent was applied once, none twice (redundant copies
            // ignored), the leavers' included up to their leave.
            let applied = out.inputs_applied;
            assert!(
                applied <= out.inputs_sent && out.inputs_sent - applied <= 16,
                "{}: {applied} applied of {} sent",
                game.name,
                out.inputs_sent
            );
            let s = out.server.netcode_stats();
            assert_eq!(
                s.drops[tickwire_netcode::DropReason::UnknownAddress as usize],
                0,
                "{}: clean leaves count no unknown-address drops",
                game.name
            );
        }
    }
}

#[test]
fn arena_level_arrives_once_at_join() {
    let out = run(&scenario(tickwire_arena::entry(), 3, 20));
    for bot in out.bots.iter().filter(|b| !b.left) {
        let levels: Vec<_> = bot
            .events
            .iter()
            .filter_map(|e| tickwire_arena::decode_level(e))
            .collect();
        assert_eq!(levels.len(), 1, "exactly one level");
        assert!(!levels[0].walls.is_empty());
    }
}

#[test]
fn tag_events_arrive_in_order() {
    let out = run(&scenario(tickwire_tag::entry(), 5, 20));
    for bot in out.bots.iter().filter(|b| !b.left) {
        let decoded: Vec<_> = bot
            .events
            .iter()
            .map(|e| tickwire_tag::decode_event(e).expect("a tag event"))
            .collect();
        assert!(
            matches!(decoded.first(), Some(tickwire_tag::TagEvent::Hello(_))),
            "hello comes first"
        );
        // Two bots left half-way: everyone still there heard it.
        let lefts = decoded
            .iter()
            .filter(|e| matches!(e, tickwire_tag::TagEvent::Left(_)))
            .count();
        assert!(lefts >= 2, "saw {lefts} leaves");
    }
}

#[test]
fn large_events_arrive_intact_in_order_under_loss() {
    let mut sc = scenario(tickwire_arena::entry(), 11, 20);
    let mut r = Rng(99);
    // A 20 KB event between small ones, each numbered so order is checked.
    for (n, len) in [(0u8, 10usize), (1, 20_000), (2, 1), (3, 3000), (4, 0)] {
        let mut e = vec![0xEE, n];
        e.extend((0..len).map(|_| r.next() as u8));
        sc.extra_events.push(e);
    }
    let out = run(&sc);
    // Player slot 0 is whichever bot finished its handshake first.
    let got: Vec<&Vec<u8>> = out
        .bots
        .iter()
        .flat_map(|b| &b.events)
        .filter(|e| e.first() == Some(&0xEE))
        .collect();
    assert_eq!(got.len(), sc.extra_events.len());
    for (g, want) in got.iter().zip(&sc.extra_events) {
        assert_eq!(*g, want, "event {} intact and in order", want[1]);
    }
}

/// The arena with an echo: every reliable message a player sends comes back to them, marked.
struct Echo(tickwire_arena::Arena);

impl tickwire_game::Game for Echo {
    fn spec(&self) -> tickwire_game::GameSpec {
        self.0.spec()
    }
    fn join(
        &mut self,
        p: tickwire_game::PlayerId,
        out: &mut tickwire_game::Outbox,
    ) -> Result<(), tickwire_game::JoinRefused> {
        self.0.join(p, out)
    }
    fn leave(&mut self, p: tickwire_game::PlayerId, out: &mut tickwire_game::Outbox) {
        self.0.leave(p, out)
    }
    fn input(&mut self, p: tickwire_game::PlayerId, frame: &[u8]) {
        self.0.input(p, frame)
    }
    fn message(&mut self, p: tickwire_game::PlayerId, msg: &[u8], out: &mut tickwire_game::Outbox) {
        let mut reply = vec![0xEC];
        reply.extend_from_slice(msg);
        out.send(p, &reply);
    }
    fn step(&mut self, out: &mut tickwire_game::Outbox) {
        self.0.step(out)
    }
    fn view(&self, view: &mut tickwire_game::View) {
        self.0.view(view)
    }
    fn state_hash(&self) -> u64 {
        self.0.state_hash()
    }
}

#[test]
fn client_messages_reach_the_game_in_order_under_loss() {
    let echo = GameEntry {
        name: "arena",
        about: "the arena, echoing reliable messages",
        build: |cfg| Ok(Box::new(Echo(tickwire_arena::Arena::new(cfg)?))),
        bot: tickwire_arena::entry().bot,
    };
    let mut sc = scenario(echo, 21, 20);
    let mut r = Rng(5);
    for (n, len) in [(0u8, 5usize), (1, 20_000), (2, 0), (3, 1500)] {
        let mut m = vec![n];
        m.extend((0..len).map(|_| r.next() as u8));
        sc.client_messages.push(m);
    }
    let out = run(&sc);
    let echoes: Vec<&[u8]> = out.bots[0]
        .events
        .iter()
        .filter(|e| e.first() == Some(&0xEC))
        .map(|e| &e[1..])
        .collect();
    assert_eq!(
        echoes.len(),
        sc.client_messages.len(),
        "every message echoed"
    );
    for (got, want) in echoes.iter().zip(&sc.client_messages) {
        assert_eq!(*got, &want[..], "message {} intact and in order", want[0]);
    }
    assert_eq!(out.server.stats().messages_received, 4);
    assert_eq!(out.server.stats().reliable_malformed, 0);
}

#[test]
fn oversized_events_are_refused_and_counted() {
    let sc = scenario(tickwire_arena::entry(), 12, 0);
    let mut out = run(&Scenario { ticks: 200, ..sc });
    let too_big = vec![0u8; ChannelConfig::default().max_message_bytes + 1];
    let err = out
        .server
        .send_event(0, &too_big)
        .expect("player 0 connected")
        .unwrap_err();
    assert!(
        matches!(err, tickwire_core::ChannelError::TooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(out.server.stats().events_too_large, 1);
    let refused = out
        .server
        .take_refused_event()
        .expect("refusal recorded for the log");
    assert_eq!(refused.player, 0);
}

#[test]
fn same_seed_same_game() {
    for game in games() {
        let sc = |seed| Scenario {
            clients: 6,
            ticks: 200,
            ..scenario(game, seed, 5)
        };
        let a = run(&sc(7));
        let b = run(&sc(7));
        assert_eq!(a.hashes, b.hashes, "{}", game.name);
        let c = run(&sc(8));
        assert_ne!(
            a.hashes, c.hashes,
            "{}: a different seed plays differently",
            game.name
        );
    }
}
