//! The swarm: N bots, one thread, one event loop, one io backend holding every bot's link.
//!
//! [`run`] does the whole measurement:
//!
//! 1. **Setup.** Reads the 32-byte key, checks the metrics endpoint (when given) and opens the
//!    io backend. With `--transport udp` it binds one UDP socket per bot (loopback for a
//!    loopback server, otherwise the unspecified address of the server's family); a socket's
//!    [`SocketId`] indexes straight into `socket_to_bot`. Stream transports open nothing yet.
//! 2. **Connect phase.** Bots start in waves of [`WAVE_SIZE`] every [`WAVE_INTERVAL`]; each
//!    mints its own connect token (client id = bot index + 1, the server address as the only
//!    address) and runs the netcode handshake through a [`GameClient`]. A stream bot first
//!    opens its connection (see "Links" below). The phase ends when every bot is connected or
//!    has failed, or at `--connect-timeout-secs` (stragglers are abandoned and count as
//!    failed).
//! 3. **Window.** The measurement window of `--duration` starts (metrics and `/proc/self/stat`
//!    read at both ends). Only snapshots and round trips observed inside it are counted.
//! 4. **Teardown.** Every bot disconnects politely (netcode disconnect packets; a WebSocket
//!    bot then a close frame), the backend is flushed, and a [`Report`] comes back.
//!
//! # Links (`--transport`)
//!
//! Each bot's [`Link`] is its own UDP socket, or one stream connection with its own
//! [`ClientConn`] codec (`tickwire-stream`, sans-IO) for TCP framing or a WebSocket:
//!
//! * A stream bot connects when its wave starts, with the backend's blocking
//!   [`Backend::connect`] (at most [`STREAM_CONNECT_TIMEOUT`], never past the connect
//!   deadline; instant on loopback), then the connection is registered with the backend and
//!   its [`ConnId`]'s slot indexes `conn_to_bot` (the bot's own link holds the whole handle,
//!   so an event for an older connection in a reused slot is ignored). A connect that fails
//!   fails the bot, with the error as the reason (`stream_connect_failed: ...`).
//! * A WebSocket bot sends the upgrade request (`GET /`, subprotocol `tickwire.netcode`) at
//!   once; its netcode packets are framed only once the server's `101` has been read
//!   ([`ClientConn::is_established`]). Packets netcode sends before that are dropped and
//!   counted (`diagnostics.stream_not_ready`): netcode's own handshake resends (every 100 ms)
//!   cover them, as they would a lost datagram.
//! * Bytes from the backend ([`Event::Stream`]) go through the bot's codec; each whole packet
//!   goes to its `GameClient` as a packet from the server's address. Packets a bot sends are
//!   framed into one reused buffer and queued with [`Backend::send_stream`] (all or nothing:
//!   a packet that finds the connection's bounded buffer full is dropped and counted in
//!   `send_failures`, as UDP would lose it).
//! * A stream that ends ([`Event::Closed`]: the server closed it or it failed) or that
//!   breaks the framing (a [`tickwire_stream::Violation`]: we send the codec's reply, a close
//!   frame, and close it) takes the bot down: a connected bot is lost (`clients_lost`, the
//!   reason in `connection_losses`), a handshaking one failed. Every such end is also
//!   counted by reason in `diagnostics.stream_closes` (`stream_closed_eof`,
//!   `stream_error_<kind>`, `stream_<violation>`), including ends of bots that netcode had
//!   already seen disconnected.
//!
//! # The schedule (open loop)
//!
//! From the first wave on, the tick (from the first welcome; 16 ms until one arrives) is cut
//! into [`GROUPS`] slots; bot `i` belongs to group `i % GROUPS`, and at every slot the bots of
//! that slot's group send one input (if connected and welcomed) and run their `update` (handshake resends,
//! keep-alives, timeouts), then the backend is flushed once. Slot deadlines are fixed points
//! (`t0 + k * slot`), never derived from received snapshots, so a slow server cannot slow the
//! offered load. When the loop falls more than a tick behind, the missed slots are skipped
//! and counted (`diagnostics.schedule_slips`): a non-zero count means the load generator,
//! not the server, was the bottleneck.
//!
//! # Inputs (the game's bot)
//!
//! A bot sends nothing until its welcome arrives: only the welcome says which game the server
//! plays and how long its input frames are. At its first welcome the bot finds that game in
//! `tickwire_games::builtin()` and builds the game's own bot, seeded from `--seed` and the bot
//! index (see [`crate::play`]); a game other than `--game`, a game this binary lacks or one
//! with other encodings is counted and reported instead, and that bot stays connected without
//! sending inputs. At each of its send slots a playing bot asks the game's bot for a frame of
//! the welcome's `input_bytes`, given the newest snapshot's tick and its own entity's fields
//! (the entity `snapshot.you` names), and sends it with [`GameClient::send_input`].
//!
//! # Round-trip time
//!
//! Each bot keeps the send instant of its last [`RTT_RING`] input sequence numbers. When a
//! snapshot's `last_input_seq` first covers a sequence, `now - sent` is one sample. This
//! includes the wait in the server's input queue until its next tick (up to one tick), plus
//! both directions of the network and both processes' scheduling: it is what a player's input
//! latency looks like, not a network ping.
//!
//! # Hot path
//!
//! Nothing is allocated per packet by this module: the per-bot state, the RTT rings, the
//! histogram, the outbox, the framing buffer and the codec reply buffer are allocated up front,
//! and each bot's codec allocates its one-frame reassembly buffer once. (`GameClient` itself
//! decodes each snapshot's entity list into a `Vec`; connects, closes and failure reasons
//! allocate, but they are rare.) Replies a bot produces while a packet is being handled (the
//! backend is borrowed by `poll` at that moment) go into a bounded outbox that is framed for
//! the bot's link and sent right after the poll returns; connections to close wait there too.

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tickwire_client::{ClientStats, GameClient, GameEvent, Now, Welcome};
use tickwire_io::{Backend, CloseReason, ConnId, Event, SendError, SocketId};
use tickwire_netcode::{generate_connect_token, Key, TokenParams, USER_DATA_BYTES};
use tickwire_stream::{
    close_code, random_ws_key, ws_client_request, ClientConn, FrameError, Limits, Violation,
};

use crate::args::{Args, Transport};
use crate::play::{bot_seed, Catalog, Player, Refusal};
use crate::report::{Diagnostics, GameFigures, LatencyHistogram, Report, Rtt, ServerFigures};
use crate::scrape::{self, MetricsUrl, Scrape};

/// Phase groups per tick: bots are spread over the tick like unsynchronised clients.
pub const GROUPS: usize = 8;
/// Bots started per wave during the connect phase.
pub const WAVE_SIZE: usize = 100;
/// Time between two waves.
pub const WAVE_INTERVAL: Duration = Duration::from_millis(10);
/// Tick length assumed until the server's welcome says otherwise.
pub const DEFAULT_TICK_MS: u16 = 16;
/// Input send instants remembered per bot (about one second at 62.5 Hz).
pub const RTT_RING: usize = 64;
/// netcode connection timeout written into every bot's token.
pub const TOKEN_TIMEOUT_SECS: i32 = 10;
/// Extra token lifetime beyond the connect timeout and the window.
const TOKEN_SPARE_SECS: u64 = 60;
/// Time between two progress lines.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Kernel socket buffer requested per bot socket.
const SOCKET_BUFFER_BYTES: usize = 256 * 1024;
/// Most datagrams taken by one poll: about 2 ms of work, so a burst of snapshots cannot hold
/// the send schedule back by more than a slot (the rest stays readable for the next poll).
const MAX_EVENTS: usize = 256;
/// Extra non-blocking polls after a full one (see `Swarm::wait`).
const EXTRA_POLLS: usize = 4;
/// Bytes the outbox can hold between a poll and its drain.
const OUTBOX_BYTES: usize = 512 * 1024;
/// Longest blocking connect of one stream bot (also never past the connect deadline).
pub const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait at teardown for the server to close the stream bots' connections.
const STREAM_LINGER: Duration = Duration::from_secs(1);
/// Capacity of the reused framing and codec-reply buffers: a largest packet (1400 bytes)
/// plus a WebSocket or TCP header, with room to spare.
const FRAME_BYTES: usize = 2048;
/// `/proc/<pid>/stat` time unit (USER_HZ, 100 on every mainstream Linux architecture).
const USER_HZ: f64 = 100.0;

/// Where a bot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Not started yet.
    Idle,
    /// Handshaking.
    Connecting,
    /// Connected.
    Connected,
    /// Never connected (denied, timed out, abandoned at the connect deadline).
    Failed,
    /// Was connected, and the connection ended.
    Lost,
}

/// What a bot knows about its game.
enum Play {
    /// No welcome yet: the game, its input size and entity layout are unknown, so the bot
    /// sends no input.
    AwaitingWelcome,
    /// Playing the welcome's game with that game's bot.
    Playing(Player),
    /// The welcome named a game it cannot play (counted once in `Tally::refusals`); it stays
    /// connected and reads snapshots, but sends no input.
    Refused,
}

/// Per-bot bookkeeping, beside its [`GameClient`] (split so both can be borrowed at once).
struct Meter {
    status: Status,
    /// Tick length from this bot's welcome.
    tick_ms: u16,
    /// Connected when the window started: its snapshots are expected.
    counted: bool,
    /// Snapshots received inside the window.
    snapshots: u64,
    /// Newest input sequence a snapshot has acknowledged.
    last_acked: u32,
    /// `(seq, sent_ns)` of recent inputs, indexed by `seq % RTT_RING`.
    sent: [(u32, u64); RTT_RING],
    /// Seed of this bot's game bot (from `--seed` and the bot index).
    seed: u64,
    /// The game it plays, from its welcome.
    play: Play,
    /// Client counters when the window started.
    base: ClientStats,
}

