//! `dots`: a template for bringing your own game to Tickwire (see docs/games.md).
//!
//! Every player is a dot on a square field; one star sits somewhere on it. Touch the star to
//! score a point; it then jumps to a new (seeded) place. That is the whole game, and it is
//! enough to show every part of the [`Game`] seam: a fixed input frame, entities as a fixed
//! count of `i32` fields, a non-player entity, reliable events, options, a bot and a state hash.
//!
//! Copy this crate, rename it, and replace the rules.
//!
//! # Encodings (game version 1)
//!
//! **Input frame**, 2 bytes ([`encode_input`]):
//!
//! ```text
//! [0] move_x i8   -127..=127, velocity x = move_x * speed / 127 (units per tick)
//! [1] move_y i8   -127..=127 (-128 is read as -127)
//! ```
//!
//! The newest frame is held: no input means "keep moving the same way".
//!
//! **Entity fields**, 3 per entity:
//!
//! ```text
//! [0] kind   0 = dot (a player), 1 = star
//! [1] x      centre x, units (also the relevance position)
//! [2] y      centre y
//! ```
//!
//! A player's dot has entity id = player id (`0..max_players`) and `owner = Some(player)`;
//! the star has id `max_players` and no owner.
//!
//! **Events**, server to client, reliable (integers little-endian):
//!
//! ```text
//! hello  (to the joiner, at join; 13 bytes)  [0] u8 = 1  [1..5] side i32
//!                                            [5..9] dot radius i32  [9..13] star radius i32
//! score  (to everyone; 9 bytes)              [0] u8 = 2  [1..5] player u32  [5..9] score i32
//! ```
//!
//! The game reads no client messages.
//!
//! # Options (`[game]` in the config file)
//!
//! - `side`: field side in units, `2000..=1000000`, default 20000.
//! - `speed`: top speed in units per tick, `1..=1000`, default 80.
#![forbid(unsafe_code)]

use tickwire_game::{
    Bot, Entity, EntityId, Game, GameConfig, GameEntry, GameSpec, JoinRefused, OptionError, Outbox,
    PlayerId, SplitMix64, StateHasher, View,
};

/// The game's name (`--game dots`).
pub const NAME: &str = "dots";
/// Version of this game's encodings (inputs, fields, events). Bump it when they change.
pub const VERSION: u16 = 1;
/// Bytes per input frame.
pub const INPUT_BYTES: usize = 2;
/// Fields per entity: kind, x, y.
pub const ENTITY_FIELDS: usize = 3;
/// Entity kind of a player's dot.
pub const KIND_DOT: i32 = 0;
/// Entity kind of the star.
pub const KIND_STAR: i32 = 1;
/// Event type of the hello event.
pub const EVENT_HELLO: u8 = 1;
/// Event type of the score event.
pub const EVENT_SCORE: u8 = 2;
/// Dot radius, units.
pub const DOT_RADIUS: i32 = 300;
/// Star radius, units.
pub const STAR_RADIUS: i32 = 200;

/// The registry entry: what `--list-games` prints and `--game dots` builds.
pub fn entry() -> GameEntry {
    GameEntry {
        name: NAME,
        about: "dots chasing a star: touch it to score",
        build: |cfg| Ok(Box::new(Dots::new(cfg)?)),
        bot: |seed| Box::new(DotsBot::new(seed)),
    }
}

/// One player's dot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Dot {
    x: i32,
    y: i32,
    /// The held input, already scaled to units per tick.
    vx: i32,
    vy: i32,
    score: i32,
}

/// The game.
#[derive(Debug)]
pub struct Dots {
    side: i32,
    speed: i32,
    /// Every random draw comes from here, seeded from the config.
    rng: SplitMix64,
    /// Draws so far: part of the state (the next draw depends on it).
    draws: u64,
    /// Indexed by player id; sized for `max_players` once, at construction.
    dots: Vec<Option<Dot>>,
    star: (i32, i32),
    /// The hello event, encoded once.
    hello: [u8; 13],
}

impl Dots {
    /// Builds the game for `cfg`; refuses unknown keys and out-of-range values.
    pub fn new(cfg: &GameConfig) -> Result<Self, OptionError> {
        OptionError::only(cfg, &["side", "speed"])?;
        let side: i32 = OptionError::parse_in(cfg, "side", 2000..=1_000_000, 20_000)?;
        let speed: i32 = OptionError::parse_in(cfg, "speed", 1..=1000, 80)?;
        let mut hello = [0u8; 13];
        hello[0] = EVENT_HELLO;
        hello[1..5].copy_from_slice(&side.to_le_bytes());
        hello[5..9].copy_from_slice(&DOT_RADIUS.to_le_bytes());
        hello[9..13].copy_from_slice(&STAR_RADIUS.to_le_bytes());
        let mut game = Dots {
            side,
            speed,
            rng: SplitMix64::new(cfg.seed),
            draws: 0,
            dots: vec![None; cfg.max_players],
            star: (0, 0),
            hello,
        };
        game.star = game.random_point(STAR_RADIUS);
        Ok(game)
    }

