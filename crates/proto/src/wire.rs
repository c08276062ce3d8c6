//! Encode and decode entry points.

use bincode::config::{self, Configuration, Limit};
use bincode::error::{DecodeError as BinDecodeError, EncodeError as BinEncodeError};
use serde::Serialize;

use crate::varint::{put_bytes, put_i32, put_u32, Reader};
use crate::{
    max_snapshot_entities, tag, ByeReason, ClientMessage, DecodeError, EncodeError, ServerMessage,
    Snapshot, Welcome, MAX_ENTITY_FIELDS, MAX_GAME_NAME, MAX_INPUT_BYTES, MAX_INPUT_FRAMES,
    MAX_PAYLOAD_BYTES,
};

/// Encode config: varint, little endian, no limit (the buffer is the limit).
const ENCODE: Configuration = config::standard();

/// Decode config: as [`ENCODE`], plus a claimed-memory limit so no length can allocate much.
const DECODE: Configuration<config::LittleEndian, config::Varint, Limit<MAX_PAYLOAD_BYTES>> =
    config::standard().with_limit::<MAX_PAYLOAD_BYTES>();

/// Borrowed mirror of the serde-encoded server messages, with their variant indices.
#[derive(Serialize)]
#[serde(rename = "ServerMessage")]
#[allow(dead_code)] // the variant order pins the indices; Snapshot is written by hand
enum ServerMessageRef<'a> {
    Welcome(&'a Welcome),
    Snapshot(()),
    Bye { reason: ByeReason },
}

fn encode_serde<T: Serialize>(val: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let end = buf.len().min(MAX_PAYLOAD_BYTES);
    match bincode::serde::encode_into_slice(val, &mut buf[..end], ENCODE) {
        Ok(n) => Ok(n),
        Err(BinEncodeError::UnexpectedEnd) => Err(EncodeError::TooLarge),
        Err(_) => Err(EncodeError::Internal),
    }
}

/// Whether a welcome's sizes are within the protocol's bounds.
fn welcome_valid(w: &Welcome) -> bool {
    w.game.len() <= MAX_GAME_NAME
        && (1..=MAX_INPUT_BYTES).contains(&(w.input_bytes as usize))
        && (w.entity_fields as usize) <= MAX_ENTITY_FIELDS
}

/// Encodes a welcome into `buf`, returning the bytes written.
pub fn encode_welcome(w: &Welcome, buf: &mut [u8]) -> Result<usize, EncodeError> {
    if !welcome_valid(w) {
        return Err(EncodeError::BadWelcome);
    }
    encode_serde(&ServerMessageRef::Welcome(w), buf)
}

/// Encodes a bye into `buf`, returning the bytes written (2).
pub fn encode_bye(reason: ByeReason, buf: &mut [u8]) -> Result<usize, EncodeError> {
    encode_serde(&ServerMessageRef::Bye { reason }, buf)
}

/// Encodes an input message: `ack_tick`, then the frames in `flat` (`input_bytes` each, oldest
/// first) numbered `first_seq`, `first_seq + 1`, ... (wrapping). At most
/// [`MAX_INPUT_FRAMES`] frames; an empty `flat` is a pure ack.
pub fn encode_input(
    ack_tick: u32,
    first_seq: u32,
    input_bytes: usize,
    flat: &[u8],
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    if !(1..=MAX_INPUT_BYTES).contains(&input_bytes) || flat.len() % input_bytes != 0 {
        return Err(EncodeError::BadInputSize { len: input_bytes });
    }
    let count = flat.len() / input_bytes;
    if count > MAX_INPUT_FRAMES {
        return Err(EncodeError::TooManyFrames { count });
    }
    let end = buf.len().min(MAX_PAYLOAD_BYTES);
    let buf = &mut buf[..end];
    let mut at = 0;
    let fit = (|| {
        put_bytes(buf, &mut at, &[tag::INPUT])?;
        put_u32(buf, &mut at, ack_tick)?;
        put_u32(buf, &mut at, count as u32)?;
        for (i, frame) in flat.chunks_exact(input_bytes).enumerate() {
            put_u32(buf, &mut at, first_seq.wrapping_add(i as u32))?;
            put_bytes(buf, &mut at, frame)?;
        }
        Some(())
    })();
    fit.map(|()| at).ok_or(EncodeError::TooLarge)
}

