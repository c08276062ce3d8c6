//! Replay protection: a 256-entry window on the packet sequence, as in the standard.
//!
//! `already_received` is checked before decryption; `advance` is called only after the
//! packet has decrypted (so forged packets cannot move the window).

/// Entries in the window.
pub const REPLAY_BUFFER_SIZE: usize = 256;

const EMPTY: u64 = u64::MAX;

/// Per-peer replay window.
#[derive(Clone, Debug)]
pub struct ReplayProtection {
    most_recent: u64,
    received: [u64; REPLAY_BUFFER_SIZE],
}

impl Default for ReplayProtection {
    fn default() -> Self {
        Self {
            most_recent: 0,
            received: [EMPTY; REPLAY_BUFFER_SIZE],
        }
    }
}

impl ReplayProtection {
    /// Forgets everything (new session).
    pub fn reset(&mut self) {
        self.most_recent = 0;
        self.received = [EMPTY; REPLAY_BUFFER_SIZE];
    }

    /// True if `sequence` is too old or was already received.
    pub fn already_received(&self, sequence: u64) -> bool {
        if sequence.saturating_add(REPLAY_BUFFER_SIZE as u64) <= self.most_recent {
            return true;
        }
        let entry = self.received[(sequence % REPLAY_BUFFER_SIZE as u64) as usize];
        entry != EMPTY && entry >= sequence
    }

    /// Records `sequence` as received (call after successful decryption).
    pub fn advance(&mut self, sequence: u64) {
        if sequence.saturating_add(REPLAY_BUFFER_SIZE as u64) <= self.most_recent {
            return;
        }
        if sequence > self.most_recent {
            self.most_recent = sequence;
        }
        self.received[(sequence % REPLAY_BUFFER_SIZE as u64) as usize] = sequence;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let mut r = ReplayProtection::default();
        assert!(!r.already_received(0));
        r.advance(0);
        assert!(r.already_received(0));
        assert!(!r.already_received(1));
        r.advance(1000);
        assert!(r.already_received(1000));
        assert!(r.already_received(1)); // too old
        assert!(r.already_received(744)); // 744 + 256 == 1000: outside
        assert!(!r.already_received(745));
        r.advance(745);
        assert!(r.already_received(745));
        assert!(!r.already_received(999));
        assert!(!r.already_received(1001));
        r.reset();
        assert!(!r.already_received(0));
    }
}
