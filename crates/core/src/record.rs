//! Recording and replay: every call that changed the game, and the state hash after each step.
//!
//! A game is deterministic (see `tickwire_game`): the same [`GameConfig`] and the same calls
//! give the same state. So a run is recorded as the calls the core made on the game (joins,
//! leaves, input frames, reliable client messages, steps) and the [`Game::state_hash`] after
//! every step; [`replay`] builds the same game from the same config, makes the same calls
//! without any socket, and checks every hash.
//!
//! File format (all integers little endian; `varint` is unsigned LEB128):
//!
//! ```text
//! header   "TWREC" 00 00 01                 magic and format version 1
//!          u16 len, game name (UTF-8)
//!          u16 game version (GameSpec::version)
//!          u64 seed, u32 max_players, u16 tick_ms
//!          u16 option count, then per option: u16 len key, u16 len value (UTF-8)
//! records  01 varint player                 join
//!          02 varint player                 leave
//!          03 varint player, input_bytes    input frame (the game's frame size)
//!          04 varint player, varint len, bytes   reliable message from the player
//!          05 u32 tick, u64 state hash      step (hash after the step)
//! ```
//!
//! At one input per player per tick the input records dominate: about `2 + input_bytes`
//! bytes per player per tick (a 3-byte frame: 5 B, about 19 KB per player per minute at
//! 62.5 Hz).

use std::fmt;
use std::io::{self, BufRead, Write};

use tickwire_game::{Game, GameConfig, GameEntry, Outbox, PlayerId};

const MAGIC: [u8; 8] = *b"TWREC\0\0\x01";

const JOIN: u8 = 1;
const LEAVE: u8 = 2;
const INPUT: u8 = 3;
const MESSAGE: u8 = 4;
const STEP: u8 = 5;

/// Largest reliable message a recording may hold (a bound for the reader).
const MAX_MESSAGE: usize = 1 << 24;

/// Writes a recording. Write errors are kept (the first one) and end the recording; the game
/// goes on. Check [`Recorder::error`].
pub struct Recorder {
    out: Box<dyn Write + Send>,
    error: Option<io::Error>,
    bytes: u64,
    steps: u64,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("bytes", &self.bytes)
            .field("steps", &self.steps)
            .field("error", &self.error)
            .finish()
    }
}

impl Recorder {
    /// Starts a recording of a game built from `cfg` (with `name` and `version`) into `out`
    /// (wrap a file in a `BufWriter`).
    pub fn new(
        mut out: Box<dyn Write + Send>,
        name: &str,
        version: u16,
        cfg: &GameConfig,
    ) -> io::Result<Self> {
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        put_str(&mut h, name)?;
        h.extend_from_slice(&version.to_le_bytes());
        h.extend_from_slice(&cfg.seed.to_le_bytes());
        h.extend_from_slice(&(cfg.max_players as u32).to_le_bytes());
        h.extend_from_slice(&cfg.tick_ms.to_le_bytes());
        h.extend_from_slice(&(cfg.options.len() as u16).to_le_bytes());
        for (k, v) in &cfg.options {
            put_str(&mut h, k)?;
            put_str(&mut h, v)?;
        }
        out.write_all(&h)?;
        Ok(Recorder {
            out,
            error: None,
            bytes: h.len() as u64,
            steps: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        match self.out.write_all(bytes) {
            Ok(()) => self.bytes += bytes.len() as u64,
            Err(e) => self.error = Some(e),
        }
    }

    fn record(&mut self, kind: u8, player: PlayerId, rest: &[u8]) {
        let mut b = [0u8; 6];
        b[0] = kind;
        let n = 1 + put_varint(&mut b[1..], player as u64);
        self.write(&b[..n]);
        self.write(rest);
    }

    /// A player joined.
    pub fn join(&mut self, player: PlayerId) {
        self.record(JOIN, player, &[]);
    }

    /// A player left.
    pub fn leave(&mut self, player: PlayerId) {
        self.record(LEAVE, player, &[]);
    }

    /// An input frame was handed to the game.
    pub fn input(&mut self, player: PlayerId, frame: &[u8]) {
        self.record(INPUT, player, frame);
    }

    /// A reliable message was handed to the game.
    pub fn message(&mut self, player: PlayerId, msg: &[u8]) {
        let mut len = [0u8; 10];
        let n = put_varint(&mut len, msg.len() as u64);
        self.record(MESSAGE, player, &len[..n]);
        self.write(msg);
    }

    /// The game stepped to `tick`; `hash` is its state after the step.
    pub fn step(&mut self, tick: u32, hash: u64) {
        let mut b = [0u8; 13];
        b[0] = STEP;
        b[1..5].copy_from_slice(&tick.to_le_bytes());
        b[5..].copy_from_slice(&hash.to_le_bytes());
        self.write(&b);
        self.steps += 1;
    }

    /// Flushes buffered bytes to the writer.
    pub fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
    }

    /// The first write error, if any (the recording stopped there).
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Steps recorded so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) -> io::Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string over 65535 bytes"))?;
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_varint(buf: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            buf[i] = b;
            return i + 1;
        }
        buf[i] = b | 0x80;
        i += 1;
    }
}

