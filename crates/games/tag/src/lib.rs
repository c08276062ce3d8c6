//! tickwire-tag: top-down tag with coins and a score table, Tickwire's second built-in game.
//!
//! It exists to prove the [`tickwire_game::Game`] seam with something unlike the arena: a
//! different input encoding (an 8-way direction byte), non-player entities (coins), one
//! special player ("it"), a score table carried by reliable events, and game options.
//!
//! # Rules
//!
//! - The field is a square `[0, side]^2` (units; read them as millimetres), `side =
//!   sqrt(max_players) * 4000`, at least 16 000 (at most 2^26). There are no obstacles. Players
//!   are circles of radius 400, coins circles of radius 250. `+y` is north.
//! - Players move in 8 directions at 5 000 units/s walking or 8 000 units/s sprinting (per
//!   tick: `speed * tick_ms / 1000`, at most one player radius; diagonals are scaled by
//!   181/256). Players pass through each other and stop at the field's edge. There is no
//!   inertia: the held direction is the velocity.
//! - Sprinting costs stamina: it is `0..=1000`, a sprint empties it in 2 s and it refills in
//!   5 s while not sprinting. A sprint needs at least one tick's drain left, else the player
//!   walks.
//! - Whenever at least one player is present, exactly one is "it". The first player to join
//!   is it; when it leaves, the server picks a new one uniformly with the seeded RNG.
//! - Each step, if "it" touches (centre distance `<= 2 * 400`) players who are not immune,
//!   the nearest (ties: lowest id) becomes "it". The tagger scores `tag_points` (default 5)
//!   and is immune for 1.5 s (no tag-backs). A newly joined player is immune for 1.5 s too.
//!   At most one tag happens per step.
//! - Being "it" costs 1 point per second held (never below 0).
//! - Coins (option `coins`, default `max(max_players / 2, 8)`) are always on the field. A
//!   player touching one (centre distance `<= 400 + 250`; several: the nearest, ties lowest
//!   id) scores 1, and the coin respawns at a seeded position touching no player (8 seeded
//!   tries; the last one if every try touches someone).
//!
//! A step: tick; move every player (id order); charge "it"; rebuild the player grid; at most
//! one tag; coins (slot order); broadcast the changed scores.
//!
//! # Options (the `[game]` section)
//!
//! - `coins`: `0..=65535`, default `max(max_players / 2, 8)` (at most 65 535).
//! - `tag_points`: `0..=1000`, default 5.
//!
//! Any other key is refused.
//!
//! # Input (2 bytes, [`encode_input`])
//!
//! ```text
//! [0] direction u8   0 = none, 1..=8 = N, NE, E, SE, S, SW, W, NW; anything else = none
//! [1] buttons   u8   bit 0 = sprint; other bits ignored
//! ```
//!
//! The newest frame is held until the next one. Frames for absent players are ignored.
//!
//! # Entities (5 fields, i32 each)
//!
//! ```text
//! [0] kind     0 = player, 1 = coin
//! [1] x        centre x (also the entity's relevance position)
//! [2] y        centre y
//! [3] flags    player: bit 0 = it, bit 1 = immune (cannot be tagged next step),
//!              bit 2 = sprinted last step; coin: 0
//! [4] stamina  player: 0..=1000; coin: 0
//! ```
//!
//! Players' entity id is their player id (`0..max_players`) and they carry `owner =
//! Some(player)`. Coin slot `i` (`0..coins`) has id `max_players + 2 * i + (g & 1)`, where
//! `g` counts the slot's respawns: the id changes each time the coin is collected, so a client
//! sees the old coin vanish and a new one appear instead of a coin sliding across the field.
//! Coins have no owner. [`Game::view`] pushes every player, then every coin.
//!
//! # Events (reliable, server to client; integers little-endian)
//!
//! Every event is a state to set (idempotent): receiving one twice is harmless.
//!
//! ```text
//! hello   (to the joiner, at join; 29 bytes)
//!         [0] u8 = 1  [1..5] you u32  [5..9] width i32  [9..13] height i32
//!         [13..17] player radius i32  [17..21] coin radius i32  [21..23] coins u16
//!         [23..25] tag points u16  [25..27] immune ticks u16  [27..29] it cost ticks u16
//! scores  (3 + 8 * count bytes, count <= 128)
//!         [0] u8 = 2  [1..3] count u16  then count rows { player u32, score i32 },
//!         ascending by player
//! it      (9 bytes)
//!         [0] u8 = 3  [1..5] it u32  [5..9] by u32 (the tagger; u32::MAX = picked by the server)
//! left    (5 bytes)
//!         [0] u8 = 4  [1..5] player u32 (drop their score row)
//! ```
//!
//! When they are sent:
//! - `join(p)`: to `p`: hello, then the whole score table (every present player, `p`
//!   included, in events of at most 128 rows), then the current "it"; broadcast: scores
//!   `{p: 0}`; and, if `p` became "it" (nobody else is present), broadcast "it".
//! - `leave(p)`: broadcast left `p`; if `p` was "it" and players remain, broadcast the new
//!   "it" (`by = u32::MAX`).
//! - `step`: broadcast "it" on a tag; then broadcast the rows of the players whose score
//!   changed during the step (only those, ascending, in events of at most 128 rows).
//!
//! # Determinism and cost
//!
//! Integer arithmetic only, one [`SplitMix64`] seeded from the config (join positions, coin
//! positions, the pick of a new "it"), tables allocated for `max_players` and the coin count
//! up front. A uniform player grid (cells a power of two at least 4096 units, the typical
//! player spacing) is rebuilt by counting sort each step; tag and coin contacts look at the
//! 3x3 cells around "it" and around each coin, so a step is `O(players + coins + cells)`.
//! `examples/bench_tag.rs` measures `step` and `view`.
#![forbid(unsafe_code)]