impl Meter {
    fn new(seed: u64) -> Self {
        Meter {
            status: Status::Idle,
            tick_ms: DEFAULT_TICK_MS,
            counted: false,
            snapshots: 0,
            last_acked: 0,
            sent: [(0, 0); RTT_RING],
            seed,
            play: Play::AwaitingWelcome,
            base: ClientStats::default(),
        }
    }

    /// At the bot's first welcome: chooses its game's bot, or counts why it cannot play.
    /// Later welcomes (the server resends it until a snapshot is acknowledged) change nothing.
    fn on_welcome(&mut self, tally: &mut Tally, w: &Welcome) {
        tally.game.get_or_insert_with(|| w.game.clone());
        if !matches!(self.play, Play::AwaitingWelcome) {
            return;
        }
        self.play = match tally.catalog.choose(w, self.seed) {
            Ok(player) => Play::Playing(player),
            Err(refusal) => {
                tally.refuse(&refusal);
                Play::Refused
            }
        };
    }

    fn record_send(&mut self, seq: u32, at_ns: u64) {
        self.sent[seq as usize % RTT_RING] = (seq, at_ns);
    }
}

/// One bot: its client (once started), its meter and its link to the server (three fields,
/// so that all three can be borrowed at once).
struct Bot {
    game: Option<GameClient>,
    meter: Meter,
    link: Link,
}

/// A bot's way to the server. See the module docs, "Links".
// The codec lives inline: the bots are one allocation made up front, and a UDP bot paying a
// few hundred bytes for the larger variant is cheaper than a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// Its own UDP socket (`--transport udp`).
    Udp(SocketId),
    /// A stream transport without a connection: not started yet, the connect failed, or the
    /// connection ended. Packets for it are dropped.
    Down,
    /// A stream connection and its client codec (TCP framing, or a WebSocket).
    Stream { conn: ConnId, codec: ClientConn },
}

impl Link {
    /// The stream connection, if the link is one.
    fn conn(&self) -> Option<ConnId> {
        match self {
            Link::Stream { conn, .. } => Some(*conn),
            Link::Udp(_) | Link::Down => None,
        }
    }
}

/// Counters shared by every bot's event handler.
struct Tally {
    /// `[start, end)` of the window in ns since `t0`, once it started.
    window: Option<(u64, u64)>,
    /// Bots currently connected.
    connected: u32,
    /// Bots that failed to connect.
    failed: u32,
    /// Why counted bots lost their connection during the window, with counts.
    losses: Vec<(String, u32)>,
    /// Failure reasons and counts (rare: allocation is fine).
    failures: Vec<(String, u32)>,
    /// First tick length a welcome announced.
    tick_ms: Option<u16>,
    /// Snapshots received at any time (for the progress rate).
    snapshots_total: u64,
    /// Snapshots received inside the window.
    snapshots_window: u64,
    /// Bye messages.
    byes: u64,
    rtt: LatencyHistogram,
    /// The games bots can play (and `--game`).
    catalog: Catalog,
    /// The game the first welcome named.
    game: Option<String>,
    /// Reliable game events received (the whole run).
    events_received: u64,
    /// Bots that could not play their welcome's game, by [`Refusal::kind`].
    refusals: Vec<(String, u32)>,
    /// The first refusal's text.
    first_refusal: Option<String>,
    /// Stream connections that ended (closed by the server, failed, broke the framing), by
    /// reason, over the whole run.
    stream_closes: Vec<(String, u32)>,
}

impl Tally {
    fn in_window(&self, at_ns: u64) -> bool {
        self.window.is_some_and(|(s, e)| at_ns >= s && at_ns < e)
    }

    fn fail(&mut self, reason: String) {
        self.failed += 1;
        bump(&mut self.failures, reason);
    }

    fn refuse(&mut self, refusal: &Refusal) {
        bump(&mut self.refusals, refusal.kind().to_string());
        self.first_refusal
            .get_or_insert_with(|| refusal.to_string());
    }

    fn refused(&self, kind: &str) -> u32 {
        self.refusals
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n)
    }

    fn new(window: Option<(u64, u64)>, catalog: Catalog) -> Self {
        Tally {
            window,
            connected: 0,
            failed: 0,
            losses: Vec::new(),
            failures: Vec::new(),
            tick_ms: None,
            snapshots_total: 0,
            snapshots_window: 0,
            byes: 0,
            rtt: LatencyHistogram::new(),
            catalog,
            game: None,
            events_received: 0,
            refusals: Vec::new(),
            first_refusal: None,
            stream_closes: Vec::new(),
        }
    }
}

/// Adds one to `reason`'s count (a short list: rare events only).
fn bump(list: &mut Vec<(String, u32)>, reason: String) {
    match list.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, n)) => *n += 1,
        None => list.push((reason, 1)),
    }
}

/// Where an outbox item goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    /// A netcode packet from bot `.0`, to be framed for its link at drain time (its codec is
    /// busy feeding while the packet is produced).
    Bot(u32),
    /// Bytes already framed by a codec (a WebSocket pong or close frame) for a connection.
    Conn(ConnId),
}

/// Replies produced while a packet is handled, sent after the poll; and connections to close
/// once those are queued.
struct Outbox {
    bytes: Vec<u8>,
    items: Vec<(Dest, SocketAddr, usize, usize)>,
    /// Connections to close after the items are sent (rare: may grow).
    closing: Vec<ConnId>,
    dropped: u64,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            bytes: Vec::with_capacity(OUTBOX_BYTES),
            items: Vec::with_capacity(MAX_EVENTS * 2),
            closing: Vec::with_capacity(64),
            dropped: 0,
        }
    }

    fn push(&mut self, dest: Dest, to: SocketAddr, data: &[u8]) {
        if self.bytes.len() + data.len() > self.bytes.capacity()
            || self.items.len() == self.items.capacity()
        {
            self.dropped += 1;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.items.push((dest, to, start, data.len()));
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.closing.is_empty()
    }
}

/// What sending cost, over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SendCounts {
    /// Packets our side could not queue (send slab, stream buffer full, stale connection) or
    /// the kernel refused.
    failures: u64,
    /// Packets netcode sent on a WebSocket whose upgrade was not answered yet (dropped).
    not_ready: u64,
}

/// Queues one datagram; when the send slab is full, flushes it and tries once more.
fn send_now(io: &mut dyn Backend, failures: &mut u64, socket: SocketId, to: SocketAddr, d: &[u8]) {
    match io.send(socket, to, d) {
        Ok(()) => {}
        Err(SendError::QueueFull) => {
            if io.flush().is_err() || io.send(socket, to, d).is_err() {
                *failures += 1;
            }
        }
        Err(_) => *failures += 1,
    }
}

/// Sends one of a bot's netcode packets on its link: a datagram to `to`, or the packet framed
/// by the bot's codec into `frame` (cleared first; reused, so nothing is allocated) and queued
/// on its connection. A link that is down drops it.
fn send_on(
    io: &mut dyn Backend,
    counts: &mut SendCounts,
    frame: &mut Vec<u8>,
    link: &mut Link,
    to: SocketAddr,
    packet: &[u8],
) {
    match link {
        Link::Udp(socket) => send_now(io, &mut counts.failures, *socket, to, packet),
        Link::Down => {}
        Link::Stream { conn, codec } => {
            frame.clear();
            match codec.encode(packet, frame) {
                Ok(_) => {
                    if io.send_stream(*conn, frame).is_err() {
                        counts.failures += 1;
                    }
                }
                Err(FrameError::NotEstablished) => counts.not_ready += 1,
                Err(_) => counts.failures += 1,
            }
        }
    }
}

/// Sends what the outbox holds (each bot's packets framed for its link), then closes the
/// connections waiting to be closed.
fn drain_outbox(
    io: &mut dyn Backend,
    bots: &mut [Bot],
    outbox: &mut Outbox,
    counts: &mut SendCounts,
    frame: &mut Vec<u8>,
) {
    for &(dest, to, start, len) in &outbox.items {
        let data = &outbox.bytes[start..start + len];
        match dest {
            Dest::Bot(b) => {
                if let Some(bot) = bots.get_mut(b as usize) {
                    send_on(io, counts, frame, &mut bot.link, to, data);
                }
            }
            Dest::Conn(conn) => {
                if io.send_stream(conn, data).is_err() {
                    counts.failures += 1;
                }
            }
        }
    }
    outbox.items.clear();
    outbox.bytes.clear();
    for conn in outbox.closing.drain(..) {
        io.close(conn);
    }
}

/// The receive side of the swarm, lent to the poll callback: every event goes to its bot.
struct Inbound<'a> {
    bots: &'a mut [Bot],
    socket_to_bot: &'a [u32],
    conn_to_bot: &'a [u32],
    outbox: &'a mut Outbox,
    tally: &'a mut Tally,
    /// Reused buffer for what a codec must send back.
    reply: &'a mut Vec<u8>,
    t0: Instant,
    unix_secs: u64,
}

