//! Valve A2S server queries (A2S_INFO, A2S_PLAYER, A2S_RULES), sans-IO.
//!
//! Server browsers and tools such as `python-a2s` ask a game server for its name, map, player
//! list and rules with small UDP requests. Every A2S packet starts with the "simple" header
//! `FF FF FF FF`; a netcode.io packet never does (its first byte is a prefix whose low 4 bits are
//! the packet type, and type 15 does not exist), so the shell checks [`is_a2s`] first and hands
//! such datagrams to [`A2sResponder::handle`] instead of the netcode server.
//!
//! Wire format (all integers little endian, strings UTF-8 terminated by `00`):
//!
//! ```text
//! request  A2S_INFO    FF FF FF FF 54 "Source Engine Query" 00 [challenge u32]   25 or 29 bytes
//! request  A2S_PLAYER  FF FF FF FF 55 challenge u32                              9 bytes
//! request  A2S_RULES   FF FF FF FF 56 challenge u32                              9 bytes
//! reply    S2C_CHALLENGE FF FF FF FF 41 challenge u32                            9 bytes
//! reply    A2S_INFO    FF FF FF FF 49 protocol(17) name map folder game app_id u16 players
//!                      max_players bots type('d') env('l'|'w'|'m') visibility(0) vac(0)
//!                      version EDF(0x80) port u16
//! reply    A2S_PLAYER  FF FF FF FF 44 count u8 { index u8, name, score i32, duration f32 }*
//! reply    A2S_RULES   FF FF FF FF 45 count u16 { name, value }*
//! ```
//!
//! No amplification: a request that does not carry the right challenge is answered only with the
//! 9-byte S2C_CHALLENGE, which is never larger than the request (25 bytes for INFO, 9 for PLAYER
//! and RULES). Only a request echoing the challenge, which proves the sender receives packets at
//! its source address, gets the full reply, and that reply always fits one packet of
//! [`MAX_REPLY_BYTES`] (the player list and rules are cut to fit; the count matches what is
//! written). Malformed requests are never answered ([`A2sError`]; the caller counts a drop).
//!
//! Challenges are stateless: `challenge = keyed_hash(secret, peer address, time bucket)` with
//! [`CHALLENGE_BUCKET_SECS`]-second buckets, and the current and previous bucket are accepted, so
//! a challenge stays valid for 30 to 60 seconds and the server keeps no per-peer table. The hash
//! is std's SipHash ([`DefaultHasher`]) with the caller's random secret mixed in: not
//! cryptographic, but enough to stop spoofed-source reflection, which is all it is for. The
//! secret and the time are passed in, so the module stays deterministic.
//!
//! Rate limits: queries are answered on the tick thread, so [`A2sResponder`] caps how many it
//! answers with token buckets ([`A2sLimits`], defaults there): one per source for challenge
//! replies and one, tighter, for full replies; an overall bucket for all replies and a tighter
//! overall one for full replies. A query over a limit is not answered
//! ([`A2sError::RateLimited`]). Per-source buckets live in a fixed table indexed by a keyed
//! hash of the source (the IPv4 address, or an IPv6 address's /64 prefix), so memory never
//! grows with the number of sources; sources whose hashes collide share a bucket (stricter,
//! never looser), and the key is secret so a sender cannot pick collisions on purpose. The
//! limiter lives behind a `Mutex` so `handle` keeps taking `&self`.
//!
//! Calling pattern (in the shell, before the netcode server):
//!
//! ```text
//! if a2s::is_a2s(bytes) {
//!     match a2s.handle_at(now.mono, peer, bytes, &source, &mut reply_buf) {
//!         Ok(Some(len)) => tx(peer, &reply_buf[..len]),
//!         Ok(None) => {}
//!         Err(e) => count a dropped A2S request under e.as_str(),
//!     }
//!     return;
//! }
//! ```

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The "simple" (single packet) header every A2S request and reply starts with.
pub const A2S_HEADER: [u8; 4] = [0xFF; 4];
/// Largest A2S reply, in bytes (Steam's packet size without IP/UDP headers). Replies are never
/// split into multiple packets; lists are cut to fit instead.
pub const MAX_REPLY_BYTES: usize = 1400;
/// Length of a challenge reply (and of a PLAYER/RULES request): header, type, u32.
pub const CHALLENGE_REPLY_BYTES: usize = 9;
/// Width of one challenge time bucket, in seconds. The current and the previous bucket's
/// challenge are accepted.
pub const CHALLENGE_BUCKET_SECS: u64 = 30;
/// The A2S_INFO protocol version byte Source servers send.
pub const INFO_PROTOCOL_VERSION: u8 = 17;
/// Longest string written into a reply, in bytes (cut at a UTF-8 boundary). With this cap an
/// A2S_INFO reply always fits [`MAX_REPLY_BYTES`].
pub const MAX_STRING_BYTES: usize = 255;