mod bot;
mod grid;
#[cfg(test)]
mod tests;
mod wire;

pub use bot::TagBot;
pub use wire::*;

use grid::Grid;
use tickwire_game::{
    Entity, Game, GameConfig, GameEntry, GameSpec, JoinRefused, OptionError, Outbox, PlayerId,
    SplitMix64, StateHasher, View,
};

/// Game name.
pub const NAME: &str = "tag";
/// Map name shown by server browsers.
pub const MAP: &str = "yard";
/// Version of the encodings above.
pub const VERSION: u16 = 1;
/// Bytes per input frame.
pub const INPUT_BYTES: usize = 2;
/// Fields per entity.
pub const ENTITY_FIELDS: usize = 5;

/// Entity field 0 of a player.
pub const KIND_PLAYER: i32 = 0;
/// Entity field 0 of a coin.
pub const KIND_COIN: i32 = 1;
/// Entity flags bit: this player is "it".
pub const FLAG_IT: i32 = 1;
/// Entity flags bit: this player cannot be tagged in the next step.
pub const FLAG_IMMUNE: i32 = 2;
/// Entity flags bit: this player sprinted in the last step.
pub const FLAG_SPRINTING: i32 = 4;

/// Player radius (units).
pub const PLAYER_RADIUS: i32 = 400;
/// Coin radius (units).
pub const COIN_RADIUS: i32 = 250;
/// Full stamina.
pub const STAMINA_MAX: i32 = 1000;
/// Most player slots the game sizes its tables for (larger `max_players` are cut to it).
pub const MAX_PLAYERS: usize = 1 << 20;

/// Field area per player slot is `SPACING^2`.
const SPACING: i64 = 4000;
const MIN_SIDE: i64 = 16_000;
const MAX_SIDE: i64 = 1 << 26;
const WALK_PER_S: i64 = 5000;
const SPRINT_PER_S: i64 = 8000;
/// A full stamina bar sprints this long.
const SPRINT_MS: i64 = 2000;
/// An empty stamina bar refills in this long.
const REGEN_MS: i64 = 5000;
const IMMUNE_MS: i64 = 1500;
const IT_COST_MS: i64 = 1000;
const DEFAULT_TAG_POINTS: u16 = 5;
const MAX_COINS: u16 = u16::MAX;
/// Seeded tries for a join or coin position before settling for the best one.
const SPAWN_TRIES: usize = 8;
/// Unit vectors of the 8 directions, in 1/256 (diagonals 181/256 ~ 1/sqrt 2).
const DIRS: [(i64, i64); 9] = [
    (0, 0),
    (0, 256),
    (181, 181),
    (256, 0),
    (181, -181),
    (0, -256),
    (-181, -181),
    (-256, 0),
    (-181, 181),
];