    /// A seeded point at least `margin` inside the field.
    fn random_point(&mut self, margin: i32) -> (i32, i32) {
        self.draws += 2;
        (
            self.rng.range_i32(margin, self.side - margin),
            self.rng.range_i32(margin, self.side - margin),
        )
    }

    /// The star's entity id: just after the players' ids.
    fn star_id(&self) -> EntityId {
        self.dots.len() as EntityId
    }

    /// A player's score (0 when absent).
    pub fn score_of(&self, player: PlayerId) -> i32 {
        self.dot(player).map_or(0, |d| d.score)
    }

    fn dot(&self, player: PlayerId) -> Option<&Dot> {
        self.dots.get(player as usize)?.as_ref()
    }
}

impl Game for Dots {
    fn spec(&self) -> GameSpec {
        GameSpec {
            name: NAME.into(),
            map: "field".into(),
            input_bytes: INPUT_BYTES,
            entity_fields: ENTITY_FIELDS,
            version: VERSION,
        }
    }

    fn join(&mut self, player: PlayerId, out: &mut Outbox) -> Result<(), JoinRefused> {
        if player as usize >= self.dots.len() {
            return Err(JoinRefused::Full);
        }
        let (x, y) = self.random_point(DOT_RADIUS);
        self.dots[player as usize] = Some(Dot {
            x,
            y,
            ..Dot::default()
        });
        out.send(player, &self.hello);
        Ok(())
    }

    fn leave(&mut self, player: PlayerId, _out: &mut Outbox) {
        if let Some(slot) = self.dots.get_mut(player as usize) {
            *slot = None;
        }
    }

    fn input(&mut self, player: PlayerId, frame: &[u8]) {
        // Never trust a frame: the size is checked by the core, the values are ours to clamp.
        let speed = self.speed;
        let (Some(Some(dot)), &[mx, my, ..]) = (self.dots.get_mut(player as usize), frame) else {
            return;
        };
        let axis = |b: u8| (b as i8).max(-127) as i32 * speed / 127;
        dot.vx = axis(mx);
        dot.vy = axis(my);
    }

    fn step(&mut self, out: &mut Outbox) {
        let (lo, hi) = (DOT_RADIUS, self.side - DOT_RADIUS);
        for dot in self.dots.iter_mut().flatten() {
            dot.x = (dot.x + dot.vx).clamp(lo, hi);
            dot.y = (dot.y + dot.vy).clamp(lo, hi);
        }
        // The nearest dot touching the star scores (ties: the lowest id, by iteration order).
        let reach = (DOT_RADIUS + STAR_RADIUS) as i64;
        let (sx, sy) = self.star;
        let mut best: Option<(i64, usize)> = None;
        for (p, dot) in self.dots.iter().enumerate() {
            let Some(dot) = dot else { continue };
            let (dx, dy) = ((dot.x - sx) as i64, (dot.y - sy) as i64);
            let d2 = dx * dx + dy * dy;
            if d2 <= reach * reach && best.is_none_or(|(b, _)| d2 < b) {
                best = Some((d2, p));
            }
        }
        if let Some((_, p)) = best {
            let score = self.dots[p].as_mut().map_or(0, |d| {
                d.score += 1;
                d.score
            });
            let mut ev = [0u8; 9];
            ev[0] = EVENT_SCORE;
            ev[1..5].copy_from_slice(&(p as u32).to_le_bytes());
            ev[5..9].copy_from_slice(&score.to_le_bytes());
            out.broadcast(&ev);
            self.star = self.random_point(STAR_RADIUS);
        }
    }

    fn view(&self, view: &mut View) {
        for (p, dot) in self.dots.iter().enumerate() {
            if let Some(d) = dot {
                view.push(Entity {
                    id: p as EntityId,
                    x: d.x,
                    y: d.y,
                    owner: Some(p as PlayerId),
                    fields: &[KIND_DOT, d.x, d.y],
                });
            }
        }
        let (x, y) = self.star;
        view.push(Entity {
            id: self.star_id(),
            x,
            y,
            owner: None,
            fields: &[KIND_STAR, x, y],
        });
    }

    fn state_hash(&self) -> u64 {
        // Everything that influences future steps, in a fixed order.
        let mut h = StateHasher::new();
        h.u64(self.draws).i32(self.star.0).i32(self.star.1);
        for dot in &self.dots {
            match dot {
                None => h.u32(0),
                Some(d) => h.u32(1).i32(d.x).i32(d.y).i32(d.vx).i32(d.vy).i32(d.score),
            };
        }
        h.finish()
    }

    fn score(&self, player: PlayerId) -> i32 {
        self.score_of(player)
    }
}

/// Encodes one input frame.
pub fn encode_input(move_x: i8, move_y: i8) -> [u8; INPUT_BYTES] {
    [move_x as u8, move_y as u8]
}

