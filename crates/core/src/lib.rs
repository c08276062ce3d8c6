//! tickwire-core: the sans-IO game server.
//!
//! [`GameServer`] joins the three sans-IO layers: the netcode.io session layer
//! ([`tickwire_netcode::Server`]), the game messages ([`tickwire_proto`]) and the world
//! ([`tickwire_sim::World`]). It never touches a socket or reads the clock: the shell hands it
//! datagrams and the current [`Now`], and it hands datagrams back through a `tx` callback.
//!
//! Calling pattern (see docs/architecture.md, "The tick loop"):
//!
//! ```text
//! between ticks: server.handle_datagram(now, peer, bytes, &mut tx)   // any number of times
//! at the deadline: server.tick(now, &mut tx)                         // exactly once per tick
//! at exit:         server.shutdown(&mut tx)
//! ```
//!
//! Inputs: every input frame a client sends is queued once (redundant copies are recognised
//! by sequence number and ignored) in a fixed-capacity per-client queue. At the tick all queued
//! frames are applied in sequence order, each exactly once, then the world steps once. Each
//! snapshot then reports the last sequence applied for that client.
#![forbid(unsafe_code)]

pub mod a2s;
mod input_queue;
pub mod interest;

use std::net::SocketAddr;
use std::time::Duration;

pub use tickwire_netcode::{DenyReason, DisconnectReason, DropReason, Key, Now, ServerStats};
pub use tickwire_proto::ByeReason;
use tickwire_proto::{ClientMessage, EntityState, ServerMessage, Snapshot, Welcome};
use tickwire_sim::{EntityId, EntityView, PlayerInput, World, WorldConfig};

pub use input_queue::InputQueue;

/// Capacity of each client's input queue, in frames. At one input per tick this is a quarter
/// second of inputs; a client further ahead than that loses its oldest queued frames (counted).
pub const INPUT_QUEUE_FRAMES: usize = 16;

/// Ticks between welcome resends while a new client has not acknowledged a snapshot.
pub const WELCOME_RESEND_TICKS: u32 = 8;
/// Most welcome messages sent to one client.
pub const WELCOME_MAX_SENDS: u32 = 8;

/// Everything [`GameServer::new`] needs. Built by the binary from its validated config.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The netcode protocol id tokens and packets must carry.
    pub protocol_id: u64,
    /// The private key connect tokens are encrypted with.
    pub private_key: Key,
    /// Most players connected at once; beyond it new clients are denied.
    pub max_players: usize,
    /// The addresses connect tokens must name (an unspecified IP matches any IP on that port).
    pub public_addrs: Vec<SocketAddr>,
    /// The fixed simulation step, told to clients in the welcome message.
    pub tick_ms: u16,
    /// The world.
    pub world: WorldConfig,
    /// Most entities in one snapshot (nearest first); capped at
    /// [`tickwire_proto::MAX_SNAPSHOT_ENTITIES`].
    pub snapshot_max_entities: usize,
    /// Answer Valve A2S server queries on the game port (`None`: drop them, counted).
    pub query: Option<QueryConfig>,
}

/// What A2S queries report.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    /// Server name shown in server browsers.
    pub name: String,
    /// The game port clients connect to (the A2S_INFO extra-data port).
    pub port: u16,
    /// Secret for the stateless query challenges (random at startup).
    pub secret: u64,
    /// Extra rules reported by A2S_RULES (name, value), beside the built-in ones.
    pub rules: Vec<(String, String)>,
}

/// Counters the core keeps beside the netcode layer's [`ServerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Input frames applied to the world (each exactly once).
    pub inputs_applied: u64,
    /// Input frames received for the first time and queued.
    pub inputs_queued: u64,
    /// Input frames dropped because a client's queue was full.
    pub inputs_overflowed: u64,
    /// Authenticated payloads that did not decode as a game message (dropped).
    pub payloads_malformed: u64,
    /// Snapshots handed to the netcode layer.
    pub snapshots_sent: u64,
    /// Sum of snapshot payload sizes, in bytes.
    pub snapshot_bytes: u64,
    /// Server messages that could not be sent (netcode refused them).
    pub sends_failed: u64,
    /// A2S queries answered (challenge or full reply).
    pub queries_answered: u64,
    /// A2S-prefixed datagrams dropped: malformed, or queries turned off.
    pub queries_dropped: u64,
}

