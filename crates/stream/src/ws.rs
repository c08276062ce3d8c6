//! WebSocket frames (RFC 6455 §5): the encoder for both sides and a streaming decoder that
//! reassembles binary messages into one bounded buffer and answers control frames.

use crate::{close_code, Violation};

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// Which end we are: a server reads masked frames and writes unmasked ones, a client the
/// reverse (RFC 6455 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Client,
}

/// The header of a final frame of `len` payload bytes, masked with `mask` if given.
fn header(opcode: u8, len: usize, mask: Option<[u8; 4]>) -> ([u8; 14], usize) {
    let mut h = [0u8; 14];
    h[0] = 0x80 | opcode;
    let m = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if len <= 125 {
        h[1] = m | len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        h[1] = m | 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = m | 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    if let Some(k) = mask {
        h[n..n + 4].copy_from_slice(&k);
        n += 4;
    }
    (h, n)
}

/// Bytes of a final frame carrying `len` payload bytes.
pub(crate) fn framed_len(len: usize, masked: bool) -> usize {
    let ext = if len <= 125 {
        0
    } else if len <= usize::from(u16::MAX) {
        2
    } else {
        8
    };
    2 + ext + if masked { 4 } else { 0 } + len
}

/// Appends one final frame.
pub(crate) fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let (h, n) = header(opcode, payload.len(), mask);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    match mask {
        None => out.extend_from_slice(payload),
        Some(k) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i & 3])),
    }
}

/// Writes one final unmasked frame into `out`; 0 if it does not fit.
pub(crate) fn encode_into(opcode: u8, payload: &[u8], out: &mut [u8]) -> usize {
    let (h, n) = header(opcode, payload.len(), None);
    let total = n + payload.len();
    if out.len() < total {
        return 0;
    }
    out[..n].copy_from_slice(&h[..n]);
    out[n..total].copy_from_slice(payload);
    total
}

/// Close codes an endpoint may receive (RFC 6455 §7.4.1 and the IANA registry): others,
/// including the reserved 1004-1006 and 1015, are a protocol error.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The frame whose payload is being read.
#[derive(Clone, Copy, Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    len: usize,
    got: usize,
    /// The masking key (zeros for an unmasked frame, which XOR leaves unchanged).
    mask: [u8; 4],
}

/// Streaming frame decoder. Holds at most one header (14 bytes), one control payload (125
/// bytes, inline) and one data message of at most `max_packet` bytes.
#[derive(Debug)]
pub(crate) struct Decoder {
    role: Role,
    head: [u8; 14],
    head_len: usize,
    /// Header length once its second byte is known (2 before).
    head_need: usize,
    frame: Option<Frame>,
    /// The binary message being reassembled.
    msg: Vec<u8>,
    /// A message is open: its first frame had no FIN.
    in_msg: bool,
    ctrl: [u8; MAX_CONTROL],
    ctrl_len: usize,
}

impl Decoder {
    pub(crate) fn new(role: Role) -> Decoder {
        Decoder {
            role,
            head: [0; 14],
            head_len: 0,
            head_need: 2,
            frame: None,
            msg: Vec::new(),
            in_msg: false,
            ctrl: [0; MAX_CONTROL],
            ctrl_len: 0,
        }
    }

