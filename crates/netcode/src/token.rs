//! Connect tokens (public 2048-byte token, private 1024-byte encrypted part) and the
//! 300-byte challenge token, byte for byte as netcode.io 1.02 lays them out.
//!
//! Public token layout (little-endian):
//! `version(13) protocol_id(8) create(8) expire(8) nonce(24) private(1024) timeout(i32)
//!  num_addrs(u32) addrs.. c2s_key(32) s2c_key(32)`, zero padded to 2048.
//! Private part before encryption:
//! `client_id(8) timeout(i32) num_addrs(u32) addrs.. c2s_key(32) s2c_key(32) user_data(256)`,
//! zero padded to 1024; the first 1008 bytes are encrypted with XChaCha20-Poly1305 under the
//! server private key, AAD = version + protocol id + expire timestamp, the tag fills the last 16.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::crypto::{self, MAC_BYTES};
use crate::{
    Key, CONNECT_TOKEN_BYTES, CONNECT_TOKEN_PRIVATE_BYTES, KEY_BYTES, USER_DATA_BYTES, VERSION_INFO,
};

/// Most server addresses a token may carry.
pub const MAX_SERVER_ADDRESSES: usize = 32;
/// Size of the connect token nonce.
pub const CONNECT_TOKEN_NONCE_BYTES: usize = 24;
/// Size of an encrypted challenge token.
pub const CHALLENGE_TOKEN_BYTES: usize = 300;

const ADDRESS_IPV4: u8 = 1;
const ADDRESS_IPV6: u8 = 2;

/// Offset of the encrypted private part in the public token.
pub const PRIVATE_OFFSET: usize = 61;

/// Why a connect token could not be built or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The token is not exactly the expected number of bytes.
    WrongLength {
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The version info is not `"NETCODE 1.02\0"`.
    BadVersion,
    /// Number of server addresses outside 1..=32.
    BadAddressCount(u32),
    /// Address type byte not 1 (IPv4) or 2 (IPv6).
    BadAddressType(u8),
    /// The data ended before a field did.
    Truncated,
    /// Create timestamp later than expire timestamp, or create + expire overflows.
    BadTimestamps,
    /// The private part did not decrypt (wrong key, tampered, wrong AAD).
    DecryptFailed,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::WrongLength { expected, actual } => {
                write!(f, "connect token is {actual} bytes, expected {expected}")
            }
            TokenError::BadVersion => f.write_str("connect token version is not NETCODE 1.02"),
            TokenError::BadAddressCount(n) => {
                write!(f, "connect token has {n} server addresses, expected 1..=32")
            }
            TokenError::BadAddressType(t) => {
                write!(
                    f,
                    "connect token address type {t} is not 1 (IPv4) or 2 (IPv6)"
                )
            }
            TokenError::Truncated => f.write_str("connect token data ends inside a field"),
            TokenError::BadTimestamps => {
                f.write_str("connect token create timestamp is after its expire timestamp")
            }
            TokenError::DecryptFailed => f.write_str("private connect token failed to decrypt"),
        }
    }
}

impl std::error::Error for TokenError {}

/// Inputs for building a connect token. `Debug` redacts the private key.
#[derive(Clone, Copy)]
pub struct TokenParams<'a> {
    /// Application protocol id.
    pub protocol_id: u64,
    /// Globally unique client id.
    pub client_id: u64,
    /// Creation time, Unix seconds.
    pub create_unix_secs: u64,
    /// Lifetime: the token expires at `create_unix_secs + expire_secs`.
    pub expire_secs: u64,
    /// Connection timeout in seconds; `<= 0` disables timeouts (development only).
    pub timeout_secs: i32,
    /// 1..=32 server addresses, tried in order by the client.
    pub server_addrs: &'a [SocketAddr],
    /// Opaque application data delivered to the server on connect.
    pub user_data: [u8; USER_DATA_BYTES],
    /// Key shared by the web backend and the dedicated servers.
    pub private_key: &'a Key,
}

