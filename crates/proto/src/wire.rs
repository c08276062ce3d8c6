//! Encode and decode entry points (bincode 2.0.1 `standard()` config, serde path).

use bincode::config::{self, Configuration, Limit};
use bincode::error::{DecodeError as BinDecodeError, EncodeError as BinEncodeError};
use serde::Serialize;

use crate::bounded::{TOO_MANY_ENTITIES, TOO_MANY_FRAMES};
use crate::{
    ByeReason, ClientMessage, DecodeError, EncodeError, InputFrame, ServerMessage, Snapshot,
    Welcome, MAX_INPUT_FRAMES, MAX_PAYLOAD_BYTES, MAX_SNAPSHOT_ENTITIES,
};

/// Encode config: varint, little endian, no limit (the buffer is the limit).
const ENCODE: Configuration = config::standard();

/// Decode config: as [`ENCODE`], plus a claimed-memory limit so no length can allocate much.
const DECODE: Configuration<config::LittleEndian, config::Varint, Limit<MAX_PAYLOAD_BYTES>> =
    config::standard().with_limit::<MAX_PAYLOAD_BYTES>();

/// Number of `ClientMessage` variants (the leading varint must be below it).
const CLIENT_VARIANTS: u8 = 1;
/// Number of `ServerMessage` variants.
const SERVER_VARIANTS: u8 = 3;

/// Borrowed mirror of [`ServerMessage`] with the same variant order, so a snapshot can be encoded
/// without cloning its entity list. bincode writes only the variant index, never the name.
#[derive(Serialize)]
#[serde(rename = "ServerMessage")]
#[allow(dead_code)] // only `Snapshot` is constructed; the others pin the variant indices
enum ServerMessageRef<'a> {
    Welcome(&'a Welcome),
    Snapshot(&'a Snapshot),
    Bye { reason: ByeReason },
}

fn frames_consecutive(frames: &[InputFrame]) -> bool {
    frames
        .windows(2)
        .all(|w| w[1].seq == w[0].seq.wrapping_add(1))
}

fn encode_into<T: Serialize>(val: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let end = buf.len().min(MAX_PAYLOAD_BYTES);
    match bincode::serde::encode_into_slice(val, &mut buf[..end], ENCODE) {
        Ok(n) => Ok(n),
        Err(BinEncodeError::UnexpectedEnd) => Err(EncodeError::TooLarge),
        Err(_) => Err(EncodeError::Internal),
    }
}

/// Encodes a client message into `buf`, returning the bytes written. Fails with
/// [`EncodeError::TooLarge`] when it does not fit `buf` or [`MAX_PAYLOAD_BYTES`], and refuses
/// what the decoder would refuse (too many or non-consecutive frames).
pub fn encode_client(msg: &ClientMessage, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let ClientMessage::Input { frames, .. } = msg;
    if frames.len() > MAX_INPUT_FRAMES {
        return Err(EncodeError::TooManyFrames {
            count: frames.len(),
        });
    }
    if !frames_consecutive(frames) {
        return Err(EncodeError::NonConsecutiveFrames);
    }
    encode_into(msg, buf)
}

/// Encodes a server message into `buf`, returning the bytes written. Snapshots with more than
/// [`MAX_SNAPSHOT_ENTITIES`] entities are refused.
pub fn encode_server(msg: &ServerMessage, buf: &mut [u8]) -> Result<usize, EncodeError> {
    match msg {
        ServerMessage::Snapshot(snap) => encode_snapshot(snap, buf),
        _ => encode_into(msg, buf),
    }
}

/// Encodes `ServerMessage::Snapshot(snap)` without cloning `snap`: the same bytes as
/// `encode_server(&ServerMessage::Snapshot(snap.clone()), buf)`.
pub fn encode_snapshot(snap: &Snapshot, buf: &mut [u8]) -> Result<usize, EncodeError> {
    if snap.entities.len() > MAX_SNAPSHOT_ENTITIES {
        return Err(EncodeError::TooManyEntities {
            count: snap.entities.len(),
        });
    }
    encode_into(&ServerMessageRef::Snapshot(snap), buf)
}

fn map_decode_error(err: BinDecodeError) -> DecodeError {
    match err {
        BinDecodeError::UnexpectedEnd { .. } => DecodeError::Truncated,
        BinDecodeError::LimitExceeded => DecodeError::LimitExceeded,
        BinDecodeError::OtherString(s) if s == TOO_MANY_FRAMES => DecodeError::TooManyFrames,
        BinDecodeError::OtherString(s) if s == TOO_MANY_ENTITIES => DecodeError::TooManyEntities,
        _ => DecodeError::Malformed,
    }
}

/// Shared checks before bincode sees the bytes: size bound and a canonical, known top-level
/// variant index (one byte below `variants`).
fn precheck(bytes: &[u8], variants: u8) -> Result<(), DecodeError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLong { len: bytes.len() });
    }
    match bytes.first() {
        None => Err(DecodeError::Truncated),
        Some(&tag) if tag >= variants => Err(DecodeError::UnknownMessage { tag }),
        Some(_) => Ok(()),
    }
}

fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (msg, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, DECODE).map_err(map_decode_error)?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(msg)
}

/// Decodes one client message occupying exactly `bytes`. Never panics.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMessage, DecodeError> {
    precheck(bytes, CLIENT_VARIANTS)?;
    let msg: ClientMessage = decode_exact(bytes)?;
    let ClientMessage::Input { frames, .. } = &msg;
    if !frames_consecutive(frames) {
        return Err(DecodeError::NonConsecutiveFrames);
    }
    Ok(msg)
}

/// Decodes one server message occupying exactly `bytes`. Never panics.
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    precheck(bytes, SERVER_VARIANTS)?;
    decode_exact(bytes)
}
