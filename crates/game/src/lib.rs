//! tickwire-game: the seam between Tickwire's core and a game.
//!
//! The core (`tickwire-core`) owns everything that is not the game: netcode sessions, input
//! sequencing, redundancy and deduplication, the welcome, acks, snapshot framing and the choice
//! of which entities each player sees, reliable event delivery, A2S queries, metrics, recording.
//! A game implements [`Game`] and nothing else; it never sees a socket, an address, a clock or
//! a wire format other than its own input and entity encodings.
//!
//! Calling pattern (the core, once per tick; see docs/games.md):
//!
//! ```text
//! between ticks:  join(p, out) / leave(p, out)        as sessions start and end
//!                 message(p, bytes, out)              each reliable client message, in order
//! at the tick:    input(p, frame) for every player's new frames, in sequence order, each once
//!                 step(out)                           exactly once
//!                 view(&mut view)                     every entity a player may see
//!                 state_hash()                        when recording or testing
//! ```
//!
//! Determinism rules: the same [`GameConfig`] (its seed included) and the same sequence of
//! calls must give the same [`Game::state_hash`] after every step, on every platform. So: no
//! clock, no thread, no unseeded randomness, no floats whose results can differ between
//! platforms, no iteration over `HashMap`/`HashSet` (their order is random per process).
//!
//! Encodings the game defines:
//! - **Input frames** are exactly [`GameSpec::input_bytes`] bytes (at most
//!   [`MAX_INPUT_BYTES`]); the core carries them opaque, with its own sequence numbers.
//! - **Entity state** is [`GameSpec::entity_fields`] signed 32-bit fields per entity (at most
//!   [`MAX_ENTITY_FIELDS`]), which the core encodes (zigzag varints) after the entity id. A
//!   fixed field layout per game, as Quake 3's `entityState_t` net fields, is what lets the core
//!   delta-encode snapshots against an acknowledged baseline and choose entities for each player
//!   without the game's help.
//! - **Events** (reliable, ordered, up to the core's message limit, fragmented by the core) are
//!   free-form bytes in both directions.
#![forbid(unsafe_code)]

use std::fmt;

/// A player: the session slot the core gave them (`0..max_players`). Stable while the player
/// is connected; reused after they leave.
pub type PlayerId = u32;

/// An entity id chosen by the game. Stable for the entity's life (clients track entities by
/// it across snapshots); the game may reuse ids after an entity is gone.
pub type EntityId = u32;

/// Most bytes in one input frame.
pub const MAX_INPUT_BYTES: usize = 32;

/// Most state fields per entity.
pub const MAX_ENTITY_FIELDS: usize = 16;

/// Longest game name, in bytes (lowercase ASCII letters, digits, `-` and `_`).
pub const MAX_GAME_NAME: usize = 32;

/// What a game tells the core about itself, once, right after it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameSpec {
    /// Short name (`arena`): `--game NAME`, told to clients in the welcome, shown in A2S.
    pub name: String,
    /// Map (or mode) name shown by server browsers (A2S_INFO).
    pub map: String,
    /// Bytes in every input frame, `1..=MAX_INPUT_BYTES`.
    pub input_bytes: usize,
    /// State fields per entity, `0..=MAX_ENTITY_FIELDS`.
    pub entity_fields: usize,
    /// Version of the game's own encodings (inputs, entity fields, events), told to clients in
    /// the welcome so they can refuse a game they do not understand.
    pub version: u16,
}

/// What the core gives a game's constructor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameConfig {
    /// All of the game's randomness derives from this (`world.seed`; logged at start).
    pub seed: u64,
    /// Most players at once: size every table for it up front.
    pub max_players: usize,
    /// The fixed step, in milliseconds.
    pub tick_ms: u16,
    /// Game-specific settings (the `[game]` section of the config file), as `(key, value)`
    /// strings in key order. A game refuses keys it does not know with [`OptionError`].
    pub options: Vec<(String, String)>,
}