impl fmt::Debug for TokenParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenParams")
            .field("protocol_id", &self.protocol_id)
            .field("client_id", &self.client_id)
            .field("create_unix_secs", &self.create_unix_secs)
            .field("expire_secs", &self.expire_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("server_addrs", &self.server_addrs)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Little-endian cursor writer over a fixed buffer. Callers size buffers so writes never
/// overflow (checked by the fixed-size layout; a bug would panic in tests, not on input).
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn addr(&mut self, a: &SocketAddr) {
        match a {
            SocketAddr::V4(v4) => {
                self.u8(ADDRESS_IPV4);
                self.bytes(&v4.ip().octets());
                self.u16(v4.port());
            }
            SocketAddr::V6(v6) => {
                self.u8(ADDRESS_IPV6);
                for seg in v6.ip().segments() {
                    self.u16(seg);
                }
                self.u16(v6.port());
            }
        }
    }
}

/// Bounds-checked little-endian reader: every read returns `Truncated` past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        let end = self.pos.checked_add(n).ok_or(TokenError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(TokenError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, TokenError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, TokenError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, TokenError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn addr(&mut self) -> Result<SocketAddr, TokenError> {
        match self.u8()? {
            ADDRESS_IPV4 => {
                let o: [u8; 4] = self.array()?;
                let port = self.u16()?;
                Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
            }
            ADDRESS_IPV6 => {
                let mut seg = [0u16; 8];
                for s in &mut seg {
                    *s = self.u16()?;
                }
                let port = self.u16()?;
                Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(seg)), port))
            }
            t => Err(TokenError::BadAddressType(t)),
        }
    }
    fn addr_count(&mut self) -> Result<usize, TokenError> {
        let n = self.u32()?;
        if n == 0 || n as usize > MAX_SERVER_ADDRESSES {
            return Err(TokenError::BadAddressCount(n));
        }
        Ok(n as usize)
    }
}

fn check_addr_count(addrs: &[SocketAddr]) -> Result<(), TokenError> {
    if addrs.is_empty() || addrs.len() > MAX_SERVER_ADDRESSES {
        return Err(TokenError::BadAddressCount(
            u32::try_from(addrs.len()).unwrap_or(u32::MAX),
        ));
    }
    Ok(())
}

/// Associated data of the private connect token: version + protocol id + expire timestamp.
pub(crate) fn private_aad(protocol_id: u64, expire_unix_secs: u64) -> [u8; 29] {
    let mut aad = [0u8; 29];
    aad[..13].copy_from_slice(&VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21..29].copy_from_slice(&expire_unix_secs.to_le_bytes());
    aad
}

/// Generates a connect token with a random nonce and random client/server keys.
pub fn generate_connect_token(
    p: &TokenParams<'_>,
) -> Result<[u8; CONNECT_TOKEN_BYTES], TokenError> {
    let mut nonce = [0u8; CONNECT_TOKEN_NONCE_BYTES];
    crypto::fill_random(&mut nonce);
    build_connect_token(p, nonce, crate::random_key(), crate::random_key())
}

/// Builds a connect token deterministically from the given nonce and keys.
pub fn build_connect_token(
    p: &TokenParams<'_>,
    nonce: [u8; CONNECT_TOKEN_NONCE_BYTES],
    client_to_server_key: Key,
    server_to_client_key: Key,
) -> Result<[u8; CONNECT_TOKEN_BYTES], TokenError> {
    check_addr_count(p.server_addrs)?;
    let expire = p
        .create_unix_secs
        .checked_add(p.expire_secs)
        .ok_or(TokenError::BadTimestamps)?;

    // Private part.
    let mut private = [0u8; CONNECT_TOKEN_PRIVATE_BYTES];
    {
        let mut w = Writer {
            buf: &mut private,
            pos: 0,
        };
        w.u64(p.client_id);
        w.u32(p.timeout_secs as u32);
        w.u32(p.server_addrs.len() as u32);
        for a in p.server_addrs {
            w.addr(a);
        }
        w.bytes(&client_to_server_key);
        w.bytes(&server_to_client_key);
        w.bytes(&p.user_data);
    }
    let aad = private_aad(p.protocol_id, expire);
    let (body, tag) = private.split_at_mut(CONNECT_TOKEN_PRIVATE_BYTES - MAC_BYTES);
    tag.copy_from_slice(&crypto::seal_x(p.private_key, &nonce, &aad, body));

    // Public part.
    let mut out = [0u8; CONNECT_TOKEN_BYTES];
    let mut w = Writer {
        buf: &mut out,
        pos: 0,
    };
    w.bytes(&VERSION_INFO);
    w.u64(p.protocol_id);
    w.u64(p.create_unix_secs);
    w.u64(expire);
    w.bytes(&nonce);
    w.bytes(&private);
    w.u32(p.timeout_secs as u32);
    w.u32(p.server_addrs.len() as u32);
    for a in p.server_addrs {
        w.addr(a);
    }
    w.bytes(&client_to_server_key);
    w.bytes(&server_to_client_key);
    Ok(out)
}

