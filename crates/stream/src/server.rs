//! [`StreamConn`]: the server end of one TCP connection on the game port.

use crate::http::{self, HeadScan};
use crate::{tcp, ws, FrameError, Limits, Transport, Violation, TCP_HEADER_BYTES};

/// The server end of one stream connection: sniffs the transport from the first bytes,
/// answers the WebSocket handshake, reassembles packets and frames the server's own.
///
/// Sniffing: a first byte other than `G`, or a first pair other than `GE`, is TCP framing
/// (those bytes are the start of the first length prefix); `GE` starts an HTTP request, which
/// must be a WebSocket upgrade. `GE` read as a TCP length is 17 735, above
/// [`MAX_PACKET_CAP`](crate::MAX_PACKET_CAP), so no valid TCP stream starts with it.
///
/// After [`feed`](StreamConn::feed) returns a [`Violation`] the connection is done: send what
/// was appended to `reply`, then close the socket. Later `feed` calls return the same
/// violation and read nothing.
///
/// What `feed` appends to `reply` is whole (an HTTP response, whole frames): send it whole,
/// with the connection's own packets after it, or close the connection. `Origin` is not
/// checked: connect tokens authenticate players, not web origins (docs/protocol.md §5.4).
/// There is no clock here: how long a connection may take to send its first bytes or finish
/// its upgrade is the caller's limit.
#[derive(Debug)]
pub struct StreamConn {
    limits: Limits,
    state: State,
}

#[derive(Debug)]
enum State {
    /// No byte yet, or only a `G`.
    Sniff {
        g: bool,
    },
    Tcp(tcp::Decoder),
    /// Reading the HTTP request head.
    Handshake {
        buf: Vec<u8>,
        scan: HeadScan,
    },
    WebSocket(ws::Decoder),
    /// A violation (`Some`), or [`StreamConn::close`] (`None`).
    Closed {
        transport: Option<Transport>,
        violation: Option<Violation>,
    },
}

impl StreamConn {
    /// A connection that has received nothing yet. `limits.max_packet` above
    /// [`MAX_PACKET_CAP`](crate::MAX_PACKET_CAP) is lowered to it.
    pub fn new(limits: Limits) -> StreamConn {
        StreamConn {
            limits: limits.clamped(),
            state: State::Sniff { g: false },
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The transport, once the first bytes told it (`WebSocket` from the start of the HTTP
    /// request on, before the handshake is accepted).
    pub fn transport(&self) -> Option<Transport> {
        match &self.state {
            State::Sniff { .. } => None,
            State::Tcp(_) => Some(Transport::Tcp),
            State::Handshake { .. } | State::WebSocket(_) => Some(Transport::WebSocket),
            State::Closed { transport, .. } => *transport,
        }
    }

    /// Whether packets can flow both ways: TCP framing was sniffed, or the WebSocket
    /// handshake was accepted; and the connection is not closing.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Tcp(_) | State::WebSocket(_))
    }

    /// The violation that closed the connection, if one did.
    pub fn violation(&self) -> Option<Violation> {
        match self.state {
            State::Closed { violation, .. } => violation,
            _ => None,
        }
    }

    /// Bytes held for an incomplete frame, message or request head. At most
    /// `max(limits.max_packet, limits.max_handshake)` plus a frame header and a control
    /// frame's 125 bytes.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Sniff { g } => usize::from(*g),
            State::Tcp(d) => d.buffered(),
            State::Handshake { buf, .. } => buf.len(),
            State::WebSocket(d) => d.buffered(),
            State::Closed { .. } => 0,
        }
    }

    /// Heap bytes the connection holds for reassembly: never more than
    /// `max(limits.max_packet, limits.max_handshake)`.
    pub fn buffer_capacity(&self) -> usize {
        match &self.state {
            State::Tcp(d) => d.capacity(),
            State::Handshake { buf, .. } => buf.capacity(),
            State::WebSocket(d) => d.capacity(),
            State::Sniff { .. } | State::Closed { .. } => 0,
        }
    }

