//! The server configuration: built-in defaults, a TOML file, `TICKWIRE_*` environment variables
//! and command-line flags, merged and validated before any socket is opened.
//!
//! Precedence, per key: command line > environment > config file > built-in default.
//!
//! * **File.** `--config PATH` (or `TICKWIRE_CONFIG`) must exist; without it,
//!   [`DEFAULT_CONFIG_PATH`] is read when present. Sections and keys are listed in [`KEYS`]; an
//!   unknown section or key is an error naming it, its line and the allowed names. Broken TOML is
//!   an error with line and column. Integers may be written in hex (`0x...`); u64 values above
//!   `i64::MAX` (which TOML integers cannot hold) may be written as strings.
//! * **Environment.** `TICKWIRE_<SECTION>_<KEY>` for every key (`TICKWIRE_IO_MAX_EVENTS`,
//!   `TICKWIRE_SERVER_BIND`, ...), plus the flag spelling as a short alias where it differs
//!   (`TICKWIRE_MAX_EVENTS` for `--max-events`, `TICKWIRE_BIND` for `--bind`, `TICKWIRE_SEED`
//!   for `--seed`, ...; see [`KeyInfo::env_alias`]). Setting both spellings to different values is
//!   an error. Other `TICKWIRE_*` variables are reported in [`Config::warnings`].
//! * **Validation.** Every problem is collected (not only the first) into one [`ConfigError`],
//!   each naming the key, the value, the allowed range or values and where the value came from:
//!   `io.max_events = 5: must be in 64..=10000 (from --max-events)`.
//!
//! `Display for Config` prints the effective configuration as TOML that loads back unchanged
//! (`tickwire check-config` prints it).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use crate::cli::ServeArgs;
use crate::logging::{self, LogFormat};

/// Config file read when `--config` is not given, if it exists (relative to the working dir).
pub const DEFAULT_CONFIG_PATH: &str = "config/server.toml";
/// Environment variable naming the config file (same rules as `--config`).
pub const CONFIG_ENV: &str = "TICKWIRE_CONFIG";
/// Prefix of every environment variable the loader reads.
pub const ENV_PREFIX: &str = "TICKWIRE_";
/// Default netcode protocol id: the ASCII bytes of "tickwire" read as a big-endian u64.
pub const DEFAULT_PROTOCOL_ID: u64 = u64::from_be_bytes(*b"tickwire");

/// I/O backend choice (`io.model`): `tickwire_io::Model` (auto, epoll, io_uring, kqueue, iocp,
/// select, blocking).
pub use tickwire_io::Model as IoModel;

/// What to do when the chosen I/O model fails to start (`io.fallback`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoFallback {
    /// Open the `blocking` backend instead, logging why.
    #[default]
    Blocking,
    /// Exit with the error.
    None,
}

impl IoFallback {
    /// The config/flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IoFallback::Blocking => "blocking",
            IoFallback::None => "none",
        }
    }
}

impl fmt::Display for IoFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IoFallback {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blocking" => Ok(IoFallback::Blocking),
            "none" => Ok(IoFallback::None),
            other => Err(format!("unknown fallback {other:?}")),
        }
    }
}

/// `[server]`: the game socket and the simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// UDP game address (the TCP transport uses the same port).
    pub bind: SocketAddr,
    /// Address clients are told (listed in connect tokens). `None`: derived from `bind`, see
    /// [`ServerConfig::public_addr`].
    pub public_addr: Option<SocketAddr>,
    /// Fixed simulation step, 1..=1000 ms.
    pub tick_ms: u32,
    /// Most connected clients, 1..=16384; beyond it new clients are denied.
    pub max_players: usize,
    /// Server name (A2S queries, logs): 1..=63 bytes, no control characters.
    pub name: String,
    /// How long the first SIGTERM/SIGINT waits for connected players to leave, 0..=3600 s
    /// (0: stop at once). See [`ServerConfig::drain_grace`].
    pub drain_grace_secs: u32,
    /// The game to serve, by name (`--list-games`); `None`: the binary's first game.
    pub game: Option<String>,
    /// Most stream connections (TCP and WebSocket) open at once, 0..=100000; 0 turns the
    /// stream transports off (no TCP listener). Connections beyond it are closed at accept.
    pub max_connections: usize,
    /// How long a stream connection may stay open without completing the netcode handshake,
    /// 100..=60000 ms; then it is closed (`auth_timeout`).
    pub auth_timeout_ms: u32,
}

impl ServerConfig {
    /// The address to advertise before the socket is bound (used by `tickwire token`):
    /// `public_addr` when set, else `bind` with an unspecified IP (`0.0.0.0` / `::`) replaced by
    /// loopback (`127.0.0.1` / `::1`).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
            .unwrap_or_else(|| loopback_for_unspecified(self.bind))
    }

    /// The address to advertise once the game socket is bound to `bound` (which resolves port 0):
    /// `public_addr` when set, else `bound` with an unspecified IP replaced by loopback.
    pub fn advertised_addr(&self, bound: SocketAddr) -> SocketAddr {
        self.public_addr
            .unwrap_or_else(|| loopback_for_unspecified(bound))
    }

    /// `auth_timeout_ms` as a `Duration`.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.auth_timeout_ms))
    }

    /// `tick_ms` as a `Duration`.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(u64::from(self.tick_ms))
    }

    /// `drain_grace_secs` as a `Duration`: on the first SIGTERM/SIGINT the server stops
    /// accepting players, tells connected clients it is draining and waits up to this long for
    /// them to leave before telling the rest and exiting 0. Zero: tell everyone and exit at once.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.drain_grace_secs))
    }
}

fn loopback_for_unspecified(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// `[metrics]`: the admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, the browser client
/// at `/play`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// TCP address of the admin endpoint; `None` when configured as `"off"`.
    pub bind: Option<SocketAddr>,
    /// Development only: `/token` mints connect tokens for loopback requests. Refused unless
    /// `bind` is a loopback address (see [`crate::web`]).
    pub dev_tokens: bool,
}

/// `[io]`: the I/O backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoConfig {
    /// Backend choice.
    pub model: IoModel,
    /// Most events (datagrams) taken from one poll, 64..=10000.
    pub max_events: usize,
    /// Longest single I/O wait, 0..=1000 ms.
    pub timeout_ms: u32,
    /// What to do when `model` fails to start.
    pub fallback: IoFallback,
    /// Send slab slots (datagrams queued between flushes), 256..=1_000_000.
    pub send_queue: usize,
    /// Bound of each stream connection's send buffer in bytes, 4096..=16777216. A client
    /// whose buffer cannot take the next packet is disconnected as a slow reader.
    pub stream_send_bytes: usize,
}

impl IoConfig {
    /// `timeout_ms` as a `Duration`.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
}

/// `[auth]`: connect-token security.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// 32-byte private key file; created (mode 0600) with a random key when missing.
    pub key_file: PathBuf,
    /// netcode protocol id that tokens and packets must carry.
    pub protocol_id: u64,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Level or `EnvFilter` directive (`info`, `info,tickwire=debug`); `RUST_LOG` overrides it.
    pub level: String,
    /// Text or JSON lines on stderr.
    pub format: LogFormat,
}

/// `[world]`: the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldConfig {
    /// World generation seed.
    pub seed: u64,
    /// Deprecated spelling of the arena's `[game]` option `obstacles` (0..=4000): when set, it
    /// is passed to the game as that option. `None`: not set (the game's own default).
    pub obstacles: Option<u32>,
}

/// `[snapshot]`: what each client receives per tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Most entities (nearest first) per snapshot, 1..=64.
    pub max_entities: usize,
}

/// `[query]`: Valve A2S server queries on the game UDP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryConfig {
    /// Answer A2S_INFO, A2S_PLAYER and A2S_RULES queries.
    pub enabled: bool,
}

