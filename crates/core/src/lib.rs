//! tickwire-core: the sans-IO game server, for any game.
//!
//! [`GameServer`] joins the netcode.io session layer ([`tickwire_netcode::Server`]), the game
//! messages ([`tickwire_proto`]) and a game (any [`tickwire_game::Game`]). It knows no game: it
//! owns sessions, input sequencing (redundant copies recognised by sequence number, each frame
//! handed to the game once, in order), the welcome, acks, snapshot framing and the choice of
//! entities each player sees ([`interest`]), reliable events ([`tickwire_proto::reliable`]),
//! A2S queries and the recording of everything that changed the game ([`record`]). It never
//! touches a socket or reads the clock: the shell hands it datagrams and the current [`Now`],
//! and it hands datagrams back through a `tx` callback.
//!
//! Calling pattern (see docs/architecture.md, "The tick loop"):
//!
//! ```text
//! between ticks: server.handle_packet(now, peer, bytes, &mut tx)   // any number of times
//! at the deadline: server.tick(now, &mut tx)                         // exactly once per tick
//! at exit:         server.broadcast_bye(..); a tick or two later server.shutdown(&mut tx)
//! ```
#![forbid(unsafe_code)]

pub mod a2s;
mod input_queue;
pub mod interest;
pub mod record;

use std::net::SocketAddr;
use std::time::Duration;

pub use tickwire_game::{Game, GameConfig, GameEntry, GameSpec, PlayerId};
pub use tickwire_netcode::{DenyReason, DisconnectReason, DropReason, Key, Now, Peer, ServerStats};
pub use tickwire_proto::reliable::{ChannelConfig, ChannelError};
pub use tickwire_proto::ByeReason;
use tickwire_proto::{reliable::Channel, ClientMessage, Welcome, NO_ENTITY};

use tickwire_game::{Outbox, View, NO_OWNER};

pub use input_queue::{InputFrame, InputQueue};

/// Capacity of each client's input queue, in frames. At one input per tick this is a quarter
/// second of inputs; a client further ahead than that loses its oldest queued frames (counted).
pub const INPUT_QUEUE_FRAMES: usize = 16;

/// Ticks between welcome resends while a new client has not acknowledged a snapshot.
pub const WELCOME_RESEND_TICKS: u32 = 8;
/// Most welcome messages sent to one client.
pub const WELCOME_MAX_SENDS: u32 = 8;
/// Most reliable-channel packets sent to one client per tick (a 64 KiB event takes ~64
/// packets: about four ticks at this rate, at ~0.5 Mbit/s per client while it lasts).
pub const RELIABLE_PACKETS_PER_TICK: usize = 16;

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
    /// Most entities in one snapshot (nearest first); capped at
    /// [`tickwire_proto::max_snapshot_entities`] for the game's field count.
    pub snapshot_max_entities: usize,
    /// Reliable event channel limits (per client, each direction).
    pub channel: ChannelConfig,
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
    /// Input frames handed to the game (each exactly once).
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
    /// A2S-prefixed datagrams dropped: malformed, rate-limited, or queries turned off.
    pub queries_dropped: u64,
    /// A2S queries dropped by the rate limits (per source or overall); also in
    /// `queries_dropped`.
    pub queries_rate_limited: u64,
    /// Bytes of A2S requests received.
    pub query_bytes_in: u64,
    /// Bytes of A2S replies sent.
    pub query_bytes_out: u64,
    /// Game events queued for delivery (per recipient).
    pub events_queued: u64,
    /// Game events refused because they exceed the message limit.
    pub events_too_large: u64,
    /// Game events refused because the client fell too far behind (its backlog is full).
    pub events_backlog: u64,
    /// Reliable messages from clients handed to the game.
    pub messages_received: u64,
    /// Reliable channel packets that did not decode (dropped).
    pub reliable_malformed: u64,
    /// Reliable channel packets sent.
    pub reliable_packets_sent: u64,
    /// Players the game refused at join (full).
    pub joins_refused: u64,
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
    /// Entities the game showed this tick.
    pub entities: usize,
}

/// A game event the core refused, for the shell to log (rate-limited) beside the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRefused {
    /// The player it was for.
    pub player: PlayerId,
    /// Why.
    pub error: ChannelError,
}