/// What a successful replay found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplaySummary {
    /// The game's name.
    pub game: String,
    /// The seed of the recorded run.
    pub seed: u64,
    /// Steps replayed (each hash matched).
    pub ticks: u64,
    /// The state hash after the last step (the initial hash if there was none).
    pub final_hash: u64,
    /// Joins, leaves, input frames and messages replayed.
    pub calls: u64,
}

/// Why a replay failed.
#[derive(Debug)]
pub enum ReplayError {
    /// Reading failed.
    Io(io::Error),
    /// Not a recording, or a newer format.
    BadHeader(String),
    /// The recording names a game this binary does not have.
    UnknownGame(String),
    /// The game refused the recorded config.
    Config(String),
    /// The recording is cut or corrupt at this byte offset.
    Corrupt {
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The game's state differs from the recording.
    Mismatch {
        /// The tick whose hash differs.
        tick: u32,
        /// The recorded hash.
        expected: u64,
        /// The replayed hash.
        actual: u64,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Io(e) => write!(f, "cannot read the recording: {e}"),
            ReplayError::BadHeader(w) => write!(f, "not a Tickwire recording: {w}"),
            ReplayError::UnknownGame(g) => {
                write!(f, "the recording is of game {g:?}, which this binary does not have")
            }
            ReplayError::Config(e) => write!(f, "the game refused the recorded config: {e}"),
            ReplayError::Corrupt { offset, what } => {
                write!(f, "recording corrupt at byte {offset}: {what}")
            }
            ReplayError::Mismatch {
                tick,
                expected,
                actual,
            } => write!(
                f,
                "state hash mismatch at tick {tick}: recorded {expected:016x}, replayed {actual:016x}"
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Reads exactly, counting the offset; EOF inside a record is corruption.
struct Input<R> {
    r: R,
    offset: u64,
}

impl<R: BufRead> Input<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), ReplayError> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReplayError::Corrupt {
                offset: self.offset,
                what: "cut short".into(),
            }),
            Err(e) => Err(ReplayError::Io(e)),
        }
    }

    fn u16(&mut self) -> Result<u16, ReplayError> {
        let mut b = [0; 2];
        self.exact(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn string(&mut self) -> Result<String, ReplayError> {
        let len = self.u16()? as usize;
        let mut b = vec![0; len];
        self.exact(&mut b)?;
        String::from_utf8(b).map_err(|_| ReplayError::Corrupt {
            offset: self.offset,
            what: "string is not UTF-8".into(),
        })
    }

    fn varint(&mut self) -> Result<u64, ReplayError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let mut b = [0];
            self.exact(&mut b)?;
            v |= ((b[0] & 0x7F) as u64) << shift;
            if b[0] & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ReplayError::Corrupt {
            offset: self.offset,
            what: "varint too long".into(),
        })
    }

    /// The next record kind, or `None` at a clean end of file.
    fn kind(&mut self) -> Result<Option<u8>, ReplayError> {
        let mut b = [0];
        loop {
            return match self.r.read(&mut b) {
                Ok(0) => Ok(None),
                Ok(_) => {
                    self.offset += 1;
                    Ok(Some(b[0]))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(ReplayError::Io(e)),
            };
        }
    }
}