/// Request type byte of A2S_INFO (`'T'`).
pub const A2S_INFO: u8 = 0x54;
/// Request type byte of A2S_PLAYER (`'U'`).
pub const A2S_PLAYER: u8 = 0x55;
/// Request type byte of A2S_RULES (`'V'`).
pub const A2S_RULES: u8 = 0x56;
/// Reply type byte of S2C_CHALLENGE (`'A'`).
pub const S2C_CHALLENGE: u8 = 0x41;
/// Reply type byte of the A2S_INFO response (`'I'`).
pub const S2A_INFO: u8 = 0x49;
/// Reply type byte of the A2S_PLAYER response (`'D'`).
pub const S2A_PLAYER: u8 = 0x44;
/// Reply type byte of the A2S_RULES response (`'E'`).
pub const S2A_RULES: u8 = 0x45;

/// The A2S_INFO request payload after the type byte, including its terminating zero.
const INFO_PAYLOAD: &[u8] = b"Source Engine Query\0";
/// Length of an A2S_INFO request without a challenge.
const INFO_REQUEST_BYTES: usize = 5 + INFO_PAYLOAD.len();

/// Server type byte: dedicated.
const SERVER_TYPE_DEDICATED: u8 = b'd';
/// Environment byte: the OS this server was built for.
const ENVIRONMENT: u8 = if cfg!(target_os = "windows") {
    b'w'
} else if cfg!(target_os = "macos") {
    b'm'
} else {
    b'l'
};
/// Extra data flag: the game port follows.
const EDF_PORT: u8 = 0x80;

/// What the server says about itself in an A2S_INFO reply. Strings longer than
/// [`MAX_STRING_BYTES`] are cut; a string is also cut at an embedded NUL byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct A2sInfo<'a> {
    /// Server name shown in browsers.
    pub name: &'a str,
    /// Current map name (the game's).
    pub map: &'a str,
    /// Game directory name.
    pub folder: &'a str,
    /// Game description.
    pub game: &'a str,
    /// Players connected now.
    pub players: u8,
    /// Player slots.
    pub max_players: u8,
    /// Bots among `players`.
    pub bots: u8,
    /// Server version string.
    pub version: &'a str,
    /// The game port clients connect to (sent in the extra data field).
    pub port: u16,
}

/// One entry of an A2S_PLAYER reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct A2sPlayer<'a> {
    /// Player name (cut like every string, see [`MAX_STRING_BYTES`]).
    pub name: &'a str,
    /// Score.
    pub score: i32,
    /// Seconds connected.
    pub duration_secs: f32,
}

/// Where the replies' data comes from. Called lazily: only for a request with a valid
/// challenge, and only the method that request needs.
pub trait A2sSource {
    /// The server description for A2S_INFO.
    fn info(&self) -> A2sInfo<'_>;
    /// Calls `f` once per player, in the order they should be listed. Players that do not fit
    /// in one reply are left out.
    fn for_each_player(&self, f: &mut dyn FnMut(A2sPlayer<'_>));
    /// Calls `f` once per rule (name, value). Rules that do not fit in one reply are left out.
    fn for_each_rule(&self, f: &mut dyn FnMut(&str, &str));
}

/// Which query a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// A2S_INFO: server name, map, player counts.
    Info,
    /// A2S_PLAYER: the player list.
    Players,
    /// A2S_RULES: server rules (name/value pairs).
    Rules,
}

impl fmt::Display for QueryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryKind::Info => "info",
            QueryKind::Players => "players",
            QueryKind::Rules => "rules",
        })
    }
}