/// The constants of one game, derived from its config.
#[derive(Clone, Debug)]
struct Rules {
    max_players: usize,
    side: i32,
    coins: usize,
    tag_points: i32,
    walk: i64,
    sprint: i64,
    drain: i32,
    regen: i32,
    immune_ticks: u64,
    it_cost_ticks: u32,
}

/// `ceil(ms / tick_ms)`, at least 1, at most `u16::MAX`.
fn ticks_for(ms: i64, tick_ms: i64) -> i64 {
    ((ms + tick_ms - 1) / tick_ms).clamp(1, u16::MAX as i64)
}

impl Rules {
    fn new(cfg: &GameConfig) -> Result<Rules, OptionError> {
        OptionError::only(cfg, &["coins", "tag_points"])?;
        let max_players = cfg.max_players.min(MAX_PLAYERS);
        let default_coins = (max_players / 2).clamp(8, MAX_COINS as usize) as u16;
        let coins = OptionError::parse_in(cfg, "coins", 0..=MAX_COINS, default_coins)?;
        let tag_points = OptionError::parse_in(cfg, "tag_points", 0..=1000u16, DEFAULT_TAG_POINTS)?;
        let area = (max_players.max(1) as u64).saturating_mul((SPACING * SPACING) as u64);
        let side = (area.isqrt() as i64).clamp(MIN_SIDE, MAX_SIDE) as i32;
        let tick_ms = (cfg.tick_ms as i64).clamp(1, 1000);
        let per_tick = |per_s: i64| (per_s * tick_ms / 1000).clamp(1, PLAYER_RADIUS as i64);
        Ok(Rules {
            max_players,
            side,
            coins: coins as usize,
            tag_points: tag_points as i32,
            walk: per_tick(WALK_PER_S),
            sprint: per_tick(SPRINT_PER_S),
            drain: (STAMINA_MAX as i64 * tick_ms / SPRINT_MS).max(1) as i32,
            regen: (STAMINA_MAX as i64 * tick_ms / REGEN_MS).max(1) as i32,
            immune_ticks: ticks_for(IMMUNE_MS, tick_ms) as u64,
            it_cost_ticks: ticks_for(IT_COST_MS, tick_ms) as u32,
        })
    }
}

/// The tag game (see the crate docs for its rules and encodings).
#[derive(Debug)]
pub struct Tag {
    rules: Rules,
    rng: SplitMix64,
    tick: u64,
    count: usize,
    present: Vec<bool>,
    xs: Vec<i32>,
    ys: Vec<i32>,
    /// Held input direction (0..=8).
    dir: Vec<u8>,
    /// Held sprint button.
    sprint_held: Vec<bool>,
    /// Sprinted in the last step.
    sprinted: Vec<bool>,
    stamina: Vec<i32>,
    /// Tag checks at ticks `< immune_until` refuse this player.
    immune_until: Vec<u64>,
    scores: Vec<i32>,
    /// The current "it", or [`NO_PLAYER`].
    it: PlayerId,
    /// Steps the current "it" has been it.
    it_ticks: u32,
    coin_x: Vec<i32>,
    coin_y: Vec<i32>,
    /// Respawns per coin slot (the low bit is in the coin's entity id).
    coin_gen: Vec<u32>,
    /// Player grid, rebuilt in every step (derived state: not hashed).
    grid: Grid,
    /// Scratch: players whose score changed this step.
    dirty: Vec<bool>,
    dirty_list: Vec<PlayerId>,
    /// Scratch for encoding score events.
    rows: Vec<(PlayerId, i32)>,
    buf: Vec<u8>,
}

/// Squared distance.
#[inline]
fn d2(ax: i32, ay: i32, bx: i32, by: i32) -> i64 {
    let (dx, dy) = ((ax - bx) as i64, (ay - by) as i64);
    dx * dx + dy * dy
}

