//! A sans-IO reliable, ordered, fragmenting message channel.
//!
//! Game events (the level description at join, score changes, chat) travel beside the
//! unreliable per-tick snapshots inside netcode payload packets. One [`Channel`] serves one
//! direction pair: it both sends (with sequence numbers, resends and a window) and receives
//! (with reordering, reassembly and acks). The caller owns the socket and the clock:
//!
//! * [`Channel::send`] queues one message (copied, never partially queued);
//! * [`Channel::poll_packet`] writes the next packet body to send now, until it returns `None`;
//! * [`Channel::handle_packet`] consumes one received packet body and delivers every newly
//!   completed message, exactly once and in send order.
//!
//! The caller frames each body with its own one-byte message-type tag, so a body is at most
//! [`MAX_BODY_BYTES`] (= [`crate::MAX_PAYLOAD_BYTES`]` - 1`) bytes.
//!
//! # Wire format
//!
//! All integers are little-endian, fixed width (no varints). A packet body is a 12-byte header
//! followed by zero or more fragments, back to back, until the body ends (there is no fragment
//! count; a body of exactly 12 bytes is a pure ack).
//!
//! ```text
//! offset  size  field
//! 0       4     ack_next  u32  the next fragment sequence number this side expects: every
//!                              fragment with a sequence number before it has been received
//! 4       8     ack_bits  u64  bit i (bit 0 = least significant bit of byte 4) set: fragment
//!                              ack_next + 1 + i (wrapping) has been received as well
//! 12      ...   fragments, each:
//!               +0  4    seq    u32  fragment sequence number (per direction, starts at 0,
//!                                    +1 per fragment, wraps from 0xFFFF_FFFF to 0)
//!               +4  2    index  u16  index of this fragment in its message, 0-based
//!               +6  2    count  u16  number of fragments in the message, >= 1
//!               +8  2    len    u16  payload bytes that follow
//!               +10 len  payload
//! ```
//!
//! A JavaScript implementation can read everything with `DataView` (`getUint32(o, true)`,
//! `getUint16(o, true)`); `ack_bits` is two `getUint32` words, the low word first.
//!
//! Sender rules. A message of `L` bytes is cut into `count = max(1, ceil(L / F))` fragments of
//! `F` = [`ChannelConfig::fragment_bytes`] bytes each, the last one holding the remaining
//! `1..=F` bytes. An empty message (`L = 0`) is allowed: one fragment with `count = 1` and
//! `len = 0`. Consecutive fragments of a message, and consecutive messages, take consecutive
//! sequence numbers. A fragment is only sent while its sequence number is less than the oldest
//! unacknowledged sequence number plus [`ChannelConfig::window`]. Every packet carries the
//! sender's current acks; a packet is resent fragment by fragment, not packet by packet, after
//! [`ChannelConfig::resend_after`] without an ack.
//!
//! Receiver rules (anything else is a [`ReliableDecodeError`] and the body is ignored):
//!
//! * the body is 12..=[`MAX_BODY_BYTES`] bytes and every fragment is complete;
//! * `1 <= count <= ceil(max_message_bytes / F)` (at least 1) and `index < count`;
//! * a fragment that is not the last of its message (`index + 1 < count`) carries exactly `F`
//!   bytes; the last carries at most `F`, and `(count - 1) * F + len <= max_message_bytes`;
//! * `seq - ack_next` (wrapping, as a signed 32-bit number) is less than [`MAX_WINDOW`];
//!   fragments behind `ack_next` are duplicates and ignored (but re-acked), fragments beyond
//!   the receiver's own window are dropped unacked;
//! * the peer's `ack_next` does not acknowledge a sequence number this side has not sent yet
//!   (an `ack_next` behind what was already acknowledged is a stale ack and is ignored).
//!
//! Both peers must therefore use the same `fragment_bytes` and `max_message_bytes`; the
//! defaults are the protocol's values. `window` may differ (a sender window larger than the
//! receiver's only wastes bandwidth), but should not.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::MAX_PAYLOAD_BYTES;

/// Largest packet body: one netcode payload minus the caller's message-type tag byte.
pub const MAX_BODY_BYTES: usize = MAX_PAYLOAD_BYTES - 1;

/// Bytes of the packet header (`ack_next` and `ack_bits`).
pub const PACKET_HEADER_BYTES: usize = 12;

/// Bytes of the per-fragment header (`seq`, `index`, `count`, `len`).
pub const FRAGMENT_HEADER_BYTES: usize = 10;

/// Largest fragment payload that fits one body beside the headers: 1177.
pub const MAX_FRAGMENT_BYTES: usize = MAX_BODY_BYTES - PACKET_HEADER_BYTES - FRAGMENT_HEADER_BYTES;