/// A parsed A2S request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct A2sRequest {
    /// Which query.
    pub kind: QueryKind,
    /// The challenge the request carries (`None` for an A2S_INFO without one; PLAYER and RULES
    /// always carry one, `0xFFFFFFFF` or `0` when the client has none yet).
    pub challenge: Option<u32>,
}

/// Why a datagram was not answered. Every variant means "drop it and count it".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum A2sError {
    /// Shorter than the 4-byte header plus a type byte.
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// Does not start with `FF FF FF FF`.
    NotA2s,
    /// A type byte this server does not answer.
    UnknownType(u8),
    /// A known query with the wrong length or payload.
    Malformed(QueryKind),
    /// Over a rate limit ([`A2sLimits`]): not answered.
    RateLimited(RateScope),
}

/// Which rate limit refused a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateScope {
    /// The source's own bucket (one sender asking too often).
    Source,
    /// An overall bucket (all senders together are over the server's budget: legitimate
    /// queriers are being refused too).
    Total,
}

impl A2sError {
    /// Stable snake_case label, for a metrics label: `too_short`, `not_a2s`, `unknown_type`,
    /// `malformed`, `rate_limited_source`, `rate_limited_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            A2sError::TooShort { .. } => "too_short",
            A2sError::NotA2s => "not_a2s",
            A2sError::UnknownType(_) => "unknown_type",
            A2sError::Malformed(_) => "malformed",
            A2sError::RateLimited(RateScope::Source) => "rate_limited_source",
            A2sError::RateLimited(RateScope::Total) => "rate_limited_total",
        }
    }
}

impl fmt::Display for A2sError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            A2sError::TooShort { len } => write!(f, "A2S request too short ({len} bytes)"),
            A2sError::NotA2s => f.write_str("not an A2S packet (header is not FF FF FF FF)"),
            A2sError::UnknownType(t) => write!(f, "unknown A2S request type 0x{t:02X}"),
            A2sError::Malformed(kind) => write!(f, "malformed A2S {kind} request"),
            A2sError::RateLimited(RateScope::Source) => {
                f.write_str("A2S request over the per-source rate limit")
            }
            A2sError::RateLimited(RateScope::Total) => {
                f.write_str("A2S request over the overall rate limit")
            }
        }
    }
}

impl std::error::Error for A2sError {}

/// Whether `packet` is an A2S packet (starts with the simple header `FF FF FF FF`). Cheap; the
/// shell calls it on every datagram before netcode.
pub fn is_a2s(packet: &[u8]) -> bool {
    packet.len() >= 4 && packet[..4] == A2S_HEADER
}

/// Parses an A2S request. Exact lengths only: INFO is 25 bytes or 29 with a challenge, PLAYER
/// and RULES are 9 bytes.
pub fn parse_request(request: &[u8]) -> Result<A2sRequest, A2sError> {
    if request.len() < 5 {
        return Err(if request.len() >= 4 && !is_a2s(request) {
            A2sError::NotA2s
        } else {
            A2sError::TooShort { len: request.len() }
        });
    }
    if !is_a2s(request) {
        return Err(A2sError::NotA2s);
    }
    let kind = match request[4] {
        A2S_INFO => QueryKind::Info,
        A2S_PLAYER => QueryKind::Players,
        A2S_RULES => QueryKind::Rules,
        other => return Err(A2sError::UnknownType(other)),
    };
    let challenge = match kind {
        QueryKind::Info => {
            if request.len() < INFO_REQUEST_BYTES || &request[5..INFO_REQUEST_BYTES] != INFO_PAYLOAD
            {
                return Err(A2sError::Malformed(kind));
            }
            match &request[INFO_REQUEST_BYTES..] {
                [] => None,
                &[a, b, c, d] => Some(u32::from_le_bytes([a, b, c, d])),
                _ => return Err(A2sError::Malformed(kind)),
            }
        }
        QueryKind::Players | QueryKind::Rules => match request[5..] {
            [a, b, c, d] => Some(u32::from_le_bytes([a, b, c, d])),
            _ => return Err(A2sError::Malformed(kind)),
        },
    };
    Ok(A2sRequest { kind, challenge })
}