/// What one [`GameServer::tick`] did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// The tick number just simulated.
    pub tick: u32,
    /// Snapshots sent this tick.
    pub snapshots: usize,
    /// Bytes of snapshot payload sent this tick.
    pub snapshot_bytes: usize,
    /// Input frames applied this tick.
    pub inputs_applied: usize,
}

/// One connected player.
#[derive(Debug)]
struct Player {
    entity: EntityId,
    inputs: InputQueue,
    /// Newest input sequence received (queued), if any.
    last_received_seq: Option<u32>,
    /// Newest input sequence applied to the world (0 before the first).
    last_applied_seq: u32,
    /// When the player joined (for A2S_PLAYER durations).
    joined: Duration,
    /// Newest snapshot tick the client acknowledged (0: none yet).
    ack_tick: u32,
    /// Welcome messages sent so far (resent until the client acknowledges a snapshot).
    welcomes_sent: u32,
}

/// The sans-IO game server. See the crate docs for the calling pattern.
pub struct GameServer {
    netcode: tickwire_netcode::Server,
    world: World,
    /// Indexed by netcode client index; allocated for `max_players` up front.
    players: Vec<Option<Player>>,
    tick: u32,
    tick_ms: u16,
    snapshot_max_entities: usize,
    stats: CoreStats,
    /// Reused per snapshot: the nearest entities.
    views: Vec<EntityView>,
    /// Reused per snapshot: the message being encoded.
    snapshot: Snapshot,
    /// Reused per message: the encoded payload.
    payload: Vec<u8>,
    /// A2S responder and what it reports; `None` when queries are off.
    query: Option<(a2s::A2sResponder, QueryConfig)>,
}

impl GameServer {
    /// Builds a server with every table allocated for `cfg.max_players`.
    pub fn new(cfg: CoreConfig) -> Self {
        let max_entities = cfg
            .snapshot_max_entities
            .clamp(1, tickwire_proto::MAX_SNAPSHOT_ENTITIES);
        let mut world_cfg = cfg.world;
        world_cfg.max_players = world_cfg.max_players.max(cfg.max_players);
        let netcode = tickwire_netcode::Server::new(tickwire_netcode::ServerConfig {
            protocol_id: cfg.protocol_id,
            private_key: cfg.private_key,
            max_clients: cfg.max_players,
            public_addrs: cfg.public_addrs,
        });
        let mut players = Vec::with_capacity(cfg.max_players);
        players.resize_with(cfg.max_players, || None);
        GameServer {
            netcode,
            world: World::new(world_cfg),
            players,
            tick: 0,
            tick_ms: cfg.tick_ms,
            snapshot_max_entities: max_entities,
            stats: CoreStats::default(),
            views: Vec::with_capacity(max_entities),
            snapshot: Snapshot {
                entities: Vec::with_capacity(max_entities),
                ..Snapshot::default()
            },
            payload: vec![0; a2s::MAX_REPLY_BYTES.max(tickwire_proto::MAX_PAYLOAD_BYTES)],
            query: cfg.query.map(|q| (a2s::A2sResponder::new(q.secret), q)),
        }
    }

