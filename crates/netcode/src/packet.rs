//! Packet codec: the unencrypted connection request and the six encrypted packet types.
//!
//! Encrypted packets are `prefix(1) sequence(1..=8, LE, high zero bytes dropped)
//! ciphertext tag(16)`; prefix = `(sequence_bytes << 4) | type`. The body is sealed with
//! ChaCha20-Poly1305 (IETF), nonce = 4 zero bytes + sequence LE, AAD = version info +
//! protocol id + prefix byte (22 bytes). Decoding checks, in the standard's order: size,
//! type, sequence-byte count, per-type body size; then the caller's replay check; then
//! decryption. Nothing here allocates.

use std::fmt;
use std::ops::Range;

use crate::crypto::{self, MAC_BYTES};
use crate::token::{CHALLENGE_TOKEN_BYTES, CONNECT_TOKEN_NONCE_BYTES};
use crate::VERSION_INFO;
use crate::{DropReason, Key, CONNECT_TOKEN_PRIVATE_BYTES, MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES};

/// Size of a connection request: prefix + version + protocol id + expire + nonce + private.
pub const CONNECTION_REQUEST_BYTES: usize =
    1 + 13 + 8 + 8 + CONNECT_TOKEN_NONCE_BYTES + CONNECT_TOKEN_PRIVATE_BYTES;
/// Smallest possible encrypted packet (prefix + 1 sequence byte + tag).
pub const MIN_ENCRYPTED_BYTES: usize = 1 + 1 + MAC_BYTES;
/// Body size of challenge and response packets (challenge sequence + token).
pub const CHALLENGE_BODY_BYTES: usize = 8 + CHALLENGE_TOKEN_BYTES;

/// The seven netcode packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 0: connection request (unencrypted).
    ConnectionRequest = 0,
    /// 1: connection denied.
    ConnectionDenied = 1,
    /// 2: connection challenge.
    ConnectionChallenge = 2,
    /// 3: connection response.
    ConnectionResponse = 3,
    /// 4: keep-alive.
    KeepAlive = 4,
    /// 5: payload.
    Payload = 5,
    /// 6: disconnect.
    Disconnect = 6,
}

impl PacketType {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => PacketType::ConnectionRequest,
            1 => PacketType::ConnectionDenied,
            2 => PacketType::ConnectionChallenge,
            3 => PacketType::ConnectionResponse,
            4 => PacketType::KeepAlive,
            5 => PacketType::Payload,
            6 => PacketType::Disconnect,
            _ => return None,
        })
    }

    /// True for the types the replay window applies to (keep-alive, payload, disconnect).
    pub fn replay_protected(self) -> bool {
        matches!(
            self,
            PacketType::KeepAlive | PacketType::Payload | PacketType::Disconnect
        )
    }
}

/// A decoded (or to-be-encoded) packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Connection request (unencrypted; the sequence is not used).
    Request {
        /// Protocol id.
        protocol_id: u64,
        /// Connect token expire timestamp.
        expire_unix_secs: u64,
        /// Connect token nonce.
        nonce: [u8; CONNECT_TOKEN_NONCE_BYTES],
        /// Encrypted private connect token.
        private_data: &'a [u8; CONNECT_TOKEN_PRIVATE_BYTES],
    },
    /// Connection denied.
    Denied,
    /// Challenge.
    Challenge {
        /// Challenge token sequence.
        challenge_sequence: u64,
        /// Encrypted challenge token.
        token: &'a [u8; CHALLENGE_TOKEN_BYTES],
    },
    /// Response (echo of the challenge).
    Response {
        /// Challenge token sequence.
        challenge_sequence: u64,
        /// Encrypted challenge token.
        token: &'a [u8; CHALLENGE_TOKEN_BYTES],
    },
    /// Keep-alive.
    KeepAlive {
        /// Client slot index.
        client_index: u32,
        /// Server's max clients.
        max_clients: u32,
    },
    /// Payload, 1..=1200 bytes.
    Payload(&'a [u8]),
    /// Disconnect.
    Disconnect,
}

