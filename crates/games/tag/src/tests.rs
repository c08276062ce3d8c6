use std::collections::BTreeSet;

use tickwire_game::{Bot, Game, GameConfig, JoinRefused, Outbox, PlayerId, SplitMix64, View};

use super::*;

const TICK_MS: u16 = 16;

fn cfg(seed: u64, max_players: usize, options: &[(&str, &str)]) -> GameConfig {
    let mut c = GameConfig::new(seed, max_players, TICK_MS);
    c.options = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

fn game(seed: u64, max_players: usize, options: &[(&str, &str)]) -> Tag {
    Tag::new(&cfg(seed, max_players, options)).expect("valid options")
}

/// Drains `out` into decoded events (every event must decode).
fn events(out: &mut Outbox) -> Vec<(Option<PlayerId>, TagEvent)> {
    out.drain()
        .map(|(to, b)| {
            let e = decode_event(&b).unwrap_or_else(|| panic!("undecodable event {b:?}"));
            (to, e)
        })
        .collect()
}

fn join(g: &mut Tag, p: PlayerId) -> Vec<(Option<PlayerId>, TagEvent)> {
    let mut out = Outbox::new();
    g.join(p, &mut out).expect("room");
    events(&mut out)
}

fn step(g: &mut Tag) -> Vec<(Option<PlayerId>, TagEvent)> {
    let mut out = Outbox::new();
    g.step(&mut out);
    events(&mut out)
}

fn view_of(g: &Tag) -> View {
    let mut v = View::new(ENTITY_FIELDS, 64);
    g.view(&mut v);
    v
}

fn index_of(v: &View, id: u32) -> Option<usize> {
    v.ids.iter().position(|&i| i == id)
}

/// Steps until every present player's join immunity has run out.
fn wait_out_immunity(g: &mut Tag) {
    for _ in 0..g.rules.immune_ticks {
        step(g);
    }
}

fn check_invariants(g: &Tag) {
    // Exactly one "it" whenever someone is present.
    match g.it() {
        None => assert_eq!(g.player_count(), 0),
        Some(it) => assert!(g.is_present(it), "it {it} is not present"),
    }
    let v = view_of(g);
    assert_eq!(v.len(), g.player_count() + g.coin_count());
    let its = (0..v.len())
        .filter(|&i| v.fields_of(i)[0] == KIND_PLAYER && v.fields_of(i)[3] & FLAG_IT != 0)
        .count();
    assert_eq!(its, g.it().is_some() as usize);
    let (lo, hi) = (PLAYER_RADIUS, g.side() - PLAYER_RADIUS);
    for p in 0..g.rules.max_players as u32 {
        if let Some((x, y)) = g.position(p) {
            assert!((lo..=hi).contains(&x) && (lo..=hi).contains(&y), "{x},{y}");
        }
    }
}

#[test]
fn spec_and_entry() {
    let g = game(1, 8, &[]);
    let s = g.spec();
    assert_eq!(
        (
            s.name.as_str(),
            s.map.as_str(),
            s.input_bytes,
            s.entity_fields,
            s.version
        ),
        ("tag", "yard", 2, 5, 1)
    );
    let e = entry();
    assert_eq!(e.name, "tag");
    let built = (e.build)(&cfg(1, 8, &[])).expect("builds");
    assert_eq!(built.spec(), s);
    let mut bot = (e.bot)(3);
    let mut frame = [0u8; 2];
    bot.input(0, None, &mut frame);
    assert!(frame[0] <= DIR_NW && frame[1] & !BUTTON_SPRINT == 0);
}

#[test]
fn options_are_checked() {
    assert_eq!(game(1, 100, &[]).coin_count(), 50);
    assert_eq!(game(1, 4, &[]).coin_count(), 8);
    assert_eq!(game(1, 4, &[("coins", "0")]).coin_count(), 0);
    assert_eq!(game(1, 4, &[("coins", " 300 ")]).coin_count(), 300);
    let g = game(1, 4, &[("tag_points", "9")]);
    assert_eq!(g.hello(0).tag_points, 9);
    let e = Tag::new(&cfg(1, 4, &[("coins", "65536")])).unwrap_err();
    assert_eq!(e.key, "coins");
    assert!(Tag::new(&cfg(1, 4, &[("coins", "-1")])).is_err());
    assert!(Tag::new(&cfg(1, 4, &[("coins", "many")])).is_err());
    assert!(Tag::new(&cfg(1, 4, &[("tag_points", "1001")])).is_err());
    let e = Tag::new(&cfg(1, 4, &[("obstacles", "3")])).unwrap_err();
    assert_eq!(e.key, "obstacles");
    assert!(e.to_string().contains("coins, tag_points"), "{e}");
}

#[test]
fn field_and_rules_follow_the_config() {
    let g = game(1, 1000, &[]);
    let h = g.hello(7);
    // sqrt(1000) * 4000 = 126 491.
    assert_eq!((h.you, h.width, h.height), (7, 126_491, 126_491));
    assert_eq!((h.player_radius, h.coin_radius, h.coins), (400, 250, 500));
    assert_eq!((h.tag_points, h.immune_ticks, h.it_cost_ticks), (5, 94, 63));
    assert_eq!((g.rules.walk, g.rules.sprint), (80, 128));
    assert_eq!((g.rules.drain, g.rules.regen), (8, 3));
    // Small games get the minimum field; a zero-slot game refuses everyone.
    assert_eq!(game(1, 2, &[]).side(), 16_000);
    let mut empty = game(1, 0, &[]);
    assert_eq!(empty.join(0, &mut Outbox::new()), Err(JoinRefused::Full));
    step(&mut empty);
    check_invariants(&empty);
}

#[test]
fn join_refuses_when_full() {
    let mut g = game(1, 3, &[]);
    for p in 0..3 {
        join(&mut g, p);
    }
    let mut out = Outbox::new();
    assert_eq!(g.join(3, &mut out), Err(JoinRefused::Full));
    assert_eq!(g.join(u32::MAX, &mut out), Err(JoinRefused::Full));
    // A slot already in use is refused too.
    assert_eq!(g.join(1, &mut out), Err(JoinRefused::Full));
    assert!(out.is_empty());
    assert_eq!(g.player_count(), 3);
    g.leave(1, &mut out);
    assert_eq!(g.player_count(), 2);
    g.join(1, &mut out).expect("slot freed");
    assert_eq!(g.player_count(), 3);
}

#[test]
fn join_sends_hello_table_and_it() {
    let mut g = game(5, 400, &[("coins", "0")]);
    let first = join(&mut g, 10);
    assert_eq!(
        first,
        vec![
            (Some(10), TagEvent::Hello(g.hello(10))),
            (Some(10), TagEvent::Scores(vec![(10, 0)])),
            (
                Some(10),
                TagEvent::It {
                    it: 10,
                    by: NO_PLAYER
                }
            ),
            (None, TagEvent::Scores(vec![(10, 0)])),
            (
                None,
                TagEvent::It {
                    it: 10,
                    by: NO_PLAYER
                }
            ),
        ]
    );
    assert_eq!(g.it(), Some(10));
    for p in 0..300 {
        if p != 10 {
            join(&mut g, p);
        }
    }
    let evs = join(&mut g, 399);
    assert!(matches!(evs[0], (Some(399), TagEvent::Hello(h)) if h.you == 399));
    // 301 rows: 128 + 128 + 45, ascending, every present player once.
    let tables: Vec<&Vec<(u32, i32)>> = evs
        .iter()
        .filter_map(|(to, e)| match e {
            TagEvent::Scores(rows) if *to == Some(399) => Some(rows),
            _ => None,
        })
        .collect();
    assert_eq!(
        tables.iter().map(|t| t.len()).collect::<Vec<_>>(),
        [128, 128, 45]
    );
    let ids: Vec<u32> = tables.iter().flat_map(|t| t.iter().map(|r| r.0)).collect();
    let mut want: Vec<u32> = (0..300).collect();
    want.push(399);
    assert_eq!(ids, want);
    // The joiner learns who is it; everyone learns the joiner's row; "it" did not change.
    assert!(evs.contains(&(
        Some(399),
        TagEvent::It {
            it: 10,
            by: NO_PLAYER
        }
    )));
    assert_eq!(evs.last(), Some(&(None, TagEvent::Scores(vec![(399, 0)]))));
    assert_eq!(g.it(), Some(10));
    // Joiners land a quarter of the field away from "it" (8 tries make that near certain here).
    let (ix, iy) = g.position(10).unwrap();
    let (x, y) = g.position(399).unwrap();
    assert!(d2(x, y, ix, iy) >= (g.side() as i64 / 4).pow(2));
}

#[test]
fn tagging_transfers_it_with_immunity() {
    let mut g = game(2, 8, &[("coins", "0")]);
    join(&mut g, 0);
    join(&mut g, 1);
    join(&mut g, 2);
    assert_eq!(g.it(), Some(0));
    g.place(0, 5000, 5000);
    g.place(1, 9000, 9000);
    g.place(2, 13000, 13000);
    // Join immunity: 1 touching "it" is not tagged while immune.
    let v = view_of(&g);
    assert_ne!(v.fields_of(index_of(&v, 1).unwrap())[3] & FLAG_IMMUNE, 0);
    g.place(1, 5500, 5000);
    for _ in 0..g.rules.immune_ticks {
        assert!(!step(&mut g)
            .iter()
            .any(|e| matches!(e.1, TagEvent::It { .. })));
        assert_eq!(g.it(), Some(0));
    }
    let v = view_of(&g);
    assert_eq!(v.fields_of(index_of(&v, 1).unwrap())[3] & FLAG_IMMUNE, 0);
    // Now it is tagged: "it" moves to 1, 0 scores and becomes immune.
    let evs = step(&mut g);
    assert_eq!(g.it(), Some(1));
    assert_eq!(g.score(0), 5, "tag points (it cost floored at 0 before)");
    assert_eq!(
        evs,
        vec![
            (None, TagEvent::It { it: 1, by: 0 }),
            (None, TagEvent::Scores(vec![(0, 5)])),
        ]
    );
    let v = view_of(&g);
    let (f0, f1) = (
        v.fields_of(index_of(&v, 0).unwrap())[3],
        v.fields_of(index_of(&v, 1).unwrap())[3],
    );
    assert_eq!((f0 & FLAG_IT, f0 & FLAG_IMMUNE), (0, FLAG_IMMUNE));
    assert_eq!((f1 & FLAG_IT, f1 & FLAG_IMMUNE), (FLAG_IT, 0));
    // No tag-back while 0 is immune: exactly immune_ticks steps...
    for _ in 0..g.rules.immune_ticks {
        step(&mut g);
        assert_eq!(g.it(), Some(1));
    }
    // ...then the still-touching 1 tags 0 back.
    let evs = step(&mut g);
    assert_eq!(g.it(), Some(0));
    assert!(evs.contains(&(None, TagEvent::It { it: 0, by: 1 })));
    assert_eq!(g.score(1), 5);
}

#[test]
fn the_nearest_touching_player_is_tagged_once_per_step() {
    let mut g = game(3, 8, &[("coins", "0")]);
    for p in 0..4 {
        join(&mut g, p);
    }
    for p in 0..4 {
        g.place(p, 2000 + 3000 * p as i32, 2000);
    }
    wait_out_immunity(&mut g);
    g.place(0, 8000, 8000);
    g.place(3, 8700, 8000); // touching, farther
    g.place(2, 8000, 8600); // touching, nearest
    g.place(1, 8000, 7350); // touching, between the two
    let evs = step(&mut g);
    assert_eq!(g.it(), Some(2));
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e.1, TagEvent::It { .. }))
            .count(),
        1
    );
}

