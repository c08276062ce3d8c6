//! tickwire-proto: the game messages carried inside netcode payload packets.
//!
//! Client -> server: [`ClientMessage::Input`] (the newest input plus up to
//! [`MAX_INPUT_FRAMES`]` - 1` earlier ones for redundancy). Server -> client:
//! [`ServerMessage::Welcome`] once, then [`ServerMessage::Snapshot`] every tick, and
//! [`ServerMessage::Bye`] before a deliberate disconnect.
//!
//! The wire format is serde + bincode 2.0.1 with `bincode::config::standard()` (varint integers,
//! little endian); see `PROTOCOL-GAME.md` next to this crate for the byte layout. Golden-byte
//! tests pin it so a bincode upgrade cannot silently change it.
//!
//! Encoding writes into a caller-provided buffer (no allocation) and never produces more than
//! [`MAX_PAYLOAD_BYTES`]. Decoding never panics: it rejects inputs longer than
//! [`MAX_PAYLOAD_BYTES`], truncated or trailing bytes, unknown variants, and containers longer
//! than their protocol bound *before* allocating for them.
//!
//! Beside those unreliable per-tick messages, [`reliable`] provides a sans-IO reliable, ordered,
//! fragmenting message channel (game events: the level description at join, scores, chat)
//! with its own hand-written byte layout, carried in payloads under a tag byte of the caller's.
#![forbid(unsafe_code)]

mod bounded;
mod error;
pub mod reliable;
mod wire;

pub use error::{DecodeError, EncodeError};
pub use wire::{decode_client, decode_server, encode_client, encode_server, encode_snapshot};

use serde::{Deserialize, Serialize};

/// Largest game message, in bytes (fits a netcode payload with room to spare).
pub const MAX_PAYLOAD_BYTES: usize = 1200;

/// Most input frames in one [`ClientMessage::Input`]: the newest plus up to 7 earlier ones.
pub const MAX_INPUT_FRAMES: usize = 8;

/// Most bytes a `u32` takes as a bincode `standard()` varint (marker 252 + 4 bytes).
const VARINT_U32_MAX_BYTES: usize = 5;

/// Bytes a length prefix (`u64` varint) of value `n` takes.
const fn varint_len_bytes(n: usize) -> usize {
    if n < 251 {
        1
    } else if n <= u16::MAX as usize {
        3
    } else if n <= u32::MAX as usize {
        5
    } else {
        9
    }
}

/// Worst-case encoded size of one [`EntityState`]: three 32-bit varints of 5 bytes each.
pub const ENTITY_STATE_MAX_BYTES: usize = 3 * VARINT_U32_MAX_BYTES;

/// Worst-case encoded size of a `ServerMessage::Snapshot` carrying `entities` entities: the
/// variant index (1 byte), `tick`, `last_input_seq` and `you` (5 bytes each at most), the
/// entity count prefix, and the entities at [`ENTITY_STATE_MAX_BYTES`] each.
pub const fn snapshot_max_encoded_bytes(entities: usize) -> usize {
    1 + 3 * VARINT_U32_MAX_BYTES + varint_len_bytes(entities) + entities * ENTITY_STATE_MAX_BYTES
}

/// Bytes the bincode decode limit charges for a snapshot with `entities` entities: bincode
/// counts the in-memory size of every decoded primitive (4 per `u32`/`i32`, 8 per length
/// prefix), not the varint size, so this must stay within [`MAX_PAYLOAD_BYTES`] too.
const fn snapshot_decode_claim_bytes(entities: usize) -> usize {
    4 + 3 * 4 + 8 + entities * 12
}

const fn compute_max_snapshot_entities() -> usize {
    let mut n = 0;
    while snapshot_max_encoded_bytes(n + 1) <= MAX_PAYLOAD_BYTES
        && snapshot_decode_claim_bytes(n + 1) <= MAX_PAYLOAD_BYTES
    {
        n += 1;
    }
    n
}

/// Most entities in one [`Snapshot`]: the largest count whose worst-case encoding (every field
/// at its longest varint) still fits in [`MAX_PAYLOAD_BYTES`]. Evaluates to 78.
pub const MAX_SNAPSHOT_ENTITIES: usize = compute_max_snapshot_entities();

const _: () = assert!(snapshot_max_encoded_bytes(MAX_SNAPSHOT_ENTITIES) <= MAX_PAYLOAD_BYTES);
const _: () = assert!(snapshot_decode_claim_bytes(MAX_SNAPSHOT_ENTITIES) <= MAX_PAYLOAD_BYTES);

/// One tick of player input.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InputFrame {
    /// Client input sequence number; consecutive frames in one message differ by exactly 1
    /// (wrapping).
    pub seq: u32,
    /// Horizontal move direction, -127..=127 (-128 is accepted and treated as -127 by the sim's
    /// magnitude clamp).
    pub move_x: i8,
    /// Vertical move direction, -127..=127.
    pub move_y: i8,
    /// Button bits: bit 0 = boost ([`BUTTON_BOOST`]). Other bits are reserved and ignored.
    pub buttons: u8,
}

/// [`InputFrame::buttons`] bit for boost.
pub const BUTTON_BOOST: u8 = 1;

/// Messages sent by the client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Input frames, oldest to newest, with consecutive `seq`; at most [`MAX_INPUT_FRAMES`]
    /// (an empty list is a pure ack). `ack_tick` is the newest snapshot tick the client has.
    Input {
        /// Newest snapshot tick received by the client.
        ack_tick: u32,
        /// Frames, oldest first.
        #[serde(deserialize_with = "bounded::input_frames")]
        frames: Vec<InputFrame>,
    },
}

/// One entity in a snapshot, in world units (see tickwire-sim).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityState {
    /// Entity id.
    pub id: u32,
    /// Position x.
    pub x: i32,
    /// Position y.
    pub y: i32,
}

/// The world as seen by one client at one tick.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Simulation tick this snapshot was taken after.
    pub tick: u32,
    /// The newest input sequence number applied for this client.
    pub last_input_seq: u32,
    /// This client's own entity id.
    pub you: u32,
    /// At most [`MAX_SNAPSHOT_ENTITIES`] entities, nearest to `you` first (including `you`).
    #[serde(deserialize_with = "bounded::snapshot_entities")]
    pub entities: Vec<EntityState>,
}

/// Sent once after the connection is established.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// This client's entity id.
    pub player_id: u32,
    /// Simulation step length in milliseconds.
    pub tick_ms: u16,
    /// Current simulation tick.
    pub tick: u32,
    /// Arena width in world units.
    pub arena_width: i32,
    /// Arena height in world units.
    pub arena_height: i32,
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

/// Messages sent by the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// Connection accepted; sent once.
    Welcome(Welcome),
    /// Per-tick world state.
    Snapshot(Snapshot),
    /// The server is about to disconnect this client.
    Bye {
        /// Why.
        reason: ByeReason,
    },
}