impl Packet<'_> {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Request { .. } => PacketType::ConnectionRequest,
            Packet::Denied => PacketType::ConnectionDenied,
            Packet::Challenge { .. } => PacketType::ConnectionChallenge,
            Packet::Response { .. } => PacketType::ConnectionResponse,
            Packet::KeepAlive { .. } => PacketType::KeepAlive,
            Packet::Payload(_) => PacketType::Payload,
            Packet::Disconnect => PacketType::Disconnect,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// Payload empty or over 1200 bytes.
    BadPayloadSize(usize),
    /// Output buffer too small.
    BufferTooSmall,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BadPayloadSize(n) => write!(f, "payload of {n} bytes is not 1..=1200"),
            EncodeError::BufferTooSmall => f.write_str("output buffer too small for packet"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Number of bytes needed for `sequence` (1..=8).
pub fn sequence_bytes(sequence: u64) -> usize {
    let bits = 64 - sequence.leading_zeros() as usize;
    bits.div_ceil(8).max(1)
}

/// AAD for encrypted packets.
fn packet_aad(protocol_id: u64, prefix: u8) -> [u8; 22] {
    let mut aad = [0u8; 22];
    aad[..13].copy_from_slice(&VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21] = prefix;
    aad
}

/// Writes an encrypted packet of `kind` with plaintext `body` into `out`; returns its length.
/// Callers guarantee `out.len() >= 1 + 8 + body.len() + 16`.
pub(crate) fn seal(
    kind: PacketType,
    sequence: u64,
    body: &[u8],
    protocol_id: u64,
    key: &Key,
    out: &mut [u8],
) -> usize {
    let n = sequence_bytes(sequence);
    let prefix = ((n as u8) << 4) | kind as u8;
    out[0] = prefix;
    out[1..1 + n].copy_from_slice(&sequence.to_le_bytes()[..n]);
    let start = 1 + n;
    let end = start + body.len();
    out[start..end].copy_from_slice(body);
    let tag = crypto::seal_ietf(
        key,
        sequence,
        &packet_aad(protocol_id, prefix),
        &mut out[start..end],
    );
    out[end..end + MAC_BYTES].copy_from_slice(&tag);
    end + MAC_BYTES
}

/// Writes a connection request into `out` (at least 1078 bytes); returns 1078.
pub(crate) fn write_request(
    protocol_id: u64,
    expire_unix_secs: u64,
    nonce: &[u8; CONNECT_TOKEN_NONCE_BYTES],
    private_data: &[u8; CONNECT_TOKEN_PRIVATE_BYTES],
    out: &mut [u8],
) -> usize {
    out[0] = 0;
    out[1..14].copy_from_slice(&VERSION_INFO);
    out[14..22].copy_from_slice(&protocol_id.to_le_bytes());
    out[22..30].copy_from_slice(&expire_unix_secs.to_le_bytes());
    out[30..54].copy_from_slice(nonce);
    out[54..CONNECTION_REQUEST_BYTES].copy_from_slice(private_data);
    CONNECTION_REQUEST_BYTES
}

/// Parsed header of an encrypted packet (nothing decrypted yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: PacketType,
    pub prefix: u8,
    pub sequence: u64,
    /// Ciphertext range (the tag follows it).
    pub body: Range<usize>,
}

