//! Reliable channel tests: two channels over a simulated lossy, duplicating, reordering link on
//! virtual time (seeded PRNG, no clock, no sleeping), plus golden bytes and hostile input.

use std::time::Duration;

use tickwire_proto::reliable::*;

const TICK: Duration = Duration::from_millis(16);

/// splitmix64: small, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[derive(Clone, Copy)]
struct LinkCfg {
    loss_percent: u64,
    dup_percent: u64,
    latency_ms: u64,
    /// Extra random delay per packet, 0..=jitter_ms: packets overtake each other.
    jitter_ms: u64,
}

const LOSSY: LinkCfg = LinkCfg {
    loss_percent: 20,
    dup_percent: 10,
    latency_ms: 30,
    jitter_ms: 60,
};

const PERFECT: LinkCfg = LinkCfg {
    loss_percent: 0,
    dup_percent: 0,
    latency_ms: 20,
    jitter_ms: 0,
};

/// One direction of the simulated network.
struct Link {
    cfg: LinkCfg,
    /// (arrival time, push order, body).
    in_flight: Vec<(Duration, u64, Vec<u8>)>,
    pushed: u64,
}

impl Link {
    fn new(cfg: LinkCfg) -> Self {
        Link {
            cfg,
            in_flight: Vec::new(),
            pushed: 0,
        }
    }

    fn push(&mut self, rng: &mut Rng, now: Duration, body: &[u8]) {
        if rng.chance(self.cfg.loss_percent) {
            return;
        }
        let copies = if rng.chance(self.cfg.dup_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.cfg.latency_ms + rng.below(self.cfg.jitter_ms + 1);
            self.pushed += 1;
            self.in_flight.push((
                now + Duration::from_millis(delay),
                self.pushed,
                body.to_vec(),
            ));
        }
    }

    /// Bodies arriving by `now`, in arrival order.
    fn take_due(&mut self, now: Duration) -> Vec<Vec<u8>> {
        let mut due: Vec<_> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].0 <= now {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|&(at, order, _)| (at, order));
        due.into_iter().map(|(_, _, body)| body).collect()
    }

    fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

/// One endpoint: its channel, what it still has to send, and what it received.
struct Peer {
    ch: Channel,
    to_send: std::collections::VecDeque<Vec<u8>>,
    received: Vec<Vec<u8>>,
    most_in_flight: usize,
}

impl Peer {
    fn new(cfg: ChannelConfig) -> Self {
        Peer {
            ch: Channel::new(cfg),
            to_send: Default::default(),
            received: Vec::new(),
            most_in_flight: 0,
        }
    }

    /// Queues up to `per_tick` waiting messages; stops early on backlog (retried next tick).
    fn feed(&mut self, per_tick: usize) {
        for _ in 0..per_tick {
            let Some(msg) = self.to_send.front() else {
                return;
            };
            match self.ch.send(msg) {
                Ok(()) => {
                    self.to_send.pop_front();
                }
                Err(ChannelError::Backlog { pending, max }) => {
                    assert!(pending <= max);
                    return;
                }
                Err(e) => panic!("unexpected send error {e}"),
            }
        }
    }

    fn receive(&mut self, now: Duration, link: &mut Link) {
        for body in link.take_due(now) {
            let received = &mut self.received;
            self.ch
                .handle_packet(now, &body, &mut |m| received.push(m.to_vec()))
                .expect("an honest packet decodes");
        }
    }

    /// Sends everything the channel wants to send now.
    fn pump(&mut self, rng: &mut Rng, now: Duration, link: &mut Link) -> usize {
        let mut buf = [0u8; 1200];
        let mut packets = 0;
        while let Some(len) = self.ch.poll_packet(now, &mut buf) {
            assert!(len <= MAX_BODY_BYTES);
            let in_flight = self.ch.in_flight();
            assert!(in_flight <= self.ch.config().window as usize);
            self.most_in_flight = self.most_in_flight.max(in_flight);
            assert!(self.ch.pending_bytes() <= self.ch.config().max_pending_bytes);
            link.push(rng, now, &buf[..len]);
            packets += 1;
            assert!(packets < 1000, "poll_packet must run dry");
        }
        packets
    }
}

