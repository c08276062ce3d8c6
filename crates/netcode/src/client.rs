//! The sans-IO netcode client state machine: connection request -> challenge response ->
//! connected, across the token's server addresses in order, with the standard's error states.
//!
//! Resends request/response at 10 Hz, sends keep-alives at 10 Hz when idle, times out after
//! the token's timeout (`<= 0` disables), and gives up with `ConnectTokenExpired` once the
//! token's lifetime (expire - create) has passed since `Client::new`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::packet::{self, Packet, PacketType, CHALLENGE_BODY_BYTES};
use crate::replay::ReplayProtection;
use crate::server::{SendError, KEEP_ALIVE_INTERVAL, NUM_DISCONNECT_PACKETS};
use crate::token::{ConnectTokenPublic, TokenError, CHALLENGE_TOKEN_BYTES};
use crate::{Now, MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES};

/// Client states, as in the standard (negative codes are errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// -6: the token expired before a connection was made.
    ConnectTokenExpired,
    /// -5: the token was invalid.
    InvalidConnectToken,
    /// -4: connected, then nothing heard from the server within the timeout.
    ConnectionTimedOut,
    /// -3: no keep-alive or denied in reply to the challenge response.
    ConnectionResponseTimedOut,
    /// -2: no challenge or denied in reply to the connection request.
    ConnectionRequestTimedOut,
    /// -1: the server denied the connection.
    ConnectionDenied,
    /// 0: disconnected (by either side).
    Disconnected,
    /// 1: sending connection requests.
    SendingConnectionRequest,
    /// 2: sending challenge responses.
    SendingChallengeResponse,
    /// 3: connected.
    Connected,
}

impl ClientState {
    /// True for the negative (error) states.
    pub fn is_error(&self) -> bool {
        self.code() < 0
    }

    /// The standard's numeric state.
    pub fn code(&self) -> i32 {
        match self {
            ClientState::ConnectTokenExpired => -6,
            ClientState::InvalidConnectToken => -5,
            ClientState::ConnectionTimedOut => -4,
            ClientState::ConnectionResponseTimedOut => -3,
            ClientState::ConnectionRequestTimedOut => -2,
            ClientState::ConnectionDenied => -1,
            ClientState::Disconnected => 0,
            ClientState::SendingConnectionRequest => 1,
            ClientState::SendingChallengeResponse => 2,
            ClientState::Connected => 3,
        }
    }

    /// Stable snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientState::ConnectTokenExpired => "connect_token_expired",
            ClientState::InvalidConnectToken => "invalid_connect_token",
            ClientState::ConnectionTimedOut => "connection_timed_out",
            ClientState::ConnectionResponseTimedOut => "connection_response_timed_out",
            ClientState::ConnectionRequestTimedOut => "connection_request_timed_out",
            ClientState::ConnectionDenied => "connection_denied",
            ClientState::Disconnected => "disconnected",
            ClientState::SendingConnectionRequest => "sending_connection_request",
            ClientState::SendingChallengeResponse => "sending_challenge_response",
            ClientState::Connected => "connected",
        }
    }
}

impl std::fmt::Display for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client reports.
#[derive(Debug)]
pub enum ClientEvent<'a> {
    /// Handshake complete (emitted just before `StateChanged(Connected)`).
    Connected {
        /// Our slot on the server.
        client_index: u32,
        /// The server's slot count.
        max_clients: u32,
    },
    /// A payload from the server (borrowed from the client's decrypt scratch).
    Payload(&'a [u8]),
    /// The state changed (also reported for transitions into `Connected` and error states).
    StateChanged(ClientState),
}

