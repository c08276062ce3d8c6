//! [`TcpClient`] and [`WsClient`]: a [`GameClient`] over one `std::net::TcpStream` to the
//! game port, with the packets framed by `tickwire-stream` (a 2-byte length, or one binary
//! WebSocket message each).
//!
//! The server is the connect token's **first** address (the game port: TCP and UDP share
//! the number). netcode would move on to the token's next address after a denial or a
//! timeout; a stream client does not, and its handshake fails with that error instead.
//!
//! The socket is non-blocking with `TCP_NODELAY`; [`Client::poll`] blocks in one read for
//! at most its `wait`. Packets that find the send buffer full (the server has not been
//! reading for a while) are dropped, as UDP would lose them: netcode and the game protocol
//! are built for loss.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tickwire_stream::{
    close_code, random_ws_key, ws_client_request, ClientConn, Limits, Violation,
};

use crate::driver::{now_from, sealed::Link, Client, ClientError, Transport};
use crate::GameClient;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Reads per [`Client::poll`] at most, so a flood cannot hold the caller.
const MAX_READS: usize = 16;
/// Bytes queued for the socket at most; a packet that does not fit is dropped.
const MAX_PENDING: usize = 64 * 1024;

/// One TCP connection carrying framed packets.
struct StreamLink {
    stream: TcpStream,
    peer: SocketAddr,
    conn: ClientConn,
    rbuf: Box<[u8]>,
    /// Bytes waiting for the socket (at most [`MAX_PENDING`] plus one reply).
    wbuf: Vec<u8>,
    reply: Vec<u8>,
    /// The connection is over (end of stream, error, violation): nothing more is read.
    dead: bool,
}