/// `[agones]`: the Agones SDK sidecar (Ready, Health pings, the `players` Counter, Shutdown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgonesConfig {
    /// Talk to the SDK sidecar. Also turned on by `AGONES_SDK_HTTP_PORT` in the environment
    /// (see [`AGONES_PORT_ENV`]).
    pub enabled: bool,
    /// Seconds between Health pings, 1..=60.
    pub health_interval_secs: u32,
}

impl AgonesConfig {
    /// `health_interval_secs` as a `Duration`.
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.health_interval_secs))
    }
}

/// Set by Agones in a GameServer's containers (the SDK sidecar's REST port). When present (and
/// not empty), `agones.enabled` defaults to true, below `TICKWIRE_AGONES_ENABLED`, `--agones`
/// and above the config file, with this variable as its origin.
pub const AGONES_PORT_ENV: &str = "AGONES_SDK_HTTP_PORT";

/// `TICKWIRE_*` variables that are test hooks rather than config keys (documented where
/// they are read): not warned about.
const TEST_HOOK_ENVS: &[&str] = &["TICKWIRE_IO_FORCE_FAIL", "TICKWIRE_TEST_STALL_FILE"];

/// Where a value came from (a key absent from [`Config::origins`] has its built-in default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A config file, 1-based line.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag (e.g. `--max-events`).
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag(flag) => f.write_str(flag),
        }
    }
}

