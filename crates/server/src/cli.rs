//! Command-line interface (clap derive): `tickwire serve`, `tickwire token`,
//! `tickwire check-config`.
//!
//! Flags that override config keys are taken as strings on purpose: parsing and range checks
//! happen in [`crate::config`], so a bad value is reported with its config key, its allowed
//! range and where it came from, together with every other problem, instead of clap stopping at
//! the first one. Token-only flags (`--client-id`, `--server`, ...) are typed and checked by clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "tickwire",
    version,
    about = "Tickwire: a tick-based UDP game server"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Mint a netcode 1.02 connect token for a client.
    Token(TokenArgs),
    /// Validate the configuration, print the effective config, exit non-zero on any error.
    CheckConfig(ServeArgs),
    /// Re-run a recording (`serve --record FILE`) through the same game code, without sockets,
    /// checking the state hash after every tick; exit 0 only if every hash matches.
    Replay(ReplayArgs),
    /// Check a running server over loopback (for container HEALTHCHECKs in images without
    /// curl): GET /healthz on the admin endpoint, exit 0 when healthy, 1 otherwise.
    Healthcheck(HealthcheckArgs),
}

/// Options of `replay`.
#[derive(Clone, Debug, Args)]
pub struct ReplayArgs {
    /// The recording.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Options of `healthcheck`.
#[derive(Clone, Debug, Args)]
pub struct HealthcheckArgs {
    /// Admin (metrics) endpoint of the server to check.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub addr: SocketAddr,
    /// Path to request: /healthz (the tick loop advances) or /readyz (accepting players).
    #[arg(long, value_name = "PATH", default_value = "/healthz")]
    pub path: String,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub timeout_secs: u64,
}

/// Options of `serve` (and `check-config`): every flag overrides one config key.
///
/// All values are kept as the user typed them; [`crate::config::load`] validates them.
/// Environment variables are read by the config loader, not by clap (see `config` docs).
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Default: config/server.toml when present. A path named here must exist.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// UDP game address [server.bind, default 0.0.0.0:7777].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Address put in connect tokens [server.public_addr, default: bind with 0.0.0.0 -> 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    pub public_addr: Option<String>,
    /// Prometheus /metrics address, or "off" [metrics.bind, default 127.0.0.1:9464]. Also serves
    /// the browser client at /play.
    #[arg(long, value_name = "ADDR|off")]
    pub metrics_bind: Option<String>,
    /// Development only: mint connect tokens at /token on the metrics port for loopback
    /// requests, so /play can connect [metrics.dev_tokens, default off; refused unless
    /// metrics.bind is a loopback address].
    #[arg(long, action = ArgAction::SetTrue)]
    pub dev_tokens: bool,
    /// I/O model: auto, epoll, io_uring, kqueue, iocp, select, blocking [io.model, default auto].
    #[arg(long, value_name = "M")]
    pub io_model: Option<String>,
    /// Most events taken from one poll, 64..=10000 [io.max_events, default 1024].
    #[arg(long, value_name = "N")]
    pub max_events: Option<String>,
    /// Longest single I/O wait in ms, 0..=1000 [io.timeout_ms, default 16].
    #[arg(long, value_name = "N")]
    pub timeout_ms: Option<String>,
    /// Fallback when the chosen model fails to start: blocking or none [io.fallback].
    #[arg(long, value_name = "F")]
    pub io_fallback: Option<String>,
    /// Fixed simulation step in ms, 1..=1000 [server.tick_ms, default 16].
    #[arg(long, value_name = "N")]
    pub tick_ms: Option<String>,
    /// Most connected clients, 1..=16384 [server.max_players, default 2048].
    #[arg(long, value_name = "N")]
    pub max_players: Option<String>,
    /// Most TCP/WebSocket connections, 0..=100000; 0 turns stream transports off
    /// [server.max_connections, default 4096].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// 32-byte connect-token key, created (0600) when missing [auth.key_file].
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<String>,
    /// netcode protocol id, decimal or 0x-hex [auth.protocol_id, default 0x7469636b77697265].
    #[arg(long, value_name = "ID")]
    pub protocol_id: Option<String>,
    /// Log level or filter directive [log.level, default info]; RUST_LOG overrides it.
    #[arg(long, value_name = "L")]
    pub log_level: Option<String>,
    /// Log format: text or json [log.format, default text].
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,
    /// World generation seed, decimal or 0x-hex [world.seed, default 1].
    #[arg(long, value_name = "N")]
    pub seed: Option<String>,
    /// Server name for A2S queries and logs, 1..=63 bytes [server.name, default Tickwire].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// On the first SIGTERM/SIGINT, deny new players and wait up to this many seconds for
    /// connected ones to leave, 0..=3600 (0: stop at once) [server.drain_grace_secs, default 0].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub drain_grace_secs: Option<String>,
    /// The game to serve [server.game, default: the binary's first game; see --list-games].
    #[arg(long, value_name = "NAME")]
    pub game: Option<String>,
    /// Print the names of the games this binary serves, one a line, and exit.
    #[arg(long, action = ArgAction::SetTrue)]
    pub list_games: bool,
    /// Record every call that changes the game (joins, leaves, inputs, messages) and the state
    /// hash after every tick into FILE, for `tickwire replay FILE`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Talk to the Agones SDK sidecar: Ready, Health pings, the players Counter, Shutdown
    /// [agones.enabled; also on when AGONES_SDK_HTTP_PORT is set].
    #[arg(long, action = ArgAction::SetTrue)]
    pub agones: bool,
}

