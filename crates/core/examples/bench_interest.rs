//! Micro benchmark: `interest::Interest` (rebuild + one query per player) next to
//! `tickwire_sim::World::nearest` on the same arena world, in one run.
//!
//! For each player count the world is `WorldConfig::for_players(n, 1)` with `n` players moving
//! under random held inputs (changed now and then), warmed up for 60 ticks. Then every tick:
//! step the world, hand the index the live entities (`ids`, `xs`, `ys` by ascending id), rebuild,
//! and query once per player with `k` (the player's own entity first), timing both query sets
//! (alternating which goes first). Every answer is checked against the sim's, outside the timed
//! sections.
//!
//! Run: `cargo run -p tickwire-core --release --example bench_interest [ticks] [k] [n...]`
//! (defaults: 300 ticks, k = 48, n = 250 500 1000 1500).

use std::hint::black_box;
use std::time::{Duration, Instant};

use tickwire_core::interest::Interest;
use tickwire_sim::{EntityView, PlayerInput, World, WorldConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let ticks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let k: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(48);
    let mut counts: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    if counts.is_empty() {
        counts = vec![250, 500, 1000, 1500];
    }
    println!("ticks {ticks}, k {k}; times are means per tick or per query (us)");
    println!(
        "{:>6} {:>9} {:>11} {:>11} {:>11} {:>14} {:>14}",
        "n", "sim step", "sim query", "int rebuild", "int query", "sim n*query", "int rebuild+n*q"
    );
    for &n in &counts {
        run(n, ticks, k);
    }
    stress(k);
}

/// Layouts a uniform grid handles badly, for the record: per-query cost of `Interest` only.
fn stress(k: usize) {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % m) as i32
    };
    let n = 1500;
    let side = 232_000; // the arena's side for 1500 players
    let mut layouts: Vec<(&str, Vec<(i32, i32)>)> = Vec::new();
    let uniform: Vec<(i32, i32)> = (0..n).map(|_| (next(side), next(side))).collect();
    layouts.push(("uniform (random, arena-sized)", uniform.clone()));
    let mut outlier = uniform.clone();
    outlier[0] = (i32::MAX, i32::MAX);
    layouts.push(("uniform + one entity at i32::MAX", outlier));
    let clusters: Vec<(i32, i32)> = (0..n)
        .map(|i| {
            let c = (i % 4) as i32 * 2_000_000;
            (c + next(40_000), c + next(40_000))
        })
        .collect();
    layouts.push(("4 clusters 40k wide, 2M apart", clusters));
    layouts.push(("all on one point", vec![(5, 5); n]));
    println!("stress, n {n}, k {k}, Interest only:");
    let mut index = Interest::new();
    let mut out = Vec::with_capacity(k);
    for (name, pos) in layouts {
        let ids: Vec<u32> = (0..n as u32).collect();
        let xs: Vec<i32> = pos.iter().map(|p| p.0).collect();
        let ys: Vec<i32> = pos.iter().map(|p| p.1).collect();
        let reps = 20;
        let t0 = Instant::now();
        let mut found = 0;
        for _ in 0..reps {
            index.rebuild(black_box(&ids), black_box(&xs), black_box(&ys));
            for i in 0..n {
                index.nearest(xs[i], ys[i], Some(i as u32), k, &mut out);
                found += out.len();
            }
        }
        let us = t0.elapsed().as_secs_f64() * 1e6 / (reps * n) as f64;
        assert_eq!(found, reps * n * k.min(n));
        println!("  {name:<34} {us:>8.3} us per query (rebuild included)");
    }
}