#[test]
fn being_it_costs_points() {
    let mut g = game(4, 4, &[("coins", "1")]);
    join(&mut g, 0);
    let (x, y) = g.position(0).unwrap();
    g.place_coin(0, x, y);
    step(&mut g);
    assert_eq!(g.score(0), 1);
    let cost = g.rules.it_cost_ticks;
    // The coin respawned touching nobody and the player stands still.
    for _ in 1..cost - 1 {
        assert!(step(&mut g).is_empty());
    }
    assert_eq!(g.score(0), 1);
    assert_eq!(step(&mut g), vec![(None, TagEvent::Scores(vec![(0, 0)]))]);
    // Never below zero, and no event when nothing changed.
    for _ in 0..3 * cost {
        assert!(step(&mut g).is_empty());
    }
    assert_eq!(g.score(0), 0);
}

#[test]
fn coins_are_collected_and_respawn() {
    let mut g = game(6, 16, &[("coins", "3")]);
    join(&mut g, 0);
    join(&mut g, 1);
    g.place(0, 4000, 4000);
    g.place(1, 12000, 12000);
    let ids: Vec<u32> = (0..3).map(|i| g.coin_id(i)).collect();
    assert_eq!(ids, [16, 18, 20]);
    g.place_coin(0, 9000, 9000);
    g.place_coin(1, 4000 + 640, 4000); // touching 0 (reach 650)
    g.place_coin(2, 12000, 12000 - 660); // not touching 1
    let evs = step(&mut g);
    assert_eq!(evs, vec![(None, TagEvent::Scores(vec![(0, 1)]))]);
    assert_eq!((g.score(0), g.score(1)), (1, 0));
    // Collected coin: a new id (same slot), a new place touching no player.
    assert_eq!((g.coin_id(0), g.coin_id(1), g.coin_id(2)), (16, 19, 20));
    let (cx, cy) = g.coin_position_of(1).unwrap();
    assert_ne!((cx, cy), (4640, 4000));
    for p in 0..2 {
        let (x, y) = g.position(p).unwrap();
        assert!(d2(x, y, cx, cy) > 650 * 650);
    }
    let v = view_of(&g);
    let i = index_of(&v, 19).unwrap();
    assert_eq!(v.fields_of(i), &[KIND_COIN, cx, cy, 0, 0]);
    assert!(index_of(&v, 18).is_none());
    // Two players on one coin: the nearer one scores; two coins on one player: both count.
    g.place_coin(2, 12000, 12000 + 100);
    g.place_coin(0, 12000 - 200, 12000);
    g.place(0, 12000, 12000 + 300);
    let evs = step(&mut g);
    assert_eq!(evs, vec![(None, TagEvent::Scores(vec![(1, 2)]))]);
    assert_eq!((g.coin_id(0), g.coin_id(2)), (17, 21));
}