    /// Handles one datagram from `from`. Replies (handshake, welcome) go out through `tx`.
    pub fn handle_datagram(
        &mut self,
        now: Now,
        from: SocketAddr,
        bytes: &[u8],
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        // A2S queries start with FF FF FF FF, which no netcode packet does (0xFF would be
        // packet type 15 with 15 sequence bytes).
        if a2s::is_a2s(bytes) {
            self.handle_query(now, from, bytes, tx);
            return;
        }
        let mut joined = None;
        let GameServer {
            netcode,
            world,
            players,
            stats,
            ..
        } = self;
        netcode.handle_packet(now, from, bytes, tx, &mut |event| {
            if let Some(client) = on_event(now, world, players, stats, event) {
                joined = Some(client);
            }
        });
        if let Some(client) = joined {
            self.send_welcome(now, client, tx);
        }
    }

    /// Runs one tick: session upkeep (keep-alives, timeouts), applies every queued input in
    /// order, steps the world once, and sends each connected client one snapshot.
    pub fn tick(&mut self, now: Now, tx: &mut dyn FnMut(SocketAddr, &[u8])) -> TickReport {
        {
            let GameServer {
                netcode,
                world,
                players,
                stats,
                ..
            } = self;
            netcode.update(now, tx, &mut |event| {
                // A player never joins in update(); only timeouts arrive here.
                let _ = on_event(now, world, players, stats, event);
            });
        }

        let mut report = TickReport::default();
        for player in self.players.iter_mut().flatten() {
            while let Some(frame) = player.inputs.pop() {
                self.world.apply_input(
                    player.entity,
                    PlayerInput {
                        move_x: frame.move_x,
                        move_y: frame.move_y,
                        buttons: frame.buttons,
                    },
                );
                player.last_applied_seq = frame.seq;
                report.inputs_applied += 1;
            }
        }
        self.stats.inputs_applied += report.inputs_applied as u64;
        self.world.step();
        self.tick = self.tick.wrapping_add(1);
        report.tick = self.tick;

        for client in 0..self.players.len() {
            if self.welcome_due(client) {
                self.send_welcome(now, client, tx);
            }
            if let Some(bytes) = self.send_snapshot(now, client, tx) {
                report.snapshots += 1;
                report.snapshot_bytes += bytes;
            }
        }
        report
    }

    /// Tells every client the server is going away (a `Bye` message, then netcode's redundant
    /// disconnect packets) and frees their sessions.
    pub fn shutdown(&mut self, now: Now, tx: &mut dyn FnMut(SocketAddr, &[u8])) {
        self.broadcast_bye(now, ByeReason::ServerShutdown, tx);
        self.netcode.disconnect_all(tx);
        for slot in self.players.iter_mut() {
            if let Some(player) = slot.take() {
                self.world.despawn(player.entity);
            }
        }
    }

    /// Sends every connected client a `Bye` with `reason` (without disconnecting them).
    pub fn broadcast_bye(
        &mut self,
        now: Now,
        reason: ByeReason,
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        let msg = ServerMessage::Bye { reason };
        let len = match tickwire_proto::encode_server(&msg, &mut self.payload) {
            Ok(len) => len,
            Err(_) => return,
        };
        for client in 0..self.players.len() {
            if self.players[client].is_some()
                && self
                    .netcode
                    .send_payload(now, client, &self.payload[..len], tx)
                    .is_err()
            {
                self.stats.sends_failed += 1;
            }
        }
    }

    /// Also accepts connect tokens naming `addr` (learned after start, e.g. from Agones);
    /// `false` when the address list is full.
    pub fn add_public_addr(&mut self, addr: SocketAddr) -> bool {
        self.netcode.add_public_addr(addr)
    }

    /// Whether new players are accepted; `false` denies them (reason: not accepting).
    pub fn set_accepting(&mut self, accepting: bool) {
        self.netcode.set_accepting(accepting);
    }

    /// Players connected now.
    pub fn players(&self) -> usize {
        self.netcode.connected_clients()
    }

    /// Most players at once.
    pub fn max_players(&self) -> usize {
        self.netcode.max_clients()
    }

    /// The last tick simulated (0 before the first).
    pub fn current_tick(&self) -> u32 {
        self.tick
    }