/// Writes a snapshot header (tag, `tick`, `last_input_seq`, `you`, entity `count`) at the start
/// of `buf`; returns where the first entity goes. `None` when `buf` is too small or `count`
/// above 250.
pub fn write_snapshot_header(
    buf: &mut [u8],
    tick: u32,
    last_input_seq: u32,
    you: u32,
    count: usize,
) -> Option<usize> {
    if count > 250 {
        return None;
    }
    let mut at = 0;
    put_bytes(buf, &mut at, &[tag::SNAPSHOT])?;
    put_u32(buf, &mut at, tick)?;
    put_u32(buf, &mut at, last_input_seq)?;
    put_u32(buf, &mut at, you)?;
    put_u32(buf, &mut at, count as u32)?;
    Some(at)
}

/// Appends one snapshot entity (id, then each field zigzag) at `buf[*at..]`.
pub fn write_snapshot_entity(
    buf: &mut [u8],
    at: &mut usize,
    id: u32,
    fields: &[i32],
) -> Option<()> {
    put_u32(buf, at, id)?;
    for &f in fields {
        put_i32(buf, at, f)?;
    }
    Some(())
}

/// Encodes a whole [`Snapshot`] (tests, tools; the server assembles snapshots from
/// pre-encoded entities with [`write_snapshot_header`]).
pub fn encode_snapshot(snap: &Snapshot, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let max = max_snapshot_entities(snap.fields_per_entity);
    if snap.fields_per_entity > MAX_ENTITY_FIELDS || snap.len() > max {
        return Err(EncodeError::TooManyEntities { count: snap.len() });
    }
    let end = buf.len().min(MAX_PAYLOAD_BYTES);
    let buf = &mut buf[..end];
    let mut at = write_snapshot_header(buf, snap.tick, snap.last_input_seq, snap.you, snap.len())
        .ok_or(EncodeError::TooLarge)?;
    for (id, fields) in snap.entities() {
        write_snapshot_entity(buf, &mut at, id, fields).ok_or(EncodeError::TooLarge)?;
    }
    Ok(at)
}

fn map_decode_error(err: BinDecodeError) -> DecodeError {
    match err {
        BinDecodeError::UnexpectedEnd { .. } => DecodeError::Truncated,
        BinDecodeError::LimitExceeded => DecodeError::LimitExceeded,
        _ => DecodeError::Malformed,
    }
}

/// Size bound and the message-type byte.
fn precheck(bytes: &[u8]) -> Result<u8, DecodeError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLong { len: bytes.len() });
    }
    bytes.first().copied().ok_or(DecodeError::Truncated)
}

fn decode_serde<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (msg, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, DECODE).map_err(map_decode_error)?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(msg)
}

/// Input frames of one [`ClientMessage::Input`], borrowed from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// Newest snapshot tick the client holds.
    pub ack_tick: u32,
    /// Sequence number of the first (oldest) frame.
    pub first_seq: u32,
    count: usize,
    frames: [&'a [u8]; MAX_INPUT_FRAMES],
}

