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

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::driver::{now_from, sealed::Link, Client, ClientError, Transport};
use crate::GameClient;

/// Datagrams handled per [`Client::poll`] at most, so a flood cannot hold the caller.
const MAX_DRAIN: usize = 1024;

/// The UDP transport: one socket, datagrams to and from the server address.
pub struct Udp {
    socket: UdpSocket,
    buf: Vec<u8>,
}

/// A blocking, single-socket game client over UDP.
pub type UdpClient = Client<Udp>;

impl Client<Udp> {
    /// Binds a socket (loopback for a loopback server, otherwise the unspecified address of
    /// the server's family) and runs the handshake until connected, failed, or `timeout`.
    /// Events seen during the handshake (the welcome, early snapshots) are dropped; the
    /// client's [`GameClient::welcome`] keeps the welcome.
    pub fn connect(token: &[u8], timeout: Duration) -> Result<Self, ClientError> {
        let start = Instant::now();
        let game = GameClient::new(token, now_from(start)).map_err(ClientError::Token)?;
        let server = game.server_addr();
        let local: SocketAddr = match (server, server.ip().is_loopback()) {
            (SocketAddr::V4(_), true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (SocketAddr::V4(_), false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (SocketAddr::V6(_), true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (SocketAddr::V6(_), false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let link = Udp {
            socket: UdpSocket::bind(local)?,
            buf: vec![0; 2048],
        };
        Client::new(link, game, start).establish(start + timeout)
    }
}

impl Transport for Udp {}

impl Link for Udp {
    fn send(&mut self, to: SocketAddr, packet: &[u8]) -> io::Result<()> {
        self.socket.send_to(packet, to).map(|_| ())
    }

    fn recv(
        &mut self,
        wait: Duration,
        on_packet: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<(), ClientError> {
        let socket = &self.socket;
        socket.set_read_timeout(Some(wait.max(Duration::from_micros(100))))?;
        match socket.recv_from(&mut self.buf) {
            Ok((len, from)) => {
                on_packet(from, &self.buf[..len]);
                // Drain whatever else is already queued without blocking again.
                socket.set_nonblocking(true)?;
                for _ in 1..MAX_DRAIN {
                    let Ok((len, from)) = socket.recv_from(&mut self.buf) else {
                        break;
                    };
                    on_packet(from, &self.buf[..len]);
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
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        Ok(())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}
