//! The sans-IO netcode server: connection requests, challenge/response, sessions, keep-alives,
//! timeouts, replay protection. Time comes in as `Now`; packets go out through `tx`.
//!
//! Per-packet work does not allocate: the session table, pending-handshake table, connect
//! token history, retired-token table, recent-disconnect table and address maps are sized in
//! `Server::new`, and decryption happens in a scratch buffer owned by the server (payload
//! events borrow it).
//!
//! Hardening beyond netcode.c:
//! - **Spent tokens stay spent.** When a session ends (any reason) its connect token's MAC is
//!   remembered until the token expires, and a request or response carrying it is dropped as
//!   [`DropReason::TokenRetired`], so a captured handshake replayed from the old address cannot
//!   bring the session back. A client with a fresh token (new MAC) reconnects at once.
//! - **Idle ceiling.** A session (or pending handshake) silent for [`Server::max_idle`]
//!   (default [`DEFAULT_MAX_IDLE`]) times out even when its token says "no timeout" (`<= 0`)
//!   or a longer one.
//! - **Late packets after a disconnect** (the 9 redundant disconnect packets after the first,
//!   packets still in flight) are counted in [`ServerStats::late_after_disconnect`], not as
//!   `unknown_address` drops.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::packet::{self, Header, Packet, PacketType, CHALLENGE_BODY_BYTES};
use crate::replay::ReplayProtection;
use crate::token::{
    decrypt_challenge_token, encrypt_challenge_token, ConnectTokenPrivate, CHALLENGE_TOKEN_BYTES,
    CONNECT_TOKEN_NONCE_BYTES,
};
use crate::{
    DenyReason, DisconnectReason, DropReason, Key, Now, Peer, ServerStats,
    CONNECT_TOKEN_PRIVATE_BYTES, MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES, USER_DATA_BYTES,
};

/// Keep-alive / send interval (10 Hz, as netcode.c).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// Redundant disconnect packets sent on a deliberate disconnect (as netcode.c).
pub const NUM_DISCONNECT_PACKETS: usize = 10;
/// Sequence of the first packet sent outside a session (challenge, denied): the high bit keeps
/// these nonces apart from the session's own sequence under the same key (as netcode.c).
const GLOBAL_SEQUENCE_START: u64 = 1 << 63;

/// Most addresses [`Server::add_public_addr`] keeps.
pub const MAX_PUBLIC_ADDRS: usize = 16;

/// Default server-side ceiling on how long a session or pending handshake may stay silent
/// before it is timed out, whatever the connect token's timeout says (a token with
/// `timeout_secs <= 0` means "no timeout" in netcode.io). Change it with
/// [`Server::set_max_idle`].
pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(60);

/// Smallest value [`Server::set_max_idle`] accepts; smaller values are raised to this.
pub const MIN_MAX_IDLE: Duration = Duration::from_secs(1);

/// How long after a session ends (client disconnect packet or [`Server::disconnect`]) further
/// encrypted packets from its address are counted as
/// [`ServerStats::late_after_disconnect`] instead of [`DropReason::UnknownAddress`]. Sessions
/// that time out are not remembered: a timed-out peer that is still sending is worth a drop.
pub const RECENT_DISCONNECT_WINDOW: Duration = Duration::from_secs(5);

/// Server configuration. `Debug` redacts the private key.
#[derive(Clone)]
pub struct ServerConfig {
    /// Application protocol id; requests with another id are dropped.
    pub protocol_id: u64,
    /// Key shared with the web backend that issues connect tokens.
    pub private_key: Key,
    /// Client slots.
    pub max_clients: usize,
    /// The addresses clients reach this server at; a token must list one of them. An entry
    /// with an unspecified IP (0.0.0.0 or ::) matches any token address with the same port.
    pub public_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("protocol_id", &self.protocol_id)
            .field("private_key", &"<redacted>")
            .field("max_clients", &self.max_clients)
            .field("public_addrs", &self.public_addrs)
            .finish()
    }
}

/// Why `send_payload` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No connected client in that slot (or, client side, not connected).
    NotConnected,
    /// Payload over `MAX_PAYLOAD_BYTES`.
    TooLarge,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotConnected => f.write_str("not connected"),
            SendError::TooLarge => write!(f, "payload larger than {MAX_PAYLOAD_BYTES} bytes"),
        }
    }
}

impl std::error::Error for SendError {}

/// What the server reports from `handle_packet` and `update`.
#[derive(Debug)]
pub enum ServerEvent<'a> {
    /// A client completed the handshake and occupies slot `client`.
    Connected {
        /// Slot index.
        client: usize,
        /// Client id from the connect token.
        client_id: u64,
        /// Where the client is: address and link.
        peer: Peer,
        /// User data from the connect token.
        user_data: &'a [u8; USER_DATA_BYTES],
    },
    /// A payload from a connected client (borrowed from the server's decrypt scratch).
    Payload {
        /// Slot index.
        client: usize,
        /// Payload bytes (1..=1200).
        data: &'a [u8],
    },
    /// A session ended (not reported for `disconnect`/`disconnect_all`: the caller knows).
    Disconnected {
        /// Slot index.
        client: usize,
        /// Why.
        reason: DisconnectReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Connected(usize),
    Pending(usize),
}