struct Sim {
    rng: Rng,
    now: Duration,
    a: Peer,
    b: Peer,
    ab: Link,
    ba: Link,
}

impl Sim {
    fn new(seed: u64, link: LinkCfg, cfg: ChannelConfig) -> Self {
        Sim {
            rng: Rng(seed),
            now: Duration::ZERO,
            a: Peer::new(cfg.clone()),
            b: Peer::new(cfg),
            ab: Link::new(link),
            ba: Link::new(link),
        }
    }

    fn tick(&mut self, per_tick: usize) {
        self.now += TICK;
        self.b.receive(self.now, &mut self.ab);
        self.a.receive(self.now, &mut self.ba);
        self.a.feed(per_tick);
        self.b.feed(per_tick);
        self.a.pump(&mut self.rng, self.now, &mut self.ab);
        self.b.pump(&mut self.rng, self.now, &mut self.ba);
    }

    fn done(&self) -> bool {
        self.a.to_send.is_empty()
            && self.b.to_send.is_empty()
            && self.a.ch.is_idle()
            && self.b.ch.is_idle()
            && self.ab.is_empty()
            && self.ba.is_empty()
    }

    /// Ticks until everything is delivered and acknowledged; returns the ticks taken.
    fn run(&mut self, per_tick: usize, max_ticks: usize) -> usize {
        for t in 0..max_ticks {
            if self.done() {
                return t;
            }
            self.tick(per_tick);
        }
        panic!(
            "not done after {max_ticks} ticks: a {:?} b {:?}",
            self.a.ch.stats(),
            self.b.ch.stats()
        );
    }
}

fn random_messages(rng: &mut Rng, n: usize, max_len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let len = rng.below(max_len as u64 + 1) as usize;
            rng.bytes(len)
        })
        .collect()
}

fn exchange(seed: u64, link: LinkCfg, n: usize, both_ways: bool) -> Sim {
    let mut gen = Rng(seed ^ 0xA5A5);
    let a_msgs = random_messages(&mut gen, n, 3000);
    let b_msgs = if both_ways {
        random_messages(&mut gen, n, 3000)
    } else {
        Vec::new()
    };
    let mut sim = Sim::new(seed, link, ChannelConfig::default());
    sim.a.to_send = a_msgs.iter().cloned().collect();
    sim.b.to_send = b_msgs.iter().cloned().collect();
    sim.run(4, 50_000);
    // Complete, exactly once, in order.
    assert!(sim.b.received == a_msgs, "a -> b stream differs");
    assert!(sim.a.received == b_msgs, "b -> a stream differs");
    assert_eq!(sim.a.ch.stats().messages_sent, a_msgs.len() as u64);
    assert_eq!(sim.b.ch.stats().messages_delivered, a_msgs.len() as u64);
    assert_eq!(sim.a.ch.pending_bytes(), 0);
    assert_eq!(sim.b.ch.pending_bytes(), 0);
    sim
}

#[test]
fn random_messages_one_way_under_loss_duplication_reordering() {
    for seed in 1..=3 {
        let sim = exchange(seed, LOSSY, 300, false);
        let (a, b) = (sim.a.ch.stats(), sim.b.ch.stats());
        assert!(a.fragments_resent > 0, "loss must have forced resends");
        assert!(b.fragments_duplicate > 0, "duplication must have been seen");
        assert!(
            b.ack_only_packets_sent > 0,
            "b has nothing to send: acks go alone"
        );
        assert_eq!(b.decode_errors, 0);
    }
}

#[test]
fn random_messages_both_ways_under_loss_duplication_reordering() {
    for seed in 10..=12 {
        let sim = exchange(seed, LOSSY, 300, true);
        for p in [&sim.a, &sim.b] {
            let s = p.ch.stats();
            assert!(s.fragments_resent > 0);
            assert!(s.fragments_duplicate > 0);
            assert_eq!(s.decode_errors, 0);
            assert!(p.most_in_flight <= DEFAULT_WINDOW as usize);
        }
    }
}

#[test]
fn random_messages_perfect_link_need_no_resend() {
    let sim = exchange(99, PERFECT, 200, true);
    assert_eq!(sim.a.ch.stats().fragments_resent, 0);
    assert_eq!(sim.b.ch.stats().fragments_resent, 0);
    assert_eq!(sim.b.ch.stats().fragments_duplicate, 0);
}