impl GameConfig {
    /// A config with no options.
    pub fn new(seed: u64, max_players: usize, tick_ms: u16) -> Self {
        GameConfig {
            seed,
            max_players,
            tick_ms,
            options: Vec::new(),
        }
    }

    /// The value of option `key`, if given.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A game option the game refused: names the key, the value and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionError {
    /// The key, without the `game.` prefix.
    pub key: String,
    /// The value given (empty for an unknown key).
    pub value: String,
    /// What is allowed, for the message.
    pub allowed: String,
}

impl OptionError {
    /// Parses option `key` as an integer in `range`, or returns `default` when absent.
    pub fn parse_in<T>(
        cfg: &GameConfig,
        key: &str,
        range: std::ops::RangeInclusive<T>,
        default: T,
    ) -> Result<T, OptionError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = cfg.option(key) else {
            return Ok(default);
        };
        match raw.trim().parse::<T>() {
            Ok(v) if range.contains(&v) => Ok(v),
            _ => Err(OptionError {
                key: key.to_string(),
                value: raw.to_string(),
                allowed: format!("an integer in {}..={}", range.start(), range.end()),
            }),
        }
    }

    /// Refuses every option whose key is not in `known`.
    pub fn only(cfg: &GameConfig, known: &[&str]) -> Result<(), OptionError> {
        match cfg
            .options
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((k, v)) => Err(OptionError {
                key: k.clone(),
                value: v.clone(),
                allowed: if known.is_empty() {
                    "no options (this game has none)".to_string()
                } else {
                    format!("one of the keys {}", known.join(", "))
                },
            }),
        }
    }
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(
                f,
                "unknown option {:?}: allowed: {}",
                self.key, self.allowed
            )
        } else {
            write!(
                f,
                "{} = {:?}: allowed: {}",
                self.key, self.value, self.allowed
            )
        }
    }
}

impl std::error::Error for OptionError {}

/// Why a game would not take a player.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefused {
    /// No room in the game (the core sends `Bye { ServerFull }` and ends the session).
    Full,
}

/// Reliable events the game sends during a call; the core delivers them after the call, in
/// order, each player's in the order they were queued. Sending never fails here: a message
/// over the core's size limit, or for a player too far behind, is refused by the core with a
/// counted, logged error (the game's call goes on).
#[derive(Debug, Default)]
pub struct Outbox {
    /// `(to, bytes)`, in order; `None` is every connected player.
    items: Vec<(Option<PlayerId>, Vec<u8>)>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Queues `msg` for one player.
    pub fn send(&mut self, to: PlayerId, msg: &[u8]) {
        self.items.push((Some(to), msg.to_vec()));
    }

    /// Queues `msg` for every connected player.
    pub fn broadcast(&mut self, msg: &[u8]) {
        self.items.push((None, msg.to_vec()));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the queued events, oldest first (the core calls this).
    pub fn drain(&mut self) -> std::vec::Drain<'_, (Option<PlayerId>, Vec<u8>)> {
        self.items.drain(..)
    }
}

/// One entity as the game shows it to players this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entity<'a> {
    /// Stable id.
    pub id: EntityId,
    /// Relevance position: the core sends each player the entities nearest to that player's
    /// viewpoint (its own entity first).
    pub x: i32,
    /// Relevance position y.
    pub y: i32,
    /// The player this entity belongs to (their avatar), if any: it is that player's `you`
    /// and viewpoint.
    pub owner: Option<PlayerId>,
    /// Exactly [`GameSpec::entity_fields`] state fields.
    pub fields: &'a [i32],
}

/// Where a player without an entity looks from (spectators, the dead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Focus {
    /// The player.
    pub player: PlayerId,
    /// Viewpoint x.
    pub x: i32,
    /// Viewpoint y.
    pub y: i32,
}

