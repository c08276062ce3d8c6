//! Fuzz `tickwire_core::a2s::A2sResponder::handle`: must never panic; a reply is only ever sent
//! to a well-formed request; without the peer's valid challenge it is the 9-byte S2C_CHALLENGE
//! (never larger than the request); every reply fits one 1400-byte packet.
//!
//! Input layout: the first byte picks whether the fuzzer's request gets the valid challenge
//! spliced in (so the full INFO/PLAYER/RULES writers are reached), the next two bytes size the
//! output buffer, the rest is the request.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use tickwire_core::a2s::{
    parse_request, A2sInfo, A2sPlayer, A2sResponder, A2sSource, MAX_REPLY_BYTES,
};

/// A source whose strings and list lengths come from the fuzz input too.
struct Src<'a>(&'a [u8]);

impl Src<'_> {
    fn text(&self) -> &str {
        match std::str::from_utf8(self.0) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.0[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl A2sSource for Src<'_> {
    fn info(&self) -> A2sInfo<'_> {
        let t = self.text();
        A2sInfo {
            name: t,
            map: t,
            folder: "tickwire",
            game: t,
            players: self.0.len() as u8,
            max_players: 255,
            bots: 0,
            version: t,
            port: 40000,
        }
    }

    fn for_each_player(&self, f: &mut dyn FnMut(A2sPlayer<'_>)) {
        let t = self.text();
        for i in 0..(self.0.len() * 7 % 400) {
            f(A2sPlayer {
                name: t.get(..i % (t.len() + 1)).unwrap_or(""),
                score: i as i32,
                duration_secs: i as f32,
            });
        }
    }

    fn for_each_rule(&self, f: &mut dyn FnMut(&str, &str)) {
        let t = self.text();
        for _ in 0..(self.0.len() * 5 % 300) {
            f(t, t);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 27005));
    let now = 1_000;
    let responder = A2sResponder::new(0xF022);
    let out_len = usize::from(u16::from_le_bytes([data[1], data[2]])) % 2048;
    let mut request = data[3..].to_vec();
    if data[0] & 1 == 1 && request.len() >= 4 {
        let at = request.len() - 4;
        request[at..].copy_from_slice(&responder.challenge(now, peer).to_le_bytes());
    }
    let src = Src(&request);
    let mut out = vec![0u8; out_len];
    if let Ok(Some(n)) = responder.handle(now, peer, &request, &src, &mut out) {
        assert!(n <= MAX_REPLY_BYTES && n <= out_len);
        assert_eq!(&out[..4], &[0xFF; 4]);
        let req = parse_request(&request).expect("only well-formed requests are answered");
        if out[4] == 0x41 {
            assert_eq!(n, 9);
            assert!(n <= request.len());
        } else {
            assert!(responder.is_valid_challenge(now, peer, req.challenge.unwrap()));
        }
    }
});
