//! [`ClientConn`]: the client end of a stream connection, and the WebSocket upgrade request.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::http::{self, HeadScan, ResponseError};
use crate::{tcp, ws, FrameError, Limits, Transport, Violation, SUBPROTOCOL};

/// The HTTP request that opens a WebSocket to a Tickwire server: `GET path HTTP/1.1` with
/// `Host: host`, the upgrade fields, `Sec-WebSocket-Key` = base64 of `key` (16 random
/// bytes, for instance from [`random_ws_key`]; the same key goes to
/// [`ClientConn::websocket`]) and the [`SUBPROTOCOL`] offer.
///
/// `host` is the server's `host:port` (an IPv6 host in brackets) and `path` normally `/`
/// (empty means `/`). Bytes of either outside visible ASCII are dropped, so neither can
/// inject a header.
pub fn ws_client_request(host: &str, path: &str, key: [u8; 16]) -> Vec<u8> {
    fn visible(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().filter(|b| (0x21..0x7f).contains(b))
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET ");
    let start = out.len();
    out.extend(visible(path));
    if out.len() == start {
        out.push(b'/');
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend(visible(host));
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(STANDARD.encode(key).as_bytes());
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ");
    out.extend_from_slice(SUBPROTOCOL.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// 16 bytes from the OS random source, for a `Sec-WebSocket-Key`.
pub fn random_ws_key() -> Result<[u8; 16], FrameError> {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|_| FrameError::NoRandom)?;
    Ok(key)
}

/// Where masking keys come from.
enum Masks {
    /// The OS random source, drawn 64 bytes (16 keys) at a time.
    Os { pool: [u8; 64], next: usize },
    /// The caller's.
    Custom(Box<dyn FnMut() -> [u8; 4] + Send>),
}

impl Masks {
    fn next(&mut self) -> Option<[u8; 4]> {
        match self {
            Masks::Os { pool, next } => {
                if *next >= pool.len() {
                    getrandom::fill(pool).ok()?;
                    *next = 0;
                }
                let mut k = [0u8; 4];
                k.copy_from_slice(&pool[*next..*next + 4]);
                *next += 4;
                Some(k)
            }
            Masks::Custom(f) => Some(f()),
        }
    }
}

enum State {
    Tcp(tcp::Decoder),
    /// Waiting for the server's `101`, with the `Sec-WebSocket-Accept` it must carry.
    Handshake {
        buf: Vec<u8>,
        scan: HeadScan,
        accept: String,
    },
    WebSocket(ws::Decoder),
    Closed {
        transport: Transport,
        violation: Option<Violation>,
    },
}

/// The client end of a stream connection: TCP framing, or a WebSocket whose upgrade request
/// ([`ws_client_request`]) the caller has sent.
///
/// WebSocket: [`feed`](ClientConn::feed) first reads the server's answer and checks that it
/// is a `101` with `Upgrade: websocket`, `Connection: upgrade`, the `Sec-WebSocket-Accept`
/// hash of our key, no extension, and no subprotocol other than [`SUBPROTOCOL`]; then it
/// decodes unmasked server frames (a masked one is a [`Violation::MaskedFrame`]). Frames we
/// send are masked with keys from the OS random source unless
/// [`with_mask_source`](ClientConn::with_mask_source) says otherwise.
pub struct ClientConn {
    limits: Limits,
    state: State,
    masks: Masks,
    status: Option<u16>,
}

impl fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConn")
            .field("transport", &self.transport())
            .field("established", &self.is_established())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ClientConn {
    fn with_state(limits: Limits, state: State) -> ClientConn {
        ClientConn {
            limits: limits.clamped(),
            state,
            masks: Masks::Os {
                pool: [0; 64],
                next: 64,
            },
            status: None,
        }
    }

    /// TCP framing: established from the start.
    pub fn tcp(limits: Limits) -> ClientConn {
        ClientConn::with_state(limits, State::Tcp(tcp::Decoder::default()))
    }

    /// A WebSocket whose upgrade request was built with `key`; established once the server's
    /// `101` has been read.
    pub fn websocket(key: [u8; 16], limits: Limits) -> ClientConn {
        ClientConn::with_state(
            limits,
            State::Handshake {
                buf: Vec::new(),
                scan: HeadScan::default(),
                accept: http::websocket_accept(&STANDARD.encode(key)),
            },
        )
    }

    /// Masking keys from `source` instead of the OS random source: for tests and fuzzing.
    /// RFC 6455 §5.3 wants unpredictable keys on a real connection.
    pub fn with_mask_source(mut self, source: impl FnMut() -> [u8; 4] + Send + 'static) -> Self {
        self.masks = Masks::Custom(Box::new(source));
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        match &self.state {
            State::Tcp(_) => Transport::Tcp,
            State::Handshake { .. } | State::WebSocket(_) => Transport::WebSocket,
            State::Closed { transport, .. } => *transport,
        }
    }

    /// Whether packets can flow (TCP, or the WebSocket handshake is done) and the connection
    /// is not closing.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Tcp(_) | State::WebSocket(_))
    }

    /// The HTTP status of the server's answer to the upgrade, once read (101 when accepted).
    pub fn http_status(&self) -> Option<u16> {
        self.status
    }

    /// The violation that closed the connection, if one did.
    pub fn violation(&self) -> Option<Violation> {
        match self.state {
            State::Closed { violation, .. } => violation,
            _ => None,
        }
    }

    /// Bytes held for an incomplete frame, message or response head.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Tcp(d) => d.buffered(),
            State::Handshake { buf, .. } => buf.len(),
            State::WebSocket(d) => d.buffered(),
            State::Closed { .. } => 0,
        }
    }

    /// Heap bytes held for reassembly: never more than
    /// `max(limits.max_packet, limits.max_handshake)`.
    pub fn buffer_capacity(&self) -> usize {
        match &self.state {
            State::Tcp(d) => d.capacity(),
            State::Handshake { buf, .. } => buf.capacity(),
            State::WebSocket(d) => d.capacity(),
            State::Closed { .. } => 0,
        }
    }

    /// Reads bytes from the server, at any boundaries: calls `on_packet` for each complete
    /// packet, appends what we must send back (pongs, the close echo, a close frame for a
    /// violation; all masked) to `reply`, and returns a [`Violation`] when the connection is
    /// over (send `reply`, then close). A refused upgrade is
    /// [`Violation::BadHandshake`], with the status in [`http_status`](ClientConn::http_status).
    pub fn feed(
        &mut self,
        data: &[u8],
        reply: &mut Vec<u8>,
        on_packet: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Violation> {
        let r = self.feed_inner(data, reply, on_packet);
        if let Err(v) = r {
            if !matches!(self.state, State::Closed { .. }) {
                self.state = State::Closed {
                    transport: self.transport(),
                    violation: Some(v),
                };
            }
        }
        r
    }

    fn feed_inner(
        &mut self,
        data: &[u8],
        reply: &mut Vec<u8>,
        on_packet: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Violation> {
        let max_packet = self.limits.max_packet;
        let max_head = self.limits.max_handshake;
        let masks = &mut self.masks;
        match &mut self.state {
            State::Tcp(d) => d.feed(data, max_packet, on_packet),
            State::WebSocket(d) => d.feed(data, max_packet, reply, on_packet, &mut || masks.next()),
            State::Closed { violation, .. } => match violation {
                Some(v) => Err(*v),
                None => Ok(()),
            },
            State::Handshake { buf, scan, accept } => {
                let take = max_head.saturating_sub(buf.len()).min(data.len());
                if buf.capacity() < max_head {
                    buf.reserve_exact(max_head - buf.len());
                }
                buf.extend_from_slice(&data[..take]);
                let Some(end) = scan.advance(buf) else {
                    return if buf.len() >= max_head {
                        Err(Violation::HandshakeTooLarge)
                    } else {
                        Ok(())
                    };
                };
                match http::check_response(&buf[..end], accept) {
                    Ok(()) => self.status = Some(101),
                    Err(ResponseError::Status(s)) => {
                        self.status = Some(s);
                        return Err(Violation::BadHandshake);
                    }
                    Err(ResponseError::BadUpgrade) => {
                        self.status = Some(101);
                        return Err(Violation::BadHandshake);
                    }
                    Err(ResponseError::Malformed) => return Err(Violation::BadHandshake),
                }
                let head = std::mem::take(buf);
                let mut d = ws::Decoder::new(ws::Role::Client);
                let mut mask = || masks.next();
                let mut r = d.feed(&head[end..], max_packet, reply, on_packet, &mut mask);
                if r.is_ok() {
                    r = d.feed(&data[take..], max_packet, reply, on_packet, &mut mask);
                }
                self.state = State::WebSocket(d);
                r
            }
        }
    }

    /// Appends `packet` framed for the server (a length prefix, or one masked binary
    /// WebSocket frame) to `out`; returns the bytes appended.
    pub fn encode(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, FrameError> {
        match self.state {
            State::Tcp(_) | State::WebSocket(_) => {}
            State::Handshake { .. } => return Err(FrameError::NotEstablished),
            State::Closed { .. } => return Err(FrameError::Closed),
        }
        if packet.len() > self.limits.max_packet {
            return Err(FrameError::TooLarge);
        }
        let before = out.len();
        if let State::Tcp(_) = self.state {
            tcp::encode(packet, out);
        } else {
            let key = self.masks.next().ok_or(FrameError::NoRandom)?;
            ws::encode(ws::BINARY, packet, Some(key), out);
        }
        Ok(out.len() - before)
    }

    /// Closes from our side: on an established WebSocket appends a (masked) close frame with
    /// `code` to `out`; TCP needs no bytes. Later `feed` calls read nothing and return `Ok`.
    pub fn close(&mut self, code: u16, out: &mut Vec<u8>) {
        if let State::WebSocket(_) = self.state {
            if let Some(key) = self.masks.next() {
                ws::encode(ws::CLOSE, &code.to_be_bytes(), Some(key), out);
            }
        }
        if !matches!(self.state, State::Closed { .. }) {
            self.state = State::Closed {
                transport: self.transport(),
                violation: None,
            };
        }
    }
}