/// Largest window: `ack_bits` covers the 64 sequence numbers after `ack_next`, so every
/// fragment a receiver buffers can be selectively acknowledged.
pub const MAX_WINDOW: u32 = 64;

/// Most fragments in one message (`count` is a `u16`).
pub const MAX_FRAGMENTS_PER_MESSAGE: usize = u16::MAX as usize;

/// Default [`ChannelConfig::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65_536;

/// Default [`ChannelConfig::fragment_bytes`].
pub const DEFAULT_FRAGMENT_BYTES: usize = 1024;

/// Default [`ChannelConfig::window`].
pub const DEFAULT_WINDOW: u32 = 64;

/// Default [`ChannelConfig::max_pending_bytes`].
pub const DEFAULT_MAX_PENDING_BYTES: usize = 262_144;

/// Default [`ChannelConfig::resend_after`].
pub const DEFAULT_RESEND_AFTER: Duration = Duration::from_millis(100);

/// A reassembly buffer larger than this is released after its message is delivered.
const REASSEMBLY_KEEP_BYTES: usize = 8 * 1024;

const _: () = assert!(DEFAULT_FRAGMENT_BYTES <= MAX_FRAGMENT_BYTES);
const _: () = assert!(DEFAULT_WINDOW <= MAX_WINDOW);

/// Channel parameters. `fragment_bytes` and `max_message_bytes` are protocol parameters that
/// both peers must agree on; keep the defaults unless both ends change together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Largest message [`Channel::send`] accepts and the receiver reassembles.
    pub max_message_bytes: usize,
    /// Payload bytes per fragment, `1..=`[`MAX_FRAGMENT_BYTES`].
    pub fragment_bytes: usize,
    /// Most fragments in flight (sent, unacked) counted from the oldest unacked one, and the
    /// receiver's reorder window; `1..=`[`MAX_WINDOW`].
    pub window: u32,
    /// Most bytes queued (unsent and unacked) by the sender; beyond it [`Channel::send`]
    /// fails with [`ChannelError::Backlog`]: the peer fell too far behind. Each fragment counts
    /// its payload plus [`FRAGMENT_HEADER_BYTES`], so empty messages count too. Must hold at
    /// least one message of `max_message_bytes`.
    pub max_pending_bytes: usize,
    /// An unacked fragment is sent again after this long; must be non-zero.
    pub resend_after: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            fragment_bytes: DEFAULT_FRAGMENT_BYTES,
            window: DEFAULT_WINDOW,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            resend_after: DEFAULT_RESEND_AFTER,
        }
    }
}

impl ChannelConfig {
    /// Fragments a message of `len` bytes takes: `max(1, ceil(len / fragment_bytes))`.
    /// `fragment_bytes` must be non-zero.
    pub fn fragments_for(&self, len: usize) -> usize {
        len.div_ceil(self.fragment_bytes).max(1)
    }

    /// Bytes a message of `len` bytes adds to [`Channel::pending_bytes`]: its payload plus
    /// [`FRAGMENT_HEADER_BYTES`] per fragment. `fragment_bytes` must be non-zero.
    pub fn pending_cost(&self, len: usize) -> usize {
        len + self.fragments_for(len) * FRAGMENT_HEADER_BYTES
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fragment_bytes == 0 || self.fragment_bytes > MAX_FRAGMENT_BYTES {
            return Err(ConfigError::FragmentBytes);
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err(ConfigError::Window);
        }
        if self.fragments_for(self.max_message_bytes) > MAX_FRAGMENTS_PER_MESSAGE {
            return Err(ConfigError::MaxMessageBytes);
        }
        if self.max_pending_bytes < self.pending_cost(self.max_message_bytes) {
            return Err(ConfigError::MaxPendingBytes);
        }
        if self.resend_after.is_zero() {
            return Err(ConfigError::ResendAfter);
        }
        Ok(())
    }
}

/// Which [`ChannelConfig`] field is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `fragment_bytes` is 0 or above [`MAX_FRAGMENT_BYTES`].
    FragmentBytes,
    /// `window` is 0 or above [`MAX_WINDOW`].
    Window,
    /// `max_message_bytes` needs more than [`MAX_FRAGMENTS_PER_MESSAGE`] fragments.
    MaxMessageBytes,
    /// `max_pending_bytes` cannot hold one message of `max_message_bytes`.
    MaxPendingBytes,
    /// `resend_after` is zero.
    ResendAfter,
}