#[test]
fn it_is_reassigned_when_it_leaves() {
    let mut g = game(7, 8, &[]);
    for p in 0..5 {
        join(&mut g, p);
    }
    step(&mut g);
    assert_eq!(g.it(), Some(0));
    let mut out = Outbox::new();
    g.leave(0, &mut out);
    let evs = events(&mut out);
    let new = g.it().expect("someone is it");
    assert_ne!(new, 0);
    assert_eq!(
        evs,
        vec![
            (None, TagEvent::Left(0)),
            (
                None,
                TagEvent::It {
                    it: new,
                    by: NO_PLAYER
                }
            ),
        ]
    );
    // A non-"it" leaving changes nothing about "it"; leaving twice is a no-op.
    let other = (1..5).find(|&p| p != new).unwrap();
    g.leave(other, &mut out);
    assert_eq!(events(&mut out), vec![(None, TagEvent::Left(other))]);
    g.leave(other, &mut out);
    g.leave(99, &mut out);
    assert!(out.is_empty());
    while let Some(it) = g.it() {
        g.leave(it, &mut out);
        check_invariants(&g);
    }
    assert_eq!(g.player_count(), 0);
    step(&mut g);
    join(&mut g, 3);
    assert_eq!(g.it(), Some(3));
    // The pick is the seeded RNG's: the same game picks the same player.
    let pick = |seed| {
        let mut g = game(seed, 64, &[]);
        for p in 0..64 {
            join(&mut g, p);
        }
        g.leave(0, &mut Outbox::new());
        g.it().unwrap()
    };
    assert_eq!(pick(11), pick(11));
    let picks: BTreeSet<u32> = (0..20).map(pick).collect();
    assert!(picks.len() > 5, "{picks:?}");
}