struct Session {
    connected: bool,
    confirmed: bool,
    client_id: u64,
    addr: Peer,
    user_data: [u8; USER_DATA_BYTES],
    c2s: Key,
    s2c: Key,
    timeout: Option<Duration>,
    sequence: u64,
    last_recv: Duration,
    last_send: Duration,
    replay: ReplayProtection,
    /// MAC and expiry of the connect token the session was opened with (retired on end).
    token_mac: [u8; 16],
    token_expire_unix_secs: u64,
}

#[derive(Clone, Copy)]
struct Pending {
    in_use: bool,
    addr: Peer,
    /// MAC of the connect token this handshake came with.
    mac: [u8; 16],
    c2s: Key,
    s2c: Key,
    timeout_secs: i32,
    expire_unix_secs: u64,
    last_recv: Duration,
}

#[derive(Clone, Copy)]
struct TokenEntry {
    used: bool,
    mac: [u8; 16],
    addr: Peer,
    time: Duration,
}

/// A connect token whose session has ended, remembered until it expires.
#[derive(Clone, Copy)]
struct RetiredToken {
    used: bool,
    mac: [u8; 16],
    expire_unix_secs: u64,
}

fn timeout_of(secs: i32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs as u64))
}

/// The token's timeout capped at `max_idle` (which also stands in for "no timeout").
fn effective_timeout(token_timeout: Option<Duration>, max_idle: Duration) -> Duration {
    token_timeout.map_or(max_idle, |t| t.min(max_idle))
}

impl Pending {
    fn expired(&self, now: Now, max_idle: Duration) -> bool {
        if now.unix_secs >= self.expire_unix_secs {
            return true;
        }
        let t = effective_timeout(timeout_of(self.timeout_secs), max_idle);
        now.mono >= self.last_recv.saturating_add(t)
    }
}

/// Passes a datagram to `tx` and counts it.
fn emit(stats: &mut ServerStats, tx: &mut dyn FnMut(Peer, &[u8]), to: Peer, b: &[u8]) {
    stats.packets_out += 1;
    stats.bytes_out += b.len() as u64;
    tx(to, b);
}

/// The netcode.io 1.02 server state machine.
pub struct Server {
    protocol_id: u64,
    private_key: Key,
    challenge_key: Key,
    public_addrs: Vec<SocketAddr>,
    accepting: bool,
    sessions: Vec<Session>,
    connected: usize,
    pending: Vec<Pending>,
    token_entries: Vec<TokenEntry>,
    retired: Vec<RetiredToken>,
    /// Recently ended sessions' addresses -> until when their late packets are benign.
    recent: HashMap<Peer, Duration>,
    /// The same entries in insertion order (may hold stale duplicates; never longer than
    /// `recent_cap`), for expiry and eviction.
    recent_order: VecDeque<(Peer, Duration)>,
    recent_cap: usize,
    max_idle: Duration,
    by_addr: HashMap<Peer, Slot>,
    by_id: HashMap<u64, usize>,
    challenge_sequence: u64,
    global_sequence: u64,
    stats: ServerStats,
    rx: Box<[u8; MAX_PACKET_BYTES]>,
    tx: Box<[u8; MAX_PACKET_BYTES]>,
    private_scratch: Box<[u8; CONNECT_TOKEN_PRIVATE_BYTES]>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("protocol_id", &self.protocol_id)
            .field("max_clients", &self.sessions.len())
            .field("connected", &self.connected)
            .field("accepting", &self.accepting)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Creates a server with a fresh random challenge key; all tables are allocated here.
    pub fn new(cfg: ServerConfig) -> Self {
        Self::with_challenge_key(cfg, crate::random_key())
    }

