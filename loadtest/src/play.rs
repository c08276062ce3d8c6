//! Which game a bot plays, and how it makes its inputs.
//!
//! A bot cannot know the game, its input size or its entity layout before the server's
//! welcome, so it sends no input until then. At its first welcome it looks the welcome's game
//! up in the [`Catalog`] (the games built into this binary, `tickwire_games::builtin()`) and
//! gets a [`Player`]: the game's own [`Bot`] (`(entry.bot)(seed)`), a frame buffer of exactly
//! the welcome's `input_bytes` and room for its own entity's fields. From then on, at each of
//! its send slots, the bot asks its [`Player`] for a frame and sends it.
//!
//! A welcome the bot cannot play is a [`Refusal`], counted by kind and reported (never a
//! panic): a game other than `--game` ([`Refusal::Mismatch`]), a game this binary does not
//! have ([`Refusal::Unknown`]), or one whose encodings differ from this binary's version of it
//! ([`Refusal::Incompatible`]: its bot would write frames of the wrong size or layout).

use std::fmt;

use tickwire_client::{Snapshot, Welcome};
use tickwire_game::{Bot, GameConfig, GameEntry, GameSpec, MAX_ENTITY_FIELDS, MAX_INPUT_BYTES};

/// The games bots can play, and the one `--game` asked for.
pub struct Catalog {
    games: Vec<GameEntry>,
    wanted: Option<String>,
    /// Each game's spec as this binary builds it (default options), looked up once per name;
    /// `None` when the game would not build without options (then it is not checked).
    specs: Vec<(&'static str, Option<GameSpec>)>,
}

/// Why a bot does not play the game its welcome names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--game` named another game than the server's welcome.
    Mismatch {
        /// `--game`.
        wanted: String,
        /// The welcome's game.
        server: String,
    },
    /// The welcome names a game this binary has no bot for.
    Unknown {
        /// The welcome's game.
        server: String,
        /// The games this binary has.
        known: Vec<&'static str>,
    },
    /// The welcome's game has encodings this binary's version of the game does not share.
    Incompatible {
        /// The welcome's game.
        server: String,
        /// What differs.
        detail: String,
    },
}

impl Refusal {
    /// The count this refusal goes to (the JSON key).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Mismatch { .. } => "game_mismatch",
            Refusal::Unknown { .. } => "game_unknown",
            Refusal::Incompatible { .. } => "game_incompatible",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Mismatch { wanted, server } => write!(
                f,
                "the server plays {server:?}, but --game asked for {wanted:?}"
            ),
            Refusal::Unknown { server, known } => write!(
                f,
                "the server plays {server:?}, which this load tester has no bot for \
                 (built-in games: {})",
                known.join(", ")
            ),
            Refusal::Incompatible { server, detail } => write!(
                f,
                "the server's {server:?} is not the version this load tester's bot plays: {detail}"
            ),
        }
    }
}

impl Catalog {
    /// `games` to choose from (normally `tickwire_games::builtin()`); `wanted` is `--game`.
    pub fn new(games: Vec<GameEntry>, wanted: Option<String>) -> Self {
        Catalog {
            games,
            wanted,
            specs: Vec::new(),
        }
    }

    /// `--game`, if given.
    pub fn wanted(&self) -> Option<&str> {
        self.wanted.as_deref()
    }

    /// The game `welcome` names, checked against `--game` and this binary's version of it, as a
    /// [`Player`] with a bot seeded by `seed`.
    pub fn choose(&mut self, welcome: &Welcome, seed: u64) -> Result<Player, Refusal> {
        let server = &welcome.game;
        if let Some(wanted) = &self.wanted {
            if wanted != server {
                return Err(Refusal::Mismatch {
                    wanted: wanted.clone(),
                    server: server.clone(),
                });
            }
        }
        let Some(entry) = self.games.iter().find(|g| g.name == server.as_str()) else {
            return Err(Refusal::Unknown {
                server: server.clone(),
                known: self.games.iter().map(|g| g.name).collect(),
            });
        };
        let incompatible = |detail: String| Refusal::Incompatible {
            server: server.clone(),
            detail,
        };
        let input_bytes = usize::from(welcome.input_bytes);
        let entity_fields = usize::from(welcome.entity_fields);
        if !(1..=MAX_INPUT_BYTES).contains(&input_bytes) || entity_fields > MAX_ENTITY_FIELDS {
            return Err(incompatible(format!(
                "the welcome announces {input_bytes}-byte inputs and {entity_fields} fields \
                 per entity (at most {MAX_INPUT_BYTES} and {MAX_ENTITY_FIELDS})"
            )));
        }
        let name = entry.name;
        let at = match self.specs.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                let cfg = GameConfig::new(0, 1, welcome.tick_ms.max(1));
                let spec = (entry.build)(&cfg).ok().map(|g| g.spec());
                self.specs.push((name, spec));
                self.specs.len() - 1
            }
        };
        if let Some(spec) = &self.specs[at].1 {
            let ours = (spec.version, spec.input_bytes, spec.entity_fields);
            let theirs = (welcome.game_version, input_bytes, entity_fields);
            if ours != theirs {
                return Err(incompatible(format!(
                    "the server announces version {}, {}-byte inputs, {} fields per entity; \
                     this bot plays version {}, {}-byte inputs, {} fields per entity",
                    theirs.0, theirs.1, theirs.2, ours.0, ours.1, ours.2
                )));
            }
        }
        Ok(Player {
            bot: (entry.bot)(seed),
            frame: vec![0; input_bytes],
            me: Vec::with_capacity(entity_fields),
            welcome_tick: welcome.tick,
        })
    }
}

