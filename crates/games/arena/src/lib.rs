//! tickwire-arena: the arena, Tickwire's demo game, on the [`Game`] seam.
//!
//! Players are circles in a square arena with seeded rectangular obstacles (the world is
//! [`tickwire_sim::World`]: integer fixed point, deterministic). Each moves towards its input
//! direction, boosts with a button, and pushes the others around.
//!
//! Encodings (protocol version 1 of the arena, unchanged since the arena-only protocol):
//!
//! - **Input frame**, 3 bytes: `move_x: i8`, `move_y: i8` (a direction, `-127..=127` per axis;
//!   the world clamps the vector's magnitude to 127 and scales it to the top speed),
//!   `buttons: u8` (bit 0 = boost; other bits reserved, ignored).
//! - **Entity fields**, 2: `x`, `y`, the circle's centre in world units.
//! - **Events**, server to client (reliable): at join, the level:
//!
//! ```text
//! 01                      event type 1 = level
//! i32 LE width, i32 LE height            the arena is [0, width] x [0, height]
//! i32 LE player_radius, i32 LE max_speed, i32 LE boost_speed   (units, units per tick)
//! u16 LE wall count, then per wall: i32 LE min_x, min_y, max_x, max_y (inclusive)
//! ```
//!
//! The arena reads no client messages. Options (`[game]`): `obstacles` (0..=4000, default 32).
#![forbid(unsafe_code)]

use tickwire_game::{
    Bot, Entity, Game, GameConfig, GameEntry, GameSpec, JoinRefused, OptionError, Outbox, PlayerId,
    SplitMix64, StateHasher, View,
};
use tickwire_sim::{EntityId, PlayerInput, World, WorldConfig};

/// The game's name.
pub const NAME: &str = "arena";
/// Version of the arena's encodings.
pub const VERSION: u16 = 1;
/// Bytes per input frame.
pub const INPUT_BYTES: usize = 3;
/// Fields per entity (x, y).
pub const ENTITY_FIELDS: usize = 2;
/// Obstacles placed when the `obstacles` option is not given.
pub const DEFAULT_OBSTACLES: usize = 32;
/// Event type byte of the level event.
pub const EVENT_LEVEL: u8 = 1;
/// Input button bit for boost.
pub const BUTTON_BOOST: u8 = tickwire_sim::BUTTON_BOOST;

/// The registry entry for `--game arena`.
pub fn entry() -> GameEntry {
    GameEntry {
        name: NAME,
        about: "a crowd of circles pushing each other around seeded obstacles",
        build: |cfg| Ok(Box::new(Arena::new(cfg)?)),
        bot: |seed| Box::new(ArenaBot::new(seed)),
    }
}

/// The arena game.
#[derive(Debug)]
pub struct Arena {
    world: World,
    /// Each player's entity.
    players: Vec<Option<EntityId>>,
    /// Each entity's player (`u32::MAX`: none): the inverse of `players`.
    owner_of: Vec<PlayerId>,
    /// The level event, encoded once.
    level: Vec<u8>,
}

impl Arena {
    /// Builds the arena for `cfg` (option `obstacles`, 0..=4000, default [`DEFAULT_OBSTACLES`];
    /// at most 4000 so the level event stays under the 64 KiB event limit).
    pub fn new(cfg: &GameConfig) -> Result<Self, OptionError> {
        OptionError::only(cfg, &["obstacles"])?;
        let base = WorldConfig::for_players(cfg.max_players, cfg.seed);
        let obstacles = OptionError::parse_in(cfg, "obstacles", 0..=4000, DEFAULT_OBSTACLES)?;
        let world = World::new(WorldConfig { obstacles, ..base });
        let level = encode_level(&world);
        Ok(Arena {
            owner_of: vec![u32::MAX; world.config().max_players],
            world,
            players: vec![None; cfg.max_players],
            level,
        })
    }

    /// The world, for inspection.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The entity of `player`, if they have one.
    pub fn entity_of(&self, player: PlayerId) -> Option<EntityId> {
        self.players.get(player as usize).copied().flatten()
    }
}

impl Game for Arena {
    fn spec(&self) -> GameSpec {
        GameSpec {
            name: NAME.into(),
            map: NAME.into(),
            input_bytes: INPUT_BYTES,
            entity_fields: ENTITY_FIELDS,
            version: VERSION,
        }
    }

