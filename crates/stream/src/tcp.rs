//! TCP framing: each packet behind a 2-byte little-endian length.

use crate::Violation;

/// Frames `packet` (at most `u16::MAX` bytes; the caller checked) into `out`.
pub(crate) fn encode(packet: &[u8], out: &mut Vec<u8>) {
    debug_assert!(packet.len() <= usize::from(u16::MAX));
    out.reserve(2 + packet.len());
    out.extend_from_slice(&(packet.len() as u16).to_le_bytes());
    out.extend_from_slice(packet);
}

/// Reassembles length-prefixed frames from bytes at arbitrary boundaries. A frame that arrives
/// whole in one `feed` is handed out from the caller's slice; only a frame split across calls
/// is copied, into a buffer that never holds more than one frame.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// The length prefix read so far.
    header: [u8; 2],
    header_len: usize,
    /// The current frame's length, once its prefix is complete.
    need: usize,
    /// The current frame's bytes so far.
    buf: Vec<u8>,
}

impl Decoder {
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        max_packet: usize,
        on_packet: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Violation> {
        while !data.is_empty() {
            if self.header_len < 2 {
                if self.header_len == 0 && data.len() >= 2 {
                    let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
                    if len > max_packet {
                        return Err(Violation::OversizedFrame);
                    }
                    if data.len() >= 2 + len {
                        on_packet(&data[2..2 + len]);
                        data = &data[2 + len..];
                        continue;
                    }
                    self.header_len = 2;
                    self.need = len;
                    data = &data[2..];
                } else {
                    self.header[self.header_len] = data[0];
                    self.header_len += 1;
                    data = &data[1..];
                    if self.header_len < 2 {
                        continue;
                    }
                    let len = usize::from(u16::from_le_bytes(self.header));
                    if len > max_packet {
                        return Err(Violation::OversizedFrame);
                    }
                    self.need = len;
                }
                if self.need == 0 {
                    on_packet(&[]);
                    self.header_len = 0;
                    continue;
                }
                if self.buf.capacity() < max_packet {
                    // Once, and exactly one frame's worth: pushes below never reallocate.
                    self.buf.reserve_exact(max_packet);
                }
            }
            let take = (self.need - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.need {
                on_packet(&self.buf);
                self.buf.clear();
                self.header_len = 0;
            }
        }
        Ok(())
    }

    /// Bytes held for an incomplete frame (prefix included).
    pub(crate) fn buffered(&self) -> usize {
        self.header_len + self.buf.len()
    }

    /// Heap bytes held.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            encode(p, &mut out);
        }
        out
    }

    fn run(d: &mut Decoder, data: &[u8], max: usize) -> Result<Vec<Vec<u8>>, Violation> {
        let mut got = Vec::new();
        d.feed(data, max, &mut |p| got.push(p.to_vec()))?;
        Ok(got)
    }

    #[test]
    fn every_split_point_gives_the_same_packets() {
        let a = vec![1u8; 300];
        let packets: [&[u8]; 4] = [b"abc", &[], &a, b"z"];
        let stream = frames(&packets);
        let want: Vec<Vec<u8>> = packets.iter().map(|p| p.to_vec()).collect();
        for cut in 0..=stream.len() {
            let mut d = Decoder::default();
            let mut got = run(&mut d, &stream[..cut], 1400).unwrap();
            got.extend(run(&mut d, &stream[cut..], 1400).unwrap());
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &stream {
            got.extend(run(&mut d, std::slice::from_ref(b), 1400).unwrap());
        }
        assert_eq!(got, want);
        assert!(d.capacity() <= 1400);
    }

    #[test]
    fn length_over_the_limit_is_refused_before_the_body() {
        let mut d = Decoder::default();
        assert_eq!(
            run(&mut d, &[0x79, 0x05], 1400),
            Err(Violation::OversizedFrame)
        );
        let mut d = Decoder::default();
        assert_eq!(run(&mut d, &[0x78, 0x05], 1400), Ok(vec![]));
        let mut d = Decoder::default();
        assert_eq!(run(&mut d, &[0x79], 1400), Ok(vec![]));
        assert_eq!(run(&mut d, &[0x05], 1400), Err(Violation::OversizedFrame));
    }
}