#[test]
fn twenty_kb_message_arrives_intact_under_loss() {
    for seed in [7, 8, 9] {
        let msg = Rng(seed).bytes(20_000);
        let mut sim = Sim::new(seed, LOSSY, ChannelConfig::default());
        sim.a.to_send.push_back(msg.clone());
        sim.run(1, 10_000);
        assert_eq!(sim.b.received.len(), 1);
        assert!(sim.b.received[0] == msg);
        assert_eq!(sim.a.ch.stats().fragments_sent, 20);
    }
}

#[test]
fn largest_and_empty_messages() {
    let cfg = ChannelConfig::default();
    let big = Rng(5).bytes(cfg.max_message_bytes);
    let mut sim = Sim::new(5, LOSSY, cfg);
    sim.a.to_send = [Vec::new(), big.clone(), Vec::new(), vec![1]]
        .into_iter()
        .collect();
    sim.run(4, 10_000);
    assert_eq!(sim.b.received, vec![Vec::new(), big, Vec::new(), vec![1]]);
}

#[test]
fn too_large_is_refused_and_nothing_queued() {
    let mut ch = Channel::new(ChannelConfig::default());
    let err = ch
        .send(&vec![0; DEFAULT_MAX_MESSAGE_BYTES + 1])
        .unwrap_err();
    assert_eq!(
        err,
        ChannelError::TooLarge {
            len: DEFAULT_MAX_MESSAGE_BYTES + 1,
            max: DEFAULT_MAX_MESSAGE_BYTES
        }
    );
    assert_eq!(err.as_str(), "too_large");
    assert!(err.to_string().contains("65537"));
    assert_eq!(ch.pending_bytes(), 0);
    assert!(ch.is_idle());
    assert_eq!(ch.poll_packet(Duration::ZERO, &mut [0; 1200]), None);
    assert_eq!(ch.stats().send_too_large, 1);
    assert!(ch.send(&vec![0; DEFAULT_MAX_MESSAGE_BYTES]).is_ok());
}

#[test]
fn flooding_a_peer_that_never_acks_ends_in_backlog() {
    let cfg = ChannelConfig::default();
    let max = cfg.max_pending_bytes;
    let mut ch = Channel::new(cfg);
    let mut rng = Rng(3);
    let mut buf = [0u8; 1200];
    let mut now = Duration::ZERO;
    let mut sent = 0;
    let err = loop {
        let len = rng.below(3001) as usize;
        let msg = rng.bytes(len);
        match ch.send(&msg) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(ch.pending_bytes() <= max);
        // The packets go nowhere; resends keep happening.
        now += TICK;
        while ch.poll_packet(now, &mut buf).is_some() {
            assert!(ch.in_flight() <= DEFAULT_WINDOW as usize);
        }
        assert!(sent < 100_000, "backlog never reached");
    };
    let ChannelError::Backlog { pending, max: m } = err else {
        panic!("expected backlog, got {err}");
    };
    assert_eq!(err.as_str(), "backlog");
    assert_eq!(m, max);
    assert_eq!(pending, ch.pending_bytes());
    assert!(pending <= max);
    assert!(ch.stats().fragments_resent > 0);
    assert_eq!(ch.stats().send_backlog, 1);
    // Still refused, still bounded, and an empty message is not free.
    let before = ch.pending_bytes();
    while ch.send(&[]).is_ok() {}
    assert!(ch.pending_bytes() <= max);
    assert!(ch.pending_bytes() + FRAGMENT_HEADER_BYTES > max);
    assert!(ch.pending_bytes() >= before);
}

/// Sequence numbers of the fragments in a body (wire format per the module docs).
fn fragment_seqs(body: &[u8]) -> Vec<u32> {
    let mut seqs = Vec::new();
    let mut pos = PACKET_HEADER_BYTES;
    while pos < body.len() {
        seqs.push(u32::from_le_bytes(body[pos..pos + 4].try_into().unwrap()));
        let len = u16::from_le_bytes([body[pos + 8], body[pos + 9]]) as usize;
        pos += FRAGMENT_HEADER_BYTES + len;
    }
    assert_eq!(pos, body.len());
    seqs
}

