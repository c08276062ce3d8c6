//! tickwire-client: the client side of the Tickwire protocol.
//!
//! Two layers, like the server:
//! - [`GameClient`] is sans-IO: it owns a netcode.io client and the game-message state (input
//!   sequence numbers, the redundant input history, the newest snapshot tick). Feed it
//!   datagrams with [`GameClient::handle_packet`], call [`GameClient::update`] regularly and
//!   [`GameClient::send_input`] once per tick; it hands datagrams out through `tx` and game
//!   events out through `on_event`. Bots, the load tester and the in-memory tests use it.
//! - [`UdpClient`] wraps one [`GameClient`] around a blocking `std::net::UdpSocket` for tools,
//!   examples and simple game clients.
//!
//! Inputs: each [`GameClient::send_input`] assigns the next sequence number and sends the new
//! frame together with up to [`MAX_INPUT_FRAMES`]` - 1` earlier ones, so a lost datagram costs
//! nothing as long as one of the next few arrives. The server applies each sequence once.
#![forbid(unsafe_code)]

mod udp;

use std::net::SocketAddr;

pub use tickwire_netcode::{ClientState, Now, SendError, TokenError};
pub use tickwire_proto::{ByeReason, EntityState, InputFrame, Snapshot, Welcome, MAX_INPUT_FRAMES};
use tickwire_proto::{ClientMessage, ServerMessage};
pub use udp::{UdpClient, UdpClientError};

/// What the client learned from one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameEvent {
    /// The netcode handshake finished.
    Connected {
        /// Our slot on the server.
        client_index: u32,
    },
    /// The server's welcome: our entity id and the world's shape.
    Welcome(Welcome),
    /// A snapshot, newer than any seen before (older or duplicate ones are dropped).
    Snapshot(Snapshot),
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
    /// Sum of accepted snapshot payload sizes, in bytes.
    pub snapshot_bytes: u64,
    /// Payloads that failed to decode.
    pub payloads_malformed: u64,
    /// Inputs sent.
    pub inputs_sent: u64,
}

/// The sans-IO game client. See the crate docs.
pub struct GameClient {
    netcode: tickwire_netcode::Client,
    /// Sequence of the next input (the first input is 1; 0 means "none applied yet").
    next_seq: u32,
    /// The newest inputs sent, oldest first, at most [`MAX_INPUT_FRAMES`].
    history: Vec<InputFrame>,
    newest_tick: Option<u32>,
    welcome: Option<Welcome>,
    stats: ClientStats,
    payload: Vec<u8>,
}

impl GameClient {
    /// Starts connecting with a standard 2048-byte netcode connect token.
    pub fn new(connect_token: &[u8], now: Now) -> Result<Self, TokenError> {
        Ok(GameClient {
            netcode: tickwire_netcode::Client::new(connect_token, now)?,
            next_seq: 1,
            history: Vec::with_capacity(MAX_INPUT_FRAMES),
            newest_tick: None,
            welcome: None,
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

    /// Resends handshake packets, sends keep-alives, notices timeouts.
    pub fn update(
        &mut self,
        now: Now,
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
        on_event: &mut dyn FnMut(GameEvent),
    ) {
        self.netcode
            .update(now, tx, &mut |event| netcode_event(event, on_event, None));
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
            stats,
            ..
        } = self;
        let mut state = GameState {
            newest_tick,
            welcome,
            stats,
        };
        netcode.handle_packet(now, from, packet, tx, &mut |event| {
            netcode_event(event, on_event, Some(&mut state))
        });
    }

    /// Sends one input frame (plus the redundant history); returns its sequence number.
    pub fn send_input(
        &mut self,
        now: Now,
        move_x: i8,
        move_y: i8,
        buttons: u8,
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<u32, SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.history.len() == MAX_INPUT_FRAMES {
            self.history.remove(0);
        }
        self.history.push(InputFrame {
            seq,
            move_x,
            move_y,
            buttons,
        });
        let msg = ClientMessage::Input {
            ack_tick: self.newest_tick.unwrap_or(0),
            frames: self.history.clone(),
        };
        let len = tickwire_proto::encode_client(&msg, &mut self.payload)
            .map_err(|_| SendError::TooLarge)?;
        self.netcode.send_payload(now, &self.payload[..len], tx)?;
        self.stats.inputs_sent += 1;
        Ok(seq)
    }

    /// Disconnects politely (netcode's redundant disconnect packets).
    pub fn disconnect(&mut self, tx: &mut dyn FnMut(SocketAddr, &[u8])) {
        self.netcode.disconnect(tx);
    }
}

/// The parts of [`GameClient`] a payload updates, borrowed beside the netcode client.
struct GameState<'a> {
    newest_tick: &'a mut Option<u32>,
    welcome: &'a mut Option<Welcome>,
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
                Ok(ServerMessage::Snapshot(snap)) => {
                    if state.newest_tick.is_some_and(|t| snap.tick <= t) {
                        state.stats.snapshots_stale += 1;
                        return;
                    }
                    *state.newest_tick = Some(snap.tick);
                    state.stats.snapshots += 1;
                    state.stats.snapshot_bytes += data.len() as u64;
                    on_event(GameEvent::Snapshot(snap));
                }
                Ok(ServerMessage::Welcome(w)) => {
                    *state.welcome = Some(w);
                    on_event(GameEvent::Welcome(w));
                }
                Ok(ServerMessage::Bye { reason }) => on_event(GameEvent::Bye(reason)),
                Err(_) => state.stats.payloads_malformed += 1,
            }
        }
    }
}