/// A bot that wanders: a new random direction every 0.5 to 2 seconds (at 16 ms ticks).
#[derive(Debug)]
pub struct DotsBot {
    rng: SplitMix64,
    dir: (i8, i8),
    next_change: u32,
}

impl DotsBot {
    /// A bot seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        DotsBot {
            rng: SplitMix64::new(seed),
            dir: (0, 0),
            next_change: 0,
        }
    }
}

impl Bot for DotsBot {
    fn input(&mut self, tick: u32, _me: Option<&[i32]>, frame: &mut [u8]) {
        if tick >= self.next_change {
            self.dir = (
                self.rng.range_i32(-127, 127) as i8,
                self.rng.range_i32(-127, 127) as i8,
            );
            self.next_change = tick + 30 + self.rng.below(90) as u32;
        }
        frame[..INPUT_BYTES].copy_from_slice(&encode_input(self.dir.0, self.dir.1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(players: usize, seed: u64) -> GameConfig {
        GameConfig::new(seed, players, 16)
    }

    /// Plays `ticks` ticks with bots (joins at the start, one leave half-way) and returns the
    /// hash after every step: what `tickwire replay` checks.
    fn run(seed: u64, ticks: u32) -> Vec<u64> {
        let mut g = Dots::new(&cfg(8, seed)).unwrap();
        let mut out = Outbox::new();
        let mut bots: Vec<DotsBot> = (0..4).map(|i| DotsBot::new(seed ^ i)).collect();
        let mut frame = [0u8; INPUT_BYTES];
        let mut hashes = Vec::new();
        for p in 0..4 {
            g.join(p, &mut out).unwrap();
        }
        for tick in 0..ticks {
            if tick == ticks / 2 {
                g.leave(1, &mut out);
            }
            for (p, bot) in bots.iter_mut().enumerate() {
                bot.input(tick, None, &mut frame);
                g.input(p as PlayerId, &frame);
            }
            g.step(&mut out);
            out.drain().for_each(drop);
            hashes.push(g.state_hash());
        }
        hashes
    }

    #[test]
    fn same_seed_same_hashes() {
        let a = run(7, 600);
        assert_eq!(a, run(7, 600));
        assert_ne!(a, run(8, 600), "the seed must matter");
    }

    #[test]
    fn join_sends_hello_and_leave_removes_the_dot() {
        let mut g = Dots::new(&cfg(2, 1)).unwrap();
        let mut out = Outbox::new();
        g.join(1, &mut out).unwrap();
        let events: Vec<_> = out.drain().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, Some(1));
        assert_eq!(events[0].1[0], EVENT_HELLO);
        assert_eq!(events[0].1[1..5], 20_000i32.to_le_bytes());

        let mut v = View::new(ENTITY_FIELDS, 4);
        g.view(&mut v);
        assert_eq!(v.len(), 2, "the dot and the star");
        assert_eq!((v.ids[0], v.owners[0]), (1, 1));
        assert_eq!(v.fields_of(0), &[KIND_DOT, v.xs[0], v.ys[0]]);
        assert_eq!(v.fields_of(1)[0], KIND_STAR);

        assert_eq!(g.join(2, &mut out), Err(JoinRefused::Full));
        g.leave(1, &mut out);
        v.clear();
        g.view(&mut v);
        assert_eq!(v.len(), 1, "only the star is left");
        assert_eq!(v.ids[0], 2);
    }

    #[test]
    fn touching_the_star_scores_and_moves_it() {
        let mut g = Dots::new(&cfg(1, 3)).unwrap();
        let mut out = Outbox::new();
        g.join(0, &mut out).unwrap();
        out.drain().for_each(drop);
        let star = g.star;
        if let Some(d) = g.dots[0].as_mut() {
            (d.x, d.y) = star;
        }
        g.step(&mut out);
        assert_eq!(g.score(0), 1);
        assert_ne!(g.star, star);
        let events: Vec<_> = out.drain().collect();
        assert_eq!(
            events,
            vec![(None, vec![EVENT_SCORE, 0, 0, 0, 0, 1, 0, 0, 0])]
        );
    }

    #[test]
    fn hostile_input_and_bad_options() {
        let mut g = Dots::new(&cfg(2, 1)).unwrap();
        let mut out = Outbox::new();
        g.join(0, &mut out).unwrap();
        g.input(0, &[]);
        g.input(0, &[0x80, 0x80]);
        g.input(9, &[1, 2]);
        for _ in 0..1000 {
            g.step(&mut out);
        }
        let d = g.dots[0].unwrap();
        assert_eq!(
            (d.x, d.y),
            (DOT_RADIUS, DOT_RADIUS),
            "clamped to the corner"
        );

        let mut c = cfg(2, 1);
        c.options.push(("speed".into(), "0".into()));
        assert!(Dots::new(&c).unwrap_err().to_string().contains("1..=1000"));
        let mut c = cfg(2, 1);
        c.options.push(("obstacles".into(), "3".into()));
        assert!(Dots::new(&c).is_err());
    }
}