/// The readable (public) part of a connect token, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTokenPublic {
    /// Application protocol id.
    pub protocol_id: u64,
    /// Creation time, Unix seconds.
    pub create_unix_secs: u64,
    /// Expiry time, Unix seconds.
    pub expire_unix_secs: u64,
    /// XChaCha20 nonce of the private part.
    pub nonce: [u8; CONNECT_TOKEN_NONCE_BYTES],
    /// The encrypted private part (opaque to the client).
    pub private_data: [u8; CONNECT_TOKEN_PRIVATE_BYTES],
    /// Timeout in seconds; `<= 0` disables.
    pub timeout_secs: i32,
    /// Server addresses, 1..=32.
    pub server_addrs: Vec<SocketAddr>,
    /// Key for client -> server packets.
    pub client_to_server_key: Key,
    /// Key for server -> client packets.
    pub server_to_client_key: Key,
}

impl ConnectTokenPublic {
    /// Parses a 2048-byte connect token. Never panics.
    pub fn read(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() != CONNECT_TOKEN_BYTES {
            return Err(TokenError::WrongLength {
                expected: CONNECT_TOKEN_BYTES,
                actual: bytes.len(),
            });
        }
        let mut r = Reader::new(bytes);
        if r.bytes(VERSION_INFO.len())? != VERSION_INFO {
            return Err(TokenError::BadVersion);
        }
        let protocol_id = r.u64()?;
        let create_unix_secs = r.u64()?;
        let expire_unix_secs = r.u64()?;
        if create_unix_secs > expire_unix_secs {
            return Err(TokenError::BadTimestamps);
        }
        let nonce = r.array()?;
        let private_data = r.array()?;
        let timeout_secs = r.u32()? as i32;
        let n = r.addr_count()?;
        let mut server_addrs = Vec::with_capacity(n);
        for _ in 0..n {
            server_addrs.push(r.addr()?);
        }
        let client_to_server_key = r.array::<KEY_BYTES>()?;
        let server_to_client_key = r.array::<KEY_BYTES>()?;
        Ok(Self {
            protocol_id,
            create_unix_secs,
            expire_unix_secs,
            nonce,
            private_data,
            timeout_secs,
            server_addrs,
            client_to_server_key,
            server_to_client_key,
        })
    }
}

/// The decrypted private part of a connect token. Fixed size (no allocation), so the
/// server can decode it on the packet path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTokenPrivate {
    /// Client id.
    pub client_id: u64,
    /// Timeout in seconds; `<= 0` disables.
    pub timeout_secs: i32,
    /// Number of valid entries in `server_addrs`.
    pub num_server_addrs: usize,
    /// Server addresses; only the first `num_server_addrs` are meaningful.
    pub server_addrs: [SocketAddr; MAX_SERVER_ADDRESSES],
    /// Key for client -> server packets.
    pub client_to_server_key: Key,
    /// Key for server -> client packets.
    pub server_to_client_key: Key,
    /// Application data.
    pub user_data: [u8; USER_DATA_BYTES],
}

impl ConnectTokenPrivate {
    /// The valid server addresses.
    pub fn server_addrs(&self) -> &[SocketAddr] {
        &self.server_addrs[..self.num_server_addrs]
    }