    /// The world, for inspection (tests, tools).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Game-layer counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Session-layer counters: packets, bytes, drops and denies by reason.
    pub fn netcode_stats(&self) -> &ServerStats {
        self.netcode.stats()
    }

    /// The entity a connected client controls.
    pub fn player_entity(&self, client: usize) -> Option<EntityId> {
        self.players.get(client)?.as_ref().map(|p| p.entity)
    }

    /// The newest input sequence applied for a connected client.
    pub fn last_applied_seq(&self, client: usize) -> Option<u32> {
        self.players
            .get(client)?
            .as_ref()
            .map(|p| p.last_applied_seq)
    }

    /// Answers one A2S query (or drops it, counted).
    fn handle_query(
        &mut self,
        now: Now,
        from: SocketAddr,
        bytes: &[u8],
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        let Some((responder, cfg)) = &self.query else {
            self.stats.queries_dropped += 1;
            return;
        };
        let source = QuerySource {
            cfg,
            now,
            players: &self.players,
            connected: self.netcode.connected_clients(),
            max_players: self.netcode.max_clients(),
            tick_ms: self.tick_ms,
            seed: self.world.config().seed,
        };
        match responder.handle(now.mono.as_secs(), from, bytes, &source, &mut self.payload) {
            Ok(Some(len)) => {
                self.stats.queries_answered += 1;
                tx(from, &self.payload[..len]);
            }
            Ok(None) | Err(_) => self.stats.queries_dropped += 1,
        }
    }

    /// The welcome is unreliable like everything else, so it is resent every
    /// [`WELCOME_RESEND_TICKS`] ticks, at most [`WELCOME_MAX_SENDS`] times, until the client
    /// acknowledges a snapshot (an acknowledging client has its id from `you` in any case).
    fn welcome_due(&self, client: usize) -> bool {
        match &self.players[client] {
            Some(p) => {
                p.ack_tick == 0
                    && p.welcomes_sent < WELCOME_MAX_SENDS
                    && self.tick % WELCOME_RESEND_TICKS == 0
            }
            None => false,
        }
    }

    fn send_welcome(&mut self, now: Now, client: usize, tx: &mut dyn FnMut(SocketAddr, &[u8])) {
        let Some(player) = self.players.get_mut(client).and_then(Option::as_mut) else {
            return;
        };
        player.welcomes_sent += 1;
        let cfg = self.world.config();
        let msg = ServerMessage::Welcome(Welcome {
            player_id: player.entity,
            tick_ms: self.tick_ms,
            tick: self.tick,
            arena_width: cfg.width,
            arena_height: cfg.height,
        });
        if let Ok(len) = tickwire_proto::encode_server(&msg, &mut self.payload) {
            if self
                .netcode
                .send_payload(now, client, &self.payload[..len], tx)
                .is_err()
            {
                self.stats.sends_failed += 1;
            }
        }
    }

    /// Builds, encodes and sends one client's snapshot; returns its payload size.
    fn send_snapshot(
        &mut self,
        now: Now,
        client: usize,
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Option<usize> {
        let player = self.players[client].as_ref()?;
        self.world
            .nearest(player.entity, self.snapshot_max_entities, &mut self.views);
        self.snapshot.tick = self.tick;
        self.snapshot.last_input_seq = player.last_applied_seq;
        self.snapshot.you = player.entity;
        self.snapshot.entities.clear();
        self.snapshot
            .entities
            .extend(self.views.iter().map(|v| EntityState {
                id: v.id,
                x: v.x,
                y: v.y,
            }));
        // MAX_SNAPSHOT_ENTITIES is derived from the worst-case encoding, so this cannot fail;
        // if it ever did, the snapshot is skipped and counted rather than sent truncated.
        let len = match tickwire_proto::encode_snapshot(&self.snapshot, &mut self.payload) {
            Ok(len) => len,
            Err(_) => {
                self.stats.sends_failed += 1;
                return None;
            }
        };
        if self
            .netcode
            .send_payload(now, client, &self.payload[..len], tx)
            .is_err()
        {
            self.stats.sends_failed += 1;
            return None;
        }
        self.stats.snapshots_sent += 1;
        self.stats.snapshot_bytes += len as u64;
        Some(len)
    }
}

/// What A2S queries see of the server, borrowed for one query.
struct QuerySource<'a> {
    cfg: &'a QueryConfig,
    now: Now,
    players: &'a [Option<Player>],
    connected: usize,
    max_players: usize,
    tick_ms: u16,
    seed: u64,
}