/// The entities of one tick, filled by [`Game::view`] into tables the core owns and reuses
/// (structure of arrays: nothing is allocated once the tables have grown).
#[derive(Debug)]
pub struct View {
    fields_per_entity: usize,
    /// Entity ids.
    pub ids: Vec<EntityId>,
    /// Relevance x.
    pub xs: Vec<i32>,
    /// Relevance y.
    pub ys: Vec<i32>,
    /// Owner of each entity ([`NO_OWNER`] when none).
    pub owners: Vec<PlayerId>,
    /// `fields_per_entity` fields per entity, entity after entity.
    pub fields: Vec<i32>,
    /// Viewpoints of players without an entity.
    pub focus: Vec<Focus>,
}

/// [`View::owners`] value of an entity no player owns.
pub const NO_OWNER: PlayerId = u32::MAX;

impl View {
    /// Empty tables for a game with `fields_per_entity` fields, room for `capacity` entities.
    pub fn new(fields_per_entity: usize, capacity: usize) -> Self {
        View {
            fields_per_entity,
            ids: Vec::with_capacity(capacity),
            xs: Vec::with_capacity(capacity),
            ys: Vec::with_capacity(capacity),
            owners: Vec::with_capacity(capacity),
            fields: Vec::with_capacity(capacity * fields_per_entity),
            focus: Vec::new(),
        }
    }

    /// Empties the tables, keeping their memory.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.xs.clear();
        self.ys.clear();
        self.owners.clear();
        self.fields.clear();
        self.focus.clear();
    }

    /// Adds one entity. Fields beyond the game's count are ignored; missing ones are 0.
    pub fn push(&mut self, e: Entity<'_>) {
        self.ids.push(e.id);
        self.xs.push(e.x);
        self.ys.push(e.y);
        self.owners.push(e.owner.unwrap_or(NO_OWNER));
        let n = self.fields_per_entity;
        let given = e.fields.len().min(n);
        self.fields.extend_from_slice(&e.fields[..given]);
        self.fields.extend(std::iter::repeat_n(0, n - given));
    }

    /// Sets the viewpoint of a player who owns no entity.
    pub fn set_focus(&mut self, player: PlayerId, x: i32, y: i32) {
        self.focus.push(Focus { player, x, y });
    }

    /// Entities pushed so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no entity was pushed.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Fields per entity.
    pub fn fields_per_entity(&self) -> usize {
        self.fields_per_entity
    }

    /// The fields of entity `i`.
    pub fn fields_of(&self, i: usize) -> &[i32] {
        let n = self.fields_per_entity;
        &self.fields[i * n..(i + 1) * n]
    }
}

/// A game Tickwire can serve. See the crate docs for the calling pattern and the rules.
pub trait Game: Send {
    /// What the core needs to know about the game. Called once, right after construction.
    fn spec(&self) -> GameSpec;

    /// A player joined. The game usually spawns their entity and sends them what they need
    /// to play (the level) through `out`.
    fn join(&mut self, player: PlayerId, out: &mut Outbox) -> Result<(), JoinRefused>;

    /// A player left (disconnected, timed out or was removed). Their entity should go.
    fn leave(&mut self, player: PlayerId, out: &mut Outbox);

    /// One input frame of `player`, exactly [`GameSpec::input_bytes`] long. Called before
    /// [`Game::step`], once per frame, in the player's sequence order. A frame a hostile
    /// client filled with nonsense must be clamped or ignored, never trusted.
    fn input(&mut self, player: PlayerId, frame: &[u8]);

    /// One reliable message from `player`, in the order they sent them, between ticks.
    /// Default: ignored.
    fn message(&mut self, player: PlayerId, msg: &[u8], out: &mut Outbox) {
        let _ = (player, msg, out);
    }

    /// Advances the world by one tick.
    fn step(&mut self, out: &mut Outbox);

    /// Fills `view` (already cleared) with every entity players may see, and the viewpoint of
    /// players without an entity.
    fn view(&self, view: &mut View);

    /// A hash of the whole game state (everything that influences future steps), equal on
    /// every platform for equal states. [`StateHasher`] helps.
    fn state_hash(&self) -> u64;