#[test]
fn movement_sprint_and_stamina() {
    let mut g = game(8, 4, &[("coins", "0")]);
    join(&mut g, 0);
    g.place(0, 8000, 8000);
    g.input(0, &encode_input(DIR_E, false));
    step(&mut g);
    assert_eq!(g.position(0), Some((8080, 8000)));
    g.input(0, &encode_input(DIR_NW, false));
    step(&mut g);
    // 80 * 181 / 256 = 56.
    assert_eq!(g.position(0), Some((8024, 8056)));
    g.place(0, 8000, 8000);
    g.input(0, &encode_input(DIR_S, true));
    step(&mut g);
    assert_eq!(g.position(0), Some((8000, 7872)));
    let v = view_of(&g);
    assert_eq!(v.fields_of(0)[3] & FLAG_SPRINTING, FLAG_SPRINTING);
    assert_eq!(v.fields_of(0)[4], STAMINA_MAX - 8);
    // 1000 / 8 = 125 sprinting steps in all, then walking.
    for _ in 1..125 {
        step(&mut g);
    }
    assert_eq!(view_of(&g).fields_of(0)[4], 0);
    g.place(0, 8000, 8000);
    step(&mut g);
    assert_eq!(g.position(0), Some((8000, 7920)));
    let v = view_of(&g);
    assert_eq!(
        (v.fields_of(0)[3] & FLAG_SPRINTING, v.fields_of(0)[4]),
        (0, 3)
    );
    // Standing still with sprint held regenerates; the edge stops players.
    g.input(0, &encode_input(DIR_NONE, true));
    step(&mut g);
    assert_eq!(view_of(&g).fields_of(0)[4], 6);
    g.input(0, &encode_input(DIR_SW, false));
    for _ in 0..400 {
        step(&mut g);
    }
    assert_eq!(g.position(0), Some((400, 400)));
}

