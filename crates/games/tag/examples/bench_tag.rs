//! Micro benchmark: `Tag::step` and `Tag::view` with 250, 500, 1000 and 1500 players (a game
//! sized for exactly that many, default coins), every player driven by a `TagBot`; then the
//! worst case for the contact checks, a crowd: every player holds south-west and piles into
//! one corner (one grid cell), where "it" tags someone every step.
//!
//! Run: `cargo run -p tickwire-tag --release --example bench_tag [ticks]`.

use std::time::{Duration, Instant};

use tickwire_game::{Bot, Game, GameConfig, Outbox, View};
use tickwire_tag::{encode_input, Tag, TagBot, DIR_SW, ENTITY_FIELDS, INPUT_BYTES};

fn main() {
    let ticks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(600);
    let cases = [
        (250usize, false),
        (500, false),
        (1000, false),
        (1500, false),
    ];
    for (players, crowd) in cases.into_iter().chain([(1000, true), (1500, true)]) {
        let mut game = Tag::new(&GameConfig::new(1, players, 16)).expect("default options");
        // The crowd walks 56 units per tick along each axis to reach the corner.
        let warmup = if crowd {
            game.side() as usize / 56 + 60
        } else {
            60
        };
        let mut out = Outbox::new();
        for p in 0..players as u32 {
            game.join(p, &mut out).expect("room");
        }
        out.drain().for_each(drop);
        let mut bots: Vec<TagBot> = (0..players as u64).map(TagBot::new).collect();
        let mut view = View::new(ENTITY_FIELDS, players + game.coin_count());
        let mut frame = [0u8; INPUT_BYTES];
        let (mut step_t, mut view_t) = (Duration::ZERO, Duration::ZERO);
        let (mut step_max, mut view_max) = (Duration::ZERO, Duration::ZERO);
        let (mut events, mut tags) = (0usize, 0usize);
        game.view(&mut view);
        for t in 0..warmup + ticks {
            // Bots read their own entity: players are pushed first, in id order, all present.
            for (p, bot) in bots.iter_mut().enumerate() {
                if crowd {
                    frame = encode_input(DIR_SW, false);
                } else {
                    bot.input(t as u32, Some(view.fields_of(p)), &mut frame);
                }
                game.input(p as u32, &frame);
            }
            let it_before = game.it();
            let t0 = Instant::now();
            game.step(&mut out);
            let t1 = Instant::now();
            view.clear();
            game.view(&mut view);
            let t2 = Instant::now();
            if t >= warmup {
                step_t += t1 - t0;
                view_t += t2 - t1;
                step_max = step_max.max(t1 - t0);
                view_max = view_max.max(t2 - t1);
                events += out.drain().count();
                tags += (game.it() != it_before) as usize;
            } else {
                out.drain().for_each(drop);
            }
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6 / ticks as f64;
        println!(
            "{:5} {players:5}  coins {:4}  field {:6}  step {:6.1} us (max {:6.1})  \
             view {:6.1} us (max {:6.1})  entities {:5}  events/tick {:5.2}  tags {tags}",
            if crowd { "crowd" } else { "bots" },
            game.coin_count(),
            game.side(),
            us(step_t),
            step_max.as_secs_f64() * 1e6,
            us(view_t),
            view_max.as_secs_f64() * 1e6,
            view.len(),
            events as f64 / ticks as f64,
        );
    }
}
