//! A fixed-capacity FIFO of input frames, one per client.
//!
//! Frames are pushed in sequence order (the caller filters duplicates) and popped in the same
//! order at the tick. It never allocates after construction; when full, the oldest frame is
//! dropped so the newest intent always gets through, and the caller counts the drop.

use tickwire_proto::MAX_INPUT_BYTES;

use crate::INPUT_QUEUE_FRAMES;

/// One queued input frame: its sequence number and the game's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputFrame {
    /// Client input sequence number.
    pub seq: u32,
    len: u8,
    bytes: [u8; MAX_INPUT_BYTES],
}

impl Default for InputFrame {
    fn default() -> Self {
        InputFrame {
            seq: 0,
            len: 0,
            bytes: [0; MAX_INPUT_BYTES],
        }
    }
}

impl InputFrame {
    /// A frame (`bytes` longer than [`MAX_INPUT_BYTES`] is cut).
    pub fn new(seq: u32, bytes: &[u8]) -> Self {
        let len = bytes.len().min(MAX_INPUT_BYTES);
        let mut f = InputFrame {
            seq,
            len: len as u8,
            bytes: [0; MAX_INPUT_BYTES],
        };
        f.bytes[..len].copy_from_slice(&bytes[..len]);
        f
    }

    /// The game's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Ring buffer of [`INPUT_QUEUE_FRAMES`] input frames.
#[derive(Debug, Clone)]
pub struct InputQueue {
    frames: [InputFrame; INPUT_QUEUE_FRAMES],
    head: usize,
    len: usize,
}

impl Default for InputQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl InputQueue {
    /// An empty queue.
    pub fn new() -> Self {
        InputQueue {
            frames: [InputFrame::default(); INPUT_QUEUE_FRAMES],
            head: 0,
            len: 0,
        }
    }

    /// Appends `frame`; returns `true` when the queue was full and the oldest frame was dropped.
    pub fn push(&mut self, frame: InputFrame) -> bool {
        let overflowed = self.len == INPUT_QUEUE_FRAMES;
        if overflowed {
            self.head = (self.head + 1) % INPUT_QUEUE_FRAMES;
            self.len -= 1;
        }
        self.frames[(self.head + self.len) % INPUT_QUEUE_FRAMES] = frame;
        self.len += 1;
        overflowed
    }

    /// Removes and returns the oldest frame.
    pub fn pop(&mut self) -> Option<InputFrame> {
        if self.len == 0 {
            return None;
        }
        let frame = self.frames[self.head];
        self.head = (self.head + 1) % INPUT_QUEUE_FRAMES;
        self.len -= 1;
        Some(frame)
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u32) -> InputFrame {
        InputFrame::new(seq, &[seq as u8, 1, 2])
    }

    #[test]
    fn fifo_order() {
        let mut q = InputQueue::new();
        for seq in 1..=5 {
            assert!(!q.push(frame(seq)));
        }
        let popped: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|f| f.seq).collect();
        assert_eq!(popped, vec![1, 2, 3, 4, 5]);
        assert_eq!(frame(7).bytes(), &[7, 1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn overflow_drops_oldest() {
        let mut q = InputQueue::new();
        let total = INPUT_QUEUE_FRAMES as u32 + 3;
        let drops = (1..=total).filter(|&seq| q.push(frame(seq))).count();
        assert_eq!(drops, 3);
        assert_eq!(q.len(), INPUT_QUEUE_FRAMES);
        assert_eq!(q.pop().map(|f| f.seq), Some(4));
    }
}