/// Replays a recording through the game of the same name in `games`, checking the state hash
/// after every step. `on_step(tick, hash)` sees each verified step (for progress).
pub fn replay(
    games: &[GameEntry],
    reader: impl BufRead,
    on_step: &mut dyn FnMut(u32, u64),
) -> Result<ReplaySummary, ReplayError> {
    let mut inp = Input {
        r: reader,
        offset: 0,
    };
    let mut magic = [0u8; 8];
    inp.exact(&mut magic)
        .map_err(|_| ReplayError::BadHeader("shorter than the header".into()))?;
    if magic[..5] != MAGIC[..5] {
        return Err(ReplayError::BadHeader("wrong magic bytes".into()));
    }
    if magic != MAGIC {
        return Err(ReplayError::BadHeader(format!(
            "format version {} (this binary reads {})",
            magic[7], MAGIC[7]
        )));
    }
    let name = inp.string()?;
    let version = inp.u16()?;
    let mut b8 = [0u8; 8];
    inp.exact(&mut b8)?;
    let seed = u64::from_le_bytes(b8);
    let mut b4 = [0u8; 4];
    inp.exact(&mut b4)?;
    let max_players = u32::from_le_bytes(b4) as usize;
    let tick_ms = inp.u16()?;
    let n_opts = inp.u16()?;
    let mut cfg = GameConfig::new(seed, max_players, tick_ms);
    for _ in 0..n_opts {
        let k = inp.string()?;
        let v = inp.string()?;
        cfg.options.push((k, v));
    }
    let entry =
        tickwire_game::find(games, &name).map_err(|_| ReplayError::UnknownGame(name.clone()))?;
    let mut game: Box<dyn Game> =
        (entry.build)(&cfg).map_err(|e| ReplayError::Config(e.to_string()))?;
    let spec = game.spec();
    if spec.version != version {
        return Err(ReplayError::BadHeader(format!(
            "recorded with {name} version {version}, this binary has version {}",
            spec.version
        )));
    }
    let mut out = Outbox::new();
    let mut frame = vec![0u8; spec.input_bytes];
    let mut summary = ReplaySummary {
        game: name,
        seed,
        ticks: 0,
        final_hash: game.state_hash(),
        calls: 0,
    };
    let player_of = |inp: &mut Input<_>, v: u64| -> Result<PlayerId, ReplayError> {
        if v >= max_players as u64 {
            return Err(ReplayError::Corrupt {
                offset: inp.offset,
                what: format!("player {v} beyond max_players {max_players}"),
            });
        }
        Ok(v as PlayerId)
    };
    while let Some(kind) = inp.kind()? {
        match kind {
            JOIN => {
                let v = inp.varint()?;
                let p = player_of(&mut inp, v)?;
                let _ = game.join(p, &mut out);
            }
            LEAVE => {
                let v = inp.varint()?;
                let p = player_of(&mut inp, v)?;
                game.leave(p, &mut out);
            }
            INPUT => {
                let v = inp.varint()?;
                let p = player_of(&mut inp, v)?;
                inp.exact(&mut frame)?;
                game.input(p, &frame);
            }
            MESSAGE => {
                let v = inp.varint()?;
                let p = player_of(&mut inp, v)?;
                let len = inp.varint()? as usize;
                if len > MAX_MESSAGE {
                    return Err(ReplayError::Corrupt {
                        offset: inp.offset,
                        what: format!("message of {len} bytes"),
                    });
                }
                let mut msg = vec![0u8; len];
                inp.exact(&mut msg)?;
                game.message(p, &msg, &mut out);
            }
            STEP => {
                inp.exact(&mut b4)?;
                let tick = u32::from_le_bytes(b4);
                inp.exact(&mut b8)?;
                let expected = u64::from_le_bytes(b8);
                game.step(&mut out);
                let actual = game.state_hash();
                if actual != expected {
                    return Err(ReplayError::Mismatch {
                        tick,
                        expected,
                        actual,
                    });
                }
                summary.ticks += 1;
                summary.final_hash = actual;
                on_step(tick, actual);
            }
            other => {
                return Err(ReplayError::Corrupt {
                    offset: inp.offset - 1,
                    what: format!("unknown record type {other}"),
                })
            }
        }
        if kind != STEP {
            summary.calls += 1;
        }
        // The game's events go nowhere in a replay; drop them as they come.
        out.drain();
    }
    Ok(summary)
}