impl StreamLink {
    fn connect(peer: SocketAddr, conn: ClientConn, timeout: Duration) -> Result<Self, ClientError> {
        if timeout.is_zero() {
            return Err(ClientError::Timeout);
        }
        let stream = TcpStream::connect_timeout(&peer, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(StreamLink {
            stream,
            peer,
            conn,
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            wbuf: Vec::new(),
            reply: Vec::new(),
            dead: false,
        })
    }

    /// Feeds `n` bytes of `rbuf` to the codec.
    fn feed(
        &mut self,
        n: usize,
        on_packet: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<(), ClientError> {
        let peer = self.peer;
        let r = self.conn.feed(&self.rbuf[..n], &mut self.reply, &mut |p| {
            on_packet(peer, p)
        });
        if self.wbuf.len() + self.reply.len() <= MAX_PENDING + 256 {
            // Pongs and close frames; a server flooding pings it does not read the answers
            // to loses them.
            self.wbuf.extend_from_slice(&self.reply);
        }
        self.reply.clear();
        r.map_err(|v| {
            self.dead = true;
            let _ = self.write_out();
            match v {
                Violation::PeerClose => ClientError::Closed,
                Violation::BadHandshake => match self.conn.http_status() {
                    Some(status) if status != 101 => ClientError::Rejected(status),
                    _ => ClientError::Stream(v),
                },
                v => ClientError::Stream(v),
            }
        })
    }

    /// Writes queued bytes until done or the socket would block.
    fn write_out(&mut self) -> io::Result<()> {
        let mut sent = 0;
        let r = loop {
            if sent == self.wbuf.len() {
                break Ok(());
            }
            match self.stream.write(&self.wbuf[sent..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.wbuf.drain(..sent);
        r
    }

    /// One read: `Ok(true)` if bytes were fed, `Ok(false)` if none were ready.
    fn read_once(
        &mut self,
        on_packet: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<bool, ClientError> {
        loop {
            return match self.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    self.dead = true;
                    Err(ClientError::Closed)
                }
                Ok(n) => self.feed(n, on_packet).map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => {
                    self.dead = true;
                    Err(e.into())
                }
            };
        }
    }
}

impl Link for StreamLink {
    fn send(&mut self, to: SocketAddr, packet: &[u8]) -> io::Result<()> {
        let room = MAX_PENDING.saturating_sub(self.wbuf.len());
        if to != self.peer || self.dead || packet.len() + 14 > room {
            return Ok(());
        }
        // Not established yet (a WebSocket before its 101) or over max_packet: dropped.
        let _ = self.conn.encode(packet, &mut self.wbuf);
        Ok(())
    }

    fn recv(
        &mut self,
        wait: Duration,
        on_packet: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<(), ClientError> {
        if self.dead {
            return Err(ClientError::Closed);
        }
        self.flush()?;
        // Block in one read for at most `wait`, then drain what else is there.
        self.stream.set_nonblocking(false)?;
        let first = self
            .stream
            .set_read_timeout(Some(wait.max(Duration::from_micros(100))))
            .map_err(ClientError::from)
            .and_then(|()| self.read_once(on_packet));
        self.stream.set_nonblocking(true)?;
        if first? {
            for _ in 1..MAX_READS {
                if !self.read_once(on_packet)? {
                    break;
                }
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        if self.dead {
            return Ok(());
        }
        self.write_out().map_err(|e| {
            self.dead = true;
            ClientError::Io(e)
        })
    }

    fn ready(&self) -> bool {
        self.conn.is_established()
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    fn close(&mut self) {
        if !self.dead {
            let mut out = Vec::new();
            self.conn.close(close_code::NORMAL, &mut out);
            self.wbuf.extend_from_slice(&out);
            let _ = self.write_out();
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The TCP transport: packets behind a 2-byte little-endian length.
pub struct Tcp(StreamLink);

/// The WebSocket transport: one packet per binary message, over an HTTP/1.1 upgrade of the
/// game port with path `/`.
pub struct Ws(StreamLink);

/// A blocking game client over TCP.
pub type TcpClient = Client<Tcp>;

/// A blocking game client over WebSocket (RFC 6455, unencrypted `ws://`).
pub type WsClient = Client<Ws>;

macro_rules! stream_transport {
    ($t:ident) => {
        impl Transport for $t {}

        impl Link for $t {
            fn send(&mut self, to: SocketAddr, packet: &[u8]) -> io::Result<()> {
                self.0.send(to, packet)
            }
            fn recv(
                &mut self,
                wait: Duration,
                on_packet: &mut dyn FnMut(SocketAddr, &[u8]),
            ) -> Result<(), ClientError> {
                self.0.recv(wait, on_packet)
            }
            fn flush(&mut self) -> Result<(), ClientError> {
                self.0.flush()
            }
            fn ready(&self) -> bool {
                self.0.ready()
            }
            fn peer(&self) -> Option<SocketAddr> {
                self.0.peer()
            }
            fn local_addr(&self) -> io::Result<SocketAddr> {
                self.0.local_addr()
            }
            fn close(&mut self) {
                self.0.close()
            }
        }
    };
}

stream_transport!(Tcp);
stream_transport!(Ws);

impl Client<Tcp> {
    /// Connects to the token's first server address over TCP (`TCP_NODELAY`) and runs the
    /// netcode handshake until connected, failed, or `timeout` (the TCP connect included).
    /// Events seen during the handshake are dropped, as with
    /// [`UdpClient::connect`](crate::UdpClient::connect).
    pub fn connect(token: &[u8], timeout: Duration) -> Result<Self, ClientError> {
        let start = Instant::now();
        let game = GameClient::new(token, now_from(start)).map_err(ClientError::Token)?;
        let link = StreamLink::connect(
            game.server_addr(),
            ClientConn::tcp(Limits::default()),
            timeout,
        )?;
        Client::new(Tcp(link), game, start).establish(start + timeout)
    }
}

impl Client<Ws> {
    /// Connects to the token's first server address over TCP (`TCP_NODELAY`), upgrades to a
    /// WebSocket (`GET /`, offering the `tickwire.netcode` subprotocol), then runs the
    /// netcode handshake until connected, failed, or `timeout` (all of it included). A
    /// refused upgrade is [`ClientError::Rejected`] with the server's HTTP status.
    pub fn connect(token: &[u8], timeout: Duration) -> Result<Self, ClientError> {
        let start = Instant::now();
        let game = GameClient::new(token, now_from(start)).map_err(ClientError::Token)?;
        let server = game.server_addr();
        let key = random_ws_key().map_err(|_| ClientError::Stream(Violation::NoRandom))?;
        let mut link = StreamLink::connect(
            server,
            ClientConn::websocket(key, Limits::default()),
            timeout,
        )?;
        // `SocketAddr`'s display is the Host form: `127.0.0.1:7777`, `[::1]:7777`.
        link.wbuf = ws_client_request(&server.to_string(), "/", key);
        Client::new(Ws(link), game, start).establish(start + timeout)
    }
}
