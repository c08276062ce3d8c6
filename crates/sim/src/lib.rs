//! tickwire-sim: the deterministic 2D arena world.
//!
//! Players are circles moving in a rectangular arena `[0, width] x [0, height]` with seeded
//! axis-aligned obstacles. All state is integer fixed point (world units; the defaults read them
//! as millimetres). The same seed and the same sequence of calls (`spawn`, `despawn`,
//! `apply_input`, `step`) produce the same state on every platform: no floats, no hash-map
//! iteration, and one inline splitmix64 PRNG.
//!
//! How it is called, once per tick by the server:
//! ```
//! use tickwire_sim::{PlayerInput, World, WorldConfig};
//! let mut world = World::new(WorldConfig::for_players(64, 7));
//! let me = world.spawn().unwrap();
//! world.apply_input(me, PlayerInput { move_x: 127, move_y: 0, buttons: 0 });
//! world.step();
//! let mut near = Vec::new();
//! world.nearest(me, 55, &mut near);
//! assert_eq!(near[0].id, me);
//! ```
//!
//! Performance: every table is allocated for `max_players` in [`World::new`]. Two uniform grids
//! (flat arrays rebuilt by counting sort, power-of-two cells) serve player-player collisions
//! (cells about one player spacing `sqrt(area / max_players)`, pairs collected once per step
//! into a fixed-capacity contact list) and nearest queries (cells about two spacings, searched
//! in rings); a static grid indexes the walls. `nearest` allocates nothing but `out`. See
//! `examples/bench_step.rs` (1500 players: step ~0.2 ms, nearest(55) ~2 us on the dev VM).
#![forbid(unsafe_code)]

mod grid;
mod rng;
#[cfg(test)]
mod tests;

use grid::{cell_shift, Grid, Item, WallGrid};
use rng::SplitMix64;

/// Entity (and player slot) id: `0..max_players`, reused after despawn.
pub type EntityId = u32;

/// [`PlayerInput::buttons`] bit for boost.
pub const BUTTON_BOOST: u8 = 1;

/// Movement intent of one player, held until the next input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PlayerInput {
    /// Direction x, -127..=127 (-128 is treated like -127 by the magnitude clamp).
    pub move_x: i8,
    /// Direction y, -127..=127.
    pub move_y: i8,
    /// Bit 0 ([`BUTTON_BOOST`]): boost. Other bits ignored.
    pub buttons: u8,
}

/// World parameters. [`World::new`] normalises out-of-range values (see there).
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Seed for obstacles and spawn positions.
    pub seed: u64,
    /// Arena width in units.
    pub width: i32,
    /// Arena height in units.
    pub height: i32,
    /// Player slots; every table is sized for it up front.
    pub max_players: usize,
    /// Obstacles to place (fewer are placed if they cannot fit with the required gaps).
    pub obstacles: usize,
    /// Player circle radius in units.
    pub player_radius: i32,
    /// Top speed in units per tick.
    pub max_speed: i32,
    /// Top speed with boost held, in units per tick.
    pub boost_speed: i32,
}

/// Default player radius (units).
const DEFAULT_RADIUS: i32 = 400;
/// Default top speed: 90 units/tick = 5.6 units/ms at 16 ms ticks.
const DEFAULT_MAX_SPEED: i32 = 90;
/// Default boosted top speed.
const DEFAULT_BOOST_SPEED: i32 = 180;
/// Default arena area per player slot is `PLAYER_SPACING^2`.
const PLAYER_SPACING: i64 = 6000;
/// Smallest default arena side.
const MIN_ARENA_SIDE: i64 = 20_000;
/// Largest arena side accepted (keeps every sum and square far from overflow).
const MAX_ARENA_SIDE: i32 = 1 << 27;
/// Candidate index bits in the fast nearest-query keys (`d2 << 9 | index`, `d2 < 2^55`).
const FAST_SELECT_BITS: u32 = 9;
/// Most candidates the fast path handles (a 4 KiB stack buffer of keys).
const FAST_SELECT_MAX: usize = 1 << FAST_SELECT_BITS;
const FAST_SELECT_MASK: u64 = FAST_SELECT_MAX as u64 - 1;
/// Query-grid cell side, in player spacings (`sqrt(area / max_players)`), rounded up to a
/// power of two.
const QUERY_CELL_SPACINGS: i64 = 2;
/// Contact-list capacity per player slot.
const CONTACTS_PER_PLAYER: usize = 8;
/// Player-player relaxation passes per step (3 keeps a 64-player crowd pressing on one point
/// within 8% overlap).
const COLLISION_PASSES: usize = 3;

