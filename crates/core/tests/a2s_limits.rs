//! A2S rate limits: a flood from one source is cut to its bucket while other sources are still
//! answered; the overall buckets bound the total; buckets refill with time; full replies are
//! limited more tightly than challenges. All on virtual time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tickwire_core::a2s::{
    A2sError, A2sInfo, A2sLimits, A2sPlayer, A2sRateStats, A2sResponder, A2sSource, Rate,
    RateScope, MAX_REPLY_BYTES,
};

const INFO_REQ: &[u8] = b"\xFF\xFF\xFF\xFFTSource Engine Query\0";
const SECRET: u64 = 0x0123_4567_89AB_CDEF;

struct Src;

impl A2sSource for Src {
    fn info(&self) -> A2sInfo<'_> {
        A2sInfo {
            name: "Tickwire",
            map: "arena",
            folder: "tickwire",
            game: "Tickwire Arena",
            players: 0,
            max_players: 64,
            bots: 0,
            version: "0.1.0",
            port: 40000,
        }
    }
    fn for_each_player(&self, _: &mut dyn FnMut(A2sPlayer<'_>)) {}
    fn for_each_rule(&self, f: &mut dyn FnMut(&str, &str)) {
        f("tick_ms", "33");
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(a, b, c, d), port))
}

fn info_with(challenge: u32) -> Vec<u8> {
    let mut v = INFO_REQ.to_vec();
    v.extend_from_slice(&challenge.to_le_bytes());
    v
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    challenges: u32,
    full: u32,
    limited_source: u32,
    limited_total: u32,
}