    fn join(&mut self, player: PlayerId, out: &mut Outbox) -> Result<(), JoinRefused> {
        let slot = self
            .players
            .get_mut(player as usize)
            .ok_or(JoinRefused::Full)?;
        if let Some(old) = slot.take() {
            self.world.despawn(old);
            self.owner_of[old as usize] = u32::MAX;
        }
        let e = self.world.spawn().ok_or(JoinRefused::Full)?;
        *slot = Some(e);
        self.owner_of[e as usize] = player;
        out.send(player, &self.level);
        Ok(())
    }

    fn leave(&mut self, player: PlayerId, _out: &mut Outbox) {
        if let Some(e) = self.players.get_mut(player as usize).and_then(Option::take) {
            self.world.despawn(e);
            self.owner_of[e as usize] = u32::MAX;
        }
    }

    fn input(&mut self, player: PlayerId, frame: &[u8]) {
        let (Some(e), &[mx, my, buttons, ..]) = (self.entity_of(player), frame) else {
            return;
        };
        self.world.apply_input(
            e,
            PlayerInput {
                move_x: mx as i8,
                move_y: my as i8,
                buttons,
            },
        );
    }

    fn step(&mut self, _out: &mut Outbox) {
        self.world.step();
    }

    fn view(&self, view: &mut View) {
        for (id, &owner) in self.owner_of.iter().enumerate() {
            let id = id as EntityId;
            if let Some(v) = self.world.entity(id) {
                view.push(Entity {
                    id,
                    x: v.x,
                    y: v.y,
                    owner: (owner != u32::MAX).then_some(owner),
                    fields: &[v.x, v.y],
                });
            }
        }
    }

    fn state_hash(&self) -> u64 {
        let mut h = StateHasher::new();
        h.u64(self.world.state_hash());
        for e in &self.players {
            h.u32(e.unwrap_or(u32::MAX));
        }
        h.finish()
    }
}

/// The level event: arena size, movement constants and every wall.
pub fn encode_level(world: &World) -> Vec<u8> {
    let cfg = world.config();
    let walls = world.walls();
    let mut b = Vec::with_capacity(23 + walls.len() * 16);
    b.push(EVENT_LEVEL);
    for v in [
        cfg.width,
        cfg.height,
        cfg.player_radius,
        cfg.max_speed,
        cfg.boost_speed,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(walls.len().min(u16::MAX as usize) as u16).to_le_bytes());
    for w in walls.iter().take(u16::MAX as usize) {
        for v in [w.min_x, w.min_y, w.max_x, w.max_y] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

/// The level, decoded (client side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    /// Arena width.
    pub width: i32,
    /// Arena height.
    pub height: i32,
    /// Player radius.
    pub player_radius: i32,
    /// Top speed, units per tick.
    pub max_speed: i32,
    /// Boosted top speed.
    pub boost_speed: i32,
    /// Walls: `[min_x, min_y, max_x, max_y]`, inclusive.
    pub walls: Vec<[i32; 4]>,
}

/// Decodes a level event; `None` for anything else or a malformed one.
pub fn decode_level(b: &[u8]) -> Option<Level> {
    let (&kind, rest) = b.split_first()?;
    if kind != EVENT_LEVEL || rest.len() < 22 {
        return None;
    }
    let i32_at = |i: usize| i32::from_le_bytes(rest[i..i + 4].try_into().unwrap_or_default());
    let n = u16::from_le_bytes([rest[20], rest[21]]) as usize;
    if rest.len() != 22 + n * 16 {
        return None;
    }
    Some(Level {
        width: i32_at(0),
        height: i32_at(4),
        player_radius: i32_at(8),
        max_speed: i32_at(12),
        boost_speed: i32_at(16),
        walls: (0..n)
            .map(|w| {
                let o = 22 + w * 16;
                [i32_at(o), i32_at(o + 4), i32_at(o + 8), i32_at(o + 12)]
            })
            .collect(),
    })
}

/// Encodes one arena input frame.
pub fn encode_input(move_x: i8, move_y: i8, buttons: u8) -> [u8; INPUT_BYTES] {
    [move_x as u8, move_y as u8, buttons]
}

/// A bot that wanders: a new random direction every 0.5 to 2 seconds, boosting now and then.
#[derive(Debug)]
pub struct ArenaBot {
    rng: SplitMix64,
    dir: (i8, i8),
    buttons: u8,
    next_change: u32,
}

impl ArenaBot {
    /// A bot seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        ArenaBot {
            rng: SplitMix64::new(seed),
            dir: (0, 0),
            buttons: 0,
            next_change: 0,
        }
    }
}