impl WorldConfig {
    /// A square arena sized for `max_players` (side `sqrt(max_players) * 6000` units, at least
    /// 20 000), radius 400, speed 90 (boost 180) units per tick, one obstacle per 8 slots
    /// (at least 4).
    pub fn for_players(max_players: usize, seed: u64) -> Self {
        let area = (max_players.max(1) as u64).saturating_mul((PLAYER_SPACING as u64).pow(2));
        let side = (area.isqrt() as i64)
            .max(MIN_ARENA_SIDE)
            .min(MAX_ARENA_SIDE as i64) as i32;
        WorldConfig {
            seed,
            width: side,
            height: side,
            max_players,
            obstacles: (max_players / 8).max(4),
            player_radius: DEFAULT_RADIUS,
            max_speed: DEFAULT_MAX_SPEED,
            boost_speed: DEFAULT_BOOST_SPEED,
        }
    }

    /// Clamps every field into the range the world relies on.
    fn normalized(mut self) -> Self {
        self.max_players = self.max_players.min(u32::MAX as usize);
        self.player_radius = self.player_radius.clamp(1, 1 << 20);
        let r = self.player_radius;
        self.width = self.width.clamp(8 * r, MAX_ARENA_SIDE);
        self.height = self.height.clamp(8 * r, MAX_ARENA_SIDE);
        // Speeds below the radius: a player cannot cross into a wall's interior in one tick.
        self.max_speed = self.max_speed.clamp(0, r - 1);
        self.boost_speed = self.boost_speed.clamp(self.max_speed, r - 1);
        self
    }
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig::for_players(2048, 1)
    }
}

/// One entity's public state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityView {
    /// Entity id.
    pub id: EntityId,
    /// Centre x in units.
    pub x: i32,
    /// Centre y in units.
    pub y: i32,
}

/// An axis-aligned obstacle, `min` inclusive to `max` inclusive, in units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wall {
    /// Left edge.
    pub min_x: i32,
    /// Bottom edge.
    pub min_y: i32,
    /// Right edge.
    pub max_x: i32,
    /// Top edge.
    pub max_y: i32,
}

/// Slot states.
const DEAD: u8 = 0;
/// Alive and present in the query grid.
const IN_GRID: u8 = 1;
/// Alive, spawned since the query grid was last rebuilt (listed in `pending`).
const PENDING: u8 = 2;

/// The arena: players, walls, and the grids that index them.
#[derive(Debug)]
pub struct World {
    cfg: WorldConfig,
    walls: Vec<Wall>,
    wall_grid: WallGrid,
    state: Vec<u8>,
    pos_x: Vec<i32>,
    pos_y: Vec<i32>,
    vel_x: Vec<i32>,
    vel_y: Vec<i32>,
    intent: Vec<PlayerInput>,
    /// Positions before this step's move (scratch for velocity-from-displacement).
    prev_x: Vec<i32>,
    prev_y: Vec<i32>,
    /// Free slots; `pop` gives the next id (0 first, then most recently freed).
    free: Vec<EntityId>,
    count: usize,
    tick: u64,
    rng: SplitMix64,
    /// Nearest-query grid, valid after every `step` (plus `pending`).
    query: Grid,
    /// Collision grid, rebuilt inside `step`.
    collide: Grid,
    /// Spawned since the last query-grid rebuild.
    pending: Vec<EntityId>,
    /// Player pairs within reach this step (fixed capacity).
    contacts: Vec<(EntityId, EntityId)>,
}

/// Integer square root of `v >= 0`.
#[inline]
fn isqrt(v: i64) -> i64 {
    (v.max(0) as u64).isqrt() as i64
}