/// Sends `req` `n` times from `peer` at `now`; tallies the outcomes.
fn burst(r: &A2sResponder, now: Duration, peer: SocketAddr, req: &[u8], n: u32) -> Tally {
    let mut t = Tally::default();
    let mut out = [0u8; MAX_REPLY_BYTES];
    for _ in 0..n {
        match r.handle_at(now, peer, req, &Src, &mut out) {
            Ok(Some(9)) if out[4] == 0x41 => t.challenges += 1,
            Ok(Some(_)) => t.full += 1,
            Err(A2sError::RateLimited(RateScope::Source)) => t.limited_source += 1,
            Err(A2sError::RateLimited(RateScope::Total)) => t.limited_total += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    t
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults_limit_full_replies_more_tightly() {
    let l = A2sLimits::default();
    assert!(l.source_full.per_sec < l.source_challenge.per_sec);
    assert!(l.source_full.burst < l.source_challenge.burst);
    assert!(l.total_full.per_sec < l.total.per_sec);
    assert_eq!(
        l.source_full,
        Rate {
            per_sec: 20,
            burst: 40
        }
    );
    assert_eq!(l.total.per_sec, 2000);
    assert_eq!(A2sResponder::new(SECRET).limits(), l);
}

#[test]
fn flood_from_one_source_is_cut_while_others_are_answered() {
    let r = A2sResponder::new(SECRET);
    let l = r.limits();
    let now = secs(100);
    let flooder = v4(198, 51, 100, 9, 27005);
    let other = v4(203, 0, 113, 7, 27005);

    // 10 000 challenge requests in one instant: exactly the burst is answered.
    let t = burst(&r, now, flooder, INFO_REQ, 10_000);
    assert_eq!(t.challenges, l.source_challenge.burst);
    assert_eq!(t.limited_source, 10_000 - l.source_challenge.burst);
    assert_eq!(
        t.limited_total, 0,
        "one source never drains the overall budget"
    );
    // Full-reply flood with a valid challenge (the probe's attack): cut to the full burst.
    let c = r.challenge(now.as_secs(), flooder);
    let t = burst(&r, now, flooder, &info_with(c), 10_000);
    assert_eq!(t.full, l.source_full.burst);
    assert_eq!(t.limited_source, 10_000 - l.source_full.burst);

    // Another host in the same instant: answered as normal.
    let t = burst(&r, now, other, INFO_REQ, 1);
    assert_eq!(t.challenges, 1);
    let c = r.challenge(now.as_secs(), other);
    let t = burst(&r, now, other, &info_with(c), 3);
    assert_eq!(t.full, 3);
    // The flooder's other ports are the same source.
    let t = burst(&r, now, v4(198, 51, 100, 9, 1), INFO_REQ, 1);
    assert_eq!(t.limited_source, 1);

    assert_eq!(
        r.rate_stats(),
        A2sRateStats {
            source_challenge: 10_000 - u64::from(l.source_challenge.burst) + 1,
            source_full: 10_000 - u64::from(l.source_full.burst),
            total_challenge: 0,
            total_full: 0,
        }
    );
    assert_eq!(
        A2sError::RateLimited(RateScope::Source).as_str(),
        "rate_limited_source"
    );
    assert_eq!(
        A2sError::RateLimited(RateScope::Total).as_str(),
        "rate_limited_total"
    );
}

/// Many sources, each within its own limit: the overall buckets bound what is answered.
#[test]
fn overall_buckets_bound_the_total() {
    let limits = A2sLimits {
        source_challenge: Rate {
            per_sec: 1000,
            burst: 1000,
        },
        source_full: Rate {
            per_sec: 1000,
            burst: 1000,
        },
        total: Rate {
            per_sec: 100,
            burst: 100,
        },
        total_full: Rate {
            per_sec: 30,
            burst: 30,
        },
        source_slots: 64,
    };
    let r = A2sResponder::with_limits(SECRET, limits);
    let now = secs(10);
    let peers: Vec<SocketAddr> = (0..1000u32)
        .map(|i| v4(10, (i >> 16) as u8, (i >> 8) as u8, i as u8, 27005))
        .collect();

    // Full replies first: at most total_full, even though every source is within its limit.
    let mut full = Tally::default();
    for p in &peers[..200] {
        let c = r.challenge(now.as_secs(), *p);
        let t = burst(&r, now, *p, &info_with(c), 1);
        full.full += t.full;
        full.limited_total += t.limited_total;
    }
    assert_eq!(full.full, 30);
    assert_eq!(full.limited_total, 170);
    // Challenges: what is left of the overall bucket (100 - 30 full).
    let mut ch = Tally::default();
    for p in &peers {
        let t = burst(&r, now, *p, INFO_REQ, 1);
        ch.challenges += t.challenges;
        ch.limited_total += t.limited_total;
        assert_eq!(t.limited_source, 0);
    }
    assert_eq!(ch.challenges, 70);
    assert_eq!(ch.limited_total, 930);
    let s = r.rate_stats();
    assert_eq!((s.total_full, s.total_challenge), (170, 930));

    // A second later: one second's worth more, no more.
    let mut later = Tally::default();
    for p in &peers {
        let t = burst(&r, now + secs(1), *p, INFO_REQ, 1);
        later.challenges += t.challenges;
    }
    assert_eq!(later.challenges, 100);
}

#[test]
fn buckets_refill_with_time() {
    let r = A2sResponder::new(SECRET);
    let l = r.limits();
    let peer = v4(192, 0, 2, 1, 27015);
    let t0 = secs(1_000);
    let c = r.challenge(t0.as_secs(), peer);
    let full = info_with(c);
    assert_eq!(burst(&r, t0, peer, &full, 1000).full, l.source_full.burst);
    // Empty now; 20/s means one token every 50 ms.
    assert_eq!(
        burst(&r, t0 + Duration::from_millis(49), peer, &full, 5).full,
        0
    );
    assert_eq!(
        burst(&r, t0 + Duration::from_millis(50), peer, &full, 5).full,
        1
    );
    assert_eq!(
        burst(&r, t0 + Duration::from_millis(550), peer, &full, 50).full,
        10
    );
    // A long pause refills to the burst, never beyond it.
    assert_eq!(
        burst(&r, t0 + secs(20), peer, &full, 1000).full,
        l.source_full.burst
    );
    // Time going backwards adds nothing (and does not panic).
    assert_eq!(burst(&r, t0, peer, &full, 5).full, 0);
}

#[test]
fn whole_second_time_refills_in_steps() {
    // `handle` (seconds, as the core calls it today) sustains exactly `per_sec` per second.
    let r = A2sResponder::new(SECRET);
    let l = r.limits();
    let peer = v4(192, 0, 2, 2, 27015);
    let mut out = [0u8; MAX_REPLY_BYTES];
    let mut answered = 0;
    for s in 100..110u64 {
        for _ in 0..1000 {
            if let Ok(Some(_)) = r.handle(s, peer, INFO_REQ, &Src, &mut out) {
                answered += 1;
            }
        }
    }
    assert_eq!(
        answered,
        l.source_challenge.burst + 9 * l.source_challenge.per_sec
    );
}

#[test]
fn ipv6_sources_are_keyed_by_their_64_prefix() {
    let limits = A2sLimits {
        source_challenge: Rate {
            per_sec: 1,
            burst: 5,
        },
        ..A2sLimits::default()
    };
    let r = A2sResponder::with_limits(SECRET, limits);
    let now = secs(5);
    let a: SocketAddr = "[2001:db8:1:2::1]:27005".parse().unwrap();
    let b: SocketAddr = "[2001:db8:1:2:ffff::9]:4000".parse().unwrap();
    assert_eq!(burst(&r, now, a, INFO_REQ, 3).challenges, 3);
    // Same /64: shares a's bucket.
    let t = burst(&r, now, b, INFO_REQ, 5);
    assert_eq!((t.challenges, t.limited_source), (2, 3));
    // IPv4 and its IPv4-mapped IPv6 form are one source.
    let v4p = v4(198, 51, 100, 20, 1);
    let mapped = SocketAddr::new(
        IpAddr::V6(Ipv4Addr::new(198, 51, 100, 20).to_ipv6_mapped()),
        2,
    );
    assert_eq!(burst(&r, now, v4p, INFO_REQ, 5).challenges, 5);
    assert_eq!(burst(&r, now, mapped, INFO_REQ, 1).limited_source, 1);
}

#[test]
fn table_is_fixed_size_whatever_the_number_of_sources() {
    let r = A2sResponder::with_limits(
        SECRET,
        A2sLimits {
            source_slots: 1000,
            ..A2sLimits::default()
        },
    );
    assert_eq!(r.limits().source_slots, 1024, "rounded to a power of two");
    // 100 000 distinct sources over 100 s of virtual time: all handled in the fixed table.
    let mut out = [0u8; MAX_REPLY_BYTES];
    let mut answered = 0u32;
    for i in 0..100_000u32 {
        let p = SocketAddr::from((Ipv4Addr::from(0x0A00_0000 | i), 27005));
        let now = Duration::from_millis(u64::from(i));
        if let Ok(Some(_)) = r.handle_at(now, p, INFO_REQ, &Src, &mut out) {
            answered += 1;
        }
    }
    // 1000 sources per second, each once: well within every limit.
    assert_eq!(answered, 100_000);
    let clone = r.clone();
    assert_eq!(clone.limits(), r.limits());
    assert!(!format!("{r:?}").contains(&SECRET.to_string()));
}