    pub(crate) fn with_challenge_key(cfg: ServerConfig, challenge_key: Key) -> Self {
        let max = cfg.max_clients;
        let unspecified = Peer::udp(SocketAddr::from(([0, 0, 0, 0], 0)));
        let sessions = (0..max)
            .map(|_| Session {
                connected: false,
                confirmed: false,
                client_id: 0,
                addr: unspecified,
                user_data: [0; USER_DATA_BYTES],
                c2s: [0; 32],
                s2c: [0; 32],
                timeout: None,
                sequence: 0,
                last_recv: Duration::ZERO,
                last_send: Duration::ZERO,
                replay: ReplayProtection::default(),
                token_mac: [0; 16],
                token_expire_unix_secs: 0,
            })
            .collect();
        let pending_cap = (max * 4).max(16);
        let pending = vec![
            Pending {
                in_use: false,
                addr: unspecified,
                mac: [0; 16],
                c2s: [0; 32],
                s2c: [0; 32],
                timeout_secs: 0,
                expire_unix_secs: 0,
                last_recv: Duration::ZERO,
            };
            pending_cap
        ];
        let token_entries = vec![
            TokenEntry {
                used: false,
                mac: [0; 16],
                addr: unspecified,
                time: Duration::ZERO
            };
            (max * 8).max(64)
        ];
        let retired = vec![
            RetiredToken {
                used: false,
                mac: [0; 16],
                expire_unix_secs: 0,
            };
            retired_capacity(max)
        ];
        let recent_cap = (max * 2).max(64);
        Self {
            protocol_id: cfg.protocol_id,
            private_key: cfg.private_key,
            challenge_key,
            public_addrs: cfg.public_addrs,
            accepting: true,
            sessions,
            connected: 0,
            pending,
            token_entries,
            retired,
            recent: HashMap::with_capacity(2 * recent_cap),
            recent_order: VecDeque::with_capacity(recent_cap),
            recent_cap,
            max_idle: DEFAULT_MAX_IDLE,
            // Twice the live maximum, so churn rehashes in place instead of growing.
            by_addr: HashMap::with_capacity(2 * (max + pending_cap)),
            by_id: HashMap::with_capacity(2 * max),
            challenge_sequence: 0,
            global_sequence: GLOBAL_SEQUENCE_START,
            stats: ServerStats::default(),
            rx: Box::new([0; MAX_PACKET_BYTES]),
            tx: Box::new([0; MAX_PACKET_BYTES]),
            private_scratch: Box::new([0; CONNECT_TOKEN_PRIVATE_BYTES]),
        }
    }

    fn drop_packet(&mut self, r: DropReason) {
        self.stats.drops[r.index()] += 1;
    }

    /// Processes one datagram from `from`.
    pub fn handle_packet(
        &mut self,
        now: Now,
        from: Peer,
        packet: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
        on_event: &mut dyn FnMut(ServerEvent<'_>),
    ) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        let result = match packet.first() {
            None => Err(DropReason::TooSmall),
            Some(_) if packet.len() > MAX_PACKET_BYTES => Err(DropReason::TooLarge),
            Some(0) => self.process_request(now, from, packet, tx),
            Some(_) => self.process_encrypted(now, from, packet, tx, on_event),
        };
        if let Err(r) = result {
            self.drop_packet(r);
        }
    }

    fn is_our_address(&self, tok: &ConnectTokenPrivate) -> bool {
        tok.server_addrs().iter().any(|t| {
            self.public_addrs
                .iter()
                .any(|p| p.port() == t.port() && (p.ip() == t.ip() || p.ip().is_unspecified()))
        })
    }

    fn process_request(
        &mut self,
        now: Now,
        from: Peer,
        packet: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) -> Result<(), DropReason> {
        let Packet::Request {
            expire_unix_secs,
            nonce,
            private_data,
            ..
        } = packet::read_request(packet, self.protocol_id)?
        else {
            return Err(DropReason::BadRequest);
        };
        if expire_unix_secs <= now.unix_secs {
            return Err(DropReason::TokenExpired);
        }
        let nonce: [u8; CONNECT_TOKEN_NONCE_BYTES] = nonce;
        self.private_scratch.copy_from_slice(private_data);
        let tok = ConnectTokenPrivate::decrypt_in_place(
            &mut self.private_scratch,
            self.protocol_id,
            expire_unix_secs,
            &nonce,
            &self.private_key,
        )
        .map_err(|_| DropReason::TokenInvalid)?;
        if !self.is_our_address(&tok) {
            return Err(DropReason::TokenWrongServer);
        }
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&private_data[CONNECT_TOKEN_PRIVATE_BYTES - 16..]);
        if self.is_retired(&mac, now.unix_secs) {
            return Err(DropReason::TokenRetired);
        }
        if matches!(self.by_addr.get(&from), Some(Slot::Connected(_))) {
            return Err(DropReason::AlreadyConnected);
        }
        if self.by_id.contains_key(&tok.client_id) {
            return Err(DropReason::AlreadyConnected);
        }
        if !self.token_entry_find_or_add(now, &mac, from) {
            return Err(DropReason::TokenReused);
        }
        if !self.accepting {
            self.send_denied(
                from,
                &tok.server_to_client_key,
                DenyReason::NotAccepting,
                tx,
            );
            return Ok(());
        }
        if self.connected >= self.sessions.len() {
            self.send_denied(from, &tok.server_to_client_key, DenyReason::ServerFull, tx);
            return Ok(());
        }
        self.add_pending(now, from, &tok, &mac, expire_unix_secs);