/// Clamps an input direction to magnitude 127.
#[inline]
fn clamp_dir(mx: i8, my: i8) -> (i64, i64) {
    let (mx, my) = (mx as i64, my as i64);
    let m2 = mx * mx + my * my;
    if m2 > 127 * 127 {
        let m = isqrt(m2);
        (mx * 127 / m, my * 127 / m)
    } else {
        (mx, my)
    }
}

impl World {
    /// Builds the arena: places `cfg.obstacles` seeded obstacles (kept `4 * radius` apart from
    /// each other and from the border, so a player always fits between them; fewer are placed if
    /// 32 tries per obstacle find no room) and allocates every table for `cfg.max_players`.
    ///
    /// Out-of-range config values are clamped (see [`World::config`] for the values in effect):
    /// radius to `1..=2^20`, width and height to `8 * radius..=2^27`, `max_speed` to
    /// `0..radius`, `boost_speed` to `max_speed..radius`.
    pub fn new(cfg: WorldConfig) -> Self {
        let cfg = cfg.normalized();
        let n = cfg.max_players;
        let r = cfg.player_radius;
        let mut rng = SplitMix64::new(cfg.seed);
        let walls = place_obstacles(&cfg, &mut rng);

        let area = cfg.width as i64 * cfg.height as i64;
        let spacing = isqrt(area / n.max(1) as i64).max(1);
        // Cap both grids at ~1M cells whatever the config.
        let min_cell = (cfg.width.max(cfg.height) / 1024).max(1) as i64;
        let collide_shift = cell_shift(spacing.max(3 * r as i64).max(min_cell));
        let query_shift = cell_shift(
            (QUERY_CELL_SPACINGS * spacing)
                .max(4 * r as i64)
                .max(min_cell),
        );
        let wall_grid = WallGrid::new(cfg.width, cfg.height, collide_shift, &walls, r);

        World {
            walls,
            wall_grid,
            state: vec![DEAD; n],
            pos_x: vec![0; n],
            pos_y: vec![0; n],
            vel_x: vec![0; n],
            vel_y: vec![0; n],
            intent: vec![PlayerInput::default(); n],
            prev_x: vec![0; n],
            prev_y: vec![0; n],
            free: (0..n as u32).rev().collect(),
            count: 0,
            tick: 0,
            rng: SplitMix64::new(cfg.seed ^ 0x5350_4157_4E53_4545),
            query: Grid::new(cfg.width, cfg.height, query_shift, n),
            collide: Grid::new(cfg.width, cfg.height, collide_shift, n),
            contacts: Vec::with_capacity(CONTACTS_PER_PLAYER * n + 64),
            pending: Vec::with_capacity(n),
            cfg,
        }
    }

    /// The configuration in effect (after normalisation).
    pub fn config(&self) -> &WorldConfig {
        &self.cfg
    }

    /// Obstacles (the arena border is implicit).
    pub fn walls(&self) -> &[Wall] {
        &self.walls
    }

    /// Ticks stepped so far.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Players alive.
    pub fn player_count(&self) -> usize {
        self.count
    }

    #[inline]
    fn alive(&self, id: EntityId) -> bool {
        self.state.get(id as usize).is_some_and(|&s| s != DEAD)
    }

    /// A live entity's state.
    pub fn entity(&self, id: EntityId) -> Option<EntityView> {
        self.alive(id).then(|| self.view(id))
    }

    #[inline]
    fn view(&self, id: EntityId) -> EntityView {
        EntityView {
            id,
            x: self.pos_x[id as usize],
            y: self.pos_y[id as usize],
        }
    }

    /// Adds a player at a seeded free position (not touching a wall or another player) and
    /// returns its id: the lowest id on first use, then the most recently freed one. `None` when
    /// every slot is taken (or, in a packed arena, when no free position exists).
    pub fn spawn(&mut self) -> Option<EntityId> {
        let id = *self.free.last()?;
        let (x, y) = self.find_spawn_position()?;
        self.free.pop();
        let i = id as usize;
        self.state[i] = PENDING;
        self.pos_x[i] = x;
        self.pos_y[i] = y;
        self.vel_x[i] = 0;
        self.vel_y[i] = 0;
        self.intent[i] = PlayerInput::default();
        self.pending.push(id);
        self.count += 1;
        Some(id)
    }

