//! Length-bounded `Vec` deserializers.
//!
//! bincode's serde path does not charge a sequence's declared length against the decode limit,
//! and serde's `Vec` visitor preallocates up to 1 MiB from that length. These visitors reject a
//! declared (or actual) length above the protocol bound before allocating anything for it, and
//! then allocate at most the bound.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

use crate::{EntityState, InputFrame, MAX_INPUT_FRAMES, MAX_SNAPSHOT_ENTITIES};

/// Error message used to recognise "too many input frames" after bincode wraps it.
pub(crate) const TOO_MANY_FRAMES: &str = "tickwire-proto: too many input frames";
/// Error message used to recognise "too many snapshot entities" after bincode wraps it.
pub(crate) const TOO_MANY_ENTITIES: &str = "tickwire-proto: too many snapshot entities";

struct BoundedVec<T> {
    max: usize,
    too_many: &'static str,
    _marker: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedVec<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {} elements", self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let hint = seq.size_hint().unwrap_or(0);
        if hint > self.max {
            return Err(A::Error::custom(self.too_many));
        }
        let mut out = Vec::with_capacity(hint);
        while let Some(item) = seq.next_element()? {
            if out.len() == self.max {
                return Err(A::Error::custom(self.too_many));
            }
            out.push(item);
        }
        Ok(out)
    }
}

pub(crate) fn input_frames<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<InputFrame>, D::Error> {
    d.deserialize_seq(BoundedVec {
        max: MAX_INPUT_FRAMES,
        too_many: TOO_MANY_FRAMES,
        _marker: PhantomData,
    })
}

pub(crate) fn snapshot_entities<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<EntityState>, D::Error> {
    d.deserialize_seq(BoundedVec {
        max: MAX_SNAPSHOT_ENTITIES,
        too_many: TOO_MANY_ENTITIES,
        _marker: PhantomData,
    })
}