impl Inbound<'_> {
    fn now(&self) -> (Now, u64) {
        let mono = Instant::now().saturating_duration_since(self.t0);
        (
            Now {
                mono,
                unix_secs: self.unix_secs,
            },
            mono.as_nanos() as u64,
        )
    }

    /// Hands one backend event to its bot.
    fn on_io_event(&mut self, event: Event<'_>) {
        match event {
            Event::Datagram { socket, from, data } => {
                let Some(&b) = self.socket_to_bot.get(socket.0 as usize) else {
                    return;
                };
                let (now, at_ns) = self.now();
                let Inbound {
                    bots,
                    outbox,
                    tally,
                    ..
                } = self;
                let Some(Bot {
                    game: Some(game),
                    meter,
                    ..
                }) = bots.get_mut(b as usize)
                else {
                    return;
                };
                game.handle_packet(
                    now,
                    from,
                    data,
                    &mut |to, d| outbox.push(Dest::Bot(b), to, d),
                    &mut |ev| on_event(meter, tally, ev, at_ns),
                );
            }
            Event::Stream { conn, data } => self.on_stream(conn, data),
            Event::Closed { conn, reason } => {
                let Some(b) = self.bot_of(conn) else { return };
                let Bot { meter, link, .. } = &mut self.bots[b];
                *link = Link::Down;
                stream_ended(meter, self.tally, close_reason(reason));
            }
            Event::Accepted { .. } => {}
        }
    }

    /// The bot whose link is `conn` (not an older connection that had its slot).
    fn bot_of(&self, conn: ConnId) -> Option<usize> {
        let b = *self.conn_to_bot.get(conn.index as usize)? as usize;
        (self.bots.get(b)?.link.conn() == Some(conn)).then_some(b)
    }

    /// Bytes on a bot's connection: through its codec, each packet to its client.
    fn on_stream(&mut self, conn: ConnId, data: &[u8]) {
        let Some(b) = self.bot_of(conn) else { return };
        let (now, at_ns) = self.now();
        let Inbound {
            bots,
            outbox,
            tally,
            reply,
            ..
        } = self;
        let Bot { game, meter, link } = &mut bots[b];
        let (Some(game), Link::Stream { codec, .. }) = (game.as_mut(), &mut *link) else {
            return;
        };
        // Every packet on the connection is from the server (docs/protocol.md §5.1).
        let server = game.server_addr();
        reply.clear();
        let fed = codec.feed(data, reply, &mut |packet| {
            game.handle_packet(
                now,
                server,
                packet,
                &mut |to, d| outbox.push(Dest::Bot(b as u32), to, d),
                &mut |ev| on_event(meter, tally, ev, at_ns),
            )
        });
        if !reply.is_empty() {
            outbox.push(Dest::Conn(conn), server, reply);
        }
        if let Err(v) = fed {
            let reason = violation_reason(v, codec.http_status());
            outbox.closing.push(conn);
            *link = Link::Down;
            stream_ended(meter, tally, reason);
        }
    }
}

/// Handles one client event for one bot.
fn on_event(meter: &mut Meter, tally: &mut Tally, event: GameEvent, at_ns: u64) {
    match event {
        GameEvent::Connected { .. } => {
            if meter.status == Status::Connecting {
                meter.status = Status::Connected;
                tally.connected += 1;
            }
        }
        GameEvent::Welcome(w) => {
            if w.tick_ms > 0 {
                meter.tick_ms = w.tick_ms;
                tally.tick_ms.get_or_insert(w.tick_ms);
            }
            meter.on_welcome(tally, &w);
        }
        GameEvent::Message(_) => tally.events_received += 1,
        GameEvent::Snapshot(snap) => {
            if let Play::Playing(player) = &mut meter.play {
                player.observe(&snap);
            }
            tally.snapshots_total += 1;
            let counting = meter.counted && tally.in_window(at_ns);
            if counting {
                meter.snapshots += 1;
                tally.snapshots_window += 1;
            }
            let acked = snap.last_input_seq;
            if acked > meter.last_acked {
                let oldest = acked.saturating_sub(RTT_RING as u32 - 1);
                let from = meter.last_acked.saturating_add(1).max(oldest);
                if counting {
                    for seq in from..=acked {
                        let (s, sent_ns) = meter.sent[seq as usize % RTT_RING];
                        if s == seq && sent_ns <= at_ns {
                            tally.rtt.record_us((at_ns - sent_ns) / 1000);
                        }
                    }
                }
                meter.last_acked = acked;
            }
        }
        GameEvent::Bye(_) => tally.byes += 1,
        GameEvent::Disconnected(state) => end_connection(meter, tally, state.as_str()),
    }
}

/// The bot's connection ended for `reason` (a netcode state, or a stream's end): a handshaking
/// bot failed, a connected one is lost. Nothing happens to a bot that already ended.
fn end_connection(meter: &mut Meter, tally: &mut Tally, reason: &str) {
    match meter.status {
        Status::Connecting => {
            meter.status = Status::Failed;
            tally.fail(reason.to_string());
        }
        Status::Connected => {
            meter.status = Status::Lost;
            tally.connected -= 1;
            if tally.window.is_none() {
                // Lost before the window: it will not be counted, so it failed.
                tally.fail(format!("lost_before_window_{reason}"));
            } else if meter.counted {
                bump(&mut tally.losses, reason.to_string());
            }
        }
        Status::Idle | Status::Failed | Status::Lost => {}
    }
}

/// The bot's stream connection ended for `reason`: counted in `tally.stream_closes` whatever
/// the bot's state, and the end of its connection if netcode had not ended it already.
fn stream_ended(meter: &mut Meter, tally: &mut Tally, reason: String) {
    end_connection(meter, tally, &reason);
    bump(&mut tally.stream_closes, reason);
}

/// The reason a closed stream is counted under: `stream_closed_eof` (the server closed it) or
/// `stream_error_<kind>` (`stream_error_connection_reset`, ...).
fn close_reason(reason: CloseReason) -> String {
    match reason {
        CloseReason::Eof => "stream_closed_eof".to_string(),
        CloseReason::Error(kind) => {
            let words = kind
                .to_string()
                .to_ascii_lowercase()
                .replace([' ', '-'], "_");
            format!("stream_error_{words}")
        }
    }
}

