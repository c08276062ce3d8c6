//! tickwire-proto: the game messages carried inside netcode payload packets.
//!
//! The core of these messages knows no game: an input frame is `input_bytes` opaque bytes the
//! game defines, an entity in a snapshot is an id and `entity_fields` signed integers the game
//! defines, and events are opaque reliable messages. The welcome tells a client which game, which
//! protocol version and which sizes it speaks.
//!
//! Client -> server: [`ClientMessage::Input`] (the newest input plus up to
//! [`MAX_INPUT_FRAMES`]` - 1` earlier ones for redundancy) and [`ClientMessage::Reliable`]
//! (a [`reliable`] channel packet: events, acks). Server -> client: [`Welcome`] (resent until a
//! snapshot is acked), a snapshot every tick, `Bye` before a deliberate disconnect, and
//! reliable channel packets.
//!
//! Integer encodings are bincode 2.0.1's `standard()` (varint, zigzag for signed, little
//! endian). The welcome and bye are serde + bincode; inputs and snapshots, the hot path, are
//! written by hand with the same encodings (tests check them against bincode). See
//! `PROTOCOL-GAME.md` next to this crate and docs/protocol.md. Encoding writes into a
//! caller-provided buffer and never produces more than [`MAX_PAYLOAD_BYTES`]. Decoding never
//! panics and never allocates more than a bounded amount: it rejects inputs longer than
//! [`MAX_PAYLOAD_BYTES`], truncated or trailing bytes, unknown message types and counts beyond
//! their bounds.
#![forbid(unsafe_code)]

mod error;
pub mod reliable;
pub mod varint;
mod wire;

pub use error::{DecodeError, EncodeError};
pub use wire::{
    decode_client, decode_server, encode_bye, encode_input, encode_snapshot, encode_welcome,
    write_snapshot_entity, write_snapshot_header, Inputs, SnapshotBytes,
};

use serde::{Deserialize, Serialize};

/// Version of the game-message protocol described here (told to clients in the welcome).
/// Version 1 was the arena-only protocol (welcome with the arena size).
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest game message, in bytes (fits a netcode payload with room to spare).
pub const MAX_PAYLOAD_BYTES: usize = 1200;

/// Most input frames in one [`ClientMessage::Input`]: the newest plus up to 7 earlier ones.
pub const MAX_INPUT_FRAMES: usize = 8;

/// Most bytes in one input frame (the game chooses the exact size).
pub const MAX_INPUT_BYTES: usize = 32;

/// Most state fields per snapshot entity (the game chooses the exact count).
pub const MAX_ENTITY_FIELDS: usize = 16;

/// Longest game name in the welcome, in bytes.
pub const MAX_GAME_NAME: usize = 32;

/// `you` / `player_id` of a player who has no entity (a spectator).
pub const NO_ENTITY: u32 = u32::MAX;

/// Message-type bytes (the first byte of every game message).
pub mod tag {
    /// Client -> server: inputs.
    pub const INPUT: u8 = 0;
    /// Client -> server: a reliable channel packet.
    pub const CLIENT_RELIABLE: u8 = 1;
    /// Server -> client: the welcome.
    pub const WELCOME: u8 = 0;
    /// Server -> client: a snapshot.
    pub const SNAPSHOT: u8 = 1;
    /// Server -> client: bye.
    pub const BYE: u8 = 2;
    /// Server -> client: a reliable channel packet.
    pub const SERVER_RELIABLE: u8 = 3;
}

/// Worst-case snapshot header: tag, `tick`, `last_input_seq`, `you` (5 bytes each at most) and
/// the one-byte entity count.
pub const SNAPSHOT_HEADER_MAX_BYTES: usize = 1 + 3 * varint::U32_MAX_BYTES + 1;

/// Worst-case encoded size of one snapshot entity with `fields` fields (id and fields, 5 bytes
/// each at most).
pub const fn entity_max_bytes(fields: usize) -> usize {
    (1 + fields) * varint::U32_MAX_BYTES
}

/// Most entities in one snapshot of a game with `fields` fields per entity: the largest count
/// whose worst case (every varint at its longest) still fits in [`MAX_PAYLOAD_BYTES`], and
/// below 251 so the count is one byte. Two fields (the arena): 78; four: 47.
pub const fn max_snapshot_entities(fields: usize) -> usize {
    let n = (MAX_PAYLOAD_BYTES - SNAPSHOT_HEADER_MAX_BYTES) / entity_max_bytes(fields);
    if n > 250 {
        250
    } else {
        n
    }
}