fn run(n: usize, ticks: usize, k: usize) {
    let mut world = World::new(WorldConfig::for_players(n, 1));
    let players: Vec<u32> = (0..n).map(|_| world.spawn().expect("room")).collect();
    let mut rng = 0x1234_5678_9ABC_DEF0u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut index = Interest::new();
    let (mut ids, mut xs, mut ys) = (Vec::new(), Vec::new(), Vec::new());
    let mut views: Vec<EntityView> = Vec::with_capacity(k);
    let mut out: Vec<u32> = Vec::with_capacity(k);
    let mut sim_answers: Vec<u32> = Vec::with_capacity(n * k);
    let mut int_answers: Vec<u32> = Vec::with_capacity(n * k);
    let (mut step_t, mut sim_t, mut rebuild_t, mut int_t) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut sim_disagree = 0usize;
    let warmup = 60;
    for t in 0..warmup + ticks {
        for &id in &players {
            if next() % 20 == 0 {
                let r = next();
                let input = PlayerInput {
                    move_x: r as i8,
                    move_y: (r >> 8) as i8,
                    buttons: ((r >> 16) % 4 == 0) as u8,
                };
                world.apply_input(id, input);
            }
        }
        let t0 = Instant::now();
        world.step();
        let step = t0.elapsed();

        // The game's side: a flat list of live entities.
        ids.clear();
        xs.clear();
        ys.clear();
        for id in 0..world.config().max_players as u32 {
            if let Some(e) = world.entity(id) {
                ids.push(e.id);
                xs.push(e.x);
                ys.push(e.y);
            }
        }

        let sim_queries = |answers: &mut Vec<u32>, views: &mut Vec<EntityView>| {
            answers.clear();
            let t0 = Instant::now();
            for &id in &ids {
                world.nearest(id, k, views);
                answers.extend(views.iter().map(|v| v.id));
            }
            t0.elapsed()
        };
        let int_queries = |answers: &mut Vec<u32>, out: &mut Vec<u32>, index: &mut Interest| {
            answers.clear();
            let t0 = Instant::now();
            index.rebuild(black_box(&ids), black_box(&xs), black_box(&ys));
            let t1 = Instant::now();
            for i in 0..ids.len() {
                index.nearest(xs[i], ys[i], Some(i as u32), k, out);
                answers.extend(out.iter().map(|&j| ids[j as usize]));
            }
            (t1 - t0, t1.elapsed())
        };
        let (sim, (rebuild, int)) = if t % 2 == 0 {
            let s = sim_queries(&mut sim_answers, &mut views);
            (s, int_queries(&mut int_answers, &mut out, &mut index))
        } else {
            let i = int_queries(&mut int_answers, &mut out, &mut index);
            (sim_queries(&mut sim_answers, &mut views), i)
        };
        if sim_answers != int_answers {
            // Settle each disagreement with the definition: Interest must match it.
            let m = k.min(ids.len());
            for (i, (s, a)) in sim_answers.chunks(m).zip(int_answers.chunks(m)).enumerate() {
                if s != a {
                    let truth = brute(&ids, &xs, &ys, i, k);
                    assert_eq!(
                        a, truth,
                        "tick {t}: Interest differs from brute force, viewer {i}"
                    );
                    if sim_disagree < 3 {
                        let at = s.iter().zip(a).position(|(p, q)| p != q).unwrap_or(0);
                        let d2 = |id: u32| {
                            let j = ids.binary_search(&id).expect("ids ascend");
                            let (dx, dy) =
                                (xs[j] as i64 - xs[i] as i64, ys[j] as i64 - ys[i] as i64);
                            dx * dx + dy * dy
                        };
                        println!(
                            "       note: n {n} tick {t} viewer id {}: World::nearest differs from brute force at rank {at} of {m}: id {} (d2 {}) where brute force has id {} (d2 {})",
                            ids[i], s[at], d2(s[at]), a[at], d2(a[at])
                        );
                    }
                    sim_disagree += 1;
                }
            }
        }
        if t >= warmup {
            step_t += step;
            sim_t += sim;
            rebuild_t += rebuild;
            int_t += int;
        }
    }
    let per_tick = |d: Duration| d.as_secs_f64() * 1e6 / ticks as f64;
    let per_query = |d: Duration| per_tick(d) / n as f64;
    println!(
        "{:>6} {:>9.1} {:>11.3} {:>11.1} {:>11.3} {:>14.1} {:>14.1}",
        n,
        per_tick(step_t),
        per_query(sim_t),
        per_tick(rebuild_t),
        per_query(int_t),
        per_tick(sim_t),
        per_tick(rebuild_t + int_t),
    );
    if sim_disagree > 0 {
        println!("       note: World::nearest disagreed with brute force on {sim_disagree} queries (Interest agreed on all)");
    }
}

/// Ids of the `k` entities nearest to entity `i` by the definition: sort all by `(d2, id)`.
fn brute(ids: &[u32], xs: &[i32], ys: &[i32], i: usize, k: usize) -> Vec<u32> {
    let d2 = |j: usize| {
        let (dx, dy) = (xs[j] as i64 - xs[i] as i64, ys[j] as i64 - ys[i] as i64);
        dx * dx + dy * dy
    };
    let mut all: Vec<usize> = (0..ids.len()).filter(|&j| j != i).collect();
    all.sort_by_key(|&j| (d2(j), ids[j]));
    std::iter::once(ids[i])
        .chain(all.iter().map(|&j| ids[j]))
        .take(k)
        .collect()
}
