//! [`Client`]: one [`GameClient`] driven over a blocking [`Transport`] (UDP, TCP or
//! WebSocket). The transport only moves packets; everything else (the handshake loop, inputs,
//! messages, upkeep, disconnecting) is here, once for all of them.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickwire_stream::Violation;

use crate::{ChannelError, ClientState, GameClient, GameEvent, Now, SendError, TokenError};

/// Why a [`Client`] call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The connect token could not be read.
    Token(TokenError),
    /// A socket call failed.
    Io(io::Error),
    /// The handshake ended in this state (denied, timed out, token expired, ...).
    Failed(ClientState),
    /// The handshake did not finish within the caller's timeout.
    Timeout,
    /// The message could not be sent.
    Send(SendError),
    /// The reliable message could not be queued.
    Channel(ChannelError),
    /// TCP or WebSocket: the server broke the framing or the WebSocket rules (the label says
    /// how); the connection is closed.
    Stream(Violation),
    /// WebSocket: the server answered the upgrade with this HTTP status instead of `101`
    /// (426: it wants another WebSocket version; 400: it found the request malformed).
    Rejected(u16),
    /// TCP or WebSocket: the server closed the connection while the session was still up.
    Closed,
}

/// The error type of [`UdpClient`](crate::UdpClient) (the same as every [`Client`]'s).
pub type UdpClientError = ClientError;

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Token(e) => write!(f, "bad connect token: {e}"),
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Failed(state) => write!(f, "connection failed: {state:?}"),
            ClientError::Timeout => f.write_str("connection timed out"),
            ClientError::Send(e) => write!(f, "send failed: {e:?}"),
            ClientError::Channel(e) => write!(f, "message not queued: {e:?}"),
            ClientError::Stream(v) => write!(f, "stream closed: {v}"),
            ClientError::Rejected(status) => {
                write!(f, "WebSocket upgrade refused with HTTP {status}")
            }
            ClientError::Closed => f.write_str("the server closed the connection"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<SendError> for ClientError {
    fn from(e: SendError) -> Self {
        ClientError::Send(e)
    }
}

pub(crate) mod sealed {
    use super::*;

    /// What a transport does for [`Client`]. Crate-private: the transports are this crate's.
    pub trait Link {
        /// Sends one packet to `to`, or queues it (streams; a stream drops packets for any
        /// address but its server's, and any it has no room for, like lost datagrams).
        fn send(&mut self, to: SocketAddr, packet: &[u8]) -> io::Result<()>;
        /// Waits up to `wait` for packets and hands each to `on_packet` with its sender.
        /// Streams: `Err(Closed)` once the connection is over.
        fn recv(
            &mut self,
            wait: Duration,
            on_packet: &mut dyn FnMut(SocketAddr, &[u8]),
        ) -> Result<(), ClientError>;
        /// Pushes out what `send` queued (streams), as far as the socket takes it now.
        fn flush(&mut self) -> Result<(), ClientError>;
        /// Whether packets can go out (a WebSocket: once the upgrade is done).
        fn ready(&self) -> bool {
            true
        }
        /// The one server a stream reaches; `None` for UDP.
        fn peer(&self) -> Option<SocketAddr> {
            None
        }
        /// The local socket address.
        fn local_addr(&self) -> io::Result<SocketAddr>;
        /// Last words before the socket is dropped (a WebSocket close frame).
        fn close(&mut self) {}
    }
}

/// A way to reach the server: [`Udp`](crate::Udp), [`Tcp`](crate::Tcp) or
/// [`Ws`](crate::Ws). Sealed: implemented in this crate only.
pub trait Transport: sealed::Link {}

/// Packets the game client produced, kept until the transport is free to take them (the
/// transport is busy handing packets in while the game answers them).
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    items: Vec<(SocketAddr, Range<usize>)>,
}

impl Outbox {
    fn push(&mut self, to: SocketAddr, packet: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet);
        self.items.push((to, start..self.bytes.len()));
    }
}

/// A blocking, single-threaded game client over transport `T`. Use it through
/// [`UdpClient`](crate::UdpClient), [`TcpClient`](crate::TcpClient) or
/// [`WsClient`](crate::WsClient), whose `connect` runs the handshake:
///
/// ```no_run
/// # use std::time::Duration;
/// # fn demo(token: &[u8]) -> Result<(), tickwire_client::ClientError> {
/// let mut client = tickwire_client::WsClient::connect(token, Duration::from_secs(5))?;
/// loop {
///     client.send_input(&[127, 0, 0])?;                    // the game's input frame
///     client.poll(Duration::from_millis(16), &mut |event| println!("{event:?}"))?;
/// }
/// # }
/// ```
pub struct Client<T: Transport> {
    link: T,
    game: GameClient,
    start: Instant,
    outbox: Outbox,
    /// A stream client's handshake failed on its server (see [`Client::watch_failover`]).
    failed: Option<ClientState>,
}