impl Tag {
    /// Builds a game for `cfg`; refuses unknown or out-of-range options. `max_players` above
    /// [`MAX_PLAYERS`] is cut to it.
    pub fn new(cfg: &GameConfig) -> Result<Tag, OptionError> {
        let rules = Rules::new(cfg)?;
        let n = rules.max_players;
        let reach = (2 * PLAYER_RADIUS).max(PLAYER_RADIUS + COIN_RADIUS) as i64;
        let mut tag = Tag {
            rng: SplitMix64::new(cfg.seed ^ 0x5441_4747_414D_4531),
            tick: 0,
            count: 0,
            present: vec![false; n],
            xs: vec![0; n],
            ys: vec![0; n],
            dir: vec![0; n],
            sprint_held: vec![false; n],
            sprinted: vec![false; n],
            stamina: vec![0; n],
            immune_until: vec![0; n],
            scores: vec![0; n],
            it: NO_PLAYER,
            it_ticks: 0,
            coin_x: vec![0; rules.coins],
            coin_y: vec![0; rules.coins],
            coin_gen: vec![0; rules.coins],
            grid: Grid::new(rules.side, reach.max(SPACING), n),
            dirty: vec![false; n],
            dirty_list: Vec::with_capacity(n),
            rows: Vec::with_capacity(wire::SCORES_PER_EVENT),
            buf: Vec::with_capacity(3 + 8 * wire::SCORES_PER_EVENT),
            rules,
        };
        for i in 0..tag.rules.coins {
            let (x, y) = tag.coin_position();
            tag.coin_x[i] = x;
            tag.coin_y[i] = y;
        }
        Ok(tag)
    }

    /// Players present.
    pub fn player_count(&self) -> usize {
        self.count
    }

    /// The current "it", if any player is present.
    pub fn it(&self) -> Option<PlayerId> {
        (self.it != NO_PLAYER).then_some(self.it)
    }

    /// Ticks stepped so far.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Field side in units (the field is `[0, side]^2`).
    pub fn side(&self) -> i32 {
        self.rules.side
    }

    /// Coins on the field.
    pub fn coin_count(&self) -> usize {
        self.rules.coins
    }

    /// Entity id of coin slot `i` (`max_players + 2 * i + respawns % 2`).
    pub fn coin_id(&self, i: usize) -> u32 {
        (self.rules.max_players + 2 * i) as u32 + (self.coin_gen[i] & 1)
    }

    /// A present player's position.
    pub fn position(&self, player: PlayerId) -> Option<(i32, i32)> {
        self.is_present(player)
            .then(|| (self.xs[player as usize], self.ys[player as usize]))
    }

    /// Coin slot `i`'s position.
    pub fn coin_position_of(&self, i: usize) -> Option<(i32, i32)> {
        (i < self.rules.coins).then(|| (self.coin_x[i], self.coin_y[i]))
    }

    /// The hello event's contents for `player`.
    pub fn hello(&self, player: PlayerId) -> Hello {
        Hello {
            you: player,
            width: self.rules.side,
            height: self.rules.side,
            player_radius: PLAYER_RADIUS,
            coin_radius: COIN_RADIUS,
            coins: self.rules.coins as u16,
            tag_points: self.rules.tag_points as u16,
            immune_ticks: self.rules.immune_ticks as u16,
            it_cost_ticks: self.rules.it_cost_ticks as u16,
        }
    }

    #[cfg(test)]
    fn place(&mut self, player: PlayerId, x: i32, y: i32) {
        self.xs[player as usize] = x;
        self.ys[player as usize] = y;
    }

    #[cfg(test)]
    fn place_coin(&mut self, i: usize, x: i32, y: i32) {
        self.coin_x[i] = x;
        self.coin_y[i] = y;
    }

    #[inline]
    fn is_present(&self, p: PlayerId) -> bool {
        self.present.get(p as usize).copied().unwrap_or(false)
    }

    /// Flags of a present player.
    fn flags(&self, p: usize) -> i32 {
        let mut f = 0;
        if self.it == p as PlayerId {
            f |= FLAG_IT;
        }
        if self.tick + 1 < self.immune_until[p] {
            f |= FLAG_IMMUNE;
        }
        if self.sprinted[p] {
            f |= FLAG_SPRINTING;
        }
        f
    }

