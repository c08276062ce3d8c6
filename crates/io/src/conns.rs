//! What every backend keeps per stream connection: a generational slot table (so a stale
//! [`ConnId`] is refused, never delivered to the connection that reused its slot) and the
//! bounded send buffer behind [`Backend::send_stream`](crate::Backend::send_stream).

use crate::{ConnId, SendError};

/// A slab of connections with a generation per slot.
pub(crate) struct ConnTable<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> ConnTable<T> {
    pub(crate) fn new() -> Self {
        ConnTable {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value` in a free slot (or a new one) and returns its handle.
    pub(crate) fn insert(&mut self, value: T) -> ConnId {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.value = Some(value);
            return ConnId {
                index,
                generation: slot.generation,
            };
        }
        let index = self.slots.len() as u32;
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        ConnId {
            index,
            generation: 0,
        }
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&T> {
        match self.slots.get(id.index as usize) {
            Some(slot) if slot.generation == id.generation => slot.value.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(id.index as usize) {
            Some(slot) if slot.generation == id.generation => slot.value.as_mut(),
            _ => None,
        }
    }

    /// The live connection in slot `index`, with its handle (for tokens that carry the index
    /// only, such as epoll's).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn at_mut(&mut self, index: u32) -> Option<(ConnId, &mut T)> {
        let slot = self.slots.get_mut(index as usize)?;
        let generation = slot.generation;
        slot.value
            .as_mut()
            .map(|v| (ConnId { index, generation }, v))
    }

    /// Takes the connection out; its slot's generation moves on, so `id` is stale from now.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        Some(value)
    }

    /// Every live connection, with its handle.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, slot)| {
            let generation = slot.generation;
            slot.value.as_mut().map(|v| {
                (
                    ConnId {
                        index: i as u32,
                        generation,
                    },
                    v,
                )
            })
        })
    }

    /// Every live connection's handle, into `out` (cleared first).
    pub(crate) fn ids_into(&self, out: &mut Vec<ConnId>) {
        out.clear();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.value.is_some() {
                out.push(ConnId {
                    index: i as u32,
                    generation: slot.generation,
                });
            }
        }
    }
}

/// A connection's bounded send buffer: bytes not yet taken by the kernel, in order. It grows
/// as it fills, up to `cap`, and keeps its allocation for reuse.
pub(crate) struct SendBuf {
    bytes: Vec<u8>,
    /// Bytes before `start` were written already.
    start: usize,
    cap: usize,
}

impl SendBuf {
    pub(crate) fn new(cap: usize) -> Self {
        SendBuf {
            bytes: Vec::new(),
            start: 0,
            cap,
        }
    }

    /// Bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room left.
    pub(crate) fn capacity_left(&self) -> usize {
        self.cap - self.len()
    }

    /// Appends all of `data`, or nothing ([`SendError::Full`]).
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), SendError> {
        if data.len() > self.capacity_left() {
            return Err(SendError::Full);
        }
        if self.start > 0 && self.bytes.len() + data.len() > self.bytes.capacity() {
            // Move the unwritten tail to the front instead of growing.
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// The bytes waiting, oldest first.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Marks `n` bytes of [`SendBuf::pending`] as written.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_are_refused_after_reuse() {
        let mut t = ConnTable::new();
        let a = t.insert("a");
        assert_eq!(t.remove(a), Some("a"));
        let b = t.insert("b");
        assert_eq!(b.index, a.index);
        assert_ne!(b.generation, a.generation);
        assert!(t.get(a).is_none());
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.remove(a), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn send_buf_is_bounded_and_all_or_nothing() {
        let mut b = SendBuf::new(10);
        b.push(b"hello").unwrap();
        assert_eq!(b.push(b"worlds"), Err(SendError::Full));
        assert_eq!(b.pending(), b"hello");
        b.consume(3);
        b.push(b"world!!").unwrap();
        assert_eq!(b.pending(), b"loworld!!");
        assert_eq!(b.capacity_left(), 1);
        b.consume(100);
        assert!(b.is_empty());
    }
}