/// The reason a framing violation is counted under: `stream_<violation>`, and for a refused
/// WebSocket upgrade the server's HTTP status (`stream_bad_handshake_http_503`).
fn violation_reason(v: Violation, http_status: Option<u16>) -> String {
    match (v, http_status) {
        (Violation::BadHandshake, Some(status)) if status != 101 => {
            format!("stream_bad_handshake_http_{status}")
        }
        _ => format!("stream_{}", v.as_str()),
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This process' CPU time (user + system) from `/proc/self/stat`; `None` off Linux.
pub fn process_cpu_time() -> Option<Duration> {
    parse_proc_stat_cpu(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds of USER_HZ ticks.
pub fn parse_proc_stat_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// The address bots bind to for `server`.
fn bind_addr(server: SocketAddr) -> SocketAddr {
    match (server, server.ip().is_loopback()) {
        (SocketAddr::V4(_), true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (SocketAddr::V4(_), false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (SocketAddr::V6(_), true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (SocketAddr::V6(_), false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// A hint for "too many open files" (each bot holds one descriptor), else nothing.
fn fd_hint(e: &io::Error, bots: usize) -> String {
    if e.raw_os_error() == Some(24) {
        format!(
            " (too many open files: raise `ulimit -n` above {})",
            bots + 64
        )
    } else {
        String::new()
    }
}

/// Reads a 32-byte key file.
fn read_key(path: &std::path::Path) -> Result<Key> {
    let bytes =
        fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let Ok(key) = Key::try_from(bytes.as_slice()) else {
        bail!(
            "key file {} holds {} bytes; a connect-token key is exactly 32 bytes \
             (use the server's auth.key_file)",
            path.display(),
            bytes.len()
        );
    };
    Ok(key)
}

/// The event loop's state.
struct Swarm {
    io: Box<dyn Backend>,
    bots: Vec<Bot>,
    /// `--transport`.
    transport: Transport,
    /// Bot index by [`SocketId`] (UDP).
    socket_to_bot: Vec<u32>,
    /// Bot index by [`ConnId::index`] (streams; the bot's link holds the whole handle).
    conn_to_bot: Vec<u32>,
    outbox: Outbox,
    tally: Tally,
    sends: SendCounts,
    /// Reused buffer a packet is framed into for its stream.
    frame: Vec<u8>,
    /// Reused buffer for a codec's replies.
    reply: Vec<u8>,
    inputs_sent_window: u64,
    /// Send slots in the window at which a connected bot had no welcome yet (sent nothing).
    inputs_awaiting_welcome: u64,
    slips: u64,
    t0: Instant,
    unix_secs: u64,
    server: SocketAddr,
    key: Key,
    protocol_id: u64,
    token_expire_secs: u64,
    started: usize,
    next_wave_at: Instant,
    next_slot_at: Instant,
    slot_index: u64,
    /// End of the connect phase: no stream connect blocks past it.
    connect_deadline: Instant,
    sending: bool,
    progress: Option<Progress>,
}

/// The per-second status line on stderr.
struct Progress {
    next_at: Instant,
    last_at: Instant,
    last_snapshots: u64,
    printed: bool,
}

impl Swarm {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_nanos() as u64
    }

    fn now_for(&self, at: Instant) -> Now {
        Now {
            mono: at.saturating_duration_since(self.t0),
            unix_secs: self.unix_secs,
        }
    }

    fn tick(&self) -> Duration {
        Duration::from_millis(u64::from(self.tally.tick_ms.unwrap_or(DEFAULT_TICK_MS)))
    }

    /// Starts every wave that is due.
    fn start_waves(&mut self, now: Instant) -> Result<()> {
        let n = self.bots.len();
        while self.started < n && now >= self.next_wave_at {
            let end = (self.started + WAVE_SIZE).min(n);
            for i in self.started..end {
                self.start_bot(i, now)?;
            }
            self.started = end;
            self.next_wave_at += WAVE_INTERVAL;
            self.flush();
        }
        Ok(())
    }

    fn start_bot(&mut self, i: usize, now: Instant) -> Result<()> {
        let token = generate_connect_token(&TokenParams {
            protocol_id: self.protocol_id,
            client_id: i as u64 + 1,
            create_unix_secs: self.unix_secs,
            expire_secs: self.token_expire_secs,
            timeout_secs: TOKEN_TIMEOUT_SECS,
            server_addrs: &[self.server],
            user_data: [0; USER_DATA_BYTES],
            private_key: &self.key,
        })
        .map_err(|e| anyhow::anyhow!("cannot mint a connect token for bot {}: {e}", i + 1))?;
        let cnow = self.now_for(now);
        let at_ns = self.ns(now);
        let game = GameClient::new(&token, cnow)
            .map_err(|e| anyhow::anyhow!("bot {} rejected its connect token: {e}", i + 1))?;
        if self.transport.is_stream() {
            // Blocking, but never past the connect deadline; a bot left idle by the deadline
            // is abandoned like any straggler.
            let left = self
                .connect_deadline
                .saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.open_stream(left.min(STREAM_CONNECT_TIMEOUT))? {
                Ok((conn, codec)) => {
                    let slot = conn.index as usize;
                    if self.conn_to_bot.len() <= slot {
                        self.conn_to_bot.resize(slot + 1, u32::MAX);
                    }
                    self.conn_to_bot[slot] = i as u32;
                    self.bots[i].link = Link::Stream { conn, codec };
                }
                Err(reason) => {
                    self.bots[i].meter.status = Status::Failed;
                    self.tally.fail(reason);
                    return Ok(());
                }
            }
        }
        let Swarm {
            io,
            bots,
            tally,
            sends,
            frame,
            ..
        } = self;
        let Bot {
            game: slot,
            meter,
            link,
        } = &mut bots[i];
        meter.status = Status::Connecting;
        let game = slot.insert(game);
        game.update(
            cnow,
            &mut |to, d| send_on(io.as_mut(), sends, frame, link, to, d),
            &mut |ev| on_event(meter, tally, ev, at_ns),
        );
        Ok(())
    }

    /// Opens one stream bot's connection (and for a WebSocket queues its upgrade request).
    /// The inner `Err` is the bot's failure reason; the outer one a setup error (an io model
    /// that cannot open connections at all).
    fn open_stream(
        &mut self,
        timeout: Duration,
    ) -> Result<std::result::Result<(ConnId, ClientConn), String>> {
        let conn = match self.io.connect(self.server, timeout) {
            Ok(conn) => conn,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => bail!(
                "--transport {} needs stream connections, and io model {} cannot open them: {e} \
                 (use --io-model epoll or io_uring)",
                self.transport.as_str(),
                self.io.model()
            ),
            Err(e) => {
                let hint = fd_hint(&e, self.bots.len());
                return Ok(Err(format!("stream_connect_failed: {e}{hint}")));
            }
        };
        let codec = match self.transport {
            Transport::Ws => {
                let Ok(key) = random_ws_key() else {
                    self.io.close(conn);
                    return Ok(Err("stream_no_random".to_string()));
                };
                // `SocketAddr`'s display is the Host form: `127.0.0.1:7777`, `[::1]:7777`.
                let request = ws_client_request(&self.server.to_string(), "/", key);
                if let Err(e) = self.io.send_stream(conn, &request) {
                    self.io.close(conn);
                    return Ok(Err(format!("stream_upgrade_not_sent: {e}")));
                }
                ClientConn::websocket(key, Limits::default())
            }
            Transport::Tcp | Transport::Udp => ClientConn::tcp(Limits::default()),
        };
        Ok(Ok((conn, codec)))
    }

    /// Runs every send slot that is due (open loop; see the module docs).
    fn run_due_slots(&mut self, now: Instant) {
        let tick = self.tick();
        let slot = tick / GROUPS as u32;
        if now > self.next_slot_at + tick {
            let behind = now - self.next_slot_at;
            let skip = (behind.as_nanos() / slot.as_nanos().max(1)) as u64;
            if self.tally.window.is_some() {
                self.slips += skip;
            }
            self.next_slot_at += slot * skip as u32;
            self.slot_index += skip;
        }
        while self.next_slot_at <= now {
            self.run_slot((self.slot_index % GROUPS as u64) as usize, now);
            self.slot_index += 1;
            self.next_slot_at += slot;
        }
    }

    /// One slot: the group's bots send an input (when connected) and run their upkeep.
    fn run_slot(&mut self, group: usize, now: Instant) {
        let cnow = self.now_for(now);
        let at_ns = self.ns(now);
        let in_window = self.tally.in_window(at_ns);
        let sending = self.sending;
        let Swarm {
            io,
            bots,
            tally,
            sends,
            frame,
            inputs_sent_window,
            inputs_awaiting_welcome,
            ..
        } = self;
        for Bot { game, meter, link } in bots.iter_mut().skip(group).step_by(GROUPS) {
            let Some(game) = game.as_mut() else { continue };
            if !matches!(meter.status, Status::Connecting | Status::Connected) {
                continue;
            }
            let mut tx = |to: SocketAddr, d: &[u8]| send_on(io.as_mut(), sends, frame, link, to, d);
            if sending && meter.status == Status::Connected {
                match &mut meter.play {
                    Play::Playing(player) => {
                        let tick = player.tick(game.newest_tick());
                        let frame = player.next_frame(tick);
                        if let Ok(seq) = game.send_input(cnow, frame, &mut tx) {
                            meter.record_send(seq, at_ns);
                            if in_window {
                                *inputs_sent_window += 1;
                            }
                        }
                    }
                    Play::AwaitingWelcome if in_window => *inputs_awaiting_welcome += 1,
                    Play::AwaitingWelcome | Play::Refused => {}
                }
            }
            game.update(cnow, &mut tx, &mut |ev| on_event(meter, tally, ev, at_ns));
        }
        self.flush();
    }

    fn flush(&mut self) {
        if let Ok(r) = self.io.flush() {
            self.sends.failures += r.failed as u64;
        }
    }

    /// Waits for packets until `deadline`, hands them to their bots, sends their replies.
    ///
    /// When a poll comes back with a full budget (a backlog), up to [`EXTRA_POLLS`] more
    /// non-blocking polls follow before the loop returns to the send schedule: receiving gets
    /// up to 5x the steady rate to catch up, so a stall shows as late sends (and slips), not as
    /// snapshots rotting in socket buffers and inflating the measured round trips.
    fn wait(&mut self, deadline: Instant) -> Result<()> {
        let mut report = self.poll_once(deadline)?;
        let mut extra = 0;
        while report.events >= MAX_EVENTS && extra < EXTRA_POLLS {
            report = self.poll_once(Instant::now())?;
            extra += 1;
        }
        Ok(())
    }

    fn poll_once(&mut self, deadline: Instant) -> Result<tickwire_io::PollReport> {
        let Swarm {
            io,
            bots,
            socket_to_bot,
            conn_to_bot,
            outbox,
            tally,
            reply,
            t0,
            unix_secs,
            ..
        } = self;
        let mut inbound = Inbound {
            bots,
            socket_to_bot,
            conn_to_bot,
            outbox,
            tally,
            reply,
            t0: *t0,
            unix_secs: *unix_secs,
        };
        let report = io
            .poll(deadline, &mut |event| inbound.on_io_event(event))
            .context("io poll failed")?;
        if !self.outbox.is_empty() {
            let Swarm {
                io,
                bots,
                outbox,
                sends,
                frame,
                ..
            } = self;
            drain_outbox(io.as_mut(), bots, outbox, sends, frame);
            self.flush();
        }
        Ok(report)
    }

    /// Prints the progress line when due.
    fn progress(&mut self, now: Instant, phase: &str) {
        if self.progress.as_ref().is_none_or(|p| now < p.next_at) {
            return;
        }
        let n = self.bots.len();
        let counted_ticks = self.counted_bots() as f64 / self.tick().as_secs_f64();
        let window = self.tally.window;
        let (connected, failed, snaps_window) = (
            self.tally.connected,
            self.tally.failed,
            self.tally.snapshots_window,
        );
        let snaps_total = self.tally.snapshots_total;
        let rtt_p99 = self.tally.rtt.quantile_us(0.99);
        let now_ns = self.ns(now);
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        let dt = now.duration_since(p.last_at).as_secs_f64().max(1e-9);
        let rate = (snaps_total - p.last_snapshots) as f64 / dt;
        p.last_at = now;
        p.last_snapshots = snaps_total;
        p.next_at = now + PROGRESS_INTERVAL;
        p.printed = true;
        let mut line = format!(
            "[{:6.1}s] {phase:<10} {connected}/{n} connected, {failed} failed, {rate:.0} snapshots/s",
            now.duration_since(self.t0).as_secs_f64()
        );
        if let Some((start_ns, _)) = window {
            let elapsed = (now_ns.saturating_sub(start_ns)) as f64 / 1e9;
            let expected = counted_ticks * elapsed;
            if expected > 0.0 {
                line.push_str(&format!(", delivery {:.4}", snaps_window as f64 / expected));
            }
            if let Some(us) = rtt_p99 {
                line.push_str(&format!(", rtt p99 {:.1} ms", us as f64 / 1000.0));
            }
        }
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    fn end_progress(&mut self) {
        if self.progress.as_ref().is_some_and(|p| p.printed) {
            eprintln!();
        }
    }

    fn counted_bots(&self) -> usize {
        self.bots.iter().filter(|b| b.meter.counted).count()
    }

    /// Whether every bot has started and either connected or failed.
    fn connect_settled(&self) -> bool {
        self.started == self.bots.len()
            && self.tally.connected + self.tally.failed == self.bots.len() as u32
    }

    /// Abandons bots still handshaking at the connect deadline.
    fn abandon_stragglers(&mut self) {
        let Swarm {
            io,
            bots,
            tally,
            sends,
            frame,
            ..
        } = self;
        let mut closing = Vec::new();
        for Bot { game, meter, link } in bots.iter_mut() {
            if matches!(meter.status, Status::Idle | Status::Connecting) {
                // Name the handshake step it was stuck in: still sending connection requests
                // means the server never answered (address, key or protocol id wrong, or down).
                let mut reason = "connect_timeout_not_started".to_string();
                if let Some(g) = game.as_mut() {
                    reason = format!("connect_timeout_{}", g.state().as_str());
                    if link.conn().is_some() && !link_established(link) {
                        // A WebSocket whose upgrade was never answered.
                        reason = "connect_timeout_websocket_upgrade".to_string();
                    }
                    g.disconnect(&mut |to, d| send_on(io.as_mut(), sends, frame, link, to, d));
                }
                closing.extend(link.conn());
                if link.conn().is_some() {
                    *link = Link::Down;
                }
                *game = None;
                meter.status = Status::Failed;
                tally.fail(reason);
            }
        }
        self.flush();
        for conn in closing {
            self.io.close(conn);
        }
    }

    /// Disconnects every bot politely (a WebSocket then sends its close frame) and flushes.
    fn disconnect_all(&mut self) {
        let Swarm {
            io,
            bots,
            sends,
            frame,
            ..
        } = self;
        for Bot { game, meter, link } in bots.iter_mut() {
            if let Some(g) = game.as_mut() {
                if matches!(meter.status, Status::Connecting | Status::Connected) {
                    g.disconnect(&mut |to, d| send_on(io.as_mut(), sends, frame, link, to, d));
                    if let Link::Stream { conn, codec } = link {
                        frame.clear();
                        codec.close(close_code::NORMAL, frame);
                        if !frame.is_empty() && io.send_stream(*conn, frame).is_err() {
                            sends.failures += 1;
                        }
                    }
                }
            }
        }
        self.flush();
    }

    /// Stream transports, after [`Swarm::disconnect_all`]: reads (and drops) what still
    /// arrives until the server has closed every connection, at most until `deadline`, so
    /// that the server sees its clients leave (it closes a connection whose session ended)
    /// rather than connections reset by a process that exits with unread snapshots in its
    /// sockets. What is left is closed when the backend drops.
    fn linger(&mut self, deadline: Instant) {
        while self.io.connections() > 0 && Instant::now() < deadline {
            if self.io.poll(deadline, &mut |_| {}).is_err() {
                break;
            }
        }
    }
}

/// Whether a link can carry packets now (a UDP socket, TCP, an upgraded WebSocket).
fn link_established(link: &Link) -> bool {
    match link {
        Link::Udp(_) => true,
        Link::Down => false,
        Link::Stream { codec, .. } => codec.is_established(),
    }
}

/// Runs the whole load test and returns its report. Errors are setup failures (bad key file,
/// unreachable metrics endpoint, sockets that cannot be opened), not measurement failures.
pub fn run(args: &Args) -> Result<Report> {
    let key = read_key(&args.key_file)?;
    if let Some(url) = &args.metrics {
        scrape::fetch(url).with_context(|| format!("cannot scrape --metrics {url}"))?;
    }
    let n = args.clients as usize;
    let cfg = tickwire_io::Config {
        max_events: MAX_EVENTS,
        max_datagram: 1500,
        send_queue: (n + 1024).max(4096),
        socket_buffer_bytes: SOCKET_BUFFER_BYTES,
        // One connection per stream bot (the default 10,000 would cap --clients).
        max_connections: n.max(1),
        ..tickwire_io::Config::default()
    };
    let mut io = tickwire_io::open(args.io_model, &cfg)
        .with_context(|| format!("cannot open io model {}", args.io_model))?;
    let local = bind_addr(args.server);
    let mut bots = Vec::with_capacity(n);
    let mut socket_to_bot = Vec::with_capacity(n);
    for i in 0..n {
        let link = if args.transport.is_stream() {
            // Connected when its wave starts.
            Link::Down
        } else {
            let socket = io.bind(local).map_err(|e| {
                anyhow::anyhow!(
                    "cannot bind a UDP socket on {local} for bot {}: {e}{}",
                    i + 1,
                    fd_hint(&e, n)
                )
            })?;
            let idx = socket.0 as usize;
            if socket_to_bot.len() <= idx {
                socket_to_bot.resize(idx + 1, u32::MAX);
            }
            socket_to_bot[idx] = i as u32;
            Link::Udp(socket)
        };
        bots.push(Bot {
            game: None,
            meter: Meter::new(bot_seed(args.seed, i)),
            link,
        });
    }
    let io_model = io.model().to_string();
    let progress_on = !args.no_progress && io::stderr().is_terminal();
    let t0 = Instant::now();
    let token_expire_secs =
        args.connect_timeout_secs.as_secs() + args.duration.as_secs() + TOKEN_SPARE_SECS;
    let mut swarm = Swarm {
        io,
        bots,
        transport: args.transport,
        socket_to_bot,
        conn_to_bot: Vec::with_capacity(if args.transport.is_stream() { n } else { 0 }),
        outbox: Outbox::new(),
        tally: Tally::new(
            None,
            Catalog::new(tickwire_games::builtin(), args.game.clone()),
        ),
        sends: SendCounts::default(),
        frame: Vec::with_capacity(FRAME_BYTES),
        reply: Vec::with_capacity(FRAME_BYTES),
        inputs_sent_window: 0,
        inputs_awaiting_welcome: 0,
        slips: 0,
        t0,
        unix_secs: unix_secs(),
        server: args.server,
        key,
        protocol_id: args.protocol_id,
        token_expire_secs,
        started: 0,
        next_wave_at: t0,
        next_slot_at: t0,
        slot_index: 0,
        connect_deadline: t0 + args.connect_timeout_secs,
        sending: true,
        progress: progress_on.then(|| Progress {
            next_at: t0 + PROGRESS_INTERVAL,
            last_at: t0,
            last_snapshots: 0,
            printed: false,
        }),
    };

    // Connect phase.
    let connect_deadline = swarm.connect_deadline;
    loop {
        let now = Instant::now();
        swarm.unix_secs = unix_secs();
        swarm.start_waves(now)?;
        swarm.run_due_slots(now);
        if swarm.connect_settled() || now >= connect_deadline {
            break;
        }
        swarm.progress(now, "connecting");
        let mut deadline = swarm.next_slot_at.min(connect_deadline);
        if swarm.started < swarm.bots.len() {
            deadline = deadline.min(swarm.next_wave_at);
        }
        if let Some(p) = &swarm.progress {
            deadline = deadline.min(p.next_at);
        }
        swarm.wait(deadline)?;
    }
    swarm.abandon_stragglers();

    // The window.
    let metrics_start = scrape_or_warn(args.metrics.as_ref(), "start");
    let cpu_start = process_cpu_time();
    let window_start = Instant::now();
    let window_end = window_start + args.duration;
    let (ws, we) = (swarm.ns(window_start), swarm.ns(window_end));
    swarm.tally.window = Some((ws, we));
    let mut clients_connected = 0;
    for Bot { game, meter, .. } in swarm.bots.iter_mut() {
        if let (Some(g), Status::Connected) = (game.as_ref(), meter.status) {
            meter.counted = true;
            meter.base = *g.stats();
            clients_connected += 1;
        }
    }
    if clients_connected > 0 {
        loop {
            let now = Instant::now();
            if now >= window_end {
                break;
            }
            swarm.unix_secs = unix_secs();
            swarm.run_due_slots(now);
            swarm.progress(now, "measuring");
            let mut deadline = swarm.next_slot_at.min(window_end);
            if let Some(p) = &swarm.progress {
                deadline = deadline.min(p.next_at);
            }
            swarm.wait(deadline)?;
        }
    }
    let window_stop = Instant::now();
    let cpu_end = process_cpu_time();
    let metrics_end = scrape_or_warn(args.metrics.as_ref(), "end");
    swarm.end_progress();
    swarm.sending = false;

    let window = if clients_connected > 0 {
        window_stop.min(window_end).duration_since(window_start)
    } else {
        Duration::ZERO
    };
    let report = build_report(
        args,
        &swarm,
        io_model,
        clients_connected,
        window,
        cpu_start.zip(cpu_end),
        window_stop.duration_since(window_start),
        metrics_start.zip(metrics_end),
    );
    swarm.disconnect_all();
    if args.transport.is_stream() {
        swarm.linger(Instant::now() + STREAM_LINGER);
    }
    Ok(report)
}

fn scrape_or_warn(url: Option<&MetricsUrl>, when: &str) -> Option<Scrape> {
    let url = url?;
    match scrape::fetch(url) {
        Ok(s) => {
            if s.malformed_lines > 0 {
                eprintln!(
                    "warning: {url}: skipped {} lines that are not Prometheus samples",
                    s.malformed_lines
                );
            }
            Some(s)
        }
        Err(e) => {
            eprintln!("warning: scraping {url} at the window {when} failed: {e}");
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &Args,
    swarm: &Swarm,
    io_model: String,
    clients_connected: u32,
    window: Duration,
    cpu: Option<(Duration, Duration)>,
    cpu_wall: Duration,
    metrics: Option<(Scrape, Scrape)>,
) -> Report {
    let window_ms = window.as_secs_f64() * 1000.0;
    let mut expected = 0.0;
    let (mut snaps, mut bytes, mut stale, mut early) = (0u64, 0u64, 0u64, 0u64);
    for Bot { game, meter, .. } in swarm.bots.iter().filter(|b| b.meter.counted) {
        expected += window_ms / f64::from(meter.tick_ms.max(1));
        if let Some(g) = game {
            let s = g.stats();
            snaps += s.snapshots.saturating_sub(meter.base.snapshots);
            bytes += s.snapshot_bytes.saturating_sub(meter.base.snapshot_bytes);
            stale += s.snapshots_stale.saturating_sub(meter.base.snapshots_stale);
            early += s.snapshots_early.saturating_sub(meter.base.snapshots_early);
        }
    }
    let loadtest_cpu_cores = cpu.and_then(|(a, b)| {
        let wall = cpu_wall.as_secs_f64();
        (wall > 0.0).then(|| b.saturating_sub(a).as_secs_f64() / wall)
    });
    let server_metrics = args.metrics.as_ref().map(|_| match &metrics {
        Some((a, b)) => ServerFigures {
            cpu_cores: scrape::cpu_cores(a, b),
            tick_ms_p99: scrape::quantile_delta(0.99, scrape::TICK_DURATION_MS, a, b),
            tick_lateness_ms_p99: scrape::quantile_delta(0.99, scrape::TICK_LATENESS_MS, a, b),
        },
        None => ServerFigures::default(),
    });
    let io_stats = swarm.io.stats();
    let t = &swarm.tally;
    Report {
        server: args.server.to_string(),
        clients_requested: args.clients,
        clients_connected,
        connect_failures: swarm.tally.failures.clone(),
        connection_losses: swarm.tally.losses.clone(),
        duration_s: args.duration.as_secs_f64(),
        window_s: window.as_secs_f64(),
        tick_ms: u32::from(swarm.tally.tick_ms.unwrap_or(DEFAULT_TICK_MS)),
        snapshots_expected: expected,
        snapshots_received: swarm.tally.snapshots_window,
        rtt: Rtt::from_histogram(&swarm.tally.rtt),
        snapshot_bytes_mean: (snaps > 0).then(|| bytes as f64 / snaps as f64),
        io_model,
        transport: args.transport.as_str().to_string(),
        loadtest_cpu_cores,
        server_metrics,
        min_delivery: args.min_delivery,
        game: GameFigures {
            server: t.game.clone(),
            requested: t.catalog.wanted().map(str::to_string),
            events_received: t.events_received,
            mismatch: t.refused("game_mismatch"),
            unknown: t.refused("game_unknown"),
            incompatible: t.refused("game_incompatible"),
            first_error: t.first_refusal.clone(),
        },
        diagnostics: Diagnostics {
            schedule_slips: swarm.slips,
            inputs_sent: swarm.inputs_sent_window,
            snapshots_stale: stale,
            snapshots_early: early,
            inputs_awaiting_welcome: swarm.inputs_awaiting_welcome,
            send_failures: swarm.sends.failures,
            stream_not_ready: swarm.sends.not_ready,
            stream_send_full: io_stats.stream_send_full,
            stream_closes: swarm.tally.stream_closes.clone(),
            outbox_dropped: swarm.outbox.dropped,
            io_truncated: io_stats.truncated,
            io_recv_errors: io_stats.recv_errors,
            byes: swarm.tally.byes,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu() {
        let line = "1234 (tick wire) (x) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 \
                    100 1000 100 18446744073709551615";
        assert_eq!(parse_proc_stat_cpu(line), Some(Duration::from_secs(3)));
        assert_eq!(parse_proc_stat_cpu("garbage"), None);
        assert_eq!(parse_proc_stat_cpu("1 (x) S 1 2"), None);
        if cfg!(target_os = "linux") {
            assert!(process_cpu_time().is_some());
        }
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(
            bind_addr("127.0.0.1:7777".parse().unwrap()),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            bind_addr("10.1.2.3:7777".parse().unwrap()),
            "0.0.0.0:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            bind_addr("[::1]:7777".parse().unwrap()),
            "[::1]:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            bind_addr("[2001:db8::1]:7777".parse().unwrap()),
            "[::]:0".parse::<SocketAddr>().unwrap()
        );
    }

    fn tally() -> Tally {
        tally_for(None)
    }

    /// A tally inside its window, one bot connected, the built-in games, `--game wanted`.
    fn tally_for(wanted: Option<&str>) -> Tally {
        let catalog = Catalog::new(tickwire_games::builtin(), wanted.map(str::to_string));
        let mut t = Tally::new(Some((1_000, 1_000_000_000)), catalog);
        t.connected = 1;
        t
    }

    fn snapshot(tick: u32, last_input_seq: u32) -> GameEvent {
        GameEvent::Snapshot(tickwire_client::Snapshot {
            tick,
            last_input_seq,
            you: 1,
            fields_per_entity: 2,
            ids: Vec::new(),
            fields: Vec::new(),
        })
    }

    /// The welcome a server playing built-in game `name` sends (its spec as built here).
    fn welcome_for(name: &str) -> Welcome {
        let games = tickwire_games::builtin();
        let entry = tickwire_game::find(&games, name).unwrap();
        let spec = (entry.build)(&tickwire_game::GameConfig::new(9, 4, 20))
            .unwrap()
            .spec();
        Welcome {
            player_id: 1,
            tick_ms: 20,
            tick: 100,
            protocol_version: 2,
            game: spec.name,
            game_version: spec.version,
            input_bytes: spec.input_bytes as u8,
            entity_fields: spec.entity_fields as u8,
        }
    }

    fn connected_meter(seed: u64) -> Meter {
        let mut m = Meter::new(seed);
        m.status = Status::Connected;
        m.counted = true;
        m
    }

    #[test]
    fn the_welcome_chooses_the_bot_and_its_frame_size() {
        for entry in tickwire_games::builtin() {
            let mut t = tally();
            let mut m = connected_meter(bot_seed(1, 0));
            assert!(matches!(m.play, Play::AwaitingWelcome), "no input before");
            let w = welcome_for(entry.name);
            on_event(&mut m, &mut t, GameEvent::Welcome(w.clone()), 0);
            assert_eq!(t.game.as_deref(), Some(entry.name));
            assert!(t.refusals.is_empty() && t.first_refusal.is_none());
            let Play::Playing(player) = &mut m.play else {
                panic!("{}: the bot does not play", entry.name);
            };
            let tick = player.tick(None);
            assert_eq!(tick, w.tick, "before any snapshot the welcome's tick");
            assert_eq!(player.tick(Some(123)), 123, "then the newest snapshot's");
            for tick in tick..tick + 200 {
                assert_eq!(player.next_frame(tick).len(), usize::from(w.input_bytes));
            }
            // The same bot (same seed) given the same view writes the same frames.
            let mut a = tally().catalog.choose(&w, 42).unwrap();
            let mut b = tally().catalog.choose(&w, 42).unwrap();
            for tick in 0..200 {
                assert_eq!(a.next_frame(tick), b.next_frame(tick));
            }
        }
    }

    #[test]
    fn the_bot_sees_its_own_entity() {
        let mut t = tally();
        let mut m = connected_meter(3);
        on_event(&mut m, &mut t, GameEvent::Welcome(welcome_for("arena")), 0);
        let snap = |you: u32| {
            GameEvent::Snapshot(tickwire_client::Snapshot {
                tick: 101,
                last_input_seq: 0,
                you,
                fields_per_entity: 2,
                ids: vec![4, 7, 9],
                fields: vec![40, 41, 70, 71, 90, 91],
            })
        };
        on_event(&mut m, &mut t, snap(7), 1);
        let Play::Playing(player) = &m.play else {
            panic!("not playing")
        };
        assert_eq!(player.me(), Some(&[70, 71][..]));
        on_event(&mut m, &mut t, snap(tickwire_client::NO_ENTITY), 2);
        let Play::Playing(player) = &m.play else {
            panic!("not playing")
        };
        assert_eq!(player.me(), None, "no entity in the newest snapshot");
    }

    #[test]
    fn another_game_than_requested_is_a_counted_mismatch() {
        let mut t = tally_for(Some("arena"));
        // The requested game: plays.
        let mut m = connected_meter(1);
        on_event(&mut m, &mut t, GameEvent::Welcome(welcome_for("arena")), 0);
        assert!(matches!(m.play, Play::Playing(_)));
        // A server playing something else.
        let mut other = welcome_for("arena");
        other.game = "tag".into();
        for seed in [2, 3] {
            let mut m = connected_meter(seed);
            on_event(&mut m, &mut t, GameEvent::Welcome(other.clone()), 0);
            assert!(matches!(m.play, Play::Refused));
            // The server resends its welcome: still one refusal per bot.
            on_event(&mut m, &mut t, GameEvent::Welcome(other.clone()), 1);
            assert_eq!(m.status, Status::Connected, "it stays connected");
        }
        assert_eq!(t.refusals, vec![("game_mismatch".to_string(), 2)]);
        assert_eq!(
            (t.refused("game_mismatch"), t.refused("game_unknown")),
            (2, 0)
        );
        let text = t.first_refusal.clone().unwrap();
        assert!(
            text.contains("\"tag\"") && text.contains("--game asked for \"arena\""),
            "{text}"
        );
        assert_eq!(t.game.as_deref(), Some("arena"), "the first welcome's game");
    }

    #[test]
    fn a_game_this_binary_lacks_is_counted_not_a_panic() {
        let mut t = tally();
        let mut w = welcome_for("arena");
        w.game = "chess".into();
        let mut m = connected_meter(1);
        on_event(&mut m, &mut t, GameEvent::Welcome(w), 0);
        assert!(matches!(m.play, Play::Refused));
        assert_eq!(t.refusals, vec![("game_unknown".to_string(), 1)]);
        assert_eq!(t.game.as_deref(), Some("chess"));
        let text = t.first_refusal.clone().unwrap();
        assert!(text.contains("\"chess\""), "{text}");
        for g in tickwire_games::builtin() {
            assert!(text.contains(g.name), "{text} lacks {}", g.name);
        }
        // Its snapshots still count for delivery.
        on_event(&mut m, &mut t, snapshot(1, 0), 5_000);
        assert_eq!(t.snapshots_window, 1);
    }

    #[test]
    fn other_encodings_of_a_known_game_are_refused() {
        let good = welcome_for("arena");
        let mut bad = Vec::new();
        for input_bytes in [0, good.input_bytes + 1, 200] {
            bad.push(Welcome {
                input_bytes,
                ..good.clone()
            });
        }
        bad.push(Welcome {
            game_version: good.game_version.wrapping_add(1),
            ..good.clone()
        });
        bad.push(Welcome {
            entity_fields: good.entity_fields + 1,
            ..good.clone()
        });
        let mut t = tally();
        for w in &bad {
            let mut m = connected_meter(1);
            on_event(&mut m, &mut t, GameEvent::Welcome(w.clone()), 0);
            assert!(matches!(m.play, Play::Refused), "{w:?}");
        }
        assert_eq!(t.refused("game_incompatible"), bad.len() as u32);
        let text = t.first_refusal.clone().unwrap();
        assert!(text.contains("0-byte inputs"), "{text}");
    }

    #[test]
    fn game_events_are_counted() {
        let mut t = tally();
        let mut m = connected_meter(1);
        for i in 0..3u8 {
            on_event(&mut m, &mut t, GameEvent::Message(vec![i; 4]), 0);
        }
        on_event(
            &mut m,
            &mut t,
            GameEvent::Message(Vec::new()),
            2_000_000_000,
        );
        assert_eq!(t.events_received, 4, "the whole run, not only the window");
    }

    #[test]
    fn rtt_from_acknowledged_inputs() {
        let mut t = tally();
        let mut m = Meter::new(1);
        m.status = Status::Connected;
        m.counted = true;
        // Inputs 1..=3 sent at 10, 26, 42 ms.
        for (seq, ms) in [(1u32, 10u64), (2, 26), (3, 42)] {
            m.record_send(seq, ms * 1_000_000);
        }
        // A snapshot at 30 ms acks 1 and 2: two samples, 20 ms and 4 ms.
        on_event(&mut m, &mut t, snapshot(1, 2), 30_000_000);
        assert_eq!(t.rtt.count(), 2);
        assert_eq!(t.rtt.max_us(), Some(20_000));
        // Same ack again: nothing new.
        on_event(&mut m, &mut t, snapshot(2, 2), 46_000_000);
        assert_eq!(t.rtt.count(), 2);
        // Ack 3 at 50 ms: 8 ms.
        on_event(&mut m, &mut t, snapshot(3, 3), 50_000_000);
        assert_eq!(t.rtt.count(), 3);
        // The median (8 ms) within the histogram's 1/64 resolution.
        let p50 = t.rtt.quantile_us(0.5).unwrap();
        assert!((8_000..=8_000 + 8_000 / 64).contains(&p50), "{p50}");
        assert_eq!(
            (m.snapshots, t.snapshots_window, t.snapshots_total),
            (3, 3, 3)
        );
        // Outside the window: the snapshot is not counted, the ack still advances.
        m.record_send(4, 60_000_000);
        on_event(&mut m, &mut t, snapshot(4, 4), 2_000_000_000);
        assert_eq!(
            (m.snapshots, t.snapshots_window, t.snapshots_total),
            (3, 3, 4)
        );
        assert_eq!((t.rtt.count(), m.last_acked), (3, 4));
        // A huge jump only looks at the ring, never panics.
        on_event(&mut m, &mut t, snapshot(5, u32::MAX), 3_000_000);
        assert_eq!(m.last_acked, u32::MAX);
    }

    #[test]
    fn connection_lifecycle_counts() {
        let mut t = tally();
        t.connected = 0;
        let mut m = Meter::new(1);
        m.status = Status::Connecting;
        on_event(&mut m, &mut t, GameEvent::Connected { client_index: 0 }, 0);
        assert_eq!((m.status, t.connected), (Status::Connected, 1));
        on_event(&mut m, &mut t, GameEvent::Welcome(welcome_for("arena")), 0);
        assert_eq!((m.tick_ms, t.tick_ms), (20, Some(20)));
        assert!(matches!(m.play, Play::Playing(_)));
        m.counted = true;
        on_event(
            &mut m,
            &mut t,
            GameEvent::Disconnected(tickwire_client::ClientState::Disconnected),
            5_000,
        );
        assert_eq!(
            (m.status, t.connected, t.losses.clone()),
            (Status::Lost, 0, vec![("disconnected".to_string(), 1)])
        );

        let mut m = Meter::new(2);
        m.status = Status::Connecting;
        on_event(
            &mut m,
            &mut t,
            GameEvent::Disconnected(tickwire_client::ClientState::Disconnected),
            0,
        );
        assert_eq!((m.status, t.failed), (Status::Failed, 1));
        assert_eq!(t.failures, vec![("disconnected".to_string(), 1)]);
    }

    #[test]
    fn outbox_is_bounded() {
        let mut o = Outbox::new();
        let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let big = vec![7u8; 1400];
        for _ in 0..(OUTBOX_BYTES / 1400 + 10) {
            o.push(Dest::Bot(3), to, &big);
        }
        assert_eq!(o.items.len(), OUTBOX_BYTES / 1400);
        assert_eq!(o.dropped, 10);
        assert!(o.bytes.capacity() == OUTBOX_BYTES, "never grows");
    }
    #[test]
    fn stream_end_reasons() {
        assert_eq!(close_reason(CloseReason::Eof), "stream_closed_eof");
        assert_eq!(
            close_reason(CloseReason::Error(io::ErrorKind::ConnectionReset)),
            "stream_error_connection_reset"
        );
        assert_eq!(
            violation_reason(Violation::OversizedFrame, None),
            "stream_oversized_frame"
        );
        assert_eq!(
            violation_reason(Violation::BadHandshake, Some(503)),
            "stream_bad_handshake_http_503"
        );
        assert_eq!(
            violation_reason(Violation::BadHandshake, Some(101)),
            "stream_bad_handshake",
            "a 101 with a bad upgrade"
        );
        assert_eq!(
            violation_reason(Violation::PeerClose, None),
            "stream_peer_close"
        );
    }

    #[test]
    fn a_stream_that_ends_loses_its_bot_once() {
        // Counted and connected in the window: lost, once; every end is a diagnostic.
        let mut t = tally();
        let mut m = connected_meter(1);
        stream_ended(&mut m, &mut t, "stream_closed_eof".into());
        assert_eq!((m.status, t.connected), (Status::Lost, 0));
        assert_eq!(t.losses, vec![("stream_closed_eof".to_string(), 1)]);
        // netcode saw the server's disconnect first: the close is only a diagnostic.
        let mut m = connected_meter(2);
        t.connected = 1;
        on_event(
            &mut m,
            &mut t,
            GameEvent::Disconnected(tickwire_client::ClientState::Disconnected),
            5_000,
        );
        stream_ended(&mut m, &mut t, "stream_closed_eof".into());
        assert_eq!(
            t.losses,
            vec![
                ("stream_closed_eof".to_string(), 1),
                ("disconnected".to_string(), 1)
            ]
        );
        assert_eq!(t.stream_closes, vec![("stream_closed_eof".to_string(), 2)]);
        assert_eq!(t.failed, 0);
        // Handshaking: failed, with the reason.
        let mut m = Meter::new(3);
        m.status = Status::Connecting;
        stream_ended(&mut m, &mut t, "stream_bad_handshake_http_503".into());
        assert_eq!((m.status, t.failed), (Status::Failed, 1));
        assert_eq!(
            t.failures,
            vec![("stream_bad_handshake_http_503".to_string(), 1)]
        );
        // Connected before the window: it will not be counted, so it failed.
        let mut t = Tally::new(None, Catalog::new(tickwire_games::builtin(), None));
        t.connected = 1;
        let mut m = Meter::new(4);
        m.status = Status::Connected;
        stream_ended(&mut m, &mut t, "stream_error_connection_reset".into());
        assert_eq!(
            t.failures,
            vec![(
                "lost_before_window_stream_error_connection_reset".to_string(),
                1
            )]
        );
        assert!(t.losses.is_empty());
    }

    /// The per-bot stream plumbing over real loopback connections: the swarm's side on one
    /// backend, a stand-in server (`tickwire_stream::StreamConn`, the real server's codec) on
    /// another. Every wait is bounded by a hang guard; nothing is timed.
    #[cfg(target_os = "linux")]
    mod streams {
        use super::*;
        use tickwire_io::Model;
        use tickwire_stream::StreamConn;

        /// Fails the test instead of hanging when something never arrives.
        const HANG_GUARD: Duration = Duration::from_secs(60);

        struct Rig {
            client: Box<dyn Backend>,
            server: Box<dyn Backend>,
            addr: SocketAddr,
            bots: Vec<Bot>,
            conn_to_bot: Vec<u32>,
            outbox: Outbox,
            tally: Tally,
            reply: Vec<u8>,
            frame: Vec<u8>,
            sends: SendCounts,
            t0: Instant,
            /// The server's end of the bot's connection, and what it received.
            accepted: Option<ConnId>,
            received: Vec<u8>,
            server_closed: Option<CloseReason>,
        }

        impl Rig {
            /// One bot connected over `transport`, as `Swarm::open_stream` connects it.
            fn new(transport: Transport) -> Rig {
                let cfg = tickwire_io::Config::default();
                let client = tickwire_io::open(Model::Epoll, &cfg).unwrap();
                let mut server = tickwire_io::open(Model::Epoll, &cfg).unwrap();
                let listener = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
                let addr = server.local_addr(listener).unwrap();
                let key = [7u8; 32];
                let token = generate_connect_token(&TokenParams {
                    protocol_id: 1,
                    client_id: 1,
                    create_unix_secs: unix_secs(),
                    expire_secs: 600,
                    timeout_secs: TOKEN_TIMEOUT_SECS,
                    server_addrs: &[addr],
                    user_data: [0; USER_DATA_BYTES],
                    private_key: &key,
                })
                .unwrap();
                let now = Now {
                    mono: Duration::ZERO,
                    unix_secs: unix_secs(),
                };
                let mut bot = Bot {
                    game: Some(GameClient::new(&token, now).unwrap()),
                    meter: Meter::new(1),
                    link: Link::Down,
                };
                bot.meter.status = Status::Connecting;
                let mut swarm_like = Swarm {
                    io: client,
                    bots: Vec::new(),
                    transport,
                    socket_to_bot: Vec::new(),
                    conn_to_bot: Vec::new(),
                    outbox: Outbox::new(),
                    tally: tally(),
                    sends: SendCounts::default(),
                    frame: Vec::with_capacity(FRAME_BYTES),
                    reply: Vec::with_capacity(FRAME_BYTES),
                    inputs_sent_window: 0,
                    inputs_awaiting_welcome: 0,
                    slips: 0,
                    t0: Instant::now(),
                    unix_secs: unix_secs(),
                    server: addr,
                    key,
                    protocol_id: 1,
                    token_expire_secs: 600,
                    started: 0,
                    next_wave_at: Instant::now(),
                    next_slot_at: Instant::now(),
                    slot_index: 0,
                    connect_deadline: Instant::now() + HANG_GUARD,
                    sending: true,
                    progress: None,
                };
                let (conn, codec) = swarm_like
                    .open_stream(STREAM_CONNECT_TIMEOUT)
                    .unwrap()
                    .unwrap();
                bot.link = Link::Stream { conn, codec };
                let mut conn_to_bot = vec![u32::MAX; conn.index as usize + 1];
                conn_to_bot[conn.index as usize] = 0;
                swarm_like.flush();
                Rig {
                    client: swarm_like.io,
                    server,
                    addr,
                    bots: vec![bot],
                    conn_to_bot,
                    outbox: Outbox::new(),
                    tally: tally(),
                    reply: Vec::new(),
                    frame: Vec::new(),
                    sends: SendCounts::default(),
                    t0: Instant::now(),
                    accepted: None,
                    received: Vec::new(),
                    server_closed: None,
                }
            }

            /// Polls both sides (the client's events go through `Inbound`, then its outbox is
            /// drained, as in `Swarm::poll_once`) until `done` holds.
            fn pump(&mut self, what: &str, mut done: impl FnMut(&Rig) -> bool) {
                let guard = Instant::now() + HANG_GUARD;
                while !done(self) {
                    assert!(Instant::now() < guard, "hang guard: {what}");
                    let soon = Instant::now() + Duration::from_millis(5);
                    let Rig {
                        server,
                        accepted,
                        received,
                        server_closed,
                        ..
                    } = self;
                    server
                        .poll(soon, &mut |ev| match ev {
                            Event::Accepted { conn, .. } => *accepted = Some(conn),
                            Event::Stream { data, .. } => received.extend_from_slice(data),
                            Event::Closed { reason, .. } => *server_closed = Some(reason),
                            Event::Datagram { .. } => {}
                        })
                        .unwrap();
                    let mut inbound = Inbound {
                        bots: &mut self.bots,
                        socket_to_bot: &[],
                        conn_to_bot: &self.conn_to_bot,
                        outbox: &mut self.outbox,
                        tally: &mut self.tally,
                        reply: &mut self.reply,
                        t0: self.t0,
                        unix_secs: unix_secs(),
                    };
                    self.client
                        .poll(soon, &mut |ev| inbound.on_io_event(ev))
                        .unwrap();
                    drain_outbox(
                        self.client.as_mut(),
                        &mut self.bots,
                        &mut self.outbox,
                        &mut self.sends,
                        &mut self.frame,
                    );
                    self.client.flush().unwrap();
                }
            }

            /// The bot sends `packet` as `Swarm::run_slot` would.
            fn bot_sends(&mut self, packet: &[u8]) {
                let to = self.addr;
                send_on(
                    self.client.as_mut(),
                    &mut self.sends,
                    &mut self.frame,
                    &mut self.bots[0].link,
                    to,
                    packet,
                );
                self.client.flush().unwrap();
            }

            /// The stand-in server sends raw bytes on its end.
            fn server_sends(&mut self, bytes: &[u8]) {
                let conn = self.accepted.expect("accepted");
                self.server.send_stream(conn, bytes).unwrap();
                self.server.flush().unwrap();
            }
        }

        #[test]
        fn tcp_bot_frames_its_packets_and_is_lost_when_the_server_closes() {
            let mut rig = Rig::new(Transport::Tcp);
            rig.bots[0].meter.status = Status::Connected;
            rig.bots[0].meter.counted = true;
            rig.tally.connected = 1;
            rig.bot_sends(b"hello");
            rig.bot_sends(&[9; 1400]);
            rig.pump("two frames", |r| r.received.len() >= 7 + 1402);
            assert_eq!(&rig.received[..7], b"\x05\x00hello");
            assert_eq!(&rig.received[7..9], &1400u16.to_le_bytes());
            assert_eq!(rig.received.len(), 7 + 1402);
            assert_eq!(rig.sends, SendCounts::default(), "nothing dropped");
            assert!(rig.frame.capacity() <= FRAME_BYTES, "one reused buffer");

            // The server closes: the bot is lost, its link down, the reason counted.
            let conn = rig.accepted.unwrap();
            rig.server.close(conn);
            rig.pump("the close", |r| matches!(r.bots[0].link, Link::Down));
            assert_eq!(rig.bots[0].meter.status, Status::Lost);
            assert_eq!(rig.tally.connected, 0);
            assert_eq!(rig.tally.losses, vec![("stream_closed_eof".to_string(), 1)]);
            assert_eq!(
                rig.tally.stream_closes,
                vec![("stream_closed_eof".to_string(), 1)]
            );
            // Its packets are dropped from now on, quietly.
            rig.bot_sends(b"late");
            assert_eq!(rig.sends, SendCounts::default());
        }

        #[test]
        fn tcp_bot_closes_on_an_oversized_frame() {
            let mut rig = Rig::new(Transport::Tcp);
            rig.bot_sends(b"x");
            rig.pump("accept", |r| r.accepted.is_some() && !r.received.is_empty());
            // A length over 1400: a framing violation on the bot's side.
            rig.server_sends(&[0xff, 0xff, 1, 2, 3]);
            rig.pump("the violation", |r| matches!(r.bots[0].link, Link::Down));
            assert_eq!(rig.bots[0].meter.status, Status::Failed, "was handshaking");
            assert_eq!(
                rig.tally.failures,
                vec![("stream_oversized_frame".to_string(), 1)]
            );
            // We closed it: the stand-in server sees the end.
            rig.pump("server sees the close", |r| r.server_closed.is_some());
            assert!(rig.outbox.is_empty());
        }

        #[test]
        fn websocket_bot_upgrades_then_frames_and_answers_a_close() {
            let mut rig = Rig::new(Transport::Ws);
            let mut server_codec = StreamConn::new(Limits::default());
            // Before the 101: netcode's packets are dropped and counted, not framed.
            rig.bot_sends(b"too early");
            assert_eq!(rig.sends.not_ready, 1);
            // The upgrade request arrives; the real server codec answers it.
            rig.pump("the upgrade request", |r| {
                r.received.windows(4).any(|w| w == b"\r\n\r\n")
            });
            let request = String::from_utf8_lossy(&rig.received).to_string();
            assert!(request.starts_with("GET / HTTP/1.1\r\n"), "{request}");
            assert!(
                request.contains(&format!("Host: {}\r\n", rig.addr)),
                "{request}"
            );
            assert!(request.contains("Sec-WebSocket-Protocol: tickwire.netcode"));
            let mut reply = Vec::new();
            let mut packets: Vec<Vec<u8>> = Vec::new();
            server_codec
                .feed(&rig.received, &mut reply, &mut |p| packets.push(p.to_vec()))
                .unwrap();
            assert!(reply.starts_with(b"HTTP/1.1 101"), "{reply:?}");
            assert!(packets.is_empty());
            rig.received.clear();
            rig.server_sends(&reply);
            rig.pump("the 101", |r| link_established(&r.bots[0].link));

            // Established: packets travel as masked binary messages the server decodes.
            rig.bot_sends(b"netcode packet");
            rig.bot_sends(&[]);
            rig.pump("two messages", |r| r.received.len() >= 20 + 6);
            reply.clear();
            server_codec
                .feed(&rig.received, &mut reply, &mut |p| packets.push(p.to_vec()))
                .unwrap();
            assert_eq!(packets, [b"netcode packet".to_vec(), Vec::new()]);
            assert_eq!(rig.sends.not_ready, 1, "no more drops");
            assert_eq!(rig.sends.failures, 0);

            // The server's packets reach the bot's client (as packets from the server's
            // address; a stranger's bytes that netcode drops); then the server closes the
            // WebSocket: the bot answers with its close frame and closes the connection.
            let mut out = Vec::new();
            server_codec.encode(&[0u8; 30], &mut out).unwrap();
            out.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]); // close 1000
            rig.received.clear();
            rig.server_sends(&out);
            rig.pump("the close echo", |r| r.server_closed.is_some());
            assert_eq!(
                rig.tally.failures,
                vec![("stream_peer_close".to_string(), 1)]
            );
            assert!(matches!(rig.bots[0].link, Link::Down));
            reply.clear();
            let echo = server_codec.feed(&rig.received, &mut reply, &mut |_| {});
            assert_eq!(echo, Err(Violation::PeerClose), "the bot's close frame");
        }

        #[test]
        fn a_refused_upgrade_names_the_status() {
            let mut rig = Rig::new(Transport::Ws);
            rig.pump("the upgrade request", |r| !r.received.is_empty());
            rig.server_sends(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            rig.pump("the refusal", |r| matches!(r.bots[0].link, Link::Down));
            assert_eq!(
                rig.tally.failures,
                vec![("stream_bad_handshake_http_503".to_string(), 1)]
            );
        }

        #[test]
        fn an_event_for_an_older_connection_in_the_slot_is_ignored() {
            let mut rig = Rig::new(Transport::Tcp);
            let conn = rig.bots[0].link.conn().unwrap();
            let stale = ConnId {
                index: conn.index,
                generation: conn.generation.wrapping_sub(1),
            };
            let mut inbound = Inbound {
                bots: &mut rig.bots,
                socket_to_bot: &[],
                conn_to_bot: &rig.conn_to_bot,
                outbox: &mut rig.outbox,
                tally: &mut rig.tally,
                reply: &mut rig.reply,
                t0: rig.t0,
                unix_secs: 0,
            };
            inbound.on_io_event(Event::Closed {
                conn: stale,
                reason: CloseReason::Eof,
            });
            inbound.on_io_event(Event::Stream {
                conn: stale,
                data: &[0xff, 0xff],
            });
            let unknown = ConnId {
                index: conn.index + 100,
                generation: 0,
            };
            inbound.on_io_event(Event::Closed {
                conn: unknown,
                reason: CloseReason::Eof,
            });
            assert_eq!(inbound.bots[0].link.conn(), Some(conn));
            assert_eq!(inbound.bots[0].meter.status, Status::Connecting);
            assert!(rig.tally.stream_closes.is_empty() && rig.outbox.is_empty());
        }
    }
}