impl Bot for ArenaBot {
    fn input(&mut self, tick: u32, _me: Option<&[i32]>, frame: &mut [u8]) {
        if tick >= self.next_change {
            self.dir = (
                self.rng.range_i32(-127, 127) as i8,
                self.rng.range_i32(-127, 127) as i8,
            );
            self.buttons = if self.rng.below(4) == 0 {
                BUTTON_BOOST
            } else {
                0
            };
            self.next_change = tick + 30 + self.rng.below(90) as u32;
        }
        frame[..INPUT_BYTES].copy_from_slice(&encode_input(self.dir.0, self.dir.1, self.buttons));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(players: usize, seed: u64) -> GameConfig {
        GameConfig::new(seed, players, 16)
    }

    #[test]
    fn join_sends_the_level_and_spawns() {
        let mut a = Arena::new(&cfg(8, 3)).unwrap();
        let mut out = Outbox::new();
        a.join(2, &mut out).unwrap();
        let events: Vec<_> = out.drain().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, Some(2));
        let level = decode_level(&events[0].1).unwrap();
        assert_eq!(level.width, a.world().config().width);
        assert_eq!(level.walls.len(), a.world().walls().len());
        assert!(!level.walls.is_empty());
        let mut v = View::new(ENTITY_FIELDS, 8);
        a.view(&mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v.owners[0], 2);
        assert_eq!(v.fields_of(0), &[v.xs[0], v.ys[0]]);
    }

    #[test]
    fn full_and_leave() {
        let mut a = Arena::new(&cfg(2, 3)).unwrap();
        let mut out = Outbox::new();
        a.join(0, &mut out).unwrap();
        a.join(1, &mut out).unwrap();
        assert_eq!(a.join(2, &mut out), Err(JoinRefused::Full));
        a.leave(0, &mut out);
        let mut v = View::new(ENTITY_FIELDS, 2);
        a.view(&mut v);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn options_are_validated() {
        let mut c = cfg(8, 1);
        c.options.push(("obstacles".into(), "5000".into()));
        assert!(Arena::new(&c).unwrap_err().to_string().contains("0..=4000"));
        let mut c = cfg(8, 1);
        c.options.push(("walls".into(), "3".into()));
        assert!(Arena::new(&c).unwrap_err().to_string().contains("walls"));
        let mut c = cfg(8, 1);
        c.options.push(("obstacles".into(), "0".into()));
        assert!(Arena::new(&c).unwrap().world().walls().is_empty());
    }

    #[test]
    fn hostile_input_is_harmless() {
        let mut a = Arena::new(&cfg(4, 1)).unwrap();
        let mut out = Outbox::new();
        a.join(0, &mut out).unwrap();
        a.input(0, &[]);
        a.input(0, &[0x80, 0x80, 0xFF]);
        a.input(3, &[1, 2, 3]);
        a.step(&mut out);
    }

    /// Pinned: a change in the arena's behaviour changes this hash (update it only on purpose).
    #[test]
    fn pinned_state_hash() {
        let mut a = Arena::new(&cfg(16, 42)).unwrap();
        let mut out = Outbox::new();
        let mut bots: Vec<ArenaBot> = (0..6).map(|i| ArenaBot::new(100 + i)).collect();
        let mut frame = [0u8; INPUT_BYTES];
        for tick in 0..600u32 {
            if tick < 6 {
                a.join(tick, &mut out).unwrap();
            }
            if tick == 300 {
                a.leave(1, &mut out);
            }
            for (p, bot) in bots.iter_mut().enumerate() {
                if a.entity_of(p as u32).is_some() {
                    bot.input(tick, None, &mut frame);
                    a.input(p as u32, &frame);
                }
            }
            a.step(&mut out);
        }
        assert_eq!(
            a.state_hash(),
            PINNED,
            "arena behaviour changed: {:#x}",
            a.state_hash()
        );
    }

    const PINNED: u64 = 0x5816_1C18_7D03_23A2;
}