#[test]
fn hostile_input_is_clamped() {
    let mut g = game(9, 4, &[]);
    join(&mut g, 0);
    join(&mut g, 1);
    for d in 0..=255u8 {
        for b in [0u8, 1, 2, 0xFE, 0xFF] {
            g.input(0, &[d, b]);
            g.input(1, &[b, d]);
            step(&mut g);
            check_invariants(&g);
            let want = if d <= 8 { d } else { 0 };
            assert_eq!((g.dir[0], g.sprint_held[0]), (want, b & 1 != 0));
        }
    }
    for frame in [&[][..], &[3], &[3, 1, 9, 9, 9], &[0xFF; 40]] {
        g.input(0, frame);
        step(&mut g);
    }
    assert_eq!(decode_input(&[3]), (DIR_NONE, false));
    assert_eq!(decode_input(&[3, 1, 9]), (DIR_E, true));
    // Absent and impossible players are ignored.
    g.input(2, &[1, 1]);
    g.input(u32::MAX, &[1, 1]);
    assert_eq!(g.player_count(), 2);
    g.leave(u32::MAX, &mut Outbox::new());
    step(&mut g);
    check_invariants(&g);
    assert_eq!(encode_input(9, true), [DIR_NONE, BUTTON_SPRINT]);
    assert_eq!(encode_input(DIR_NW, false), [8, 0]);
}

#[test]
fn view_has_every_player_and_coin() {
    let max = 12;
    let mut g = game(10, max, &[]);
    for p in [0, 3, 5, 11] {
        join(&mut g, p);
    }
    for _ in 0..5 {
        step(&mut g);
    }
    let v = view_of(&g);
    assert_eq!(v.len(), 4 + 8);
    assert_eq!(&v.ids[..4], &[0, 3, 5, 11]);
    for (i, &p) in [0u32, 3, 5, 11].iter().enumerate() {
        let (x, y) = g.position(p).unwrap();
        assert_eq!((v.xs[i], v.ys[i], v.owners[i]), (x, y, p));
        let f = v.fields_of(i);
        assert_eq!((f[0], f[1], f[2]), (KIND_PLAYER, x, y));
        assert_eq!(f[3] & FLAG_IT != 0, g.it() == Some(p));
        assert!((0..=STAMINA_MAX).contains(&f[4]));
    }
    for c in 0..8 {
        let i = 4 + c;
        let (x, y) = g.coin_position_of(c).unwrap();
        assert_eq!(v.ids[i], g.coin_id(c));
        assert!(v.ids[i] >= max as u32 && v.ids[i] < (max + 16) as u32);
        assert_eq!(
            (v.xs[i], v.ys[i], v.owners[i]),
            (x, y, tickwire_game::NO_OWNER)
        );
        assert_eq!(v.fields_of(i), &[KIND_COIN, x, y, 0, 0]);
    }
    let unique: BTreeSet<u32> = v.ids.iter().copied().collect();
    assert_eq!(unique.len(), v.len());
}

/// An event as queued: `(to, bytes)`.
type Sent = (Option<PlayerId>, Vec<u8>);