/// One connected player.
#[derive(Debug)]
struct Player {
    inputs: InputQueue,
    /// Newest input sequence received (queued), if any.
    last_received_seq: Option<u32>,
    /// Newest input sequence applied (0 before the first).
    last_applied_seq: u32,
    /// When the player joined (for A2S_PLAYER durations).
    joined: Duration,
    /// Newest snapshot tick the client acknowledged (0: none yet).
    ack_tick: u32,
    /// Welcome messages sent so far (resent until the client acknowledges a snapshot).
    welcomes_sent: u32,
    /// Reliable events both ways.
    channel: Channel,
}

/// The game and what the core keeps for it, borrowed apart from the netcode server.
struct GameSide {
    game: Box<dyn Game>,
    spec: GameSpec,
    outbox: Outbox,
    recorder: Option<record::Recorder>,
    /// The newest refused event, for the shell's log.
    last_refused: Option<EventRefused>,
}

/// The sans-IO game server. See the crate docs for the calling pattern.
pub struct GameServer {
    netcode: tickwire_netcode::Server,
    side: GameSide,
    /// Indexed by netcode client index (= [`PlayerId`]); allocated for `max_players` up front.
    players: Vec<Option<Player>>,
    channel_cfg: ChannelConfig,
    tick: u32,
    tick_ms: u16,
    snapshot_max_entities: usize,
    stats: CoreStats,
    /// This tick's entities, as the game showed them.
    view: View,
    /// Nearest-entity index over `view`.
    interest: interest::Interest,
    /// Each view entity pre-encoded (id and fields), once per tick.
    entity_bytes: Vec<u8>,
    /// `entity_offsets[i]..entity_offsets[i + 1]` is entity i's encoding.
    entity_offsets: Vec<u32>,
    /// Per player: the view index of their entity this tick ([`NO_INDEX`] when none).
    player_entity: Vec<u32>,
    /// Per player: viewpoint without an entity.
    player_focus: Vec<Option<(i32, i32)>>,
    /// Reused per snapshot: chosen view indices.
    near: Vec<u32>,
    /// Reused per message: the encoded payload.
    payload: Vec<u8>,
    /// A2S responder and what it reports; `None` when queries are off.
    query: Option<(a2s::A2sResponder, QueryConfig)>,
}

const NO_INDEX: u32 = u32::MAX;

