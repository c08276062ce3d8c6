//! tickwire-stream: netcode packets over byte streams, sans-IO.
//!
//! Two framings of the same netcode.io 1.02 packets on the game port's TCP listener:
//!
//! - **TCP**: each packet behind a 2-byte little-endian length.
//! - **WebSocket** (RFC 6455): an HTTP/1.1 `GET` Upgrade, then one packet per binary message.
//!
//! The server side is [`StreamConn`], one per accepted connection. It tells the two apart from
//! the first bytes (`GE`, the start of `GET `, would be a TCP length of 17 735, over any
//! allowed frame, so the choice is never ambiguous), answers the WebSocket handshake, and turns
//! bytes that arrive at arbitrary boundaries into whole packets:
//!
//! ```
//! use tickwire_stream::{Limits, StreamConn, Transport};
//!
//! let mut conn = StreamConn::new(Limits::default());
//! let mut reply = Vec::new();
//! let mut packets = Vec::new();
//! // Two TCP frames, the second split across reads.
//! conn.feed(&[3, 0, 1, 2, 3, 2, 0, 9], &mut reply, &mut |p| packets.push(p.to_vec())).unwrap();
//! conn.feed(&[9], &mut reply, &mut |p| packets.push(p.to_vec())).unwrap();
//! assert_eq!(packets, [vec![1, 2, 3], vec![9, 9]]);
//! assert_eq!(conn.transport(), Some(Transport::Tcp));
//! assert!(reply.is_empty());
//!
//! // The server's own packets, framed for this connection.
//! let mut out = Vec::new();
//! conn.encode(&[7, 7], &mut out).unwrap();
//! assert_eq!(out, [2, 0, 7, 7]);
//! ```
//!
//! The client side is [`ClientConn`] (TCP framing, or the WebSocket client: the request from
//! [`ws_client_request`], the `101` and its accept hash checked, masked frames out).
//!
//! # Why not tungstenite
//!
//! tungstenite (the well-kept Rust WebSocket crate) drives a `Read + Write` stream it owns: its
//! non-blocking mode surfaces `WouldBlock` from inside its own buffering, it allocates a
//! message per frame, and its handshake wants the whole stream. Tickwire's backends own the
//! sockets and lend bytes per event (io_uring lends ring buffers), so the codec must be fed
//! bytes and hand back bytes, with a bound on what it holds. What is left to write by hand is
//! small and fully specified (RFC 6455 §4.2 handshake checks, §5 framing), tested against the
//! RFC's examples and fuzzed; the hash is `sha1_smol` and base64 the `base64` crate, so no
//! cryptography or encoding is hand-written.
//!
//! Nothing here reads a clock or a socket: a connection that never finishes its handshake is
//! the caller's to time out. Memory per connection is bounded by [`Limits`] whatever the
//! input: the reassembly buffer holds at most one frame of `max_packet` bytes (or, before
//! a WebSocket handshake is done, `max_handshake` bytes of request head). Replies stay small:
//! on the server a pong or close echo is shorter than the masked frame that caused it, and a
//! violation adds at most one 4-byte close frame or one short HTTP error response.
//!
//! Framing carries packets and judges nothing else: an empty TCP frame or empty binary
//! message is handed on as an empty packet, for netcode to drop.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod http;
mod server;
mod tcp;
mod ws;

use std::fmt;

pub use client::{random_ws_key, ws_client_request, ClientConn};
pub use http::websocket_accept;
pub use server::StreamConn;

/// The WebSocket subprotocol a Tickwire client offers (`Sec-WebSocket-Protocol`); the server
/// echoes it when offered and omits the header otherwise.
pub const SUBPROTOCOL: &str = "tickwire.netcode";

/// Bytes of the TCP length prefix.
pub const TCP_HEADER_BYTES: usize = 2;

/// The largest `max_packet` a [`Limits`] can carry: one below `0x4547`, the TCP length that
/// the bytes `GE` (the start of `GET `) read as, so a TCP stream can never be taken for HTTP.
/// Larger values are lowered to this.
pub const MAX_PACKET_CAP: usize = 0x4546;

/// The smallest `max_handshake` a [`Limits`] can carry (smaller values are raised to it).
pub const MIN_HANDSHAKE: usize = 64;

