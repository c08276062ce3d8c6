//! tickwire-client: the client side of the Tickwire protocol.
//!
//! Two layers, like the server:
//! - [`GameClient`] is sans-IO: it owns a netcode.io client and the game-message state (input
//!   sequence numbers, the redundant input history, the newest snapshot tick). Feed it
//!   datagrams with [`GameClient::handle_packet`], call [`GameClient::update`] regularly and
//!   [`GameClient::send_input`] once per tick; it hands datagrams out through `tx` and game
//!   events out through `on_event`. Bots, the load tester and the in-memory tests use it.
//! - [`Client`] wraps one [`GameClient`] around a blocking transport for tools, examples and
//!   simple game clients: [`UdpClient`] (a `std::net::UdpSocket`), [`TcpClient`] and
//!   [`WsClient`] (a `std::net::TcpStream` to the same game port, carrying the same netcode
//!   packets behind a 2-byte length or as WebSocket binary messages, framed by
//!   `tickwire-stream`; see `docs/protocol.md`). They share one API: `connect(token,
//!   timeout)`, `send_input`, `send_message`, `poll`, `state`, `disconnect`.
//!
//! Inputs: each [`GameClient::send_input`] takes one frame in the game's encoding (the welcome
//! says its size), assigns the next sequence number and sends the new frame together with up
//! to [`MAX_INPUT_FRAMES`]` - 1` earlier ones, so a lost datagram costs nothing as long as one
//! of the next few arrives. The server applies each sequence once.
//!
//! Snapshots are decoded with the welcome's field count; one that arrives before any welcome
//! is dropped (counted in `snapshots_early`) and not acknowledged, so the server keeps
//! resending the welcome. Game events arrive complete and in order as [`GameEvent::Message`];
//! [`GameClient::send_message`] sends reliable messages the other way.
#![forbid(unsafe_code)]

mod driver;
mod stream;
mod udp;

use std::net::SocketAddr;

pub use driver::{Client, ClientError, Transport, UdpClientError};
pub use stream::{Tcp, TcpClient, Ws, WsClient};
pub use tickwire_netcode::{ClientState, Now, SendError, TokenError};
pub use tickwire_proto::reliable::{ChannelConfig, ChannelError};
use tickwire_proto::{reliable::Channel, ServerMessage};
pub use tickwire_proto::{ByeReason, Snapshot, Welcome, MAX_INPUT_FRAMES, NO_ENTITY};
pub use tickwire_stream::Violation;
pub use udp::{Udp, UdpClient};

/// What the client learned from one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameEvent {
    /// The netcode handshake finished.
    Connected {
        /// Our slot on the server.
        client_index: u32,
    },
    /// The server's welcome: the game, our entity id, the sizes of inputs and entities.
    Welcome(Welcome),
    /// A snapshot, newer than any seen before (older or duplicate ones are dropped).
    Snapshot(Snapshot),
    /// A reliable game event, complete, in the order the server sent them.
    Message(Vec<u8>),
    /// The server said why it is about to disconnect us.
    Bye(ByeReason),
    /// The connection ended (or failed to start); the state says why.
    Disconnected(ClientState),
}

/// Counters, for bots and the load tester.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Snapshots accepted (newer than the previous one).
    pub snapshots: u64,
    /// Snapshots that arrived older than one already seen.
    pub snapshots_stale: u64,
    /// Snapshots that arrived before any welcome (not decodable yet; dropped).
    pub snapshots_early: u64,
    /// Sum of accepted snapshot payload sizes, in bytes.
    pub snapshot_bytes: u64,
    /// Payloads that failed to decode.
    pub payloads_malformed: u64,
    /// Inputs sent.
    pub inputs_sent: u64,
    /// Reliable game events received.
    pub messages: u64,
}