/// A token-bucket rate: `per_sec` tokens are added per second (continuously, at millisecond
/// resolution), at most `burst` are held, and each answered query takes one. A bucket starts
/// full. `per_sec = 0` allows `burst` queries in total; `burst = 0` allows none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: u32,
    /// Most tokens held (the largest burst answered at once).
    pub burst: u32,
}

/// Rate limits of an [`A2sResponder`]. Challenge replies (9 bytes, never larger than the
/// request) are limited more loosely than full replies (up to [`MAX_REPLY_BYTES`], many times
/// the 9- to 29-byte request, and built on the tick thread).
///
/// Defaults (see [`A2sLimits::default`]): per source 40 challenge replies/s (burst 80) and 20
/// full replies/s (burst 40); overall 2000 replies/s (burst 2000), of which at most 500/s full
/// replies (burst 500, about 5.6 Mbit/s of replies at most); 4096 per-source slots (128 KiB).
/// A browser refreshing one server makes 2 to 6 queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct A2sLimits {
    /// Challenge replies to one source.
    pub source_challenge: Rate,
    /// Full replies (INFO, PLAYER, RULES) to one source.
    pub source_full: Rate,
    /// All replies (challenge and full) to all sources together.
    pub total: Rate,
    /// Full replies to all sources together (also counted in `total`).
    pub total_full: Rate,
    /// Slots in the per-source bucket table, rounded up to a power of two (at least 1). Each
    /// slot holds two buckets (32 bytes); the table is allocated once, in the constructor.
    pub source_slots: usize,
}

impl Default for A2sLimits {
    fn default() -> Self {
        A2sLimits {
            source_challenge: Rate {
                per_sec: 40,
                burst: 80,
            },
            source_full: Rate {
                per_sec: 20,
                burst: 40,
            },
            total: Rate {
                per_sec: 2000,
                burst: 2000,
            },
            total_full: Rate {
                per_sec: 500,
                burst: 500,
            },
            source_slots: 4096,
        }
    }
}

/// Queries refused by the rate limiter so far (monotonic), by reply kind and limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct A2sRateStats {
    /// Challenge replies refused by the source's bucket.
    pub source_challenge: u64,
    /// Full replies refused by the source's bucket.
    pub source_full: u64,
    /// Challenge replies refused by the overall bucket.
    pub total_challenge: u64,
    /// Full replies refused by an overall bucket.
    pub total_full: u64,
}

/// Thousandths of a token per token: a bucket holds milli-tokens so that a rate in tokens per
/// second adds exactly `per_sec` milli-tokens per millisecond.
const MILLI: u64 = 1000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli_tokens: u64,
    last_ms: u64,
}

impl Bucket {
    fn full(rate: Rate) -> Self {
        Bucket {
            milli_tokens: u64::from(rate.burst) * MILLI,
            last_ms: 0,
        }
    }

    /// Adds what accrued since the last refill. Time going backwards adds nothing.
    fn refill(&mut self, rate: Rate, now_ms: u64) {
        if now_ms > self.last_ms {
            let accrued = (now_ms - self.last_ms).saturating_mul(u64::from(rate.per_sec));
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(accrued)
                .min(u64::from(rate.burst) * MILLI);
            self.last_ms = now_ms;
        }
    }

    fn has_one(&self) -> bool {
        self.milli_tokens >= MILLI
    }

    fn take_one(&mut self) {
        self.milli_tokens -= MILLI;
    }
}

#[derive(Clone, Copy, Debug)]
struct SourceSlot {
    challenge: Bucket,
    full: Bucket,
}

#[derive(Clone, Debug)]
struct Limiter {
    slots: Box<[SourceSlot]>,
    total: Bucket,
    total_full: Bucket,
    stats: A2sRateStats,
}