const _: () = assert!(max_snapshot_entities(2) == 78);
const _: () = assert!(max_snapshot_entities(MAX_ENTITY_FIELDS) >= 1);

/// One snapshot, decoded (client side). Entities are nearest to `you` first (`you` itself
/// first when the player has an entity).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Simulation tick this snapshot was taken after.
    pub tick: u32,
    /// The newest input sequence number applied for this client.
    pub last_input_seq: u32,
    /// This client's own entity id ([`NO_ENTITY`] when it has none).
    pub you: u32,
    /// Fields per entity (from the welcome).
    pub fields_per_entity: usize,
    /// Entity ids.
    pub ids: Vec<u32>,
    /// `fields_per_entity` fields per entity, entity after entity.
    pub fields: Vec<i32>,
}

impl Snapshot {
    /// Entities in the snapshot.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds no entity.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Entity `i`: its id and fields.
    pub fn entity(&self, i: usize) -> (u32, &[i32]) {
        let n = self.fields_per_entity;
        (self.ids[i], &self.fields[i * n..(i + 1) * n])
    }

    /// Every entity: id and fields.
    pub fn entities(&self) -> impl Iterator<Item = (u32, &[i32])> + '_ {
        (0..self.ids.len()).map(|i| self.entity(i))
    }

    /// The fields of entity `id`, if present.
    pub fn find(&self, id: u32) -> Option<&[i32]> {
        let i = self.ids.iter().position(|&e| e == id)?;
        Some(self.entity(i).1)
    }

    /// Appends one entity (fields beyond `fields_per_entity` ignored, missing ones 0).
    pub fn push(&mut self, id: u32, fields: &[i32]) {
        self.ids.push(id);
        let n = self.fields_per_entity;
        let given = fields.len().min(n);
        self.fields.extend_from_slice(&fields[..given]);
        self.fields.extend(std::iter::repeat_n(0, n - given));
    }
}

/// Sent after the connection is established, and again every few ticks until the client
/// acknowledges a snapshot. Everything a client needs to read the rest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// This client's entity id ([`NO_ENTITY`] when it has none yet).
    pub player_id: u32,
    /// Simulation step length in milliseconds.
    pub tick_ms: u16,
    /// Current simulation tick.
    pub tick: u32,
    /// [`PROTOCOL_VERSION`] of the server.
    pub protocol_version: u16,
    /// The game's name (`arena`, `tag`, ...), at most [`MAX_GAME_NAME`] bytes.
    pub game: String,
    /// Version of the game's own encodings.
    pub game_version: u16,
    /// Bytes per input frame, `1..=MAX_INPUT_BYTES`.
    pub input_bytes: u8,
    /// Fields per snapshot entity, `0..=MAX_ENTITY_FIELDS`.
    pub entity_fields: u8,
}

/// Why the server is disconnecting a client on purpose.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByeReason {
    /// The server process is shutting down.
    ServerShutdown,
    /// The server is draining (no new play; reconnect elsewhere).
    Draining,
    /// An operator removed this client.
    Kicked,
    /// No free player slot.
    ServerFull,
}

impl ByeReason {
    /// snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::ServerShutdown => "server_shutdown",
            ByeReason::Draining => "draining",
            ByeReason::Kicked => "kicked",
            ByeReason::ServerFull => "server_full",
        }
    }
}

impl std::fmt::Display for ByeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Messages sent by the client (borrowing the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// Input frames and the newest snapshot tick received.
    Input(Inputs<'a>),
    /// A reliable channel packet body (see [`reliable`]).
    Reliable(&'a [u8]),
}

/// Messages sent by the server (borrowing the payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// Connection accepted; resent until acknowledged.
    Welcome(Welcome),
    /// Per-tick world state, decoded with the welcome's field count.
    Snapshot(SnapshotBytes<'a>),
    /// The server is about to disconnect this client.
    Bye {
        /// Why.
        reason: ByeReason,
    },
    /// A reliable channel packet body (see [`reliable`]).
    Reliable(&'a [u8]),
}