/// Options of `token`.
#[derive(Clone, Debug, Args)]
pub struct TokenArgs {
    /// The client id put in the token (unique per client).
    #[arg(long, value_name = "N")]
    pub client_id: u64,
    /// Server private key file [auth.key_file]; must already exist for `token`.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<String>,
    /// Server address listed in the token (repeatable, at most 32).
    /// Default: server.public_addr from the config.
    #[arg(long = "server", value_name = "ADDR")]
    pub servers: Vec<SocketAddr>,
    /// Seconds until the token expires.
    #[arg(long, value_name = "S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub expire_secs: u64,
    /// Seconds of silence before the connection times out (negative: never).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub timeout_secs: i32,
    /// netcode protocol id, decimal or 0x-hex [auth.protocol_id].
    #[arg(long, value_name = "ID")]
    pub protocol_id: Option<String>,
    /// Config file to read auth.* and server.public_addr from (same rules as serve).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Write the raw 2048-byte token here instead of base64 on standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Most server addresses a netcode 1.02 connect token can list.
pub const MAX_TOKEN_SERVERS: usize = 32;

impl TokenArgs {
    /// The config overrides this command implies (config path, key file, protocol id), for
    /// [`crate::config::load`].
    pub fn config_overrides(&self) -> ServeArgs {
        ServeArgs {
            config: self.config.clone(),
            key_file: self.key_file.clone(),
            protocol_id: self.protocol_id.clone(),
            ..ServeArgs::default()
        }
    }

    /// The addresses to list in the token: `--server` values, or `default` (normally
    /// `cfg.server.public_addr()`) when none were given. Errors when more than 32 were given.
    pub fn server_addrs(&self, default: SocketAddr) -> Result<Vec<SocketAddr>, String> {
        if self.servers.is_empty() {
            return Ok(vec![default]);
        }
        if self.servers.len() > MAX_TOKEN_SERVERS {
            return Err(format!(
                "--server given {} times: a connect token lists at most {MAX_TOKEN_SERVERS}",
                self.servers.len()
            ));
        }
        Ok(self.servers.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_are_kept_as_strings() {
        let cli = Cli::try_parse_from([
            "tickwire",
            "serve",
            "--max-events",
            "5",
            "--io-model",
            "kqueue2",
            "--protocol-id",
            "0x10",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(a.max_events.as_deref(), Some("5"));
        assert_eq!(a.io_model.as_deref(), Some("kqueue2"));
        assert_eq!(a.protocol_id.as_deref(), Some("0x10"));
        assert!(!a.agones);
        assert_eq!(a.drain_grace_secs, None);
    }

    #[test]
    fn agones_is_a_switch_and_drain_grace_a_string() {
        let cli = Cli::try_parse_from([
            "tickwire",
            "serve",
            "--agones",
            "--drain-grace-secs",
            "9999",
            "--name",
            "EU #1",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert!(a.agones);
        assert_eq!(a.drain_grace_secs.as_deref(), Some("9999"));
        assert_eq!(a.name.as_deref(), Some("EU #1"));
        // A switch takes no value.
        assert!(Cli::try_parse_from(["tickwire", "serve", "--agones", "false"]).is_err());
    }

    #[test]
    fn token_defaults_and_servers() {
        let cli = Cli::try_parse_from(["tickwire", "token", "--client-id", "7"]).unwrap();
        let Command::Token(t) = cli.command else {
            panic!("not token")
        };
        assert_eq!((t.client_id, t.expire_secs, t.timeout_secs), (7, 30, 10));
        let d: SocketAddr = "127.0.0.1:7777".parse().unwrap();
        assert_eq!(t.server_addrs(d).unwrap(), vec![d]);

        let cli = Cli::try_parse_from([
            "tickwire",
            "token",
            "--client-id",
            "1",
            "--server",
            "10.0.0.1:1",
            "--server",
            "[::1]:2",
            "--timeout-secs",
            "-1",
        ])
        .unwrap();
        let Command::Token(t) = cli.command else {
            panic!("not token")
        };
        assert_eq!(t.server_addrs(d).unwrap().len(), 2);
        assert_eq!(t.timeout_secs, -1);
        assert!(Cli::try_parse_from(["tickwire", "token"]).is_err());
        assert!(Cli::try_parse_from(["tickwire", "token", "--client-id", "x"]).is_err());
    }
}