/// Answers A2S requests with stateless challenges, rate limited. See the module docs.
pub struct A2sResponder {
    secret: u64,
    limits: A2sLimits,
    limiter: Mutex<Limiter>,
}

impl Clone for A2sResponder {
    /// A copy with the same secret, limits and current bucket levels.
    fn clone(&self) -> Self {
        A2sResponder {
            secret: self.secret,
            limits: self.limits,
            limiter: Mutex::new(self.lock().clone()),
        }
    }
}

impl fmt::Debug for A2sResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("A2sResponder")
            .field("secret", &"<redacted>")
            .field("limits", &self.limits)
            .finish()
    }
}

/// Which of a source's buckets a reply draws from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyKind {
    Challenge,
    Full,
}

impl A2sResponder {
    /// A responder keyed with `secret`, which the shell draws at random at startup (challenges
    /// from a previous run are then invalid, which only costs a client one more round trip),
    /// with the default [`A2sLimits`].
    pub fn new(secret: u64) -> Self {
        Self::with_limits(secret, A2sLimits::default())
    }

    /// Like [`A2sResponder::new`] with the given rate limits. The per-source table
    /// (`limits.source_slots`, rounded up to a power of two) is allocated here, once.
    pub fn with_limits(secret: u64, limits: A2sLimits) -> Self {
        let slots = limits.source_slots.max(1).next_power_of_two();
        let limits = A2sLimits {
            source_slots: slots,
            ..limits
        };
        let slot = SourceSlot {
            challenge: Bucket::full(limits.source_challenge),
            full: Bucket::full(limits.source_full),
        };
        A2sResponder {
            secret,
            limits,
            limiter: Mutex::new(Limiter {
                slots: vec![slot; slots].into_boxed_slice(),
                total: Bucket::full(limits.total),
                total_full: Bucket::full(limits.total_full),
                stats: A2sRateStats::default(),
            }),
        }
    }

    /// The limits in force (`source_slots` as rounded).
    pub fn limits(&self) -> A2sLimits {
        self.limits
    }

    /// Queries refused by the rate limiter so far.
    pub fn rate_stats(&self) -> A2sRateStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Limiter> {
        // The limiter's state is plain numbers, valid even if a panic interrupted an update.
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Index of `ip`'s per-source slot: a keyed hash of the IPv4 address (IPv4-mapped IPv6
    /// addresses count as IPv4) or of the IPv6 /64 prefix (one subscriber's usual allocation).
    fn slot_of(&self, ip: IpAddr, slots: usize) -> usize {
        let mut h = DefaultHasher::new();
        // A different domain from the challenge hash, so slots reveal nothing about challenges.
        (self.secret ^ 0xA25_5107_0000_0000).hash(&mut h);
        match ip {
            IpAddr::V4(v4) => (4u8, u32::from(v4)).hash(&mut h),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (4u8, u32::from(v4)).hash(&mut h),
                None => (6u8, (u128::from(v6) >> 64) as u64).hash(&mut h),
            },
        }
        self.secret.rotate_left(17).hash(&mut h);
        (h.finish() as usize) & (slots - 1)
    }

    /// Takes one token for a `kind` reply to `ip` from the source's bucket and the overall
    /// bucket(s), or none if any of them is empty.
    fn admit(&self, now: Duration, ip: IpAddr, kind: ReplyKind) -> Result<(), A2sError> {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let l = self.limits;
        let mut guard = self.lock();
        let lim = &mut *guard;
        let i = self.slot_of(ip, lim.slots.len());
        let (source, source_rate) = match kind {
            ReplyKind::Challenge => (&mut lim.slots[i].challenge, l.source_challenge),
            ReplyKind::Full => (&mut lim.slots[i].full, l.source_full),
        };
        source.refill(source_rate, now_ms);
        lim.total.refill(l.total, now_ms);
        lim.total_full.refill(l.total_full, now_ms);
        // The source's own bucket first: a lone flooder is refused there and does not drain
        // the overall budget the other sources share.
        if !source.has_one() {
            match kind {
                ReplyKind::Challenge => lim.stats.source_challenge += 1,
                ReplyKind::Full => lim.stats.source_full += 1,
            }
            return Err(A2sError::RateLimited(RateScope::Source));
        }
        let total_ok =
            lim.total.has_one() && (kind == ReplyKind::Challenge || lim.total_full.has_one());
        if !total_ok {
            match kind {
                ReplyKind::Challenge => lim.stats.total_challenge += 1,
                ReplyKind::Full => lim.stats.total_full += 1,
            }
            return Err(A2sError::RateLimited(RateScope::Total));
        }
        source.take_one();
        lim.total.take_one();
        if kind == ReplyKind::Full {
            lim.total_full.take_one();
        }
        Ok(())
    }