/// A scripted session: bots play, players join and leave at seeded moments. Returns the
/// state hash after every tick and every event.
fn scripted(seed: u64, ticks: u32, max: usize) -> (Vec<u64>, Vec<Sent>) {
    let mut g = game(seed, max, &[]);
    let mut script = SplitMix64::new(99);
    let mut bots: Vec<TagBot> = (0..max as u64).map(|p| TagBot::new(p + 1)).collect();
    let mut out = Outbox::new();
    let mut view = View::new(ENTITY_FIELDS, 256);
    let mut hashes = Vec::new();
    let mut log = Vec::new();
    let mut frame = [0u8; INPUT_BYTES];
    for tick in 0..ticks {
        for _ in 0..2 {
            let p = script.below(max as u64) as u32;
            match script.below(8) {
                0..=4 if !g.is_present(p) => g.join(p, &mut out).expect("slot free"),
                5 if g.is_present(p) => g.leave(p, &mut out),
                _ => {}
            }
        }
        view.clear();
        g.view(&mut view);
        for p in 0..max as u32 {
            if g.is_present(p) {
                let me = index_of(&view, p).map(|i| view.fields_of(i));
                bots[p as usize].input(tick, me, &mut frame);
                g.input(p, &frame);
            }
        }
        g.step(&mut out);
        check_invariants(&g);
        hashes.push(g.state_hash());
        log.extend(out.drain());
    }
    (hashes, log)
}

#[test]
fn same_seed_same_game() {
    let (h1, e1) = scripted(42, 400, 24);
    let (h2, e2) = scripted(42, 400, 24);
    assert_eq!(h1, h2);
    assert_eq!(e1, e2);
    let (h3, _) = scripted(43, 400, 24);
    assert_ne!(h1.last(), h3.last());
    assert!(h1.iter().zip(&h3).all(|(a, b)| a != b));
    // The session exercised the rules: tags, coins, leaves.
    let evs: Vec<TagEvent> = e1.iter().filter_map(|(_, b)| decode_event(b)).collect();
    assert_eq!(evs.len(), e1.len());
    let tags = evs
        .iter()
        .filter(|e| matches!(e, TagEvent::It { by, .. } if *by != NO_PLAYER))
        .count();
    let lefts = evs
        .iter()
        .filter(|e| matches!(e, TagEvent::Left(_)))
        .count();
    assert!(tags > 0 && lefts > 0, "tags {tags}, lefts {lefts}");
}

#[test]
fn pinned_state_hash() {
    // Pinned: a change here is a change of the game's behaviour (bump VERSION if the
    // encodings changed, and re-pin deliberately).
    let (hashes, events) = scripted(2024, 600, 32);
    let mut h = tickwire_game::StateHasher::new();
    for (to, bytes) in &events {
        h.u32(to.unwrap_or(NO_PLAYER))
            .u32(bytes.len() as u32)
            .bytes(bytes);
    }
    let evs: Vec<TagEvent> = events.iter().filter_map(|e| decode_event(&e.1)).collect();
    let count = |f: fn(&TagEvent) -> bool| evs.iter().filter(|e| f(e)).count();
    let tags = count(|e| matches!(e, TagEvent::It { by, .. } if *by != NO_PLAYER));
    let scores = count(|e| matches!(e, TagEvent::Scores(_)));
    let left = count(|e| matches!(e, TagEvent::Left(_)));
    let got = (
        *hashes.last().unwrap(),
        h.finish(),
        events.len(),
        tags,
        scores,
        left,
    );
    // (final state hash, hash of every event, events, tags, scores events, leaves)
    let want = (
        0xFFE4_77DB_4193_D8BC,
        0x11E3_9D42_6044_D4A0,
        741,
        3,
        335,
        114,
    );
    assert_eq!(got, want, "{got:#x?}");
}

#[test]
fn entity_ids_stay_stable() {
    let mut g = game(12, 40, &[]);
    for p in 0..40 {
        join(&mut g, p);
    }
    let mut bots: Vec<TagBot> = (0..40).map(TagBot::new).collect();
    let mut frame = [0u8; 2];
    let mut prev = view_of(&g);
    for tick in 0..300 {
        for p in 0..40u32 {
            let me = index_of(&prev, p).map(|i| prev.fields_of(i));
            bots[p as usize].input(tick, me, &mut frame);
            g.input(p, &frame);
        }
        let gens: Vec<u32> = g.coin_gen.clone();
        step(&mut g);
        let v = view_of(&g);
        assert_eq!(&v.ids[..40], &(0..40).collect::<Vec<u32>>()[..]);
        for (c, (&gen_before, &gen_now)) in gens.iter().zip(&g.coin_gen).enumerate() {
            let (was, now) = (prev.ids[40 + c], v.ids[40 + c]);
            if gen_now == gen_before {
                assert_eq!(was, now, "uncollected coin keeps its id");
                assert_eq!(prev.fields_of(40 + c), v.fields_of(40 + c));
            } else {
                assert_ne!(was, now, "a respawned coin is a new entity");
            }
        }
        prev = v;
    }
}