    fn random_point(&mut self, margin: i32) -> (i32, i32) {
        let hi = self.rules.side - margin;
        (
            self.rng.range_i32(margin, hi),
            self.rng.range_i32(margin, hi),
        )
    }

    /// A seeded coin position touching no player in the grid (the last try if all touch).
    fn coin_position(&mut self) -> (i32, i32) {
        let reach = (PLAYER_RADIUS + COIN_RADIUS) as i64;
        let mut at = (0, 0);
        for _ in 0..SPAWN_TRIES {
            at = self.random_point(COIN_RADIUS);
            let mut clear = true;
            self.grid.around(at.0, at.1, |p| {
                let p = p as usize;
                clear &= d2(self.xs[p], self.ys[p], at.0, at.1) > reach * reach;
            });
            if clear {
                break;
            }
        }
        at
    }

    /// A seeded join position at least a quarter of the field from "it" (the farthest try if
    /// none is).
    fn join_position(&mut self) -> (i32, i32) {
        let first = self.random_point(PLAYER_RADIUS);
        if self.it == NO_PLAYER {
            return first;
        }
        let (ix, iy) = (self.xs[self.it as usize], self.ys[self.it as usize]);
        let far = self.rules.side as i64 / 4;
        let mut best = (d2(first.0, first.1, ix, iy), first);
        for _ in 1..SPAWN_TRIES {
            if best.0 >= far * far {
                break;
            }
            let at = self.random_point(PLAYER_RADIUS);
            let d = d2(at.0, at.1, ix, iy);
            if d > best.0 {
                best = (d, at);
            }
        }
        best.1
    }

    fn add_score(&mut self, p: usize, delta: i32) {
        let new = self.scores[p].saturating_add(delta).max(0);
        if new != self.scores[p] {
            self.scores[p] = new;
            if !self.dirty[p] {
                self.dirty[p] = true;
                self.dirty_list.push(p as PlayerId);
            }
        }
    }

    /// Sends `rows` (ascending) in events of at most [`SCORES_PER_EVENT`] rows to `to`
    /// (`None`: everyone).
    fn send_rows(
        buf: &mut Vec<u8>,
        rows: &[(PlayerId, i32)],
        to: Option<PlayerId>,
        out: &mut Outbox,
    ) {
        for chunk in rows.chunks(wire::SCORES_PER_EVENT) {
            encode_scores(chunk, buf);
            match to {
                Some(p) => out.send(p, buf),
                None => out.broadcast(buf),
            }
        }
    }

    /// Broadcasts the rows of the players whose score changed, and forgets them.
    fn flush_scores(&mut self, out: &mut Outbox) {
        if self.dirty_list.is_empty() {
            return;
        }
        self.dirty_list.sort_unstable();
        self.rows.clear();
        for &p in &self.dirty_list {
            self.dirty[p as usize] = false;
            if self.present[p as usize] {
                self.rows.push((p, self.scores[p as usize]));
                if self.rows.len() == wire::SCORES_PER_EVENT {
                    Self::send_rows(&mut self.buf, &self.rows, None, out);
                    self.rows.clear();
                }
            }
        }
        Self::send_rows(&mut self.buf, &self.rows, None, out);
        self.dirty_list.clear();
    }

    /// Moves every present player and updates stamina.
    fn move_players(&mut self) {
        let (lo, hi) = (PLAYER_RADIUS, self.rules.side - PLAYER_RADIUS);
        for p in 0..self.present.len() {
            if !self.present[p] {
                continue;
            }
            let d = self.dir[p] as usize;
            let sprint = self.sprint_held[p] && d != 0 && self.stamina[p] >= self.rules.drain;
            let speed = if sprint {
                self.stamina[p] -= self.rules.drain;
                self.rules.sprint
            } else {
                self.stamina[p] = (self.stamina[p] + self.rules.regen).min(STAMINA_MAX);
                self.rules.walk
            };
            self.sprinted[p] = sprint;
            let (ux, uy) = DIRS[d.min(8)];
            self.xs[p] = (self.xs[p] + (speed * ux / 256) as i32).clamp(lo, hi);
            self.ys[p] = (self.ys[p] + (speed * uy / 256) as i32).clamp(lo, hi);
        }
    }