    /// Reads bytes received on the connection, at any boundaries. Calls `on_packet` for
    /// each complete packet (an empty one included: netcode drops it), appends what the
    /// server must send back to `reply` (the `101` response, pongs, close frames, an HTTP
    /// error), and returns a [`Violation`] when the connection must be closed once `reply`
    /// has been sent.
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
        mut data: &[u8],
        reply: &mut Vec<u8>,
        on_packet: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Violation> {
        let limits = self.limits;
        loop {
            match &mut self.state {
                State::Sniff { g } => {
                    let Some(&b) = data.first() else {
                        return Ok(());
                    };
                    match (*g, b) {
                        (false, b'G') => {
                            *g = true;
                            data = &data[1..];
                        }
                        (false, _) => self.state = State::Tcp(tcp::Decoder::default()),
                        (true, b'E') => {
                            let mut buf = Vec::new();
                            grow_bounded(&mut buf, 1, limits.max_handshake);
                            buf.push(b'G');
                            self.state = State::Handshake {
                                buf,
                                scan: HeadScan::default(),
                            };
                        }
                        (true, _) => {
                            // A TCP length whose low byte is `G`.
                            let mut d = tcp::Decoder::default();
                            d.feed(b"G", limits.max_packet, on_packet)?;
                            self.state = State::Tcp(d);
                        }
                    }
                }
                State::Tcp(d) => return d.feed(data, limits.max_packet, on_packet),
                State::WebSocket(d) => {
                    return d.feed(data, limits.max_packet, reply, on_packet, &mut || None)
                }
                State::Handshake { buf, scan } => {
                    let take = limits
                        .max_handshake
                        .saturating_sub(buf.len())
                        .min(data.len());
                    grow_bounded(buf, take, limits.max_handshake);
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let Some(end) = scan.advance(buf) else {
                        if buf.len() >= limits.max_handshake {
                            reply.extend_from_slice(http::RESPONSE_431);
                            return Err(Violation::HandshakeTooLarge);
                        }
                        return Ok(());
                    };
                    match http::check_request(&buf[..end]) {
                        Ok(upgrade) => http::write_101(&upgrade, reply),
                        Err(response) => {
                            reply.extend_from_slice(response);
                            return Err(Violation::BadHandshake);
                        }
                    }
                    // Frames sent right behind the request (the client should have waited
                    // for the 101, but nothing is lost if it did not).
                    let head = std::mem::take(buf);
                    let mut d = ws::Decoder::new(ws::Role::Server);
                    let r = d.feed(
                        &head[end..],
                        limits.max_packet,
                        reply,
                        on_packet,
                        &mut || None,
                    );
                    self.state = State::WebSocket(d);
                    r?;
                }
                State::Closed { violation, .. } => {
                    return match violation {
                        Some(v) => Err(*v),
                        None => Ok(()),
                    };
                }
            }
        }
    }

    /// Checks that a packet of `len` bytes can be sent now; returns the transport.
    fn sendable(&self, len: usize) -> Result<Transport, FrameError> {
        let t = match self.state {
            State::Tcp(_) => Transport::Tcp,
            State::WebSocket(_) => Transport::WebSocket,
            State::Closed { .. } => return Err(FrameError::Closed),
            State::Sniff { .. } | State::Handshake { .. } => {
                return Err(FrameError::NotEstablished)
            }
        };
        if len > self.limits.max_packet {
            return Err(FrameError::TooLarge);
        }
        Ok(t)
    }

    /// Bytes a packet of `packet_len` bytes takes on the wire, framed for this connection.
    pub fn framed_len(&self, packet_len: usize) -> Result<usize, FrameError> {
        Ok(match self.sendable(packet_len)? {
            Transport::Tcp => TCP_HEADER_BYTES + packet_len,
            Transport::WebSocket => ws::framed_len(packet_len, false),
        })
    }

    /// Appends `packet` framed for this connection (a length prefix, or one unmasked binary
    /// WebSocket frame) to `out`; returns the bytes appended.
    pub fn encode(&self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, FrameError> {
        let before = out.len();
        match self.sendable(packet.len())? {
            Transport::Tcp => tcp::encode(packet, out),
            Transport::WebSocket => ws::encode(ws::BINARY, packet, None, out),
        }
        Ok(out.len() - before)
    }

    /// Writes `packet` framed for this connection at the start of `out` (a send buffer's free
    /// slot); returns the bytes written, or 0 when it cannot be sent ([`encode`] says why) or
    /// does not fit in `out`.
    ///
    /// [`encode`]: StreamConn::encode
    pub fn frame_into(&self, packet: &[u8], out: &mut [u8]) -> usize {
        match self.sendable(packet.len()) {
            Ok(Transport::Tcp) => {
                let total = TCP_HEADER_BYTES + packet.len();
                if out.len() < total {
                    return 0;
                }
                out[..2].copy_from_slice(&(packet.len() as u16).to_le_bytes());
                out[2..total].copy_from_slice(packet);
                total
            }
            Ok(Transport::WebSocket) => ws::encode_into(ws::BINARY, packet, out),
            Err(_) => 0,
        }
    }

    /// Closes from our side: on an established WebSocket appends a close frame with `code`
    /// (for instance [`close_code::GOING_AWAY`](crate::close_code::GOING_AWAY) at shutdown)
    /// to `out`; TCP needs no bytes. Later `feed` calls read nothing and return `Ok`, and
    /// nothing more can be framed.
    pub fn close(&mut self, code: u16, out: &mut Vec<u8>) {
        if let State::WebSocket(_) = self.state {
            ws::encode(ws::CLOSE, &code.to_be_bytes(), None, out);
        }
        if !matches!(self.state, State::Closed { .. }) {
            self.state = State::Closed {
                transport: self.transport(),
                violation: None,
            };
        }
    }
}

/// Makes room for `extra` more bytes without ever taking capacity past `max` (a doubling
/// `Vec` could overshoot it).
fn grow_bounded(buf: &mut Vec<u8>, extra: usize, max: usize) {
    let need = buf.len() + extra;
    if need > buf.capacity() {
        let target = need.max(buf.capacity() * 2).max(256).min(max.max(need));
        buf.reserve_exact(target - buf.len());
    }
}