#[test]
fn window_is_respected_on_the_wire() {
    let cfg = ChannelConfig {
        window: 8,
        ..ChannelConfig::default()
    };
    let mut a = Channel::new(cfg.clone());
    let mut b = Channel::new(cfg);
    for i in 0..40u8 {
        a.send(&[i; 10]).unwrap();
    }
    let mut buf = [0u8; 1200];
    let mut seen = std::collections::BTreeSet::new();
    let mut now = Duration::ZERO;
    // b receives everything, but its acks are all lost: a may only ever send seqs 0..8.
    for _ in 0..50 {
        now += TICK;
        while let Some(len) = a.poll_packet(now, &mut buf) {
            seen.extend(fragment_seqs(&buf[..len]));
            assert!(a.in_flight() <= 8);
            b.handle_packet(now, &buf[..len], &mut |_| {}).unwrap();
        }
        while b.poll_packet(now, &mut buf).is_some() {}
    }
    assert_eq!(seen, (0..8).collect());
    assert_eq!(b.stats().messages_delivered, 8);
    assert!(a.stats().fragments_resent > 0);

    // Now one ack gets through: the window slides by 8.
    now += DEFAULT_RESEND_AFTER;
    let len = a.poll_packet(now, &mut buf).expect("a resend is due");
    assert_eq!(fragment_seqs(&buf[..len]), (0..8).collect::<Vec<_>>());
    b.handle_packet(now, &buf[..len], &mut |_| {}).unwrap();
    let len = b.poll_packet(now, &mut buf).expect("duplicates owe an ack");
    a.handle_packet(now, &buf[..len], &mut |_| {}).unwrap();
    assert_eq!(a.in_flight(), 0);
    let len = a.poll_packet(now, &mut buf).unwrap();
    assert_eq!(fragment_seqs(&buf[..len]), (8..16).collect::<Vec<_>>());
    assert_eq!(a.poll_packet(now, &mut buf), None);
}

#[test]
fn selective_acks_resend_only_what_was_lost() {
    let cfg = ChannelConfig {
        fragment_bytes: 100,
        ..ChannelConfig::default()
    };
    let mut a = Channel::new(cfg.clone());
    let mut b = Channel::new(cfg);
    let mut got = Vec::new();
    a.send(&Rng(1).bytes(2000)).unwrap(); // 20 fragments, 10 per packet (110 bytes each)
    let mut buf = [0u8; 1200];
    let t0 = Duration::ZERO;
    let p1 = a
        .poll_packet(t0, &mut buf)
        .map(|n| buf[..n].to_vec())
        .unwrap();
    let p2 = a
        .poll_packet(t0, &mut buf)
        .map(|n| buf[..n].to_vec())
        .unwrap();
    assert_eq!(a.poll_packet(t0, &mut buf), None);
    assert_eq!(fragment_seqs(&p1), (0..10).collect::<Vec<_>>());
    assert_eq!(fragment_seqs(&p2), (10..20).collect::<Vec<_>>());
    // p1 is lost; p2 arrives and is selectively acked.
    b.handle_packet(t0, &p2, &mut |m| got.push(m.to_vec()))
        .unwrap();
    assert!(got.is_empty());
    let ack = b
        .poll_packet(t0, &mut buf)
        .map(|n| buf[..n].to_vec())
        .unwrap();
    assert_eq!(ack.len(), PACKET_HEADER_BYTES, "pure ack");
    assert_eq!(&ack[0..4], &0u32.to_le_bytes());
    assert_eq!(&ack[4..12], &0x3FF_u64.wrapping_shl(9).to_le_bytes());
    assert_eq!(b.poll_packet(t0, &mut buf), None, "no second pure ack");
    a.handle_packet(t0, &ack, &mut |_| {}).unwrap();
    assert_eq!(a.in_flight(), 10);
    // Before resend_after nothing is due; after it only seqs 0..10 go again.
    assert_eq!(a.poll_packet(Duration::from_millis(99), &mut buf), None);
    let t1 = Duration::from_millis(100);
    let r = a
        .poll_packet(t1, &mut buf)
        .map(|n| buf[..n].to_vec())
        .unwrap();
    assert_eq!(fragment_seqs(&r), (0..10).collect::<Vec<_>>());
    assert_eq!(a.poll_packet(t1, &mut buf), None);
    b.handle_packet(t1, &r, &mut |m| got.push(m.to_vec()))
        .unwrap();
    assert_eq!(got, vec![Rng(1).bytes(2000)]);
    let ack = b
        .poll_packet(t1, &mut buf)
        .map(|n| buf[..n].to_vec())
        .unwrap();
    a.handle_packet(t1, &ack, &mut |_| {}).unwrap();
    assert!(a.is_idle());
    assert!(b.is_idle());
    assert_eq!(a.stats().fragments_resent, 10);
}

