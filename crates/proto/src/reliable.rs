//! PLACEHOLDER (uncommitted): replaced by the real channel.
use std::time::Duration;

/// Config.
#[derive(Clone, Debug, Default)]
pub struct ChannelConfig {
    /// Max message.
    pub max_message_bytes: usize,
}

/// Error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// Too large.
    TooLarge {
        /// len
        len: usize,
        /// max
        max: usize,
    },
    /// Backlog.
    Backlog {
        /// pending
        pending: usize,
        /// max
        max: usize,
    },
}

impl ChannelError {
    /// Name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelError::TooLarge { .. } => "too_large",
            ChannelError::Backlog { .. } => "backlog",
        }
    }
}

/// Channel.
#[derive(Debug)]
pub struct Channel {
    q: Vec<Vec<u8>>,
}

impl Channel {
    /// New.
    pub fn new(_cfg: ChannelConfig) -> Self {
        Channel { q: Vec::new() }
    }
    /// Send.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        self.q.push(msg.to_vec());
        Ok(())
    }
    /// Poll.
    pub fn poll_packet(&mut self, _now: Duration, buf: &mut [u8]) -> Option<usize> {
        let m = self.q.pop()?;
        let n = m.len().min(buf.len());
        buf[..n].copy_from_slice(&m[..n]);
        Some(n)
    }
    /// Handle.
    pub fn handle_packet(
        &mut self,
        _now: Duration,
        body: &[u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<(), crate::DecodeError> {
        deliver(body);
        Ok(())
    }
}