/// The effective configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[io]`.
    pub io: IoConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[world]`.
    pub world: WorldConfig,
    /// `[snapshot]`.
    pub snapshot: SnapshotConfig,
    /// `[query]`.
    pub query: QueryConfig,
    /// `[agones]`.
    pub agones: AgonesConfig,
    /// `[game]`: the game's own options, passed to it as they are (`key = value`, in key
    /// order); the game refuses keys and values it does not know.
    pub game_options: Vec<(String, String)>,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where each non-default value came from, by full key (`"io.max_events"`).
    pub origins: BTreeMap<&'static str, Origin>,
    /// Non-fatal findings (e.g. unknown `TICKWIRE_*` variables); log them once logging is up.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                bind: SocketAddr::from(([0, 0, 0, 0], 7777)),
                public_addr: None,
                tick_ms: 16,
                max_players: 2048,
                name: "Tickwire".to_owned(),
                drain_grace_secs: 0,
                game: None,
                max_connections: 4096,
                auth_timeout_ms: 5000,
            },
            metrics: MetricsConfig {
                bind: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
                dev_tokens: false,
            },
            io: IoConfig {
                model: IoModel::Auto,
                max_events: 1024,
                timeout_ms: 16,
                fallback: IoFallback::Blocking,
                send_queue: 8192,
                stream_send_bytes: 64 * 1024,
            },
            auth: AuthConfig {
                key_file: PathBuf::from("tickwire.key"),
                protocol_id: DEFAULT_PROTOCOL_ID,
            },
            log: LogConfig {
                level: "info".to_owned(),
                format: LogFormat::Text,
            },
            world: WorldConfig {
                seed: 1,
                obstacles: None,
            },
            snapshot: SnapshotConfig { max_entities: 48 },
            query: QueryConfig { enabled: true },
            agones: AgonesConfig {
                enabled: false,
                health_interval_secs: 2,
            },
            game_options: Vec::new(),
            file: None,
            origins: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }
}

/// One config key: `[section] name`, and the `serve` flag that overrides it, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Section (`io`).
    pub section: &'static str,
    /// Key within the section (`max_events`).
    pub name: &'static str,
    /// Full dotted key (`io.max_events`).
    pub key: &'static str,
    /// Overriding flag without dashes (`max-events`), if any.
    pub flag: Option<&'static str>,
}

impl KeyInfo {
    /// The canonical environment variable: `TICKWIRE_<SECTION>_<KEY>`.
    pub fn env(&self) -> String {
        format!("{ENV_PREFIX}{}_{}", self.section, self.name).to_ascii_uppercase()
    }

    /// The short alias spelled like the flag (`TICKWIRE_MAX_EVENTS`), when it differs from
    /// [`KeyInfo::env`].
    pub fn env_alias(&self) -> Option<String> {
        let alias = format!("{ENV_PREFIX}{}", self.flag?)
            .to_ascii_uppercase()
            .replace('-', "_");
        (alias != self.env()).then_some(alias)
    }
}

const fn key(
    section: &'static str,
    name: &'static str,
    key: &'static str,
    flag: Option<&'static str>,
) -> KeyInfo {
    KeyInfo {
        section,
        name,
        key,
        flag,
    }
}

/// Every config key, section by section, in file order.
pub const KEYS: &[KeyInfo] = &[
    key("server", "bind", "server.bind", Some("bind")),
    key(
        "server",
        "public_addr",
        "server.public_addr",
        Some("public-addr"),
    ),
    key("server", "tick_ms", "server.tick_ms", Some("tick-ms")),
    key(
        "server",
        "max_players",
        "server.max_players",
        Some("max-players"),
    ),
    key("server", "name", "server.name", Some("name")),
    key("server", "game", "server.game", Some("game")),
    key(
        "server",
        "drain_grace_secs",
        "server.drain_grace_secs",
        Some("drain-grace-secs"),
    ),
    key(
        "server",
        "max_connections",
        "server.max_connections",
        Some("max-connections"),
    ),
    key("server", "auth_timeout_ms", "server.auth_timeout_ms", None),
    key("metrics", "bind", "metrics.bind", Some("metrics-bind")),
    key(
        "metrics",
        "dev_tokens",
        "metrics.dev_tokens",
        Some("dev-tokens"),
    ),
    key("io", "model", "io.model", Some("io-model")),
    key("io", "max_events", "io.max_events", Some("max-events")),
    key("io", "timeout_ms", "io.timeout_ms", Some("timeout-ms")),
    key("io", "fallback", "io.fallback", Some("io-fallback")),
    key("io", "send_queue", "io.send_queue", None),
    key("io", "stream_send_bytes", "io.stream_send_bytes", None),
    key("auth", "key_file", "auth.key_file", Some("key-file")),
    key(
        "auth",
        "protocol_id",
        "auth.protocol_id",
        Some("protocol-id"),
    ),
    key("log", "level", "log.level", Some("log-level")),
    key("log", "format", "log.format", Some("log-format")),
    key("world", "seed", "world.seed", Some("seed")),
    key("world", "obstacles", "world.obstacles", None),
    key("snapshot", "max_entities", "snapshot.max_entities", None),
    key("query", "enabled", "query.enabled", None),
    key("agones", "enabled", "agones.enabled", Some("agones")),
    key(
        "agones",
        "health_interval_secs",
        "agones.health_interval_secs",
        None,
    ),
];

/// The sections, in file order.
pub const SECTIONS: &[&str] = &[
    "server", "metrics", "io", "auth", "log", "world", "snapshot", "query", "agones", "game",
];

/// The section whose keys are the game's own options (free-form, checked by the game).
pub const GAME_SECTION: &str = "game";

fn keys_of(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.name)
        .collect()
}

fn key_info(full: &str) -> &'static KeyInfo {
    KEYS.iter()
        .find(|k| k.key == full)
        .unwrap_or_else(|| unreachable!("unlisted key {full}"))
}

fn cli_value<'a>(args: &'a ServeArgs, flag: &str) -> Option<&'a str> {
    let v = match flag {
        // A switch: present means "true", absent leaves the key to the other layers.
        "agones" => return args.agones.then_some("true"),
        "dev-tokens" => return args.dev_tokens.then_some("true"),
        "bind" => &args.bind,
        "public-addr" => &args.public_addr,
        "tick-ms" => &args.tick_ms,
        "max-players" => &args.max_players,
        "max-connections" => &args.max_connections,
        "metrics-bind" => &args.metrics_bind,
        "io-model" => &args.io_model,
        "max-events" => &args.max_events,
        "timeout-ms" => &args.timeout_ms,
        "io-fallback" => &args.io_fallback,
        "key-file" => &args.key_file,
        "protocol-id" => &args.protocol_id,
        "log-level" => &args.log_level,
        "log-format" => &args.log_format,
        "seed" => &args.seed,
        "name" => &args.name,
        "game" => &args.game,
        "drain-grace-secs" => &args.drain_grace_secs,
        _ => return None,
    };
    v.as_deref()
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A config file the user named does not exist.
    FileNotFound {
        /// The path.
        path: PathBuf,
        /// Who named it (`--config` or `env TICKWIRE_CONFIG`).
        named_by: Origin,
    },
    /// A config file could not be read.
    FileRead {
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// A config file is not valid TOML (the message carries line and column).
    Syntax {
        /// The path.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A top-level name that is not a section.
    UnknownSection {
        /// The path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The name found.
        name: String,
    },
    /// A section given as a plain value instead of a table.
    NotATable {
        /// The path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The section.
        section: String,
    },
    /// A key not allowed in its section.
    UnknownKey {
        /// The path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The section.
        section: String,
        /// The key found.
        name: String,
    },
    /// A value that does not parse or is out of range.
    Invalid {
        /// Full key (`io.max_events`).
        key: &'static str,
        /// The value as given (strings quoted).
        value: String,
        /// What is allowed (`must be in 64..=10000`).
        rule: String,
        /// Where it came from.
        origin: Origin,
    },
    /// Both environment spellings of one key are set, to different values.
    EnvConflict {
        /// Full key.
        key: &'static str,
        /// Canonical variable.
        env: String,
        /// Alias variable.
        alias: String,
    },
    /// An environment variable with a non-UTF-8 value.
    EnvNotUnicode {
        /// The variable.
        var: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::FileNotFound { path, named_by } => {
                write!(
                    f,
                    "config file {} (named by {named_by}) does not exist",
                    path.display()
                )
            }
            Problem::FileRead { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            Problem::Syntax { path, message } => {
                write!(
                    f,
                    "{}: invalid TOML: {}",
                    path.display(),
                    message.trim_end()
                )
            }
            Problem::UnknownSection { path, line, name } => {
                write!(f, "{}:{line}: unknown section [{name}]", path.display())?;
                if let Some(k) = KEYS.iter().find(|k| k.name == name) {
                    write!(f, " (did you mean `{}` under [{}]?)", k.name, k.section)?;
                }
                write!(f, "; allowed sections: {}", SECTIONS.join(", "))
            }
            Problem::NotATable {
                path,
                line,
                section,
            } => write!(
                f,
                "{}:{line}: `{section}` must be a table ([{section}]) with keys: {}",
                path.display(),
                keys_of(section).join(", ")
            ),
            Problem::UnknownKey {
                path,
                line,
                section,
                name,
            } => {
                write!(
                    f,
                    "{}:{line}: unknown key `{name}` in section [{section}]",
                    path.display()
                )?;
                if let Some(k) = KEYS.iter().find(|k| k.name == name && k.section != section) {
                    write!(f, " (it belongs in [{}])", k.section)?;
                }
                write!(
                    f,
                    "; allowed keys in [{section}]: {}",
                    keys_of(section).join(", ")
                )
            }
            Problem::Invalid {
                key,
                value,
                rule,
                origin,
            } => {
                write!(f, "{key} = {value}: {rule} (from {origin})")
            }
            Problem::EnvConflict { key, env, alias } => write!(
                f,
                "{key}: environment variables {env} and {alias} are both set, to different values"
            ),
            Problem::EnvNotUnicode { var } => {
                write!(f, "environment variable {var} is not valid UTF-8")
            }
        }
    }
}

/// Every problem found while loading the configuration (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in discovery order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  - {}", p.to_string().replace('\n', "\n    "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads the effective configuration from the process environment, the config file and `cli`.
pub fn load(cli: &ServeArgs) -> Result<Config, ConfigError> {
    load_with_env(cli, std::env::vars_os())
}

/// [`load`] with an explicit environment (for tests). Only `TICKWIRE_*` entries and
/// [`AGONES_PORT_ENV`] are looked at.
pub fn load_with_env(
    cli: &ServeArgs,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    let mut vars = BTreeMap::new();
    let mut agones_port: Option<OsString> = None;
    for (k, v) in env {
        if k == AGONES_PORT_ENV {
            agones_port = Some(v);
            continue;
        }
        let Some(k) = k
            .to_str()
            .filter(|k| k.starts_with(ENV_PREFIX))
            .map(str::to_owned)
        else {
            continue;
        };
        match v.into_string() {
            Ok(v) => {
                vars.insert(k, v);
            }
            Err(_) => problems.push(Problem::EnvNotUnicode { var: k }),
        }
    }
    for var in vars.keys() {
        let known = var == CONFIG_ENV
            || TEST_HOOK_ENVS.contains(&var.as_str())
            || KEYS
                .iter()
                .any(|k| *var == k.env() || Some(var) == k.env_alias().as_ref());
        if !known {
            warnings.push(format!("ignoring unknown environment variable {var}"));
        }
    }

    // Which file, if any.
    let named = match (&cli.config, vars.get(CONFIG_ENV)) {
        (Some(p), _) => Some((p.clone(), Origin::Flag("--config".to_owned()))),
        (None, Some(p)) if !p.is_empty() => {
            Some((PathBuf::from(p), Origin::Env(CONFIG_ENV.to_owned())))
        }
        _ => None,
    };
    let file_path = match named {
        Some((path, named_by)) => {
            if path.exists() {
                Some(path)
            } else {
                problems.push(Problem::FileNotFound { path, named_by });
                None
            }
        }
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
    };
    let file = file_path
        .as_deref()
        .and_then(|p| read_file(p, &mut problems));

    // Inside an Agones GameServer the sidecar's port is in the environment: that turns the
    // SDK client on unless a flag or a TICKWIRE_ variable says otherwise.
    let agones_sdk = match agones_port.as_deref().map(|v| v.to_str()) {
        None | Some(Some("")) => false,
        Some(Some(v)) => {
            if v.trim().parse::<u16>().map_or(true, |p| p == 0) {
                warnings.push(format!(
                    "{AGONES_PORT_ENV} = {v:?} is not a port number; the Agones SDK client \
                     will use the default port 9358"
                ));
            }
            true
        }
        Some(None) => {
            warnings.push(format!(
                "{AGONES_PORT_ENV} is not valid UTF-8; the Agones SDK client will use the \
                 default port 9358"
            ));
            true
        }
    };

    let mut r = Resolver {
        cli,
        env: &vars,
        file: file.as_ref(),
        agones_sdk,
        problems,
        origins: BTreeMap::new(),
    };
    let d = Config::default();
    let server = ServerConfig {
        bind: r.get("server.bind", d.server.bind, parse_addr),
        public_addr: r.get("server.public_addr", None, |raw| {
            parse_public_addr(raw).map(Some)
        }),
        tick_ms: r.get("server.tick_ms", d.server.tick_ms, |raw| {
            ranged(raw, 1, 1000)
        }),
        max_players: r.get("server.max_players", d.server.max_players, |raw| {
            ranged(raw, 1, 16384)
        }),
        name: r.get("server.name", d.server.name, parse_server_name),
        drain_grace_secs: r.get(
            "server.drain_grace_secs",
            d.server.drain_grace_secs,
            |raw| ranged(raw, 0, 3600),
        ),
        game: r.get("server.game", None, |raw| {
            let s = text(raw, "a game name")?;
            if s.is_empty()
                || s.len() > 32
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                Err("must be a game name: 1..=32 of a-z, 0-9, - and _ (see --list-games)".into())
            } else {
                Ok(Some(s.to_owned()))
            }
        }),
        max_connections: r.get("server.max_connections", d.server.max_connections, |raw| {
            ranged(raw, 0, 100_000)
        }),
        auth_timeout_ms: r.get("server.auth_timeout_ms", d.server.auth_timeout_ms, |raw| {
            ranged(raw, 100, 60_000)
        }),
    };
    let metrics = MetricsConfig {
        bind: r.get("metrics.bind", d.metrics.bind, parse_metrics_bind),
        dev_tokens: r.get("metrics.dev_tokens", d.metrics.dev_tokens, parse_bool),
    };
    // `/token` hands a connect token to whoever asks: only ever on a loopback listener.
    if metrics.dev_tokens && !metrics.bind.is_some_and(|a| a.ip().is_loopback()) {
        if let Some(origin) = r.origins.get("metrics.dev_tokens").cloned() {
            let bind = metrics
                .bind
                .map_or_else(|| "\"off\"".to_owned(), |a| quoted(&a.to_string()));
            r.problems.push(Problem::Invalid {
                key: "metrics.dev_tokens",
                value: "true".to_owned(),
                rule: format!(
                    "refused with metrics.bind = {bind}: dev tokens (/token, development only) \
                     need the HTTP port on a loopback address such as 127.0.0.1:9464"
                ),
                origin,
            });
        }
    }
    let io = IoConfig {
        model: r.get("io.model", d.io.model, |raw| {
            one_of(raw, &IoModel::ALL.map(|m| m.as_str()))
        }),
        max_events: r.get("io.max_events", d.io.max_events, |raw| {
            ranged(raw, 64, 10_000)
        }),
        timeout_ms: r.get("io.timeout_ms", d.io.timeout_ms, |raw| ranged(raw, 0, 1000)),
        fallback: r.get("io.fallback", d.io.fallback, |raw| {
            one_of(raw, &["blocking", "none"])
        }),
        send_queue: r.get("io.send_queue", d.io.send_queue, |raw| {
            ranged(raw, 256, 1_000_000)
        }),
        stream_send_bytes: r.get("io.stream_send_bytes", d.io.stream_send_bytes, |raw| {
            ranged(raw, 4096, 16 * 1024 * 1024)
        }),
    };
    let auth = AuthConfig {
        key_file: r.get("auth.key_file", d.auth.key_file, |raw| {
            text(raw, "a file path")
                .and_then(|s| {
                    if s.is_empty() {
                        Err("must be a non-empty file path".to_owned())
                    } else {
                        Ok(s)
                    }
                })
                .map(PathBuf::from)
        }),
        protocol_id: r.get("auth.protocol_id", d.auth.protocol_id, parse_u64),
    };
    let log = LogConfig {
        level: r.get("log.level", d.log.level, |raw| {
            let s = text(raw, "a level or filter directive")?;
            logging::validate_level(s)
                .map(|()| s.to_owned())
                .map_err(|e| {
                    format!(
                        "must be trace, debug, info, warn, error, off or a filter directive \
                     like \"info,tickwire=debug\" ({e})"
                    )
                })
        }),
        format: r.get("log.format", d.log.format, |raw| {
            one_of(raw, LogFormat::NAMES)
        }),
    };
    let world = WorldConfig {
        seed: r.get("world.seed", d.world.seed, parse_u64),
        obstacles: r.get("world.obstacles", d.world.obstacles, |raw| {
            ranged(raw, 0, 4000).map(Some)
        }),
    };
    let snapshot = SnapshotConfig {
        max_entities: r.get("snapshot.max_entities", d.snapshot.max_entities, |raw| {
            ranged(raw, 1, 64)
        }),
    };

    let query = QueryConfig {
        enabled: r.get("query.enabled", d.query.enabled, parse_bool),
    };
    let agones = AgonesConfig {
        enabled: r.get("agones.enabled", d.agones.enabled, parse_bool),
        health_interval_secs: r.get(
            "agones.health_interval_secs",
            d.agones.health_interval_secs,
            |raw| ranged(raw, 1, 60),
        ),
    };

    let Resolver {
        problems, origins, ..
    } = r;
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Config {
        server,
        metrics,
        io,
        auth,
        log,
        world,
        snapshot,
        query,
        agones,
        game_options: file
            .as_ref()
            .map(|f| f.game_options.clone())
            .unwrap_or_default(),
        file: file.map(|f| f.path),
        origins,
        warnings,
    })
}

/// A parsed config file: full key -> spanned value.
struct FileLayer {
    path: PathBuf,
    src: String,
    values: BTreeMap<String, Spanned<toml::Value>>,
    /// `[game]` keys and values, in key order.
    game_options: Vec<(String, String)>,
}

impl FileLayer {
    fn line(&self, offset: usize) -> usize {
        line_of(&self.src, offset)
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type Top = BTreeMap<Spanned<String>, Spanned<toml::Value>>;
type Nested = BTreeMap<String, BTreeMap<Spanned<String>, Spanned<toml::Value>>>;

fn read_file(path: &Path, problems: &mut Vec<Problem>) -> Option<FileLayer> {
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            problems.push(Problem::FileRead {
                path: path.to_owned(),
                error: e.to_string(),
            });
            return None;
        }
    };
    let top: Top = match toml::from_str(&src) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            });
            return None;
        }
    };
    for (name, value) in &top {
        let line = line_of(&src, name.span().start);
        let name = name.get_ref();
        if !SECTIONS.contains(&name.as_str()) {
            problems.push(Problem::UnknownSection {
                path: path.to_owned(),
                line,
                name: name.clone(),
            });
        } else if !value.get_ref().is_table() {
            problems.push(Problem::NotATable {
                path: path.to_owned(),
                line,
                section: name.clone(),
            });
        }
    }
    // Report those, and go on with the sections that are known tables (so every other
    // problem in the file is reported too): read again with spans on their inner keys.
    let good: Vec<String> = top
        .iter()
        .filter(|(name, value)| {
            SECTIONS.contains(&name.get_ref().as_str()) && value.get_ref().is_table()
        })
        .map(|(name, _)| name.get_ref().clone())
        .collect();
    let nested: Nested = match serde::de::DeserializeSeed::deserialize(
        KnownSections(&good),
        toml::Deserializer::new(&src),
    ) {
        Ok(n) => n,
        Err(e) => {
            problems.push(Problem::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            });
            return None;
        }
    };
    let mut values = BTreeMap::new();
    let mut game_options = Vec::new();
    for (section, table) in nested {
        if section == GAME_SECTION {
            for (name, value) in table {
                let v = match value.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => {
                        value.get_ref().to_string()
                    }
                    _ => {
                        problems.push(Problem::Invalid {
                            key: "game",
                            value: format!("{} = [...]", name.get_ref()),
                            rule: "a game option must be a string, number or boolean".into(),
                            origin: Origin::File {
                                path: path.to_owned(),
                                line: line_of(&src, name.span().start),
                            },
                        });
                        continue;
                    }
                };
                game_options.push((name.into_inner(), v));
            }
            continue;
        }
        let allowed = keys_of(&section);
        for (name, value) in table {
            if allowed.contains(&name.get_ref().as_str()) {
                values.insert(format!("{section}.{}", name.get_ref()), value);
            } else {
                problems.push(Problem::UnknownKey {
                    path: path.to_owned(),
                    line: line_of(&src, name.span().start),
                    section: section.clone(),
                    name: name.into_inner(),
                });
            }
        }
    }
    Some(FileLayer {
        path: path.to_owned(),
        src,
        values,
        game_options,
    })
}

/// Reads the top level of a config file as [`Nested`], keeping only the named sections (known
/// tables) and skipping every other item, which was already reported.
struct KnownSections<'a>(&'a [String]);

impl<'de> serde::de::DeserializeSeed<'de> for KnownSections<'_> {
    type Value = Nested;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Nested, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KnownSections<'_> {
    type Value = Nested;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of sections")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Nested, A::Error> {
        let mut out = Nested::new();
        while let Some(name) = map.next_key::<String>()? {
            if self.0.contains(&name) {
                out.insert(name, map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// A value before parsing: text from a flag or variable, or a TOML value from the file.
#[derive(Clone, Copy, Debug)]
enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

impl Raw<'_> {
    /// The value as shown in messages: numbers bare, strings quoted.
    fn shown(&self) -> String {
        match self {
            Raw::Text(s) if s.parse::<i128>().is_ok() => (*s).to_owned(),
            Raw::Text(s) => format!("{s:?}"),
            Raw::Toml(toml::Value::String(s)) => format!("{s:?}"),
            Raw::Toml(toml::Value::Array(_)) => "[...]".to_owned(),
            Raw::Toml(toml::Value::Table(_)) => "{...}".to_owned(),
            Raw::Toml(v) => v.to_string(),
        }
    }
}

struct Resolver<'a> {
    cli: &'a ServeArgs,
    env: &'a BTreeMap<String, String>,
    file: Option<&'a FileLayer>,
    /// [`AGONES_PORT_ENV`] is set: `agones.enabled` defaults to true above the file.
    agones_sdk: bool,
    problems: Vec<Problem>,
    origins: BTreeMap<&'static str, Origin>,
}

impl Resolver<'_> {
    /// The winning raw value for `key` and where it came from; `None` means the default.
    fn raw(&mut self, info: &KeyInfo) -> Option<(Raw<'_>, Origin)> {
        if let Some(v) = info.flag.and_then(|flag| cli_value(self.cli, flag)) {
            return Some((
                Raw::Text(v),
                Origin::Flag(format!("--{}", info.flag.unwrap_or(""))),
            ));
        }
        let canonical = info.env();
        let alias = info.env_alias();
        let from_env = self.env.get(&canonical).map(|v| (canonical.clone(), v));
        let from_alias = alias
            .as_ref()
            .and_then(|a| self.env.get(a).map(|v| (a.clone(), v)));
        match (from_env, from_alias) {
            (Some((var, v)), other) => {
                if let Some((alias, av)) = other {
                    if av != v {
                        self.problems.push(Problem::EnvConflict {
                            key: info.key,
                            env: var.clone(),
                            alias,
                        });
                    }
                }
                return Some((Raw::Text(v), Origin::Env(var)));
            }
            (None, Some((var, v))) => return Some((Raw::Text(v), Origin::Env(var))),
            (None, None) => {}
        }
        if info.key == "agones.enabled" && self.agones_sdk {
            return Some((Raw::Text("true"), Origin::Env(AGONES_PORT_ENV.to_owned())));
        }
        let file = self.file?;
        let v = file.values.get(info.key)?;
        Some((
            Raw::Toml(v.get_ref()),
            Origin::File {
                path: file.path.clone(),
                line: file.line(v.span().start),
            },
        ))
    }

    fn get<T>(
        &mut self,
        key: &'static str,
        default: T,
        parse: impl Fn(Raw<'_>) -> Result<T, String>,
    ) -> T {
        let info = key_info(key);
        let Some((raw, origin)) = self.raw(info) else {
            return default;
        };
        match parse(raw) {
            Ok(v) => {
                self.origins.insert(key, origin);
                v
            }
            Err(rule) => {
                let value = raw.shown();
                self.problems.push(Problem::Invalid {
                    key,
                    value,
                    rule,
                    origin,
                });
                default
            }
        }
    }
}

fn text<'a>(raw: Raw<'a>, what: &str) -> Result<&'a str, String> {
    match raw {
        Raw::Text(s) => Ok(s),
        Raw::Toml(toml::Value::String(s)) => Ok(s),
        Raw::Toml(_) => Err(format!("must be a string ({what})")),
    }
}

fn ranged<T: TryFrom<i128>>(raw: Raw<'_>, lo: i128, hi: i128) -> Result<T, String> {
    let rule = || format!("must be in {lo}..={hi}");
    let n = match raw {
        Raw::Text(s) => {
            parse_int_text(s).ok_or_else(|| format!("must be an integer in {lo}..={hi}"))?
        }
        Raw::Toml(toml::Value::Integer(i)) => i128::from(*i),
        Raw::Toml(_) => return Err(format!("must be an integer in {lo}..={hi}")),
    };
    if !(lo..=hi).contains(&n) {
        return Err(rule());
    }
    T::try_from(n).map_err(|_| rule())
}

/// Decimal or `0x` hex, `_` separators allowed.
fn parse_int_text(s: &str) -> Option<i128> {
    let s = s.trim().replace('_', "");
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.to_owned()),
        None => (false, s.strip_prefix('+').unwrap_or(&s).to_owned()),
    };
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            i128::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() => {
            digits.parse().ok()?
        }
        None => return None,
    };
    Some(if neg { -n } else { n })
}

fn parse_u64(raw: Raw<'_>) -> Result<u64, String> {
    let n = match raw {
        Raw::Text(s) => parse_int_text(s),
        Raw::Toml(toml::Value::String(s)) => parse_int_text(s),
        Raw::Toml(toml::Value::Integer(i)) => Some(i128::from(*i)),
        Raw::Toml(_) => None,
    };
    n.and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| "must be an unsigned 64-bit integer, decimal or 0x-hex".to_owned())
}

fn parse_bool(raw: Raw<'_>) -> Result<bool, String> {
    let rule = || "must be true or false".to_owned();
    match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
        Raw::Text(s) => match s.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(rule()),
        },
        Raw::Toml(_) => Err(rule()),
    }
}

/// Longest `server.name`, in bytes (A2S_INFO carries it as a C string; keep it short).
pub const MAX_SERVER_NAME_BYTES: usize = 63;

fn parse_server_name(raw: Raw<'_>) -> Result<String, String> {
    let rule = || {
        format!("must be a string of 1..={MAX_SERVER_NAME_BYTES} bytes without control characters")
    };
    let s = text(raw, "").map_err(|_| rule())?;
    if s.is_empty() || s.len() > MAX_SERVER_NAME_BYTES || s.chars().any(char::is_control) {
        return Err(rule());
    }
    Ok(s.to_owned())
}

fn parse_addr(raw: Raw<'_>) -> Result<SocketAddr, String> {
    let rule = "must be an IP:port socket address, e.g. \"0.0.0.0:7777\" or \"[::]:7777\"";
    let s = text(raw, rule)?;
    s.trim().parse().map_err(|_| rule.to_owned())
}

fn parse_public_addr(raw: Raw<'_>) -> Result<SocketAddr, String> {
    let addr = parse_addr(raw)?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(
            "must be an address clients can reach: a specific IP and a non-zero port \
                    (leave unset to derive it from server.bind)"
                .to_owned(),
        );
    }
    Ok(addr)
}

fn parse_metrics_bind(raw: Raw<'_>) -> Result<Option<SocketAddr>, String> {
    let rule = "must be an IP:port socket address (e.g. \"127.0.0.1:9464\") or \"off\"";
    let s = text(raw, rule)?;
    if s.trim() == "off" {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(|_| rule.to_owned())
}

fn one_of<T: FromStr>(raw: Raw<'_>, names: &[&str]) -> Result<T, String> {
    let rule = || format!("must be one of {}", names.join(", "));
    let s = text(raw, "").map_err(|_| rule())?;
    if !names.contains(&s) {
        return Err(rule());
    }
    s.parse().map_err(|_| rule())
}

fn quoted(s: &str) -> String {
    // TOML basic strings share JSON's escapes for the characters we can meet here.
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Config {
    /// The effective configuration as TOML (loads back to the same `Config`). Values set by a
    /// flag or an environment variable carry a `# from ...` comment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Annotate values that override the file: flags and environment variables.
        let origin = |key: &str| match self.origins.get(key) {
            Some(o @ (Origin::Env(_) | Origin::Flag(_))) => format!("  # from {o}"),
            _ => String::new(),
        };
        let line = |f: &mut fmt::Formatter<'_>, key: &'static str, value: String| {
            let name = key_info(key).name;
            writeln!(f, "{name} = {value}{}", origin(key))
        };
        let s = &self.server;
        writeln!(f, "[server]")?;
        line(f, "server.bind", quoted(&s.bind.to_string()))?;
        match s.public_addr {
            Some(a) => line(f, "server.public_addr", quoted(&a.to_string()))?,
            None => writeln!(
                f,
                "# public_addr unset: clients are told {}",
                quoted(&s.public_addr().to_string())
            )?,
        }
        line(f, "server.tick_ms", s.tick_ms.to_string())?;
        line(f, "server.max_players", s.max_players.to_string())?;
        line(f, "server.name", quoted(&s.name))?;
        line(f, "server.drain_grace_secs", s.drain_grace_secs.to_string())?;
        line(f, "server.max_connections", s.max_connections.to_string())?;
        line(f, "server.auth_timeout_ms", s.auth_timeout_ms.to_string())?;
        match &s.game {
            Some(g) => line(f, "server.game", quoted(g))?,
            None => writeln!(f, "# game: not set (the binary's first game; --list-games)")?,
        }

        writeln!(f, "\n[metrics]")?;
        let mb = self
            .metrics
            .bind
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        line(f, "metrics.bind", quoted(&mb))?;
        line(f, "metrics.dev_tokens", self.metrics.dev_tokens.to_string())?;

        let io = &self.io;
        writeln!(f, "\n[io]")?;
        line(f, "io.model", quoted(io.model.as_str()))?;
        line(f, "io.max_events", io.max_events.to_string())?;
        line(f, "io.timeout_ms", io.timeout_ms.to_string())?;
        line(f, "io.fallback", quoted(io.fallback.as_str()))?;
        line(f, "io.send_queue", io.send_queue.to_string())?;
        line(f, "io.stream_send_bytes", io.stream_send_bytes.to_string())?;

        writeln!(f, "\n[auth]")?;
        line(
            f,
            "auth.key_file",
            quoted(&self.auth.key_file.to_string_lossy()),
        )?;
        line(f, "auth.protocol_id", u64_toml(self.auth.protocol_id, true))?;

        writeln!(f, "\n[log]")?;
        line(f, "log.level", quoted(&self.log.level))?;
        line(f, "log.format", quoted(&self.log.format.to_string()))?;

        writeln!(f, "\n[world]")?;
        line(f, "world.seed", u64_toml(self.world.seed, false))?;
        match self.world.obstacles {
            Some(o) => line(f, "world.obstacles", o.to_string())?,
            None => writeln!(f, "# obstacles: not set (deprecated; use [game] obstacles)")?,
        }

        writeln!(f, "\n[snapshot]")?;
        line(
            f,
            "snapshot.max_entities",
            self.snapshot.max_entities.to_string(),
        )?;

        writeln!(f, "\n[query]")?;
        line(f, "query.enabled", self.query.enabled.to_string())?;

        writeln!(f, "\n[agones]")?;
        line(f, "agones.enabled", self.agones.enabled.to_string())?;
        line(
            f,
            "agones.health_interval_secs",
            self.agones.health_interval_secs.to_string(),
        )
    }
}