#[test]
fn golden_bytes() {
    let mut a = Channel::new(ChannelConfig::default());
    a.send(b"hi").unwrap();
    let mut buf = [0u8; 1200];
    let n = a.poll_packet(Duration::ZERO, &mut buf).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 0, 0, 0,             // ack_next 0
        0, 0, 0, 0, 0, 0, 0, 0, // ack_bits 0
        0, 0, 0, 0,             // seq 0
        0, 0,                   // index 0
        1, 0,                   // count 1
        2, 0,                   // len 2
        b'h', b'i',
    ];
    assert_eq!(&buf[..n], expected);

    let mut b = Channel::new(ChannelConfig::default());
    let mut got = Vec::new();
    b.handle_packet(Duration::ZERO, expected, &mut |m| got.push(m.to_vec()))
        .unwrap();
    assert_eq!(got, vec![b"hi".to_vec()]);
    let n = b.poll_packet(Duration::ZERO, &mut buf).unwrap();
    #[rustfmt::skip]
    let ack: &[u8] = &[
        1, 0, 0, 0,             // ack_next 1
        0, 0, 0, 0, 0, 0, 0, 0, // ack_bits 0
    ];
    assert_eq!(&buf[..n], ack);
}

#[test]
fn acks_are_owed_once_and_not_forever() {
    let mut sim = Sim::new(4, PERFECT, ChannelConfig::default());
    sim.a.to_send.push_back(vec![1, 2, 3]);
    sim.run(1, 100);
    let (a, b) = (sim.a.ch.stats().clone(), sim.b.ch.stats().clone());
    assert_eq!(b.ack_only_packets_sent, 1);
    assert_eq!(a.ack_only_packets_sent, 0, "a received no fragments");
    // Nothing more, ever, while nothing new arrives.
    for _ in 0..100 {
        sim.tick(1);
    }
    assert_eq!(sim.a.ch.stats().packets_sent, a.packets_sent);
    assert_eq!(sim.b.ch.stats().packets_sent, b.packets_sent);
}

