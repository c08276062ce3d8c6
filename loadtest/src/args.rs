//! The command line (clap derive) and the small value parsers behind it.
//!
//! Every argument is validated here, before any socket is opened: a bad address, URL, ratio
//! or io model is a usage error (exit status 2) that names the flag.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// The bots' default I/O model (see `Args::io_model`).
#[cfg(target_os = "linux")]
pub const DEFAULT_IO_MODEL: &str = "epoll";
/// The bots' default I/O model (see `Args::io_model`).
#[cfg(not(target_os = "linux"))]
pub const DEFAULT_IO_MODEL: &str = "auto";

use clap::Parser;

use crate::scrape::MetricsUrl;

/// The default netcode protocol id: ASCII "tickwire" as a big-endian u64 (0x7469636b77697265,
/// the server's default `auth.protocol_id`).
pub const DEFAULT_PROTOCOL_ID: &str = "0x7469636b77697265";

/// A swarm of headless bots speaking the real Tickwire protocol, with a report at the end.
///
/// Exit status: 0 when every bot connected and the delivery ratio met --min-delivery, 1 when
/// either check failed (the summary says which), 2 on a usage or setup error.
#[derive(Parser, Debug, Clone)]
#[command(name = "tickwire-loadtest", version, about, long_about = None)]
pub struct Args {
    /// Server game address (host:port): its UDP port, and with --transport tcp or ws the TCP
    /// listener the server opens on the same port number.
    #[arg(long, value_name = "ADDR", value_parser = parse_server_addr)]
    pub server: SocketAddr,

    /// How the bots' netcode packets travel: udp (one datagram each, one UDP socket per bot),
    /// tcp (one TCP connection per bot, each packet behind a 2-byte length) or ws (one
    /// WebSocket per bot, `GET /` upgrade, one packet per binary message). Same connect tokens.
    #[arg(long, value_name = "T", value_enum, default_value_t = Transport::Udp)]
    pub transport: Transport,

    /// The server's 32-byte connect-token key file (`auth.key_file`).
    #[arg(long, value_name = "PATH")]
    pub key_file: PathBuf,

    /// netcode protocol id, decimal or 0x-hex; must match the server's.
    #[arg(long, value_name = "ID", value_parser = parse_u64,
          default_value = DEFAULT_PROTOCOL_ID)]
    pub protocol_id: u64,

    /// Number of bots (client ids 1..=N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,

    /// Length of the measurement window, in seconds (after every bot connected).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Duration,

    /// Server Prometheus URL (http://host:port/metrics) for server CPU and tick figures.
    #[arg(long, value_name = "URL")]
    pub metrics: Option<MetricsUrl>,

    /// Write a JSON report here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Lowest acceptable snapshot delivery ratio, 0..=1.
    #[arg(long, value_name = "R", value_parser = parse_ratio, default_value = "0.95")]
    pub min_delivery: f64,

    /// Never print the per-second progress line (it is only printed on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    /// I/O model for the bots' sockets. Default epoll on Linux (auto elsewhere): measured on
    /// this kind of machine, an io_uring load generator against an io_uring server on the same
    /// host inflated the server's tick times, which would make the server's figures the pair's.
    /// --transport tcp|ws needs a model that serves streams (epoll, io_uring).
    #[arg(long, value_name = "M", default_value = DEFAULT_IO_MODEL)]
    pub io_model: tickwire_io::Model,

    /// How long the connect phase may take before the window starts without the stragglers.
    #[arg(long, value_name = "S", value_parser = parse_secs, default_value = "10")]
    pub connect_timeout_secs: Duration,

    /// Seed of the bots (each bot's seed derives from it and the bot's index: same seed,
    /// same inputs for the same snapshots).
    #[arg(long, value_name = "SEED", value_parser = parse_u64, default_value = "1")]
    pub seed: u64,

    /// The game the bots expect (a built-in game's name). Default: each bot plays the game
    /// the server's welcome names. Given, a bot whose welcome names another game does not
    /// play and is counted as a game mismatch (the run fails).
    #[arg(long, value_name = "NAME", value_parser = parse_game)]
    pub game: Option<String>,
}

/// How the bots reach the server (`--transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// netcode datagrams, one UDP socket per bot.
    Udp,
    /// One TCP connection per bot: each packet behind a 2-byte little-endian length.
    Tcp,
    /// One WebSocket per bot (RFC 6455, `ws://ADDR/`, subprotocol `tickwire.netcode`): one
    /// packet per binary message.
    #[value(alias = "websocket")]
    Ws,
}

impl Transport {
    /// `udp`, `tcp` or `ws`: the flag's spelling, used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }

    /// Whether each bot holds a stream connection instead of a UDP socket.
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

/// A built-in game's name (`tickwire_games::builtin()`).
pub fn parse_game(s: &str) -> Result<String, String> {
    let games = tickwire_games::builtin();
    if games.iter().any(|g| g.name == s) {
        return Ok(s.to_string());
    }
    let names: Vec<&str> = games.iter().map(|g| g.name).collect();
    Err(format!(
        "no built-in game {s:?}; this load tester has bots for: {}",
        names.join(", ")
    ))
}

/// `host:port` or `ip:port`, resolved once (the first address wins).
pub fn parse_server_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return check_server_addr(addr);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?} (expected host:port): {e}"))?;
    let addr = addrs
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))?;
    check_server_addr(addr)
}