    /// Removes a player; `false` if `id` was not alive. Its slot is reused by a later spawn.
    pub fn despawn(&mut self, id: EntityId) -> bool {
        if !self.alive(id) {
            return false;
        }
        let i = id as usize;
        if self.state[i] == PENDING {
            if let Some(at) = self.pending.iter().position(|&p| p == id) {
                self.pending.remove(at);
            }
        }
        self.state[i] = DEAD;
        self.free.push(id);
        self.count -= 1;
        true
    }

    /// Sets a player's movement intent, held until the next call. The direction's magnitude is
    /// clamped to 127 in [`World::step`]; boost raises the top speed. Unknown ids are ignored.
    pub fn apply_input(&mut self, id: EntityId, input: PlayerInput) {
        if self.alive(id) {
            self.intent[id as usize] = input;
        }
    }

    /// Advances one tick:
    /// 1. each velocity accelerates toward `direction / 127 * top speed` (by a quarter of the
    ///    top speed per tick), the player moves, and is pushed out of the border and obstacles;
    /// 2. pairs of players closer than three radii are collected through the collision grid,
    ///    and up to 3 relaxation passes push overlapping pairs apart, each
    ///    followed by a wall pass over the players it moved (so nobody ends inside a wall or
    ///    outside the arena);
    /// 3. each velocity is cut to the displacement actually achieved (blocked players do not
    ///    keep pressing), and the query grid is rebuilt.
    pub fn step(&mut self) {
        self.tick += 1;
        let (max_speed, boost_speed) = (self.cfg.max_speed as i64, self.cfg.boost_speed as i64);
        for i in 0..self.state.len() {
            if self.state[i] == DEAD {
                continue;
            }
            let input = self.intent[i];
            let limit = if input.buttons & BUTTON_BOOST != 0 {
                boost_speed
            } else {
                max_speed
            };
            let (dx, dy) = clamp_dir(input.move_x, input.move_y);
            let (tx, ty) = (dx * limit / 127, dy * limit / 127);
            let accel = ((limit + 3) / 4).max(1);
            let (vx, vy) = (self.vel_x[i] as i64, self.vel_y[i] as i64);
            let (mut ax, mut ay) = (tx - vx, ty - vy);
            let a2 = ax * ax + ay * ay;
            if a2 > accel * accel {
                let a = isqrt(a2);
                ax = ax * accel / a;
                ay = ay * accel / a;
            }
            let (mut vx, mut vy) = (vx + ax, vy + ay);
            let v2 = vx * vx + vy * vy;
            if v2 > boost_speed * boost_speed {
                let v = isqrt(v2);
                vx = vx * boost_speed / v;
                vy = vy * boost_speed / v;
            }
            self.vel_x[i] = vx as i32;
            self.vel_y[i] = vy as i32;
            self.prev_x[i] = self.pos_x[i];
            self.prev_y[i] = self.pos_y[i];
            self.pos_x[i] += vx as i32;
            self.pos_y[i] += vy as i32;
            self.fix_walls(i);
        }
        self.find_contacts();
        let min_d = 2 * self.cfg.player_radius as i64;
        for _ in 0..COLLISION_PASSES {
            let mut moved = false;
            for &(a, b) in &self.contacts {
                moved |= separate(&mut self.pos_x, &mut self.pos_y, a, b, min_d);
            }
            if !moved {
                break;
            }
            for c in 0..self.contacts.len() {
                let (a, b) = self.contacts[c];
                self.fix_walls(a as usize);
                self.fix_walls(b as usize);
            }
        }
        for i in 0..self.state.len() {
            if self.state[i] == DEAD {
                continue;
            }
            let dx = self.pos_x[i] - self.prev_x[i];
            let dy = self.pos_y[i] - self.prev_y[i];
            self.vel_x[i] = achieved(self.vel_x[i], dx);
            self.vel_y[i] = achieved(self.vel_y[i], dy);
        }
        self.rebuild_query_grid();
    }