/// A packet body built by hand: header plus fragments (seq, index, count, payload).
fn body(ack_next: u32, ack_bits: u64, frags: &[(u32, u16, u16, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&ack_next.to_le_bytes());
    v.extend_from_slice(&ack_bits.to_le_bytes());
    for &(seq, index, count, payload) in frags {
        v.extend_from_slice(&seq.to_le_bytes());
        v.extend_from_slice(&index.to_le_bytes());
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        v.extend_from_slice(payload);
    }
    v
}

/// After whatever was done to the sim's channels, they still carry traffic both ways.
fn assert_still_works(sim: &mut Sim) {
    let a_before = sim.b.received.len();
    let b_before = sim.a.received.len();
    let mut gen = Rng(77);
    let a_msgs = random_messages(&mut gen, 20, 3000);
    let b_msgs = random_messages(&mut gen, 20, 3000);
    sim.a.to_send.extend(a_msgs.iter().cloned());
    sim.b.to_send.extend(b_msgs.iter().cloned());
    sim.run(4, 20_000);
    assert!(sim.b.received[a_before..] == a_msgs[..]);
    assert!(sim.a.received[b_before..] == b_msgs[..]);
}

#[test]
fn hostile_structured_bodies_are_rejected_without_effect() {
    let cfg = ChannelConfig::default();
    let f = cfg.fragment_bytes;
    let mut sim = Sim::new(21, LOSSY, cfg);
    // Some traffic first so that both sides are mid-stream.
    sim.a.to_send = random_messages(&mut Rng(1), 10, 3000).into();
    sim.run(4, 10_000);
    let delivered = sim.b.ch.stats().messages_delivered as u32;
    let next = sim.b.ch.stats().fragments_received as u32; // b's next expected seq
    assert!(delivered > 0 && next >= delivered);

    let full = vec![0xAB; f];
    let cases: Vec<(Vec<u8>, ReliableDecodeError)> = vec![
        (vec![], ReliableDecodeError::Truncated),
        (vec![0; 11], ReliableDecodeError::Truncated),
        (
            vec![0; MAX_BODY_BYTES + 1],
            ReliableDecodeError::TooLong {
                len: MAX_BODY_BYTES + 1,
            },
        ),
        // Fragment header cut short, and payload shorter than its len.
        (
            body(0, 0, &[(next, 0, 1, b"x")])[..PACKET_HEADER_BYTES + 5].to_vec(),
            ReliableDecodeError::Truncated,
        ),
        (
            {
                let mut v = body(0, 0, &[(next, 0, 1, b"xyz")]);
                v.pop();
                v
            },
            ReliableDecodeError::Truncated,
        ),
        (
            body(0, 0, &[(next, 0, 0, b"")]),
            ReliableDecodeError::BadFragmentIndex,
        ),
        (
            body(0, 0, &[(next, 3, 3, b"")]),
            ReliableDecodeError::BadFragmentIndex,
        ),
        (
            body(0, 0, &[(next, 0, 65, &full)]),
            ReliableDecodeError::TooManyFragments { count: 65 },
        ),
        (
            body(0, 0, &[(next, 0, u16::MAX, &full)]),
            ReliableDecodeError::TooManyFragments { count: u16::MAX },
        ),
        (
            body(0, 0, &[(next, 0, 2, b"short")]),
            ReliableDecodeError::BadFragmentLength,
        ),
        (
            body(0, 0, &[(next, 0, 1, &vec![0; f + 1])]),
            ReliableDecodeError::BadFragmentLength,
        ),
        (
            body(0, 0, &[(next.wrapping_add(MAX_WINDOW), 0, 1, b"")]),
            ReliableDecodeError::SequenceOutOfRange,
        ),
        (
            body(0, 0, &[(next.wrapping_add(1_000_000), 0, 1, b"")]),
            ReliableDecodeError::SequenceOutOfRange,
        ),
        // b has sent nothing: any ack beyond 0 acknowledges the unsent.
        (body(1, 0, &[]), ReliableDecodeError::AckOutOfRange),
        (
            body(u32::MAX / 2, 0, &[]),
            ReliableDecodeError::AckOutOfRange,
        ),
        // A valid fragment followed by a bad one: the whole body is refused.
        (
            body(0, 0, &[(next, 0, 1, b"ok"), (next + 1, 0, 0, b"")]),
            ReliableDecodeError::BadFragmentIndex,
        ),
    ];
    for (bytes, want) in &cases {
        let before = sim.b.ch.stats().clone();
        let received = &mut sim.b.received;
        let got = sim
            .b
            .ch
            .handle_packet(sim.now, bytes, &mut |m| received.push(m.to_vec()));
        assert_eq!(got, Err(*want), "body {bytes:?}");
        assert!(!want.as_str().is_empty() && !want.to_string().is_empty());
        let after = sim.b.ch.stats();
        assert_eq!(after.decode_errors, before.decode_errors + 1);
        assert_eq!(after.fragments_received, before.fragments_received);
        assert_eq!(after.messages_delivered, before.messages_delivered);
        assert!(sim.b.ch.is_idle(), "no ack owed for a refused body");
    }
    // Fragments behind the window are duplicates (a long-delayed copy), not errors.
    let old = body(0, 0, &[(next.wrapping_sub(1000), 0, 1, b"old")]);
    sim.b
        .ch
        .handle_packet(sim.now, &old, &mut |_| panic!("no delivery"))
        .unwrap();
    assert_eq!(sim.b.received.len() as u32, delivered);
    assert_still_works(&mut sim);
}

#[test]
fn last_fragment_implying_an_oversized_message_is_rejected() {
    // 4 fragments of 300 may carry at most 1000 bytes: the last one at most 100.
    let mut ch = Channel::new(ChannelConfig {
        fragment_bytes: 300,
        max_message_bytes: 1000,
        ..ChannelConfig::default()
    });
    let mut deliver = |_: &[u8]| panic!("no delivery");
    let r = ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(3, 3, 4, &[0; 101])]),
        &mut deliver,
    );
    assert_eq!(r, Err(ReliableDecodeError::MessageTooLarge));
    let r = ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(0, 0, 5, &[0; 300])]),
        &mut deliver,
    );
    assert_eq!(r, Err(ReliableDecodeError::TooManyFragments { count: 5 }));
    ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(3, 3, 4, &[0; 100])]),
        &mut deliver,
    )
    .unwrap();
}