impl a2s::A2sSource for QuerySource<'_> {
    fn info(&self) -> a2s::A2sInfo<'_> {
        a2s::A2sInfo {
            name: &self.cfg.name,
            map: "arena",
            folder: "tickwire",
            game: "Tickwire",
            // A2S counts are one byte; larger servers report 255.
            players: self.connected.min(255) as u8,
            max_players: self.max_players.min(255) as u8,
            bots: 0,
            version: env!("CARGO_PKG_VERSION"),
            port: self.cfg.port,
        }
    }

    fn for_each_player(&self, f: &mut dyn FnMut(a2s::A2sPlayer<'_>)) {
        // Players have no names in this protocol: report their entity ids.
        let mut name = String::with_capacity(16);
        for p in self.players.iter().flatten() {
            use std::fmt::Write;
            name.clear();
            let _ = write!(name, "player-{}", p.entity);
            f(a2s::A2sPlayer {
                name: &name,
                score: 0,
                duration_secs: self.now.mono.saturating_sub(p.joined).as_secs_f32(),
            });
        }
    }

    fn for_each_rule(&self, f: &mut dyn FnMut(&str, &str)) {
        f("version", env!("CARGO_PKG_VERSION"));
        f("tick_ms", &self.tick_ms.to_string());
        f("max_players", &self.max_players.to_string());
        f("players", &self.connected.to_string());
        f("world_seed", &self.seed.to_string());
        for (name, value) in &self.cfg.rules {
            f(name, value);
        }
    }
}

/// Applies one netcode event to the game state; returns the client index of a player who just
/// joined (so the caller can welcome them once the netcode borrow ends).
fn on_event(
    now: Now,
    world: &mut World,
    players: &mut [Option<Player>],
    stats: &mut CoreStats,
    event: tickwire_netcode::ServerEvent<'_>,
) -> Option<usize> {
    use tickwire_netcode::ServerEvent;
    match event {
        ServerEvent::Connected { client, .. } => {
            let slot = players.get_mut(client)?;
            if let Some(old) = slot.take() {
                world.despawn(old.entity);
            }
            // The world is sized for max_players, so a free slot always has room; a world
            // that is full anyway leaves the session without a body until it disconnects.
            let entity = world.spawn()?;
            *slot = Some(Player {
                entity,
                inputs: InputQueue::new(),
                last_received_seq: None,
                last_applied_seq: 0,
                joined: now.mono,
                ack_tick: 0,
                welcomes_sent: 0,
            });
            Some(client)
        }
        ServerEvent::Payload { client, data } => {
            let player = players.get_mut(client)?.as_mut()?;
            match tickwire_proto::decode_client(data) {
                Ok(ClientMessage::Input { ack_tick, frames }) => {
                    player.ack_tick = player.ack_tick.max(ack_tick);
                    for frame in frames {
                        if player
                            .last_received_seq
                            .is_some_and(|last| frame.seq <= last)
                        {
                            continue; // a redundant copy of a frame we already have
                        }
                        player.last_received_seq = Some(frame.seq);
                        stats.inputs_queued += 1;
                        if player.inputs.push(frame) {
                            stats.inputs_overflowed += 1;
                        }
                    }
                }
                Err(_) => stats.payloads_malformed += 1,
            }
            None
        }
        ServerEvent::Disconnected { client, .. } => {
            if let Some(player) = players.get_mut(client).and_then(Option::take) {
                world.despawn(player.entity);
            }
            None
        }
    }
}