    /// Decrypts `scratch` (a copy of the 1024-byte encrypted private part) in place and
    /// parses it.
    pub fn decrypt_in_place(
        scratch: &mut [u8; CONNECT_TOKEN_PRIVATE_BYTES],
        protocol_id: u64,
        expire_unix_secs: u64,
        nonce: &[u8; CONNECT_TOKEN_NONCE_BYTES],
        private_key: &Key,
    ) -> Result<Self, TokenError> {
        let aad = private_aad(protocol_id, expire_unix_secs);
        let (body, tag) = scratch.split_at_mut(CONNECT_TOKEN_PRIVATE_BYTES - MAC_BYTES);
        if !crypto::open_x(private_key, nonce, &aad, body, tag) {
            return Err(TokenError::DecryptFailed);
        }
        Self::parse(body)
    }

    /// Decrypts a copy of the encrypted private part of `token` (convenience for tests and
    /// tools).
    pub fn decrypt(token: &ConnectTokenPublic, private_key: &Key) -> Result<Self, TokenError> {
        let mut scratch = token.private_data;
        Self::decrypt_in_place(
            &mut scratch,
            token.protocol_id,
            token.expire_unix_secs,
            &token.nonce,
            private_key,
        )
    }

    /// Parses the decrypted private part (the 1008 bytes before the tag).
    pub(crate) fn parse(plain: &[u8]) -> Result<Self, TokenError> {
        let mut r = Reader::new(plain);
        let client_id = r.u64()?;
        let timeout_secs = r.u32()? as i32;
        let n = r.addr_count()?;
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let mut server_addrs = [unspecified; MAX_SERVER_ADDRESSES];
        for slot in server_addrs.iter_mut().take(n) {
            *slot = r.addr()?;
        }
        let client_to_server_key = r.array()?;
        let server_to_client_key = r.array()?;
        let user_data = r.array()?;
        Ok(Self {
            client_id,
            timeout_secs,
            num_server_addrs: n,
            server_addrs,
            client_to_server_key,
            server_to_client_key,
            user_data,
        })
    }
}

/// Encrypts a challenge token (client id + user data, zero padded to 300 bytes) with the
/// server's challenge key and `sequence` (IETF ChaCha20-Poly1305, no associated data).
pub(crate) fn encrypt_challenge_token(
    client_id: u64,
    user_data: &[u8; USER_DATA_BYTES],
    sequence: u64,
    key: &Key,
) -> [u8; CHALLENGE_TOKEN_BYTES] {
    let mut t = [0u8; CHALLENGE_TOKEN_BYTES];
    t[..8].copy_from_slice(&client_id.to_le_bytes());
    t[8..8 + USER_DATA_BYTES].copy_from_slice(user_data);
    let (body, tag) = t.split_at_mut(CHALLENGE_TOKEN_BYTES - MAC_BYTES);
    tag.copy_from_slice(&crypto::seal_ietf(key, sequence, &[], body));
    t
}

/// Decrypts a challenge token; returns (client id, user data).
pub(crate) fn decrypt_challenge_token(
    token: &[u8; CHALLENGE_TOKEN_BYTES],
    sequence: u64,
    key: &Key,
) -> Option<(u64, [u8; USER_DATA_BYTES])> {
    let mut t = *token;
    let (body, tag) = t.split_at_mut(CHALLENGE_TOKEN_BYTES - MAC_BYTES);
    if !crypto::open_ietf(key, sequence, &[], body, tag) {
        return None;
    }
    let plain: &[u8; CHALLENGE_PLAIN_BYTES] = t[..CHALLENGE_PLAIN_BYTES].try_into().ok()?;
    Some(parse_challenge_token(plain))
}

/// Size of a challenge token's plaintext (the token less its tag).
pub(crate) const CHALLENGE_PLAIN_BYTES: usize = CHALLENGE_TOKEN_BYTES - MAC_BYTES;

/// Reads a decrypted challenge token: (client id, user data); the zero padding is ignored.
pub(crate) fn parse_challenge_token(
    plain: &[u8; CHALLENGE_PLAIN_BYTES],
) -> (u64, [u8; USER_DATA_BYTES]) {
    let mut id = [0u8; 8];
    id.copy_from_slice(&plain[..8]);
    let mut ud = [0u8; USER_DATA_BYTES];
    ud.copy_from_slice(&plain[8..8 + USER_DATA_BYTES]);
    (u64::from_le_bytes(id), ud)
}