/// Checks an encrypted packet's framing, in the standard's order.
pub(crate) fn parse_header(packet: &[u8]) -> Result<Header, DropReason> {
    if packet.len() > MAX_PACKET_BYTES {
        return Err(DropReason::TooLarge);
    }
    if packet.len() < MIN_ENCRYPTED_BYTES {
        return Err(DropReason::TooSmall);
    }
    let prefix = packet[0];
    let kind = PacketType::from_u8(prefix & 0x0F).ok_or(DropReason::UnknownType)?;
    if kind == PacketType::ConnectionRequest {
        // A request's prefix is exactly 0; type 0 with sequence bytes is not a packet.
        return Err(DropReason::BadPrefix);
    }
    let n = (prefix >> 4) as usize;
    if !(1..=8).contains(&n) {
        return Err(DropReason::BadPrefix);
    }
    if packet.len() < 1 + n + MAC_BYTES {
        return Err(DropReason::TooSmall);
    }
    let mut seq = [0u8; 8];
    seq[..n].copy_from_slice(&packet[1..1 + n]);
    let body_len = packet.len() - 1 - n - MAC_BYTES;
    check_body_len(kind, body_len)?;
    Ok(Header {
        kind,
        prefix,
        sequence: u64::from_le_bytes(seq),
        body: 1 + n..1 + n + body_len,
    })
}

/// The per-type body size check of [`parse_header`]: what [`parse_body`] relies on.
pub(crate) fn check_body_len(kind: PacketType, body_len: usize) -> Result<(), DropReason> {
    let ok = match kind {
        PacketType::ConnectionDenied | PacketType::Disconnect => body_len == 0,
        PacketType::ConnectionChallenge | PacketType::ConnectionResponse => {
            body_len == CHALLENGE_BODY_BYTES
        }
        PacketType::KeepAlive => body_len == 8,
        PacketType::Payload => {
            if body_len > MAX_PAYLOAD_BYTES {
                return Err(DropReason::TooLarge);
            }
            body_len >= 1
        }
        PacketType::ConnectionRequest => false,
    };
    if ok {
        Ok(())
    } else {
        Err(DropReason::Malformed)
    }
}

/// Decrypts the body of `packet` (framed by `h`) into `scratch`; returns the body length.
pub(crate) fn open(
    h: &Header,
    packet: &[u8],
    protocol_id: u64,
    key: &Key,
    scratch: &mut [u8],
) -> Result<usize, DropReason> {
    let ct = &packet[h.body.clone()];
    let tag = &packet[h.body.end..h.body.end + MAC_BYTES];
    let out = &mut scratch[..ct.len()];
    out.copy_from_slice(ct);
    if crypto::open_ietf(
        key,
        h.sequence,
        &packet_aad(protocol_id, h.prefix),
        out,
        tag,
    ) {
        Ok(ct.len())
    } else {
        Err(DropReason::DecryptFailed)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Interprets a decrypted body (size already checked by `parse_header` / [`check_body_len`]).
pub(crate) fn parse_body(kind: PacketType, body: &[u8]) -> Packet<'_> {
    match kind {
        PacketType::ConnectionDenied => Packet::Denied,
        PacketType::Disconnect => Packet::Disconnect,
        PacketType::KeepAlive => Packet::KeepAlive {
            client_index: u32_at(body, 0),
            max_clients: u32_at(body, 4),
        },
        PacketType::Payload => Packet::Payload(body),
        PacketType::ConnectionChallenge | PacketType::ConnectionResponse => {
            let challenge_sequence = u64_at(body, 0);
            let token = body[8..8 + CHALLENGE_TOKEN_BYTES]
                .try_into()
                .unwrap_or(&[0u8; 300]);
            if kind == PacketType::ConnectionChallenge {
                Packet::Challenge {
                    challenge_sequence,
                    token,
                }
            } else {
                Packet::Response {
                    challenge_sequence,
                    token,
                }
            }
        }
        // Never reached: parse_header rejects type 0 on the encrypted path.
        PacketType::ConnectionRequest => Packet::Denied,
    }
}

/// Encodes `packet` into `out` (use a `MAX_PACKET_BYTES` buffer); returns its length.
/// `sequence` and `key` are ignored for the unencrypted connection request.
pub fn encode(
    packet: &Packet<'_>,
    sequence: u64,
    protocol_id: u64,
    key: &Key,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut body = [0u8; CHALLENGE_BODY_BYTES];
    let body: &[u8] = match packet {
        Packet::Request {
            protocol_id,
            expire_unix_secs,
            nonce,
            private_data,
        } => {
            if out.len() < CONNECTION_REQUEST_BYTES {
                return Err(EncodeError::BufferTooSmall);
            }
            return Ok(write_request(
                *protocol_id,
                *expire_unix_secs,
                nonce,
                private_data,
                out,
            ));
        }
        Packet::Denied | Packet::Disconnect => &[],
        Packet::Challenge {
            challenge_sequence,
            token,
        }
        | Packet::Response {
            challenge_sequence,
            token,
        } => {
            body[..8].copy_from_slice(&challenge_sequence.to_le_bytes());
            body[8..].copy_from_slice(&token[..]);
            &body[..]
        }
        Packet::KeepAlive {
            client_index,
            max_clients,
        } => {
            body[..4].copy_from_slice(&client_index.to_le_bytes());
            body[4..8].copy_from_slice(&max_clients.to_le_bytes());
            &body[..8]
        }
        Packet::Payload(p) => {
            if p.is_empty() || p.len() > MAX_PAYLOAD_BYTES {
                return Err(EncodeError::BadPayloadSize(p.len()));
            }
            p
        }
    };
    if out.len() < 1 + sequence_bytes(sequence) + body.len() + MAC_BYTES {
        return Err(EncodeError::BufferTooSmall);
    }
    Ok(seal(
        packet.packet_type(),
        sequence,
        body,
        protocol_id,
        key,
        out,
    ))
}

/// A decoded packet and its sequence (0 for a connection request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Packet sequence number.
    pub sequence: u64,
    /// The packet.
    pub packet: Packet<'a>,
}