    /// A player's score for server browsers (A2S_PLAYER). Default: 0.
    fn score(&self, player: PlayerId) -> i32 {
        let _ = player;
        0
    }
}

/// Plays a game as a bot: writes one input frame per tick. The load tester and the tests use
/// it; it sees what a client sees (its own entity's fields, if any).
pub trait Bot: Send {
    /// Writes this tick's input frame into `frame` (exactly the game's input size).
    /// `me` is the bot's own entity fields from the newest snapshot, if it has one.
    fn input(&mut self, tick: u32, me: Option<&[i32]>, frame: &mut [u8]);
}

/// How the server finds a game by name: what `--list-games` prints and `--game NAME` builds.
#[derive(Clone, Copy)]
pub struct GameEntry {
    /// The name (`--game NAME`).
    pub name: &'static str,
    /// One line describing the game, for docs and tools.
    pub about: &'static str,
    /// Builds the game; refuses bad options with an [`OptionError`].
    pub build: fn(&GameConfig) -> Result<Box<dyn Game>, OptionError>,
    /// Builds a bot for this game, seeded.
    pub bot: fn(seed: u64) -> Box<dyn Bot>,
}

impl fmt::Debug for GameEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GameEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Finds `name` in `games`, or says which names exist.
pub fn find<'a>(games: &'a [GameEntry], name: &str) -> Result<&'a GameEntry, String> {
    games.iter().find(|g| g.name == name).ok_or_else(|| {
        let names: Vec<&str> = games.iter().map(|g| g.name).collect();
        format!(
            "server.game = {name:?}: no such game; allowed: {}",
            names.join(", ")
        )
    })
}

/// FNV-1a (64-bit): a simple platform-independent hash for [`Game::state_hash`]. Feed
/// integers as little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct StateHasher(u64);

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher(0xCBF2_9CE4_8422_2325)
    }
}

impl StateHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
        self
    }

    /// Feeds an `i32`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Feeds a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Feeds a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// splitmix64: a tiny seeded PRNG for games and bots (deterministic everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (hi as i64 - lo as i64 + 1) as u64;
        (lo as i64 + self.below(span) as i64) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_pads_and_cuts_fields() {
        let mut v = View::new(2, 4);
        v.push(Entity {
            id: 1,
            x: 5,
            y: 6,
            owner: Some(3),
            fields: &[5],
        });
        v.push(Entity {
            id: 2,
            x: 0,
            y: 0,
            owner: None,
            fields: &[1, 2, 3],
        });
        assert_eq!(v.fields_of(0), &[5, 0]);
        assert_eq!(v.fields_of(1), &[1, 2]);
        assert_eq!(v.owners, vec![3, NO_OWNER]);
        v.clear();
        assert!(v.is_empty());
    }

    #[test]
    fn options_are_checked() {
        let mut cfg = GameConfig::new(1, 8, 16);
        cfg.options.push(("obstacles".into(), "12".into()));
        assert_eq!(OptionError::parse_in(&cfg, "obstacles", 0..=100, 4), Ok(12));
        assert_eq!(OptionError::parse_in(&cfg, "other", 0..=100, 4), Ok(4));
        let e = OptionError::parse_in(&cfg, "obstacles", 0..=10, 4).unwrap_err();
        assert!(e.to_string().contains("0..=10"), "{e}");
        assert!(OptionError::only(&cfg, &["obstacles"]).is_ok());
        let e = OptionError::only(&cfg, &["size"]).unwrap_err();
        assert!(e.to_string().contains("size"), "{e}");
    }

    #[test]
    fn hasher_and_rng_are_fixed() {
        // Pinned: a change here changes every game's recorded hashes.
        assert_eq!(StateHasher::new().finish(), 0xCBF2_9CE4_8422_2325);
        assert_eq!(StateHasher::new().u32(1).finish(), 0xAD2A_CA77_4798_5764);
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next(), 0xE220_A839_7B1D_CDAF);
        for _ in 0..1000 {
            let v = r.range_i32(-3, 3);
            assert!((-3..=3).contains(&v));
        }
    }
}
