//! Typed encode and decode errors.

use std::fmt;

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoding does not fit the buffer or exceeds [`crate::MAX_PAYLOAD_BYTES`].
    TooLarge,
    /// More than [`crate::MAX_INPUT_FRAMES`] input frames.
    TooManyFrames {
        /// Frames given.
        count: usize,
    },
    /// Input frame sequence numbers are not consecutive (oldest first, +1 each, wrapping).
    NonConsecutiveFrames,
    /// More than [`crate::max_snapshot_entities`] snapshot entities.
    TooManyEntities {
        /// Entities given.
        count: usize,
    },
    /// An input frame size outside `1..=MAX_INPUT_BYTES`, or input bytes not a whole number
    /// of frames.
    BadInputSize {
        /// The frame size given.
        len: usize,
    },
    /// A welcome whose game name or sizes are out of the protocol's bounds.
    BadWelcome,
    /// bincode reported an error that none of the above explains (should not happen).
    Internal,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge => write!(
                f,
                "message does not fit the buffer or exceeds {} bytes",
                crate::MAX_PAYLOAD_BYTES
            ),
            EncodeError::TooManyFrames { count } => write!(
                f,
                "{count} input frames, at most {} allowed",
                crate::MAX_INPUT_FRAMES
            ),
            EncodeError::NonConsecutiveFrames => {
                f.write_str("input frame sequence numbers are not consecutive")
            }
            EncodeError::TooManyEntities { count } => write!(
                f,
                "{count} snapshot entities, more than fit for this field count"
            ),
            EncodeError::BadInputSize { len } => write!(
                f,
                "input frames of {len} bytes (allowed 1..={}), or not a whole number of frames",
                crate::MAX_INPUT_BYTES
            ),
            EncodeError::BadWelcome => f.write_str("welcome out of bounds (game name or sizes)"),
            EncodeError::Internal => f.write_str("internal bincode encode error"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why received bytes are not a valid message. Every variant is a hostile or broken peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than [`crate::MAX_PAYLOAD_BYTES`].
    TooLong {
        /// Input length.
        len: usize,
    },
    /// The input ends in the middle of the message (this includes an empty input and a
    /// sequence length larger than the bytes that follow).
    Truncated,
    /// The message ended before the input did.
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// The leading message-type byte names no known message (or uses a non-canonical varint).
    UnknownMessage {
        /// The first byte.
        tag: u8,
    },
    /// More than [`crate::MAX_INPUT_FRAMES`] input frames declared or present.
    TooManyFrames,
    /// Input frame sequence numbers are not consecutive.
    NonConsecutiveFrames,
    /// More than [`crate::max_snapshot_entities`] snapshot entities declared or present.
    TooManyEntities,
    /// The decode limit ([`crate::MAX_PAYLOAD_BYTES`] of claimed memory) was hit.
    LimitExceeded,
    /// Any other malformation: an unknown nested variant, an invalid varint marker, ...
    Malformed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLong { len } => write!(
                f,
                "message of {len} bytes exceeds {} bytes",
                crate::MAX_PAYLOAD_BYTES
            ),
            DecodeError::Truncated => f.write_str("message truncated"),
            DecodeError::TrailingBytes { extra } => {
                write!(f, "{extra} trailing bytes after the message")
            }
            DecodeError::UnknownMessage { tag } => write!(f, "unknown message type byte {tag}"),
            DecodeError::TooManyFrames => {
                write!(f, "more than {} input frames", crate::MAX_INPUT_FRAMES)
            }
            DecodeError::NonConsecutiveFrames => {
                f.write_str("input frame sequence numbers are not consecutive")
            }
            DecodeError::TooManyEntities => {
                f.write_str("more snapshot entities than fit for this field count")
            }
            DecodeError::LimitExceeded => f.write_str("decode limit exceeded"),
            DecodeError::Malformed => f.write_str("malformed message"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    /// Stable snake_case name, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeError::TooLong { .. } => "too_long",
            DecodeError::Truncated => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::UnknownMessage { .. } => "unknown_message",
            DecodeError::TooManyFrames => "too_many_frames",
            DecodeError::NonConsecutiveFrames => "non_consecutive_frames",
            DecodeError::TooManyEntities => "too_many_entities",
            DecodeError::LimitExceeded => "limit_exceeded",
            DecodeError::Malformed => "malformed",
        }
    }
}