/// Decodes any packet without role or replay checks: a connection request is checked for
/// length, version and protocol id (its token is not decrypted); an encrypted packet is
/// framed, decrypted with `key` into `scratch` (at least `MAX_PACKET_BYTES`), and parsed.
pub fn decode<'a>(
    packet: &'a [u8],
    protocol_id: u64,
    key: &Key,
    scratch: &'a mut [u8],
) -> Result<Decoded<'a>, DropReason> {
    match packet.first() {
        None => Err(DropReason::TooSmall),
        Some(0) => {
            let r = read_request(packet, protocol_id)?;
            Ok(Decoded {
                sequence: 0,
                packet: r,
            })
        }
        Some(_) => {
            let h = parse_header(packet)?;
            if scratch.len() < h.body.len() {
                return Err(DropReason::TooLarge);
            }
            let n = open(&h, packet, protocol_id, key, scratch)?;
            Ok(Decoded {
                sequence: h.sequence,
                packet: parse_body(h.kind, &scratch[..n]),
            })
        }
    }
}

/// Checks a connection request's length, version and protocol id (in that order).
pub(crate) fn read_request(packet: &[u8], protocol_id: u64) -> Result<Packet<'_>, DropReason> {
    if packet.len() > MAX_PACKET_BYTES {
        return Err(DropReason::TooLarge);
    }
    if packet.len() != CONNECTION_REQUEST_BYTES || packet[0] != 0 {
        return Err(DropReason::BadRequest);
    }
    if packet[1..14] != VERSION_INFO {
        return Err(DropReason::BadRequest);
    }
    let pid = u64_at(packet, 14);
    if pid != protocol_id {
        return Err(DropReason::BadRequest);
    }
    let mut nonce = [0u8; CONNECT_TOKEN_NONCE_BYTES];
    nonce.copy_from_slice(&packet[30..54]);
    let private_data: &[u8; CONNECT_TOKEN_PRIVATE_BYTES] = packet[54..]
        .try_into()
        .map_err(|_| DropReason::BadRequest)?;
    Ok(Packet::Request {
        protocol_id: pid,
        expire_unix_secs: u64_at(packet, 22),
        nonce,
        private_data,
    })
}
