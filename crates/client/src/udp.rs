//! [`UdpClient`]: a [`GameClient`] on a blocking `std::net::UdpSocket`.
//!
//! For tools, examples and simple game clients that are happy with one thread:
//!
//! ```no_run
//! # use std::time::Duration;
//! # fn demo(token: &[u8]) -> Result<(), tickwire_client::UdpClientError> {
//! let mut client = tickwire_client::UdpClient::connect(token, Duration::from_secs(5))?;
//! loop {
//!     client.send_input(&[127, 0, 0])?;                    // the game's input frame
//!     client.poll(Duration::from_millis(16), &mut |event| println!("{event:?}"))?;
//! }
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{ClientState, GameClient, GameEvent, Now, SendError, TokenError};

/// Why a [`UdpClient`] call failed.
#[derive(Debug)]
pub enum UdpClientError {
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
}

impl fmt::Display for UdpClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpClientError::Token(e) => write!(f, "bad connect token: {e}"),
            UdpClientError::Io(e) => write!(f, "socket error: {e}"),
            UdpClientError::Failed(state) => write!(f, "connection failed: {state:?}"),
            UdpClientError::Timeout => f.write_str("connection timed out"),
            UdpClientError::Send(e) => write!(f, "send failed: {e:?}"),
        }
    }
}

impl std::error::Error for UdpClientError {}

impl From<io::Error> for UdpClientError {
    fn from(e: io::Error) -> Self {
        UdpClientError::Io(e)
    }
}

impl From<SendError> for UdpClientError {
    fn from(e: SendError) -> Self {
        UdpClientError::Send(e)
    }
}

/// A blocking, single-socket game client.
pub struct UdpClient {
    socket: UdpSocket,
    game: GameClient,
    start: Instant,
    buf: Vec<u8>,
}

impl UdpClient {
    /// Binds a socket (loopback for a loopback server, otherwise the unspecified address of
    /// the server's family) and runs the handshake until connected, failed, or `timeout`.
    /// Events seen during the handshake (the welcome, early snapshots) are dropped; the
    /// client's [`GameClient::welcome`] keeps the welcome.
    pub fn connect(token: &[u8], timeout: Duration) -> Result<Self, UdpClientError> {
        let start = Instant::now();
        let game = GameClient::new(token, now_from(start)).map_err(UdpClientError::Token)?;
        let server = game.server_addr();
        let local: SocketAddr = match (server, server.ip().is_loopback()) {
            (SocketAddr::V4(_), true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (SocketAddr::V4(_), false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (SocketAddr::V6(_), true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (SocketAddr::V6(_), false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        let mut client = UdpClient {
            socket,
            game,
            start,
            buf: vec![0; 2048],
        };
        let deadline = start + timeout;
        while !client.game.is_connected() {
            let state = client.game.state();
            if state.is_error() || state == ClientState::Disconnected {
                return Err(UdpClientError::Failed(state));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(UdpClientError::Timeout);
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            client.poll(wait, &mut |_| {})?;
        }
        Ok(client)
    }

    /// The sans-IO client inside.
    pub fn game(&self) -> &GameClient {
        &self.game
    }

    /// The local socket address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one input frame (with redundancy); returns its sequence number.
    pub fn send_input(&mut self, frame: &[u8]) -> Result<u32, UdpClientError> {
        let now = now_from(self.start);
        let socket = &self.socket;
        let mut send_err = None;
        let seq = self.game.send_input(now, frame, &mut |to, bytes| {
            if let Err(e) = socket.send_to(bytes, to) {
                send_err = Some(e);
            }
        })?;
        match send_err {
            Some(e) => Err(e.into()),
            None => Ok(seq),
        }
    }

    /// Receives and handles datagrams for up to `wait`, then runs the client's upkeep.
    /// Returns after the first batch of datagrams or when `wait` has passed.
    pub fn poll(
        &mut self,
        wait: Duration,
        on_event: &mut dyn FnMut(GameEvent),
    ) -> Result<(), UdpClientError> {
        let socket = &self.socket;
        socket.set_read_timeout(Some(wait.max(Duration::from_micros(100))))?;
        let mut tx = |to: SocketAddr, bytes: &[u8]| {
            // Best effort, like every UDP send: a lost datagram is covered by resends.
            let _ = socket.send_to(bytes, to);
        };
        match socket.recv_from(&mut self.buf) {
            Ok((len, from)) => {
                let now = now_from(self.start);
                self.game
                    .handle_packet(now, from, &self.buf[..len], &mut tx, on_event);
                // Drain whatever else is already queued without blocking again.
                socket.set_nonblocking(true)?;
                while let Ok((len, from)) = socket.recv_from(&mut self.buf) {
                    self.game
                        .handle_packet(now, from, &self.buf[..len], &mut tx, on_event);
                }
                socket.set_nonblocking(false)?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable from a previous send: the server is not there (yet).
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e.into()),
        }
        self.game.update(now_from(self.start), &mut tx, on_event);
        Ok(())
    }

    /// Disconnects politely.
    pub fn disconnect(mut self) {
        let socket = &self.socket;
        self.game.disconnect(&mut |to, bytes| {
            let _ = socket.send_to(bytes, to);
        });
    }
}

fn now_from(start: Instant) -> Now {
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Now {
        mono: start.elapsed(),
        unix_secs,
    }
}