impl GameServer {
    /// Builds a server around `game` with every table allocated for `cfg.max_players`.
    pub fn new(cfg: CoreConfig, game: Box<dyn Game>) -> Self {
        let spec = game.spec();
        let fields = spec.entity_fields.min(tickwire_proto::MAX_ENTITY_FIELDS);
        let max_entities = cfg
            .snapshot_max_entities
            .clamp(1, tickwire_proto::max_snapshot_entities(fields));
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
            side: GameSide {
                game,
                spec,
                outbox: Outbox::new(),
                recorder: None,
                last_refused: None,
            },
            players,
            channel_cfg: cfg.channel,
            tick: 0,
            tick_ms: cfg.tick_ms,
            snapshot_max_entities: max_entities,
            stats: CoreStats::default(),
            view: View::new(fields, cfg.max_players),
            interest: interest::Interest::new(),
            entity_bytes: Vec::new(),
            entity_offsets: Vec::new(),
            player_entity: vec![NO_INDEX; cfg.max_players],
            player_focus: vec![None; cfg.max_players],
            near: Vec::with_capacity(max_entities),
            payload: vec![0; a2s::MAX_REPLY_BYTES.max(tickwire_proto::MAX_PAYLOAD_BYTES)],
            query: cfg.query.map(|q| (a2s::A2sResponder::new(q.secret), q)),
        }
    }

    /// Records every call that changes the game from now on (see [`record`]). Call before the
    /// first tick so the recording can be replayed from the game's initial state.
    pub fn start_recording(&mut self, recorder: record::Recorder) {
        self.side.recorder = Some(recorder);
    }

    /// Flushes and returns the recorder (with its error, if writing failed).
    pub fn stop_recording(&mut self) -> Option<record::Recorder> {
        let mut rec = self.side.recorder.take()?;
        rec.flush();
        Some(rec)
    }

    /// The recorder, to check for a write error.
    pub fn recorder(&self) -> Option<&record::Recorder> {
        self.side.recorder.as_ref()
    }

    /// Handles one packet from `from` (a datagram, or one framed packet of a stream). Replies
    /// (handshake, queries) go out through `tx` to the same peer. A bare `SocketAddr` converts
    /// to the peer on the UDP game socket.
    pub fn handle_packet(
        &mut self,
        now: Now,
        from: impl Into<Peer>,
        bytes: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) {
        let from = from.into();
        // A2S queries start with FF FF FF FF, which no netcode packet does (0xFF would be
        // packet type 15 with 15 sequence bytes).
        if a2s::is_a2s(bytes) {
            self.handle_query(now, from, bytes, tx);
            return;
        }
        let mut refused = None;
        let GameServer {
            netcode,
            side,
            players,
            stats,
            channel_cfg,
            ..
        } = self;
        netcode.handle_packet(now, from, bytes, tx, &mut |event| {
            if let Some(client) = on_event(now, side, players, stats, channel_cfg, event) {
                refused = Some(client);
            }
        });
        if let Some(client) = refused {
            self.refuse(now, client, tx);
        }
    }

    /// The stream connection under `peer` closed: the player on it (if any) leaves now, as
    /// after a timeout, instead of waiting for the session to time out. Returns whether a
    /// player left.
    pub fn link_closed(&mut self, now: Now, peer: Peer) -> bool {
        let GameServer {
            netcode,
            side,
            players,
            stats,
            channel_cfg,
            ..
        } = self;
        netcode.link_closed(peer, &mut |event| {
            let _ = on_event(now, side, players, stats, channel_cfg, event);
        })
    }

    /// Where the player in slot `client` is connected from (address and link).
    pub fn client_peer(&self, client: usize) -> Option<Peer> {
        self.netcode.client_peer(client)
    }

    /// The slot of the player connected on `peer`, if any.
    pub fn client_on(&self, peer: Peer) -> Option<usize> {
        self.netcode.client_on(peer)
    }

    /// Runs one tick: session upkeep (keep-alives, timeouts), hands every queued input to the
    /// game in order, steps the game once, and sends each connected client its welcome (until
    /// acknowledged), its due reliable events and one snapshot.
    pub fn tick(&mut self, now: Now, tx: &mut dyn FnMut(Peer, &[u8])) -> TickReport {
        {
            let GameServer {
                netcode,
                side,
                players,
                stats,
                channel_cfg,
                ..
            } = self;
            netcode.update(now, tx, &mut |event| {
                // A player never joins in update(); only timeouts arrive here.
                let _ = on_event(now, side, players, stats, channel_cfg, event);
            });
        }

        let mut report = TickReport::default();
        for (p, slot) in self.players.iter_mut().enumerate() {
            let Some(player) = slot else { continue };
            while let Some(frame) = player.inputs.pop() {
                let bytes = frame.bytes();
                if let Some(rec) = &mut self.side.recorder {
                    rec.input(p as PlayerId, bytes);
                }
                self.side.game.input(p as PlayerId, bytes);
                player.last_applied_seq = frame.seq;
                report.inputs_applied += 1;
            }
        }
        self.stats.inputs_applied += report.inputs_applied as u64;
        self.side.game.step(&mut self.side.outbox);
        self.tick = self.tick.wrapping_add(1);
        report.tick = self.tick;
        if let Some(rec) = &mut self.side.recorder {
            rec.step(self.tick, self.side.game.state_hash());
        }
        route_outbox(&mut self.side, &mut self.players, &mut self.stats);
        self.build_view();
        report.entities = self.view.len();

        for client in 0..self.players.len() {
            if self.welcome_due(client) {
                self.send_welcome(now, client, tx);
            }
            self.send_reliable(now, client, tx);
            if let Some(bytes) = self.send_snapshot(now, client, tx) {
                report.snapshots += 1;
                report.snapshot_bytes += bytes;
            }
        }
        report
    }

    /// Ends every session at once: netcode's redundant disconnect packets, and the game is told
    /// each player left. Send [`GameServer::broadcast_bye`] a tick or two before, so clients
    /// read the `Bye` before their netcode library drops the connection.
    pub fn shutdown(&mut self, tx: &mut dyn FnMut(Peer, &[u8])) {
        self.netcode.disconnect_all(tx);
        for p in 0..self.players.len() {
            if self.players[p].take().is_some() {
                self.leave(p);
            }
        }
        if let Some(rec) = &mut self.side.recorder {
            rec.flush();
        }
    }

    /// Sends every connected client a `Bye` with `reason` (without disconnecting them).
    pub fn broadcast_bye(&mut self, now: Now, reason: ByeReason, tx: &mut dyn FnMut(Peer, &[u8])) {
        let len = match tickwire_proto::encode_bye(reason, &mut self.payload) {
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

    /// The game, for inspection (tests, tools).
    pub fn game(&self) -> &dyn Game {
        &*self.side.game
    }

    /// What the game said about itself.
    pub fn spec(&self) -> &GameSpec {
        &self.side.spec
    }

    /// The game state hash now.
    pub fn state_hash(&self) -> u64 {
        self.side.game.state_hash()
    }

    /// This tick's entities as the game showed them (after the last [`GameServer::tick`]).
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Most entities in one snapshot, after the field-count cap.
    pub fn snapshot_max_entities(&self) -> usize {
        self.snapshot_max_entities
    }

    /// Game-layer counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Takes the newest game event the core refused since the last call (for the log).
    pub fn take_refused_event(&mut self) -> Option<EventRefused> {
        self.side.last_refused.take()
    }

    /// Session-layer counters: packets, bytes, drops and denies by reason.
    pub fn netcode_stats(&self) -> &ServerStats {
        self.netcode.stats()
    }

    /// The entity a connected client controls this tick, if any.
    pub fn player_entity(&self, client: usize) -> Option<u32> {
        self.players.get(client)?.as_ref()?;
        let i = *self.player_entity.get(client)?;
        (i != NO_INDEX).then(|| self.view.ids[i as usize])
    }

    /// The newest input sequence applied for a connected client.
    pub fn last_applied_seq(&self, client: usize) -> Option<u32> {
        self.players
            .get(client)?
            .as_ref()
            .map(|p| p.last_applied_seq)
    }

    /// Queues a reliable event for a connected client (as a game's `Outbox` would, for tools
    /// and tests). `None`: no such player.
    pub fn send_event(&mut self, client: usize, msg: &[u8]) -> Option<Result<(), ChannelError>> {
        let player = self.players.get_mut(client).and_then(Option::as_mut)?;
        let r = player.channel.send(msg);
        count_event(&mut self.stats, &mut self.side.last_refused, client, r);
        Some(r)
    }

    /// The game refused a player: tell them why and end the session.
    fn refuse(&mut self, now: Now, client: usize, tx: &mut dyn FnMut(Peer, &[u8])) {
        self.stats.joins_refused += 1;
        if let Ok(len) = tickwire_proto::encode_bye(ByeReason::ServerFull, &mut self.payload) {
            let _ = self
                .netcode
                .send_payload(now, client, &self.payload[..len], tx);
        }
        self.players[client] = None;
        self.netcode.disconnect(client, tx);
    }

    fn leave(&mut self, p: usize) {
        if let Some(rec) = &mut self.side.recorder {
            rec.leave(p as PlayerId);
        }
        self.side.game.leave(p as PlayerId, &mut self.side.outbox);
        route_outbox(&mut self.side, &mut self.players, &mut self.stats);
    }

    /// Asks the game for this tick's entities, indexes them, and pre-encodes each once.
    fn build_view(&mut self) {
        self.view.clear();
        self.side.game.view(&mut self.view);
        let v = &self.view;
        self.interest.rebuild(&v.ids, &v.xs, &v.ys);
        let n = v.len();
        let fields = v.fields_per_entity();
        self.entity_bytes
            .resize(n * tickwire_proto::entity_max_bytes(fields), 0);
        self.entity_offsets.clear();
        let mut at = 0;
        self.entity_offsets.push(0);
        for i in 0..n {
            // Sized for the worst case above, so this cannot fail.
            let _ = tickwire_proto::write_snapshot_entity(
                &mut self.entity_bytes,
                &mut at,
                v.ids[i],
                v.fields_of(i),
            );
            self.entity_offsets.push(at as u32);
        }
        self.player_entity.fill(NO_INDEX);
        self.player_focus.fill(None);
        for (i, &owner) in v.owners.iter().enumerate() {
            if owner != NO_OWNER {
                if let Some(slot) = self.player_entity.get_mut(owner as usize) {
                    if *slot == NO_INDEX {
                        *slot = i as u32;
                    }
                }
            }
        }
        for f in &v.focus {
            if let Some(slot) = self.player_focus.get_mut(f.player as usize) {
                *slot = Some((f.x, f.y));
            }
        }
    }

    /// Answers one A2S query (or drops it, counted).
    fn handle_query(
        &mut self,
        now: Now,
        from: Peer,
        bytes: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) {
        self.stats.query_bytes_in += bytes.len() as u64;
        let Some((responder, cfg)) = &self.query else {
            self.stats.queries_dropped += 1;
            return;
        };
        let source = QuerySource {
            cfg,
            now,
            players: &self.players,
            game: &*self.side.game,
            spec: &self.side.spec,
            connected: self.netcode.connected_clients(),
            max_players: self.netcode.max_clients(),
            tick_ms: self.tick_ms,
        };
        match responder.handle_at(now.mono, from.addr, bytes, &source, &mut self.payload) {
            Ok(Some(len)) => {
                self.stats.queries_answered += 1;
                self.stats.query_bytes_out += len as u64;
                tx(from, &self.payload[..len]);
            }
            Err(a2s::A2sError::RateLimited(_)) => {
                self.stats.queries_dropped += 1;
                self.stats.queries_rate_limited += 1;
            }
            Ok(None) | Err(_) => self.stats.queries_dropped += 1,
        }
    }

    /// The welcome is unreliable like snapshots, so it is sent at the first tick after the
    /// join (when the player's entity is known), then every [`WELCOME_RESEND_TICKS`] ticks, at
    /// most [`WELCOME_MAX_SENDS`] times, until the client acknowledges a snapshot.
    fn welcome_due(&self, client: usize) -> bool {
        match &self.players[client] {
            Some(p) => {
                p.ack_tick == 0
                    && p.welcomes_sent < WELCOME_MAX_SENDS
                    && (p.welcomes_sent == 0 || self.tick % WELCOME_RESEND_TICKS == 0)
            }
            None => false,
        }
    }

    fn send_welcome(&mut self, now: Now, client: usize, tx: &mut dyn FnMut(Peer, &[u8])) {
        let you = self.player_entity(client).unwrap_or(NO_ENTITY);
        let Some(player) = self.players.get_mut(client).and_then(Option::as_mut) else {
            return;
        };
        player.welcomes_sent += 1;
        let spec = &self.side.spec;
        let msg = Welcome {
            player_id: you,
            tick_ms: self.tick_ms,
            tick: self.tick,
            protocol_version: tickwire_proto::PROTOCOL_VERSION,
            game: spec.name.clone(),
            game_version: spec.version,
            input_bytes: spec.input_bytes as u8,
            entity_fields: spec.entity_fields as u8,
        };
        if let Ok(len) = tickwire_proto::encode_welcome(&msg, &mut self.payload) {
            if self
                .netcode
                .send_payload(now, client, &self.payload[..len], tx)
                .is_err()
            {
                self.stats.sends_failed += 1;
            }
        }
    }

    /// Sends the client's due reliable-channel packets (new fragments, resends, acks).
    fn send_reliable(&mut self, now: Now, client: usize, tx: &mut dyn FnMut(Peer, &[u8])) {
        let Some(player) = self.players.get_mut(client).and_then(Option::as_mut) else {
            return;
        };
        for _ in 0..RELIABLE_PACKETS_PER_TICK {
            self.payload[0] = tickwire_proto::tag::SERVER_RELIABLE;
            let end = tickwire_proto::MAX_PAYLOAD_BYTES;
            let Some(n) = player
                .channel
                .poll_packet(now.mono, &mut self.payload[1..end])
            else {
                break;
            };
            if self
                .netcode
                .send_payload(now, client, &self.payload[..1 + n], tx)
                .is_err()
            {
                self.stats.sends_failed += 1;
                break;
            }
            self.stats.reliable_packets_sent += 1;
        }
    }

    /// Builds and sends one client's snapshot from the pre-encoded entities; returns its
    /// payload size.
    fn send_snapshot(
        &mut self,
        now: Now,
        client: usize,
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) -> Option<usize> {
        let player = self.players[client].as_ref()?;
        let own = self.player_entity[client];
        let (first, x, y) = if own != NO_INDEX {
            let i = own as usize;
            (Some(own), self.view.xs[i], self.view.ys[i])
        } else {
            let (x, y) = self.player_focus[client].unwrap_or((0, 0));
            (None, x, y)
        };
        self.interest
            .nearest(x, y, first, self.snapshot_max_entities, &mut self.near);
        let you = first.map_or(NO_ENTITY, |i| self.view.ids[i as usize]);
        // The entity count is capped so the worst case fits MAX_PAYLOAD_BYTES (see
        // tickwire_proto::max_snapshot_entities); a failure would be skipped and counted.
        let Some(mut at) = tickwire_proto::write_snapshot_header(
            &mut self.payload,
            self.tick,
            player.last_applied_seq,
            you,
            self.near.len(),
        ) else {
            self.stats.sends_failed += 1;
            return None;
        };
        for &i in &self.near {
            let (a, b) = (
                self.entity_offsets[i as usize] as usize,
                self.entity_offsets[i as usize + 1] as usize,
            );
            self.payload[at..at + (b - a)].copy_from_slice(&self.entity_bytes[a..b]);
            at += b - a;
        }
        let len = at;
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

/// Counts one event send result.
fn count_event(
    stats: &mut CoreStats,
    last_refused: &mut Option<EventRefused>,
    player: usize,
    r: Result<(), ChannelError>,
) {
    match r {
        Ok(()) => stats.events_queued += 1,
        Err(error) => {
            match error {
                ChannelError::TooLarge { .. } => stats.events_too_large += 1,
                _ => stats.events_backlog += 1,
            }
            *last_refused = Some(EventRefused {
                player: player as PlayerId,
                error,
            });
        }
    }
}

/// Delivers the game's queued events into the players' reliable channels.
fn route_outbox(side: &mut GameSide, players: &mut [Option<Player>], stats: &mut CoreStats) {
    if side.outbox.is_empty() {
        return;
    }
    for (to, msg) in side.outbox.drain() {
        match to {
            Some(p) => {
                if let Some(player) = players.get_mut(p as usize).and_then(Option::as_mut) {
                    let r = player.channel.send(&msg);
                    count_event(stats, &mut side.last_refused, p as usize, r);
                }
            }
            None => {
                for (p, slot) in players.iter_mut().enumerate() {
                    if let Some(player) = slot {
                        let r = player.channel.send(&msg);
                        count_event(stats, &mut side.last_refused, p, r);
                    }
                }
            }
        }
    }
}

/// What A2S queries see of the server, borrowed for one query.
struct QuerySource<'a> {
    cfg: &'a QueryConfig,
    now: Now,
    players: &'a [Option<Player>],
    game: &'a dyn Game,
    spec: &'a GameSpec,
    connected: usize,
    max_players: usize,
    tick_ms: u16,
}

impl a2s::A2sSource for QuerySource<'_> {
    fn info(&self) -> a2s::A2sInfo<'_> {
        a2s::A2sInfo {
            name: &self.cfg.name,
            map: &self.spec.map,
            folder: "tickwire",
            game: &self.spec.name,
            // A2S counts are one byte; larger servers report 255.
            players: self.connected.min(255) as u8,
            max_players: self.max_players.min(255) as u8,
            bots: 0,
            version: env!("CARGO_PKG_VERSION"),
            port: self.cfg.port,
        }
    }

    fn for_each_player(&self, f: &mut dyn FnMut(a2s::A2sPlayer<'_>)) {
        // Players have no names in this protocol: report their slots.
        let mut name = String::with_capacity(16);
        for (slot, p) in self.players.iter().enumerate() {
            let Some(p) = p else { continue };
            use std::fmt::Write;
            name.clear();
            let _ = write!(name, "player-{slot}");
            f(a2s::A2sPlayer {
                name: &name,
                score: self.game.score(slot as PlayerId),
                duration_secs: self.now.mono.saturating_sub(p.joined).as_secs_f32(),
            });
        }
    }

    fn for_each_rule(&self, f: &mut dyn FnMut(&str, &str)) {
        f("version", env!("CARGO_PKG_VERSION"));
        f("game", &self.spec.name);
        f("tick_ms", &self.tick_ms.to_string());
        f("max_players", &self.max_players.to_string());
        f("players", &self.connected.to_string());
        for (name, value) in &self.cfg.rules {
            f(name, value);
        }
    }
}

/// Whether input sequence `seq` is newer than `last`, on the wrapping sequence circle (half
/// the space ahead is newer), so sequences survive wrapping at `u32::MAX`.
pub fn seq_newer(seq: u32, last: u32) -> bool {
    let d = seq.wrapping_sub(last);
    d != 0 && d < 1 << 31
}

/// Applies one netcode event; returns the client index of a player the game refused (so the
/// caller can tell them and end the session once the netcode borrow ends).
fn on_event(
    now: Now,
    side: &mut GameSide,
    players: &mut [Option<Player>],
    stats: &mut CoreStats,
    channel_cfg: &ChannelConfig,
    event: tickwire_netcode::ServerEvent<'_>,
) -> Option<usize> {
    use tickwire_netcode::ServerEvent;
    match event {
        ServerEvent::Connected { client, .. } => {
            let slot = players.get_mut(client)?;
            if slot.take().is_some() {
                if let Some(rec) = &mut side.recorder {
                    rec.leave(client as PlayerId);
                }
                side.game.leave(client as PlayerId, &mut side.outbox);
            }
            *slot = Some(Player {
                inputs: InputQueue::new(),
                last_received_seq: None,
                last_applied_seq: 0,
                joined: now.mono,
                ack_tick: 0,
                welcomes_sent: 0,
                channel: Channel::new(channel_cfg.clone()),
            });
            if let Some(rec) = &mut side.recorder {
                rec.join(client as PlayerId);
            }
            let joined = side.game.join(client as PlayerId, &mut side.outbox);
            if joined.is_err() {
                // The refused player gets nothing the game queued for it.
                *slot = None;
            }
            route_outbox(side, players, stats);
            joined.is_err().then_some(client)
        }
        ServerEvent::Payload { client, data } => {
            let input_bytes = side.spec.input_bytes;
            let player = players.get_mut(client)?.as_mut()?;
            match tickwire_proto::decode_client(data, input_bytes) {
                Ok(ClientMessage::Input(inputs)) => {
                    if seq_newer(inputs.ack_tick, player.ack_tick) || player.ack_tick == 0 {
                        player.ack_tick = inputs.ack_tick;
                    }
                    for (seq, frame) in inputs.frames() {
                        if player
                            .last_received_seq
                            .is_some_and(|last| !seq_newer(seq, last))
                        {
                            continue; // a redundant copy of a frame we already have
                        }
                        player.last_received_seq = Some(seq);
                        stats.inputs_queued += 1;
                        if player.inputs.push(InputFrame::new(seq, frame)) {
                            stats.inputs_overflowed += 1;
                        }
                    }
                }
                Ok(ClientMessage::Reliable(body)) => {
                    let GameSide {
                        game,
                        outbox,
                        recorder,
                        ..
                    } = side;
                    let r = player.channel.handle_packet(now.mono, body, &mut |msg| {
                        stats.messages_received += 1;
                        if let Some(rec) = recorder {
                            rec.message(client as PlayerId, msg);
                        }
                        game.message(client as PlayerId, msg, outbox);
                    });
                    if r.is_err() {
                        stats.reliable_malformed += 1;
                    }
                    route_outbox(side, players, stats);
                }
                Err(_) => stats.payloads_malformed += 1,
            }
            None
        }
        ServerEvent::Disconnected { client, .. } => {
            if players.get_mut(client).and_then(Option::take).is_some() {
                if let Some(rec) = &mut side.recorder {
                    rec.leave(client as PlayerId);
                }
                side.game.leave(client as PlayerId, &mut side.outbox);
                route_outbox(side, players, stats);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seq_newer;

    #[test]
    fn sequences_wrap() {
        assert!(seq_newer(1, 0));
        assert!(!seq_newer(0, 0));
        assert!(!seq_newer(0, 1));
        assert!(seq_newer(0, u32::MAX));
        assert!(seq_newer(5, u32::MAX - 5));
        assert!(!seq_newer(u32::MAX, 0));
    }
}