    /// The challenge `peer` is handed at `now_secs`. Never `0` or `0xFFFFFFFF`, which clients
    /// use to mean "no challenge yet".
    pub fn challenge(&self, now_secs: u64, peer: SocketAddr) -> u32 {
        self.challenge_in_bucket(now_secs / CHALLENGE_BUCKET_SECS, peer)
    }

    /// Whether `challenge` is valid for `peer` at `now_secs` (issued in the current or the
    /// previous bucket).
    pub fn is_valid_challenge(&self, now_secs: u64, peer: SocketAddr, challenge: u32) -> bool {
        let bucket = now_secs / CHALLENGE_BUCKET_SECS;
        challenge == self.challenge_in_bucket(bucket, peer)
            || (bucket > 0 && challenge == self.challenge_in_bucket(bucket - 1, peer))
    }

    fn challenge_in_bucket(&self, bucket: u64, peer: SocketAddr) -> u32 {
        let mut h = DefaultHasher::new();
        self.secret.hash(&mut h);
        bucket.hash(&mut h);
        peer.ip().hash(&mut h);
        peer.port().hash(&mut h);
        self.secret.rotate_left(32).hash(&mut h);
        let full = h.finish();
        match (full ^ (full >> 32)) as u32 {
            0 | u32::MAX => 0x5EED_0001,
            c => c,
        }
    }

    /// Handles one A2S request from `peer` at `now_secs` (any monotonic or wall clock in
    /// seconds, as long as the caller always passes the same one). Writes the reply into `out`
    /// and returns its length, or `Ok(None)` when nothing is to be sent (`out` cannot hold even
    /// the reply's fixed part; give it [`MAX_REPLY_BYTES`]). Replies never exceed
    /// [`MAX_REPLY_BYTES`] whatever `out`'s length.
    ///
    /// `source` is asked for data only when the request carries a valid challenge. Malformed,
    /// truncated or unknown requests return `Err` and must not be answered; so do requests over
    /// a rate limit ([`A2sError::RateLimited`]).
    ///
    /// With whole seconds the buckets refill in one-second steps; [`A2sResponder::handle_at`]
    /// takes finer time. Do not mix the two on one responder unless both come from the same
    /// clock (`handle(t.as_secs(), ..)` and `handle_at(t, ..)` agree).
    pub fn handle(
        &self,
        now_secs: u64,
        peer: SocketAddr,
        request: &[u8],
        source: &dyn A2sSource,
        out: &mut [u8],
    ) -> Result<Option<usize>, A2sError> {
        self.handle_at(Duration::from_secs(now_secs), peer, request, source, out)
    }

    /// [`A2sResponder::handle`] with time as a `Duration` on any monotonic clock (such as
    /// `Now::mono`): the rate limiter refills at millisecond resolution, and challenges use
    /// `now.as_secs()`.
    pub fn handle_at(
        &self,
        now: Duration,
        peer: SocketAddr,
        request: &[u8],
        source: &dyn A2sSource,
        out: &mut [u8],
    ) -> Result<Option<usize>, A2sError> {
        let now_secs = now.as_secs();
        let req = parse_request(request)?;
        let cap = out.len().min(MAX_REPLY_BYTES);
        let out = &mut out[..cap];
        let proven = req
            .challenge
            .is_some_and(|c| self.is_valid_challenge(now_secs, peer, c));
        if !proven {
            if out.len() < CHALLENGE_REPLY_BYTES {
                return Ok(None);
            }
            self.admit(now, peer.ip(), ReplyKind::Challenge)?;
            let challenge = self.challenge(now_secs, peer);
            out[..4].copy_from_slice(&A2S_HEADER);
            out[4] = S2C_CHALLENGE;
            out[5..9].copy_from_slice(&challenge.to_le_bytes());
            return Ok(Some(CHALLENGE_REPLY_BYTES));
        }
        self.admit(now, peer.ip(), ReplyKind::Full)?;
        let len = match req.kind {
            QueryKind::Info => write_info(&source.info(), out),
            QueryKind::Players => write_players(source, out),
            QueryKind::Rules => write_rules(source, out),
        };
        Ok(len)
    }
}