/// A u64 as TOML: an integer when it fits in i64, else a quoted string (which the loader accepts).
fn u64_toml(v: u64, hex: bool) -> String {
    match (i64::try_from(v).is_ok(), hex) {
        (true, true) => format!("0x{v:016x}"),
        (true, false) => v.to_string(),
        (false, true) => format!("\"0x{v:016x}\""),
        (false, false) => format!("\"{v}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tickwire-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn with_file(name: &str, contents: &str) -> ServeArgs {
        ServeArgs {
            config: Some(temp_file(name, contents)),
            ..ServeArgs::default()
        }
    }

    fn problems(r: Result<Config, ConfigError>) -> Vec<String> {
        r.unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_without_file() {
        let cfg = load_with_env(&ServeArgs::default(), env(&[])).unwrap();
        let d = Config::default();
        assert_eq!(cfg.server, d.server);
        assert_eq!(cfg.io, d.io);
        assert_eq!(cfg.auth.protocol_id, 0x7469_636b_7769_7265);
        assert_eq!(cfg.server.public_addr(), "127.0.0.1:7777".parse().unwrap());
        assert!(cfg.origins.is_empty());
    }

    #[test]
    fn protocol_id_is_tickwire_ascii() {
        assert_eq!(DEFAULT_PROTOCOL_ID.to_be_bytes(), *b"tickwire");
    }

    #[test]
    fn precedence_cli_over_env_over_file() {
        let mut args = with_file(
            "prec.toml",
            "[io]\nmax_events = 100\ntimeout_ms = 5\nsend_queue = 300\n",
        );
        let e = env(&[
            ("TICKWIRE_IO_MAX_EVENTS", "200"),
            ("TICKWIRE_IO_TIMEOUT_MS", "6"),
        ]);
        args.max_events = Some("300".to_owned());
        let cfg = load_with_env(&args, e).unwrap();
        assert_eq!(cfg.io.max_events, 300); // flag
        assert_eq!(cfg.io.timeout_ms, 6); // env
        assert_eq!(cfg.io.send_queue, 300); // file
        assert_eq!(cfg.io.model, IoModel::Auto); // default
        assert_eq!(
            cfg.origins["io.max_events"],
            Origin::Flag("--max-events".into())
        );
        assert_eq!(
            cfg.origins["io.timeout_ms"],
            Origin::Env("TICKWIRE_IO_TIMEOUT_MS".into())
        );
        assert!(matches!(
            cfg.origins["io.send_queue"],
            Origin::File { line: 4, .. }
        ));
    }

    #[test]
    fn env_aliases_and_conflicts() {
        let cfg = load_with_env(
            &ServeArgs::default(),
            env(&[
                ("TICKWIRE_MAX_EVENTS", "99"),
                ("TICKWIRE_BIND", "127.0.0.1:1"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.io.max_events, 99);
        assert_eq!(cfg.server.bind, "127.0.0.1:1".parse().unwrap());

        let p = problems(load_with_env(
            &ServeArgs::default(),
            env(&[
                ("TICKWIRE_MAX_EVENTS", "99"),
                ("TICKWIRE_IO_MAX_EVENTS", "100"),
            ]),
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("TICKWIRE_IO_MAX_EVENTS") && p[0].contains("TICKWIRE_MAX_EVENTS"));

        let cfg = load_with_env(&ServeArgs::default(), env(&[("TICKWIRE_NOPE", "1")])).unwrap();
        assert_eq!(cfg.warnings.len(), 1);
        assert!(cfg.warnings[0].contains("TICKWIRE_NOPE"));
    }

    #[test]
    fn alias_table() {
        let k = key_info("io.max_events");
        assert_eq!(k.env(), "TICKWIRE_IO_MAX_EVENTS");
        assert_eq!(k.env_alias().as_deref(), Some("TICKWIRE_MAX_EVENTS"));
        assert_eq!(key_info("io.model").env_alias(), None); // --io-model == TICKWIRE_IO_MODEL
        assert_eq!(
            key_info("world.seed").env_alias().as_deref(),
            Some("TICKWIRE_SEED")
        );
        for k in KEYS {
            assert!(SECTIONS.contains(&k.section));
            assert_eq!(k.key, format!("{}.{}", k.section, k.name));
            if let Some(flag) = k.flag {
                let args = ServeArgs::default();
                assert!(cli_value(&args, flag).is_none());
            }
        }
    }

    #[test]
    fn all_errors_are_collected() {
        let mut args = with_file(
            "many.toml",
            "[io]\nmax_events = 5\nmodel = \"kqueue2\"\n[server]\ntick_ms = 0\n",
        );
        args.timeout_ms = Some("1001".to_owned());
        let p = problems(load_with_env(&args, env(&[("TICKWIRE_SEED", "-1")])));
        assert_eq!(p.len(), 5, "{p:#?}");
        let all = p.join("\n");
        assert!(
            all.contains("io.max_events = 5: must be in 64..=10000 (from "),
            "{all}"
        );
        assert!(all.contains("many.toml:2)"), "{all}");
        assert!(
            all.contains(
                "io.model = \"kqueue2\": must be one of auto, epoll, io_uring, kqueue, iocp, \
                 select, blocking"
            ),
            "{all}"
        );
        assert!(
            all.contains("server.tick_ms = 0: must be in 1..=1000"),
            "{all}"
        );
        assert!(all.contains("io.timeout_ms = 1001: must be in 0..=1000 (from --timeout-ms)"));
        assert!(
            all.contains("world.seed = -1: must be an unsigned 64-bit"),
            "{all}"
        );
    }

    #[test]
    fn unknown_keys_and_sections() {
        let p = problems(load_with_env(
            &with_file(
                "unknown.toml",
                "[io]\nmax_event = 100\nbogus = 1\n[server]\nmax_events = 3\n[nope]\nx = 1\n",
            ),
            env(&[]),
        ));
        let all = p.join("\n");
        // The unknown section does not hide the other problems: all four are reported.
        assert_eq!(p.len(), 4, "{all}");
        assert!(
            all.contains(":6: unknown section [nope]; allowed sections: server"),
            "{all}"
        );
        assert!(
            all.contains(":2: unknown key `max_event` in section [io]"),
            "{all}"
        );
        assert!(
            all.contains(":3: unknown key `bogus` in section [io]"),
            "{all}"
        );
        assert!(
            all.contains(":5: unknown key `max_events` in section [server]"),
            "{all}"
        );

        // Nor a section that is not a table, nor invalid values in the known sections.
        let p = problems(load_with_env(
            &with_file(
                "unknown3.toml",
                "log = 3\n[io]\nmax_events = 5\n[nope]\nx = 1\n[server]\ntick_ms = 0\n",
            ),
            env(&[]),
        ));
        let all = p.join("\n");
        assert_eq!(p.len(), 4, "{all}");
        assert!(all.contains(":1: `log` must be a table"), "{all}");
        assert!(all.contains("unknown section [nope]"), "{all}");
        assert!(
            all.contains("io.max_events = 5: must be in 64..=10000"),
            "{all}"
        );
        assert!(
            all.contains("server.tick_ms = 0: must be in 1..=1000"),
            "{all}"
        );

        let p = problems(load_with_env(
            &with_file(
                "unknown2.toml",
                "[io]\nmax_event = 100\nbogus = 1\n[server]\nmax_events = 3\n",
            ),
            env(&[]),
        ));
        let all = p.join("\n");
        assert_eq!(p.len(), 3, "{all}");
        assert!(
            all.contains(
                ":2: unknown key `max_event` in section [io]; allowed keys in [io]: \
                              model, max_events, timeout_ms, fallback, send_queue"
            ),
            "{all}"
        );
        assert!(
            all.contains(":3: unknown key `bogus` in section [io]"),
            "{all}"
        );
        assert!(
            all.contains(":5: unknown key `max_events` in section [server] (it belongs in [io])")
        );

        let p = problems(load_with_env(
            &with_file("top.toml", "max_events = 3\n"),
            env(&[]),
        ));
        assert!(
            p[0].contains("did you mean `max_events` under [io]?"),
            "{p:?}"
        );
        let p = problems(load_with_env(
            &with_file("nt.toml", "\n\nio = 3\n"),
            env(&[]),
        ));
        assert!(p[0].contains(":3: `io` must be a table"), "{p:?}");
    }

    #[test]
    fn broken_toml_names_line() {
        let p = problems(load_with_env(
            &with_file("broken.toml", "[io]\nmax_events = 100\ntimeout_ms = = 3\n"),
            env(&[]),
        ));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("broken.toml: invalid TOML") && p[0].contains("line 3"),
            "{p:?}"
        );
    }

    #[test]
    fn named_file_must_exist() {
        let args = ServeArgs {
            config: Some(PathBuf::from("/definitely/not/here.toml")),
            ..ServeArgs::default()
        };
        let p = problems(load_with_env(&args, env(&[])));
        assert!(p[0].contains("/definitely/not/here.toml (named by --config) does not exist"));
        let p = problems(load_with_env(
            &ServeArgs::default(),
            env(&[("TICKWIRE_CONFIG", "/definitely/not/there.toml")]),
        ));
        assert!(p[0].contains("named by env TICKWIRE_CONFIG"), "{p:?}");
    }

    #[test]
    fn value_forms() {
        let args = with_file(
            "forms.toml",
            "[auth]\nprotocol_id = 0x10\n[world]\nseed = \"18446744073709551615\"\n\
             [metrics]\nbind = \"off\"\n[server]\npublic_addr = \"10.1.2.3:7777\"\n\
             bind = \"[::]:0\"\n",
        );
        let cfg = load_with_env(&args, env(&[])).unwrap();
        assert_eq!(cfg.auth.protocol_id, 16);
        assert_eq!(cfg.world.seed, u64::MAX);
        assert_eq!(cfg.metrics.bind, None);
        assert_eq!(cfg.server.public_addr(), "10.1.2.3:7777".parse().unwrap());

        let cfg = load_with_env(
            &ServeArgs {
                protocol_id: Some("0xFFFFFFFFFFFFFFFF".into()),
                ..Default::default()
            },
            env(&[("TICKWIRE_SERVER_BIND", "[::]:0")]),
        )
        .unwrap();
        assert_eq!(cfg.auth.protocol_id, u64::MAX);
        assert_eq!(cfg.server.public_addr, None);
        let bound: SocketAddr = "[::]:4321".parse().unwrap();
        assert_eq!(
            cfg.server.advertised_addr(bound),
            "[::1]:4321".parse().unwrap()
        );

        let p = problems(load_with_env(
            &with_file(
                "types.toml",
                "[io]\nmax_events = \"100\"\nmodel = 3\n[server]\nbind = \"localhost:1\"\n\
                 public_addr = \"0.0.0.0:7777\"\n[auth]\nkey_file = \"\"\n\
                 [log]\nlevel = \"loud\"\n",
            ),
            env(&[]),
        ));
        assert_eq!(p.len(), 6, "{p:#?}");
    }

    #[test]
    fn display_round_trips() {
        let mut args = with_file(
            "rt.toml",
            "[io]\nmodel = \"epoll\"\nmax_events = 4096\n\
             [auth]\nprotocol_id = \"0xffffffffffffffff\"\n\
             key_file = \"dir/with \\\"quote\\\".key\"\n[log]\nlevel = \"info,tickwire=debug\"\n\
             format = \"json\"\n",
        );
        args.seed = Some("18446744073709551615".into());
        args.metrics_bind = Some("off".into());
        args.public_addr = Some("192.0.2.1:9000".into());
        let cfg = load_with_env(&args, env(&[])).unwrap();
        let text = cfg.to_string();
        let again = load_with_env(&with_file("rt-again.toml", &text), env(&[])).unwrap();
        assert_eq!(
            (
                &again.server,
                &again.metrics,
                &again.io,
                &again.auth,
                &again.log,
                &again.world
            ),
            (
                &cfg.server,
                &cfg.metrics,
                &cfg.io,
                &cfg.auth,
                &cfg.log,
                &cfg.world
            ),
            "{text}"
        );
        assert!(
            text.contains("seed = \"18446744073709551615\"  # from --seed\n"),
            "{text}"
        );
        assert!(text.contains("max_events = 4096\n"), "{text}");

        let d = Config::default().to_string();
        let again = load_with_env(&with_file("rt-default.toml", &d), env(&[])).unwrap();
        assert_eq!(again.server, Config::default().server);
        assert_eq!(again.snapshot, Config::default().snapshot);
    }

    #[test]
    fn dev_tokens_only_on_a_loopback_metrics_bind() {
        let cfg = load_with_env(&ServeArgs::default(), env(&[])).unwrap();
        assert!(!cfg.metrics.dev_tokens, "off by default");

        // The flag, the environment (both spellings) and the file turn it on.
        let flag = ServeArgs {
            dev_tokens: true,
            ..ServeArgs::default()
        };
        let cfg = load_with_env(&flag, env(&[])).unwrap();
        assert!(cfg.metrics.dev_tokens);
        assert_eq!(
            cfg.origins["metrics.dev_tokens"],
            Origin::Flag("--dev-tokens".into())
        );
        for var in ["TICKWIRE_METRICS_DEV_TOKENS", "TICKWIRE_DEV_TOKENS"] {
            let cfg = load_with_env(&ServeArgs::default(), env(&[(var, "true")])).unwrap();
            assert!(cfg.metrics.dev_tokens, "{var}");
        }
        let file = with_file(
            "dev-tokens-v6.toml",
            "[metrics]\nbind = \"[::1]:0\"\ndev_tokens = true\n",
        );
        let cfg = load_with_env(&file, env(&[])).unwrap();
        assert!(cfg.metrics.dev_tokens);
        // It round-trips through Display.
        let again = load_with_env(&with_file("dev-tokens-rt.toml", &cfg.to_string()), env(&[]));
        assert_eq!(again.unwrap().metrics, cfg.metrics);

        // Refused on any other bind, naming the key, the bind and where the setting came from.
        let mut wide = flag.clone();
        wide.metrics_bind = Some("0.0.0.0:9464".into());
        assert_eq!(
            problems(load_with_env(&wide, env(&[]))),
            [
                "metrics.dev_tokens = true: refused with metrics.bind = \"0.0.0.0:9464\": dev \
              tokens (/token, development only) need the HTTP port on a loopback address such \
              as 127.0.0.1:9464 (from --dev-tokens)"
            ]
        );
        let off = ServeArgs {
            metrics_bind: Some("off".into()),
            ..ServeArgs::default()
        };
        let p = problems(load_with_env(&off, env(&[("TICKWIRE_DEV_TOKENS", "true")])));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("metrics.dev_tokens = true: refused with metrics.bind = \"off\""),
            "{p:?}"
        );
        assert!(p[0].ends_with("(from env TICKWIRE_DEV_TOKENS)"), "{p:?}");
        let remote = with_file(
            "dev-tokens-remote.toml",
            "[metrics]\nbind = \"10.0.0.5:9464\"\ndev_tokens = true\n",
        );
        let p = problems(load_with_env(&remote, env(&[])));
        assert!(p[0].contains("metrics.bind = \"10.0.0.5:9464\""), "{p:?}");
        assert!(p[0].contains("dev-tokens-remote.toml:3"), "{p:?}");
        // Off, any bind is fine.
        let cfg = load_with_env(
            &ServeArgs {
                metrics_bind: Some("0.0.0.0:9464".into()),
                ..ServeArgs::default()
            },
            env(&[("TICKWIRE_DEV_TOKENS", "false")]),
        );
        assert!(!cfg.unwrap().metrics.dev_tokens);
    }

    #[test]
    fn drain_name_query_agones_keys() {
        let cfg = load_with_env(&ServeArgs::default(), env(&[])).unwrap();
        assert_eq!(cfg.server.name, "Tickwire");
        assert_eq!(cfg.server.drain_grace(), Duration::ZERO);
        assert!(cfg.query.enabled);
        assert!(!cfg.agones.enabled);
        assert_eq!(cfg.agones.health_interval(), Duration::from_secs(2));

        let mut args = with_file(
            "new-keys.toml",
            "[server]\nname = \"EU \\\"One\\\"\"\ndrain_grace_secs = 30\n\
             [query]\nenabled = false\n[agones]\nenabled = true\nhealth_interval_secs = 5\n",
        );
        let cfg = load_with_env(&args, env(&[])).unwrap();
        assert_eq!(cfg.server.name, "EU \"One\"");
        assert_eq!(cfg.server.drain_grace(), Duration::from_secs(30));
        assert!(!cfg.query.enabled);
        assert!(cfg.agones.enabled);
        assert_eq!(cfg.agones.health_interval_secs, 5);
        // Round trip through Display.
        let again = load_with_env(&with_file("new-keys-rt.toml", &cfg.to_string()), env(&[]));
        let again = again.unwrap();
        assert_eq!(
            (&again.server, &again.query, &again.agones),
            (&cfg.server, &cfg.query, &cfg.agones)
        );

        args.drain_grace_secs = Some("3601".into());
        args.name = Some(String::new());
        let p = problems(load_with_env(
            &args,
            env(&[
                ("TICKWIRE_QUERY_ENABLED", "yes"),
                ("TICKWIRE_AGONES_HEALTH_INTERVAL_SECS", "0"),
            ]),
        ));
        let all = p.join("\n");
        assert_eq!(p.len(), 4, "{all}");
        assert!(
            all.contains(
                "server.drain_grace_secs = 3601: must be in 0..=3600 (from --drain-grace-secs)"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "server.name = \"\": must be a string of 1..=63 bytes without control \
                 characters (from --name)"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "query.enabled = \"yes\": must be true or false (from env TICKWIRE_QUERY_ENABLED)"
            ),
            "{all}"
        );
        assert!(
            all.contains("agones.health_interval_secs = 0: must be in 1..=60"),
            "{all}"
        );

        for bad in ["x".repeat(64), "tab\there".to_owned()] {
            let args = ServeArgs {
                name: Some(bad.clone()),
                ..ServeArgs::default()
            };
            let p = problems(load_with_env(&args, env(&[])));
            assert!(p[0].starts_with("server.name = "), "{bad:?}: {p:?}");
        }
        let ok = ServeArgs {
            name: Some("é".repeat(31)), // 62 bytes
            ..ServeArgs::default()
        };
        assert!(load_with_env(&ok, env(&[])).is_ok());
        let p = problems(load_with_env(
            &with_file("bool.toml", "[agones]\nenabled = \"true\"\n"),
            env(&[]),
        ));
        assert!(
            p[0].contains("agones.enabled = \"true\": must be true or false"),
            "{p:?}"
        );
    }

    #[test]
    fn agones_turns_on_from_the_sidecar_port() {
        let file = with_file("agones-off.toml", "[agones]\nenabled = false\n");
        // The sidecar's variable beats the file ...
        let cfg = load_with_env(&file, env(&[("AGONES_SDK_HTTP_PORT", "9358")])).unwrap();
        assert!(cfg.agones.enabled);
        assert_eq!(
            cfg.origins["agones.enabled"],
            Origin::Env("AGONES_SDK_HTTP_PORT".into())
        );
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert!(
            cfg.to_string()
                .contains("enabled = true  # from env AGONES_SDK_HTTP_PORT\n"),
            "{cfg}"
        );
        // ... a TICKWIRE_ variable beats it ...
        let cfg = load_with_env(
            &file,
            env(&[
                ("AGONES_SDK_HTTP_PORT", "9358"),
                ("TICKWIRE_AGONES_ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert!(!cfg.agones.enabled);
        // ... an empty one does not count, a bad one warns.
        let cfg = load_with_env(&file, env(&[("AGONES_SDK_HTTP_PORT", "")])).unwrap();
        assert!(!cfg.agones.enabled);
        let cfg = load_with_env(&file, env(&[("AGONES_SDK_HTTP_PORT", "http")])).unwrap();
        assert!(cfg.agones.enabled);
        assert!(
            cfg.warnings[0].contains("AGONES_SDK_HTTP_PORT"),
            "{:?}",
            cfg.warnings
        );

        // The --agones switch, and its short env alias.
        let args = ServeArgs {
            agones: true,
            ..ServeArgs::default()
        };
        let cfg = load_with_env(&args, env(&[("TICKWIRE_AGONES_ENABLED", "false")])).unwrap();
        assert!(cfg.agones.enabled);
        assert_eq!(
            cfg.origins["agones.enabled"],
            Origin::Flag("--agones".into())
        );
        let cfg = load_with_env(&ServeArgs::default(), env(&[("TICKWIRE_AGONES", "true")]));
        assert!(cfg.unwrap().agones.enabled);
    }

    #[test]
    fn int_text_forms() {
        assert_eq!(parse_int_text("1_024"), Some(1024));
        assert_eq!(parse_int_text(" 0x10 "), Some(16));
        assert_eq!(parse_int_text("-3"), Some(-3));
        for bad in ["", "0x", "1e3", "12a", "--1", "0x-1"] {
            assert_eq!(parse_int_text(bad), None, "{bad}");
        }
    }
}
