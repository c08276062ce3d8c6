//! Entry points for the fuzz targets in `crates/netcode/fuzz`. **Not part of the stable API**:
//! hidden from the docs, and may change or disappear in any release.
//!
//! Every netcode packet but the connection request is sealed with ChaCha20-Poly1305, and the
//! connection request carries a private connect token sealed with XChaCha20-Poly1305: a fuzzer
//! that feeds raw datagrams stops at the MAC. These functions expose the plaintext parsers that
//! sit behind the AEAD, and the seals (and a server with a known challenge key) that let a
//! harness put fuzzer-chosen plaintext in front of the real state machines.

use crate::crypto::{self, MAC_BYTES};
use crate::packet::{self, Packet, PacketType};
use crate::token::{self, CHALLENGE_TOKEN_BYTES, CONNECT_TOKEN_NONCE_BYTES};
use crate::{
    ConnectTokenPrivate, DropReason, Key, Server, ServerConfig, TokenError,
    CONNECT_TOKEN_PRIVATE_BYTES, USER_DATA_BYTES,
};

/// Size of the private connect token's plaintext (the part before its tag).
pub const PRIVATE_PLAIN_BYTES: usize = CONNECT_TOKEN_PRIVATE_BYTES - MAC_BYTES;
/// Size of the challenge token's plaintext (the part before its tag).
pub const CHALLENGE_PLAIN_BYTES: usize = token::CHALLENGE_PLAIN_BYTES;

/// The packet type with this number (0..=6).
pub fn packet_type(v: u8) -> Option<PacketType> {
    PacketType::from_u8(v)
}

/// The parser of a decrypted packet body: the per-type size check the header parser applies,
/// then the body parser the server and client run after decryption.
pub fn parse_packet_body(kind: PacketType, body: &[u8]) -> Result<Packet<'_>, DropReason> {
    packet::check_body_len(kind, body.len())?;
    Ok(packet::parse_body(kind, body))
}

/// The parser of a decrypted private connect token (what the server reads from a
/// connection request after the XChaCha20-Poly1305 tag has verified).
pub fn parse_private_token(plain: &[u8]) -> Result<ConnectTokenPrivate, TokenError> {
    ConnectTokenPrivate::parse(plain)
}

/// Seals `plain` as the private part of a connect token (as the web backend would), for a
/// request with this protocol id, expire timestamp and nonce.
pub fn seal_private_token(
    plain: &[u8; PRIVATE_PLAIN_BYTES],
    protocol_id: u64,
    expire_unix_secs: u64,
    nonce: &[u8; CONNECT_TOKEN_NONCE_BYTES],
    private_key: &Key,
) -> [u8; CONNECT_TOKEN_PRIVATE_BYTES] {
    let mut out = [0u8; CONNECT_TOKEN_PRIVATE_BYTES];
    let (body, tag) = out.split_at_mut(PRIVATE_PLAIN_BYTES);
    body.copy_from_slice(plain);
    let aad = token::private_aad(protocol_id, expire_unix_secs);
    tag.copy_from_slice(&crypto::seal_x(private_key, nonce, &aad, body));
    out
}

/// The parser of a decrypted challenge token: (client id, user data).
pub fn parse_challenge_token(plain: &[u8; CHALLENGE_PLAIN_BYTES]) -> (u64, [u8; USER_DATA_BYTES]) {
    token::parse_challenge_token(plain)
}

/// Seals `plain` as a challenge token under `key` and `sequence` (as the server does).
pub fn seal_challenge_token(
    plain: &[u8; CHALLENGE_PLAIN_BYTES],
    sequence: u64,
    key: &Key,
) -> [u8; CHALLENGE_TOKEN_BYTES] {
    let mut out = [0u8; CHALLENGE_TOKEN_BYTES];
    let (body, tag) = out.split_at_mut(CHALLENGE_PLAIN_BYTES);
    body.copy_from_slice(plain);
    tag.copy_from_slice(&crypto::seal_ietf(key, sequence, &[], body));
    out
}

/// A server whose challenge key is `challenge_key` instead of a random one, so a harness can
/// seal challenge tokens it will accept.
pub fn server_with_challenge_key(cfg: ServerConfig, challenge_key: Key) -> Server {
    Server::with_challenge_key(cfg, challenge_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::encrypt_challenge_token;
    use crate::{build_connect_token, ConnectTokenPublic, TokenParams};
    use std::net::SocketAddr;

    #[test]
    fn seals_match_the_real_encoders() {
        let ud = [7u8; USER_DATA_BYTES];
        let mut plain = [0u8; CHALLENGE_PLAIN_BYTES];
        plain[..8].copy_from_slice(&42u64.to_le_bytes());
        plain[8..8 + USER_DATA_BYTES].copy_from_slice(&ud);
        assert_eq!(parse_challenge_token(&plain), (42, ud));
        assert_eq!(
            seal_challenge_token(&plain, 9, &[4; 32]),
            encrypt_challenge_token(42, &ud, 9, &[4; 32])
        );

        let addrs = [SocketAddr::from(([127, 0, 0, 1], 40000))];
        let params = TokenParams {
            protocol_id: 5,
            client_id: 77,
            create_unix_secs: 1000,
            expire_secs: 60,
            timeout_secs: 5,
            server_addrs: &addrs,
            user_data: ud,
            private_key: &[1; 32],
        };
        let bytes = build_connect_token(&params, [3; 24], [2; 32], [6; 32]).unwrap();
        let public = ConnectTokenPublic::read(&bytes).unwrap();
        let mut opened = public.private_data;
        let tok = ConnectTokenPrivate::decrypt_in_place(&mut opened, 5, 1060, &[3; 24], &[1; 32])
            .unwrap();
        let plain: [u8; PRIVATE_PLAIN_BYTES] = opened[..PRIVATE_PLAIN_BYTES].try_into().unwrap();
        assert_eq!(parse_private_token(&plain), Ok(tok));
        assert_eq!(
            seal_private_token(&plain, 5, 1060, &[3; 24], &[1; 32]),
            public.private_data
        );
    }

    #[test]
    fn packet_bodies_are_size_checked_before_parsing() {
        let kind = |v| packet_type(v).unwrap();
        assert_eq!(packet_type(7), None);
        assert_eq!(
            parse_packet_body(kind(4), &[0; 7]),
            Err(DropReason::Malformed)
        );
        assert_eq!(
            parse_packet_body(kind(4), &[1, 0, 0, 0, 4, 0, 0, 0]),
            Ok(Packet::KeepAlive {
                client_index: 1,
                max_clients: 4
            })
        );
        assert_eq!(parse_packet_body(kind(5), &[]), Err(DropReason::Malformed));
        assert_eq!(
            parse_packet_body(kind(5), &[0; 1201]),
            Err(DropReason::TooLarge)
        );
        assert_eq!(parse_packet_body(kind(0), &[]), Err(DropReason::Malformed));
        assert_eq!(parse_packet_body(kind(6), &[]), Ok(Packet::Disconnect));
        assert_eq!(
            parse_packet_body(kind(2), &[0; 307]),
            Err(DropReason::Malformed)
        );
    }
}