#[test]
fn inconsistent_fragments_are_rejected() {
    let mut ch = Channel::new(ChannelConfig {
        fragment_bytes: 4,
        ..ChannelConfig::default()
    });
    let mut got = Vec::new();
    let mut deliver = |m: &[u8]| got.push(m.to_vec());
    // seq 0 must start a message.
    let r = ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(0, 1, 2, b"ab")]),
        &mut deliver,
    );
    assert_eq!(r, Err(ReliableDecodeError::Inconsistent));
    // seq 1 buffered as "index 1 of 3"; then seq 0 claiming "1 of 1" does not fit before it.
    ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(1, 1, 3, b"efgh")]),
        &mut deliver,
    )
    .unwrap();
    let r = ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(0, 0, 1, b"x")]),
        &mut deliver,
    );
    assert_eq!(r, Err(ReliableDecodeError::Inconsistent));
    // seq 2 claiming a different count does not follow seq 1.
    let r = ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(2, 2, 4, b"ijkl")]),
        &mut deliver,
    );
    assert_eq!(r, Err(ReliableDecodeError::Inconsistent));
    // The consistent stream still completes.
    ch.handle_packet(
        Duration::ZERO,
        &body(0, 0, &[(2, 2, 3, b"ij"), (0, 0, 3, b"abcd")]),
        &mut deliver,
    )
    .unwrap();
    assert_eq!(got, vec![b"abcdefghij".to_vec()]);
}

#[test]
fn random_garbage_never_panics_and_the_channel_keeps_working() {
    let mut sim = Sim::new(31, LOSSY, ChannelConfig::default());
    sim.a.to_send = random_messages(&mut Rng(2), 10, 3000).into();
    sim.run(4, 10_000);
    let mut rng = Rng(0xBAD);
    let mut errors = 0;
    for _ in 0..5000 {
        let len = rng.below(1300) as usize;
        let garbage = rng.bytes(len);
        let received = &mut sim.b.received;
        if sim
            .b
            .ch
            .handle_packet(sim.now, &garbage, &mut |m| received.push(m.to_vec()))
            .is_err()
        {
            errors += 1;
        }
    }
    assert!(errors > 4900, "{errors}");
    assert_eq!(sim.b.received.len(), 10);
    assert_still_works(&mut sim);
}