/// The sans-IO game client. See the crate docs.
pub struct GameClient {
    netcode: tickwire_netcode::Client,
    /// Sequence of the next input (the first input is 1; 0 means "none applied yet").
    next_seq: u32,
    /// The newest inputs sent, oldest first, at most [`MAX_INPUT_FRAMES`], back to back.
    history: Vec<u8>,
    /// Frame size of `history` (0 before the first input).
    frame_len: usize,
    newest_tick: Option<u32>,
    welcome: Option<Welcome>,
    channel: Channel,
    stats: ClientStats,
    payload: Vec<u8>,
}

impl GameClient {
    /// Starts connecting with a standard 2048-byte netcode connect token.
    pub fn new(connect_token: &[u8], now: Now) -> Result<Self, TokenError> {
        Self::with_channel(connect_token, now, ChannelConfig::default())
    }

    /// As [`GameClient::new`], with reliable channel limits of your own.
    pub fn with_channel(
        connect_token: &[u8],
        now: Now,
        channel: ChannelConfig,
    ) -> Result<Self, TokenError> {
        Ok(GameClient {
            netcode: tickwire_netcode::Client::new(connect_token, now)?,
            next_seq: 1,
            history: Vec::with_capacity(MAX_INPUT_FRAMES * tickwire_proto::MAX_INPUT_BYTES),
            frame_len: 0,
            newest_tick: None,
            welcome: None,
            channel: Channel::new(channel),
            stats: ClientStats::default(),
            payload: vec![0; tickwire_proto::MAX_PAYLOAD_BYTES],
        })
    }

    /// The netcode connection state.
    pub fn state(&self) -> ClientState {
        self.netcode.state()
    }

    /// Whether the handshake has finished and the connection is up.
    pub fn is_connected(&self) -> bool {
        self.netcode.state() == ClientState::Connected
    }

    /// The server address this client talks to.
    pub fn server_addr(&self) -> SocketAddr {
        self.netcode.server_addr()
    }

    /// The server's welcome, once received.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// The newest snapshot tick received.
    pub fn newest_tick(&self) -> Option<u32> {
        self.newest_tick
    }