    /// Decodes `data`: complete binary messages go to `on_packet`, pongs and close frames to
    /// `reply`. On a violation the close frame for it is appended to `reply` as well. A client
    /// masks what it writes with keys from `mask` (`None`: no randomness to be had).
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        max_packet: usize,
        reply: &mut Vec<u8>,
        on_packet: &mut dyn FnMut(&[u8]),
        mask: &mut dyn FnMut() -> Option<[u8; 4]>,
    ) -> Result<(), Violation> {
        let r = self.decode(data, max_packet, reply, on_packet, mask);
        if let Err(v) = r {
            if let Some(code) = v.close_code() {
                // Best effort: a client with no randomness closes without a frame.
                let _ = self.write(CLOSE, &code.to_be_bytes(), reply, mask);
            }
        }
        r
    }

    fn write(
        &self,
        opcode: u8,
        payload: &[u8],
        reply: &mut Vec<u8>,
        mask: &mut dyn FnMut() -> Option<[u8; 4]>,
    ) -> Result<(), Violation> {
        let key = match self.role {
            Role::Server => None,
            Role::Client => Some(mask().ok_or(Violation::NoRandom)?),
        };
        encode(opcode, payload, key, reply);
        Ok(())
    }

    fn decode(
        &mut self,
        mut data: &[u8],
        max_packet: usize,
        reply: &mut Vec<u8>,
        on_packet: &mut dyn FnMut(&[u8]),
        mask: &mut dyn FnMut() -> Option<[u8; 4]>,
    ) -> Result<(), Violation> {
        while !data.is_empty() {
            let Some(mut f) = self.frame else {
                self.head[self.head_len] = data[0];
                self.head_len += 1;
                data = &data[1..];
                if self.head_len == 2 {
                    self.head_need = self.check_start()?;
                }
                if self.head_len == self.head_need {
                    let f = self.parse_header(max_packet)?;
                    self.head_len = 0;
                    self.head_need = 2;
                    if f.len == 0 {
                        self.complete(f, reply, on_packet, mask)?;
                    } else {
                        if f.opcode < CLOSE && self.msg.capacity() < max_packet {
                            // Once, exactly one message's worth: pushes never reallocate.
                            self.msg.reserve_exact(max_packet);
                        }
                        self.frame = Some(f);
                    }
                }
                continue;
            };
            let take = (f.len - f.got).min(data.len());
            let (chunk, rest) = data.split_at(take);
            let unmasked = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ f.mask[(f.got + i) & 3]);
            if f.opcode >= CLOSE {
                for (dst, b) in self.ctrl[self.ctrl_len..self.ctrl_len + take]
                    .iter_mut()
                    .zip(unmasked)
                {
                    *dst = b;
                }
                self.ctrl_len += take;
            } else {
                self.msg.extend(unmasked);
            }
            f.got += take;
            data = rest;
            if f.got == f.len {
                self.frame = None;
                self.complete(f, reply, on_packet, mask)?;
            } else {
                self.frame = Some(f);
            }
        }
        Ok(())
    }

    /// Checks the first two header bytes; returns the whole header's length.
    fn check_start(&self) -> Result<usize, Violation> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        if b0 & 0x70 != 0 {
            // RSV1-3: no extension was negotiated.
            return Err(Violation::BadFrame);
        }
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(Violation::BadFrame);
        }
        match (self.role, masked) {
            (Role::Server, false) => return Err(Violation::UnmaskedFrame),
            (Role::Client, true) => return Err(Violation::MaskedFrame),
            _ => {}
        }
        if opcode >= CLOSE && (!fin || usize::from(len7) > MAX_CONTROL) {
            return Err(Violation::BadFrame);
        }
        if opcode == TEXT {
            return Err(Violation::TextFrame);
        }
        if (opcode == CONTINUATION) != self.in_msg && opcode < CLOSE {
            // A continuation with no message open, or a new message inside an open one.
            return Err(Violation::BadFrame);
        }
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Ok(2 + ext + if masked { 4 } else { 0 })
    }

    fn parse_header(&self, max_packet: usize) -> Result<Frame, Violation> {
        let h = &self.head[..self.head_len];
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(Violation::BadFrame);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        let opcode = h[0] & 0x0f;
        let len = if opcode >= CLOSE {
            len as usize // at most 125, checked in check_start
        } else {
            match usize::try_from(len) {
                Ok(n) if n <= max_packet.saturating_sub(self.msg.len()) => n,
                _ => return Err(Violation::OversizedFrame),
            }
        };
        let mut mask = [0u8; 4];
        if h[1] & 0x80 != 0 {
            mask.copy_from_slice(&h[at..at + 4]);
        }
        Ok(Frame {
            fin: h[0] & 0x80 != 0,
            opcode,
            len,
            got: 0,
            mask,
        })
    }

    fn complete(
        &mut self,
        f: Frame,
        reply: &mut Vec<u8>,
        on_packet: &mut dyn FnMut(&[u8]),
        mask: &mut dyn FnMut() -> Option<[u8; 4]>,
    ) -> Result<(), Violation> {
        let ctrl_len = std::mem::take(&mut self.ctrl_len);
        match f.opcode {
            PING => {
                let payload = self.ctrl;
                self.write(PONG, &payload[..ctrl_len], reply, mask)?;
            }
            PONG => {}
            CLOSE => {
                let code = match self.ctrl[..ctrl_len] {
                    [] => None,
                    [hi, lo, ..] if valid_close_code(u16::from_be_bytes([hi, lo])) => {
                        Some(u16::from_be_bytes([hi, lo]))
                    }
                    _ => Some(close_code::PROTOCOL_ERROR),
                };
                let payload = code.map(u16::to_be_bytes);
                self.write(CLOSE, payload.as_ref().map_or(&[], |p| &p[..]), reply, mask)?;
                return Err(Violation::PeerClose);
            }
            _ => {
                self.in_msg = !f.fin;
                if f.fin {
                    on_packet(&self.msg);
                    self.msg.clear();
                }
            }
        }
        Ok(())
    }

    /// Bytes held for an incomplete frame or message.
    pub(crate) fn buffered(&self) -> usize {
        self.head_len + self.msg.len() + self.ctrl_len
    }

    /// Heap bytes held.
    pub(crate) fn capacity(&self) -> usize {
        self.msg.capacity()
    }
}