        let token = encrypt_challenge_token(
            tok.client_id,
            &tok.user_data,
            self.challenge_sequence,
            &self.challenge_key,
        );
        let mut body = [0u8; CHALLENGE_BODY_BYTES];
        body[..8].copy_from_slice(&self.challenge_sequence.to_le_bytes());
        body[8..].copy_from_slice(&token);
        self.challenge_sequence += 1;
        self.send_global(
            from,
            PacketType::ConnectionChallenge,
            &body,
            &tok.server_to_client_key,
            tx,
        );
        Ok(())
    }

    /// netcode.c's connect token history: the same token MAC from a different address is
    /// refused; otherwise the entry is recorded, replacing the oldest.
    fn token_entry_find_or_add(&mut self, now: Now, mac: &[u8; 16], from: Peer) -> bool {
        let mut oldest = 0;
        // Unused entries (None) sort before used ones (Some(time)).
        let mut oldest_key: Option<Option<Duration>> = None;
        for (i, e) in self.token_entries.iter_mut().enumerate() {
            if e.used && e.mac == *mac {
                if e.addr != from {
                    return false;
                }
                e.time = now.mono;
                return true;
            }
            let key = e.used.then_some(e.time);
            if oldest_key.is_none_or(|k| key < k) {
                oldest = i;
                oldest_key = Some(key);
            }
        }
        self.token_entries[oldest] = TokenEntry {
            used: true,
            mac: *mac,
            addr: from,
            time: now.mono,
        };
        true
    }

    /// Whether the token with this MAC belongs to a session that ended (and has not expired).
    fn is_retired(&self, mac: &[u8; 16], now_unix_secs: u64) -> bool {
        self.retired
            .iter()
            .any(|r| r.used && r.mac == *mac && r.expire_unix_secs > now_unix_secs)
    }

    /// Remembers an ended session's token until it expires. The table has a fixed capacity
    /// (see [`retired_capacity`]); when it is full the entry whose token expires first is
    /// replaced (an already expired one if any). A token evicted that way while still valid
    /// could again open one session from its original address (the exposure plain netcode.io
    /// has); that takes more sessions ending within one token lifetime than the table holds.
    fn retire_token(&mut self, mac: &[u8; 16], expire_unix_secs: u64) {
        // The same MAC's entry, else a free one, else the one expiring first (unused
        // entries sort first as `None`).
        let mut pick = 0;
        let mut soonest: Option<Option<u64>> = None;
        for (i, r) in self.retired.iter().enumerate() {
            if r.used && r.mac == *mac {
                pick = i;
                break;
            }
            let key = r.used.then_some(r.expire_unix_secs);
            if soonest.is_none_or(|k| key < k) {
                pick = i;
                soonest = Some(key);
            }
        }
        self.retired[pick] = RetiredToken {
            used: true,
            mac: *mac,
            expire_unix_secs,
        };
    }

    /// Remembers `addr` as recently disconnected until `now + RECENT_DISCONNECT_WINDOW`,
    /// forgetting the oldest entry when the table is full.
    fn remember_recent(&mut self, addr: Peer, now: Duration) {
        let until = now.saturating_add(RECENT_DISCONNECT_WINDOW);
        if self.recent_order.len() >= self.recent_cap {
            if let Some((old, t)) = self.recent_order.pop_front() {
                if self.recent.get(&old) == Some(&t) {
                    self.recent.remove(&old);
                }
            }
        }
        self.recent_order.push_back((addr, until));
        self.recent.insert(addr, until);
    }

    fn expire_recent(&mut self, now: Duration) {
        while let Some(&(addr, until)) = self.recent_order.front() {
            if until > now {
                break;
            }
            self.recent_order.pop_front();
            if self.recent.get(&addr) == Some(&until) {
                self.recent.remove(&addr);
            }
        }
    }

    fn add_pending(
        &mut self,
        now: Now,
        from: Peer,
        tok: &ConnectTokenPrivate,
        mac: &[u8; 16],
        expire: u64,
    ) {
        let entry = Pending {
            in_use: true,
            addr: from,
            mac: *mac,
            c2s: tok.client_to_server_key,
            s2c: tok.server_to_client_key,
            timeout_secs: tok.timeout_secs,
            expire_unix_secs: expire,
            last_recv: now.mono,
        };
        if let Some(Slot::Pending(i)) = self.by_addr.get(&from) {
            self.pending[*i] = entry;
            return;
        }
        // A free or expired entry, else evict the least recently heard-from one.
        let mut pick = 0;
        let mut best: Option<Duration> = None;
        for (i, p) in self.pending.iter().enumerate() {
            if !p.in_use || p.expired(now, self.max_idle) {
                pick = i;
                break;
            }
            if best.is_none_or(|b| p.last_recv < b) {
                pick = i;
                best = Some(p.last_recv);
            }
        }
        let old = self.pending[pick];
        if old.in_use {
            self.by_addr.remove(&old.addr);
        }
        self.pending[pick] = entry;
        self.by_addr.insert(from, Slot::Pending(pick));
    }

    fn remove_pending(&mut self, i: usize) {
        let p = &mut self.pending[i];
        if p.in_use {
            p.in_use = false;
            let addr = p.addr;
            if self.by_addr.get(&addr) == Some(&Slot::Pending(i)) {
                self.by_addr.remove(&addr);
            }
        }
    }

    fn send_global(
        &mut self,
        to: Peer,
        kind: PacketType,
        body: &[u8],
        key: &Key,
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) {
        let n = packet::seal(
            kind,
            self.global_sequence,
            body,
            self.protocol_id,
            key,
            &mut self.tx[..],
        );
        self.global_sequence = self.global_sequence.wrapping_add(1) | GLOBAL_SEQUENCE_START;
        emit(&mut self.stats, tx, to, &self.tx[..n]);
    }

    fn send_denied(
        &mut self,
        to: Peer,
        key: &Key,
        reason: DenyReason,
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) {
        self.stats.denies[reason.index()] += 1;
        self.send_global(to, PacketType::ConnectionDenied, &[], key, tx);
    }

    fn send_session(
        &mut self,
        idx: usize,
        now: Now,
        kind: PacketType,
        body: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) {
        let s = &mut self.sessions[idx];
        let n = packet::seal(
            kind,
            s.sequence,
            body,
            self.protocol_id,
            &s.s2c,
            &mut self.tx[..],
        );
        s.sequence += 1;
        s.last_send = now.mono;
        emit(&mut self.stats, tx, s.addr, &self.tx[..n]);
    }

    fn send_keep_alive(&mut self, idx: usize, now: Now, tx: &mut dyn FnMut(Peer, &[u8])) {
        let mut body = [0u8; 8];
        body[..4].copy_from_slice(&(idx as u32).to_le_bytes());
        body[4..].copy_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        self.send_session(idx, now, PacketType::KeepAlive, &body, tx);
    }

    fn process_encrypted(
        &mut self,
        now: Now,
        from: Peer,
        packet: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
        on_event: &mut dyn FnMut(ServerEvent<'_>),
    ) -> Result<(), DropReason> {
        let h = packet::parse_header(packet)?;
        match h.kind {
            PacketType::ConnectionResponse
            | PacketType::KeepAlive
            | PacketType::Payload
            | PacketType::Disconnect => {}
            _ => return Err(DropReason::UnexpectedType),
        }
        match self.by_addr.get(&from).copied() {
            None => {
                // Only the header was parsed: nothing is decrypted for a late packet.
                if self
                    .recent
                    .get(&from)
                    .is_some_and(|&until| now.mono < until)
                {
                    self.stats.late_after_disconnect += 1;
                    return Ok(());
                }
                Err(DropReason::UnknownAddress)
            }
            Some(Slot::Pending(i)) => {
                if self.pending[i].expired(now, self.max_idle) {
                    self.remove_pending(i);
                    return Err(DropReason::UnknownAddress);
                }
                if h.kind != PacketType::ConnectionResponse {
                    return Err(DropReason::UnexpectedType);
                }
                self.process_response(now, from, i, &h, packet, tx, on_event)
            }
            Some(Slot::Connected(idx)) => {
                if h.kind == PacketType::ConnectionResponse {
                    return Err(DropReason::AlreadyConnected);
                }
                self.process_session_packet(now, idx, &h, packet, on_event)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn process_response(
        &mut self,
        now: Now,
        from: Peer,
        pidx: usize,
        h: &Header,
        packet: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
        on_event: &mut dyn FnMut(ServerEvent<'_>),
    ) -> Result<(), DropReason> {
        let pending = self.pending[pidx];
        let n = packet::open(h, packet, self.protocol_id, &pending.c2s, &mut self.rx[..])?;
        let Packet::Response {
            challenge_sequence,
            token,
        } = packet::parse_body(h.kind, &self.rx[..n])
        else {
            return Err(DropReason::Malformed);
        };
        let token: [u8; CHALLENGE_TOKEN_BYTES] = *token;
        let (client_id, user_data) =
            decrypt_challenge_token(&token, challenge_sequence, &self.challenge_key)
                .ok_or(DropReason::ChallengeInvalid)?;
        self.pending[pidx].last_recv = now.mono;
        if self.is_retired(&pending.mac, now.unix_secs) {
            self.remove_pending(pidx);
            return Err(DropReason::TokenRetired);
        }
        if self.by_id.contains_key(&client_id) {
            return Err(DropReason::AlreadyConnected);
        }
        if !self.accepting {
            self.send_denied(from, &pending.s2c, DenyReason::NotAccepting, tx);
            return Ok(());
        }
        let Some(idx) = self.sessions.iter().position(|s| !s.connected) else {
            self.send_denied(from, &pending.s2c, DenyReason::ServerFull, tx);
            return Ok(());
        };
        self.remove_pending(pidx);
        let s = &mut self.sessions[idx];
        s.connected = true;
        s.confirmed = false;
        s.client_id = client_id;
        s.addr = from;
        s.user_data = user_data;
        s.c2s = pending.c2s;
        s.s2c = pending.s2c;
        s.timeout = timeout_of(pending.timeout_secs);
        s.sequence = 0;
        s.last_recv = now.mono;
        s.last_send = now.mono;
        s.replay.reset();
        s.token_mac = pending.mac;
        s.token_expire_unix_secs = pending.expire_unix_secs;
        self.by_addr.insert(from, Slot::Connected(idx));
        self.by_id.insert(client_id, idx);
        self.connected += 1;
        self.stats.connects += 1;
        on_event(ServerEvent::Connected {
            client: idx,
            client_id,
            peer: from,
            user_data: &self.sessions[idx].user_data,
        });
        self.send_keep_alive(idx, now, tx);
        Ok(())
    }

    fn process_session_packet(
        &mut self,
        now: Now,
        idx: usize,
        h: &Header,
        packet: &[u8],
        on_event: &mut dyn FnMut(ServerEvent<'_>),
    ) -> Result<(), DropReason> {
        let s = &mut self.sessions[idx];
        if s.replay.already_received(h.sequence) {
            return Err(DropReason::Replayed);
        }
        let n = packet::open(h, packet, self.protocol_id, &s.c2s, &mut self.rx[..])?;
        s.replay.advance(h.sequence);
        s.last_recv = now.mono;
        match h.kind {
            PacketType::KeepAlive => {
                // The contents are ignored: some clients send index 0 / max clients 0.
                s.confirmed = true;
            }
            PacketType::Payload => {
                s.confirmed = true;
                on_event(ServerEvent::Payload {
                    client: idx,
                    data: &self.rx[..n],
                });
            }
            PacketType::Disconnect => {
                self.reset_session(idx, Some(now.mono));
                on_event(ServerEvent::Disconnected {
                    client: idx,
                    reason: DisconnectReason::ClientDisconnected,
                });
            }
            _ => return Err(DropReason::UnexpectedType),
        }
        Ok(())
    }

    /// Frees slot `idx` and retires its token. With `remember_addr_at`, the address is
    /// remembered as recently disconnected from that time on.
    fn reset_session(&mut self, idx: usize, remember_addr_at: Option<Duration>) {
        let s = &mut self.sessions[idx];
        if !s.connected {
            return;
        }
        s.connected = false;
        s.confirmed = false;
        s.c2s = [0; 32];
        s.s2c = [0; 32];
        let (addr, id) = (s.addr, s.client_id);
        let (mac, expire) = (s.token_mac, s.token_expire_unix_secs);
        self.retire_token(&mac, expire);
        if let Some(at) = remember_addr_at {
            self.remember_recent(addr, at);
        }
        if self.by_addr.get(&addr) == Some(&Slot::Connected(idx)) {
            self.by_addr.remove(&addr);
        }
        self.by_id.remove(&id);
        self.connected -= 1;
        self.stats.disconnects += 1;
    }

    /// Sends keep-alives to clients that were sent nothing for 100 ms, times out clients
    /// silent for their token's timeout or [`Server::max_idle`], whichever is shorter (a
    /// token timeout `<= 0` leaves only `max_idle`), and expires stale pending handshakes.
    pub fn update(
        &mut self,
        now: Now,
        tx: &mut dyn FnMut(Peer, &[u8]),
        on_event: &mut dyn FnMut(ServerEvent<'_>),
    ) {
        for idx in 0..self.sessions.len() {
            let s = &self.sessions[idx];
            if !s.connected {
                continue;
            }
            let t = effective_timeout(s.timeout, self.max_idle);
            if now.mono >= s.last_recv.saturating_add(t) {
                self.reset_session(idx, None);
                on_event(ServerEvent::Disconnected {
                    client: idx,
                    reason: DisconnectReason::TimedOut,
                });
                continue;
            }
            if now.mono >= s.last_send.saturating_add(KEEP_ALIVE_INTERVAL) {
                self.send_keep_alive(idx, now, tx);
            }
        }
        for i in 0..self.pending.len() {
            if self.pending[i].in_use && self.pending[i].expired(now, self.max_idle) {
                self.remove_pending(i);
            }
        }
        self.expire_recent(now.mono);
    }

    /// Encrypts and sends a payload (1..=1200 bytes) to `client`. While the client is
    /// unconfirmed a keep-alive is sent just before it. An empty payload sends nothing.
    pub fn send_payload(
        &mut self,
        now: Now,
        client: usize,
        payload: &[u8],
        tx: &mut dyn FnMut(Peer, &[u8]),
    ) -> Result<(), SendError> {
        if !self.is_connected(client) {
            return Err(SendError::NotConnected);
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SendError::TooLarge);
        }
        if payload.is_empty() {
            return Ok(());
        }
        if !self.sessions[client].confirmed {
            self.send_keep_alive(client, now, tx);
        }
        self.send_session(client, now, PacketType::Payload, payload, tx);
        Ok(())
    }

    /// Sends 10 redundant disconnect packets to `client` and frees its slot. No event.
    pub fn disconnect(&mut self, client: usize, tx: &mut dyn FnMut(Peer, &[u8])) {
        if !self.is_connected(client) {
            return;
        }
        let now = Now {
            mono: self.sessions[client].last_send,
            unix_secs: 0,
        };
        for _ in 0..NUM_DISCONNECT_PACKETS {
            self.send_session(client, now, PacketType::Disconnect, &[], tx);
        }
        self.reset_session(client, Some(now.mono));
    }

    /// The link under `peer` is gone (its stream connection closed): the session on it ends
    /// now, without disconnect packets (nothing is left to carry them), reported as
    /// `Disconnected { reason: LinkClosed }`; a pending handshake on it is forgotten. Returns
    /// whether a session ended.
    pub fn link_closed(&mut self, peer: Peer, on_event: &mut dyn FnMut(ServerEvent<'_>)) -> bool {
        match self.by_addr.get(&peer).copied() {
            Some(Slot::Connected(idx)) => {
                self.reset_session(idx, None);
                on_event(ServerEvent::Disconnected {
                    client: idx,
                    reason: DisconnectReason::LinkClosed,
                });
                true
            }
            Some(Slot::Pending(i)) => {
                self.remove_pending(i);
                false
            }
            None => false,
        }
    }

    /// `disconnect` for every connected client.
    pub fn disconnect_all(&mut self, tx: &mut dyn FnMut(Peer, &[u8])) {
        for i in 0..self.sessions.len() {
            self.disconnect(i, tx);
        }
    }

    /// Also accepts connect tokens naming `addr` (an address learned after start, e.g. the host
    /// port an orchestrator allocated). At most [`MAX_PUBLIC_ADDRS`] addresses are kept;
    /// returns `false` when the list is full.
    pub fn add_public_addr(&mut self, addr: SocketAddr) -> bool {
        if self.public_addrs.contains(&addr) {
            return true;
        }
        if self.public_addrs.len() >= MAX_PUBLIC_ADDRS {
            return false;
        }
        self.public_addrs.push(addr);
        true
    }

    /// `false`: authenticated connection requests (and responses) get a denied packet,
    /// counted as `DenyReason::NotAccepting`. Connected clients are unaffected.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// Whether new connections are accepted.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// Sets the server-side ceiling on idle time (default [`DEFAULT_MAX_IDLE`]): a session or
    /// pending handshake that sends nothing for this long is timed out even if its connect
    /// token's timeout is longer or disabled (`timeout_secs <= 0`). Values below
    /// [`MIN_MAX_IDLE`] are raised to it. Applies to existing sessions from the next `update`.
    pub fn set_max_idle(&mut self, max_idle: Duration) {
        self.max_idle = max_idle.max(MIN_MAX_IDLE);
    }

    /// The server-side idle ceiling (see [`Server::set_max_idle`]).
    pub fn max_idle(&self) -> Duration {
        self.max_idle
    }

    /// Connected clients.
    pub fn connected_clients(&self) -> usize {
        self.connected
    }

    /// Client slots.
    pub fn max_clients(&self) -> usize {
        self.sessions.len()
    }

    /// Whether slot `client` holds a connected client.
    pub fn is_connected(&self, client: usize) -> bool {
        self.sessions.get(client).is_some_and(|s| s.connected)
    }

    /// Where the client in slot `client` is: its address and the link it uses.
    pub fn client_peer(&self, client: usize) -> Option<Peer> {
        self.sessions
            .get(client)
            .filter(|s| s.connected)
            .map(|s| s.addr)
    }

    /// The slot of the client connected on `peer`, if any.
    pub fn client_on(&self, peer: Peer) -> Option<usize> {
        match self.by_addr.get(&peer) {
            Some(Slot::Connected(idx)) => Some(*idx),
            _ => None,
        }
    }

    /// Client id of the client in slot `client`.
    pub fn client_id(&self, client: usize) -> Option<u64> {
        self.sessions
            .get(client)
            .filter(|s| s.connected)
            .map(|s| s.client_id)
    }

    /// Counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }
}

/// Capacity of the retired-token table for `max_clients` slots: eight ended sessions per
/// slot within one token lifetime (64 at least), like the connect token history.
fn retired_capacity(max_clients: usize) -> usize {
    (max_clients * 8).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{build_connect_token, ConnectTokenPublic, TokenParams};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn peer(port: u16) -> Peer {
        Peer::udp(addr(port))
    }

    #[test]
    fn retired_token_in_a_pending_response_is_refused() {
        let server_addr = addr(40000);
        let cfg = ServerConfig {
            protocol_id: 9,
            private_key: [1; 32],
            max_clients: 2,
            public_addrs: vec![server_addr],
        };
        let mut s = Server::with_challenge_key(cfg, [2; 32]);
        let now = Now {
            mono: Duration::from_secs(1),
            unix_secs: 1_000,
        };
        let tok = build_connect_token(
            &TokenParams {
                protocol_id: 9,
                client_id: 5,
                create_unix_secs: 1_000,
                expire_secs: 60,
                timeout_secs: 5,
                server_addrs: &[server_addr],
                user_data: [0; USER_DATA_BYTES],
                private_key: &[1; 32],
            },
            [3; 24],
            [4; 32],
            [5; 32],
        )
        .unwrap_or_else(|_| unreachable!());
        let public = ConnectTokenPublic::read(&tok).unwrap_or_else(|_| unreachable!());
        let mut buf = [0u8; MAX_PACKET_BYTES];
        let n = packet::encode(
            &Packet::Request {
                protocol_id: 9,
                expire_unix_secs: public.expire_unix_secs,
                nonce: public.nonce,
                private_data: &public.private_data,
            },
            0,
            9,
            &[0; 32],
            &mut buf,
        )
        .unwrap_or_else(|_| unreachable!());
        let mut challenge = Vec::new();
        let from = peer(50000);
        s.handle_packet(
            now,
            from,
            &buf[..n],
            &mut |_, b| challenge = b.to_vec(),
            &mut |_| {},
        );
        let mut scratch = [0u8; MAX_PACKET_BYTES];
        let d = packet::decode(&challenge, 9, &[5; 32], &mut scratch)
            .unwrap_or_else(|_| unreachable!());
        let Packet::Challenge {
            challenge_sequence,
            token,
        } = d.packet
        else {
            unreachable!()
        };
        let token = *token;
        let n = packet::encode(
            &Packet::Response {
                challenge_sequence,
                token: &token,
            },
            0,
            9,
            &[4; 32],
            &mut buf,
        )
        .unwrap_or_else(|_| unreachable!());
        // The token's session ended (elsewhere in time) while this handshake was pending.
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&public.private_data[CONNECT_TOKEN_PRIVATE_BYTES - 16..]);
        s.retire_token(&mac, public.expire_unix_secs);
        let mut sent = 0;
        let mut events = 0;
        s.handle_packet(now, from, &buf[..n], &mut |_, _| sent += 1, &mut |_| {
            events += 1
        });
        assert_eq!((sent, events), (0, 0));
        assert_eq!(s.stats().dropped(DropReason::TokenRetired), 1);
        assert_eq!(s.connected_clients(), 0);
    }

    #[test]
    fn retired_table_is_bounded_and_evicts_the_soonest_expiry() {
        let cfg = ServerConfig {
            protocol_id: 1,
            private_key: [1; 32],
            max_clients: 1,
            public_addrs: vec![],
        };
        let mut s = Server::with_challenge_key(cfg, [2; 32]);
        let cap = s.retired.len();
        assert_eq!(cap, retired_capacity(1));
        let mac = |i: usize| {
            let mut m = [0u8; 16];
            m[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            m
        };
        // Expiries 1000 + i: entry 0 expires first.
        for i in 0..cap {
            s.retire_token(&mac(i), 1_000 + i as u64);
        }
        assert!((0..cap).all(|i| s.is_retired(&mac(i), 500)));
        // Past its expiry a retired token no longer counts (it is refused as expired anyway).
        assert!(!s.is_retired(&mac(0), 1_000));
        // One more: the soonest-expiring entry (0) goes, the rest stay; the table never grows.
        s.retire_token(&mac(cap), 5_000);
        assert_eq!(s.retired.len(), cap);
        assert!(!s.is_retired(&mac(0), 500));
        assert!((1..=cap).all(|i| s.is_retired(&mac(i), 500)));
        // Retiring the same MAC again reuses its entry.
        s.retire_token(&mac(cap), 6_000);
        assert_eq!(s.retired.iter().filter(|r| r.mac == mac(cap)).count(), 1);
    }

    #[test]
    fn recent_disconnect_table_is_bounded() {
        let cfg = ServerConfig {
            protocol_id: 1,
            private_key: [1; 32],
            max_clients: 1,
            public_addrs: vec![],
        };
        let mut s = Server::with_challenge_key(cfg, [2; 32]);
        let cap = s.recent_cap;
        let t = Duration::from_secs(1);
        for i in 0..(3 * cap) {
            s.remember_recent(peer(i as u16), t);
            assert!(s.recent.len() <= cap && s.recent_order.len() <= cap);
        }
        // The newest are remembered, the oldest forgotten.
        assert!(s.recent.contains_key(&peer((3 * cap - 1) as u16)));
        assert!(!s.recent.contains_key(&peer(0)));
        // Re-remembering one address keeps one map entry; expiry empties both.
        s.remember_recent(peer(1), t);
        s.remember_recent(peer(1), t);
        s.expire_recent(t + RECENT_DISCONNECT_WINDOW);
        assert!(s.recent.is_empty() && s.recent_order.is_empty());
    }

    #[test]
    fn token_history_refuses_other_address() {
        let cfg = ServerConfig {
            protocol_id: 1,
            private_key: [1; 32],
            max_clients: 1,
            public_addrs: vec![],
        };
        let mut s = Server::with_challenge_key(cfg, [2; 32]);
        let now = Now {
            mono: Duration::from_secs(1),
            unix_secs: 10,
        };
        let a = peer(1000);
        let b = peer(1001);
        assert!(s.token_entry_find_or_add(now, &[7; 16], a));
        assert!(s.token_entry_find_or_add(now, &[7; 16], a));
        assert!(!s.token_entry_find_or_add(now, &[7; 16], b));
        // Fill the table with other MACs: the oldest (ours) is eventually replaced.
        for i in 0..s.token_entries.len() {
            let later = Now {
                mono: Duration::from_secs(2 + i as u64),
                unix_secs: 10,
            };
            let mut mac = [0u8; 16];
            mac[..8].copy_from_slice(&(i as u64 + 100).to_le_bytes());
            assert!(s.token_entry_find_or_add(later, &mac, a));
        }
        assert!(s.token_entry_find_or_add(now, &[7; 16], b));
    }
}