fn check_server_addr(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() == 0 {
        return Err("the server port must not be 0".into());
    }
    if addr.ip().is_unspecified() {
        return Err(format!(
            "{addr} is the unspecified address: give the address the server is reachable at"
        ));
    }
    Ok(addr)
}

/// A u64 in decimal or `0x` hex (underscores allowed as digit separators).
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let clean: String = s.trim().chars().filter(|&c| c != '_').collect();
    let parsed = match clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => clean.parse::<u64>(),
    };
    parsed.map_err(|_| format!("{s:?} is not a u64 (decimal or 0x-hex)"))
}

/// Positive seconds, fractions allowed (`2`, `0.5`), at most one day.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!(
            "{s:?} must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A ratio in 0..=1.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} must be within 0..=1"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec![
            "tickwire-loadtest",
            "--server",
            "127.0.0.1:7777",
            "--key-file",
            "k",
            "--clients",
            "10",
            "--duration",
            "2",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.server, "127.0.0.1:7777".parse::<SocketAddr>().unwrap());
        assert_eq!(a.protocol_id, 0x7469_636b_7769_7265);
        assert_eq!(&0x7469_636b_7769_7265u64.to_be_bytes(), b"tickwire");
        assert_eq!(a.clients, 10);
        assert_eq!(a.duration, Duration::from_secs(2));
        assert_eq!(a.min_delivery, 0.95);
        assert_eq!(a.io_model, DEFAULT_IO_MODEL.parse().unwrap());
        assert_eq!(a.connect_timeout_secs, Duration::from_secs(10));
        assert!(a.metrics.is_none() && a.json.is_none() && !a.no_progress);
        assert_eq!(a.game, None, "default: the game the server's welcome names");
        assert_eq!(a.transport, Transport::Udp, "default: udp");
    }

    #[test]
    fn transports() {
        for (flag, want, name) in [
            ("udp", Transport::Udp, "udp"),
            ("tcp", Transport::Tcp, "tcp"),
            ("ws", Transport::Ws, "ws"),
            ("websocket", Transport::Ws, "ws"),
        ] {
            let a = parse(&["--transport", flag]).unwrap();
            assert_eq!(a.transport, want, "{flag}");
            assert_eq!(a.transport.as_str(), name);
            assert_eq!(a.transport.is_stream(), want != Transport::Udp);
        }
        let e = parse(&["--transport", "quic"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let text = e.to_string();
        for name in ["--transport", "quic", "udp", "tcp", "ws"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert!(parse(&["--transport"]).is_err(), "a value is required");
    }

    #[test]
    fn every_flag() {
        let a = parse(&[
            "--protocol-id",
            "42",
            "--metrics",
            "http://127.0.0.1:9464/metrics",
            "--json",
            "out.json",
            "--min-delivery",
            "0.99",
            "--no-progress",
            "--io-model",
            "select",
            "--connect-timeout-secs",
            "2.5",
            "--seed",
            "0xff",
            "--game",
            "arena",
            "--transport",
            "ws",
        ])
        .unwrap();
        assert_eq!(a.protocol_id, 42);
        assert_eq!(a.metrics.unwrap().port, 9464);
        assert_eq!(a.json.unwrap(), PathBuf::from("out.json"));
        assert_eq!(a.min_delivery, 0.99);
        assert!(a.no_progress);
        assert_eq!(a.io_model, tickwire_io::Model::Select);
        assert_eq!(a.connect_timeout_secs, Duration::from_millis(2500));
        assert_eq!(a.seed, 255);
        assert_eq!(a.game.as_deref(), Some("arena"));
        assert_eq!(a.transport, Transport::Ws);
    }

    #[test]
    fn unknown_game_lists_the_builtin_games() {
        let e = parse(&["--game", "chess"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        let text = e.to_string();
        assert!(
            text.contains("--game") && text.contains("\"chess\""),
            "{text}"
        );
        for g in tickwire_games::builtin() {
            assert!(text.contains(g.name), "{g:?} missing from {text}");
            assert_eq!(parse_game(g.name), Ok(g.name.to_string()));
        }
        assert!(parse_game("").is_err() && parse_game("Arena").is_err());
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["--metrics", "https://127.0.0.1:9464/metrics"][..],
            &["--min-delivery", "1.5"],
            &["--protocol-id", "0xZZ"],
            &["--io-model", "carrier_pigeon"],
            &["--clients", "0"],
            &["--connect-timeout-secs", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(Args::try_parse_from(["x", "--server", "0.0.0.0:7777"]).is_err());
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_u64(DEFAULT_PROTOCOL_ID), Ok(0x7469_636b_7769_7265));
        assert_eq!(parse_u64("8388345094170309221"), Ok(0x7469_636b_7769_7265));
        assert_eq!(parse_u64("0X10"), Ok(16));
        assert_eq!(parse_u64("1_000"), Ok(1000));
        assert!(parse_u64("-1").is_err());
        assert!(parse_u64("0x1_0000_0000_0000_0000").is_err());
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "nan", "inf", "1e9", "x"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        assert!(parse_ratio("0").is_ok() && parse_ratio("1").is_ok());
        assert!(parse_ratio("-0.1").is_err() && parse_ratio("NaN").is_err());
        assert!(parse_server_addr("127.0.0.1:0").is_err());
        assert!(parse_server_addr("[::]:7777").is_err());
        assert_eq!(
            parse_server_addr("[::1]:7777"),
            Ok("[::1]:7777".parse().unwrap())
        );
        assert!(parse_server_addr("nonsense").is_err());
    }
}