    fn live_items<'a>(
        state: &'a [u8],
        xs: &'a [i32],
        ys: &'a [i32],
    ) -> impl Iterator<Item = Item> + Clone + 'a {
        state
            .iter()
            .enumerate()
            .filter(|(_, &s)| s != DEAD)
            .map(move |(i, _)| Item {
                id: i as u32,
                x: xs[i],
                y: ys[i],
            })
    }

    fn rebuild_query_grid(&mut self) {
        self.query
            .rebuild(Self::live_items(&self.state, &self.pos_x, &self.pos_y));
        for s in self.state.iter_mut() {
            if *s == PENDING {
                *s = IN_GRID;
            }
        }
        self.pending.clear();
    }

    /// Pushes player `i` out of the border and the obstacles. Obstacles are at least
    /// `4 * radius` apart and from the border, so a player touches at most one and the push out
    /// of it cannot create another overlap: afterwards the player overlaps no wall.
    #[inline]
    fn fix_walls(&mut self, i: usize) {
        let r = self.cfg.player_radius;
        let mut x = self.pos_x[i].clamp(r, self.cfg.width - r);
        let mut y = self.pos_y[i].clamp(r, self.cfg.height - r);
        for &wi in self.wall_grid.candidates(x, y) {
            (x, y) = push_out_of_wall(x, y, r, &self.walls[wi as usize]);
        }
        self.pos_x[i] = x;
        self.pos_y[i] = y;
    }

    /// Collects every pair of live players closer than `2 * radius + radius` (the slack lets
    /// later passes catch pairs that relaxation brings together) through the collision grid:
    /// each pair once, from the same cell and the E, NW-above, above and NE-above neighbours.
    /// At most `contacts.capacity()` pairs (8 per player slot); the rest wait a tick.
    fn find_contacts(&mut self) {
        self.collide
            .rebuild(Self::live_items(&self.state, &self.pos_x, &self.pos_y));
        self.contacts.clear();
        let reach = 3 * self.cfg.player_radius as i64;
        let reach2 = reach * reach;
        let cap = self.contacts.capacity();
        let g = &self.collide;
        let contacts = &mut self.contacts;
        let mut check = |a: &Item, b: &Item| {
            let (dx, dy) = ((b.x - a.x) as i64, (b.y - a.y) as i64);
            if dx * dx + dy * dy < reach2 && contacts.len() < cap {
                contacts.push((a.id, b.id));
            }
        };
        for cy in 0..g.rows {
            for cx in 0..g.cols {
                let here = g.cell_items(cx, cy);
                if here.is_empty() {
                    continue;
                }
                let right = if cx + 1 < g.cols {
                    g.cell_items(cx + 1, cy)
                } else {
                    &[]
                };
                let (up_left, up, up_right): (&[Item], &[Item], &[Item]) = if cy + 1 < g.rows {
                    (
                        if cx > 0 {
                            g.cell_items(cx - 1, cy + 1)
                        } else {
                            &[]
                        },
                        g.cell_items(cx, cy + 1),
                        if cx + 1 < g.cols {
                            g.cell_items(cx + 1, cy + 1)
                        } else {
                            &[]
                        },
                    )
                } else {
                    (&[], &[], &[])
                };
                for (k, a) in here.iter().enumerate() {
                    for b in &here[k + 1..] {
                        check(a, b);
                    }
                    for b in right.iter().chain(up_left).chain(up).chain(up_right) {
                        check(a, b);
                    }
                }
            }
        }
    }

    fn find_spawn_position(&mut self) -> Option<(i32, i32)> {
        let r = self.cfg.player_radius;
        let (w, h) = (self.cfg.width, self.cfg.height);
        for _ in 0..64 {
            let x = self.rng.range_i32(r, w - r);
            let y = self.rng.range_i32(r, h - r);
            if self.spawn_free(x, y) {
                return Some((x, y));
            }
        }
        // Packed arena: deterministic scan of a lattice one diameter apart.
        let stride = 2 * r + 1;
        let mut y = r;
        while y <= h - r {
            let mut x = r;
            while x <= w - r {
                if self.spawn_free(x, y) {
                    return Some((x, y));
                }
                x += stride;
            }
            y += stride;
        }
        None
    }

    /// `true` if a player centred at `(x, y)` would touch no wall and no live player.
    fn spawn_free(&self, x: i32, y: i32) -> bool {
        let r = self.cfg.player_radius;
        for &wi in self.wall_grid.candidates(x, y) {
            if push_out_of_wall(x, y, r, &self.walls[wi as usize]) != (x, y) {
                return false;
            }
        }
        let min_d = 2 * r as i64;
        let clear = |ox: i32, oy: i32| {
            let (dx, dy) = ((ox - x) as i64, (oy - y) as i64);
            dx * dx + dy * dy >= min_d * min_d
        };
        for &p in &self.pending {
            if !clear(self.pos_x[p as usize], self.pos_y[p as usize]) {
                return false;
            }
        }
        // Query-grid cells are at least 4 radii wide: the 3x3 block covers every touching player.
        let g = &self.query;
        let (cx, cy) = g.coords(x, y);
        for ny in (cy - 1).max(0)..=(cy + 1).min(g.rows - 1) {
            for nx in (cx - 1).max(0)..=(cx + 1).min(g.cols - 1) {
                for it in g.cell_items(nx, ny) {
                    if self.state[it.id as usize] == IN_GRID && !clear(it.x, it.y) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Clears `out`, then fills it with up to `max` live entities nearest to `id`: `id` itself
    /// first, then the others by ascending distance, ties by ascending id. Empty if `id` is not
    /// alive or `max == 0`. Searches rings of query-grid cells around `id` until `max` are found
    /// and the next ring cannot hold anything nearer; allocates only to grow `out`.
    pub fn nearest(&self, id: EntityId, max: usize, out: &mut Vec<EntityView>) {
        out.clear();
        if max == 0 || !self.alive(id) {
            return;
        }
        let me = self.view(id);
        out.push(me);
        let k = max - 1;
        if k == 0 {
            return;
        }
        // While searching, candidates carry their squared distance packed into `x` (low half)
        // and `y` (high half) so comparisons need no arithmetic; positions are restored at the
        // end from the position table (equal to the grid's copy between steps).
        let (qx, qy) = (me.x as i64, me.y as i64);
        let packed = |cid: u32, x: i32, y: i32| {
            let (dx, dy) = (x as i64 - qx, y as i64 - qy);
            let d2 = (dx * dx + dy * dy) as u64;
            EntityView {
                id: cid,
                x: d2 as u32 as i32,
                y: (d2 >> 32) as u32 as i32,
            }
        };
        let d2_of = |e: &EntityView| ((e.y as u32 as u64) << 32) | e.x as u32 as u64;
        let key = |e: &EntityView| ((d2_of(e) as u128) << 32) | e.id as u128;
        for &p in &self.pending {
            if p != id {
                out.push(packed(p, self.pos_x[p as usize], self.pos_y[p as usize]));
            }
        }
        let g = &self.query;
        let (cx, cy) = g.coords(me.x, me.y);
        let max_r = cx.max(g.cols - 1 - cx).max(cy).max(g.rows - 1 - cy);
        let shift = g.shift;
        for r in 0..=max_r {
            let (y0, y1) = (cy - r, cy + r);
            let mut scan = |nx: i32, ny: i32| {
                if nx < 0 || ny < 0 || nx >= g.cols || ny >= g.rows {
                    return;
                }
                for it in g.cell_items(nx, ny) {
                    if it.id != id && self.state[it.id as usize] == IN_GRID {
                        out.push(packed(it.id, it.x, it.y));
                    }
                }
            };
            for nx in (cx - r)..=(cx + r) {
                scan(nx, y0);
                if r > 0 {
                    scan(nx, y1);
                }
            }
            for ny in (y0 + 1)..y1 {
                scan(cx - r, ny);
                scan(cx + r, ny);
            }
            if out.len() - 1 < k {
                continue;
            }
            // Distance from the query to the nearest point outside the searched block.
            let mut bound = i64::MAX;
            if cx - r > 0 {
                bound = bound.min(qx - (((cx - r) as i64) << shift));
            }
            if cx + r < g.cols - 1 {
                bound = bound.min((((cx + r + 1) as i64) << shift) - qx);
            }
            if cy - r > 0 {
                bound = bound.min(qy - (((cy - r) as i64) << shift));
            }
            if cy + r < g.rows - 1 {
                bound = bound.min((((cy + r + 1) as i64) << shift) - qy);
            }
            if bound == i64::MAX {
                break;
            }
            // Done when k candidates lie strictly inside `bound`: nothing outside the block
            // (all at distance >= bound) can displace them.
            let bound2 = (bound * bound) as u64;
            let inside = out[1..].iter().filter(|e| d2_of(e) < bound2).count();
            if inside >= k {
                break;
            }
        }
        let n = out.len() - 1;
        let take = k.min(n);
        if n <= FAST_SELECT_MAX {
            // Fast path: select and sort plain u64 keys `d2 << 9 | candidate index` in a stack
            // buffer (d2 < 2^55 because the arena side is at most 2^27), then order equal
            // distances by id.
            let mut keys = [0u64; FAST_SELECT_MAX];
            for (j, e) in out[1..].iter().enumerate() {
                keys[j] = (d2_of(e) << FAST_SELECT_BITS) | j as u64;
            }
            let keys = &mut keys[..n];
            if n > take && take > 0 {
                keys.select_nth_unstable(take - 1);
                // Candidates tied with the last one kept may straddle the cut; the selection
                // broke those ties by scan index, but the order promises ids: refill the tied
                // places inside the cut with the tied candidates of lowest id.
                let cut = keys[take - 1] >> FAST_SELECT_BITS;
                if keys[take..].iter().any(|&k| k >> FAST_SELECT_BITS == cut) {
                    let mut tied = [0u64; FAST_SELECT_MAX];
                    let mut t = 0;
                    for &k in keys.iter() {
                        if k >> FAST_SELECT_BITS == cut {
                            tied[t] = k;
                            t += 1;
                        }
                    }
                    let tied = &mut tied[..t];
                    tied.sort_unstable_by_key(|&k| out[1 + (k & FAST_SELECT_MASK) as usize].id);
                    let mut w = 0;
                    for slot in keys[..take].iter_mut() {
                        if *slot >> FAST_SELECT_BITS == cut {
                            *slot = tied[w];
                            w += 1;
                        }
                    }
                }
            }
            let keys = &mut keys[..take];
            keys.sort_unstable();
            let mut ids = [0u32; FAST_SELECT_MAX];
            for (i, &kv) in keys.iter().enumerate() {
                ids[i] = out[1 + (kv & FAST_SELECT_MASK) as usize].id;
            }
            let mut run = 0;
            for i in 1..=take {
                if i == take || keys[i] >> FAST_SELECT_BITS != keys[run] >> FAST_SELECT_BITS {
                    if i - run > 1 {
                        ids[run..i].sort_unstable();
                    }
                    run = i;
                }
            }
            out.truncate(1 + take);
            for (e, &cid) in out[1..].iter_mut().zip(&ids[..take]) {
                *e = self.view(cid);
            }
            return;
        }
        if n > k {
            out[1..].select_nth_unstable_by_key(k - 1, key);
            out.truncate(1 + k);
        }
        out[1..].sort_unstable_by_key(key);
        for e in &mut out[1..] {
            e.x = self.pos_x[e.id as usize];
            e.y = self.pos_y[e.id as usize];
        }
    }

    /// FNV-1a over the tick and every slot's liveness, position and velocity: equal hashes for
    /// equal states on every platform.
    pub fn state_hash(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01B3;
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(PRIME);
            }
        };
        feed(&self.tick.to_le_bytes());
        for i in 0..self.state.len() {
            if self.state[i] == DEAD {
                feed(&[0]);
                continue;
            }
            feed(&[1]);
            feed(&self.pos_x[i].to_le_bytes());
            feed(&self.pos_y[i].to_le_bytes());
            feed(&self.vel_x[i].to_le_bytes());
            feed(&self.vel_y[i].to_le_bytes());
        }
        h
    }
}

/// Velocity component after a step: the achieved displacement `d` if it is smaller than or
/// opposite to the planned velocity `v` (0 when opposite: pushes do not become bounces).
#[inline]
fn achieved(v: i32, d: i32) -> i32 {
    if v > 0 {
        d.clamp(0, v)
    } else {
        d.clamp(v, 0)
    }
}

/// Pushes players `a` and `b` apart along their centre line if closer than `min_d`, half each
/// (coincident centres split along x: `a` left, `b` right).
#[inline]
fn separate(xs: &mut [i32], ys: &mut [i32], a: u32, b: u32, min_d: i64) -> bool {
    let (a, b) = (a as usize, b as usize);
    let (mut dx, mut dy) = ((xs[b] - xs[a]) as i64, (ys[b] - ys[a]) as i64);
    let d2 = dx * dx + dy * dy;
    if d2 >= min_d * min_d {
        return false;
    }
    let mut d = isqrt(d2);
    if d == 0 {
        (dx, dy, d) = (1, 0, 1);
    }
    // +1 so truncation never leaves a residual overlap of a unit.
    let overlap = min_d - d + 1;
    let (sx, sy) = (dx * overlap / d, dy * overlap / d);
    xs[a] -= (sx / 2) as i32;
    ys[a] -= (sy / 2) as i32;
    xs[b] += (sx - sx / 2) as i32;
    ys[b] += (sy - sy / 2) as i32;
    true
}

/// Moves a circle of radius `r` centred at `(x, y)` out of `wall` (to touching distance) if it
/// overlaps; otherwise returns `(x, y)` unchanged.
#[inline]
fn push_out_of_wall(x: i32, y: i32, r: i32, wall: &Wall) -> (i32, i32) {
    let px = x.clamp(wall.min_x, wall.max_x);
    let py = y.clamp(wall.min_y, wall.max_y);
    let (dx, dy) = ((x - px) as i64, (y - py) as i64);
    let r64 = r as i64;
    if dx == 0 && dy == 0 {
        // Centre inside (or on the edge): leave through the nearest side.
        let exits = [
            (x - wall.min_x, wall.min_x - r, y),
            (wall.max_x - x, wall.max_x + r, y),
            (y - wall.min_y, x, wall.min_y - r),
            (wall.max_y - y, x, wall.max_y + r),
        ];
        let mut best = exits[0];
        for e in &exits[1..] {
            if e.0 < best.0 {
                best = *e;
            }
        }
        return (best.1, best.2);
    }
    let d2 = dx * dx + dy * dy;
    if d2 >= r64 * r64 {
        return (x, y);
    }
    if dy == 0 {
        return (px + dx.signum() as i32 * r, y);
    }
    if dx == 0 {
        return (x, py + dy.signum() as i32 * r);
    }
    // Corner: move to distance r from the corner along the same direction.
    let d = isqrt(d2).max(1);
    let (mut nx, mut ny) = (dx * r64 / d, dy * r64 / d);
    while nx * nx + ny * ny < r64 * r64 {
        nx += dx.signum();
        ny += dy.signum();
    }
    (px + nx as i32, py + ny as i32)
}

/// Places up to `cfg.obstacles` seeded obstacles, each side `4r..=max(4r, spacing)`, at least
/// `4r` from the border and from each other.
fn place_obstacles(cfg: &WorldConfig, rng: &mut SplitMix64) -> Vec<Wall> {
    let r = cfg.player_radius;
    let gap = 4 * r;
    let min_side = 4 * r;
    let area = cfg.width as i64 * cfg.height as i64;
    let spacing = isqrt(area / cfg.max_players.max(1) as i64) as i32;
    let max_side = spacing.max(min_side);
    let mut walls: Vec<Wall> = Vec::with_capacity(cfg.obstacles.min(1 << 16));
    let tries = cfg.obstacles.saturating_mul(32);
    for _ in 0..tries {
        if walls.len() == cfg.obstacles {
            break;
        }
        let w = rng.range_i32(min_side, max_side);
        let h = rng.range_i32(min_side, max_side);
        if cfg.width - 2 * gap < w || cfg.height - 2 * gap < h {
            break;
        }
        let x = rng.range_i32(gap, cfg.width - gap - w);
        let y = rng.range_i32(gap, cfg.height - gap - h);
        let cand = Wall {
            min_x: x,
            min_y: y,
            max_x: x + w,
            max_y: y + h,
        };
        let clear = walls.iter().all(|o| {
            cand.min_x - gap > o.max_x
                || o.min_x - gap > cand.max_x
                || cand.min_y - gap > o.max_y
                || o.min_y - gap > cand.max_y
        });
        if clear {
            walls.push(cand);
        }
    }
    walls
}