#[test]
fn events_round_trip() {
    let h = Hello {
        you: 3,
        width: 16_000,
        height: -1,
        player_radius: 400,
        coin_radius: 250,
        coins: 65_535,
        tag_points: 5,
        immune_ticks: 94,
        it_cost_ticks: 63,
    };
    let b = encode_hello(&h);
    assert_eq!(b.len(), HELLO_BYTES);
    assert_eq!(&b[..9], &[1, 3, 0, 0, 0, 0x80, 0x3E, 0, 0]);
    assert_eq!(decode_event(&b), Some(TagEvent::Hello(h)));
    assert_eq!(decode_event(&b[..28]), None);
    let mut buf = Vec::new();
    encode_scores(&[(1, -2), (7, 300)], &mut buf);
    assert_eq!(
        buf,
        [2, 2, 0, 1, 0, 0, 0, 0xFE, 0xFF, 0xFF, 0xFF, 7, 0, 0, 0, 0x2C, 1, 0, 0]
    );
    assert_eq!(
        decode_event(&buf),
        Some(TagEvent::Scores(vec![(1, -2), (7, 300)]))
    );
    assert_eq!(decode_event(&buf[..18]), None);
    encode_scores(&[], &mut buf);
    assert_eq!(decode_event(&buf), Some(TagEvent::Scores(vec![])));
    let rows: Vec<(u32, i32)> = (0..200).map(|p| (p, 1)).collect();
    encode_scores(&rows, &mut buf);
    assert_eq!(buf.len(), 3 + 8 * SCORES_PER_EVENT);
    assert_eq!(
        encode_it(4, NO_PLAYER),
        [3, 4, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]
    );
    assert_eq!(
        decode_event(&encode_it(4, 2)),
        Some(TagEvent::It { it: 4, by: 2 })
    );
    assert_eq!(encode_left(9), [4, 9, 0, 0, 0]);
    assert_eq!(decode_event(&encode_left(9)), Some(TagEvent::Left(9)));
    for bad in [
        &[][..],
        &[0],
        &[5, 0, 0, 0, 0],
        &[2],
        &[2, 1, 0],
        &[3, 1, 2, 3],
    ] {
        assert_eq!(decode_event(bad), None, "{bad:?}");
    }
}

#[test]
fn bot_wanders_deterministically() {
    let run = |seed| {
        let mut bot = TagBot::new(seed);
        let mut frames = Vec::new();
        let mut frame = [0u8; 2];
        for t in 0..600 {
            let me = [KIND_PLAYER, 1000 + t as i32, 1000, 0, 500];
            bot.input(t, Some(&me), &mut frame);
            assert!(frame[0] <= DIR_NW && frame[1] & !BUTTON_SPRINT == 0);
            frames.push(frame);
        }
        frames
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
    let dirs: BTreeSet<u8> = a.iter().map(|f| f[0]).collect();
    assert!(dirs.len() >= 4, "{dirs:?}");
    // A stuck bot turns at once.
    let mut bot = TagBot::new(5);
    let mut frame = [0u8; 2];
    let me = [KIND_PLAYER, 400, 400, 0, 0];
    bot.input(0, Some(&me), &mut frame);
    let mut turned = false;
    for t in 1..5 {
        let before = frame[0];
        bot.input(t, Some(&me), &mut frame);
        turned |= before != DIR_NONE && frame[0] != before;
    }
    assert!(turned || frame[0] == DIR_NONE);
    // "It" sprints while stamina lasts; bad fields and short frames do not panic.
    let mut bot = TagBot::new(6);
    bot.input(0, Some(&[KIND_PLAYER, 0, 0, FLAG_IT, 900]), &mut frame);
    assert_eq!(frame[1], BUTTON_SPRINT);
    bot.input(1, Some(&[7]), &mut frame);
    bot.input(2, None, &mut [0u8; 1]);
}