/// The netcode.io 1.02 client.
pub struct Client {
    token: ConnectTokenPublic,
    state: ClientState,
    addr_index: usize,
    start: Duration,
    lifetime: Duration,
    timeout: Option<Duration>,
    last_recv: Duration,
    last_send: Option<Duration>,
    sequence: u64,
    replay: ReplayProtection,
    challenge_sequence: u64,
    challenge_token: [u8; CHALLENGE_TOKEN_BYTES],
    client_index: u32,
    max_clients: u32,
    rx: Box<[u8; MAX_PACKET_BYTES]>,
    tx: Box<[u8; MAX_PACKET_BYTES]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state)
            .field("server_addr", &self.server_addr())
            .field("client_index", &self.client_index())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Reads `connect_token` (2048 bytes) and starts in `SendingConnectionRequest` to the
    /// token's first server address. The first request goes out on the first `update`.
    pub fn new(connect_token: &[u8], now: Now) -> Result<Self, TokenError> {
        let token = ConnectTokenPublic::read(connect_token)?;
        let lifetime = Duration::from_secs(token.expire_unix_secs - token.create_unix_secs);
        let timeout =
            (token.timeout_secs > 0).then(|| Duration::from_secs(token.timeout_secs as u64));
        Ok(Self {
            token,
            state: ClientState::SendingConnectionRequest,
            addr_index: 0,
            start: now.mono,
            lifetime,
            timeout,
            last_recv: now.mono,
            last_send: None,
            sequence: 0,
            replay: ReplayProtection::default(),
            challenge_sequence: 0,
            challenge_token: [0; CHALLENGE_TOKEN_BYTES],
            client_index: 0,
            max_clients: 0,
            rx: Box::new([0; MAX_PACKET_BYTES]),
            tx: Box::new([0; MAX_PACKET_BYTES]),
        })
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The server address currently being tried (or connected to).
    pub fn server_addr(&self) -> SocketAddr {
        self.token.server_addrs[self.addr_index]
    }

    /// Our slot on the server, once connected.
    pub fn client_index(&self) -> Option<u32> {
        (self.state == ClientState::Connected).then_some(self.client_index)
    }

    /// The server's slot count, once connected.
    pub fn max_clients(&self) -> Option<u32> {
        (self.state == ClientState::Connected).then_some(self.max_clients)
    }

    fn set_state(&mut self, s: ClientState, on_event: &mut dyn FnMut(ClientEvent<'_>)) {
        if self.state != s {
            self.state = s;
            on_event(ClientEvent::StateChanged(s));
        }
    }

    /// A handshake failure: try the next server address, else enter `error`.
    fn fail(&mut self, now: Now, error: ClientState, on_event: &mut dyn FnMut(ClientEvent<'_>)) {
        if self.addr_index + 1 < self.token.server_addrs.len() {
            self.addr_index += 1;
            self.last_recv = now.mono;
            self.last_send = None;
            self.replay.reset();
            self.set_state(ClientState::SendingConnectionRequest, on_event);
        } else {
            self.set_state(error, on_event);
        }
    }

    fn send(
        &mut self,
        now: Now,
        kind: PacketType,
        body: &[u8],
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        let key = self.token.client_to_server_key;
        let n = packet::seal(
            kind,
            self.sequence,
            body,
            self.token.protocol_id,
            &key,
            &mut self.tx[..],
        );
        self.sequence += 1;
        self.last_send = Some(now.mono);
        tx(self.server_addr(), &self.tx[..n]);
    }

    fn send_handshake(&mut self, now: Now, tx: &mut dyn FnMut(SocketAddr, &[u8])) {
        match self.state {
            ClientState::SendingConnectionRequest => {
                let n = packet::write_request(
                    self.token.protocol_id,
                    self.token.expire_unix_secs,
                    &self.token.nonce,
                    &self.token.private_data,
                    &mut self.tx[..],
                );
                self.last_send = Some(now.mono);
                tx(self.server_addr(), &self.tx[..n]);
            }
            ClientState::SendingChallengeResponse => {
                let mut body = [0u8; CHALLENGE_BODY_BYTES];
                body[..8].copy_from_slice(&self.challenge_sequence.to_le_bytes());
                body[8..].copy_from_slice(&self.challenge_token);
                self.send(now, PacketType::ConnectionResponse, &body, tx);
            }
            _ => {}
        }
    }

    fn send_due(&self, now: Now) -> bool {
        self.last_send
            .is_none_or(|t| now.mono >= t.saturating_add(KEEP_ALIVE_INTERVAL))
    }

    /// Drives resends, keep-alives, timeouts and token expiry.
    pub fn update(
        &mut self,
        now: Now,
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
        on_event: &mut dyn FnMut(ClientEvent<'_>),
    ) {
        let timed_out = self
            .timeout
            .is_some_and(|t| now.mono >= self.last_recv.saturating_add(t));
        match self.state {
            ClientState::SendingConnectionRequest | ClientState::SendingChallengeResponse => {
                if now.mono >= self.start.saturating_add(self.lifetime) {
                    self.set_state(ClientState::ConnectTokenExpired, on_event);
                    return;
                }
                if timed_out {
                    let err = if self.state == ClientState::SendingConnectionRequest {
                        ClientState::ConnectionRequestTimedOut
                    } else {
                        ClientState::ConnectionResponseTimedOut
                    };
                    self.fail(now, err, on_event);
                    if self.state.is_error() {
                        return;
                    }
                }
                if self.send_due(now) {
                    self.send_handshake(now, tx);
                }
            }
            ClientState::Connected => {
                if timed_out {
                    self.set_state(ClientState::ConnectionTimedOut, on_event);
                    return;
                }
                if self.send_due(now) {
                    let mut body = [0u8; 8];
                    body[..4].copy_from_slice(&self.client_index.to_le_bytes());
                    body[4..].copy_from_slice(&self.max_clients.to_le_bytes());
                    self.send(now, PacketType::KeepAlive, &body, tx);
                }
            }
            _ => {}
        }
    }

    /// Processes one datagram. Packets not from the current server address, malformed,
    /// replayed, failing authentication or unexpected in the current state are ignored.
    pub fn handle_packet(
        &mut self,
        now: Now,
        from: SocketAddr,
        packet: &[u8],
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
        on_event: &mut dyn FnMut(ClientEvent<'_>),
    ) {
        let active = matches!(
            self.state,
            ClientState::SendingConnectionRequest
                | ClientState::SendingChallengeResponse
                | ClientState::Connected
        );
        if !active || from != self.server_addr() {
            return;
        }
        let Ok(h) = packet::parse_header(packet) else {
            return;
        };
        let expected = match h.kind {
            PacketType::ConnectionDenied => self.state != ClientState::Connected,
            PacketType::ConnectionChallenge => self.state == ClientState::SendingConnectionRequest,
            PacketType::KeepAlive => self.state != ClientState::SendingConnectionRequest,
            PacketType::Payload | PacketType::Disconnect => self.state == ClientState::Connected,
            _ => false,
        };
        if !expected {
            return;
        }
        if h.kind.replay_protected() && self.replay.already_received(h.sequence) {
            return;
        }
        let key = self.token.server_to_client_key;
        let Ok(n) = packet::open(&h, packet, self.token.protocol_id, &key, &mut self.rx[..]) else {
            return;
        };
        if h.kind.replay_protected() {
            self.replay.advance(h.sequence);
        }
        self.last_recv = now.mono;
        match packet::parse_body(h.kind, &self.rx[..n]) {
            Packet::Denied => self.fail(now, ClientState::ConnectionDenied, on_event),
            Packet::Challenge {
                challenge_sequence,
                token,
            } => {
                self.challenge_sequence = challenge_sequence;
                self.challenge_token = *token;
                self.set_state(ClientState::SendingChallengeResponse, on_event);
                self.send_handshake(now, tx);
            }
            Packet::KeepAlive {
                client_index,
                max_clients,
            } if self.state == ClientState::SendingChallengeResponse => {
                self.client_index = client_index;
                self.max_clients = max_clients;
                self.state = ClientState::Connected;
                on_event(ClientEvent::Connected {
                    client_index,
                    max_clients,
                });
                on_event(ClientEvent::StateChanged(ClientState::Connected));
            }
            Packet::Payload(data) => on_event(ClientEvent::Payload(data)),
            Packet::Disconnect => self.set_state(ClientState::Disconnected, on_event),
            _ => {}
        }
    }

    /// Sends a payload (1..=1200 bytes) while connected. An empty payload sends nothing.
    pub fn send_payload(
        &mut self,
        now: Now,
        payload: &[u8],
        tx: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<(), SendError> {
        if self.state != ClientState::Connected {
            return Err(SendError::NotConnected);
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SendError::TooLarge);
        }
        if payload.is_empty() {
            return Ok(());
        }
        self.send(now, PacketType::Payload, payload, tx);
        Ok(())
    }

    /// If connected, sends 10 redundant disconnect packets; then `Disconnected` (no event).
    pub fn disconnect(&mut self, tx: &mut dyn FnMut(SocketAddr, &[u8])) {
        if self.state == ClientState::Connected {
            let now = Now {
                mono: self.last_send.unwrap_or(self.start),
                unix_secs: 0,
            };
            for _ in 0..NUM_DISCONNECT_PACKETS {
                self.send(now, PacketType::Disconnect, &[], tx);
            }
        }
        if !self.state.is_error() {
            self.state = ClientState::Disconnected;
        }
    }
}