impl<T: Transport> fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.game.state())
            .field("server", &self.game.server_addr())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Client<T> {
    pub(crate) fn new(link: T, game: GameClient, start: Instant) -> Self {
        Client {
            link,
            game,
            start,
            outbox: Outbox::default(),
            failed: None,
        }
    }

    /// Polls until the handshake is done, failed, or `deadline` passed.
    pub(crate) fn establish(mut self, deadline: Instant) -> Result<Self, ClientError> {
        while !self.game.is_connected() {
            let state = self.game.state();
            if state.is_error() || state == ClientState::Disconnected {
                return Err(ClientError::Failed(state));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout);
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            self.poll(wait, &mut |_| {})?;
        }
        Ok(self)
    }

    /// The sans-IO client inside.
    pub fn game(&self) -> &GameClient {
        &self.game
    }

    /// The netcode connection state.
    pub fn state(&self) -> ClientState {
        self.game.state()
    }

    /// The local socket address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }

    fn now(&self) -> Now {
        now_from(self.start)
    }

    /// Hands the outbox to the transport. `strict`: report the first send error (UDP's
    /// `send_to`); otherwise such errors are ignored like any lost datagram. The transport's
    /// own flush errors (a stream's write failing) are always reported.
    fn flush(&mut self, strict: bool) -> Result<(), ClientError> {
        let mut first = None;
        for (to, range) in self.outbox.items.drain(..) {
            if let Err(e) = self.link.send(to, &self.outbox.bytes[range]) {
                first.get_or_insert(e);
            }
        }
        self.outbox.bytes.clear();
        let flushed = self.link.flush();
        match first {
            Some(e) if strict => Err(e.into()),
            _ => flushed,
        }
    }

    /// A stream reaches one server, the token's first address. netcode moves on to the
    /// token's next address when that server denies it or stops answering; a stream client
    /// cannot follow, so it ends the handshake with the error netcode would have reported
    /// for the first server: `denied` if a packet moved it, else the timeout of the state
    /// it was in.
    fn watch_failover(&mut self, before: ClientState, by_packet: bool) {
        let Some(peer) = self.link.peer() else {
            return;
        };
        if self.failed.is_some() || self.game.server_addr() == peer {
            return;
        }
        self.failed = Some(if by_packet {
            ClientState::ConnectionDenied
        } else if before == ClientState::SendingChallengeResponse {
            ClientState::ConnectionResponseTimedOut
        } else {
            ClientState::ConnectionRequestTimedOut
        });
    }

    /// Sends one input frame (with redundancy); returns its sequence number.
    pub fn send_input(&mut self, frame: &[u8]) -> Result<u32, ClientError> {
        let now = self.now();
        let outbox = &mut self.outbox;
        let seq = self
            .game
            .send_input(now, frame, &mut |to, bytes| outbox.push(to, bytes))?;
        self.flush(true)?;
        Ok(seq)
    }

    /// Queues a reliable message for the game on the server; it goes out with the next
    /// [`poll`](Client::poll) (and is resent until acknowledged).
    pub fn send_message(&mut self, msg: &[u8]) -> Result<(), ClientError> {
        self.game.send_message(msg).map_err(ClientError::Channel)
    }

    /// Receives and handles packets for up to `wait`, then runs the client's upkeep
    /// (handshake resends, keep-alives, reliable messages, timeouts). Returns after the
    /// first batch of packets or when `wait` has passed.
    ///
    /// Streams: `Err(Closed)` when the server closes the connection while the session is
    /// up (after the packets that came before the end were handled); once the session has
    /// ended (a [`GameEvent::Disconnected`] was delivered), a closed stream just waits `wait`
    /// and returns `Ok`, like a UDP socket that hears nothing more.
    pub fn poll(
        &mut self,
        wait: Duration,
        on_event: &mut dyn FnMut(GameEvent),
    ) -> Result<(), ClientError> {
        if let Some(state) = self.failed {
            return Err(ClientError::Failed(state));
        }
        let start = self.start;
        let before = self.game.state();
        let received = {
            let game = &mut self.game;
            let outbox = &mut self.outbox;
            self.link.recv(wait, &mut |from, packet| {
                game.handle_packet(
                    now_from(start),
                    from,
                    packet,
                    &mut |to, bytes| outbox.push(to, bytes),
                    on_event,
                );
            })
        };
        self.watch_failover(before, true);
        if self.link.ready() {
            let before = self.game.state();
            let outbox = &mut self.outbox;
            self.game.update(
                now_from(start),
                &mut |to, bytes| outbox.push(to, bytes),
                on_event,
            );
            self.watch_failover(before, false);
        }
        let flushed = self.flush(false);
        let over = |s: ClientState| s.is_error() || s == ClientState::Disconnected;
        match received.and(flushed) {
            Err(ClientError::Closed) if over(self.game.state()) => {
                if over(before) {
                    // Nothing more will arrive: wait as a quiet socket would.
                    std::thread::sleep(wait);
                }
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) => match self.failed {
                Some(state) => Err(ClientError::Failed(state)),
                None => Ok(()),
            },
        }
    }

    /// Disconnects politely (netcode's redundant disconnect packets; a WebSocket close frame
    /// after them).
    pub fn disconnect(mut self) {
        let outbox = &mut self.outbox;
        self.game
            .disconnect(&mut |to, bytes| outbox.push(to, bytes));
        let _ = self.flush(false);
        self.link.close();
    }
}

pub(crate) fn now_from(start: Instant) -> Now {
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Now {
        mono: start.elapsed(),
        unix_secs,
    }
}
