//! A bot that wanders: a seeded random walk.

use tickwire_game::{Bot, SplitMix64};

use crate::wire::{encode_input, DIR_NONE};
use crate::{FLAG_IT, KIND_PLAYER};

/// Plays tag by wandering: holds a random direction (sometimes none) for 30..=90 ticks
/// (about a second at 60 Hz), turns early when it did not move (stuck at the field's edge),
/// sprints in bursts while it is "it" and now and then otherwise. It only sees its own
/// entity's fields (`[kind, x, y, flags, stamina]`).
#[derive(Debug)]
pub struct TagBot {
    rng: SplitMix64,
    dir: u8,
    /// Ticks until the next turn.
    left: u32,
    /// Sprint chosen at the last turn (when not "it").
    sprint: bool,
    /// Own position last tick.
    last: Option<(i32, i32)>,
}

impl TagBot {
    /// A bot seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        TagBot {
            rng: SplitMix64::new(seed ^ 0x5441_4742_4F54_0001),
            dir: DIR_NONE,
            left: 0,
            sprint: false,
            last: None,
        }
    }

    fn turn(&mut self) {
        self.dir = if self.rng.below(10) == 0 {
            DIR_NONE
        } else {
            1 + self.rng.below(8) as u8
        };
        self.left = 30 + self.rng.below(61) as u32;
        self.sprint = self.rng.below(5) == 0;
    }
}

impl Bot for TagBot {
    fn input(&mut self, _tick: u32, me: Option<&[i32]>, frame: &mut [u8]) {
        let me = me.filter(|f| f.len() >= 5 && f[0] == KIND_PLAYER);
        let (pos, it, stamina) = match me {
            Some(f) => (Some((f[1], f[2])), f[3] & FLAG_IT != 0, f[4]),
            None => (None, false, 0),
        };
        let stuck = self.dir != DIR_NONE && pos.is_some() && pos == self.last;
        self.last = pos;
        if self.left == 0 || stuck {
            self.turn();
        }
        self.left = self.left.saturating_sub(1);
        let sprint = if it { stamina >= 300 } else { self.sprint };
        let bytes = encode_input(self.dir, sprint);
        let n = frame.len().min(bytes.len());
        frame[..n].copy_from_slice(&bytes[..n]);
    }
}