    /// Sequence number the next [`GameClient::send_input`] will use.
    pub fn next_input_seq(&self) -> u32 {
        self.next_seq
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Resends handshake packets, sends keep-alives and due reliable packets, notices
    /// timeouts. Call it every tick or so.
    pub fn update(
        &mut self,
        now: Now,
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
        on_event: &mut dyn FnMut(GameEvent),
    ) {
        self.netcode
            .update(now, tx, &mut |event| netcode_event(event, on_event, None));
        self.flush_reliable(now, tx);
    }

    /// Handles one datagram from `from`.
    pub fn handle_packet(
        &mut self,
        now: Now,
        from: SocketAddr,
        packet: &[u8],
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
        on_event: &mut dyn FnMut(GameEvent),
    ) {
        let GameClient {
            netcode,
            newest_tick,
            welcome,
            channel,
            stats,
            ..
        } = self;
        let mut state = GameState {
            now,
            newest_tick,
            welcome,
            channel,
            stats,
        };
        netcode.handle_packet(now, from, packet, tx, &mut |event| {
            netcode_event(event, on_event, Some(&mut state))
        });
    }

    /// Sends one input frame in the game's encoding (plus the redundant history); returns its
    /// sequence number. Every frame must have the game's size (the welcome's `input_bytes`).
    pub fn send_input(
        &mut self,
        now: Now,
        frame: &[u8],
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<u32, SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let expected = self
            .welcome
            .as_ref()
            .map_or(frame.len(), |w| w.input_bytes as usize);
        if frame.is_empty()
            || frame.len() != expected
            || frame.len() > tickwire_proto::MAX_INPUT_BYTES
        {
            return Err(SendError::TooLarge);
        }
        if frame.len() != self.frame_len {
            self.history.clear();
            self.frame_len = frame.len();
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.history.len() == MAX_INPUT_FRAMES * self.frame_len {
            self.history.drain(..self.frame_len);
        }
        self.history.extend_from_slice(frame);
        let frames = (self.history.len() / self.frame_len) as u32;
        let first = seq.wrapping_sub(frames - 1);
        let len = tickwire_proto::encode_input(
            self.newest_tick.unwrap_or(0),
            first,
            self.frame_len,
            &self.history,
            &mut self.payload,
        )
        .map_err(|_| SendError::TooLarge)?;
        self.netcode.send_payload(now, &self.payload[..len], tx)?;
        self.stats.inputs_sent += 1;
        Ok(seq)
    }

    /// Queues a reliable message for the game on the server (sent by the next
    /// [`GameClient::update`]).
    pub fn send_message(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        self.channel.send(msg)
    }

    /// Sends the reliable packets due now (new messages, resends, acks).
    fn flush_reliable(&mut self, now: Now, tx: &mut dyn FnMut(SocketAddr, &[u8])) {
        if !self.is_connected() {
            return;
        }
        for _ in 0..16 {
            self.payload[0] = tickwire_proto::tag::CLIENT_RELIABLE;
            let end = tickwire_proto::MAX_PAYLOAD_BYTES;
            let Some(n) = self
                .channel
                .poll_packet(now.mono, &mut self.payload[1..end])
            else {
                break;
            };
            if self
                .netcode
                .send_payload(now, &self.payload[..1 + n], tx)
                .is_err()
            {
                break;
            }
        }
    }

    /// Disconnects politely (netcode's redundant disconnect packets).
    pub fn disconnect(&mut self, tx: &mut dyn FnMut(SocketAddr, &[u8])) {
        self.netcode.disconnect(tx);
    }
}

/// The parts of [`GameClient`] a payload updates, borrowed beside the netcode client.
struct GameState<'a> {
    now: Now,
    newest_tick: &'a mut Option<u32>,
    welcome: &'a mut Option<Welcome>,
    channel: &'a mut Channel,
    stats: &'a mut ClientStats,
}

fn netcode_event(
    event: tickwire_netcode::ClientEvent<'_>,
    on_event: &mut dyn FnMut(GameEvent),
    state: Option<&mut GameState<'_>>,
) {
    use tickwire_netcode::ClientEvent;
    match event {
        ClientEvent::Connected { client_index, .. } => {
            on_event(GameEvent::Connected { client_index })
        }
        ClientEvent::StateChanged(s) if s != ClientState::Connected => {
            if s.is_error() || s == ClientState::Disconnected {
                on_event(GameEvent::Disconnected(s));
            }
        }
        ClientEvent::StateChanged(_) => {}
        ClientEvent::Payload(data) => {
            let Some(state) = state else { return };
            match tickwire_proto::decode_server(data) {
                Ok(ServerMessage::Snapshot(raw)) => {
                    let Some(fields) = state.welcome.as_ref().map(|w| w.entity_fields) else {
                        state.stats.snapshots_early += 1;
                        return;
                    };
                    match raw.header() {
                        Ok((tick, _, _)) if state.newest_tick.is_some_and(|t| tick <= t) => {
                            state.stats.snapshots_stale += 1;
                            return;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            state.stats.payloads_malformed += 1;
                            return;
                        }
                    }
                    match raw.decode(fields as usize) {
                        Ok(snap) => {
                            *state.newest_tick = Some(snap.tick);
                            state.stats.snapshots += 1;
                            state.stats.snapshot_bytes += data.len() as u64;
                            on_event(GameEvent::Snapshot(snap));
                        }
                        Err(_) => state.stats.payloads_malformed += 1,
                    }
                }
                Ok(ServerMessage::Welcome(w)) => {
                    *state.welcome = Some(w.clone());
                    on_event(GameEvent::Welcome(w));
                }
                Ok(ServerMessage::Bye { reason }) => on_event(GameEvent::Bye(reason)),
                Ok(ServerMessage::Reliable(body)) => {
                    let stats = &mut *state.stats;
                    let r = state
                        .channel
                        .handle_packet(state.now.mono, body, &mut |msg| {
                            stats.messages += 1;
                            on_event(GameEvent::Message(msg.to_vec()));
                        });
                    if r.is_err() {
                        state.stats.payloads_malformed += 1;
                    }
                }
                Err(_) => state.stats.payloads_malformed += 1,
            }
        }
    }
}