/// A bot playing one game: the game's [`Bot`] and what it sees.
pub struct Player {
    bot: Box<dyn Bot>,
    /// The input frame, exactly the welcome's `input_bytes` (reused for every input).
    frame: Vec<u8>,
    /// The bot's own entity's fields in the newest snapshot (empty when it had none).
    me: Vec<i32>,
    /// The tick the welcome announced (the bot's tick until a snapshot arrives).
    welcome_tick: u32,
}

impl Player {
    /// Keeps the bot's own entity's fields from `snap` (the entity whose id is `snap.you`).
    pub fn observe(&mut self, snap: &Snapshot) {
        self.me.clear();
        if let Some(i) = snap.ids.iter().position(|&id| id == snap.you) {
            let n = snap.fields_per_entity;
            if let Some(fields) = snap.fields.get(i * n..(i + 1) * n) {
                self.me.extend_from_slice(fields);
            }
        }
    }

    /// The bot's own entity's fields from the newest snapshot, if it had one.
    #[cfg(test)]
    pub fn me(&self) -> Option<&[i32]> {
        (!self.me.is_empty()).then_some(self.me.as_slice())
    }

    /// The tick a bot plays at: the newest snapshot's, else the welcome's.
    pub fn tick(&self, newest_snapshot_tick: Option<u32>) -> u32 {
        newest_snapshot_tick.unwrap_or(self.welcome_tick)
    }

    /// Asks the bot for this tick's input; the frame is the welcome's `input_bytes` long.
    pub fn next_frame(&mut self, tick: u32) -> &[u8] {
        self.frame.fill(0);
        let me = (!self.me.is_empty()).then_some(self.me.as_slice());
        self.bot.input(tick, me, &mut self.frame);
        &self.frame
    }
}

/// Bot `index`'s seed for run seed `seed` (`--seed`): deterministic, distinct per index.
pub fn bot_seed(seed: u64, index: usize) -> u64 {
    splitmix64(seed ^ splitmix64(index as u64))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_game::OptionError;

    /// Writes what it was given: the frame's length in every byte, then the tick's low byte and
    /// its own first field (or 0xEE without an entity).
    struct Probe;

    impl Bot for Probe {
        fn input(&mut self, tick: u32, me: Option<&[i32]>, frame: &mut [u8]) {
            frame.fill(frame.len() as u8);
            frame[1] = tick as u8;
            frame[2] = me.map_or(0xEE, |f| f[0] as u8);
        }
    }

    /// A game this binary can bot but not build without options (so its spec is unchecked).
    fn probe_entry() -> GameEntry {
        GameEntry {
            name: "probe",
            about: "test",
            build: |_| {
                Err(OptionError {
                    key: "size".into(),
                    value: String::new(),
                    allowed: "required".into(),
                })
            },
            bot: |_| Box::new(Probe),
        }
    }

    fn welcome(game: &str, input_bytes: u8, entity_fields: u8) -> Welcome {
        Welcome {
            player_id: 3,
            tick_ms: 16,
            tick: 50,
            protocol_version: 2,
            game: game.into(),
            game_version: 1,
            input_bytes,
            entity_fields,
        }
    }

    #[test]
    fn the_frame_has_the_welcomes_input_size() {
        let mut c = Catalog::new(vec![probe_entry()], None);
        for size in [3u8, 7, MAX_INPUT_BYTES as u8] {
            let mut p = c.choose(&welcome("probe", size, 2), 1).unwrap();
            let frame = p.next_frame(p.tick(None)).to_vec();
            assert_eq!(frame.len(), usize::from(size));
            assert_eq!(&frame[..3], &[size, 50, 0xEE]);
            // Its own entity (id 3 = `you`), from the newest snapshot.
            p.observe(&Snapshot {
                tick: 51,
                last_input_seq: 0,
                you: 3,
                fields_per_entity: 2,
                ids: vec![1, 3],
                fields: vec![10, 11, 30, 31],
            });
            assert_eq!(p.me(), Some(&[30, 31][..]));
            assert_eq!(&p.next_frame(p.tick(Some(51)))[..3], &[size, 51, 30]);
        }
    }

    #[test]
    fn choosing_follows_the_welcome_and_game() {
        let games = vec![probe_entry()];
        assert!(Catalog::new(games.clone(), None)
            .choose(&welcome("probe", 4, 0), 1)
            .is_ok());
        assert!(Catalog::new(games.clone(), Some("probe".into()))
            .choose(&welcome("probe", 4, 0), 1)
            .is_ok());
        let e = Catalog::new(games.clone(), Some("arena".into()))
            .choose(&welcome("probe", 4, 0), 1)
            .err()
            .unwrap();
        assert_eq!(
            e,
            Refusal::Mismatch {
                wanted: "arena".into(),
                server: "probe".into()
            }
        );
        assert_eq!(e.kind(), "game_mismatch");
        let e = Catalog::new(games, None)
            .choose(&welcome("chess", 4, 0), 1)
            .err()
            .unwrap();
        assert_eq!(e.kind(), "game_unknown");
        assert_eq!(
            e.to_string(),
            "the server plays \"chess\", which this load tester has no bot for \
             (built-in games: probe)"
        );
    }

    #[test]
    fn bot_seeds_are_deterministic_and_distinct() {
        assert_eq!(bot_seed(1, 5), bot_seed(1, 5));
        let seeds: std::collections::BTreeSet<u64> = (0..10_000).map(|i| bot_seed(1, i)).collect();
        assert_eq!(seeds.len(), 10_000);
        assert_ne!(bot_seed(1, 0), bot_seed(2, 0));
    }
}