impl ConfigError {
    /// Stable snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConfigError::FragmentBytes => "fragment_bytes",
            ConfigError::Window => "window",
            ConfigError::MaxMessageBytes => "max_message_bytes",
            ConfigError::MaxPendingBytes => "max_pending_bytes",
            ConfigError::ResendAfter => "resend_after",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::FragmentBytes => {
                write!(f, "fragment_bytes must be 1..={MAX_FRAGMENT_BYTES}")
            }
            ConfigError::Window => write!(f, "window must be 1..={MAX_WINDOW}"),
            ConfigError::MaxMessageBytes => write!(
                f,
                "max_message_bytes needs more than {MAX_FRAGMENTS_PER_MESSAGE} fragments"
            ),
            ConfigError::MaxPendingBytes => {
                f.write_str("max_pending_bytes cannot hold one message of max_message_bytes")
            }
            ConfigError::ResendAfter => f.write_str("resend_after must be non-zero"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why [`Channel::send`] refused a message. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// The message is longer than [`ChannelConfig::max_message_bytes`].
    TooLarge {
        /// Message length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Queuing the message would exceed [`ChannelConfig::max_pending_bytes`]: the peer is not
    /// acknowledging fast enough (or at all). Usually grounds to disconnect it.
    Backlog {
        /// Bytes pending before this message.
        pending: usize,
        /// The limit.
        max: usize,
    },
}

impl ChannelError {
    /// Stable snake_case name, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelError::TooLarge { .. } => "too_large",
            ChannelError::Backlog { .. } => "backlog",
        }
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds {max} bytes")
            }
            ChannelError::Backlog { pending, max } => write!(
                f,
                "{pending} bytes already pending, limit {max}: peer too far behind"
            ),
        }
    }
}

impl std::error::Error for ChannelError {}

/// Why a received packet body was rejected. Every variant is a hostile or broken peer (or
/// peers with different `fragment_bytes` / `max_message_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReliableDecodeError {
    /// The body is longer than [`MAX_BODY_BYTES`].
    TooLong {
        /// Body length.
        len: usize,
    },
    /// The body is shorter than the header, or ends inside a fragment header or payload.
    Truncated,
    /// A fragment has `count == 0` or `index >= count`.
    BadFragmentIndex,
    /// A fragment claims more fragments than a message of `max_message_bytes` needs.
    TooManyFragments {
        /// The claimed count.
        count: u16,
    },
    /// A fragment's payload is longer than `fragment_bytes`, or a fragment that is not the
    /// last of its message is not exactly `fragment_bytes` long.
    BadFragmentLength,
    /// The last fragment of a message implies a message longer than `max_message_bytes`.
    MessageTooLarge,
    /// The peer acknowledged a sequence number this side has not sent.
    AckOutOfRange,
    /// A fragment's sequence number is at least [`MAX_WINDOW`] ahead of the next expected
    /// one: no conforming sender can produce it.
    SequenceOutOfRange,
    /// A fragment does not continue its neighbour in the sequence (wrong `index` or `count`).
    /// The rest of the packet (acks, other fragments) was still applied.
    Inconsistent,
}

impl ReliableDecodeError {
    /// Stable snake_case name, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReliableDecodeError::TooLong { .. } => "too_long",
            ReliableDecodeError::Truncated => "truncated",
            ReliableDecodeError::BadFragmentIndex => "bad_fragment_index",
            ReliableDecodeError::TooManyFragments { .. } => "too_many_fragments",
            ReliableDecodeError::BadFragmentLength => "bad_fragment_length",
            ReliableDecodeError::MessageTooLarge => "message_too_large",
            ReliableDecodeError::AckOutOfRange => "ack_out_of_range",
            ReliableDecodeError::SequenceOutOfRange => "sequence_out_of_range",
            ReliableDecodeError::Inconsistent => "inconsistent",
        }
    }
}

impl fmt::Display for ReliableDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReliableDecodeError::TooLong { len } => {
                write!(
                    f,
                    "packet body of {len} bytes exceeds {MAX_BODY_BYTES} bytes"
                )
            }
            ReliableDecodeError::Truncated => f.write_str("packet body truncated"),
            ReliableDecodeError::BadFragmentIndex => f.write_str("fragment index out of range"),
            ReliableDecodeError::TooManyFragments { count } => {
                write!(
                    f,
                    "message of {count} fragments exceeds the message size limit"
                )
            }
            ReliableDecodeError::BadFragmentLength => f.write_str("bad fragment length"),
            ReliableDecodeError::MessageTooLarge => f.write_str("message exceeds the size limit"),
            ReliableDecodeError::AckOutOfRange => f.write_str("ack for a fragment never sent"),
            ReliableDecodeError::SequenceOutOfRange => {
                f.write_str("fragment sequence number far outside the window")
            }
            ReliableDecodeError::Inconsistent => {
                f.write_str("fragment does not continue its neighbour")
            }
        }
    }
}

impl std::error::Error for ReliableDecodeError {}