#[test]
fn mutated_and_plausible_packets_keep_memory_bounded() {
    // Record real packets of an exchange, then feed mutations of them, and plausible random
    // bodies (small counts, seqs near the window), to copies of a mid-stream receiver.
    let cfg = ChannelConfig::default();
    let max_msg = cfg.max_message_bytes;
    let mut a = Channel::new(cfg.clone());
    let mut rng = Rng(0x5EED);
    for m in random_messages(&mut rng, 30, 3000) {
        a.send(&m).unwrap();
    }
    let mut buf = [0u8; 1200];
    let mut packets = Vec::new();
    while let Some(n) = a.poll_packet(Duration::ZERO, &mut buf) {
        packets.push(buf[..n].to_vec());
    }
    let mut victim = Channel::new(cfg.clone());
    victim.send(&[7; 5000]).unwrap(); // something in flight for hostile acks to hit
    while victim.poll_packet(Duration::ZERO, &mut buf).is_some() {}
    victim
        .handle_packet(Duration::ZERO, &packets[0], &mut |_| {})
        .unwrap();

    for case in 0..4000 {
        let mut ch = victim.clone();
        let bytes = if case % 2 == 0 {
            let mut p = packets[rng.below(packets.len() as u64) as usize].clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(p.len() as u64) as usize;
                p[i] = rng.next_u64() as u8;
            }
            if rng.chance(20) {
                p.truncate(rng.below(p.len() as u64 + 1) as usize);
            }
            p
        } else {
            let frags: Vec<(u32, u16, u16, Vec<u8>)> = (0..rng.below(4))
                .map(|_| {
                    let count = 1 + rng.below(70) as u16;
                    let index = rng.below(count as u64 + 1) as u16;
                    let len = if rng.chance(50) {
                        cfg.fragment_bytes
                    } else {
                        rng.below(cfg.fragment_bytes as u64 + 2) as usize
                    };
                    let seq = (rng.below(140) as u32).wrapping_sub(70);
                    (seq, index, count, rng.bytes(len))
                })
                .collect();
            let refs: Vec<_> = frags
                .iter()
                .map(|(s, i, c, p)| (*s, *i, *c, p.as_slice()))
                .collect();
            let ack_next = (rng.below(10) as u32).wrapping_sub(3);
            body(ack_next, rng.next_u64(), &refs)
        };
        let _ = ch.handle_packet(Duration::ZERO, &bytes, &mut |m| assert!(m.len() <= max_msg));
        assert!(ch.pending_bytes() <= cfg.max_pending_bytes);
        assert!(ch.in_flight() <= cfg.window as usize);
        // It can still produce packets.
        let mut n = 0;
        while ch.poll_packet(Duration::from_secs(1), &mut buf).is_some() {
            n += 1;
            assert!(n < 100);
        }
    }
}

#[test]
fn config_validation() {
    let ok = ChannelConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let bad = [
        (
            ChannelConfig {
                fragment_bytes: 0,
                ..ok.clone()
            },
            ConfigError::FragmentBytes,
        ),
        (
            ChannelConfig {
                fragment_bytes: MAX_FRAGMENT_BYTES + 1,
                ..ok.clone()
            },
            ConfigError::FragmentBytes,
        ),
        (
            ChannelConfig {
                window: 0,
                ..ok.clone()
            },
            ConfigError::Window,
        ),
        (
            ChannelConfig {
                window: MAX_WINDOW + 1,
                ..ok.clone()
            },
            ConfigError::Window,
        ),
        (
            ChannelConfig {
                fragment_bytes: 1,
                max_message_bytes: MAX_FRAGMENTS_PER_MESSAGE + 1,
                max_pending_bytes: usize::MAX / 2,
                ..ok.clone()
            },
            ConfigError::MaxMessageBytes,
        ),
        (
            ChannelConfig {
                max_pending_bytes: ok.max_message_bytes,
                ..ok.clone()
            },
            ConfigError::MaxPendingBytes,
        ),
        (
            ChannelConfig {
                resend_after: Duration::ZERO,
                ..ok.clone()
            },
            ConfigError::ResendAfter,
        ),
    ];
    for (cfg, want) in bad {
        assert_eq!(cfg.validate(), Err(want));
        assert_eq!(Channel::try_new(cfg).err(), Some(want));
        assert!(!want.as_str().is_empty() && !want.to_string().is_empty());
    }
    assert_eq!(MAX_FRAGMENT_BYTES, 1177);
    assert_eq!(MAX_BODY_BYTES, tickwire_proto::MAX_PAYLOAD_BYTES - 1);
}

#[test]
fn small_window_and_small_fragments_under_loss() {
    let cfg = ChannelConfig {
        window: 4,
        fragment_bytes: 64,
        max_message_bytes: 4096,
        max_pending_bytes: 16_384,
        ..ChannelConfig::default()
    };
    let mut gen = Rng(0x77);
    let a_msgs = random_messages(&mut gen, 60, 1000);
    let b_msgs = random_messages(&mut gen, 60, 1000);
    let mut sim = Sim::new(0x77, LOSSY, cfg);
    sim.a.to_send = a_msgs.iter().cloned().collect();
    sim.b.to_send = b_msgs.iter().cloned().collect();
    sim.run(2, 100_000);
    assert!(sim.b.received == a_msgs);
    assert!(sim.a.received == b_msgs);
    assert!(sim.a.most_in_flight <= 4 && sim.b.most_in_flight <= 4);
    assert_eq!(sim.a.most_in_flight, 4);
}