    /// "It" tags the nearest touching player who is not immune, if any.
    fn tag_check(&mut self, out: &mut Outbox) {
        if self.it == NO_PLAYER {
            return;
        }
        let it = self.it as usize;
        let (ix, iy) = (self.xs[it], self.ys[it]);
        let reach = 2 * PLAYER_RADIUS as i64;
        let mut best: Option<(i64, u32)> = None;
        self.grid.around(ix, iy, |q| {
            let qi = q as usize;
            if qi == it || self.tick < self.immune_until[qi] {
                return;
            }
            let d = d2(self.xs[qi], self.ys[qi], ix, iy);
            if d <= reach * reach && best.is_none_or(|b| (d, q) < b) {
                best = Some((d, q));
            }
        });
        if let Some((_, q)) = best {
            self.it = q;
            self.it_ticks = 0;
            self.immune_until[it] = self.tick + 1 + self.rules.immune_ticks;
            self.add_score(it, self.rules.tag_points);
            out.broadcast(&encode_it(q, it as PlayerId));
        }
    }

    /// Each coin goes to the nearest touching player, if any, and respawns.
    fn collect_coins(&mut self) {
        let reach = (PLAYER_RADIUS + COIN_RADIUS) as i64;
        for i in 0..self.rules.coins {
            let (cx, cy) = (self.coin_x[i], self.coin_y[i]);
            let mut best: Option<(i64, u32)> = None;
            self.grid.around(cx, cy, |q| {
                let d = d2(self.xs[q as usize], self.ys[q as usize], cx, cy);
                if d <= reach * reach && best.is_none_or(|b| (d, q) < b) {
                    best = Some((d, q));
                }
            });
            if let Some((_, q)) = best {
                self.add_score(q as usize, 1);
                self.coin_gen[i] = self.coin_gen[i].wrapping_add(1);
                let (x, y) = self.coin_position();
                self.coin_x[i] = x;
                self.coin_y[i] = y;
            }
        }
    }
}

impl Game for Tag {
    fn spec(&self) -> GameSpec {
        GameSpec {
            name: NAME.to_string(),
            map: MAP.to_string(),
            input_bytes: INPUT_BYTES,
            entity_fields: ENTITY_FIELDS,
            version: VERSION,
        }
    }

    fn join(&mut self, player: PlayerId, out: &mut Outbox) -> Result<(), JoinRefused> {
        let p = player as usize;
        if p >= self.rules.max_players || self.present[p] {
            return Err(JoinRefused::Full);
        }
        let (x, y) = self.join_position();
        self.present[p] = true;
        self.count += 1;
        self.xs[p] = x;
        self.ys[p] = y;
        self.dir[p] = 0;
        self.sprint_held[p] = false;
        self.sprinted[p] = false;
        self.stamina[p] = STAMINA_MAX;
        self.immune_until[p] = self.tick + 1 + self.rules.immune_ticks;
        self.scores[p] = 0;
        let became_it = self.it == NO_PLAYER;
        if became_it {
            self.it = player;
            self.it_ticks = 0;
        }

        out.send(player, &encode_hello(&self.hello(player)));
        // The whole table, the joiner included.
        let mut rows = std::mem::take(&mut self.rows);
        rows.clear();
        for q in 0..self.present.len() {
            if self.present[q] {
                rows.push((q as PlayerId, self.scores[q]));
                if rows.len() == wire::SCORES_PER_EVENT {
                    Self::send_rows(&mut self.buf, &rows, Some(player), out);
                    rows.clear();
                }
            }
        }
        Self::send_rows(&mut self.buf, &rows, Some(player), out);
        out.send(player, &encode_it(self.it, NO_PLAYER));
        Self::send_rows(&mut self.buf, &[(player, 0)], None, out);
        if became_it {
            out.broadcast(&encode_it(player, NO_PLAYER));
        }
        rows.clear();
        self.rows = rows;
        Ok(())
    }