/// Counters, for metrics and tests. All only ever grow, except `pending_bytes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages accepted by [`Channel::send`].
    pub messages_sent: u64,
    /// Messages handed to `deliver`.
    pub messages_delivered: u64,
    /// Messages refused with [`ChannelError::TooLarge`].
    pub send_too_large: u64,
    /// Messages refused with [`ChannelError::Backlog`].
    pub send_backlog: u64,
    /// Fragments sent for the first time.
    pub fragments_sent: u64,
    /// Fragments sent again after [`ChannelConfig::resend_after`] without an ack.
    pub fragments_resent: u64,
    /// Own fragments the peer acknowledged.
    pub fragments_acked: u64,
    /// New fragments received and kept (in order or buffered).
    pub fragments_received: u64,
    /// Fragments received again (already delivered or already buffered).
    pub fragments_duplicate: u64,
    /// Fragments received beyond this side's window and dropped.
    pub fragments_out_of_window: u64,
    /// Packets written by [`Channel::poll_packet`].
    pub packets_sent: u64,
    /// Of those, packets without fragments (pure acks).
    pub ack_only_packets_sent: u64,
    /// Packets given to [`Channel::handle_packet`] that were accepted.
    pub packets_received: u64,
    /// Packets given to [`Channel::handle_packet`] that returned an error.
    pub decode_errors: u64,
    /// Current [`Channel::pending_bytes`].
    pub pending_bytes: usize,
}

/// One outgoing fragment, queued from `send` until acknowledged.
#[derive(Clone, Debug)]
struct OutFragment {
    /// Emptied once acknowledged.
    payload: Box<[u8]>,
    index: u16,
    count: u16,
    acked: bool,
    /// When it was last written into a packet; `None` = never sent.
    last_sent: Option<Duration>,
}

/// One received fragment, buffered until everything before it has arrived.
#[derive(Clone, Debug)]
struct InFragment {
    payload: Box<[u8]>,
    index: u16,
    count: u16,
}

/// What the next fragment in sequence must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The first fragment of a message: `index == 0`, any `count`.
    First,
    /// A continuation: exactly this `index` and `count`.
    Next { index: u16, count: u16 },
}

impl Expect {
    /// What must follow a fragment `index` of `count`.
    fn after(index: u16, count: u16) -> Expect {
        if index + 1 < count {
            Expect::Next {
                index: index + 1,
                count,
            }
        } else {
            Expect::First
        }
    }

    fn matches(self, index: u16, count: u16) -> bool {
        match self {
            Expect::First => index == 0,
            Expect::Next { index: i, count: c } => index == i && count == c,
        }
    }
}

/// One fragment as parsed from a body (borrowing its payload).
#[derive(Clone, Copy, Debug)]
struct WireFragment<'a> {
    seq: u32,
    index: u16,
    count: u16,
    payload: &'a [u8],
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits the first fragment off `rest`.
fn parse_fragment(rest: &[u8]) -> Result<(WireFragment<'_>, &[u8]), ReliableDecodeError> {
    if rest.len() < FRAGMENT_HEADER_BYTES {
        return Err(ReliableDecodeError::Truncated);
    }
    let len = read_u16(rest, 8) as usize;
    let end = FRAGMENT_HEADER_BYTES + len;
    if rest.len() < end {
        return Err(ReliableDecodeError::Truncated);
    }
    let frag = WireFragment {
        seq: read_u32(rest, 0),
        index: read_u16(rest, 4),
        count: read_u16(rest, 6),
        payload: &rest[FRAGMENT_HEADER_BYTES..end],
    };
    Ok((frag, &rest[end..]))
}

/// A reliable, ordered, fragmenting message channel (both directions of one peer pair).
///
/// Sans-IO: the caller moves packet bodies and passes in a monotonic `now`. Memory is bounded:
/// the send queue by [`ChannelConfig::max_pending_bytes`] (plus a small per-fragment constant),
/// the receive side by `window` buffered fragments of at most `fragment_bytes` each plus one
/// reassembly of at most `max_message_bytes` (allocated once per message; a buffer above 8 KiB
/// is released after delivery).
#[derive(Clone, Debug)]
pub struct Channel {
    cfg: ChannelConfig,
    /// Most fragments a message may claim: `fragments_for(max_message_bytes)`.
    max_fragments: usize,

    // Sender.
    /// Fragments from `send_base` on, in sequence order: first the ones sent at least once
    /// (`out[..n_sent]`, some possibly acked already), then the never-sent ones.
    out: VecDeque<OutFragment>,
    /// Sequence number of `out[0]`: every earlier one is acknowledged.
    send_base: u32,
    /// How many of `out` have been sent at least once (a prefix); at most `window`.
    n_sent: usize,

    // Receiver.
    /// Next sequence number to deliver: everything before it has been received.
    recv_next: u32,
    /// Slot `i` holds fragment `recv_next + i`; always `window` slots, slot 0 always empty.
    recv_buf: VecDeque<Option<InFragment>>,
    /// The message being reassembled from in-order fragments.
    reassembly: Vec<u8>,
    /// What fragment `recv_next` must look like.
    expect: Expect,
    /// A packet with fragments arrived since the last `poll_packet`.
    ack_owed: bool,

