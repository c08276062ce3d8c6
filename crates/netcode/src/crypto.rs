//! AEAD helpers: ChaCha20-Poly1305 (IETF, 12-byte nonce) for packets and challenge tokens,
//! XChaCha20-Poly1305 (24-byte nonce) for the private connect token. All in place, detached
//! tags, no allocation.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag, XChaCha20Poly1305, XNonce};

use crate::Key;

/// Size of a Poly1305 tag ("HMAC" in the standard).
pub const MAC_BYTES: usize = 16;

/// The 96-bit IETF nonce for a 64-bit sequence: 4 zero bytes, then the sequence little-endian.
fn ietf_nonce(sequence: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&sequence.to_le_bytes());
    n
}

/// Encrypts `buf` in place; returns the tag.
pub(crate) fn seal_ietf(key: &Key, sequence: u64, aad: &[u8], buf: &mut [u8]) -> [u8; MAC_BYTES] {
    let cipher = ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key));
    let nonce = ietf_nonce(sequence);
    // Encryption only fails for buffers longer than ~256 GiB; ours are at most 1400 bytes.
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, buf)
        .unwrap_or_default();
    tag.into()
}

/// Decrypts `buf` in place; false (and `buf` unspecified) if the tag does not verify.
pub(crate) fn open_ietf(key: &Key, sequence: u64, aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
    if tag.len() != MAC_BYTES {
        return false;
    }
    let cipher = ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key));
    let nonce = ietf_nonce(sequence);
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&nonce), aad, buf, Tag::from_slice(tag))
        .is_ok()
}

/// XChaCha20-Poly1305 encryption in place; returns the tag.
pub(crate) fn seal_x(key: &Key, nonce: &[u8; 24], aad: &[u8], buf: &mut [u8]) -> [u8; MAC_BYTES] {
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key));
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf)
        .unwrap_or_default();
    tag.into()
}

/// XChaCha20-Poly1305 decryption in place.
pub(crate) fn open_x(key: &Key, nonce: &[u8; 24], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
    if tag.len() != MAC_BYTES {
        return false;
    }
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key));
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
        .is_ok()
}

/// Fills `buf` from the operating system's random source.
///
/// # Panics
/// If the OS random source fails (no usable entropy): keys and nonces must never be
/// predictable, so there is no safe fallback.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("tickwire-netcode: OS random source failed: {e}");
    }
}