    fn leave(&mut self, player: PlayerId, out: &mut Outbox) {
        if !self.is_present(player) {
            return;
        }
        let p = player as usize;
        self.present[p] = false;
        self.count -= 1;
        self.scores[p] = 0;
        out.broadcast(&encode_left(player));
        if self.it == player {
            self.it = NO_PLAYER;
            self.it_ticks = 0;
            if self.count > 0 {
                let mut k = self.rng.below(self.count as u64);
                for q in 0..self.present.len() {
                    if self.present[q] {
                        if k == 0 {
                            self.it = q as PlayerId;
                            break;
                        }
                        k -= 1;
                    }
                }
                out.broadcast(&encode_it(self.it, NO_PLAYER));
            }
        }
    }

    fn input(&mut self, player: PlayerId, frame: &[u8]) {
        if !self.is_present(player) {
            return;
        }
        let (d, sprint) = decode_input(frame);
        self.dir[player as usize] = d;
        self.sprint_held[player as usize] = sprint;
    }

    fn step(&mut self, out: &mut Outbox) {
        self.tick += 1;
        self.move_players();
        if self.it != NO_PLAYER {
            self.it_ticks = self.it_ticks.wrapping_add(1);
            if self.it_ticks % self.rules.it_cost_ticks == 0 {
                self.add_score(self.it as usize, -1);
            }
        }
        let (present, xs, ys) = (&self.present, &self.xs, &self.ys);
        self.grid.rebuild(
            (0..present.len())
                .filter(|&p| present[p])
                .map(|p| (p as u32, xs[p], ys[p])),
        );
        self.tag_check(out);
        self.collect_coins();
        self.flush_scores(out);
    }

    fn view(&self, view: &mut View) {
        for p in 0..self.present.len() {
            if self.present[p] {
                let (x, y) = (self.xs[p], self.ys[p]);
                view.push(Entity {
                    id: p as u32,
                    x,
                    y,
                    owner: Some(p as PlayerId),
                    fields: &[KIND_PLAYER, x, y, self.flags(p), self.stamina[p]],
                });
            }
        }
        for i in 0..self.rules.coins {
            let (x, y) = (self.coin_x[i], self.coin_y[i]);
            view.push(Entity {
                id: self.coin_id(i),
                x,
                y,
                owner: None,
                fields: &[KIND_COIN, x, y, 0, 0],
            });
        }
    }

    fn state_hash(&self) -> u64 {
        // The next output identifies the generator's state (splitmix64's output function is
        // a bijection of it).
        let mut rng = self.rng;
        let mut h = StateHasher::new();
        h.u64(self.tick)
            .u64(rng.next())
            .u32(self.rules.side as u32)
            .u32(self.rules.coins as u32)
            .u32(self.it)
            .u32(self.it_ticks);
        for p in 0..self.present.len() {
            if !self.present[p] {
                h.bytes(&[0]);
                continue;
            }
            h.bytes(&[
                1,
                self.dir[p],
                self.sprint_held[p] as u8,
                self.sprinted[p] as u8,
            ])
            .i32(self.xs[p])
            .i32(self.ys[p])
            .i32(self.stamina[p])
            .u64(self.immune_until[p])
            .i32(self.scores[p]);
        }
        for i in 0..self.rules.coins {
            h.i32(self.coin_x[i])
                .i32(self.coin_y[i])
                .u32(self.coin_gen[i]);
        }
        h.finish()
    }

    fn score(&self, player: PlayerId) -> i32 {
        if self.is_present(player) {
            self.scores[player as usize]
        } else {
            0
        }
    }
}

fn build(cfg: &GameConfig) -> Result<Box<dyn Game>, OptionError> {
    Ok(Box::new(Tag::new(cfg)?))
}

fn bot(seed: u64) -> Box<dyn tickwire_game::Bot> {
    Box::new(TagBot::new(seed))
}

/// The registry entry: `--game tag`.
pub fn entry() -> GameEntry {
    GameEntry {
        name: NAME,
        about: "top-down tag: avoid being it, tag others, grab coins (8-way input, score table)",
        build,
        bot,
    }
}
