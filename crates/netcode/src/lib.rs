//! tickwire-netcode: netcode.io 1.02, byte for byte, sans-IO.
//!
//! Connect tokens ([`generate_connect_token`], [`ConnectTokenPublic`]), the packet codec
//! ([`packet`]), AEAD ([`crypto`]), the replay window ([`replay`]) and the [`Server`] and
//! [`Client`] state machines. Nothing here opens a socket or reads a clock: callers pass the
//! current time as [`Now`], hand in received packets, and get packets out through a
//! `tx(peer, bytes)` callback and events through an `on_event` callback.
//!
//! The server names every remote end with a [`Peer`]: its address plus the link the packets
//! travel on (a UDP socket, or one TCP or WebSocket connection). Sessions, pending handshakes
//! and connect-token history key on the whole `Peer`, so a player on TCP and one on UDP from
//! the same address are different remote ends, and a reply always goes back on the link the
//! request came from.
//!
//! Constants and timings follow the reference implementation (netcode.c): 10 Hz handshake
//! resends and keep-alives, 10 redundant disconnect packets, 300-byte challenge tokens,
//! a 256-entry replay window, challenge/denied packets sent with a `1 << 63` global sequence.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub mod client;
pub mod crypto;
#[doc(hidden)]
pub mod fuzzing;
pub mod packet;
pub mod reasons;
pub mod replay;
pub mod server;
pub mod token;

pub use client::{Client, ClientEvent, ClientState};
pub use reasons::{DenyReason, DisconnectReason, DropReason, ServerStats};
pub use server::{SendError, Server, ServerConfig, ServerEvent, MAX_PUBLIC_ADDRS};
pub use token::{
    build_connect_token, generate_connect_token, ConnectTokenPrivate, ConnectTokenPublic,
    TokenError, TokenParams,
};

/// Version info at the start of tokens, requests and every AAD.
pub const VERSION_INFO: [u8; 13] = *b"NETCODE 1.02\0";
/// Size of a connect token.
pub const CONNECT_TOKEN_BYTES: usize = 2048;
/// Size of the encrypted private part of a connect token.
pub const CONNECT_TOKEN_PRIVATE_BYTES: usize = 1024;
/// Largest payload sent or accepted.
pub const MAX_PAYLOAD_BYTES: usize = 1200;
/// Largest datagram accepted (some clients send 1300-byte payloads; those are dropped as
/// `TooLarge`, but the datagram is still read and counted).
pub const MAX_PACKET_BYTES: usize = 1400;
/// Size of every symmetric key.
pub const KEY_BYTES: usize = 32;
/// Size of the connect token user data.
pub const USER_DATA_BYTES: usize = 256;

/// A symmetric key.
pub type Key = [u8; KEY_BYTES];

/// The current time, passed into every call. `mono` is monotonic time since some fixed start;
/// `unix_secs` is wall-clock time, used only for connect-token expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Duration,
    /// Unix time in seconds.
    pub unix_secs: u64,
}

/// A remote end of the server: the address packets come from, and the link they travel on.
///
/// `link` is the transport's name for the path, opaque to netcode: [`Peer::DATAGRAM`] (0) for
/// the UDP game socket, anything else for one stream connection (the server uses 1 + the I/O
/// layer's connection handle, which carries a generation, so a link is never reused while
/// netcode may still remember it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// The link: [`Peer::DATAGRAM`] or a stream connection.
    pub link: u64,
}

impl Peer {
    /// The link of the UDP game socket.
    pub const DATAGRAM: u64 = 0;

    /// A peer on the UDP game socket.
    pub const fn udp(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            link: Peer::DATAGRAM,
        }
    }

    /// Whether this peer is on the UDP game socket.
    pub const fn is_datagram(&self) -> bool {
        self.link == Peer::DATAGRAM
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer::udp(addr)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_datagram() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} (link {})", self.addr, self.link)
        }
    }
}

/// A random key from the OS random source.
pub fn random_key() -> Key {
    let mut k = [0u8; KEY_BYTES];
    crypto::fill_random(&mut k);
    k
}
