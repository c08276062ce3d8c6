//! bincode 2 `standard()` integer encodings, by hand (the hot paths: inputs and snapshots).
//!
//! Unsigned: `< 251` is one byte; else marker `251` + `u16` LE, `252` + `u32` LE, `253` + `u64`
//! LE. Signed: zigzag first. Tests in `tests/wire.rs` check these against bincode itself.

use crate::DecodeError;

/// Most bytes a `u32` varint takes.
pub const U32_MAX_BYTES: usize = 5;

/// Appends `v` as a varint at `buf[*at..]`; `None` when it does not fit.
#[inline]
pub fn put_u32(buf: &mut [u8], at: &mut usize, v: u32) -> Option<()> {
    let i = *at;
    if v < 251 {
        *buf.get_mut(i)? = v as u8;
        *at = i + 1;
    } else if v <= u16::MAX as u32 {
        let dst = buf.get_mut(i..i + 3)?;
        dst[0] = 251;
        dst[1..].copy_from_slice(&(v as u16).to_le_bytes());
        *at = i + 3;
    } else {
        let dst = buf.get_mut(i..i + 5)?;
        dst[0] = 252;
        dst[1..].copy_from_slice(&v.to_le_bytes());
        *at = i + 5;
    }
    Some(())
}

/// Appends `v` zigzag-encoded.
#[inline]
pub fn put_i32(buf: &mut [u8], at: &mut usize, v: i32) -> Option<()> {
    put_u32(buf, at, zigzag(v))
}

/// Appends raw bytes.
#[inline]
pub fn put_bytes(buf: &mut [u8], at: &mut usize, bytes: &[u8]) -> Option<()> {
    let dst = buf.get_mut(*at..*at + bytes.len())?;
    dst.copy_from_slice(bytes);
    *at += bytes.len();
    Some(())
}

/// Zigzag: `n >= 0 -> 2n`, `n < 0 -> -2n - 1`.
#[inline]
pub fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// A bounds-checked reader over one message.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The unread rest.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    /// One raw byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    /// `n` raw bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let s = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or(DecodeError::Truncated)?;
        self.at += n;
        Ok(s)
    }

    /// A `u64` varint (markers up to 253).
    #[inline]
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        match self.u8()? {
            b @ 0..=250 => Ok(b as u64),
            251 => Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap_or_default()) as u64),
            252 => Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()) as u64),
            253 => Ok(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or_default(),
            )),
            _ => Err(DecodeError::Malformed),
        }
    }

    /// A `u32` varint; a value that does not fit is malformed.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u64()?).map_err(|_| DecodeError::Malformed)
    }

    /// A zigzag `i32` varint.
    #[inline]
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(unzigzag(self.u32()?))
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless everything was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}