    stats: ChannelStats,
}

impl Channel {
    /// A fresh channel; both peers start at sequence number 0.
    ///
    /// # Panics
    /// If `cfg` is invalid (see [`ChannelConfig::validate`]); use [`Channel::try_new`] for
    /// configuration read at run time.
    pub fn new(cfg: ChannelConfig) -> Self {
        match Channel::try_new(cfg) {
            Ok(ch) => ch,
            Err(e) => panic!("invalid reliable ChannelConfig: {e}"),
        }
    }

    /// A fresh channel, or why `cfg` is invalid.
    pub fn try_new(cfg: ChannelConfig) -> Result<Self, ConfigError> {
        Channel::with_initial_sequence(cfg, 0)
    }

    /// Both directions start at `seq` (tests of sequence wrap-around).
    fn with_initial_sequence(cfg: ChannelConfig, seq: u32) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let max_fragments = cfg.fragments_for(cfg.max_message_bytes);
        let window = cfg.window as usize;
        Ok(Channel {
            cfg,
            max_fragments,
            out: VecDeque::new(),
            send_base: seq,
            n_sent: 0,
            recv_next: seq,
            recv_buf: (0..window).map(|_| None).collect(),
            reassembly: Vec::new(),
            expect: Expect::First,
            ack_owed: false,
            stats: ChannelStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// Bytes queued for sending and not yet acknowledged: payload plus
    /// [`FRAGMENT_HEADER_BYTES`] per fragment. At most [`ChannelConfig::max_pending_bytes`].
    pub fn pending_bytes(&self) -> usize {
        self.stats.pending_bytes
    }

    /// Fragments sent at least once and not yet acknowledged. At most
    /// [`ChannelConfig::window`].
    pub fn in_flight(&self) -> usize {
        self.out
            .iter()
            .take(self.n_sent)
            .filter(|f| !f.acked)
            .count()
    }

    /// Nothing queued, nothing in flight, no ack owed to the peer. (A message the peer has
    /// only partly sent does not count: that is the peer's business.)
    pub fn is_idle(&self) -> bool {
        self.out.is_empty() && !self.ack_owed
    }

    /// Queues one message (copied), cut into fragments. Never partially queued: on error
    /// nothing changed except the refusal counters.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        let len = msg.len();
        if len > self.cfg.max_message_bytes {
            self.stats.send_too_large += 1;
            return Err(ChannelError::TooLarge {
                len,
                max: self.cfg.max_message_bytes,
            });
        }
        let cost = self.cfg.pending_cost(len);
        let pending = self.stats.pending_bytes;
        if pending + cost > self.cfg.max_pending_bytes {
            self.stats.send_backlog += 1;
            return Err(ChannelError::Backlog {
                pending,
                max: self.cfg.max_pending_bytes,
            });
        }
        let count = self.cfg.fragments_for(len);
        // count <= max_fragments <= u16::MAX, checked by validate().
        let count16 = count as u16;
        let f = self.cfg.fragment_bytes;
        self.out.reserve(count);
        for i in 0..count {
            let chunk = &msg[(i * f).min(len)..((i + 1) * f).min(len)];
            self.out.push_back(OutFragment {
                payload: chunk.into(),
                index: i as u16,
                count: count16,
                acked: false,
                last_sent: None,
            });
        }
        self.stats.pending_bytes += cost;
        self.stats.messages_sent += 1;
        Ok(())
    }

    /// The selective-ack bitfield: bit `i` = fragment `recv_next + 1 + i` is buffered.
    fn ack_bits(&self) -> u64 {
        let mut bits = 0u64;
        for (i, slot) in self.recv_buf.iter().enumerate().skip(1) {
            if slot.is_some() {
                bits |= 1 << (i - 1);
            }
        }
        bits
    }

    /// Writes the next packet body to send now into `buf` and returns its length (at most
    /// [`MAX_BODY_BYTES`]), or `None` when there is nothing to send: no new fragment the window
    /// allows, no fragment due for resend, and no ack owed. Call it until `None` (the caller
    /// may cap packets per tick; what is left goes out on the next call).
    ///
    /// Fragments due for resend go first, oldest first, then new ones; as many as fit. Every
    /// packet carries this side's acks.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MAX_BODY_BYTES`].
    pub fn poll_packet(&mut self, now: Duration, buf: &mut [u8]) -> Option<usize> {
        assert!(
            buf.len() >= MAX_BODY_BYTES,
            "poll_packet needs a buffer of at least {MAX_BODY_BYTES} bytes"
        );
        let buf = &mut buf[..MAX_BODY_BYTES];
        let mut pos = PACKET_HEADER_BYTES;
        let mut fragments = 0usize;

        // Resends: sent, unacked, and silent for resend_after.
        let resend_after = self.cfg.resend_after;
        let mut seq = self.send_base;
        for frag in self.out.iter_mut().take(self.n_sent) {
            let this_seq = seq;
            seq = seq.wrapping_add(1);
            if frag.acked {
                continue;
            }
            let due = match frag.last_sent {
                Some(t) => now.saturating_sub(t) >= resend_after,
                None => true,
            };
            if !due || pos + FRAGMENT_HEADER_BYTES + frag.payload.len() > buf.len() {
                continue;
            }
            pos = write_fragment(buf, pos, this_seq, frag);
            frag.last_sent = Some(now);
            fragments += 1;
            self.stats.fragments_resent += 1;
        }

        // New fragments, as far as the window allows.
        let window = self.cfg.window as usize;
        while self.n_sent < self.out.len() && self.n_sent < window {
            let this_seq = self.send_base.wrapping_add(self.n_sent as u32);
            let frag = &mut self.out[self.n_sent];
            if pos + FRAGMENT_HEADER_BYTES + frag.payload.len() > buf.len() {
                break;
            }
            pos = write_fragment(buf, pos, this_seq, frag);
            frag.last_sent = Some(now);
            fragments += 1;
            self.n_sent += 1;
            self.stats.fragments_sent += 1;
        }

        if fragments == 0 && !self.ack_owed {
            return None;
        }
        buf[0..4].copy_from_slice(&self.recv_next.to_le_bytes());
        buf[4..12].copy_from_slice(&self.ack_bits().to_le_bytes());
        self.ack_owed = false;
        self.stats.packets_sent += 1;
        if fragments == 0 {
            self.stats.ack_only_packets_sent += 1;
        }
        Some(pos)
    }

    /// Handles one received packet body (the caller's tag byte already stripped): applies the
    /// peer's acks, stores new fragments (dropping duplicates and those beyond the window), and
    /// hands every newly completed message, in order, to `deliver`.
    ///
    /// The body is validated as a whole first: on any error but
    /// [`ReliableDecodeError::Inconsistent`] nothing changed (except `decode_errors`).
    /// Never panics; allocates at most one buffered fragment per accepted fragment (bounded by
    /// the window) and grows the reassembly buffer up to `max_message_bytes`.
    ///
    /// `now` is accepted for symmetry with [`Channel::poll_packet`] (and future round-trip
    /// estimation); it is not used yet.
    pub fn handle_packet(
        &mut self,
        now: Duration,
        body: &[u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReliableDecodeError> {
        let _ = now;
        let result = self.handle_inner(body, deliver);
        match result {
            Ok(()) => self.stats.packets_received += 1,
            Err(_) => self.stats.decode_errors += 1,
        }
        result
    }

    fn handle_inner(
        &mut self,
        body: &[u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReliableDecodeError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(ReliableDecodeError::TooLong { len: body.len() });
        }
        if body.len() < PACKET_HEADER_BYTES {
            return Err(ReliableDecodeError::Truncated);
        }
        let ack_next = read_u32(body, 0);
        let ack_bits = u64::from_le_bytes([
            body[4], body[5], body[6], body[7], body[8], body[9], body[10], body[11],
        ]);
        // Positive: how many more fragments ack_next acknowledges; negative: a stale ack.
        let ack_advance = ack_next.wrapping_sub(self.send_base) as i32;
        if ack_advance > 0 && ack_advance as usize > self.n_sent {
            return Err(ReliableDecodeError::AckOutOfRange);
        }

        // Pass 1: validate every fragment without changing anything.
        let frags = &body[PACKET_HEADER_BYTES..];
        let mut rest = frags;
        while !rest.is_empty() {
            let (frag, tail) = parse_fragment(rest)?;
            self.check_fragment(&frag)?;
            rest = tail;
        }

        // Pass 2: apply.
        self.apply_acks(ack_next, ack_advance, ack_bits);
        let mut result = Ok(());
        let mut rest = frags;
        let any_fragment = !rest.is_empty();
        while let Ok((frag, tail)) = parse_fragment(rest) {
            rest = tail;
            if let Err(e) = self.receive_fragment(&frag, deliver) {
                result = Err(e);
            }
        }
        if any_fragment {
            // Even duplicates: our earlier ack may have been lost.
            self.ack_owed = true;
        }
        result
    }

    /// Stateless checks of one fragment, plus the sequence range.
    fn check_fragment(&self, frag: &WireFragment<'_>) -> Result<(), ReliableDecodeError> {
        if frag.count == 0 || frag.index >= frag.count {
            return Err(ReliableDecodeError::BadFragmentIndex);
        }
        let count = frag.count as usize;
        if count > self.max_fragments {
            return Err(ReliableDecodeError::TooManyFragments { count: frag.count });
        }
        let f = self.cfg.fragment_bytes;
        let len = frag.payload.len();
        if frag.index + 1 < frag.count {
            if len != f {
                return Err(ReliableDecodeError::BadFragmentLength);
            }
        } else {
            if len > f {
                return Err(ReliableDecodeError::BadFragmentLength);
            }
            if (count - 1) * f + len > self.cfg.max_message_bytes {
                return Err(ReliableDecodeError::MessageTooLarge);
            }
        }
        let ahead = frag.seq.wrapping_sub(self.recv_next) as i32;
        if ahead >= MAX_WINDOW as i32 {
            return Err(ReliableDecodeError::SequenceOutOfRange);
        }
        Ok(())
    }

    /// Applies the peer's cumulative and selective acks (already range-checked).
    fn apply_acks(&mut self, ack_next: u32, ack_advance: i32, ack_bits: u64) {
        if ack_advance > 0 {
            for _ in 0..ack_advance {
                if let Some(frag) = self.out.pop_front() {
                    self.settle(&frag);
                }
            }
            self.n_sent -= ack_advance as usize;
            self.send_base = ack_next;
        }
        let mut bits = ack_bits;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            let seq = ack_next.wrapping_add(1).wrapping_add(i);
            let off = seq.wrapping_sub(self.send_base) as usize;
            // Only fragments actually sent can be acknowledged.
            if off < self.n_sent {
                let frag = &mut self.out[off];
                if !frag.acked {
                    let cost = frag.payload.len() + FRAGMENT_HEADER_BYTES;
                    frag.acked = true;
                    frag.payload = Box::default();
                    self.stats.pending_bytes -= cost;
                    self.stats.fragments_acked += 1;
                }
            }
        }
        while self.out.front().is_some_and(|f| f.acked) {
            self.out.pop_front();
            self.n_sent -= 1;
            self.send_base = self.send_base.wrapping_add(1);
        }
    }

    /// Accounts for a fragment leaving the send queue acknowledged.
    fn settle(&mut self, frag: &OutFragment) {
        if !frag.acked {
            self.stats.pending_bytes -= frag.payload.len() + FRAGMENT_HEADER_BYTES;
            self.stats.fragments_acked += 1;
        }
    }

    /// Stores one validated fragment and delivers whatever it completes.
    fn receive_fragment(
        &mut self,
        frag: &WireFragment<'_>,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReliableDecodeError> {
        let ahead = frag.seq.wrapping_sub(self.recv_next) as i32;
        if ahead < 0 {
            self.stats.fragments_duplicate += 1;
            return Ok(());
        }
        let off = ahead as usize;
        if off >= self.recv_buf.len() {
            self.stats.fragments_out_of_window += 1;
            return Ok(());
        }
        if self.recv_buf[off].is_some() {
            self.stats.fragments_duplicate += 1;
            return Ok(());
        }
        // The fragment must continue its predecessor and be continued by its successor, when
        // those are known; then every buffered run is a valid piece of the stream.
        let before = if off == 0 {
            Some(self.expect)
        } else {
            self.recv_buf[off - 1]
                .as_ref()
                .map(|p| Expect::after(p.index, p.count))
        };
        if before.is_some_and(|e| !e.matches(frag.index, frag.count)) {
            return Err(ReliableDecodeError::Inconsistent);
        }
        if let Some(Some(next)) = self.recv_buf.get(off + 1) {
            if !Expect::after(frag.index, frag.count).matches(next.index, next.count) {
                return Err(ReliableDecodeError::Inconsistent);
            }
        }
        self.recv_buf[off] = Some(InFragment {
            payload: frag.payload.into(),
            index: frag.index,
            count: frag.count,
        });
        self.stats.fragments_received += 1;
        if off == 0 {
            self.drain(deliver);
        }
        Ok(())
    }

    /// Moves in-order fragments into the reassembly and delivers completed messages.
    fn drain(&mut self, deliver: &mut dyn FnMut(&[u8])) {
        while let Some(Some(_)) = self.recv_buf.front() {
            let Some(Some(frag)) = self.recv_buf.pop_front() else {
                break;
            };
            self.recv_buf.push_back(None);
            self.recv_next = self.recv_next.wrapping_add(1);
            self.expect = Expect::after(frag.index, frag.count);
            if frag.count == 1 {
                // The common case: no copy. (Consistency checks keep the reassembly empty.)
                self.stats.messages_delivered += 1;
                deliver(&frag.payload);
                continue;
            }
            if frag.index == 0 {
                let most = usize::from(frag.count) * self.cfg.fragment_bytes;
                self.reassembly
                    .reserve_exact(most.min(self.cfg.max_message_bytes));
            }
            self.reassembly.extend_from_slice(&frag.payload);
            if self.expect == Expect::First {
                self.stats.messages_delivered += 1;
                deliver(&self.reassembly);
                self.reassembly.clear();
                if self.reassembly.capacity() > REASSEMBLY_KEEP_BYTES {
                    // Do not hold a level description's worth of memory per peer forever.
                    self.reassembly = Vec::new();
                }
            }
        }
    }
}

/// Writes one fragment at `pos` and returns the position after it. The caller checked room.
fn write_fragment(buf: &mut [u8], pos: usize, seq: u32, frag: &OutFragment) -> usize {
    let len = frag.payload.len();
    buf[pos..pos + 4].copy_from_slice(&seq.to_le_bytes());
    buf[pos + 4..pos + 6].copy_from_slice(&frag.index.to_le_bytes());
    buf[pos + 6..pos + 8].copy_from_slice(&frag.count.to_le_bytes());
    buf[pos + 8..pos + 10].copy_from_slice(&(len as u16).to_le_bytes());
    let start = pos + FRAGMENT_HEADER_BYTES;
    buf[start..start + len].copy_from_slice(&frag.payload);
    start + len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves packets between two channels for `ticks` ticks of 16 ms, dropping every third
    /// packet and reversing each tick's batch (reordering). Returns what each side received.
    fn shuttle(a: &mut Channel, b: &mut Channel, ticks: u32) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut buf = [0u8; MAX_BODY_BYTES];
        let mut counter = 0u32;
        for t in 1..=ticks {
            let now = Duration::from_millis(16 * u64::from(t));
            let mut to_b = Vec::new();
            while let Some(n) = a.poll_packet(now, &mut buf) {
                counter += 1;
                if counter % 3 != 0 {
                    to_b.push(buf[..n].to_vec());
                }
            }
            let mut to_a = Vec::new();
            while let Some(n) = b.poll_packet(now, &mut buf) {
                counter += 1;
                if counter % 3 != 0 {
                    to_a.push(buf[..n].to_vec());
                }
            }
            for p in to_b.iter().rev() {
                b.handle_packet(now, p, &mut |m| got_b.push(m.to_vec()))
                    .unwrap();
            }
            for p in to_a.iter().rev() {
                a.handle_packet(now, p, &mut |m| got_a.push(m.to_vec()))
                    .unwrap();
            }
        }
        (got_a, got_b)
    }

    #[test]
    fn sequence_numbers_wrap() {
        let cfg = ChannelConfig {
            fragment_bytes: 16,
            window: 8,
            ..ChannelConfig::default()
        };
        let start = u32::MAX - 20;
        let mut a = Channel::with_initial_sequence(cfg.clone(), start).unwrap();
        let mut b = Channel::with_initial_sequence(cfg, start).unwrap();
        let msgs: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; usize::from(i) * 3]).collect();
        for m in &msgs {
            a.send(m).unwrap();
            b.send(m).unwrap();
        }
        let (got_a, got_b) = shuttle(&mut a, &mut b, 500);
        assert_eq!(got_a, msgs);
        assert_eq!(got_b, msgs);
        assert!(a.is_idle() && b.is_idle());
        // 30 messages of 0..=87 bytes in 16-byte fragments took us well past the wrap.
        assert!(a.send_base < start && a.recv_next < start);
        assert!(a.stats.fragments_resent > 0);
    }

    #[test]
    fn stale_ack_from_before_the_wrap_is_ignored() {
        let cfg = ChannelConfig::default();
        let mut a = Channel::with_initial_sequence(cfg, u32::MAX).unwrap();
        a.send(&[1; 3000]).unwrap(); // seqs u32::MAX, 0, 1
        let mut buf = [0u8; MAX_BODY_BYTES];
        while a.poll_packet(Duration::ZERO, &mut buf).is_some() {}
        let mut ack = [0u8; PACKET_HEADER_BYTES];
        // Ack through seq 0: send_base moves to 1.
        ack[0..4].copy_from_slice(&1u32.to_le_bytes());
        a.handle_packet(Duration::ZERO, &ack, &mut |_| {}).unwrap();
        assert_eq!(a.send_base, 1);
        assert_eq!(a.in_flight(), 1);
        // A reordered older ack (ack_next u32::MAX, bit 0 = seq 0) changes nothing.
        ack[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        ack[4..12].copy_from_slice(&1u64.to_le_bytes());
        a.handle_packet(Duration::ZERO, &ack, &mut |_| {}).unwrap();
        assert_eq!(a.send_base, 1);
        assert_eq!(a.in_flight(), 1);
        // Acking beyond what was sent is refused.
        ack[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            a.handle_packet(Duration::ZERO, &ack, &mut |_| {}),
            Err(ReliableDecodeError::AckOutOfRange)
        );
        ack[0..4].copy_from_slice(&2u32.to_le_bytes());
        a.handle_packet(Duration::ZERO, &ack, &mut |_| {}).unwrap();
        assert!(a.is_idle());
        assert_eq!(a.pending_bytes(), 0);
    }
}
