//! Micro benchmark: `World::step` and `World::nearest(id, 55)` for 1500 players in an arena
//! sized for 2048 (the server default), with random held inputs changing now and then.
//!
//! Run: `cargo run -p tickwire-sim --release --example bench_step [players] [ticks] [k]`.

use std::time::{Duration, Instant};

use tickwire_sim::{EntityView, PlayerInput, World, WorldConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let players: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1500);
    let ticks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(600);
    let k: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(55);

    let mut world = World::new(WorldConfig::for_players(2048.max(players), 1));
    let ids: Vec<_> = (0..players).map(|_| world.spawn().expect("room")).collect();
    let mut rng = 0x1234_5678_9ABC_DEF0u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out: Vec<EntityView> = Vec::with_capacity(k);
    let (mut step_time, mut query_time) = (Duration::ZERO, Duration::ZERO);
    let mut step_max = Duration::ZERO;
    let mut found = 0usize;
    let warmup = 60;
    for t in 0..warmup + ticks {
        for &id in &ids {
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
        let t1 = Instant::now();
        for &id in &ids {
            world.nearest(id, k, &mut out);
            found += out.len();
        }
        let t2 = Instant::now();
        if t >= warmup {
            step_time += t1 - t0;
            step_max = step_max.max(t1 - t0);
            query_time += t2 - t1;
        }
    }
    let per_step_us = step_time.as_secs_f64() * 1e6 / ticks as f64;
    let per_query_us = query_time.as_secs_f64() * 1e6 / (ticks * players) as f64;
    let tick_us = per_step_us + per_query_us * players as f64;
    println!(
        "players {players}, arena {}x{}, {} walls, ticks {ticks}, k {k}",
        world.config().width,
        world.config().height,
        world.walls().len()
    );
    println!(
        "step: {per_step_us:.1} us mean, {:.1} us max",
        step_max.as_secs_f64() * 1e6
    );
    println!("nearest({k}): {per_query_us:.3} us per query");
    println!(
        "step + {players} queries: {:.3} ms per tick ({:.2} us per player); mean result {:.1}",
        tick_us / 1000.0,
        tick_us / players as f64,
        found as f64 / ((warmup + ticks) * players) as f64
    );
    println!("state_hash {:016x}", world.state_hash());
}