/// A bounded writer over the reply buffer. Writes that do not fit return `None` and leave the
/// position unchanged.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    fn bytes(&mut self, data: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(data.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(data);
        self.pos = end;
        Some(())
    }

    fn u8(&mut self, v: u8) -> Option<()> {
        self.bytes(&[v])
    }

    /// A string cut at its first NUL and at [`MAX_STRING_BYTES`] (on a char boundary), then
    /// its terminating zero. All or nothing.
    fn string(&mut self, s: &str) -> Option<()> {
        let s = clean(s);
        let start = self.pos;
        let done = self.bytes(s.as_bytes()).and_then(|()| self.u8(0));
        if done.is_none() {
            self.pos = start;
        }
        done
    }
}

/// `s` cut at its first NUL byte and to at most [`MAX_STRING_BYTES`] on a char boundary.
fn clean(s: &str) -> &str {
    let s = match s.find('\0') {
        Some(i) => &s[..i],
        None => s,
    };
    if s.len() <= MAX_STRING_BYTES {
        return s;
    }
    let mut end = MAX_STRING_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn write_info(info: &A2sInfo<'_>, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    w.bytes(&A2S_HEADER)?;
    w.u8(S2A_INFO)?;
    w.u8(INFO_PROTOCOL_VERSION)?;
    w.string(info.name)?;
    w.string(info.map)?;
    w.string(info.folder)?;
    w.string(info.game)?;
    w.bytes(&0u16.to_le_bytes())?; // Steam app id: none.
    w.u8(info.players)?;
    w.u8(info.max_players)?;
    w.u8(info.bots)?;
    w.u8(SERVER_TYPE_DEDICATED)?;
    w.u8(ENVIRONMENT)?;
    w.u8(0)?; // visibility: public (no password)
    w.u8(0)?; // VAC: unsecured
    w.string(info.version)?;
    w.u8(EDF_PORT)?;
    w.bytes(&info.port.to_le_bytes())?;
    Some(w.pos)
}

fn write_players(source: &dyn A2sSource, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    w.bytes(&A2S_HEADER)?;
    w.u8(S2A_PLAYER)?;
    let count_at = w.pos;
    w.u8(0)?;
    let mut count: u8 = 0;
    let mut full = false;
    source.for_each_player(&mut |p| {
        if full || count == u8::MAX {
            return;
        }
        let start = w.pos;
        let fits = w
            .u8(count)
            .and_then(|()| w.string(p.name))
            .and_then(|()| w.bytes(&p.score.to_le_bytes()))
            .and_then(|()| w.bytes(&p.duration_secs.to_le_bytes()));
        if fits.is_some() {
            count += 1;
        } else {
            // Cut the list here so it stays in the source's order.
            w.pos = start;
            full = true;
        }
    });
    w.buf[count_at] = count;
    Some(w.pos)
}

fn write_rules(source: &dyn A2sSource, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    w.bytes(&A2S_HEADER)?;
    w.u8(S2A_RULES)?;
    let count_at = w.pos;
    w.bytes(&[0, 0])?;
    // The count is a signed short on the wire; 1400 bytes hold far fewer rules than that.
    let mut count: u16 = 0;
    let mut full = false;
    source.for_each_rule(&mut |name, value| {
        if full || count == i16::MAX as u16 {
            return;
        }
        let start = w.pos;
        if w.string(name).and_then(|()| w.string(value)).is_some() {
            count += 1;
        } else {
            w.pos = start;
            full = true;
        }
    });
    w.buf[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
    Some(w.pos)
}