/// WebSocket close status codes this crate sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error: unmasked client frame, reserved bits, unknown opcode, bad
    /// fragmentation, a malformed control frame.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A data type the endpoint cannot accept (a text frame).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message too big to process (over `max_packet`).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// Per-connection bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest packet carried, in bytes (a TCP frame's length, a WebSocket message's total
    /// payload over all its fragments). Default 1400, netcode's largest datagram. At most
    /// [`MAX_PACKET_CAP`].
    pub max_packet: usize,
    /// Largest HTTP head (request on the server, response on the client), in bytes,
    /// including the blank line that ends it. Default 4096. At least [`MIN_HANDSHAKE`].
    pub max_handshake: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet: 1400,
            max_handshake: 4096,
        }
    }
}

impl Limits {
    /// `max_packet` lowered to [`MAX_PACKET_CAP`], `max_handshake` raised to
    /// [`MIN_HANDSHAKE`].
    pub(crate) fn clamped(self) -> Limits {
        Limits {
            max_packet: self.max_packet.min(MAX_PACKET_CAP),
            max_handshake: self.max_handshake.max(MIN_HANDSHAKE),
        }
    }
}

/// Which framing a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// 2-byte little-endian length, then the packet.
    Tcp,
    /// RFC 6455, one packet per binary message.
    WebSocket,
}

impl Transport {
    /// `tcp` or `websocket`, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Why a connection must be closed. The caller sends whatever `feed` appended to its reply
/// buffer (an HTTP error response or a WebSocket close frame), then closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Violation {
    /// A TCP frame or WebSocket message over `max_packet` (WebSocket: close 1009).
    OversizedFrame,
    /// A malformed WebSocket frame: reserved bits, unknown opcode, a continuation with no
    /// message open or a new message inside an open one, a fragmented or over-125-byte
    /// control frame, a 64-bit length with its top bit set (close 1002).
    BadFrame,
    /// The HTTP head is not an acceptable WebSocket upgrade (server: answered 400 or 426;
    /// client: the server's answer was not a valid `101`).
    BadHandshake,
    /// No end of the HTTP head within `max_handshake` bytes (server: answered 431).
    HandshakeTooLarge,
    /// A client frame without a mask (close 1002).
    UnmaskedFrame,
    /// A server frame with a mask (client side; close 1002).
    MaskedFrame,
    /// A WebSocket text message: netcode packets are binary (close 1003).
    TextFrame,
    /// The peer sent a WebSocket close frame (echoed in the reply).
    PeerClose,
    /// Client side: no random masking key could be had from the OS.
    NoRandom,
}

impl Violation {
    /// Every violation, in declaration order (for registering metric labels up front).
    pub const ALL: [Violation; 9] = [
        Violation::OversizedFrame,
        Violation::BadFrame,
        Violation::BadHandshake,
        Violation::HandshakeTooLarge,
        Violation::UnmaskedFrame,
        Violation::MaskedFrame,
        Violation::TextFrame,
        Violation::PeerClose,
        Violation::NoRandom,
    ];

    /// A short, fixed label for metrics (`oversized_frame`, `bad_frame`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::OversizedFrame => "oversized_frame",
            Violation::BadFrame => "bad_frame",
            Violation::BadHandshake => "bad_handshake",
            Violation::HandshakeTooLarge => "handshake_too_large",
            Violation::UnmaskedFrame => "unmasked_frame",
            Violation::MaskedFrame => "masked_frame",
            Violation::TextFrame => "text_frame",
            Violation::PeerClose => "peer_close",
            Violation::NoRandom => "no_random",
        }
    }

    /// The WebSocket close code sent for it, if a close frame is sent (`PeerClose` echoes the
    /// peer's code instead).
    pub fn close_code(self) -> Option<u16> {
        match self {
            Violation::OversizedFrame => Some(close_code::MESSAGE_TOO_BIG),
            Violation::BadFrame | Violation::UnmaskedFrame | Violation::MaskedFrame => {
                Some(close_code::PROTOCOL_ERROR)
            }
            Violation::TextFrame => Some(close_code::UNSUPPORTED_DATA),
            Violation::BadHandshake
            | Violation::HandshakeTooLarge
            | Violation::PeerClose
            | Violation::NoRandom => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Violation {}

/// Why a packet could not be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The transport is not known yet (server: no byte received) or the WebSocket handshake
    /// has not finished.
    NotEstablished,
    /// The connection is closing (a violation, a close frame sent or received).
    Closed,
    /// The packet is longer than `max_packet`.
    TooLarge,
    /// Client side: no random masking key could be had from the OS.
    NoRandom,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::NotEstablished => "stream not established",
            FrameError::Closed => "stream closing",
            FrameError::TooLarge => "packet larger than max_packet",
            FrameError::NoRandom => "no OS randomness for a masking key",
        })
    }
}

impl std::error::Error for FrameError {}