impl<'a> Inputs<'a> {
    /// Frames in the message.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether this is a pure ack.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(seq, frame bytes)`, oldest first; sequences are consecutive (wrapping).
    pub fn frames(&self) -> impl Iterator<Item = (u32, &'a [u8])> + '_ {
        self.frames[..self.count]
            .iter()
            .enumerate()
            .map(|(i, f)| (self.first_seq.wrapping_add(i as u32), *f))
    }
}

/// Decodes one client message occupying exactly `bytes`, with frames of `input_bytes` bytes
/// (the game's size). Never panics.
pub fn decode_client(bytes: &[u8], input_bytes: usize) -> Result<ClientMessage<'_>, DecodeError> {
    match precheck(bytes)? {
        tag::INPUT => {
            let mut r = Reader::new(&bytes[1..]);
            let ack_tick = r.u32()?;
            let count = r.u64()?;
            if count > MAX_INPUT_FRAMES as u64 {
                return Err(DecodeError::TooManyFrames);
            }
            let mut inputs = Inputs {
                ack_tick,
                first_seq: 0,
                count: count as usize,
                frames: [&[]; MAX_INPUT_FRAMES],
            };
            for i in 0..inputs.count {
                let seq = r.u32()?;
                if i == 0 {
                    inputs.first_seq = seq;
                } else if seq != inputs.first_seq.wrapping_add(i as u32) {
                    return Err(DecodeError::NonConsecutiveFrames);
                }
                inputs.frames[i] = r.take(input_bytes)?;
            }
            r.finish()?;
            Ok(ClientMessage::Input(inputs))
        }
        tag::CLIENT_RELIABLE => Ok(ClientMessage::Reliable(&bytes[1..])),
        t => Err(DecodeError::UnknownMessage { tag: t }),
    }
}

/// A snapshot's bytes after the type byte, decoded on demand with the welcome's field count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotBytes<'a>(&'a [u8]);

impl<'a> SnapshotBytes<'a> {
    /// The header: `(tick, last_input_seq, you)`.
    pub fn header(&self) -> Result<(u32, u32, u32), DecodeError> {
        let mut r = Reader::new(self.0);
        Ok((r.u32()?, r.u32()?, r.u32()?))
    }

    /// Decodes into `out` (reusing its memory), with `fields` fields per entity.
    pub fn decode_into(&self, fields: usize, out: &mut Snapshot) -> Result<(), DecodeError> {
        if fields > MAX_ENTITY_FIELDS {
            return Err(DecodeError::Malformed);
        }
        let mut r = Reader::new(self.0);
        out.tick = r.u32()?;
        out.last_input_seq = r.u32()?;
        out.you = r.u32()?;
        out.fields_per_entity = fields;
        let count = r.u64()?;
        if count > max_snapshot_entities(fields) as u64 {
            return Err(DecodeError::TooManyEntities);
        }
        out.ids.clear();
        out.fields.clear();
        for _ in 0..count {
            out.ids.push(r.u32()?);
            for _ in 0..fields {
                out.fields.push(r.i32()?);
            }
        }
        r.finish()
    }

    /// Decodes into a new [`Snapshot`].
    pub fn decode(&self, fields: usize) -> Result<Snapshot, DecodeError> {
        let mut s = Snapshot::default();
        self.decode_into(fields, &mut s)?;
        Ok(s)
    }
}

/// Decodes one server message occupying exactly `bytes`. Snapshots are checked only for their
/// type here: decode them with [`SnapshotBytes::decode_into`] and the welcome's field count.
/// Never panics.
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage<'_>, DecodeError> {
    match precheck(bytes)? {
        tag::WELCOME => {
            let w: Welcome = decode_serde(&bytes[1..])?;
            if !welcome_valid(&w) {
                return Err(DecodeError::Malformed);
            }
            Ok(ServerMessage::Welcome(w))
        }
        tag::SNAPSHOT => Ok(ServerMessage::Snapshot(SnapshotBytes(&bytes[1..]))),
        tag::BYE => Ok(ServerMessage::Bye {
            reason: decode_serde(&bytes[1..])?,
        }),
        tag::SERVER_RELIABLE => Ok(ServerMessage::Reliable(&bytes[1..])),
        t => Err(DecodeError::UnknownMessage { tag: t }),
    }
}
